"""Loss landscapes: directions in parameter space and sweeps of a function along them.

A landscape plot shows a scalar function of the params (the cost C, the
accuracy) on a line or a plane through θ:

    g(α)    = f(θ + α d1)                    (1-D, :func:`sweep_1d`)
    g(α, β) = f(θ + α d1 + β d2)             (2-D, :func:`sweep_2d`)

Directions are pytrees shaped like the params (``[{"w": (n_l, n_{l-1}),
"b": (n_l,)}, …]``):

- :func:`random_direction`: Gaussian, from an explicit key;
- :func:`normalize_direction` / :func:`filter_normalized_direction`: the filter
  normalisation of Li et al. (2018), which makes plots of different networks
  comparable: every row of ``w^l`` (one neuron's incoming weights, a
  "filter") of the direction gets the norm of the same row of θ;
- :func:`orthogonalize`: Gram–Schmidt on two directions, reporting their cosine;
- :func:`interpolation_direction`: ``θ_b − θ_a``, the line between two
  solutions (Goodfellow, Vinyals & Saxe 2015);
- :func:`pca_directions`: the top principal directions of a training
  trajectory, with the trajectory projected onto them (Li et al. 2018, §7).
- :func:`hessian_directions`: the top eigenvectors of the Hessian of ``f``
  at θ (Lanczos, :func:`gdjax.curvature.top_eigenvalues`), with their
  eigenvalues: the most curved directions.

They take any params pytree (a conv net's dict of kernels as well as an MLP's
list of layers). The function swept is any ``f(params, *args)``;
:func:`model_loss` builds it from any model ``apply(params, x)`` and loss
(for a ``gdjax.MLP``, the :class:`MLPLoss` of :func:`mlp_loss`).
For a population (params and directions with a leading member axis, as
:func:`gdjax.train.fit_population` returns params), :func:`members` makes
every member's value one output of a single sweep.

How a sweep is evaluated. The grid points (α_i, β_j), in row-major order, are
cut into *chunks* of ``chunk_size`` points; the last chunk is padded (with
copies of θ) so that every chunk has the same shape and the sweep compiles
once. A chunk is split over all devices with ``jax.shard_map`` on a 1-D mesh
whose axis is ``"points"``; on each device the points run in blocks of
``vmap_width`` points: ``jax.vmap`` inside a block, ``lax.map`` over the
blocks. Every point is therefore computed by the same compiled block, whatever
the chunk size and the device count, so the results are **bit-for-bit
identical** across chunk sizes and device counts for a given ``vmap_width``
(a different ``vmap_width`` is a different XLA program and may change the last
bit). Memory per device is about ``vmap_width`` points' worth of intermediates.

Data in chunks. With ``data_chunk=k`` every point is evaluated on chunks of
k examples (rows, axis 0, of every argument after the grid), the last chunk
of n mod k examples weighted by its size, and the values averaged over the
examples inside the compiled block (a ``lax.scan`` under the ``vmap``):

    g(α, β) = (1/n) Σ_c n_c f(θ + α d1 + β d2, x_c, y_c)

which is ``f`` on all the data when ``f`` is a mean over examples (the cost,
the accuracy; every entry of a dict alike). A block then holds
``vmap_width × k`` examples' intermediates instead of ``vmap_width × n``, and
:func:`default_vmap_width` counts one chunk per point. ``data_chunk`` counts
examples; ``chunk_size`` counts grid points: the two are independent. The
same semantics, and error messages, as ``data_chunk`` in
:mod:`gdjax.curvature`.

Resuming. With ``out=directory`` a sweep writes ``grid.npz`` (the values, a
``done`` mask, the grid and a JSON config with hashes of everything that
determines the values) atomically after every chunk, and ``sweep.json``
(human-readable config and a log of calls with the number of points each
computed). Called again with the same arguments it computes only the points
not yet done; called with a different sweep it refuses with a ValueError
naming what differs. ``vmap_width`` and ``data_chunk`` are part of the
sweep's identity, since both can change the last bits of a value (a
different ``data_chunk`` sums the examples in another order): resuming with
another ``data_chunk`` (``None`` included) is refused, naming the stored and
the given value. The function ``f`` itself cannot be hashed: only its
``__qualname__`` (for an :class:`MLPLoss` or :class:`ModelLoss`, its repr:
model, loss, accuracy), its output names and dtypes are compared, so use one
directory per function.

The MLP fast path. When ``f`` is an :class:`MLPLoss` (from :func:`mlp_loss`)
the sweep knows that the first layer is linear in its params along the plane,
``x (w^1 + α D_1 + β D_2)ᵀ = x w^1ᵀ + α x D_1ᵀ + β x D_2ᵀ``: it computes the
three products once per call (one jitted program, before the first chunk)
and every point then runs layers 2 … L only, through the same chunk/block
machinery. The values equal the generic path's to float rounding (a few ulps;
the tests use rtol 1e-12 in float64 and 2e-6 in float32), not bit for bit; the
fast path itself is bit-for-bit invariant to chunk size and device count (as
tested), and its resume directories are not interchangeable with those of a
generic ``f`` (the config's ``f`` differs). The products are kept for all n
examples (``(1 + k) × n × n_1`` numbers per device, beside the data); with
``data_chunk`` they are split into chunks of examples like the data, so the
per-point intermediates follow the chunk.

Multi-host (``jax.distributed``; tested with two processes on one machine,
2 CPU devices each, in ``tests/test_distributed.py``: the values equal a
single process's):

1. every process calls :func:`gdjax.distributed.initialize` (or
   ``jax.distributed.initialize(...)``: coordinator
   address, number of processes, process id; on managed clusters the
   arguments can come from the environment), so that ``jax.devices()`` lists
   the devices of all hosts;
2. every process then calls the same sweep with the *same* arguments (params,
   directions, data and grid: e.g. loaded from the same files). The mesh spans
   all devices; the grid, params, directions and data are placed from each
   process's own host copy; each chunk is split over all devices, so each
   process evaluates its devices' share of the points; the values are
   all-gathered (``multihost_utils.process_allgather``), so every process
   returns the full arrays. With :class:`MLPLoss` each process computes the
   first-layer products itself;
3. only process 0 writes ``out``. Every process reads ``out`` at the start to
   find the points not yet done, so ``out`` must be on a file system that all
   processes see.

For example, on each host::

    jax.distributed.initialize(coordinator, num_processes, process_id)
    values = sweep_2d(f, params, d1, d2, alphas, betas, x, y, out="/shared/plane")

References:
  Li, Xu, Taylor, Studer & Goldstein (2018), "Visualizing the Loss Landscape
  of Neural Nets", NeurIPS. Goodfellow, Vinyals & Saxe (2015), "Qualitatively
  characterizing neural network optimization problems", ICLR.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from gdjax import curvature, losses
from gdjax._checks import (
    check_finite,
    check_finite_args,
    check_positive_int,
    host_memory,
    progress_shown,
    shape_of,
)
from gdjax._chunks import check_data_chunk, chunked_mean
from gdjax._trees import tree_sha256 as _hash
from gdjax.backprop import check_batch
from gdjax.losses import Loss
from gdjax.metrics import accuracy as _accuracy
from gdjax.mlp import MLP
from gdjax.models import ApplyModel, as_loss, as_model
from gdjax.models import check_batch as check_model_batch
from gdjax.runs import _remove_leftovers, atomic_write_bytes, atomic_write_json, check_run_dir
from gdjax.runs import lock as _lock
from gdjax.train.step import _put

__all__ = [
    "NORMS",
    "OUT_AXES",
    "random_direction",
    "normalize_direction",
    "filter_normalized_direction",
    "orthogonalize",
    "interpolation_direction",
    "PCADirections",
    "pca_directions",
    "HessianDirections",
    "hessian_directions",
    "MLPLoss",
    "mlp_loss",
    "ModelLoss",
    "model_loss",
    "Members",
    "members",
    "sweep_1d",
    "sweep_2d",
    "default_vmap_width",
    "GRID_FILE",
    "META_FILE",
]

PyTree = Any
Values = np.ndarray | dict[str, np.ndarray]

NORMS = ("filter", "layer", "none")
"""The normalisations of :func:`normalize_direction`."""

FORMAT = "gdjax.sweep"
FORMAT_VERSION = 1
GRID_FILE = "grid.npz"
"""The values, ``done`` mask, grid and config of a resumable sweep (the source of truth)."""
META_FILE = "sweep.json"
"""Human-readable config and call log of a resumable sweep."""

MAX_VMAP_WIDTH = 16
CHUNK_BLOCKS = 8  # default chunk: this many blocks of vmap_width points per device
# Bytes per device when the backend reports no memory stats (CPU). Not a memory limit but a
# speed one: on a 2-core CPU, [784, 512, 512, 10] on 2048 examples ran 1.2-1.8x faster in
# blocks of 2-4 points than of 16 (benchmarks/run.py, sweeps), which this budget gives.
CPU_MEMORY_BUDGET = 1 << 28


# ---------------------------------------------------------------- checks


def _paths(tree: PyTree) -> list[tuple[str, Any]]:
    return [
        (jax.tree_util.keystr(p), leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]


def _check_like(name: str, tree: PyTree, like: PyTree, like_name: str = "params") -> None:
    """Raise ValueError unless ``tree`` has the structure and leaf shapes of ``like``."""
    got, want = _paths(tree), _paths(like)
    got_paths, want_paths = [p for p, _ in got], [p for p, _ in want]
    if jax.tree.structure(tree) != jax.tree.structure(like) or got_paths != want_paths:
        missing = [p for p in want_paths if p not in got_paths]
        extra = [p for p in got_paths if p not in want_paths]
        detail = (
            f"missing leaves {missing[:3]}" * bool(missing)
            + ("; " if missing and extra else "")
            + f"unexpected leaves {extra[:3]}" * bool(extra)
        ) or f"a different container structure: {jax.tree.structure(tree)}"
        raise ValueError(
            f"{name}: expected a pytree with the structure of {like_name} "
            f"({len(want_paths)} leaves like {want_paths[:2]}), got {detail}."
        )
    for (path, leaf), (_, ref) in zip(got, want, strict=True):
        if np.shape(leaf) != np.shape(ref):
            raise ValueError(
                f"{name}{path}: expected shape {np.shape(ref)} like {like_name}{path}, "
                f"got {np.shape(leaf)}."
            )
    _check_params(name, tree)


def _check_params(name: str, params: PyTree) -> None:
    leaves = _paths(params)
    if not leaves:
        raise ValueError(f"{name}: expected a pytree of floating arrays, got no leaves.")
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"{name}{path}: expected a floating array, got "
                f"{dtype if dtype is not None else type(leaf).__name__}."
            )
        check_finite(f"{name}{path}", leaf)


def _check_axis(name: str, values) -> np.ndarray:
    """A grid axis: 1-D, at least 2 finite, strictly increasing values."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: expected a 1-D sequence of numbers, got {type(values).__name__}."
        ) from None
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(
            f"{name}: expected a 1-D array of at least 2 grid values (e.g. "
            f"np.linspace(-1, 1, 51)), got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite values, got {arr[~np.isfinite(arr)][:3]}.")
    if not np.all(np.diff(arr) > 0):
        raise ValueError(
            f"{name}: expected strictly increasing values (a non-empty range), got "
            f"{arr[:5].tolist()}{' …' if arr.size > 5 else ''}."
        )
    return arr


