"""Checkpointed training resumes bit for bit; corrupted files are refused, never half-loaded.

The kill test runs ``fit(..., run_dir=d, checkpoint_every=2)`` in a subprocess,
waits until a checkpoint is on disk, kills the process with SIGKILL (at
whatever point it is, possibly in the middle of writing the next checkpoint),
resumes here with the same arguments and compares with an uninterrupted run
bit for bit (``assert_array_equal``).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, runs, train

MODEL = MLP((3, 6, 2), activation="tanh")
LOSS = "softmax_cross_entropy"
EPOCHS = 12


def problem(n=24):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)), rng.integers(0, 2, n)


def _noop(*args):
    pass


def run(run_dir, callback=_noop, **overrides):
    kwargs = dict(
        epochs=EPOCHS,
        key=jax.random.key(0),
        batch_size=5,
        eval_every=3,
        run_dir=run_dir,
        checkpoint_every=2,
        callback=callback,
        progress=False,
        learning_rate=0.05,
    )
    kwargs.update(overrides)
    return train.fit(MODEL, LOSS, "adam", problem(), **kwargs)


def assert_same_result(a, b):
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    jax.tree.map(np.testing.assert_array_equal, a.opt_state, b.opt_state)
    assert sorted(a.history) == sorted(b.history)
    for name in a.history:
        np.testing.assert_array_equal(a.history[name], b.history[name])


KILLED_SCRIPT = """
import sys, time
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[2])
import test_checkpoint as t
t.run(sys.argv[1], callback=lambda *a: time.sleep(0.2))  # slow enough to be killed mid-run
"""


def test_a_killed_training_resumes_bit_identical_to_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_SCRIPT), killed, os.path.dirname(__file__)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    manifest = killed / runs.CHECKPOINT_MANIFEST
    deadline = time.monotonic() + 120
    step = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.is_file():
                step = json.loads(manifest.read_text())["step"]
                if step >= 4:
                    break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, stderr
    done = json.loads(manifest.read_text())["step"]
    assert 4 <= done < EPOCHS, done  # killed mid-run, after a checkpoint

    resumed = run(killed)
    full = run(tmp_path / "full")
    assert_same_result(resumed, full)
    np.testing.assert_array_equal(full.history["epoch"], np.arange(1, EPOCHS + 1))
    # the finished run's checkpoint is complete: running again trains nothing, returns it
    again = run(killed, callback=lambda *a: pytest.fail("trained again"))
    assert_same_result(again, full)


def test_every_checkpoint_of_a_pipelined_run_resumes_bit_identical(tmp_path, monkeypatch):
    """No callback: checkpoints ride on the pipelined reads (written after the next block is
    dispatched), with diagnostics on other epochs. Each checkpoint written is copied aside
    and resumed from; every resumed run must equal the uninterrupted one."""
    import shutil

    monkeypatch.setattr(train.checkpoints._CheckpointWriter, "BUSY_FRACTION", 1.0)  # no throttling
    saved = []
    real_save = runs.save_checkpoint

    def save_and_copy(run_dir, *, step, **kwargs):
        path = real_save(run_dir, step=step, **kwargs)
        shutil.copytree(run_dir, tmp_path / f"at-{step}")
        saved.append(step)
        return path

    monkeypatch.setattr(runs, "save_checkpoint", save_and_copy)
    kwargs = dict(callback=None, diagnostics_every=3, eval_every=3)
    full = run(tmp_path / "full", **kwargs)
    monkeypatch.setattr(runs, "save_checkpoint", real_save)
    assert saved and saved == sorted(saved) and saved[-1] == EPOCHS
    assert set(saved) <= {2, 4, 6, 8, 10, 12}
    for step in saved[:-1]:
        resumed = run(tmp_path / f"at-{step}", **kwargs)
        assert_same_result(resumed, full)


def test_the_writer_keeps_the_newest_snapshot_and_reports_errors(tmp_path, monkeypatch):
    writes = []
    release = __import__("threading").Event()
    empty = ({}, dict)  # no trees, and a history snapshot that builds {}

    def slow_save(run_dir, *, step, **kwargs):
        release.wait(5)
        writes.append(step)

    monkeypatch.setattr(runs, "save_checkpoint", slow_save)
    writer = train.checkpoints._CheckpointWriter(tmp_path, {})
    for step in range(1, 6):  # the first write blocks: 2, 3, 4 are replaced by newer ones
        writer.submit(step, empty, {})
        time.sleep(0.01)
    release.set()
    writer.close()
    assert writes == [1, 5] and writer.skipped == [2, 3, 4]

    def failing_save(run_dir, *, step, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runs, "save_checkpoint", failing_save)
    writer = train.checkpoints._CheckpointWriter(tmp_path, {})
    writer.submit(1, empty, {})
    with pytest.raises(OSError, match="disk full"):
        writer.close()


def test_checkpoints_end_blocks_and_hold_the_position(tmp_path):
    assert train.epochs._epochs_per_call(100, [2]) == 2  # checkpoint_every joins the host events
    result = run(tmp_path, eval_every=0, callback=None, callback_every=1, epochs=7)
    manifest = json.loads((tmp_path / runs.CHECKPOINT_MANIFEST).read_text())
    assert manifest["step"] == 7  # the end of training is always checkpointed
    assert manifest["fingerprint"]["batch_size"] == 5
    assert sorted(manifest["files"]) == ["history.npz", "opt_state.npz", "params.npz", "state.npz"]
    (only,) = (tmp_path / runs.CHECKPOINT_DIR).iterdir()  # older steps are removed
    assert only.name.startswith("000000007-") and manifest["dir"] == f"checkpoints/{only.name}"
    ckpt = runs.load_checkpoint(tmp_path, like={"opt_state": result.opt_state})
    assert int(ckpt.trees["state"]["epoch"]) == 7 and int(ckpt.trees["state"]["diverged_at"]) == -1
    np.testing.assert_array_equal(ckpt.trees["history"]["step_loss"], result.history["step_loss"])


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({"batch_size": 4}, r"batch_size: checkpoint 5, now 4"),
        ({"learning_rate": 0.01}, r"optimizer: checkpoint .*0\.05.*now .*0\.01"),
        ({"key": jax.random.key(1)}, r"differs in: key"),
        ({"checkpoint_every": 3}, r"differs in: checkpoint_every"),
        ({"grad": "auto"}, r"differs in: grad"),
    ],
    ids=["batch size", "learning rate", "seed", "checkpoint interval", "grad"],
)
def test_a_checkpoint_of_another_config_is_refused(tmp_path, change, differs):
    run(tmp_path, epochs=2, eval_every=0, callback=None)
    with pytest.raises(ValueError, match=r"run_dir: expected .* to hold a checkpoint of this"):
        run(tmp_path, epochs=4, eval_every=0, callback=None, **change)
    with pytest.raises(ValueError, match=differs):
        run(tmp_path, epochs=4, eval_every=0, callback=None, **change)


def test_other_data_and_fewer_epochs_are_refused(tmp_path):
    run(tmp_path, epochs=4, eval_every=0, callback=None)
    x, y = problem()
    with pytest.raises(ValueError, match=r"differs in: data"):
        train.fit(
            MODEL, LOSS, "adam", (x + 1e-9, y), epochs=4, key=jax.random.key(0), batch_size=5,
            eval_every=0, run_dir=tmp_path, checkpoint_every=2, progress=False,
            learning_rate=0.05,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"epochs: expected at least the 4 epochs already done"):
        run(tmp_path, epochs=3, eval_every=0, callback=None)


def test_checkpoint_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"run_dir: expected a directory .* checkpoint_every=2"):
        run(None)
    with pytest.raises(ValueError, match=r"checkpoint_every: expected a non-negative integer"):
        run(tmp_path, checkpoint_every=-1)
    with pytest.raises(TypeError, match=r"run_dir: expected a directory path .*, got int"):
        run(3)


def test_a_corrupted_checkpoint_is_refused_not_half_loaded(tmp_path):
    run(tmp_path, epochs=2, eval_every=0, callback=None)
    (params_file,) = (tmp_path / runs.CHECKPOINT_DIR).glob("*/params.npz")
    data = bytearray(params_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    params_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"the checkpoint is corrupted. Nothing was loaded"):
        run(tmp_path, epochs=4, eval_every=0, callback=None)


def test_a_diverged_run_is_checkpointed_and_rerun_returns_it(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3))
    data = (x, x @ np.ones((3, 1)))
    # float32 params (the session runs under x64): ×~1e3 per step overflows within 30 epochs
    params = MLP((3, 1)).init(jax.random.key(1), dtype=jnp.float32)

    def diverging():
        return train.fit(
            MLP((3, 1)), "mse", "sgd", data, epochs=30, key=jax.random.key(0), run_dir=tmp_path,
            checkpoint_every=4, eval_every=0, progress=False, learning_rate=1e3, params=params,
        )  # fmt: skip

    with pytest.warns(train.DivergedWarning) as first:
        a = diverging()
    with pytest.warns(train.DivergedWarning) as second:
        b = diverging()
    assert a.diverged == b.diverged == str(first[0].message) == str(second[0].message)
    assert len(a.history["epoch"]) < 30
    assert_same_result(a, b)


# ---------------------------------------------------------------- files refused by runs


@pytest.fixture
def saved(tmp_path):
    params = MODEL.init(jax.random.key(0))
    runs.save_run(tmp_path, model=MODEL, config={"loss": LOSS}, params=params)
    return tmp_path, params


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip data byte", "flip header byte"])
def test_load_pytree_refuses_a_damaged_file(saved, damage):
    path = saved[0] / runs.PARAMS_FILE
    size = path.stat().st_size
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: size // 2])
    else:
        at = (
            path.read_bytes().index('"format"'.encode("utf-32-le"))
            if damage == "flip header byte"
            else size // 3
        )
        _flip(path, at)
    with pytest.raises(ValueError, match=r"path: expected .*(truncated or corrupted|corrupted)"):
        runs.load_pytree(path)
    with pytest.raises(ValueError, match=r"got different contents"):
        runs.load_run(saved[0])  # meta.json's checksum catches it first
    with pytest.raises(ValueError, match=r"truncated or corrupted|is corrupted"):
        runs.load_run(saved[0], verify=False)  # and load_pytree's own checks after


def test_a_leaf_whose_bytes_changed_is_named(tmp_path):
    """A change the zip CRC cannot see (rewritten consistently) is caught by the leaf SHA-256."""
    path = runs.save_pytree(tmp_path / "t.npz", {"a": np.arange(4.0)})
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["leaf_0"] = arrays["leaf_0"] + 1
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"leaf 0 \(\['a'\]\) of .* SHA-256 .* corrupted"):
        runs.load_pytree(path)


def test_files_saved_before_checksums_still_load(tmp_path):
    path = runs.save_pytree(tmp_path / "t.npz", [{"w": jnp.ones((2, 3))}])
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["__tree__"][()]))
    for leaf in header["leaves"]:
        del leaf["sha256"]
    arrays["__tree__"] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    np.testing.assert_array_equal(runs.load_pytree(path)[0]["w"], np.ones((2, 3)))
