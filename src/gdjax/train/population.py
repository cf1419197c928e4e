"""Populations: many seeds and hyper-parameters trained in one jitted run.

A population of P members is P runs of :func:`gdjax.train.fit`, one per PRNG
key, each with its own hyper-parameters, trained together: every block of
epochs is the single-model block under ``vmap`` over a leading member axis of
params, optimizer state, shuffle keys and divergence flags, with the data
shared. Member i computes exactly what ``fit(..., key=keys[i], **its
hyper-parameters)`` computes; a member that diverges is frozen at its last
finite params while the others go on.

Per-member hyper-parameters of a named optimizer are carried in its state
(``optax.inject_hyperparams``, with every shared hyper-parameter kept static),
so one compiled program serves every value.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax._checks import describe
from gdjax.losses import Loss
from gdjax.mlp import MLP, Params
from gdjax.models import as_loss, as_model
from gdjax.train.checkpoints import _fingerprint
from gdjax.train.history import Log
from gdjax.train.loop import (
    FitResult,
    _check_batches,
    _check_data,
    _check_finite,
    _check_first_order,
    _check_options,
    _intervals,
    _lr_description,
    _on_device,
    _resume,
    _Run,
    _State,
    _train,
)
from gdjax.train.step import (
    MEMBER_AXIS,
    OPTIMIZERS,
    GradMode,
    MeshLike,
    _default_grad,
    _grad_fn,
    check_opt_state,
    make_optimizer,
    member_mesh,
)


class PopulationResult(NamedTuple):
    """What :func:`fit_population` returns: :class:`~gdjax.train.FitResult` with a member axis.

    Attributes:
      params: the final params, each leaf with a leading member axis of size P
        (a diverged member's last finite params).
      opt_state: the optimizer state, likewise.
      history: :class:`~gdjax.train.FitResult`'s arrays, each with a leading
        member axis (``epoch`` and ``*_epoch`` repeated for every member). A
        step after a member's diverging step was not applied: its
        ``step_loss`` is NaN, and so is the ``loss`` of an epoch with no
        applied step.
      diverged: per member, ``None`` or the message of its divergence.
      diverged_step: per member, the 0-based global step that diverged (−1: none).
    """

    params: Params
    opt_state: Any
    history: dict[str, np.ndarray]
    diverged: tuple[str | None, ...]
    diverged_step: np.ndarray

    @property
    def size(self) -> int:
        """P, the number of members."""
        return len(self.diverged)

    def member(self, i: int) -> FitResult:
        """Member ``i`` as the :class:`~gdjax.train.FitResult` of its own ``fit``."""
        take = functools.partial(jax.tree.map, lambda a: a[i])
        return FitResult(
            take(self.params), take(self.opt_state), take(self.history), self.diverged[i]
        )


def fit_population(
    model: MLP | Callable,
    loss: str | Loss | Callable,
    optimizer: str | optax.GradientTransformation,
    data,
    *,
    epochs: int,
    keys: jax.Array,
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
) -> PopulationResult:
    """Train P members of ``model`` at once: one per key, each with its own hyper-parameters.

    Member i is the run ``fit(model, loss, optimizer, data, key=keys[i], …)``
    with hyper-parameter h equal to ``h[i]`` where an array of P values is
    given (a scalar is shared): its init key and shuffle key are
    ``split(keys[i])``, exactly as :func:`~gdjax.train.fit` derives them, and
    every epoch takes the same steps

    .. math::

        θ_i ← θ_i + u(∂C_{batch}/∂θ_i;\\ η_i, …)

    All members run in one jitted program (the block of epochs under
    ``vmap``); their results equal the single runs' to float rounding. A
    member whose loss or params stop being finite is frozen at its last finite
    params and flagged (``diverged``, ``diverged_step``); the others go on
    unaffected, and training stops early only when every member has diverged.

    ``model``, ``loss``, ``optimizer``, ``data``, ``epochs``, ``batch_size``,
    ``grad``, ``eval_every``, ``diagnostics_every``, ``progress`` and
    ``checkpoint_every`` are as for :func:`~gdjax.train.fit`.

    Args:
      keys: P ≥ 1 PRNG keys, e.g. ``jax.random.split(jax.random.key(0), 8)``.
      params: starting params with a leading member axis of size P on every
        leaf (required for a model given as a function); default: each
        member's ``model.init`` from its key.
      opt_state: starting optimizer state with a leading member axis; default:
        the optimizer's init for each member.
      callback: ``callback(epoch, params, opt_state, history)`` as for ``fit``,
        with the member axis on everything.
      mesh: ``None``, ``"local"``, ``"global"``, ``True`` or a ``Mesh`` with an
        axis ``"members"`` (see :func:`~gdjax.train.member_mesh`): the members
        are split over its devices (P must be a multiple of their number),
        the data set is replicated. The results equal the one-device run's.
      run_dir: checkpoints of the whole population (see ``fit``); the keys and
        every member's hyper-parameters are part of its fingerprint.
      **hyperparams: the named optimizer's hyper-parameters, each a number
        shared by all members or a 1-D array of P values (e.g.
        ``learning_rate=jnp.array([0.01, 0.03, 0.1])``).

    Returns:
      A :class:`PopulationResult`; ``result.member(i)`` is member i's
      :class:`~gdjax.train.FitResult`.

    Examples:
      >>> from gdjax import MLP
      >>> model = MLP((2, 8, 1), activation="tanh")
      >>> x, y = jnp.ones((16, 2)), jnp.zeros((16, 1))
      >>> result = fit_population(
      ...     model, "mse", "sgd", (x, y), epochs=3, keys=jax.random.split(jax.random.key(0), 4),
      ...     learning_rate=jnp.array([0.01, 0.03, 0.1, 0.3]), progress=False,
      ... )
      >>> result.history["loss"].shape
      (4, 3)
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
    size = _check_keys(keys)
    shared, per_member = _split_hyperparams(optimizer, hyperparams, size)
    _grad_fn(model, loss, grad)  # validates `grad`
    mesh = member_mesh(mesh)
    if mesh is not None and size % mesh.shape[MEMBER_AXIS]:
        d = mesh.shape[MEMBER_AXIS]
        raise ValueError(
            f"keys: expected a number of members that splits evenly over the {d} devices of "
            f"mesh axis {MEMBER_AXIS!r}, got {size} ({size} % {d} = {size % d})."
        )
    data, schedule = _check_data(data, batch_size, None)
    if params is not None:
        _check_member_axis("params", params, size)
        like = jax.tree.map(lambda a: a[0], params)
        for leaf in jax.tree.leaves(params):
            _check_finite("params", leaf)
    else:
        like = jax.eval_shape(lambda k: model.init(k[0]), keys)  # compiles nothing
    _check_batches(model, loss, like, data, given=False)
    if opt_state is not None:
        _check_member_axis("opt_state", opt_state, size)

    dtype = _float_dtype(like)
    tx = _member_optimizer(optimizer, shared, tuple(per_member), dtype)
    _check_first_order(tx, like)
    if opt_state is not None:
        stacked = jax.tree.map(lambda a: jax.ShapeDtypeStruct((size, *a.shape), a.dtype), like)
        check_opt_state(tx, stacked, opt_state, members=True)

    init_keys, shuffle_keys = _split_keys(keys)  # the first compiled call: inputs checked
    params_given, state_given = params, opt_state
    if params is None:
        params = _init_members(model, init_keys)
    else:  # copies: the blocks donate their buffers
        params = jax.tree.map(jnp.array, params)
    if opt_state is None:
        opt_state = _init_states(tx, params)
        if per_member:
            values = {k: jnp.asarray(v, dtype) for k, v in per_member.items()}
            opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **values})
    else:
        opt_state = jax.tree.map(jnp.array, opt_state)
    run = _Run(
        model=model,
        loss=loss,
        tx=tx,
        grad=grad,
        schedule=schedule,
        progress=bool(progress),
        callback=callback,
        mesh=None,
        members=True if mesh is None else mesh,
        data=_on_device(data),
        run_dir=None if run_dir is None else Path(run_dir),
        **options,
    )
    lrs = [
        _lr_description(optimizer, {**shared, **{k: v[i].item() for k, v in per_member.items()}})
        for i in range(size)
    ]
    log = Log(schedule, lrs, members=size)
    fingerprint = None
    if run.run_dir is not None:
        described = {**shared, **{k: np.asarray(v) for k, v in per_member.items()}}
        fingerprint = {
            **_fingerprint(
                model=model,
                loss=loss,
                optimizer=optimizer,
                hyperparams=described,
                tx=tx,
                params=params,
                grad=grad,
                data=run.data,
                batch_size=schedule.size,
                key=keys,
                params_given=params_given,
                state_given=state_given,
                intervals=_intervals(run),
            ),
            "members": size,
        }
    state = _State(params, opt_state, shuffle_keys, jnp.full((size,), -1, jnp.int32), 1)
    state = _resume(run, fingerprint, state, log)
    if state.first_epoch <= run.epochs and not all(m is not None for m in log.diverged):
        state = _train(run, fingerprint, state, log)
    return PopulationResult(
        state.params,
        state.opt_state,
        log.arrays(),
        tuple(log.diverged),
        np.asarray(jax.device_get(state.diverged_at), np.int64),
    )


