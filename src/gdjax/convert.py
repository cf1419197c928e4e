"""Params of networks trained elsewhere, in gdjax's layout and back.

Three layouts of the same fully connected network with L layers:

    gdjax (the seed's):    [{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]        z^l = a^{l-1} (w^l)ᵀ + b^l
    (in, out), as in JAX's examples (``mnist_classifier_fromscratch``, stax):
                           [(w, b), …] or [{"w": (n_{l-1}, n_l), "b": (n_l,)}, …]
                                                                          z^l = a^{l-1} w^l + b^l
    PyTorch ``nn.Sequential`` of ``nn.Linear`` (activations in between):
                           {"0.weight": (n_1, n_0), "0.bias": (n_1,), "2.weight": …}
                                                                          z^l = a^{l-1} Wᵀ + b

So converting from (in, out) transposes each weight matrix, and a PyTorch
``weight`` is already ``(out, in)``: only the keys change. The activations are
not part of any of these: build the :class:`~gdjax.MLP` with the same σ
(``nn.Tanh`` ↔ ``"tanh"``, ``nn.ReLU`` ↔ ``"relu"``…).

PyTorch is never imported here. :func:`from_torch_state_dict` accepts numpy
arrays, and torch tensors when you pass them (anything with
``.detach().cpu().numpy()``); :func:`to_torch_state_dict` returns numpy
arrays, which ``torch.from_numpy`` turns into tensors.

Every function checks the whole chain of shapes first (each layer's input
width is the previous layer's output width, each bias matches its weight) and
raises a ``ValueError`` that names the argument, what was expected and what
was received.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.mlp import Params

__all__ = ["from_in_out", "to_in_out", "from_torch_state_dict", "to_torch_state_dict"]

_TORCH_KEY = re.compile(r"^(\d+)\.(weight|bias)$")

_TORCH_KEYS = (
    "state_dict: expected the keys of an nn.Sequential of nn.Linear layers, "
    "'<index>.weight' and '<index>.bias' (e.g. '0.weight', '0.bias', '2.weight', '2.bias'), "
    "got key {key!r}.{hint}"
)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _as_numpy(name: str, value: Any) -> np.ndarray:
    """A numpy array from a numpy/JAX array, or a torch tensor (duck-typed, never imported)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = None
    if arr is None or not np.issubdtype(arr.dtype, np.floating):
        got = arr.dtype if arr is not None else type(value).__name__
        raise ValueError(f"{name}: expected a floating array, got {got}.")
    return arr


def _check_chain(name: str, ws: list[tuple[int, ...]], bs: list[tuple[int, ...]], in_out: bool):
    """Each weight 2-D, each bias ``(n_out,)``, each input width the previous output width."""
    layout = "(n_in, n_out)" if in_out else "(n_out, n_in)"
    prev_out = None
    for layer, (w, b) in enumerate(zip(ws, bs, strict=True)):
        w_name, b_name = name.format(layer=layer, leaf="w"), name.format(layer=layer, leaf="b")
        if len(w) != 2:
            raise ValueError(f"{w_name}: expected a weight matrix of shape {layout}, got {w}.")
        n_in, n_out = w if in_out else w[::-1]
        if b != (n_out,):
            raise ValueError(
                f"{b_name}: expected a bias of shape ({n_out},) to match {w_name} of shape {w} "
                f"{layout}, got {b}."
            )
        if prev_out is not None and n_in != prev_out:
            want = (prev_out, n_out) if in_out else (n_out, prev_out)
            raise ValueError(
                f"{w_name}: expected shape {want}: its input width must equal the output width "
                f"{prev_out} of the layer before, got {w}."
            )
        prev_out = n_out


def _layers(name: str, params: Any) -> list[tuple[Any, Any]]:
    """``params`` as ``[(w, b), …]``; each layer a ``{"w", "b"}`` dict or a ``(w, b)`` pair."""
    if not isinstance(params, list | tuple) or not params:
        got = "an empty list" if isinstance(params, list | tuple) else type(params).__name__
        raise ValueError(f"{name}: expected a non-empty list of layers, got {got}.")
    out = []
    for layer, p in enumerate(params):
        if isinstance(p, Mapping):
            if set(p) != {"w", "b"}:
                missing = sorted({"w", "b"} - set(p))
                detail = f"missing {missing}" if missing else f"keys {sorted(p)}"
                raise ValueError(
                    f"{name}[{layer}]: expected a dict with keys 'w' and 'b' (gdjax layers "
                    f"always have a bias), got {detail}."
                )
            out.append((p["w"], p["b"]))
        elif isinstance(p, list | tuple) and len(p) == 2:
            out.append((p[0], p[1]))
        else:
            got = f"a sequence of length {len(p)}" if isinstance(p, list | tuple) else type(p)
            raise ValueError(
                f"{name}[{layer}]: expected a dict {{'w': …, 'b': …}} or a pair (w, b), got {got}."
            )
    return out


