"""The seed tutorial's two worked examples, number for number, with hand derivatives.

1. **The chain of two linear functions** (section "Gradient Descent for Scalar
   Functions")::

       z = f(x, w1) = x·w1 + b1,    L = g(z, w2) = z·w2 + b2
       ∂L/∂w1 = ∂L/∂z · ∂z/∂w1 = w2 · x,    ∂L/∂w2 = z
       E = ½ (L − L_target)²

   With x = 2, b1 = 1, b2 = 0.5, w1 = 0.5, w2 = 1.5 (:data:`SEED_CHAIN`):
   z = 2, L = 3.5, E = 1.125, ∂L/∂w1 = 3, ∂L/∂w2 = 2. The tutorial then
   *raises* L toward the target 5 with ``w ← w + α ∂L/∂w``: α = 0.2 gives
   w1 = 1.1, w2 = 1.9, L = 6.58 (overshoot); α = 0.1 gives w1 = 0.8, w2 = 1.7,
   L = 4.92.

2. **The one-neuron-per-layer sigmoid network** (section "Gradient Descent for
   a Two-Layer Neural Network")::

       z1 = w1 x + b1,  a1 = σ(z1),  z2 = w2 a1 + b2,  a2 = σ(z2),  C = ½ (y − a2)²
       δ2 = −(y − a2) σ'(z2),       ∂C/∂w2 = δ2 a1,  ∂C/∂b2 = δ2
       δ1 = δ2 w2 σ'(z1),           ∂C/∂w1 = δ1 x,   ∂C/∂b1 = δ1

   It is ``MLP(sizes=(1, 1, 1), activation="sigmoid", output_activation="sigmoid")``
   with the ``mse`` loss on one example; :func:`sigmoid_net_to_mlp_params`
   converts between the two.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gdjax.activations import sigmoid

__all__ = [
    "ChainExample",
    "SEED_CHAIN",
    "chain_forward",
    "chain_error",
    "chain_grads",
    "chain_step",
    "SigmoidNet",
    "SigmoidNetForward",
    "sigmoid_net_forward",
    "sigmoid_net_cost",
    "sigmoid_net_backprop",
    "sigmoid_net_step",
    "sigmoid_net_to_mlp_params",
]

Scalar = float | jax.Array


# ---------------------------------------------------------------- 1. the chain L = g(f(x, w1), w2)


class ChainExample(NamedTuple):
    """The numbers of the seed's chain example."""

    x: float = 2.0
    b1: float = 1.0
    b2: float = 0.5
    w1: float = 0.5
    w2: float = 1.5
    target: float = 5.0


SEED_CHAIN = ChainExample()


def chain_forward(
    w1: Scalar, w2: Scalar, *, x: Scalar = 2.0, b1: Scalar = 1.0, b2: Scalar = 0.5
) -> tuple[Scalar, Scalar]:
    """``z = x·w1 + b1`` and ``L = z·w2 + b2``.

    >>> chain_forward(0.5, 1.5)
    (2.0, 3.5)
    """
    z = x * w1 + b1
    return z, z * w2 + b2


def chain_error(L: Scalar, target: Scalar = 5.0) -> Scalar:
    """``E = ½ (L − L_target)²``.

    >>> chain_error(3.5)
    1.125
    """
    return 0.5 * (L - target) ** 2


def chain_grads(
    w1: Scalar, w2: Scalar, *, x: Scalar = 2.0, b1: Scalar = 1.0, b2: Scalar = 0.5
) -> tuple[Scalar, Scalar]:
    """``(∂L/∂w1, ∂L/∂w2) = (∂L/∂z · ∂z/∂w1, z) = (w2 · x, x·w1 + b1)`` by the chain rule.

    >>> chain_grads(0.5, 1.5)
    (3.0, 2.0)
    """
    z, _ = chain_forward(w1, w2, x=x, b1=b1, b2=b2)
    dL_dz = w2  # ∂(z·w2 + b2)/∂z
    dz_dw1 = x  # ∂(x·w1 + b1)/∂w1
    return dL_dz * dz_dw1, z


