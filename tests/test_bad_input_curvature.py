"""Bad input to the curvature, per-example and noise functions (issue 19).

One table: each row is a call, the exception it must raise, a pattern its
message must match (starting with the argument's name), and the call must
compile nothing (the error comes from the checks, before any XLA compile).
Then the two results that must not pass as good: a dense Newton step on a
singular Hessian is not converged, and a dense Newton step on many parameters
says what it will cost.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax
from gdjax import curvature, per_example
from gdjax.curvature import newton
from gdjax.mlp import MLP

MODEL = MLP((3, 4, 2), activation="tanh")
PARAMS = MODEL.init(jax.random.key(0), dtype=jnp.float64)
X = jnp.linspace(-1.0, 1.0, 15, dtype=jnp.float64).reshape(5, 3)
Y = jnp.zeros((5, 2), jnp.float64)
X1, Y1 = X[:1], Y[:1]  # one example (sliced here: a slice in the call would compile)
V = jax.tree.map(jnp.ones_like, PARAMS)
F = gdjax.objective(MODEL, "mse")
KEY = jax.random.key(1)
NAN_PARAMS = jax.tree.map(lambda p: p.at[0].set(jnp.nan), PARAMS)


def outputs(p, x):  # not a cost: the network's (5, 2) outputs
    return MODEL.apply(p, x)


def cost_and_outputs(p, x, y):  # a tuple, not a scalar
    return F(p, x, y), MODEL.apply(p, x)


NOT_A_SCALAR = r"^f: expected f\(params, \*args\) to return a floating scalar"
NOT_CALLABLE = r"^f: expected a callable f\(params, \*args\), got int"
MISSING_ARGS = r"^args: f\(params, x, y\) cannot be called as f\(params, \*args\)"

CASES = {
    # hvp: the function, its data, its point
    "hvp, f with a (5, 2) output": (
        lambda: curvature.hvp(outputs, PARAMS, V, X), ValueError,
        NOT_A_SCALAR + ".*shape \\(5, 2\\)"),
    "hvp, f returning a tuple": (
        lambda: curvature.hvp(cost_and_outputs, PARAMS, V, X, Y), ValueError,
        NOT_A_SCALAR + ".*a tuple with 2 leaves"),
    "hvp, f not callable": (lambda: curvature.hvp(3, PARAMS, V, X, Y), ValueError, NOT_CALLABLE),
    "hvp, no data arguments": (lambda: curvature.hvp(F, PARAMS, V), ValueError, MISSING_ARGS),
    "hvp, one data argument missing": (
        lambda: curvature.hvp(F, PARAMS, V, X), ValueError, MISSING_ARGS + ".*missing"),
    "hvp, a data argument too many": (
        lambda: curvature.hvp(F, PARAMS, V, X, Y, Y), ValueError, MISSING_ARGS + ".*too many"),
    "hvp, NaN params": (
        lambda: curvature.hvp(F, NAN_PARAMS, V, X, Y), ValueError,
        r"^params\[0\]\['b'\]: expected finite values"),
    # the same faults in hvp's neighbours
    "hvp_operator, f with a (5, 2) output": (
        lambda: curvature.hvp_operator(outputs, PARAMS, X), ValueError, NOT_A_SCALAR),
    "top_eigenvalues, f not callable": (
        lambda: curvature.top_eigenvalues("f", PARAMS, 1, X, Y, key=KEY), ValueError,
        r"^f: expected a callable"),
    "top_eigenvalues, no data arguments": (
        lambda: curvature.top_eigenvalues(F, PARAMS, 1, key=KEY), ValueError, MISSING_ARGS),
    "trace, f with a (5, 2) output": (
        lambda: curvature.trace(outputs, PARAMS, X, key=KEY), ValueError, NOT_A_SCALAR),
    "spectral_density, no data arguments": (
        lambda: curvature.spectral_density(F, PARAMS, key=KEY), ValueError, MISSING_ARGS),
    "layer_curvature, f with a (5, 2) output": (
        lambda: curvature.layer_curvature(outputs, PARAMS, X, key=KEY), ValueError,
        NOT_A_SCALAR),
    "taylor_step, f not callable": (
        lambda: curvature.taylor_step(None, PARAMS, X, Y, etas=[0.1]), ValueError,
        r"^f: expected a callable f\(params, \*args\), got NoneType"),
    "newton_step, one data argument missing": (
        lambda: curvature.newton_step(F, PARAMS, X), ValueError, MISSING_ARGS),
    "newton_step cg, f with a (5, 2) output": (
        lambda: curvature.newton_step(outputs, PARAMS, X, method="cg"), ValueError,
        NOT_A_SCALAR),
    # gradient noise of one example; the minibatch error of a bad trace
    "gradient_noise, one example": (
        lambda: per_example.gradient_noise(MODEL, "mse", PARAMS, X1, Y1), ValueError,
        r"^x: expected at least 2 examples.*got shape \(1, 3\)"),
    "minibatch_error, negative trace": (
        lambda: per_example.minibatch_error(-1.0, 10, 3), ValueError,
        r"^trace_cov: expected a non-negative finite number, got -1\.0"),
    "minibatch_error, NaN trace": (
        lambda: per_example.minibatch_error(float("nan"), 10, 3), ValueError,
        r"^trace_cov: expected a non-negative finite number, got nan"),
    "minibatch_error, infinite trace": (
        lambda: per_example.minibatch_error(np.inf, 10, [1, 2]), ValueError, r"^trace_cov:"),
    "GradientNoise.expected_error, NaN trace": (
        lambda: per_example.GradientNoise(None, 1.0, 1.0, np.nan, 1.0, 10).expected_error(2),
        ValueError, r"^trace_cov:"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_named_before_anything_compiles(name, compilations):
    call, error, pattern = CASES[name]
    with pytest.raises(error) as info:
        call()
    assert re.search(pattern, str(info.value)), str(info.value)
    assert compilations.count == 0, name


def test_minibatch_error_takes_a_zero_dimensional_array():
    got = per_example.minibatch_error(jnp.asarray(2.0), 10, [1, 5, 10])
    np.testing.assert_allclose(got, [2.0, 2.0 / 5 * 5 / 9, 0.0])


def _singular(p):  # C = ½ p₀² + p₀ + p₁: H = diag(1, 0), no minimum
    return 0.5 * p[0] ** 2 + p[0] + p[1]


@pytest.mark.parametrize("method", ["dense", "cg"])
def test_newton_step_on_a_singular_hessian_is_not_converged(method):
    res = curvature.newton_step(_singular, jnp.zeros(2, jnp.float64), method=method)
    assert not res.converged
    if method == "dense":  # the solve gives Inf/NaN: said, not hidden
        assert not np.all(np.isfinite(np.asarray(res.params)))


def test_dense_newton_step_above_the_size_says_its_cost(monkeypatch):
    monkeypatch.setattr(newton, "DENSE_WARN_PARAMS", 2)
    params = jnp.zeros(3, jnp.float64)

    def bowl(p):
        return 0.5 * jnp.sum(jnp.arange(1.0, 4.0) * (p - 1.0) ** 2)

    with pytest.warns(curvature.CostWarning, match=r"^params: method='dense' forms the 3×3"):
        res = curvature.newton_step(bowl, params)
    np.testing.assert_allclose(res.params, np.ones(3), rtol=1e-12)  # it still solves
    with pytest.warns(curvature.CostWarning, match=r"3 Hessian-vector products.*method='cg'"):
        curvature.newton_step(bowl, params)


def test_dense_newton_step_at_the_size_is_silent(recwarn):
    n = newton.DENSE_WARN_PARAMS
    assert 1000 <= n < newton.MAX_DENSE_PARAMS
    curvature.newton_step(lambda p: 0.5 * jnp.sum(p**2), jnp.zeros(3, jnp.float64))
    assert not [w for w in recwarn if issubclass(w.category, curvature.CostWarning)]
