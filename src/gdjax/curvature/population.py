"""Curvature of every member of a population at once: λ_max, trace, Taylor error, sharpness.

A population (:func:`gdjax.train.fit_population`) holds P members' params
stacked on a leading member axis, ``Θ = (θ_1, …, θ_P)``. Its total cost

.. math::

    F(Θ) = \\sum_i C(θ_i), \\qquad ∇²F(Θ) = \\operatorname{diag}(H_1, …, H_P),
    \\qquad H_i = ∇²C(θ_i),

has a block-diagonal Hessian, so **one** Hessian-vector product of F,
``∇²F (v_1, …, v_P) = (H_1 v_1, …, H_P v_P)``, is every member's product: the
products of :mod:`gdjax.curvature.products` (``_flat_operator``: linearised once,
or by chunks of data) applied to F, a ``vmap`` of C over the member axis. No
second HVP is written here. On it:

- :func:`population_top_eigenvalues` — every member's k extreme eigenvalues by
  a batched Lanczos: the members step together (one batched product per step),
  each member stops on its own test, and each member's ``converged`` rests on
  its own *measured* residuals ``‖H_i v − λ v‖``, as in
  :func:`~gdjax.curvature.top_eigenvalues`.
- :func:`population_trace` — Hutchinson's estimate of every ``tr H_i``.
- :func:`population_taylor_step` — the Taylor error of a step, for every member.
- :func:`track_population_sharpness` — a :func:`~gdjax.train.fit_population`
  callback recording every member's λ_max, warm-started member by member.

Results carry a leading member axis, and ``.member(i)`` gives member i's result
as the single-member function's type. ``member_chunk=m`` evaluates m members
per batched call (the last chunk padded with copies of its last member, so
every chunk has one shape and compiles once); memory follows m, and the
results do not depend on it: each member's computation is its own, so they
agree across chunk sizes to rounding (about 1e-15 relative in float64).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._checks import check_finite_args, check_finite_number, check_positive_int, shape_of
from gdjax.curvature.eigen import (
    _FIRST_ROWS,
    Eigen,
    _basis_rows,
    _block_candidates,
    _lanczos_update,
    _order,
    _project_out,
    _rayleigh_ritz,
    _ritz_converged,
    _ritz_errors,
    _within_tol,
)
from gdjax.curvature.hutchinson import TraceEstimate
from gdjax.curvature.products import (
    _check_choice,
    _check_data_chunk,
    _check_key,
    _check_like,
    _check_params,
    _flat_operator,
    _jit_flat_hvp_operator,
)
from gdjax.curvature.sharpness import SharpnessTracker, track_sharpness
from gdjax.curvature.taylor import TaylorResult, _gradient, _taylor, _threshold_crossing
from gdjax.losses import Loss
from gdjax.mlp import MLP

__all__ = [
    "population_top_eigenvalues",
    "PopulationEigen",
    "population_trace",
    "PopulationTrace",
    "population_taylor_step",
    "PopulationTaylor",
    "track_population_sharpness",
    "PopulationSharpnessTracker",
]

PyTree = Any

_ROUND = 4  # Lanczos steps per batched call between the host's convergence checks


# ---------------------------------------------------------------- the population's cost


@dataclasses.dataclass(frozen=True)
class _MemberSum:
    """``F(Θ, *args) = Σ_i f(θ_i, *args)``: one cost whose Hessian is ``diag(H_1, …, H_P)``.

    Hashable (by ``f``), so the compiled products of F are cached like f's.
    """

    f: Callable

    @property
    def fixed_args(self) -> int:
        return getattr(self.f, "fixed_args", 0)

    def __call__(self, params, *args):
        return jnp.sum(jax.vmap(lambda p: self.f(p, *args))(params))


def _unravel_members(params: PyTree, rows: jax.Array) -> PyTree:
    """Rows ``(P, n)``, each one member's ``ravel_pytree`` layout → a tree with the member axis."""
    _, unravel = ravel_pytree(jax.tree.map(lambda a: a[0], params))
    return jax.vmap(unravel)(rows)


def _ravel_members(tree: PyTree) -> jax.Array:
    """A pytree with a member axis → rows ``(P, n)``, each member raveled."""
    return jax.vmap(lambda t: ravel_pytree(t)[0])(tree)


def _member_products(operator, params: PyTree, vectors: jax.Array) -> jax.Array:
    """``H_i u`` for every member i and every ``u = vectors[..., i, :]``.

    ``vectors`` has shape ``(..., P, n)``; each leading index is one product of
    F, ``∇²F (u_1, …, u_P)``, mapped with ``vmap``.
    """
    _, unravel_all = ravel_pytree(params)

    def one(rows):
        flat = ravel_pytree(_unravel_members(params, rows.astype(_dtype(params))))[0]
        return _ravel_members(unravel_all(operator(flat)))

    lead = vectors.shape[:-2]
    out = jax.vmap(one)(vectors.reshape(-1, *vectors.shape[-2:]))
    return out.reshape(*lead, *vectors.shape[-2:])


def _dtype(params: PyTree):
    return jnp.result_type(*jax.tree.leaves(params))


# ---------------------------------------------------------------- checks


