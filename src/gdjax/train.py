"""Jitted update steps and the training loop: full-batch GD, SGD and minibatches.

One step of gradient descent with an optax optimizer is

    g = ∂C/∂θ (by hand: gdjax.backprop; or by jax.value_and_grad),
    u, s ← optimizer.update(g, s, θ),    θ ← θ + u          (u = −η g for plain SGD)

:func:`make_step` returns that step as one jitted function whose params and
optimizer-state buffers are donated. :func:`fit` runs whole epochs: each epoch
draws a permutation of the n training examples with the key
``fold_in(key, epoch)``, cuts it into ⌊n/B⌋ batches of B examples that run
inside one ``lax.scan``, then one last step on the r = n mod B remaining
examples (a *ragged last batch*: its cost is the mean over those r examples, so
every example is used exactly once per epoch). ``batch_size=None`` is
full-batch gradient descent (one step per epoch), ``1`` is SGD.

Divergence: a step whose batch loss or new params are not finite is not
applied; the epoch finishes without further updates, ``fit`` stops there with
a :class:`DivergedWarning` naming the epoch, the step, the last finite loss and
the learning rate, and returns the last finite params.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from gdjax import diagnostics, losses
from gdjax._checks import check_num_examples, check_positive_int, shape_of
from gdjax.backprop import backprop, check_batch, objective
from gdjax.losses import Loss
from gdjax.mlp import MLP, Params

__all__ = [
    "OPTIMIZERS",
    "make_optimizer",
    "make_step",
    "fit",
    "evaluate",
    "FitResult",
    "DivergedWarning",
]

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": lambda learning_rate, beta=0.9: optax.sgd(learning_rate, momentum=beta),
    "nesterov": lambda learning_rate, beta=0.9: optax.sgd(
        learning_rate, momentum=beta, nesterov=True
    ),
    "rmsprop": optax.rmsprop,
    "adam": optax.adam,
    "adamw": optax.adamw,
}

GradMode = Literal["hand", "auto"]


class DivergedWarning(RuntimeWarning):
    """Training stopped because the loss or the params stopped being finite."""


def make_optimizer(
    optimizer: str | optax.GradientTransformation, **hyperparams: Any
) -> optax.GradientTransformation:
    """An optax transformation from a name and keyword hyper-parameters.

    Names: ``sgd``, ``momentum`` (heavy ball, ``beta``), ``nesterov`` (``beta``),
    ``rmsprop``, ``adam``, ``adamw`` — optax's implementations, whose equations
    :mod:`gdjax.optim` writes out by hand and tests equal. ``learning_rate`` is
    required. A ``GradientTransformation`` passes through (no hyper-parameters).
    """
    if isinstance(optimizer, optax.GradientTransformation):
        if hyperparams:
            raise ValueError(
                f"hyperparams: expected none with an optax transformation (configure it "
                f"when you build it), got {sorted(hyperparams)}."
            )
        return optimizer
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(
            f"optimizer: expected one of {', '.join(OPTIMIZERS)} or an "
            f"optax.GradientTransformation, got {optimizer!r}."
        )
    if "learning_rate" not in hyperparams:
        raise ValueError(
            f"learning_rate: expected a positive number for optimizer {optimizer!r}, got none."
        )
    lr = hyperparams["learning_rate"]
    if not callable(lr) and (isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0):
        raise ValueError(f"learning_rate: expected a positive number, got {lr!r}.")
    try:
        frozen = tuple(sorted(hyperparams.items()))
        hash(frozen)
    except TypeError:  # an unhashable hyper-parameter (e.g. an array): build it afresh
        return _named_optimizer.__wrapped__(optimizer, tuple(hyperparams.items()))
    return _named_optimizer(optimizer, frozen)


@functools.lru_cache(maxsize=64)
def _named_optimizer(name: str, hyperparams: tuple) -> optax.GradientTransformation:
    """One transformation object per (name, hyper-parameters), so that jitted
    functions built on it are reused (and not recompiled) by later calls."""
    try:
        return OPTIMIZERS[name](**dict(hyperparams))
    except TypeError as e:
        raise ValueError(f"hyperparams: not accepted by optimizer {name!r}: {e}") from None


def _grad_fn(model: MLP, loss: Loss, grad: GradMode):
    if grad == "hand":
        return lambda params, x, y: backprop(model, loss, params, x, y)
    if grad == "auto":
        return jax.value_and_grad(objective(model, loss))
    raise ValueError(f"grad: expected 'hand' or 'auto', got {grad!r}.")


def _apply_step(grad_fn, optimizer, params, opt_state, x, y):
    """One update θ ← θ + u with u from the optimizer; returns the pre-update loss."""
    value, grads = grad_fn(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


def make_step(
    model: MLP,
    loss: str | Loss,
    optimizer: str | optax.GradientTransformation,
    grad: GradMode = "hand",
    **hyperparams: Any,
) -> Callable[[Params, Any, jax.Array, jax.Array], tuple[Params, Any, dict[str, jax.Array]]]:
    """A jitted gradient-descent step ``step(params, opt_state, x, y)``.

    .. math::

        g = ∂C/∂θ,\\quad (u, s) = \\mathrm{update}(g, s, θ),\\quad θ ← θ + u

    Args:
      model: the network.
      loss: a :class:`~gdjax.losses.Loss` or its name.
      optimizer: an ``optax.GradientTransformation`` or a name from :data:`OPTIMIZERS`
        with keyword ``hyperparams`` (``learning_rate=...``).
      grad: ``"hand"`` for :func:`gdjax.backprop`, ``"auto"`` for ``jax.value_and_grad``.

    Returns:
      ``step(params, opt_state, x, y) -> (params, opt_state, {"loss": C})``, where
      ``C`` is the batch cost before the update. ``params`` and ``opt_state`` are
      donated: do not reuse the arrays you pass in. Initialise the state with
      ``step.optimizer.init(params)``.

    Examples:
      >>> from gdjax import MLP
      >>> model = MLP((2, 4, 1), activation="tanh")
      >>> step = make_step(model, "mse", "sgd", learning_rate=0.1)
      >>> params = model.init(jax.random.key(0))
      >>> opt_state = step.optimizer.init(params)
      >>> x, y = jnp.ones((8, 2)), jnp.zeros((8, 1))
      >>> params, opt_state, metrics = step(params, opt_state, x, y)
      >>> metrics["loss"].shape
      ()
    """
    loss = losses.get(loss)
    tx = make_optimizer(optimizer, **hyperparams)
    grad_fn = _grad_fn(model, loss, grad)

    def _step(params, opt_state, x, y):
        params, opt_state, value = _apply_step(grad_fn, tx, params, opt_state, x, y)
        return params, opt_state, {"loss": value}

    jitted = jax.jit(_step, donate_argnums=(0, 1))

    def step(params, opt_state, x, y):
        check_batch(model, loss, params, x, y)
        return jitted(params, opt_state, x, y)

    step.optimizer = tx  # type: ignore[attr-defined]
    step.jitted = jitted  # type: ignore[attr-defined]
    return step


# ---------------------------------------------------------------- evaluation


def accuracy(loss: Loss, pred: jax.Array, y: jax.Array) -> jax.Array | None:
    """Fraction of correct predictions, for the classification losses (else ``None``).

    softmax cross-entropy: ``argmax z == label`` (or argmax of the target row);
    sigmoid binary cross-entropy: ``(z > 0) == (y > ½)`` over every output unit.
    """
    if loss.name == "softmax_cross_entropy":
        labels = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.argmax(y, axis=-1)
        return jnp.mean(jnp.argmax(pred, axis=-1) == labels)
    if loss.name == "sigmoid_binary_cross_entropy":
        return jnp.mean((pred > 0) == (y > 0.5))
    return None


def evaluate(model: MLP, loss: str | Loss, params: Params, x, y) -> dict[str, jax.Array]:
    """``{"loss": C, "accuracy": …}`` on (x, y); accuracy only for classification losses."""
    loss = losses.get(loss)
    check_batch(model, loss, params, x, y)
    return _evaluate(model, loss, params, x, y)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate(model, loss, params, x, y):
    pred = model.apply(params, x)
    out = {"loss": loss.fn(pred, y)}
    acc = accuracy(loss, pred, y)
    if acc is not None:
        out["accuracy"] = acc
    return out


# ---------------------------------------------------------------- fit


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the final params (the last finite ones if training diverged).
      opt_state: the optimizer state that goes with them.
      history: numpy arrays: ``step_loss`` (batch cost before each step, one per
        step), ``loss`` (per epoch, the example-weighted mean of that epoch's
        step losses), ``epoch`` (1-based), and every ``eval_every`` epochs
        ``eval_epoch``, ``train_loss``, ``test_loss`` and, for classification,
        ``train_accuracy``, ``test_accuracy``; with ``diagnostics_every``,
        ``diagnostics_epoch`` and ``diagnostics/<name>`` of shape ``(records, L)``.
      diverged: ``None``, or the message of the :class:`DivergedWarning`.
    """

    params: Params
    opt_state: Any
    history: dict[str, np.ndarray]
    diverged: str | None = None


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """The static shape of an epoch: ``full`` batches of ``size``, then ``rest`` examples."""

    size: int
    full: int
    rest: int

    @property
    def steps(self) -> int:
        return self.full + (self.rest > 0)


