"""Per-layer norms: how a user sees vanishing and exploding gradients.

For every layer l = 1 … L (index ``l − 1`` of each returned array):

    ‖w^l‖_F,   ‖∂C/∂w^l‖_F,   ‖∂C/∂b^l‖_2,   ‖δ^l‖_F,   ‖Δw^l‖_F / ‖w^l‖_F

where ‖·‖_F is the Frobenius norm (the square root of the sum of squared
entries), ``δ^l = ∂C/∂z^l`` is the ``(batch, n_l)`` matrix returned by
:func:`gdjax.backprop_with_deltas` and ``Δw^l`` is the change an optimizer
applies to ``w^l`` in one step.

Why the norms tell the story: the backward pass

    δ^l = ((w^{l+1})ᵀ δ^{l+1}) ⊙ σ'(z^l),     ∂C/∂w^l = δ^l (a^{l-1})ᵀ

multiplies by one weight matrix and one σ' per layer. With the sigmoid,
σ' ≤ 1/4, so at Glorot init ‖δ^l‖ shrinks roughly geometrically from the
output towards the input and the first layers barely learn (vanishing
gradients, Glorot & Bengio 2010; Nielsen ch. 5). Large weights make the same
product grow (exploding gradients). The ratio ``‖∂C/∂w^1‖ / ‖∂C/∂w^L‖`` sums
this up in one number.

Every function here is pure and jittable and returns arrays of shape ``(L,)``,
so a training loop can record them in a ``lax.scan`` history of shape
``(steps, L)``. Called eagerly, each compiles itself once per model, loss and
shapes (:mod:`gdjax._jit`); inside a ``jit`` it is traced as part of it. The
norms cost O(#params), far less than the gradient itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _jit, losses
from gdjax._checks import shape_of
from gdjax.backprop import backprop_with_deltas, check_batch
from gdjax.losses import Loss
from gdjax.mlp import MLP, Params

__all__ = ["layer_norms", "gradient_report", "format_table", "frobenius_norm"]


def frobenius_norm(x: jax.Array) -> jax.Array:
    """``‖x‖_F = √(Σ_ij x_ij²)``, computed without overflow or underflow.

    The entries are scaled by ``m = max |x_ij|`` first, ``‖x‖_F = m ‖x/m‖_F``,
    so exploding gradients of 1e30 in float32 give 1e30, not ``inf``. An empty
    or all-zero array gives 0; an ``inf`` entry gives ``inf``; a NaN gives NaN.

    >>> float(frobenius_norm(jnp.array([[3.0, 0.0], [0.0, 4.0]])))
    5.0
    >>> round(float(frobenius_norm(jnp.array([3e30, 4e30], jnp.float32))) / 1e30, 4)  # no overflow
    5.0
    """
    return _jit.call(_frobenius_norm, (), jnp.asarray(x))


def _frobenius_norm(x: jax.Array) -> jax.Array:
    m = jnp.max(jnp.abs(x), initial=0)
    finite_positive = jnp.isfinite(m) & (m > 0)
    safe_m = jnp.where(finite_positive, m, jnp.ones_like(m))
    scaled = safe_m * jnp.sqrt(jnp.sum(jnp.square(x / safe_m)))
    return jnp.where(finite_positive, scaled, m)


def _layer_list(name: str, tree) -> Sequence:
    if not isinstance(tree, list | tuple) or not tree:
        got = "an empty list" if isinstance(tree, list | tuple) else type(tree).__name__
        raise ValueError(f"{name}: expected a non-empty list of layer dicts, got {got}.")
    return tree


def _check_params(params) -> None:
    for layer, p in enumerate(_layer_list("params", params)):
        if not isinstance(p, Mapping) or not {"w", "b"} <= set(p):
            got = f"keys {sorted(p)}" if isinstance(p, Mapping) else type(p).__name__
            raise ValueError(f"params[{layer}]: expected a dict with keys 'w' and 'b', got {got}.")
        if len(shape_of(p["w"])) != 2:
            raise ValueError(
                f"params[{layer}]['w']: expected a matrix of shape (n_l, n_(l-1)), "
                f"got shape {shape_of(p['w'])}."
            )


def _check_like_params(name: str, tree, params: Params) -> None:
    """``tree`` must be a list of {"w", "b"} dicts with the shapes of ``params``."""
    tree = _layer_list(name, tree)
    if len(tree) != len(params):
        raise ValueError(
            f"{name}: expected {len(params)} layer dicts (one per layer of params), "
            f"got {len(tree)}."
        )
    for layer, (t, p) in enumerate(zip(tree, params, strict=True)):
        if not isinstance(t, Mapping) or not {"w", "b"} <= set(t):
            got = f"keys {sorted(t)}" if isinstance(t, Mapping) else type(t).__name__
            raise ValueError(f"{name}[{layer}]: expected a dict with keys 'w' and 'b', got {got}.")
        for k in ("w", "b"):
            if shape_of(t[k]) != shape_of(p[k]):
                raise ValueError(
                    f"{name}[{layer}]['{k}']: expected shape {shape_of(p[k])} "
                    f"(that of params[{layer}]['{k}']), got {shape_of(t[k])}."
                )


def _check_deltas(deltas, params: Params) -> None:
    deltas = _layer_list("deltas", deltas)
    if len(deltas) != len(params):
        raise ValueError(
            f"deltas: expected {len(params)} arrays δ^1 … δ^L (one per layer of params), "
            f"got {len(deltas)}."
        )
    for layer, (d, p) in enumerate(zip(deltas, params, strict=True)):
        n_l = shape_of(p["w"])[0]
        shape = shape_of(d)
        if len(shape) != 2 or shape[1] != n_l:
            raise ValueError(
                f"deltas[{layer}]: expected shape (batch, {n_l}) with {n_l} = n_{layer + 1}, "
                f"got {shape}."
            )


def layer_norms(
    params: Params,
    grads: Params,
    deltas: Sequence[jax.Array] | None = None,
    updates: Params | None = None,
) -> dict[str, jax.Array]:
    """Per-layer norms of the weights, gradients, error terms and updates.

    .. math::

        \\|w^l\\|_F,\\quad \\|∂C/∂w^l\\|_F,\\quad \\|∂C/∂b^l\\|_2,\\quad
        \\|δ^l\\|_F,\\quad \\|Δw^l\\|_F / \\|w^l\\|_F,\\qquad l = 1 … L

    Args:
      params: ``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]``.
      grads: ``∂C/∂params``, the same structure and shapes (from
        :func:`gdjax.backprop` or ``jax.grad``).
      deltas: optional ``[δ^1, …, δ^L]``, each ``(batch, n_l)``, as returned by
        :func:`gdjax.backprop_with_deltas`. Note ``δ^l = ∂C/∂z^l`` of the *batch*
        cost, so for the mean losses each row carries a factor 1/batch.
      updates: optional optax updates (the ``Δ`` in ``params ← params + Δ``),
        shaped like ``params``.

    Returns:
      A dict of ``(L,)`` arrays, entry ``l − 1`` for layer l:
      ``"weight_norm"`` ‖w^l‖_F, ``"grad_norm"`` ‖∂C/∂w^l‖_F, ``"bias_grad_norm"``
      ‖∂C/∂b^l‖_2; ``"delta_norm"`` ‖δ^l‖_F when ``deltas`` is given;
      ``"update_ratio"`` ‖Δw^l‖_F / ‖w^l‖_F when ``updates`` is given (``inf``
      where ‖w^l‖ = 0, NaN if Δw^l = 0 too). Only the weights enter the ratio.

    Examples:
      >>> params = [{"w": jnp.array([[3.0, 4.0]]), "b": jnp.zeros(1)}]
      >>> grads = [{"w": jnp.array([[0.0, 0.5]]), "b": jnp.array([2.0])}]
      >>> updates = jax.tree.map(lambda g: -0.1 * g, grads)
      >>> norms = layer_norms(params, grads, updates=updates)
      >>> {k: round(float(v[0]), 6) for k, v in sorted(norms.items())}
      {'bias_grad_norm': 2.0, 'grad_norm': 0.5, 'update_ratio': 0.01, 'weight_norm': 5.0}
    """
    _check_params(params)
    _check_like_params("grads", grads, params)
    if deltas is not None:
        _check_deltas(deltas, params)
    if updates is not None:
        _check_like_params("updates", updates, params)
    return _jit.call(_layer_norms, (), params, grads, deltas, updates)


def _layer_norms(params, grads, deltas, updates) -> dict[str, jax.Array]:
    """The body of :func:`layer_norms`, with no checks."""

    def stack(xs):
        return jnp.stack([_frobenius_norm(x) for x in xs])

    weight_norm = stack(p["w"] for p in params)
    norms = {
        "weight_norm": weight_norm,
        "grad_norm": stack(g["w"] for g in grads),
        "bias_grad_norm": stack(g["b"] for g in grads),
    }
    if deltas is not None:
        norms["delta_norm"] = stack(deltas)
    if updates is not None:
        norms["update_ratio"] = stack(u["w"] for u in updates) / weight_norm
    return norms


def gradient_report(
    model: MLP, loss: str | Loss, params: Params, x: jax.Array, y: jax.Array
) -> dict[str, jax.Array]:
    """One backward pass, summarised layer by layer.

    Runs :func:`gdjax.backprop_with_deltas` and returns :func:`layer_norms`
    (with ``"delta_norm"``) plus

    .. math::

        \\text{vanishing\\_ratio} = \\|∂C/∂w^1\\|_F / \\|∂C/∂w^L\\|_F

    which is ≪ 1 when gradients vanish towards the input and ≫ 1 when they
    explode. Jittable with ``model`` and ``loss`` static.

    Args:
      model: the network structure.
      loss: a :class:`~gdjax.losses.Loss` or its name.
      params: ``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]``.
      x: inputs of shape ``(batch, n_0)``.
      y: targets, as the loss expects them.

    Returns:
      The :func:`layer_norms` dict (``(L,)`` arrays) with two scalars added:
      ``"vanishing_ratio"`` and ``"loss"`` (the cost C).

    Examples:
      >>> model = MLP(sizes=(2, 8, 8, 1), activation="tanh")
      >>> params = model.init(jax.random.key(0))
      >>> report = jax.jit(gradient_report, static_argnums=(0, 1))(
      ...     model, "mse", params, jnp.ones((4, 2)), jnp.zeros((4, 1)))
      >>> report["grad_norm"].shape, report["vanishing_ratio"].shape
      ((3,), ())
    """
    loss = losses.get(loss)
    check_batch(model, loss, params, x, y)
    return _jit.call(_gradient_report, (model, loss), params, x, y)


def _gradient_report(model: MLP, loss: Loss, params: Params, x, y) -> dict[str, jax.Array]:
    value, grads, deltas = backprop_with_deltas(model, loss, params, x, y)
    norms = _layer_norms(params, grads, deltas, None)
    norms["vanishing_ratio"] = norms["grad_norm"][0] / norms["grad_norm"][-1]
    norms["loss"] = value
    return norms


_COLUMNS = (  # (key in the norms dict, column header)
    ("weight_norm", "‖w‖"),
    ("grad_norm", "‖∂C/∂w‖"),
    ("bias_grad_norm", "‖∂C/∂b‖"),
    ("delta_norm", "‖δ‖"),
    ("grad_ratio", "‖∂C/∂w‖/last"),
    ("update_ratio", "‖Δw‖/‖w‖"),
)


def format_table(norms: Mapping[str, jax.Array], model: MLP | None = None) -> str:
    """A per-layer table of :func:`layer_norms` or :func:`gradient_report`, for humans.

    One row per layer l = 1 … L; the columns present in ``norms`` are shown,
    plus ``‖∂C/∂w‖/last`` = ‖∂C/∂w^l‖ / ‖∂C/∂w^L‖ when ``"grad_norm"`` is
    there, and the weight shape ``(n_l, n_{l-1})`` when ``model`` is given.
    Scalars (``"vanishing_ratio"``, ``"loss"``) follow the table.

    Args:
      norms: a dict of ``(L,)`` arrays (and optional scalars), on host or device.
      model: optional; adds the shape column.

    Returns:
      The table as a string; ``print`` it.

    Examples:
      >>> norms = {"weight_norm": jnp.array([2.0, 1.0]), "grad_norm": jnp.array([1e-3, 0.1])}
      >>> print(format_table(norms, MLP(sizes=(3, 4, 1))))
      layer  shape   ‖w‖        ‖∂C/∂w‖    ‖∂C/∂w‖/last
      1      (4, 3)  2.000e+00  1.000e-03  1.000e-02
      2      (1, 4)  1.000e+00  1.000e-01  1.000e+00
    """
    if not isinstance(norms, Mapping):
        raise ValueError(
            f"norms: expected the dict returned by layer_norms or gradient_report, "
            f"got {type(norms).__name__}."
        )
    host = {k: np.asarray(v) for k, v in norms.items()}
    per_layer = {k: v for k, v in host.items() if v.ndim == 1}
    if not per_layer:
        raise ValueError(
            f"norms: expected at least one per-layer (L,) array such as 'grad_norm', "
            f"got keys {sorted(host)}."
        )
    lengths = {len(v) for v in per_layer.values()}
    if len(lengths) != 1:
        raise ValueError(
            f"norms: expected every per-layer array to have the same length L, got "
            f"{ {k: len(v) for k, v in per_layer.items()} }."
        )
    (num_layers,) = lengths
    if "grad_norm" in per_layer:
        per_layer["grad_ratio"] = per_layer["grad_norm"] / per_layer["grad_norm"][-1]
    if model is not None and model.num_layers != num_layers:
        raise ValueError(
            f"model: expected {num_layers} layers to match norms, got sizes {model.sizes} "
            f"({model.num_layers} layers)."
        )

    header = ["layer"]
    rows = [[str(layer + 1)] for layer in range(num_layers)]
    if model is not None:
        header.append("shape")
        for layer, row in enumerate(rows):
            row.append(f"({model.sizes[layer + 1]}, {model.sizes[layer]})")
    for key, title in _COLUMNS:
        if key in per_layer:
            header.append(title)
            for row, value in zip(rows, per_layer[key], strict=True):
                row.append(f"{value:.3e}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    for key in ("vanishing_ratio", "loss"):
        if key in host and host[key].ndim == 0:
            lines.append(f"{key}: {float(host[key]):.3e}")
    return "\n".join(lines)
