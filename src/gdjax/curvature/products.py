"""Hessian- and Gauss–Newton-vector products, and the checks the curvature modules share.

Everything else in :mod:`gdjax.curvature` is built on the Hessian-vector
product ``Hv`` (Pearlmutter 1994), which costs about two gradients and never
forms H:

- :func:`hvp` — ``Hv`` by forward-over-reverse differentiation.
- :func:`hvp_operator` — ``v ↦ Hv`` at a fixed θ, linearised once: each
  product then costs about 1.6 gradients instead of 2.1 (every iterative
  method in the package uses it).
- :func:`gnvp` — the Gauss–Newton product ``Gv = JᵀH_out J v`` (the positive
  semi-definite part of H for mse and the cross-entropies).

``data_chunk=k`` splits the data arguments along axis 0 into chunks of k
examples and accumulates the mean over examples inside jit (``lax.scan``), so
peak memory follows k, not n; the helpers here (``_check_data_chunk``,
``_mean_over_data`` over ``gdjax._chunks.chunked_mean``, ``_chunked_flat_hvp``) are the one
chunking mechanism every curvature function uses.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax import _jit, losses, models
from gdjax._checks import check_finite_args, check_float_tree, dtype_of, shape_of
from gdjax._chunks import check_data_chunk, chunked_mean
from gdjax.losses import Loss
from gdjax.mlp import MLP

__all__ = ["hvp", "hvp_operator", "gnvp"]

PyTree = Any


# ---------------------------------------------------------------- input checks


_PARAMS_HINT = (
    "The Hessian is taken in params, so every leaf must be a floating array: keep the "
    "rest (functions, integer buffers, a module's static fields) out of params, e.g. "
    "params, static = eqx.partition(module, eqx.is_inexact_array) with f(params, *args) "
    "calling eqx.combine(params, static), or graphdef, params = nnx.split(module)."
)


def _num_params(params: PyTree) -> int:
    return sum(math.prod(shape_of(leaf)) for leaf in jax.tree.leaves(params))


def _check_params(params: PyTree) -> int:
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = dtype_of(leaf)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            got = dtype if dtype is not None else type(leaf).__name__
            raise ValueError(
                f"params{jax.tree_util.keystr(path)}: expected a floating array, got {got}. "
                f"{_PARAMS_HINT}"
            )
    check_float_tree("params", params)
    return _num_params(params)


def _check_like(name: str, tree: PyTree, params: PyTree) -> None:
    """``tree`` must have the structure and leaf shapes of ``params``."""
    want = jax.tree.structure(params)
    got = jax.tree.structure(tree)
    if got != want:
        raise ValueError(
            f"{name}: expected a pytree with the structure of params, {want}, got {got}."
        )
    for (path, p), t in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(tree), strict=True
    ):
        if shape_of(t) != shape_of(p):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)}: expected shape {shape_of(p)} "
                f"(the shape of params{jax.tree_util.keystr(path)}), got {shape_of(t)}."
            )
    check_float_tree(name, tree)


def _check_choice(name: str, value, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


def _check_key(key) -> None:
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        if not (isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,)):
            raise ValueError(f"key: expected a PRNG key from jax.random.key(seed), got {key!r}.")


_F_HINT = (
    "The curvature functions take the cost as a scalar function f(params, *args), e.g. "
    "f = gdjax.objective(model, loss) with args = (x, y)."
)


def _check_f(f, params: PyTree, args: tuple, data_chunk: int | None = None) -> None:
    """``f`` is callable as ``f(params, *args)`` and returns a floating scalar.

    Reads ``f``'s signature and its abstract output (``jax.eval_shape``: traced,
    never compiled), so a wrong ``f`` or missing data arguments are named before
    anything compiles. The output check is cached on ``f`` and the shapes of the
    inputs. With ``data_chunk`` (already checked) ``f`` is traced on one chunk's
    rows, as the computation will call it.
    """
    if not callable(f):
        raise ValueError(
            f"f: expected a callable f(params, *args), got {type(f).__name__}. {_F_HINT}"
        )
    try:
        unbound = _bind_error(f, len(args))
    except TypeError:  # f is not hashable
        unbound = _bind_error.__wrapped__(f, len(args))
    if unbound is not None:
        raise ValueError(f"args: {unbound}. {_F_HINT}")
    if data_chunk is not None:
        data = _data_args(f, args)
        head = tuple(args[: len(args) - len(data)])
        args = head + tuple(jax.tree.map(lambda a: _chunk_spec(a, data_chunk), d) for d in data)
    got = _output_of(f, params, args)
    if got is not None:
        raise ValueError(
            f"f: expected f(params, *args) to return a floating scalar (the cost C), "
            f"got {got}. {_F_HINT}"
        )


@functools.lru_cache(maxsize=256)
def _bind_error(f, num_args: int) -> str | None:
    """Why ``f(params, *args)`` with ``num_args`` args does not fit f's signature (or None)."""
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError):  # builtins and some C callables have none
        return None
    try:
        signature.bind(*[None] * (1 + num_args))
    except TypeError as err:
        names = ", ".join(signature.parameters)
        return (
            f"f({names}) cannot be called as f(params, *args) with the {num_args} data "
            f"argument(s) given: {err}"
        )
    return None


