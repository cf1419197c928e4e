"""data_chunk: products accumulated over chunks of the data equal the unchunked ones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gdjax import MLP, curvature, objective

N = 23  # a prime: no chunk size but 1 and 23 divides it


@pytest.fixture(scope="module")
def problem():
    model = MLP((3, 6, 2), activation="tanh")
    params = model.init(jax.random.key(0), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (N, 3), jnp.float64)
    y = jax.random.randint(jax.random.key(2), (N,), 0, 2)
    return objective(model, "softmax_cross_entropy"), params, x, y


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


@pytest.mark.parametrize("chunk", [1, 4, 5, 23, 100])
def test_chunked_hvp_and_operator_equal_unchunked(problem, chunk):
    f, params, x, y = problem
    v = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype).reshape(p.shape)), params)
    want = flat(curvature.hvp(f, params, v, x, y))
    got = flat(curvature.hvp(f, params, v, x, y, data_chunk=chunk))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    op = curvature.hvp_operator(f, params, x, y, data_chunk=chunk)
    np.testing.assert_allclose(flat(op(v)), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk", [4, 5])
def test_chunked_lanczos_and_trace_equal_unchunked(problem, chunk):
    f, params, x, y = problem
    key = jax.random.key(3)
    want = curvature.top_eigenvalues(f, params, 2, x, y, key=key, tol=1e-10)
    got = curvature.top_eigenvalues(f, params, 2, x, y, key=key, tol=1e-10, data_chunk=chunk)
    assert got.converged and want.converged
    np.testing.assert_allclose(got.eigenvalues, want.eigenvalues, rtol=1e-12)
    t_want = curvature.trace(f, params, x, y, key=key, samples=8)
    t_got = curvature.trace(f, params, x, y, key=key, samples=8, data_chunk=chunk)
    np.testing.assert_allclose(t_got.samples, t_want.samples, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "bad, message",
    [
        (0, r"data_chunk: expected a positive integer \(examples per chunk\), got 0"),
        (-3, r"data_chunk: expected a positive integer"),
        (2.5, r"data_chunk: expected None or a positive integer .*got 2.5"),
        (True, r"data_chunk: expected None or a positive integer .*got True"),
    ],
)
def test_bad_data_chunk_is_refused_by_name(problem, bad, message, compilations):
    f, params, x, y = problem
    before = compilations.count
    for call in (
        lambda: curvature.hvp(f, params, params, x, y, data_chunk=bad),
        lambda: curvature.hvp_operator(f, params, x, y, data_chunk=bad),
        lambda: curvature.top_eigenvalues(
            f, params, 1, x, y, key=jax.random.key(0), data_chunk=bad
        ),
        lambda: curvature.trace(f, params, x, y, key=jax.random.key(0), data_chunk=bad),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    assert compilations.count == before


def test_data_chunk_needs_args_of_one_length(problem):
    f, params, x, y = problem
    with pytest.raises(ValueError, match=r"data_chunk: expected every data argument to have"):
        curvature.hvp(f, params, params, x, y[:-1], data_chunk=4)


def test_dense_newton_on_a_singular_hessian_is_not_converged():
    def f(p):
        return (
            0.5 * p[0] ** 2 + p[1]
        )  # H = diag(1, 0): singular, ∇C has a part along the null space

    res = curvature.newton_step(f, jnp.array([1.0, 0.0]), method="dense")
    assert not res.converged
    ok = curvature.newton_step(lambda p: 0.5 * jnp.sum(p**2), jnp.array([1.0, 2.0]), method="dense")
    assert ok.converged
    np.testing.assert_allclose(ok.params, [0.0, 0.0], atol=1e-12)


def test_hvp_refuses_nan_params_like_its_neighbours():
    with pytest.raises(ValueError, match=r"params: expected finite values"):
        curvature.hvp(lambda p: jnp.sum(p**2), jnp.array([1.0, jnp.nan]), jnp.ones(2))
