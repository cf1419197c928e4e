"""Input checks shared by the public functions.

They read shapes and dtypes (known while tracing, before anything compiles)
and, when an array is concrete rather than a tracer, its values. Every message
names the argument, what was expected and what was received.
"""

from __future__ import annotations

import math
import os
import weakref

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
    """``x``'s shape; an array's own ``shape`` tuple is read as is (hot paths call this)."""
    shape = getattr(x, "shape", None)
    return shape if type(shape) is tuple else tuple(np.shape(x))


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


def check_examples(x, y) -> None:
    """x holds at least one example (row), and y as many as x."""
    if not shape_of(x) or shape_of(x)[0] == 0:
        raise ValueError(
            f"x: expected at least one example (row): the cost is a mean over examples, "
            f"got shape {shape_of(x)}."
        )
    check_num_examples(x, y)


# JAX arrays already read and found finite, by id, while they live: a jax.Array is
# immutable, so the same object needs no second read (NumPy arrays can change: read
# every time). Functions called again on the same params and data skip the copy to
# the host and the scan, which dominate a small call's checks.
_FINITE: weakref.WeakValueDictionary[int, jax.Array] = weakref.WeakValueDictionary()


def check_finite(name: str, x) -> None:
    """A concrete floating array must hold no NaN or ±Inf (tracers and integers pass).

    A ``jax.Array`` found finite once is not read again while it lives.
    """
    if x is None or not is_concrete(x):
        return
    immutable = isinstance(x, jax.Array)
    if immutable and _FINITE.get(id(x)) is x:
        return
    values = np.asarray(x)
    if jnp.issubdtype(values.dtype, jnp.inexact) and not np.all(np.isfinite(values)):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite entries.")
    if immutable:
        _FINITE[id(x)] = x


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
            if dtype is None or dtype == np.dtype(object):
                raise ValueError(
                    f"{where}: expected a floating array, got {type(leaf).__name__}. {MODULE_HINT}"
                )
            raise ValueError(f"{where}: expected a floating array, got {dtype}.")
        check_finite(where, leaf)


def check_finite_args(args: tuple) -> None:
    """The data passed on to a user's ``f(params, *args)``: no NaN or ±Inf in ``args[i]``."""
    for i, arg in enumerate(args):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            check_finite(f"args[{i}]{jax.tree_util.keystr(path)}", leaf)


# ---------------------------------------------------------------- PRNG keys

KEY_EXPECTED = "a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed)"


def describe(value) -> str:
    """``value`` in a message: an array by its dtype and shape, else its type and repr."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of dtype {value.dtype} and shape {tuple(value.shape)}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def is_key(key) -> bool:
    """One PRNG key: a typed key of shape () or a raw uint32 key of shape (2,)."""
    if not isinstance(key, jax.Array):
        return False
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.shape == ()
    return key.dtype == np.uint32 and key.shape == (2,)


def check_key(key, name: str = "key") -> jax.Array:
    """``key`` if it is one PRNG key (typed, or raw from ``jax.random.PRNGKey``), else a
    ValueError, e.g. "key: expected a PRNG key from jax.random.key(seed) or
    jax.random.PRNGKey(seed), got int 0"."""
    if not is_key(key):
        hint = ""
        if isinstance(key, int | np.integer) and not isinstance(key, bool):
            hint = f" Pass jax.random.key({int(key)})."
        raise ValueError(f"{name}: expected {KEY_EXPECTED}, got {describe(key)}.{hint}")
    return key


# ---------------------------------------------------------------- memory

MEMORY_FRACTION = 1.0
"""An allocation is refused when it needs more than this fraction of :func:`memory_limit`."""


def memory_limit() -> tuple[int | None, str]:
    """``(bytes, where)``: the memory an array can take on the default device.

    On a GPU/TPU the device's own memory (``device.memory_stats()["bytes_limit"]``,
    when the backend reports it); on the CPU (or when it does not) the
    machine's physical memory (``os.sysconf``: pages × page size). ``None``
    when neither is known (then nothing is refused).
    """
    try:
        device = jax.devices()[0]
        stats = device.memory_stats() if device.platform != "cpu" else None
    except Exception:  # a backend without memory_stats
        device, stats = None, None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"the memory of {device.device_kind}"
    total = host_memory()
    return (None, "unknown") if total is None else (total, "this machine's physical memory")


def host_memory() -> int | None:
    """This machine's physical memory in bytes (``os.sysconf``: pages × page size), or None."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def check_memory(name: str, nbytes: int, expected: str, got: str) -> None:
    """Refuse (ValueError naming ``name``) an allocation of ``nbytes`` bytes that would
    not fit: more than :data:`MEMORY_FRACTION` × :func:`memory_limit`. Called before
    anything is allocated, so the user reads the size instead of a MemoryError,
    RESOURCE_EXHAUSTED or OverflowError."""
    limit, where = memory_limit()
    if limit is None or nbytes <= MEMORY_FRACTION * limit:
        return
    raise ValueError(
        f"{name}: expected {expected} fit in memory ({where}: {format_bytes(limit)}), "
        f"got {got}, which need {format_bytes(nbytes)} ({nbytes:,} bytes)."
    )


# ---------------------------------------------------------------- params that are not arrays

MODULE_HINT = (
    "Only arrays belong in params: split a module's static parts off first "
    "(docs/how-to/any-model.md). An Equinox module: params, static = "
    "eqx.partition(module, eqx.is_array), then pass params with the model "
    "apply = lambda p, x: jax.vmap(eqx.combine(p, static))(x); a Flax NNX module: "
    "graphdef, params = nnx.split(module), then apply = lambda p, x: nnx.merge(graphdef, p)(x)."
)


def is_module(value) -> bool:
    """An Equinox or Flax module (an object, not a function of (params, x))."""
    return any(
        (getattr(cls, "__module__", "") or "").split(".")[0] in ("equinox", "flax")
        for cls in type(value).__mro__
    )
