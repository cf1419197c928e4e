"""The training loop, read top to bottom: :func:`fit`.

``fit`` checks its arguments into a :class:`_Run` (nothing compiles before a bad
input is refused), finds where to start (the model's init, or a checkpoint of
the same run), and hands the state to :func:`_train`, which runs blocks of
epochs on the device (:mod:`gdjax.train.epochs`) while the host reads the
previous block (:class:`_Host`: history, evaluation, diagnostics, callbacks,
checkpoints). :func:`gdjax.train.fit_population` runs the same parts with a
leading member axis.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from gdjax import diagnostics, runs
from gdjax._checks import (
    check_key,
    check_num_examples,
    check_positive_int,
    is_concrete,
    progress_shown,
    shape_of,
)
from gdjax.losses import Loss
from gdjax.mlp import MLP, Params
from gdjax.models import as_loss, as_model, check_batch
from gdjax.train import epochs as epochs_module
from gdjax.train.checkpoints import (
    _check_fingerprint,
    _CheckpointWriter,
    _device_copy,
    _fingerprint,
)
from gdjax.train.epochs import (
    NOT_FINITE,
    _epochs_per_call,
    _make_epochs,
    _Schedule,
)
from gdjax.train.history import DivergedWarning, Log, LongRunWarning
from gdjax.train.step import (
    DATA_AXIS,
    MEMBER_AXIS,
    GradMode,
    MeshLike,
    _default_grad,
    _evaluate,
    _evaluate_members,
    _grad_fn,
    _put,
    _shards,
    check_opt_state,
    data_mesh,
    make_optimizer,
)


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


# ---------------------------------------------------------------- the checked run


@dataclasses.dataclass(frozen=True, eq=False)
class _Run:
    """Everything the loop reads, checked: static parts and the data on the device.

    ``mesh`` splits each batch by rows (data parallelism); ``members`` is False
    for :func:`fit`, and for a population True or a mesh whose ``"members"``
    axis splits the members over devices.
    """

    model: Any
    loss: Loss
    tx: optax.GradientTransformation
    grad: GradMode
    schedule: _Schedule
    epochs: int
    eval_every: int
    diagnostics_every: int
    callback: Callable | None
    callback_every: int
    checkpoint_every: int
    progress: bool
    mesh: Mesh | None
    members: bool | Mesh
    data: tuple[Any, Any, Any, Any]
    run_dir: Path | None

    @property
    def block(self) -> int:
        """Epochs per jitted call: every host event ends a block."""
        intervals = [
            i for i in (self.eval_every, self.diagnostics_every, self.checkpoint_every) if i
        ]
        if self.callback is not None:
            intervals.append(self.callback_every)
        return _epochs_per_call(self.epochs, intervals)

    def due(self, every: int, epoch: int) -> bool:
        return bool(every) and epoch % every == 0

    def replicated(self, tree):
        """``tree`` on every device of the mesh (unchanged without one)."""
        mesh = self.members if isinstance(self.members, Mesh) else self.mesh
        return tree if mesh is None else _put(tree, NamedSharding(mesh, P()))

    def per_member(self, tree):
        """``tree`` with its leading member axis split over the members' mesh, if any."""
        if isinstance(self.members, Mesh):
            return _put(tree, NamedSharding(self.members, P(MEMBER_AXIS)))
        return self.replicated(tree)

    def epochs_fn(self, count: int, guard: bool):
        return _make_epochs(
            self.model,
            self.loss,
            self.tx,
            self.grad,
            self.schedule,
            count,
            self.mesh,
            guard,
            self.members,
            ticks=self.progress,
        )


