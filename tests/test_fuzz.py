"""Fuzzed bad input: every public function ends in a ValueError or TypeError naming the argument.

Hypothesis draws one bad ingredient at a time — a wrong shape or rank, an
integer, complex or bool dtype where floats are needed, NaN/±Inf, an empty
batch, a mismatched params pytree (missing layer, swapped w/b, wrong leaf
shape, a tuple for a dict), a label out of range, a nonsense config value —
and puts it into an otherwise valid call. The call must raise ``ValueError``
or ``TypeError`` whose message starts with the name of the argument that was
spoiled: never a raw XLA or tracer error, never a silent NaN.

Profiles (tests/conftest.py): ``ci`` (default, 20 derandomised examples per
test) and ``thorough`` (300): ``HYPOTHESIS_PROFILE=thorough pytest tests/test_fuzz.py``.
:data:`EXAMPLES` counts the examples that ran (printed at the end with ``-s``).
docs/errors.md lists what is validated where.
"""

import collections
import re

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdjax import (
    MLP,
    backprop,
    backprop_with_deltas,
    curvature,
    gradcheck,
    landscape,
    losses,
    objective,
    train,
)

MODEL = MLP((3, 4, 2), activation="tanh")
N = 5
EXAMPLES: collections.Counter = collections.Counter()


def good_params(dtype=np.float32):
    rng = np.random.default_rng(0)
    return [
        {"w": rng.normal(size=(4, 3)).astype(dtype), "b": np.zeros(4, dtype)},
        {"w": rng.normal(size=(2, 4)).astype(dtype), "b": np.zeros(2, dtype)},
    ]


X = np.random.default_rng(1).normal(size=(N, 3)).astype(np.float32)
Y_MSE = np.zeros((N, 2), np.float32)
LABELS = np.array([0, 1, 1, 0, 1])
TARGETS = {"mse": Y_MSE, "softmax_cross_entropy": LABELS, "sigmoid_binary_cross_entropy": Y_MSE}


def expect_named_error(names, fn):
    """``fn()`` raises ValueError/TypeError whose message starts with one of ``names``."""
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    message = str(info.value)
    assert re.match(rf"({'|'.join(map(re.escape, names))})(?!\w)", message), message


# ---------------------------------------------------------------- strategies

bad_shapes = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)
bad_x_shape = bad_shapes.filter(lambda s: not (len(s) == 2 and s[1] == 3 and s[0] > 0))
non_real = st.sampled_from([np.complex64, np.complex128, np.bool_])
non_float = st.sampled_from([np.int32, np.int64, np.complex64, np.bool_])
non_finite = st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def spoiled_x(draw):
    """(what was spoiled, x): a wrong shape, a non-real dtype, a NaN/Inf entry or no rows."""
    kind = draw(st.sampled_from(["shape", "dtype", "value", "empty"]))
    if kind == "shape":
        return np.ones(draw(bad_x_shape), np.float32)
    if kind == "dtype":
        return X.astype(draw(non_real))
    if kind == "empty":
        return X[:0]
    x = X.copy()
    x[draw(st.integers(0, N - 1)), draw(st.integers(0, 2))] = draw(non_finite)
    return x


@st.composite
def spoiled_params(draw):
    """params with one thing wrong: structure, a leaf's shape or dtype, or a NaN/Inf."""
    params = good_params()
    layer = draw(st.integers(0, 1))
    kind = draw(st.sampled_from(["missing", "extra", "swap", "shape", "dtype", "tuple", "value"]))
    if kind == "missing":
        return params[:1] if layer else params[1:]
    if kind == "extra":
        return [*params, params[-1]]
    if kind == "swap":
        params[layer] = {"w": params[layer]["b"], "b": params[layer]["w"]}
    elif kind == "shape":
        name = draw(st.sampled_from(["w", "b"]))
        shape = draw(bad_shapes.filter(lambda s: s != params[layer][name].shape))
        params[layer][name] = np.ones(shape, np.float32)
    elif kind == "dtype":
        name = draw(st.sampled_from(["w", "b"]))
        params[layer][name] = params[layer][name].astype(draw(non_float))
    elif kind == "tuple":
        params[layer] = (params[layer]["w"], params[layer]["b"])
    else:
        params[layer]["w"][0, 0] = draw(non_finite)
    return params


