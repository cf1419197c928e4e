"""Losses C(a^L, y) and their gradients ∂C/∂a^L, each written by hand.

Every loss is a **mean over the n examples of a per-example sum over output
units**, so its gradient with respect to the prediction carries a factor 1/n:

    mse:                     C = 1/(2n) Σ_x ‖y(x) − a^L(x)‖²          (the seed's C)
                             ∂C/∂a^L = (a^L − y) / n
    softmax_cross_entropy:   C = −1/n Σ_x Σ_k y_k log softmax(z)_k      (z = logits)
                             ∂C/∂z = (softmax(z)·Σ_k y_k − y) / n
    sigmoid_binary_cross_entropy:
                             C = 1/n Σ_x Σ_k [log(1 + e^{z_k}) − y_k z_k]
                             ∂C/∂z = (σ(z) − y) / n

The cross-entropies take logits (pair them with ``output_activation="identity"``)
and are evaluated in a numerically stable form: logits of ±1e4 give finite
values and gradients. ``softmax_cross_entropy`` takes integer labels of shape
``(n,)`` or one-hot / probability targets of shape ``(n, k)``. Floating targets
are cast to the prediction's dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._checks import is_concrete

__all__ = ["Loss", "get", "names"]


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss with its hand-written gradient.

    Attributes:
      name: the registry name, e.g. ``"mse"``.
      fn: ``(pred, y) ↦ C``, a scalar: the mean over examples (rows of ``pred``).
      grad: ``(pred, y) ↦ ∂C/∂pred``, same shape as ``pred``, written by hand.
      check: ``(pred_shape, y) ↦ None``; raises ``ValueError`` naming ``y`` when
        the targets do not fit a prediction of shape ``pred_shape``. It reads
        only shapes and dtypes, and values too when ``y`` is a concrete array.

    Instances are frozen and hashable (static under ``jax.jit``).
    """

    name: str
    fn: Callable[[jax.Array, jax.Array], jax.Array] = dataclasses.field(repr=False)
    grad: Callable[[jax.Array, jax.Array], jax.Array] = dataclasses.field(repr=False)
    check: Callable[[tuple[int, ...], jax.Array], None] = dataclasses.field(
        default=lambda pred_shape, y: None, repr=False
    )

    def __call__(self, pred: jax.Array, y: jax.Array) -> jax.Array:
        """``fn(pred, y)`` after ``check(pred.shape, y)``: no silent broadcasting."""
        if len(np.shape(pred)) != 2:
            raise ValueError(
                f"pred: expected shape (batch, outputs), one row per example, got {np.shape(pred)}."
            )
        self.check(tuple(np.shape(pred)), y)
        return self.fn(pred, y)


def _shape_of(y) -> tuple[int, ...]:
    return tuple(np.shape(y))


def _check_real(y) -> None:
    dtype = np.dtype(y.dtype) if hasattr(y, "dtype") else np.asarray(y).dtype
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        raise ValueError(f"y: expected real (integer or floating) targets, got dtype {dtype}.")


def _check_same_shape(pred_shape, y) -> None:
    _check_real(y)
    if _shape_of(y) != tuple(pred_shape):
        hint = ""
        if len(pred_shape) == 2 and pred_shape[1] == 1 and _shape_of(y) == (pred_shape[0],):
            hint = " Reshape the targets with y[:, None]."
        raise ValueError(
            f"y: expected shape {tuple(pred_shape)} (one row per example, one column per "
            f"output unit), got {_shape_of(y)}.{hint}"
        )


# ---------------------------------------------------------------- mse


def _mse(a, y):
    y = jnp.asarray(y, a.dtype)
    return 0.5 * jnp.mean(jnp.sum((y - a) ** 2, axis=-1))


def _mse_grad(a, y):
    y = jnp.asarray(y, a.dtype)
    return (a - y) / a.shape[0]


mse = Loss("mse", _mse, _mse_grad, _check_same_shape)


