"""Jitted update steps and the training loop: full-batch GD, SGD and minibatches.

One step of gradient descent with an optax optimizer is

    g = ∂C/∂θ (by hand: gdjax.backprop; or by jax.value_and_grad),
    u, s ← optimizer.update(g, s, θ),    θ ← θ + u          (u = −η g for plain SGD)

:func:`make_step` returns that step as one jitted function whose params and
optimizer-state buffers are donated. :func:`fit` runs whole epochs: each epoch
draws a permutation (:func:`gdjax.data.permutation`) of the n training examples with the key
``fold_in(key, epoch)``, cuts it into ⌊n/B⌋ batches of B examples that run
inside one ``lax.scan``, then one last step on the r = n mod B remaining
examples (a *ragged last batch*: its cost is the mean over those r examples, so
every example is used exactly once per epoch). ``batch_size=None`` is
full-batch gradient descent (one step per epoch), ``1`` is SGD.

Divergence: a step whose batch loss or new params are not finite is not
applied; the epoch finishes without further updates, ``fit`` stops there with
a :class:`DivergedWarning` naming the epoch, the step, the last finite loss and
the learning rate, and returns the last finite params. (The steps themselves
check nothing: ``fit`` checks each block of epochs once at its end and reruns a
block that is not finite with a check on every step, from a copy of its
inputs, which gives the same results at no per-step cost.)

Data parallelism (``mesh=``): with a :class:`jax.sharding.Mesh` that has an
axis ``"data"`` (or ``mesh="local"`` for all local devices), params and
optimizer state are replicated on every device and every step's batch is split
into equal row blocks over ``"data"``. Each device runs the forward pass and the
hand-written backward pass on its rows; the sums over examples in
``∂C/∂w^l = Σ_x δ^l_x (a^{l-1}_x)ᵀ`` and in C become partial sums that XLA
all-reduces, so every device applies the same update. The result equals the
one-device step up to the order of those sums (float rounding). A batch whose
rows do not divide over the devices is refused (see :func:`fit` for the rule).

Checkpoints (``fit(..., run_dir=d, checkpoint_every=k)``): every k epochs,
and at the end, params, optimizer state, history and the position (epoch,
shuffle key, divergence flag) are written atomically with
:func:`gdjax.runs.save_checkpoint`, with a fingerprint of the config. Running
the same ``fit`` again resumes after the last checkpoint and gives the params of
an uninterrupted run bit for bit; a checkpoint of another config is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from gdjax import diagnostics, runs
from gdjax._checks import check_num_examples, check_positive_int, is_concrete, shape_of
from gdjax.backprop import backprop
from gdjax.data import permutation
from gdjax.losses import Loss
from gdjax.metrics import accuracy
from gdjax.mlp import MLP, Params
from gdjax.models import ApplyModel, as_loss, as_model, check_batch, objective

__all__ = [
    "OPTIMIZERS",
    "make_optimizer",
    "make_step",
    "fit",
    "evaluate",
    "FitResult",
    "DivergedWarning",
    "data_mesh",
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
    if not callable(lr) and (
        isinstance(lr, bool)
        or not isinstance(lr, int | float | np.floating | np.integer)
        or not (lr > 0 and math.isfinite(lr))
    ):
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


def _grad_fn(model: MLP | ApplyModel, loss: Loss, grad: GradMode):
    """``(params, x, y) ↦ (C, ∂C/∂θ)``: the hand backprop (MLP only) or autodiff."""
    if grad == "hand":
        if not isinstance(model, MLP):
            raise ValueError(
                f"grad: 'hand' is the hand-written backprop of gdjax.MLP, which {model!r} "
                f"is not; expected grad='auto' (autodiff) for a model given as apply(params, x)."
            )
        return lambda params, x, y: backprop(model, loss, params, x, y)
    if grad == "auto":
        return jax.value_and_grad(objective(model, loss))
    raise ValueError(f"grad: expected 'hand' or 'auto', got {grad!r}.")


def _default_grad(model: MLP | ApplyModel, grad: GradMode | None) -> GradMode:
    """``None`` means the hand backprop for an MLP and autodiff for any other model."""
    if grad is None:
        return "hand" if isinstance(model, MLP) else "auto"
    return grad


def _apply_step(grad_fn, optimizer, params, opt_state, x, y):
    """One update θ ← θ + u with u from the optimizer; returns the pre-update loss."""
    value, grads = grad_fn(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


# ---------------------------------------------------------------- data parallelism

DATA_AXIS = "data"
"""The mesh axis the batch is split over."""

MeshLike = Mesh | Literal["local", "global"] | bool | None


def data_mesh(mesh: MeshLike) -> Mesh | None:
    """The :class:`~jax.sharding.Mesh` that ``mesh=`` of :func:`make_step` / :func:`fit` means.

    ``None`` or ``False``: no mesh (one device, as JAX places it). ``"local"`` or
    ``True``: a 1-D mesh ``("data",)`` over this process's devices
    (``jax.local_devices()``). ``"global"``: over every process's devices
    (``jax.devices()``; see :func:`gdjax.distributed.global_mesh`). A ``Mesh``
    passes through if it has an axis named ``"data"`` (other axes replicate).

    >>> data_mesh("local").axis_names
    ('data',)
    """
    if mesh is None or mesh is False:
        return None
    if mesh is True or (isinstance(mesh, str) and mesh == "local"):
        return Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))
    if isinstance(mesh, str) and mesh == "global":
        return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"mesh: expected None, 'local', 'global', True or a jax.sharding.Mesh with an axis "
            f"named {DATA_AXIS!r}, got {mesh!r}."
        )
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh: expected a jax.sharding.Mesh with an axis named {DATA_AXIS!r} to split "
            f"the batch over, got axes {mesh.axis_names}."
        )
    return mesh


def _shards(mesh: Mesh | None) -> int:
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def _put(tree, sharding: NamedSharding):
    """Place ``tree``'s leaves with ``sharding``; a leaf placed so already passes through.

    Host values are placed with ``make_array_from_callback`` when several
    processes share the mesh: every process passes the same (global) values
    and contributes the shards of its own devices.
    """

    def one(a):
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
            return a
        if jax.process_count() == 1 or (isinstance(a, jax.Array) and not a.is_fully_addressable):
            return jax.device_put(a, sharding)
        if runs._is_key_array(a):
            impl = jax.random.key_impl(a)
            return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=impl)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree)


def _check_rows(name: str, rows: int, mesh: Mesh | None) -> None:
    d = _shards(mesh)
    if rows % d:
        raise ValueError(
            f"{name}: expected a batch whose rows split evenly over the {d} devices of mesh "
            f"axis {DATA_AXIS!r}, got {rows} rows ({rows} % {d} = {rows % d}). Use a batch "
            f"size that is a multiple of {d}."
        )


def make_step(
    model: MLP | Callable,
    loss: str | Loss | Callable,
    optimizer: str | optax.GradientTransformation,
    grad: GradMode | None = None,
    *,
    mesh: MeshLike = None,
    **hyperparams: Any,
) -> Callable[[Params, Any, jax.Array, jax.Array], tuple[Params, Any, dict[str, jax.Array]]]:
    """A jitted gradient-descent step ``step(params, opt_state, x, y)``.

    .. math::

        g = ∂C/∂θ,\\quad (u, s) = \\mathrm{update}(g, s, θ),\\quad θ ← θ + u

    Args:
      model: a :class:`gdjax.MLP`, or any function ``apply(params, x) -> output``
        over a params pytree (see :mod:`gdjax.models`; pass the same function
        object each time so compiled code is reused).
      loss: a :class:`~gdjax.losses.Loss` or its name, or any function
        ``loss(output, y) -> scalar`` (a mean over the batch).
      optimizer: an ``optax.GradientTransformation`` or a name from :data:`OPTIMIZERS`
        with keyword ``hyperparams`` (``learning_rate=...``).
      grad: ``"hand"`` for :func:`gdjax.backprop` (MLP only), ``"auto"`` for
        ``jax.value_and_grad``; ``None`` (default): ``"hand"`` for an MLP, else ``"auto"``.
      mesh: data parallelism (see :func:`data_mesh`): ``None`` (default), ``"local"``,
        ``"global"`` or a ``Mesh`` with an axis ``"data"``. The rows of ``x``, ``y`` are
        split over ``"data"`` (their number must be a multiple of its size), params
        and state are replicated, and XLA all-reduces the gradient sums. With
        several processes, each passes the same global batch (or global
        ``jax.Array`` s already sharded over the mesh).

    Returns:
      ``step(params, opt_state, x, y) -> (params, opt_state, {"loss": C})``, where
      ``C`` is the batch cost before the update. ``params`` and ``opt_state`` are
      donated: do not reuse the arrays you pass in. Initialise the state with
      ``step.optimizer.init(params)``. With a mesh, the outputs are replicated
      over it; ``step.mesh`` is the resolved mesh.

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
    model, loss = as_model(model), as_loss(loss)
    tx = make_optimizer(optimizer, **hyperparams)
    grad_fn = _grad_fn(model, loss, _default_grad(model, grad))

    def _step(params, opt_state, x, y):
        params, opt_state, value = _apply_step(grad_fn, tx, params, opt_state, x, y)
        return params, opt_state, {"loss": value}

    mesh = data_mesh(mesh)
    if mesh is None:
        jitted = jax.jit(_step, donate_argnums=(0, 1))
    else:
        replicated, by_row = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
        jitted = jax.jit(
            _step,
            donate_argnums=(0, 1),
            in_shardings=(replicated, replicated, by_row, by_row),
            out_shardings=replicated,
        )

    def step(params, opt_state, x, y):
        # params stay on the device: their finiteness is not read back every step
        check_batch(model, loss, params, x, y, finite_params=False)
        if mesh is not None:
            _check_rows("x", shape_of(x)[0], mesh)
            params, opt_state = _put((params, opt_state), replicated)
            x, y = _put((x, y), by_row)
        return jitted(params, opt_state, x, y)

    step.optimizer = tx  # type: ignore[attr-defined]
    step.jitted = jitted  # type: ignore[attr-defined]
    step.mesh = mesh  # type: ignore[attr-defined]
    return step