@st.composite
def spoiled_targets(draw, loss):
    """Targets that do not fit ``loss`` and a prediction of shape (N, 2)."""
    kind = draw(st.sampled_from(["shape", "dtype", "value", "range"]))
    y = np.array(TARGETS[loss])
    if kind == "shape":
        return np.zeros(draw(bad_shapes.filter(lambda s: s != y.shape)), y.dtype)
    if kind == "dtype":
        return y.astype(draw(st.sampled_from([np.complex64, np.complex128])))
    if kind == "value" and y.dtype.kind == "f":
        y = y.copy()
        y.flat[draw(st.integers(0, y.size - 1))] = draw(non_finite)
        return y
    if loss == "softmax_cross_entropy":
        return np.where(np.arange(N) == 2, draw(st.sampled_from([-1, 2, 7])), y)
    if loss == "sigmoid_binary_cross_entropy":
        return y + draw(st.sampled_from([-0.5, 1.5, 10.0]))
    return np.zeros((N + 1, 2), np.float32)  # mse: one row too many


losses_ = st.sampled_from(list(TARGETS))

# ---------------------------------------------------------------- backprop, MLP, losses


@given(x=spoiled_x(), loss=losses_, fn=st.sampled_from([backprop, backprop_with_deltas]))
def test_backprop_refuses_bad_x(x, loss, fn):
    EXAMPLES["backprop x"] += 1
    y = TARGETS[loss][: len(x)] if np.ndim(x) else TARGETS[loss]
    expect_named_error(["x"], lambda: fn(MODEL, loss, good_params(), x, y))


@given(params=spoiled_params(), loss=losses_)
def test_backprop_and_objective_refuse_bad_params(params, loss):
    EXAMPLES["backprop params"] += 1
    expect_named_error(["params"], lambda: backprop(MODEL, loss, params, X, TARGETS[loss]))
    expect_named_error(["params"], lambda: objective(MODEL, loss)(params, X, TARGETS[loss]))


@given(data=st.data(), loss=losses_)
def test_backprop_and_loss_refuse_bad_targets(data, loss):
    EXAMPLES["targets"] += 1
    y = data.draw(spoiled_targets(loss))
    names = ["y"]
    expect_named_error(names, lambda: backprop(MODEL, loss, good_params(), X, y))
    if len(np.shape(y)) >= 1 and np.shape(y)[0] == N:  # Loss.__call__ checks pred against y
        pred = np.zeros((N, 2), np.float32)
        expect_named_error(names, lambda: losses.get(loss)(pred, y))


@given(params=spoiled_params(), fn=st.sampled_from(["apply", "trace"]))
def test_mlp_apply_and_trace_refuse_bad_params(params, fn):
    EXAMPLES["mlp params"] += 1
    expect_named_error(["params"], lambda: getattr(MODEL, fn)(params, X))


@given(
    arg=st.sampled_from(["scheme", "dtype", "scale", "key"]),
    value=st.sampled_from([None, -1.0, np.nan, np.inf, "glorot2", np.int32, np.complex64, 3]),
)
def test_mlp_init_refuses_nonsense(arg, value):
    if arg == "scale" and value == 3:
        return  # a valid scale
    if arg == "dtype" and value is None:
        return  # the default: JAX's default float dtype
    EXAMPLES["mlp init"] += 1
    kwargs = {"key": jax.random.key(0), arg: value}
    expect_named_error([arg], lambda: MODEL.init(**kwargs))


@given(
    sizes=st.one_of(
        st.lists(st.integers(-2, 0), min_size=2, max_size=3),
        st.lists(st.integers(1, 3), max_size=1),
        st.just([3.5, 2]),
        st.just("3,2"),
    ),
    activation=st.sampled_from(["tanh", "swish", 3]),
)
def test_mlp_constructor_refuses_nonsense(sizes, activation):
    EXAMPLES["mlp sizes"] += 1
    expect_named_error(["sizes", "activation", "name"], lambda: MLP(sizes, activation))


@given(name=st.sampled_from(["hinge", "", None, 3, "MSE"]))
def test_unknown_losses_are_named(name):
    EXAMPLES["loss names"] += 1
    expect_named_error(["loss"], lambda: losses.get(name))


# ---------------------------------------------------------------- train