def _unpack_data(data) -> tuple[Any, Any, Any, Any]:
    if hasattr(data, "x") and hasattr(data, "y"):
        x_test, y_test = getattr(data, "x_test", None), getattr(data, "y_test", None)
        if x_test is not None and shape_of(x_test)[:1] == (0,):
            x_test = y_test = None
        return data.x, data.y, x_test, y_test
    if isinstance(data, tuple | list) and len(data) in (2, 4):
        return (*data, None, None) if len(data) == 2 else tuple(data)
    raise ValueError(
        f"data: expected a gdjax.data.Dataset or a tuple (x, y) or (x, y, x_test, y_test), "
        f"got {type(data).__name__}."
    )


def _check_finite(name: str, array) -> None:
    values = np.asarray(array)
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite entries.")


def _lr_description(optimizer, hyperparams) -> str:
    if isinstance(optimizer, str):
        return f"{optimizer}(learning_rate={hyperparams.get('learning_rate')!r})"
    return "set inside the optax transformation passed in"


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _epoch_body(model: MLP, loss: Loss, tx, grad: GradMode, schedule: _Schedule):
    """One epoch: permute, scan over full batches, one ragged step, finiteness guard."""
    grad_fn = _grad_fn(model, loss, grad)

    def guarded_step(carry, idx, x, y):
        params, opt_state, diverged_at, step = carry
        new_params, new_state, value = _apply_step(grad_fn, tx, params, opt_state, x[idx], y[idx])
        ok = (diverged_at < 0) & jnp.isfinite(value) & _all_finite(new_params)
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(ok, new, old), (new_params, new_state), (params, opt_state)
        )
        diverged_at = jnp.where((diverged_at < 0) & ~ok, step, diverged_at)
        return (params, opt_state, diverged_at, step + 1), value

    def epoch(params, opt_state, x, y, key, first_step, diverged_at):
        perm = jax.random.permutation(key, x.shape[0])
        carry = (params, opt_state, diverged_at, first_step)
        full = perm[: schedule.full * schedule.size].reshape(schedule.full, schedule.size)
        carry, values = jax.lax.scan(lambda c, idx: guarded_step(c, idx, x, y), carry, full)
        if schedule.rest:
            carry, last = guarded_step(carry, perm[schedule.full * schedule.size :], x, y)
            values = jnp.concatenate([values, last[None]])
        params, opt_state, diverged_at, _ = carry
        return params, opt_state, values, diverged_at

    return epoch


