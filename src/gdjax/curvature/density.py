"""The eigenvalue density of the Hessian: stochastic Lanczos quadrature.

- :func:`spectral_density` — quadrature nodes and weights from Lanczos runs on
  random start vectors, and the density smoothed by a Gaussian kernel; returns
  a :class:`SpectralDensity`, whose ``mass(low, high)`` estimates the fraction of
  eigenvalues in an interval.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._checks import check_finite_args, check_finite_number, check_positive_int
from gdjax.curvature.eigen import _basis_rows, _lanczos_update, _set_orthonormal
from gdjax.curvature.products import (
    _check_choice,
    _check_data_chunk,
    _check_f,
    _check_key,
    _check_params,
    _flat_operator,
)

__all__ = ["spectral_density", "SpectralDensity"]

PyTree = Any


# ---------------------------------------------------------------- spectral density


class SpectralDensity(NamedTuple):
    """What :func:`spectral_density` returns; arrays are numpy (float64).

    Attributes:
      nodes: ``(runs, m)``, the eigenvalues θ_{r,i} of each run's tridiagonal ``T_m``
        (ascending): the quadrature nodes.
      weights: ``(runs, m)``, ``τ_{r,i} = s_{r,i}[0]²``, the squared first components of
        the eigenvectors of ``T_m``: the quadrature weights (each row sums to 1).
      grid: the points t at which the density is evaluated.
      density: ``φ(t) = (1/R) Σ_r Σ_i τ_{r,i} g_σ(t − θ_{r,i})`` on ``grid``, with
        ``g_σ`` the Gaussian of width σ: a probability density (it integrates to 1
        over a grid that covers the nodes with a few σ to spare, as the default does).
      sigma: σ, the width of the Gaussian kernel.
      hvps: the number of Hessian-vector products computed (``runs·m``).
    """

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    hvps: int

    def mass(self, low: float = -math.inf, high: float = math.inf) -> float:
        """The estimated fraction of the n eigenvalues of H in ``[low, high)``.

        ``(1/R) Σ_r Σ_i τ_{r,i} 1[low ≤ θ_{r,i} < high]``: each run is ``v̂ᵀ P v̂`` for
        the spectral projector P on ``[low, high)`` (exactly so when m = n), an
        unbiased estimate of ``tr P / n``.
        """
        inside = (self.nodes >= low) & (self.nodes < high)
        return float(np.mean(np.sum(self.weights * inside, axis=1)))


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 7))
def _slq_lanczos(f, params, keys, steps, batch_size, gaussian, args, data_chunk=None):
    """α ``(runs, m)`` and β ``(runs, m − 1)`` of ``T_m`` from each key's start vector.

    The Lanczos step (with full reorthogonalisation) is :func:`_lanczos_update`;
    when β collapses (an invariant subspace), the next vector is a random one
    orthogonal to the basis and that β is set to 0: ``T_m`` splits into blocks,
    and the nodes of the later blocks get weight 0.
    """
    flat, _ = ravel_pytree(params)
    n, dtype = flat.size, flat.dtype
    eps = jnp.finfo(dtype).eps
    operator = _flat_operator(f, params, args, data_chunk)

    def one_run(key):
        start_key, restart_key = jax.random.split(key)
        if gaussian:
            v = jax.random.normal(start_key, (n,), dtype)
        else:
            v = jax.random.rademacher(start_key, (n,), dtype)
        q_mat = jnp.zeros((_basis_rows(steps), n), dtype).at[0].set(v / jnp.linalg.norm(v))

        def restart(q_mat, j):
            r = jax.random.normal(jax.random.fold_in(restart_key, j), (n,), dtype)
            return _set_orthonormal(q_mat.at[j + 1].set(0), j + 1, r)[0]

        def step(j, state):
            q_mat, alphas, betas, scale = state
            beta_prev = jnp.where(j > 0, betas[jnp.maximum(j - 1, 0)], 0)
            q_mat, _, alpha, beta = _lanczos_update(q_mat, j, operator(q_mat[j]), beta_prev)
            scale = jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta))
            broke = (beta <= 1e3 * eps * scale) & (j + 1 < steps)
            q_mat = jax.lax.cond(broke, restart, lambda q, j: q, q_mat, j)
            return q_mat, alphas.at[j].set(alpha), betas.at[j].set(jnp.where(broke, 0, beta)), scale

        zeros = jnp.zeros(steps, dtype)
        state = (q_mat, zeros, zeros, jnp.zeros((), dtype))
        _, alphas, betas, _ = jax.lax.fori_loop(0, steps, step, state)
        return alphas, betas[:-1]

    return jax.lax.map(one_run, keys, batch_size=batch_size)


def _gaussian_mixture(grid: np.ndarray, nodes: np.ndarray, weights: np.ndarray, sigma: float):
    """``(1/R) Σ_r Σ_i τ_{r,i} g_σ(t − θ_{r,i})`` on the grid, one run at a time."""
    density = np.zeros(grid.size)
    for theta, tau in zip(nodes, weights, strict=True):
        density += np.exp(-0.5 * ((grid[:, None] - theta) / sigma) ** 2) @ tau
    return density / (len(nodes) * sigma * math.sqrt(2 * math.pi))


def _check_grid(grid) -> np.ndarray | int | None:
    if grid is None:
        return None
    if isinstance(grid, int | np.integer) and not isinstance(grid, bool):
        if grid < 2:
            raise ValueError(f"grid: expected at least 2 points, got {grid}.")
        return int(grid)
    points = np.asarray(grid)
    if (
        points.ndim != 1
        or points.size < 2
        or not np.issubdtype(points.dtype, np.number)
        or not np.all(np.isfinite(points))
        or not np.all(np.diff(points) > 0)
    ):
        raise ValueError(
            f"grid: expected None, a number of points ≥ 2, or a 1-D increasing array of at "
            f"least 2 finite points, got {grid!r}."
        )
    return points.astype(np.float64)


def spectral_density(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    lanczos_steps: int | None = None,
    runs: int = 10,
    grid: int | Sequence[float] | np.ndarray | None = None,
    sigma: float | None = None,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    batch_size: int = 1,
    data_chunk: int | None = None,
) -> SpectralDensity:
    """The eigenvalue density of the Hessian by stochastic Lanczos quadrature (SLQ).

    The spectral density of ``H = ∇²C(θ)`` (n eigenvalues λ_k, eigenvectors u_k)
    and its smoothed version are

    .. math::

        φ(t) = \\frac{1}{n}\\sum_{k=1}^n δ(t − λ_k), \\qquad
        φ_σ(t) = \\frac{1}{n}\\sum_{k=1}^n g_σ(t − λ_k)
               = \\frac{1}{n}\\operatorname{tr} g_σ(tI − H),

    with ``g_σ(s) = exp(−s²/2σ²)/(σ√2π)``. A trace is an expectation over random
    unit vectors v̂ (``𝔼[v̂ᵀAv̂] = tr A / n``), and ``v̂ᵀ g(H) v̂ = Σ_k (v̂ᵀu_k)² g(λ_k)``
    is an integral against the measure with weights ``(v̂ᵀu_k)²`` at the λ_k, which m
    steps of Lanczos from q_0 = v̂ turn into an m-point Gauss quadrature: with
    ``T_m = S diag(θ) Sᵀ`` the tridiagonal Lanczos matrix,

    .. math::

        v̂^T g(H)\\, v̂ ≈ \\sum_{i=1}^m τ_i\\, g(θ_i), \\qquad τ_i = S_{0i}^2,
        \\qquad \\sum_i τ_i = 1,

    exact for polynomials g of degree ≤ 2m − 1 (so ``Σ_i τ_i θ_i = v̂ᵀHv̂``, and
    ``n·𝔼[Σ_i τ_i θ_i] = tr H``). Averaging R runs (independent v̂) gives
    ``φ_σ(t) ≈ (1/R) Σ_r Σ_i τ_{r,i} g_σ(t − θ_{r,i})``. Each run costs m Hessian-vector
    products. Lanczos keeps all m vectors and reorthogonalises fully (as in
    :func:`top_eigenvalues`), so the nodes are not spoiled by the ghost copies
    that plain Lanczos produces in floating point; with m = n they are the
    eigenvalues of H themselves and the weights the exact ``(v̂ᵀu_k)²``.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ.
      *args: further arguments of ``f`` (e.g. ``x, y``).
      key: PRNG key for the start vectors (run r uses ``split(key, runs)[r]``).
      lanczos_steps: m, Lanczos steps per run, ``1 ≤ m ≤ n``; default ``min(90, n)``
        (Ghorbani et al. use 90).
      runs: R, the number of start vectors.
      grid: where the density is evaluated: an array of increasing points, or a
        number of points, or None; the last two span ``[min θ − 5σ, max θ + 5σ]``
        with spacing at most σ/4 (None: at least 1001 points).
      sigma: σ, the kernel width; default 1 % of the spread ``max θ − min θ`` of the
        nodes (of ``max |θ|`` if they all coincide, and 0.01 if they are all 0).
      distribution: of the start vectors before normalising: ``"rademacher"``
        (±1, the lower-variance choice) or ``"gaussian"``.
      batch_size: runs computed together under ``vmap``; memory ``batch_size·(m+1)·n``.
      data_chunk: ``None``, or k examples per chunk: every product is accumulated
        over chunks of the data (see :func:`hvp`), so memory follows k, not n.

    Returns:
      A :class:`SpectralDensity` ``(nodes, weights, grid, density, sigma, hvps)``;
      ``.mass(low, high)`` estimates the fraction of eigenvalues in ``[low, high)``.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 1.0, 4.0]) * p**2)  # λ = 1, 1, 4
      >>> sd = spectral_density(f, jnp.zeros(3), key=jax.random.key(0), runs=4)
      >>> sd.nodes.shape, sd.weights.sum(axis=1).round(12).tolist()
      ((4, 3), [1.0, 1.0, 1.0, 1.0])
      >>> round(sd.mass(high=2.0), 6)   # Rademacher v̂: (v̂ᵀu)² = 1/3 for each λ here
      0.666667

    References:
      Ghorbani, Krishnan & Xiao (2019), "An investigation into neural net
      optimization via Hessian eigenvalue density", ICML; Ubaru, Chen & Saad
      (2017), "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature",
      SIAM J. Matrix Anal. Appl. 38(4); Golub & Meurant, *Matrices, Moments and
      Quadrature with Applications* (2010).
    """
    n = _check_params(params)
    check_finite_args(args)
    if lanczos_steps is None:
        lanczos_steps = min(90, n)
    steps = check_positive_int("lanczos_steps", lanczos_steps)
    if steps > n:
        raise ValueError(
            f"lanczos_steps: expected at most {n}, the number of parameters (the Krylov "
            f"space cannot grow beyond it), got {steps}."
        )
    runs = check_positive_int("runs", runs)
    grid = _check_grid(grid)
    if sigma is not None:
        sigma = check_finite_number("sigma", sigma)
    distribution = _check_choice("distribution", distribution, ("rademacher", "gaussian"))
    batch_size = check_positive_int("batch_size", batch_size)
    data_chunk = _check_data_chunk(data_chunk, f, args)
    _check_key(key)
    _check_f(f, params, args, data_chunk)

    alphas, betas = _slq_lanczos(
        f,
        params,
        jax.random.split(key, runs),
        steps,
        min(batch_size, runs),
        distribution == "gaussian",
        args,
        data_chunk,
    )
    alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    t = np.zeros((runs, steps, steps))
    i = np.arange(steps)
    t[:, i, i] = alphas
    t[:, i[:-1], i[1:]] = t[:, i[1:], i[:-1]] = betas
    nodes, vectors = np.linalg.eigh(t)
    weights = vectors[:, 0, :] ** 2

    low, high = float(nodes.min()), float(nodes.max())
    if sigma is None:
        spread = high - low if high > low else max(abs(low), abs(high))
        sigma = 0.01 * spread if spread > 0 else 0.01
    if not isinstance(grid, np.ndarray):
        span = high - low + 10 * sigma
        points = max(1001, math.ceil(4 * span / sigma) + 1) if grid is None else grid
        grid = np.linspace(low - 5 * sigma, high + 5 * sigma, points)
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        grid=grid,
        density=_gaussian_mixture(grid, nodes, weights, sigma),
        sigma=sigma,
        hvps=runs * steps,
    )