def _check_options(
    model,
    *,
    params,
    epochs,
    eval_every,
    diagnostics_every,
    callback,
    callback_every,
    checkpoint_every,
    progress,
    run_dir,
) -> dict[str, Any]:
    """The loop's options, checked by name (shared by fit and fit_population)."""
    if not isinstance(model, MLP) and params is None:
        raise ValueError(
            f"params: expected the starting params of {model!r}, a model given as a function "
            f"apply(params, x) that gdjax cannot initialise, got None."
        )
    options = {
        "epochs": check_positive_int("epochs", epochs),
        "eval_every": _check_every("eval_every", eval_every),
        "diagnostics_every": _check_every("diagnostics_every", diagnostics_every),
        "callback_every": check_positive_int("callback_every", callback_every),
        "checkpoint_every": _check_every("checkpoint_every", checkpoint_every),
    }
    if options["diagnostics_every"] and not isinstance(model, MLP):
        raise ValueError(
            f"diagnostics_every: the per-layer δ^l and weight norms are those of a gdjax.MLP, "
            f"so it expected 0 for {model!r}, got {diagnostics_every}."
        )
    if callback is not None and not callable(callback):
        raise ValueError(f"callback: expected a function, got {type(callback).__name__}.")
    if not isinstance(progress, bool | np.bool_):
        raise ValueError(f"progress: expected True or False, got {progress!r}.")
    if run_dir is None and options["checkpoint_every"]:
        raise ValueError(
            f"run_dir: expected a directory to write checkpoints into, since "
            f"checkpoint_every={checkpoint_every}, got None."
        )
    if run_dir is not None:
        runs.check_run_dir(run_dir, "run_dir")
    return options


MAX_STEPS = 2**31 - 1
"""The most steps one run can take: epochs and the global step are int32 on the device."""

LONG_RUN_SECONDS = 24 * 3600.0
"""A run whose estimated time (measured on the first block of epochs) exceeds this
many seconds gets one :class:`~gdjax.train.history.LongRunWarning`."""


def _check_total_steps(epochs: int, schedule: _Schedule) -> None:
    """epochs × steps per epoch must fit the device's int32 step counter."""
    if epochs * schedule.steps > MAX_STEPS:
        raise ValueError(
            f"epochs: expected at most {MAX_STEPS // schedule.steps:,} epochs of "
            f"{schedule.steps} steps (the step counter is int32: at most 2^31 − 1 = "
            f"{MAX_STEPS:,} steps), got {epochs:,}."
        )


def _check_data(data, batch_size, mesh: Mesh | None) -> tuple[tuple, _Schedule]:
    """``(x, y, x_test, y_test)`` and the epoch's batch schedule, checked."""
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
    if x_test is not None:
        check_num_examples(x_test, y_test)
    return (x, y, x_test, y_test), schedule


def _check_batches(model, loss, like, data, given: bool) -> None:
    """The data against the model (shapes, dtypes, label ranges, finite params) by
    ``eval_shape``: nothing compiles. Drawn params are checked as shapes only."""
    x, y, x_test, y_test = data
    check_batch(model, loss, like, x, y, finite_params=given)
    if x_test is not None:
        check_batch(model, loss, like, x_test, y_test, finite_params=False)


def _on_device(data) -> tuple:
    return tuple(None if a is None else jnp.asarray(a) for a in data)


