"""Filter normalisation for any weight layout: one filter per output unit or channel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import landscape


def reference(d: np.ndarray, p: np.ndarray, out_axis: int) -> np.ndarray:
    """Filter by filter, in a loop: d_i ← d_i ‖θ_i‖ / ‖d_i‖ along ``out_axis``."""
    d, p = np.moveaxis(d, out_axis, 0).copy(), np.moveaxis(p, out_axis, 0)
    for i in range(d.shape[0]):
        d[i] = d[i] / np.linalg.norm(d[i]) * np.linalg.norm(p[i])
    return np.moveaxis(d, 0, out_axis)


@pytest.mark.parametrize(
    "shape, out_axis",
    [
        ((6, 3, 5), 0),  # a PyTorch / gdjax 1-D conv kernel (out, in, k)
        ((6, 3, 3, 3), 0),  # a 2-D conv kernel (out, in, kh, kw)
        ((5, 3, 6), -1),  # a Flax 1-D conv kernel (k, in, out)
        ((3, 3, 4, 6), "flax"),  # a Flax 2-D conv kernel (kh, kw, in, out)
        ((4, 6), "flax"),  # a Flax Dense kernel (in, out)
    ],
)
def test_conv_kernel_equals_the_filter_by_filter_reference(shape, out_axis):
    p = jax.random.normal(jax.random.key(0), shape, jnp.float64)
    d = jax.random.normal(jax.random.key(1), shape, jnp.float64)
    params = {"conv": {"kernel": p, "bias": jnp.ones(shape[landscape._check_out_axis(out_axis)])}}
    direction = {"conv": {"kernel": d, "bias": jnp.ones_like(params["conv"]["bias"])}}
    got = landscape.normalize_direction(direction, params, out_axis=out_axis)
    axis = landscape._check_out_axis(out_axis)
    np.testing.assert_allclose(
        got["conv"]["kernel"], reference(np.asarray(d), np.asarray(p), axis), rtol=1e-12
    )
    assert not np.any(got["conv"]["bias"])  # 1-D leaves: zero unless include_bias


def test_the_same_weights_in_two_layouts_give_the_same_direction():
    p = jax.random.normal(jax.random.key(2), (6, 3, 5), jnp.float64)  # (out, in, k)
    d = jax.random.normal(jax.random.key(3), (6, 3, 5), jnp.float64)
    torch_style = landscape.normalize_direction([d], [p], out_axis="torch")[0]
    flax_p, flax_d = jnp.transpose(p, (2, 1, 0)), jnp.transpose(d, (2, 1, 0))  # (k, in, out)
    flax_style = landscape.normalize_direction([flax_d], [flax_p], out_axis="flax")[0]
    np.testing.assert_allclose(jnp.transpose(flax_style, (2, 1, 0)), torch_style, rtol=1e-12)
    # and the wrong axis is not the same thing
    wrong = landscape.normalize_direction([flax_d], [flax_p], out_axis=0)[0]
    assert not np.allclose(jnp.transpose(wrong, (2, 1, 0)), torch_style)


def test_filter_normalized_direction_takes_the_layout():
    params = {"kernel": jax.random.normal(jax.random.key(4), (4, 6))}  # Flax Dense (in, out)
    d = landscape.filter_normalized_direction(jax.random.key(5), params, out_axis="flax")
    np.testing.assert_allclose(
        jnp.linalg.norm(d["kernel"], axis=0), jnp.linalg.norm(params["kernel"], axis=0), rtol=1e-5
    )


@pytest.mark.parametrize("bad", ["keras", 1.5, True])
def test_bad_out_axis_is_refused_by_name(bad):
    params = [jnp.ones((2, 3))]
    with pytest.raises(ValueError, match=r"out_axis: expected an integer axis or one of"):
        landscape.normalize_direction(params, params, out_axis=bad)


def test_an_out_axis_a_leaf_does_not_have_is_refused():
    params = [jnp.ones((2, 3))]
    with pytest.raises(ValueError, match=r"out_axis: expected an axis of every weight leaf"):
        landscape.normalize_direction(params, params, out_axis=4)