def _check_members(name: str, tree: PyTree, size: int | None = None) -> int:
    """P: the leading axis every leaf of ``tree`` shares (equal to ``size`` if given)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        raise ValueError(f"{name}: expected a pytree of arrays with a member axis, got no leaves.")
    first = None
    for path, leaf in leaves:
        shape = shape_of(leaf)
        where = f"{name}{jax.tree_util.keystr(path)}"
        if not shape:
            raise ValueError(
                f"{where}: expected a leading member axis on every leaf (the members' params "
                f"stacked, as fit_population returns them), got a scalar leaf of shape (). "
                f"For one model, use the single-member function or stack it: "
                f"jax.tree.map(lambda a: a[None], params)."
            )
        if first is None:
            first = (where, shape[0])
        elif shape[0] != first[1]:
            raise ValueError(
                f"{where}: expected a leading member axis of size {first[1]} (that of "
                f"{first[0]}), got shape {shape}. Every leaf holds the P members stacked."
            )
    if first[1] == 0:
        raise ValueError(f"{name}: expected at least one member, got a member axis of size 0.")
    if size is not None and first[1] != size:
        raise ValueError(
            f"{name}: expected a leading member axis of size {size} (the number of members "
            f"of params), got {first[1]}."
        )
    return int(first[1])


def _check_member_chunk(member_chunk, size: int) -> int:
    if member_chunk is None:
        return size
    return min(check_positive_int("member_chunk", member_chunk), size)


def _check_population(f, params, args, member_chunk, data_chunk) -> tuple[int, int, int, Any]:
    """``(P, n, m, data_chunk)`` after every check shared by the functions here."""
    if not callable(f):
        raise ValueError(f"f: expected a function f(params, *args), got {type(f).__name__}.")
    size = _check_members("params", params)
    _check_params(params)
    n = sum(math.prod(shape_of(leaf)[1:]) for leaf in jax.tree.leaves(params))
    check_finite_args(args)
    chunk = _check_member_chunk(member_chunk, size)
    return size, n, chunk, _check_data_chunk(data_chunk, f, args)


def _chunks(size: int, chunk: int) -> list[np.ndarray]:
    """Member indices of each chunk, the last one padded with copies of its last member."""
    out = []
    for start in range(0, size, chunk):
        idx = np.arange(start, min(start + chunk, size))
        out.append(np.concatenate([idx, np.full(chunk - idx.size, idx[-1])]))
    return out


def _take(tree: PyTree, idx: np.ndarray) -> PyTree:
    return jax.tree.map(lambda a: jnp.asarray(a)[idx], tree)


# ---------------------------------------------------------------- batched Lanczos


class _Krylov(NamedTuple):
    """The Lanczos state of R runs × M members (leading axes ``(R, M)``)."""

    q: jax.Array  # (R, M, rows, n): q_0 … q_m
    beta: jax.Array  # (R, M): the last β (0 after a restart)
    scale: jax.Array  # (R, M): max |α|, β so far
    alphas: jax.Array  # (R, M, max_iters)
    betas: jax.Array  # (R, M, max_iters): β_j couples q_j and q_{j+1}; 0 at a restart
    restarts: jax.Array  # (R, M) int32


@functools.partial(jax.jit, static_argnums=(1, 2))
def _start(starts: jax.Array, rows: int, max_iters: int) -> _Krylov:
    """q_0 = start/‖start‖ for each run and member; ``starts`` is ``(R, M, n)``."""
    r, m, n = starts.shape
    q = jnp.zeros((r, m, rows, n), starts.dtype)
    q = q.at[:, :, 0].set(starts / jnp.linalg.norm(starts, axis=-1, keepdims=True))
    zeros = jnp.zeros((r, m), starts.dtype)
    return _Krylov(
        q,
        zeros,
        zeros,
        jnp.zeros((r, m, max_iters), starts.dtype),
        jnp.zeros((r, m, max_iters), starts.dtype),
        jnp.zeros((r, m), jnp.int32),
    )


@functools.partial(jax.jit, static_argnums=1)
def _grow(state: _Krylov, rows: int) -> _Krylov:
    q = state.q
    grown = jnp.zeros((*q.shape[:2], rows, q.shape[3]), q.dtype).at[:, :, : q.shape[2]].set(q)
    return state._replace(q=grown)


@functools.partial(jax.jit, donate_argnums=2)
def _lanczos_steps(operator, params, state: _Krylov, keys, first, count, active) -> _Krylov:
    """Lanczos steps ``first … first + count − 1`` of every run and member, one product each.

    Each step is :func:`~gdjax.curvature.eigen._lanczos_update` (the single-member
    step, fully reorthogonalised) under ``vmap``; where β falls to rounding
    (``β ≤ 10³·ε·scale``, an invariant subspace) the next vector is a random one
    orthogonal to the basis, from ``fold_in(keys[r], restarts)``, as
    ``top_eigenvalues`` restarts. Members that are not ``active`` step along
    (their later rows are never read) but never restart.
    """
    n = state.q.shape[-1]
    eps = jnp.finfo(state.q.dtype).eps
    update = jax.vmap(jax.vmap(_lanczos_update, in_axes=(0, None, 0, 0)), in_axes=(0, None, 0, 0))

    def step(s, st: _Krylov) -> _Krylov:
        j = first + s
        q_j = jax.lax.dynamic_index_in_dim(st.q, j, axis=2, keepdims=False)
        hq = _member_products(operator, params, q_j)
        _, q_next, alpha, beta = update(st.q, j, hq, st.beta)
        scale = jnp.maximum(st.scale, jnp.maximum(jnp.abs(alpha), beta))
        restart = active[None, :] & (beta <= 1e3 * eps * scale) & (j + 1 < n)
        restarts = st.restarts + restart

        def fresh(q_next):
            def one(q_mat, key, count):
                r = jax.random.normal(jax.random.fold_in(key, count), (n,), q_mat.dtype)
                r = _project_out(q_mat, j + 1, _project_out(q_mat, j + 1, r))
                return r / jnp.linalg.norm(r)

            r = jax.vmap(jax.vmap(one, in_axes=(0, None, 0)), in_axes=(0, 0, 0))(
                st.q, keys, restarts
            )
            return jnp.where(restart[..., None], r, q_next)

        q_next = jax.lax.cond(jnp.any(restart), fresh, lambda q: q, q_next)
        q = jax.lax.dynamic_update_index_in_dim(st.q, q_next, j + 1, axis=2)
        beta = jnp.where(restart, 0, beta)
        return _Krylov(
            q,
            beta,
            scale,
            st.alphas.at[:, :, j].set(alpha),
            st.betas.at[:, :, j].set(beta),
            restarts,
        )

    return jax.lax.fori_loop(0, count, step, state)


@jax.jit
def _ritz_products(operator, params, coefficients, q):
    """Candidate vectors ``coefficients @ Q`` of every run and member, and their products."""
    candidates = jnp.einsum("rmck,rmkn->rmcn", coefficients.astype(q.dtype), q)
    # (R, M, c, n) → (R, c, M, n): one product of F per (run, candidate)
    products = _member_products(operator, params, jnp.swapaxes(candidates, 1, 2))
    return candidates, jnp.swapaxes(products, 1, 2)


@jax.jit
def _basis_products(operator, params, basis):
    """``H_i u`` for the rows u of each member's ``basis`` ``(M, c, n)``."""
    return jnp.swapaxes(_member_products(operator, params, jnp.swapaxes(basis, 0, 1)), 0, 1)


