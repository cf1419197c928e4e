"""Public functions that compile themselves once per static configuration.

A public numerical function of gdjax is written as two parts: the checks,
which read the concrete inputs (shapes, dtypes, NaN) and raise a ``ValueError``
naming the argument before anything compiles, and a *body* that computes.
:func:`call` runs the body:

- called eagerly (no tracer among the array arguments), through ``jax.jit`` of
  the body with its static configuration bound, kept in a bounded LRU
  (:data:`MAX_ENTRIES` entries) keyed on ``(body, static)``. A later call with
  the same configuration and the same shapes and dtypes compiles nothing and
  costs one dispatch of the compiled program, not one dispatch per primitive;
- inside the user's own ``jit``/``vmap``/``grad`` (a tracer among the arguments),
  the body itself, un-jitted, exactly as before: no nested ``jit``, no host
  callback in traced code.

The static configuration is what the compiled program depends on beyond
shapes: a model (a frozen, hashable dataclass: equal models share one entry),
a loss, a name, a size, and a user's ``f``. A plain Python function is hashed
**by identity**: pass the same ``f`` object on every call (build it once, e.g.
``f = gdjax.objective(model, loss)``) and it compiles once. A new closure or
``lambda`` on every call is a new key, so each call traces and compiles again
(about as slow as the first call) and the LRU keeps the last
:data:`MAX_ENTRIES` of them alive. A configuration that cannot be hashed, or
arguments that are not arrays or numbers, run the body eagerly (correct, as
slow as before).
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["call", "has_tracer", "clear", "MAX_ENTRIES"]

MAX_ENTRIES = 128
"""How many (body, static configuration) pairs keep their compiled program."""

_cache: collections.OrderedDict[Any, Callable] = collections.OrderedDict()
_lock = threading.Lock()


def has_tracer(tree: Any) -> bool:
    """True when a leaf of ``tree`` is a tracer of some JAX transformation."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


_ARGUMENT = jax.Array | np.ndarray | np.generic | int | float | complex | bool


def _runs_jitted(leaves: list) -> bool:
    """No leaf is a tracer and every leaf is an array or a number (``jax.jit`` takes it)."""
    return all(
        isinstance(leaf, _ARGUMENT) and not isinstance(leaf, jax.core.Tracer) for leaf in leaves
    )


def _compiled(body: Callable, static: tuple) -> Callable | None:
    key = (body, static)
    try:
        hash(key)
    except TypeError:  # an unhashable f or config: no cache, run eagerly
        return None
    with _lock:
        fn = _cache.get(key)
        if fn is not None:
            _cache.move_to_end(key)
            return fn
        fn = jax.jit(functools.partial(body, *static))
        _cache[key] = fn
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
        return fn


def call(body: Callable, static: tuple, *dynamic: Any) -> Any:
    """``body(*static, *dynamic)``: jitted and cached when called eagerly, else directly.

    Args:
      body: the computation, a module-level function (its identity is part of the key).
      static: the hashable configuration, bound as the leading arguments and
        baked into the compiled program.
      *dynamic: pytrees of arrays (params, data, vectors); their shapes and dtypes
        select the compiled program, their values are its inputs.
    """
    if not _runs_jitted(jax.tree.leaves(dynamic)):  # traced by the user's transformation
        return body(*static, *dynamic)
    fn = _compiled(body, static)
    if fn is None:
        return body(*static, *dynamic)
    return fn(*dynamic)


def clear() -> None:
    """Forget every compiled program held here (they compile again on their next call)."""
    with _lock:
        _cache.clear()
