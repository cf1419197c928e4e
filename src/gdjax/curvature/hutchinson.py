"""The trace of the Hessian: Hutchinson's estimator.

- :func:`trace` — ``tr H ≈ (1/m) Σ_j v_jᵀHv_j`` over Rademacher vectors v_j,
  with its standard error; returns a :class:`TraceEstimate`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._checks import check_finite_args, check_positive_int
from gdjax.curvature.products import (
    _check_data_chunk,
    _check_f,
    _check_key,
    _check_params,
    _flat_operator,
)

__all__ = ["trace", "TraceEstimate"]

PyTree = Any


# ---------------------------------------------------------------- trace


class TraceEstimate(NamedTuple):
    """What :func:`trace` returns.

    Attributes:
      estimate: the mean of the samples, an unbiased estimate of ``tr H``.
      stderr: its standard error ``std(samples) / √samples``.
      samples: the ``vᵀHv`` of each Rademacher vector v, a numpy array.
    """

    estimate: float
    stderr: float
    samples: np.ndarray


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 6))
def _hutchinson(f, params, key, samples, batch_size, args, data_chunk=None):
    flat, unravel = ravel_pytree(params)
    operator = _flat_operator(f, params, args, data_chunk)

    def one(sample_key):
        v = jax.random.rademacher(sample_key, flat.shape, flat.dtype)
        return jnp.vdot(v, operator(v))

    return jax.lax.map(one, jax.random.split(key, samples), batch_size=batch_size)


def trace(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    samples: int = 100,
    batch_size: int = 16,
    data_chunk: int | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate of the Hessian trace ``tr H = Σ_i λ_i``.

    .. math::

        \\operatorname{tr} H = \\mathbb{E}_v[v^T H v] ≈ \\frac{1}{m}\\sum_{j=1}^m v_j^T H v_j,
        \\qquad v_j \\in \\{−1, +1\\}^n \\text{ (Rademacher)}

    The estimate is unbiased; its variance ``2 Σ_{i≠j} H_{ij}²`` per sample is
    the smallest of all i.i.d. zero-mean unit-variance choices of v.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ.
      *args: further arguments of ``f``.
      key: PRNG key for the Rademacher vectors.
      samples: m ≥ 2, the number of vectors (two are the fewest that give an error bar).
      batch_size: products computed together under ``vmap`` (memory vs speed).
      data_chunk: ``None``, or k examples per chunk: each product is accumulated
        over chunks of the data (see :func:`hvp`), so memory follows k, not n.

    Returns:
      A :class:`TraceEstimate` ``(estimate, stderr, samples)``.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(jnp.array([3.0, 2.0, 1.0]) * p**2)
      >>> est = trace(f, jnp.zeros(3), key=jax.random.key(0), samples=10)
      >>> est.estimate, est.stderr   # diagonal H: every vᵀHv is exactly tr H
      (6.0, 0.0)

    References:
      Hutchinson (1989), "A stochastic estimator of the trace of the influence
      matrix for Laplacian smoothing splines"; Avron & Toledo (2011).
    """
    _check_params(params)
    check_finite_args(args)
    samples = check_positive_int("samples", samples)
    if samples < 2:
        raise ValueError(
            f"samples: expected at least 2 (a standard error needs two), got {samples}."
        )
    batch_size = check_positive_int("batch_size", batch_size)
    data_chunk = _check_data_chunk(data_chunk, f, args)
    _check_key(key)
    _check_f(f, params, args, data_chunk)
    values = np.asarray(
        _hutchinson(f, params, key, samples, min(batch_size, samples), args, data_chunk),
        np.float64,
    )
    return TraceEstimate(
        estimate=float(values.mean()),
        stderr=float(values.std(ddof=1) / math.sqrt(samples)),
        samples=values,
    )
