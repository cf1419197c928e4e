"""The jitted epochs: a ``lax.scan`` over steps inside a ``lax.scan`` over epochs.

Epoch e draws a permutation of the n training examples with
``fold_in(shuffle_key, e)``, cuts it into ⌊n/B⌋ batches of B that run inside
one scan, then one step on the r = n mod B remaining examples (the ragged last
batch). A block of epochs is one compiled call; a population runs the same
block under ``vmap`` over its members.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gdjax.data import permutation
from gdjax.losses import Loss
from gdjax.mlp import MLP
from gdjax.train.step import DATA_AXIS, MEMBER_AXIS, GradMode, _apply_step, _grad_fn


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """The static shape of an epoch: ``full`` batches of ``size``, then ``rest`` examples."""

    size: int
    full: int
    rest: int

    @property
    def steps(self) -> int:
        return self.full + (self.rest > 0)


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
    members: bool | Mesh = False,
    ticks: bool = False,
):
    """``count`` epochs in one jitted call: a ``lax.scan`` over epochs e, e+1, ….

    With ``members`` (True, or a mesh with an axis ``"members"`` to shard them
    over), the block runs under ``vmap`` over a leading member axis of the
    params, optimizer state, shuffle keys and ``diverged_at``, with the data and
    the epoch numbers shared: every member trains exactly as it would alone.

    Epoch e shuffles with ``fold_in(shuffle_key, e)``, as a single-epoch call
    would. Cached on its (hashable, static) arguments, so a second ``fit`` with
    the same model, loss, optimizer and batch schedule reuses the compiled code.

    Without ``guard`` no step checks anything; the block's ``diverged_at`` comes
    back as :data:`NOT_FINITE` when a loss or an end param is not finite, and
    ``fit`` then replays the block, guarded, from a copy of its inputs.

    With ``ticks``, each finished epoch e calls :func:`tick` on the host (an
    unordered ``jax.debug.callback``, outside the arithmetic), so a progress
    bar moves while the block runs.
    """
    epoch = _epoch_body(model, loss, tx, grad, schedule, mesh, guard)

    def run(params, opt_state, x, y, shuffle_key, first_epoch, diverged_at):
        def body(carry, e):
            params, opt_state, diverged_at = carry
            key = jax.random.fold_in(shuffle_key, e)
            params, opt_state, values, diverged_at = epoch(
                params, opt_state, x, y, key, (e - 1) * schedule.steps, diverged_at
            )
            if ticks:
                jax.debug.callback(tick, e)
            return (params, opt_state, diverged_at), values

        epochs = first_epoch + jnp.arange(count, dtype=jnp.int32)
        (params, opt_state, diverged_at), values = jax.lax.scan(
            body, (params, opt_state, diverged_at), epochs
        )
        if not guard:
            finite = jnp.all(jnp.isfinite(values)) & _all_finite(params)
            diverged_at = jnp.where(finite, diverged_at, NOT_FINITE)
        return params, opt_state, values, diverged_at

    if members is not False:
        run = jax.vmap(run, in_axes=(0, 0, None, None, 0, None, 0))
    if isinstance(members, Mesh):
        by_member, replicated = NamedSharding(members, P(MEMBER_AXIS)), NamedSharding(members, P())
        return jax.jit(
            run,
            donate_argnums=(0, 1),
            in_shardings=(by_member, by_member, replicated, replicated, by_member, replicated)
            + (by_member,),
            out_shardings=by_member,
        )
    if mesh is None:
        return jax.jit(run, donate_argnums=(0, 1))
    return jax.jit(run, donate_argnums=(0, 1), out_shardings=NamedSharding(mesh, P()))


MAX_EPOCHS_PER_CALL = 32


_listeners: list = []


def tick(epoch) -> None:
    """Epoch ``epoch`` has finished on the device: tell the listening progress bars."""
    for listener in list(_listeners):
        listener(int(epoch))


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


def steps_per_epoch(n: int, batch_size: int | None) -> int:
    """⌈n / B⌉: the number of steps :func:`fit` takes per epoch."""
    return 1 if batch_size is None else math.ceil(n / batch_size)