# ---------------------------------------------------------------- members, compiled once


@jax.jit
def _split_keys(keys):
    """Each member's ``(init key, shuffle key) = split(keys[i])``, as fit splits its key."""
    pairs = jax.vmap(jax.random.split)(keys)
    return pairs[:, 0], pairs[:, 1]


@functools.partial(jax.jit, static_argnums=0)
def _init_members(model, init_keys):
    """Every member's ``model.init(init_keys[i])`` in one compiled call (not op by op)."""
    return jax.vmap(model.init)(init_keys)


@functools.partial(jax.jit, static_argnums=0)
def _init_states(tx, params):
    return jax.vmap(tx.init)(params)


# ---------------------------------------------------------------- checks


def _check_keys(keys) -> int:
    """P, the number of members: a 1-D array of typed keys or a (P, 2) uint32 array."""
    dtype, shape = getattr(keys, "dtype", None), getattr(keys, "shape", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype is not None and not typed and dtype == np.uint32 and len(shape) == 2
    if not isinstance(keys, jax.Array) or not ((typed and len(shape) == 1) or raw):
        got = f"dtype {dtype} and shape {shape}" if dtype is not None else type(keys).__name__
        if dtype is None:
            got = describe(keys)
        raise ValueError(
            f"keys: expected a 1-D array of P PRNG keys, e.g. "
            f"jax.random.split(jax.random.key(0), P), got {got}."
        )
    if shape[0] == 0:
        raise ValueError("keys: expected at least one key (one member), got 0.")
    return int(shape[0])


def _split_hyperparams(optimizer, hyperparams: dict, size: int) -> tuple[dict, dict]:
    """``(shared, per_member)``: numbers, and 1-D arrays of ``size`` values, by name."""
    shared, per_member = {}, {}
    for name, value in hyperparams.items():
        if callable(value) or np.ndim(value) == 0:
            shared[name] = value
            continue
        values = np.asarray(value)
        if values.ndim != 1 or values.shape[0] != size:
            raise ValueError(
                f"{name}: expected a number shared by every member or a 1-D array of one value "
                f"per member ({size}, the number of keys), got shape {values.shape}."
            )
        if not np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_:
            raise ValueError(f"{name}: expected numbers, got an array of {values.dtype}.")
        if not isinstance(optimizer, str):
            raise ValueError(
                f"{name}: per-member values need a named optimizer (one of "
                f"{', '.join(OPTIMIZERS)}); got an optax transformation, which carries "
                f"its own hyper-parameters."
            )
        per_member[name] = values
    # The optimizer checked as fit checks it (names, values) with member 0's values, and
    # every member's learning rate in range: not P optimizers through make_optimizer's
    # cache, which a large population would flush.
    make_optimizer(optimizer, **shared, **{k: v[0].item() for k, v in per_member.items()})
    if "learning_rate" in per_member:
        rates = per_member["learning_rate"]
        bad = ~(np.isfinite(rates) & (rates > 0))
        if bad.any():
            raise ValueError(
                f"learning_rate: expected a positive number for every member, got "
                f"{rates[bad][0]!r} for member {int(np.argmax(bad))}."
            )
    return shared, per_member


def _check_member_axis(name: str, tree, size: int) -> None:
    leaves = jax.tree.leaves(tree)
    bad = [np.shape(a) for a in leaves if not np.shape(a) or np.shape(a)[0] != size]
    if bad:
        raise ValueError(
            f"{name}: expected a leading member axis of size {size} (the number of keys) on "
            f"every leaf, got a leaf of shape {bad[0]}. Stack the members' trees, e.g. "
            f"jax.tree.map(lambda *a: jnp.stack(a), *trees)."
        )


def _float_dtype(params) -> np.dtype:
    floats = [a.dtype for a in jax.tree.leaves(params) if jnp.issubdtype(a.dtype, jnp.floating)]
    return floats[0] if floats else jnp.result_type(float)


def _member_optimizer(optimizer, shared: dict, names: tuple[str, ...], dtype):
    """The optimizer every member runs: fit's own when nothing varies, else the named
    optimizer with ``names`` injected into its state (the shared ones stay static)."""
    if not names:
        return make_optimizer(optimizer, **shared)
    try:
        frozen = tuple(sorted(shared.items()))
        hash(frozen)
    except TypeError:
        return _injected.__wrapped__(optimizer, tuple(shared.items()), names, np.dtype(dtype))
    return _injected(optimizer, frozen, names, np.dtype(dtype))


@functools.lru_cache(maxsize=64)
def _injected(name: str, shared: tuple, names: tuple[str, ...], dtype: np.dtype):
    factory = OPTIMIZERS[name]
    static = tuple(p for p in inspect.signature(factory).parameters if p not in names)
    placeholders = dict.fromkeys(names, math.nan)  # each member's values go into its state
    return optax.inject_hyperparams(factory, static_args=static, hyperparam_dtype=dtype)(
        **dict(shared), **placeholders
    )
