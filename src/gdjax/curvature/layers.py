"""Curvature layer by layer: the diagonal blocks ``H_ll`` of the Hessian.

- :func:`layer_curvature` — ``λ_max(H_ll)`` and ``tr H_ll`` of every layer's
  diagonal block; returns a :class:`LayerCurvature`.

What a layer is, for any params pytree (``_layers``): a top-level entry of
params that holds at least one array, in ``jax.tree_util`` order — ``params[l]``
of a list (``MLP.init``'s ``[{"w", "b"}, …]``), ``params[key]`` of a dict in
sorted key order, a module's fields in order.

A layer's block is the Hessian of C in that layer's params alone, the others
held fixed (``_LayerRestricted``); :mod:`gdjax.curvature.taylor` uses the same
block for the stability limit of a step that moves one layer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._checks import check_finite_args, check_finite_number, check_positive_int
from gdjax.curvature.eigen import top_eigenvalues
from gdjax.curvature.hutchinson import trace
from gdjax.curvature.products import (
    _check_choice,
    _check_data_chunk,
    _check_f,
    _check_key,
    _check_params,
    _flat_operator,
    _num_params,
)

__all__ = ["layer_curvature", "LayerCurvature"]

PyTree = Any


# ---------------------------------------------------------------- what a layer is

_LAYERED = (
    "a pytree with top-level entries to split into layers: a list or tuple of per-layer "
    "params (as MLP.init makes), a dict of them (e.g. {'conv': ..., 'dense': ...}), or a "
    "module's params (an Equinox module's fields, a Flax NNX State)"
)


def _key_of(key) -> Any:
    """The index, dict key or attribute name of a ``jax.tree_util`` path entry."""
    for attribute in ("idx", "key", "name"):
        if hasattr(key, attribute):
            return getattr(key, attribute)
    return str(key)


class _Layers(NamedTuple):
    """The top-level entries of a params pytree, and which of them are layers."""

    entries: list  # every child of the root, in jax.tree_util order
    treedef: Any  # joins the entries back into params
    paths: list  # each entry's one-key jax.tree_util path
    layers: list[int]  # the entries holding at least one array: the layers, in order

    @property
    def keys(self) -> list:
        """Each layer's index, dict key or field name."""
        return [_key_of(self.paths[i][0]) for i in self.layers]

    def join(self, index: int, entry: PyTree) -> PyTree:
        """params with entry ``index`` replaced by ``entry``."""
        entries = list(self.entries)
        entries[index] = entry
        return jax.tree.unflatten(self.treedef, entries)


