"""The generic path: any apply(params, x) and any loss(output, y) through fit, make_step,
evaluate and the curvature analyses, with gdjax.MLP as its checked special case."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import conv_apply

from gdjax import MLP, curvature, models, train


def conv_params(key, length=12, channels=4, classes=3, dtype=jnp.float32):
    k1, k2 = jax.random.split(key)
    return {
        "conv": {
            "w": 0.5 * jax.random.normal(k1, (channels, 1, 3), dtype),
            "b": jnp.zeros((channels,), dtype),
        },
        "dense": {
            "w": 0.2 * jax.random.normal(k2, (classes, channels * (length - 2)), dtype),
            "b": jnp.zeros((classes,), dtype),
        },
    }


def conv_data(key, n=40, length=12, classes=3, dtype=jnp.float32):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, length), dtype), jax.random.randint(ky, (n,), 0, classes)


def test_conv_net_full_batch_fit_equals_a_hand_written_optax_loop():
    params = conv_params(jax.random.key(0))
    x, y = conv_data(jax.random.key(1))
    result = train.fit(
        conv_apply,
        "softmax_cross_entropy",
        "adam",
        (x, y),
        epochs=15,
        key=jax.random.key(2),
        params=params,
        learning_rate=1e-2,
        progress=False,
    )
    tx = optax.adam(1e-2)
    state = tx.init(params)
    p = params

    def cost(p):
        logits = conv_apply(p, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    losses = []
    for _ in range(15):
        value, g = jax.value_and_grad(cost)(p)
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
        losses.append(float(value))
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.history["step_loss"].ravel(), losses, rtol=1e-5)
    assert "train_accuracy" in result.history  # a gdjax classification loss, any model


def test_generic_path_with_mlp_apply_equals_the_mlp_path():
    model = MLP((3, 8, 2), activation="tanh")
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (30, 3))
    y = jax.random.normal(jax.random.key(2), (30, 2))
    kwargs = dict(
        epochs=6,
        key=jax.random.key(3),
        batch_size=8,
        params=params,
        learning_rate=0.1,
        progress=False,
    )
    by_mlp = train.fit(model, "mse", "sgd", (x, y), grad="auto", **kwargs)
    by_apply = train.fit(model.apply, "mse", "sgd", (x, y), **kwargs)
    for a, b in zip(jax.tree.leaves(by_mlp.params), jax.tree.leaves(by_apply.params), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(by_mlp.history["loss"], by_apply.history["loss"])


def test_a_loss_given_as_a_function():
    def half_mse(out, y):
        return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=-1))

    model = MLP((2, 4, 1), activation="tanh")
    params = model.init(jax.random.key(0))
    x, y = jnp.ones((8, 2)), jnp.zeros((8, 1))
    mine = train.fit(
        model,
        half_mse,
        "sgd",
        (x, y),
        epochs=3,
        key=jax.random.key(1),
        params=params,
        learning_rate=0.1,
        progress=False,
        grad="auto",
    )
    theirs = train.fit(
        model,
        "mse",
        "sgd",
        (x, y),
        epochs=3,
        key=jax.random.key(1),
        params=params,
        learning_rate=0.1,
        progress=False,
        grad="auto",
    )
    for a, b in zip(jax.tree.leaves(mine.params), jax.tree.leaves(theirs.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # The hand backprop takes a function loss too: ∂C/∂a^L is autodiff's there.
    hand = train.fit(
        model,
        half_mse,
        "sgd",
        (x, y),
        epochs=3,
        key=jax.random.key(1),
        params=params,
        learning_rate=0.1,
        progress=False,
    )
    for a, b in zip(jax.tree.leaves(hand.params), jax.tree.leaves(theirs.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_make_step_and_evaluate_take_any_model():
    params = conv_params(jax.random.key(0))
    x, y = conv_data(jax.random.key(1), n=16)
    step = train.make_step(conv_apply, "softmax_cross_entropy", "sgd", learning_rate=0.1)
    state = step.optimizer.init(params)
    before = train.evaluate(conv_apply, "softmax_cross_entropy", params, x, y)
    new, state, metrics = step(jax.tree.map(jnp.array, params), state, x, y)
    np.testing.assert_allclose(metrics["loss"], before["loss"], rtol=1e-6)
    after = train.evaluate(conv_apply, "softmax_cross_entropy", new, x, y)
    assert float(after["loss"]) < float(before["loss"])
    assert 0.0 <= float(after["accuracy"]) <= 1.0


def test_lanczos_on_a_conv_net_equals_dense_eigh():
    params = conv_params(jax.random.key(0), length=8, channels=2, classes=2, dtype=jnp.float64)
    x, y = conv_data(jax.random.key(1), n=20, length=8, classes=2, dtype=jnp.float64)
    f = models.objective(conv_apply, "softmax_cross_entropy")
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    h = jax.hessian(lambda u: f(unravel(u), x, y))(flat)
    want = np.linalg.eigvalsh(np.asarray(h))[::-1][:3]
    eig = curvature.top_eigenvalues(f, params, 3, x, y, key=jax.random.key(2), tol=1e-10)
    assert eig.converged
    np.testing.assert_allclose(eig.eigenvalues, want, rtol=1e-8)


def test_resume_of_a_function_model_is_bit_identical(tmp_path):
    params = conv_params(jax.random.key(0))
    x, y = conv_data(jax.random.key(1))
    kwargs = dict(
        key=jax.random.key(2),
        params=params,
        batch_size=16,
        learning_rate=1e-2,
        progress=False,
        checkpoint_every=2,
    )
    straight = train.fit(
        conv_apply,
        "softmax_cross_entropy",
        "adam",
        (x, y),
        epochs=6,
        run_dir=tmp_path / "a",
        **kwargs,
    )
    train.fit(
        conv_apply,
        "softmax_cross_entropy",
        "adam",
        (x, y),
        epochs=4,
        run_dir=tmp_path / "b",
        **kwargs,
    )
    resumed = train.fit(
        conv_apply,
        "softmax_cross_entropy",
        "adam",
        (x, y),
        epochs=6,
        run_dir=tmp_path / "b",
        **kwargs,
    )
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)


# Each case: what it changes in a one-epoch fit of the conv net, and the error it expects.
# A value that is a function of (params, x, y) is called first (the data it needs).
BAD = {
    "grad='hand' with a function model": (
        {"grad": "hand"},
        r"grad: 'hand' is the hand-written backprop of gdjax.MLP",
    ),
    "no params for a function model": (
        {"params": None},
        r"params: expected the starting params of ApplyModel\(.*conv_apply\)",
    ),
    "an output that does not match the labels": (
        {"data": lambda p, x, y: (x, y[:, None])},
        r"y: expected integer labels of shape \(40,\)",
    ),
    "an output with one row for the batch": (
        {"model": lambda p, x: jnp.sum(conv_apply(p, x), 0, keepdims=True)},
        r"model: expected apply\(params, x\) to return one row per example",
    ),
    "params with a non-array leaf": (
        {"params": lambda p, x, y: {**p, "act": jnp.tanh}},
        r"params\['act'\]: expected a floating array, got PjitFunction.*eqx.partition",
    ),
    "a loss that is not a scalar": (
        {"loss": lambda out, y: out},
        r"loss: expected loss\(output, y\) to return a scalar",
    ),
    "diagnostics of a function model": (
        {"diagnostics_every": 1},
        r"diagnostics_every: the per-layer",
    ),
    "a model that is neither": (
        {"model": 3, "loss": "mse"},
        r"model: expected a gdjax.MLP or a function, got int",
    ),
}

_NEEDS_DATA = ("data", "params")  # overrides computed from (params, x, y)


def _fit_conv_args(p, x, y, overrides):
    """The arguments of one epoch of the conv net by fit, with some replaced."""
    kwargs = dict(
        model=conv_apply,
        loss="softmax_cross_entropy",
        data=(x, y),
        params=p,
        epochs=1,
        key=jax.random.key(0),
        learning_rate=0.1,
        progress=False,
    )
    for name, value in overrides.items():
        kwargs[name] = value(p, x, y) if name in _NEEDS_DATA and callable(value) else value
    return kwargs


@pytest.mark.parametrize("case", list(BAD))
def test_bad_generic_input_is_refused_by_name(case, compilations):
    overrides, message = BAD[case]
    kwargs = _fit_conv_args(
        conv_params(jax.random.key(0)), *conv_data(jax.random.key(1)), overrides
    )
    model, loss, data = kwargs.pop("model"), kwargs.pop("loss"), kwargs.pop("data")
    before = compilations.count
    with pytest.raises(ValueError, match=message):
        train.fit(model, loss, "sgd", data, **kwargs)
    assert compilations.count == before  # refused before anything compiles
