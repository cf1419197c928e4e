"""The built-in data sets: shapes and dtypes, determinism, the generating equations, errors.

x64 is on for the whole session (conftest), so every test that cares about the
default dtype checks that it is float32, and float64 is always asked for by name.

Each generator compiles once per (sizes, dtype), about a second each on a small
CPU, so the tests share a few configurations: the defaults and ``F64`` below.
Splits of many sizes are tested on digits, which is numpy and compiles nothing.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, check_batch, data, losses, objective

SYNTHETIC = ("linear_regression", "moons", "circles", "spirals")  # need a key, split 0.2

F64 = {  # the float64 configurations the tests share
    "linear_regression": dict(outputs=2, dtype=jnp.float64),
    "spirals": dict(n=301, num_classes=3, dtype=jnp.float64),
}


@pytest.fixture(scope="module", autouse=True)
def _cache_outside_home(tmp_path_factory):
    """mnist1d caches what it generates: keep that out of the user's home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GDJAX_CACHE_DIR", str(tmp_path_factory.mktemp("gdjax-cache")))
        yield


def load(name, seed=0, **kwargs):
    if name == "xor" and not kwargs:
        kwargs = dict(n=40, noise=0.1, test_fraction=0.2)  # the sampled version
    return data.get(name, jax.random.key(seed), **kwargs)


def all_rows(ds):
    """Train and test examples together, as numpy."""
    return (
        np.concatenate([np.asarray(ds.x), np.asarray(ds.x_test)]),
        np.concatenate([np.asarray(ds.y), np.asarray(ds.y_test)]),
    )


def class_of(y, num_classes):
    """Integer labels from targets of any form."""
    y = np.asarray(y)
    if y.ndim == 1:
        return y
    return y[:, 0].astype(int) if num_classes == 2 else y.argmax(axis=1)


# ------------------------------------------------------------------ registry


def test_names_and_get():
    assert data.names() == (
        "linear_regression",
        "xor",
        "moons",
        "circles",
        "spirals",
        "digits",
        "mnist1d",
    )
    assert data.get("xor").name == "xor"
    with pytest.raises(ValueError, match=r"name: expected one of linear_regression, .*mnist1d"):
        data.get("mnist")


# ------------------------------------------------------------------ shapes and dtypes

EXPECTED = {  # name: (n before split, d, y shape after the row count, y dtype, loss, classes)
    "linear_regression": (200, 5, (1,), jnp.float32, "mse", None),
    "xor": (40, 2, (1,), jnp.float32, "sigmoid_binary_cross_entropy", 2),
    "moons": (200, 2, (1,), jnp.float32, "sigmoid_binary_cross_entropy", 2),
    "circles": (200, 2, (1,), jnp.float32, "sigmoid_binary_cross_entropy", 2),
    "spirals": (400, 2, (1,), jnp.float32, "sigmoid_binary_cross_entropy", 2),
    "digits": (1797, 64, (), jnp.int32, "softmax_cross_entropy", 10),
    "mnist1d": (5000, 40, (), jnp.int32, "softmax_cross_entropy", 10),
}


@pytest.mark.parametrize("name", data.names())
def test_default_shapes_and_dtypes(name):
    n, d, y_tail, y_dtype, loss, classes = EXPECTED[name]
    ds = load(name)
    n_test = round(0.2 * n)
    assert ds.x.shape == (n - n_test, d) and ds.x_test.shape == (n_test, d)
    assert ds.y.shape == (n - n_test, *y_tail) and ds.y_test.shape == (n_test, *y_tail)
    assert ds.x.dtype == ds.x_test.dtype == jnp.float32  # float32 by default, even under x64
    assert ds.y.dtype == ds.y_test.dtype == y_dtype
    assert (ds.loss, ds.num_classes, ds.name) == (loss, classes, name)
    assert (ds.num_train, ds.num_test, ds.num_inputs) == (n - n_test, n_test, d)
    assert ds.num_outputs == (classes if loss == "softmax_cross_entropy" else y_tail[0])
    assert np.all(np.isfinite(ds.x)) and np.all(np.isfinite(ds.x_test))