def chain_step(
    w1: Scalar,
    w2: Scalar,
    alpha: Scalar,
    *,
    x: Scalar = 2.0,
    b1: Scalar = 1.0,
    b2: Scalar = 0.5,
) -> tuple[Scalar, Scalar]:
    """The seed's update ``w ← w + α ∂L/∂w``, which raises L toward a larger target.

    The tutorial adds the gradient because it wants L to grow from 3.5 to 5; to
    *minimise* an error one subtracts the gradient of E instead.

    >>> chain_step(0.5, 1.5, 0.2)  # doctest: +ELLIPSIS
    (1.1..., 1.9...)
    """
    dw1, dw2 = chain_grads(w1, w2, x=x, b1=b1, b2=b2)
    return w1 + alpha * dw1, w2 + alpha * dw2


# ---------------------------------------------------------------- 2. the one-neuron sigmoid network


class SigmoidNet(NamedTuple):
    """Weights and biases of the one-neuron-per-layer network (also its gradients)."""

    w1: Scalar
    b1: Scalar
    w2: Scalar
    b2: Scalar


class SigmoidNetForward(NamedTuple):
    """Every intermediate value of the forward pass."""

    z1: Scalar
    a1: Scalar
    z2: Scalar
    a2: Scalar


def sigmoid_net_forward(p: SigmoidNet, x: Scalar) -> SigmoidNetForward:
    """``z1 = w1 x + b1, a1 = σ(z1), z2 = w2 a1 + b2, a2 = σ(z2)``."""
    z1 = p.w1 * x + p.b1
    a1 = sigmoid.fn(z1)
    z2 = p.w2 * a1 + p.b2
    a2 = sigmoid.fn(z2)
    return SigmoidNetForward(z1, a1, z2, a2)


def sigmoid_net_cost(p: SigmoidNet, x: Scalar, y: Scalar) -> Scalar:
    """``C = ½ (y − a2)²``."""
    return 0.5 * (y - sigmoid_net_forward(p, x).a2) ** 2


def sigmoid_net_backprop(
    p: SigmoidNet, x: Scalar, y: Scalar
) -> tuple[Scalar, SigmoidNet, tuple[Scalar, Scalar]]:
    """The cost, its gradient and the error terms, by the seed's δ equations.

        δ2 = −(y − a2) σ'(z2),   ∂C/∂w2 = δ2 a1,   ∂C/∂b2 = δ2
        δ1 = δ2 w2 σ'(z1),       ∂C/∂w1 = δ1 x,    ∂C/∂b1 = δ1

    Returns:
      ``(C, SigmoidNet(∂C/∂w1, ∂C/∂b1, ∂C/∂w2, ∂C/∂b2), (δ1, δ2))``.
    """
    fwd = sigmoid_net_forward(p, x)
    delta2 = -(y - fwd.a2) * sigmoid.deriv(fwd.z2)
    delta1 = delta2 * p.w2 * sigmoid.deriv(fwd.z1)
    grads = SigmoidNet(w1=delta1 * x, b1=delta1, w2=delta2 * fwd.a1, b2=delta2)
    return 0.5 * (y - fwd.a2) ** 2, grads, (delta1, delta2)


def sigmoid_net_step(p: SigmoidNet, x: Scalar, y: Scalar, eta: Scalar) -> SigmoidNet:
    """One gradient-descent step ``w ← w − η ∂C/∂w`` on every weight and bias."""
    _, grads, _ = sigmoid_net_backprop(p, x, y)
    return SigmoidNet(*(w - eta * g for w, g in zip(p, grads, strict=True)))


def sigmoid_net_to_mlp_params(p: SigmoidNet, dtype=None) -> list[dict[str, jax.Array]]:
    """The same network as params of ``MLP(sizes=(1, 1, 1), ...)``."""
    return [
        {"w": jnp.full((1, 1), p.w1, dtype), "b": jnp.full((1,), p.b1, dtype)},
        {"w": jnp.full((1, 1), p.w2, dtype), "b": jnp.full((1,), p.b2, dtype)},
    ]
