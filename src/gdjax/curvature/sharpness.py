"""Sharpness during training: λ_max(H) recorded by a :func:`~gdjax.train.fit` callback.

- :func:`track_sharpness` — a :class:`SharpnessTracker`, a callback that runs
  warm-started Lanczos (:func:`~gdjax.curvature.top_eigenvalues`) on the full
  batch every time it is called, to watch λ_max reach 2/η (the edge of stability).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from gdjax import models
from gdjax._checks import (
    check_examples,
    check_finite,
    check_finite_number,
    check_num_examples,
    check_positive_int,
    shape_of,
)
from gdjax.curvature.eigen import top_eigenvalues
from gdjax.curvature.products import _check_data_chunk, _check_key
from gdjax.losses import Loss
from gdjax.mlp import MLP

__all__ = ["track_sharpness", "SharpnessTracker"]

PyTree = Any


# ---------------------------------------------------------------- sharpness during training


class SharpnessTracker:
    """A :func:`~gdjax.train.fit` callback that records the sharpness ``λ_max(H)``.

    Made by :func:`track_sharpness`. Each call ``tracker(epoch, params, opt_state,
    history)`` runs Lanczos (:func:`top_eigenvalues`, k = 1) on the full batch
    ``(x, y)`` given to :func:`track_sharpness` (by chunks of ``data_chunk``
    examples if given), started from the previous call's top eigenvector (warm
    start), and appends one record. ``opt_state`` and
    ``history`` are ignored, so ``tracker(0, params)`` records the start.

    Attributes (numpy arrays, one entry per call):
      epochs: the epochs at which sharpness was recorded.
      sharpness: ``λ_max(H)`` there.
      hvps: the Hessian-vector products each Lanczos run took.
      converged: whether each run met the tolerance.
      eigenvector: the latest top eigenvector (a params-shaped pytree), or None.
    """

    def __init__(
        self,
        f: Callable[..., jax.Array],
        x: jax.Array,
        y: jax.Array,
        *,
        key: jax.Array,
        tol: float,
        max_iters: int | None,
        warm_start: bool,
        data_chunk: int | None = None,
    ):
        self.f, self.x, self.y = f, x, y
        self.key, self.tol, self.max_iters, self.warm_start = key, tol, max_iters, warm_start
        self.data_chunk = data_chunk
        self.eigenvector: PyTree | None = None
        self._records: list[tuple[int, float, int, bool]] = []

    def __call__(
        self, epoch: int, params: PyTree, opt_state: Any = None, history: Any = None
    ) -> float:
        """Record and return ``λ_max`` at ``params`` (``epoch`` is the record's label)."""
        del opt_state, history
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative integer, got {epoch!r}.")
        eig = top_eigenvalues(
            self.f,
            params,
            1,
            self.x,
            self.y,
            key=jax.random.fold_in(self.key, epoch),
            tol=self.tol,
            max_iters=self.max_iters,
            data_chunk=self.data_chunk,
            init=self.eigenvector if self.warm_start else None,
        )
        self.eigenvector = eig.eigenvectors[0]
        sharpness = float(eig.eigenvalues[0])
        self._records.append((int(epoch), sharpness, eig.hvps, eig.converged))
        return sharpness

    def _column(self, i: int, dtype) -> np.ndarray:
        return np.asarray([record[i] for record in self._records], dtype)

    @property
    def epochs(self) -> np.ndarray:
        """The epochs at which sharpness was recorded."""
        return self._column(0, np.int64)

    @property
    def sharpness(self) -> np.ndarray:
        """``λ_max(H)`` at each recorded epoch."""
        return self._column(1, np.float64)

    @property
    def hvps(self) -> np.ndarray:
        """The Hessian-vector products each measurement took."""
        return self._column(2, np.int64)

    @property
    def converged(self) -> np.ndarray:
        """Whether each measurement met the tolerance."""
        return self._column(3, bool)


def track_sharpness(
    model: MLP | Callable[[PyTree, jax.Array], jax.Array],
    loss: str | Loss | Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    tol: float = 1e-4,
    max_iters: int | None = None,
    warm_start: bool = True,
    data_chunk: int | None = None,
) -> SharpnessTracker:
    """A :func:`~gdjax.train.fit` callback recording the sharpness λ_max every k epochs.

    The sharpness is the largest eigenvalue of the Hessian of the full-batch
    cost, ``λ_max(∇²C(θ_t))`` with ``C(θ) = loss(apply(θ, x), y)``, for a
    ``gdjax.MLP`` or any model ``apply(params, x)`` over a params pytree. Gradient descent
    with step η on the quadratic model of C is stable only while

    .. math::

        λ_{max} < 2/η,

    and Cohen et al. (2021) observed that full-batch gradient descent on neural
    networks drives λ_max up ("progressive sharpening") until it reaches 2/η,
    then hovers there ("the edge of stability") while the loss keeps falling,
    non-monotonically. The tracker measures this: use it as
    ``fit(..., callback=tracker, callback_every=k)``. Each measurement is Lanczos
    warm-started from the previous top eigenvector, which changes little
    between measurements, so it usually takes fewer Hessian-vector products
    than a random start.

    Args:
      model: a :class:`~gdjax.MLP`, or any function ``apply(params, x)`` (its
        output is checked against the loss at the first call, when params are known).
      loss: a :class:`~gdjax.losses.Loss`, its name, or a function ``loss(output, y)``.
      x, y: the batch C is evaluated on: the whole training set for full-batch GD.
      key: PRNG key (the first start vector, and restarts; folded with the epoch).
      tol: Lanczos' relative residual tolerance (see :func:`top_eigenvalues`).
      max_iters: most Lanczos steps per measurement (default ``min(n, 100)``).
      warm_start: start each Lanczos run from the previous top eigenvector.
      data_chunk: ``None``, or k examples per chunk: every product is accumulated
        over chunks of ``(x, y)`` (see :func:`~gdjax.curvature.hvp`), so memory
        follows k, not the size of the training set.

    Returns:
      A :class:`SharpnessTracker`: call it as ``tracker(epoch, params, opt_state,
      history)``; read ``tracker.epochs``, ``tracker.sharpness``, ``tracker.hvps``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gdjax import MLP
      >>> from gdjax.train import fit
      >>> model = MLP((1, 1), activation="identity")   # C = 1/(2n) Σ (wx + b − y)²
      >>> x, y = jnp.array([[1.0], [-1.0]]), jnp.array([[0.0], [1.0]])
      >>> tracker = track_sharpness(model, "mse", x, y, key=jax.random.key(0))
      >>> _ = fit(model, "mse", "sgd", (x, y), epochs=4, key=jax.random.key(1),
      ...         learning_rate=0.1, callback=tracker, callback_every=2, progress=False)
      >>> tracker.epochs.tolist(), tracker.sharpness.round(6).tolist()   # H = I here
      ([2, 4], [1.0, 1.0])

    References:
      Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient descent on neural
      networks typically occurs at the edge of stability", ICLR; Jastrzębski et
      al. (2020), "The break-even point on optimization trajectories of deep
      neural networks", ICLR.
    """
    model, loss = models.as_model(model), models.as_loss(loss)
    if models.is_mlp(model):
        model.check_input(x)
        check_num_examples(x, y)
        loss.check((shape_of(x)[0], model.sizes[-1]), y)
    else:  # no params yet: apply's output is checked by objective's check_batch at the first call
        check_examples(x, y)
        check_finite("x", x)
        check_finite("y", y)
    tol = check_finite_number("tol", tol)
    if max_iters is not None:
        max_iters = check_positive_int("max_iters", max_iters)
    if not isinstance(warm_start, bool):
        raise ValueError(f"warm_start: expected True or False, got {warm_start!r}.")
    data_chunk = _check_data_chunk(data_chunk, None, (x, y))
    _check_key(key)
    return SharpnessTracker(
        models.objective(model, loss),
        jax.device_put(x),  # on the device once, not at every product
        jax.device_put(y),
        key=key,
        tol=tol,
        max_iters=max_iters,
        warm_start=warm_start,
        data_chunk=data_chunk,
    )