def _chunk_spec(a, k: int) -> jax.ShapeDtypeStruct:
    shape = shape_of(a)
    return jax.ShapeDtypeStruct((min(k, shape[0]), *shape[1:]), dtype_of(a))


def _output_of(f, params: PyTree, args: tuple) -> str | None:
    """What is wrong with ``f``'s abstract output (``None``: a floating scalar)."""
    leaves, treedef = jax.tree.flatten((params, args))
    if all(isinstance(leaf, jax.Array | np.ndarray | jax.ShapeDtypeStruct) for leaf in leaves):
        spec = tuple((leaf.shape, np.dtype(leaf.dtype)) for leaf in leaves)
        try:
            return _cached_output(f, treedef, spec)
        except TypeError:  # f is not hashable
            pass
    return _abstract_output(f, params, args)


@functools.lru_cache(maxsize=256)
def _cached_output(f, treedef, spec) -> str | None:
    structs = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in spec]
    params, args = jax.tree.unflatten(treedef, structs)
    return _abstract_output(f, params, args)


def _abstract_output(f, params, args) -> str | None:
    out = jax.eval_shape(lambda p, a: f(p, *a), params, tuple(args))
    if not isinstance(out, jax.ShapeDtypeStruct):
        return f"a {type(out).__name__} with {len(jax.tree.leaves(out))} leaves"
    if out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
        return f"shape {out.shape} and dtype {out.dtype}"
    return None


def _tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# ---------------------------------------------------------------- products


def hvp(
    f: Callable[..., jax.Array],
    params: PyTree,
    v: PyTree,
    *args: Any,
    data_chunk: int | None = None,
) -> PyTree:
    """The Hessian-vector product ``Hv`` of the scalar cost ``C = f(params, *args)``.

    .. math::

        H v = ∇²C(θ)\\, v = \\frac{d}{dε} ∇C(θ + ε v)\\Big|_{ε=0}

    computed exactly by forward-mode differentiation (``jax.jvp``) of the
    reverse-mode gradient (``jax.grad``): about the cost of two gradients, and
    H is never formed. Works on any params pytree. Called eagerly it compiles
    itself once per ``f`` (by identity: build ``f`` once) and input shapes, so a
    later call costs one dispatch; inside ``jax.jit``/``vmap``/``grad`` it is
    traced as part of the caller.

    Args:
      f: scalar function ``f(params, *args)``, e.g. ``gdjax.objective(model, loss)``;
        one that is not callable, does not take ``len(args)`` data arguments or
        does not return a floating scalar is refused (a ``ValueError`` naming
        ``f`` or ``args``) before anything compiles.
      params: θ, the point at which H is taken.
      v: the vector, a pytree with the structure and shapes of ``params``.
      *args: further arguments of ``f`` (e.g. ``x, y``), held fixed.
      data_chunk: ``None`` (all data in one call) or k: the args are split along
        axis 0 into chunks of k examples and ``Hv = (1/n) Σ_c n_c H_c v`` is
        accumulated inside jit (``f`` must be a mean over the examples), so peak
        memory follows k, not n. The last chunk holds the n mod k examples left
        and is weighted by its size; ``k ≥ n`` is one chunk of all n. Every arg
        needs the same number of rows n ≥ 1; anything but ``None`` or a positive
        integer is refused (a ``ValueError`` naming ``data_chunk``) before
        anything compiles.

    Returns:
      ``Hv``, a pytree shaped like ``params``.

    Examples:
      >>> f = lambda p: 0.5 * p["a"] ** 2 * p["b"]   # C = ½ a² b
      >>> p = {"a": jnp.array(2.0), "b": jnp.array(3.0)}
      >>> hv = hvp(f, p, {"a": jnp.array(1.0), "b": jnp.array(0.0)})
      >>> float(hv["a"]), float(hv["b"])            # H = [[b, a], [a, 0]]
      (3.0, 2.0)

    References:
      Pearlmutter (1994), "Fast exact multiplication by the Hessian", Neural
      Computation 6(1).
    """
    _check_params(params)
    _check_like("v", v, params)
    check_finite_args(args)
    data_chunk = _check_data_chunk(data_chunk, f, args)
    _check_f(f, params, args, data_chunk)
    if data_chunk is not None:
        flat, unravel = ravel_pytree(params)
        u = ravel_pytree(v)[0].astype(flat.dtype)
        return unravel(_jit_chunked_hvp(f, data_chunk, params, args, u))
    return _jit.call(_hvp_body, (f,), params, v, tuple(args))