# ---------------------------------------------------------------- evaluation


def evaluate(
    model: MLP | Callable, loss: str | Loss | Callable, params: Params, x, y
) -> dict[str, jax.Array]:
    """``{"loss": C, "accuracy": …}`` on (x, y); accuracy only for classification losses.

    Any model (a ``gdjax.MLP`` or a function ``apply(params, x)``) and any loss.
    """
    model, loss = as_model(model), as_loss(loss)
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
    if not is_concrete(array):
        return
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


def _epoch_body(
    model: MLP, loss: Loss, tx, grad: GradMode, schedule: _Schedule, mesh=None, guard=True
):
    """One epoch: permute, scan over full batches, one ragged step.

    With ``guard``, a step whose loss or new params are not finite is not applied
    and ``diverged_at`` records its global index; without it every step is applied
    (the caller checks the block's end state and replays it guarded if needed).

    With a mesh, each batch ``x[idx]`` (gathered from the replicated data set)
    is constrained to be split by rows over ``"data"``; XLA partitions the step
    accordingly and all-reduces the sums over examples.
    """
    grad_fn = _grad_fn(model, loss, grad)

    def rows(a, idx):
        if mesh is None:
            return a[idx]
        return jax.lax.with_sharding_constraint(a[idx], NamedSharding(mesh, P(DATA_AXIS)))

    def guarded_step(carry, idx, x, y):
        params, opt_state, diverged_at, step = carry
        xb, yb = rows(x, idx), rows(y, idx)
        new_params, new_state, value = _apply_step(grad_fn, tx, params, opt_state, xb, yb)
        if not guard:
            return (new_params, new_state, diverged_at, step + 1), value
        ok = (diverged_at < 0) & jnp.isfinite(value) & _all_finite(new_params)
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(ok, new, old), (new_params, new_state), (params, opt_state)
        )
        diverged_at = jnp.where((diverged_at < 0) & ~ok, step, diverged_at)
        return (params, opt_state, diverged_at, step + 1), value

    def epoch(params, opt_state, x, y, key, first_step, diverged_at):
        perm = permutation(key, x.shape[0])
        carry = (params, opt_state, diverged_at, first_step)
        full = perm[: schedule.full * schedule.size].reshape(schedule.full, schedule.size)
        carry, values = jax.lax.scan(lambda c, idx: guarded_step(c, idx, x, y), carry, full)
        if schedule.rest:
            carry, last = guarded_step(carry, perm[schedule.full * schedule.size :], x, y)
            values = jnp.concatenate([values, last[None]])
        params, opt_state, diverged_at, _ = carry
        return params, opt_state, values, diverged_at

    return epoch


