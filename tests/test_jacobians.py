"""Layer Jacobians J^l = diag(σ'(z^l)) w^l against jax.jacfwd; their product is ∂a^L/∂a^0.

References: ``jax.jacfwd`` of one layer ``a ↦ σ(w a + b)`` and of the whole network
``x ↦ model.apply(params, x)`` for each example (forward-mode autodiff, independent
of the hand-written σ'); ``numpy.linalg.svd`` for the singular values.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, plots
from gdjax.jacobians import (
    input_output_jacobian,
    jacobian_products,
    jacobian_singular_values,
    jacobian_spectra_figure,
    jacobian_spread,
    layer_jacobians,
)

SIZES = (3, 5, 4, 2)


def _problem(activation, output_activation="identity", dtype=jnp.float64, seed=0):
    model = MLP(SIZES, activation=activation, output_activation=output_activation)
    rng = np.random.default_rng(seed)
    params = [
        {
            "w": jnp.asarray(0.8 * rng.normal(size=(o, i)), dtype),
            "b": jnp.asarray(rng.normal(size=o), dtype),
        }
        for i, o in zip(SIZES[:-1], SIZES[1:], strict=True)
    ]
    x = jnp.asarray(rng.normal(size=(6, SIZES[0])), dtype)
    return model, params, x


def _jacfwd_layers(model, params, x):
    """∂a^l/∂a^{l-1} per example by jax.jacfwd, and ∂a^L/∂a^0."""
    _, acts = model.trace(params, x)
    layers = []
    for layer, p in enumerate(params):
        sigma = model.activation_of(layer).fn

        def f(a, p=p, sigma=sigma):
            return sigma(p["w"] @ a + p["b"])

        layers.append(jax.vmap(jax.jacfwd(f))(acts[layer]))
    end = jax.vmap(jax.jacfwd(lambda xi: model.apply(params, xi[None])[0]))(x)
    return layers, end


@functools.partial(jax.jit, static_argnums=0)
def _all(model, params, x):
    return (
        jacobian_products(model, params, x),
        layer_jacobians(model, params, x),
        input_output_jacobian(model, params, x),
        _jacfwd_layers(model, params, x),
    )


@pytest.mark.parametrize(
    "activation, output_activation",
    [("sigmoid", "identity"), ("tanh", "sigmoid"), ("relu", "tanh"), ("gelu", "softplus")],
)
def test_layer_jacobians_and_their_product_equal_jacfwd(activation, output_activation):
    model, params, x = _problem(activation, output_activation)
    products, layers, end, (ref_layers, ref_end) = _all(model, params, x)
    for j, r in zip(layers, ref_layers, strict=True):
        np.testing.assert_allclose(j, r, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(products[-1], ref_end, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(end, ref_end, rtol=1e-12, atol=1e-14)
    assert [j.shape for j in layers] == [(6, 5, 3), (6, 4, 5), (6, 2, 4)]
    assert [p.shape for p in products] == [(6, 5, 3), (6, 4, 3), (6, 2, 3)]


def test_float32_jacobian_matches_jacfwd():
    model, params, x = _problem("tanh", dtype=jnp.float32)
    *_, end, (_, ref_end) = _all(model, params, x)
    assert end.dtype == jnp.float32
    np.testing.assert_allclose(end, ref_end, rtol=1e-5, atol=1e-6)


def test_singular_values_equal_numpy():
    model, params, x = _problem("tanh")
    spectra = jax.jit(jacobian_singular_values, static_argnums=0)(model, params, x)
    products, layers, *_ = _all(model, params, x)
    for s, j in zip(spectra.layers + spectra.products, layers + products, strict=True):
        np.testing.assert_allclose(s, np.linalg.svd(np.asarray(j), compute_uv=False), rtol=1e-10)
    np.testing.assert_array_equal(spectra.end_to_end, spectra.products[-1])


def test_sigmoid_gradients_vanish_and_he_relu_keeps_the_scale(key):
    """rms singular value of J^l ⋯ J^1: ≤ 1/4 per sigmoid layer; about 1 for He-init relu."""
    depth, width = 4, 16
    x = jax.random.normal(key, (8, width))
    sigmoid = MLP((width,) * (depth + 1), activation="sigmoid", output_activation="sigmoid")
    spread = jacobian_spread(sigmoid, jax.jit(sigmoid.init)(key), x)
    rms = spread["products_rms"]
    assert np.all(rms[1:] / rms[:-1] < 0.3)  # σ' ≤ 1/4 and ‖w‖ about 1: geometric decay
    assert rms[-1] < 1e-2
    relu = MLP((width,) * (depth + 1), activation="relu", output_activation="relu")
    he_init = jax.jit(functools.partial(relu.init, scheme="he"))
    spread = jacobian_spread(relu, he_init(key), x)
    assert 0.3 < spread["products_rms"][-1] < 3.0
    assert np.all(spread["layers_rank"] < 0.8)  # dead units zero rows of J^l
    q = spread["products"]
    assert np.all((q[:, 0] <= q[:, 1]) & (q[:, 1] <= q[:, 2]))


def test_jacobian_spectra_figure_renders(tmp_path, key):
    fig = jacobian_spectra_figure(
        key, depth=2, width=4, num_examples=2, activations=("tanh",), schemes=("he",)
    )
    path = plots.save(fig, tmp_path / "spectra.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda m, p: layer_jacobians(m, p, np.ones((4, 2))),
            r"x: expected shape \(batch, 3\).*got \(4, 2\)",
        ),
        (
            lambda m, p: input_output_jacobian(m, p[:2], np.ones((4, 3))),
            r"params: expected a list of 3",
        ),
        (
            lambda m, p: jacobian_singular_values("mlp", p, np.ones((4, 3))),
            r"model: expected a gdjax.MLP",
        ),
        (
            lambda m, p: jacobian_spectra_figure(jax.random.key(0), depth=0),
            r"depth: expected a positive integer, got 0",
        ),
    ],
)
def test_bad_input_is_refused_before_compiling(call, match, compilations):
    model = MLP(SIZES, activation="tanh")
    params = [
        {"w": np.ones((o, i), np.float32), "b": np.zeros(o, np.float32)}
        for i, o in zip(SIZES[:-1], SIZES[1:], strict=True)
    ]
    with pytest.raises(ValueError, match=match):
        call(model, params)
    assert compilations.count == 0
