"""Gradient checking: central finite differences and pytree error reports.

Usable on any scalar function of a params pytree, not only on gdjax models:

    ∂f/∂θ_i ≈ (f(θ + h_i e_i) − f(θ − h_i e_i)) / (2 h_i),   h_i = eps · max(1, |θ_i|)

The truncation error is O(h²) and the rounding error O(ε_mach/h), so this is
meaningful in float64 only (eps = 1e-6 gives about 1e-9 relative accuracy on
smooth functions); :func:`finite_difference_grad` refuses float32 params.

Two gradient pytrees are compared leaf by leaf with the relative error

    err(a, b) = ‖a − b‖ / max(‖a‖, ‖b‖)      (0 when both are zero)

in the Frobenius norm of each leaf, computed on the host in float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._checks import (
    check_finite_number,
    check_float_tree,
    check_memory,
    check_positive_int,
    describe,
    dtype_of,
    shape_of,
)

__all__ = ["finite_difference_grad", "compare", "relative_error", "GradReport", "check_grad"]

PyTree = Any

_NEEDS_X64 = (
    "params: finite differences need float64 leaves, got {dtypes}. Enable float64 with "
    "jax.config.update('jax_enable_x64', True) and cast the params, e.g. "
    "jax.tree.map(lambda p: p.astype(jnp.float64), params)."
)


def finite_difference_grad(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    eps: float = 1e-6,
    chunk_size: int = 256,
) -> PyTree:
    """The gradient of the scalar ``f(params, *args)`` by central differences.

    Args:
      f: a scalar function whose first argument is a pytree of float64 arrays.
      params: the point at which to differentiate.
      *args: further arguments of ``f``, held fixed.
      eps: relative step ``h_i = eps · max(1, |θ_i|)``.
      chunk_size: perturbed points evaluated together under ``vmap``.

    Returns:
      A pytree shaped like ``params``.
    """
    _check_function("f", f)
    check_finite_number("eps", eps)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    check_float_tree("params", params)
    size = sum(int(np.prod(shape_of(leaf))) for leaf in jax.tree.leaves(params))
    check_memory(
        "chunk_size",
        chunk_size * size * 8,
        "a chunk of perturbed points whose arrays",
        f"{chunk_size} points of {size:,} params (float64, 8 bytes each)",
    )
    flat, unravel = ravel_pytree(params)
    dtypes = sorted({str(jnp.result_type(p)) for p in jax.tree.leaves(params)})
    if flat.dtype != jnp.float64 or dtypes != ["float64"]:
        raise ValueError(_NEEDS_X64.format(dtypes=dtypes))

    @jax.jit
    def central(points, steps):
        def f_flat(v):
            return f(unravel(v), *args)

        return (jax.vmap(f_flat)(flat + points) - jax.vmap(f_flat)(flat - points)) / (2 * steps)

    size = flat.size
    steps = eps * jnp.maximum(1.0, jnp.abs(flat))
    out = []
    for start in range(0, size, chunk_size):
        idx = np.arange(start, min(start + chunk_size, size))
        idx = np.pad(idx, (0, chunk_size - idx.size), mode="edge")  # one shape: one compile
        points = (
            jnp.zeros((chunk_size, size), flat.dtype).at[np.arange(chunk_size), idx].set(steps[idx])
        )
        out.append(np.asarray(central(points, steps[idx])))
    grad = np.concatenate(out)[:size]
    return unravel(jnp.asarray(grad))


def relative_error(a: PyTree, b: PyTree) -> float:
    """``‖a − b‖ / max(‖a‖, ‖b‖)`` over the whole pytree (0 when both are zero).

    ``a`` and ``b`` must have the same structure and leaf shapes (a ValueError
    naming the first leaf of ``b`` that differs otherwise).
    """
    _check_like(a, b)
    a_flat = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)])
    b_flat = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)])
    return _rel(a_flat, b_flat)


def _check_function(name: str, f) -> None:
    if not callable(f):
        raise ValueError(f"{name}: expected a function, got {describe(f)}.")


def _check_like(a: PyTree, b: PyTree) -> None:
    """``a`` and ``b``: the same pytree structure, leaf shapes, real (numeric) leaves."""
    for name, tree in (("a", a), ("b", b)):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            dtype = dtype_of(leaf)
            if dtype is None or not (
                np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
            ):
                got = type(leaf).__name__ if dtype is None or dtype.kind == "O" else dtype
                raise ValueError(
                    f"{name}{jax.tree_util.keystr(path)}: expected a real array, got {got}."
                )
    a_def, b_def = jax.tree.structure(a), jax.tree.structure(b)
    if a_def != b_def:
        raise ValueError(
            f"b: expected a pytree with the structure of a ({a_def.num_leaves} leaves: "
            f"{a_def}), got {b_def.num_leaves} leaves: {b_def}."
        )
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True
    ):
        if shape_of(x) != shape_of(y):
            raise ValueError(
                f"b{jax.tree_util.keystr(path)}: expected shape {shape_of(x)} as in a, "
                f"got {shape_of(y)}."
            )


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


@dataclasses.dataclass(frozen=True)
class GradReport:
    """Leaf-by-leaf comparison of two gradient pytrees.

    Attributes:
      paths: each leaf's path, e.g. ``"[0]['w']"``.
      shapes: each leaf's shape.
      relative_errors: ``‖a − b‖ / max(‖a‖, ‖b‖)`` per leaf.
      max_abs_errors: ``max |a − b|`` per leaf.
    """

    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    relative_errors: tuple[float, ...]
    max_abs_errors: tuple[float, ...]

    @property
    def max_relative_error(self) -> float:
        """The worst leaf's relative error."""
        return max(self.relative_errors, default=0.0)

    def __str__(self) -> str:
        rows = [f"{'leaf':<16}{'shape':<16}{'rel. error':>12}{'max |a-b|':>12}"]
        for path, shape, rel, abs_ in zip(
            self.paths, self.shapes, self.relative_errors, self.max_abs_errors, strict=True
        ):
            rows.append(f"{path:<16}{str(shape):<16}{rel:>12.3e}{abs_:>12.3e}")
        return "\n".join(rows)


