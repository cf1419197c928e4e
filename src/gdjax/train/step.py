"""One gradient-descent step, the optimizers it takes, data parallelism and evaluation.

One step with an optax optimizer is

    g = ∂C/∂θ (by hand: gdjax.backprop; or by jax.value_and_grad),
    u, s ← optimizer.update(g, s, θ),    θ ← θ + u          (u = −η g for plain SGD)

The bottom floor of :mod:`gdjax.train`: the epochs of :func:`gdjax.train.fit`
are built from :func:`_grad_fn` and :func:`_apply_step`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gdjax import runs
from gdjax._checks import dtype_of, shape_of
from gdjax.backprop import backprop
from gdjax.losses import Loss
from gdjax.metrics import accuracy
from gdjax.mlp import MLP, Params
from gdjax.models import ApplyModel, as_loss, as_model, check_batch, objective
from gdjax.optim import check_schedule

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


def make_optimizer(
    optimizer: str | optax.GradientTransformation, **hyperparams: Any
) -> optax.GradientTransformation:
    """An optax transformation from a name and keyword hyper-parameters.

    Names: ``sgd``, ``momentum`` (heavy ball, ``beta``), ``nesterov`` (``beta``),
    ``rmsprop``, ``adam``, ``adamw`` — optax's implementations, whose equations
    :mod:`gdjax.optim` writes out by hand and tests equal. ``learning_rate`` is
    required. A ``GradientTransformation`` passes through (no hyper-parameters),
    and an ``optax.MultiSteps`` gives its ``gradient_transformation()``.
    """
    if not isinstance(optimizer, optax.GradientTransformation) and callable(
        getattr(optimizer, "gradient_transformation", None)
    ):  # optax.MultiSteps: its transformation does the accumulating
        optimizer = optimizer.gradient_transformation()
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
    if callable(lr):
        check_schedule(lr)
    elif (
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


def _brief(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.lru_cache(maxsize=64)
def _state_like(tx, treedef, leaf_specs, members: bool):
    """The structure and leaf shapes of ``tx.init(params)`` (``jax.eval_shape``: nothing
    compiles), once per optimizer and params shapes."""
    like = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(*spec) for spec in leaf_specs])
    init = jax.vmap(tx.init) if members else tx.init
    try:
        state = jax.eval_shape(init, like)
    except Exception:  # an optimizer that cannot init these params says so itself later
        return None
    leaves, state_def = jax.tree_util.tree_flatten_with_path(state)
    return state_def, tuple(
        (jax.tree_util.keystr(path), tuple(leaf.shape)) for path, leaf in leaves
    )


def check_opt_state(tx, params, opt_state, *, members: bool = False) -> None:
    """Raise ``ValueError`` naming ``opt_state`` unless it has the structure and leaf
    shapes of ``tx.init(params)`` (found by ``jax.eval_shape``; nothing compiles).

    Catches a missing state (``None``), the state of another optimizer, and the
    state of other params, which optax would otherwise report from inside the
    update ("number of updates and states has to be the same in chain") or not
    at all. With ``members``, every leaf carries a leading member axis.
    """
    fix = "build it with optimizer.init(params) (step.optimizer.init(params) for make_step)"
    if opt_state is None:
        raise ValueError(f"opt_state: expected the optimizer's state; {fix}. Got None.")
    # Called on every step of make_step's step: paths only in the messages.
    leaves, treedef = jax.tree.flatten(params)
    specs = tuple((shape_of(a), dtype_of(a) or np.dtype(np.float32)) for a in leaves)
    expected = _state_like(tx, treedef, specs, members)
    if expected is None:
        return
    state_def, shapes = expected
    got_leaves, got_def = jax.tree.flatten(opt_state)
    if got_def != state_def:
        raise ValueError(
            f"opt_state: expected the state of this optimizer for these params "
            f"({state_def.num_leaves} leaves: {_brief(str(state_def))}), got "
            f"{got_def.num_leaves} leaves: {_brief(str(got_def))}. A state of another "
            f"optimizer or of other params does not fit; {fix}."
        )
    for (path, want), leaf in zip(shapes, got_leaves, strict=True):
        if shape_of(leaf) != want:
            raise ValueError(
                f"opt_state{path}: expected shape {tuple(want)}, as optimizer.init(params) "
                f"gives for these params, got {shape_of(leaf)}; {fix}."
            )


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


MEMBER_AXIS = "members"
"""The mesh axis a population's members are split over."""


def member_mesh(mesh: MeshLike) -> Mesh | None:
    """The :class:`~jax.sharding.Mesh` that ``mesh=`` of :func:`~gdjax.train.fit_population` means.

    As :func:`data_mesh`, with the members split over the devices instead of
    the batch: ``"local"`` or ``True`` (this process's devices), ``"global"``
    (every process's), or a ``Mesh`` with an axis named ``"members"``.

    >>> member_mesh("local").axis_names
    ('members',)
    """
    if mesh is None or mesh is False:
        return None
    if mesh is True or (isinstance(mesh, str) and mesh in ("local", "global")):
        devices = jax.local_devices() if mesh is True or mesh == "local" else jax.devices()
        return Mesh(np.asarray(devices), (MEMBER_AXIS,))
    if not isinstance(mesh, Mesh) or MEMBER_AXIS not in mesh.axis_names:
        got = f"axes {mesh.axis_names}" if isinstance(mesh, Mesh) else repr(mesh)
        raise ValueError(
            f"mesh: expected None, 'local', 'global', True or a jax.sharding.Mesh with an axis "
            f"named {MEMBER_AXIS!r} to split the members over, got {got}."
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
        object each time so compiled code is reused). Checked when the step is
        built: a module object (Equinox, Flax) or a function that does not take
        two arguments is refused then. Params, data and the output's shape are
        checked at every call, before anything compiles (``jax.eval_shape``),
        and ``opt_state`` against ``step.optimizer.init(params)``.
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
      >>> import jax.numpy as jnp
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
        check_opt_state(tx, params, opt_state)
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


def _metrics(model, loss, params, x, y) -> dict[str, jax.Array]:
    pred = model.apply(params, x)
    out = {"loss": loss.fn(pred, y)}
    acc = accuracy(loss, pred, y)
    if acc is not None:
        out["accuracy"] = acc
    return out


_evaluate = jax.jit(_metrics, static_argnums=(0, 1))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate_members(model, loss, params, x, y):
    """:func:`evaluate` of every member: params with a leading member axis."""
    return jax.vmap(lambda p: _metrics(model, loss, p, x, y))(params)


# ---------------------------------------------------------------- fit
