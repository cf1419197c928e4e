"""The extreme eigenvalues of the Hessian: Lanczos and power iteration.

- :func:`top_eigenvalues` — the k largest (or smallest, or largest-magnitude)
  eigenvalues of ``H = ∇²C(θ)`` and their eigenvectors, by Lanczos with full
  reorthogonalisation (or power iteration, for comparison), with residuals
  measured by true Hessian-vector products; returns an :class:`Eigen`.

The Lanczos step (``_lanczos_update``, ``_set_orthonormal``) is shared with the
stochastic Lanczos quadrature of :mod:`gdjax.curvature.density`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._checks import check_finite_args, check_finite_number, check_positive_int
from gdjax.curvature.products import (
    _apply_operator,
    _check_choice,
    _check_data_chunk,
    _check_f,
    _check_key,
    _check_like,
    _check_params,
    _jit_flat_hvp_operator,
)

__all__ = ["top_eigenvalues", "Eigen"]

PyTree = Any


# ---------------------------------------------------------------- eigenvalues


class Eigen(NamedTuple):
    """What :func:`top_eigenvalues` returns.

    Attributes:
      eigenvalues: ``(k,)`` numpy array, ordered by ``which`` (descending value for
        ``"largest"``, ascending for ``"smallest"``, descending ``|λ|`` for
        ``"magnitude"``).
      eigenvectors: list of k params-shaped pytrees ``v_i`` of unit norm,
        ``H v_i ≈ λ_i v_i``.
      hvps: the number of Hessian-vector products computed (Lanczos: the
        number of Lanczos steps; power: all iterations of all eigenvalues), plus
        the k products that measure ``residuals``.
      converged: whether every returned pair has a *measured* residual within the
        tolerance, ``‖H v_i − λ_i v_i‖ ≤ tol·max(|λ_i|, √ε·max_j|θ_j|)`` (power:
        ``tol·|λ_i|``). That is a bound: some eigenvalue of H lies within ``tol``
        of each λ_i (Bauer–Fike). It is never claimed on an estimate alone.
      residuals: ``(k,)`` measured ``‖H v_i − λ_i v_i‖``, one true product per
        pair after the iteration stopped.
      errors: ``(k,)`` estimated eigenvalue errors ``|λ_i − θ_i|``, an estimate and
        not a bound. Lanczos: ``min(r_i, ρ_i²/gap_i)`` with ρ_i the Lanczos residual
        estimate |β_m s_{m,i}| and gap_i the distance from θ_i to the other Ritz
        values (less their residuals), which overstates the true gap while an
        eigenvector is barely in the Krylov space; power: ``r_i``.
    """

    eigenvalues: np.ndarray
    eigenvectors: list[PyTree]
    hvps: int
    converged: bool
    residuals: np.ndarray
    errors: np.ndarray


_BLOCK = 8  # rows of the Lanczos basis read per product in the reorthogonalisation


def _basis_rows(max_iters: int) -> int:
    """Rows of the Lanczos basis buffer: q_0 … q_{max_iters}, padded to a multiple of _BLOCK."""
    return -(-(max_iters + 1) // _BLOCK) * _BLOCK


def _project_out(q_mat: jax.Array, count: jax.Array, w: jax.Array) -> jax.Array:
    """``w − Σ_{i<count} q_i (q_iᵀ w)``: classical Gram–Schmidt against the first ``count`` rows.

    Reads only the blocks of ``_BLOCK`` rows that hold a basis vector, so a step
    costs O(count·n) and not O(max_iters·n) however large the preallocated buffer
    (the rows past ``count`` are zero, so a partly filled last block is harmless).
    """
    blocks = (count + _BLOCK - 1) // _BLOCK

    def block(b):
        return jax.lax.dynamic_slice_in_dim(q_mat, b * _BLOCK, _BLOCK)

    def project(b, h):
        return jax.lax.dynamic_update_slice_in_dim(h, block(b) @ w, b * _BLOCK, 0)

    h = jax.lax.fori_loop(0, blocks, project, jnp.zeros(q_mat.shape[0], w.dtype))

    def subtract(b, r):
        return r - block(b).T @ jax.lax.dynamic_slice_in_dim(h, b * _BLOCK, _BLOCK)

    return jax.lax.fori_loop(0, blocks, subtract, w)


def _lanczos_update(q_mat, j, hq, beta_prev):
    """From ``hq = H q_j``: α_j, β_j and q_{j+1} (row j + 1), fully reorthogonalised.

    Rows after ``j`` are zero; the projection reads rows q_0 … q_j only.
    """
    q = q_mat[j]
    w = hq - beta_prev * q_mat[jnp.maximum(j - 1, 0)]
    alpha = jnp.vdot(q, w)
    w = w - alpha * q
    # Classical Gram–Schmidt against every earlier vector; a second pass only when the
    # first one cancelled more than 1 − 1/√2 of w's norm (the DGKS test: "twice is
    # enough", and once is enough when little cancelled).
    # If the second pass cancels as much again, w is rounding noise in the span of the
    # basis (Parlett 1998, §6.9): an invariant subspace, β = 0, never a new direction.
    norm_before = jnp.linalg.norm(w)
    w = _project_out(q_mat, j + 1, w)
    norm_first = jnp.linalg.norm(w)

    def second_pass(w):
        w = _project_out(q_mat, j + 1, w)
        return jnp.where(jnp.linalg.norm(w) < norm_first / math.sqrt(2), 0, w)

    w = jax.lax.cond(norm_first < norm_before / math.sqrt(2), second_pass, lambda w: w, w)
    beta = jnp.linalg.norm(w)
    safe = jnp.where(beta > 0, beta, 1)
    q_next = jnp.where(beta > 0, w / safe, 0)
    return q_mat.at[j + 1].set(q_next), q_next, alpha, beta


# The host loop of top_eigenvalues: the product and the update are separate calls, so
# the basis buffer can grow (recompiling only the update, not the product).
_jit_lanczos_update = jax.jit(_lanczos_update, donate_argnums=0)
_FIRST_ROWS = 2 * _BLOCK  # rows of the basis buffer at the start; doubled when full


@functools.partial(jax.jit, static_argnums=1)
def _grow(q_mat, rows):
    """``q_mat`` with zero rows appended up to ``rows``."""
    return jnp.zeros((rows, q_mat.shape[1]), q_mat.dtype).at[: q_mat.shape[0]].set(q_mat)


@functools.partial(jax.jit, donate_argnums=0)
def _set_orthonormal(q_mat, j, r):
    """Row ``j`` of ``q_mat`` ← ``r`` orthogonalised against rows 0 … j−1 and normalised.

    Row j is cleared first: on a restart it holds the discarded direction w/β of
    the step that broke down, and the projection reads whole blocks of rows.
    """
    q_mat = q_mat.at[j].set(0)
    r = _project_out(q_mat, j, r)
    r = _project_out(q_mat, j, r)
    return q_mat.at[j].set(r / jnp.linalg.norm(r)), jnp.linalg.norm(r)


@jax.jit
def _combine(coefficients, q_mat):
    return coefficients @ q_mat


def _order(theta: np.ndarray, which: str) -> np.ndarray:
    """Indices of ``theta`` from the most to the least wanted."""
    key = {"largest": -theta, "smallest": theta, "magnitude": -np.abs(theta)}[which]
    return np.argsort(key, kind="stable")


def _ritz_errors(theta: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Estimated errors ``|λ_i − θ_i| ≤ min(r_i, r_i²/gap_i)`` of the Ritz values.

    For a symmetric H some eigenvalue lies within r_i of θ_i, and within
    r_i²/δ_i when δ_i is the distance from θ_i to the rest of the spectrum
    (Kato–Temple). δ_i is estimated by the other Ritz values, each moved toward
    θ_i by its own residual: ``gap_i = min_{j≠i} (|θ_i − θ_j| − r_j)``; where that
    is not positive, the bound is r_i alone.
    """
    m = theta.size
    if m == 1:
        return residuals.copy()
    distance = np.abs(theta[:, None] - theta[None, :]) - residuals[None, :]
    np.fill_diagonal(distance, np.inf)
    gap = distance.min(axis=1)
    quadratic = np.where(gap > 0, residuals**2 / np.where(gap > 0, gap, 1.0), np.inf)
    return np.minimum(residuals, quadratic)


