"""fit_population: every member equals its own fit; divergence stays with its member.

The population runs the fit blocks under ``vmap``; member i must give what
``fit(..., key=keys[i], **its hyper-parameters)`` gives, float64 to 1e-12 and
float32 to 1e-6, for full-batch, SGD and minibatch schedules and several
optimizers. The multi-device case runs in a subprocess with 8 simulated CPU
devices, as in tests/test_data_parallel.py.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdjax import MLP, data, train

MODEL = MLP((2, 6, 2), activation="tanh")
LOSS = "softmax_cross_entropy"
N = 40
P = 3


def problem(dtype=jnp.float64, n=N):
    ds = data.moons(jax.random.key(7), n=n + n // 4)
    x = jnp.asarray(ds.x[:n], dtype)
    return x, jnp.asarray(ds.y[:n, 0], jnp.int32)


def keys(p=P):
    return jax.random.split(jax.random.key(0), p)


def tree_error(a, b) -> float:
    return max(
        float(jnp.max(jnp.abs(jnp.asarray(u, jnp.float64) - jnp.asarray(v, jnp.float64))))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def member_hyperparams(hyperparams, i):
    return {k: float(v[i]) if np.ndim(v) else v for k, v in hyperparams.items()}


# (optimizer, per-member and shared hyper-parameters)
OPTIMIZERS = {
    "sgd": dict(learning_rate=np.array([0.05, 0.1, 0.2])),
    "momentum": dict(learning_rate=np.array([0.05, 0.1, 0.02]), beta=np.array([0.5, 0.9, 0.8])),
    "adam": dict(learning_rate=np.array([0.01, 0.03, 0.003]), b1=0.8),
}
SCHEDULES = {"full batch": None, "minibatch, ragged": 16, "sgd": 1}
CASES = [  # every schedule, every optimizer, both precisions; not their whole product
    *[("sgd", s, "float64") for s in SCHEDULES],
    ("momentum", "minibatch, ragged", "float64"),
    ("adam", "full batch", "float64"),
    ("adam", "sgd", "float64"),
    ("momentum", "full batch", "float32"),
    ("adam", "minibatch, ragged", "float32"),
]


@pytest.mark.parametrize("optimizer, schedule, dtype", CASES)
def test_every_member_equals_its_own_fit(optimizer, schedule, dtype):
    dtype = jnp.dtype(dtype)
    x, y = problem(dtype, n=N if SCHEDULES[schedule] != 1 else 12)
    hyperparams = OPTIMIZERS[optimizer]
    common = dict(
        batch_size=SCHEDULES[schedule], epochs=3, eval_every=2, progress=False
    )  # fmt: skip
    params = jax.vmap(lambda k: MODEL.init(jax.random.split(k)[0], dtype=dtype))(keys())
    pop = train.fit_population(
        MODEL, LOSS, optimizer, (x, y), keys=keys(), params=params, **common, **hyperparams
    )
    tol = 1e-12 if dtype == jnp.float64 else 1e-6
    assert pop.history["loss"].shape == (P, 3)
    for i in range(P):
        one = train.fit(
            MODEL, LOSS, optimizer, (x, y), key=keys()[i],
            params=jax.tree.map(lambda a, i=i: a[i], params),
            **common, **member_hyperparams(hyperparams, i),
        )  # fmt: skip
        member = pop.member(i)
        assert tree_error(member.params, one.params) <= tol
        assert set(member.history) == set(one.history)
        for name, value in one.history.items():
            assert member.history[name].shape == value.shape, name
            np.testing.assert_allclose(member.history[name], value, rtol=0, atol=tol, err_msg=name)
        assert member.diverged is None


def test_members_drawn_from_their_keys_equal_fit_with_that_key():
    """Without params, member i's init and shuffle come from keys[i] as fit derives them."""
    x, y = problem()
    pop = train.fit_population(
        MODEL, LOSS, "sgd", (x, y), keys=keys(), epochs=2, batch_size=8, progress=False,
        learning_rate=0.1,
    )  # fmt: skip
    for i in range(P):
        one = train.fit(
            MODEL, LOSS, "sgd", (x, y), key=keys()[i], epochs=2, batch_size=8, progress=False,
            learning_rate=0.1,
        )  # fmt: skip
        assert tree_error(pop.member(i).params, one.params) == 0.0
        np.testing.assert_array_equal(pop.history["step_loss"][i], one.history["step_loss"])


