"""Curvature layer by layer: the diagonal blocks ``H_ll`` of the Hessian.

- :func:`layer_curvature` — ``λ_max(H_ll)`` and ``tr H_ll`` of every layer's
  diagonal block; returns a :class:`LayerCurvature`.

A layer's block is the Hessian of C in that layer's params alone, the others
held fixed (``_LayerRestricted``); :mod:`gdjax.curvature.taylor` uses the same
block for the stability limit of a step that moves one layer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._checks import check_finite_args, check_finite_number, check_positive_int
from gdjax.curvature.eigen import top_eigenvalues
from gdjax.curvature.hutchinson import trace
from gdjax.curvature.products import (
    _check_choice,
    _check_key,
    _check_params,
    _flat_hvp_operator,
    _num_params,
)

__all__ = ["layer_curvature", "LayerCurvature"]

PyTree = Any


# ---------------------------------------------------------------- per-layer curvature


def _block_lambda_max(f, params, mask, d, key, args) -> float:
    """λ_max of H, or of the diagonal block ``H_ll`` of layer l's params (``mask``).

    Lanczos starts from ``key`` when given, else (deterministically) from d.
    """
    start = jax.random.key(0) if key is None else key
    if mask is None:
        eig = top_eigenvalues(f, params, 1, *args, key=start, init=None if key is not None else d)
    else:
        layer = mask.index(True)
        eig = top_eigenvalues(
            _LayerRestricted(f, layer),
            params[layer],
            1,
            params,
            *args,
            key=start,
            init=None if key is not None else d[layer],
        )
    return float(eig.eigenvalues[0])


class _LayerRestricted:
    """``C`` as a function of layer l's params alone, the other layers held fixed.

    Its Hessian is the diagonal block ``H_ll``. Hashable by ``(f, layer)``, so
    compiled products are reused across calls.
    """

    def __init__(self, f, layer):
        self.f, self.layer = f, layer

    def __hash__(self):
        return hash((self.f, self.layer))

    def __eq__(self, other):
        return (
            isinstance(other, _LayerRestricted) and self.f is other.f and self.layer == other.layer
        )

    def __call__(self, layer_params, full_params, *args):
        full = list(full_params)
        full[self.layer] = layer_params
        return self.f(full, *args)


class LayerCurvature(NamedTuple):
    """What :func:`layer_curvature` returns: numpy arrays with one entry per layer l.

    Attributes:
      lambda_max: ``λ_max(H_ll)``, the largest eigenvalue of layer l's diagonal block.
      trace: ``tr H_ll``, exact or Hutchinson's estimate (see ``exact``).
      trace_stderr: the standard error of ``trace`` (0 where exact).
      exact: whether ``trace`` was computed exactly, from the block's basis.
      num_params: ``n_l``, the number of params of layer l (the size of ``H_ll``).
      hvps: Hessian-vector products spent on layer l (Lanczos and trace together).
      converged: whether Lanczos met its tolerance for ``lambda_max``.
    """

    lambda_max: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray
    exact: np.ndarray
    num_params: np.ndarray
    hvps: np.ndarray
    converged: np.ndarray


@functools.partial(jax.jit, static_argnums=(0, 2))
def _exact_trace(f, params, batch_size, args):
    """``tr H = Σ_i e_iᵀ H e_i`` over the standard basis: n Hessian-vector products."""
    flat, _ = ravel_pytree(params)
    n = flat.size
    operator = _flat_hvp_operator(f, params, args)

    def diagonal_entry(i):
        return operator(jax.nn.one_hot(i, n, dtype=flat.dtype))[i]

    return jnp.sum(jax.lax.map(diagonal_entry, jnp.arange(n), batch_size=batch_size))


def layer_curvature(
    f: Callable[..., jax.Array],
    params: Sequence[PyTree],
    *args: Any,
    key: jax.Array,
    trace_method: Literal["auto", "exact", "hutchinson"] = "auto",
    samples: int = 100,
    tol: float = 1e-8,
    max_iters: int | None = None,
    batch_size: int = 16,
) -> LayerCurvature:
    """λ_max and the trace of every layer's diagonal block of the Hessian.

    Order the params layer by layer, ``θ = (θ^1, …, θ^L)`` with ``θ^l = (w^l, b^l)``;
    the Hessian splits into blocks, and the diagonal block of layer l is the
    Hessian of C in layer l's params alone, the other layers held fixed:

    .. math::

        H = \\begin{pmatrix} H_{11} & \\cdots & H_{1L} \\\\ \\vdots & \\ddots & \\vdots \\\\
        H_{L1} & \\cdots & H_{LL} \\end{pmatrix}, \\qquad
        H_{ll} = \\frac{∂^2 C}{∂(θ^l)^2}, \\qquad
        \\operatorname{tr} H = \\sum_l \\operatorname{tr} H_{ll}

    ``H_ll v`` is the Hessian-vector product of the cost as a function of θ^l
    alone, n_l numbers long. ``λ_max(H_ll)`` (by Lanczos, :func:`top_eigenvalues`)
    is the curvature a step that moves only layer l meets, and ``2/λ_max(H_ll)``
    the largest stable learning rate for that layer alone; in general
    ``λ_max(H_ll) ≤ λ_max(H)`` (a Rayleigh quotient over a subspace).

    The trace is computed one of two ways, by ``trace_method``:

    - ``"exact"``: ``tr H_ll = Σ_i e_iᵀ H_ll e_i`` over layer l's n_l basis
      vectors, n_l products;
    - ``"hutchinson"``: :func:`trace` with ``samples`` Rademacher vectors, with its
      standard error;
    - ``"auto"`` (default): exact for the layers with ``n_l ≤ samples`` (no more
      products than Hutchinson would take), Hutchinson for the others.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ, a list with one pytree per layer (as ``MLP.init`` makes).
      *args: further arguments of ``f`` (e.g. ``x, y``).
      key: PRNG key (Lanczos start vectors and Rademacher vectors, per layer).
      trace_method: ``"auto"``, ``"exact"`` or ``"hutchinson"``.
      samples: Hutchinson's number of vectors (≥ 2), also the "auto" threshold.
      tol, max_iters: for Lanczos, as in :func:`top_eigenvalues`.
      batch_size: products computed together under ``vmap`` for the trace.

    Returns:
      A :class:`LayerCurvature` ``(lambda_max, trace, trace_stderr, exact, num_params,
      hvps, converged)``.

    Examples:
      >>> from gdjax import MLP, objective
      >>> model = MLP((2, 3, 1), activation="tanh")
      >>> f = objective(model, "mse")
      >>> params = model.init(jax.random.key(0))
      >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
      >>> lc = layer_curvature(f, params, x, y, key=jax.random.key(1))
      >>> lc.num_params.tolist(), lc.exact.tolist()   # 9 and 4 params ≤ 100 samples: exact
      ([9, 4], [True, True])

    References:
      Yao et al. (2020), "PyHessian: neural networks through the lens of the
      Hessian" (block-wise analysis); Sankar et al. (2021), "A deeper look at
      the Hessian eigenspectrum of deep neural networks and its applications
      to regularization", AAAI.
    """
    _check_params(params)
    check_finite_args(args)
    if not isinstance(params, list | tuple) or not params:
        raise ValueError(
            f"params: expected a non-empty list of per-layer pytrees (as MLP.init makes), "
            f"got {type(params).__name__}."
        )
    trace_method = _check_choice("trace_method", trace_method, ("auto", "exact", "hutchinson"))
    samples = check_positive_int("samples", samples)
    if samples < 2:
        raise ValueError(
            f"samples: expected at least 2 (a standard error needs two), got {samples}."
        )
    tol = check_finite_number("tol", tol)
    if max_iters is not None:
        max_iters = check_positive_int("max_iters", max_iters)
    batch_size = check_positive_int("batch_size", batch_size)
    _check_key(key)
    sizes = [_num_params(p) for p in params]
    for layer, n_l in enumerate(sizes):
        if n_l == 0:
            raise ValueError(f"params[{layer}]: expected at least one parameter, got none.")

    rows = []
    for layer, (layer_params, n_l) in enumerate(zip(params, sizes, strict=True)):
        block = _LayerRestricted(f, layer)
        block_args = (params, *args)
        eig_key, trace_key = jax.random.split(jax.random.fold_in(key, layer))
        eig = top_eigenvalues(
            block,
            layer_params,
            1,
            *block_args,
            key=eig_key,
            tol=tol,
            max_iters=None if max_iters is None else min(max_iters, n_l),
        )
        exact = trace_method == "exact" or (trace_method == "auto" and n_l <= samples)
        if exact:
            value = float(_exact_trace(block, layer_params, min(batch_size, n_l), block_args))
            stderr, products = 0.0, n_l
        else:
            est = trace(
                block,
                layer_params,
                *block_args,
                key=trace_key,
                samples=samples,
                batch_size=batch_size,
            )
            value, stderr, products = est.estimate, est.stderr, samples
        rows.append(
            (
                float(eig.eigenvalues[0]),
                value,
                stderr,
                exact,
                n_l,
                eig.hvps + products,
                eig.converged,
            )
        )
    columns = list(zip(*rows, strict=True))
    return LayerCurvature(
        lambda_max=np.asarray(columns[0], np.float64),
        trace=np.asarray(columns[1], np.float64),
        trace_stderr=np.asarray(columns[2], np.float64),
        exact=np.asarray(columns[3], bool),
        num_params=np.asarray(columns[4], np.int64),
        hvps=np.asarray(columns[5], np.int64),
        converged=np.asarray(columns[6], bool),
    )
