"""Curvature of the cost: Hessian-vector products, eigenvalues, trace, Taylor error, Newton.

Gradient descent ``θ ← θ − η ∇C`` follows the tangent of C. How wrong that
linear model of C is depends on the Hessian ``H = ∇²C(θ)``: to second order

    C(θ + η d) = C(θ) + η ∇Cᵀd + ½ η² dᵀH d + O(η³),

so the first-order prediction of a step is off by about ½η²dᵀHd, gradient
descent on a quadratic is stable only for ``η < 2/λ_max(H)``, and a Newton step
``θ − H⁻¹∇C`` lands on the minimum of a quadratic in one step. This module
measures those quantities without ever forming H: everything is built on the
Hessian-vector product ``Hv`` (Pearlmutter 1994), which costs about two
gradients.

Every function takes the cost as ``f(params, *args)``, a scalar function of a
params pytree, e.g. ``f = gdjax.objective(model, "mse")`` with ``args = (x, y)``.

- :func:`hvp` — ``Hv`` by forward-over-reverse differentiation.
- :func:`hvp_operator` — ``v ↦ Hv`` at a fixed θ, linearised once: each
  product then costs about 1.6 gradients instead of 2.1 (every iterative
  method below uses it).
- :func:`gnvp` — the Gauss–Newton product ``Gv = JᵀH_out J v`` (the positive
  semi-definite part of H for mse and the cross-entropies).
- :func:`top_eigenvalues` — the k largest (or largest-magnitude) eigenvalues
  of H and their eigenvectors, by Lanczos or by power iteration.
- :func:`trace` — Hutchinson's estimate of ``tr H`` with its standard error.
- :func:`spectral_density` — the density of the eigenvalues of H by stochastic
  Lanczos quadrature: quadrature nodes and weights, and a smoothed density.
- :func:`taylor_step` — actual ΔC of a step vs its first- and second-order
  predictions, for many step sizes η at once.
- :func:`layer_curvature` — λ_max and trace of each layer's diagonal block H_ll.
- :func:`track_sharpness` — a :func:`~gdjax.train.fit` callback recording
  λ_max(H) during training (warm-started Lanczos), to watch it reach 2/η.
- :func:`newton_step` — a damped Newton step, dense or by conjugate gradient
  on Hessian-vector products (Hessian-free).

The compiled kernels take ``f`` as a static argument: pass the *same* ``f``
object on every call (build it once with ``objective``) and nothing
recompiles. Inputs are checked before anything compiles.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax import losses
from gdjax._checks import (
    check_finite_args,
    check_finite_number,
    check_float_tree,
    check_num_examples,
    check_positive_int,
    shape_of,
)
from gdjax.backprop import check_batch, objective
from gdjax.losses import Loss
from gdjax.mlp import MLP, Params

__all__ = [
    "hvp",
    "hvp_operator",
    "gnvp",
    "top_eigenvalues",
    "Eigen",
    "trace",
    "TraceEstimate",
    "spectral_density",
    "SpectralDensity",
    "layer_curvature",
    "LayerCurvature",
    "track_sharpness",
    "SharpnessTracker",
    "taylor_step",
    "TaylorResult",
    "newton_step",
    "NewtonResult",
    "MAX_DENSE_PARAMS",
]

PyTree = Any

MAX_DENSE_PARAMS = 4096
"""The largest parameter count :func:`newton_step` builds a dense Hessian for."""


# ---------------------------------------------------------------- input checks


def _num_params(params: PyTree) -> int:
    return sum(math.prod(shape_of(leaf)) for leaf in jax.tree.leaves(params))


def _check_params(params: PyTree) -> int:
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
    H is never formed. Works on any params pytree and under ``jax.jit``
    (``jax.jit(hvp, static_argnums=0)``).

    Args:
      f: scalar function ``f(params, *args)``, e.g. ``gdjax.objective(model, loss)``.
      params: θ, the point at which H is taken.
      v: the vector, a pytree with the structure and shapes of ``params``.
      *args: further arguments of ``f`` (e.g. ``x, y``), held fixed.
      data_chunk: ``None`` (all data in one call) or k: the args are split along
        axis 0 into chunks of k examples and ``Hv = (1/n) Σ_c n_c H_c v`` is
        accumulated inside jit (``f`` must be a mean over the examples), so peak
        memory follows k, not n.

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
    data_chunk = _check_data_chunk(data_chunk, args)
    if data_chunk is not None:
        flat, unravel = ravel_pytree(params)
        u = ravel_pytree(v)[0].astype(flat.dtype)
        return unravel(_jit_chunked_hvp(f, data_chunk, params, args, u))
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
    model: MLP, loss: str | Loss, params: Params, v: Params, x: jax.Array, y: jax.Array
) -> Params:
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
    ``Jv`` is one forward-mode pass through ``model.apply``, ``H_out`` is applied
    by hand, and ``Jᵀ(·)`` is one reverse-mode pass.

    Args:
      model: the network.
      loss: a :class:`~gdjax.losses.Loss` or its name (the cross-entropies take logits).
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
    loss = losses.get(loss)
    check_batch(model, loss, params, x, y)
    _check_like("v", v, params)

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


def _check_data_chunk(data_chunk, args) -> int | None:
    """``data_chunk``: None, or a positive int; then every arg has the same rows n ≥ 1."""
    if data_chunk is None:
        return None
    if isinstance(data_chunk, bool) or not isinstance(data_chunk, int | np.integer):
        raise ValueError(
            f"data_chunk: expected None or a positive integer (examples per chunk), "
            f"got {data_chunk!r}."
        )
    if data_chunk <= 0:
        raise ValueError(
            f"data_chunk: expected a positive integer (examples per chunk), got {data_chunk}."
        )
    if not args:
        raise ValueError("data_chunk: expected data arguments to split (e.g. x, y), got none.")
    rows = {shape_of(leaf)[0] if shape_of(leaf) else None for leaf in jax.tree.leaves(args)}
    if len(rows) != 1 or None in rows or 0 in rows:
        raise ValueError(
            f"data_chunk: expected every data argument to have the same number of examples "
            f"(rows, axis 0) to split into chunks, got leading sizes {sorted(rows, key=str)}."
        )
    return int(data_chunk)


def _chunked_mean(fn, args, data_chunk: int):
    """``(1/n) Σ_c n_c · fn(args_c)`` over chunks of ``data_chunk`` rows of ``args``.

    ``fn`` of a chunk is a mean over its examples (a cost or its derivatives), so
    the weighted sum is the mean over all n examples; the last chunk, with
    n mod k rows, is weighted by its size. Full chunks run in one ``lax.scan``,
    so peak memory follows the chunk, not n.
    """
    n = jax.tree.leaves(args)[0].shape[0]
    k = min(data_chunk, n)
    full, rest = divmod(n, k)
    head = jax.tree.map(lambda a: a[: full * k].reshape(full, k, *a.shape[1:]), args)
    first = jax.tree.map(lambda a: a[0], head)
    zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, first))
    total, _ = jax.lax.scan(
        lambda acc, chunk: (jax.tree.map(jnp.add, acc, fn(chunk)), None), zero, head
    )
    total = jax.tree.map(lambda t: t * k, total)
    if rest:
        tail = fn(jax.tree.map(lambda a: a[full * k :], args))
        total = jax.tree.map(lambda t, r: t + rest * r, total, tail)
    return jax.tree.map(lambda t: t / n, total)


@functools.lru_cache(maxsize=64)
def _chunked_flat_hvp(f, data_chunk: int):
    """``(params, args, u) ↦ Hu`` accumulated over chunks of the data (one function per f, k)."""

    def product(params, args, u):
        _, unravel = ravel_pytree(params)
        v = unravel(u)

        def chunk_hvp(chunk):
            hv = jax.jvp(lambda p: jax.grad(f)(p, *chunk), (params,), (v,))[1]
            return ravel_pytree(hv)[0]

        return _chunked_mean(chunk_hvp, args, data_chunk)

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
    data_chunk = _check_data_chunk(data_chunk, args)
    flat, unravel = ravel_pytree(params)
    operator = _jit_flat_hvp_operator(f, params, args, data_chunk)

    def product(v: PyTree) -> PyTree:
        _check_like("v", v, params)
        return unravel(_apply_operator(operator, ravel_pytree(v)[0].astype(flat.dtype)))

    return product


# ---------------------------------------------------------------- eigenvalues


class Eigen(NamedTuple):
    """What :func:`top_eigenvalues` returns.

    Attributes:
      eigenvalues: ``(k,)`` numpy array, ordered by ``which`` (descending value for
        ``"largest"``, ascending for ``"smallest"``, descending ``|λ|`` for
        ``"magnitude"``).
      eigenvectors: list of k params-shaped pytrees ``v_i`` of unit norm,
        ``H v_i ≈ λ_i v_i``.
      hvps: the number of Hessian-vector products computed (Lanczos: the
        number of Lanczos steps; power: all iterations of all eigenvalues), plus
        the k products that measure ``residuals``.
      converged: whether every returned pair has a *measured* residual within the
        tolerance, ``‖H v_i − λ_i v_i‖ ≤ tol·max(|λ_i|, √ε·max_j|θ_j|)`` (power:
        ``tol·|λ_i|``). That is a bound: some eigenvalue of H lies within ``tol``
        of each λ_i (Bauer–Fike). It is never claimed on an estimate alone.
      residuals: ``(k,)`` measured ``‖H v_i − λ_i v_i‖``, one true product per
        pair after the iteration stopped.
      errors: ``(k,)`` estimated eigenvalue errors ``|λ_i − θ_i|``, an estimate and
        not a bound. Lanczos: ``min(r_i, ρ_i²/gap_i)`` with ρ_i the Lanczos residual
        estimate |β_m s_{m,i}| and gap_i the distance from θ_i to the other Ritz
        values (less their residuals), which overstates the true gap while an
        eigenvector is barely in the Krylov space; power: ``r_i``.
    """

    eigenvalues: np.ndarray
    eigenvectors: list[PyTree]
    hvps: int
    converged: bool
    residuals: np.ndarray
    errors: np.ndarray


_BLOCK = 8  # rows of the Lanczos basis read per product in the reorthogonalisation


def _basis_rows(max_iters: int) -> int:
    """Rows of the Lanczos basis buffer: q_0 … q_{max_iters}, padded to a multiple of _BLOCK."""
    return -(-(max_iters + 1) // _BLOCK) * _BLOCK


def _project_out(q_mat: jax.Array, count: jax.Array, w: jax.Array) -> jax.Array:
    """``w − Σ_{i<count} q_i (q_iᵀ w)``: classical Gram–Schmidt against the first ``count`` rows.

    Reads only the blocks of ``_BLOCK`` rows that hold a basis vector, so a step
    costs O(count·n) and not O(max_iters·n) however large the preallocated buffer
    (the rows past ``count`` are zero, so a partly filled last block is harmless).
    """
    blocks = (count + _BLOCK - 1) // _BLOCK

    def block(b):
        return jax.lax.dynamic_slice_in_dim(q_mat, b * _BLOCK, _BLOCK)

    def project(b, h):
        return jax.lax.dynamic_update_slice_in_dim(h, block(b) @ w, b * _BLOCK, 0)

    h = jax.lax.fori_loop(0, blocks, project, jnp.zeros(q_mat.shape[0], w.dtype))

    def subtract(b, r):
        return r - block(b).T @ jax.lax.dynamic_slice_in_dim(h, b * _BLOCK, _BLOCK)

    return jax.lax.fori_loop(0, blocks, subtract, w)


def _lanczos_update(q_mat, j, hq, beta_prev):
    """From ``hq = H q_j``: α_j, β_j and q_{j+1} (row j + 1), fully reorthogonalised.

    Rows after ``j`` are zero; the projection reads rows q_0 … q_j only.
    """
    q = q_mat[j]
    w = hq - beta_prev * q_mat[jnp.maximum(j - 1, 0)]
    alpha = jnp.vdot(q, w)
    w = w - alpha * q
    # Classical Gram–Schmidt against every earlier vector; a second pass only when the
    # first one cancelled more than 1 − 1/√2 of w's norm (the DGKS test: "twice is
    # enough", and once is enough when little cancelled).
    # If the second pass cancels as much again, w is rounding noise in the span of the
    # basis (Parlett 1998, §6.9): an invariant subspace, β = 0, never a new direction.
    norm_before = jnp.linalg.norm(w)
    w = _project_out(q_mat, j + 1, w)
    norm_first = jnp.linalg.norm(w)

    def second_pass(w):
        w = _project_out(q_mat, j + 1, w)
        return jnp.where(jnp.linalg.norm(w) < norm_first / math.sqrt(2), 0, w)

    w = jax.lax.cond(norm_first < norm_before / math.sqrt(2), second_pass, lambda w: w, w)
    beta = jnp.linalg.norm(w)
    safe = jnp.where(beta > 0, beta, 1)
    q_next = jnp.where(beta > 0, w / safe, 0)
    return q_mat.at[j + 1].set(q_next), q_next, alpha, beta


# The host loop of top_eigenvalues: the product and the update are separate calls, so
# the basis buffer can grow (recompiling only the update, not the product).
_jit_lanczos_update = jax.jit(_lanczos_update, donate_argnums=0)
_FIRST_ROWS = 2 * _BLOCK  # rows of the basis buffer at the start; doubled when full


@functools.partial(jax.jit, static_argnums=1)
def _grow(q_mat, rows):
    """``q_mat`` with zero rows appended up to ``rows``."""
    return jnp.zeros((rows, q_mat.shape[1]), q_mat.dtype).at[: q_mat.shape[0]].set(q_mat)


@functools.partial(jax.jit, donate_argnums=0)
def _set_orthonormal(q_mat, j, r):
    """Row ``j`` of ``q_mat`` ← ``r`` orthogonalised against rows 0 … j−1 and normalised.

    Row j is cleared first: on a restart it holds the discarded direction w/β of
    the step that broke down, and the projection reads whole blocks of rows.
    """
    q_mat = q_mat.at[j].set(0)
    r = _project_out(q_mat, j, r)
    r = _project_out(q_mat, j, r)
    return q_mat.at[j].set(r / jnp.linalg.norm(r)), jnp.linalg.norm(r)


@jax.jit
def _combine(coefficients, q_mat):
    return coefficients @ q_mat


def _order(theta: np.ndarray, which: str) -> np.ndarray:
    """Indices of ``theta`` from the most to the least wanted."""
    key = {"largest": -theta, "smallest": theta, "magnitude": -np.abs(theta)}[which]
    return np.argsort(key, kind="stable")


def _ritz_errors(theta: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Estimated errors ``|λ_i − θ_i| ≤ min(r_i, r_i²/gap_i)`` of the Ritz values.

    For a symmetric H some eigenvalue lies within r_i of θ_i, and within
    r_i²/δ_i when δ_i is the distance from θ_i to the rest of the spectrum
    (Kato–Temple). δ_i is estimated by the other Ritz values, each moved toward
    θ_i by its own residual: ``gap_i = min_{j≠i} (|θ_i − θ_j| − r_j)``; where that
    is not positive, the bound is r_i alone.
    """
    m = theta.size
    if m == 1:
        return residuals.copy()
    distance = np.abs(theta[:, None] - theta[None, :]) - residuals[None, :]
    np.fill_diagonal(distance, np.inf)
    gap = distance.min(axis=1)
    quadratic = np.where(gap > 0, residuals**2 / np.where(gap > 0, gap, 1.0), np.inf)
    return np.minimum(residuals, quadratic)