NOT_FINITE = -2
"""``diverged_at`` of an unguarded block whose losses or end params are not all finite."""


@functools.lru_cache(maxsize=32)
def _make_epochs(
    model: MLP,
    loss: Loss,
    tx,
    grad: GradMode,
    schedule: _Schedule,
    count: int,
    mesh=None,
    guard: bool = True,
):
    """``count`` epochs in one jitted call: a ``lax.scan`` over epochs e, e+1, ….

    Epoch e shuffles with ``fold_in(shuffle_key, e)``, as a single-epoch call
    would. Cached on its (hashable, static) arguments, so a second ``fit`` with
    the same model, loss, optimizer and batch schedule reuses the compiled code.

    Without ``guard`` no step checks anything; the block's ``diverged_at`` comes
    back as :data:`NOT_FINITE` when a loss or an end param is not finite, and
    ``fit`` then replays the block, guarded, from a copy of its inputs.
    """
    epoch = _epoch_body(model, loss, tx, grad, schedule, mesh, guard)

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
        if not guard:
            finite = jnp.all(jnp.isfinite(values)) & _all_finite(params)
            diverged_at = jnp.where(finite, diverged_at, NOT_FINITE)
        return params, opt_state, values, diverged_at

    if mesh is None:
        return jax.jit(run, donate_argnums=(0, 1))
    return jax.jit(run, donate_argnums=(0, 1), out_shardings=NamedSharding(mesh, P()))


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
    model: MLP | Callable,
    loss: str | Loss | Callable,
    optimizer: str | optax.GradientTransformation,
    data,
    *,
    epochs: int,
    key: jax.Array,
    batch_size: int | None = None,
    params: Params | None = None,
    opt_state: Any = None,
    grad: GradMode | None = None,
    eval_every: int = 1,
    diagnostics_every: int = 0,
    callback: Callable[[int, Params, Any, dict[str, np.ndarray]], None] | None = None,
    callback_every: int = 1,
    progress: bool = True,
    mesh: MeshLike = None,
    run_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    **hyperparams: Any,
) -> FitResult:
    """Train ``model`` by gradient descent on ``data``.

    Each epoch e (1-based) shuffles the n training examples with
    ``fold_in(shuffle_key, e)`` and takes ⌈n/B⌉ steps ``θ ← θ + u(∂C_batch/∂θ)``:
    ⌊n/B⌋ batches of B inside one ``lax.scan`` and, when B does not divide n, a
    last batch of the remaining n mod B examples. ``batch_size=None`` is
    full-batch gradient descent, ``1`` is SGD, ``k`` minibatches of k.

    Args:
      model: a :class:`gdjax.MLP`, or any function ``apply(params, x) -> output``
        over a params pytree (a plain-JAX conv net, an Equinox or Flax module
        split into params and a function; see :mod:`gdjax.models`). Such a model
        needs ``params=`` and trains with autodiff.
      loss: a :class:`~gdjax.losses.Loss` or its name, or any function
        ``loss(output, y) -> scalar`` (a mean over the batch; accuracy is
        reported for gdjax's classification losses only).
      optimizer: an optax transformation, or a name with ``hyperparams``
        (e.g. ``"adam", learning_rate=1e-3``); see :func:`make_optimizer`.
      data: a :class:`gdjax.data.Dataset`, or ``(x, y)``, or ``(x, y, x_test, y_test)``.
      epochs: number of passes over the training set (counting the epochs a
        resumed checkpoint has done).
      key: PRNG key; split into an init key (used when ``params`` is None) and
        the shuffle key. Same key and config give bit-identical results.
      batch_size: ``None`` (full batch), or a positive int ≤ n.
      params, opt_state: where to start; defaults ``model.init(init_key)`` (an MLP
        only: a function model needs ``params``) and ``optimizer.init(params)``.
      grad: ``"hand"`` (gdjax.backprop, MLP only) or ``"auto"`` (jax.value_and_grad);
        ``None`` (default): ``"hand"`` for an MLP, ``"auto"`` for any other model.
      eval_every: evaluate train/test loss and accuracy every k epochs (0: never).
        Between host events (evaluation, diagnostics, callbacks, checkpoints) up
        to :data:`MAX_EPOCHS_PER_CALL` epochs run in one jitted call, so
        ``eval_every=0`` (or a large k) gives the fastest loop.
      diagnostics_every: record per-layer norms (:mod:`gdjax.diagnostics`) on the
        training set every k epochs (0: never; an MLP only, since the δ^l and
        layers they report are the MLP's).
      callback: ``callback(epoch, params, opt_state, history)`` every ``callback_every``
        epochs, on the host, e.g. to track sharpness.
      progress: show a progress bar (epoch, loss, steps/s).
      mesh: data parallelism (see :func:`data_mesh`): the data set is replicated
        on every device of the mesh and each step's batch is split by rows over
        its ``"data"`` axis of D devices. Every step's batch must split evenly:
        B (``batch_size``; n for full batch) and the ragged last batch
        r = n mod B must both be multiples of D, else a ValueError names n, B, r
        and D before anything runs (drop a few examples, or pick B, so that they
        are). The results equal the one-device run's to float rounding.
      run_dir: a directory for checkpoints (see :func:`gdjax.runs.save_checkpoint`):
        ``run_dir/checkpoint.json`` and ``run_dir/checkpoints/``. When it holds a
        checkpoint of this same run (same fingerprint: model, loss, optimizer and
        hyper-parameters, grad, data shapes and SHA-256, key, batch size,
        starting params and state, eval/diagnostics/callback/checkpoint intervals,
        x64), training resumes after it; a checkpoint of another run is refused
        with a ValueError naming what differs. Only process 0 writes.
      checkpoint_every: with ``run_dir``, write a checkpoint every k epochs
        (0: only at the end). Blocks of epochs end on checkpoints, so an
        interrupted-and-resumed run is bit-identical to an uninterrupted one.

    Returns:
      A :class:`FitResult` ``(params, opt_state, history, diverged)``.
    """
    model, loss = as_model(model), as_loss(loss)
    grad = _default_grad(model, grad)
    if not isinstance(model, MLP) and params is None:
        raise ValueError(
            f"params: expected the starting params of {model!r}, a model given as a function "
            f"apply(params, x) that gdjax cannot initialise, got None."
        )
    epochs = check_positive_int("epochs", epochs)
    eval_every = _check_every("eval_every", eval_every)
    diagnostics_every = _check_every("diagnostics_every", diagnostics_every)
    if diagnostics_every and not isinstance(model, MLP):
        raise ValueError(
            f"diagnostics_every: the per-layer δ^l and weight norms are those of a gdjax.MLP, "
            f"so it expected 0 for {model!r}, got {diagnostics_every}."
        )
    callback_every = check_positive_int("callback_every", callback_every)
    checkpoint_every = _check_every("checkpoint_every", checkpoint_every)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback: expected a function, got {type(callback).__name__}.")
    if not isinstance(progress, bool | np.bool_):
        raise ValueError(f"progress: expected True or False, got {progress!r}.")
    if run_dir is None and checkpoint_every:
        raise ValueError(
            f"run_dir: expected a directory to write checkpoints into, since "
            f"checkpoint_every={checkpoint_every}, got None."
        )
    if run_dir is not None and not isinstance(run_dir, str | os.PathLike):
        raise ValueError(f"run_dir: expected a path, got {type(run_dir).__name__}.")
    tx = make_optimizer(optimizer, **hyperparams)
    _grad_fn(model, loss, grad)  # validates `grad`
    mesh = data_mesh(mesh)
    x, y, x_test, y_test = _unpack_data(data)
    check_num_examples(x, y)
    n = shape_of(x)[0]
    if n == 0:
        raise ValueError(
            f"data.x: expected at least one training example, got shape {shape_of(x)}."
        )
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
    _check_schedule(schedule, n, mesh)
    for name, array in (("x", x), ("y", y), ("x_test", x_test), ("y_test", y_test)):
        if array is not None:
            _check_finite(f"data.{name}", array)
    _check_key(key)
    # The data and the params against the model (shapes, dtypes, label ranges, finite
    # values) before anything compiles: params that fit draws are checked as shapes
    # (``eval_shape`` compiles nothing; the draw itself is finite).
    given = params is not None
    like = params if given else jax.eval_shape(model.init, key)
    check_batch(model, loss, like, x, y, finite_params=given)
    if x_test is not None:
        check_num_examples(x_test, y_test)
        check_batch(model, loss, like, x_test, y_test, finite_params=False)

    init_key, shuffle_key = jax.random.split(key)
    params_given, state_given = params, opt_state
    if params is None:
        params = model.init(init_key)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x_test is not None:
        x_test, y_test = jnp.asarray(x_test), jnp.asarray(y_test)
    # Work on copies: the epoch function donates its params and state buffers.
    params = jax.tree.map(jnp.array, params)
    opt_state = tx.init(params) if opt_state is None else jax.tree.map(jnp.array, opt_state)

    intervals = [i for i in (eval_every, diagnostics_every, checkpoint_every) if i]
    if callback is not None:
        intervals.append(callback_every)
    block = _epochs_per_call(epochs, intervals)
    history: dict[str, list] = {"epoch": [], "loss": [], "step_loss": []}
    records: dict[str, list] = {}
    diverged = None
    diverged_at = jnp.asarray(-1, jnp.int32)
    first_epoch = 1

    fingerprint = None
    if run_dir is not None:
        run_dir = Path(run_dir)
        fingerprint = _fingerprint(
            model=model,
            loss=loss,
            optimizer=optimizer,
            hyperparams=hyperparams,
            tx=tx,
            params=params,
            grad=grad,
            data=(x, y, x_test, y_test),
            batch_size=schedule.size,
            key=key,
            params_given=params_given,
            state_given=state_given,
            intervals={
                "eval_every": eval_every,
                "diagnostics_every": diagnostics_every,
                "checkpoint_every": checkpoint_every,
                "callback_every": callback_every if callback is not None else None,
            },
        )
        ckpt = runs.load_checkpoint(run_dir, like={"params": params, "opt_state": opt_state})
        if ckpt is not None:
            _check_fingerprint(run_dir, ckpt.fingerprint, fingerprint)
            if ckpt.step > epochs:
                raise ValueError(
                    f"epochs: expected at least the {ckpt.step} epochs already done by the "
                    f"checkpoint in {run_dir}, got {epochs}."
                )
            params, opt_state = ckpt.trees["params"], ckpt.trees["opt_state"]
            history, records = _restore_history(ckpt.trees["history"])
            diverged_at = jnp.asarray(ckpt.trees["state"]["diverged_at"], jnp.int32)
            diverged = ckpt.info.get("diverged")
            first_epoch = ckpt.step + 1
            if diverged is not None:
                warnings.warn(diverged, DivergedWarning, stacklevel=2)
            if diverged is not None or ckpt.step == epochs:
                return FitResult(params, opt_state, _as_arrays(history, records), diverged)

    on_mesh = (
        (lambda tree: tree)
        if mesh is None
        else functools.partial(_put, sharding=NamedSharding(mesh, P()))
    )
    params, opt_state, x, y, shuffle_key, diverged_at = on_mesh(
        (params, opt_state, x, y, shuffle_key, diverged_at)
    )
    if x_test is not None:
        x_test, y_test = on_mesh((x_test, y_test))
    report_fn = jax.jit(diagnostics.gradient_report, static_argnums=(0, 1))
    bar = tqdm(
        total=epochs,
        initial=first_epoch - 1,
        desc="epochs",
        unit="epoch",
        dynamic_ncols=True,
        disable=not progress,
    )
    start = time.perf_counter()
    checkpointed = first_epoch - 1 if run_dir is not None else None

    weights = np.full(schedule.steps, schedule.size, np.float64)  # examples per step
    if schedule.rest:
        weights[-1] = schedule.rest

    def finish_block(first, count, values, diverged_at, evals) -> bool:
        """Read a block's results (epochs first … first+count−1) on the host; True when
        training has diverged. ``values`` holds every step's loss, one row per epoch."""
        nonlocal diverged
        values, diverged_at = np.asarray(values), int(diverged_at)
        start_step = (first - 1) * schedule.steps
        if 0 <= diverged_at < start_step:
            return True  # diverged in an earlier block; this one applied no step
        # Epochs before a divergence in this block are whole; the later ones applied none.
        whole = count if diverged_at < 0 else (diverged_at - start_step) // schedule.steps
        history["epoch"].extend(range(first, first + whole))
        history["step_loss"].extend(values[:whole])
        history["loss"].extend(np.average(values[:whole], axis=1, weights=weights).tolist())
        if whole < count:  # steps after the diverging one were not applied: drop their losses
            epoch = first + whole
            kept = values[whole, : diverged_at - (epoch - 1) * schedule.steps + 1]
            history["epoch"].append(epoch)
            history["step_loss"].append(kept)
            history["loss"].append(float(np.average(kept, weights=weights[: kept.size])))
            diverged = _divergence_message(
                epoch,
                diverged_at,
                schedule,
                np.concatenate(history["step_loss"]),
                _lr_description(optimizer, hyperparams),
            )
            warnings.warn(diverged, DivergedWarning, stacklevel=4)
            return True
        last = first + count - 1
        if evals is not None:
            _record(records, "eval_epoch", last)
            for name, value in evals.items():
                _record(records, name, float(value))
        elapsed = time.perf_counter() - start
        bar.set_postfix(
            loss=f"{history['loss'][-1]:.4g}",
            steps_per_s=f"{(last - first_epoch + 1) * schedule.steps / elapsed:.0f}",
        )
        bar.update(count)
        return False

    writer = (
        _CheckpointWriter(run_dir, fingerprint)
        if run_dir is not None and jax.process_index() == 0
        else None
    )
    key_data = np.asarray(jax.random.key_data(shuffle_key)) if writer is not None else None

    def checkpoint(epoch: int, params, opt_state, diverged_at) -> None:
        """Hand the state after ``epoch`` to the background writer.

        ``params`` and ``opt_state`` must be buffers no later block donates (a
        :func:`_device_copy`, or the final ones); ``history`` and ``records`` must
        hold epochs up to ``epoch`` and no further. The lists only grow, so their
        lengths now fix the snapshot: the writer copies to the host and slices.
        """
        nonlocal checkpointed
        if writer is not None:
            trees = {
                "params": params,
                "opt_state": opt_state,
                "state": {
                    "epoch": np.int64(epoch),
                    "diverged_at": diverged_at,
                    "shuffle_key": key_data,
                },
            }
            lengths = (
                {k: len(v) for k, v in history.items()},
                {k: len(v) for k, v in records.items()},
            )
            writer.submit(epoch, (trees, history, records, lengths), {"diverged": diverged})
        checkpointed = epoch

    def dispatch_evals(last: int, params) -> dict | None:
        """Evaluation after epoch ``last`` if it is due: dispatched now, read later."""
        if not (eval_every and last % eval_every == 0):
            return None
        evals = {}
        for prefix, (xs, ys) in (("train", (x, y)), ("test", (x_test, y_test))):
            if xs is not None:
                for name, value in _evaluate(model, loss, params, xs, ys).items():
                    evals[f"{prefix}_{name}"] = value
        return evals

    def finish_pending(pending, *, write: bool = True):
        """Read a dispatched block's results, then write its checkpoint if it ends on one.

        A block that ran unguarded and came back not finite is first run again,
        guarded, from the copy of its inputs: its results, evaluation and
        checkpoint are then those of the guarded run. Returns ``(diverged,
        replayed, saved)``: ``replayed`` is the guarded run's ``(params,
        opt_state, diverged_at)`` (None without a replay), ``saved`` the block's
        checkpoint copy (of the guarded run's state after a replay).
        """
        first, count, values, block_diverged_at, evals, saved, inputs = pending
        replayed = None
        if inputs is not None and int(block_diverged_at) == NOT_FINITE:
            guarded = _make_epochs(model, loss, tx, grad, schedule, count, mesh, True)
            start, not_diverged = (on_mesh(jnp.asarray(v, jnp.int32)) for v in (first, -1))
            p, s, values, block_diverged_at = guarded(
                *inputs, x, y, shuffle_key, start, not_diverged
            )
            replayed = (p, s, block_diverged_at)
            evals = None if evals is None else dispatch_evals(first + count - 1, p)
            saved = None if saved is None else _device_copy((p, s))
        if finish_block(first, count, values, block_diverged_at, evals):
            return True, replayed, saved
        if write and saved is not None:
            checkpoint(first + count - 1, *saved, block_diverged_at)
        return False, replayed, saved

    # Epochs run in blocks of up to `block` per jitted call (a scan over epochs),
    # ending on every epoch where the host has work (evaluation, diagnostics, a
    # callback, a checkpoint). Block b+1 is dispatched before block b's results are
    # read, so the host's bookkeeping overlaps the device's work. Blocks run with no
    # per-step check; each returns whether its losses and end params are finite,
    # and one that is not is replayed from a copy of its inputs with the per-step
    # guard (steps after a divergence are not applied, the params stay the last
    # finite ones), the block dispatched after it from its non-finite end is
    # dropped, and the rest of training runs guarded. A checkpoint does not stop
    # that pipeline: the block's params and state are copied on the device (the
    # next block donates them) and written once the block's results have been read.
    pending = None
    epoch = first_epoch
    guard = False
    try:
        while epoch <= epochs:
            count = min(block, epochs - epoch + 1)
            last = epoch + count - 1
            first = on_mesh(jnp.asarray(epoch, jnp.int32))
            inputs = None if guard else _device_copy((params, opt_state))
            params, opt_state, values, diverged_at = _make_epochs(
                model, loss, tx, grad, schedule, count, mesh, guard
            )(params, opt_state, x, y, shuffle_key, first, diverged_at)
            evals = dispatch_evals(last, params)
            saved = None
            if run_dir is not None and checkpoint_every and last % checkpoint_every == 0:
                # Copied (the next block donates the buffers) only when the writer would
                # start on it at once: a busy writer makes this checkpoint a no-op. With
                # several processes every one must launch the same computations, so all
                # copy at every checkpoint epoch and process 0 alone writes.
                if jax.process_count() > 1 or writer.ready():
                    saved = _device_copy((params, opt_state))
            if pending is not None:
                done, replayed, _ = finish_pending(pending)
                if replayed is not None:  # the block just dispatched started from NaN/Inf
                    params, opt_state, diverged_at = replayed
                    guard, epoch = True, pending[0] + pending[1]
                pending = None
                if done:
                    break
                if replayed is not None:
                    continue
            pending = (epoch, count, values, diverged_at, evals, saved, inputs)
            epoch = last + 1
            host_work = (diagnostics_every and last % diagnostics_every == 0) or (
                callback is not None and last % callback_every == 0
            )
            if host_work:
                done, replayed, saved = finish_pending(pending, write=False)
                pending = None
                if replayed is not None:
                    params, opt_state, diverged_at = replayed
                    guard = True
                if done:
                    break
            if diagnostics_every and last % diagnostics_every == 0:
                _record(records, "diagnostics_epoch", last)
                for name, value in report_fn(model, loss, params, x, y).items():
                    _record(records, f"diagnostics/{name}", np.asarray(value))
            if host_work and saved is not None:  # after the diagnostics it must hold
                checkpoint(last, *saved, diverged_at)
            if callback is not None and last % callback_every == 0:
                callback(last, params, opt_state, _as_arrays(history, records))
        if pending is not None:
            _, replayed, _ = finish_pending(pending)
            if replayed is not None:
                params, opt_state, diverged_at = replayed
        if run_dir is not None:
            reached = history["epoch"][-1] if history["epoch"] else first_epoch - 1
            if reached != checkpointed or diverged is not None:
                checkpoint(int(reached), params, opt_state, diverged_at)
    finally:
        bar.close()
        if writer is not None:  # also on Ctrl-C: the last snapshot reaches the disk
            writer.close()
    return FitResult(params, opt_state, _as_arrays(history, records), diverged)


