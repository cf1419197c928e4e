"""The Taylor error of a step: actual ΔC vs its first- and second-order predictions.

Gradient descent ``θ ← θ − η ∇C`` follows the tangent of C; to second order

    C(θ + η d) = C(θ) + η ∇Cᵀd + ½ η² dᵀH d + O(η³),

so the first-order prediction of a step is off by about ½η²dᵀHd.

- :func:`taylor_step` — actual ΔC of a step vs its first- and second-order
  predictions, for many step sizes η at once, with the η where the linear
  model's error crosses a threshold and the stability limit ``2/λ_max``;
  returns a :class:`TaylorResult`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._checks import check_finite_args, check_finite_number
from gdjax.curvature.layers import _block_lambda_max, _layer_index, _restrict
from gdjax.curvature.products import (
    _check_data_chunk,
    _check_f,
    _check_key,
    _check_like,
    _check_params,
    _mean_over_data,
    _tree_vdot,
    hvp,
)

__all__ = ["taylor_step", "TaylorResult"]

PyTree = Any


# ---------------------------------------------------------------- Taylor error of a step


class TaylorResult(NamedTuple):
    """What :func:`taylor_step` returns; arrays are numpy, one entry per η.

    Attributes:
      etas: the step sizes η, as given.
      actual: ``ΔC = C(θ + ηd) − C(θ)``.
      first_order: ``η ∇Cᵀd``.
      second_order: ``η ∇Cᵀd + ½ η² dᵀHd``.
      first_order_error: ``|first_order − actual| / |actual|``.
      second_order_error: ``|second_order − actual| / |actual|``.
      slope: ``∇Cᵀd`` (negative for a descent direction).
      curvature: ``dᵀHd``.
      direction: the direction d used (params-shaped; zero outside ``layer``).
      threshold: the relative error that defines ``eta_threshold``.
      eta_threshold: the η at which ``first_order_error`` first exceeds
        ``threshold``, interpolated linearly in log η–log error between the grid
        points on either side; the smallest η if already exceeded there (an
        upper bound), NaN if never exceeded on the grid.
      lambda_max: the largest eigenvalue of the Hessian block the step moves in
        (all of H, or layer l's diagonal block ``H_ll``), by Lanczos.
      stability_limit: ``2/λ_max``, where gradient descent on the quadratic model
        stops being stable (inf if λ_max ≤ 0).
    """

    etas: np.ndarray
    actual: np.ndarray
    first_order: np.ndarray
    second_order: np.ndarray
    first_order_error: np.ndarray
    second_order_error: np.ndarray
    slope: float
    curvature: float
    direction: PyTree
    threshold: float
    eta_threshold: float
    lambda_max: float
    stability_limit: float


@functools.partial(jax.jit, static_argnums=(0, 5))
def _taylor(f, params, d, etas, args, data_chunk=None):
    """``ΔC(η)`` for every η, ``∇Cᵀd`` and ``dᵀHd``, on all the data or by chunks of it."""

    def on(data):
        c0, g = jax.value_and_grad(f)(params, *data)
        slope = _tree_vdot(g, d)
        curvature = _tree_vdot(d, hvp(f, params, d, *data))

        def delta(eta):
            return f(jax.tree.map(lambda p, di: p + eta * di, params, d), *data) - c0

        return jax.vmap(delta)(etas), slope, curvature

    return _mean_over_data(f, on, args, data_chunk)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _gradient(f, params, args, data_chunk=None):
    return _mean_over_data(f, lambda data: jax.grad(f)(params, *data), args, data_chunk)


def _threshold_crossing(etas: np.ndarray, errors: np.ndarray, threshold: float) -> float:
    order = np.argsort(etas)
    etas, errors = etas[order], errors[order]
    above = np.flatnonzero(errors > threshold)
    if above.size == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(etas[0])
    e0, e1 = errors[i - 1], errors[i]
    if not (e0 > 0 and np.isfinite(e0) and np.isfinite(e1)) or e1 == e0:
        return float(etas[i])
    t = (math.log(threshold) - math.log(e0)) / (math.log(e1) - math.log(e0))
    return float(math.exp(math.log(etas[i - 1]) + t * (math.log(etas[i]) - math.log(etas[i - 1]))))


def taylor_step(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    etas: Sequence[float] | np.ndarray | jax.Array,
    direction: PyTree | None = None,
    layer: int | str | None = None,
    threshold: float = 0.1,
    lambda_max: float | None = None,
    key: jax.Array | None = None,
    data_chunk: int | None = None,
) -> TaylorResult:
    """How well the first- and second-order Taylor models predict a step ``θ' = θ + ηd``.

    .. math::

        ΔC(η) = C(θ + ηd) − C(θ) = \\underbrace{η ∇C^T d}_{\\text{first order}}
        + \\underbrace{½ η^2 d^T H d}_{\\text{second order adds}} + O(η^3)

    with ``d = −∇C`` by default (a gradient-descent step of size η). For every
    η the actual change and both predictions are computed (the η are
    evaluated together under ``vmap``), with their relative errors
    ``|pred − ΔC| / |ΔC|``. The first-order error grows like
    ``|½η dᵀHd / ∇Cᵀd|`` for small η: the linear model gradient descent steps
    along is accurate only for η well below the curvature scale, which is
    compared with the stability limit ``2/λ_max`` of gradient descent.

    Cancellation limits ΔC to about ``ε·|C|`` absolute accuracy, so the
    relative errors are meaningless below ``|ΔC| ≈ ε|C|``: use float64.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ.
      *args: further arguments of ``f``.
      etas: step sizes η, a non-empty 1-D sequence of positive finite numbers.
      direction: d, shaped like ``params``; default ``−∇C``.
      layer: restrict d to one layer's params (zero elsewhere). A layer is a
        top-level entry of the params pytree, in ``jax.tree_util`` order (see
        :func:`layer_curvature`): ``layer`` is its 0-based position (``params[layer]``
        of a list of per-layer pytrees, as ``MLP.init`` makes) or, for a dict or a
        module, its key or field name (``layer="conv"``).
      threshold: the relative first-order error that defines ``eta_threshold``.
      lambda_max: λ_max of the Hessian block the step moves in, if known;
        otherwise computed by :func:`top_eigenvalues` (Lanczos).
      key: PRNG key for that Lanczos run; default: start it from d.
      data_chunk: ``None``, or k examples per chunk: C, ∇C, ``dᵀHd`` and every
        ``C(θ + ηd) − C(θ)`` (and the Lanczos run for λ_max) are accumulated as
        means over chunks of the data (see :func:`hvp`), so memory follows k, not
        n; ``f`` must be a mean over the examples.

    Returns:
      A :class:`TaylorResult`.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(p**2) + jnp.sum(p)    # H = I, ∇C(0) = 1
      >>> res = taylor_step(f, jnp.zeros(2), etas=[0.1, 1.0])
      >>> res.actual.round(6).tolist(), res.first_order.round(6).tolist()
      ([-0.19, -1.0], [-0.2, -2.0])
      >>> round(res.stability_limit, 4)   # 2/λ_max
      2.0

    References:
      Nocedal & Wright, *Numerical Optimization* (2006), §2.1 (Taylor's theorem);
      Cohen et al. (2021), "Gradient descent on neural networks typically
      occurs at the edge of stability".
    """
    _check_params(params)
    check_finite_args(args)
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
    threshold = check_finite_number("threshold", threshold)
    if lambda_max is not None:
        lambda_max = float(lambda_max)
    if direction is not None:
        _check_like("direction", direction, params)
    index = _layer_index(params, layer)
    if key is not None:
        _check_key(key)
    data_chunk = _check_data_chunk(data_chunk, f, args)
    _check_f(f, params, args, data_chunk)

    dtype = jnp.result_type(*jax.tree.leaves(params))
    if direction is None:
        direction = jax.tree.map(jnp.negative, _gradient(f, params, args, data_chunk))
    d = _restrict(jax.tree.map(lambda t: jnp.asarray(t, dtype), direction), index)
    if not any(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(d)):
        raise ValueError(
            "direction: expected a non-zero direction, got all zeros"
            + (f" in layer {layer}" if layer is not None else "")
            + " (is the gradient zero?)."
        )

    actual, slope, curvature = _taylor(f, params, d, jnp.asarray(etas_np, dtype), args, data_chunk)
    actual = np.asarray(actual, np.float64)
    slope, curvature = float(slope), float(curvature)
    etas64 = etas_np.astype(np.float64)
    first = etas64 * slope
    second = first + 0.5 * etas64**2 * curvature
    with np.errstate(divide="ignore", invalid="ignore"):
        first_error = np.abs(first - actual) / np.abs(actual)
        second_error = np.abs(second - actual) / np.abs(actual)

    if lambda_max is None:
        lambda_max = _block_lambda_max(f, params, index, d, key, args, data_chunk)
    stability = 2.0 / lambda_max if lambda_max > 0 else math.inf
    return TaylorResult(
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
        eta_threshold=_threshold_crossing(etas64, first_error, threshold),
        lambda_max=lambda_max,
        stability_limit=stability,
    )
