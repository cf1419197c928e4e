"""gdjax.optim: each update rule, written from its equations, against its optax counterpart.

The reference problem is a real one: a tanh MLP (4 → 16 → 16 → 3) with softmax
cross-entropy on 64 random examples, its gradient from the hand-written
``backprop``. Ours and optax's run side by side for 200 steps in one
``lax.scan``, each from its own params, and must end at the same params.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdjax import MLP, backprop, optim, train

LOSS = "softmax_cross_entropy"
STEPS = 200

# One row per update rule: ours, optax's counterpart, and a learning rate η.
# The rates are chosen so that 200 steps move the params well away from the
# start while the trajectory stays stable: a 1e-14 relative perturbation of the
# initial params grows at most ~100-fold. (At sgd η = 0.5 or rmsprop η = 1e-3
# this problem is at the edge of stability and amplifies rounding by 1e9–1e12,
# so a comparison there would test the rounding, not the update rule.)
OPTIMIZERS = [
    pytest.param(optim.sgd, optax.sgd, 0.2, id="sgd"),
    pytest.param(
        lambda lr: optim.momentum(lr, beta=0.9),
        lambda lr: optax.sgd(lr, momentum=0.9),
        0.05,
        id="momentum",
    ),
    pytest.param(
        lambda lr: optim.nesterov(lr, beta=0.9),
        lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
        0.05,
        id="nesterov",
    ),
    pytest.param(
        lambda lr: optim.rmsprop(lr, decay=0.9, eps=1e-8),
        lambda lr: optax.rmsprop(lr, decay=0.9, eps=1e-8),
        3e-3,
        id="rmsprop",
    ),
    pytest.param(
        lambda lr: optim.adam(lr, b1=0.9, b2=0.999, eps=1e-8),
        lambda lr: optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8),
        3e-3,
        id="adam",
    ),
    # λ = 0.1: the decay ηλθ removes ~6 % of each weight over the 200 steps
    pytest.param(
        lambda lr: optim.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1),
        lambda lr: optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1),
        3e-3,
        id="adamw",
    ),
]

# dtype × tolerance on the final params after 200 steps.
DTYPES = [
    pytest.param(jnp.float64, 1e-12, 1e-14, id="float64"),
    pytest.param(jnp.float32, 1e-5, 1e-6, id="float32"),
]


MODEL = MLP((4, 16, 16, 3), activation="tanh")


@pytest.fixture(scope="module")
def problem64():
    """Initial float64 params and one batch (x, y): 64 examples, 4 features, 3 classes.

    Drawn once per module in one jitted call (drawing them costs seconds of
    compilation on a small CPU).
    """

    @jax.jit
    def draw(key):
        k_params, k_x, k_y = jax.random.split(key, 3)
        params = MODEL.init(k_params, dtype=jnp.float64)
        x = jax.random.normal(k_x, (64, 4), jnp.float64)
        y = jax.random.randint(k_y, (64,), 0, 3)
        return params, x, y

    return draw(jax.random.key(0))


def cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype), tree)


def run_side_by_side(model, params, x, y, ours, theirs, steps=STEPS):
    """``steps`` full-batch steps of both optimizers; returns both final params and losses."""

    # x and y are arguments of the jitted function, not constants closed over.
    @jax.jit
    def run(params, x, y):
        def step(carry, _):
            p_ours, s_ours, p_ref, s_ref = carry
            c_ours, g_ours = backprop(model, LOSS, p_ours, x, y)
            u_ours, s_ours = ours.update(g_ours, s_ours, p_ours)
            c_ref, g_ref = backprop(model, LOSS, p_ref, x, y)
            u_ref, s_ref = theirs.update(g_ref, s_ref, p_ref)
            carry = (
                optax.apply_updates(p_ours, u_ours),
                s_ours,
                optax.apply_updates(p_ref, u_ref),
                s_ref,
            )
            return carry, (c_ours, c_ref)

        init = (params, ours.init(params), params, theirs.init(params))
        (p_ours, _, p_ref, _), costs = jax.lax.scan(step, init, length=steps)
        return p_ours, p_ref, costs

    return run(params, x, y)


@pytest.mark.parametrize("dtype, rtol, atol", DTYPES)
@pytest.mark.parametrize("make_ours, make_theirs, lr", OPTIMIZERS)
def test_matches_optax_over_200_steps(problem64, make_ours, make_theirs, lr, dtype, rtol, atol):
    params64, x64, y = problem64
    params, x = cast((params64, x64), dtype)
    p_ours, p_ref, (c_ours, c_ref) = run_side_by_side(
        MODEL, params, x, y, make_ours(lr), make_theirs(lr)
    )
    chex.assert_trees_all_close(p_ours, p_ref, rtol=rtol, atol=atol)
    chex.assert_trees_all_close(c_ours, c_ref, rtol=rtol, atol=atol)
    chex.assert_trees_all_equal_dtypes(p_ours, params)
    # Not a vacuous comparison: the params moved and the cost fell.
    moved = jax.tree.map(lambda a, b: np.max(np.abs(np.asarray(a) - np.asarray(b))), p_ours, params)
    assert max(jax.tree.leaves(moved)) > 0.1
    assert float(c_ours[-1]) < 0.8 * float(c_ours[0])


@pytest.mark.parametrize("make_ours, make_theirs, lr", OPTIMIZERS)
def test_schedule_matches_optax(make_ours, make_theirs, lr):
    """A schedule η_k is read at the same update count k = 0, 1, … as optax reads it.

    The gradients are a fixed random sequence (no model, drawn with numpy so
    nothing compiles), and each step's update is compared on its own.
    """
    schedule = optax.exponential_decay(lr, transition_steps=3, decay_rate=0.5)
    ours, theirs = make_ours(schedule), make_theirs(schedule)
    rng = np.random.default_rng(1)  # non-zero params: adamw's decay −η_k λ θ is compared too
    params = {"w": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=3))}
    s_ours, s_ref = ours.init(params), theirs.init(params)
    rng = np.random.default_rng(0)
    for _ in range(12):
        g = {"w": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=3))}
        u_ours, s_ours = ours.update(g, s_ours, params)
        u_ref, s_ref = theirs.update(g, s_ref, params)
        chex.assert_trees_all_close(u_ours, u_ref, rtol=1e-12, atol=1e-15)
    assert int(s_ours.count) == 12


def test_adam_bias_correction_gives_steps_of_length_eta():
    """With a constant gradient, m̂ = g and v̂ = g² exactly, so every step is −η g / (|g| + ε).

    Without the correction the first step would be η (1 − β₁) / √(1 − β₂) ≈ 3.16 η.
    """
    lr, eps = 1e-2, 1e-8
    opt = optim.adam(lr, eps=eps)
    g = {"w": jnp.array([[0.5, -3.0], [1e-3, 40.0]]), "b": jnp.array([-2e-2, 7.0])}
    state = opt.init(jax.tree.map(jnp.zeros_like, g))
    update = jax.jit(opt.update)
    for _ in range(5):
        updates, state = update(g, state)
        expected = jax.tree.map(lambda g: -lr * g / (jnp.abs(g) + eps), g)
        chex.assert_trees_all_close(updates, expected, rtol=1e-10)
        # ≈ −η sign(g): the step length does not depend on the gradient's scale.
        chex.assert_trees_all_close(
            updates, jax.tree.map(lambda g: -lr * jnp.sign(g), g), rtol=1e-4
        )
    assert int(state.count) == 5


def test_adamw_decay_is_decoupled_from_the_adaptive_scaling():
    """AdamW's decay shrinks θ by ηλθ per step; an L2 term in the gradient would be rescaled.

    With g = 0 the moments stay zero, so the update is exactly −ηλθ. Adam on the
    L2-regularised gradient g + λθ instead steps ≈ −η sign(θ), whatever λ is.
    """
    lr, decay = 1e-2, 0.5
    params = {"w": jnp.array([[0.5, -3.0], [1e-3, 40.0]]), "b": jnp.array([-2e-2, 7.0])}
    zero = jax.tree.map(jnp.zeros_like, params)
    opt = optim.adamw(lr, weight_decay=decay)
    state = opt.init(params)
    for _ in range(3):
        updates, state = opt.update(zero, state, params)
        chex.assert_trees_all_close(updates, jax.tree.map(lambda p: -lr * decay * p, params))
    chex.assert_trees_all_equal(state.mu, zero)
    l2 = optim.adam(lr)
    coupled, _ = l2.update(jax.tree.map(lambda p: decay * p, params), l2.init(params))
    chex.assert_trees_all_close(
        coupled, jax.tree.map(lambda p: -lr * jnp.sign(p), params), rtol=1e-4
    )


def test_adamw_without_decay_is_adam_and_needs_params():
    g = {"w": jnp.array([0.5, -3.0])}
    params = {"w": jnp.array([1.0, -2.0])}
    ours, adam = optim.adamw(0.1, weight_decay=0.0), optim.adam(0.1)
    s_ours, s_adam = ours.init(params), adam.init(params)
    for _ in range(3):
        u_ours, s_ours = ours.update(g, s_ours, params)
        u_adam, s_adam = adam.update(g, s_adam, params)
        chex.assert_trees_all_equal(u_ours, u_adam)
    with pytest.raises(ValueError, match=r"^params: adamw's update needs the current params"):
        ours.update(g, s_ours)


def test_rmsprop_has_eps_inside_the_root_and_no_bias_correction():
    """First step: ν = (1 − ρ) g², so the update is −η g / √((1 − ρ) g² + ε)."""
    lr, decay, eps = 0.1, 0.9, 1e-4
    g = jnp.array([0.5, -3.0, 1e-3])
    opt = optim.rmsprop(lr, decay=decay, eps=eps)
    updates, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(updates, -lr * g / jnp.sqrt((1 - decay) * g**2 + eps), rtol=1e-13)


def test_momentum_and_nesterov_first_steps():
    """From v = 0 with a constant g: momentum steps −η g, −η (1 + β) g; Nesterov leads by one."""
    lr, beta = 0.1, 0.5
    g = jnp.array([1.0, -2.0])
    heavy, nag = optim.momentum(lr, beta), optim.nesterov(lr, beta)
    s_heavy, s_nag = heavy.init(g), nag.init(g)
    expected_heavy = [-lr * g, -lr * (1 + beta) * g, -lr * (1 + beta + beta**2) * g]
    for want in expected_heavy:
        u_heavy, s_heavy = heavy.update(g, s_heavy)
        u_nag, s_nag = nag.update(g, s_nag)
        np.testing.assert_allclose(u_heavy, want, rtol=1e-15)
        # Nesterov: −η (g + β v) with the new v is the heavy-ball step one step ahead.
        np.testing.assert_allclose(u_nag, -lr * g + beta * want, rtol=1e-15)


@pytest.mark.parametrize("name", optim.names())
def test_state_keeps_float32(name):
    """float32 params give float32 updates and moments even with x64 enabled; count is int32."""
    opt = optim.get(name, learning_rate=0.1)
    params = {"w": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    state = opt.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
    for _ in range(2):
        updates, state = opt.update(grads, state, params)
    chex.assert_trees_all_equal_dtypes(updates, params)
    assert state.count.dtype == jnp.int32 and int(state.count) == 2
    for field in state._fields[1:]:
        chex.assert_trees_all_equal_dtypes(getattr(state, field), params)


@pytest.mark.parametrize("name", optim.names())
def test_jitted_update_compiles_once(name, compilations):
    opt = optim.get(name, learning_rate=optax.linear_schedule(0.1, 0.01, 10))
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(2)}
    grads = [jax.tree.map(lambda p, c=c: jnp.full_like(p, c), params) for c in (0.5, -0.25)]
    state = opt.init(params)
    update = jax.jit(opt.update)
    _, state = update(grads[0], state, params)
    jax.block_until_ready(state)
    compiled = compilations.count
    assert compiled >= 1
    _, state = update(grads[1], state, params)
    jax.block_until_ready(state)
    assert compilations.count == compiled


def test_hyperparameters_may_be_traced():
    """Traced hyper-parameters skip the eager checks: optax.inject_hyperparams and vmap work."""
    g = {"w": jnp.array([0.5, -3.0])}
    ours = optax.inject_hyperparams(optim.adam)(learning_rate=0.1, b1=0.5)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=0.1, b1=0.5)
    s_ours, s_ref = ours.init(g), ref.init(g)
    for _ in range(3):
        u_ours, s_ours = jax.jit(ours.update)(g, s_ours)
        u_ref, s_ref = jax.jit(ref.update)(g, s_ref)
        chex.assert_trees_all_close(u_ours, u_ref, rtol=1e-12)

    ours = optax.inject_hyperparams(optim.adamw)(learning_rate=0.1, weight_decay=0.3)
    ref = optax.inject_hyperparams(optax.adamw)(learning_rate=0.1, weight_decay=0.3)
    s_ours, s_ref = ours.init(g), ref.init(g)
    for _ in range(3):
        u_ours, s_ours = jax.jit(ours.update)(g, s_ours, g)
        u_ref, s_ref = jax.jit(ref.update)(g, s_ref, g)
        chex.assert_trees_all_close(u_ours, u_ref, rtol=1e-12)

    def first_update(lr):
        opt = optim.momentum(lr, beta=0.9)
        return opt.update(g, opt.init(g))[0]["w"]

    np.testing.assert_allclose(
        jax.vmap(first_update)(jnp.array([0.1, 0.2])), [-0.1 * g["w"], -0.2 * g["w"]], rtol=1e-15
    )


def test_names_and_get():
    assert optim.names() == ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
    # the names train.make_optimizer takes (there: optax's implementations)
    assert set(optim.names()) == set(train.OPTIMIZERS)
    g = jnp.array([0.5, -3.0])
    ours, direct = optim.get("adam", learning_rate=0.1, b1=0.5), optim.adam(0.1, b1=0.5)
    np.testing.assert_array_equal(
        ours.update(g, ours.init(g))[0], direct.update(g, direct.init(g))[0]
    )
    ours = optim.get("adamw", learning_rate=0.1, weight_decay=0.5)
    direct = optim.adamw(0.1, weight_decay=0.5)
    np.testing.assert_array_equal(
        ours.update(g, ours.init(g), g)[0], direct.update(g, direct.init(g), g)[0]
    )
    with pytest.raises(
        ValueError,
        match="name: expected one of sgd, momentum, nesterov, rmsprop, adam, adamw, got 'adagrad'",
    ):
        optim.get("adagrad", learning_rate=0.1)


@pytest.mark.parametrize("name", optim.names())
def test_get_without_a_learning_rate_names_it(name):
    """Not Python's "missing 1 required positional argument": the name and how to pass it."""
    with pytest.raises(
        ValueError,
        match=rf"^learning_rate: expected .* for '{name}', got none; pass it, "
        rf"e\.g\. get\('{name}', learning_rate=1e-3\)\.$",
    ):
        optim.get(name)


