"""Content hashes of pytrees, shared by the sweeps' and the checkpoints' identities."""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np


def _is_key_array(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def tree_sha256(tree: Any) -> str:
    """SHA-256 of a pytree's leaves: each leaf's key path, dtype, shape and bytes, in order.

    .. math::

        h = \\mathrm{SHA256}(\\Vert_i\\; \\mathrm{path}_i | \\mathrm{dtype}_i |
            \\mathrm{shape}_i | \\mathrm{bytes}_i)

    Typed PRNG keys are hashed as their key data. Equal trees (same structure,
    dtypes and bits) give equal hashes on every machine of the same byte order.

    >>> import numpy as np
    >>> tree_sha256([np.zeros(2)]) == tree_sha256([np.zeros(2)])
    True
    >>> tree_sha256([np.zeros(2)]) == tree_sha256([np.zeros(2, np.float32)])
    False
    """
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _is_key_array(leaf):
            leaf = jax.random.key_data(leaf)
        arr = np.asarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
