"""gdjax.nets: outputs against hand-computed numbers and a NumPy reference, gradients
against finite differences, shapes, initialisation, hashing, a short fit, bad input.

The NumPy reference below is written independently of the library: the
convolution is ``np.convolve`` with the kernel reversed (a cross-correlation),
one input channel at a time, on a zero-padded row, keeping every s-th output.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gdjax import MLP, gradcheck, losses, models, nets, train

RELU = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh, "identity": lambda z: z}

PAPER_NETS = {  # name: (net, parameter count)
    "logistic_regression": (nets.logistic_regression(), 40 * 10 + 10),
    "mnist1d_mlp": (nets.mnist1d_mlp(), (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)),
    "mnist1d_cnn": (nets.mnist1d_cnn(), (25 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + (125 * 10 + 10)),
}


# ------------------------------------------------------------------ a NumPy reference


def np_conv1d(a, w, b, stride, pad):
    """``a`` (C_in, T), ``w`` (C_out, C_in, k) → (C_out, T_out), cross-correlation."""
    a = np.pad(a, ((0, 0), (pad, pad)))
    out = []
    for c in range(w.shape[0]):
        full = sum(np.convolve(a[ci], w[c, ci, ::-1], mode="valid") for ci in range(w.shape[1]))
        out.append(full[::stride] + b[c])
    return np.stack(out)


def np_feedforward(params, x, act, skips=()):
    params = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params]
    a = np.asarray(x, np.float64)
    for layer, p in enumerate(params[:-1], start=1):
        h = act(a @ p["w"].T + p["b"])
        a = a + h if layer in skips else h
    return a @ params[-1]["w"].T + params[-1]["b"]


def np_cnn(net, params, x, act):
    params = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params]
    rows = []
    for row in np.asarray(x, np.float64):
        a = row[None, :]
        for p, s, pad in zip(params[:-1], net.strides, net.padding, strict=True):
            a = act(np_conv1d(a, p["w"], p["b"], s, pad))
        rows.append(a.reshape(-1) @ params[-1]["w"].T + params[-1]["b"])  # channel-major
    return np.stack(rows)


def reference(net, params, x):
    act = RELU[net.activation.name]
    if isinstance(net, nets.ConvNet1D):
        return np_cnn(net, params, x, act)
    return np_feedforward(params, x, act, net.skips)


def tree(arrays):
    return [{"w": jnp.asarray(w, jnp.float64), "b": jnp.asarray(b, jnp.float64)} for w, b in arrays]


# ------------------------------------------------------------------ hand-computed outputs


def test_conv_net_by_hand():
    """Two channels, kernel 3, stride 2, padding 1 on x = (1, 2, 3, 4):

    padded (0, 1, 2, 3, 4, 0); channel 0, w = (1, 2, 3), b = ½: windows (0, 1, 2) and
    (2, 3, 4) give 8 + ½ and 20 + ½; channel 1, w = (1, 0, 0), b = 0: 0 and 2.
    vec = (8.5, 20.5, 0, 2) channel-major; read-out (1, 10, 100, 1000) → 2213.5
    (time-major order would give 4058.5)."""
    net = nets.ConvNet1D(4, (2,), (3,), (2,), (1,), num_outputs=1)
    params = tree([([[[1, 2, 3]], [[1, 0, 0]]], [0.5, 0.0]), ([[1, 10, 100, 1000]], [0.0])])
    assert net.lengths == (4, 2)
    out = net.apply(params, jnp.array([[1.0, 2.0, 3.0, 4.0]]))
    np.testing.assert_array_equal(out, [[2213.5]])
    np.testing.assert_array_equal(np_cnn(net, params, [[1.0, 2.0, 3.0, 4.0]], RELU["relu"]), out)


def test_residual_mlp_by_hand():
    """sizes (1, 1, 1, 1), ReLU, a skip at layer 2: w = 2, 1, ½ and b = 0, −1, 1.

    x = 3: a¹ = relu(6) = 6, a² = 6 + relu(6 − 1) = 11, z³ = 11/2 + 1 = 6.5;
    x = −1: a¹ = 0, a² = 0 + relu(−1) = 0, z³ = 1. Without the skip, x = 3 gives 3.5."""
    params = tree([([[2.0]], [0.0]), ([[1.0]], [-1.0]), ([[0.5]], [1.0])])
    x = jnp.array([[3.0], [-1.0]])
    residual = nets.mlp((1, 1, 1, 1), residual=True)
    assert residual.skips == (2,)
    np.testing.assert_array_equal(residual.apply(params, x), [[6.5], [1.0]])
    np.testing.assert_array_equal(nets.mlp((1, 1, 1, 1)).apply(params, x), [[3.5], [1.0]])


def test_np_conv_reference_is_a_strided_padded_cross_correlation():
    a = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    w = np.array([[[1.0, -1.0]]])
    # padded (0, 1, …, 5, 0); windows at 0, 3: (0 − 1), (3 − 4)
    np.testing.assert_array_equal(np_conv1d(a, w, [0.0], 3, 1), [[-1.0, -1.0]])


# ------------------------------------------------------------------ against the reference

REFERENCE_CASES = {
    **{name: net for name, (net, _) in PAPER_NETS.items()},
    "cnn_tanh_odd_sizes": nets.ConvNet1D(9, (2, 3), (3, 2), (2, 1), (1, 0), 4, "tanh"),
    "cnn_no_padding_stride_3": nets.ConvNet1D(11, (3,), (4,), (3,), (0,), 2),
    "deep_residual_tanh": nets.mlp((5, 7, 7, 7, 3), residual=True, activation="tanh"),
    "uneven_widths_residual": nets.mlp((6, 4, 4, 8, 8, 2), residual=True),
}


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_output_equals_the_numpy_reference(name):
    net = REFERENCE_CASES[name]
    params = net.init(jax.random.key(1), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(2), (3, net.num_inputs), jnp.float64)
    out = net.apply(params, x)
    assert out.shape == (3, params[-1]["b"].shape[0]) and out.dtype == jnp.float64
    np.testing.assert_allclose(out, reference(net, params, x), rtol=1e-12, atol=1e-12)
    jitted = jax.jit(net.apply)(params, x)
    np.testing.assert_allclose(jitted, out, rtol=1e-12, atol=1e-12)


def test_without_skips_it_is_gdjax_mlp():
    net = nets.mlp((4, 6, 6, 3), activation="tanh")
    params = net.init(jax.random.key(0), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (5, 4), jnp.float64)
    model = MLP((4, 6, 6, 3), "tanh", "identity")
    np.testing.assert_allclose(net.apply(params, x), model.apply(params, x), rtol=1e-14)


def test_skips_of_the_depth_study():
    for depth in (2, 6, 10):
        sizes = (40, *[100] * depth, 10)
        assert nets.mlp(sizes, residual=True).skips == tuple(range(2, depth + 1))
        assert nets.mlp(sizes).skips == ()
    assert nets.mlp((40, 100, 50, 50, 10), residual=True).skips == (3,)


# ------------------------------------------------------------------ gradients


def cost(net):
    ce = losses.get("softmax_cross_entropy").fn
    return lambda params, x, y: ce(net.apply(params, x), y)


GRAD_CASES = {  # every coordinate by finite differences: small nets
    "logistic_regression": nets.logistic_regression(),
    "small_cnn_relu": nets.ConvNet1D(40, (4, 3), (5, 3), (2, 2), (1, 1)),
    "deep_residual_tanh": nets.mlp((40, 16, 16, 16, 10), residual=True, activation="tanh"),
}


@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradients_equal_finite_differences(name):
    net = GRAD_CASES[name]
    params = net.init(jax.random.key(3), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(4), (4, 40), jnp.float64)
    y = jnp.array([0, 3, 7, 9])
    report = gradcheck.check_grad(cost(net), params, x, y)
    assert report.max_relative_error < 1e-6, report


@pytest.mark.parametrize("name", ["mnist1d_mlp", "mnist1d_cnn"])
def test_paper_nets_gradients_along_random_directions(name):
    """The full-size nets (15 210 and 5 210 params): jax.grad against central
    differences along random directions (check_grads), in float64. The step is
    small (1e-6) so that no ReLU's input changes sign along it."""
    net = PAPER_NETS[name][0]
    params = net.init(jax.random.key(3), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(4), (4, 40), jnp.float64)
    y = jnp.array([0, 3, 7, 9])
    check_grads(lambda p: cost(net)(p, x, y), (params,), order=1, modes=("rev",), eps=1e-6)


