"""Metrics beyond the loss, for any model's output: classification accuracy.

They take the output of any model (``apply(params, x)``) and the targets, and
sit with the losses, below training and analysis: ``train.fit`` reports them
and ``landscape`` sweeps them, neither importing the other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdjax.losses import Loss

__all__ = ["accuracy"]


def accuracy(loss: Loss, pred: jax.Array, y: jax.Array) -> jax.Array | None:
    """Fraction of correct predictions, for the classification losses (else ``None``).

    softmax cross-entropy: ``argmax z == label`` (or argmax of the target row);
    sigmoid binary cross-entropy: ``(z > 0) == (y > ½)`` over every output unit.

    >>> from gdjax import losses
    >>> float(accuracy(losses.get("softmax_cross_entropy"), jnp.eye(3), jnp.array([0, 1, 0])))
    0.6666666865348816
    """
    if loss.name == "softmax_cross_entropy":
        labels = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.argmax(y, axis=-1)
        return jnp.mean(jnp.argmax(pred, axis=-1) == labels)
    if loss.name == "sigmoid_binary_cross_entropy":
        return jnp.mean((pred > 0) == (y > 0.5))
    return None
