"""``data_chunk``: a mean over examples computed chunk by chunk, so memory follows the chunk.

Every analysis whose function is a mean over the examples of its data
arguments (a cost, its gradient, a Hessian-vector product, an accuracy) can
split those arguments along axis 0 into chunks of k examples and accumulate

.. math::

    \bar g = \frac{1}{n} \sum_c n_c\, g(\text{chunk}_c)

inside jit (a ``lax.scan`` over the full chunks, the last chunk of
n mod k examples weighted by its size). :mod:`gdjax.curvature` and the sweeps
of :mod:`gdjax.landscape` share these two functions.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._checks import shape_of

__all__ = ["check_data_chunk", "chunked_mean"]


def check_data_chunk(data_chunk, args: tuple) -> int | None:
    """None, or a positive int; then every leaf of ``args`` has the same rows n ≥ 1.

    A k larger than n is accepted: one chunk of all n examples. When the rows
    differ, the message names each argument's.
    """
    if data_chunk is None:
        return None
    if isinstance(data_chunk, bool) or not isinstance(data_chunk, int | np.integer):
        raise ValueError(
            f"data_chunk: expected None or a positive integer (examples per chunk), "
            f"got {data_chunk!r}."
        )
    if data_chunk <= 0:
        raise ValueError(
            f"data_chunk: expected a positive integer (examples per chunk), got {data_chunk}."
        )
    if not args:
        raise ValueError("data_chunk: expected data arguments to split (e.g. x, y), got none.")
    rows = [
        (f"args[{i}]{jax.tree_util.keystr(path)}", shape_of(leaf)[0] if shape_of(leaf) else None)
        for i, arg in enumerate(args)
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]
    ]
    sizes = {n for _, n in rows}
    if len(sizes) != 1 or None in sizes or 0 in sizes:
        each = ", ".join(f"{name}: {'a scalar' if n is None else n}" for name, n in rows[:4])
        raise ValueError(
            f"data_chunk: expected every data argument to have the same number of examples "
            f"(rows, axis 0) to split into chunks, got leading sizes {sorted(sizes, key=str)} "
            f"({each}{', …' if len(rows) > 4 else ''})."
        )
    return int(data_chunk)


def chunked_mean(
    fn: Callable,
    args: tuple,
    data_chunk: int,
    *,
    varying: tuple[str, ...] = (),
    widen: bool = False,
):
    """``(1/n) Σ_c n_c · fn(args_c)`` over chunks of ``data_chunk`` rows of ``args``.

    ``fn`` of a chunk is a mean over its examples (a cost, an accuracy; a dict
    of them is weighted entry by entry), so the weighted sum is the mean over
    all n examples; the last chunk, with n mod k rows, is weighted by its
    size. Full chunks run in one ``lax.scan``, so memory follows the chunk,
    not n. With ``widen`` and ``jax_enable_x64`` on, the sum is accumulated in
    float64 and cast back to each value's dtype at the end, so that a float32
    value (an accuracy: a mean of booleans is float32) is still the unchunked
    one. Inside ``shard_map``, ``varying`` names the mesh axes the values vary
    over (the scan's zero start is cast to vary over them, as ``fn``'s do).
    """
    n = jax.tree.leaves(args)[0].shape[0]
    k = min(data_chunk, n)
    full, rest = divmod(n, k)
    head = jax.tree.map(lambda a: a[: full * k].reshape(full, k, *a.shape[1:]), args)
    first = jax.tree.map(lambda a: a[0], head)
    spec = jax.eval_shape(fn, first)
    wide = widen and jax.config.read("jax_enable_x64")

    def acc_dtype(dtype):
        return jnp.promote_types(dtype, jnp.float64) if wide else dtype

    def widened(tree):
        return jax.tree.map(lambda v: v.astype(acc_dtype(v.dtype)), tree)

    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, acc_dtype(s.dtype)), spec)
    if varying:
        zero = jax.tree.map(lambda z: jax.lax.pcast(z, varying, to="varying"), zero)
    total, _ = jax.lax.scan(
        lambda acc, chunk: (jax.tree.map(jnp.add, acc, widened(fn(chunk))), None), zero, head
    )
    total = jax.tree.map(lambda t: t * k, total)
    if rest:
        tail = widened(fn(jax.tree.map(lambda a: a[full * k :], args)))
        total = jax.tree.map(lambda t, r: t + rest * r, total, tail)
    return jax.tree.map(lambda t, s: (t / n).astype(s.dtype), total, spec)
