"""The MLP's forward pass, init schemes, static-ness under jit, and its input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, activations


def test_forward_pass_is_the_chain_of_functions(key):
    """a^l = σ(w^l a^{l-1} + b^l), computed one example at a time with NumPy."""
    model = MLP(sizes=[3, 5, 4, 2], activation="tanh", output_activation="sigmoid")
    params = model.init(key, dtype=jnp.float64)
    x = np.random.default_rng(0).normal(size=(6, 3))
    zs, acts = model.trace(params, jnp.asarray(x))
    for i in range(6):
        a = x[i]
        for layer, p in enumerate(params):
            z = np.asarray(p["w"]) @ a + np.asarray(p["b"])
            a = np.tanh(z) if layer < 2 else 1 / (1 + np.exp(-z))
            np.testing.assert_allclose(zs[layer][i], z, rtol=1e-13)
            np.testing.assert_allclose(acts[layer + 1][i], a, rtol=1e-13)
    np.testing.assert_array_equal(acts[0], x)
    np.testing.assert_array_equal(model.apply(params, jnp.asarray(x)), acts[-1])


def test_shapes_follow_the_seed_layout(key):
    model = MLP(sizes=(3, 16, 16, 2), activation="tanh", output_activation="identity")
    params = model.init(key)
    assert [(p["w"].shape, p["b"].shape) for p in params] == [
        ((16, 3), (16,)),
        ((16, 16), (16,)),
        ((2, 16), (2,)),
    ]
    zs, acts = model.trace(params, jnp.ones((7, 3)))
    assert [z.shape for z in zs] == [(7, 16), (7, 16), (7, 2)]
    assert [a.shape for a in acts] == [(7, 3), (7, 16), (7, 16), (7, 2)]


def test_model_is_hashable_static_config(compilations, key):
    a = MLP([2, 4, 1], "relu")
    b = MLP((2, 4, 1), activations.relu)
    assert a == b and hash(a) == hash(b) and a.sizes == (2, 4, 1)
    assert a != MLP((2, 4, 1), "tanh")
    params = a.init(key)
    x, x2 = jnp.ones((3, 2)), jnp.zeros((3, 2))
    apply = jax.jit(lambda model, p, x: model.apply(p, x), static_argnums=0)
    apply(a, params, x)
    count = compilations.count
    apply(b, params, x2)
    assert compilations.count == count


@pytest.mark.parametrize(
    ("scheme", "expected_std"),
    [("glorot", np.sqrt(2.0 / (400 + 300))), ("he", np.sqrt(2.0 / 400)), ("normal", 0.5)],
)
def test_init_schemes_have_their_documented_scale(key, scheme, expected_std):
    model = MLP((400, 300, 1))
    scale = 0.5 if scheme == "normal" else 1.0
    w = np.asarray(model.init(key, scheme=scheme, scale=scale)[0]["w"])
    np.testing.assert_allclose(w.std(), expected_std, rtol=0.02)
    assert abs(w.mean()) < 0.01 * expected_std * 10
    if scheme == "glorot":
        assert np.abs(w).max() <= np.sqrt(6.0 / 700)


def test_init_is_reproducible_and_keyed(key):
    model = MLP((3, 8, 2))
    p1, p2 = model.init(key), model.init(key)
    p3 = model.init(jax.random.key(1))
    assert all(np.array_equal(a["w"], b["w"]) for a, b in zip(p1, p2, strict=True))
    assert not np.array_equal(p1[0]["w"], p3[0]["w"])


@pytest.mark.parametrize(("x64", "expected"), [(False, jnp.float32), (True, jnp.float64)])
def test_init_dtype_follows_jax_default_float_dtype(key, x64, expected):
    """Like ``jnp.zeros`` and ``jax.random.normal``: float64 only under ``jax_enable_x64``."""
    model = MLP((3, 4, 2))
    with jax.enable_x64(x64):
        assert jnp.zeros(()).dtype == expected
        for scheme in ("glorot", "he", "normal"):
            params = model.init(key, scheme=scheme)
            assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(expected)}
        # an explicit dtype still wins
        params = model.init(key, dtype=jnp.bfloat16)
        assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}


def test_input_is_cast_to_the_params_dtype(key):
    model = MLP((2, 3, 1))
    params = model.init(key, dtype=jnp.float32)
    assert model.apply(params, jnp.ones((4, 2), jnp.float64)).dtype == jnp.float32
    assert model.apply(params, np.array([[0, 1], [1, 0]])).dtype == jnp.float32
