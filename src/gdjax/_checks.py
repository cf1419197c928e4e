"""Input checks shared by the public functions.

They read shapes and dtypes (known while tracing, before anything compiles)
and, when an array is concrete rather than a tracer, its values. Every message
names the argument, what was expected and what was received.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when this process can read ``x``'s values: not a tracer inside
    ``jit``/``grad``/``vmap``, nor a multi-process array with shards on other hosts."""
    if isinstance(x, jax.core.Tracer):
        return False
    return not (isinstance(x, jax.Array) and not x.is_fully_addressable)


def progress_shown(progress: bool) -> bool:
    """Whether to draw a progress bar: asked for, and not switched off by ``TQDM_DISABLE``.

    tqdm reads ``TQDM_DISABLE`` only as a default, which an explicit ``disable=``
    overrides; gdjax honours it as the user's word.
    """
    return bool(progress) and os.environ.get("TQDM_DISABLE", "").lower() not in (
        "1",
        "true",
        "yes",
    )


def shape_of(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def check_positive_int(name: str, value) -> int:
    """``value`` as an int, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}.")
    return int(value)


def check_num_examples(x, y) -> None:
    """x and y must hold the same number of examples (rows)."""
    nx, ny = shape_of(x)[:1], shape_of(y)[:1]
    if nx != ny:
        raise ValueError(
            f"y: expected {nx[0] if nx else '?'} examples (rows), the same as x, "
            f"got {ny[0] if ny else 'a scalar'} (x has shape {shape_of(x)}, "
            f"y has shape {shape_of(y)})."
        )


def check_finite(name: str, x) -> None:
    """A concrete floating array must hold no NaN or ±Inf (tracers and integers pass)."""
    if x is None or not is_concrete(x):
        return
    values = np.asarray(x)
    if jnp.issubdtype(values.dtype, jnp.inexact) and not np.all(np.isfinite(values)):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite entries.")


def dtype_of(x) -> np.dtype | None:
    """``x``'s dtype without copying it (``None`` for objects numpy cannot type)."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None:
        return np.dtype(dtype)
    try:
        return np.asarray(x).dtype
    except (TypeError, ValueError):
        return None


def check_real_data(name: str, x) -> None:
    """Data (x or targets) must be real numbers: integer or floating, not complex or bool."""
    dtype = dtype_of(x)
    if dtype is None or not (
        jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
    ):
        got = f"dtype {dtype}" if dtype is not None else type(x).__name__
        raise ValueError(f"{name}: expected a real (integer or floating) array, got {got}.")


def check_finite_number(name: str, value, *, allow_zero: bool = False) -> float:
    """A real, finite number, positive (or ≥ 0 with ``allow_zero``); bools refused."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float | np.integer | np.floating)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}: expected a {kind} finite number, got {value!r}.")
    return float(value)


def check_float_tree(name: str, tree) -> None:
    """At least one leaf; every leaf floating and (when concrete) finite, named by its path."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        raise ValueError(f"{name}: expected a pytree of floating arrays, got no leaves.")
    for path, leaf in leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        dtype = dtype_of(leaf)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            got = dtype if dtype is not None else type(leaf).__name__
            raise ValueError(f"{where}: expected a floating array, got {got}.")
        check_finite(where, leaf)


def check_finite_args(args: tuple) -> None:
    """The data passed on to a user's ``f(params, *args)``: no NaN or ±Inf in ``args[i]``."""
    for i, arg in enumerate(args):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            check_finite(f"args[{i}]{jax.tree_util.keystr(path)}", leaf)