# ---------------------------------------------------------------- fit


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
        to :data:`~gdjax.train.MAX_EPOCHS_PER_CALL` epochs run in one jitted call, so
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
    options = _check_options(
        model,
        params=params,
        epochs=epochs,
        eval_every=eval_every,
        diagnostics_every=diagnostics_every,
        callback=callback,
        callback_every=callback_every,
        checkpoint_every=checkpoint_every,
        progress=progress,
        run_dir=run_dir,
    )
    tx = make_optimizer(optimizer, **hyperparams)
    _grad_fn(model, loss, grad)  # validates `grad`
    mesh = data_mesh(mesh)
    data, schedule = _check_data(data, batch_size, mesh)
    _check_total_steps(options["epochs"], schedule)
    check_key(key)
    like = params if params is not None else jax.eval_shape(model.init, key)
    _check_batches(model, loss, like, data, given=params is not None)
    _check_first_order(tx, like)
    if opt_state is not None:
        check_opt_state(tx, like, opt_state)

    init_key, shuffle_key = jax.random.split(key)
    params_given, state_given = params, opt_state
    if params is None:
        params = model.init(init_key)
    # Work on copies: the epoch function donates its params and state buffers.
    params = jax.tree.map(jnp.array, params)
    opt_state = tx.init(params) if opt_state is None else jax.tree.map(jnp.array, opt_state)
    run = _Run(
        model=model,
        loss=loss,
        tx=tx,
        grad=grad,
        schedule=schedule,
        progress=bool(progress),
        callback=callback,
        mesh=mesh,
        members=False,
        data=_on_device(data),
        run_dir=None if run_dir is None else Path(run_dir),
        **options,
    )
    log = Log(schedule, [_lr_description(optimizer, hyperparams)], members=None)
    fingerprint = None
    if run.run_dir is not None:
        fingerprint = _fingerprint(
            model=model,
            loss=loss,
            optimizer=optimizer,
            hyperparams=hyperparams,
            tx=tx,
            params=params,
            grad=grad,
            data=run.data,
            batch_size=schedule.size,
            key=key,
            params_given=params_given,
            state_given=state_given,
            intervals=_intervals(run),
        )
    state = _State(params, opt_state, shuffle_key, jnp.asarray(-1, jnp.int32), 1)
    state = _resume(run, fingerprint, state, log)
    if state.first_epoch <= run.epochs and log.diverged[0] is None:
        state = _train(run, fingerprint, state, log)
    return FitResult(state.params, state.opt_state, log.arrays(), log.diverged[0])


# ---------------------------------------------------------------- the parts


class _State(NamedTuple):
    """Where training stands: the next block starts at ``first_epoch``."""

    params: Any
    opt_state: Any
    shuffle_key: jax.Array
    diverged_at: jax.Array  # the global step that diverged, per member; −1: none
    first_epoch: int


def _intervals(run: _Run) -> dict[str, int | None]:
    return {
        "eval_every": run.eval_every,
        "diagnostics_every": run.diagnostics_every,
        "checkpoint_every": run.checkpoint_every,
        "callback_every": run.callback_every if run.callback is not None else None,
    }


def _resume(run: _Run, fingerprint, state: _State, log: Log) -> _State:
    """``state`` as the run's last checkpoint left it, if ``run_dir`` holds one of this run."""
    if run.run_dir is None:
        return state
    like = {"params": state.params, "opt_state": state.opt_state}
    ckpt = runs.load_checkpoint(run.run_dir, like=like)
    if ckpt is None:
        return state
    _check_fingerprint(run.run_dir, ckpt.fingerprint, fingerprint)
    if ckpt.step > run.epochs:
        raise ValueError(
            f"epochs: expected at least the {ckpt.step} epochs already done by the "
            f"checkpoint in {run.run_dir}, got {run.epochs}."
        )
    log.restore(ckpt.trees["history"])
    diverged = ckpt.info.get("diverged")
    log.diverged = list(diverged) if isinstance(diverged, list) else [diverged]
    for message in log.diverged:
        if message is not None:
            warnings.warn(message, DivergedWarning, stacklevel=_user_stacklevel())
    diverged_at = jnp.asarray(ckpt.trees["state"]["diverged_at"], jnp.int32)
    return _State(
        ckpt.trees["params"], ckpt.trees["opt_state"], state.shuffle_key, diverged_at, ckpt.step + 1
    )