@functools.lru_cache(maxsize=32)
def _make_epochs(model: MLP, loss: Loss, tx, grad: GradMode, schedule: _Schedule, count: int):
    """``count`` epochs in one jitted call: a ``lax.scan`` over epochs e, e+1, ….

    Epoch e shuffles with ``fold_in(shuffle_key, e)``, as a single-epoch call
    would. Cached on its (hashable, static) arguments, so a second ``fit`` with
    the same model, loss, optimizer and batch schedule reuses the compiled code.
    """
    epoch = _epoch_body(model, loss, tx, grad, schedule)

    def run(params, opt_state, x, y, shuffle_key, first_epoch, diverged_at):
        def body(carry, e):
            params, opt_state, diverged_at = carry
            key = jax.random.fold_in(shuffle_key, e)
            params, opt_state, values, diverged_at = epoch(
                params, opt_state, x, y, key, (e - 1) * schedule.steps, diverged_at
            )
            return (params, opt_state, diverged_at), values

        epochs = first_epoch + jnp.arange(count, dtype=jnp.int32)
        (params, opt_state, diverged_at), values = jax.lax.scan(
            body, (params, opt_state, diverged_at), epochs
        )
        return params, opt_state, values, diverged_at

    return jax.jit(run, donate_argnums=(0, 1))


