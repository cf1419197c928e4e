"""Input checks shared by the public functions.

They read shapes and dtypes (known while tracing, before anything compiles)
and, when an array is concrete rather than a tracer, its values. Every message
names the argument, what was expected and what was received.
"""

from __future__ import annotations

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside ``jit``/``grad``/``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


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
