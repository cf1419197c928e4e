"""The seed tutorial's worked examples, number for number.

The expected values below are the tutorial's own (seeds/001: "Running the
Numbers: A Real Example"), not outputs of this code.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, backprop, objective, scalar

EXACT = dict(rtol=1e-15, atol=1e-15)


def test_chain_forward_error_and_gradients():
    ex = scalar.SEED_CHAIN
    z, L = scalar.chain_forward(ex.w1, ex.w2, x=ex.x, b1=ex.b1, b2=ex.b2)
    np.testing.assert_allclose([z, L], [2.0, 3.5], **EXACT)
    np.testing.assert_allclose(scalar.chain_error(L, ex.target), 1.125, **EXACT)
    dw1, dw2 = scalar.chain_grads(ex.w1, ex.w2, x=ex.x, b1=ex.b1, b2=ex.b2)
    np.testing.assert_allclose([dw1, dw2], [3.0, 2.0], **EXACT)


def test_chain_gradients_equal_autodiff():
    ex = scalar.SEED_CHAIN
    w = jnp.array([ex.w1, ex.w2], jnp.float64)
    auto = jax.grad(lambda w: scalar.chain_forward(w[0], w[1])[1])(w)
    np.testing.assert_allclose(auto, scalar.chain_grads(ex.w1, ex.w2), **EXACT)


@pytest.mark.parametrize(
    ("alpha", "w1", "w2", "z", "L"),
    [(0.2, 1.1, 1.9, 3.2, 6.58), (0.1, 0.8, 1.7, 2.6, 4.92)],
    ids=["alpha=0.2 overshoots", "alpha=0.1 lands near 5"],
)
def test_chain_updates_reproduce_the_tutorial(alpha, w1, w2, z, L):
    ex = scalar.SEED_CHAIN
    new_w1, new_w2 = scalar.chain_step(ex.w1, ex.w2, alpha)
    np.testing.assert_allclose([new_w1, new_w2], [w1, w2], **EXACT)
    new_z, new_L = scalar.chain_forward(new_w1, new_w2)
    np.testing.assert_allclose([new_z, new_L], [z, L], **EXACT)


def test_chain_in_float32_to_float_rounding():
    w1, w2 = scalar.chain_step(jnp.float32(0.5), jnp.float32(1.5), jnp.float32(0.2))
    z, L = scalar.chain_forward(w1, w2)
    assert z.dtype == jnp.float32
    np.testing.assert_allclose([w1, w2, z, L], [1.1, 1.9, 3.2, 6.58], rtol=2e-7)


SIGMOID_NETS = [
    (scalar.SigmoidNet(w1=0.5, b1=0.1, w2=-1.2, b2=0.3), 1.5, 0.8),
    (scalar.SigmoidNet(w1=-2.0, b1=1.0, w2=3.0, b2=-0.5), -0.7, 0.1),
    (scalar.SigmoidNet(w1=4.0, b1=-3.0, w2=0.25, b2=2.0), 2.0, 1.0),
]


@pytest.mark.parametrize(("p", "x", "y"), SIGMOID_NETS)
def test_sigmoid_net_delta_rule_equals_autodiff(p, x, y):
    p = scalar.SigmoidNet(*(jnp.float64(v) for v in p))
    cost, grads, (delta1, delta2) = scalar.sigmoid_net_backprop(p, x, y)
    auto = jax.grad(scalar.sigmoid_net_cost)(p, x, y)
    np.testing.assert_allclose(cost, scalar.sigmoid_net_cost(p, x, y), rtol=1e-15)
    np.testing.assert_allclose(np.array(grads), np.array(auto), rtol=1e-13, atol=1e-16)
    # δ2 = ∂C/∂z2 and δ1 = ∂C/∂z1, as the tutorial defines them
    fwd = scalar.sigmoid_net_forward(p, x)
    np.testing.assert_allclose(delta2, -(y - fwd.a2) * fwd.a2 * (1 - fwd.a2), rtol=1e-13)
    np.testing.assert_allclose(delta1, delta2 * p.w2 * fwd.a1 * (1 - fwd.a1), rtol=1e-13)


@pytest.mark.parametrize(("p", "x", "y"), SIGMOID_NETS)
def test_sigmoid_net_is_the_mlp_1_1_1(p, x, y):
    model = MLP(sizes=(1, 1, 1), activation="sigmoid", output_activation="sigmoid")
    params = scalar.sigmoid_net_to_mlp_params(p, jnp.float64)
    xs, ys = jnp.full((1, 1), x, jnp.float64), jnp.full((1, 1), y, jnp.float64)
    cost, grads, _ = scalar.sigmoid_net_backprop(p, x, y)
    value, mlp_grads = backprop(model, "mse", params, xs, ys)
    auto_value, auto_grads = jax.value_and_grad(objective(model, "mse"))(params, xs, ys)
    np.testing.assert_allclose([value, auto_value], [cost, cost], rtol=1e-14)
    np.testing.assert_allclose(mlp_grads[0]["w"][0, 0], grads.w1, rtol=1e-14)
    np.testing.assert_allclose(mlp_grads[0]["b"][0], grads.b1, rtol=1e-14)
    np.testing.assert_allclose(mlp_grads[1]["w"][0, 0], grads.w2, rtol=1e-14)
    np.testing.assert_allclose(mlp_grads[1]["b"][0], grads.b2, rtol=1e-14)
    np.testing.assert_allclose(
        [auto_grads[0]["w"][0, 0], auto_grads[1]["w"][0, 0]], [grads.w1, grads.w2], rtol=1e-13
    )


def test_sigmoid_net_step_decreases_the_cost():
    p, x, y = SIGMOID_NETS[0]
    p = scalar.SigmoidNet(*(jnp.float64(v) for v in p))
    before = scalar.sigmoid_net_cost(p, x, y)
    after = scalar.sigmoid_net_cost(scalar.sigmoid_net_step(p, x, y, eta=0.5), x, y)
    assert after < before