class _Host:
    """What the host does between blocks: read results, evaluate, report, checkpoint."""

    def __init__(self, run: _Run, log: Log, writer, shuffle_key, first_epoch: int) -> None:
        self.run, self.log, self.writer = run, log, writer
        self.first_epoch = first_epoch
        self.checkpointed = first_epoch - 1
        self.key_data = np.asarray(jax.random.key_data(shuffle_key)) if writer is not None else None
        self.bar = tqdm(
            total=run.epochs,
            initial=first_epoch - 1,
            desc="epochs",
            unit="epoch",
            dynamic_ncols=True,
            disable=not progress_shown(run.progress),
        )
        self.start = time.perf_counter()
        self.compile_s = 0.0  # time spent in first calls (tracing and compiling)
        self.warned_long = False
        self.compiled: set = set()
        self._lock = threading.Lock()
        self._shown = time.perf_counter()
        if run.progress:
            epochs_module._listeners.append(self.on_tick)

    def call(self, fn, *args):
        """``fn(*args)``, timing its first call apart: that is compilation, not training."""
        if fn in self.compiled:
            return fn(*args)
        begun = time.perf_counter()
        out = fn(*args)  # returns once compiled and dispatched
        self.compile_s += time.perf_counter() - begun
        self.compiled.add(fn)
        return out

    def on_tick(self, epoch: int) -> None:
        """An epoch finished on the device (a runtime thread): move the bar, ≤ 10 times a second."""
        now = time.perf_counter()
        if now - self._shown >= 0.1:
            self._shown = now
            self.advance(epoch)

    def advance(self, epoch: int) -> None:
        with self._lock:
            if epoch > self.bar.n:
                self.bar.update(epoch - self.bar.n)

    def evaluations(self, last: int, params) -> dict | None:
        """Evaluation after epoch ``last`` if it is due: dispatched now, read later."""
        run = self.run
        if not run.due(run.eval_every, last):
            return None
        evaluate = _evaluate_members if run.members is not False else _evaluate
        x, y, x_test, y_test = run.data
        evals = {}
        for prefix, (xs, ys) in (("train", (x, y)), ("test", (x_test, y_test))):
            if xs is not None:
                for name, value in evaluate(run.model, run.loss, params, xs, ys).items():
                    evals[f"{prefix}_{name}"] = value
        return evals

    def read_block(self, first: int, count: int, values, diverged_at, evals) -> bool:
        """Record a block's results on the host; True when every member has diverged."""
        log = self.log
        for m in log.add_block(first, count, values, diverged_at):
            warnings.warn(_member_message(log, m), DivergedWarning, stacklevel=_user_stacklevel())
        if all(message is not None for message in log.diverged):
            return True
        last = first + count - 1
        if evals is not None:
            log.record("eval_epoch", last)
            for name, value in evals.items():
                log.record(name, np.asarray(value, np.float64))
        running = max(time.perf_counter() - self.start - self.compile_s, 1e-9)
        done = last - self.first_epoch + 1
        steps = done * self.run.schedule.steps
        left = running / done * (self.run.epochs - last)
        self.bar.set_postfix(
            loss=f"{np.nanmedian(log.losses[-1]):.4g}",
            steps_per_s=f"{steps / running:.0f}",
            compile=f"{self.compile_s:.1f}s",
            left=_duration(left),
        )
        self.advance(last)
        if not self.warned_long and left > LONG_RUN_SECONDS:
            self.warned_long = True
            warnings.warn(
                f"epochs: {self.run.epochs:,} epochs will take about {_duration(left)} more "
                f"({running / done:.3g} s per epoch over the {done} measured, compilation "
                f"apart), beyond {_duration(LONG_RUN_SECONDS)}. Interrupt it (Ctrl-C) and ask "
                f"for fewer epochs, or let it run.",
                LongRunWarning,
                stacklevel=_user_stacklevel(),
            )
        return False

    def diagnostics(self, last: int, params) -> None:
        run = self.run
        self.log.record("diagnostics_epoch", last)
        x, y = run.data[:2]
        report = _report_fn(run.members is not False)(run.model, run.loss, params, x, y)
        for name, value in report.items():
            self.log.record(f"diagnostics/{name}", np.asarray(value))

    def checkpoint(self, epoch: int, params, opt_state, diverged_at) -> None:
        """Hand the state after ``epoch`` to the background writer.

        ``params`` and ``opt_state`` must be buffers no later block donates (a
        :func:`_device_copy`, or the final ones), and the log must hold epochs
        up to ``epoch`` and no further.
        """
        if self.writer is not None:
            trees = {
                "params": params,
                "opt_state": opt_state,
                "state": {
                    "epoch": np.int64(epoch),
                    "diverged_at": diverged_at,
                    "shuffle_key": self.key_data,
                },
            }
            diverged = self.log.diverged if self.run.members is not False else self.log.diverged[0]
            self.writer.submit(epoch, (trees, self.log.snapshot()), {"diverged": diverged})
        self.checkpointed = epoch

    def close(self) -> None:
        if self.on_tick in epochs_module._listeners:
            epochs_module._listeners.remove(self.on_tick)
        self.bar.close()
        if self.writer is not None:  # also on Ctrl-C: the last snapshot reaches the disk
            self.writer.close()


