"""Landscapes of any model: model_loss, and every direction function on a conv net's params.

The conv net is plain JAX with a params dict holding a 3-D kernel ``(out, in, k)``
(PyTorch's layout, ``out_axis=0``) or, in the Flax layout, ``(k, in, out)``
(``out_axis=-1``). References are independent: objective / evaluate for the
loss, numpy for the filter norms, curvature.hvp for the Hessian directions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import conv_apply

from gdjax import MLP, curvature, landscape, losses, objective, train

LOSS = "softmax_cross_entropy"


def flax_conv_apply(params, x):
    """The same net with Flax's layouts: kernel (k, in, out), dense kernel (in, out)."""
    h = jax.lax.conv_general_dilated(
        x[:, :, None],
        params["conv"]["kernel"],
        window_strides=(1,),
        padding="VALID",
        dimension_numbers=("NHC", "HIO", "NHC"),
    )
    h = jnp.tanh(h + params["conv"]["bias"])
    h = jnp.swapaxes(h, 1, 2)  # flatten channel-major, as conv_apply does
    return h.reshape(h.shape[0], -1) @ params["dense"]["kernel"] + params["dense"]["bias"]


def mse_sum(out, y):
    """A user's loss: ½ mean squared error against one-hot targets."""
    return 0.5 * jnp.mean(jnp.sum((out - jax.nn.one_hot(y, 3)) ** 2, axis=-1))


CONV = landscape.model_loss(conv_apply, LOSS)
CONV_CLF = landscape.model_loss(conv_apply, LOSS, accuracy=True)


@pytest.fixture(scope="module")
def conv():
    keys = jax.random.split(jax.random.key(0), 5)
    params = {
        "conv": {
            "w": 0.5 * jax.random.normal(keys[0], (3, 1, 3), jnp.float64),
            "b": 0.1 * jax.random.normal(keys[1], (3,), jnp.float64),
        },
        "dense": {
            "w": 0.3 * jax.random.normal(keys[2], (3, 18), jnp.float64),
            "b": 0.1 * jax.random.normal(keys[3], (3,), jnp.float64),
        },
    }
    x = jax.random.normal(keys[4], (20, 8), jnp.float64)
    return params, x, jnp.arange(20) % 3


def to_flax(params):
    return {
        "conv": {
            "kernel": jnp.transpose(params["conv"]["w"], (2, 1, 0)),
            "bias": params["conv"]["b"],
        },
        "dense": {"kernel": params["dense"]["w"].T, "bias": params["dense"]["b"]},
    }


def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


# ---------------------------------------------------------------- model_loss


def test_model_loss_of_an_mlp_is_mlp_loss():
    model = MLP((2, 4, 1), activation="tanh")
    assert landscape.model_loss(model, "mse") == landscape.mlp_loss(model, "mse")
    f = landscape.model_loss(model, losses.get(LOSS), accuracy=True)
    assert isinstance(f, landscape.MLPLoss) and f == landscape.mlp_loss(model, LOSS, accuracy=True)


def test_model_loss_equals_objective_and_evaluate(conv):
    params, x, y = conv
    assert isinstance(CONV, landscape.ModelLoss)
    np.testing.assert_allclose(CONV(params, x, y), objective(conv_apply, LOSS)(params, x, y))
    got = CONV_CLF(params, x, y)
    want = train.evaluate(conv_apply, LOSS, params, x, y)
    assert set(got) == set(want) == {"loss", "accuracy"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12)


@pytest.mark.parametrize("loss", ["mse", mse_sum], ids=["mse", "a user's function"])
def test_model_loss_without_a_classifier_reports_the_loss_only(conv, loss):
    params, x, y = conv
    targets = jax.nn.one_hot(y, 3) if loss == "mse" else y
    f = landscape.model_loss(conv_apply, loss, accuracy=True)
    got = f(params, x, targets)
    assert set(got) == {"loss"}
    np.testing.assert_allclose(got["loss"], objective(conv_apply, loss)(params, x, targets))
    assert landscape.model_loss(conv_apply, loss) == landscape.model_loss(conv_apply, loss)


def test_model_loss_is_hashable_and_sweeps_reuse_its_compilation(conv, compilations):
    params, x, y = conv
    d = landscape.random_direction(jax.random.key(1), params)
    alphas = np.linspace(-1, 1, 4)
    landscape.sweep_1d(CONV_CLF, params, d, alphas, x, y, vmap_width=2)
    again = landscape.model_loss(conv_apply, LOSS, accuracy=True)
    assert again == CONV_CLF and hash(again) == hash(CONV_CLF)
    before = compilations.count
    landscape.sweep_1d(again, params, d, alphas + 1, x, y, vmap_width=2)
    assert compilations.count == before


