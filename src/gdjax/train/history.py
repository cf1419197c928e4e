"""The history of a training run, read on the host block by block; divergence.

A block of epochs comes back from the device as every step's batch loss
(``(members, epochs, steps)``) and, per member, the global index of the step
at which the loss or the params stopped being finite (−1: none). :class:`Log`
keeps what the user sees in ``FitResult.history``:

.. math::

    \\text{loss}_e = \\frac{\\sum_s B_s\\, C_{e,s}}{\\sum_s B_s}

the example-weighted mean of epoch e's step losses C_{e,s} (B_s examples in
step s; a ragged last batch weighs less), over the steps that were applied.
A step after a member's diverging step was not applied: its loss is NaN in
``step_loss`` and does not count. :func:`gdjax.train.fit` is a population of
one member whose arrays carry no member axis, and it stops at the first
divergence; :func:`gdjax.train.fit_population` goes on until every member
has diverged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gdjax.train.epochs import _Schedule


class DivergedWarning(RuntimeWarning):
    """Training stopped because the loss or the params stopped being finite."""


class LongRunWarning(UserWarning):
    """The epochs asked for would take longer than ``gdjax.train.loop.LONG_RUN_SECONDS``
    (one day), estimated from the first block of epochs."""


def divergence_message(epoch, global_step, schedule: _Schedule, step_losses, lr) -> str:
    """What a :class:`DivergedWarning` says: where, the last finite loss, what to try."""
    finite = step_losses[np.isfinite(step_losses)]
    last = f"{finite[-1]:.6g}" if finite.size else "none (the first loss was not finite)"
    local = global_step - (epoch - 1) * schedule.steps
    return (
        f"training diverged at epoch {epoch}, step {local + 1} of {schedule.steps} in that "
        f"epoch (global step {global_step + 1}): the loss or the params became NaN/Inf. "
        f"Last finite loss: {last}. Learning rate: {lr}. Returning the last finite params "
        f"(before that step); try a smaller learning rate."
    )


def _shared(name: str) -> bool:
    """Records that are the same for every member: the epochs they were taken at."""
    return name.endswith("epoch")


class Log:
    """History lists that training appends to, for ``members`` members (None: one, no axis).

    ``epochs`` and ``*_epoch`` records are shared by all members; every other
    entry holds one row per member. :meth:`arrays` gives the user's arrays:
    without members as :func:`gdjax.train.fit` has always returned them,
    with members each with a leading member axis (the epochs broadcast).
    """

    def __init__(self, schedule: _Schedule, lr: list[str], members: int | None) -> None:
        self.schedule, self.lr, self.members = schedule, lr, members
        self.count = 1 if members is None else members
        self.epochs: list[int] = []
        self.losses: list[np.ndarray] = []  # per epoch: (count,)
        self.step_losses: list[np.ndarray] = []  # per epoch: (count, steps applied)
        self.records: dict[str, list] = {}  # shared: ints; else (count, ...) arrays
        self.diverged: list[str | None] = [None] * self.count
        self.weights = np.full(schedule.steps, schedule.size, np.float64)  # examples per step
        if schedule.rest:
            self.weights[-1] = schedule.rest

    # ---- reading blocks

    def add_block(self, first: int, count: int, values, diverged_at) -> list[int]:
        """Record epochs ``first … first+count−1``; return the members that diverged in them.

        ``values``: every step's batch loss, ``(count, steps)`` or
        ``(members, count, steps)``; ``diverged_at``: the global index of each
        member's diverging step (−1: none). Once every member has diverged,
        the epochs after the last applied step are not recorded.
        """
        steps = self.schedule.steps
        values = np.array(values, dtype=np.result_type(np.asarray(values).dtype, np.float32))
        values = values.reshape(self.count, count, steps)
        diverged_at = np.asarray(diverged_at, np.int64).reshape(self.count)
        start = (first - 1) * steps
        index = start + np.arange(count * steps).reshape(count, steps)
        applied = (diverged_at[:, None, None] < 0) | (index[None] <= diverged_at[:, None, None])
        values = np.where(applied, values, np.nan)
        new = [m for m in range(self.count) if start <= diverged_at[m] < start + count * steps]
        keep_epochs, keep_steps = count, steps
        if np.all(diverged_at >= 0):  # nothing runs after this block: trim what did not
            last = int(diverged_at.max())
            if last < start:
                keep_epochs = 0
            else:
                keep_epochs = (last - start) // steps + 1
                keep_steps = last - (start + (keep_epochs - 1) * steps) + 1
        for e in range(keep_epochs):
            width = keep_steps if e == keep_epochs - 1 else steps
            row, ok = values[:, e, :width], applied[:, e, :width]
            weights = np.where(ok, self.weights[:width], 0.0)  # as np.average, over applied steps
            total = weights.sum(axis=1)
            sums = np.multiply(np.where(ok, row, 0.0), weights).sum(axis=1)
            self.epochs.append(first + e)
            self.losses.append(np.where(total > 0, sums / np.where(total > 0, total, 1), np.nan))
            self.step_losses.append(row)
        for m in new:
            epoch = int(diverged_at[m] // steps) + 1
            self.diverged[m] = divergence_message(
                epoch,
                int(diverged_at[m]),
                self.schedule,
                np.concatenate([r[m] for r in self.step_losses]),
                self.lr[m],
            )
        return new

    def record(self, name: str, value) -> None:
        """Append a record: an epoch number (shared), or one value per member."""
        if not _shared(name):
            value = np.asarray(value)
            value = value[None] if self.members is None else value
        self.records.setdefault(name, []).append(value)

    # ---- what the user and the checkpoints see

    def arrays(self, lengths: tuple[int, dict[str, int]] | None = None) -> dict[str, np.ndarray]:
        """The history as arrays (of the first ``lengths`` entries, when given)."""
        epochs, counts = lengths if lengths is not None else self.lengths()
        c = self.count
        out = {
            "epoch": np.asarray(self.epochs[:epochs], np.int64),
            "loss": np.asarray(self.losses[:epochs], np.float64).reshape(epochs, c).T,
            "step_loss": (
                np.concatenate(self.step_losses[:epochs], axis=1) if epochs else np.zeros((c, 0))
            ),
        }
        for name, n in counts.items():
            values = self.records[name][:n]
            if _shared(name):
                out[name] = np.asarray(values)
            else:
                out[name] = np.moveaxis(np.stack(values), 0, 1) if n else np.zeros((c, 0))
        if self.members is None:
            return {k: v if k == "epoch" or _shared(k) else v[0] for k, v in out.items()}
        return {
            k: np.broadcast_to(v, (c, *v.shape)).copy() if k == "epoch" or _shared(k) else v
            for k, v in out.items()
        }

    def lengths(self) -> tuple[int, dict[str, int]]:
        return len(self.epochs), {k: len(v) for k, v in self.records.items()}

    def snapshot(self) -> Callable[[], dict[str, np.ndarray]]:
        """The history as it stands now, as a function the checkpoint writer calls later.

        The lists only grow, so their lengths now fix the snapshot.
        """
        lengths = self.lengths()
        return lambda: self.arrays(lengths)

    def restore(self, saved: dict[str, Any]) -> None:
        """The inverse of :meth:`arrays`: continue from a checkpoint's history."""
        saved = {k: np.asarray(v) for k, v in saved.items()}
        if self.members is not None:  # shared entries were broadcast over the members
            saved = {
                k: v[0] if (k == "epoch" or _shared(k)) and v.ndim else v for k, v in saved.items()
            }
        else:
            saved = {k: v if k == "epoch" or _shared(k) else v[None] for k, v in saved.items()}
        epoch, loss, step_loss = saved.pop("epoch"), saved.pop("loss"), saved.pop("step_loss")
        self.epochs = [int(e) for e in epoch]
        self.losses = list(loss.T)
        steps, done = self.schedule.steps, step_loss.shape[1]
        self.step_losses = [step_loss[:, i : min(i + steps, done)] for i in range(0, done, steps)]
        self.records = {
            k: [int(e) for e in v] if _shared(k) else list(np.moveaxis(v, 1, 0))
            for k, v in saved.items()
        }