def _hvp_body(f, params, v, args):
    """``Hv`` by forward-over-reverse: ``jvp`` of ``grad f`` at θ along v."""
    return jax.jvp(lambda p: jax.grad(f)(p, *args), (params,), (v,))[1]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jit_chunked_hvp(f, data_chunk, params, args, u):
    return _chunked_flat_hvp(f, data_chunk)(params, args, u)


def _loss_hessian_product(loss: Loss, out: jax.Array, y: jax.Array, u: jax.Array) -> jax.Array:
    """``H_out u`` with ``H_out = ∂²C/∂(a^L)²``, per example, written by hand.

    mse: ``u/n``; softmax cross-entropy on logits z: ``s·(p ⊙ u − p (pᵀu))/n`` with
    ``p = softmax(z)`` and ``s = Σ_k y_k`` (1 for labels); sigmoid binary
    cross-entropy: ``σ(z)(1 − σ(z)) ⊙ u / n``. Other losses: by autodiff of ``loss.grad``.
    """
    n = out.shape[0]
    if loss.name == "mse" and loss is losses.mse:
        return u / n
    if loss.name == "softmax_cross_entropy" and loss is losses.softmax_cross_entropy:
        y = jnp.asarray(y)
        s = 1.0 if jnp.issubdtype(y.dtype, jnp.integer) else jnp.sum(y, -1, keepdims=True)
        p = jax.nn.softmax(out, axis=-1)
        return s * (p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)) / n
    if loss.name == "sigmoid_binary_cross_entropy" and loss is losses.sigmoid_binary_cross_entropy:
        return jax.nn.sigmoid(out) * jax.nn.sigmoid(-out) * u / n
    return jax.jvp(lambda a: loss.grad(a, y), (out,), (u,))[1]