def _tridiagonal(alphas: np.ndarray, betas: np.ndarray, m: int) -> np.ndarray:
    return np.diag(alphas[:m]) + np.diag(betas[: m - 1], 1) + np.diag(betas[: m - 1], -1)


def _stop_test(alphas, betas, m, n, k, which, tol, criterion, eps) -> bool:
    """``top_eigenvalues``' stopping test after m Lanczos steps (``betas`` 0 at restarts)."""
    if m == n:
        return True
    if betas[m - 1] == 0.0:  # restarted after this step: go on
        return False
    t = _tridiagonal(alphas, betas, m)
    theta, s = np.linalg.eigh(t)
    floor = np.sqrt(eps) * np.max(np.abs(theta))
    if m < k or not _ritz_converged(
        theta, np.abs(betas[m - 1] * s[-1]), k, which, tol, floor, criterion
    ):
        return False
    restarts = np.flatnonzero(betas[: m - 1] == 0.0)
    if restarts.size:  # the newest block's own top k must have converged too
        start = int(restarts[-1]) + 1
        theta_b, s_b = np.linalg.eigh(t[start:, start:])
        if m - start < k or not _ritz_converged(
            theta_b, np.abs(betas[m - 1] * s_b[-1]), k, which, tol, floor, criterion
        ):
            return False
    return True


class _Run(NamedTuple):
    """One Lanczos run of one member, on the host: as ``top_eigenvalues``' ``_lanczos`` ends."""

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    errors: np.ndarray
    hvps: int
    converged: bool


def _lanczos_chunk(
    f, params, starts, k, which, max_iters, tol, criterion, keys, args, data_chunk
) -> list[list[_Run]]:
    """Batched Lanczos for one chunk of M members and R runs: ``runs[r][i]``."""
    runs_n, size, n = starts.shape
    eps = float(jnp.finfo(starts.dtype).eps)
    member_sum = _MemberSum(f)
    operator = _jit_flat_hvp_operator(member_sum, params, args, data_chunk)
    max_rows = _basis_rows(max_iters)
    rows = min(_FIRST_ROWS, max_rows)  # multiples of _BLOCK, as _project_out reads them
    state = _start(starts, rows, max_iters)
    stopped_at = np.zeros((runs_n, size), np.int64)  # m at which each run stopped (0: not yet)
    j = 0
    while j < max_iters and not np.all(stopped_at):
        count = min(_ROUND, max_iters - j)
        if j + count + 1 > state.q.shape[2]:
            rows = min(max(2 * state.q.shape[2], _basis_rows(j + count)), max_rows)
            state = _grow(state, rows)
        active = jnp.asarray(np.any(stopped_at == 0, axis=0))
        state = _lanczos_steps(operator, params, state, keys, j, count, active)
        alphas = np.asarray(state.alphas, np.float64)
        betas = np.asarray(state.betas, np.float64)
        j += count
        for r, i in zip(*np.nonzero(stopped_at == 0), strict=True):
            # The test at the round's last step first; where met, the first step of the
            # round that meets it (the later rows are then never read).
            if _stop_test(alphas[r, i], betas[r, i], j, n, k, which, tol, criterion, eps):
                m = j
                for earlier in range(j - count + 1, j):
                    if _stop_test(
                        alphas[r, i], betas[r, i], earlier, n, k, which, tol, criterion, eps
                    ):
                        m = earlier
                        break
                stopped_at[r, i] = m
    steps = np.where(stopped_at > 0, stopped_at, j)
    alphas = np.asarray(state.alphas, np.float64)
    betas = np.asarray(state.betas, np.float64)
    coefficients, blocks_of = [], {}
    for r in range(runs_n):
        for i in range(size):
            m = int(steps[r, i])
            starts_b = [0] + [b + 1 for b in np.flatnonzero(betas[r, i, : m - 1] == 0.0)]
            blocks = [(a, b) for a, b in zip(starts_b, starts_b[1:] + [m], strict=True) if b > a]
            coefficients.append(
                _block_candidates(_tridiagonal(alphas[r, i], betas[r, i], m), blocks, k, which)
            )
            blocks_of[r, i] = coefficients[-1].shape[0]
    width = max(c.shape[0] for c in coefficients)
    padded = np.zeros((runs_n, size, width, state.q.shape[2]))
    for index, c in enumerate(coefficients):
        r, i = divmod(index, size)
        padded[r, i, : c.shape[0], : c.shape[1]] = c
    candidates, products = _ritz_products(operator, params, jnp.asarray(padded), state.q)
    candidates = np.asarray(candidates, np.float64)
    products = np.asarray(products, np.float64)
    out = []
    for r in range(runs_n):
        row = []
        for i in range(size):
            m, c = int(steps[r, i]), blocks_of[r, i]
            theta = np.linalg.eigvalsh(_tridiagonal(alphas[r, i], betas[r, i], m))
            floor = np.sqrt(eps) * np.max(np.abs(theta))
            values, vectors, measured = _rayleigh_ritz(candidates[r, i, :c], products[r, i, :c])
            wanted = _order(values, which)[:k]
            estimated = _ritz_errors(values, measured)[wanted]
            values, vectors, measured = values[wanted], vectors[wanted], measured[wanted]
            converged = bool(
                stopped_at[r, i] > 0
                and values.size == k
                and np.all(_within_tol(values, measured, tol, floor))
            )
            row.append(_Run(values, vectors, measured, estimated, m + c, converged))
        out.append(row)
    return out