def compare(a: PyTree, b: PyTree) -> GradReport:
    """Compare two pytrees of the same structure leaf by leaf.

    >>> report = compare([{"w": jnp.ones(2)}], [{"w": jnp.array([1.0, 1.1])}])
    >>> round(report.max_relative_error, 4)
    0.0673
    """
    _check_like(a, b)
    a_leaves = jax.tree_util.tree_flatten_with_path(a)[0]
    b_leaves = jax.tree_util.tree_leaves(b)
    paths, shapes, rels, abss = [], [], [], []
    for (path, x), y in zip(a_leaves, b_leaves, strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        paths.append(jax.tree_util.keystr(path))
        shapes.append(x.shape)
        rels.append(_rel(x.ravel(), y.ravel()))
        abss.append(float(np.max(np.abs(x - y), initial=0.0)))
    return GradReport(tuple(paths), tuple(shapes), tuple(rels), tuple(abss))


def check_grad(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    grad_fn: Callable[..., PyTree] | None = None,
    eps: float = 1e-6,
) -> GradReport:
    """Compare a gradient (``jax.grad(f)`` by default) with finite differences of ``f``.

    Args:
      f: scalar function ``f(params, *args)``; params must be float64.
      params: the point.
      *args: fixed further arguments.
      grad_fn: ``grad_fn(params, *args)`` → gradient pytree to check; defaults to
        ``jax.grad(f)``, e.g. pass a hand-written gradient.
      eps: relative finite-difference step.

    Returns:
      A :class:`GradReport` of ``grad_fn`` against finite differences.
    """
    _check_function("f", f)
    if grad_fn is not None:
        _check_function("grad_fn", grad_fn)
    check_finite_number("eps", eps)
    check_float_tree("params", params)
    grad_fn = jax.grad(f) if grad_fn is None else grad_fn
    return compare(grad_fn(params, *args), finite_difference_grad(f, params, *args, eps=eps))
