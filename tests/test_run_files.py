"""Run files survive a failed save, refuse any damaged file by name, and have one writer.

Issue 21: a save that fails at any byte (a full disk) leaves the previous run,
checkpoint or sweep loadable and equal to what it was; every file a run or a
checkpoint depends on (manifests and configs included) is verified, and an
edited, truncated or byte-flipped one is refused with a message naming it; a
directory being written is locked, a second process is told which process
holds it, a stale lock is taken over; leftovers of killed saves are removed by
the next save and ignored by loads.
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdjax import MLP, landscape, runs

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX links and flock")

MODEL = MLP((2, 3, 1), "tanh")
REPO = Path(__file__).resolve().parents[1]


def _params(seed):
    return MODEL.init(jax.random.key(seed), dtype=jnp.float64)


def _save(path, seed, *, opt_state=None):
    params = _params(seed)
    runs.save_run(
        path,
        model=MODEL,
        config={"loss": "mse", "seed": seed},
        params=params,
        opt_state=opt_state,
        history={"loss": np.linspace(1.0, 0.5, 3 + seed)},
    )
    return params


def _assert_run_is(path, seed):
    run = runs.load_run(path)
    assert run.config["seed"] == seed
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(_params(seed)), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(run.history["loss"], np.linspace(1.0, 0.5, 3 + seed))


class FullDisk:
    """``os.write`` that writes ``budget`` bytes in all, then raises ENOSPC (a full disk)."""

    def __init__(self, budget):
        self.budget, self.written, self.calls = budget, 0, []
        self._write = os.write

    def __call__(self, fd, data):
        data = memoryview(data).cast("B")
        left = self.budget - self.written
        if left <= 0:
            raise OSError(errno.ENOSPC, "No space left on device (test)")
        n = self._write(fd, data[:left])
        self.written += n
        self.calls.append(n)
        return n


def _budgets(monkeypatch, save):
    """Byte counts at which to fail ``save``: 0, each write's boundaries ±1, and a stride."""
    probe = FullDisk(1 << 40)
    with monkeypatch.context() as m:
        m.setattr(os, "write", probe)
        save()
    ends = np.cumsum(probe.calls)
    ks = {0, *np.linspace(0, probe.written - 1, 24).astype(int)}
    for end in ends:
        ks |= {int(end) - 1, int(end), int(end) + 1}
    return sorted(k for k in ks if k < probe.written), probe.written


def _fails_at(monkeypatch, k, save):
    with monkeypatch.context() as m:
        m.setattr(os, "write", FullDisk(k))
        with pytest.raises(OSError, match="No space left"):
            save()


def _no_leftovers(directory):
    names = [p.name for p in Path(directory).rglob("*")]
    assert not [n for n in names if n.endswith(".tmp") or n == runs.LOCK_FILE], names


# ---------------------------------------------------------------- a full disk


def test_a_run_save_failing_at_any_byte_leaves_the_previous_run(tmp_path, monkeypatch):
    path = tmp_path / "run"
    _save(path, 0)
    ks, total = _budgets(monkeypatch, lambda: _save(tmp_path / "probe", 1))
    assert len(ks) > 30 and total > 3000
    for k in ks:
        _fails_at(monkeypatch, k, lambda: _save(path, 1))
        _assert_run_is(path, 0)
    _save(path, 1)  # the next save succeeds and removes what the failed ones left
    _assert_run_is(path, 1)
    assert len(list((path / runs.SAVES_DIR).iterdir())) == 1
    _no_leftovers(path)


def _checkpoint(run_dir, step):
    runs.save_checkpoint(
        run_dir,
        step=step,
        trees={"params": _params(step), "history": {"loss": np.arange(step, dtype=float)}},
        fingerprint={"run": "test"},
    )