def _check_gdjax_params(params: Any) -> list[tuple[Any, Any]]:
    if not isinstance(params, list | tuple) or any(not isinstance(p, Mapping) for p in params):
        raise ValueError(
            f"params: expected gdjax params, a list of {{'w': (n_out, n_in), 'b': (n_out,)}} "
            f"dicts, got {type(params).__name__}"
            + (" of non-dicts." if isinstance(params, list | tuple) else ".")
        )
    layers = _layers("params", params)
    ws, bs = [_shape(w) for w, _ in layers], [_shape(b) for _, b in layers]
    _check_chain("params[{layer}]['{leaf}']", ws, bs, in_out=False)
    return layers


def from_in_out(params: Sequence[Any]) -> Params:
    """gdjax params from the ``(in, out)`` layout of JAX's examples: ``w^l = Wᵀ``.

    .. math::

        a^{l-1} W + b = a^{l-1} (w^l)^T + b^l \\quad\\text{with}\\quad w^l = W^T,\\ b^l = b

    Args:
      params: a list with one entry per layer, each a pair ``(W, b)`` (as
        ``init_random_params`` of ``mnist_classifier_fromscratch`` returns) or
        a dict ``{"w": W, "b": b}``, with ``W`` of shape ``(n_{l-1}, n_l)`` and
        ``b`` of shape ``(n_l,)``.

    Returns:
      ``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]`` as JAX arrays, params of
      ``MLP((n_0, n_1, …, n_L), …)``.

    Examples:
      >>> params = from_in_out([(jnp.ones((3, 4)), jnp.zeros(4)), (jnp.ones((4, 2)), jnp.zeros(2))])
      >>> [p["w"].shape for p in params]
      [(4, 3), (2, 4)]
    """
    layers = _layers("params", params)
    ws, bs = [_shape(w) for w, _ in layers], [_shape(b) for _, b in layers]
    _check_chain("params[{layer}]['{leaf}']", ws, bs, in_out=True)
    return [{"w": jnp.asarray(w).T, "b": jnp.asarray(b)} for w, b in layers]


def to_in_out(params: Params, *, as_pairs: bool = False) -> list[Any]:
    """The ``(in, out)`` layout of JAX's examples from gdjax params: ``W = (w^l)ᵀ``.

    The inverse of :func:`from_in_out`.

    Args:
      params: gdjax params ``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]``.
      as_pairs: return ``[(W, b), …]`` pairs instead of ``{"w": W, "b": b}`` dicts.

    Returns:
      One entry per layer with ``W`` of shape ``(n_{l-1}, n_l)``, as JAX arrays.

    Examples:
      >>> params = [{"w": jnp.ones((4, 3)), "b": jnp.zeros(4)}]
      >>> [w.shape for w, b in to_in_out(params, as_pairs=True)]
      [(3, 4)]
    """
    layers = _check_gdjax_params(params)
    out = [(jnp.asarray(w).T, jnp.asarray(b)) for w, b in layers]
    return out if as_pairs else [{"w": w, "b": b} for w, b in out]