def _within_tol(theta, measure, tol, floor) -> np.ndarray:
    """``measure_i ≤ tol·max(|θ_i|, floor)``, element-wise."""
    return measure <= tol * np.maximum(np.abs(theta), floor)


def _ritz_converged(theta, residuals, k, which, tol, floor, criterion) -> bool:
    """Whether the k wanted Ritz pairs meet the stopping test of ``criterion``.

    ``"residual"``: the Lanczos residual estimate |β_m s_{m,i}| meets the tolerance;
    ``"eigenvalue"``: the estimated eigenvalue error :func:`_ritz_errors` does. Either
    is only a reason to stop: residuals measured by :func:`_rayleigh_ritz` decide ``converged``.
    """
    wanted = _order(theta, which)[:k]
    measure = residuals if criterion == "residual" else _ritz_errors(theta, residuals)
    return bool(np.all(_within_tol(theta[wanted], measure[wanted], tol, floor)))


@jax.jit
def _products(operator, candidates):
    """``H u`` for each row u of ``candidates``, one vmapped call."""
    return jax.vmap(operator)(candidates)


def _rayleigh_ritz(candidates: np.ndarray, products: np.ndarray):
    """Rayleigh–Ritz on the span of orthonormal rows U, given the products ``HU``.

    Returns the Ritz values θ (ascending), the Ritz vectors (rows, ``sᵀU``) and
    their **measured** residuals ``‖H u − θ u‖``, the products combined with the
    same coefficients as the vectors. For a symmetric H some eigenvalue λ has
    ``|λ − θ| ≤ ‖Hu − θu‖`` for a unit u (Bauer–Fike; Parlett 1998, Thm 4.5.1),
    a bound that holds in floating point too, up to the rounding of the product
    itself (about ε‖H‖).
    """
    g = candidates @ products.T
    theta, s = np.linalg.eigh(0.5 * (g + g.T))
    vectors = s.T @ candidates
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    residual = s.T @ products - theta[:, None] * vectors
    return theta, vectors / norms, np.linalg.norm(residual, axis=1) / norms[:, 0]


