"""Run directories: bit-exact round trips, atomic writes, clear errors."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax
from gdjax import MLP, runs
from gdjax.activations import Activation

SIZES = (3, 5, 2)


def _bits(x):
    """The raw bytes of an array, so NaN payloads and −0.0 compare exactly."""
    x = np.asarray(x)
    return x.dtype, x.shape, x.tobytes()


def assert_trees_bit_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert _bits(x) == _bits(y)


def _params(key, dtype):
    params = MLP(SIZES, "tanh").init(key, dtype=dtype)
    # Values that a lossy format would change: NaN, −0.0, ±inf, a subnormal.
    tiny = np.finfo(np.dtype(dtype)).smallest_subnormal
    specials = jnp.array([jnp.nan, -0.0, jnp.inf, -jnp.inf, tiny], dtype)
    params[0]["b"] = specials
    return params


def _save(path, key, **kwargs):
    model = MLP(SIZES, "tanh")
    params = model.init(key)
    args = dict(
        model=model,
        config={"loss": "mse", "optimizer": {"name": "adam", "learning_rate": 1e-3}, "seed": 0},
        params=params,
        history={"loss": np.linspace(1.0, 0.1, 5), "grad_norm": np.ones((5, 2), np.float32)},
        meta_extra={"wall_time_s": 1.5},
    )
    args.update(kwargs)
    return runs.save_run(path, **args), args


# ---------------------------------------------------------------- atomic writes


def _no_temp_files(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_creates_and_replaces(tmp_path):
    target = tmp_path / "a.bin"
    assert runs.atomic_write_bytes(target, b"one") == target
    runs.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert _no_temp_files(tmp_path)


@pytest.mark.parametrize("fail_at", ["replace", "fsync"])
def test_failed_write_leaves_old_file_and_no_partial_file(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "config.json"
    runs.atomic_write_json(target, {"version": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match="disk full"):
        runs.atomic_write_json(target, {"version": 2, "big": list(range(1000))})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args):
        raise OSError("boom")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="boom"):
        runs.save_pytree(tmp_path / "params.npz", [{"w": np.ones(3)}])
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_json_converts_numpy_and_refuses_objects(tmp_path):
    target = tmp_path / "c.json"
    runs.atomic_write_json(
        target, {"lr": np.float32(0.5), "n": np.int64(3), "w": jnp.arange(2), "t": (1, 2)}
    )
    assert json.loads(target.read_text()) == {"lr": 0.5, "n": 3, "w": [0, 1], "t": [1, 2]}
    with pytest.raises(ValueError, match="obj: expected JSON-serialisable values"):
        runs.atomic_write_json(tmp_path / "d.json", {"f": object()})
    assert not (tmp_path / "d.json").exists() and _no_temp_files(tmp_path)


# ---------------------------------------------------------------- models


@pytest.mark.parametrize(
    "model",
    [
        MLP((2, 1)),
        MLP((4, 16, 16, 3), activation="relu", output_activation="identity"),
        MLP((1, 1, 1), activation="sigmoid", output_activation="sigmoid"),
        MLP((2, 8, 1), activation="gelu", output_activation="tanh"),
    ],
)
def test_model_dict_round_trip(model):
    d = runs.model_to_dict(model)
    assert json.loads(json.dumps(d)) == d
    assert runs.model_from_dict(d) == model


def test_custom_activation_is_refused_by_name():
    square = Activation("square", lambda z: z * z, lambda z: 2 * z)
    with pytest.raises(ValueError, match=r"model.activation: .*custom Activation 'square'"):
        runs.model_to_dict(MLP((2, 3, 1), activation=square))
    # A look-alike that shadows a built-in name is refused too.
    fake = Activation("tanh", jnp.sin, jnp.cos)
    with pytest.raises(ValueError, match=r"model.output_activation: .*custom Activation 'tanh'"):
        runs.model_to_dict(MLP((2, 3, 1), output_activation=fake))


@pytest.mark.parametrize(
    "d, match",
    [
        ([2, 3], r"d: expected a dict with keys 'sizes'"),
        ({"activation": "tanh"}, r"d: expected a dict with keys 'sizes'"),
        ({"sizes": [2, 1], "depth": 3}, r"d: expected only the keys .* got also \['depth'\]"),
        ({"sizes": [2, 1], "activation": "swish"}, r"activation: expected one of"),
        ({"sizes": [2]}, r"sizes: expected at least two entries"),
    ],
)
def test_model_from_dict_errors(d, match):
    with pytest.raises(ValueError, match=match):
        runs.model_from_dict(d)


# ---------------------------------------------------------------- pytrees


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_params_round_trip_bit_identical_without_template(tmp_path, key, dtype):
    params = _params(key, dtype)
    runs.save_pytree(tmp_path / "p.npz", params)
    loaded = runs.load_pytree(tmp_path / "p.npz")
    assert isinstance(loaded, list) and all(isinstance(p, dict) for p in loaded)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(loaded))
    assert_trees_bit_identical(loaded, params)
    assert_trees_bit_identical(runs.load_pytree(tmp_path / "p.npz", like=params), params)


def test_nested_containers_and_dtypes_round_trip(tmp_path, key):
    tree = {
        "a": (np.arange(3, dtype=np.int32), None, [np.float16(1.5), 2.0]),
        "b": {"bf16": jnp.array([1.0, -2.5], jnp.bfloat16), "bool": np.array([True, False])},
        "empty": [],
        "key": jax.random.key(7),
        "u8": np.arange(4, dtype=np.uint8).reshape(2, 2),
    }
    runs.save_pytree(tmp_path / "t.npz", tree)
    loaded = runs.load_pytree(tmp_path / "t.npz")
    assert jax.tree.structure(loaded) == jax.tree.structure(tree)
    assert loaded["b"]["bf16"].dtype == jnp.bfloat16
    assert jnp.array_equal(jax.random.key_data(loaded["key"]), jax.random.key_data(tree["key"]))
    np.testing.assert_array_equal(
        jax.random.uniform(loaded["key"], (3,)), jax.random.uniform(tree["key"], (3,))
    )
    plain = {k: v for k, v in tree.items() if k != "key"}
    assert_trees_bit_identical({k: v for k, v in loaded.items() if k != "key"}, plain)
    as_np = runs.load_pytree(tmp_path / "t.npz", as_numpy=True)
    assert isinstance(as_np["u8"], np.ndarray)


def test_adam_state_round_trip_needs_a_template(tmp_path, key):
    params = _params(key, jnp.float64)
    optimizer = optax.adam(1e-3)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = optimizer.update(grads, optimizer.init(params), params)  # count = 1, mu, nu ≠ 0
    runs.save_pytree(tmp_path / "s.npz", state)

    with pytest.raises(ValueError, match=r"like: .*ScaleByAdamState.*like=optimizer.init"):
        runs.load_pytree(tmp_path / "s.npz")
    loaded = runs.load_pytree(tmp_path / "s.npz", like=optimizer.init(params))
    assert_trees_bit_identical(loaded, state)
    abstract = jax.eval_shape(optimizer.init, params)
    assert_trees_bit_identical(runs.load_pytree(tmp_path / "s.npz", like=abstract), state)


def test_wrong_template_is_named(tmp_path, key):
    params = _params(key, jnp.float64)
    runs.save_pytree(tmp_path / "s.npz", optax.adam(1e-3).init(params))
    other = optax.sgd(0.1, momentum=0.9).init(params)
    with pytest.raises(ValueError, match=r"like: expected a template with the structure"):
        runs.load_pytree(tmp_path / "s.npz", like=other)
    wider = optax.adam(1e-3).init(MLP((3, 6, 2)).init(key, dtype=jnp.float64))
    with pytest.raises(
        ValueError, match=r"like: expected leaf .*mu.* of shape \(5,\) .*got \(6,\)"
    ):
        runs.load_pytree(tmp_path / "s.npz", like=wider)


def test_load_pytree_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: expected a .npz file"):
        runs.load_pytree(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    with pytest.raises(ValueError, match=r"written by gdjax.runs.save_pytree"):
        runs.load_pytree(tmp_path / "plain.npz")


# ---------------------------------------------------------------- run directories


def test_run_round_trip(tmp_path, key):
    path, args = _save(tmp_path / "run", key)
    # the run's files live in one version directory, named by the `current` link; the flat
    # names are links through it, for readers
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [*runs.RUN_FILES, runs.CURRENT_LINK, runs.SAVES_DIR]
    )
    (version,) = (path / runs.SAVES_DIR).iterdir()
    assert sorted(p.name for p in version.iterdir()) == sorted(runs.RUN_FILES)
    for name in runs.RUN_FILES:
        assert (path / name).read_bytes() == (version / name).read_bytes()
    run = runs.load_run(path)
    assert run.path == path and run.model == args["model"] and run.opt_state is None
    assert_trees_bit_identical(run.params, args["params"])
    assert set(run.history) == {"loss", "grad_norm"}
    assert isinstance(run.history["loss"], np.ndarray)
    assert_trees_bit_identical(run.history, args["history"])
    x = jnp.ones((4, SIZES[0]), jnp.float32)
    assert jnp.array_equal(run.model.apply(run.params, x), args["model"].apply(args["params"], x))


def test_config_holds_what_reruns_need(tmp_path, key):
    path, args = _save(tmp_path / "run", key)
    config = json.loads((path / "config.json").read_text())
    assert config == {**args["config"], "model": runs.model_to_dict(args["model"])}
    assert runs.load_run(path).config == config


def test_meta_records_versions_devices_and_files(tmp_path, key):
    path, _ = _save(tmp_path / "run", key)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format"] == "gdjax.run" and meta["format_version"] == 2
    assert meta["versions"]["gdjax"] == gdjax.__version__
    assert meta["versions"]["jax"] == jax.__version__
    assert meta["versions"]["optax"] == optax.__version__
    assert meta["versions"]["numpy"] == np.__version__
    assert set(meta["versions"]) >= {"jaxlib", "python"}
    assert meta["devices"][0]["platform"] == jax.devices()[0].platform
    assert len(meta["devices"]) == jax.device_count()
    assert meta["x64"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", meta["created"])
    assert meta["wall_time_s"] == 1.5
    assert set(meta["files"]) == {"config.json", "params.npz", "history.npz"}


def test_opt_state_round_trip_via_template_or_optimizer(tmp_path, key):
    model = MLP(SIZES, "tanh")
    params = model.init(key)
    optimizer = optax.adam(1e-3)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = optimizer.update(grads, optimizer.init(params), params)
    path, _ = _save(tmp_path / "run", key, params=params, opt_state=state)
    assert (path / "opt_state.npz").is_file()
    by_template = runs.load_run(path, opt_state_like=optimizer.init(params)).opt_state
    by_optimizer = runs.load(path, optimizer=optimizer).opt_state
    assert_trees_bit_identical(by_template, state)
    assert_trees_bit_identical(by_optimizer, state)
    with pytest.raises(ValueError, match="optimizer: expected either opt_state_like or"):
        runs.load_run(path, opt_state_like=state, optimizer=optimizer)


def test_resave_replaces_files_and_drops_stale_opt_state(tmp_path, key):
    params = MLP(SIZES, "tanh").init(key)
    path, _ = _save(tmp_path / "run", key, opt_state=optax.adam(1e-3).init(params))
    newer = jax.tree.map(lambda p: p + 1, params)
    runs.save_run(path, model=MLP(SIZES, "tanh"), config={}, params=newer, history={"loss": 1.0})
    run = runs.load_run(path)
    assert not (path / "opt_state.npz").exists()
    assert_trees_bit_identical(run.params, newer)
    assert run.history["loss"].shape == ()
    with pytest.raises(FileNotFoundError, match="saved without one"):
        runs.load_run(path, optimizer=optax.adam(1e-3))


def test_empty_history_and_no_meta_extra(tmp_path, key):
    path, _ = _save(tmp_path / "run", key, history=None, meta_extra=None)
    assert runs.load_run(path).history == {}


def test_history_lists_become_arrays_and_dicts_nest(tmp_path, key):
    history = {"loss": [0.5, 0.25], "layers": {"grad_norm": np.ones((2, 3)), "step": (10, 20)}}
    path, _ = _save(tmp_path / "run", key, history=history)
    loaded = runs.load_run(path).history
    np.testing.assert_array_equal(loaded["loss"], [0.5, 0.25])
    np.testing.assert_array_equal(loaded["layers"]["step"], [10, 20])
    assert loaded["layers"]["grad_norm"].shape == (2, 3)


def test_interrupted_save_is_detected(tmp_path, key):
    path, _ = _save(tmp_path / "run", key)
    runs.save_pytree(path / "params.npz", MLP(SIZES, "tanh").init(jax.random.key(1)))
    with pytest.raises(ValueError, match=r"params.npz: expected the file recorded in meta.json"):
        runs.load_run(path)
    assert runs.load_run(path, verify=False).params is not None


def test_missing_directory_or_file_is_named(tmp_path, key):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(missing))}.*does not exist.*"
                       r"config.json, params.npz, history.npz and meta.json"):  # fmt: skip
        runs.load_run(missing)
    path, _ = _save(tmp_path / "run", key)
    (version,) = (path / runs.SAVES_DIR).iterdir()
    for name in runs.RUN_FILES:
        data = (version / name).read_bytes()
        (version / name).unlink()
        with pytest.raises(FileNotFoundError, match=rf"has no saves/.*/{re.escape(name)}\. A run"):
            runs.load_run(path)
        (version / name).write_bytes(data)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        runs.load_run(tmp_path / "file")


def test_unknown_activation_writes_nothing(tmp_path, key):
    square = Activation("square", lambda z: z * z, lambda z: 2 * z)
    model = MLP(SIZES, activation=square)
    with pytest.raises(ValueError, match="custom Activation 'square'"):
        runs.save_run(tmp_path / "run", model=model, config={}, params=model.init(key))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"params": []}, r"params: expected a list of 2 layer dicts"),
        ({"config": {"model": {"sizes": [1, 1]}}}, r"config: expected no 'model' key"),
        ({"config": {"data": object()}}, r"config: expected JSON-serialisable"),
        ({"config": [1]}, r"config: expected a dict, got list"),
        ({"history": [1.0, 2.0]}, r"history: expected a dict of arrays"),
        ({"meta_extra": {"devices": 1}}, r"meta_extra: expected keys other than .*\['devices'\]"),
        ({"history": {"loss": [[1.0], [1.0, 2.0]]}}, r"history\['loss'\]: expected an array"),
        ({"model": "mlp"}, r"model: expected a gdjax.MLP, got str"),
    ],
)
def test_save_run_bad_arguments(tmp_path, key, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _save(tmp_path / "run", key, **kwargs)
    assert not (tmp_path / "run").exists()  # checked before anything is written


def test_new_run_dir_is_unique(tmp_path):
    a = runs.new_run_dir(tmp_path / "runs", "sweep")
    b = runs.new_run_dir(tmp_path / "runs", "sweep")
    c = runs.new_run_dir(tmp_path / "runs")
    assert len({a, b, c}) == 3 and all(p.is_dir() for p in (a, b, c))
    assert re.fullmatch(r"\d{8}-\d{6}-sweep(-\d+)?", a.name)
    for bad in ("../up", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="name: expected a label"):
            runs.new_run_dir(tmp_path, bad)