@pytest.mark.parametrize("name", data.names())
def test_a_model_built_from_the_dataset_fits_its_loss(name):
    """MLP((num_inputs, …, num_outputs)) and the named loss accept x and y as they are."""
    ds = load(name)
    model = MLP((ds.num_inputs, 4, ds.num_outputs), activation="tanh")
    params = jax.eval_shape(model.init, jax.random.key(1))  # shapes only: nothing compiles
    for x, y in ((ds.x, ds.y), (ds.x_test, ds.y_test)):
        check_batch(model, losses.get(ds.loss), params, x, y)  # shapes, dtypes, label ranges
        assert jax.eval_shape(objective(model, ds.loss), params, x, y).shape == ()


def test_float64_has_the_float32_points():
    """Draws are made in float32 and cast, so the float64 set is the float32 set, more precisely.

    (x does not depend on ``outputs``, so the shared float64 configuration serves.)"""
    d32, d64 = load("linear_regression"), load("linear_regression", **F64["linear_regression"])
    assert d64.x.dtype == d64.y.dtype == d64.x_test.dtype == jnp.float64
    np.testing.assert_allclose(d64.x, d32.x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d64.x_test, d32.x_test, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["moons", "digits"])
@pytest.mark.parametrize(
    ("loss", "binary_shape", "ten_class_shape", "dtype"),
    [
        ("softmax_cross_entropy", (), (), jnp.int32),
        ("sigmoid_binary_cross_entropy", (1,), (10,), jnp.float32),
        ("mse", (1,), (10,), jnp.float32),
    ],
)
def test_targets_follow_the_loss(name, loss, binary_shape, ten_class_shape, dtype):
    ds = load(name, loss=loss)
    default = load(name)
    tail = binary_shape if ds.num_classes == 2 else ten_class_shape
    assert ds.loss == loss and ds.y.shape == (ds.num_train, *tail) and ds.y.dtype == dtype
    assert ds.num_outputs == (ds.num_classes if ds.y.ndim == 1 else tail[0])
    # the same examples, the same classes, only the encoding differs
    np.testing.assert_array_equal(ds.x, default.x)
    np.testing.assert_array_equal(
        class_of(ds.y, ds.num_classes), class_of(default.y, default.num_classes)
    )
    if ds.y.ndim == 2:
        assert set(np.unique(ds.y)) == {0.0, 1.0}
        if ds.y.shape[1] > 1:
            np.testing.assert_array_equal(np.asarray(ds.y).sum(axis=1), 1.0)


def test_losses_accept_a_loss_object():
    assert load("moons", loss=losses.get("mse")).loss == "mse"


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name", [*SYNTHETIC, "xor"])
def test_same_key_same_arrays_other_key_other_arrays(name):
    a, b, c = load(name, seed=0), load(name, seed=0), load(name, seed=1)
    for f in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.x, c.x)