def _block_candidates(t, blocks, k, which):
    """Coefficient rows of each Krylov block's k most wanted Ritz vectors (in Q's rows)."""
    rows = []
    for start, stop in blocks:
        theta_b, s_b = np.linalg.eigh(t[start:stop, start:stop])
        for i in _order(theta_b, which)[:k]:
            row = np.zeros(t.shape[0])
            row[start:stop] = s_b[:, i]
            rows.append(row)
    return np.stack(rows)


def _lanczos(f, params, flat0, k, which, max_iters, tol, criterion, key, args, chunk) -> Eigen:
    n = flat0.size
    dtype = flat0.dtype
    eps = float(jnp.finfo(dtype).eps)
    # Rows for q_0 … q_{max_iters}, allocated as needed: most calls stop long before
    # max_iters, and zeroing the whole buffer up front would cost more than a step.
    max_rows = _basis_rows(max_iters)
    operator = _jit_flat_hvp_operator(f, params, args, chunk)
    q_mat = jnp.zeros((min(_FIRST_ROWS, max_rows), n), dtype)
    q_mat, _ = _set_orthonormal(q_mat, 0, flat0)
    q = q_mat[0]
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0 after a restart
    block_start = 0  # first row of the current Krylov block (after the last restart)
    restarts = 0
    scale = 0.0
    beta = jnp.zeros((), dtype)
    theta = s = residuals = None
    t = np.zeros((0, 0))
    stopped = False  # the stopping test was met (not max_iters)

    def restart(m):
        # A new Krylov block from a random vector orthogonal to the basis.
        nonlocal q_mat, q, beta, block_start, restarts
        restarts += 1
        r = jax.random.normal(jax.random.fold_in(key, restarts), (n,), dtype)
        q_mat, _ = _set_orthonormal(q_mat, m, r)
        q = q_mat[m]
        beta = jnp.zeros((), dtype)
        betas.append(0.0)
        block_start = m

    for j in range(max_iters):
        if j + 1 == q_mat.shape[0]:
            q_mat = _grow(q_mat, min(2 * q_mat.shape[0], max_rows))
        q_mat, q, alpha, beta = _jit_lanczos_update(q_mat, j, _apply_operator(operator, q), beta)
        alpha, beta_f = float(alpha), float(beta)
        alphas.append(alpha)
        m = j + 1
        scale = max(scale, abs(alpha), beta_f)
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, s = np.linalg.eigh(t)
        residuals = np.abs(beta_f * s[-1])
        if m == n:  # the Krylov space is the whole space: the Ritz pairs are exact
            stopped = True
            break
        if beta_f <= 1e3 * eps * scale:
            # Invariant subspace (exact Ritz pairs, but a repeated eigenvalue appears in
            # it only once): restart orthogonal to it.
            restart(m)
            continue
        betas.append(beta_f)
        floor = np.sqrt(eps) * np.max(np.abs(theta))
        if m < k or not _ritz_converged(theta, residuals, k, which, tol, floor, criterion):
            continue
        if block_start > 0:
            # After a restart, the new block's own top k must have converged too: only
            # then is no copy of a repeated eigenvalue still missing.
            theta_b, s_b = np.linalg.eigh(t[block_start:, block_start:])
            if m - block_start < k or not _ritz_converged(
                theta_b, np.abs(beta_f * s_b[-1]), k, which, tol, floor, criterion
            ):
                continue
        stopped = True
        break
    m = len(alphas)
    starts = [0] + [i + 1 for i, b in enumerate(betas[: m - 1]) if b == 0.0]
    blocks = [
        (start, stop) for start, stop in zip(starts, starts[1:] + [m], strict=True) if stop > start
    ]
    # The final pairs come from Rayleigh–Ritz over the blocks' k best Ritz vectors
    # (uncoupled: a block starts only on an invariant subspace), with residuals
    # measured: the Lanczos estimate |β s| drops below the true residual once that
    # reaches rounding.
    coefficients = _block_candidates(t, blocks, min(k, m), which)
    padded = np.zeros((coefficients.shape[0], q_mat.shape[0]))
    padded[:, :m] = coefficients
    candidates = _combine(jnp.asarray(padded, dtype), q_mat)
    products = np.asarray(_products(operator, candidates), np.float64)
    candidates = np.asarray(candidates, np.float64)
    floor = np.sqrt(eps) * np.max(np.abs(theta))
    values, vectors, measured = _rayleigh_ritz(candidates, products)
    wanted = _order(values, which)[:k]
    estimated = _ritz_errors(values, measured)[wanted]
    values, vectors, measured = values[wanted], vectors[wanted], measured[wanted]
    floor = np.sqrt(eps) * np.max(np.abs(theta))
    converged = bool(
        stopped and values.size == k and np.all(_within_tol(values, measured, tol, floor))
    )
    _, unravel = ravel_pytree(params)
    return Eigen(
        eigenvalues=values.astype(np.float64),
        eigenvectors=[unravel(jnp.asarray(v, dtype)) for v in vectors],
        hvps=m + coefficients.shape[0],
        converged=converged,
        residuals=measured,
        errors=estimated,
    )