def _within_tol(theta, measure, tol, floor) -> np.ndarray:
    """``measure_i ≤ tol·max(|θ_i|, floor)``, element-wise."""
    return measure <= tol * np.maximum(np.abs(theta), floor)


def _ritz_converged(theta, residuals, k, which, tol, floor, criterion) -> bool:
    """Whether the k wanted Ritz pairs meet the stopping test of ``criterion``.

    ``"residual"``: the Lanczos residual estimate |β_m s_{m,i}| meets the tolerance;
    ``"eigenvalue"``: the estimated eigenvalue error :func:`_ritz_errors` does. Either
    is only a reason to stop: residuals measured by :func:`_rayleigh_ritz` decide ``converged``.
    """
    wanted = _order(theta, which)[:k]
    measure = residuals if criterion == "residual" else _ritz_errors(theta, residuals)
    return bool(np.all(_within_tol(theta[wanted], measure[wanted], tol, floor)))


@jax.jit
def _products(operator, candidates):
    """``H u`` for each row u of ``candidates``, one vmapped call."""
    return jax.vmap(operator)(candidates)


def _rayleigh_ritz(candidates: np.ndarray, products: np.ndarray):
    """Rayleigh–Ritz on the span of orthonormal rows U, given the products ``HU``.

    Returns the Ritz values θ (ascending), the Ritz vectors (rows, ``sᵀU``) and
    their **measured** residuals ``‖H u − θ u‖``, the products combined with the
    same coefficients as the vectors. For a symmetric H some eigenvalue λ has
    ``|λ − θ| ≤ ‖Hu − θu‖`` for a unit u (Bauer–Fike; Parlett 1998, Thm 4.5.1),
    a bound that holds in floating point too, up to the rounding of the product
    itself (about ε‖H‖).
    """
    g = candidates @ products.T
    theta, s = np.linalg.eigh(0.5 * (g + g.T))
    vectors = s.T @ candidates
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    residual = s.T @ products - theta[:, None] * vectors
    return theta, vectors / norms, np.linalg.norm(residual, axis=1) / norms[:, 0]


def _block_candidates(t, blocks, k, which):
    """Coefficient rows of each Krylov block's k most wanted Ritz vectors (in Q's rows)."""
    rows = []
    for start, stop in blocks:
        theta_b, s_b = np.linalg.eigh(t[start:stop, start:stop])
        for i in _order(theta_b, which)[:k]:
            row = np.zeros(t.shape[0])
            row[start:stop] = s_b[:, i]
            rows.append(row)
    return np.stack(rows)


def _lanczos(f, params, flat0, k, which, max_iters, tol, criterion, key, args, chunk) -> Eigen:
    n = flat0.size
    dtype = flat0.dtype
    eps = float(jnp.finfo(dtype).eps)
    # Rows for q_0 … q_{max_iters}, allocated as needed: most calls stop long before
    # max_iters, and zeroing the whole buffer up front would cost more than a step.
    max_rows = _basis_rows(max_iters)
    operator = _jit_flat_hvp_operator(f, params, args, chunk)
    q_mat = jnp.zeros((min(_FIRST_ROWS, max_rows), n), dtype)
    q_mat, _ = _set_orthonormal(q_mat, 0, flat0)
    q = q_mat[0]
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0 after a restart
    block_start = 0  # first row of the current Krylov block (after the last restart)
    restarts = 0
    scale = 0.0
    beta = jnp.zeros((), dtype)
    theta = s = residuals = None
    t = np.zeros((0, 0))
    stopped = False  # the stopping test was met (not max_iters)

    def restart(m):
        # A new Krylov block from a random vector orthogonal to the basis.
        nonlocal q_mat, q, beta, block_start, restarts
        restarts += 1
        r = jax.random.normal(jax.random.fold_in(key, restarts), (n,), dtype)
        q_mat, _ = _set_orthonormal(q_mat, m, r)
        q = q_mat[m]
        beta = jnp.zeros((), dtype)
        betas.append(0.0)
        block_start = m

    for j in range(max_iters):
        if j + 1 == q_mat.shape[0]:
            q_mat = _grow(q_mat, min(2 * q_mat.shape[0], max_rows))
        q_mat, q, alpha, beta = _jit_lanczos_update(q_mat, j, _apply_operator(operator, q), beta)
        alpha, beta_f = float(alpha), float(beta)
        alphas.append(alpha)
        m = j + 1
        scale = max(scale, abs(alpha), beta_f)
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, s = np.linalg.eigh(t)
        residuals = np.abs(beta_f * s[-1])
        if m == n:  # the Krylov space is the whole space: the Ritz pairs are exact
            stopped = True
            break
        if beta_f <= 1e3 * eps * scale:
            # Invariant subspace (exact Ritz pairs, but a repeated eigenvalue appears in
            # it only once): restart orthogonal to it.
            restart(m)
            continue
        betas.append(beta_f)
        floor = np.sqrt(eps) * np.max(np.abs(theta))
        if m < k or not _ritz_converged(theta, residuals, k, which, tol, floor, criterion):
            continue
        if block_start > 0:
            # After a restart, the new block's own top k must have converged too: only
            # then is no copy of a repeated eigenvalue still missing.
            theta_b, s_b = np.linalg.eigh(t[block_start:, block_start:])
            if m - block_start < k or not _ritz_converged(
                theta_b, np.abs(beta_f * s_b[-1]), k, which, tol, floor, criterion
            ):
                continue
        stopped = True
        break
    m = len(alphas)
    starts = [0] + [i + 1 for i, b in enumerate(betas[: m - 1]) if b == 0.0]
    blocks = [
        (start, stop) for start, stop in zip(starts, starts[1:] + [m], strict=True) if stop > start
    ]
    # The final pairs come from Rayleigh–Ritz over the blocks' k best Ritz vectors
    # (uncoupled: a block starts only on an invariant subspace), with residuals
    # measured: the Lanczos estimate |β s| drops below the true residual once that
    # reaches rounding.
    coefficients = _block_candidates(t, blocks, min(k, m), which)
    padded = np.zeros((coefficients.shape[0], q_mat.shape[0]))
    padded[:, :m] = coefficients
    candidates = _combine(jnp.asarray(padded, dtype), q_mat)
    products = np.asarray(_products(operator, candidates), np.float64)
    candidates = np.asarray(candidates, np.float64)
    floor = np.sqrt(eps) * np.max(np.abs(theta))
    values, vectors, measured = _rayleigh_ritz(candidates, products)
    wanted = _order(values, which)[:k]
    estimated = _ritz_errors(values, measured)[wanted]
    values, vectors, measured = values[wanted], vectors[wanted], measured[wanted]
    floor = np.sqrt(eps) * np.max(np.abs(theta))
    converged = bool(
        stopped and values.size == k and np.all(_within_tol(values, measured, tol, floor))
    )
    _, unravel = ravel_pytree(params)
    return Eigen(
        eigenvalues=values.astype(np.float64),
        eigenvectors=[unravel(jnp.asarray(v, dtype)) for v in vectors],
        hvps=m + coefficients.shape[0],
        converged=converged,
        residuals=measured,
        errors=estimated,
    )