def _confirm_chunk(f, params, first: list[_Run], second: list[_Run], k, which, tol, args, chunk):
    """``top_eigenvalues``' ``_confirmed`` for each member of a chunk, the disagreeing
    members' Rayleigh–Ritz products in one batched call."""
    eps = float(jnp.finfo(_dtype(params)).eps)
    results: list[_Run | None] = []
    bases: dict[int, np.ndarray] = {}
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        floor = np.sqrt(eps) * max(np.max(np.abs(a.values)), 1e-300)
        if np.all(_within_tol(a.values, np.abs(a.values - b.values), tol, floor)):
            results.append(a._replace(hvps=a.hvps + b.hvps, converged=a.converged and b.converged))
            continue
        rows = np.concatenate([a.vectors, b.vectors])
        _, sv, vt = np.linalg.svd(rows, full_matrices=False)
        bases[i] = vt[sv > 1e-8 * sv[0]]
        results.append(None)
    if bases:
        n = first[0].vectors.shape[1]
        basis = np.zeros((len(first), 2 * k, n))
        for i, b in bases.items():
            basis[i, : b.shape[0]] = b
        operator = _jit_flat_hvp_operator(_MemberSum(f), params, args, chunk)
        products = np.asarray(
            _basis_products(operator, params, jnp.asarray(basis, _dtype(params))), np.float64
        )
        for i, b in bases.items():
            a, s = first[i], second[i]
            floor = np.sqrt(eps) * max(np.max(np.abs(a.values)), 1e-300)
            values, vectors, measured = _rayleigh_ritz(b, products[i, : b.shape[0]])
            wanted = _order(values, which)[:k]
            estimated = _ritz_errors(values, measured)[wanted]
            values, vectors, measured = values[wanted], vectors[wanted], measured[wanted]
            converged = bool(
                a.converged
                and s.converged
                and values.size == k
                and np.all(_within_tol(values, measured, tol, floor))
            )
            results[i] = _Run(
                values, vectors, measured, estimated, a.hvps + s.hvps + b.shape[0], converged
            )
    return results


class PopulationEigen(NamedTuple):
    """What :func:`population_top_eigenvalues` returns: :class:`Eigen` with a member axis.

    Attributes:
      eigenvalues: ``(P, k)``, member i's k eigenvalues ordered by ``which``.
      eigenvectors: a params-shaped pytree whose leaves have leading axes
        ``(P, k)``: member i's unit eigenvectors.
      hvps: ``(P,)``, the products member i's answer rests on (as ``Eigen.hvps``
        counts them; the batch computes up to 3 more Lanczos steps per member and
        run, which are discarded).
      converged: ``(P,)`` bools, each as ``Eigen.converged``: member i's every
        pair has a measured residual ``‖H_i v − λ v‖`` within the tolerance (and,
        with ``confirm``, two independent starts agree). Never claimed on an estimate.
      residuals: ``(P, k)`` measured ``‖H_i v − λ v‖``.
      errors: ``(P, k)`` estimated eigenvalue errors (an estimate, not a bound).
    """

    eigenvalues: np.ndarray
    eigenvectors: PyTree
    hvps: np.ndarray
    converged: np.ndarray
    residuals: np.ndarray
    errors: np.ndarray

    @property
    def size(self) -> int:
        """P, the number of members."""
        return self.eigenvalues.shape[0]

    def member(self, i: int) -> Eigen:
        """Member i's result as :func:`~gdjax.curvature.top_eigenvalues` returns it."""
        k = self.eigenvalues.shape[1]
        return Eigen(
            eigenvalues=self.eigenvalues[i],
            eigenvectors=[
                jax.tree.map(lambda a, j=j: a[i, j], self.eigenvectors) for j in range(k)
            ],
            hvps=int(self.hvps[i]),
            converged=bool(self.converged[i]),
            residuals=self.residuals[i],
            errors=self.errors[i],
        )