def test_cnn_input_gradient_and_hessian_vector_products():
    """Second order through the convolutions (the curvature tools need it), smooth σ."""
    net = nets.ConvNet1D(12, (3, 2), (3, 3), (2, 2), (1, 1), 3, "tanh")
    params = net.init(jax.random.key(5), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(6), (2, 12), jnp.float64)
    check_grads(lambda x: net.apply(params, x), (x,), order=2, modes=("rev",))
    check_grads(lambda p: net.apply(p, x), (params,), order=2, modes=("rev",))


# ------------------------------------------------------------------ shapes and init


@pytest.mark.parametrize("name", PAPER_NETS)
def test_paper_nets_shapes_and_parameter_counts(name):
    net, count = PAPER_NETS[name]
    params = net.init(jax.random.key(0))
    shapes = [{k: v.shape for k, v in p.items()} for p in params]
    assert shapes == net.param_shapes()
    assert sum(v.size for v in jax.tree.leaves(params)) == count
    assert {v.dtype for v in jax.tree.leaves(params)} == {jnp.dtype(jnp.float64)}  # x64 is on
    params32 = net.init(jax.random.key(0), dtype=jnp.float32)
    assert {v.dtype for v in jax.tree.leaves(params32)} == {jnp.dtype(jnp.float32)}
    assert net.apply(params32, jnp.zeros((7, 40), jnp.float32)).shape == (7, 10)