def _confirmed(first: Eigen, second: Eigen, f, params, k, which, tol, args, chunk) -> Eigen:
    """Two Lanczos runs from independent starts, as one answer.

    Where their k values agree within ``tol``, the first run's pairs stand
    (``converged`` if both runs converged). Where they do not, one start missed
    an eigenvalue the other found, and the answer is Rayleigh–Ritz on the span of
    both runs' Ritz vectors, with residuals measured (2k more products).
    """
    hvps = first.hvps + second.hvps
    eps = float(jnp.finfo(jnp.result_type(*jax.tree.leaves(params))).eps)
    floor = np.sqrt(eps) * max(np.max(np.abs(first.eigenvalues)), 1e-300)
    if np.all(
        _within_tol(first.eigenvalues, np.abs(first.eigenvalues - second.eigenvalues), tol, floor)
    ):
        return first._replace(hvps=hvps, converged=first.converged and second.converged)
    rows = np.stack([ravel_pytree(v)[0] for v in first.eigenvectors + second.eigenvectors])
    rows = np.asarray(rows, np.float64)
    u, sv, vt = np.linalg.svd(rows, full_matrices=False)
    basis = vt[sv > 1e-8 * sv[0]]  # orthonormal rows spanning both runs' vectors
    flat, unravel = ravel_pytree(params)
    operator = _jit_flat_hvp_operator(f, params, args, chunk)
    products = np.asarray(_products(operator, jnp.asarray(basis, flat.dtype)), np.float64)
    values, vectors, measured = _rayleigh_ritz(basis, products)
    wanted = _order(values, which)[:k]
    estimated = _ritz_errors(values, measured)[wanted]
    values, vectors, measured = values[wanted], vectors[wanted], measured[wanted]
    converged = bool(
        first.converged
        and second.converged
        and values.size == k
        and np.all(_within_tol(values, measured, tol, floor))
    )
    return Eigen(
        eigenvalues=values,
        eigenvectors=[unravel(jnp.asarray(v, flat.dtype)) for v in vectors],
        hvps=hvps + basis.shape[0],
        converged=converged,
        residuals=measured,
        errors=estimated,
    )


@jax.jit
def _verified_residuals(operator, values, vectors):
    """``‖H u_i − θ_i u_i‖ / ‖u_i‖`` for each row u_i of ``vectors``, by k true products."""
    products = jax.vmap(operator)(vectors)
    norms = jnp.linalg.norm(vectors, axis=1)
    return jnp.linalg.norm(products - values[:, None] * vectors, axis=1) / norms


@jax.jit
def _power_step(operator, found, v):
    """One power-iteration step on the deflated ``P H P``, ``P = I − VVᵀ`` (V: found rows)."""
    v = v - found.T @ (found @ v)
    v = v / jnp.linalg.norm(v)
    hv = operator(v)
    hv = hv - found.T @ (found @ hv)
    lam = jnp.vdot(v, hv)
    residual = jnp.linalg.norm(hv - lam * v)
    return v, lam, residual, hv / jnp.linalg.norm(hv)


def _power(f, params, flat0, k, max_iters, tol, key, args, chunk) -> Eigen:
    n, dtype = flat0.size, flat0.dtype
    found = jnp.zeros((k, n), dtype)
    operator = _jit_flat_hvp_operator(f, params, args, chunk)
    values, hvps, converged = [], 0, True
    v = flat0
    for i in range(k):
        if i > 0:
            v = jax.random.normal(jax.random.fold_in(key, i), (n,), dtype)
        ok = False
        for _ in range(max_iters):
            u, lam, res, v = _power_step(operator, found, v)
            hvps += 1
            lam, res = float(lam), float(res)
            if res <= tol * abs(lam):
                ok = True
                break
        converged = converged and ok
        found = found.at[i].set(u)
        values.append(lam)
    # The stopping test measured the residual of the deflated P H P; the bound that
    # converged claims is the residual of H itself, measured once more per vector.
    values = np.asarray(values)
    verified = np.asarray(_verified_residuals(operator, jnp.asarray(values, dtype), found))
    converged = bool(converged and np.all(verified <= tol * np.abs(values)))
    _, unravel = ravel_pytree(params)
    return Eigen(
        eigenvalues=values,
        eigenvectors=[unravel(found[i]) for i in range(k)],
        hvps=hvps + k,
        converged=converged,
        residuals=verified.astype(np.float64),
        errors=verified.astype(np.float64),
    )