def test_a_model_loss_sweep_equals_a_loop_over_points(conv):
    params, x, y = conv
    d1 = landscape.filter_normalized_direction(jax.random.key(2), params)
    d2 = landscape.filter_normalized_direction(jax.random.key(3), params)
    alphas, betas = np.linspace(-1, 1, 4), np.linspace(-0.5, 0.5, 3)
    got = landscape.sweep_2d(CONV_CLF, params, d1, d2, alphas, betas, x, y, vmap_width=2)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            point = jax.tree.map(lambda p, u, v: p + a * u + b * v, params, d1, d2)  # noqa: B023
            want = train.evaluate(conv_apply, LOSS, point, x, y)
            np.testing.assert_allclose(got["loss"][i, j], want["loss"], rtol=1e-12)
            np.testing.assert_allclose(got["accuracy"][i, j], want["accuracy"], atol=1 / len(x))


def test_model_loss_input_errors(conv, tmp_path):
    params, x, y = conv
    with pytest.raises(ValueError, match=r"model: expected a gdjax.MLP or a function, got int"):
        landscape.model_loss(3, LOSS)
    with pytest.raises(ValueError, match=r"loss: expected one of"):
        landscape.model_loss(conv_apply, "hinge")
    with pytest.raises(ValueError, match=r"model: expected a gdjax.MLP, got function.*model_loss"):
        landscape.mlp_loss(conv_apply, LOSS)
    d = landscape.random_direction(jax.random.key(0), params)
    with pytest.raises(ValueError, match=r"ModelLoss is called as f\(params, x, y\).*got 1"):
        landscape.sweep_1d(CONV, params, d, [0.0, 1.0], x)
    with pytest.raises(
        ValueError, match=r"model: apply\(params, x\) failed on x of shape \(20, 5\)"
    ):
        landscape.sweep_1d(CONV, params, d, [0.0, 1.0], x[:, :5] @ jnp.ones((5, 5)), y)
    # two models in one directory: refused by the model's name
    landscape.sweep_1d(CONV, params, d, [0.0, 1.0], x, y, out=tmp_path)
    other = landscape.model_loss(lambda p, x: conv_apply(p, x), LOSS)  # the same net, renamed
    with pytest.raises(ValueError, match=r"differs in: .*\bf\b"):
        landscape.sweep_1d(other, params, d, [0.0, 1.0], x, y, out=tmp_path)


# ---------------------------------------------------------------- directions on a conv net


def test_random_direction_on_a_conv_net(conv):
    params = conv[0]
    d = landscape.random_direction(jax.random.key(1), params)
    assert jax.tree.map(lambda u: (u.shape, u.dtype), d) == jax.tree.map(
        lambda u: (u.shape, u.dtype), params
    )
    np.testing.assert_array_equal(
        flat(d), flat(landscape.random_direction(jax.random.key(1), params))
    )
    assert np.all(flat(d) != 0)


@pytest.mark.parametrize("layout", ["torch", "flax"])
def test_filter_normalisation_of_a_conv_net_gives_every_channel_its_norm(conv, layout):
    params = conv[0] if layout == "torch" else to_flax(conv[0])
    axis = landscape.OUT_AXES[layout]
    d = landscape.filter_normalized_direction(jax.random.key(4), params, out_axis=layout)
    for path, dl in jax.tree_util.tree_leaves_with_path(d):
        pl = params
        for key in path:
            pl = pl[key.key]
        if dl.ndim == 1:
            np.testing.assert_array_equal(dl, 0.0)  # biases: zero by default
            continue
        filters = np.moveaxis(np.asarray(dl), axis, 0).reshape(dl.shape[axis], -1)
        reference = np.moveaxis(np.asarray(pl), axis, 0).reshape(pl.shape[axis], -1)
        np.testing.assert_allclose(
            np.linalg.norm(filters, axis=1), np.linalg.norm(reference, axis=1), rtol=1e-12
        )
    # the same direction in both layouts (same draw, transposed): same filters
    if layout == "flax":
        _, x, y = conv
        flax_loss = landscape.model_loss(flax_conv_apply, LOSS)(params, x, y)
        np.testing.assert_allclose(flax_loss, CONV(conv[0], x, y), rtol=1e-12)  # the same net
        raw = landscape.random_direction(jax.random.key(5), conv[0])
        torch_d = landscape.normalize_direction(raw, conv[0], out_axis="torch")
        flax_d = landscape.normalize_direction(to_flax(raw), params, out_axis="flax")
        np.testing.assert_allclose(flat(to_flax(torch_d)), flat(flax_d), rtol=1e-12)