def test_cnn_layout_is_pytorchs():
    net = nets.mnist1d_cnn()
    assert net.lengths == (40, 19, 10, 5)
    assert [s["w"] for s in net.param_shapes()] == [(25, 1, 5), (25, 25, 3), (25, 25, 3), (10, 125)]
    assert net.fans() == [(5, 125), (75, 75), (75, 75), (125, 10)]


@pytest.mark.parametrize("name", ["mnist1d_mlp", "mnist1d_cnn"])
def test_init_schemes(name):
    net = PAPER_NETS[name][0]
    keys = jax.random.key(0)
    pytorch, he, glorot = (net.init(keys, scheme=s) for s in nets.INIT_SCHEMES)
    for p, q, r, (fan_in, fan_out) in zip(pytorch, he, glorot, net.fans(), strict=True):
        bound = 1 / np.sqrt(fan_in)
        for leaf in (p["w"], p["b"]):  # PyTorch: U(±1/√fan_in), the bias too
            assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.8 * bound
        np.testing.assert_array_equal(q["b"], 0.0)
        np.testing.assert_array_equal(r["b"], 0.0)
        if q["w"].size >= 1000:
            assert abs(np.std(q["w"]) / np.sqrt(2 / fan_in) - 1) < 0.1
        assert np.abs(r["w"]).max() <= np.sqrt(6 / (fan_in + fan_out))
    again = net.init(jax.random.key(0))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(pytorch), strict=True)
    )


# ------------------------------------------------------------------ hashing and compiling


def test_equal_configs_are_equal_and_hash_equal():
    assert nets.mnist1d_cnn() == nets.ConvNet1D() and hash(nets.mnist1d_cnn()) == hash(
        nets.ConvNet1D()
    )
    assert nets.mnist1d_mlp() == nets.mlp([40, 100, 100, 10], residual=True)
    assert hash(nets.mnist1d_mlp()) == hash(nets.mlp((40, 100, 100, 10), residual=True))
    assert nets.mnist1d_mlp() != nets.mlp((40, 100, 100, 10))
    assert nets.mnist1d_cnn() != nets.mnist1d_cnn(channels=8)
    assert nets.mlp((3, 4, 2), activation="tanh") != nets.mlp((3, 4, 2))
    # fit wraps a function model in ApplyModel, compared by the function: the net, by value
    assert models.as_model(nets.mnist1d_cnn()) == models.as_model(nets.ConvNet1D())
    assert hash(models.as_model(nets.mnist1d_cnn())) == hash(models.as_model(nets.ConvNet1D()))


def test_an_equal_net_reuses_the_compiled_code(compilations):
    forward = jax.jit(lambda net, p, x: net.apply(p, x), static_argnums=0)
    params = nets.mnist1d_cnn().init(jax.random.key(0), dtype=jnp.float32)
    x = jnp.ones((2, 40), jnp.float32)
    forward(nets.mnist1d_cnn(), params, x).block_until_ready()
    before = compilations.count
    forward(nets.mnist1d_cnn(), params, x).block_until_ready()  # a new, equal object
    assert compilations.count == before


# ------------------------------------------------------------------ training


@pytest.mark.parametrize("name", PAPER_NETS)
def test_a_short_fit_reduces_the_loss(name):
    """MNIST-1D-shaped random data (64 × 40, ten classes): adam memorises part of it."""
    net = PAPER_NETS[name][0]
    x = jax.random.normal(jax.random.key(1), (64, 40), jnp.float32)
    y = jax.random.randint(jax.random.key(2), (64,), 0, 10)
    result = train.fit(
        net,
        "softmax_cross_entropy",
        "adam",
        (x, y),
        epochs=30,
        key=jax.random.key(0),
        params=net.init(jax.random.key(3), dtype=jnp.float32),
        progress=False,
        eval_every=0,
        learning_rate=1e-2,
    )
    loss = result.history["loss"]
    assert result.diverged is None and np.all(np.isfinite(loss))
    assert loss[-1] < 0.5 * loss[0], loss