def _fit(data=(X, Y_MSE), **overrides):
    kwargs = dict(epochs=1, key=jax.random.key(0), learning_rate=0.1, progress=False)
    kwargs.update(overrides)
    return train.fit(MODEL, "mse", "sgd", data, **kwargs)


NONSENSE = [0, -1, 1.5, "3", True, None, np.nan, np.inf, [1]]


@given(
    arg=st.sampled_from(
        [
            "epochs",
            "batch_size",
            "eval_every",
            "diagnostics_every",
            "callback_every",
            "checkpoint_every",
            "learning_rate",
            "grad",
            "key",
            "mesh",
            "callback",
            "progress",
        ]
    ),
    value=st.sampled_from(NONSENSE),
)
def test_fit_refuses_nonsense_config(arg, value):
    valid = {
        "batch_size": [None],
        "eval_every": [0],
        "diagnostics_every": [0],
        "checkpoint_every": [0],
        "mesh": [None, True],
        "callback": [None],
        "progress": [True],
        "grad": [None],  # the default: hand for an MLP, auto for any other model
    }
    if value is not np.nan and any(value is v or value == v for v in valid.get(arg, [])):
        if not isinstance(value, bool) or arg in ("mesh", "progress"):
            return
    EXAMPLES["fit config"] += 1
    expect_named_error([arg], lambda: _fit(**{arg: value}))


@given(x=spoiled_x())
def test_fit_and_make_step_refuse_bad_data(x):
    EXAMPLES["fit data"] += 1
    names = ["x", "data.x", "y"]
    y = np.zeros((len(x), 2), np.float32) if np.ndim(x) >= 1 else Y_MSE
    expect_named_error(names, lambda: _fit(data=(x, y)))
    step = train.make_step(MODEL, "mse", "sgd", learning_rate=0.1)
    params = good_params()
    expect_named_error(names, lambda: step(params, step.optimizer.init(params), x, y))


@given(params=spoiled_params())
def test_fit_refuses_bad_params(params):
    EXAMPLES["fit params"] += 1
    expect_named_error(["params"], lambda: _fit(params=params))


@given(
    optimizer=st.sampled_from(["sgd", "adam", "lbfgs", None, 3]),
    lr=st.sampled_from([0.1, -0.1, 0.0, np.nan, np.inf, "0.1", None]),
)
def test_make_step_refuses_bad_optimizer_config(optimizer, lr):
    if optimizer in ("sgd", "adam") and lr == 0.1:
        return
    EXAMPLES["make_step config"] += 1
    kwargs = {} if lr is None else {"learning_rate": lr}
    expect_named_error(
        ["optimizer", "learning_rate"], lambda: train.make_step(MODEL, "mse", optimizer, **kwargs)
    )


# ---------------------------------------------------------------- gradcheck, diagnostics


@given(params=spoiled_params())
def test_gradient_report_refuses_bad_params(params):
    from gdjax import diagnostics

    EXAMPLES["diagnostics"] += 1
    expect_named_error(
        ["params"], lambda: diagnostics.gradient_report(MODEL, "mse", params, X, Y_MSE)
    )


def _gradcheck_supported(params):
    """Structure and shape spoilage; dtype and value cases are the parametrized test below."""
    leaves = [np.asarray(a) for a in jax.tree.leaves(params)]
    return all(np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) for a in leaves)


@given(params=spoiled_params().filter(_gradcheck_supported))
def test_gradcheck_refuses_bad_params(params):
    EXAMPLES["gradcheck params"] += 1
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    f = objective(MODEL, "mse")
    expect_named_error(["params"], lambda: gradcheck.check_grad(f, params, X, Y_MSE))


# Found by this suite in gradcheck.py, fixed since: each once gave a raw error or a NaN report.
GRADCHECK_GAPS = {
    "int params": ({"dtype": np.int32}, "raw jax.grad TypeError"),
    "NaN params": ({"value": np.nan}, "a NaN report, no error"),
    "eps 0": ({"eps": 0.0}, "no error"),
    "eps < 0": ({"eps": -1e-6}, "no error"),
    "eps str": ({"eps": "1e-6"}, "raw numpy TypeError"),
    "eps NaN": ({"eps": np.nan}, "no error"),
}