def population_top_eigenvalues(
    f: Callable[..., jax.Array],
    params: PyTree,
    k: int,
    *args: Any,
    key: jax.Array,
    which: Literal["largest", "smallest", "magnitude"] = "largest",
    max_iters: int | None = None,
    tol: float = 1e-8,
    criterion: Literal["residual", "eigenvalue"] = "residual",
    init: PyTree | None = None,
    confirm: bool = True,
    member_chunk: int | None = None,
    data_chunk: int | None = None,
) -> PopulationEigen:
    """The k extreme eigenvalues of every member's Hessian ``H_i = ∇²C(θ_i)``, in one call.

    .. math::

        H_i v_{ij} = λ_{ij} v_{ij}, \\quad \\|v_{ij}\\| = 1, \\quad i = 1 … P

    Lanczos as :func:`~gdjax.curvature.top_eigenvalues` (``method="lanczos"``)
    runs it for one member, run for all members together: every step is one
    batched product ``∇²F (q_1, …, q_P) = (H_1 q_1, …, H_P q_P)`` of the
    population's cost ``F(Θ) = Σ_i C(θ_i)`` (see the module), with the
    single-member step (full reorthogonalisation, a random restart on an
    invariant subspace) under ``vmap``. The host checks every member's stopping
    test after every 4 steps; a member stops at the first step of that round that
    meets it, the same test and the same Krylov basis (from the same start
    vector and key) as ``top_eigenvalues``, so member i's values equal
    ``top_eigenvalues(f, θ_i, k, *args, key=key)``'s to rounding wherever both
    converge. Then, member by member: Rayleigh–Ritz with residuals **measured**
    by true products (batched), and ``converged[i]`` only where member i's own
    measured residuals ``‖H_i v − λ v‖ ≤ tol·max(|λ|, √ε·max_j|θ_j|)`` (Bauer–Fike:
    an eigenvalue of H_i within that of λ) and its stopping test was met. A
    member that did not converge within ``max_iters`` is reported so.

    With ``confirm`` (the default) a second run from an independent random start
    goes along in the same batch (twice the members' products per step), and a
    member's answer is confirmed as in ``top_eigenvalues``: where the runs'
    values disagree, Rayleigh–Ritz on both runs' vectors.

    Memory: ``member_chunk × (2 if confirm else 1) × (steps + 1) × n`` numbers
    for the Lanczos bases (the buffer doubles as steps are taken, up to
    ``max_iters + 1`` rows), plus each member's linearised gradient.

    Args:
      f: scalar function ``f(params, *args)`` of one member's params.
      params: the members' params stacked: every leaf with a leading member axis
        of size P, as :func:`~gdjax.train.fit_population` returns them.
      k: how many eigenvalues per member, ``1 ≤ k ≤ n`` (n parameters per member).
      *args: further arguments of ``f`` (e.g. ``x, y``), shared by every member.
      key: PRNG key for the start vector (the same for every member, as
        ``top_eigenvalues`` with this key draws it) and restarts.
      which: ``"largest"``, ``"smallest"`` or ``"magnitude"`` (see ``top_eigenvalues``).
      max_iters: most Lanczos steps per member (default ``min(n, max(100, 4k))``).
      tol: relative tolerance, as for ``top_eigenvalues``.
      criterion: ``"residual"`` or ``"eigenvalue"``, as for ``top_eigenvalues``.
      init: warm starts, a params-shaped pytree with the member axis: row i
        starts member i (e.g. the top eigenvectors of a previous call).
      confirm: also run from an independent random start and confirm (above).
      member_chunk: members per batched call (``None``: all at once). Results
        do not depend on it.
      data_chunk: ``None``, or k examples per chunk: every product is accumulated
        over chunks of the data (see :func:`~gdjax.curvature.hvp`).

    Returns:
      A :class:`PopulationEigen`; ``.member(i)`` is member i's :class:`Eigen`.

    Examples:
      >>> scales = jnp.array([[3.0, 2.0, 1.0], [5.0, 1.0, 4.0]])   # two members
      >>> f = lambda p: 0.5 * jnp.sum(p["s"] * p["x"] ** 2)          # H = diag(s)
      >>> params = {"s": scales, "x": jnp.zeros((2, 3))}
      >>> g = lambda p: f({"s": jax.lax.stop_gradient(p["s"]), "x": p["x"]})
      >>> eig = population_top_eigenvalues(g, params, 1, key=jax.random.key(0), tol=1e-5)
      >>> eig.eigenvalues[:, 0].round(6).tolist(), eig.converged.tolist()
      ([3.0, 5.0], [True, True])

    References:
      Lanczos (1950); Parlett, *The Symmetric Eigenvalue Problem* (1998), ch. 13.
    """
    size, n, chunk, data_chunk = _check_population(f, params, args, member_chunk, data_chunk)
    which = _check_choice("which", which, ("largest", "smallest", "magnitude"))
    criterion = _check_choice("criterion", criterion, ("residual", "eigenvalue"))
    k = check_positive_int("k", k)
    if k > n:
        raise ValueError(
            f"k: expected at most {n}, the number of parameters of a member (H is {n}×{n}), "
            f"got {k}."
        )
    if max_iters is None:
        max_iters = min(n, max(100, 4 * k))
    max_iters = check_positive_int("max_iters", max_iters)
    if not k <= max_iters <= n:
        raise ValueError(f"max_iters: expected an integer in [k, n] = [{k}, {n}], got {max_iters}.")
    tol = check_finite_number("tol", tol)
    if not isinstance(confirm, bool):
        raise TypeError(f"confirm: expected True or False, got {confirm!r}.")
    _check_key(key)
    dtype = _dtype(params)
    if init is not None:
        _check_like("init", init, params)
        init_rows = _ravel_members(jax.tree.map(lambda a: jnp.asarray(a, dtype), init))
        zero = np.flatnonzero(~(np.asarray(jnp.linalg.norm(init_rows, axis=1)) > 0))
        if zero.size:
            raise ValueError(
                f"init: expected non-zero vectors, got all zeros for member {zero[0]}."
            )

    # The keys exactly as top_eigenvalues derives them: one start for every member.
    key, start_key = jax.random.split(key)
    first_key = key
    key, second_key = jax.random.split(key)
    random_start = jax.random.normal(start_key, (n,), dtype)
    second_start = jax.random.normal(second_key, (n,), dtype)
    run_keys = jnp.stack([first_key, key]) if confirm else jnp.stack([first_key])

    runs = []
    for idx in _chunks(size, chunk):
        members = _take(params, idx)
        firsts = jnp.broadcast_to(random_start, (idx.size, n)) if init is None else init_rows[idx]
        starts = [firsts] + ([jnp.broadcast_to(second_start, (idx.size, n))] if confirm else [])
        result = _lanczos_chunk(
            f,
            members,
            jnp.stack(starts),
            k,
            which,
            max_iters,
            tol,
            criterion,
            run_keys,
            args,
            data_chunk,
        )
        done = result[0]
        if confirm:
            done = _confirm_chunk(f, members, result[0], result[1], k, which, tol, args, data_chunk)
        runs.extend(done[: np.unique(idx).size])  # the padding copies dropped
    vectors = jnp.asarray(np.stack([r.vectors for r in runs]), dtype)  # (P, k, n)
    _, unravel = ravel_pytree(jax.tree.map(lambda a: a[0], params))
    return PopulationEigen(
        eigenvalues=np.stack([r.values for r in runs]).astype(np.float64),
        eigenvectors=jax.vmap(jax.vmap(unravel))(vectors),
        hvps=np.asarray([r.hvps for r in runs], np.int64),
        converged=np.asarray([r.converged for r in runs], bool),
        residuals=np.stack([r.residuals for r in runs]),
        errors=np.stack([r.errors for r in runs]),
    )


# ---------------------------------------------------------------- trace