MAX_EPOCHS_PER_CALL = 32


def _epochs_per_call(epochs: int, intervals: list[int]) -> int:
    """The most epochs one jitted call may run: no host event may fall inside it.

    Host events (evaluation, diagnostics, callbacks) happen at multiples of
    their intervals, so a block size that divides every interval ends exactly
    on them: the largest divisor of their gcd up to :data:`MAX_EPOCHS_PER_CALL`.
    With no events, blocks of :data:`MAX_EPOCHS_PER_CALL` (the last one shorter).
    """
    if not intervals:
        return min(epochs, MAX_EPOCHS_PER_CALL)
    g = math.gcd(*intervals)
    return next(d for d in range(min(g, MAX_EPOCHS_PER_CALL), 0, -1) if g % d == 0)


def fit(
    model: MLP,
    loss: str | Loss,
    optimizer: str | optax.GradientTransformation,
    data,
    *,
    epochs: int,
    key: jax.Array,
    batch_size: int | None = None,
    params: Params | None = None,
    opt_state: Any = None,
    grad: GradMode = "hand",
    eval_every: int = 1,
    diagnostics_every: int = 0,
    callback: Callable[[int, Params, Any, dict[str, np.ndarray]], None] | None = None,
    callback_every: int = 1,
    progress: bool = True,
    **hyperparams: Any,
) -> FitResult:
    """Train ``model`` by gradient descent on ``data``.

    Each epoch e (1-based) shuffles the n training examples with
    ``fold_in(shuffle_key, e)`` and takes ⌈n/B⌉ steps ``θ ← θ + u(∂C_batch/∂θ)``:
    ⌊n/B⌋ batches of B inside one ``lax.scan`` and, when B does not divide n, a
    last batch of the remaining n mod B examples. ``batch_size=None`` is
    full-batch gradient descent, ``1`` is SGD, ``k`` minibatches of k.

    Args:
      model: the network.
      loss: a :class:`~gdjax.losses.Loss` or its name.
      optimizer: an optax transformation, or a name with ``hyperparams``
        (e.g. ``"adam", learning_rate=1e-3``); see :func:`make_optimizer`.
      data: a :class:`gdjax.data.Dataset`, or ``(x, y)``, or ``(x, y, x_test, y_test)``.
      epochs: number of passes over the training set.
      key: PRNG key; split into an init key (used when ``params`` is None) and
        the shuffle key. Same key and config give bit-identical results.
      batch_size: ``None`` (full batch), or a positive int ≤ n.
      params, opt_state: where to start; defaults ``model.init(init_key)`` and
        ``optimizer.init(params)``.
      grad: ``"hand"`` (gdjax.backprop) or ``"auto"`` (jax.value_and_grad).
      eval_every: evaluate train/test loss and accuracy every k epochs (0: never).
        Between host events (evaluation, diagnostics, callbacks) up to
        :data:`MAX_EPOCHS_PER_CALL` epochs run in one jitted call, so
        ``eval_every=0`` (or a large k) gives the fastest loop.
      diagnostics_every: record per-layer norms (:mod:`gdjax.diagnostics`) on the
        training set every k epochs (0: never).
      callback: ``callback(epoch, params, opt_state, history)`` every ``callback_every``
        epochs, on the host, e.g. to track sharpness.
      progress: show a progress bar (epoch, loss, steps/s).

    Returns:
      A :class:`FitResult` ``(params, opt_state, history, diverged)``.
    """
    loss = losses.get(loss)
    epochs = check_positive_int("epochs", epochs)
    eval_every = _check_every("eval_every", eval_every)
    diagnostics_every = _check_every("diagnostics_every", diagnostics_every)
    callback_every = check_positive_int("callback_every", callback_every)
    tx = make_optimizer(optimizer, **hyperparams)
    _grad_fn(model, loss, grad)  # validates `grad`
    x, y, x_test, y_test = _unpack_data(data)
    check_num_examples(x, y)
    n = shape_of(x)[0]
    if batch_size is None:
        batch_size = n
    elif (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or not (0 < batch_size <= n)
    ):
        raise ValueError(
            f"batch_size: expected None (full batch) or an integer in [1, {n}] "
            f"(the number of training examples), got {batch_size!r}."
        )
    schedule = _Schedule(int(batch_size), n // batch_size, n % batch_size)
    for name, array in (("x", x), ("y", y), ("x_test", x_test), ("y_test", y_test)):
        if array is not None:
            _check_finite(f"data.{name}", array)

    init_key, shuffle_key = jax.random.split(key)
    if params is None:
        params = model.init(init_key)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_batch(model, loss, params, x, y)
    if x_test is not None:
        x_test, y_test = jnp.asarray(x_test), jnp.asarray(y_test)
        check_num_examples(x_test, y_test)
        check_batch(model, loss, params, x_test, y_test)
    # Work on copies: the epoch function donates its params and state buffers.
    params = jax.tree.map(jnp.array, params)
    opt_state = tx.init(params) if opt_state is None else jax.tree.map(jnp.array, opt_state)

    intervals = [i for i in (eval_every, diagnostics_every) if i]
    if callback is not None:
        intervals.append(callback_every)
    block = _epochs_per_call(epochs, intervals)
    report_fn = jax.jit(diagnostics.gradient_report, static_argnums=(0, 1))
    history: dict[str, list] = {"epoch": [], "loss": [], "step_loss": []}
    records: dict[str, list] = {}
    diverged = None
    bar = tqdm(total=epochs, desc="epochs", unit="epoch", dynamic_ncols=True, disable=not progress)
    start = time.perf_counter()

    def finish(epoch, values, diverged_at, evals) -> bool:
        """Read one epoch's results on the host; True when training has diverged."""
        nonlocal diverged
        values, diverged_at = np.asarray(values), int(diverged_at)
        first = (epoch - 1) * schedule.steps
        if 0 <= diverged_at < first:
            return True  # diverged in an earlier epoch; this one applied no step
        # A divergence in a later epoch of the same block leaves this one whole.
        diverged_here = first <= diverged_at < first + schedule.steps
        if diverged_here:  # steps after it were not applied: drop their losses
            values = values[: diverged_at - first + 1]
        weights = np.full(values.size, schedule.size, np.float64)
        if schedule.rest and values.size == schedule.steps:
            weights[-1] = schedule.rest
        history["epoch"].append(epoch)
        history["step_loss"].append(values)
        history["loss"].append(float(np.average(values, weights=weights)))
        if diverged_here:
            diverged = _divergence_message(
                epoch,
                diverged_at,
                schedule,
                np.concatenate(history["step_loss"]),
                _lr_description(optimizer, hyperparams),
            )
            warnings.warn(diverged, DivergedWarning, stacklevel=3)
            return True
        if evals is not None:
            _record(records, "eval_epoch", epoch)
            for name, value in evals.items():
                _record(records, name, float(value))
        bar.set_postfix(
            loss=f"{history['loss'][-1]:.4g}",
            steps_per_s=f"{epoch * schedule.steps / (time.perf_counter() - start):.0f}",
        )
        bar.update(1)
        return False

    def finish_block(first, count, values, diverged_at, evals) -> bool:
        values = np.asarray(values)
        for i in range(count):
            if finish(first + i, values[i], diverged_at, evals if i == count - 1 else None):
                return True
        return False

    # Epochs run in blocks of up to `block` per jitted call (a scan over epochs),
    # ending on every epoch where the host has work (evaluation, diagnostics, a
    # callback). Block b+1 is dispatched before block b's results are read, so
    # the host's bookkeeping overlaps the device's work. The divergence flag
    # travels on the device: steps after a divergence are not applied, and the
    # params stay the last finite ones.
    diverged_at = jnp.asarray(-1, jnp.int32)
    pending = None
    epoch = 1
    try:
        while epoch <= epochs:
            count = min(block, epochs - epoch + 1)
            last = epoch + count - 1
            params, opt_state, values, diverged_at = _make_epochs(
                model, loss, tx, grad, schedule, count
            )(params, opt_state, x, y, shuffle_key, jnp.asarray(epoch, jnp.int32), diverged_at)
            evals = None
            if eval_every and last % eval_every == 0:  # dispatched now, read later
                evals = {}
                for prefix, (xs, ys) in (("train", (x, y)), ("test", (x_test, y_test))):
                    if xs is not None:
                        for name, value in _evaluate(model, loss, params, xs, ys).items():
                            evals[f"{prefix}_{name}"] = value
            if pending is not None and finish_block(*pending):
                pending = None
                break
            pending = (epoch, count, values, diverged_at, evals)
            epoch = last + 1
            host_work = (diagnostics_every and last % diagnostics_every == 0) or (
                callback is not None and last % callback_every == 0
            )
            if host_work:
                done, pending = finish_block(*pending), None
                if done:
                    break
            if diagnostics_every and last % diagnostics_every == 0:
                _record(records, "diagnostics_epoch", last)
                for name, value in report_fn(model, loss, params, x, y).items():
                    _record(records, f"diagnostics/{name}", np.asarray(value))
            if callback is not None and last % callback_every == 0:
                callback(last, params, opt_state, _as_arrays(history, records))
        if pending is not None:
            finish_block(*pending)
    finally:
        bar.close()
    return FitResult(params, opt_state, _as_arrays(history, records), diverged)


def _divergence_message(epoch, global_step, schedule, step_losses, lr) -> str:
    finite = step_losses[np.isfinite(step_losses)]
    last = f"{finite[-1]:.6g}" if finite.size else "none (the first loss was not finite)"
    local = global_step - (epoch - 1) * schedule.steps
    return (
        f"training diverged at epoch {epoch}, step {local + 1} of {schedule.steps} in that "
        f"epoch (global step {global_step + 1}): the loss or the params became NaN/Inf. "
        f"Last finite loss: {last}. Learning rate: {lr}. Returning the last finite params "
        f"(before that step); try a smaller learning rate."
    )


def _check_every(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer (0: never), got {value!r}.")
    return int(value)


def _record(records: dict[str, list], name: str, value) -> None:
    records.setdefault(name, []).append(value)


def _as_arrays(history: dict[str, list], records: dict[str, list]) -> dict[str, np.ndarray]:
    out = {
        "epoch": np.asarray(history["epoch"], np.int64),
        "loss": np.asarray(history["loss"], np.float64),
        "step_loss": np.concatenate(history["step_loss"]) if history["step_loss"] else np.zeros(0),
    }
    out.update({name: np.asarray(values) for name, values in records.items()})
    return out


def steps_per_epoch(n: int, batch_size: int | None) -> int:
    """⌈n / B⌉: the number of steps :func:`fit` takes per epoch."""
    return 1 if batch_size is None else math.ceil(n / batch_size)
