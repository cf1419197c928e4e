"""Layer Jacobians and the input-output Jacobian: why gradients vanish, in numbers.

Layer l maps ``a^{l-1} ↦ a^l = σ(w^l a^{l-1} + b^l)``; its Jacobian for one
example is

    J^l = ∂a^l/∂a^{l-1} = diag(σ'(z^l)) w^l                   (n_l × n_{l-1})

(σ of the last layer is the model's ``output_activation``), and by the chain
rule the network's input-output Jacobian is their product

    J = ∂a^L/∂a^0 = J^L J^{L-1} ⋯ J^1.

The backward pass multiplies by the transposes of the same matrices:
``δ^l = ((w^{l+1})ᵀ δ^{l+1}) ⊙ σ'(z^l)`` is ``(J^{l+1})ᵀ δ^{l+1}`` up to the
σ'(z^l) factor. So the singular values of the products ``J^l ⋯ J^1`` say by how
much a gradient is stretched or squashed on its way from layer l down to the
input: if they are all ≪ 1, the first layers barely learn (vanishing
gradients); ≫ 1, they explode. Pennington, Schoenholz & Ganguli (2017) call a
network *dynamically isometric* when all singular values of J stay near 1.

Every function takes a batch (rows are examples) and returns one matrix per
example, built from the forward pass (:meth:`gdjax.MLP.trace`) and the
hand-written ``Activation.deriv``; no JAX differentiation is used. Called
eagerly, each compiles itself once per model and input shapes (:mod:`gdjax._jit`).

- :func:`layer_jacobians` — ``J^l`` for l = 1 … L, each ``(batch, n_l, n_{l-1})``.
- :func:`jacobian_products` — ``J^l ⋯ J^1 = ∂a^l/∂a^0`` for l = 1 … L.
- :func:`input_output_jacobian` — ``J = ∂a^L/∂a^0``, ``(batch, n_L, n_0)``.
- :func:`jacobian_singular_values` — singular values of all of them.
- :func:`jacobian_spread` — their rms, quantiles and rank per layer (numpy).
- :func:`jacobian_spectra_figure` — that spread at init for sigmoid/tanh/relu
  with Glorot/He init: the figure of vanishing gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _jit
from gdjax._checks import check_positive_int
from gdjax.mlp import MLP, Params

__all__ = [
    "layer_jacobians",
    "jacobian_products",
    "input_output_jacobian",
    "jacobian_singular_values",
    "JacobianSpectra",
    "jacobian_spread",
    "jacobian_spectra_figure",
    "SPREAD_QUANTILES",
]


def _check(model: MLP, params: Params, x) -> None:
    if not isinstance(model, MLP):
        raise ValueError(f"model: expected a gdjax.MLP, got {type(model).__name__}.")
    model.check_params(params)
    model.check_input(x)


def layer_jacobians(model: MLP, params: Params, x: jax.Array) -> list[jax.Array]:
    """The Jacobian of every layer, ``J^l = ∂a^l/∂a^{l-1} = diag(σ'(z^l)) w^l``, per example.

    .. math::

        J^l_i = \\operatorname{diag}(σ'(z^l_i))\\, w^l,\\qquad l = 1 … L

    with σ the hidden activation for l < L and ``model.output_activation`` for l = L.

    Args:
      model: the network.
      params: ``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]``.
      x: inputs of shape ``(batch, n_0)``.

    Returns:
      ``[J^1, …, J^L]``, ``J^l`` of shape ``(batch, n_l, n_{l-1})``.

    Examples:
      >>> from gdjax import MLP
      >>> model = MLP((2, 3, 1), activation="relu")
      >>> params = model.init(jax.random.key(0))
      >>> [j.shape for j in layer_jacobians(model, params, jnp.ones((4, 2)))]
      [(4, 3, 2), (4, 1, 3)]
    """
    _check(model, params, x)
    return _jit.call(_layer_jacobians, (model,), params, x)


def _layer_jacobians(model: MLP, params: Params, x) -> list[jax.Array]:
    zs, _ = model.trace(params, x)
    return [
        # diag(σ'(z^l_i)) w^l: scale row k of w^l by σ'(z^l_{ik})
        model.activation_of(layer).deriv(z)[:, :, None] * p["w"][None, :, :]
        for layer, (z, p) in enumerate(zip(zs, params, strict=True))
    ]


def jacobian_products(model: MLP, params: Params, x: jax.Array) -> list[jax.Array]:
    """The Jacobians of every layer's activation with respect to the input.

    .. math::

        \\frac{∂a^l}{∂a^0} = J^l J^{l-1} ⋯ J^1,\\qquad l = 1 … L

    Returns:
      A list of L arrays, entry l − 1 of shape ``(batch, n_l, n_0)``; the last is
      :func:`input_output_jacobian`.
    """
    _check(model, params, x)
    return _jit.call(_jacobian_products, (model,), params, x)


def _jacobian_products(model: MLP, params: Params, x) -> list[jax.Array]:
    products, total = [], None
    for j in _layer_jacobians(model, params, x):
        total = j if total is None else j @ total
        products.append(total)
    return products


def input_output_jacobian(model: MLP, params: Params, x: jax.Array) -> jax.Array:
    """The end-to-end Jacobian ``J = ∂a^L/∂a^0 = J^L ⋯ J^1``, ``(batch, n_L, n_0)``.

    Equal to ``jax.jacfwd(lambda x_i: model.apply(params, x_i[None])[0])`` for
    each example.

    Examples:
      >>> from gdjax import MLP
      >>> model = MLP((2, 1), activation="identity")
      >>> params = [{"w": jnp.array([[3.0, -1.0]]), "b": jnp.zeros(1)}]
      >>> input_output_jacobian(model, params, jnp.ones((1, 2))).tolist()
      [[[3.0, -1.0]]]
    """
    _check(model, params, x)
    return _jit.call(_input_output_jacobian, (model,), params, x)


def _input_output_jacobian(model: MLP, params: Params, x) -> jax.Array:
    return _jacobian_products(model, params, x)[-1]


class JacobianSpectra(NamedTuple):
    """Singular values from :func:`jacobian_singular_values`, each sorted descending.

    Attributes:
      layers: ``[s(J^1), …, s(J^L)]``, entry l − 1 of shape ``(batch, min(n_l, n_{l-1}))``.
      products: ``[s(J^1), s(J^2 J^1), …, s(J^L ⋯ J^1)]``, entry l − 1 of shape
        ``(batch, min(n_l, n_0))``.
      end_to_end: ``s(J)`` of the input-output Jacobian (the last of ``products``).
    """

    layers: list[jax.Array]
    products: list[jax.Array]
    end_to_end: jax.Array


def jacobian_singular_values(model: MLP, params: Params, x: jax.Array) -> JacobianSpectra:
    """Singular values of every layer Jacobian J^l and of the products J^l ⋯ J^1.

    .. math::

        J^l = U Σ V^T,\\quad s(J^l) = \\operatorname{diag} Σ;\\qquad
        s(J^L ⋯ J^1)\\ \\text{all} ≈ 1 \\iff \\text{dynamical isometry}

    For the sigmoid, σ' ≤ 1/4, so at Glorot (or He) init the singular values of
    J^l ⋯ J^1 shrink geometrically with l, by about 4× per layer: the
    quantitative reason for vanishing gradients. relu at He init keeps their
    root-mean-square near 1 at any depth (tanh at Glorot init loses about 3×
    over ten layers), but even there the spread of the singular values (the
    ratio of large to small) grows with depth. See :func:`jacobian_spread` and
    :func:`jacobian_spectra_figure`.

    Returns:
      A :class:`JacobianSpectra` ``(layers, products, end_to_end)``.

    Examples:
      >>> from gdjax import MLP
      >>> model = MLP((3, 3), activation="identity")
      >>> params = [{"w": jnp.diag(jnp.array([1.0, 2.0, 4.0])), "b": jnp.zeros(3)}]
      >>> jacobian_singular_values(model, params, jnp.ones((1, 3))).end_to_end.tolist()
      [[4.0, 2.0, 1.0]]

    References:
      Pennington, Schoenholz & Ganguli (2017), "Resurrecting the sigmoid in deep
      learning through dynamical isometry: theory and practice", NeurIPS;
      Glorot & Bengio (2010), "Understanding the difficulty of training deep
      feedforward neural networks", AISTATS.
    """
    _check(model, params, x)
    return _jit.call(_singular_values, (model,), params, x)


def _singular_values(model: MLP, params: Params, x) -> JacobianSpectra:
    layers = _layer_jacobians(model, params, x)
    products, total = [], None
    for j in layers:
        total = j if total is None else j @ total
        products.append(total)

    def sv(m):
        return jnp.linalg.svd(m, compute_uv=False)

    layer_sv = [sv(j) for j in layers]
    product_sv = [sv(p) for p in products]
    return JacobianSpectra(layers=layer_sv, products=product_sv, end_to_end=product_sv[-1])


# ---------------------------------------------------------------- Jacobian spectra

SPREAD_QUANTILES = (0.1, 0.5, 0.9)
"""The quantiles of the non-zero singular values that :func:`jacobian_spread` reports."""


def _spread(svs: Sequence[jax.Array], sizes: Sequence[tuple[int, int]]) -> tuple:
    quantiles, rms, rank = [], [], []
    for s, shape in zip(svs, sizes, strict=True):
        s = np.asarray(s, np.float64)
        # numerically non-zero: above max(m, n)·ε·s_max of each matrix, as numpy.linalg.matrix_rank
        eps = np.finfo(np.asarray(svs[0]).dtype).eps
        nonzero = s > max(shape) * eps * s[:, :1]
        kept = s[nonzero]
        quantiles.append(np.quantile(kept, SPREAD_QUANTILES) if kept.size else np.zeros(3))
        rms.append(np.sqrt(np.mean(s**2)))
        rank.append(np.mean(np.sum(nonzero, axis=1)) / s.shape[1])
    return np.asarray(quantiles), np.asarray(rms), np.asarray(rank)


def jacobian_spread(model: MLP, params: Params, x: jax.Array) -> dict[str, np.ndarray]:
    """How the singular values of each layer Jacobian, and of their products, are spread.

    With ``J^l = diag(σ'(z^l)) w^l`` (:func:`layer_jacobians`) and
    s(A) the singular values of A, pooled over the examples of ``x``:

    .. math::

        s_{rms}(A) = \\sqrt{\\operatorname{mean}_k s_k(A)^2} = \\|A\\|_F / \\sqrt{k},\\qquad
        q_p\\big(s(A) \\mid s > 0\\big),\\qquad A ∈ \\{J^l,\\ J^l ⋯ J^1\\},\\ l = 1 … L

    ``s_rms`` is the factor by which the matrix stretches a random direction on
    average: the products' ``s_rms`` falling geometrically with l is vanishing
    gradients. The quantiles p ∈ :data:`SPREAD_QUANTILES` skip the numerically
    zero singular values (below ``max(m, n)·ε·s_max``; a dead ReLU unit zeroes a
    row of J^l), whose share is reported as ``1 − rank``. The ratio of the 0.9
    to the 0.1 quantile is how far the network is from dynamical isometry
    (Pennington et al. 2017). Computed on the host (numpy), not jittable.

    Returns:
      numpy arrays: ``"layers"`` and ``"products"``, ``(L, 3)`` quantiles;
      ``"layers_rms"``, ``"products_rms"``, ``(L,)``; ``"layers_rank"``,
      ``"products_rank"``, ``(L,)``, the mean fraction of non-zero singular values.

    Examples:
      >>> model = MLP(sizes=(4, 4, 4), activation="identity")
      >>> params = [{"w": 0.5 * jnp.eye(4), "b": jnp.zeros(4)}] * 2
      >>> spread = jacobian_spread(model, params, jnp.ones((3, 4)))
      >>> spread["products"][:, 1].tolist(), spread["products_rms"].tolist()
      ([0.5, 0.25], [0.5, 0.25])
    """
    spectra = jacobian_singular_values(model, params, x)
    layer_shapes = list(zip(model.sizes[1:], model.sizes[:-1], strict=True))
    product_shapes = [(n, model.sizes[0]) for n in model.sizes[1:]]
    out = {}
    for name, svs, shapes in (
        ("layers", spectra.layers, layer_shapes),
        ("products", spectra.products, product_shapes),
    ):
        out[name], out[f"{name}_rms"], out[f"{name}_rank"] = _spread(svs, shapes)
    return out


def jacobian_spectra_figure(
    key: jax.Array,
    *,
    depth: int = 10,
    width: int = 64,
    num_examples: int = 16,
    activations: Sequence[str] = ("sigmoid", "tanh", "relu"),
    schemes: Sequence[str] = ("glorot", "he"),
):
    """Singular-value spread of J^l and of J^l ⋯ J^1 at initialisation, layer by layer.

    For every activation (columns) and init scheme (colours), a ``depth``-layer
    MLP of constant ``width`` is drawn with ``key``; inputs are ``x ~ N(0, I)``.
    The top row shows :func:`jacobian_spread` of each layer's own Jacobian, the
    bottom row that of the product ``∂a^l/∂a^0 = J^l ⋯ J^1``: the rms singular
    value (solid line with dots), and the median (dashed) and 10–90 % band of
    the non-zero singular values, on a log scale. The sigmoid's products collapse by
    about 4× per layer (σ' ≤ 1/4), which is why its first layers learn slowly.

    Returns:
      A ``matplotlib.figure.Figure`` (save it with :func:`gdjax.plots.save`).
    """
    from matplotlib.figure import Figure

    depth = check_positive_int("depth", depth)
    width = check_positive_int("width", width)
    num_examples = check_positive_int("num_examples", num_examples)
    model_key, x_key = jax.random.split(key)
    x = jax.random.normal(x_key, (num_examples, width))
    fig = Figure(figsize=(3.6 * len(activations), 6.0), layout="constrained")
    axes = fig.subplots(2, len(activations), squeeze=False, sharex=True)
    layers = np.arange(1, depth + 1)
    for col, act in enumerate(activations):
        model = MLP((width,) * (depth + 1), activation=act, output_activation=act)
        for i, scheme in enumerate(schemes):
            params = model.init(model_key, scheme=scheme)
            spread = jacobian_spread(model, params, x)
            for row, name in enumerate(("layers", "products")):
                ax = axes[row, col]
                q = spread[name]
                ax.fill_between(layers, q[:, 0], q[:, 2], color=f"C{i}", alpha=0.2, lw=0)
                ax.plot(layers, spread[f"{name}_rms"], "o-", ms=3, color=f"C{i}", label=scheme)
                ax.plot(layers, q[:, 1], "--", lw=0.8, color=f"C{i}")
        for row, ylabel in enumerate(
            (r"$s(J^l)$, $J^l = \mathrm{diag}(\sigma'(z^l))\,w^l$", r"$s(J^l \cdots J^1)$")
        ):
            ax = axes[row, col]
            ax.set_yscale("log")
            ax.axhline(1.0, color="0.4", lw=0.8, ls=":")
            ax.grid(alpha=0.3, which="both")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7, title=act, title_fontsize=8)
        axes[1, col].set_xlabel("layer l")
    fig.suptitle(
        f"singular values at init (width {width}, depth {depth}, {num_examples} inputs "
        f"x ~ N(0, I)): rms (solid), median and 10–90 % band of the non-zero ones",
        fontsize=9,
    )
    return fig