# ---------------------------------------------------------------- softmax cross-entropy


def _as_distribution(z, y):
    """Integer labels (n,) become one-hot rows (n, k); (n, k) targets pass through."""
    if jnp.issubdtype(y.dtype, jnp.integer):
        return jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
    return y.astype(z.dtype)


def _log_softmax(z):
    # log softmax(z)_k = z_k − log Σ_j e^{z_j}; logsumexp subtracts max z first.
    return z - jax.nn.logsumexp(z, axis=-1, keepdims=True)


def _softmax_ce(z, y):
    y = _as_distribution(z, jnp.asarray(y))
    return -jnp.mean(jnp.sum(y * _log_softmax(z), axis=-1))


def _softmax_ce_grad(z, y):
    y = _as_distribution(z, jnp.asarray(y))
    p = jnp.exp(_log_softmax(z))
    return (p * jnp.sum(y, axis=-1, keepdims=True) - y) / z.shape[0]


def _check_softmax_ce(pred_shape, y) -> None:
    n, k = pred_shape
    _check_real(y)
    dtype = np.dtype(y.dtype) if hasattr(y, "dtype") else np.asarray(y).dtype
    if np.issubdtype(dtype, np.integer):
        if _shape_of(y) != (n,):
            raise ValueError(
                f"y: expected integer labels of shape ({n},) or targets of shape ({n}, {k}), "
                f"got integer array of shape {_shape_of(y)}."
            )
        if is_concrete(y) and n > 0:
            labels = np.asarray(y)  # host copy: jnp reductions would be staged inside a trace
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= k:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"y: expected integer labels in [0, {k - 1}] for {k} output units, "
                    f"got label {bad}."
                )
    else:
        if _shape_of(y) != (n, k):
            raise ValueError(
                f"y: expected integer labels of shape ({n},) or one-hot/probability targets "
                f"of shape ({n}, {k}), got {dtype} array of shape {_shape_of(y)}."
            )


softmax_cross_entropy = Loss(
    "softmax_cross_entropy", _softmax_ce, _softmax_ce_grad, _check_softmax_ce
)


# ---------------------------------------------------------------- sigmoid binary cross-entropy


def _sigmoid_bce(z, y):
    y = jnp.asarray(y, z.dtype)
    # −[y log σ(z) + (1 − y) log(1 − σ(z))] = log(1 + e^z) − y z, with a stable log(1 + e^z).
    return jnp.mean(jnp.sum(jnp.logaddexp(z, 0) - y * z, axis=-1))


def _sigmoid_bce_grad(z, y):
    y = jnp.asarray(y, z.dtype)
    return (jax.nn.sigmoid(z) - y) / z.shape[0]


def _check_sigmoid_bce(pred_shape, y) -> None:
    _check_same_shape(pred_shape, y)
    if is_concrete(y) and np.size(y) > 0:
        targets = np.asarray(y)  # host copy: jnp reductions would be staged inside a trace
        lo, hi = float(targets.min()), float(targets.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"y: expected binary targets in [0, 1], got values in [{lo}, {hi}].")


sigmoid_binary_cross_entropy = Loss(
    "sigmoid_binary_cross_entropy", _sigmoid_bce, _sigmoid_bce_grad, _check_sigmoid_bce
)


_REGISTRY: dict[str, Loss] = {
    loss.name: loss for loss in (mse, softmax_cross_entropy, sigmoid_binary_cross_entropy)
}


def names() -> tuple[str, ...]:
    """The names :func:`get` accepts."""
    return tuple(_REGISTRY)


def get(name: str | Loss) -> Loss:
    """Return the loss called ``name`` (a :class:`Loss` passes through).

    >>> float(get("mse")(jnp.array([[3.5]]), jnp.array([[5.0]])))  # the seed's E = ½(3.5 − 5)²
    1.125
    """
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"loss: expected one of {', '.join(names())} or a Loss, got {name!r}.")
    return _REGISTRY[name]