_HOST_BYTES_PER_POINT_AXIS = 24  # float64 coefficients: the meshgrid, the stacked copy, a block
_HOST_BYTES_PER_POINT = 8 + 8 + 1  # a float64 value, a pending index, the done flag


def _check_grid_memory(axes: list[np.ndarray]) -> None:
    """Refuse a grid whose host arrays alone would not fit in this machine's memory."""
    n_points = math.prod(a.size for a in axes)
    need = n_points * (_HOST_BYTES_PER_POINT + _HOST_BYTES_PER_POINT_AXIS * len(axes))
    have = host_memory()
    if have is not None and need > have:
        names = ", ".join(("alphas", "betas")[: len(axes)])
        sizes = " × ".join(f"{a.size:,}" for a in axes)
        raise ValueError(
            f"{names}: expected a grid whose coefficients, values and done mask fit in host "
            f"memory, got {sizes} = {n_points:,} points, which need about {need / 1e9:,.1f} GB "
            f"(this machine has {have / 1e9:,.1f} GB). Use fewer grid values."
        )


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {', '.join(map(repr, NORMS))}, got {norm!r}.")


# ---------------------------------------------------------------- directions


def random_direction(key: jax.Array, params: PyTree) -> PyTree:
    """A Gaussian direction shaped like ``params``: every entry ``d_i ~ N(0, 1)``.

    Each leaf gets its own subkey of ``key`` and the dtype of the matching leaf.

    Args:
      key: a ``jax.random`` key.
      params: the params the direction is for (only shapes and dtypes are read).

    Returns:
      A pytree with the structure, shapes and dtypes of ``params``.

    Examples:
      >>> from gdjax import MLP
      >>> params = MLP((2, 3, 1)).init(jax.random.key(0))
      >>> d = random_direction(jax.random.key(1), params)
      >>> jax.tree.map(jnp.shape, d) == jax.tree.map(jnp.shape, params)
      True
    """
    _check_params("params", params)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            jax.random.normal(k, jnp.shape(p), jnp.result_type(p))
            for k, p in zip(keys, leaves, strict=True)
        ],
    )


def _scaled(d: jax.Array, target_norm: jax.Array, norm: jax.Array) -> jax.Array:
    """``d · target_norm / norm``, and 0 where ``norm`` is 0 (then d is 0 too)."""
    safe = jnp.where(norm > 0, norm, 1)
    return d * jnp.where(norm > 0, target_norm / safe, 0)


def _row_norms(a: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.reshape(a, (a.shape[0], -1)) ** 2, axis=1))


OUT_AXES = {"torch": 0, "gdjax": 0, "flax": -1}
"""Presets of ``out_axis``: gdjax, PyTorch and Equinox store weights ``(out, in, ...)``
(axis 0); Flax stores Dense kernels ``(in, out)`` and conv kernels ``(..., in, out)`` (axis −1)."""


def _check_out_axis(out_axis) -> int:
    if isinstance(out_axis, str):
        if out_axis not in OUT_AXES:
            raise ValueError(
                f"out_axis: expected an integer axis or one of {', '.join(map(repr, OUT_AXES))}, "
                f"got {out_axis!r}."
            )
        return OUT_AXES[out_axis]
    if isinstance(out_axis, bool) or not isinstance(out_axis, int | np.integer):
        raise ValueError(
            f"out_axis: expected an integer axis or one of {', '.join(map(repr, OUT_AXES))}, "
            f"got {out_axis!r}."
        )
    return int(out_axis)


def _normalize_leaf(d, p, norm: str, include_bias: bool, out_axis: int = 0):
    d, p = jnp.asarray(d), jnp.asarray(p)
    if d.ndim <= 1 and not include_bias:
        return jnp.zeros_like(d)
    if norm == "none":
        return d
    if norm == "filter" and d.ndim >= 2:  # filters = slices along the output axis
        if not -d.ndim <= out_axis < d.ndim:
            raise ValueError(
                f"out_axis: expected an axis of every weight leaf, got {out_axis} for a leaf "
                f"of shape {d.shape}."
            )
        d_front, p_front = jnp.moveaxis(d, out_axis, 0), jnp.moveaxis(p, out_axis, 0)
        scale_shape = (d_front.shape[0],) + (1,) * (d.ndim - 1)
        scaled = _scaled(
            d_front,
            jnp.reshape(_row_norms(p_front), scale_shape),
            jnp.reshape(_row_norms(d_front), scale_shape),
        )
        return jnp.moveaxis(scaled, 0, out_axis)
    # layer norm, or a lone 1-D leaf under filter norm: the whole leaf is one filter
    return _scaled(d, jnp.linalg.norm(p), jnp.linalg.norm(d))


def _is_layer(p) -> bool:
    if not (isinstance(p, dict) and "w" in p and "b" in p):
        return False
    w, b = np.shape(p["w"]), np.shape(p["b"])
    return len(w) >= 2 and len(b) == 1 and b[0] == w[0]


def _normalize_node(d, p, norm: str, include_bias: bool, out_axis: int = 0):
    if norm == "filter" and include_bias and out_axis == 0 and _is_layer(p):
        # filter i = the neuron's incoming params (w_i, b_i): the row of [w | b]
        dw, db = jnp.asarray(d["w"]), jnp.asarray(d["b"])
        pw, pb = jnp.asarray(p["w"]), jnp.asarray(p["b"])
        target = jnp.sqrt(_row_norms(pw) ** 2 + pb**2)
        current = jnp.sqrt(_row_norms(dw) ** 2 + db**2)
        rows = (-1,) + (1,) * (dw.ndim - 1)  # broadcast a per-neuron scale over w's row
        out = {
            k: _normalize_node(d[k], p[k], norm, include_bias, out_axis)
            for k in p
            if k not in ("w", "b")
        }
        out["w"] = _scaled(dw, jnp.reshape(target, rows), jnp.reshape(current, rows))
        out["b"] = _scaled(db, target, current)
        return {k: out[k] for k in p}
    if isinstance(p, dict):
        return {k: _normalize_node(d[k], p[k], norm, include_bias, out_axis) for k in p}
    if type(p) in (list, tuple):
        return type(p)(
            _normalize_node(di, pi, norm, include_bias, out_axis)
            for di, pi in zip(d, p, strict=True)
        )
    return jax.tree.map(lambda di, pi: _normalize_leaf(di, pi, norm, include_bias, out_axis), d, p)