def from_torch_state_dict(state_dict: Mapping[str, Any]) -> Params:
    """gdjax params from the ``state_dict()`` of an ``nn.Sequential`` of ``nn.Linear`` layers.

    The Linear layers are the entries with a ``weight`` and a ``bias``; their
    indices in the Sequential (``0, 2, 4, …`` when activations sit between
    them) are sorted numerically, so ``"10.weight"`` comes after ``"2.weight"``.
    A ``weight`` is already ``(out, in)``, gdjax's layout, so nothing is
    transposed.

    Args:
      state_dict: a mapping from ``"<index>.weight"`` / ``"<index>.bias"`` to
        numpy arrays or torch tensors (read with ``.detach().cpu().numpy()``;
        torch itself is not imported). For a Sequential held as an attribute,
        strip its prefix first: ``{k.removeprefix("net."): v for k, v in sd.items()}``.

    Returns:
      ``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]`` as JAX arrays (float32 tensors
      give float32 params).

    Raises:
      ValueError: a key that is not ``<index>.weight`` or ``<index>.bias``, a
        weight without its bias (or the reverse), or shapes that do not chain.

    Examples:
      >>> sd = {"0.weight": np.ones((4, 3), np.float32), "0.bias": np.zeros(4, np.float32),
      ...       "2.weight": np.ones((1, 4), np.float32), "2.bias": np.zeros(1, np.float32)}
      >>> [p["w"].shape for p in from_torch_state_dict(sd)]
      [(4, 3), (1, 4)]
    """
    if not isinstance(state_dict, Mapping) or not state_dict:
        got = "an empty mapping" if isinstance(state_dict, Mapping) else type(state_dict).__name__
        raise ValueError(
            f"state_dict: expected the state_dict() of an nn.Sequential of nn.Linear layers, "
            f"got {got}."
        )
    entries: dict[int, dict[str, Any]] = {}
    for key, value in state_dict.items():
        match = _TORCH_KEY.match(key) if isinstance(key, str) else None
        if match is None:
            prefix = key.rsplit(".", 2)[0] + "." if isinstance(key, str) and "." in key else ""
            hint = (
                f" If the Sequential is an attribute, strip its prefix first: "
                f"{{k.removeprefix({prefix!r}): v for k, v in state_dict.items()}}."
                if prefix and _TORCH_KEY.match(key[len(prefix) :])
                else ""
            )
            raise ValueError(_TORCH_KEYS.format(key=key, hint=hint))
        index, kind = int(match[1]), match[2]
        entries.setdefault(index, {})[kind] = _as_numpy(f"state_dict[{key!r}]", value)
    indices = sorted(entries)
    for index in indices:
        for kind, other in (("weight", "bias"), ("bias", "weight")):
            if kind not in entries[index]:
                raise ValueError(
                    f"state_dict: expected '{index}.{kind}' beside '{index}.{other}' (gdjax "
                    f"layers always have a weight and a bias: build nn.Linear with bias=True), "
                    f"got no '{index}.{kind}'."
                )
    _check_torch_chain(entries, indices)
    return [
        {"w": jnp.asarray(entries[i]["weight"]), "b": jnp.asarray(entries[i]["bias"])}
        for i in indices
    ]


def _check_torch_chain(entries: dict[int, dict[str, np.ndarray]], indices: list[int]) -> None:
    prev = None
    for i in indices:
        w, b = entries[i]["weight"].shape, entries[i]["bias"].shape
        if len(w) != 2:
            raise ValueError(
                f"state_dict['{i}.weight']: expected an nn.Linear weight of shape "
                f"(out_features, in_features), got {w}."
            )
        if b != (w[0],):
            raise ValueError(
                f"state_dict['{i}.bias']: expected shape ({w[0]},) to match "
                f"state_dict['{i}.weight'] of shape {w}, got {b}."
            )
        if prev is not None and w[1] != entries[prev]["weight"].shape[0]:
            n = entries[prev]["weight"].shape[0]
            raise ValueError(
                f"state_dict['{i}.weight']: expected in_features = {n}, the out_features of "
                f"state_dict['{prev}.weight'] (the Linear before it), got shape {w}."
            )
        prev = i


def to_torch_state_dict(
    params: Params, layer_indices: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """The ``state_dict`` of an ``nn.Sequential`` of ``nn.Linear`` layers, as numpy arrays.

    The inverse of :func:`from_torch_state_dict`. Load it with
    ``net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.

    Args:
      params: gdjax params ``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]``.
      layer_indices: the index of each Linear layer in the Sequential, one
        per layer, strictly increasing. Default ``0, 2, 4, …``: a Linear
        followed by one activation module, as in
        ``nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))``.

    Returns:
      ``{"<index>.weight": (n_l, n_{l-1}), "<index>.bias": (n_l,)}``, numpy
      arrays in the params' dtype.

    Examples:
      >>> params = [{"w": jnp.ones((4, 3)), "b": jnp.zeros(4)},
      ...           {"w": jnp.ones((1, 4)), "b": jnp.zeros(1)}]
      >>> {k: v.shape for k, v in to_torch_state_dict(params).items()}
      {'0.weight': (4, 3), '0.bias': (4,), '2.weight': (1, 4), '2.bias': (1,)}
    """
    layers = _check_gdjax_params(params)
    if layer_indices is None:
        layer_indices = [2 * layer for layer in range(len(layers))]
    elif (
        not isinstance(layer_indices, Sequence)
        or isinstance(layer_indices, str)
        or len(layer_indices) != len(layers)
        or any(isinstance(i, bool) or not isinstance(i, int | np.integer) for i in layer_indices)
        or any(i < 0 for i in layer_indices)
        or any(a >= b for a, b in zip(layer_indices, layer_indices[1:], strict=False))
    ):
        raise ValueError(
            f"layer_indices: expected {len(layers)} strictly increasing non-negative integers "
            f"(the position of each Linear in the Sequential, one per layer of params), "
            f"got {layer_indices!r}."
        )
    out: dict[str, np.ndarray] = {}
    for i, (w, b) in zip(layer_indices, layers, strict=True):
        out[f"{int(i)}.weight"] = np.array(jax.device_get(w))
        out[f"{int(i)}.bias"] = np.array(jax.device_get(b))
    return out
