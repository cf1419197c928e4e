"""Bad input fails before any compilation, naming the argument, the expected and the received."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, backprop, objective

# Shapes used nowhere else (widths 7 and 13), so no compiled kernel can be reused from
# another test: a check that ran after a JAX op would show up as a compilation.
MODEL = MLP((7, 5, 3), activation="tanh")


def _params():
    rng = np.random.default_rng(0)
    return [
        {"w": rng.normal(size=(5, 7)).astype(np.float32), "b": np.zeros(5, np.float32)},
        {"w": rng.normal(size=(3, 5)).astype(np.float32), "b": np.zeros(3, np.float32)},
    ]


X = np.ones((13, 7), np.float32)
Y_MSE = np.zeros((13, 3), np.float32)
LABELS = np.zeros(13, np.int32)

BAD_CALLS = {
    "x width is not sizes[0]": (
        "mse",
        np.ones((13, 6), np.float32),
        Y_MSE,
        r"x: expected shape \(batch, 7\) with 7 = sizes\[0\], got \(13, 6\)",
    ),
    "x is not a matrix": (
        "mse",
        np.ones(7, np.float32),
        Y_MSE,
        r"x: expected shape \(batch, 7\).*got \(7,\)",
    ),
    "y rows differ from x rows": (
        "mse",
        X,
        np.zeros((12, 3), np.float32),
        r"y: expected 13 examples.*got 12",
    ),
    "mse targets of the wrong width": (
        "mse",
        X,
        np.zeros((13, 2), np.float32),
        r"y: expected shape \(13, 3\).*got \(13, 2\)",
    ),
    "labels out of range": (
        "softmax_cross_entropy",
        X,
        np.array([0] * 12 + [3], np.int32),
        r"y: expected integer labels in \[0, 2\] for 3 output units, got label 3",
    ),
    "negative label": (
        "softmax_cross_entropy",
        X,
        np.array([-1] + [0] * 12, np.int32),
        r"y: expected integer labels in \[0, 2\].*got label -1",
    ),
    "labels of the wrong shape": (
        "softmax_cross_entropy",
        X,
        np.zeros((13, 1), np.int32),
        r"y: expected integer labels of shape \(13,\).*got integer array of shape \(13, 1\)",
    ),
    "probability targets of the wrong width": (
        "softmax_cross_entropy",
        X,
        np.zeros((13, 4), np.float32),
        r"y: expected integer labels of shape \(13,\) or one-hot/probability targets of shape "
        r"\(13, 3\), got float32 array of shape \(13, 4\)",
    ),
    "binary targets outside [0, 1]": (
        "sigmoid_binary_cross_entropy",
        X,
        np.full((13, 3), 2.0, np.float32),
        r"y: expected binary targets in \[0, 1\], got values in \[2.0, 2.0\]",
    ),
    "unknown loss": ("hinge", X, Y_MSE, r"loss: expected one of mse, .* got 'hinge'"),
}


# Checks that read values (label range, target range) need a concrete y; inside jit
# y is a tracer, so only the shape and dtype checks can run there. Callers that jit
# (gdjax.train) validate their data once, eagerly, before the first step.
READS_VALUES = {"labels out of range", "negative label", "binary targets outside [0, 1]"}
CASES = [
    pytest.param(*case, jit, id=f"{name}-{'jit' if jit else 'eager'}")
    for name, case in BAD_CALLS.items()
    for jit in (False, True)
    if not (jit and name in READS_VALUES)
]


@pytest.mark.parametrize(("loss", "x", "y", "message", "jit"), CASES)
def test_backprop_rejects_bad_input_before_compiling(compilations, loss, x, y, message, jit):
    fn = jax.jit(backprop, static_argnums=(0, 1)) if jit else backprop
    with pytest.raises(ValueError, match=message):
        fn(MODEL, loss, _params(), x, y)
    assert compilations.count == 0


@pytest.mark.parametrize(("loss", "x", "y", "message"), BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_objective_rejects_bad_input_like_backprop(compilations, loss, x, y, message):
    with pytest.raises(ValueError, match=message):
        objective(MODEL, loss)(_params(), x, y)
    assert compilations.count == 0


def test_params_of_the_wrong_shape_are_named(compilations):
    params = _params()
    params[1]["w"] = params[1]["w"][:, :4]
    with pytest.raises(
        ValueError, match=r"params\[1\]\['w'\]: expected shape \(3, 5\).*got \(3, 4\)"
    ):
        backprop(MODEL, "mse", params, X, Y_MSE)
    with pytest.raises(
        ValueError, match=r"params: expected a list of 2 layer dicts.*got 1 entries"
    ):
        backprop(MODEL, "mse", params[:1], X, Y_MSE)
    with pytest.raises(
        ValueError, match=r"params\[0\]: expected a dict with keys 'w' and 'b', got"
    ):
        backprop(MODEL, "mse", [{"w": params[0]["w"]}, params[1]], X, Y_MSE)
    assert compilations.count == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(sizes=(3,)), r"sizes: expected at least two entries.*got \(3,\)"),
        (dict(sizes=()), r"sizes: expected at least two entries.*got \(\)"),
        (dict(sizes=(3, 0, 1)), r"sizes: expected positive integer widths, got sizes\[1\] = 0"),
        (dict(sizes=(3, -2, 1)), r"sizes: expected positive.*sizes\[1\] = -2"),
        (dict(sizes=(3, 2.5, 1)), r"sizes: expected positive.*sizes\[1\] = 2.5"),
        (dict(sizes="3,4"), r"sizes: expected a list or tuple of layer widths.*got '3,4'"),
        (
            dict(sizes=(3, 1), activation="swish"),
            r"activation: expected one of sigmoid, tanh, "
            r"relu, leaky_relu, softplus, elu, gelu, identity or an Activation, got 'swish'",
        ),
        (
            dict(sizes=(3, 1), output_activation="softmax"),
            r"activation: expected one of .*"
            r"got 'softmax'",
        ),
    ],
)
def test_model_config_errors(compilations, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLP(**kwargs)
    assert compilations.count == 0


def test_init_errors(key):
    model = MLP((2, 1))
    with pytest.raises(
        ValueError, match=r"scheme: expected one of glorot, he, normal, got 'xavier'"
    ):
        model.init(key, scheme="xavier")
    with pytest.raises(ValueError, match=r"dtype: expected a floating dtype, got int32"):
        model.init(key, dtype=jnp.int32)
