"""Checkpoints of a training run: the background writer and the run's fingerprint.

A checkpoint holds params, optimizer state, history and the position (epoch,
shuffle key, divergence), written atomically by
:func:`gdjax.runs.save_checkpoint` beside a fingerprint of everything that
determines the trajectory; a run resumes only from a checkpoint of its own
fingerprint, and then bit for bit.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import runs
from gdjax._trees import tree_sha256 as _tree_sha256


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
    no later block donates, plus a snapshot of the history (a function that
    builds its arrays, ``Log.snapshot`` in ``gdjax.train.history``), and returns;
    the writer copies to the host and builds the arrays itself. One
    write runs at a time; a snapshot submitted while one runs waits, and a newer
    one replaces it. After a write that took w seconds the next starts no sooner
    than ``w / BUSY_FRACTION`` after it began, so the writer keeps a core busy
    at most that fraction of the time however short the epochs; ``fit`` asks
    :meth:`ready` and skips the device copy of a checkpoint the writer would
    not start on. ``close`` writes the last snapshot at once, waits for it, and
    re-raises a write error. The writer holds the lock of ``run_dir``
    (:func:`gdjax.runs.lock`) from its creation to ``close``. The disk always
    holds the last *completed* checkpoint (``save_checkpoint`` is atomic), so a
    killed process resumes from there (at most ``w / BUSY_FRACTION`` plus k
    epochs behind, about 0.2 s for a small model), and resuming from any
    checkpoint gives the same params bit
    for bit.
    """

    BUSY_FRACTION = 0.05

    def __init__(self, run_dir: Path, fingerprint: dict[str, Any]) -> None:
        self._run_dir, self._fingerprint = run_dir, fingerprint
        # held until close: a second process writing this run_dir is told at once
        self._lock = runs.lock(run_dir)
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
                step, (trees, history), info = self._waiting
                self._waiting, self._writing = None, True
            start = time.monotonic()
            try:
                trees = {**_host_copy(trees), "history": history()}
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
        try:
            self._thread.join()
        finally:
            self._lock.release()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


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
