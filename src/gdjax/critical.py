"""Critical points: is a point where the gradient vanishes a minimum or a saddle?

At a critical point θ* (``∇C(θ*) = 0``) the second-order Taylor expansion

    C(θ* + d) = C(θ*) + ½ dᵀ H d + O(‖d‖³),     H = ∇²C(θ*)

decides: H positive definite (every eigenvalue λ_i > 0) is a strict minimum,
negative definite a maximum, and eigenvalues of both signs a **saddle point**:
along an eigenvector with λ_i < 0 the cost goes down, and gradient descent,
which only sees the vanishing gradient, slows to a crawl near it. Dauphin et
al. (2014) argue that in high dimensions most critical points with a high cost
are saddles, not bad local minima. Comparing the smallest eigenvalue λ_min
with the largest λ_max, and the fraction of eigenvalues below zero, tells them
apart without forming H (everything is Hessian-vector products:
:func:`gdjax.curvature.top_eigenvalues` and
:func:`gdjax.curvature.spectral_density`).

The classic saddle: a two-layer linear network ``a = w^2 w^1 x`` fitted to
y = x at the origin ``w^1 = w^2 = 0``, where ``C = ½(1 − w^2 w^1)²`` (x = y = 1)
has ``∇C = 0`` and ``H = [[0, −1], [−1, 0]]``, λ = ±1 (Baldi & Hornik 1989).
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

from gdjax import curvature
from gdjax._checks import (
    check_finite_number,
    check_float_tree,
    check_key,
    check_positive_int,
)

__all__ = ["classify_critical_point", "CriticalPoint", "VERDICTS"]

PyTree = Any

VERDICTS = ("minimum", "saddle", "maximum", "flat", "not critical")
"""The verdicts :func:`classify_critical_point` can return."""


class CriticalPoint(NamedTuple):
    """What :func:`classify_critical_point` returns.

    Attributes:
      verdict: one of :data:`VERDICTS`.
      grad_norm: ``‖∇C(θ)‖``.
      lambda_min: the smallest eigenvalue of H (most negative curvature).
      lambda_max: the largest eigenvalue of H.
      negative_fraction: the estimated fraction of the eigenvalues of H below
        ``−curvature_threshold`` (stochastic Lanczos quadrature).
      grad_tol: the gradient tolerance used.
      curvature_threshold: eigenvalues within ``±curvature_threshold`` count as
        zero: ``max(rtol · max(|λ_min|, |λ_max|), atol)``.
      num_params: n, the number of parameters (H is n × n).
    """

    verdict: str
    grad_norm: float
    lambda_min: float
    lambda_max: float
    negative_fraction: float
    grad_tol: float
    curvature_threshold: float
    num_params: int


@functools.partial(jax.jit, static_argnums=0)
def _grad_norm(f, params, args):
    flat, _ = ravel_pytree(jax.grad(f)(params, *args))
    return jnp.linalg.norm(flat)


def classify_critical_point(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    grad_tol: float = 1e-6,
    rtol: float | None = None,
    atol: float = 1e-12,
    lanczos_steps: int | None = None,
    runs: int = 10,
) -> CriticalPoint:
    """Classify θ as a minimum, saddle, maximum or flat point of ``C = f(θ, *args)``.

    With ``g = ‖∇C(θ)‖``, λ_min and λ_max the extreme eigenvalues of
    ``H = ∇²C(θ)`` (Lanczos on Hessian-vector products) and the threshold
    ``τ = max(rtol · max(|λ_min|, |λ_max|), atol)`` below which an eigenvalue
    counts as zero, the verdict is, in this order:

    .. math::

        \\begin{cases}
        \\text{"not critical"} & g > \\text{grad\\_tol} \\\\
        \\text{"flat"}         & \\max(|λ_{min}|, |λ_{max}|) ≤ \\text{atol} \\\\
        \\text{"saddle"}       & λ_{min} < −τ \\text{ and } λ_{max} > τ \\\\
        \\text{"minimum"}      & λ_{min} ≥ −τ \\\\
        \\text{"maximum"}      & λ_{max} ≤ τ
        \\end{cases}

    So "minimum" means H is positive semi-definite to within τ: eigenvalues in
    ``[−τ, τ]`` are flat directions, where the second-order test cannot decide
    (the minima of over-parameterised networks are all of this kind). The
    curvature is measured for every verdict, "not critical" included. The
    fraction of negative eigenvalues (below −τ) is estimated by
    :func:`gdjax.curvature.spectral_density` with ``runs`` random start vectors;
    on a tiny H it is noisy (each run weighs the eigenvalues by (v̂ᵀu_k)²).

    Args:
      f: scalar function ``f(params, *args)``, e.g. ``gdjax.objective(model, loss)``.
        Pass the same object on every call so the compiled products are reused.
      params: θ, any pytree of floating arrays.
      *args: further arguments of ``f`` (e.g. ``x, y``).
      key: PRNG key for the Lanczos start vectors.
      grad_tol: the largest ``‖∇C‖`` (absolute, in units of C per unit of θ) at
        which θ counts as critical.
      rtol: eigenvalues within ``±rtol · max(|λ_min|, |λ_max|)`` count as zero;
        default ``√ε`` of the params' dtype (1.5e-8 in float64, 3.5e-4 in
        float32), well above the accuracy of the Lanczos eigenvalues.
      atol: absolute floor of τ; H with all ``|λ| ≤ atol`` is "flat".
      lanczos_steps: Lanczos steps per spectral-density run (default ``min(90, n)``).
      runs: spectral-density runs.

    Returns:
      A :class:`CriticalPoint`.

    Examples:
      >>> f = lambda p: 0.5 * (1.0 - p[1] * p[0]) ** 2   # two-layer linear net, x = y = 1
      >>> point = classify_critical_point(f, jnp.zeros(2), key=jax.random.key(0))
      >>> point.verdict, round(point.lambda_min, 6), round(point.lambda_max, 6)
      ('saddle', -1.0, 1.0)

    References:
      Dauphin, Pascanu, Gulcehre, Cho, Ganguli & Bengio (2014), "Identifying and
      attacking the saddle point problem in high-dimensional non-convex
      optimization", NeurIPS; Baldi & Hornik (1989), "Neural networks and
      principal component analysis: learning from examples without local minima".
    """
    if not callable(f):
        raise ValueError(f"f: expected a function f(params, *args) -> scalar, got {f!r}.")
    check_float_tree("params", params)
    check_key(key)
    leaves = jax.tree.leaves(params)
    grad_tol = check_finite_number("grad_tol", grad_tol)
    atol = check_finite_number("atol", atol, allow_zero=True)
    if rtol is None:
        rtol = math.sqrt(float(jnp.finfo(jnp.result_type(leaves[0])).eps))
    rtol = check_finite_number("rtol", rtol, allow_zero=True)
    runs = check_positive_int("runs", runs)
    if lanczos_steps is not None:
        lanczos_steps = check_positive_int("lanczos_steps", lanczos_steps)
    n = sum(math.prod(np.shape(leaf)) for leaf in leaves)

    grad_norm = float(_grad_norm(f, params, args))
    max_key, min_key, density_key = jax.random.split(key, 3)
    lambda_max = float(curvature.top_eigenvalues(f, params, 1, *args, key=max_key).eigenvalues[0])
    lambda_min = float(
        curvature.top_eigenvalues(f, params, 1, *args, key=min_key, which="smallest").eigenvalues[0]
    )
    scale = max(abs(lambda_min), abs(lambda_max))
    threshold = max(rtol * scale, atol)
    density = curvature.spectral_density(
        f, params, *args, key=density_key, lanczos_steps=lanczos_steps, runs=runs
    )
    negative_fraction = density.mass(high=-threshold)

    if grad_norm > grad_tol:
        verdict = "not critical"
    elif scale <= atol:
        verdict = "flat"
    elif lambda_min < -threshold and lambda_max > threshold:
        verdict = "saddle"
    elif lambda_min >= -threshold:
        verdict = "minimum"
    else:
        verdict = "maximum"
    return CriticalPoint(
        verdict=verdict,
        grad_norm=grad_norm,
        lambda_min=lambda_min,
        lambda_max=lambda_max,
        negative_fraction=negative_fraction,
        grad_tol=grad_tol,
        curvature_threshold=threshold,
        num_params=n,
    )