class PopulationTrace(NamedTuple):
    """What :func:`population_trace` returns: :class:`TraceEstimate` with a member axis.

    Attributes:
      estimate: ``(P,)``, the mean of member i's samples, an unbiased estimate of ``tr H_i``.
      stderr: ``(P,)``, its standard error ``std(samples_i) / √m``.
      samples: ``(P, m)``, member i's ``vᵀH_i v`` for each Rademacher vector v.
    """

    estimate: np.ndarray
    stderr: np.ndarray
    samples: np.ndarray

    def member(self, i: int) -> TraceEstimate:
        """Member i's result as :func:`~gdjax.curvature.trace` returns it."""
        return TraceEstimate(float(self.estimate[i]), float(self.stderr[i]), self.samples[i])


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 6))
def _member_hutchinson(f, params, key, samples, batch_size, args, data_chunk=None):
    """``(P, samples)``: ``vᵀH_i v`` for every member i and Rademacher vector v (shared)."""
    operator = _flat_operator(_MemberSum(f), params, args, data_chunk)
    size = jax.tree.leaves(params)[0].shape[0]
    n = sum(math.prod(leaf.shape[1:]) for leaf in jax.tree.leaves(params))

    def one(sample_key):
        v = jax.random.rademacher(sample_key, (n,), _dtype(params))
        hv = _member_products(operator, params, jnp.broadcast_to(v, (1, size, n)))[0]
        return jax.vmap(jnp.vdot, in_axes=(None, 0))(v, hv)

    return jax.lax.map(one, jax.random.split(key, samples), batch_size=batch_size).T


def population_trace(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    samples: int = 100,
    batch_size: int = 16,
    member_chunk: int | None = None,
    data_chunk: int | None = None,
) -> PopulationTrace:
    """Hutchinson's estimate of every member's Hessian trace ``tr H_i``, in one call.

    .. math::

        \\operatorname{tr} H_i ≈ \\frac{1}{m}\\sum_{j=1}^m v_j^T H_i v_j,
        \\qquad v_j \\in \\{−1, +1\\}^n

    as :func:`~gdjax.curvature.trace` for one member, with every sample one
    batched product ``(H_1 v_j, …, H_P v_j)`` (see the module). The vectors v_j
    are drawn from ``key`` exactly as ``trace`` draws them and **shared** by all
    members (common random numbers): member i's samples equal
    ``trace(f, θ_i, *args, key=key)``'s to rounding, and differences between
    members are estimated with less noise than independent vectors would give.

    Args:
      f: scalar function ``f(params, *args)`` of one member's params.
      params: the members' params, every leaf with a leading member axis of size P.
      *args: further arguments of ``f``, shared by every member.
      key: PRNG key for the Rademacher vectors.
      samples: m ≥ 2 vectors.
      batch_size: samples computed together under ``vmap`` (memory vs speed).
      member_chunk: members per batched call (``None``: all at once); the
        results do not depend on it.
      data_chunk: ``None``, or k examples per chunk (see :func:`~gdjax.curvature.hvp`).

    Returns:
      A :class:`PopulationTrace`; ``.member(i)`` is member i's :class:`TraceEstimate`.

    Examples:
      >>> f = lambda p: jnp.sum(jnp.array([3.0, 2.0, 1.0]) * p**3) / 6   # H = diag(s·p)
      >>> est = population_trace(f, jnp.array([[1.0, 1, 1], [2, 2, 2]]), key=jax.random.key(0))
      >>> est.estimate.tolist(), est.stderr.tolist()
      ([6.0, 12.0], [0.0, 0.0])

    References:
      Hutchinson (1989); Avron & Toledo (2011).
    """
    size, _, chunk, data_chunk = _check_population(f, params, args, member_chunk, data_chunk)
    samples = check_positive_int("samples", samples)
    if samples < 2:
        raise ValueError(
            f"samples: expected at least 2 (a standard error needs two), got {samples}."
        )
    batch_size = min(check_positive_int("batch_size", batch_size), samples)
    _check_key(key)
    values = np.concatenate(
        [
            np.asarray(
                _member_hutchinson(
                    f, _take(params, idx), key, samples, batch_size, args, data_chunk
                ),
                np.float64,
            )[: np.unique(idx).size]
            for idx in _chunks(size, chunk)
        ]
    )
    return PopulationTrace(
        estimate=values.mean(axis=1),
        stderr=values.std(axis=1, ddof=1) / math.sqrt(samples),
        samples=values,
    )


# ---------------------------------------------------------------- Taylor error of a step


class PopulationTaylor(NamedTuple):
    """What :func:`population_taylor_step` returns: :class:`TaylorResult` with a member axis.

    Attributes:
      etas: ``(E,)``, the step sizes η, shared by every member.
      actual, first_order, second_order, first_order_error, second_order_error:
        ``(P, E)``, as in :class:`TaylorResult`, member by member.
      slope, curvature: ``(P,)``: ``∇C(θ_i)ᵀd_i`` and ``d_iᵀH_i d_i``.
      direction: the directions d_i, a pytree with the member axis.
      threshold: the relative error that defines ``eta_threshold``.
      eta_threshold: ``(P,)``, as in :class:`TaylorResult`.
      lambda_max: ``(P,)``, λ_max(H_i) (by :func:`population_top_eigenvalues` unless given).
      lambda_max_converged: ``(P,)``: whether each λ_max was verified by its
        measured residual (True where ``lambda_max`` was given).
      stability_limit: ``(P,)``, ``2/λ_max(H_i)`` (inf where λ_max ≤ 0).
    """

    etas: np.ndarray
    actual: np.ndarray
    first_order: np.ndarray
    second_order: np.ndarray
    first_order_error: np.ndarray
    second_order_error: np.ndarray
    slope: np.ndarray
    curvature: np.ndarray
    direction: PyTree
    threshold: float
    eta_threshold: np.ndarray
    lambda_max: np.ndarray
    lambda_max_converged: np.ndarray
    stability_limit: np.ndarray

    def member(self, i: int) -> TaylorResult:
        """Member i's result as :func:`~gdjax.curvature.taylor_step` returns it."""
        return TaylorResult(
            etas=self.etas,
            actual=self.actual[i],
            first_order=self.first_order[i],
            second_order=self.second_order[i],
            first_order_error=self.first_order_error[i],
            second_order_error=self.second_order_error[i],
            slope=float(self.slope[i]),
            curvature=float(self.curvature[i]),
            direction=jax.tree.map(lambda a: a[i], self.direction),
            threshold=self.threshold,
            eta_threshold=float(self.eta_threshold[i]),
            lambda_max=float(self.lambda_max[i]),
            stability_limit=float(self.stability_limit[i]),
        )


