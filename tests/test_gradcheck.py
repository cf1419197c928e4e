"""gdjax.gradcheck on functions with known gradients, and its refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gdjax import MLP, gradcheck, objective


def test_finite_differences_of_a_known_function():
    """f(θ) = Σ sin(w)·b₀ + ½‖b‖²  ⇒  ∂f/∂w = cos(w)·b₀, ∂f/∂b = b + e₀ Σ sin(w)."""
    params = {"w": jnp.linspace(-2.0, 3.0, 7), "b": jnp.array([0.5, -1.5, 2.0])}

    def f(p):
        return jnp.sum(jnp.sin(p["w"])) * p["b"][0] + 0.5 * jnp.sum(p["b"] ** 2)

    fd = gradcheck.finite_difference_grad(f, params)
    expected_b = params["b"].at[0].add(jnp.sum(jnp.sin(params["w"])))
    np.testing.assert_allclose(fd["w"], jnp.cos(params["w"]) * params["b"][0], rtol=1e-8)
    np.testing.assert_allclose(fd["b"], expected_b, rtol=1e-8)


def test_chunking_does_not_change_the_result():
    params = [jnp.arange(10.0) / 7, jnp.ones((3, 2))]

    def f(p, scale):
        return scale * (jnp.sum(p[0] ** 3) + jnp.prod(p[1] + 0.5))

    a = gradcheck.finite_difference_grad(f, params, 2.0, chunk_size=4)
    b = gradcheck.finite_difference_grad(f, params, 2.0, chunk_size=64)
    assert gradcheck.relative_error(a, b) < 1e-14


def test_check_grad_catches_a_wrong_gradient():
    params = {"w": jnp.array([1.0, 2.0, 3.0])}

    def f(p):
        return jnp.sum(p["w"] ** 2)

    good = gradcheck.check_grad(f, params)
    bad = gradcheck.check_grad(f, params, grad_fn=lambda p: {"w": 2.2 * p["w"]})
    assert good.max_relative_error < 1e-9
    assert bad.max_relative_error == pytest.approx(0.2 / 2.2, rel=1e-6)
    assert "['w']" in str(bad) and "(3,)" in str(bad)


def test_float32_params_are_refused_with_a_fix():
    with pytest.raises(
        ValueError, match=r"params: finite differences need float64.*jax_enable_x64"
    ):
        gradcheck.finite_difference_grad(lambda p: jnp.sum(p), jnp.ones(3, jnp.float32))


def test_compare_reports_structure_and_shape_mismatches():
    with pytest.raises(ValueError, match="b: expected a pytree with the structure of a"):
        gradcheck.compare({"w": jnp.ones(2)}, [jnp.ones(2)])
    with pytest.raises(ValueError, match=r"b\['w'\]: expected shape \(2,\) as in a, got \(3,\)"):
        gradcheck.compare({"w": jnp.ones(2)}, {"w": jnp.ones(3)})


def test_relative_error_is_zero_for_two_zero_trees():
    zeros = [jnp.zeros(3), jnp.zeros((2, 2))]
    assert gradcheck.relative_error(zeros, zeros) == 0.0
    assert gradcheck.compare(zeros, zeros).max_relative_error == 0.0
    assert gradcheck.relative_error([jnp.ones(1)], [jnp.zeros(1)]) == 1.0


def test_jax_test_util_agrees_on_an_mlp_objective(key):
    """An independent second opinion: JAX's own check_grads, to second order."""
    model = MLP((3, 4, 2), activation="softplus")
    params = model.init(key, dtype=jnp.float64)
    x = jax.random.normal(key, (5, 3), jnp.float64)
    y = jnp.array([0, 1, 1, 0, 1])
    f = objective(model, "softmax_cross_entropy")
    check_grads(lambda p: f(p, x, y), (params,), order=2, modes=("rev",))