def conv_apply(params, x):
    """A tiny 1-D conv net as a plain function: conv (kernel 3) → tanh → mean → dense."""
    h = jax.lax.conv_general_dilated(
        x[:, None, :], params["conv"], window_strides=(1,), padding="SAME",
        dimension_numbers=("NCH", "OIH", "NCH"),
    )  # fmt: skip
    h = jnp.tanh(h).mean(axis=2)
    return h @ params["dense"]


def test_a_function_model_trains_as_a_population():
    x = jax.random.normal(jax.random.key(1), (24, 10))
    y = (x.sum(axis=1) > 0).astype(jnp.int32)
    init = lambda k: {  # noqa: E731
        "conv": 0.5 * jax.random.normal(k, (4, 1, 3)),
        "dense": 0.5 * jax.random.normal(jax.random.fold_in(k, 1), (4, 2)),
    }
    params = jax.vmap(init)(keys())
    lrs = np.array([0.1, 0.3, 1.0])
    pop = train.fit_population(
        conv_apply, LOSS, "sgd", (x, y), keys=keys(), params=params, epochs=4, batch_size=8,
        progress=False, learning_rate=lrs,
    )  # fmt: skip
    assert pop.history["train_accuracy"].shape == (P, 4)
    for i in range(P):
        one = train.fit(
            conv_apply, LOSS, "sgd", (x, y), key=keys()[i],
            params=jax.tree.map(lambda a, i=i: a[i], params), epochs=4, batch_size=8,
            progress=False, learning_rate=float(lrs[i]),
        )  # fmt: skip
        assert tree_error(pop.member(i).params, one.params) <= 1e-12


def linear_problem():
    ds = data.linear_regression(jax.random.key(3), n=64, d=5)
    return MLP((5, 1), output_activation="identity"), (ds.x, ds.y)


def test_a_diverging_member_is_frozen_and_leaves_the_others_bitwise_unchanged():
    model, xy = linear_problem()
    sane = np.array([0.01, 0.02, 0.005])
    wild = np.array([0.01, 1e3, 0.005])
    common = dict(keys=keys(), epochs=40, batch_size=16, progress=False, eval_every=2)
    reference = train.fit_population(model, "mse", "sgd", xy, learning_rate=sane, **common)
    with pytest.warns(train.DivergedWarning, match="member 1 of 3"):
        got = train.fit_population(model, "mse", "sgd", xy, learning_rate=wild, **common)
    assert got.diverged[0] is None and got.diverged[2] is None
    assert "diverged at epoch" in got.diverged[1]
    assert got.diverged_step[1] >= 0 and list(got.diverged_step[[0, 2]]) == [-1, -1]
    for i in (0, 2):
        mine, theirs = got.member(i), reference.member(i)
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_array_equal(a, b)
    # the diverged member keeps its last finite params; its later steps are NaN in the history
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(got.member(1).params))
    step_loss = got.history["step_loss"][1]
    assert np.all(np.isnan(step_loss[got.diverged_step[1] + 1 :]))
    assert np.all(np.isfinite(step_loss[: got.diverged_step[1]]))
    assert got.history["loss"].shape == (P, 40)
    # alone, the wild member stops where it diverged in the population, with those params
    with pytest.warns(train.DivergedWarning):
        alone = train.fit(
            model, "mse", "sgd", xy, key=keys()[1], epochs=40, batch_size=16, progress=False,
            learning_rate=1e3,
        )  # fmt: skip
    assert tree_error(alone.params, got.member(1).params) == 0.0
    assert alone.diverged == got.diverged[1]