def test_legacy_raw_keys_give_the_same_data():
    a = data.moons(jax.random.key(3))
    b = data.moons(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


def test_a_new_key_or_noise_does_not_recompile(compilations):
    data.moons(jax.random.key(0))  # compiled here, or earlier in the session
    compilations.count = 0
    data.moons(jax.random.key(5), noise=0.3)
    assert compilations.count == 0


def test_examples_are_shuffled():
    labels = class_of(load("moons").y, 2)
    assert 0 < np.mean(labels[:80]) < 1  # not sorted by class


# ------------------------------------------------------------------ held-out split


@pytest.mark.parametrize(
    ("test_fraction", "n_test"),
    [(0.0, 0), (0.001, 2), (0.2, 359), (0.5, 898), (0.9999, 1796)],
)
def test_split_sizes(test_fraction, n_test):
    """round(test_fraction · n) held out, at most n − 1 (here n = 1797)."""
    ds = data.digits(test_fraction=test_fraction)
    assert (ds.num_train, ds.num_test) == (1797 - n_test, n_test)
    assert ds.x_test.shape == (n_test, 64) and ds.y_test.shape == (n_test,)


# ------------------------------------------------------------------ classes and geometry


@pytest.mark.parametrize(
    ("name", "kwargs", "num_classes"),
    [
        ("xor", dict(n=40, noise=0.1, test_fraction=0.2), 2),
        ("moons", dict(), 2),
        ("circles", dict(), 2),
        ("spirals", dict(), 2),
        ("spirals", F64["spirals"], 3),  # 301 examples: classes of 101, 100, 100
    ],
)
def test_classes_are_balanced_and_in_range(name, kwargs, num_classes):
    ds = load(name, **kwargs)
    _, y = all_rows(ds)
    labels = class_of(y, ds.num_classes)
    assert ds.num_classes == num_classes
    assert set(np.unique(labels)) == set(range(num_classes))
    counts = np.bincount(labels)
    assert counts.max() - counts.min() <= 1
    if name != "xor":  # the split is a partition: no example lost or repeated
        x, _ = all_rows(ds)
        assert len(np.unique(x, axis=0)) == len(x) == ds.num_train + ds.num_test


def test_xor_classic_points():
    ds = data.xor()
    np.testing.assert_array_equal(ds.x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(ds.y, [[0], [1], [1], [0]])
    assert ds.x.dtype == ds.y.dtype == jnp.float32 and ds.num_test == 0
    with_key = data.xor(jax.random.key(0), n=40, noise=0.0, test_fraction=0.2)
    x, y = all_rows(with_key)
    corner = (x @ [2, 1]).astype(int)  # the corners repeat, each with its own label
    np.testing.assert_array_equal(np.bincount(corner), 10)
    np.testing.assert_array_equal(y[:, 0], np.take([0, 1, 1, 0], corner))


def test_noiseless_moons_lie_on_their_half_circles():
    x, y = all_rows(data.moons(jax.random.key(0), noise=0.0))  # float32
    x = x.astype(np.float64)
    upper, lower = x[y[:, 0] == 0], x[y[:, 0] == 1]
    np.testing.assert_allclose(np.hypot(*upper.T), 1.0, rtol=1e-6)
    assert np.all(upper[:, 1] >= -1e-7)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1.0, rtol=1e-6)
    assert np.all(lower[:, 1] <= 0.5 + 1e-7)


def test_noiseless_circles_have_radius_one_and_factor():
    x, y = all_rows(data.circles(jax.random.key(0), noise=0.0, factor=0.3))  # float32
    radius = np.hypot(*x.astype(np.float64).T)
    np.testing.assert_allclose(radius[y[:, 0] == 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(radius[y[:, 0] == 1], 0.3, rtol=1e-6)


def test_noisy_circles_are_told_apart_by_radius():
    x, y = all_rows(load("circles"))
    radius = np.hypot(*x.T)
    outer, inner = radius[y[:, 0] == 0], radius[y[:, 0] == 1]
    assert abs(np.mean(outer) - 1.0) < 0.05 and abs(np.mean(inner) - 0.5) < 0.05
    assert np.mean((radius < 0.75) == (y[:, 0] == 1)) > 0.99


def test_noiseless_spirals_follow_their_equation():
    """θ = 2π·turns·r + 2πc/k (mod 2π), with r = ‖x‖."""
    ds = data.spirals(jax.random.key(0), turns=2.0, noise=0.0, **F64["spirals"])
    x, labels = all_rows(ds)
    r, theta = np.hypot(*x.T), np.arctan2(x[:, 1], x[:, 0])
    predicted = 2 * np.pi * (2.0 * r + labels / 3)
    gap = np.angle(np.exp(1j * (theta - predicted)))  # wrapped to (−π, π]
    keep = r > 1e-6  # the angle of the origin is undefined
    np.testing.assert_allclose(gap[keep], 0.0, atol=1e-9)
    assert np.all(r < 1)


def linear_accuracy(x, labels):
    """Training accuracy of the least-squares linear classifier on ±1 targets."""
    a = np.hstack([x, np.ones((len(x), 1))])
    w = np.linalg.lstsq(a, 2.0 * labels - 1, rcond=None)[0]
    return np.mean((a @ w > 0) == labels)


def nearest_neighbour_accuracy(ds):
    """Test accuracy of 1-nearest-neighbour on the training set."""
    x, x_test = np.asarray(ds.x, np.float64), np.asarray(ds.x_test, np.float64)
    distance = ((x_test[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
    predicted = class_of(ds.y, 2)[distance.argmin(axis=1)]
    return np.mean(predicted == class_of(ds.y_test, 2))


@pytest.mark.parametrize(
    ("name", "kwargs", "max_linear", "min_nearest"),
    [
        ("xor", dict(n=40, noise=0.1, test_fraction=0.2), 0.8, 1.0),
        ("moons", dict(), 0.92, 0.97),
        ("circles", dict(), 0.7, 0.97),
        ("spirals", dict(), 0.75, 0.95),
    ],
)
def test_not_linearly_separable_but_locally_separable(name, kwargs, max_linear, min_nearest):
    """A line fails on every 2-D classification set; the nearest neighbour succeeds."""
    ds = load(name, **kwargs)
    x, y = all_rows(ds)
    assert linear_accuracy(x, class_of(y, 2)) <= max_linear
    assert nearest_neighbour_accuracy(ds) >= min_nearest


def test_xor_best_line_gets_three_corners():
    ds = data.xor()
    assert linear_accuracy(np.asarray(ds.x), class_of(ds.y, 2)) <= 0.75


# ------------------------------------------------------------------ linear regression


def lstsq_params(ds):
    """Least squares with a bias column on train and test together: (w, b) as (k, d), (k,).

    numpy's solver, in float64: a reference independent of the code under test."""
    x, y = all_rows(ds)
    a = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    coef = np.linalg.lstsq(a, y.astype(np.float64), rcond=None)[0]
    return coef[:-1].T, coef[-1]


def test_least_squares_recovers_the_true_params_exactly_without_noise():
    ds = data.linear_regression(jax.random.key(0), noise=0.0, **F64["linear_regression"])
    assert ds.y.shape == (160, 2) and ds.true_params[0]["w"].shape == (2, 5)
    assert ds.true_params[0]["w"].dtype == jnp.float64
    w, b = lstsq_params(ds)
    np.testing.assert_allclose(w, ds.true_params[0]["w"], atol=1e-10)
    np.testing.assert_allclose(b, ds.true_params[0]["b"], atol=1e-10)


def test_least_squares_recovers_the_true_params_within_noise():
    ds = load("linear_regression")  # float32, noise 0.1, n 200: standard error ≈ 0.1/√200
    w, b = lstsq_params(ds)
    truth = ds.true_params[0]
    assert truth["w"].shape == (1, 5) and truth["b"].shape == (1,)
    assert truth["w"].dtype == jnp.float32
    np.testing.assert_allclose(w, truth["w"], atol=0.05)
    np.testing.assert_allclose(b, truth["b"], atol=0.05)
    residual = np.asarray(ds.y) - (np.asarray(ds.x) @ w.T + b)
    assert 0.07 < residual.std() < 0.13  # the noise level


def test_condition_sets_the_spread_of_the_input_covariance():
    """E[x xᵀ] = diag(s²) with s_j = condition^(−j/(2(d−1))); 200 samples estimate it roughly."""
    ds = data.linear_regression(jax.random.key(0), condition=100.0, **F64["linear_regression"])
    x, _ = all_rows(ds)
    scales = x.std(axis=0)
    expected = 100.0 ** -(np.arange(5) / 8)
    np.testing.assert_allclose(scales, expected, rtol=0.15)
    eig = np.linalg.eigvalsh(x.T @ x / len(x))
    assert 50 < eig.max() / eig.min() < 200


# ------------------------------------------------------------------ digits


def test_digits_standardised_with_training_statistics():
    ds = data.digits()
    assert ds.num_train + ds.num_test == 1797 and ds.num_test == 359
    x = np.asarray(ds.x, np.float64)
    std = x.std(axis=0)
    varying = std > 0
    assert 55 <= varying.sum() < 64  # a few border pixels are always blank
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(std[varying], 1.0, atol=1e-5)
    np.testing.assert_array_equal(x[:, ~varying], 0.0)  # constant pixels: 0, not NaN
    assert np.all(np.isfinite(ds.x_test))
    assert abs(float(np.mean(ds.x_test))) < 0.1  # the test set uses the training μ and σ
    for y in (ds.y, ds.y_test):
        assert set(np.unique(y)) == set(range(10))


def test_digits_split_is_fixed_and_ignores_the_key():
    a, b = data.digits(), data.digits(jax.random.key(7))
    for f in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_digits_raw_pixels_and_no_split():
    ds = data.digits(standardize=False, test_fraction=0.0, dtype=jnp.float64)
    assert ds.x.shape == (1797, 64) and ds.x_test.shape == (0, 64) and ds.y_test.shape == (0,)
    x = np.asarray(ds.x)
    assert ds.x.dtype == jnp.float64 and x.min() == 0 and x.max() == 16
    np.testing.assert_array_equal(x, np.round(x))
    counts = np.bincount(np.asarray(ds.y))
    assert counts.min() >= 170 and counts.max() <= 190


def test_digits_split_is_stratified():
    ds = data.digits()
    fractions = np.bincount(np.asarray(ds.y_test)) / np.bincount(np.asarray(ds.y))
    np.testing.assert_allclose(fractions, 359 / 1438, atol=0.02)


# ------------------------------------------------------------------ the Dataset object


def test_dataset_is_a_pytree_with_static_metadata():
    ds = load("linear_regression")
    assert len(jax.tree_util.tree_leaves(ds)) == 6  # x, y, x_test, y_test, w, b
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, ds)
    assert isinstance(doubled, data.Dataset) and doubled.loss == "mse"
    total = jax.jit(lambda d: d.x.sum() + d.num_train)(ds)  # properties work while tracing
    np.testing.assert_allclose(total, np.asarray(ds.x).sum() + 160, rtol=1e-5)


def test_dataset_repr_shows_shapes_not_values():
    text = repr(data.xor())
    assert text == (
        "Dataset(name='xor', x=float32[4,2], y=float32[4,1], x_test=float32[0,2], "
        "y_test=float32[0,1], loss='sigmoid_binary_cross_entropy', num_classes=2)"
    )


# ------------------------------------------------------------------ bad input

KEY = jax.random.key(0)

BAD_INPUT = [  # (function, args, kwargs, the argument the message must name)
    (data.moons, (KEY,), dict(n=0), "n"),
    (data.moons, (KEY,), dict(n=1), "n"),
    (data.moons, (KEY,), dict(n=2.5), "n"),
    (data.moons, (KEY,), dict(noise=-0.1), "noise"),
    (data.moons, (KEY,), dict(noise=float("nan")), "noise"),
    (data.moons, (KEY,), dict(test_fraction=1.0), "test_fraction"),
    (data.moons, (KEY,), dict(test_fraction=-0.1), "test_fraction"),
    (data.moons, (KEY,), dict(loss="hinge"), "loss"),
    (data.moons, (KEY,), dict(dtype=jnp.int32), "dtype"),
    (data.moons, (0,), dict(), "key"),
    (data.moons, (None,), dict(), "key"),
    (data.circles, (KEY,), dict(factor=1.0), "factor"),
    (data.circles, (KEY,), dict(factor=0.0), "factor"),
    (data.spirals, (KEY,), dict(turns=0), "turns"),
    (data.spirals, (KEY,), dict(num_classes=1), "num_classes"),
    (data.spirals, (KEY,), dict(n=2, num_classes=3), "n"),
    (data.linear_regression, (KEY,), dict(d=0), "d"),
    (data.linear_regression, (KEY,), dict(outputs=-1), "outputs"),
    (data.linear_regression, (KEY,), dict(condition=0.5), "condition"),
    (data.linear_regression, (KEY,), dict(loss="mse"), None),  # no such argument: TypeError
    (data.xor, (), dict(n=3), "n"),
    (data.xor, (), dict(noise=0.1), "key"),
    (data.xor, (), dict(test_fraction=0.5), "key"),
    (data.digits, (), dict(test_fraction=1.5), "test_fraction"),
    (data.digits, (), dict(standardize="yes"), "standardize"),
    (data.digits, (), dict(loss="nll"), "loss"),
]


@pytest.mark.parametrize(("fn", "args", "kwargs", "argname"), BAD_INPUT)
def test_bad_input_names_the_argument(fn, args, kwargs, argname):
    if argname is None:
        with pytest.raises(TypeError):
            fn(*args, **kwargs)
        return
    with pytest.raises(ValueError, match=rf"^{argname}: expected .*, got ") as info:
        fn(*args, **kwargs)
    assert "got" in str(info.value)


# ---------------------------------------------------------------- permutation


@pytest.mark.parametrize("n", [1, 2, 3, 10, 512, 1000, 70_000])
def test_permutation_is_a_permutation_of_range_n(n):
    order = data.permutation(jax.random.key(n), n)
    assert order.dtype == jnp.int32 and order.shape == (n,)
    np.testing.assert_array_equal(np.sort(np.asarray(order)), np.arange(n))


def test_permutation_same_key_same_order_other_key_other_order():
    a, b = (data.permutation(jax.random.key(s), 1000) for s in (0, 0))
    c = data.permutation(jax.random.key(1), 1000)
    np.testing.assert_array_equal(a, b)
    assert np.mean(np.asarray(a) == np.asarray(c)) < 0.05


def test_permutation_is_uniform_over_the_120_orders_of_five():
    """Chi-square over all 5! orders from 24 000 keys (200 per order expected)."""
    draws = jax.vmap(lambda k: data.permutation(k, 5))(jax.random.split(jax.random.key(7), 24_000))
    codes = np.asarray(draws) @ (5 ** np.arange(5))
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 120
    chi2 = np.sum((counts - 200.0) ** 2 / 200.0)
    assert chi2 < 175  # 119 degrees of freedom: P(χ² > 175) ≈ 6e-4


def test_permutation_positions_are_uniform_for_a_large_n():
    """Where item 0 and item n−1 land, over 4 000 keys, n = 2000: uniform in ten bins."""
    draws = jax.vmap(lambda k: data.permutation(k, 2000))(jax.random.split(jax.random.key(3), 4000))
    where = np.argsort(np.asarray(draws), axis=1)[:, [0, -1]]
    for column in where.T:
        counts = np.bincount(column // 200, minlength=10)
        assert np.sum((counts - 400.0) ** 2 / 400.0) < 30  # 9 d.o.f.: P(χ² > 30) ≈ 4e-4


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_permutation_refuses_a_bad_n(n):
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        data.permutation(jax.random.key(0), n)


def test_permutation_refuses_a_bad_key():
    with pytest.raises(ValueError, match="key: expected a PRNG key from jax.random.key"):
        data.permutation(0, 5)


def test_permutation_falls_back_to_jax_above_the_packed_limit(monkeypatch):
    """Past 2^_PACKED_MAX_BITS items too few random bits are left: jax.random.permutation."""
    monkeypatch.setattr(data, "_PACKED_MAX_BITS", 4)  # so 20 items (5 bits) take the fallback
    key = jax.random.key(9)
    got = data.permutation(key, 20)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, jax.random.permutation(key, 20))