def test_fit_reuses_its_compiled_code_for_an_equal_net(compilations):
    x = jax.random.normal(jax.random.key(1), (32, 40), jnp.float32)
    y = jax.random.randint(jax.random.key(2), (32,), 0, 10)
    params = nets.mnist1d_mlp().init(jax.random.key(3), dtype=jnp.float32)

    def fit(net):
        kwargs = dict(epochs=2, key=jax.random.key(0), progress=False, learning_rate=1e-2)
        return train.fit(net, "softmax_cross_entropy", "adam", (x, y), params=params, **kwargs)

    first = fit(nets.mnist1d_mlp())
    before = compilations.count
    second = fit(nets.mlp((40, 100, 100, 10), residual=True))  # a new, equal net
    assert compilations.count == before
    np.testing.assert_array_equal(first.history["loss"], second.history["loss"])


# ------------------------------------------------------------------ bad input

BAD_CONSTRUCTORS = [  # (factory, args, kwargs, the argument the message names)
    (nets.mlp, ((40,),), {}, "sizes"),
    (nets.mlp, ("40, 10",), {}, "sizes"),
    (nets.mlp, ((40, 0, 10),), {}, "sizes"),
    (nets.mlp, ((40, 2.5, 10),), {}, "sizes"),
    (nets.mlp, ((40, 100, 10),), dict(residual=True), "residual"),  # nowhere for a skip
    (nets.mlp, ((40, 100, 100, 10),), dict(residual="yes"), "residual"),
    (nets.mlp, ((40, 10),), dict(activation="swish"), "activation"),
    (nets.logistic_regression, (0,), {}, "sizes"),
    (nets.mnist1d_mlp, (), dict(hidden=0), "hidden"),
    (nets.mnist1d_mlp, (), dict(hidden=True), "hidden"),
    (nets.mnist1d_cnn, (), dict(channels=0), "channels"),
    (nets.mnist1d_cnn, (), dict(num_inputs=2), "kernel_sizes"),  # 2 + 2·1 < 5
    (nets.mnist1d_cnn, (), dict(num_classes=0), "num_outputs"),
    (nets.ConvNet1D, (), dict(channels=()), "channels"),
    (nets.ConvNet1D, (), dict(kernel_sizes=(5, 3)), "kernel_sizes"),
    (nets.ConvNet1D, (), dict(strides=(2, 0, 2)), "strides"),
    (nets.ConvNet1D, (), dict(padding=(1, -1, 1)), "padding"),
    (nets.ConvNet1D, (), dict(padding=1), "padding"),
    (nets.ConvNet1D, (), dict(num_inputs=-4), "num_inputs"),
    (nets.ConvNet1D, (), dict(activation=3), "activation"),
]


@pytest.mark.parametrize(("factory", "args", "kwargs", "argname"), BAD_CONSTRUCTORS)
def test_bad_constructor_arguments_name_the_argument(factory, args, kwargs, argname):
    with pytest.raises(ValueError, match=rf"^{argname}: expected .*got "):
        factory(*args, **kwargs)


def test_bad_init_and_apply_arguments_name_the_argument():
    net = nets.mnist1d_cnn()
    with pytest.raises(ValueError, match=r"^scheme: expected one of pytorch, he, glorot"):
        net.init(jax.random.key(0), scheme="lecun")
    with pytest.raises(ValueError, match=r"^dtype: expected a floating dtype"):
        net.init(jax.random.key(0), dtype=jnp.int32)
    with pytest.raises(ValueError, match=r"^key: expected a PRNG key from jax.random.key"):
        net.init(0)
    params = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"^x: expected shape \(batch, 40\) .*got \(2, 41\)"):
        net.apply(params, jnp.ones((2, 41)))
    with pytest.raises(ValueError, match=r"^x: expected shape"):
        net.apply(params, jnp.ones(40))
    with pytest.raises(ValueError, match=r"^params: expected a list of 4 dicts"):
        net.apply(params[:3], jnp.ones((2, 40)))
    with pytest.raises(ValueError, match=r"^params\[1\]\['w'\]: expected shape \(25, 25, 3\)"):
        net.apply(
            [params[0], {"w": params[0]["w"], "b": params[1]["b"]}, *params[2:]], jnp.ones((2, 40))
        )
    with pytest.raises(ValueError, match=r"^params\[0\]: expected a dict with keys 'w' and 'b'"):
        nets.mnist1d_mlp().apply([{"kernel": 1}, {}, {}], jnp.ones((2, 40)))


def test_nets_of_different_configs_have_different_checkpoint_fingerprints():
    """fit's fingerprint names a function model by its repr: a net's fields must show."""
    from gdjax.models import as_model

    plain, skips = nets.mlp((4, 8, 8, 2)), nets.mlp((4, 8, 8, 2), residual=True)
    assert repr(as_model(plain)) != repr(as_model(skips))
    assert repr(as_model(plain)) == repr(as_model(nets.mlp((4, 8, 8, 2))))