def _confirmed(first: Eigen, second: Eigen, f, params, k, which, tol, args, chunk) -> Eigen:
    """Two Lanczos runs from independent starts, as one answer.

    Where their k values agree within ``tol``, the first run's pairs stand
    (``converged`` if both runs converged). Where they do not, one start missed
    an eigenvalue the other found, and the answer is Rayleigh–Ritz on the span of
    both runs' Ritz vectors, with residuals measured (2k more products).
    """
    hvps = first.hvps + second.hvps
    eps = float(jnp.finfo(jnp.result_type(*jax.tree.leaves(params))).eps)
    floor = np.sqrt(eps) * max(np.max(np.abs(first.eigenvalues)), 1e-300)
    if np.all(
        _within_tol(first.eigenvalues, np.abs(first.eigenvalues - second.eigenvalues), tol, floor)
    ):
        return first._replace(hvps=hvps, converged=first.converged and second.converged)
    rows = np.stack([ravel_pytree(v)[0] for v in first.eigenvectors + second.eigenvectors])
    rows = np.asarray(rows, np.float64)
    u, sv, vt = np.linalg.svd(rows, full_matrices=False)
    basis = vt[sv > 1e-8 * sv[0]]  # orthonormal rows spanning both runs' vectors
    flat, unravel = ravel_pytree(params)
    operator = _jit_flat_hvp_operator(f, params, args, chunk)
    products = np.asarray(_products(operator, jnp.asarray(basis, flat.dtype)), np.float64)
    values, vectors, measured = _rayleigh_ritz(basis, products)
    wanted = _order(values, which)[:k]
    estimated = _ritz_errors(values, measured)[wanted]
    values, vectors, measured = values[wanted], vectors[wanted], measured[wanted]
    converged = bool(
        first.converged
        and second.converged
        and values.size == k
        and np.all(_within_tol(values, measured, tol, floor))
    )
    return Eigen(
        eigenvalues=values,
        eigenvectors=[unravel(jnp.asarray(v, flat.dtype)) for v in vectors],
        hvps=hvps + basis.shape[0],
        converged=converged,
        residuals=measured,
        errors=estimated,
    )