def _check_schedule(schedule: _Schedule, n: int, mesh: Mesh | None) -> None:
    """Every batch of the epoch must split evenly over the mesh's data axis."""
    d = _shards(mesh)
    if d == 1 or (schedule.size % d == 0 and schedule.rest % d == 0):
        return
    if schedule.size == n:
        raise ValueError(
            f"batch_size: expected full-batch steps whose n = {n} training examples split "
            f"evenly over the {d} devices of mesh axis {DATA_AXIS!r}, got n % {d} = {n % d}. "
            f"Drop {n % d} examples or use another mesh."
        )
    raise ValueError(
        f"batch_size: expected a batch size B such that B and the last batch r = n mod B "
        f"are multiples of the {d} devices of mesh axis {DATA_AXIS!r} (each step's batch "
        f"is split evenly over them), got B = {schedule.size} and, with n = {n} training "
        f"examples, r = {schedule.rest}. Choose B and n (e.g. drop examples) so that both "
        f"are multiples of {d}."
    )


def _check_key(key) -> None:
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype is not None and not typed and dtype == np.uint32 and shape == (2,)
    if not isinstance(key, jax.Array) or not ((typed and shape == ()) or raw):
        got = f"dtype {dtype} and shape {shape}" if dtype is not None else type(key).__name__
        raise ValueError(f"key: expected one PRNG key, e.g. jax.random.key(0), got {got}.")


