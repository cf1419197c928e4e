"""The model contract: any ``apply(params, x) -> output`` with any ``loss(output, y)``.

gdjax trains and analyses a model through one contract:

    output = apply(θ, x),      C(θ) = loss(apply(θ, x), y)    (a mean over the batch)

for a params pytree θ of floating arrays. :class:`gdjax.MLP` is one such model —
the one with a hand-written backward pass (``grad="hand"``); a conv net written
in plain JAX, an Equinox module (``eqx.partition`` / ``eqx.combine``) or a Flax
NNX module (``nnx.split`` / ``nnx.merge``) are others, trained and analysed by
the same code with autodiff. This module turns what a user passes into that
contract:

- :func:`as_model`: a ``gdjax.MLP`` passes through; a function
  ``apply(params, x)`` becomes an :class:`ApplyModel`, hashable by the
  function's identity (so jitted code built on it is reused while the user
  passes the same function object).
- :func:`as_loss`: a gdjax :class:`~gdjax.losses.Loss` or its name passes
  through :func:`gdjax.losses.get`; a function ``loss(output, y) -> scalar``
  becomes a ``Loss`` whose gradient ∂C/∂output is autodiff's.
- :func:`objective`: ``f(params, x, y) = loss(apply(params, x), y)``, the
  function every analysis (curvature, landscape, per-example) takes.
- :func:`check_batch`: the checks of :func:`gdjax.backprop.check_batch` for
  any model, from shapes alone (``jax.eval_shape``: nothing compiles).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import backprop, losses
from gdjax._checks import (
    MODULE_HINT,
    check_examples,
    check_finite,
    dtype_of,
    is_module,
)
from gdjax.losses import Loss
from gdjax.mlp import MLP

__all__ = ["ApplyModel", "as_model", "as_loss", "objective", "check_batch", "is_mlp"]

PyTree = Any

_MODEL_HINT = (
    "Pass a gdjax.MLP, or a function apply(params, x) -> output over a params pytree. "
    + MODULE_HINT
)


@dataclasses.dataclass(frozen=True)
class ApplyModel:
    """A model given as a function ``apply(params, x) -> output``.

    Hashable and compared by the function's identity, so it can be a static
    argument of ``jax.jit``: pass the same function object on every call and
    compiled code is reused (a new closure or ``lambda`` each call compiles
    again).

    Attributes:
      fn: the user's ``apply``.
    """

    fn: Callable[[PyTree, jax.Array], jax.Array]

    def apply(self, params: PyTree, x: jax.Array) -> jax.Array:
        """``fn(params, x)``."""
        return self.fn(params, x)

    def __repr__(self) -> str:  # stable across processes: fit's checkpoint fingerprint uses it
        if dataclasses.is_dataclass(self.fn) and not isinstance(self.fn, type):
            return f"ApplyModel({self.fn!r})"  # a configured net: its fields tell configs apart
        module = getattr(self.fn, "__module__", None) or type(self.fn).__module__
        name = getattr(self.fn, "__qualname__", None) or type(self.fn).__qualname__
        return f"ApplyModel({module}.{name})"


def is_mlp(model: Any) -> bool:
    """Whether ``model`` is a :class:`gdjax.MLP` (the model with a hand-written backprop)."""
    return isinstance(model, MLP)


def as_model(model: Any) -> MLP | ApplyModel:
    """A ``gdjax.MLP`` or ``ApplyModel`` passes through; a function becomes an ``ApplyModel``.

    >>> as_model(lambda p, x: x @ p).__class__.__name__
    'ApplyModel'
    """
    if isinstance(model, MLP | ApplyModel):
        return model
    if is_module(model):
        raise ValueError(
            f"model: expected a gdjax.MLP or a function apply(params, x), got the module "
            f"{type(model).__name__} itself. {MODULE_HINT}"
        )
    if callable(model) and not isinstance(model, type):
        _check_two_arguments(model)
        return ApplyModel(model)
    raise ValueError(
        f"model: expected a gdjax.MLP or a function, got {type(model).__name__}. {_MODEL_HINT}"
    )


def _check_two_arguments(fn: Callable) -> None:
    """``fn`` must accept ``(params, x)``: a function of one argument (a module's
    ``__call__(x)``) is refused when it is given, not when it is first called."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (a builtin): checked at the call
        return
    try:
        signature.bind(None, None)
    except TypeError:
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        raise ValueError(
            f"model: expected a function apply(params, x) of two arguments, got "
            f"{name}{signature}. {_MODEL_HINT}"
        ) from None


def _no_check(pred_shape, y) -> None:
    del pred_shape, y


@functools.lru_cache(maxsize=256)
def _function_loss(fn: Callable) -> Loss:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__

    def grad(pred, y):
        return jax.grad(lambda p: fn(p, y))(pred)

    return Loss(f"custom:{name}", fn, grad, _no_check)