@jax.jit
def _verified_residuals(operator, values, vectors):
    """``‖H u_i − θ_i u_i‖ / ‖u_i‖`` for each row u_i of ``vectors``, by k true products."""
    products = jax.vmap(operator)(vectors)
    norms = jnp.linalg.norm(vectors, axis=1)
    return jnp.linalg.norm(products - values[:, None] * vectors, axis=1) / norms


@jax.jit
def _power_step(operator, found, v):
    """One power-iteration step on the deflated ``P H P``, ``P = I − VVᵀ`` (V: found rows)."""
    v = v - found.T @ (found @ v)
    v = v / jnp.linalg.norm(v)
    hv = operator(v)
    hv = hv - found.T @ (found @ hv)
    lam = jnp.vdot(v, hv)
    residual = jnp.linalg.norm(hv - lam * v)
    return v, lam, residual, hv / jnp.linalg.norm(hv)


def _power(f, params, flat0, k, max_iters, tol, key, args, chunk) -> Eigen:
    n, dtype = flat0.size, flat0.dtype
    found = jnp.zeros((k, n), dtype)
    operator = _jit_flat_hvp_operator(f, params, args, chunk)
    values, hvps, converged = [], 0, True
    v = flat0
    for i in range(k):
        if i > 0:
            v = jax.random.normal(jax.random.fold_in(key, i), (n,), dtype)
        ok = False
        for _ in range(max_iters):
            u, lam, res, v = _power_step(operator, found, v)
            hvps += 1
            lam, res = float(lam), float(res)
            if res <= tol * abs(lam):
                ok = True
                break
        converged = converged and ok
        found = found.at[i].set(u)
        values.append(lam)
    # The stopping test measured the residual of the deflated P H P; the bound that
    # converged claims is the residual of H itself, measured once more per vector.
    values = np.asarray(values)
    verified = np.asarray(_verified_residuals(operator, jnp.asarray(values, dtype), found))
    converged = bool(converged and np.all(verified <= tol * np.abs(values)))
    _, unravel = ravel_pytree(params)
    return Eigen(
        eigenvalues=values,
        eigenvectors=[unravel(found[i]) for i in range(k)],
        hvps=hvps + k,
        converged=converged,
        residuals=verified.astype(np.float64),
        errors=verified.astype(np.float64),
    )