def _assert_checkpoint_is(run_dir, step):
    ckpt = runs.load_checkpoint(run_dir)
    assert ckpt.step == step
    for a, b in zip(
        jax.tree.leaves(ckpt.trees["params"]), jax.tree.leaves(_params(step)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ckpt.trees["history"]["loss"], np.arange(step, dtype=float))


def test_a_checkpoint_failing_at_any_byte_leaves_the_previous_one(tmp_path, monkeypatch):
    _checkpoint(tmp_path, 3)
    ks, _ = _budgets(monkeypatch, lambda: _checkpoint(tmp_path / "probe", 4))
    for k in ks:
        _fails_at(monkeypatch, k, lambda: _checkpoint(tmp_path, 4))
        _assert_checkpoint_is(tmp_path, 3)
    _checkpoint(tmp_path, 4)
    _assert_checkpoint_is(tmp_path, 4)
    assert len(list((tmp_path / runs.CHECKPOINT_DIR).iterdir())) == 1
    _no_leftovers(tmp_path)


def _sweep_f(p):
    return jnp.sum(jnp.tanh(p[0]) ** 2)


SWEEP = dict(
    params=[jnp.array([0.3, -0.2])],
    d1=[jnp.array([1.0, 0.0])],
    d2=[jnp.array([0.0, 1.0])],
    alphas=np.linspace(-1, 1, 4),
    betas=np.linspace(-1, 1, 5),
)


def _sweep(out, **kw):
    return landscape.sweep_2d(_sweep_f, *SWEEP.values(), out=out, vmap_width=2, chunk_size=4, **kw)


def _stored(out):
    _, done, values, _ = landscape._load_state(Path(out), [None])
    return done, values[None]


def test_a_sweep_failing_at_any_byte_keeps_a_valid_state(tmp_path, monkeypatch):
    full = _sweep(None)
    out = tmp_path / "sweep"
    _sweep(out, max_chunks=1)
    done0, values0 = _stored(out)
    assert 0 < done0.sum() < done0.size
    before = {name: (out / name).read_bytes() for name in (landscape.GRID_FILE, "sweep.json")}
    shutil.copytree(out, tmp_path / "probe")
    ks, _ = _budgets(monkeypatch, lambda: _sweep(tmp_path / "probe", max_chunks=1))
    for k in ks:
        for name, data in before.items():  # each try starts from the same stored state
            (out / name).write_bytes(data)
        _fails_at(monkeypatch, k, lambda: _sweep(out, max_chunks=1))
        done, values = _stored(out)  # loadable: never a partial grid.npz
        assert np.all(done[done0])  # nothing finished is lost
        np.testing.assert_array_equal(values[done], full.ravel()[done])
    np.testing.assert_array_equal(_sweep(out), full)  # and it resumes to the same values
    _no_leftovers(out)


# ---------------------------------------------------------------- damaged files


def _edit_json(path, change):
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _damage(path: Path, how: str, edit):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x04
        path.write_bytes(bytes(flipped))
    else:
        edit(path)


def _edit_npz(path):
    """A valid .npz with one leaf changed, written through the link: only checksums tell."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["leaf_0"] = arrays["leaf_0"] + 1
    with open(path, "wb") as f:
        np.savez(f, **arrays)


RUN_EDITS = {
    "config.json": lambda p: _edit_json(p, lambda c: c["model"].update(activation="relu")),
    "meta.json": lambda p: _edit_json(p, lambda m: m.update(x64=not m["x64"])),
    "params.npz": _edit_npz,
    "history.npz": _edit_npz,
    "opt_state.npz": _edit_npz,
}


@pytest.mark.parametrize("how", ["edit", "truncate", "flip"])
@pytest.mark.parametrize("name", list(RUN_EDITS))
def test_each_damaged_run_file_is_refused_by_name(tmp_path, name, how):
    path = tmp_path / "run"
    params = _params(0)
    _save(path, 0, opt_state=optax.adam(1e-3).init(params))
    _damage(path / name, how, RUN_EDITS[name])  # through the link: the run's own file
    with pytest.raises(ValueError, match=re.escape(name)):
        runs.load_run(path, optimizer=optax.adam(1e-3))


def test_a_run_file_replaced_beside_its_link_is_refused(tmp_path):
    """An editor that writes a new file over the link: the flat name no longer matches."""
    path = tmp_path / "run"
    _save(path, 0)
    text = (path / "config.json").read_text().replace("tanh", "relu")
    (path / "config.json").unlink()
    (path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=r"run/config.json: expected the file recorded"):
        runs.load_run(path)


CHECKPOINT_EDITS = {
    "checkpoint.json": lambda p: _edit_json(p, lambda m: m.update(step=1)),
    "params.npz": _edit_npz,
    "history.npz": _edit_npz,
}


@pytest.mark.parametrize("how", ["edit", "truncate", "flip"])
@pytest.mark.parametrize("name", list(CHECKPOINT_EDITS))
def test_each_damaged_checkpoint_file_is_refused_by_name(tmp_path, name, how):
    _checkpoint(tmp_path, 3)
    ckpt = runs.load_checkpoint(tmp_path)
    file = tmp_path / name if name == runs.CHECKPOINT_MANIFEST else ckpt.path / name
    _damage(file, how, CHECKPOINT_EDITS[name])
    with pytest.raises(ValueError, match=re.escape(name)):
        runs.load_checkpoint(tmp_path)


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_grid_npz_is_named_with_what_to_do(tmp_path, how):
    out = tmp_path / "sweep"
    _sweep(out, max_chunks=1)
    _damage(out / landscape.GRID_FILE, how, None)
    with pytest.raises(ValueError, match=r"grid.npz.*truncated or corrupted.*Delete it to start"):
        _sweep(out)


# ---------------------------------------------------------------- older layouts


def test_a_committed_run_of_the_first_layout_still_loads():
    run = runs.load_run(REPO / "docs" / "reproductions" / "taylor-real" / "train")
    assert run.meta["format_version"] == 1 and run.model.sizes[0] > 0


def test_a_first_layout_run_is_replaced_whole_by_a_new_save(tmp_path, monkeypatch):
    path = tmp_path / "run"
    _save(tmp_path / "new", 0)
    path.mkdir()
    (version,) = (tmp_path / "new" / runs.SAVES_DIR).iterdir()
    for name in runs.RUN_FILES:  # the flat files of format version 1
        (path / name).write_bytes((version / name).read_bytes())
    _assert_run_is(path, 0)
    _fails_at(monkeypatch, 2000, lambda: _save(path, 1))
    _assert_run_is(path, 0)
    _save(path, 1)
    _assert_run_is(path, 1)
    assert all((path / name).is_symlink() for name in runs.RUN_FILES)


def test_without_symlinks_current_is_a_pointer_file_and_saves_still_switch(tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError(errno.EPERM, "symlinks not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    path = tmp_path / "run"
    _save(path, 0)
    current = path / runs.CURRENT_LINK
    assert current.is_file() and not current.is_symlink()
    assert current.read_text().startswith(f"{runs.SAVES_DIR}/")
    _assert_run_is(path, 0)
    _save(path, 1)
    _assert_run_is(path, 1)
    assert len(list((path / runs.SAVES_DIR).iterdir())) == 1  # the old version removed
    _no_leftovers(path)


# ---------------------------------------------------------------- leftovers


def test_leftovers_of_killed_saves_are_ignored_then_removed(tmp_path):
    path = tmp_path / "run"
    _save(path, 0)
    _checkpoint(path, 2)
    junk = [
        path / ".params.npz.0123456789abcdef.tmp",
        path / ".checkpoint.json.fedcba9876543210.tmp",
        path / runs.SAVES_DIR / "20990101T000000-deadbeef" / "params.npz",
        path / runs.CHECKPOINT_DIR / "000000009-deadbeef" / "params.npz",
    ]
    for file in junk:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"half written")
    _assert_run_is(path, 0)  # loads ignore them
    _assert_checkpoint_is(path, 2)
    _save(path, 1)
    _checkpoint(path, 3)
    assert not [f for f in junk if f.exists() or f.parent.exists() and f.parent != path]
    _no_leftovers(path)


# ---------------------------------------------------------------- two writers

HOLDER = textwrap.dedent(
    """
    import sys
    from gdjax import runs
    held = runs.lock(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_a_second_process_is_told_who_holds_the_directory(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(runs.DirectoryInUseError, match=rf"in use: process {child.pid} on"):
            runs.lock(tmp_path)
        with pytest.raises(runs.DirectoryInUseError, match=rf"path: .* process {child.pid}"):
            _save(tmp_path, 0)
        with pytest.raises(runs.DirectoryInUseError, match=rf"process {child.pid}"):
            _checkpoint(tmp_path, 1)
        assert not (tmp_path / runs.CURRENT_LINK).exists()  # nothing was written
    finally:
        child.communicate("\n", timeout=60)
    # the holder is gone (its lock file may stay after a kill): the next writer takes over
    (tmp_path / runs.LOCK_FILE).write_text(json.dumps({"pid": child.pid, "host": os.uname()[1]}))
    with runs.lock(tmp_path) as held:
        assert json.loads(held.path.read_text())["pid"] == os.getpid()
        with runs.lock(tmp_path):  # the same process may lock it again
            _save(tmp_path, 0)
        assert held.path.is_file()
    assert not held.path.exists()
    _assert_run_is(tmp_path, 0)


def test_a_sweep_directory_in_use_is_refused_before_computing(tmp_path, compilations):
    out = tmp_path / "sweep"
    with runs.lock(out, name="out"):
        # the same process: reentrant, so the sweep proceeds
        _sweep(out, max_chunks=1)
    assert _stored(out)[0].sum() > 0


def test_landscape_script_checks_its_inputs_before_creating_anything(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import landscape as script
    finally:
        sys.path.pop(0)
    assert script.main([str(tmp_path / "typo"), "--no-progress"]) == 2
    assert "run_dir: expected a run directory" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert script.main(["--out", str(tmp_path / "file" / "sub"), "--no-progress"]) == 2
    assert "--out: expected a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