@pytest.mark.parametrize("case", list(GRADCHECK_GAPS), ids=list(GRADCHECK_GAPS))
def test_gradcheck_refuses_bad_eps_and_params(case):
    spoil, _ = GRADCHECK_GAPS[case]
    params = good_params(np.float64)
    if "dtype" in spoil:
        params[0]["w"] = params[0]["w"].astype(spoil["dtype"])
    if "value" in spoil:
        params[0]["w"][0, 0] = spoil["value"]
    f = objective(MODEL, "mse")
    name = "eps" if "eps" in spoil else "params"
    kwargs = {"eps": spoil["eps"]} if "eps" in spoil else {}
    expect_named_error([name], lambda: gradcheck.check_grad(f, params, X, Y_MSE, **kwargs))


# ---------------------------------------------------------------- landscape and curvature

F_MSE = objective(MODEL, "mse")


def _spoiled_direction(draw):
    """A params-shaped direction with one leaf spoiled: shape, dtype (complex too) or value."""
    d = good_params()
    layer, name = draw(st.integers(0, 1)), draw(st.sampled_from(["w", "b"]))
    kind = draw(st.sampled_from(["shape", "dtype", "value", "missing"]))
    if kind == "missing":
        return d[:1]
    if kind == "shape":
        d[layer][name] = np.ones(
            draw(bad_shapes.filter(lambda s: s != d[layer][name].shape)), np.float32
        )
    elif kind == "dtype":
        d[layer][name] = d[layer][name].astype(draw(non_float))
    else:
        d[layer][name] = d[layer][name].copy()
        d[layer][name].flat[0] = draw(non_finite)
    return d


@given(data=st.data(), which=st.sampled_from(["params", "d1", "d2", "x"]))
def test_sweeps_refuse_bad_params_directions_and_data(data, which):
    EXAMPLES["sweep_2d"] += 1
    params, d1, d2, x = good_params(), good_params(), good_params(), X
    if which == "params":
        params = data.draw(spoiled_params())
    elif which == "x":
        x = X.copy()
        x[0, 0] = data.draw(non_finite)
    elif which == "d1":
        d1 = _spoiled_direction(data.draw)
    else:
        d2 = _spoiled_direction(data.draw)
    axis = np.linspace(-1, 1, 3)
    # A sweep takes any f, so params' own structure is free: a params pytree that lost
    # a layer is reported through the first direction that no longer matches it.
    names = {"params": ["params", "d1"], "d1": ["d1"], "d2": ["d2"], "x": ["args[0]"]}
    expect_named_error(
        names[which], lambda: landscape.sweep_2d(F_MSE, params, d1, d2, axis, axis, x, Y_MSE)
    )


@given(data=st.data())
def test_filter_normalisation_refuses_bad_params(data):
    EXAMPLES["filter_normalized_direction"] += 1
    params = good_params()
    layer, name = data.draw(st.integers(0, 1)), data.draw(st.sampled_from(["w", "b"]))
    if data.draw(st.booleans()):
        params[layer][name] = params[layer][name].astype(data.draw(non_float))
    else:
        params[layer][name].flat[0] = data.draw(non_finite)
    expect_named_error(
        ["params"], lambda: landscape.filter_normalized_direction(jax.random.key(0), params)
    )


@given(data=st.data(), which=st.sampled_from(["v", "x"]))
def test_hvp_and_trace_refuse_bad_vectors_and_data(data, which):
    EXAMPLES["curvature"] += 1
    params, v, x = good_params(), good_params(), X
    if which == "v":
        v = _spoiled_direction(data.draw)
        expect_named_error(["v"], lambda: curvature.hvp(F_MSE, params, v, x, Y_MSE))
    else:
        x = X.copy()
        x[data.draw(st.integers(0, N - 1)), 0] = data.draw(non_finite)
        expect_named_error(["args[0]"], lambda: curvature.hvp(F_MSE, params, v, x, Y_MSE))
        expect_named_error(
            ["args[0]"],
            lambda: curvature.trace(F_MSE, params, x, Y_MSE, key=jax.random.key(0), samples=2),
        )


def test_zz_report_example_count():
    """Runs last in this module: how many fuzz examples ran (shown with ``-s``)."""
    total = sum(EXAMPLES.values())
    print(f"\nfuzz examples run: {total} {dict(EXAMPLES)}")
    assert total > 0