def gnvp(
    model: MLP | Callable[[PyTree, jax.Array], jax.Array],
    loss: str | Loss | Callable[[jax.Array, jax.Array], jax.Array],
    params: PyTree,
    v: PyTree,
    x: jax.Array,
    y: jax.Array,
) -> PyTree:
    """The generalised Gauss–Newton-vector product ``Gv = Jᵀ H_out J v``.

    With ``J = ∂a^L/∂θ`` the Jacobian of the network output over the batch and
    ``H_out = ∂²C/∂(a^L)²`` the Hessian of the loss in the output,

    .. math::

        G v = J^T H_{out} J v,\\qquad
        H = G + \\sum_x \\sum_k \\frac{∂C}{∂a^L_{x,k}} ∇²a^L_{x,k}

    G drops the second term (the curvature of the network itself), so it is
    positive semi-definite whenever ``H_out`` is: ``(1/n)·I`` per example for
    mse, ``(1/n)(diag(p) − ppᵀ)`` (p = softmax of the logits) for softmax
    cross-entropy, ``(1/n)·σ(z)(1 − σ(z))`` for sigmoid binary cross-entropy.
    For a network that is linear in θ (no hidden layer, identity output) G = H.
    ``Jv`` is one forward-mode pass through the model's ``apply``, ``H_out`` is
    applied by hand (by autodiff of ∂C/∂a^L for a loss given as a function), and
    ``Jᵀ(·)`` is one reverse-mode pass.

    Args:
      model: a :class:`~gdjax.MLP`, or any function ``apply(params, x) -> output``
        over a params pytree (a conv net in plain JAX, a split Equinox or Flax module).
      loss: a :class:`~gdjax.losses.Loss`, its name (the cross-entropies take
        logits), or a function ``loss(output, y)`` returning the mean over the batch.
      params: θ.
      v: a pytree shaped like ``params``.
      x, y: the batch.

    Returns:
      ``Gv``, shaped like ``params``.

    Examples:
      >>> from gdjax import MLP, objective
      >>> model = MLP((2, 1), activation="identity")   # linear: G = H
      >>> f = objective(model, "mse")
      >>> params = model.init(jax.random.key(0))
      >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
      >>> v = jax.tree.map(jnp.ones_like, params)
      >>> gv, hv = gnvp(model, "mse", params, v, x, y), hvp(f, params, v, x, y)
      >>> bool(jnp.allclose(gv[0]["w"], hv[0]["w"]))
      True

    References:
      Schraudolph (2002), "Fast curvature matrix-vector products for
      second-order gradient descent"; Martens (2010), "Deep learning via
      Hessian-free optimization".
    """
    model, loss = models.as_model(model), models.as_loss(loss)
    models.check_batch(model, loss, params, x, y)
    _check_like("v", v, params)
    return _jit.call(_gnvp_body, (model, loss), params, v, x, y)


def _gnvp_body(model, loss, params, v, x, y):
    """``Jᵀ H_out J v``: one jvp and one vjp through ``model.apply``, ``H_out`` by hand."""

    def apply(p):
        return model.apply(p, x)

    out, jv = jax.jvp(apply, (params,), (v,))
    _, vjp = jax.vjp(apply, params)
    return vjp(_loss_hessian_product(loss, out, y, jv))[0]


def _flat_hvp_operator(f, params, args) -> jax.tree_util.Partial:
    """``u ↦ Hu`` on flat vectors ``u`` (the layout of ``ravel_pytree(params)``),
    linearised once at θ (see :func:`hvp_operator`).

    A ``jax.tree_util.Partial`` whose leaves are the saved residuals, so it can be
    returned from and passed to jitted functions without recompiling.
    """
    flat, unravel = ravel_pytree(params)

    def flat_grad(u):
        return ravel_pytree(jax.grad(f)(unravel(u), *args))[0]

    return jax.linearize(flat_grad, flat)[1]


def _check_data_chunk(data_chunk, f, args) -> int | None:
    """``data_chunk``: None, or a positive int; then every data arg of ``f`` has the same
    rows n ≥ 1 (the data args: ``args`` after those ``f`` holds fixed, :func:`_data_args`)."""
    return check_data_chunk(data_chunk, _data_args(f, args))


def _data_args(f, args) -> tuple:
    """The arguments of ``f`` that ``data_chunk`` splits: ``args`` after its ``fixed_args``.

    A user's ``f(params, *args)`` takes data only (``fixed_args`` 0); the
    functions built here for a block of the Hessian take the whole params
    first (``_LayerRestricted.fixed_args = 1``), passed whole to every chunk.
    """
    return tuple(args[getattr(f, "fixed_args", 0) :])


def _mean_over_data(f, fn, args, data_chunk: int | None):
    """``fn(args)`` on all the data at once, or its mean over chunks of the data.

    ``args`` are the arguments of ``f`` after params and ``fn(args)`` a mean over
    the examples of the data in them (a cost, its gradient, a product with its
    Hessian). With ``data_chunk`` the data args (:func:`_data_args`) are split
    into chunks, each called with the fixed args in front, and accumulated by
    ``gdjax._chunks.chunked_mean``: the one chunking mechanism, shared with the sweeps.
    """
    if data_chunk is None:
        return fn(tuple(args))
    data = _data_args(f, args)
    head = tuple(args[: len(args) - len(data)])
    return chunked_mean(lambda chunk: fn(head + tuple(chunk)), data, data_chunk)


