"""Hand-written backprop equals jax.value_and_grad, and jax.grad equals finite differences.

Three layers of evidence:
  1. every activation × output activation × loss on a fixed small network, both dtypes;
  2. property-based random architectures (depth 1–8, widths 1–64, batch 1–128), all
     combinations drawn, with and without ``jit`` (chex variants), both dtypes;
  3. ``jax.grad`` itself against central finite differences in float64.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdjax import MLP, activations, backprop, backprop_with_deltas, deltas, gradcheck, losses
from gdjax import objective as make_objective

TOLERANCE = {jnp.float64: 1e-10, jnp.float32: 1e-4}


def make_targets(rng, loss_name: str, n: int, k: int, dtype, one_hot: bool = False):
    """Targets of the form the loss expects: regression values, labels or probabilities."""
    if loss_name == "mse":
        return jnp.asarray(rng.normal(size=(n, k)), dtype)
    if loss_name == "sigmoid_binary_cross_entropy":
        return jnp.asarray(rng.integers(0, 2, size=(n, k)), dtype)
    if one_hot:  # probability targets: rows of a softmax
        return jax.nn.softmax(jnp.asarray(rng.normal(size=(n, k)), dtype), axis=-1)
    return jnp.asarray(rng.integers(0, k, size=n), jnp.int32)


def make_case(seed, sizes, activation, output_activation, loss_name, batch, dtype, one_hot=False):
    """A model with Glorot-scaled params, inputs and targets, drawn with NumPy.

    NumPy rather than ``jax.random`` keeps hundreds of random shapes from each
    compiling its own sampler; ``MLP.init`` has tests of its own.
    """
    model = MLP(sizes=sizes, activation=activation, output_activation=output_activation)
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        r = np.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-r, r, size=(n_out, n_in))
        b = 0.1 * rng.normal(size=n_out)
        params.append({"w": jnp.asarray(w, dtype), "b": jnp.asarray(b, dtype)})
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])), dtype)
    y = make_targets(rng, loss_name, batch, sizes[-1], dtype, one_hot)
    return model, params, x, y


def assert_grads_match(hand, auto, dtype, per_leaf=True):
    """Values equal, and gradients equal leaf by leaf (or over the whole tree) to tolerance.

    ``per_leaf=False`` is for saturated networks, where a whole leaf can be ~1e-17:
    there the hand σ' keeps digits that autodiff rounds to 0 (see
    ``gdjax.activations``), so the leaf's own norm is no scale to measure against.
    """
    (v_hand, g_hand), (v_auto, g_auto) = hand, auto
    tol = TOLERANCE[dtype]
    chex.assert_trees_all_equal_shapes_and_dtypes(g_hand, g_auto)
    assert abs(float(v_hand) - float(v_auto)) <= tol * max(1.0, abs(float(v_auto)))
    report = gradcheck.compare(g_hand, g_auto)
    if per_leaf:
        assert report.max_relative_error <= tol, f"\n{report}"
    else:
        assert gradcheck.relative_error(g_hand, g_auto) <= tol, f"\n{report}"


# ------------------------------------------------------------------ 1. the full grid

GRID = list(itertools.product(activations.names(), activations.names(), losses.names()))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("activation", "output_activation", "loss_name"), GRID)
def test_every_activation_and_loss_matches_autodiff(
    activation, output_activation, loss_name, dtype
):
    model, params, x, y = make_case(
        7, (3, 5, 4, 3), activation, output_activation, loss_name, batch=9, dtype=dtype
    )
    hand = backprop(model, loss_name, params, x, y)
    auto = jax.value_and_grad(make_objective(model, loss_name))(params, x, y)
    assert_grads_match(hand, auto, dtype)


# ------------------------------------------------------------------ 2. random architectures


@st.composite
def architectures(draw, max_depth=8, max_width=64, max_batch=128):
    depth = draw(st.integers(1, max_depth))
    sizes = tuple(draw(st.lists(st.integers(1, max_width), min_size=depth + 1, max_size=depth + 1)))
    return dict(
        seed=draw(st.integers(0, 2**31 - 1)),
        sizes=sizes,
        activation=draw(st.sampled_from(activations.names())),
        output_activation=draw(st.sampled_from(activations.names())),
        loss_name=draw(st.sampled_from(losses.names())),
        batch=draw(st.integers(1, max_batch)),
        one_hot=draw(st.booleans()),
    )


# Without jit every op of a new shape compiles on its own, so an eager example
# costs ~20× a jitted one: the eager variants draw a quarter as many examples.
EAGER = settings(max_examples=max(5, settings.default.max_examples // 4))


class RandomArchitectureTest(chex.TestCase):
    @chex.variants(with_jit=True)
    @given(case=architectures())
    def test_float64(self, case):
        self._check(case, jnp.float64)

    @chex.variants(with_jit=True)
    @given(case=architectures())
    def test_float32(self, case):
        self._check(case, jnp.float32)

    @chex.variants(without_jit=True)
    @EAGER
    @given(case=architectures())
    def test_float64_eager(self, case):
        self._check(case, jnp.float64)

    @chex.variants(without_jit=True)
    @EAGER
    @given(case=architectures())
    def test_float32_eager(self, case):
        self._check(case, jnp.float32)

    def _check(self, case, dtype):
        model, params, x, y = make_case(dtype=dtype, **case)
        loss_name = case["loss_name"]
        hand_fn = self.variant(backprop, static_argnums=(0, 1))
        # The reference is always jitted: the variants are of the hand backprop under
        # test, and an eager jax.grad of a deep net compiles every op of it on its own.
        auto_fn = jax.jit(jax.value_and_grad(make_objective(model, loss_name)))
        assert_grads_match(hand_fn(model, loss_name, params, x, y), auto_fn(params, x, y), dtype)


# ---------------------------------------------------------- 3. autodiff vs finite differences


@EAGER
@given(case=architectures(max_depth=3, max_width=6, max_batch=8))
def test_autodiff_agrees_with_finite_differences(case):
    model, params, x, y = make_case(dtype=jnp.float64, **case)
    f = make_objective(model, case["loss_name"])
    report = gradcheck.check_grad(f, params, x, y)
    assert report.max_relative_error <= 1e-6, f"\n{report}"


def test_hand_backprop_agrees_with_finite_differences(key):
    model, params, x, y = make_case(
        3, (4, 6, 5, 3), "gelu", "identity", "softmax_cross_entropy", batch=10, dtype=jnp.float64
    )
    f = make_objective(model, "softmax_cross_entropy")
    report = gradcheck.check_grad(
        f,
        params,
        x,
        y,
        grad_fn=lambda p, x, y: backprop(model, "softmax_cross_entropy", p, x, y)[1],
    )
    assert report.max_relative_error <= 1e-6, f"\n{report}"


# ------------------------------------------------------------------ saturation


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("loss_name", losses.names())
def test_saturated_units_give_finite_gradients_equal_to_autodiff(activation, loss_name, dtype):
    model, params, x, y = make_case(11, (4, 8, 3), activation, activation, loss_name, 16, dtype)
    # Scale the first layer so hidden |z| reaches ~1e3.
    params[0] = {"w": params[0]["w"] * 1e3, "b": params[0]["b"]}
    zs, _ = model.trace(params, x)
    assert float(jnp.max(jnp.abs(zs[0]))) > 5e2
    hand = backprop(model, loss_name, params, x, y)
    auto = jax.value_and_grad(make_objective(model, loss_name))(params, x, y)
    chex.assert_tree_all_finite(hand)
    assert_grads_match(hand, auto, dtype, per_leaf=False)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "sigmoid_binary_cross_entropy"])
def test_cross_entropy_at_huge_logits_is_finite_and_matches_autodiff(loss_name, dtype):
    model, params, x, y = make_case(5, (4, 8, 3), "tanh", "identity", loss_name, 16, dtype)
    params[-1] = {"w": params[-1]["w"] * 1e4, "b": params[-1]["b"]}
    logits = model.apply(params, x)
    assert float(jnp.max(jnp.abs(logits))) > 1e3
    hand = backprop(model, loss_name, params, x, y)
    auto = jax.value_and_grad(make_objective(model, loss_name))(params, x, y)
    chex.assert_tree_all_finite(hand)
    assert float(hand[0]) > 0  # saturated wrong answers cost a lot, and it is finite
    assert_grads_match(hand, auto, dtype)


# ------------------------------------------------------------------ the δ^l


def test_deltas_are_the_gradients_with_respect_to_pre_activations(key):
    """δ^l = ∂C/∂z^l: perturbing z^l by autodiff through the remaining layers agrees."""
    model, params, x, y = make_case(2, (3, 7, 5, 2), "tanh", "sigmoid", "mse", 6, jnp.float64)
    loss = losses.get("mse")
    zs, acts = model.trace(params, x)

    def cost_from_z(z, layer):  # C as a function of z^l, running layers l+1 … L forward
        a = model.activation_of(layer).fn(z)
        for later in range(layer + 1, model.num_layers):
            a = model.activation_of(later).fn(a @ params[later]["w"].T + params[later]["b"])
        return loss.fn(a, y)

    ds = deltas(model, "mse", params, x, y)
    assert [d.shape for d in ds] == [z.shape for z in zs]
    for layer, (z, d) in enumerate(zip(zs, ds, strict=True)):
        np.testing.assert_allclose(d, jax.grad(cost_from_z)(z, layer), rtol=1e-12, atol=1e-15)
    # ∂C/∂w^l = (δ^l)ᵀ a^{l-1} and ∂C/∂b^l = Σ_x δ^l_x
    _, grads, _ = backprop_with_deltas(model, "mse", params, x, y)
    for layer, g in enumerate(grads):
        np.testing.assert_allclose(g["w"], ds[layer].T @ acts[layer], rtol=1e-14)
        np.testing.assert_allclose(g["b"], ds[layer].sum(0), rtol=1e-14)


def test_backprop_compiles_once_per_shape(compilations, key):
    model, params, x, y = make_case(4, (3, 9, 2), "relu", "identity", "mse", 13, jnp.float32)
    params2 = jax.tree.map(lambda p: p + 1, params)  # new values, same shapes
    x2 = x + 1
    step = jax.jit(backprop, static_argnums=(0, 1))
    step(model, "mse", params, x, y)
    after_first = compilations.count
    assert after_first >= 1
    step(MLP((3, 9, 2), "relu", "identity"), "mse", params2, x2, y)  # an equal model
    assert compilations.count == after_first


def test_backprop_calls_no_jax_differentiation(monkeypatch):
    """The hand backprop must not lean on autodiff anywhere."""

    def forbidden(*args, **kwargs):
        raise AssertionError("backprop called a JAX differentiation function")

    for name in ("grad", "value_and_grad", "vjp", "jvp", "jacrev", "jacfwd", "linearize"):
        monkeypatch.setattr(jax, name, forbidden)
    model, params, x, y = make_case(
        1, (2, 3, 2), "gelu", "identity", "softmax_cross_entropy", 4, jnp.float64
    )
    value, grads = backprop(model, "softmax_cross_entropy", params, x, y)
    assert np.isfinite(float(value))
