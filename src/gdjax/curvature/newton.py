"""Newton's step: ``θ' = θ − (H + λI)⁻¹∇C``, dense or Hessian-free.

- :func:`newton_step` — a damped Newton step, by a dense solve (at most
  :data:`MAX_DENSE_PARAMS` parameters) or by conjugate gradient on
  Hessian-vector products; returns a :class:`NewtonResult`.

On a quadratic C the second-order model is exact and one undamped step lands
on the minimum.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gdjax._checks import check_finite_args, check_finite_number, check_positive_int
from gdjax.curvature.products import (
    _check_choice,
    _check_data_chunk,
    _check_f,
    _check_params,
    _flat_operator,
    _mean_over_data,
)

__all__ = ["newton_step", "NewtonResult", "MAX_DENSE_PARAMS", "DENSE_WARN_PARAMS", "CostWarning"]

PyTree = Any


MAX_DENSE_PARAMS = 4096
"""The largest parameter count :func:`newton_step` builds a dense Hessian for."""

DENSE_WARN_PARAMS = 2000
"""Above this parameter count, ``newton_step(method="dense")`` warns (:class:`CostWarning`)."""


class CostWarning(UserWarning):
    """A computation was asked for in a form that costs far more than an equivalent one."""


def _dense_cost_message(n: int, itemsize: int) -> str:
    hessian_mb = n * n * itemsize / 2**20
    return (
        f"params: method='dense' forms the {n}×{n} Hessian from {n} Hessian-vector products "
        f"(about {2 * n} gradient evaluations of f), holds {hessian_mb:.0f} MiB for it and "
        f"solves it in about {n**3 / 3:.1e} flops; method='cg' needs at most cg_iters "
        f"products, usually far fewer (a 3 000-parameter conv net: 146 s dense, 3.9 s CG). "
        f"Pass method='cg', or silence this with warnings.filterwarnings('ignore', "
        f"category=gdjax.curvature.CostWarning)."
    )


# ---------------------------------------------------------------- Newton's step


class NewtonResult(NamedTuple):
    """What :func:`newton_step` returns.

    Attributes:
      params: ``θ' = θ + p`` with ``p`` the (approximate) solution of ``(H + λI)p = −∇C``.
      iterations: conjugate-gradient iterations (= Hessian-vector products); 0 for dense.
      residual: ``‖(H + λI)p + ∇C‖ / ‖∇C‖`` (0 when ∇C = 0).
      converged: dense: the step is finite and ``residual ≤ max(tol, 1000ε)`` (False for a
        singular ``H + λI``); CG: the residual met ``tol``.
      negative_curvature: CG met a direction ``u`` with ``uᵀ(H + λI)u ≤ 0`` and stopped there.
    """

    params: PyTree
    iterations: int
    residual: float
    converged: bool
    negative_curvature: bool


@functools.partial(jax.jit, static_argnums=(0, 4))
def _dense_newton(f, params, damping, args, data_chunk=None):
    flat, unravel = ravel_pytree(params)

    def gradient_and_hessian(data):
        def f_flat(u):
            return f(unravel(u), *data)

        return jax.grad(f_flat)(flat), jax.hessian(f_flat)(flat)

    g, h = _mean_over_data(f, gradient_and_hessian, args, data_chunk)
    a = h + damping * jnp.eye(flat.size, dtype=flat.dtype)
    p = jnp.linalg.solve(a, -g)
    gnorm = jnp.linalg.norm(g)
    residual = jnp.where(gnorm > 0, jnp.linalg.norm(a @ p + g) / gnorm, 0.0)
    return unravel(flat + p), residual


@functools.partial(jax.jit, static_argnums=(0, 3, 6))
def _cg_newton(f, params, damping, max_iters, tol, args, data_chunk=None):
    flat, unravel = ravel_pytree(params)
    g = _mean_over_data(
        f, lambda data: ravel_pytree(jax.grad(f)(params, *data))[0], args, data_chunk
    )

    operator = _flat_operator(f, params, args, data_chunk)

    def matvec(u):
        return operator(u) + damping * u

    # Solve A p = b, b = −∇C, from p = 0:  r = b − Ap,  u the search direction.
    b = -g
    bnorm = jnp.linalg.norm(b)
    target = tol * bnorm

    def cond(state):
        _, r, _, rr, i, neg = state
        return (i < max_iters) & (jnp.sqrt(rr) > target) & ~neg

    def body(state):
        p, r, u, rr, i, _ = state
        au = matvec(u)
        uau = jnp.vdot(u, au)
        neg = uau <= 0
        step = jnp.where(neg, 0.0, rr / jnp.where(neg, 1.0, uau))
        p = p + step * u
        r = r - step * au
        rr_new = jnp.vdot(r, r)
        u = r + (rr_new / jnp.where(rr > 0, rr, 1.0)) * u
        return p, r, u, rr_new, i + jnp.where(neg, 0, 1), neg

    zero = jnp.zeros_like(flat)
    state = (zero, b, b, jnp.vdot(b, b), jnp.array(0), jnp.array(False))
    p, r, _, rr, iterations, neg = jax.lax.while_loop(cond, body, state)
    residual = jnp.where(bnorm > 0, jnp.linalg.norm(matvec(p) - b) / bnorm, 0.0)
    return unravel(flat + p), iterations, residual, neg


def newton_step(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    damping: float = 0.0,
    method: Literal["dense", "cg"] = "dense",
    cg_iters: int | None = None,
    tol: float = 1e-10,
    data_chunk: int | None = None,
) -> NewtonResult:
    """One damped Newton step ``θ' = θ − (H + λI)⁻¹ ∇C``.

    .. math::

        θ' = θ + p,\\qquad (H + λ I)\\, p = −∇C

    It minimises the second-order model ``C + ∇Cᵀp + ½pᵀ(H + λI)p``. On a
    quadratic C (linear regression with mse) with λ = 0 that model is exact,
    so one step lands on the minimum; on a non-linear network it is only a
    local model, and the step does not reach the minimum (and with an
    indefinite H need not even go downhill).

    ``method="dense"`` forms H with ``jax.hessian`` and solves the n×n system:
    for small models only (n ≤ :data:`MAX_DENSE_PARAMS`; above
    :data:`DENSE_WARN_PARAMS` it warns with the cost, a :class:`CostWarning`). ``method="cg"``
    solves the system by conjugate gradient using only Hessian-vector
    products (Hessian-free optimisation); CG assumes ``H + λI`` positive
    definite: it stops at the first direction u with ``uᵀ(H + λI)u ≤ 0`` and
    returns the step built so far (``negative_curvature=True``); damping λ > 0
    is the usual cure.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ.
      *args: further arguments of ``f``.
      damping: λ ≥ 0, added to the diagonal of H (Levenberg–Marquardt damping).
      method: ``"dense"`` or ``"cg"``.
      cg_iters: most CG iterations (default n, the number of parameters).
      tol: CG stops when ``‖(H + λI)p + ∇C‖ ≤ tol·‖∇C‖``; the dense solve is
        converged when it is finite and that relative residual is at most
        ``max(tol, 1000ε)`` (a singular ``H + λI`` gives Inf/NaN: not converged).
      data_chunk: ``None``, or k examples per chunk: ∇C and H (dense) or every
        product (CG) are accumulated over chunks of the data (see :func:`hvp`),
        so memory follows k, not n (the dense n×n Hessian is still formed).

    Returns:
      A :class:`NewtonResult` ``(params, iterations, residual, converged, negative_curvature)``.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(jnp.array([3.0, 1.0]) * (p - 1.0) ** 2)
      >>> newton_step(f, jnp.zeros(2)).params.tolist()   # one step to the minimum
      [1.0, 1.0]

    References:
      Nocedal & Wright, *Numerical Optimization* (2006), ch. 3 and §7.1
      (Newton–CG); Martens (2010), "Deep learning via Hessian-free optimization".
    """
    n = _check_params(params)
    check_finite_args(args)
    method = _check_choice("method", method, ("dense", "cg"))
    damping = check_finite_number("damping", damping, allow_zero=True)
    tol = check_finite_number("tol", tol)
    data_chunk = _check_data_chunk(data_chunk, f, args)
    if method == "dense":
        if cg_iters is not None:
            raise ValueError(f"cg_iters: expected None with method='dense', got {cg_iters!r}.")
        if n > MAX_DENSE_PARAMS:
            raise ValueError(
                f"params: method='dense' forms the {n}×{n} Hessian; expected at most "
                f"{MAX_DENSE_PARAMS} parameters, got {n}. Use method='cg'."
            )
        _check_f(f, params, args, data_chunk)
        if n > DENSE_WARN_PARAMS:
            itemsize = jnp.result_type(*jax.tree.leaves(params)).itemsize
            warnings.warn(_dense_cost_message(n, itemsize), CostWarning, stacklevel=2)
        new, residual = _dense_newton(f, params, damping, args, data_chunk)
        residual = float(residual)
        # A singular H + λI gives Inf/NaN from the solve: never a converged step.
        finite = bool(jax.tree.all(jax.tree.map(lambda a: jnp.all(jnp.isfinite(a)), new)))
        eps = float(jnp.finfo(jnp.result_type(*jax.tree.leaves(params))).eps)
        converged = finite and residual <= max(tol, 1e3 * eps)
        return NewtonResult(new, 0, residual, converged, False)
    cg_iters = n if cg_iters is None else check_positive_int("cg_iters", cg_iters)
    _check_f(f, params, args, data_chunk)
    new, iterations, residual, neg = _cg_newton(f, params, damping, cg_iters, tol, args, data_chunk)
    residual = float(residual)
    return NewtonResult(new, int(iterations), residual, residual <= tol, bool(neg))
