"""Hand-written σ' and ∂C/∂a against jax.grad, and the losses' definitions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import activations, losses

# Values that hit every regime: kinks at 0, the usual range, and saturation.
Z = jnp.array(
    [-1e3, -50.0, -10.0, -3.0, -1.0, -0.1, -1e-8, 0.0, 1e-8, 0.1, 1.0, 3.0, 10.0, 50.0, 1e3],
    jnp.float64,
)


def _sigmoid(z):
    e = math.exp(-abs(z))
    return 1 / (1 + e) if z >= 0 else e / (1 + e)


# σ'(z) from closed forms in float64 Python scalars, written to lose no digits.
REFERENCE_DERIV = {
    "sigmoid": lambda z: math.exp(-abs(z)) / (1 + math.exp(-abs(z))) ** 2,
    "tanh": lambda z: 4 * math.exp(-2 * abs(z)) / (1 + math.exp(-2 * abs(z))) ** 2,
    "relu": lambda z: 1.0 if z > 0 else 0.0,
    "leaky_relu": lambda z: 1.0 if z >= 0 else activations.LEAKY_RELU_SLOPE,
    "softplus": _sigmoid,
    "elu": lambda z: 1.0 if z > 0 else math.exp(z),
    "gelu": lambda z: (
        0.5 * math.erfc(-z / math.sqrt(2)) + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    ),
    "identity": lambda z: 1.0,
}


@pytest.mark.parametrize("name", activations.names())
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
def test_activation_derivative_is_exact_to_rounding(name, dtype):
    z = Z.astype(dtype)
    hand = activations.get(name).deriv(z)
    assert hand.dtype == dtype
    expected = [REFERENCE_DERIV[name](float(v)) for v in z]
    if dtype == jnp.float64:
        np.testing.assert_allclose(hand, expected, rtol=1e-14, atol=0)
    else:  # near saturation float32 σ' is a difference of numbers near 1: absolute ε_32
        np.testing.assert_allclose(hand, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", activations.names())
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
def test_activation_derivative_equals_autodiff(name, dtype):
    """Equal to jax.grad of fn, up to the digits autodiff's own formulas lose.

    ``jax.grad`` differentiates σ and tanh as σ(1 − σ) and 1 − t², and e^z − 1 by
    adding 1 back, so for large |z| it returns 0 where the exact value is tiny:
    hence an absolute tolerance of about the rounding unit of 1.
    """
    act = activations.get(name)
    z = Z.astype(dtype)
    hand = act.deriv(z)
    auto = jax.vmap(jax.grad(act.fn))(z)
    assert np.all(np.isfinite(hand)) and np.all(np.isfinite(act.fn(z)))
    if dtype == jnp.float64:
        np.testing.assert_allclose(hand, auto, rtol=1e-12, atol=1e-15)
    else:
        np.testing.assert_allclose(hand, auto, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("sigmoid", jax.nn.sigmoid),
        ("tanh", jnp.tanh),
        ("relu", jax.nn.relu),
        ("leaky_relu", jax.nn.leaky_relu),
        ("softplus", jax.nn.softplus),
        ("elu", jax.nn.elu),
        ("gelu", lambda z: jax.nn.gelu(z, approximate=False)),
        ("identity", lambda z: z),
    ],
)
def test_activation_values_equal_jax_nn(name, reference):
    np.testing.assert_allclose(activations.get(name).fn(Z), reference(Z), rtol=1e-14, atol=1e-15)


def test_activation_derivatives_at_known_points():
    assert float(activations.sigmoid.deriv(jnp.float64(0.0))) == 0.25
    assert float(activations.tanh.deriv(jnp.float64(0.0))) == 1.0
    assert float(activations.relu.deriv(jnp.float64(0.0))) == 0.0
    assert float(activations.leaky_relu.deriv(jnp.float64(-2.0))) == activations.LEAKY_RELU_SLOPE
    np.testing.assert_allclose(activations.gelu.deriv(jnp.float64(0.0)), 0.5, rtol=1e-15)


def test_activations_are_hashable_and_names_pass_through():
    a = activations.get("tanh")
    assert activations.get(a) is a
    assert hash(a) == hash(activations.get("tanh"))


def test_unknown_activation_lists_the_valid_names():
    with pytest.raises(ValueError, match="activation: expected one of sigmoid, tanh.*got 'swish'"):
        activations.get("swish")


# ------------------------------------------------------------------ losses


def _targets(name, n, k, rng):
    if name == "mse":
        return jnp.asarray(rng.normal(size=(n, k)))
    if name == "sigmoid_binary_cross_entropy":
        return jnp.asarray(rng.integers(0, 2, size=(n, k)), jnp.float64)
    return jnp.asarray(rng.integers(0, k, size=n))


@pytest.mark.parametrize("name", losses.names())
@pytest.mark.parametrize("n", [1, 7])
def test_loss_gradient_equals_autodiff(name, n):
    rng = np.random.default_rng(n)
    loss = losses.get(name)
    pred = jnp.asarray(rng.normal(size=(n, 4)) * 3)
    y = _targets(name, n, 4, rng)
    np.testing.assert_allclose(loss.grad(pred, y), jax.grad(loss.fn)(pred, y), rtol=1e-13)


def test_mse_is_the_seeds_cost():
    """C = 1/(2n) Σ_x ‖y(x) − a^L(x)‖², written out with NumPy."""
    rng = np.random.default_rng(0)
    a, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    expected = sum(np.sum((y[i] - a[i]) ** 2) for i in range(6)) / (2 * 6)
    np.testing.assert_allclose(losses.mse.fn(jnp.asarray(a), jnp.asarray(y)), expected, rtol=1e-14)


def test_cross_entropies_equal_their_textbook_forms():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 3))
    labels = rng.integers(0, 3, size=5)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(5), labels]))
    got = losses.softmax_cross_entropy.fn(jnp.asarray(z), jnp.asarray(labels))
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    t = rng.integers(0, 2, size=(5, 3)).astype(float)
    s = 1 / (1 + np.exp(-z))
    expected = -np.mean(np.sum(t * np.log(s) + (1 - t) * np.log(1 - s), axis=1))
    got = losses.sigmoid_binary_cross_entropy.fn(jnp.asarray(z), jnp.asarray(t))
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_integer_labels_equal_one_hot_targets():
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.normal(size=(8, 5)))
    labels = jnp.asarray(rng.integers(0, 5, size=8))
    one_hot = jax.nn.one_hot(labels, 5, dtype=jnp.float64)
    ce = losses.softmax_cross_entropy
    np.testing.assert_allclose(ce.fn(z, labels), ce.fn(z, one_hot), rtol=1e-15)
    np.testing.assert_allclose(ce.grad(z, labels), ce.grad(z, one_hot), rtol=1e-15)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
def test_cross_entropies_are_stable_at_huge_logits(dtype):
    z = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], dtype)
    labels = jnp.array([1, 0])
    ce = losses.softmax_cross_entropy
    value, grad = ce.fn(z, labels), ce.grad(z, labels)
    np.testing.assert_allclose(value, 2e4, rtol=1e-6)  # −log softmax = 2e4 for each wrong row
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, jax.grad(ce.fn)(z, labels), rtol=1e-6)
    bce = losses.sigmoid_binary_cross_entropy
    t = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype)
    value = bce.fn(z, t)
    np.testing.assert_allclose(
        value, (2e4 + np.log(2) + 2e4 + 5 + np.log1p(np.exp(-5))) / 2, rtol=1e-6
    )
    np.testing.assert_allclose(bce.grad(z, t), jax.grad(bce.fn)(z, t), rtol=1e-6)


def test_unknown_loss_lists_the_valid_names():
    with pytest.raises(
        ValueError,
        match="loss: expected one of mse, softmax_cross_entropy, "
        "sigmoid_binary_cross_entropy or a Loss, got 'hinge'",
    ):
        losses.get("hinge")


WITH_OUTPUT = ("sigmoid", "tanh")  # the activations whose backprop σ' reads a = σ(z)


@pytest.mark.parametrize("name", WITH_OUTPUT)
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_derivative_given_the_output_is_exact_to_rounding(name, dtype, jit):
    """``derivative(z, σ(z))`` (what backprop calls) is within a few ulp of σ'(z).

    tanh: u(1 + |a|)²; sigmoid: a(1 − a) for z < 0, e^{−z}a² for z ≥ 0 (where XLA
    shares e^{−z} with σ itself under jit). On the regimes of Z and a dense grid
    out to where e^{−z} overflows, relative to the float64 closed form: every
    digit kept in saturation too. XLA's exp flushes results below the smallest
    normal number to 0, and tanh' = 4u there, so below 4·tiny the check is absolute.
    """
    act = activations.get(name)
    grid = jnp.concatenate([Z, jnp.linspace(-110.0, 110.0, 4001, dtype=jnp.float64)]).astype(dtype)

    def derivative(z):
        return act.derivative(z, act.fn(z))

    got = np.asarray(jax.jit(derivative)(grid) if jit else derivative(grid))
    assert got.dtype == dtype
    expected = np.array([REFERENCE_DERIV[name](float(v)) for v in np.asarray(grid)])
    info = jnp.finfo(dtype)
    normal = expected >= 4 * float(info.tiny)
    np.testing.assert_allclose(got[normal], expected[normal], rtol=8 * float(info.eps), atol=0)
    np.testing.assert_allclose(got[~normal], expected[~normal], rtol=0, atol=4 * float(info.tiny))


def _sigmoid_derivative_given_output(z):
    """What backprop computes for a sigmoid layer: ``derivative(z, σ(z))``."""
    return activations.sigmoid.derivative(z, jax.nn.sigmoid(z))


def test_sigmoid_derivative_given_the_output_has_no_infinite_intermediate():
    """Under ``jax_debug_infs``, which checks every op run outside ``jit``, sigmoid'
    of saturated units (e^{−z} overflows for z < −88 in float32) raises nothing —
    eagerly, under ``vmap`` and under ``grad`` without ``jit``, and jitted — and
    matches the overflow-free form."""
    z = jnp.array([-1e3, -100.0, -89.0, 0.0, 3.0, 100.0], jnp.float32)

    with jax.debug_infs(True):
        runs = [
            _sigmoid_derivative_given_output(z),
            jax.vmap(_sigmoid_derivative_given_output)(z),
            jax.jit(_sigmoid_derivative_given_output)(z),
        ]
        second = jax.grad(lambda v: jnp.sum(_sigmoid_derivative_given_output(v)))(z)
    for got in runs:
        np.testing.assert_allclose(got, activations.sigmoid.deriv(z), rtol=1e-6, atol=1e-37)
    assert np.all(np.isfinite(second))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_sigmoid_derivative_given_the_output_differentiates_to_the_second_derivative(dtype, jit):
    """``d/dz derivative(z, σ(z)) = σ''(z) = σ'(z)(1 − 2σ(z))``, finite everywhere:
    the branch not taken (e^{−z} = inf for very negative z) never reaches the
    gradient, and z = 0 gets σ''(0) = 0."""
    grid = jnp.concatenate([Z, jnp.linspace(-110.0, 110.0, 441, dtype=jnp.float64)]).astype(dtype)

    second = jax.vmap(jax.grad(_sigmoid_derivative_given_output))
    got = np.asarray(jax.jit(second)(grid) if jit else second(grid))
    expected = [
        REFERENCE_DERIV["sigmoid"](float(v)) * (1 - 2 * _sigmoid(float(v)))
        for v in np.asarray(grid)
    ]
    assert np.all(np.isfinite(got))
    if dtype == jnp.float64:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-16)
    else:  # 1 − 2σ cancels near z = 0: absolute ε_32 there
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", activations.names())
def test_derivative_is_deriv_unless_a_form_with_the_output_is_given(name):
    act = activations.get(name)
    z = Z.astype(jnp.float32)
    if act.deriv_with_output is None:
        np.testing.assert_array_equal(act.derivative(z, act.fn(z)), act.deriv(z))
    else:
        assert name in WITH_OUTPUT
