"""Every curvature function on any model: a 1-D conv net in plain JAX, params a nested dict.

The references are dense, on a 34-parameter float64 net: ``H = jax.hessian`` of the
cost of the flattened params, ``G = Jᵀ H_out J`` from ``jax.jacobian`` of the output,
``numpy.linalg.eigvalsh``, ``numpy.trace``, ``numpy.linalg.solve``. A layer of a
params pytree is a top-level entry holding arrays, in ``jax.tree_util`` order (sorted
keys for a dict): the params below are built ``{"dense": …, "conv": …}`` and their
layers are conv, then dense. Lanczos against ``eigh`` on a conv net is in
tests/test_generic.py.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import conv_apply
from jax.flatten_util import ravel_pytree

from gdjax import curvature, models
from gdjax.curvature.layers import _layers

LENGTH, CHANNELS, CLASSES, N = 8, 2, 2, 16
LOSS = "softmax_cross_entropy"
KEY = jax.random.key(7)


def _conv_problem():
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.key(0), 5)
    params = {  # not in sorted order: the layers are still conv, then dense
        "dense": {
            "w": 0.4 * jax.random.normal(k2, (CLASSES, CHANNELS * (LENGTH - 2)), jnp.float64),
            "b": 0.1 * jax.random.normal(k5, (CLASSES,), jnp.float64),
        },
        "conv": {
            "w": 0.6 * jax.random.normal(k1, (CHANNELS, 1, 3), jnp.float64),
            "b": 0.1 * jax.random.normal(k4, (CHANNELS,), jnp.float64),
        },
    }
    x = np.asarray(jax.random.normal(k3, (N, LENGTH), jnp.float64))
    y = np.asarray(jax.random.randint(k3, (N,), 0, CLASSES))
    return params, x, y


PARAMS, X, Y = _conv_problem()
F = models.objective(conv_apply, LOSS)
SIZES = {"conv": CHANNELS * 3 + CHANNELS, "dense": CLASSES * CHANNELS * (LENGTH - 2) + CLASSES}


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def random_like(seed, params):
    _, unravel = ravel_pytree(params)
    rng = np.random.default_rng(seed)
    return unravel(jnp.asarray(rng.normal(size=flat(params).size)))


@pytest.fixture(scope="module")
def dense():
    """H, its eigenvalues, ∇C and the diagonal blocks H_ll (ravel_pytree: conv, then dense)."""
    flat0, unravel = ravel_pytree(PARAMS)
    h = np.asarray(jax.jit(jax.hessian(lambda u: F(unravel(u), X, Y)))(flat0))
    n_conv = SIZES["conv"]
    return {
        "h": h,
        "eigenvalues": np.linalg.eigvalsh(h),
        "grad": flat(jax.grad(F)(PARAMS, X, Y)),
        "blocks": {"conv": h[:n_conv, :n_conv], "dense": h[n_conv:, n_conv:]},
    }


def test_the_layers_of_a_dict_are_its_entries_in_sorted_key_order():
    split = _layers(PARAMS)
    assert split.keys == ["conv", "dense"]
    assert [flat(e).size for e in split.entries] == [SIZES["conv"], SIZES["dense"]]
    assert flat(PARAMS).size == sum(SIZES.values()) == 34


def test_hvp_equals_dense_hessian_times_v(dense):
    v = random_like(1, PARAMS)
    hv = curvature.hvp(F, PARAMS, v, X, Y)
    assert jax.tree.structure(hv) == jax.tree.structure(PARAMS)
    np.testing.assert_allclose(flat(hv), dense["h"] @ flat(v), rtol=1e-10, atol=1e-13)
    operator = curvature.hvp_operator(F, PARAMS, X, Y)
    np.testing.assert_allclose(flat(operator(v)), flat(hv), rtol=1e-12, atol=1e-14)


def _dense_ggn(loss, y):
    flat0, unravel = ravel_pytree(PARAMS)
    out = conv_apply(PARAMS, X)
    jac = np.asarray(jax.jacobian(lambda u: conv_apply(unravel(u), X).ravel())(flat0))
    h_out = np.asarray(jax.hessian(lambda a: loss(a.reshape(out.shape), y))(out.ravel()))
    return jac.T @ h_out @ jac


def _half_mse(out, t):
    return 0.5 * jnp.mean(jnp.sum((out - t) ** 2, axis=-1))


@pytest.mark.parametrize(
    ("loss", "targets"),
    [
        (LOSS, lambda: Y),
        (_half_mse, lambda: np.asarray(jax.nn.one_hot(Y, CLASSES), np.float64)),
    ],
    ids=["softmax_cross_entropy by name", "a loss given as a function"],
)
def test_gnvp_of_a_function_model_equals_dense_ggn(loss, targets):
    y = targets()
    v = random_like(2, PARAMS)
    gv = curvature.gnvp(conv_apply, loss, PARAMS, v, X, y)
    want = _dense_ggn(models.as_loss(loss).fn, y) @ flat(v)
    np.testing.assert_allclose(flat(gv), want, rtol=1e-10, atol=1e-13)


def test_trace_samples_are_v_h_v_of_its_rademacher_vectors(dense):
    est = curvature.trace(F, PARAMS, X, Y, key=KEY, samples=64)
    n = flat(PARAMS).size
    vs = [
        np.asarray(jax.random.rademacher(k, (n,), jnp.float64)) for k in jax.random.split(KEY, 64)
    ]
    np.testing.assert_allclose(est.samples, [v @ dense["h"] @ v for v in vs], rtol=1e-10)
    assert abs(est.estimate - np.trace(dense["h"])) <= 4 * est.stderr


def test_spectral_density_with_n_steps_has_the_eigenvalues_as_nodes(dense):
    n = flat(PARAMS).size
    sd = curvature.spectral_density(F, PARAMS, X, Y, key=KEY, runs=2, lanczos_steps=n)
    scale = np.max(np.abs(dense["eigenvalues"]))
    for nodes, weights in zip(sd.nodes, sd.weights, strict=True):
        np.testing.assert_allclose(np.sort(nodes), dense["eigenvalues"], atol=1e-8 * scale)
        assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert sd.mass() == pytest.approx(1.0, abs=1e-12)


def test_layer_curvature_of_a_dict_equals_its_dense_blocks(dense):
    lc = curvature.layer_curvature(F, PARAMS, X, Y, key=KEY, tol=1e-10, trace_method="exact")
    assert lc.layers == ["conv", "dense"]
    assert lc.num_params.tolist() == [SIZES["conv"], SIZES["dense"]]
    blocks = [dense["blocks"][name] for name in lc.layers]
    assert lc.converged.all()
    np.testing.assert_allclose(lc.lambda_max, [np.linalg.eigvalsh(b)[-1] for b in blocks], 1e-8)
    np.testing.assert_allclose(lc.trace, [np.trace(b) for b in blocks], rtol=1e-10)
    assert lc.trace.sum() == pytest.approx(np.trace(dense["h"]), rel=1e-10)


@pytest.mark.parametrize("layer", [None, "dense", 1, "conv"])
def test_taylor_step_of_a_dict_equals_dense_quantities(dense, layer):
    etas = np.array([0.01, 0.1, 1.0])
    res = curvature.taylor_step(F, PARAMS, X, Y, etas=etas, layer=layer)
    name = {None: None, 1: "dense"}.get(layer, layer)
    d = flat(res.direction)
    # The default direction −∇C, zeroed outside the layer (ravel order: conv, then dense).
    n_conv = SIZES["conv"]
    keep = {None: slice(None), "conv": slice(0, n_conv), "dense": slice(n_conv, None)}[name]
    want_d = np.zeros_like(d)
    want_d[keep] = -dense["grad"][keep]
    np.testing.assert_allclose(d, want_d, rtol=1e-12, atol=0)
    assert res.slope == pytest.approx(dense["grad"] @ d, rel=1e-12)
    assert res.curvature == pytest.approx(d @ dense["h"] @ d, rel=1e-10)
    _, unravel = ravel_pytree(PARAMS)
    c0 = float(F(PARAMS, X, Y))
    actual = [float(F(unravel(flat(PARAMS) + eta * d), X, Y)) - c0 for eta in etas]
    np.testing.assert_allclose(res.actual, actual, rtol=1e-9)
    block = dense["h"] if name is None else dense["blocks"][name]
    assert res.lambda_max == pytest.approx(np.linalg.eigvalsh(block)[-1], rel=1e-6)


@pytest.mark.parametrize("method", ["dense", "cg"])
def test_newton_step_of_a_dict_solves_the_damped_system(dense, method):
    damping = max(0.0, -dense["eigenvalues"][0]) + 0.5  # H + λI positive definite
    res = curvature.newton_step(F, PARAMS, X, Y, damping=damping, method=method)
    a = dense["h"] + damping * np.eye(dense["h"].shape[0])
    want = flat(PARAMS) + np.linalg.solve(a, -dense["grad"])
    assert res.converged and not res.negative_curvature
    assert jax.tree.structure(res.params) == jax.tree.structure(PARAMS)
    np.testing.assert_allclose(flat(res.params), want, rtol=1e-9, atol=1e-12)


def test_track_sharpness_of_a_function_model(dense):
    tracker = curvature.track_sharpness(conv_apply, LOSS, X, Y, key=KEY, tol=1e-10)
    assert isinstance(tracker, curvature.SharpnessTracker)
    sharpness = tracker(0, PARAMS)
    assert sharpness == pytest.approx(dense["eigenvalues"][-1], rel=1e-8)
    assert tracker.epochs.tolist() == [0] and tracker.converged.tolist() == [True]
    assert jax.tree.structure(tracker.eigenvector) == jax.tree.structure(PARAMS)
    tracker(3, PARAMS)  # warm-started from the last eigenvector: the same λ_max
    assert tracker.sharpness[1] == pytest.approx(sharpness, rel=1e-8)


class _TwoLinear(eqx.Module):
    l1: eqx.nn.Linear
    l2: eqx.nn.Linear
    act: object  # a function: eqx.partition leaves None in its place, not a layer

    def __call__(self, x):
        return jax.vmap(lambda r: self.l2(self.act(self.l1(r))))(x)


def test_layers_of_split_modules_are_their_fields():
    keys = jax.random.split(jax.random.key(0), 2)
    module = _TwoLinear(
        eqx.nn.Linear(3, 4, key=keys[0]), eqx.nn.Linear(4, 2, key=keys[1]), jnp.tanh
    )
    module = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_array(a) else a, module)
    params, static = eqx.partition(module, eqx.is_inexact_array)
    x = np.asarray(jax.random.normal(keys[0], (5, 3), jnp.float64))
    y = np.asarray([0, 1, 1, 0, 1])

    def apply(p, x):
        return eqx.combine(p, static)(x)

    f = models.objective(apply, LOSS)
    lc = curvature.layer_curvature(f, params, x, y, key=KEY, tol=1e-10, trace_method="exact")
    assert lc.layers == ["l1", "l2"]  # act holds no array: not a layer
    flat0, unravel = ravel_pytree(params)
    h = np.asarray(jax.hessian(lambda u: f(unravel(u), x, y))(flat0))
    n1 = 3 * 4 + 4
    blocks = [h[:n1, :n1], h[n1:, n1:]]
    np.testing.assert_allclose(lc.lambda_max, [np.linalg.eigvalsh(b)[-1] for b in blocks], 1e-8)
    np.testing.assert_allclose(lc.trace, [np.trace(b) for b in blocks], rtol=1e-10)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.first = nnx.Linear(3, 4, rngs=rngs)
            self.second = nnx.Linear(4, 2, rngs=rngs)

    _, state = nnx.split(Net(nnx.Rngs(0)))
    assert _layers(state).keys == ["first", "second"]


# Each case: a call on the conv net that must be refused before anything compiles.
BAD_CALLS = {
    "layer_curvature of one array": (
        lambda: curvature.layer_curvature(F, PARAMS["conv"]["w"], X, Y, key=KEY),
        r"params: expected a pytree with top-level entries to split into layers.*got a single",
    ),
    "taylor_step of a layer key that is not there": (
        lambda: curvature.taylor_step(F, PARAMS, X, Y, etas=[0.1], layer="pool"),
        r"layer: expected an index in \[0, 1\].*keys are \['conv', 'dense'\].*got 'pool'",
    ),
    "taylor_step of a layer index out of range": (
        lambda: curvature.taylor_step(F, PARAMS, X, Y, etas=[0.1], layer=2),
        r"layer: expected an index in \[0, 1\].*got 2",
    ),
    "taylor_step of a layer of one array": (
        lambda: curvature.taylor_step(F, PARAMS["conv"]["w"], X, Y, etas=[0.1], layer=0),
        r"layer: expected a pytree with top-level entries",
    ),
    "params with a function leaf": (
        lambda: curvature.hvp(F, {**PARAMS, "act": jnp.tanh}, PARAMS, X, Y),
        r"params\['act'\]: expected a floating array, got object.*eqx.partition",
    ),
    "params with an integer leaf": (
        lambda: curvature.top_eigenvalues(F, {**PARAMS, "step": np.array(3)}, 1, X, Y, key=KEY),
        r"params\['step'\]: expected a floating array, got int64.*keep the rest",
    ),
    "gnvp with a v of another structure": (
        lambda: curvature.gnvp(conv_apply, LOSS, PARAMS, PARAMS["conv"], X, Y),
        r"v: expected a pytree with the structure of params",
    ),
    "gnvp of a model that returns one row for the batch": (
        lambda: curvature.gnvp(
            lambda p, x: jnp.sum(conv_apply(p, x), 0, keepdims=True), LOSS, PARAMS, PARAMS, X, Y
        ),
        r"model: expected apply\(params, x\) to return one row per example",
    ),
    "gnvp with labels out of range": (
        lambda: curvature.gnvp(conv_apply, LOSS, PARAMS, PARAMS, X, Y + CLASSES),
        r"y: expected",
    ),
    "track_sharpness of no examples": (
        lambda: curvature.track_sharpness(conv_apply, LOSS, X[:0], Y[:0], key=KEY),
        r"x: expected at least one example",
    ),
    "track_sharpness with fewer labels than inputs": (
        lambda: curvature.track_sharpness(conv_apply, LOSS, X, Y[:-1], key=KEY),
        r"y: expected 16 examples",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_on_any_model_is_refused_by_name(case, compilations):
    call, message = BAD_CALLS[case]
    with pytest.raises(ValueError, match=message):
        call()
    assert compilations.count == 0
