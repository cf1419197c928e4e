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
values and gradients. Their gradients do not cancel on confident logits:
softmax(z)_y − 1 is −Σ_{j≠y} softmax(z)_j and σ(z) − 1 is −σ(−z), to rounding,
where ``exp(z − logsumexp z) − y`` and ``jax.grad`` round them to 0
(docs/precision.md). ``softmax_cross_entropy`` takes integer labels of shape
``(n,)`` or one-hot / probability targets of shape ``(n, k)``. Floating targets
are cast to the prediction's dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _jit
from gdjax._checks import check_finite, is_concrete

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
        """``fn(pred, y)`` after ``check(pred.shape, y)``: no silent broadcasting.

        Also refused (a ValueError naming the argument): an empty batch (the mean
        over no examples is NaN) and, for concrete arrays, NaN or ±Inf in ``pred``
        or ``y``.
        """
        if len(np.shape(pred)) != 2:
            raise ValueError(
                f"pred: expected shape (batch, outputs), one row per example, got {np.shape(pred)}."
            )
        if np.shape(pred)[0] == 0:
            raise ValueError(
                f"pred: expected at least one example (row): the loss is a mean over "
                f"examples, got shape {np.shape(pred)}."
            )
        self.check(tuple(np.shape(pred)), y)
        check_finite("pred", pred)
        check_finite("y", y)
        return _jit.call(_value, (self,), pred, y)


def _value(loss: Loss, pred: jax.Array, y: jax.Array) -> jax.Array:
    """``loss.fn(pred, y)``: what :meth:`Loss.__call__` compiles once per loss and shapes."""
    return loss.fn(pred, y)


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
    # ∂C/∂z_k = (p_k S − y_k)/n, S = Σ_j y_j, p = softmax(z) = e / Σ_j e_j with
    # e_j = e^{z_j − z_c} ∈ (0, 1] and c = argmax z (so e_c = 1). Every p_k, k ≠ c, is at most
    # ½ and keeps its digits. p_c is near 1 for a confident row, where p_c S − y_c cancels
    # (as exp(z − logsumexp z) − y and autodiff do) when y_c is near S: there it is
    # evaluated as (S − y_c) − S(1 − p_c) = Σ_{j≠c} y_j − S Σ_{j≠c} e_j / Σ_j e_j, from sums
    # of non-negative terms, so a one-hot row gets −(1 − p_c) to rounding however confident
    # it is. Of the two forms, the one whose terms are smaller (so round less) is taken:
    # the second when Σ_{j≠c} y_j < S p_c.
    y = _as_distribution(z, jnp.asarray(y))
    e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
    lead = jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=jnp.bool_)
    total = jnp.sum(e, axis=-1, keepdims=True)
    s = jnp.sum(y, axis=-1, keepdims=True)
    p = e / total
    rest_e = jnp.sum(jnp.where(lead, 0, e), axis=-1, keepdims=True)  # Σ_{j≠c} e_j
    rest_y = jnp.sum(jnp.where(lead, 0, y), axis=-1, keepdims=True)  # Σ_{j≠c} y_j
    p_lead = 1 / total  # p_c, since e_c = 1
    g = jnp.where(lead & (rest_y < s * p_lead), rest_y - s * (rest_e / total), p * s - y)
    return g / z.shape[0]


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
        if is_concrete(y) and n > 0:
            _check_distributions(np.asarray(y))


def _check_distributions(targets: np.ndarray) -> None:
    """Float targets of softmax cross-entropy: each row a distribution over the k classes,
    entries ≥ 0 summing to 1 within √ε of the dtype (3.5e-4 in float32, 1.5e-8 in float64).
    NaN/Inf are left to the finiteness checks."""
    if not np.all(np.isfinite(targets)):
        return
    negative = np.argwhere(targets < 0)
    if negative.size:
        i, j = negative[0]
        raise ValueError(
            f"y: expected one-hot or probability rows with entries ≥ 0, got y[{i}, {j}] = "
            f"{float(targets[i, j])!r} ({len(negative)} negative entries)."
        )
    tol = float(np.sqrt(np.finfo(targets.dtype).eps)) if targets.dtype.kind == "f" else 0.0
    sums = targets.sum(axis=-1, dtype=np.float64)
    bad = np.flatnonzero(np.abs(sums - 1) > tol * max(1, targets.shape[-1]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"y: expected one-hot or probability rows that sum to 1, got row {i} summing to "
            f"{sums[i]:.6g} ({bad.size} of {len(sums)} rows off by more than "
            f"{tol * max(1, targets.shape[-1]):.2g}). Pass integer labels of shape "
            f"({len(sums)},) for hard labels."
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
    # σ(z) − y. For z > 0, σ(z) > ½ is rounded near 1 and σ(z) − y would cancel for y near 1:
    # there it is (1 − y) − σ(−z), with σ(−z) < ½ keeping its digits, so y = 1 gets −σ(−z).
    y = jnp.asarray(y, z.dtype)
    g = jnp.where(z > 0, (1 - y) - jax.nn.sigmoid(-z), jax.nn.sigmoid(z) - y)
    return g / z.shape[0]


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
