"""Backpropagation written by hand: the δ equations of the seed tutorial.

For a batch (rows are examples) and a cost C that is a mean over examples:

    δ^L = ∂C/∂a^L ⊙ σ'(z^L)                          (output layer)
    δ^l = (δ^{l+1} w^{l+1}) ⊙ σ'(z^l)                 (l = L−1 … 1)
    ∂C/∂w^l = (δ^l)ᵀ a^{l-1} = Σ_x δ^l_x (a^{l-1}_x)ᵀ
    ∂C/∂b^l = Σ_x δ^l_x

The second line is the seed's ((w^{l+1})ᵀ δ^{l+1}) ⊙ σ'(z^l) with examples as
rows. Here ``δ^l`` is the matrix ``∂C/∂z^l`` of shape ``(batch, n_l)``: row x is the
derivative of the *batch* cost with respect to example x's pre-activation,
which is 1/n times the seed's per-example δ^l_x (for one example they are the
same). No JAX differentiation function is called: the only derivatives used
are the hand-written ``Activation.derivative`` (σ'(z^l), given a^l too, which
tanh uses to skip a division) and ``Loss.grad``.

``backprop`` works under ``jax.jit`` with ``model`` and ``loss`` static and
returns the same pytree as ``jax.value_and_grad(objective(model, loss))``.
Called eagerly, ``backprop``, ``backprop_with_deltas``, ``deltas`` and
``objective``'s f check their inputs and then run one program compiled once
per (model, loss) and shapes (:mod:`gdjax._jit`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gdjax import _jit, losses
from gdjax._checks import check_examples, check_finite, shape_of
from gdjax.losses import Loss
from gdjax.mlp import MLP, Params

__all__ = ["backprop", "backprop_with_deltas", "deltas", "objective", "check_batch"]


def check_batch(
    model: MLP, loss: Loss, params: Params, x, y, *, finite_params: bool = True
) -> None:
    """Raise ``ValueError`` (naming the argument) unless params, x and y fit model and loss.

    Reads shapes and dtypes, and, for concrete arrays (not tracers), the values:
    label ranges, and no NaN/Inf in ``x``, ``y`` and (unless ``finite_params``
    is False) ``params``. So it runs while tracing, before anything is compiled.
    """
    if not isinstance(model, MLP):
        raise ValueError(f"model: expected a gdjax.MLP, got {type(model).__name__}.")
    if not isinstance(loss, Loss):
        raise ValueError(f"loss: expected a gdjax.losses.Loss, got {type(loss).__name__}.")
    model.check_params(params)
    model.check_input(x)
    check_examples(x, y)
    loss.check((shape_of(x)[0], model.sizes[-1]), y)
    check_finite("x", x)
    check_finite("y", y)
    if finite_params:
        for layer, p in enumerate(params):
            for name in ("w", "b"):
                check_finite(f"params[{layer}][{name!r}]", p[name])


def objective(model: MLP, loss: str | Loss) -> Callable[[Params, jax.Array, jax.Array], jax.Array]:
    """The scalar cost ``f(params, x, y) = C(a^L(x; params), y)``.

    ``jax.value_and_grad(objective(model, loss))(params, x, y)`` is the
    autodiff reference for :func:`backprop`.

    >>> from gdjax import MLP
    >>> model = MLP((2, 3, 1), activation="tanh")
    >>> f = objective(model, "mse")
    >>> params = model.init(jax.random.key(0))
    >>> f(params, jnp.zeros((4, 2)), jnp.zeros((4, 1))).shape
    ()
    """
    loss = losses.get(loss)

    def f(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
        check_batch(model, loss, params, x, y)
        return _jit.call(_cost, (model, loss), params, x, y)

    return f


def _cost(model: MLP, loss: Loss, params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    """C(a^L(x; params), y), unchecked: the body :func:`objective`'s f compiles."""
    return loss.fn(model.apply(params, x), y)


def backprop_with_deltas(
    model: MLP, loss: str | Loss, params: Params, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, Params, list[jax.Array]]:
    """Like :func:`backprop`, also returning every δ^l.

    Returns:
      ``(C, grads, deltas)`` with ``deltas[l-1] = δ^l = ∂C/∂z^l`` of shape
      ``(batch, n_l)`` for l = 1 … L.
    """
    loss = losses.get(loss)
    check_batch(model, loss, params, x, y)
    return _jit.call(_backprop_with_deltas, (model, loss), params, x, y)


def _backprop_with_deltas(
    model: MLP, loss: Loss, params: Params, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, Params, list[jax.Array]]:
    """The δ recursion of :func:`backprop_with_deltas`, its inputs already checked."""
    zs, acts = model.trace(params, x)
    value = loss.fn(acts[-1], y)

    num_layers = model.num_layers
    deltas: list[jax.Array] = [None] * num_layers  # type: ignore[list-item]
    grads: Params = [None] * num_layers  # type: ignore[list-item]
    # δ^L = ∂C/∂a^L ⊙ σ'(z^L)
    delta = loss.grad(acts[-1], y) * model.output_activation.derivative(zs[-1], acts[-1])
    for layer in reversed(range(num_layers)):
        deltas[layer] = delta
        # ∂C/∂w^l = (δ^l)ᵀ a^{l-1},  ∂C/∂b^l = Σ_x δ^l_x
        grads[layer] = {"w": delta.T @ acts[layer], "b": jnp.sum(delta, axis=0)}
        if layer > 0:
            # δ^{l-1} = (δ^l w^l) ⊙ σ'(z^{l-1})
            delta = (delta @ params[layer]["w"]) * model.activation.derivative(
                zs[layer - 1], acts[layer]
            )
    return value, grads, deltas


def backprop(
    model: MLP, loss: str | Loss, params: Params, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, Params]:
    """The cost and its gradient by hand-written backpropagation.

    .. math::

        δ^L = ∇_a C ⊙ σ'(z^L),\\quad δ^l = ((w^{l+1})^T δ^{l+1}) ⊙ σ'(z^l),\\quad
        ∂C/∂w^l = δ^l (a^{l-1})^T,\\quad ∂C/∂b^l = δ^l

    summed over the examples of the batch.

    Args:
      model: the network structure (static under ``jit``).
      loss: a :class:`~gdjax.losses.Loss` or its name (static under ``jit``).
      params: ``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]``.
      x: inputs of shape ``(batch, n_0)``.
      y: targets, as the loss expects them.

    Returns:
      ``(C, grads)``, the same pytree as ``jax.value_and_grad(objective(model, loss))``.

    Examples:
      >>> from gdjax import MLP
      >>> model = MLP((1, 1, 1), activation="sigmoid", output_activation="sigmoid")
      >>> params = model.init(jax.random.key(0))
      >>> value, grads = backprop(model, "mse", params, jnp.ones((1, 1)), jnp.zeros((1, 1)))
      >>> jax.tree.map(jnp.shape, grads)
      [{'b': (1,), 'w': (1, 1)}, {'b': (1,), 'w': (1, 1)}]

    References:
      Rumelhart, Hinton & Williams (1986), "Learning representations by
      back-propagating errors"; Nielsen, *Neural Networks and Deep Learning*, ch. 2.
    """
    value, grads, _ = backprop_with_deltas(model, loss, params, x, y)
    return value, grads


def deltas(
    model: MLP, loss: str | Loss, params: Params, x: jax.Array, y: jax.Array
) -> list[jax.Array]:
    """The error terms ``δ^l = ∂C/∂z^l``, l = 1 … L, each of shape ``(batch, n_l)``."""
    return backprop_with_deltas(model, loss, params, x, y)[2]