@functools.lru_cache(maxsize=64)
def _chunked_flat_hvp(f, data_chunk: int):
    """``(params, args, u) ↦ Hu`` accumulated over chunks of the data (one function per f, k)."""

    def product(params, args, u):
        _, unravel = ravel_pytree(params)
        v = unravel(u)

        def chunk_hvp(chunk):
            hv = jax.jvp(lambda p: jax.grad(f)(p, *chunk), (params,), (v,))[1]
            return ravel_pytree(hv)[0]

        return _mean_over_data(f, chunk_hvp, args, data_chunk)

    return product


def _flat_operator(f, params, args, data_chunk=None) -> jax.tree_util.Partial:
    """``u ↦ Hu`` on flat vectors: linearised once (all data), or by chunks of the data.

    With ``data_chunk`` nothing is kept between products (each recomputes the
    chunks' forward and backward passes, about 2 gradients per product instead
    of 1.6), which is what keeps memory at one chunk's.
    """
    if data_chunk is None:
        return _flat_hvp_operator(f, params, args)
    return jax.tree_util.Partial(_chunked_flat_hvp(f, data_chunk), params, args)


_jit_flat_hvp_operator = jax.jit(_flat_operator, static_argnums=(0, 3))


@jax.jit
def _apply_operator(operator, u):
    return operator(u)


@jax.jit
def _apply_tree_operator(operator, params, v):
    """``Hv`` as a params pytree: ravel v, apply, unravel, in one compiled call (only
    the structure and dtype of ``params`` are read)."""
    flat, unravel = ravel_pytree(params)
    return unravel(operator(ravel_pytree(v)[0].astype(flat.dtype)))


def hvp_operator(
    f: Callable[..., jax.Array], params: PyTree, *args: Any, data_chunk: int | None = None
) -> Callable[[PyTree], PyTree]:
    """``v ↦ Hv`` at a fixed θ, with the parts that do not depend on v done once.

    .. math::

        v \\mapsto H v = \\frac{d}{dε} ∇C(θ + ε v)\\Big|_{ε=0}

    is linear in v, and ``jax.linearize`` of ∇C at θ evaluates the forward and
    backward passes once and keeps what the tangent needs (the activations
    and the masks of the nonlinearities). Each product then costs only the
    tangent's forward and backward passes: about 1.6 gradients on an MLP,
    against about 2.1 for a one-off :func:`hvp` (which redoes the primal
    passes); the same product, exactly. Use it for many products at one θ;
    the saved values (a few activations per example and layer) stay in
    memory while the function lives. Lanczos, power iteration, the trace
    estimators and the Newton–CG solver here all use it.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ.
      *args: further arguments of ``f``, held fixed.
      data_chunk: ``None``, or k examples per chunk (see :func:`hvp`): nothing is
        linearised then, each product recomputes the chunks' passes and memory
        follows k.

    Returns:
      A function of a params-shaped pytree v returning ``Hv``, equal to
      ``hvp(f, params, v, *args)``.

    Examples:
      >>> f = lambda p: 0.5 * p["a"] ** 2 * p["b"]   # C = ½ a² b, H = [[b, a], [a, 0]]
      >>> p = {"a": jnp.array(2.0), "b": jnp.array(3.0)}
      >>> h = hvp_operator(f, p)
      >>> hv = h({"a": jnp.array(1.0), "b": jnp.array(0.0)})
      >>> float(hv["a"]), float(hv["b"])
      (3.0, 2.0)
    """
    _check_params(params)
    check_finite_args(args)
    data_chunk = _check_data_chunk(data_chunk, f, args)
    _check_f(f, params, args, data_chunk)
    operator = _jit_flat_hvp_operator(f, params, args, data_chunk)

    def product(v: PyTree) -> PyTree:
        _check_like("v", v, params)
        return _apply_tree_operator(operator, params, v)

    return product