@functools.cache
def _report_fn(members: bool):
    if not members:
        return jax.jit(diagnostics.gradient_report, static_argnums=(0, 1))

    def report(model, loss, params, x, y):
        return jax.vmap(lambda p: diagnostics.gradient_report(model, loss, p, x, y))(params)

    return jax.jit(report, static_argnums=(0, 1))


class _Block(NamedTuple):
    """A dispatched block of epochs whose results the host has not read yet."""

    first: int
    count: int
    values: jax.Array
    diverged_at: jax.Array
    evals: dict | None
    saved: Any  # a device copy of (params, opt_state) for its checkpoint, or None
    inputs: Any  # a device copy of its inputs, to replay it guarded; None if guarded


def _train(run: _Run, fingerprint, state: _State, log: Log) -> _State:
    """Run epochs ``state.first_epoch … run.epochs`` in blocks; return the final state.

    Epochs run in blocks of up to ``run.block`` per jitted call (a scan over
    epochs), ending on every epoch where the host has work (evaluation,
    diagnostics, a callback, a checkpoint). Block b+1 is dispatched before block
    b's results are read, so the host's bookkeeping overlaps the device's work.
    Blocks run with no per-step check; each returns whether its losses and end
    params are finite, and one that is not is replayed from a copy of its inputs
    with the per-step guard (steps after a divergence are not applied, the
    params stay the last finite ones), the block dispatched after it from its
    non-finite end is dropped, and the rest of training runs guarded. A
    checkpoint does not stop that pipeline: the block's params and state are
    copied on the device (the next block donates them) and written once the
    block's results have been read.
    """
    run = dataclasses.replace(run, data=run.replicated(run.data))
    writer = (
        _CheckpointWriter(run.run_dir, fingerprint)
        if run.run_dir is not None and jax.process_index() == 0
        else None
    )
    host = _Host(run, log, writer, state.shuffle_key, state.first_epoch)
    params, opt_state, diverged_at = run.per_member(
        (state.params, state.opt_state, state.diverged_at)
    )
    x, y = run.data[:2]
    shuffle_key = run.per_member(state.shuffle_key)

    def replay(block: _Block):
        """The block run again with the per-step guard, from its inputs."""
        epochs = run.epochs_fn(block.count, guard=True)
        first, not_diverged = run.replicated(jnp.asarray(block.first, jnp.int32)), -1
        diverged = run.per_member(jnp.full(jnp.shape(diverged_at), not_diverged, jnp.int32))
        p, s, values, block_diverged_at = host.call(
            epochs, *block.inputs, x, y, shuffle_key, first, diverged
        )
        last = block.first + block.count - 1
        return block._replace(
            values=values,
            diverged_at=block_diverged_at,
            evals=None if block.evals is None else host.evaluations(last, p),
            saved=None if block.saved is None else _device_copy((p, s)),
        ), (p, s, block_diverged_at)

    def finish(block: _Block, *, write: bool = True):
        """Read a block (replayed first if it ran unguarded and came back not finite),
        then write its checkpoint if it ends on one. Returns ``(stop, replayed, saved)``."""
        replayed = None
        if block.inputs is not None and np.any(np.asarray(block.diverged_at) == NOT_FINITE):
            block, replayed = replay(block)
        stop = host.read_block(
            block.first, block.count, block.values, block.diverged_at, block.evals
        )
        if not stop and write and block.saved is not None:
            host.checkpoint(block.first + block.count - 1, *block.saved, block.diverged_at)
        return stop, replayed, block.saved

    pending: _Block | None = None
    epoch, guard = state.first_epoch, False
    try:
        while epoch <= run.epochs:
            count = min(run.block, run.epochs - epoch + 1)
            last = epoch + count - 1
            inputs = None if guard else _device_copy((params, opt_state))
            params, opt_state, values, diverged_at = host.call(
                run.epochs_fn(count, guard),
                params,
                opt_state,
                x,
                y,
                shuffle_key,
                run.replicated(jnp.asarray(epoch, jnp.int32)),
                diverged_at,
            )
            saved = None
            if run.run_dir is not None and run.due(run.checkpoint_every, last):
                # Copied (the next block donates the buffers) only when the writer would
                # start on it at once: a busy writer makes this checkpoint a no-op. With
                # several processes every one must launch the same computations, so all
                # copy at every checkpoint epoch and process 0 alone writes.
                if jax.process_count() > 1 or writer.ready():
                    saved = _device_copy((params, opt_state))
            block = _Block(
                epoch, count, values, diverged_at, host.evaluations(last, params), saved, inputs
            )
            if pending is not None:
                stop, replayed, _ = finish(pending)
                if replayed is not None:  # the block just dispatched started from NaN/Inf
                    params, opt_state, diverged_at = replayed
                    guard, epoch = True, pending.first + pending.count
                pending = None
                if stop:
                    break
                if replayed is not None:
                    continue
            pending, epoch = block, last + 1
            diagnose = run.due(run.diagnostics_every, last)
            call = run.callback is not None and run.due(run.callback_every, last)
            if diagnose or call:  # the host needs this block's results now
                stop, replayed, saved = finish(pending, write=False)
                pending = None
                if replayed is not None:
                    params, opt_state, diverged_at = replayed
                    guard = True
                if stop:
                    break
                if diagnose:
                    host.diagnostics(last, params)
                if saved is not None:  # after the diagnostics it must hold
                    host.checkpoint(last, *saved, diverged_at)
                if call:
                    run.callback(last, params, opt_state, log.arrays())
        if pending is not None:
            _, replayed, _ = finish(pending)
            if replayed is not None:
                params, opt_state, diverged_at = replayed
        if run.run_dir is not None:
            reached = log.epochs[-1] if log.epochs else state.first_epoch - 1
            diverged = any(m is not None for m in log.diverged)
            if reached != host.checkpointed or diverged:
                host.checkpoint(int(reached), params, opt_state, diverged_at)
    finally:
        host.close()
    return _State(params, opt_state, shuffle_key, diverged_at, run.epochs + 1)