def top_eigenvalues(
    f: Callable[..., jax.Array],
    params: PyTree,
    k: int,
    *args: Any,
    key: jax.Array,
    method: Literal["lanczos", "power"] = "lanczos",
    which: Literal["largest", "smallest", "magnitude"] | None = None,
    max_iters: int | None = None,
    tol: float = 1e-8,
    criterion: Literal["residual", "eigenvalue"] = "residual",
    init: PyTree | None = None,
    confirm: bool = True,
    data_chunk: int | None = None,
) -> Eigen:
    """The k extreme eigenvalues λ_i of the Hessian ``H = ∇²C(θ)`` and their eigenvectors.

    .. math::

        H v_i = λ_i v_i,\\quad \\|v_i\\| = 1,\\quad λ_1 ≥ λ_2 ≥ … ≥ λ_k \\;
        (\\text{or } λ_1 ≤ λ_2 ≤ … \\text{ for } which=\\text{"smallest"},
        \\; |λ_1| ≥ … \\text{ for } which=\\text{"magnitude"})

    using only Hessian-vector products (:func:`hvp`) on the flattened params
    (``jax.flatten_util.ravel_pytree``).

    ``method="lanczos"`` (default) builds the Krylov basis q_0 … q_{m−1} of
    ``span{q_0, Hq_0, …, H^{m−1}q_0}`` with full reorthogonalisation, so that
    ``QᵀHQ = T_m`` is tridiagonal with diagonal α and off-diagonal β. The Ritz
    values θ_i (eigenvalues of T_m, with eigenvectors s_i) approximate λ_i and
    the Ritz vectors ``Q s_i`` the eigenvectors, with residual
    ``‖H Q s_i − θ_i Q s_i‖ = |β_m s_{m,i}|``. It stops once each wanted pair has
    ``|β_m s_{m,i}| ≤ tol·max(|θ_i|, √ε·max_j|θ_j|)``, or when m = n (then the
    Ritz pairs are exact). With ``criterion="eigenvalue"`` it stops instead when
    the *estimated* eigenvalue error ``min(ρ_i, ρ_i²/gap_i)`` (``Eigen.errors``)
    meets the same bound: a heuristic, since the gap to the rest of the
    spectrum is estimated by the other Ritz values (Kato–Temple's r²/gap is a
    bound only with the true gap), and measured on a spectrum with λ₁ = 4.0,
    λ₂ = 3.9 it stops with λ_max off by up to 2.5 % in a few starts of 20. A single
    Krylov space holds one copy of a repeated eigenvalue, so on an
    invariant subspace (β ≈ 0) it restarts with a random vector orthogonal to
    the basis, and after a restart it also waits for the new block's own top k
    to converge.

    Whatever stopped it, ``converged`` is decided on residuals **measured** with
    k more products, ``r_i = ‖H v_i − λ_i v_i‖``: for a symmetric H some
    eigenvalue lies within r_i of λ_i (Bauer–Fike), so ``converged=True`` means
    each λ_i is within ``tol·max(|λ_i|, √ε·max_j|θ_j|)`` of an eigenvalue of H.
    The Lanczos estimate |β_m s_{m,i}| equals r_i in exact arithmetic but drops
    below it once r_i reaches rounding (about ε‖H‖, 1e-7‖H‖ in float32), so a
    tolerance under that is reported as not converged rather than claimed.
    What no Krylov method can prove is that the eigenvalue within r_i of λ_i is
    the i-th largest: one whose eigenvector the start vector barely contains
    appears late, and the Ritz value can settle on the next one first (on the
    λ₁ = 4.0, λ₂ = 3.9 spectrum, 1 start of 100 did, with a measured residual
    of 1e-3). So by default (``confirm=True``) a second run from an
    independent random start must converge too and agree (see ``confirm``):
    an eigenvalue is then missed only if both starts barely contain it. That
    costs twice the products of one run.

    ``method="power"`` is power iteration ``v ← Hv/‖Hv‖``, which converges to
    the eigenvalue of **largest magnitude** at the rate ``|λ_2/λ_1|`` (so
    ``which`` must be ``"magnitude"``, its default); for k > 1 each further
    eigenvalue is found by power iteration on the deflated ``PHP``,
    ``P = I − Σ_found v_i v_iᵀ``, as PyHessian does. It stops when
    ``‖Hv − (vᵀHv)v‖ ≤ tol·|vᵀHv|``. It is here for comparison: Lanczos needs
    far fewer products for the same accuracy.

    Args:
      f: scalar function ``f(params, *args)``. Pass the same object on every
        call so the compiled products are reused.
      params: θ.
      k: how many eigenvalues, ``1 ≤ k ≤`` the number of parameters.
      *args: further arguments of ``f`` (e.g. ``x, y``).
      key: PRNG key for the random start vector (and restarts / deflation starts).
      method: ``"lanczos"`` or ``"power"``.
      which: ``"largest"`` (algebraically, the default for Lanczos),
        ``"smallest"`` (algebraically: the most negative curvature, which tells a
        saddle point from a minimum; Lanczos only) or ``"magnitude"`` (largest
        |λ|; the default and only choice for power).
      max_iters: most Lanczos steps (default ``min(n, max(100, 4k))``; Lanczos
        stores that many vectors of n numbers), or most power iterations per
        eigenvalue (default 1000).
      criterion: when to stop: ``"residual"`` (the default: when the residual
        estimate meets ``tol``; vectors and values accurate) or ``"eigenvalue"``
        (when the *estimated* eigenvalue error does: fewer products, a heuristic,
        and ``converged`` only if the measured residuals meet ``tol`` too; Lanczos
        only, since it needs the gap to the other Ritz values).
      tol: relative tolerance (see above and ``criterion``). Power iteration measures the
        true residual, which stalls near ε·‖H‖ (about 1e-7‖H‖ in float32): use
        ``tol ≳ 1e-5`` for float32 params there, or it stops at ``max_iters``
        with ``converged=False``.
      init: warm start, a params-shaped pytree used as the first vector, e.g.
        the top eigenvector of a previous call at nearby params.
      confirm: run the method a second time from an independent
        random start; where the two runs' values agree within ``tol`` the first
        run's pairs stand (converged if both converged), and where they do not
        the answer is Rayleigh–Ritz on both runs' Ritz vectors, with measured
        residuals. An eigenvalue that the first start (random, or the warm start
        ``init``) barely contained is then missed only if the second start
        barely contains it too. Twice the products; ``False`` runs once.
      data_chunk: ``None``, or k examples per chunk: every product is accumulated
        over chunks of the data (see :func:`hvp`), so memory follows k, not n.

    Returns:
      An :class:`Eigen` ``(eigenvalues, eigenvectors, hvps, converged, residuals,
      errors)``.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(jnp.array([3.0, 2.0, 1.0]) * p**2)
      >>> eig = top_eigenvalues(f, jnp.zeros(3), 2, key=jax.random.key(0))
      >>> eig.eigenvalues.round(6).tolist(), eig.converged
      ([3.0, 2.0], True)

    References:
      Lanczos (1950), "An iteration method for the solution of the eigenvalue
      problem of linear differential and integral operators"; Parlett, *The
      Symmetric Eigenvalue Problem* (1998), ch. 13; Yao et al. (2020),
      "PyHessian: neural networks through the lens of the Hessian".
    """
    n = _check_params(params)
    check_finite_args(args)
    method = _check_choice("method", method, ("lanczos", "power"))
    if which is None:
        which = "largest" if method == "lanczos" else "magnitude"
    which = _check_choice("which", which, ("largest", "smallest", "magnitude"))
    criterion = _check_choice("criterion", criterion, ("residual", "eigenvalue"))
    if method == "power" and criterion != "residual":
        raise ValueError(
            f"criterion: power iteration knows no gap to the other eigenvalues, so it "
            f"expected 'residual', got {criterion!r}. Use method='lanczos'."
        )
    if method == "power" and which != "magnitude":
        raise ValueError(
            f"which: power iteration converges to the eigenvalue of largest magnitude, so it "
            f"expected 'magnitude', got {which!r}. Use method='lanczos' for the largest."
        )
    k = check_positive_int("k", k)
    if k > n:
        raise ValueError(
            f"k: expected at most {n}, the number of parameters (H is {n}×{n}), got {k}."
        )
    if max_iters is None:
        max_iters = min(n, max(100, 4 * k)) if method == "lanczos" else 1000
    max_iters = check_positive_int("max_iters", max_iters)
    if method == "lanczos" and not k <= max_iters <= n:
        raise ValueError(
            f"max_iters: expected an integer in [k, n] = [{k}, {n}] for Lanczos, got {max_iters}."
        )
    tol = check_finite_number("tol", tol)
    if not isinstance(confirm, bool):
        raise TypeError(f"confirm: expected True or False, got {confirm!r}.")
    data_chunk = _check_data_chunk(data_chunk, args)
    _check_key(key)
    if init is not None:
        _check_like("init", init, params)

    key, start_key = jax.random.split(key)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    if init is None:
        flat0 = jax.random.normal(start_key, (n,), dtype)
    else:
        flat0 = ravel_pytree(init)[0].astype(dtype)
        if not float(jnp.linalg.norm(flat0)) > 0:
            raise ValueError("init: expected a non-zero vector, got all zeros.")

    def run(start, run_key):
        if method == "lanczos":
            return _lanczos(
                f, params, start, k, which, max_iters, tol, criterion, run_key, args, data_chunk
            )
        return _power(f, params, start, k, max_iters, tol, run_key, args, data_chunk)

    first = run(flat0, key)
    if not confirm:
        return first
    key, second_key = jax.random.split(key)
    second = run(jax.random.normal(second_key, (n,), dtype), key)
    return _confirmed(first, second, f, params, k, which, tol, args, data_chunk)


# ---------------------------------------------------------------- trace


class TraceEstimate(NamedTuple):
    """What :func:`trace` returns.

    Attributes:
      estimate: the mean of the samples, an unbiased estimate of ``tr H``.
      stderr: its standard error ``std(samples) / √samples``.
      samples: the ``vᵀHv`` of each Rademacher vector v, a numpy array.
    """

    estimate: float
    stderr: float
    samples: np.ndarray


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 6))
def _hutchinson(f, params, key, samples, batch_size, args, data_chunk=None):
    flat, unravel = ravel_pytree(params)
    operator = _flat_operator(f, params, args, data_chunk)

    def one(sample_key):
        v = jax.random.rademacher(sample_key, flat.shape, flat.dtype)
        return jnp.vdot(v, operator(v))

    return jax.lax.map(one, jax.random.split(key, samples), batch_size=batch_size)