# ---------------------------------------------------------------- checkpoints


@jax.jit
def _device_copy(tree: Any) -> Any:
    """A copy on the device in one dispatch (the next block donates the original buffers)."""
    return jax.tree.map(jnp.copy, tree)


def _host_copy(tree: Any) -> Any:
    """NumPy copies of the leaves (a replicated array on several processes: the local copy).

    Taken before the next block runs, since that block donates the params and
    state buffers.
    """

    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = leaf.addressable_data(0)
        return np.array(leaf)

    return jax.tree.map(one, tree)


class _CheckpointWriter:
    """Writes :func:`gdjax.runs.save_checkpoint` on a background thread, newest first.

    Training does not wait for the disk: ``submit`` hands over device arrays that
    no later block donates, plus the history lists and their lengths, and
    returns; the writer copies to the host and slices the lists itself. One
    write runs at a time; a snapshot submitted while one runs waits, and a newer
    one replaces it. After a write that took w seconds the next starts no sooner
    than ``w / BUSY_FRACTION`` after it began, so the writer keeps a core busy
    at most that fraction of the time however short the epochs; ``fit`` asks
    :meth:`ready` and skips the device copy of a checkpoint the writer would
    not start on. ``close`` writes the last snapshot at once, waits for it, and
    re-raises a write error. The disk always holds the last *completed*
    checkpoint (``save_checkpoint`` is atomic), so a killed process resumes from
    there (at most ``w / BUSY_FRACTION`` plus k epochs behind, about 0.2 s for
    a small model), and resuming from any checkpoint gives the same params bit
    for bit.
    """

    BUSY_FRACTION = 0.05

    def __init__(self, run_dir: Path, fingerprint: dict[str, Any]) -> None:
        self._run_dir, self._fingerprint = run_dir, fingerprint
        self._cond = threading.Condition()
        self._waiting: tuple[int, Any, dict[str, Any]] | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._writing = False
        self._not_before = 0.0
        self.written: list[int] = []
        self.skipped: list[int] = []
        self._thread = threading.Thread(target=self._run, name="gdjax-checkpoint", daemon=True)
        self._thread.start()

    def submit(self, step: int, trees: Any, info: dict[str, Any]) -> None:
        with self._cond:
            self._raise()
            if self._waiting is not None:
                self.skipped.append(self._waiting[0])
            self._waiting = (step, trees, info)
            self._cond.notify()

    def ready(self) -> bool:
        """Whether a snapshot submitted now would be written at once (idle, not throttled)."""
        with self._cond:
            idle = self._waiting is None and not self._writing
            return idle and time.monotonic() >= self._not_before

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                    self._waiting is None or time.monotonic() < self._not_before
                ):
                    pause = None if self._waiting is None else self._not_before - time.monotonic()
                    self._cond.wait(pause)
                if self._waiting is None:
                    return
                step, (trees, history, records, lengths), info = self._waiting
                self._waiting, self._writing = None, True
            start = time.monotonic()
            try:
                lists = tuple(
                    {k: source[k][:n] for k, n in sizes.items()}
                    for source, sizes in zip((history, records), lengths, strict=True)
                )
                trees = {**_host_copy(trees), "history": _as_arrays(*lists)}
                runs.save_checkpoint(
                    self._run_dir, step=step, trees=trees, fingerprint=self._fingerprint, info=info
                )
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                with self._cond:
                    self._error = e
                return
            self.written.append(step)
            with self._cond:
                self._writing = False
                self._not_before = start + (time.monotonic() - start) / self.BUSY_FRACTION

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _tree_sha256(tree) -> str:
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if runs._is_key_array(leaf):
            leaf = jax.random.key_data(leaf)
        arr = np.asarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _describe_value(v) -> Any:
    if callable(v):
        return f"<callable {getattr(v, '__qualname__', type(v).__name__)}>"
    if isinstance(v, np.ndarray | jax.Array | np.generic):
        return np.asarray(v).tolist()
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)
    return v