def as_loss(loss: Any) -> Loss:
    """A gdjax loss (object or name) passes through; a function ``loss(output, y)`` is wrapped.

    The wrapped loss's ``grad`` is ``jax.grad`` of the function with respect to
    the output, so the same function object always gives the same ``Loss``.

    >>> as_loss("mse").name, as_loss(lambda out, y: jnp.mean((out - y) ** 2)).name[:7]
    ('mse', 'custom:')
    """
    if isinstance(loss, Loss | str):
        return losses.get(loss)
    if callable(loss) and not isinstance(loss, type):
        return _function_loss(loss)
    raise ValueError(
        f"loss: expected one of {', '.join(losses.names())}, a gdjax Loss, or a function "
        f"loss(output, y) -> scalar (a mean over the batch), got {type(loss).__name__}."
    )


def check_batch(model: Any, loss: Loss, params: PyTree, x, y, *, finite_params: bool = True):
    """Raise ``ValueError`` (naming the argument) unless params, x and y fit model and loss.

    An MLP gets :func:`gdjax.backprop.check_batch`. Any other model: params a
    pytree of floating arrays (finite, unless ``finite_params`` is False), x
    and y with the same number of rows (at least one), finite, and the output
    ``apply(params, x)`` — its shape found by ``jax.eval_shape``, so nothing
    runs or compiles — with one row per example, accepted by the loss's own
    target check, and a scalar loss.
    """
    if isinstance(model, MLP):
        return backprop.check_batch(model, loss, params, x, y, finite_params=finite_params)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError(
            f"params: expected a pytree of floating arrays, got no leaves. {_MODEL_HINT}"
        )
    for path, leaf in leaves:
        dtype = dtype_of(leaf)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            got = dtype if dtype is not None else type(leaf).__name__
            hint = MODULE_HINT if dtype is None or dtype == np.dtype(object) else ""
            if dtype == np.dtype(object):
                got = type(leaf).__name__
            raise ValueError(
                f"params{jax.tree_util.keystr(path)}: expected a floating array, got {got}. "
                f"{hint}".rstrip()
            )
    check_examples(x, y)
    check_finite("x", x)
    check_finite("y", y)
    if finite_params:
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            check_finite(f"params{jax.tree_util.keystr(path)}", leaf)
    out_shape = _output_shape(
        model,
        loss,
        jax.tree.structure(params),
        tuple(_spec(leaf) for leaf in jax.tree.leaves(params)),
        _spec(x),
        _spec(y),
    )
    if len(out_shape) == 2:
        loss.check(out_shape, y)
    return None


def _spec(a) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)``: a cheap cache key (a ShapeDtypeStruct costs ~3 µs to build and hash)."""
    return tuple(np.shape(a)), np.dtype(dtype_of(a) or np.asarray(a).dtype)


@functools.lru_cache(maxsize=256)
def _output_shape(model, loss, treedef, leaf_specs, x_spec, y_spec) -> tuple[int, ...]:
    """The shape of ``apply(params, x)``, checked once per model, loss and input shapes."""
    leaf_specs = [jax.ShapeDtypeStruct(*spec) for spec in leaf_specs]
    x_spec, y_spec = jax.ShapeDtypeStruct(*x_spec), jax.ShapeDtypeStruct(*y_spec)
    params = jax.tree.unflatten(treedef, leaf_specs)
    n = x_spec.shape[0]
    try:
        out = jax.eval_shape(model.apply, params, x_spec)
    except Exception as e:  # the user's apply does not run on these shapes
        raise ValueError(
            f"model: apply(params, x) failed on x of shape {x_spec.shape}: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(out, jax.ShapeDtypeStruct) or not out.shape or out.shape[0] != n:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"model: expected apply(params, x) to return one row per example, an array of "
            f"shape ({n}, ...), got {got}."
        )
    try:
        value = jax.eval_shape(loss.fn, out, y_spec)
    except Exception as e:
        raise ValueError(
            f"loss: loss(output, y) failed on an output of shape {out.shape} and y of shape "
            f"{y_spec.shape}: {type(e).__name__}: {e}"
        ) from e
    if getattr(value, "shape", None) != ():
        raise ValueError(
            f"loss: expected loss(output, y) to return a scalar (a mean over the batch), "
            f"got shape {getattr(value, 'shape', type(value).__name__)} for an output of "
            f"shape {out.shape} and y of shape {y_spec.shape}."
        )
    return tuple(out.shape)


def objective(model: Any, loss: Any) -> Callable[[PyTree, jax.Array, jax.Array], jax.Array]:
    """The scalar cost ``f(params, x, y) = C(apply(params, x), y)`` for any model and loss.

    For a ``gdjax.MLP`` this is :func:`gdjax.backprop.objective`; for a function
    ``apply(params, x)`` the same contract, which every analysis in gdjax
    (curvature, landscape sweeps, per-example gradients) takes.

    >>> f = objective(lambda p, x: x @ p, "mse")
    >>> float(f(jnp.ones((2, 1)), jnp.ones((3, 2)), jnp.zeros((3, 1))))
    2.0
    """
    model, loss = as_model(model), as_loss(loss)
    if isinstance(model, MLP):
        return backprop.objective(model, loss)
    return _apply_objective(model, loss)


@functools.lru_cache(maxsize=256)
def _apply_objective(model: ApplyModel, loss: Loss):
    def f(params: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
        check_batch(model, loss, params, x, y, finite_params=False)
        return loss.fn(model.apply(params, x), y)

    f.__qualname__ = f"objective({model!r}, {loss.name})"
    return f