def test_a_population_stops_when_every_member_has_diverged():
    model, xy = linear_problem()
    with pytest.warns(train.DivergedWarning):
        got = train.fit_population(
            model, "mse", "sgd", xy, keys=keys(2), epochs=500, progress=False,
            learning_rate=np.array([1e3, 1e4]),
        )  # fmt: skip
    assert all(m is not None for m in got.diverged)
    assert got.history["epoch"].shape[1] <= int(got.diverged_step.max()) + 1 < 500


def test_an_interrupted_population_resumes_bit_identical(tmp_path):
    x, y = problem()
    common = dict(
        keys=keys(), epochs=8, batch_size=16, progress=False, eval_every=2, checkpoint_every=2,
        learning_rate=np.array([0.05, 0.1, 0.2]),
    )  # fmt: skip

    def stop_at_5(epoch, *args):
        if epoch == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit_population(
            MODEL, LOSS, "momentum", (x, y), run_dir=tmp_path / "a", callback=stop_at_5,
            callback_every=1, **common,
        )  # fmt: skip
    resumed = train.fit_population(
        MODEL, LOSS, "momentum", (x, y), run_dir=tmp_path / "a", callback=lambda *a: None,
        callback_every=1, **common,
    )  # fmt: skip
    full = train.fit_population(
        MODEL, LOSS, "momentum", (x, y), run_dir=tmp_path / "b", callback=lambda *a: None,
        callback_every=1, **common,
    )  # fmt: skip
    for a, b in zip(jax.tree.leaves(resumed[:2]), jax.tree.leaves(full[:2]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(resumed.history) == set(full.history)
    for name in full.history:
        np.testing.assert_array_equal(resumed.history[name], full.history[name], err_msg=name)
    # another population in the same directory is refused by name
    with pytest.raises(ValueError, match="differs in: .*optimizer"):
        train.fit_population(
            MODEL, LOSS, "momentum", (x, y), run_dir=tmp_path / "a",
            **{**common, "learning_rate": np.array([0.05, 0.1, 0.3])},
        )  # fmt: skip


BAD = [
    (dict(keys=jax.random.split(jax.random.key(0), 0)), "keys: expected at least one key"),
    (dict(keys=jax.random.key(0)), "keys: expected a 1-D array of P PRNG keys"),
    (dict(keys=np.zeros(3)), "keys: expected a 1-D array"),
    (dict(learning_rate=np.array([0.1, 0.2])), r"learning_rate: .* per member \(3"),
    (dict(learning_rate=np.ones((3, 1))), r"learning_rate: .*got shape \(3, 1\)"),
    (dict(learning_rate=np.array([0.1, -0.2, 0.1])), "learning_rate: expected a positive"),
    (dict(learning_rate=np.array([0.1, np.nan, 0.1])), "learning_rate: expected a positive"),
    (dict(learning_rate=0.1, gamma=np.array([1.0, 2.0, 3.0])), "hyperparams: not accepted"),
    (dict(params=MODEL.init(jax.random.key(0))), "params: expected a leading member axis"),
    (dict(optimizer="nope"), "optimizer: expected one of"),
    (
        dict(optimizer=optax.sgd(0.1), learning_rate=np.array([0.1, 0.2, 0.3])),
        "learning_rate: per-member values need a named optimizer",
    ),
    (dict(batch_size=0), "batch_size: expected None"),
    (dict(epochs=0), "epochs: expected"),
    (dict(mesh="everywhere"), "mesh: expected"),
]


@pytest.mark.parametrize("overrides, match", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_refused_by_name_before_compiling(overrides, match, compilations):
    x, y = problem()
    kwargs = dict(keys=keys(), epochs=2, progress=False, learning_rate=0.1)
    kwargs.update(overrides)
    optimizer = kwargs.pop("optimizer", "sgd")
    compilations.count = 0
    with pytest.raises(ValueError, match=match):
        train.fit_population(MODEL, LOSS, optimizer, (x, y), **kwargs)
    assert compilations.count == 0


SCRIPT = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
sys.path.insert(0, sys.argv[2])
import test_population as t
from gdjax import train

assert len(jax.devices()) == 8, jax.devices()
x, y = t.problem()
pop = train.fit_population(t.MODEL, t.LOSS, "adam", (x, y), keys=t.keys(8), epochs=3,
                           batch_size=16, mesh="local", progress=False,
                           learning_rate=np.linspace(0.01, 0.05, 8))
assert pop.params[0]["w"].sharding.mesh.size == 8
out = {f"p{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(pop.params))}
out.update({f"h/{k}": v for k, v in pop.history.items()})
try:
    train.fit_population(t.MODEL, t.LOSS, "sgd", (x, y), keys=t.keys(6), epochs=1,
                         mesh="local", progress=False, learning_rate=0.1)
except ValueError as e:
    out["error"] = np.asarray(str(e))
np.savez(sys.argv[1], **out)
"""


def test_eight_devices_equal_one(tmp_path):
    result = tmp_path / "result.npz"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(result), os.path.dirname(__file__)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(result)
    x, y = problem()
    one = train.fit_population(
        MODEL, LOSS, "adam", (x, y), keys=keys(8), epochs=3, batch_size=16, progress=False,
        learning_rate=np.linspace(0.01, 0.05, 8),
    )  # fmt: skip
    # one member per device runs unbatched products: equal to the batched run to rounding
    for i, leaf in enumerate(jax.tree.leaves(one.params)):
        np.testing.assert_allclose(got[f"p{i}"], leaf, rtol=0, atol=1e-12)
    for name, value in one.history.items():
        np.testing.assert_allclose(got[f"h/{name}"], value, rtol=0, atol=1e-12, err_msg=name)
    assert "splits evenly over the 8 devices" in str(got["error"]), json.dumps(str(got["error"]))


def test_the_train_script_trains_a_grid_of_seeds_and_learning_rates(tmp_path, capsys):
    """``--seeds 2 --lr a,b``: one run directory; member (seed, η) equals the single run.

    The data set is drawn from ``--seed`` and shared; the members' seeds draw
    their init and shuffles. So member (3, 0.2) is the run ``--seed 3 --lr 0.2``."""
    import importlib.util
    import pathlib

    from gdjax import runs

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    spec = importlib.util.spec_from_file_location("train_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    common = ["--hidden", "8", "--epochs", "4", "--batch-size", "32", "--float64", "--no-progress"]
    argv = [*common, "--seed", "3", "--seeds", "2", "--lr", "0.05,0.2"]
    assert script.main([*argv, "--out", str(tmp_path / "pop")]) == 0
    out = capsys.readouterr().out
    assert "4 members" in out
    pop = runs.load_run(tmp_path / "pop")
    assert pop.config["members"] == 4
    assert pop.config["member_config"][3] == {"seed": 4, "learning_rate": 0.2}
    assert pop.history["loss"].shape == (4, 4)
    png = tmp_path / "pop" / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert script.main([*common, "--seed", "3", "--lr", "0.2", "--out", str(tmp_path / "one")]) == 0
    one = runs.load_run(tmp_path / "one")
    assert tree_error(jax.tree.map(lambda a: a[1], pop.params), one.params) <= 1e-12
    np.testing.assert_allclose(pop.history["step_loss"][1], one.history["step_loss"], atol=1e-12)
    assert tree_error(jax.tree.map(lambda a: a[3], pop.params), one.params) > 1e-3  # seed 4


def test_training_curves_of_a_population_show_median_band_and_members():
    from gdjax import plots

    x, y = problem()
    pop = train.fit_population(
        MODEL, LOSS, "sgd", (x, y), keys=keys(), epochs=3, progress=False,
        learning_rate=np.array([0.05, 0.1, 0.2]),
    )  # fmt: skip
    fig = plots.training_curves(pop.history, title="t")
    loss_ax, accuracy_ax = fig.axes
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert "C (epoch mean), median" in labels and "train loss, median" in labels
    faint = [line for line in loss_ax.get_lines() if line.get_alpha() == 0.15]
    assert len(faint) == 2 * P  # every member's epoch loss and train loss
    assert len(loss_ax.collections) == 2  # the 10–90 % bands
    median = next(line for line in loss_ax.get_lines() if line.get_label().startswith("C ("))
    np.testing.assert_allclose(median.get_ydata(), np.median(pop.history["loss"], axis=0))