def test_filter_normalisation_with_bias_on_a_conv_kernel_normalises_channel_and_bias(conv):
    params = conv[0]
    raw = landscape.random_direction(jax.random.key(6), params)
    d = landscape.normalize_direction(raw, params, include_bias=True)
    for layer in ("conv", "dense"):
        w, b = np.asarray(d[layer]["w"]), np.asarray(d[layer]["b"])
        pw, pb = np.asarray(params[layer]["w"]), np.asarray(params[layer]["b"])
        aug = np.concatenate([w.reshape(w.shape[0], -1), b[:, None]], axis=1)
        ref = np.concatenate([pw.reshape(pw.shape[0], -1), pb[:, None]], axis=1)
        np.testing.assert_allclose(np.linalg.norm(aug, axis=1), np.linalg.norm(ref, axis=1))


def test_orthogonalize_and_interpolate_on_a_conv_net(conv):
    params, x, y = conv
    d1 = landscape.filter_normalized_direction(jax.random.key(7), params)
    d2 = jax.tree.map(
        lambda a, b: b + 0.5 * a,
        d1,
        landscape.filter_normalized_direction(jax.random.key(8), params),
    )
    out1, out2, cos = landscape.orthogonalize(d1, d2)
    v1, v2, w = flat(d1), flat(d2), flat(out2)
    np.testing.assert_allclose(cos, v1 @ v2 / np.linalg.norm(v1) / np.linalg.norm(v2), rtol=1e-12)
    assert abs(v1 @ w) < 1e-12 * np.linalg.norm(v1) * np.linalg.norm(w)
    assert jax.tree.structure(out2) == jax.tree.structure(params)

    params_b = jax.tree.map(lambda p, u: p + u, params, out2)
    d = landscape.interpolation_direction(params, params_b)
    np.testing.assert_allclose(flat(d), w, rtol=1e-12)
    values = landscape.sweep_1d(CONV, params, d, [0.0, 0.5, 1.0], x, y, vmap_width=2, data_chunk=7)
    np.testing.assert_allclose(
        values[[0, 2]], [CONV(params, x, y), CONV(params_b, x, y)], rtol=1e-12
    )


def test_pca_directions_of_a_conv_net_trajectory(conv):
    params, x, y = conv
    grad = jax.jit(jax.grad(objective(conv_apply, LOSS)))
    trajectory = [params]
    for _ in range(6):  # plain gradient descent: θ ← θ − η ∇C
        trajectory.append(
            jax.tree.map(lambda p, g: p - 0.5 * g, trajectory[-1], grad(trajectory[-1], x, y))
        )
    res = landscape.pca_directions(trajectory, k=2)
    for u in res.directions:
        assert jax.tree.map(jnp.shape, u) == jax.tree.map(jnp.shape, params)
        np.testing.assert_allclose(np.linalg.norm(flat(u)), 1.0, rtol=1e-12)
    basis = np.stack([flat(u) for u in res.directions])
    rel = np.stack([flat(p) - flat(trajectory[-1]) for p in trajectory])
    np.testing.assert_allclose(res.coords, rel @ basis.T, atol=1e-12)
    assert 0.5 < res.explained_variance_ratio.sum() <= 1.0 + 1e-12


def test_hessian_directions_of_a_conv_net_are_eigenvectors(conv):
    params, x, y = conv
    f = objective(conv_apply, LOSS)
    hd = landscape.hessian_directions(f, params, x, y, k=2, key=jax.random.key(9), tol=1e-10)
    assert hd.converged and hd.eigenvalues[0] >= hd.eigenvalues[1]
    for v, lam in zip(hd.directions, hd.eigenvalues, strict=True):
        assert jax.tree.structure(v) == jax.tree.structure(params)
        hv = flat(curvature.hvp(f, params, v, x, y))
        np.testing.assert_allclose(hv, lam * flat(v), atol=1e-8 * abs(lam))
    chunked = landscape.hessian_directions(
        f, params, x, y, k=2, key=jax.random.key(9), tol=1e-10, data_chunk=7
    )
    np.testing.assert_allclose(chunked.eigenvalues, hd.eigenvalues, rtol=1e-10)
