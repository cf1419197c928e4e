"""Per-example gradients from the hand-written backward pass, and gradient noise.

The seed's gradient of one example x is a sum of outer products, one per layer:

    ∂C_x/∂w^l = δ^l_x (a^{l-1}_x)ᵀ,   ∂C_x/∂b^l = δ^l_x

so a single backward pass over a batch already holds every example's
gradient: row i of the δ^l matrix and row i of a^{l-1}. This module keeps them
apart instead of summing over the batch, with no ``vmap`` over examples.

**Scaling (read this once).** The losses of :mod:`gdjax.losses` are batch
*means*, ``C = (1/n) Σ_i C_i``, and :func:`gdjax.backprop_with_deltas` returns
``δ^l = ∂C/∂z^l`` of that mean, whose row i is ``(1/n) δ^l_i``. Here
``δ^l_i = ∂C_i/∂z^l_i`` is the seed's per-example δ of example i's *own* cost
``C_i`` (the loss of a batch holding only example i), which is n times that row.
So :func:`per_example_grads` returns

    g_i = ∇_θ C_i,     and the batch gradient is their MEAN:  ∇C = (1/n) Σ_i g_i.

Gradient noise (McCandlish et al. 2018): with N examples, G = ∇C their mean
gradient and the per-example covariance taken with the 1/N convention,

    Σ = (1/N) Σ_i (g_i − G)(g_i − G)ᵀ,     tr Σ = (1/N) Σ_i ‖g_i‖² − ‖G‖²,

a minibatch B of B examples drawn *without replacement* has mean gradient
``g_B`` with

    E‖g_B − G‖² = (tr Σ / B) · (N − B) / (N − 1)

(the finite-population correction: the error is 0 at B = N), and the "simple
noise scale" ``B_simple = tr Σ / ‖G‖²`` is the batch size at which the noise
is about as large as the signal.

- :func:`per_example_deltas` — every z^l, a^l and the per-example δ^l_i.
- :func:`per_example_grads` — the g_i as a params pytree with a leading batch axis.
- :func:`per_example_grad_norms` — ‖g_i‖ per layer and in total, never forming g_i.
- :func:`gradient_noise` — G, tr Σ, B_simple and the predicted minibatch error.
- :func:`minibatch_errors` — measured ‖g_B − G‖² over sampled minibatches.

Called eagerly, each function compiles itself once per model, loss and input
shapes (:mod:`gdjax._jit`); inside a user's ``jit``/``vmap`` it is traced as
part of it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _jit, losses
from gdjax._checks import check_finite_number, check_key, check_positive_int, shape_of
from gdjax.backprop import check_batch
from gdjax.losses import Loss
from gdjax.mlp import MLP, Params

__all__ = [
    "per_example_deltas",
    "per_example_grads",
    "per_example_grad_norms",
    "PerExampleNorms",
    "gradient_noise",
    "GradientNoise",
    "minibatch_error",
    "minibatch_errors",
]


def per_example_deltas(
    model: MLP, loss: str | Loss, params: Params, x: jax.Array, y: jax.Array
) -> tuple[list[jax.Array], list[jax.Array], list[jax.Array]]:
    """The forward pass and the per-example error terms ``δ^l_i = ∂C_i/∂z^l_i``.

    .. math::

        δ^L_i = n\\,\\frac{∂C}{∂a^L_i} ⊙ σ'(z^L_i),\\qquad
        δ^l_i = ((w^{l+1})^T δ^{l+1}_i) ⊙ σ'(z^l_i)

    The factor n turns the gradient of the batch-mean loss into that of example
    i's own loss ``C_i`` (every loss in :mod:`gdjax.losses` is a mean over rows);
    the recursion is then the seed's, for each row at once.

    Returns:
      ``(zs, acts, deltas)``: ``zs[l-1] = z^l`` and ``deltas[l-1] = δ^l``, both
      ``(batch, n_l)``, for l = 1 … L; ``acts[l] = a^l`` for l = 0 … L.
    """
    loss = losses.get(loss)
    check_batch(model, loss, params, x, y)
    return _jit.call(_deltas, (model, loss), params, x, y)


def _deltas(model: MLP, loss: Loss, params: Params, x, y):
    """The body of :func:`per_example_deltas`, with no checks."""
    zs, acts = model.trace(params, x)
    n = shape_of(x)[0]
    deltas: list[jax.Array] = [None] * model.num_layers  # type: ignore[list-item]
    # δ^L_i = ∂C_i/∂a^L_i ⊙ σ'(z^L_i), with ∂C_i/∂a^L_i = n · ∂C/∂a^L_i
    delta = n * loss.grad(acts[-1], y) * model.output_activation.deriv(zs[-1])
    for layer in reversed(range(model.num_layers)):
        deltas[layer] = delta
        if layer > 0:
            # δ^{l-1}_i = ((w^l)ᵀ δ^l_i) ⊙ σ'(z^{l-1}_i), all rows at once
            delta = (delta @ params[layer]["w"]) * model.activation.deriv(zs[layer - 1])
    return zs, acts, deltas


def per_example_grads(
    model: MLP, loss: str | Loss, params: Params, x: jax.Array, y: jax.Array
) -> Params:
    """The gradient of every example's own cost, ``g_i = ∇_θ C_i``, as outer products.

    .. math::

        \\frac{∂C_i}{∂w^l} = δ^l_i (a^{l-1}_i)^T,\\qquad \\frac{∂C_i}{∂b^l} = δ^l_i,
        \\qquad ∇C = \\frac{1}{n}\\sum_i g_i

    ``C_i`` is the loss of example i alone, so the batch gradient returned by
    :func:`gdjax.backprop` is the **mean** of the g_i over the batch (not the
    sum). Same values as ``jax.vmap(jax.grad(f), (None, 0, 0))`` over single
    examples (with ``f = gdjax.objective(model, loss)`` on batches of one), but
    from one batched backward pass: the outer products are one ``einsum``.

    Args:
      model: the network (static under ``jit``).
      loss: a :class:`~gdjax.losses.Loss` or its name (static under ``jit``).
      params: ``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]``.
      x: inputs of shape ``(n, n_0)``.
      y: targets, as the loss expects them.

    Returns:
      ``[{"w": (n, n_l, n_{l-1}), "b": (n, n_l)}, …]``: entry ``[i]`` of every leaf
      is example i's gradient. Memory: n × #params numbers.

    Examples:
      >>> from gdjax import MLP, backprop
      >>> model = MLP((2, 3, 1), activation="tanh")
      >>> params = model.init(jax.random.key(0))
      >>> x, y = jnp.ones((5, 2)), jnp.zeros((5, 1))
      >>> grads = per_example_grads(model, "mse", params, x, y)
      >>> grads[0]["w"].shape, grads[0]["b"].shape
      ((5, 3, 2), (5, 3))
      >>> _, batch = backprop(model, "mse", params, x, y)
      >>> bool(jnp.allclose(grads[0]["w"].mean(axis=0), batch[0]["w"]))
      True
    """
    loss = losses.get(loss)
    check_batch(model, loss, params, x, y)
    return _jit.call(_grads, (model, loss), params, x, y)


def _grads(model: MLP, loss: Loss, params: Params, x, y) -> Params:
    _, acts, deltas = _deltas(model, loss, params, x, y)
    return [
        {"w": jnp.einsum("bi,bj->bij", delta, a_prev), "b": delta}
        for delta, a_prev in zip(deltas, acts[:-1], strict=True)
    ]


class PerExampleNorms(NamedTuple):
    """Per-example gradient norms (of ``g_i = ∇C_i``), from :func:`per_example_grad_norms`.

    Attributes:
      total: ``(n,)``, ``‖g_i‖ = √(Σ_l ‖∂C_i/∂w^l‖_F² + ‖∂C_i/∂b^l‖²)``.
      weight: ``(n, L)``, ``‖∂C_i/∂w^l‖_F = ‖δ^l_i‖ ‖a^{l-1}_i‖`` in column l − 1.
      bias: ``(n, L)``, ``‖∂C_i/∂b^l‖ = ‖δ^l_i‖`` in column l − 1.
    """

    total: jax.Array
    weight: jax.Array
    bias: jax.Array


def per_example_grad_norms(
    model: MLP, loss: str | Loss, params: Params, x: jax.Array, y: jax.Array
) -> PerExampleNorms:
    """‖g_i‖ for every example, per layer and in total, without forming any g_i.

    A rank-one matrix has the Frobenius norm of its factors' product,

    .. math::

        \\|δ^l_i (a^{l-1}_i)^T\\|_F = \\|δ^l_i\\|\\,\\|a^{l-1}_i\\|,\\qquad
        \\|g_i\\|^2 = \\sum_l \\|δ^l_i\\|^2 (\\|a^{l-1}_i\\|^2 + 1)

    so the cost is one forward and one backward pass, O(n · Σ_l n_l) extra memory
    instead of the n × #params of :func:`per_example_grads` (Goodfellow 2015).
    Scaling as in :func:`per_example_grads` (each example's own cost C_i).

    Returns:
      A :class:`PerExampleNorms` ``(total, weight, bias)``.

    Examples:
      >>> from gdjax import MLP
      >>> model = MLP((2, 3, 1), activation="tanh")
      >>> params = model.init(jax.random.key(0))
      >>> x, y = jnp.ones((5, 2)), jnp.zeros((5, 1))
      >>> norms = per_example_grad_norms(model, "mse", params, x, y)
      >>> norms.total.shape, norms.weight.shape
      ((5,), (5, 2))
      >>> g = per_example_grads(model, "mse", params, x, y)
      >>> bool(jnp.allclose(norms.weight[:, 0], jnp.linalg.norm(g[0]["w"], axis=(1, 2))))
      True

    References:
      Goodfellow (2015), "Efficient per-example gradient computations", arXiv:1510.01799.
    """
    loss = losses.get(loss)
    check_batch(model, loss, params, x, y)
    return _jit.call(_grad_norms, (model, loss), params, x, y)


def _grad_norms(model: MLP, loss: Loss, params: Params, x, y) -> PerExampleNorms:
    _, acts, deltas = _deltas(model, loss, params, x, y)
    delta_sq = jnp.stack([jnp.sum(d * d, axis=1) for d in deltas], axis=1)
    act_sq = jnp.stack([jnp.sum(a * a, axis=1) for a in acts[:-1]], axis=1)
    return PerExampleNorms(
        total=jnp.sqrt(jnp.sum(delta_sq * (act_sq + 1), axis=1)),
        weight=jnp.sqrt(delta_sq * act_sq),
        bias=jnp.sqrt(delta_sq),
    )


# ---------------------------------------------------------------- gradient noise


def _check_batch_size(name: str, batch_size, num_examples: int) -> None:
    """``batch_size`` (an int or an array of ints) must lie in [1, N]."""
    sizes = np.asarray(batch_size)
    ok = (
        sizes.size > 0
        and not np.issubdtype(sizes.dtype, np.bool_)
        and np.issubdtype(sizes.dtype, np.integer)
        and bool(np.all((sizes >= 1) & (sizes <= num_examples)))
    )
    if not ok:
        raise ValueError(
            f"{name}: expected integers in [1, {num_examples}] (1 ≤ B ≤ N, the number of "
            f"examples), got {batch_size!r}."
        )


def minibatch_error(trace_cov, num_examples: int, batch_size) -> np.ndarray:
    """``E‖g_B − G‖² = (tr Σ / B)(N − B)/(N − 1)`` for B drawn without replacement.

    Σ is the per-example gradient covariance with the 1/N convention (see the
    module docstring); the factor ``(N − B)/(N − 1)`` is the finite-population
    correction, so the error is exactly 0 at B = N. ``batch_size`` may be an int
    or an array of ints in [1, N]; N = 1 gives 0. ``trace_cov`` must be a finite
    number ≥ 0 (a ``ValueError`` naming it otherwise).

    >>> minibatch_error(2.0, 10, [1, 5, 10]).tolist()
    [2.0, 0.2222222222222222, 0.0]
    """
    if isinstance(trace_cov, jax.Array | np.ndarray) and np.ndim(trace_cov) == 0:
        trace_cov = np.asarray(trace_cov).item()  # a 0-d array holds one number
    trace_cov = check_finite_number("trace_cov", trace_cov, allow_zero=True)
    num_examples = check_positive_int("num_examples", num_examples)
    _check_batch_size("batch_size", batch_size, num_examples)
    b = np.asarray(batch_size, np.float64)
    if num_examples == 1:
        return np.zeros_like(b)
    return float(trace_cov) / b * (num_examples - b) / (num_examples - 1)


class GradientNoise(NamedTuple):
    """What :func:`gradient_noise` returns.

    Attributes:
      grad: G = ∇C = (1/N) Σ_i g_i, the full-batch gradient (params pytree).
      grad_norm_sq: ‖G‖².
      mean_sq_norm: (1/N) Σ_i ‖g_i‖².
      trace_cov: tr Σ = (1/N) Σ_i ‖g_i − G‖² = mean_sq_norm − ‖G‖² (1/N convention).
      b_simple: tr Σ / ‖G‖², McCandlish et al.'s simple noise scale.
      num_examples: N.
    """

    grad: Params
    grad_norm_sq: float
    mean_sq_norm: float
    trace_cov: float
    b_simple: float
    num_examples: int

    def expected_error(self, batch_size) -> np.ndarray:
        """``E‖g_B − G‖² = (tr Σ/B)(N − B)/(N − 1)`` (see :func:`minibatch_error`)."""
        return minibatch_error(self.trace_cov, self.num_examples, batch_size)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _noise_kernel(model: MLP, loss: Loss, params: Params, x, y):
    _, acts, deltas = _deltas(model, loss, params, x, y)
    n = x.shape[0]
    # G = (1/N) Σ_i g_i, per layer: (1/N) Σ_i δ_i a_iᵀ and (1/N) Σ_i δ_i
    grad = [
        {"w": d.T @ a / n, "b": jnp.mean(d, axis=0)} for d, a in zip(deltas, acts[:-1], strict=True)
    ]
    sq = sum(
        jnp.sum(d * d, axis=1) * (jnp.sum(a * a, axis=1) + 1)
        for d, a in zip(deltas, acts[:-1], strict=True)
    )
    grad_sq = sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(grad))
    return grad, grad_sq, jnp.mean(sq)


def gradient_noise(
    model: MLP, loss: str | Loss, params: Params, x: jax.Array, y: jax.Array
) -> GradientNoise:
    """The full-batch gradient, the trace of the per-example covariance and B_simple.

    With the per-example gradients ``g_i = ∇C_i`` of the N examples (x, y)
    (see :func:`per_example_grads`) and ``G = (1/N) Σ_i g_i``:

    .. math::

        \\operatorname{tr} Σ = \\frac{1}{N}\\sum_i \\|g_i\\|^2 − \\|G\\|^2,\\qquad
        B_{simple} = \\frac{\\operatorname{tr} Σ}{\\|G\\|^2},\\qquad
        E\\|g_B − G\\|^2 = \\frac{\\operatorname{tr} Σ}{B}\\,\\frac{N − B}{N − 1}

    The ‖g_i‖² come from :func:`per_example_grad_norms`' identity, so no g_i is
    ever formed: memory O(N · Σ_l n_l). The subtraction loses relative accuracy
    about ``ε · mean‖g_i‖² / tr Σ`` (ε the float epsilon of params), which is
    only a concern in float32 when the noise is tiny next to the signal; a
    negative result of rounding is clamped to 0.

    Args:
      model, loss, params, x, y: as for :func:`gdjax.backprop`; (x, y) is the
        whole population the minibatches are drawn from, N ≥ 2 examples (one
        example has no spread: a ``ValueError`` naming ``x``).

    Returns:
      A :class:`GradientNoise`; ``.expected_error(B)`` gives E‖g_B − G‖² for a
      size-B minibatch drawn without replacement (B an int or an array of ints
      in [1, N]).

    Examples:
      >>> from gdjax import MLP
      >>> model = MLP((2, 4, 1), activation="tanh")
      >>> params = model.init(jax.random.key(0))
      >>> x = jax.random.normal(jax.random.key(1), (50, 2))
      >>> noise = gradient_noise(model, "mse", params, x, jnp.sin(x[:, :1]))
      >>> noise.trace_cov > 0, float(noise.expected_error(50))
      (True, 0.0)

    References:
      McCandlish, Kaplan, Amodei et al. (2018), "An empirical model of
      large-batch training", arXiv:1812.06162, appendix A.
    """
    loss = losses.get(loss)
    check_batch(model, loss, params, x, y)
    if shape_of(x)[0] < 2:
        raise ValueError(
            f"x: expected at least 2 examples: the per-example covariance of a single "
            f"example is 0 and the difference mean‖g_i‖² − ‖G‖² would be rounding alone, "
            f"got shape {shape_of(x)}."
        )
    grad, grad_sq, mean_sq = _noise_kernel(model, loss, params, x, y)
    grad_sq, mean_sq = float(grad_sq), float(mean_sq)
    trace_cov = max(mean_sq - grad_sq, 0.0)
    return GradientNoise(
        grad=grad,
        grad_norm_sq=grad_sq,
        mean_sq_norm=mean_sq,
        trace_cov=trace_cov,
        b_simple=trace_cov / grad_sq if grad_sq > 0 else float("inf"),
        num_examples=shape_of(x)[0],
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def _minibatch_errors_kernel(model, loss, params, x, y, batch_size, num_samples, key):
    _, acts, deltas = _deltas(model, loss, params, x, y)
    n = x.shape[0]

    def one(k):
        # weights u_i = 1/B on B distinct examples (the first B of a random permutation),
        # so g_B − G = Σ_i (u_i − 1/N) g_i, layer by layer δᵀ diag(u − 1/N) a
        rank = jax.random.permutation(k, n)
        u = jnp.where(rank < batch_size, 1.0 / batch_size, 0.0).astype(deltas[0].dtype)
        c = u - 1.0 / n
        return sum(
            jnp.sum(((d * c[:, None]).T @ a) ** 2) + jnp.sum((c @ d) ** 2)
            for d, a in zip(deltas, acts[:-1], strict=True)
        )

    return jax.lax.map(one, jax.random.split(key, num_samples), batch_size=16)


def minibatch_errors(
    model: MLP,
    loss: str | Loss,
    params: Params,
    x: jax.Array,
    y: jax.Array,
    batch_size: int,
    *,
    key: jax.Array,
    num_samples: int = 100,
) -> jax.Array:
    """Measured ``‖g_B − G‖²`` for ``num_samples`` minibatches drawn without replacement.

    Each minibatch is B distinct rows of (x, y) chosen uniformly (sample s uses
    ``split(key, num_samples)[s]``); ``g_B`` is the gradient of the minibatch's
    mean cost, ``(1/B) Σ_{i∈B} g_i``, and G that of the whole (x, y). From one
    backward pass (:func:`per_example_deltas`), each sample costs one weighted
    sum per layer,

    .. math::

        g_B − G = \\sum_i c_i g_i,\\quad c_i = 1[i ∈ B]/B − 1/N,\\qquad
        \\frac{∂}{∂w^l}: \\sum_i c_i δ^l_i (a^{l-1}_i)^T

    with no cancellation between g_B and G. ``batch_size`` is not static: all
    batch sizes share one compiled kernel. The mean of the result estimates
    :meth:`GradientNoise.expected_error`, with standard error ``std / √num_samples``.

    Returns:
      A ``(num_samples,)`` array of squared errors.
    """
    loss = losses.get(loss)
    check_batch(model, loss, params, x, y)
    if np.ndim(batch_size) != 0:
        raise ValueError(f"batch_size: expected one integer, got {batch_size!r}.")
    _check_batch_size("batch_size", batch_size, shape_of(x)[0])
    num_samples = check_positive_int("num_samples", num_samples)
    check_key(key)
    return _minibatch_errors_kernel(
        model, loss, params, jnp.asarray(x), jnp.asarray(y), int(batch_size), num_samples, key
    )