def _fingerprint(
    *,
    model,
    loss,
    optimizer,
    hyperparams,
    tx,
    params,
    grad,
    data,
    batch_size,
    key,
    params_given,
    state_given,
    intervals,
) -> dict[str, Any]:
    """What determines the trajectory of a :func:`fit` run, as JSON (hashes for arrays)."""
    try:
        model_desc: Any = runs.model_to_dict(model)
    except ValueError:  # a custom activation: its name is all we can record
        model_desc = repr(model)
    if isinstance(optimizer, str):
        opt_desc: Any = {
            "name": optimizer,
            "hyperparams": {k: _describe_value(v) for k, v in sorted(hyperparams.items())},
        }
    else:  # an optax transformation: only its state's structure can be compared
        opt_desc = {"optax_state": str(jax.tree.structure(jax.eval_shape(tx.init, params)))}
    names = ("x", "y", "x_test", "y_test")
    return {
        "model": model_desc,
        "loss": loss.name,
        "optimizer": opt_desc,
        "grad": grad,
        "batch_size": batch_size,
        "data": {
            name: None
            if a is None
            else {"shape": list(np.shape(a)), "dtype": str(a.dtype), "sha256": _tree_sha256(a)}
            for name, a in zip(names, data, strict=True)
        },
        "key": _tree_sha256(key),
        "params": None if params_given is None else _tree_sha256(params_given),
        "opt_state": None if state_given is None else _tree_sha256(state_given),
        **intervals,
        "x64": bool(jax.config.read("jax_enable_x64")),
    }