def normalize_direction(
    direction: PyTree,
    params: PyTree,
    *,
    norm: str = "filter",
    include_bias: bool = False,
    out_axis: int | str = 0,
) -> PyTree:
    """Rescale a direction to the scale of ``params``, filter by filter (Li et al. 2018).

    For an MLP a *filter* is one neuron's incoming weights, the row ``w^l_i``
    of ``w^l``. Filter normalisation rescales every row of the direction:

    .. math::

        d^l_i \\leftarrow \\frac{d^l_i}{\\lVert d^l_i \\rVert}\\,\\lVert w^l_i \\rVert

    so a step α along d changes every neuron by the same *relative* amount,
    whatever the scale of its weights (ReLU networks are invariant to
    rescaling a neuron's weights, so unnormalised plots of two networks cannot
    be compared).

    - ``norm="filter"``: as above; leaves with ≥ 2 dims are cut into filters
      along their output axis ``out_axis``: 0 for gdjax, PyTorch and Equinox
      (``w`` is ``(n_out, n_in)``: rows; a conv kernel ``(out, in, k…)``: one
      filter per output channel), −1 for Flax (Dense kernels ``(in, out)``,
      conv kernels ``(k…, in, out)``); presets :data:`OUT_AXES`.
    - ``norm="layer"``: each leaf as a whole: ``d ← d ‖θ‖ / ‖d‖``.
    - ``norm="none"``: the direction unchanged.

    Biases (every leaf with ≤ 1 dim) get a zero direction unless
    ``include_bias=True`` (the reference code's default too: its
    ``ignore='biasbn'``). With ``include_bias=True`` and ``norm="filter"``,
    the bias joins its neuron's filter: in a layer ``{"w", "b"}`` the filter of
    neuron i is the row ``[w_i, b_i]`` of the augmented matrix ``[w | b]``,
    rescaled as a whole to the norm of ``[θ_w_i, θ_b_i]``. (Li et al.'s code
    instead sets the direction of a 1-D parameter to the parameter itself.) A
    1-D leaf that is not the bias of a layer is rescaled as a whole, as with
    ``norm="layer"``. A filter of θ with norm 0 gives a zero direction row.

    Args:
      direction: a pytree shaped like ``params``, e.g. from :func:`random_direction`.
      params: θ, the point the landscape is centred on.
      norm: one of :data:`NORMS`.
      include_bias: keep (and normalise) the bias directions instead of zeroing them.
      out_axis: the output axis of every leaf with ≥ 2 dims, an int or a preset
        of :data:`OUT_AXES` (``"torch"``/``"gdjax"``: 0, ``"flax"``: −1). A bias
        joins its neuron's filter (``include_bias``) in the ``{"w", "b"}``
        layout with ``out_axis=0`` only; elsewhere 1-D leaves are zeroed, or
        rescaled as a whole with ``include_bias``.

    Returns:
      The normalised direction, a pytree shaped like ``params``.

    Examples:
      >>> params = [{"w": jnp.array([[3.0, 4.0], [0.0, 1.0]]), "b": jnp.ones(2)}]
      >>> d = normalize_direction([{"w": jnp.ones((2, 2)), "b": jnp.ones(2)}], params)
      >>> jnp.linalg.norm(d[0]["w"], axis=1).round(4).tolist(), d[0]["b"].tolist()
      ([5.0, 1.0], [0.0, 0.0])

    References:
      Li, Xu, Taylor, Studer & Goldstein (2018), "Visualizing the Loss
      Landscape of Neural Nets", NeurIPS, §4 (filter-wise normalisation).
    """
    _check_norm(norm)
    out_axis = _check_out_axis(out_axis)
    _check_params("params", params)
    _check_like("direction", direction, params)
    return _normalize_node(direction, params, norm, bool(include_bias), out_axis)


def filter_normalized_direction(
    key: jax.Array,
    params: PyTree,
    *,
    norm: str = "filter",
    include_bias: bool = False,
    out_axis: int | str = 0,
) -> PyTree:
    """A random direction, normalised: ``normalize_direction(random_direction(key, θ), θ)``.

    The default direction of a landscape plot (Li et al. 2018): Gaussian,
    filter-normalised, zero on the biases.

    Args:
      key: a ``jax.random`` key.
      params: θ.
      norm: one of :data:`NORMS` (default ``"filter"``).
      include_bias: see :func:`normalize_direction`.
      out_axis: the output axis of weight leaves, see :func:`normalize_direction`.

    Returns:
      A pytree shaped like ``params``.

    Examples:
      >>> from gdjax import MLP
      >>> params = MLP((2, 3, 1)).init(jax.random.key(0))
      >>> d = filter_normalized_direction(jax.random.key(1), params)
      >>> bool(jnp.allclose(jnp.linalg.norm(d[0]["w"], axis=1),
      ...                   jnp.linalg.norm(params[0]["w"], axis=1)))
      True

    References:
      Li et al. (2018), "Visualizing the Loss Landscape of Neural Nets".
    """
    _check_norm(norm)
    out_axis = _check_out_axis(out_axis)
    return normalize_direction(
        random_direction(key, params),
        params,
        norm=norm,
        include_bias=include_bias,
        out_axis=out_axis,
    )


