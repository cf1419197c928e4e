"""data_chunk: analyses accumulated over chunks of the data equal the unchunked ones.

Every curvature function that evaluates f over the batch takes ``data_chunk=k``;
each is run with k and without, in float64, and must agree to 1e-12 (relative to
the largest entry of each result). n = 23 is prime, so the chunk sizes here
leave a smaller last chunk; the table of analyses runs k = 5 on n = 23 (a last
chunk of 3), and its cheaper analyses also k = 4 on the first 20 examples
(which it divides).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gdjax import MLP, curvature, objective

N = 23  # a prime: no chunk size but 1 and 23 divides it


KEY = jax.random.key(3)
MODEL = MLP((3, 6, 2), activation="tanh")
PROBLEM = (  # f, float64 params, x, integer labels y
    objective(MODEL, "softmax_cross_entropy"),
    MODEL.init(jax.random.key(0), dtype=jnp.float64),
    jax.random.normal(jax.random.key(1), (N, 3), jnp.float64),
    jax.random.randint(jax.random.key(2), (N,), 0, 2),
)


@pytest.fixture(scope="module")
def problem():
    return PROBLEM


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])  # a scalar or array leaf: itself, raveled


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


LOSS = "softmax_cross_entropy"


def _sharpness(model, p, x, y, k):
    tracker = curvature.track_sharpness(model, LOSS, x, y, key=KEY, tol=1e-10, data_chunk=k)
    tracker(0, p)
    return tracker


# Each analysis: (its call on a model with data_chunk=k, None unchunked; the fields compared).
ANALYSES = {
    "spectral_density": (
        lambda m, p, x, y, k: curvature.spectral_density(
            objective(m, LOSS), p, x, y, key=KEY, runs=2, lanczos_steps=12, data_chunk=k
        ),
        ("nodes", "weights", "density"),
    ),
    "layer_curvature, exact trace": (
        lambda m, p, x, y, k: curvature.layer_curvature(
            objective(m, LOSS), p, x, y, key=KEY, trace_method="exact", data_chunk=k
        ),
        ("lambda_max", "trace", "hvps", "converged"),
    ),
    "layer_curvature, Hutchinson": (
        lambda m, p, x, y, k: curvature.layer_curvature(
            objective(m, LOSS), p, x, y, key=KEY, trace_method="hutchinson", data_chunk=k
        ),
        ("lambda_max", "trace", "trace_stderr"),
    ),
    "taylor_step": (
        lambda m, p, x, y, k: curvature.taylor_step(
            objective(m, LOSS), p, x, y, etas=[0.05, 0.5, 2.0], data_chunk=k
        ),
        ("actual", "slope", "curvature", "direction", "lambda_max"),
    ),
    "taylor_step, one layer": (
        lambda m, p, x, y, k: curvature.taylor_step(
            objective(m, LOSS), p, x, y, etas=[0.05, 0.5, 2.0], layer=1, data_chunk=k
        ),
        ("actual", "slope", "curvature", "direction", "lambda_max"),
    ),
    "newton_step, dense": (
        lambda m, p, x, y, k: curvature.newton_step(
            objective(m, LOSS), p, x, y, damping=0.5, data_chunk=k
        ),
        ("params", "converged"),  # not the residual: rounding noise, ~1e-16
    ),
    "newton_step, cg": (
        lambda m, p, x, y, k: curvature.newton_step(
            objective(m, LOSS), p, x, y, damping=0.5, method="cg", data_chunk=k
        ),
        ("params", "iterations", "negative_curvature"),
    ),
    "track_sharpness": (_sharpness, ("sharpness", "converged")),
}


def _fields(case, result) -> list[np.ndarray]:
    return [flat(getattr(result, name)) for name in ANALYSES[case][1]]


@functools.cache
def _unchunked(case, n):
    _, params, x, y = PROBLEM
    return _fields(case, ANALYSES[case][0](MODEL, params, x[:n], y[:n], None))


# Every analysis with a ragged last chunk (k = 5 on n = 23); the ones whose
# products are cheapest also with a chunk that divides n (k = 4 on 20): the
# slow ones (Lanczos-heavy) share chunked_mean with them and with the dividing
# chunks of test_chunked_hvp_and_operator_equal_unchunked.
DIVIDING = ("taylor_step", "taylor_step, one layer", "newton_step, dense", "newton_step, cg")


@pytest.mark.parametrize(
    ("case", "n", "chunk"),
    [(case, N, 5) for case in ANALYSES] + [(case, 20, 4) for case in DIVIDING],
)
def test_chunked_analysis_equals_unchunked(case, n, chunk):
    _, params, x, y = PROBLEM
    want = _unchunked(case, n)
    got = _fields(case, ANALYSES[case][0](MODEL, params, x[:n], y[:n], chunk))
    for name, w, g in zip(ANALYSES[case][1], want, got, strict=True):
        w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
        tol = 1e-12 * np.max(np.abs(w))
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=tol, err_msg=name)


@pytest.mark.parametrize("case", list(ANALYSES))
def test_chunked_analysis_sees_only_chunks(case):
    """f is never evaluated on more than k examples: that is what keeps memory at k."""
    seen = set()

    def apply(p, x):
        seen.add(x.shape[0])  # at trace time: the rows f gets
        return MODEL.apply(p, x)

    _, params, x, y = PROBLEM
    ANALYSES[case][0](apply, params, x, y, 5)
    assert seen and seen <= {5, N % 5}


# Every function that takes data_chunk, called with a bad one (x, y: the batch of `problem`).
CHUNKED_CALLS = {
    "hvp": lambda f, p, x, y, k: curvature.hvp(f, p, p, x, y, data_chunk=k),
    "hvp_operator": lambda f, p, x, y, k: curvature.hvp_operator(f, p, x, y, data_chunk=k),
    "top_eigenvalues": lambda f, p, x, y, k: curvature.top_eigenvalues(
        f, p, 1, x, y, key=KEY, data_chunk=k
    ),
    "trace": lambda f, p, x, y, k: curvature.trace(f, p, x, y, key=KEY, data_chunk=k),
    "spectral_density": lambda f, p, x, y, k: curvature.spectral_density(
        f, p, x, y, key=KEY, data_chunk=k
    ),
    "layer_curvature": lambda f, p, x, y, k: curvature.layer_curvature(
        f, p, x, y, key=KEY, data_chunk=k
    ),
    "taylor_step": lambda f, p, x, y, k: curvature.taylor_step(
        f, p, x, y, etas=[0.1], data_chunk=k
    ),
    "newton_step": lambda f, p, x, y, k: curvature.newton_step(f, p, x, y, data_chunk=k),
    "newton_step, cg": lambda f, p, x, y, k: curvature.newton_step(
        f, p, x, y, method="cg", data_chunk=k
    ),
    "track_sharpness": lambda f, p, x, y, k: curvature.track_sharpness(
        MODEL, "softmax_cross_entropy", x, y, key=KEY, data_chunk=k
    ),
}


@pytest.mark.parametrize(
    "bad, message",
    [
        (0, r"data_chunk: expected a positive integer \(examples per chunk\), got 0"),
        (-3, r"data_chunk: expected a positive integer \(examples per chunk\), got -3"),
        (2.5, r"data_chunk: expected None or a positive integer .*got 2.5"),
        (4.0, r"data_chunk: expected None or a positive integer .*got 4.0"),
        (True, r"data_chunk: expected None or a positive integer .*got True"),
        ("4", r"data_chunk: expected None or a positive integer .*got '4'"),
    ],
)
@pytest.mark.parametrize("function", list(CHUNKED_CALLS))
def test_bad_data_chunk_is_refused_by_name(problem, function, bad, message, compilations):
    f, params, x, y = problem
    before = compilations.count
    with pytest.raises(ValueError, match=message):
        CHUNKED_CALLS[function](f, params, x, y, bad)
    assert compilations.count == before


@pytest.mark.parametrize("function", list(CHUNKED_CALLS))
def test_data_chunk_of_data_with_different_rows_is_refused(problem, function, compilations):
    f, params, x, y = problem
    short = np.asarray(y)[:-1]  # sliced before counting: slicing a jax.Array compiles
    before = compilations.count
    with pytest.raises(ValueError, match=r"(data_chunk|y): expected .*(examples|rows)"):
        CHUNKED_CALLS[function](f, params, x, short, 4)
    assert compilations.count == before


def test_data_chunk_larger_than_the_data_is_one_chunk(problem):
    f, params, x, y = problem
    one = curvature.trace(f, params, x, y, key=KEY, samples=4, data_chunk=N)
    more = curvature.trace(f, params, x, y, key=KEY, samples=4, data_chunk=10 * N)
    np.testing.assert_array_equal(more.samples, one.samples)


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