def _check_fingerprint(run_dir: Path, stored: dict, current: dict) -> None:
    current = json.loads(json.dumps(current))  # as stored: tuples become lists
    diff = [k for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k)]
    if not diff:
        return

    def short(v) -> str:
        text = json.dumps(v, sort_keys=True)
        return text if len(text) <= 80 else text[:77] + "..."

    details = "; ".join(
        f"{k}: checkpoint {short(stored.get(k))}, now {short(current.get(k))}" for k in diff
    )
    raise ValueError(
        f"run_dir: expected {run_dir} to hold a checkpoint of this training run (same "
        f"config), or none, got one from a different config (differs in: {details}). Use "
        f"another run_dir, or delete {run_dir / runs.CHECKPOINT_MANIFEST} and "
        f"{run_dir / runs.CHECKPOINT_DIR} to start over."
    )


def _restore_history(saved: dict[str, Any]) -> tuple[dict[str, list], dict[str, list]]:
    """The inverse of :func:`_as_arrays`: lists that training appends to."""
    saved = {k: np.asarray(v) for k, v in saved.items()}
    step_loss = saved.pop("step_loss")
    history = {
        "epoch": list(saved.pop("epoch")),
        "loss": list(saved.pop("loss")),
        "step_loss": [step_loss] if step_loss.size else [],
    }
    return history, {k: list(v) for k, v in saved.items()}


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