def _flat(tree: PyTree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def orthogonalize(d1: PyTree, d2: PyTree) -> tuple[PyTree, PyTree, float]:
    """Make ``d2`` orthogonal to ``d1`` (one Gram–Schmidt step on the flattened vectors).

    .. math::

        \\cos = \\frac{⟨d_1, d_2⟩}{\\lVert d_1 \\rVert \\lVert d_2 \\rVert},\\qquad
        d_2' = \\frac{\\lVert d_2 \\rVert}{\\lVert u \\rVert}\\, u,\\quad
        u = d_2 - \\frac{⟨d_1, d_2⟩}{⟨d_1, d_1⟩} d_1

    ``d2'`` keeps the overall norm of ``d2``; its filter norms change by a
    factor of order ``1 ± |cos|`` (random directions in n dimensions have
    ``|cos| ≈ 1/√n``), so normalise first, then orthogonalise.

    Args:
      d1: the first direction (returned unchanged).
      d2: the second direction, with the structure and shapes of ``d1``.

    Returns:
      ``(d1, d2', cos)`` where ``cos`` (a float) is the cosine between ``d1``
      and the *original* ``d2``.

    Examples:
      >>> d1, d2 = [jnp.array([1.0, 0.0])], [jnp.array([1.0, 1.0])]
      >>> _, d2o, cos = orthogonalize(d1, d2)
      >>> [round(float(v), 4) for v in d2o[0]], round(cos, 4)
      ([0.0, 1.4142], 0.7071)
    """
    _check_params("d1", d1)
    _check_like("d2", d2, d1, "d1")
    v1, v2 = _flat(d1), _flat(d2)
    n1, n2 = jnp.linalg.norm(v1), jnp.linalg.norm(v2)
    if float(n1) == 0 or float(n2) == 0:
        raise ValueError(
            f"{'d1' if float(n1) == 0 else 'd2'}: expected a non-zero direction, got norm 0."
        )
    cos = float(jnp.dot(v1, v2) / (n1 * n2))
    coef = jnp.dot(v1, v2) / jnp.dot(v1, v1)
    u = jax.tree.map(lambda a, b: b - coef.astype(b.dtype) * a, d1, d2)
    nu = jnp.linalg.norm(_flat(u))
    if float(nu) <= 1e-6 * float(n2):
        raise ValueError(
            f"d2: expected a direction not parallel to d1, got cosine {cos:.6f} with d1."
        )
    scale = n2 / nu
    return d1, jax.tree.map(lambda x: x * scale.astype(x.dtype), u), cos


def interpolation_direction(params_a: PyTree, params_b: PyTree) -> PyTree:
    """The direction from θ_a to θ_b: ``d = θ_b − θ_a``.

    Sweeping ``f(θ_a + α d)`` over α ∈ [0, 1] (and beyond) gives the loss on
    the line between two parameter sets, e.g. initialisation → trained
    (Goodfellow et al. 2015) or two solutions; α = 0 is θ_a, α = 1 is θ_b.

    Args:
      params_a: θ_a.
      params_b: θ_b, with the structure and shapes of ``params_a``.

    Returns:
      ``θ_b − θ_a``, a pytree shaped like the params.

    Examples:
      >>> interpolation_direction([jnp.array([1.0, 2.0])], [jnp.array([2.0, 0.0])])[0].tolist()
      [1.0, -2.0]

    References:
      Goodfellow, Vinyals & Saxe (2015), "Qualitatively characterizing neural
      network optimization problems", ICLR.
    """
    _check_params("params_a", params_a)
    _check_like("params_b", params_b, params_a, "params_a")
    return jax.tree.map(lambda a, b: jnp.asarray(b) - jnp.asarray(a), params_a, params_b)


class PCADirections(NamedTuple):
    """What :func:`pca_directions` returns.

    Attributes:
      directions: ``k`` unit-norm directions (flattened norm 1), each shaped
        like the params, in order of decreasing explained variance.
      coords: ``(T, k)`` float64: ``coords[t, j] = ⟨θ_t − θ_T, u_j⟩``, the
        trajectory in the plane of the directions (the last row is 0).
      explained_variance_ratio: ``(k,)`` float64: the fraction of the variance
        of the rows of ``M`` along each direction.
    """

    directions: list[PyTree]
    coords: np.ndarray
    explained_variance_ratio: np.ndarray


def pca_directions(trajectory: Sequence[PyTree], k: int = 2) -> PCADirections:
    """Directions that best show a training trajectory (Li et al. 2018, §7).

    With θ_1 … θ_T the recorded params (θ_T the final ones), the rows of

    .. math::

        M = [θ_1 − θ_T;\\ …;\\ θ_{T-1} − θ_T]

    are centred (as scikit-learn's PCA, used by the reference code, does) and
    the top ``k`` right singular vectors ``u_j`` of the centred matrix are the
    directions. The sign of each is fixed so that its largest-magnitude entry
    is positive. A landscape through θ_T along u_1, u_2 contains the
    projected trajectory; the trajectory itself is generally *not* on that
    surface, so plot the loss recorded at θ_t beside its projection.

    Computed on the host in float64 (the matrix is ``(T−1) × n_params``).

    Args:
      trajectory: ``T ≥ k + 2`` params pytrees of the same structure, in order.
      k: the number of directions.

    Returns:
      A :class:`PCADirections`.

    Examples:
      >>> traj = [[jnp.array([t, 0.5 * t, 0.0])] for t in (3.0, 2.0, 1.0, 0.0)]
      >>> res = pca_directions(traj, k=1)
      >>> res.coords[:, 0].round(3).tolist(), res.explained_variance_ratio.round(3).tolist()
      ([3.354, 2.236, 1.118, 0.0], [1.0])

    References:
      Li et al. (2018), "Visualizing the Loss Landscape of Neural Nets", §7.
    """
    k = check_positive_int("k", k)
    if isinstance(trajectory, str | bytes) or not isinstance(trajectory, Sequence):
        raise ValueError(
            f"trajectory: expected a list of params pytrees, got {type(trajectory).__name__}."
        )
    if len(trajectory) < k + 2:
        raise ValueError(
            f"trajectory: expected at least k + 2 = {k + 2} recorded params for k = {k} "
            f"directions (the centred differences from the final params have rank ≤ T − 2), "
            f"got {len(trajectory)}."
        )
    final = trajectory[-1]
    _check_params("trajectory[-1]", final)
    for t, p in enumerate(trajectory[:-1]):
        _check_like(f"trajectory[{t}]", p, final, "trajectory[-1]")
    rows = np.stack(  # on the host, in float64: nothing to compile
        [
            np.concatenate(
                [np.ravel(np.asarray(jax.device_get(x), np.float64)) for x in jax.tree.leaves(p)]
            )
            for p in trajectory
        ]
    )
    if k > rows.shape[1]:
        raise ValueError(f"k: expected at most {rows.shape[1]} (the number of params), got {k}.")
    rel = rows - rows[-1]
    m = rel[:-1]
    if not np.any(rel):
        raise ValueError(
            f"trajectory: expected params that change during training, got {len(trajectory)} "
            f"recorded params all equal to the final ones: the trajectory never moved, so it "
            f"has no directions to show (was the learning rate 0, or the same params recorded "
            f"each time?)."
        )
    if not np.any(m - m.mean(axis=0)):
        raise ValueError(
            f"trajectory: expected recorded params that differ from one another, got "
            f"{len(trajectory) - 1} records before the final one that are all equal: their "
            f"centred differences are 0, so PCA has no directions to show. Record the params "
            f"more often (e.g. fit's callback_every)."
        )
    _, s, vt = np.linalg.svd(m - m.mean(axis=0), full_matrices=False)
    vt = vt[:k]
    signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    total = float(np.sum(s**2))
    ratio = s[:k] ** 2 / total if total > 0 else np.zeros(k)
    ratio = np.concatenate([ratio, np.zeros(k - ratio.size)])

    leaves, treedef = jax.tree.flatten(final)
    sizes = [int(np.size(x)) for x in leaves]
    splits = np.cumsum(sizes)[:-1]
    directions = []
    for u in vt:
        parts = np.split(u, splits)
        directions.append(
            jax.tree.unflatten(
                treedef,
                [
                    jnp.asarray(part.reshape(np.shape(x)), dtype=jnp.result_type(x))
                    for part, x in zip(parts, leaves, strict=True)
                ],
            )
        )
    return PCADirections(directions, rel @ vt.T, ratio)


class HessianDirections(NamedTuple):
    """What :func:`hessian_directions` returns.

    Attributes:
      directions: k params-shaped pytrees ``v_i`` of unit norm (flattened),
        ``H v_i ≈ λ_i v_i``, each with its largest-magnitude entry positive.
      eigenvalues: ``(k,)`` numpy array ``λ_1 ≥ … ≥ λ_k``.
      converged: whether every pair met the tolerance of
        :func:`gdjax.curvature.top_eigenvalues`.
      hvps: the number of Hessian-vector products it took.
    """

    directions: list[PyTree]
    eigenvalues: np.ndarray
    converged: bool
    hvps: int


def hessian_directions(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    k: int = 2,
    key: jax.Array,
    **lanczos_kw: Any,
) -> HessianDirections:
    """The top-k eigenvectors of the Hessian ``H = ∇²f(θ)`` as sweep directions.

    .. math::

        H v_i = λ_i v_i,\\quad \\lVert v_i \\rVert = 1,\\quad λ_1 ≥ … ≥ λ_k

    found with Hessian-vector products only, by
    :func:`gdjax.curvature.top_eigenvalues` (Lanczos by default). Along
    ``v_1`` the landscape is the most curved: ``f(θ + α v_1) = f(θ) + α ∇f·v_1
    + ½ λ_1 α² + O(α³)``, so a 1-D sweep is locally a parabola of curvature
    λ_1. The directions are left at unit Euclidean norm (filter normalisation
    would make them stop being eigenvectors); each has its sign fixed so that
    its largest-magnitude entry is positive.

    Args:
      f: scalar function ``f(params, *args)``, e.g. ``gdjax.objective(model, loss)``.
      params: θ.
      *args: further arguments of ``f`` (e.g. ``x, y``).
      k: how many directions (default 2: a plane for :func:`sweep_2d`).
      key: PRNG key of the Lanczos start vector.
      **lanczos_kw: passed on to :func:`gdjax.curvature.top_eigenvalues`
        (``method``, ``which``, ``max_iters``, ``tol``, ``init``, and
        ``data_chunk``: Hessian-vector products over chunks of the data).

    Returns:
      A :class:`HessianDirections` ``(directions, eigenvalues, converged, hvps)``.

    Examples:
      >>> f = lambda p: 0.5 * (3.0 * p[0] ** 2 + 2.0 * p[1] ** 2 + p[2] ** 2)
      >>> hd = hessian_directions(f, jnp.zeros(3), k=2, key=jax.random.key(0))
      >>> hd.eigenvalues.round(6).tolist(), abs(hd.directions[0]).round(6).tolist()
      ([3.0, 2.0], [1.0, 0.0, 0.0])

    References:
      Li et al. (2018), "Visualizing the Loss Landscape of Neural Nets", §6
      (curvature); Yao et al. (2020), "PyHessian".
    """
    eig = curvature.top_eigenvalues(f, params, k, *args, key=key, **lanczos_kw)
    directions = []
    for v in eig.eigenvectors:
        flat = _flat(v)
        sign = jnp.where(flat[jnp.argmax(jnp.abs(flat))] < 0, -1, 1)
        directions.append(jax.tree.map(lambda x, s=sign: x * s.astype(x.dtype), v))
    return HessianDirections(
        directions, np.asarray(eig.eigenvalues), bool(eig.converged), int(eig.hvps)
    )


# ---------------------------------------------------------------- sweepable losses


def _head(loss: Loss, accuracy: bool, pred: jax.Array, y: jax.Array):
    """C of the output ``pred``, and with ``accuracy`` the accuracy when the loss classifies."""
    value = loss.fn(pred, y)
    if not accuracy:
        return value
    acc = _accuracy(loss, pred, y)
    return {"loss": value} if acc is None else {"loss": value, "accuracy": acc}


@dataclasses.dataclass(frozen=True)
class ModelLoss:
    """The cost of any model ``apply(params, x)`` as a sweepable function ``f(params, x, y)``.

    Called, it is

    .. math::

        f(θ, x, y) = C(\\mathrm{apply}(θ, x), y)

    a mean over the examples (rows of ``x``), and with ``accuracy=True`` and a
    classification loss ``{"loss": C, "accuracy": …}`` as
    :func:`gdjax.train.evaluate`. Frozen and hashable (by the identity of the
    user's ``apply`` and loss function), so sweeps reuse their compiled
    programs while the same functions are passed. Build it with
    :func:`model_loss`.

    Attributes:
      model: the user's ``apply``, as a :class:`gdjax.models.ApplyModel`.
      loss: a :class:`~gdjax.losses.Loss` (a user's function is wrapped by
        :func:`gdjax.models.as_loss`).
      accuracy: also return the accuracy (classification losses only).
    """

    model: ApplyModel
    loss: Loss
    accuracy: bool = False

    def __call__(self, params, x, y):
        check_model_batch(self.model, self.loss, params, x, y, finite_params=False)
        return self.head(self.model.apply(params, x), y)

    def head(self, pred: jax.Array, y: jax.Array):
        """C (and the accuracy, when asked and the loss classifies) of the output ``pred``."""
        return _head(self.loss, self.accuracy, pred, y)


@dataclasses.dataclass(frozen=True)
class MLPLoss:
    """The cost of an MLP as a sweepable function, ``f(params, x, y)``, with known structure.

    Called, it is ``C(a^L(x; params), y)`` (with ``accuracy=True``:
    ``{"loss": C, "accuracy": …}`` as :func:`gdjax.train.evaluate`). Passed to
    :func:`sweep_1d` / :func:`sweep_2d`, it lets the sweep use that the
    first layer's pre-activation is linear in the params along the plane:

    .. math::

        z^1(α, β) = x (w^1 + α D_1 + β D_2)^T + b^1(α, β)
                  = x (w^1)^T + α\\, x D_1^T + β\\, x D_2^T + b^1(α, β)

    The three products ``x (w^1)ᵀ, x D_1ᵀ, x D_2ᵀ`` are computed once per
    sweep (for all n examples: ``3 × n × n_1`` numbers, kept on every device
    beside the data); each point then costs three scaled additions for layer 1
    instead of an ``(examples × n_0 × n_1)`` product, and the layers after the
    first as before. With ``data_chunk`` the products are split into chunks
    of examples with ``y``. Build it with :func:`mlp_loss` or :func:`model_loss`.
    """

    model: MLP
    loss: Loss
    accuracy: bool = False

    def __call__(self, params, x, y):
        check_batch(self.model, self.loss, params, x, y)
        return self.head(self.model.apply(params, x), y)

    def head(self, pred: jax.Array, y: jax.Array):
        """C (and the accuracy, when asked and the loss classifies) of the output ``pred``."""
        return _head(self.loss, self.accuracy, pred, y)


def mlp_loss(model: MLP, loss: str | Loss, *, accuracy: bool = False) -> MLPLoss:
    """``f(params, x, y)``: the cost of ``model`` under ``loss``, which sweeps evaluate faster.

    Equal (to float rounding) to ``gdjax.objective(model, loss)``, or with
    ``accuracy=True`` to ``functools.partial(gdjax.train.evaluate, model,
    loss)``; see :class:`MLPLoss` for what a sweep does with it. ``x`` must be
    the first argument after the params. For a model that is not a
    ``gdjax.MLP``, see :func:`model_loss`.

    Examples:
      >>> from gdjax import MLP
      >>> model = MLP((2, 3, 1), activation="tanh")
      >>> f = mlp_loss(model, "mse")
      >>> params = model.init(jax.random.key(0))
      >>> float(f(params, jnp.zeros((4, 2)), jnp.ones((4, 1)))) >= 0
      True
    """
    if not isinstance(model, MLP):
        raise ValueError(
            f"model: expected a gdjax.MLP, got {type(model).__name__}. For any "
            f"apply(params, x), use landscape.model_loss."
        )
    return MLPLoss(model, losses.get(loss), bool(accuracy))


def model_loss(model: Any, loss: Any, *, accuracy: bool = False) -> MLPLoss | ModelLoss:
    """``f(params, x, y) = C(apply(params, x), y)`` for any model and loss, ready to sweep.

    .. math::

        f(θ, x, y) = C(\\mathrm{apply}(θ, x), y),\\qquad
        \\mathrm{accuracy}(θ) = \\frac{1}{n} \\sum_x
            [\\arg\\max_k \\mathrm{apply}(θ, x)_k = y(x)]

    (the accuracy for softmax cross-entropy; for sigmoid binary cross-entropy
    the fraction of output units with ``(z > 0) = (y > ½)``, as
    :func:`gdjax.metrics.accuracy`).

    - A ``gdjax.MLP`` gives an :class:`MLPLoss`, equal to :func:`mlp_loss`
      (the first-layer fast path of the sweeps).
    - Any function ``apply(params, x) -> output`` over a params pytree (a
      plain-JAX conv net, an Equinox or Flax module split into params and a
      function: see :mod:`gdjax.models`) gives a :class:`ModelLoss`, equal to
      :func:`gdjax.objective` (and with ``accuracy=True`` to
      :func:`gdjax.train.evaluate`).

    The loss is a gdjax loss (object or name: ``"mse"``,
    ``"softmax_cross_entropy"``, ``"sigmoid_binary_cross_entropy"``) or any
    function ``loss(output, y) -> scalar``, a mean over the batch. With
    ``accuracy=True`` ``f`` returns ``{"loss": C, "accuracy": …}`` when the
    loss classifies (the two cross-entropies), ``{"loss": C}`` otherwise. The
    result is hashable: pass the same ``apply`` and loss function objects and
    sweeps reuse their compiled programs. x, y are checked on every call (from
    shapes only; nothing compiles).

    Args:
      model: a ``gdjax.MLP`` or a function ``apply(params, x)``.
      loss: a gdjax :class:`~gdjax.losses.Loss`, its name, or ``loss(output, y)``.
      accuracy: also return the accuracy (classification losses).

    Returns:
      ``f(params, x, y)``: an :class:`MLPLoss` or a :class:`ModelLoss`.

    Examples:
      >>> def apply(p, x):  # any model: here one hidden layer in plain JAX
      ...     return jnp.tanh(x @ p["w"]) @ p["v"]
      >>> params = {"w": jnp.ones((2, 3)), "v": jnp.ones((3, 2))}
      >>> f = model_loss(apply, "softmax_cross_entropy", accuracy=True)
      >>> out = f(params, jnp.ones((4, 2)), jnp.array([0, 1, 0, 1]))
      >>> round(float(out["loss"]), 4), float(out["accuracy"])  # equal logits: C = log 2
      (0.6931, 0.5)
      >>> d = random_direction(jax.random.key(0), params)
      >>> sweep_1d(f, params, d, [-1.0, 0.0, 1.0], jnp.ones((4, 2)), jnp.array([0, 1, 0, 1]),
      ...          data_chunk=3)["loss"].shape
      (3,)
    """
    model, loss = as_model(model), as_loss(loss)
    if isinstance(model, MLP):
        return mlp_loss(model, loss, accuracy=accuracy)
    return ModelLoss(model, loss, bool(accuracy))


# ---------------------------------------------------------------- the MLP fast path


@dataclasses.dataclass(frozen=True)
class Members:
    """``f`` of every member of a population, as one sweepable function.

    Called on params with a leading member axis of size ``size`` (as
    :func:`gdjax.train.fit_population` returns them) it is ``f`` under ``vmap``
    over the members, one value per member, named ``"member{i}"`` (``"{name}/member{i}"``
    for each entry of a dict-valued f)::

        g(Θ, *args) = {"member0": f(θ_0, *args), …, "member{P−1}": f(θ_{P−1}, *args)}

    Swept with directions that carry the member axis too, the point (α, β) is
    ``θ_i + α d1_i + β d2_i`` for every member i at once, so one sweep gives
    every member's landscape on its own plane; :meth:`stack` puts the member
    axis in front of the grids. Build it with :func:`members`.
    """

    f: Callable
    size: int

    def _names(self, name: str | None = None) -> list[str]:
        width = len(str(self.size - 1))  # zero-padded, so that sorted names keep member order
        prefix = "" if name is None else f"{name}/"
        return [f"{prefix}member{i:0{width}d}" for i in range(self.size)]

    def __call__(self, params, *args):
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            if shape_of(leaf)[:1] != (self.size,):
                raise ValueError(
                    f"params{jax.tree_util.keystr(path)}: expected a leading member axis of size "
                    f"{self.size} (the members' params stacked), got shape {shape_of(leaf)}."
                )
        out = jax.vmap(lambda p: self.f(p, *args))(params)
        if isinstance(out, Mapping):
            return {n: out[k][i] for k in out for i, n in enumerate(self._names(k))}
        return dict(zip(self._names(), out, strict=True))

    def stack(self, values: Mapping[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """A sweep's values of this function with the member axis in front: ``(P, *grid)``,
        or a dict of those for a dict-valued f."""
        names = sorted({k.rsplit("/", 1)[0] for k in values if "/" in k})
        if not names:
            return np.stack([values[n] for n in self._names()])
        return {k: np.stack([values[n] for n in self._names(k)]) for k in names}


def members(f: Callable, size: int) -> Members:
    """``f(params, *args)`` for every member of a population, to sweep all members at once.

    Args:
      f: a function of one member's params, e.g. ``gdjax.objective(model, "mse")``.
      size: P, the number of members (the leading axis of every params leaf).

    Returns:
      A :class:`Members` ``g``: ``sweep_2d(g, params, d1, d2, alphas, betas, x, y)``
      with params and directions carrying the member axis sweeps every member's
      plane in one call; ``g.stack(values)`` has shape ``(P, len(alphas), len(betas))``.

    Examples:
      >>> f = lambda p: jnp.sum(p ** 2)
      >>> g = members(f, 2)
      >>> values = sweep_1d(g, jnp.array([[0.0], [1.0]]), jnp.ones((2, 1)), [-1.0, 0.0, 1.0])
      >>> g.stack(values).tolist()
      [[1.0, 0.0, 1.0], [0.0, 1.0, 4.0]]
    """
    if not callable(f):
        raise ValueError(f"f: expected a function f(params, *args), got {type(f).__name__}.")
    return Members(f, check_positive_int("size", size))


@dataclasses.dataclass(frozen=True)
class _MLPAfterFirstProduct:
    """An :class:`MLPLoss` with ``x (w^1)ᵀ`` and ``x D_iᵀ`` given: ``g(params', products, y)``.

    ``params' = {"c": c, "b": b^1, "rest": [layer 2, …]}`` where the leaf ``c``
    is 0 in θ' and the unit vector e_i in direction i', so that a sweep's
    ``θ' + Σ_i c_i d_i'`` carries the point's coefficients c in ``c``.
    ``products`` is the tuple ``(x (w^1)ᵀ, x D_1ᵀ, …)``, each ``(examples, n_1)``,
    so that every data argument has its examples on axis 0 (``data_chunk``).
    """

    f: MLPLoss

    def __call__(self, params, products, y):
        c = params["c"]
        z = products[0]
        for i in range(c.shape[0]):
            z = z + c[i] * products[i + 1]
        z = z + params["b"]
        model = self.f.model
        a = model.activation_of(0).fn(z)
        for layer, p in enumerate(params["rest"], start=1):
            a = model.activation_of(layer).fn(a @ p["w"].T + p["b"])
        return self.f.head(a, y)


@jax.jit
def _first_products(x, w, dws):
    """``(x wᵀ, x D_1ᵀ, …)``: 1 + k arrays ``(examples, n_1)``, from one product."""
    x = jnp.asarray(x, w.dtype)
    n1 = w.shape[0]
    out = x @ jnp.concatenate([w, *dws]).T
    return tuple(out[:, i * n1 : (i + 1) * n1] for i in range(1 + len(dws)))


def _reduce_mlp(f: MLPLoss, params, dirs, args, *, abstract: bool = False):
    """The sweep of ``f`` as one of :class:`_MLPAfterFirstProduct`: same values, to rounding.

    With ``abstract`` the products are only shapes (``jax.eval_shape``): nothing runs.
    """
    x, y = args
    k = len(dirs)
    dtype = _coeff_dtype(params)
    w, dws = params[0]["w"], [d[0]["w"] for d in dirs]
    if abstract:
        products = jax.eval_shape(_first_products, x, w, dws)
    else:
        products = _first_products(x, w, dws)

    def reduced(tree, c):
        return {"c": c, "b": tree[0]["b"], "rest": list(tree[1:])}

    eye = np.eye(k, dtype=dtype)
    return (
        _MLPAfterFirstProduct(f),
        reduced(params, np.zeros(k, dtype)),
        [reduced(d, eye[i]) for i, d in enumerate(dirs)],
        (products, y),
    )


# ---------------------------------------------------------------- sweeps


def _memory_budget(device) -> int:
    """Bytes a sweep may use per device: a quarter of what is free, or 256 MiB on CPU."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = None
    if stats and "bytes_limit" in stats:
        return max(int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 4, 1 << 20)
    return CPU_MEMORY_BUDGET


def _jaxpr_bytes(jaxpr) -> int:
    """Sum of the sizes of every value a jaxpr defines (nested ones included): an upper bound."""
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = v.aval
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _jaxpr_bytes(inner)
    return total


def default_vmap_width(
    f: Callable, params: PyTree, *args, num_directions: int = 2, data_chunk: int | None = None
) -> int:
    """The default number of points evaluated together under ``vmap`` on one device.

    The memory of one point is estimated from the jaxpr of
    ``f(θ + α d1 + β d2, *args)`` (for an :class:`MLPLoss`, of what the fast
    path evaluates per point), with ``data_chunk``: on one chunk of
    ``data_chunk`` examples of every argument (what a point holds at a time),
    else on all of them: the sum of the sizes of all the values it defines (an
    upper bound, since most die early). The width is the largest power of two
    ``≤ 16`` whose points fit in a quarter of the free memory of the first
    device (256 MiB where the backend reports no memory, as on CPU: smaller
    blocks ran faster there, see :data:`CPU_MEMORY_BUDGET`). Tracing only:
    nothing runs or compiles.

    Examples:
      >>> default_vmap_width(lambda p: jnp.sum(p[0] ** 2), [jnp.ones(3)])
      16
    """
    num_directions = check_positive_int("num_directions", num_directions)
    data_chunk = check_data_chunk(data_chunk, args)
    if data_chunk is not None:  # one chunk's shapes: the rows a point holds at a time

        def rows(a):
            shape = shape_of(a)
            return jax.ShapeDtypeStruct((min(data_chunk, shape[0]), *shape[1:]), jnp.result_type(a))

        args = jax.tree.map(rows, args)
    dirs = [params] * num_directions
    if isinstance(f, MLPLoss):  # what a sweep evaluates per point: layers 2 … L
        f, params, dirs, args = _reduce_mlp(f, params, dirs, args, abstract=True)

    def point(c, params, dirs, args):
        return f(_displace(params, dirs, c), *args)

    coeff = jax.ShapeDtypeStruct((num_directions,), _coeff_dtype(params))
    jaxpr = jax.make_jaxpr(point)(coeff, params, dirs, args).jaxpr
    params_bytes = sum(
        np.size(x) * np.dtype(jnp.result_type(x)).itemsize for x in jax.tree.leaves(params)
    )
    per_point = max(_jaxpr_bytes(jaxpr) + params_bytes, 1)
    width = min(MAX_VMAP_WIDTH, max(_memory_budget(jax.devices()[0]) // per_point, 1))
    return 1 << (int(width).bit_length() - 1)


def _coeff_dtype(params: PyTree):
    return jnp.result_type(*jax.tree.leaves(params))


def _displace(params: PyTree, dirs: Sequence[PyTree], c: jax.Array) -> PyTree:
    """θ + Σ_i c_i d_i, leaf by leaf, in each leaf's dtype."""

    def leaf(p, *ds):
        step = c[0].astype(p.dtype) * ds[0]
        for i in range(1, len(ds)):
            step = step + c[i].astype(p.dtype) * ds[i]
        return p + step

    return jax.tree.map(leaf, params, *dirs)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _eval_chunk(f, mesh: Mesh, width: int, data_chunk: int | None, params, dirs, coeffs, args):
    """f at θ + Σ c_i d_i for each row c of ``coeffs``, sharded over "points", in blocks.

    With ``data_chunk`` each point is the mean of f over chunks of the data
    (:func:`gdjax._chunks.chunked_mean`): the ``vmap`` of a block runs the ``lax.scan`` over
    chunks with ``width`` points at a time, so a block holds ``width × data_chunk``
    examples' intermediates.
    """

    def local(params, dirs, coeffs, args):
        def point(c):
            theta = _displace(params, dirs, c)
            if data_chunk is None:
                return f(theta, *args)
            return chunked_mean(
                lambda chunk: f(theta, *chunk), args, data_chunk, varying=("points",), widen=True
            )

        blocks = jnp.reshape(coeffs, (-1, width, coeffs.shape[-1]))
        out = jax.lax.map(jax.vmap(point), blocks)
        return jax.tree.map(lambda o: jnp.reshape(o, (-1,)), out)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(), P("points"), P()),
        out_specs=P("points"),
    )(params, dirs, coeffs, args)


def _to_host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _output_spec(f: Callable, params: PyTree, args: tuple) -> dict[str, np.dtype] | np.dtype:
    """The names and dtypes of f's outputs (tracing only), checked to be floating scalars."""
    out = jax.eval_shape(f, params, *args)

    def check(name, s):
        if not (hasattr(s, "shape") and s.shape == () and jnp.issubdtype(s.dtype, jnp.floating)):
            got = f"shape {s.shape}, dtype {s.dtype}" if hasattr(s, "shape") else type(s).__name__
            raise ValueError(
                f"f: expected f(params, *args) to return a floating scalar or a dict of "
                f"them (e.g. {{'loss': …, 'accuracy': …}}), got {name}{got}."
            )
        return np.dtype(s.dtype)

    if isinstance(out, Mapping):
        if not out or not all(isinstance(k, str) for k in out):
            raise ValueError(
                f"f: expected a dict with string keys of floating scalars, got keys {list(out)}."
            )
        return {k: check(f"[{k!r}] ", out[k]) for k in sorted(out)}
    return check("", out)


def _sweep(
    f: Callable,
    params: PyTree,
    dirs: list[PyTree],
    axes: list[np.ndarray],
    args: tuple,
    *,
    kind: str,
    chunk_size: int | None,
    vmap_width: int | None,
    data_chunk: int | None,
    out: str | os.PathLike | None,
    max_chunks: int | None,
    progress: bool,
    callback: Callable[[int, int], None] | None,
) -> Values:
    # ---- checks: all before anything is compiled
    if not callable(f):
        raise ValueError(f"f: expected a function f(params, *args), got {type(f).__name__}.")
    _check_params("params", params)
    for i, d in enumerate(dirs):
        _check_like(f"d{i + 1}" if len(dirs) > 1 else "direction", d, params)
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    if vmap_width is not None:
        vmap_width = check_positive_int("vmap_width", vmap_width)
    if max_chunks is not None:
        max_chunks = check_positive_int("max_chunks", max_chunks)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback: expected a function, got {type(callback).__name__}.")
    if isinstance(f, MLPLoss | ModelLoss) and len(args) != 2:
        raise ValueError(
            f"args: an {type(f).__name__} is called as f(params, x, y), so the sweep expected "
            f"the two arguments x, y after the grid, got {len(args)}."
        )
    data_chunk = check_data_chunk(data_chunk, args)
    check_finite_args(args)
    out_dir = None if out is None else check_run_dir(out, "out")
    if isinstance(f, MLPLoss):  # labels against the output width, as calling f would
        check_batch(f.model, f.loss, params, *args)
    elif isinstance(f, ModelLoss):
        check_model_batch(f.model, f.loss, params, *args, finite_params=False)
    _check_grid_memory(axes)
    spec = _output_spec(f, params, args)
    names = list(spec) if isinstance(spec, dict) else [None]
    dtypes = spec if isinstance(spec, dict) else {None: spec}

    shape = tuple(a.size for a in axes)
    n_points = math.prod(shape)
    config = {
        "kind": kind,
        "shape": list(shape),
        "grid": _hash([np.asarray(a) for a in axes]),
        "params": _hash(params),
        "directions": _hash(dirs),
        "args": _hash(list(args)),
        "f": (
            repr(f)
            if isinstance(f, MLPLoss | ModelLoss)
            else getattr(f, "__qualname__", type(f).__name__)
        ),
        "outputs": {str(k): np.dtype(v).name for k, v in dtypes.items()},
        "vmap_width": vmap_width,
        "data_chunk": data_chunk,
    }

    # ---- resume: the stored state, if any (the directory locked while this process writes it)
    writer = out_dir is not None and jax.process_index() == 0
    held = _lock(out_dir, name="out") if writer else None
    try:
        return _run_sweep(
            f, params, dirs, axes, args, config, names, dtypes, shape, n_points, out_dir,
            writer, kind=kind, chunk_size=chunk_size, vmap_width=vmap_width,
            data_chunk=data_chunk, max_chunks=max_chunks, progress=progress, callback=callback,
        )  # fmt: skip
    finally:
        if held is not None:
            held.release()


def _run_sweep(
    f, params, dirs, axes, args, config, names, dtypes, shape, n_points, out_dir, writer, *,
    kind, chunk_size, vmap_width, data_chunk, max_chunks, progress, callback,
) -> Values:  # fmt: skip
    """The sweep after its checks (see :func:`_sweep`)."""
    values = {name: np.full(n_points, np.nan, dtypes[name]) for name in names}
    done = np.zeros(n_points, bool)
    calls: list[dict[str, Any]] = []
    if out_dir is not None and (out_dir / GRID_FILE).is_file():
        stored, done, values, stored_calls = _load_state(out_dir, names)
        if vmap_width is None:
            config["vmap_width"] = stored.get("vmap_width")
        diff = [
            k if k not in ("vmap_width", "data_chunk") else f"{k}: {stored.get(k)} → {config[k]}"
            for k in config
            if stored.get(k) != config[k]
        ]
        if diff:
            raise ValueError(
                f"out: expected {out_dir} to hold this sweep, or none, got a different sweep "
                f"(differs in: {', '.join(diff)}). Use another directory, or delete "
                f"{out_dir / GRID_FILE} to start over."
            )
        calls = stored_calls
    if isinstance(f, MLPLoss):  # the same sweep, with x w^1ᵀ and x D_iᵀ computed once
        f, params, dirs, args = _reduce_mlp(f, params, dirs, args)
    if config["vmap_width"] is None:
        config["vmap_width"] = default_vmap_width(
            f, params, *args, num_directions=len(dirs), data_chunk=data_chunk
        )
    width = int(config["vmap_width"])

    devices = jax.devices()
    n_dev = len(devices)
    unit = width * n_dev
    if chunk_size is None:
        chunk_size = min(CHUNK_BLOCKS * unit, n_points)
    chunk = -(-chunk_size // unit) * unit  # round up: every device gets whole blocks

    grids = np.meshgrid(*axes, indexing="ij")
    coeffs_all = np.stack([g.ravel() for g in grids], axis=1)
    pending = np.flatnonzero(~done)
    chunks = [pending[i : i + chunk] for i in range(0, pending.size, chunk)]
    if max_chunks is not None:
        chunks = chunks[:max_chunks]

    call = {
        "points_computed": 0,
        "chunks": 0,
        "chunk_size": chunk,
        "devices": n_dev,
        "wall_s": 0.0,
    }
    calls.append(call)
    if writer:
        _remove_leftovers(out_dir)  # temporary files of a process killed while writing
        _save_state(out_dir, config, axes, done, values, calls, n_points)

    if chunks:
        mesh = Mesh(np.asarray(devices), ("points",))
        replicated = NamedSharding(mesh, P())
        by_point = NamedSharding(mesh, P("points"))
        dtype = np.dtype(_coeff_dtype(params))
        dev_params, dev_dirs, dev_args = _put((params, dirs, args), replicated)
    bar = tqdm(
        total=n_points,
        initial=int(done.sum()),
        desc=f"sweep {kind}",
        unit="pt",
        dynamic_ncols=True,
        disable=not progress_shown(progress),
    )
    start = time.perf_counter()
    try:
        for idx in chunks:
            block = np.zeros((chunk, len(axes)), dtype)  # padding = θ itself
            block[: idx.size] = coeffs_all[idx]
            res = _eval_chunk(
                f, mesh, width, data_chunk, dev_params, dev_dirs, _put(block, by_point), dev_args
            )
            for name in names:
                res_name = res if name is None else res[name]
                values[name][idx] = _to_host(res_name)[: idx.size]
            done[idx] = True
            call["points_computed"] += int(idx.size)
            call["chunks"] += 1
            call["wall_s"] = round(time.perf_counter() - start, 3)
            if writer:
                _save_state(out_dir, config, axes, done, values, calls, n_points)
            bar.update(int(idx.size))
            if callback is not None:
                callback(int(done.sum()), n_points)
    finally:
        bar.close()

    result = {name: values[name].reshape(shape) for name in names}
    return result[None] if names == [None] else result


def _value_key(name: str | None) -> str:
    return "values" if name is None else f"values/{name}"


def _save_state(out_dir, config, axes, done, values, calls, n_points) -> None:
    shape = tuple(config["shape"])
    arrays = {"config": np.array(json.dumps(config, sort_keys=True)), "done": done.reshape(shape)}
    arrays.update(
        {
            name: np.asarray(a)
            for name, a in zip(("alphas", "betas")[: len(axes)], axes, strict=True)
        }
    )
    arrays.update({_value_key(name): v.reshape(shape) for name, v in values.items()})
    arrays["calls"] = np.array(json.dumps(calls, sort_keys=True))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(out_dir / GRID_FILE, buf.getvalue())
    atomic_write_json(
        out_dir / META_FILE,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": config,
            "points_total": n_points,
            "points_done": int(done.sum()),
            "calls": calls,
        },
    )


def _load_state(out_dir: Path, names: list) -> tuple[dict, np.ndarray, dict, list]:
    """The stored config, ``done`` mask, values and call log of the sweep in ``out_dir``."""
    path = out_dir / GRID_FILE
    try:  # our own handle: np.load leaks its file when the zip is unreadable
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            stored = json.loads(str(npz["config"][()]))
            done = np.asarray(npz["done"]).ravel()
            values = {
                name: np.array(npz[_value_key(name)]).ravel()
                for name in names
                if _value_key(name) in npz.files
            }
            calls = json.loads(str(npz["calls"][()])) if "calls" in npz.files else None
        if not isinstance(stored, dict) or done.dtype != bool:
            raise ValueError("unexpected contents")
        if any(v.shape != done.shape for v in values.values()):
            raise ValueError("values and done mask of different sizes")
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, KeyError, JSON, …
        raise ValueError(
            f"out: expected {path} to be a sweep written by gdjax.landscape, got a file that "
            f"is truncated or corrupted ({type(e).__name__}: {e}). Delete it to start over."
        ) from None
    if calls is None:  # written before grid.npz held the call log
        calls = _read_calls(out_dir)
    if len(values) != len(names):
        values = {}  # output names differ: the config comparison reports it
    return stored, done, values, list(calls)


def _read_calls(out_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((out_dir / META_FILE).read_text())["calls"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def sweep_1d(
    f: Callable[..., Any],
    params: PyTree,
    direction: PyTree,
    alphas: Sequence[float] | np.ndarray,
    *args: Any,
    chunk_size: int | None = None,
    vmap_width: int | None = None,
    data_chunk: int | None = None,
    out: str | os.PathLike | None = None,
    max_chunks: int | None = None,
    progress: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> Values:
    """``f(θ + α d, *args)`` for every α in ``alphas``.

    .. math::

        g_i = f(θ + α_i d)

    ``α`` is cast to the params dtype before the step is taken.

    Args:
      f: ``f(params, *args)`` returning a floating scalar or a dict of them,
        e.g. ``gdjax.objective(model, "mse")`` or
        ``functools.partial(gdjax.train.evaluate, model, loss)``.
      params: θ.
      direction: d, shaped like ``params``.
      alphas: 1-D, at least 2 finite, strictly increasing values.
      *args: passed to ``f`` (e.g. ``x, y``), replicated on every device;
        split into chunks of examples with ``data_chunk``.
      chunk_size: grid points per compiled call (and per checkpoint); rounded
        up to a multiple of ``vmap_width × number of devices``. Default:
        8 blocks per device, at most the whole grid. Does not change the values.
      vmap_width: points evaluated together under ``vmap`` on one device.
        Default (``None``): from :func:`default_vmap_width`, or the stored
        width when resuming. Part of the sweep's identity.
      data_chunk: examples per chunk of the data (not ``chunk_size``, which
        counts grid points). Each point's value is then the mean over
        examples of ``f`` on chunks of ``data_chunk`` rows (axis 0) of every
        argument in ``args``, the last smaller chunk weighted by its size,
        accumulated in a ``lax.scan``, so a device holds ``vmap_width ×
        data_chunk`` examples' intermediates instead of ``vmap_width × n``.
        Equals the unchunked value when ``f`` is a mean over examples (a
        cost, an accuracy), to rounding. Default ``None``: all the data at
        once. Part of the sweep's identity (it changes the rounding).
      out: a directory to write the sweep into as it goes, and to resume from.
      max_chunks: stop after computing this many chunks (the rest stays NaN).
      progress: show a tqdm progress bar of points done.
      callback: called as ``callback(points_done, points_total)`` after each
        chunk is stored.

    Returns:
      A float array of shape ``(len(alphas),)``, or a dict of them when ``f``
      returns a dict; NaN at points not computed (``max_chunks``).

    Examples:
      >>> params = [jnp.array([1.0, 2.0])]
      >>> f = lambda p: jnp.sum(p[0] ** 2)
      >>> sweep_1d(f, params, [jnp.array([1.0, 0.0])], [-1.0, 0.0, 1.0]).tolist()
      [4.0, 5.0, 8.0]

    References:
      Goodfellow, Vinyals & Saxe (2015); Li et al. (2018).
    """
    return _sweep(
        f,
        params,
        [direction],
        [_check_axis("alphas", alphas)],
        args,
        kind="1d",
        chunk_size=chunk_size,
        vmap_width=vmap_width,
        data_chunk=data_chunk,
        out=out,
        max_chunks=max_chunks,
        progress=progress,
        callback=callback,
    )


def sweep_2d(
    f: Callable[..., Any],
    params: PyTree,
    d1: PyTree,
    d2: PyTree,
    alphas: Sequence[float] | np.ndarray,
    betas: Sequence[float] | np.ndarray,
    *args: Any,
    chunk_size: int | None = None,
    vmap_width: int | None = None,
    data_chunk: int | None = None,
    out: str | os.PathLike | None = None,
    max_chunks: int | None = None,
    progress: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> Values:
    """``f(θ + α d1 + β d2, *args)`` on the grid ``alphas × betas``.

    .. math::

        g_{ij} = f(θ + α_i d_1 + β_j d_2)

    The loss surface of Li et al. (2018) with filter-normalised ``d1, d2``
    (:func:`filter_normalized_direction`). Points run in row-major order
    (α outer), in chunks; see the module docstring for sharding, bitwise
    invariance and the resumable ``out`` directory, which holds
    ``grid.npz`` (``config``: JSON with the hashes that identify the sweep;
    ``alphas``, ``betas``; ``done``: bool ``(len(alphas), len(betas))``;
    ``values`` or ``values/<name>``: the grid, NaN where not done) and
    ``sweep.json`` (the config, ``points_done``, ``points_total`` and
    ``calls``: one entry per call with ``points_computed``, ``chunks``,
    ``chunk_size``, ``devices``, ``wall_s``).

    Args:
      f: ``f(params, *args)`` returning a floating scalar or a dict of them.
      params: θ, the centre of the plane.
      d1: the α direction, shaped like ``params``.
      d2: the β direction, shaped like ``params``.
      alphas: 1-D, at least 2 finite, strictly increasing values.
      betas: likewise.
      *args: passed to ``f`` (e.g. ``x, y``), replicated on every device;
        split into chunks of examples with ``data_chunk``.
      chunk_size: grid points per compiled call (and per checkpoint); rounded
        up to a multiple of ``vmap_width × number of devices``. Default:
        8 blocks per device, at most the whole grid. Does not change the values.
      vmap_width: points evaluated together under ``vmap`` on one device.
        Default (``None``): from :func:`default_vmap_width`, or the stored
        width when resuming. Part of the sweep's identity.
      data_chunk: examples per chunk of the data (not ``chunk_size``, which
        counts grid points). Each point's value is then the mean over
        examples of ``f`` on chunks of ``data_chunk`` rows (axis 0) of every
        argument in ``args``, the last smaller chunk weighted by its size,
        accumulated in a ``lax.scan``, so a device holds ``vmap_width ×
        data_chunk`` examples' intermediates instead of ``vmap_width × n``.
        Equals the unchunked value when ``f`` is a mean over examples (a
        cost, an accuracy), to rounding. Default ``None``: all the data at
        once. Part of the sweep's identity (it changes the rounding).
      out: a directory to write the sweep into as it goes, and to resume from.
      max_chunks: stop after computing this many chunks (the rest stays NaN).
      progress: show a tqdm progress bar of points done.
      callback: called as ``callback(points_done, points_total)`` after each
        chunk is stored.

    Returns:
      A float array of shape ``(len(alphas), len(betas))``, or a dict of them
      when ``f`` returns a dict; NaN at points not computed (``max_chunks``).

    Examples:
      >>> params = [jnp.array([1.0, 2.0])]
      >>> f = lambda p: jnp.sum(p[0] ** 2)
      >>> e1, e2 = [jnp.array([1.0, 0.0])], [jnp.array([0.0, 1.0])]
      >>> sweep_2d(f, params, e1, e2, [-1.0, 0.0], [0.0, 1.0]).tolist()
      [[4.0, 9.0], [5.0, 10.0]]

    References:
      Li, Xu, Taylor, Studer & Goldstein (2018), "Visualizing the Loss
      Landscape of Neural Nets", NeurIPS.
    """
    return _sweep(
        f,
        params,
        [d1, d2],
        [_check_axis("alphas", alphas), _check_axis("betas", betas)],
        args,
        kind="2d",
        chunk_size=chunk_size,
        vmap_width=vmap_width,
        data_chunk=data_chunk,
        out=out,
        max_chunks=max_chunks,
        progress=progress,
        callback=callback,
    )