def top_eigenvalues(
    f: Callable[..., jax.Array],
    params: PyTree,
    k: int,
    *args: Any,
    key: jax.Array,
    method: Literal["lanczos", "power"] = "lanczos",
    which: Literal["largest", "smallest", "magnitude"] | None = None,
    max_iters: int | None = None,
    tol: float = 1e-8,
    criterion: Literal["residual", "eigenvalue"] = "residual",
    init: PyTree | None = None,
    confirm: bool = True,
    data_chunk: int | None = None,
) -> Eigen:
    """The k extreme eigenvalues λ_i of the Hessian ``H = ∇²C(θ)`` and their eigenvectors.

    .. math::

        H v_i = λ_i v_i,\\quad \\|v_i\\| = 1,\\quad λ_1 ≥ λ_2 ≥ … ≥ λ_k \\;
        (\\text{or } λ_1 ≤ λ_2 ≤ … \\text{ for } which=\\text{"smallest"},
        \\; |λ_1| ≥ … \\text{ for } which=\\text{"magnitude"})

    using only Hessian-vector products (:func:`hvp`) on the flattened params
    (``jax.flatten_util.ravel_pytree``).

    ``method="lanczos"`` (default) builds the Krylov basis q_0 … q_{m−1} of
    ``span{q_0, Hq_0, …, H^{m−1}q_0}`` with full reorthogonalisation, so that
    ``QᵀHQ = T_m`` is tridiagonal with diagonal α and off-diagonal β. The Ritz
    values θ_i (eigenvalues of T_m, with eigenvectors s_i) approximate λ_i and
    the Ritz vectors ``Q s_i`` the eigenvectors, with residual
    ``‖H Q s_i − θ_i Q s_i‖ = |β_m s_{m,i}|``. It stops once each wanted pair has
    ``|β_m s_{m,i}| ≤ tol·max(|θ_i|, √ε·max_j|θ_j|)``, or when m = n (then the
    Ritz pairs are exact). With ``criterion="eigenvalue"`` it stops instead when
    the *estimated* eigenvalue error ``min(ρ_i, ρ_i²/gap_i)`` (``Eigen.errors``)
    meets the same bound: a heuristic, since the gap to the rest of the
    spectrum is estimated by the other Ritz values (Kato–Temple's r²/gap is a
    bound only with the true gap), and measured on a spectrum with λ₁ = 4.0,
    λ₂ = 3.9 it stops with λ_max off by up to 2.5 % in a few starts of 20. A single
    Krylov space holds one copy of a repeated eigenvalue, so on an
    invariant subspace (β ≈ 0) it restarts with a random vector orthogonal to
    the basis, and after a restart it also waits for the new block's own top k
    to converge.

    Whatever stopped it, ``converged`` is decided on residuals **measured** with
    k more products, ``r_i = ‖H v_i − λ_i v_i‖``: for a symmetric H some
    eigenvalue lies within r_i of λ_i (Bauer–Fike), so ``converged=True`` means
    each λ_i is within ``tol·max(|λ_i|, √ε·max_j|θ_j|)`` of an eigenvalue of H.
    The Lanczos estimate |β_m s_{m,i}| equals r_i in exact arithmetic but drops
    below it once r_i reaches rounding (about ε‖H‖, 1e-7‖H‖ in float32), so a
    tolerance under that is reported as not converged rather than claimed.
    What no Krylov method can prove is that the eigenvalue within r_i of λ_i is
    the i-th largest: one whose eigenvector the start vector barely contains
    appears late, and the Ritz value can settle on the next one first (on the
    λ₁ = 4.0, λ₂ = 3.9 spectrum, 1 start of 100 did, with a measured residual
    of 1e-3). So by default (``confirm=True``) a second run from an
    independent random start must converge too and agree (see ``confirm``):
    an eigenvalue is then missed only if both starts barely contain it. That
    costs twice the products of one run.

    ``method="power"`` is power iteration ``v ← Hv/‖Hv‖``, which converges to
    the eigenvalue of **largest magnitude** at the rate ``|λ_2/λ_1|`` (so
    ``which`` must be ``"magnitude"``, its default); for k > 1 each further
    eigenvalue is found by power iteration on the deflated ``PHP``,
    ``P = I − Σ_found v_i v_iᵀ``, as PyHessian does. It stops when
    ``‖Hv − (vᵀHv)v‖ ≤ tol·|vᵀHv|``. It is here for comparison: Lanczos needs
    far fewer products for the same accuracy.

    Args:
      f: scalar function ``f(params, *args)``. Pass the same object on every
        call so the compiled products are reused.
      params: θ.
      k: how many eigenvalues, ``1 ≤ k ≤`` the number of parameters.
      *args: further arguments of ``f`` (e.g. ``x, y``).
      key: PRNG key for the random start vector (and restarts / deflation starts).
      method: ``"lanczos"`` or ``"power"``.
      which: ``"largest"`` (algebraically, the default for Lanczos),
        ``"smallest"`` (algebraically: the most negative curvature, which tells a
        saddle point from a minimum; Lanczos only) or ``"magnitude"`` (largest
        |λ|; the default and only choice for power).
      max_iters: most Lanczos steps (default ``min(n, max(100, 4k))``; Lanczos
        stores that many vectors of n numbers), or most power iterations per
        eigenvalue (default 1000).
      criterion: when to stop: ``"residual"`` (the default: when the residual
        estimate meets ``tol``; vectors and values accurate) or ``"eigenvalue"``
        (when the *estimated* eigenvalue error does: fewer products, a heuristic,
        and ``converged`` only if the measured residuals meet ``tol`` too; Lanczos
        only, since it needs the gap to the other Ritz values).
      tol: relative tolerance (see above and ``criterion``). Power iteration measures the
        true residual, which stalls near ε·‖H‖ (about 1e-7‖H‖ in float32): use
        ``tol ≳ 1e-5`` for float32 params there, or it stops at ``max_iters``
        with ``converged=False``.
      init: warm start, a params-shaped pytree used as the first vector, e.g.
        the top eigenvector of a previous call at nearby params.
      confirm: run the method a second time from an independent
        random start; where the two runs' values agree within ``tol`` the first
        run's pairs stand (converged if both converged), and where they do not
        the answer is Rayleigh–Ritz on both runs' Ritz vectors, with measured
        residuals. An eigenvalue that the first start (random, or the warm start
        ``init``) barely contained is then missed only if the second start
        barely contains it too. Twice the products; ``False`` runs once.
      data_chunk: ``None``, or k examples per chunk: every product is accumulated
        over chunks of the data (see :func:`hvp`), so memory follows k, not n.

    Returns:
      An :class:`Eigen` ``(eigenvalues, eigenvectors, hvps, converged, residuals,
      errors)``.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(jnp.array([3.0, 2.0, 1.0]) * p**2)
      >>> eig = top_eigenvalues(f, jnp.zeros(3), 2, key=jax.random.key(0))
      >>> eig.eigenvalues.round(6).tolist(), eig.converged
      ([3.0, 2.0], True)

    References:
      Lanczos (1950), "An iteration method for the solution of the eigenvalue
      problem of linear differential and integral operators"; Parlett, *The
      Symmetric Eigenvalue Problem* (1998), ch. 13; Yao et al. (2020),
      "PyHessian: neural networks through the lens of the Hessian".
    """
    n = _check_params(params)
    check_finite_args(args)
    method = _check_choice("method", method, ("lanczos", "power"))
    if which is None:
        which = "largest" if method == "lanczos" else "magnitude"
    which = _check_choice("which", which, ("largest", "smallest", "magnitude"))
    criterion = _check_choice("criterion", criterion, ("residual", "eigenvalue"))
    if method == "power" and criterion != "residual":
        raise ValueError(
            f"criterion: power iteration knows no gap to the other eigenvalues, so it "
            f"expected 'residual', got {criterion!r}. Use method='lanczos'."
        )
    if method == "power" and which != "magnitude":
        raise ValueError(
            f"which: power iteration converges to the eigenvalue of largest magnitude, so it "
            f"expected 'magnitude', got {which!r}. Use method='lanczos' for the largest."
        )
    k = check_positive_int("k", k)
    if k > n:
        raise ValueError(
            f"k: expected at most {n}, the number of parameters (H is {n}×{n}), got {k}."
        )
    if max_iters is None:
        max_iters = min(n, max(100, 4 * k)) if method == "lanczos" else 1000
    max_iters = check_positive_int("max_iters", max_iters)
    if method == "lanczos" and not k <= max_iters <= n:
        raise ValueError(
            f"max_iters: expected an integer in [k, n] = [{k}, {n}] for Lanczos, got {max_iters}."
        )
    tol = check_finite_number("tol", tol)
    if not isinstance(confirm, bool):
        raise TypeError(f"confirm: expected True or False, got {confirm!r}.")
    data_chunk = _check_data_chunk(data_chunk, f, args)
    _check_key(key)
    if init is not None:
        _check_like("init", init, params)
    _check_f(f, params, args, data_chunk)

    key, start_key = jax.random.split(key)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    if init is None:
        flat0 = jax.random.normal(start_key, (n,), dtype)
    else:
        flat0 = ravel_pytree(init)[0].astype(dtype)
        if not float(jnp.linalg.norm(flat0)) > 0:
            raise ValueError("init: expected a non-zero vector, got all zeros.")

    def run(start, run_key):
        if method == "lanczos":
            return _lanczos(
                f, params, start, k, which, max_iters, tol, criterion, run_key, args, data_chunk
            )
        return _power(f, params, start, k, max_iters, tol, run_key, args, data_chunk)

    first = run(flat0, key)
    if not confirm:
        return first
    key, second_key = jax.random.split(key)
    second = run(jax.random.normal(second_key, (n,), dtype), key)
    return _confirmed(first, second, f, params, k, which, tol, args, data_chunk)