def trace(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    samples: int = 100,
    batch_size: int = 16,
    data_chunk: int | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate of the Hessian trace ``tr H = Σ_i λ_i``.

    .. math::

        \\operatorname{tr} H = \\mathbb{E}_v[v^T H v] ≈ \\frac{1}{m}\\sum_{j=1}^m v_j^T H v_j,
        \\qquad v_j \\in \\{−1, +1\\}^n \\text{ (Rademacher)}

    The estimate is unbiased; its variance ``2 Σ_{i≠j} H_{ij}²`` per sample is
    the smallest of all i.i.d. zero-mean unit-variance choices of v.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ.
      *args: further arguments of ``f``.
      key: PRNG key for the Rademacher vectors.
      samples: m ≥ 2, the number of vectors (two are the fewest that give an error bar).
      batch_size: products computed together under ``vmap`` (memory vs speed).
      data_chunk: ``None``, or k examples per chunk: each product is accumulated
        over chunks of the data (see :func:`hvp`), so memory follows k, not n.

    Returns:
      A :class:`TraceEstimate` ``(estimate, stderr, samples)``.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(jnp.array([3.0, 2.0, 1.0]) * p**2)
      >>> est = trace(f, jnp.zeros(3), key=jax.random.key(0), samples=10)
      >>> est.estimate, est.stderr   # diagonal H: every vᵀHv is exactly tr H
      (6.0, 0.0)

    References:
      Hutchinson (1989), "A stochastic estimator of the trace of the influence
      matrix for Laplacian smoothing splines"; Avron & Toledo (2011).
    """
    _check_params(params)
    check_finite_args(args)
    samples = check_positive_int("samples", samples)
    if samples < 2:
        raise ValueError(
            f"samples: expected at least 2 (a standard error needs two), got {samples}."
        )
    batch_size = check_positive_int("batch_size", batch_size)
    data_chunk = _check_data_chunk(data_chunk, args)
    _check_key(key)
    values = np.asarray(
        _hutchinson(f, params, key, samples, min(batch_size, samples), args, data_chunk),
        np.float64,
    )
    return TraceEstimate(
        estimate=float(values.mean()),
        stderr=float(values.std(ddof=1) / math.sqrt(samples)),
        samples=values,
    )


# ---------------------------------------------------------------- spectral density


class SpectralDensity(NamedTuple):
    """What :func:`spectral_density` returns; arrays are numpy (float64).

    Attributes:
      nodes: ``(runs, m)``, the eigenvalues θ_{r,i} of each run's tridiagonal ``T_m``
        (ascending): the quadrature nodes.
      weights: ``(runs, m)``, ``τ_{r,i} = s_{r,i}[0]²``, the squared first components of
        the eigenvectors of ``T_m``: the quadrature weights (each row sums to 1).
      grid: the points t at which the density is evaluated.
      density: ``φ(t) = (1/R) Σ_r Σ_i τ_{r,i} g_σ(t − θ_{r,i})`` on ``grid``, with
        ``g_σ`` the Gaussian of width σ: a probability density (it integrates to 1
        over a grid that covers the nodes with a few σ to spare, as the default does).
      sigma: σ, the width of the Gaussian kernel.
      hvps: the number of Hessian-vector products computed (``runs·m``).
    """

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    hvps: int

    def mass(self, low: float = -math.inf, high: float = math.inf) -> float:
        """The estimated fraction of the n eigenvalues of H in ``[low, high)``.

        ``(1/R) Σ_r Σ_i τ_{r,i} 1[low ≤ θ_{r,i} < high]``: each run is ``v̂ᵀ P v̂`` for
        the spectral projector P on ``[low, high)`` (exactly so when m = n), an
        unbiased estimate of ``tr P / n``.
        """
        inside = (self.nodes >= low) & (self.nodes < high)
        return float(np.mean(np.sum(self.weights * inside, axis=1)))


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _slq_lanczos(f, params, keys, steps, batch_size, gaussian, args):
    """α ``(runs, m)`` and β ``(runs, m − 1)`` of ``T_m`` from each key's start vector.

    The Lanczos step (with full reorthogonalisation) is :func:`_lanczos_update`;
    when β collapses (an invariant subspace), the next vector is a random one
    orthogonal to the basis and that β is set to 0: ``T_m`` splits into blocks,
    and the nodes of the later blocks get weight 0.
    """
    flat, _ = ravel_pytree(params)
    n, dtype = flat.size, flat.dtype
    eps = jnp.finfo(dtype).eps
    operator = _flat_hvp_operator(f, params, args)

    def one_run(key):
        start_key, restart_key = jax.random.split(key)
        if gaussian:
            v = jax.random.normal(start_key, (n,), dtype)
        else:
            v = jax.random.rademacher(start_key, (n,), dtype)
        q_mat = jnp.zeros((_basis_rows(steps), n), dtype).at[0].set(v / jnp.linalg.norm(v))

        def restart(q_mat, j):
            r = jax.random.normal(jax.random.fold_in(restart_key, j), (n,), dtype)
            return _set_orthonormal(q_mat.at[j + 1].set(0), j + 1, r)[0]

        def step(j, state):
            q_mat, alphas, betas, scale = state
            beta_prev = jnp.where(j > 0, betas[jnp.maximum(j - 1, 0)], 0)
            q_mat, _, alpha, beta = _lanczos_update(q_mat, j, operator(q_mat[j]), beta_prev)
            scale = jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta))
            broke = (beta <= 1e3 * eps * scale) & (j + 1 < steps)
            q_mat = jax.lax.cond(broke, restart, lambda q, j: q, q_mat, j)
            return q_mat, alphas.at[j].set(alpha), betas.at[j].set(jnp.where(broke, 0, beta)), scale

        zeros = jnp.zeros(steps, dtype)
        state = (q_mat, zeros, zeros, jnp.zeros((), dtype))
        _, alphas, betas, _ = jax.lax.fori_loop(0, steps, step, state)
        return alphas, betas[:-1]

    return jax.lax.map(one_run, keys, batch_size=batch_size)


def _gaussian_mixture(grid: np.ndarray, nodes: np.ndarray, weights: np.ndarray, sigma: float):
    """``(1/R) Σ_r Σ_i τ_{r,i} g_σ(t − θ_{r,i})`` on the grid, one run at a time."""
    density = np.zeros(grid.size)
    for theta, tau in zip(nodes, weights, strict=True):
        density += np.exp(-0.5 * ((grid[:, None] - theta) / sigma) ** 2) @ tau
    return density / (len(nodes) * sigma * math.sqrt(2 * math.pi))


def _check_grid(grid) -> np.ndarray | int | None:
    if grid is None:
        return None
    if isinstance(grid, int | np.integer) and not isinstance(grid, bool):
        if grid < 2:
            raise ValueError(f"grid: expected at least 2 points, got {grid}.")
        return int(grid)
    points = np.asarray(grid)
    if (
        points.ndim != 1
        or points.size < 2
        or not np.issubdtype(points.dtype, np.number)
        or not np.all(np.isfinite(points))
        or not np.all(np.diff(points) > 0)
    ):
        raise ValueError(
            f"grid: expected None, a number of points ≥ 2, or a 1-D increasing array of at "
            f"least 2 finite points, got {grid!r}."
        )
    return points.astype(np.float64)


def spectral_density(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    key: jax.Array,
    lanczos_steps: int | None = None,
    runs: int = 10,
    grid: int | Sequence[float] | np.ndarray | None = None,
    sigma: float | None = None,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    batch_size: int = 1,
) -> SpectralDensity:
    """The eigenvalue density of the Hessian by stochastic Lanczos quadrature (SLQ).

    The spectral density of ``H = ∇²C(θ)`` (n eigenvalues λ_k, eigenvectors u_k)
    and its smoothed version are

    .. math::

        φ(t) = \\frac{1}{n}\\sum_{k=1}^n δ(t − λ_k), \\qquad
        φ_σ(t) = \\frac{1}{n}\\sum_{k=1}^n g_σ(t − λ_k)
               = \\frac{1}{n}\\operatorname{tr} g_σ(tI − H),

    with ``g_σ(s) = exp(−s²/2σ²)/(σ√2π)``. A trace is an expectation over random
    unit vectors v̂ (``𝔼[v̂ᵀAv̂] = tr A / n``), and ``v̂ᵀ g(H) v̂ = Σ_k (v̂ᵀu_k)² g(λ_k)``
    is an integral against the measure with weights ``(v̂ᵀu_k)²`` at the λ_k, which m
    steps of Lanczos from q_0 = v̂ turn into an m-point Gauss quadrature: with
    ``T_m = S diag(θ) Sᵀ`` the tridiagonal Lanczos matrix,

    .. math::

        v̂^T g(H)\\, v̂ ≈ \\sum_{i=1}^m τ_i\\, g(θ_i), \\qquad τ_i = S_{0i}^2,
        \\qquad \\sum_i τ_i = 1,

    exact for polynomials g of degree ≤ 2m − 1 (so ``Σ_i τ_i θ_i = v̂ᵀHv̂``, and
    ``n·𝔼[Σ_i τ_i θ_i] = tr H``). Averaging R runs (independent v̂) gives
    ``φ_σ(t) ≈ (1/R) Σ_r Σ_i τ_{r,i} g_σ(t − θ_{r,i})``. Each run costs m Hessian-vector
    products. Lanczos keeps all m vectors and reorthogonalises fully (as in
    :func:`top_eigenvalues`), so the nodes are not spoiled by the ghost copies
    that plain Lanczos produces in floating point; with m = n they are the
    eigenvalues of H themselves and the weights the exact ``(v̂ᵀu_k)²``.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ.
      *args: further arguments of ``f`` (e.g. ``x, y``).
      key: PRNG key for the start vectors (run r uses ``split(key, runs)[r]``).
      lanczos_steps: m, Lanczos steps per run, ``1 ≤ m ≤ n``; default ``min(90, n)``
        (Ghorbani et al. use 90).
      runs: R, the number of start vectors.
      grid: where the density is evaluated: an array of increasing points, or a
        number of points, or None; the last two span ``[min θ − 5σ, max θ + 5σ]``
        with spacing at most σ/4 (None: at least 1001 points).
      sigma: σ, the kernel width; default 1 % of the spread ``max θ − min θ`` of the
        nodes (of ``max |θ|`` if they all coincide, and 0.01 if they are all 0).
      distribution: of the start vectors before normalising: ``"rademacher"``
        (±1, the lower-variance choice) or ``"gaussian"``.
      batch_size: runs computed together under ``vmap``; memory ``batch_size·(m+1)·n``.

    Returns:
      A :class:`SpectralDensity` ``(nodes, weights, grid, density, sigma, hvps)``;
      ``.mass(low, high)`` estimates the fraction of eigenvalues in ``[low, high)``.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 1.0, 4.0]) * p**2)  # λ = 1, 1, 4
      >>> sd = spectral_density(f, jnp.zeros(3), key=jax.random.key(0), runs=4)
      >>> sd.nodes.shape, sd.weights.sum(axis=1).round(12).tolist()
      ((4, 3), [1.0, 1.0, 1.0, 1.0])
      >>> round(sd.mass(high=2.0), 6)   # Rademacher v̂: (v̂ᵀu)² = 1/3 for each λ here
      0.666667

    References:
      Ghorbani, Krishnan & Xiao (2019), "An investigation into neural net
      optimization via Hessian eigenvalue density", ICML; Ubaru, Chen & Saad
      (2017), "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature",
      SIAM J. Matrix Anal. Appl. 38(4); Golub & Meurant, *Matrices, Moments and
      Quadrature with Applications* (2010).
    """
    n = _check_params(params)
    check_finite_args(args)
    if lanczos_steps is None:
        lanczos_steps = min(90, n)
    steps = check_positive_int("lanczos_steps", lanczos_steps)
    if steps > n:
        raise ValueError(
            f"lanczos_steps: expected at most {n}, the number of parameters (the Krylov "
            f"space cannot grow beyond it), got {steps}."
        )
    runs = check_positive_int("runs", runs)
    grid = _check_grid(grid)
    if sigma is not None:
        sigma = check_finite_number("sigma", sigma)
    distribution = _check_choice("distribution", distribution, ("rademacher", "gaussian"))
    batch_size = check_positive_int("batch_size", batch_size)
    _check_key(key)

    alphas, betas = _slq_lanczos(
        f,
        params,
        jax.random.split(key, runs),
        steps,
        min(batch_size, runs),
        distribution == "gaussian",
        args,
    )
    alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    t = np.zeros((runs, steps, steps))
    i = np.arange(steps)
    t[:, i, i] = alphas
    t[:, i[:-1], i[1:]] = t[:, i[1:], i[:-1]] = betas
    nodes, vectors = np.linalg.eigh(t)
    weights = vectors[:, 0, :] ** 2

    low, high = float(nodes.min()), float(nodes.max())
    if sigma is None:
        spread = high - low if high > low else max(abs(low), abs(high))
        sigma = 0.01 * spread if spread > 0 else 0.01
    if not isinstance(grid, np.ndarray):
        span = high - low + 10 * sigma
        points = max(1001, math.ceil(4 * span / sigma) + 1) if grid is None else grid
        grid = np.linspace(low - 5 * sigma, high + 5 * sigma, points)
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        grid=grid,
        density=_gaussian_mixture(grid, nodes, weights, sigma),
        sigma=sigma,
        hvps=runs * steps,
    )


# ---------------------------------------------------------------- Taylor error of a step


class TaylorResult(NamedTuple):
    """What :func:`taylor_step` returns; arrays are numpy, one entry per η.

    Attributes:
      etas: the step sizes η, as given.
      actual: ``ΔC = C(θ + ηd) − C(θ)``.
      first_order: ``η ∇Cᵀd``.
      second_order: ``η ∇Cᵀd + ½ η² dᵀHd``.
      first_order_error: ``|first_order − actual| / |actual|``.
      second_order_error: ``|second_order − actual| / |actual|``.
      slope: ``∇Cᵀd`` (negative for a descent direction).
      curvature: ``dᵀHd``.
      direction: the direction d used (params-shaped; zero outside ``layer``).
      threshold: the relative error that defines ``eta_threshold``.
      eta_threshold: the η at which ``first_order_error`` first exceeds
        ``threshold``, interpolated linearly in log η–log error between the grid
        points on either side; the smallest η if already exceeded there (an
        upper bound), NaN if never exceeded on the grid.
      lambda_max: the largest eigenvalue of the Hessian block the step moves in
        (all of H, or layer l's diagonal block ``H_ll``), by Lanczos.
      stability_limit: ``2/λ_max``, where gradient descent on the quadratic model
        stops being stable (inf if λ_max ≤ 0).
    """

    etas: np.ndarray
    actual: np.ndarray
    first_order: np.ndarray
    second_order: np.ndarray
    first_order_error: np.ndarray
    second_order_error: np.ndarray
    slope: float
    curvature: float
    direction: PyTree
    threshold: float
    eta_threshold: float
    lambda_max: float
    stability_limit: float


@functools.partial(jax.jit, static_argnums=0)
def _taylor(f, params, d, etas, args):
    c0, g = jax.value_and_grad(f)(params, *args)
    slope = _tree_vdot(g, d)
    curvature = _tree_vdot(d, hvp(f, params, d, *args))

    def delta(eta):
        return f(jax.tree.map(lambda p, di: p + eta * di, params, d), *args) - c0

    return jax.vmap(delta)(etas), slope, curvature


@functools.partial(jax.jit, static_argnums=0)
def _gradient(f, params, args):
    return jax.grad(f)(params, *args)


def _layer_mask(params: PyTree, layer: int | None) -> list[bool] | None:
    """Per top-level entry of ``params``: whether it belongs to ``layer``."""
    if layer is None:
        return None
    if not isinstance(params, list | tuple):
        raise ValueError(
            f"layer: expected params to be a list of per-layer pytrees (as MLP.init makes) "
            f"to select a layer from, got {type(params).__name__}."
        )
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
        raise ValueError(f"layer: expected None or an integer layer index, got {layer!r}.")
    if not 0 <= layer < len(params):
        raise ValueError(
            f"layer: expected an index in [0, {len(params) - 1}] (0 is the first weight layer, "
            f"w^1), got {layer}."
        )
    return [i == layer for i in range(len(params))]


def _restrict(tree: PyTree, mask: list[bool] | None) -> PyTree:
    if mask is None:
        return tree
    return [
        t if keep else jax.tree.map(jnp.zeros_like, t) for t, keep in zip(tree, mask, strict=True)
    ]


def _threshold_crossing(etas: np.ndarray, errors: np.ndarray, threshold: float) -> float:
    order = np.argsort(etas)
    etas, errors = etas[order], errors[order]
    above = np.flatnonzero(errors > threshold)
    if above.size == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(etas[0])
    e0, e1 = errors[i - 1], errors[i]
    if not (e0 > 0 and np.isfinite(e0) and np.isfinite(e1)) or e1 == e0:
        return float(etas[i])
    t = (math.log(threshold) - math.log(e0)) / (math.log(e1) - math.log(e0))
    return float(math.exp(math.log(etas[i - 1]) + t * (math.log(etas[i]) - math.log(etas[i - 1]))))


def taylor_step(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    etas: Sequence[float] | np.ndarray | jax.Array,
    direction: PyTree | None = None,
    layer: int | None = None,
    threshold: float = 0.1,
    lambda_max: float | None = None,
    key: jax.Array | None = None,
) -> TaylorResult:
    """How well the first- and second-order Taylor models predict a step ``θ' = θ + ηd``.

    .. math::

        ΔC(η) = C(θ + ηd) − C(θ) = \\underbrace{η ∇C^T d}_{\\text{first order}}
        + \\underbrace{½ η^2 d^T H d}_{\\text{second order adds}} + O(η^3)

    with ``d = −∇C`` by default (a gradient-descent step of size η). For every
    η the actual change and both predictions are computed (the η are
    evaluated together under ``vmap``), with their relative errors
    ``|pred − ΔC| / |ΔC|``. The first-order error grows like
    ``|½η dᵀHd / ∇Cᵀd|`` for small η: the linear model gradient descent steps
    along is accurate only for η well below the curvature scale, which is
    compared with the stability limit ``2/λ_max`` of gradient descent.

    Cancellation limits ΔC to about ``ε·|C|`` absolute accuracy, so the
    relative errors are meaningless below ``|ΔC| ≈ ε|C|``: use float64.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ.
      *args: further arguments of ``f``.
      etas: step sizes η, a non-empty 1-D sequence of positive finite numbers.
      direction: d, shaped like ``params``; default ``−∇C``.
      layer: restrict d to layer ``layer``'s params (``params[layer]``, 0-based,
        zero elsewhere); params must then be a list of per-layer pytrees.
      threshold: the relative first-order error that defines ``eta_threshold``.
      lambda_max: λ_max of the Hessian block the step moves in, if known;
        otherwise computed by :func:`top_eigenvalues` (Lanczos).
      key: PRNG key for that Lanczos run; default: start it from d.

    Returns:
      A :class:`TaylorResult`.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(p**2) + jnp.sum(p)    # H = I, ∇C(0) = 1
      >>> res = taylor_step(f, jnp.zeros(2), etas=[0.1, 1.0])
      >>> res.actual.round(6).tolist(), res.first_order.round(6).tolist()
      ([-0.19, -1.0], [-0.2, -2.0])
      >>> round(res.stability_limit, 4)   # 2/λ_max
      2.0

    References:
      Nocedal & Wright, *Numerical Optimization* (2006), §2.1 (Taylor's theorem);
      Cohen et al. (2021), "Gradient descent on neural networks typically
      occurs at the edge of stability".
    """
    _check_params(params)
    check_finite_args(args)
    etas_np = np.asarray(etas)
    if etas_np.ndim != 1 or etas_np.size == 0 or not np.issubdtype(etas_np.dtype, np.number):
        raise ValueError(
            f"etas: expected a non-empty 1-D sequence of step sizes, got shape {etas_np.shape} "
            f"and dtype {etas_np.dtype}."
        )
    if not (np.all(np.isfinite(etas_np)) and np.all(etas_np > 0)):
        bad = etas_np[~(np.isfinite(etas_np) & (etas_np > 0))][0]
        raise ValueError(
            f"etas: expected positive finite step sizes, got {float(bad)!r} among them."
        )
    threshold = check_finite_number("threshold", threshold)
    if lambda_max is not None:
        lambda_max = float(lambda_max)
    if direction is not None:
        _check_like("direction", direction, params)
    mask = _layer_mask(params, layer)
    if key is not None:
        _check_key(key)

    dtype = jnp.result_type(*jax.tree.leaves(params))
    if direction is None:
        direction = jax.tree.map(jnp.negative, _gradient(f, params, args))
    d = _restrict(jax.tree.map(lambda t: jnp.asarray(t, dtype), direction), mask)
    if not any(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(d)):
        raise ValueError(
            "direction: expected a non-zero direction, got all zeros"
            + (f" in layer {layer}" if layer is not None else "")
            + " (is the gradient zero?)."
        )

    actual, slope, curvature = _taylor(f, params, d, jnp.asarray(etas_np, dtype), args)
    actual = np.asarray(actual, np.float64)
    slope, curvature = float(slope), float(curvature)
    etas64 = etas_np.astype(np.float64)
    first = etas64 * slope
    second = first + 0.5 * etas64**2 * curvature
    with np.errstate(divide="ignore", invalid="ignore"):
        first_error = np.abs(first - actual) / np.abs(actual)
        second_error = np.abs(second - actual) / np.abs(actual)

    if lambda_max is None:
        lambda_max = _block_lambda_max(f, params, mask, d, key, args)
    stability = 2.0 / lambda_max if lambda_max > 0 else math.inf
    return TaylorResult(
        etas=etas_np,
        actual=actual,
        first_order=first,
        second_order=second,
        first_order_error=first_error,
        second_order_error=second_error,
        slope=slope,
        curvature=curvature,
        direction=d,
        threshold=threshold,
        eta_threshold=_threshold_crossing(etas64, first_error, threshold),
        lambda_max=lambda_max,
        stability_limit=stability,
    )


def _block_lambda_max(f, params, mask, d, key, args) -> float:
    """λ_max of H, or of the diagonal block ``H_ll`` of layer l's params (``mask``).

    Lanczos starts from ``key`` when given, else (deterministically) from d.
    """
    start = jax.random.key(0) if key is None else key
    if mask is None:
        eig = top_eigenvalues(f, params, 1, *args, key=start, init=None if key is not None else d)
    else:
        layer = mask.index(True)
        eig = top_eigenvalues(
            _LayerRestricted(f, layer),
            params[layer],
            1,
            params,
            *args,
            key=start,
            init=None if key is not None else d[layer],
        )
    return float(eig.eigenvalues[0])


class _LayerRestricted:
    """``C`` as a function of layer l's params alone, the other layers held fixed.

    Its Hessian is the diagonal block ``H_ll``. Hashable by ``(f, layer)``, so
    compiled products are reused across calls.
    """

    def __init__(self, f, layer):
        self.f, self.layer = f, layer

    def __hash__(self):
        return hash((self.f, self.layer))

    def __eq__(self, other):
        return (
            isinstance(other, _LayerRestricted) and self.f is other.f and self.layer == other.layer
        )

    def __call__(self, layer_params, full_params, *args):
        full = list(full_params)
        full[self.layer] = layer_params
        return self.f(full, *args)


# ---------------------------------------------------------------- per-layer curvature


class LayerCurvature(NamedTuple):
    """What :func:`layer_curvature` returns: numpy arrays with one entry per layer l.

    Attributes:
      lambda_max: ``λ_max(H_ll)``, the largest eigenvalue of layer l's diagonal block.
      trace: ``tr H_ll``, exact or Hutchinson's estimate (see ``exact``).
      trace_stderr: the standard error of ``trace`` (0 where exact).
      exact: whether ``trace`` was computed exactly, from the block's basis.
      num_params: ``n_l``, the number of params of layer l (the size of ``H_ll``).
      hvps: Hessian-vector products spent on layer l (Lanczos and trace together).
      converged: whether Lanczos met its tolerance for ``lambda_max``.
    """

    lambda_max: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray
    exact: np.ndarray
    num_params: np.ndarray
    hvps: np.ndarray
    converged: np.ndarray


@functools.partial(jax.jit, static_argnums=(0, 2))
def _exact_trace(f, params, batch_size, args):
    """``tr H = Σ_i e_iᵀ H e_i`` over the standard basis: n Hessian-vector products."""
    flat, _ = ravel_pytree(params)
    n = flat.size
    operator = _flat_hvp_operator(f, params, args)

    def diagonal_entry(i):
        return operator(jax.nn.one_hot(i, n, dtype=flat.dtype))[i]

    return jnp.sum(jax.lax.map(diagonal_entry, jnp.arange(n), batch_size=batch_size))


def layer_curvature(
    f: Callable[..., jax.Array],
    params: Sequence[PyTree],
    *args: Any,
    key: jax.Array,
    trace_method: Literal["auto", "exact", "hutchinson"] = "auto",
    samples: int = 100,
    tol: float = 1e-8,
    max_iters: int | None = None,
    batch_size: int = 16,
) -> LayerCurvature:
    """λ_max and the trace of every layer's diagonal block of the Hessian.

    Order the params layer by layer, ``θ = (θ^1, …, θ^L)`` with ``θ^l = (w^l, b^l)``;
    the Hessian splits into blocks, and the diagonal block of layer l is the
    Hessian of C in layer l's params alone, the other layers held fixed:

    .. math::

        H = \\begin{pmatrix} H_{11} & \\cdots & H_{1L} \\\\ \\vdots & \\ddots & \\vdots \\\\
        H_{L1} & \\cdots & H_{LL} \\end{pmatrix}, \\qquad
        H_{ll} = \\frac{∂^2 C}{∂(θ^l)^2}, \\qquad
        \\operatorname{tr} H = \\sum_l \\operatorname{tr} H_{ll}

    ``H_ll v`` is the Hessian-vector product of the cost as a function of θ^l
    alone, n_l numbers long. ``λ_max(H_ll)`` (by Lanczos, :func:`top_eigenvalues`)
    is the curvature a step that moves only layer l meets, and ``2/λ_max(H_ll)``
    the largest stable learning rate for that layer alone; in general
    ``λ_max(H_ll) ≤ λ_max(H)`` (a Rayleigh quotient over a subspace).

    The trace is computed one of two ways, by ``trace_method``:

    - ``"exact"``: ``tr H_ll = Σ_i e_iᵀ H_ll e_i`` over layer l's n_l basis
      vectors, n_l products;
    - ``"hutchinson"``: :func:`trace` with ``samples`` Rademacher vectors, with its
      standard error;
    - ``"auto"`` (default): exact for the layers with ``n_l ≤ samples`` (no more
      products than Hutchinson would take), Hutchinson for the others.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ, a list with one pytree per layer (as ``MLP.init`` makes).
      *args: further arguments of ``f`` (e.g. ``x, y``).
      key: PRNG key (Lanczos start vectors and Rademacher vectors, per layer).
      trace_method: ``"auto"``, ``"exact"`` or ``"hutchinson"``.
      samples: Hutchinson's number of vectors (≥ 2), also the "auto" threshold.
      tol, max_iters: for Lanczos, as in :func:`top_eigenvalues`.
      batch_size: products computed together under ``vmap`` for the trace.

    Returns:
      A :class:`LayerCurvature` ``(lambda_max, trace, trace_stderr, exact, num_params,
      hvps, converged)``.

    Examples:
      >>> from gdjax import MLP, objective
      >>> model = MLP((2, 3, 1), activation="tanh")
      >>> f = objective(model, "mse")
      >>> params = model.init(jax.random.key(0))
      >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
      >>> lc = layer_curvature(f, params, x, y, key=jax.random.key(1))
      >>> lc.num_params.tolist(), lc.exact.tolist()   # 9 and 4 params ≤ 100 samples: exact
      ([9, 4], [True, True])

    References:
      Yao et al. (2020), "PyHessian: neural networks through the lens of the
      Hessian" (block-wise analysis); Sankar et al. (2021), "A deeper look at
      the Hessian eigenspectrum of deep neural networks and its applications
      to regularization", AAAI.
    """
    _check_params(params)
    check_finite_args(args)
    if not isinstance(params, list | tuple) or not params:
        raise ValueError(
            f"params: expected a non-empty list of per-layer pytrees (as MLP.init makes), "
            f"got {type(params).__name__}."
        )
    trace_method = _check_choice("trace_method", trace_method, ("auto", "exact", "hutchinson"))
    samples = check_positive_int("samples", samples)
    if samples < 2:
        raise ValueError(
            f"samples: expected at least 2 (a standard error needs two), got {samples}."
        )
    tol = check_finite_number("tol", tol)
    if max_iters is not None:
        max_iters = check_positive_int("max_iters", max_iters)
    batch_size = check_positive_int("batch_size", batch_size)
    _check_key(key)
    sizes = [_num_params(p) for p in params]
    for layer, n_l in enumerate(sizes):
        if n_l == 0:
            raise ValueError(f"params[{layer}]: expected at least one parameter, got none.")

    rows = []
    for layer, (layer_params, n_l) in enumerate(zip(params, sizes, strict=True)):
        block = _LayerRestricted(f, layer)
        block_args = (params, *args)
        eig_key, trace_key = jax.random.split(jax.random.fold_in(key, layer))
        eig = top_eigenvalues(
            block,
            layer_params,
            1,
            *block_args,
            key=eig_key,
            tol=tol,
            max_iters=None if max_iters is None else min(max_iters, n_l),
        )
        exact = trace_method == "exact" or (trace_method == "auto" and n_l <= samples)
        if exact:
            value = float(_exact_trace(block, layer_params, min(batch_size, n_l), block_args))
            stderr, products = 0.0, n_l
        else:
            est = trace(
                block,
                layer_params,
                *block_args,
                key=trace_key,
                samples=samples,
                batch_size=batch_size,
            )
            value, stderr, products = est.estimate, est.stderr, samples
        rows.append(
            (
                float(eig.eigenvalues[0]),
                value,
                stderr,
                exact,
                n_l,
                eig.hvps + products,
                eig.converged,
            )
        )
    columns = list(zip(*rows, strict=True))
    return LayerCurvature(
        lambda_max=np.asarray(columns[0], np.float64),
        trace=np.asarray(columns[1], np.float64),
        trace_stderr=np.asarray(columns[2], np.float64),
        exact=np.asarray(columns[3], bool),
        num_params=np.asarray(columns[4], np.int64),
        hvps=np.asarray(columns[5], np.int64),
        converged=np.asarray(columns[6], bool),
    )


# ---------------------------------------------------------------- sharpness during training


class SharpnessTracker:
    """A :func:`~gdjax.train.fit` callback that records the sharpness ``λ_max(H)``.

    Made by :func:`track_sharpness`. Each call ``tracker(epoch, params, opt_state,
    history)`` runs Lanczos (:func:`top_eigenvalues`, k = 1) on the full batch
    ``(x, y)`` given to :func:`track_sharpness`, started from the previous call's
    top eigenvector (warm start), and appends one record. ``opt_state`` and
    ``history`` are ignored, so ``tracker(0, params)`` records the start.

    Attributes (numpy arrays, one entry per call):
      epochs: the epochs at which sharpness was recorded.
      sharpness: ``λ_max(H)`` there.
      hvps: the Hessian-vector products each Lanczos run took.
      converged: whether each run met the tolerance.
      eigenvector: the latest top eigenvector (a params-shaped pytree), or None.
    """

    def __init__(
        self,
        f: Callable[..., jax.Array],
        x: jax.Array,
        y: jax.Array,
        *,
        key: jax.Array,
        tol: float,
        max_iters: int | None,
        warm_start: bool,
    ):
        self.f, self.x, self.y = f, x, y
        self.key, self.tol, self.max_iters, self.warm_start = key, tol, max_iters, warm_start
        self.eigenvector: PyTree | None = None
        self._records: list[tuple[int, float, int, bool]] = []

    def __call__(
        self, epoch: int, params: PyTree, opt_state: Any = None, history: Any = None
    ) -> float:
        """Record and return ``λ_max`` at ``params`` (``epoch`` is the record's label)."""
        del opt_state, history
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative integer, got {epoch!r}.")
        eig = top_eigenvalues(
            self.f,
            params,
            1,
            self.x,
            self.y,
            key=jax.random.fold_in(self.key, epoch),
            tol=self.tol,
            max_iters=self.max_iters,
            init=self.eigenvector if self.warm_start else None,
        )
        self.eigenvector = eig.eigenvectors[0]
        sharpness = float(eig.eigenvalues[0])
        self._records.append((int(epoch), sharpness, eig.hvps, eig.converged))
        return sharpness

    def _column(self, i: int, dtype) -> np.ndarray:
        return np.asarray([record[i] for record in self._records], dtype)

    @property
    def epochs(self) -> np.ndarray:
        """The epochs at which sharpness was recorded."""
        return self._column(0, np.int64)

    @property
    def sharpness(self) -> np.ndarray:
        """``λ_max(H)`` at each recorded epoch."""
        return self._column(1, np.float64)

    @property
    def hvps(self) -> np.ndarray:
        """The Hessian-vector products each measurement took."""
        return self._column(2, np.int64)

    @property
    def converged(self) -> np.ndarray:
        """Whether each measurement met the tolerance."""
        return self._column(3, bool)


def track_sharpness(
    model: MLP,
    loss: str | Loss,
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    tol: float = 1e-4,
    max_iters: int | None = None,
    warm_start: bool = True,
) -> SharpnessTracker:
    """A :func:`~gdjax.train.fit` callback recording the sharpness λ_max every k epochs.

    The sharpness is the largest eigenvalue of the Hessian of the full-batch
    cost, ``λ_max(∇²C(θ_t))`` with ``C(θ) = loss(model(θ, x), y)``. Gradient descent
    with step η on the quadratic model of C is stable only while

    .. math::

        λ_{max} < 2/η,

    and Cohen et al. (2021) observed that full-batch gradient descent on neural
    networks drives λ_max up ("progressive sharpening") until it reaches 2/η,
    then hovers there ("the edge of stability") while the loss keeps falling,
    non-monotonically. The tracker measures this: use it as
    ``fit(..., callback=tracker, callback_every=k)``. Each measurement is Lanczos
    warm-started from the previous top eigenvector, which changes little
    between measurements, so it usually takes fewer Hessian-vector products
    than a random start.

    Args:
      model: the network.
      loss: a :class:`~gdjax.losses.Loss` or its name.
      x, y: the batch C is evaluated on: the whole training set for full-batch GD.
      key: PRNG key (the first start vector, and restarts; folded with the epoch).
      tol: Lanczos' relative residual tolerance (see :func:`top_eigenvalues`).
      max_iters: most Lanczos steps per measurement (default ``min(n, 100)``).
      warm_start: start each Lanczos run from the previous top eigenvector.

    Returns:
      A :class:`SharpnessTracker`: call it as ``tracker(epoch, params, opt_state,
      history)``; read ``tracker.epochs``, ``tracker.sharpness``, ``tracker.hvps``.

    Examples:
      >>> from gdjax import MLP
      >>> from gdjax.train import fit
      >>> model = MLP((1, 1), activation="identity")   # C = 1/(2n) Σ (wx + b − y)²
      >>> x, y = jnp.array([[1.0], [-1.0]]), jnp.array([[0.0], [1.0]])
      >>> tracker = track_sharpness(model, "mse", x, y, key=jax.random.key(0))
      >>> _ = fit(model, "mse", "sgd", (x, y), epochs=4, key=jax.random.key(1),
      ...         learning_rate=0.1, callback=tracker, callback_every=2, progress=False)
      >>> tracker.epochs.tolist(), tracker.sharpness.round(6).tolist()   # H = I here
      ([2, 4], [1.0, 1.0])

    References:
      Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient descent on neural
      networks typically occurs at the edge of stability", ICLR; Jastrzębski et
      al. (2020), "The break-even point on optimization trajectories of deep
      neural networks", ICLR.
    """
    if not isinstance(model, MLP):
        raise ValueError(f"model: expected a gdjax.MLP, got {type(model).__name__}.")
    loss = losses.get(loss)
    model.check_input(x)
    check_num_examples(x, y)
    loss.check((shape_of(x)[0], model.sizes[-1]), y)
    tol = check_finite_number("tol", tol)
    if max_iters is not None:
        max_iters = check_positive_int("max_iters", max_iters)
    if not isinstance(warm_start, bool):
        raise ValueError(f"warm_start: expected True or False, got {warm_start!r}.")
    _check_key(key)
    return SharpnessTracker(
        objective(model, loss),
        jax.device_put(x),  # on the device once, not at every product
        jax.device_put(y),
        key=key,
        tol=tol,
        max_iters=max_iters,
        warm_start=warm_start,
    )


# ---------------------------------------------------------------- Newton's step


class NewtonResult(NamedTuple):
    """What :func:`newton_step` returns.

    Attributes:
      params: ``θ' = θ + p`` with ``p`` the (approximate) solution of ``(H + λI)p = −∇C``.
      iterations: conjugate-gradient iterations (= Hessian-vector products); 0 for dense.
      residual: ``‖(H + λI)p + ∇C‖ / ‖∇C‖`` (0 when ∇C = 0).
      converged: dense: always True; CG: the residual met ``tol``.
      negative_curvature: CG met a direction ``u`` with ``uᵀ(H + λI)u ≤ 0`` and stopped there.
    """

    params: PyTree
    iterations: int
    residual: float
    converged: bool
    negative_curvature: bool


@functools.partial(jax.jit, static_argnums=0)
def _dense_newton(f, params, damping, args):
    flat, unravel = ravel_pytree(params)

    def f_flat(u):
        return f(unravel(u), *args)

    g = jax.grad(f_flat)(flat)
    a = jax.hessian(f_flat)(flat) + damping * jnp.eye(flat.size, dtype=flat.dtype)
    p = jnp.linalg.solve(a, -g)
    gnorm = jnp.linalg.norm(g)
    residual = jnp.where(gnorm > 0, jnp.linalg.norm(a @ p + g) / gnorm, 0.0)
    return unravel(flat + p), residual


@functools.partial(jax.jit, static_argnums=(0, 3))
def _cg_newton(f, params, damping, max_iters, tol, args):
    flat, unravel = ravel_pytree(params)
    g = ravel_pytree(jax.grad(f)(params, *args))[0]

    operator = _flat_hvp_operator(f, params, args)

    def matvec(u):
        return operator(u) + damping * u

    # Solve A p = b, b = −∇C, from p = 0:  r = b − Ap,  u the search direction.
    b = -g
    bnorm = jnp.linalg.norm(b)
    target = tol * bnorm

    def cond(state):
        _, r, _, rr, i, neg = state
        return (i < max_iters) & (jnp.sqrt(rr) > target) & ~neg

    def body(state):
        p, r, u, rr, i, _ = state
        au = matvec(u)
        uau = jnp.vdot(u, au)
        neg = uau <= 0
        step = jnp.where(neg, 0.0, rr / jnp.where(neg, 1.0, uau))
        p = p + step * u
        r = r - step * au
        rr_new = jnp.vdot(r, r)
        u = r + (rr_new / jnp.where(rr > 0, rr, 1.0)) * u
        return p, r, u, rr_new, i + jnp.where(neg, 0, 1), neg

    zero = jnp.zeros_like(flat)
    state = (zero, b, b, jnp.vdot(b, b), jnp.array(0), jnp.array(False))
    p, r, _, rr, iterations, neg = jax.lax.while_loop(cond, body, state)
    residual = jnp.where(bnorm > 0, jnp.linalg.norm(matvec(p) - b) / bnorm, 0.0)
    return unravel(flat + p), iterations, residual, neg


def newton_step(
    f: Callable[..., jax.Array],
    params: PyTree,
    *args: Any,
    damping: float = 0.0,
    method: Literal["dense", "cg"] = "dense",
    cg_iters: int | None = None,
    tol: float = 1e-10,
) -> NewtonResult:
    """One damped Newton step ``θ' = θ − (H + λI)⁻¹ ∇C``.

    .. math::

        θ' = θ + p,\\qquad (H + λ I)\\, p = −∇C

    It minimises the second-order model ``C + ∇Cᵀp + ½pᵀ(H + λI)p``. On a
    quadratic C (linear regression with mse) with λ = 0 that model is exact,
    so one step lands on the minimum; on a non-linear network it is only a
    local model, and the step does not reach the minimum (and with an
    indefinite H need not even go downhill).

    ``method="dense"`` forms H with ``jax.hessian`` and solves the n×n system:
    for small models only (n ≤ :data:`MAX_DENSE_PARAMS`). ``method="cg"``
    solves the system by conjugate gradient using only Hessian-vector
    products (Hessian-free optimisation); CG assumes ``H + λI`` positive
    definite: it stops at the first direction u with ``uᵀ(H + λI)u ≤ 0`` and
    returns the step built so far (``negative_curvature=True``); damping λ > 0
    is the usual cure.

    Args:
      f: scalar function ``f(params, *args)``.
      params: θ.
      *args: further arguments of ``f``.
      damping: λ ≥ 0, added to the diagonal of H (Levenberg–Marquardt damping).
      method: ``"dense"`` or ``"cg"``.
      cg_iters: most CG iterations (default n, the number of parameters).
      tol: CG stops when ``‖(H + λI)p + ∇C‖ ≤ tol·‖∇C‖``; the dense solve is
        converged when it is finite and that relative residual is at most
        ``max(tol, 1000ε)`` (a singular ``H + λI`` gives Inf/NaN: not converged).

    Returns:
      A :class:`NewtonResult` ``(params, iterations, residual, converged, negative_curvature)``.

    Examples:
      >>> f = lambda p: 0.5 * jnp.sum(jnp.array([3.0, 1.0]) * (p - 1.0) ** 2)
      >>> newton_step(f, jnp.zeros(2)).params.tolist()   # one step to the minimum
      [1.0, 1.0]

    References:
      Nocedal & Wright, *Numerical Optimization* (2006), ch. 3 and §7.1
      (Newton–CG); Martens (2010), "Deep learning via Hessian-free optimization".
    """
    n = _check_params(params)
    check_finite_args(args)
    method = _check_choice("method", method, ("dense", "cg"))
    damping = check_finite_number("damping", damping, allow_zero=True)
    tol = check_finite_number("tol", tol)
    if method == "dense":
        if cg_iters is not None:
            raise ValueError(f"cg_iters: expected None with method='dense', got {cg_iters!r}.")
        if n > MAX_DENSE_PARAMS:
            raise ValueError(
                f"params: method='dense' forms the {n}×{n} Hessian; expected at most "
                f"{MAX_DENSE_PARAMS} parameters, got {n}. Use method='cg'."
            )
        new, residual = _dense_newton(f, params, damping, args)
        residual = float(residual)
        # A singular H + λI gives Inf/NaN from the solve: never a converged step.
        finite = bool(jax.tree.all(jax.tree.map(lambda a: jnp.all(jnp.isfinite(a)), new)))
        eps = float(jnp.finfo(jnp.result_type(*jax.tree.leaves(params))).eps)
        converged = finite and residual <= max(tol, 1e3 * eps)
        return NewtonResult(new, 0, residual, converged, False)
    cg_iters = n if cg_iters is None else check_positive_int("cg_iters", cg_iters)
    new, iterations, residual, neg = _cg_newton(f, params, damping, cg_iters, tol, args)
    residual = float(residual)
    return NewtonResult(new, int(iterations), residual, residual <= tol, bool(neg))