def test_get_names_an_unknown_hyperparameter():
    with pytest.raises(
        ValueError,
        match=r"^hyperparams: expected some of learning_rate, b1, b2, eps for 'adam', "
        r"got 'lr', 'momentum'\.$",
    ):
        optim.get("adam", learning_rate=0.1, lr=0.1, momentum=0.9)


# (factory, keyword arguments, the argument the message must name)
BAD_HYPERPARAMS = [
    pytest.param(optim.sgd, {"learning_rate": -0.1}, "learning_rate", id="lr-negative"),
    pytest.param(optim.sgd, {"learning_rate": 0.0}, "learning_rate", id="lr-zero"),
    pytest.param(optim.adam, {"learning_rate": float("nan")}, "learning_rate", id="lr-nan"),
    pytest.param(optim.rmsprop, {"learning_rate": float("inf")}, "learning_rate", id="lr-inf"),
    pytest.param(optim.sgd, {"learning_rate": "0.1"}, "learning_rate", id="lr-str"),
    pytest.param(optim.sgd, {"learning_rate": True}, "learning_rate", id="lr-bool"),
    pytest.param(optim.sgd, {"learning_rate": jnp.ones(2)}, "learning_rate", id="lr-vector"),
    pytest.param(optim.momentum, {"learning_rate": 0.1, "beta": 1.0}, "beta", id="beta-one"),
    pytest.param(optim.nesterov, {"learning_rate": 0.1, "beta": -0.1}, "beta", id="beta-neg"),
    pytest.param(optim.rmsprop, {"learning_rate": 0.1, "decay": 1.5}, "decay", id="decay"),
    pytest.param(optim.rmsprop, {"learning_rate": 0.1, "eps": 0.0}, "eps", id="rms-eps"),
    pytest.param(optim.adam, {"learning_rate": 0.1, "b1": 1.0}, "b1", id="b1"),
    pytest.param(optim.adam, {"learning_rate": 0.1, "b2": None}, "b2", id="b2-none"),
    pytest.param(optim.adam, {"learning_rate": 0.1, "eps": -1e-8}, "eps", id="adam-eps"),
    pytest.param(optim.adamw, {"learning_rate": 0.0}, "learning_rate", id="adamw-lr"),
    pytest.param(
        optim.adamw, {"learning_rate": 0.1, "weight_decay": -1e-4}, "weight_decay", id="wd-neg"
    ),
    pytest.param(
        optim.adamw,
        {"learning_rate": 0.1, "weight_decay": float("nan")},
        "weight_decay",
        id="wd-nan",
    ),
    pytest.param(
        optim.adamw, {"learning_rate": 0.1, "weight_decay": "0.1"}, "weight_decay", id="wd-str"
    ),
]


@pytest.mark.parametrize("factory, kwargs, arg", BAD_HYPERPARAMS)
def test_bad_hyperparameters_fail_early_naming_the_argument(factory, kwargs, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: expected .*, got ") as info:
        factory(**kwargs)
    assert repr(kwargs[arg]) in str(info.value)


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (optim.sgd, {"learning_rate": 1}),
        (optim.sgd, {"learning_rate": np.float32(0.1)}),
        (optim.sgd, {"learning_rate": jnp.asarray(0.1)}),
        (optim.momentum, {"learning_rate": 0.1, "beta": 0}),
        (optim.adam, {"learning_rate": 0.1, "b1": 0.0, "b2": 0.0}),
        (optim.adamw, {"learning_rate": 0.1, "weight_decay": 0}),
    ],
)
def test_edge_hyperparameters_are_accepted(factory, kwargs):
    opt = factory(**kwargs)
    g = jnp.array([0.5, -3.0])
    updates, _ = opt.update(g, opt.init(g), g)
    assert bool(jnp.all(jnp.isfinite(updates)))
