"""Per-example gradients equal jax.vmap(jax.grad) over single examples; gradient noise is unbiased.

References: ``jax.vmap(jax.grad(f))`` of ``f = objective(model, loss)`` on batches of
one example (autodiff, independent of the hand δ recursion); norms and covariances
of the materialised gradients computed with numpy; for the minibatch error, the
empirical mean of ``‖g_B − G‖²`` over minibatches drawn with numpy and
differentiated by ``jax.grad``, compared within 5 standard errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdjax import MLP, backprop, objective
from gdjax.per_example import (
    gradient_noise,
    minibatch_error,
    minibatch_errors,
    per_example_grad_norms,
    per_example_grads,
)

LOSSES = ("mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "identity")


def _problem(seed, sizes, activation, loss, n, dtype=jnp.float64, output_activation="identity"):
    model = MLP(sizes, activation=activation, output_activation=output_activation)
    rng = np.random.default_rng(seed)
    params = [
        {
            "w": jnp.asarray(rng.normal(size=(o, i)) / np.sqrt(i), dtype),
            "b": jnp.asarray(0.1 * rng.normal(size=o), dtype),
        }
        for i, o in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x = jnp.asarray(rng.normal(size=(n, sizes[0])), dtype)
    k = sizes[-1]
    if loss == "mse":
        y = jnp.asarray(rng.normal(size=(n, k)), dtype)
    elif loss == "sigmoid_binary_cross_entropy":
        y = jnp.asarray(rng.integers(0, 2, size=(n, k)), dtype)
    else:
        y = jnp.asarray(rng.integers(0, k, size=n), jnp.int32)
    return model, params, x, y


def _autodiff_per_example(model, loss, params, x, y):
    f = objective(model, loss)
    return jax.vmap(jax.grad(lambda p, xi, yi: f(p, xi[None], yi[None])), (None, 0, 0))(
        params, x, y
    )


# Jitted with model and loss static: one compilation per case instead of one per eager op.
grads_fn = jax.jit(per_example_grads, static_argnums=(0, 1))
norms_fn = jax.jit(per_example_grad_norms, static_argnums=(0, 1))
backprop_fn = jax.jit(backprop, static_argnums=(0, 1))


def _both(model, loss, params, x, y):
    return per_example_grads(model, loss, params, x, y), _autodiff_per_example(
        model, loss, params, x, y
    )


both_fn = jax.jit(_both, static_argnums=(0, 1))


def _flat(per_example, n):
    return np.concatenate(
        [np.asarray(leaf).reshape(n, -1) for leaf in jax.tree.leaves(per_example)], 1
    )


def _assert_trees_close(a, b, rtol, atol):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


# ------------------------------------------------------------------ per-example gradients


@settings(max_examples=8)
@given(
    hidden=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    n_in=st.integers(1, 3),
    n_out=st.integers(1, 3),
    activation=st.sampled_from(ACTIVATIONS),
    loss=st.sampled_from(LOSSES),
    n=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_per_example_grads_equal_vmap_of_grad(hidden, n_in, n_out, activation, loss, n, seed):
    if loss == "softmax_cross_entropy":
        n_out = max(n_out, 2)
    model, params, x, y = _problem(seed, (n_in, *hidden, n_out), activation, loss, n)
    hand, auto = both_fn(model, loss, params, x, y)
    assert jax.tree.structure(hand) == jax.tree.structure(auto)
    _assert_trees_close(hand, auto, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype, rtol", [(jnp.float64, 1e-12), (jnp.float32, 2e-5)])
@pytest.mark.parametrize("loss", LOSSES)
def test_mean_of_per_example_grads_is_the_batch_gradient(loss, dtype, rtol):
    """C = (1/n) Σ_i C_i, so ∇C = mean_i g_i (not the sum)."""
    model, params, x, y = _problem(1, (3, 6, 4), "tanh", loss, 9, dtype)
    per = grads_fn(model, loss, params, x, y)
    _, batch = backprop_fn(model, loss, params, x, y)
    mean = jax.tree.map(lambda g: g.mean(axis=0), per)
    _assert_trees_close(mean, batch, rtol=rtol, atol=rtol * 1e-2)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(per))


def test_per_example_grads_float32_against_autodiff():
    model, params, x, y = _problem(2, (3, 6, 4), "relu", "softmax_cross_entropy", 9, jnp.float32)
    hand, auto = both_fn(model, "softmax_cross_entropy", params, x, y)
    _assert_trees_close(hand, auto, rtol=2e-5, atol=1e-6)


def test_sigmoid_output_activation_uses_its_derivative():
    model, params, x, y = _problem(3, (2, 3, 2), "tanh", "mse", 4, output_activation="sigmoid")
    hand, auto = both_fn(model, "mse", params, x, y)
    _assert_trees_close(hand, auto, 1e-10, 1e-12)


@pytest.mark.parametrize("dtype, rtol", [(jnp.float64, 1e-12), (jnp.float32, 1e-5)])
def test_norms_without_materialising_equal_norms_of_the_gradients(dtype, rtol):
    model, params, x, y = _problem(4, (3, 5, 4, 2), "sigmoid", "mse", 7, dtype)
    norms = norms_fn(model, "mse", params, x, y)
    per = grads_fn(model, "mse", params, x, y)
    np.testing.assert_allclose(norms.total, np.linalg.norm(_flat(per, 7), axis=1), rtol=rtol)
    for layer, g in enumerate(per):
        np.testing.assert_allclose(
            norms.weight[:, layer], np.linalg.norm(g["w"], axis=(1, 2)), rtol=rtol
        )
        np.testing.assert_allclose(norms.bias[:, layer], np.linalg.norm(g["b"], axis=1), rtol=rtol)


# ------------------------------------------------------------------ gradient noise


def test_gradient_noise_equals_the_covariance_of_the_materialised_gradients():
    model, params, x, y = _problem(5, (3, 5, 3), "tanh", "softmax_cross_entropy", 11)
    noise = gradient_noise(model, "softmax_cross_entropy", params, x, y)
    g = _flat(grads_fn(model, "softmax_cross_entropy", params, x, y), 11)
    G = g.mean(axis=0)
    trace_cov = np.trace(np.cov(g, rowvar=False, ddof=0))  # the 1/N convention
    _, batch = backprop_fn(model, "softmax_cross_entropy", params, x, y)
    _assert_trees_close(noise.grad, batch, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(noise.grad_norm_sq, G @ G, rtol=1e-12)
    np.testing.assert_allclose(noise.trace_cov, trace_cov, rtol=1e-10)
    np.testing.assert_allclose(noise.b_simple, trace_cov / (G @ G), rtol=1e-10)
    assert noise.num_examples == 11
    np.testing.assert_allclose(noise.expected_error(1), trace_cov, rtol=1e-10)  # B = 1: tr Σ
    assert float(noise.expected_error(11)) == 0.0  # B = N: the whole set, no error
    np.testing.assert_allclose(
        noise.expected_error(np.array([2, 5])),
        trace_cov / np.array([2, 5]) * (11 - np.array([2, 5])) / 10,
    )


@pytest.mark.parametrize("batch_size", [3, 12])
def test_predicted_minibatch_error_matches_sampled_minibatches(batch_size):
    """E‖g_B − G‖² = (tr Σ/B)(N−B)/(N−1) against 400 minibatches (fixed seed), within 5 s.e."""
    n, samples = 40, 400
    model, params, x, y = _problem(6, (2, 6, 1), "tanh", "mse", n)
    noise = gradient_noise(model, "mse", params, x, y)
    predicted = float(noise.expected_error(batch_size))

    # reference: jax.grad of the minibatch cost, minibatches drawn by numpy without replacement
    f = objective(model, "mse")
    full = jax.jit(jax.grad(f))(params, x, y)
    rng = np.random.default_rng(0)
    idx = jnp.asarray(np.stack([rng.choice(n, batch_size, replace=False) for _ in range(samples)]))

    @jax.jit
    def error(i):
        g = jax.grad(f)(params, x[i], y[i])
        return sum(jax.tree.leaves(jax.tree.map(lambda a, b: jnp.sum((a - b) ** 2), g, full)))

    errors = np.asarray(jax.vmap(error)(idx))
    stderr = errors.std(ddof=1) / np.sqrt(samples)
    assert abs(errors.mean() - predicted) < 5 * stderr, (errors.mean(), predicted, stderr)
    # with replacement would be tr Σ / B: the correction (N−B)/(N−1) is visible at B = 12
    if batch_size == 12:
        assert abs(errors.mean() - noise.trace_cov / batch_size) > 5 * stderr

    sampled = np.asarray(
        minibatch_errors(
            model, "mse", params, x, y, batch_size, key=jax.random.key(1), num_samples=samples
        )
    )
    assert abs(sampled.mean() - predicted) < 5 * sampled.std(ddof=1) / np.sqrt(samples)


def test_minibatch_errors_at_the_extremes():
    """B = N gives 0; B = 1 gives ‖g_i − G‖² of a single example i (same kernel as above)."""
    n, samples = 40, 400
    model, params, x, y = _problem(6, (2, 6, 1), "tanh", "mse", n)
    key = jax.random.key(2)
    full = np.asarray(minibatch_errors(model, "mse", params, x, y, n, key=key, num_samples=samples))
    assert np.all(np.abs(full) < 1e-28)
    one = np.asarray(minibatch_errors(model, "mse", params, x, y, 1, key=key, num_samples=samples))
    per = _flat(grads_fn(model, "mse", params, x, y), n)
    dist = np.sum((per - per.mean(axis=0)) ** 2, axis=1)
    gap = np.min(np.abs(one[:, None] - dist[None, :]), axis=1)
    assert np.all(gap < 1e-10 * one)


def test_minibatch_error_formula():
    assert minibatch_error(3.0, 1, 1).tolist() == 0.0
    np.testing.assert_allclose(minibatch_error(2.0, 5, [1, 2, 5]), [2.0, 0.75, 0.0])


# ------------------------------------------------------------------ bad input

MODEL = MLP((3, 4, 2), activation="tanh")
PARAMS = [
    {"w": np.ones((4, 3), np.float32), "b": np.zeros(4, np.float32)},
    {"w": np.ones((2, 4), np.float32), "b": np.zeros(2, np.float32)},
]
X = np.ones((6, 3), np.float32)
Y = np.zeros((6, 2), np.float32)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: per_example_grads(MODEL, "mse", PARAMS, np.ones((6, 2)), Y),
            r"x: expected shape \(batch, 3\).*got \(6, 2\)",
        ),
        (
            lambda: per_example_grad_norms(MODEL, "mse", PARAMS, X, Y[:5]),
            r"y: expected 6 examples.*got 5",
        ),
        (lambda: gradient_noise(MODEL, "nope", PARAMS, X, Y), r"loss: expected one of"),
        (lambda: gradient_noise(MODEL, "mse", PARAMS[:1], X, Y), r"params: expected a list of 2"),
        (
            lambda: minibatch_errors(MODEL, "mse", PARAMS, X, Y, 0, key=jax.random.key(0)),
            r"batch_size: expected integers in \[1, 6\].*got 0",
        ),
        (
            lambda: minibatch_errors(MODEL, "mse", PARAMS, X, Y, 7, key=jax.random.key(0)),
            r"batch_size: expected integers in \[1, 6\].*got 7",
        ),
        (
            lambda: minibatch_errors(MODEL, "mse", PARAMS, X, Y, 2.5, key=jax.random.key(0)),
            r"batch_size: .*got 2.5",
        ),
        (
            lambda: minibatch_errors(MODEL, "mse", PARAMS, X, Y, 2, key=0),
            r"key: expected a PRNG key",
        ),
        (
            lambda: minibatch_errors(
                MODEL, "mse", PARAMS, X, Y, 2, key=jax.random.key(0), num_samples=0
            ),
            r"num_samples: expected a positive integer, got 0",
        ),
        (lambda: minibatch_error(1.0, 6, -1), r"batch_size: expected integers in \[1, 6\].*got -1"),
        (lambda: minibatch_error(1.0, 6, [2, 9]), r"batch_size: expected integers in \[1, 6\]"),
        (lambda: minibatch_error(1.0, 6, True), r"batch_size: .*got True"),
    ],
)
def test_bad_input_is_refused_before_compiling(call, match, compilations):
    with pytest.raises(ValueError, match=match):
        call()
    assert compilations.count == 0


def test_expected_error_refuses_batch_sizes_outside_the_data():
    model, params, x, y = _problem(8, (2, 3, 1), "tanh", "mse", 5)
    noise = gradient_noise(model, "mse", params, x, y)
    for bad in (0, 6, -2):
        with pytest.raises(
            ValueError, match=rf"batch_size: expected integers in \[1, 5\].*got {bad}"
        ):
            noise.expected_error(bad)


def test_batch_noise_script_writes_a_plot_and_predictions_that_match(tmp_path, capsys):
    import importlib.util
    import json
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "batch_noise.py"
    spec = importlib.util.spec_from_file_location("batch_noise", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--epochs", "0", "--samples", "50", "--hidden", "8", "--out", str(tmp_path)]
    assert script.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    record = json.loads((tmp_path / "batch_noise.json").read_text())
    z = [v for v in record["z_scores"] if v is not None]
    assert len(z) == len(record["batch_sizes"]) - 1 and max(map(abs, z)) < 5
    assert record["predicted"][-1] == 0.0  # B = N
    png = (tmp_path / "batch_noise.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
