"""gdjax.data.mnist1d: the package's arrays exactly, the cache and its repair, the registry.

Every test writes its cache under pytest's tmp_path (``cache_dir=`` or
``GDJAX_CACHE_DIR``), never into the user's home. Generating the set takes a
few seconds, so one module-scoped cache serves the tests that only read, and
the package's own arrays are made once.
"""

import importlib.metadata
import random

import jax
import jax.numpy as jnp
import mnist1d.data
import numpy as np
import pytest

from gdjax import data, losses

SHAPES = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}


@pytest.fixture(scope="module")
def package():
    """The mnist1d package's own arrays, made with its default arguments."""
    state = np.random.get_state()  # noqa: NPY002 (the package seeds the legacy global generator)
    made = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    np.random.set_state(state)  # noqa: NPY002
    return {name: np.asarray(made[name]) for name in SHAPES}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache directory holding MNIST-1D, written by a first call."""
    directory = tmp_path_factory.mktemp("gdjax-cache")
    data.mnist1d(cache_dir=directory)
    return directory


def fail(*args, **kwargs):
    raise AssertionError("make_dataset called: the cache was not used")


@pytest.fixture
def no_generation(monkeypatch):
    """Make generating fail, so a call that succeeds must have read the cache."""
    monkeypatch.setattr(mnist1d.data, "make_dataset", fail)


def cache_file(directory):
    (path,) = directory.glob("mnist1d-*.npz")
    return path


def assert_equals_package(ds, package, dtype=np.float32):
    np.testing.assert_array_equal(np.asarray(ds.x), package["x"].astype(dtype), strict=True)
    np.testing.assert_array_equal(
        np.asarray(ds.x_test), package["x_test"].astype(dtype), strict=True
    )
    np.testing.assert_array_equal(np.asarray(ds.y), package["y"].astype(np.int32), strict=True)
    np.testing.assert_array_equal(
        np.asarray(ds.y_test), package["y_test"].astype(np.int32), strict=True
    )


# ------------------------------------------------------------------ the arrays


def test_equal_to_the_package_arrays_cast_to_float32(cache, package):
    assert_equals_package(data.mnist1d(cache_dir=cache), package)


def test_float64_gives_the_package_originals(cache, package):
    ds = data.mnist1d(cache_dir=cache, dtype=jnp.float64)  # x64 is on for the session
    assert_equals_package(ds, package, dtype=np.float64)
    # the float32 default really is a rounding of these, not the same numbers
    assert not np.array_equal(package["x"].astype(np.float32).astype(np.float64), package["x"])


def test_shapes_dtypes_and_class_balance(cache):
    ds = data.mnist1d(cache_dir=cache)
    assert (ds.x.shape, ds.y.shape, ds.x_test.shape, ds.y_test.shape) == tuple(SHAPES.values())
    assert ds.x.dtype == ds.x_test.dtype == jnp.float32
    assert ds.y.dtype == ds.y_test.dtype == jnp.int32
    assert (ds.name, ds.loss, ds.num_classes) == ("mnist1d", "softmax_cross_entropy", 10)
    assert (ds.num_inputs, ds.num_outputs, ds.num_train, ds.num_test) == (40, 10, 4000, 1000)
    counts = np.bincount(np.asarray(ds.y), minlength=10)
    test_counts = np.bincount(np.asarray(ds.y_test), minlength=10)
    np.testing.assert_array_equal(counts + test_counts, 500)  # 500 of each digit in all
    assert counts.min() >= 350 and test_counts.min() >= 50  # each class on both sides
    everything = np.concatenate([np.asarray(ds.x), np.asarray(ds.x_test)]).astype(np.float64)
    assert abs(everything.mean()) < 1e-6 and abs(everything.std() - 1) < 1e-6  # standardised


@pytest.mark.parametrize("loss", ["mse", "sigmoid_binary_cross_entropy"])
def test_float_losses_get_one_hot_targets(cache, loss):
    ds, default = data.mnist1d(cache_dir=cache, loss=loss), data.mnist1d(cache_dir=cache)
    assert ds.y.shape == (4000, 10) and ds.y.dtype == jnp.float32 and ds.loss == loss
    np.testing.assert_array_equal(np.asarray(ds.y).argmax(axis=1), default.y)
    np.testing.assert_array_equal(np.asarray(ds.y).sum(axis=1), 1.0)
    assert data.mnist1d(cache_dir=cache, loss=losses.get(loss)).loss == loss


def test_the_key_is_ignored(cache):
    a, b = data.mnist1d(cache_dir=cache), data.mnist1d(jax.random.key(3), cache_dir=cache)
    np.testing.assert_array_equal(a.x, b.x)


# ------------------------------------------------------------------ the cache


def test_the_second_call_reads_the_cache(tmp_path, package, monkeypatch):
    monkeypatch.setenv("GDJAX_CACHE_DIR", str(tmp_path / "c"))
    first = data.mnist1d()
    version = importlib.metadata.version("mnist1d")
    # one file, named after the package version; nothing temporary left over
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"mnist1d-{version}.npz"]
    monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
    second = data.mnist1d()
    assert_equals_package(first, package)
    assert_equals_package(second, package)


def test_generating_leaves_the_global_random_state_alone(tmp_path):
    # the package calls np.random.seed(42) and random.seed(42) (legacy global generators)
    before = np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002
    data.mnist1d(cache_dir=tmp_path)
    np.testing.assert_array_equal(np.random.get_state()[1], before[0])  # noqa: NPY002
    assert random.getstate() == before[1]


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside the x array
    path.write_bytes(bytes(raw))


def empty(path):
    path.write_bytes(b"")


def other_arrays(path):
    from gdjax import runs

    runs.save_pytree(path, {"x": np.zeros((3, 40)), "y": np.zeros(3, np.int64)})


@pytest.mark.parametrize("damage", [truncate, flip_a_byte, empty, other_arrays])
def test_a_damaged_cache_is_regenerated_with_a_warning(damage, cache, tmp_path, package):
    path = tmp_path / cache_file(cache).name
    path.write_bytes(cache_file(cache).read_bytes())
    good = path.read_bytes()
    damage(path)
    assert path.read_bytes() != good
    with pytest.warns(data.CacheWarning, match=r"truncated or corrupted, so it is regenerated"):
        ds = data.mnist1d(cache_dir=tmp_path)
    assert_equals_package(ds, package)
    assert path.read_bytes() == good  # written again, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_an_unwritable_cache_warns_and_still_returns_the_data(tmp_path, package):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.warns(data.CacheWarning, match=r"could not write the cache file"):
        ds = data.mnist1d(cache_dir=not_a_directory)
    assert_equals_package(ds, package)


def test_the_cache_directory_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GDJAX_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "gdjax"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir() == tmp_path / "xdg" / "gdjax"
    monkeypatch.setenv("GDJAX_CACHE_DIR", str(tmp_path / "mine"))
    assert data.default_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("GDJAX_CACHE_DIR", "")  # empty counts as unset
    assert data.default_cache_dir() == tmp_path / "xdg" / "gdjax"


# ------------------------------------------------------------------ registry and errors


def test_registered_by_name(cache, monkeypatch, no_generation):
    monkeypatch.setenv("GDJAX_CACHE_DIR", str(cache))
    assert "mnist1d" in data.names()
    assert data.get("mnist1d").name == "mnist1d"
    ds = data.from_config({"data": "mnist1d", "seed": 0, "data_kwargs": {"loss": "mse"}})
    assert ds.y.shape == (4000, 10) and ds.loss == "mse"


@pytest.mark.parametrize(
    ("kwargs", "argname"),
    [
        (dict(loss="hinge"), "loss"),
        (dict(dtype=jnp.int32), "dtype"),
        (dict(cache_dir=3), "cache_dir"),
        (dict(cache_dir=""), "cache_dir"),
    ],
)
def test_bad_input_names_the_argument(kwargs, argname, no_generation):
    with pytest.raises(ValueError, match=rf"^{argname}: expected .*, got "):
        data.mnist1d(**kwargs)


def test_options_of_other_sets_are_refused(no_generation):
    with pytest.raises(TypeError, match="test_fraction"):
        data.mnist1d(test_fraction=0.5)