def _layers(params: PyTree, name: str = "params") -> _Layers:
    """The layers of ``params``: its top-level entries that hold at least one array.

    A layer is one child of the root of the params pytree, in the order in which
    ``jax.tree_util`` flattens them: index order for a list or tuple, sorted keys
    for a dict, field order for a dataclass or an Equinox module. Entries with no
    array (``None`` left by ``eqx.partition``, an empty dict) are not layers.
    ``ravel_pytree(params)`` holds each layer's params contiguously, layer after
    layer, so the Hessian splits into the blocks ``H_lm``.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda node: node is not params
    )
    if jax.tree_util.treedef_is_leaf(treedef):
        raise ValueError(
            f"{name}: expected {_LAYERED}, got a single {type(params).__name__}. For the "
            f"Hessian of one array use top_eigenvalues and trace."
        )
    entries = [entry for _, entry in flat]
    layers = [i for i, entry in enumerate(entries) if jax.tree.leaves(entry)]
    if not layers:
        raise ValueError(f"{name}: expected {_LAYERED}, got no entry holding an array.")
    return _Layers(entries, treedef, [path for path, _ in flat], layers)


def _layer_index(params: PyTree, layer) -> int | None:
    """The entry of params (:func:`_layers`) that ``layer`` names, or None for None."""
    if layer is None:
        return None
    split = _layers(params, "layer")
    keys = split.keys
    if isinstance(layer, int | np.integer) and not isinstance(layer, bool):
        if 0 <= layer < len(keys):
            return split.layers[int(layer)]
    elif isinstance(layer, str) and layer in keys:
        return split.layers[keys.index(layer)]
    raise ValueError(
        f"layer: expected an index in [0, {len(keys) - 1}] (a position among the layers, the "
        f"top-level entries of params holding arrays, whose keys are {keys}; 0 is the first "
        f"weight layer, w^1, of an MLP) or one of those keys that is a string, got {layer!r}."
    )


def _restrict(tree: PyTree, index: int | None) -> PyTree:
    """``tree`` with every top-level entry but ``index`` zeroed (unchanged for None)."""
    if index is None:
        return tree
    split = _layers(tree)
    entries = [
        entry if i == index else jax.tree.map(jnp.zeros_like, entry)
        for i, entry in enumerate(split.entries)
    ]
    return jax.tree.unflatten(split.treedef, entries)


class _LayerRestricted:
    """``C`` as a function of layer l's params alone, the other layers held fixed.

    Called as ``(layer_params, full_params, *data)``, ``layer`` the entry of
    ``full_params`` (:func:`_layers`) it replaces; its Hessian is the diagonal
    block ``H_ll``. ``fixed_args = 1``: ``data_chunk`` splits the data and passes
    ``full_params`` whole to every chunk. Hashable by ``(f, layer)``, so compiled
    products are reused across calls.
    """

    fixed_args = 1

    def __init__(self, f, layer: int):
        self.f, self.layer = f, layer

    def __hash__(self):
        return hash((self.f, self.layer))

    def __eq__(self, other):
        return (
            isinstance(other, _LayerRestricted) and self.f is other.f and self.layer == other.layer
        )

    def __call__(self, layer_params, full_params, *args):
        return self.f(_layers(full_params).join(self.layer, layer_params), *args)


def _block_lambda_max(f, params, index, d, key, args, data_chunk=None) -> float:
    """λ_max of H, or of the diagonal block ``H_ll`` of layer ``index`` (:func:`_layers`).

    Lanczos starts from ``key`` when given, else (deterministically) from d.
    """
    start = jax.random.key(0) if key is None else key
    init = None if key is not None else d
    if index is None:
        eig = top_eigenvalues(f, params, 1, *args, key=start, init=init, data_chunk=data_chunk)
    else:
        eig = top_eigenvalues(
            _LayerRestricted(f, index),
            _layers(params).entries[index],
            1,
            params,
            *args,
            key=start,
            init=None if init is None else _layers(init).entries[index],
            data_chunk=data_chunk,
        )
    return float(eig.eigenvalues[0])


# ---------------------------------------------------------------- per-layer curvature


class LayerCurvature(NamedTuple):
    """What :func:`layer_curvature` returns: numpy arrays with one entry per layer l.

    Attributes:
      lambda_max: ``λ_max(H_ll)``, the largest eigenvalue of layer l's diagonal block.
      trace: ``tr H_ll``, exact or Hutchinson's estimate (see ``exact``).
      trace_stderr: the standard error of ``trace`` (0 where exact).
      exact: whether ``trace`` was computed exactly, from the block's basis.
      num_params: ``n_l``, the number of params of layer l (the size of ``H_ll``).
      hvps: Hessian-vector products spent on layer l (Lanczos and trace together).
      converged: whether Lanczos met its tolerance for ``lambda_max``.
      layers: the key of each layer's entry in params (a list, not an array): its
        index for a list or tuple, its key for a dict, its field name for a module.
    """

    lambda_max: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray
    exact: np.ndarray
    num_params: np.ndarray
    hvps: np.ndarray
    converged: np.ndarray
    layers: list


@functools.partial(jax.jit, static_argnums=(0, 2, 4))
def _exact_trace(f, params, batch_size, args, data_chunk=None):
    """``tr H = Σ_i e_iᵀ H e_i`` over the standard basis: n Hessian-vector products."""
    flat, _ = ravel_pytree(params)
    n = flat.size
    operator = _flat_operator(f, params, args, data_chunk)

    def diagonal_entry(i):
        return operator(jax.nn.one_hot(i, n, dtype=flat.dtype))[i]

    return jnp.sum(jax.lax.map(diagonal_entry, jnp.arange(n), batch_size=batch_size))


def layer_curvature(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    trace_method: Literal["auto", "exact", "hutchinson"] = "auto",
    samples: int = 100,
    tol: float = 1e-8,
    max_iters: int | None = None,
    batch_size: int = 16,
    data_chunk: int | None = None,
) -> LayerCurvature:
    """λ_max and the trace of every layer's diagonal block of the Hessian.

    Order the params layer by layer, ``θ = (θ^1, …, θ^L)`` with ``θ^l = (w^l, b^l)``
    for an MLP. For any params pytree a layer θ^l is one of its top-level entries
    that holds at least one array, in the order ``jax.tree_util`` flattens them:
    ``params[l]`` of a list or tuple; ``params[key]`` of a dict, in sorted key
    order (``{"dense": …, "conv": …}`` gives conv, then dense); a field of a
    dataclass or Equinox module, in field order; the top-level modules of a Flax
    NNX State. Entries without arrays (the ``None`` fields ``eqx.partition``
    leaves) are skipped. ``ravel_pytree`` keeps each layer contiguous, and the
    Hessian splits into blocks, and the diagonal block of layer l is the
    Hessian of C in layer l's params alone, the other layers held fixed:

    .. math::

        H = \\begin{pmatrix} H_{11} & \\cdots & H_{1L} \\\\ \\vdots & \\ddots & \\vdots \\\\
        H_{L1} & \\cdots & H_{LL} \\end{pmatrix}, \\qquad
        H_{ll} = \\frac{∂^2 C}{∂(θ^l)^2}, \\qquad
        \\operatorname{tr} H = \\sum_l \\operatorname{tr} H_{ll}

    ``H_ll v`` is the Hessian-vector product of the cost as a function of θ^l
    alone, n_l numbers long. ``λ_max(H_ll)`` (by Lanczos, :func:`top_eigenvalues`)
    is the curvature a step that moves only layer l meets, and ``2/λ_max(H_ll)``
    the largest stable learning rate for that layer alone; in general
    ``λ_max(H_ll) ≤ λ_max(H)`` (a Rayleigh quotient over a subspace).

    The trace is computed one of two ways, by ``trace_method``:

    - ``"exact"``: ``tr H_ll = Σ_i e_iᵀ H_ll e_i`` over layer l's n_l basis
      vectors, n_l products;
    - ``"hutchinson"``: :func:`trace` with ``samples`` Rademacher vectors, with its
      standard error;
    - ``"auto"`` (default): exact for the layers with ``n_l ≤ samples`` (no more
      products than Hutchinson would take), Hutchinson for the others.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ, a pytree whose top-level entries are the layers: a list with one
        pytree per layer (as ``MLP.init`` makes), a dict such as
        ``{"conv": {...}, "dense": {...}}``, or a module's params. Each layer needs
        at least one parameter.
      *args: further arguments of ``f`` (e.g. ``x, y``).
      key: PRNG key (Lanczos start vectors and Rademacher vectors, per layer).
      trace_method: ``"auto"``, ``"exact"`` or ``"hutchinson"``.
      samples: Hutchinson's number of vectors (≥ 2), also the "auto" threshold.
      tol, max_iters: for Lanczos, as in :func:`top_eigenvalues`.
      batch_size: products computed together under ``vmap`` for the trace.
      data_chunk: ``None``, or k examples per chunk: every product is accumulated
        over chunks of the data (see :func:`hvp`), so memory follows k, not n.

    Returns:
      A :class:`LayerCurvature` ``(lambda_max, trace, trace_stderr, exact, num_params,
      hvps, converged, layers)``.

    Examples:
      >>> from gdjax import MLP, objective
      >>> model = MLP((2, 3, 1), activation="tanh")
      >>> f = objective(model, "mse")
      >>> params = model.init(jax.random.key(0))
      >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
      >>> lc = layer_curvature(f, params, x, y, key=jax.random.key(1))
      >>> lc.num_params.tolist(), lc.exact.tolist()   # 9 and 4 params ≤ 100 samples: exact
      ([9, 4], [True, True])
      >>> g = lambda p, x: jnp.mean((x @ p["w"] + p["b"]) ** 2)  # a dict: layers b, w
      >>> layer_curvature(g, {"w": jnp.ones(2), "b": jnp.ones(())}, x, key=jax.random.key(1)).layers
      ['b', 'w']

    References:
      Yao et al. (2020), "PyHessian: neural networks through the lens of the
      Hessian" (block-wise analysis); Sankar et al. (2021), "A deeper look at
      the Hessian eigenspectrum of deep neural networks and its applications
      to regularization", AAAI.
    """
    _check_params(params)
    check_finite_args(args)
    split = _layers(params)
    trace_method = _check_choice("trace_method", trace_method, ("auto", "exact", "hutchinson"))
    samples = check_positive_int("samples", samples)
    if samples < 2:
        raise ValueError(
            f"samples: expected at least 2 (a standard error needs two), got {samples}."
        )
    tol = check_finite_number("tol", tol)
    if max_iters is not None:
        max_iters = check_positive_int("max_iters", max_iters)
    batch_size = check_positive_int("batch_size", batch_size)
    data_chunk = _check_data_chunk(data_chunk, f, args)
    _check_key(key)
    _check_f(f, params, args, data_chunk)

    rows = []
    for layer, index in enumerate(split.layers):
        layer_params = split.entries[index]
        n_l = _num_params(layer_params)
        block = _LayerRestricted(f, index)
        block_args = (params, *args)
        eig_key, trace_key = jax.random.split(jax.random.fold_in(key, layer))
        eig = top_eigenvalues(
            block,
            layer_params,
            1,
            *block_args,
            key=eig_key,
            tol=tol,
            max_iters=None if max_iters is None else min(max_iters, n_l),
            data_chunk=data_chunk,
        )
        exact = trace_method == "exact" or (trace_method == "auto" and n_l <= samples)
        if exact:
            value = float(
                _exact_trace(block, layer_params, min(batch_size, n_l), block_args, data_chunk)
            )
            stderr, products = 0.0, n_l
        else:
            est = trace(
                block,
                layer_params,
                *block_args,
                key=trace_key,
                samples=samples,
                batch_size=batch_size,
                data_chunk=data_chunk,
            )
            value, stderr, products = est.estimate, est.stderr, samples
        rows.append(
            (
                float(eig.eigenvalues[0]),
                value,
                stderr,
                exact,
                n_l,
                eig.hvps + products,
                eig.converged,
            )
        )
    columns = list(zip(*rows, strict=True))
    return LayerCurvature(
        lambda_max=np.asarray(columns[0], np.float64),
        trace=np.asarray(columns[1], np.float64),
        trace_stderr=np.asarray(columns[2], np.float64),
        exact=np.asarray(columns[3], bool),
        num_params=np.asarray(columns[4], np.int64),
        hvps=np.asarray(columns[5], np.int64),
        converged=np.asarray(columns[6], bool),
        layers=split.keys,
    )