@functools.partial(jax.jit, static_argnums=(0, 5))
def _member_taylor(f, params, d, etas, args, data_chunk=None):
    """``taylor_step``'s ``_taylor`` (ΔC(η), ∇Cᵀd, dᵀHd) under ``vmap`` over the members."""
    return jax.vmap(lambda p, di: _taylor(f, p, di, etas, args, data_chunk))(params, d)


def _check_etas(etas) -> np.ndarray:
    etas_np = np.asarray(etas)
    if etas_np.ndim != 1 or etas_np.size == 0 or not np.issubdtype(etas_np.dtype, np.number):
        raise ValueError(
            f"etas: expected a non-empty 1-D sequence of step sizes, got shape {etas_np.shape} "
            f"and dtype {etas_np.dtype}."
        )
    if not (np.all(np.isfinite(etas_np)) and np.all(etas_np > 0)):
        bad = etas_np[~(np.isfinite(etas_np) & (etas_np > 0))][0]
        raise ValueError(
            f"etas: expected positive finite step sizes, got {float(bad)!r} among them."
        )
    return etas_np


def population_taylor_step(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    etas: Sequence[float] | np.ndarray | jax.Array,
    direction: PyTree | None = None,
    threshold: float = 0.1,
    lambda_max: Sequence[float] | np.ndarray | None = None,
    key: jax.Array | None = None,
    member_chunk: int | None = None,
    data_chunk: int | None = None,
) -> PopulationTaylor:
    """How well the Taylor models predict a step ``θ_i + ηd_i``, for every member at once.

    .. math::

        ΔC_i(η) = C(θ_i + ηd_i) − C(θ_i) ≈ η ∇C(θ_i)^T d_i + ½ η^2 d_i^T H_i d_i

    :func:`~gdjax.curvature.taylor_step` (whole-params steps) for every member
    in one batched program: ``d_i = −∇C(θ_i)`` by default (one gradient of the
    population's cost ``F = Σ_i C(θ_i)`` gives them all), ΔC for every η, the
    slope and ``dᵀHd`` under ``vmap`` over the members, and λ_max of every
    member by :func:`population_top_eigenvalues` (started from d_i as
    ``taylor_step`` starts, or from ``key``). Member i's result equals
    ``taylor_step(f, θ_i, *args, etas=etas, …)``'s to rounding (its λ_max to
    Lanczos' tolerance). A step restricted to one layer (``taylor_step``'s
    ``layer``) is not offered here.

    Args:
      f: scalar function ``f(params, *args)`` of one member's params.
      params: the members' params, every leaf with a leading member axis of size P.
      *args: further arguments of ``f``, shared by every member.
      etas: step sizes η, a non-empty 1-D sequence of positive finite numbers.
      direction: the d_i, a pytree with the member axis; default ``−∇C(θ_i)``.
      threshold: the relative first-order error that defines ``eta_threshold``.
      lambda_max: P known values of λ_max(H_i), or ``None`` (computed).
      key: PRNG key for the Lanczos runs; default: start them from d_i.
      member_chunk: members per batched call (``None``: all at once).
      data_chunk: ``None``, or k examples per chunk (see ``taylor_step``).

    Returns:
      A :class:`PopulationTaylor`; ``.member(i)`` is member i's :class:`TaylorResult`.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(p**2) + jnp.sum(p)    # H = I, ∇C(θ) = θ + 1
      >>> res = population_taylor_step(f, jnp.array([[0.0, 0.0], [1.0, 1.0]]), etas=[0.1])
      >>> res.actual.round(6).tolist(), res.stability_limit.round(4).tolist()
      ([[-0.19], [-0.76]], [2.0, 2.0])
    """
    size, _, chunk, data_chunk = _check_population(f, params, args, member_chunk, data_chunk)
    etas_np = _check_etas(etas)
    threshold = check_finite_number("threshold", threshold)
    if lambda_max is not None:
        lambda_max = np.asarray(lambda_max, np.float64)
        if lambda_max.shape != (size,):
            raise ValueError(
                f"lambda_max: expected None or one value per member, shape ({size},), "
                f"got shape {lambda_max.shape}."
            )
    dtype = _dtype(params)
    if direction is not None:
        _check_like("direction", direction, params)
        direction = jax.tree.map(lambda t: jnp.asarray(t, dtype), direction)
    if key is not None:
        _check_key(key)

    parts, directions = [], []
    for idx in _chunks(size, chunk):
        members = _take(params, idx)
        if direction is None:
            d = jax.tree.map(jnp.negative, _gradient(_MemberSum(f), members, args, data_chunk))
        else:
            d = _take(direction, idx)
        real = np.unique(idx).size
        nonzero = np.any(np.asarray(jnp.abs(_ravel_members(d))) > 0, axis=1)[:real]
        if not np.all(nonzero):
            member = int(idx[np.flatnonzero(~nonzero)[0]])
            raise ValueError(
                f"direction: expected a non-zero direction for every member, got all zeros for "
                f"member {member} (is its gradient zero?)."
            )
        out = _member_taylor(f, members, d, jnp.asarray(etas_np, dtype), args, data_chunk)
        parts.append([np.asarray(o, np.float64)[:real] for o in out])
        directions.append(jax.tree.map(lambda a, real=real: a[:real], d))
    actual, slope, curvature = (np.concatenate([p[i] for p in parts]) for i in range(3))
    d = jax.tree.map(lambda *a: jnp.concatenate(a), *directions)
    etas64 = etas_np.astype(np.float64)
    first = slope[:, None] * etas64
    second = first + 0.5 * etas64**2 * curvature[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        first_error = np.abs(first - actual) / np.abs(actual)
        second_error = np.abs(second - actual) / np.abs(actual)
    if lambda_max is None:
        eig = population_top_eigenvalues(
            f,
            params,
            1,
            *args,
            key=jax.random.key(0) if key is None else key,
            init=d if key is None else None,
            member_chunk=member_chunk,
            data_chunk=data_chunk,
        )
        lambda_max, verified = eig.eigenvalues[:, 0], eig.converged
    else:
        verified = np.ones(size, bool)
    with np.errstate(divide="ignore"):
        stability = np.where(lambda_max > 0, 2.0 / np.where(lambda_max > 0, lambda_max, 1), np.inf)
    return PopulationTaylor(
        etas=etas_np,
        actual=actual,
        first_order=first,
        second_order=second,
        first_order_error=first_error,
        second_order_error=second_error,
        slope=slope,
        curvature=curvature,
        direction=d,
        threshold=threshold,
        eta_threshold=np.asarray(
            [_threshold_crossing(etas64, e, threshold) for e in first_error], np.float64
        ),
        lambda_max=lambda_max,
        lambda_max_converged=verified,
        stability_limit=stability,
    )


# ---------------------------------------------------------------- sharpness during training


class PopulationSharpnessTracker(SharpnessTracker):
    """A :func:`~gdjax.train.fit_population` callback recording every member's ``λ_max(H_i)``.

    Made by :func:`track_population_sharpness`. Each call ``tracker(epoch,
    params, opt_state, history)``, with params carrying the member axis, runs
    :func:`population_top_eigenvalues` (k = 1) on the full batch, member i
    started from its own previous top eigenvector (warm start), and appends
    one record. ``opt_state`` and ``history`` are ignored, so ``tracker(0,
    params)`` records the start.

    The records and their columns are :class:`SharpnessTracker`'s, one row per call
    with a member axis.

    Attributes (numpy arrays, one row per call):
      epochs: ``(records,)``, the epochs at which sharpness was recorded.
      sharpness: ``(records, P)``, λ_max(H_i) there.
      hvps: ``(records, P)``, the products each member's measurement took.
      converged: ``(records, P)``, whether each measurement was verified.
      eigenvector: the latest top eigenvectors (a pytree with the member axis), or None.
    """

    def __init__(
        self,
        f: Callable[..., jax.Array],
        x: jax.Array,
        y: jax.Array,
        *,
        key: jax.Array,
        tol: float,
        max_iters: int | None,
        warm_start: bool,
        member_chunk: int | None,
        data_chunk: int | None,
    ):
        super().__init__(
            f, x, y, key=key, tol=tol, max_iters=max_iters, warm_start=warm_start,
            data_chunk=data_chunk,
        )  # fmt: skip
        self.member_chunk = member_chunk

    def __call__(
        self, epoch: int, params: PyTree, opt_state: Any = None, history: Any = None
    ) -> np.ndarray:
        """Record and return every member's ``λ_max``, shape ``(P,)``, at ``params``."""
        del opt_state, history
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative integer, got {epoch!r}.")
        if self._records:
            _check_members("params", params, self._records[0][1].size)
        eig = population_top_eigenvalues(
            self.f,
            params,
            1,
            self.x,
            self.y,
            key=jax.random.fold_in(self.key, epoch),
            tol=self.tol,
            max_iters=self.max_iters,
            init=self.eigenvector if self.warm_start else None,
            member_chunk=self.member_chunk,
            data_chunk=self.data_chunk,
        )
        self.eigenvector = jax.tree.map(lambda a: a[:, 0], eig.eigenvectors)
        sharpness = eig.eigenvalues[:, 0]
        self._records.append((int(epoch), sharpness, eig.hvps, eig.converged))
        return sharpness


def track_population_sharpness(
    model: MLP | Callable[[PyTree, jax.Array], jax.Array],
    loss: str | Loss | Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    tol: float = 1e-4,
    max_iters: int | None = None,
    warm_start: bool = True,
    member_chunk: int | None = None,
    data_chunk: int | None = None,
) -> PopulationSharpnessTracker:
    """A :func:`~gdjax.train.fit_population` callback recording every member's sharpness.

    :func:`~gdjax.curvature.track_sharpness` for a population: the sharpness
    ``λ_max(∇²C(θ_i))`` of the full-batch cost of every member i, measured
    together by :func:`population_top_eigenvalues` (one batched Lanczos, each
    member warm-started from its own previous top eigenvector), to watch each
    member's λ_max against its own stability limit ``2/η_i``. Use it as
    ``fit_population(..., callback=tracker, callback_every=k)``. Member i's
    record equals what ``track_sharpness`` records along member i's own run, to
    Lanczos' tolerance.

    Args:
      model, loss, x, y, key, tol, max_iters, warm_start, data_chunk: as for
        :func:`~gdjax.curvature.track_sharpness` (checked the same way).
      member_chunk: members per batched call (``None``: all at once).

    Returns:
      A :class:`PopulationSharpnessTracker`: read ``tracker.epochs``,
      ``tracker.sharpness`` (records × P), ``tracker.converged``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax import MLP
      >>> from gdjax.train import fit_population
      >>> model = MLP((1, 1), activation="identity")   # H = mean of [x, 1][x, 1]ᵀ = I here
      >>> x, y = jnp.array([[1.0], [-1.0]]), jnp.array([[0.0], [1.0]])
      >>> tracker = track_population_sharpness(model, "mse", x, y, key=jax.random.key(0))
      >>> _ = fit_population(
      ...     model, "mse", "sgd", (x, y), epochs=4, keys=jax.random.split(jax.random.key(1), 2),
      ...     learning_rate=jnp.array([0.1, 0.5]), callback=tracker, callback_every=2,
      ...     progress=False)
      >>> tracker.epochs.tolist(), tracker.sharpness.round(6).tolist()
      ([2, 4], [[1.0, 1.0], [1.0, 1.0]])

    References:
      Cohen et al. (2021), "Gradient descent on neural networks typically occurs
      at the edge of stability", ICLR.
    """
    single = track_sharpness(
        model,
        loss,
        x,
        y,
        key=key,
        tol=tol,
        max_iters=max_iters,
        warm_start=warm_start,
        data_chunk=data_chunk,
    )  # the same checks, and the same objective on the device
    if member_chunk is not None:
        member_chunk = check_positive_int("member_chunk", member_chunk)
    return PopulationSharpnessTracker(
        single.f,
        single.x,
        single.y,
        key=single.key,
        tol=single.tol,
        max_iters=single.max_iters,
        warm_start=single.warm_start,
        member_chunk=member_chunk,
        data_chunk=single.data_chunk,
    )
