"""Critical points: a constructed saddle, a convex bowl, a maximum, a flat point and a trained net.

The reference eigenvalues come from the dense Hessian (``jax.hessian`` of the
cost of the flattened params, ``numpy.linalg.eigvalsh``) on tiny float64
problems; the verdict rule is re-applied to them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gdjax import MLP, backprop, objective
from gdjax.critical import classify_critical_point


def dense_eigenvalues(f, params, *args):
    flat, unravel = ravel_pytree(params)
    hessian = jax.jit(jax.hessian(lambda v: f(unravel(v), *args)))(flat)
    return np.linalg.eigvalsh(np.asarray(hessian))


def quadratic(p, a, c):
    """0.5 Σ_k a_k (p_k − 1)² + c Σ_k (p_k − 1)⁴: H = diag(a) at p = 1.

    One function object (a and c are traced arguments), so every case below
    shares one set of compiled Lanczos kernels.
    """
    return 0.5 * jnp.sum(a * (p - 1.0) ** 2) + c * jnp.sum((p - 1.0) ** 4)


BOWL = (jnp.arange(1.0, 5.0), 0.0)  # convex, λ = 1, 2, 3, 4


# A one-neuron-per-layer tanh network a = w² tanh(w¹ x + b¹) + b² on odd data: y = sin(2x)
# on 8 points symmetric about 0. At params 0, ∇C = 0 (mean y = 0) and, as tanh(u) = u + O(u³),
# H is that of the linear network: in the order (w¹, b¹, w², b²), ∂²C/∂w¹∂w² = −mean(x y) = −m
# and ∂²C/∂(b²)² = 1, the rest 0: eigenvalues −m, 0, m, 1. The same cost f serves the trained
# network below, so both share one set of compiled kernels.
NET = MLP((1, 1, 1), activation="tanh")
F = objective(NET, "mse")
X = jnp.linspace(-1.0, 1.0, 8)[:, None]
Y = jnp.sin(2.0 * X)
M = float(jnp.mean(X * Y))


def test_one_neuron_tanh_network_at_the_origin_is_a_saddle(key):
    params = [{"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)} for _ in range(2)]
    point = classify_critical_point(F, params, X, Y, key=key)
    np.testing.assert_allclose(dense_eigenvalues(F, params, X, Y), [-M, 0, M, 1], atol=1e-12)
    assert point.verdict == "saddle"
    assert point.grad_norm < 1e-15  # mean(y) = 0 up to rounding
    np.testing.assert_allclose([point.lambda_min, point.lambda_max], [-M, 1.0], atol=1e-10)
    assert 0.0 < point.negative_fraction < 1.0  # SLQ estimate of the true 1/4
    assert point.num_params == 4


def test_convex_quadratic_is_a_minimum_and_other_verdicts(key):
    one = jnp.ones(4)
    at_min = classify_critical_point(quadratic, one, *BOWL, key=key)
    assert at_min.verdict == "minimum"
    np.testing.assert_allclose([at_min.lambda_min, at_min.lambda_max], [1.0, 4.0], rtol=1e-10)
    assert at_min.negative_fraction == 0.0
    away = classify_critical_point(quadratic, jnp.zeros(4), *BOWL, key=key)
    assert away.verdict == "not critical" and away.grad_norm == pytest.approx(np.sqrt(30.0))
    assert away.lambda_min == pytest.approx(1.0)  # curvature is reported for every verdict
    top = classify_critical_point(quadratic, one, -BOWL[0], 0.0, key=key)
    assert top.verdict == "maximum" and top.negative_fraction == pytest.approx(1.0)
    saddle = classify_critical_point(quadratic, one, jnp.array([1.0, -2.0, 3.0, 0.0]), 0.0, key=key)
    assert saddle.verdict == "saddle" and saddle.lambda_min == pytest.approx(-2.0)
    flat = classify_critical_point(quadratic, one, jnp.zeros(4), 1.0, key=key)  # Σ (p − 1)⁴
    assert flat.verdict == "flat"


def test_tolerances_decide_near_zero_curvature(key):
    """λ = (1, 1, 1, −1e-9): a saddle at rtol 1e-12, a (degenerate) minimum at the default √ε."""
    a = jnp.array([1.0, 1.0, 1.0, -1e-9])
    loose = classify_critical_point(quadratic, jnp.ones(4), a, 0.0, key=key)
    assert loose.verdict == "minimum"
    assert loose.curvature_threshold == pytest.approx(np.sqrt(np.finfo(np.float64).eps))
    tight = classify_critical_point(quadratic, jnp.ones(4), a, 0.0, key=key, rtol=1e-12)
    assert tight.verdict == "saddle"


def test_trained_tiny_network_is_a_minimum_matching_the_dense_hessian(key):
    """Gradient descent from near the saddle escapes it and ends at a minimum."""
    params = NET.init(key, dtype=jnp.float64)

    @jax.jit
    def train(params):  # 3000 steps of full-batch gradient descent, η = 0.5
        def step(_, p):
            _, g = backprop(NET, "mse", p, X, Y)
            return jax.tree.map(lambda w, dw: w - 0.5 * dw, p, g)

        return jax.lax.fori_loop(0, 3000, step, params)

    trained = train(params)
    point = classify_critical_point(F, trained, X, Y, key=key)
    eig = dense_eigenvalues(F, trained, X, Y)
    np.testing.assert_allclose([point.lambda_min, point.lambda_max], eig[[0, -1]], atol=1e-9)
    assert F(trained, X, Y) < 0.5 * F(jax.tree.map(jnp.zeros_like, trained), X, Y)
    assert point.grad_norm < 1e-6 and eig[0] > -point.curvature_threshold
    assert point.verdict == "minimum"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grad_tol": 0.0}, r"grad_tol: expected a positive finite number, got 0.0"),
        ({"rtol": float("nan")}, r"rtol: expected a non-negative finite number, got nan"),
        ({"atol": -1.0}, r"atol: expected a non-negative finite number, got -1.0"),
        ({"runs": 0}, r"runs: expected a positive integer, got 0"),
        ({"params": jnp.zeros(2, jnp.int32)}, r"params: expected a floating array, got int32"),
        ({"f": "bowl"}, r"f: expected a function"),
    ],
)
def test_bad_input_is_refused_before_compiling(kwargs, match, compilations):
    args = {"f": lambda p: jnp.sum(p**2), "params": np.zeros(4), "key": jax.random.key(0), **kwargs}
    with pytest.raises(ValueError, match=match):
        classify_critical_point(args.pop("f"), args.pop("params"), **args)
    assert compilations.count == 0