# ---------------------------------------------------------------- checks and messages


def _member_message(log: Log, m: int) -> str:
    if log.members is None:
        return log.diverged[m]
    return (
        f"member {m} of {log.members}: {log.diverged[m]} Member {m} is frozen at its last "
        f"finite params; the other members go on."
    )


def _duration(seconds: float) -> str:
    """``seconds`` for a reader: 42 s, 3.5 min, 7.2 h, 12 days, 3.2e+04 years."""
    for unit, size, least in (
        ("years", 365.25 * 86400, 2),
        ("days", 86400, 2),
        ("h", 3600, 1),
        ("min", 60, 1),
    ):
        if seconds >= least * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.2g} s"


def _user_stacklevel() -> int:
    """The stack level of the first frame outside gdjax: a warning points at the user's call."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


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


def _check_first_order(tx: optax.GradientTransformation, like) -> None:
    """``tx.update(g, state, params)`` must trace (``eval_shape``: nothing compiles).

    fit's steps give the optimizer the gradient alone; a transformation that
    needs more (``optax.lbfgs`` asks for the value, the gradient and a
    ``value_fn``) is refused by name rather than failing inside the first step.
    """
    try:
        jax.eval_shape(lambda p: tx.update(p, tx.init(p), p), like)
    except TypeError as e:
        raise ValueError(
            f"optimizer: expected a first-order transformation whose update takes "
            f"(gradients, state, params), as fit calls it; this one failed with "
            f"TypeError: {e}. Line-search methods such as optax.lbfgs need the loss "
            f"value and a value_fn: run them in a loop of your own."
        ) from None


def _check_every(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer (0: never), got {value!r}.")
    return int(value)
