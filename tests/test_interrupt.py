"""Scripts stopped by Ctrl-C or SIGTERM say so in one line, exit 130 / 143, and resume.

The scripts run in subprocesses (as a user runs them); a signal is sent once
the run has written a checkpoint, and the command printed in the message is
run again to finish, which must give what an uninterrupted run gives, bit for
bit, history and dtypes included.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from gdjax import cli, runs

ROOT = Path(__file__).resolve().parents[1]


# A shell starts background jobs (as CI may run this suite) with SIGINT ignored, and a
# Python started so keeps ignoring it: the children restore Ctrl-C's KeyboardInterrupt
# first, then run the script as `python script.py args` would (no fork of this process).
RUN_WITH_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _command(script: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", RUN_WITH_CTRL_C, str(script), *args]


EPOCHS = 60  # ~75 ms each: the signal (sent at a checkpoint of epoch >= 4) lands mid-run
TRAIN = [
    "--data", "digits", "--hidden", "256,256", "--epochs", str(EPOCHS), "--batch-size", "8",
    "--checkpoint-every", "2", "--diagnostics-every", "0", "--no-progress",
]  # fmt: skip


def _interrupt(argv: list[str], ready: Path, signum: int) -> tuple[int, str]:
    """Start ``scripts/train.py argv``, send ``signum`` once ``ready`` holds a checkpoint
    of epoch ≥ 4; return the exit status and stderr."""
    proc = subprocess.Popen(
        _command(ROOT / "scripts" / "train.py", *argv),
        cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ready.is_file() and json.loads(ready.read_text())["step"] >= 4:
                break
            time.sleep(0.02)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stderr


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_training_says_how_to_resume_and_resumes_bit_identical(
    tmp_path, signum, code
):
    out = tmp_path / "run"
    status, stderr = _interrupt([*TRAIN, "--out", str(out)], out / runs.CHECKPOINT_MANIFEST, signum)
    assert status == code, stderr[-2000:]
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith(f"interrupted while training ({out}); saved: checkpoint of epoch")
    assert "Traceback" not in stderr
    resume = lines[-1].split("; resume: ", 1)[1].rstrip(".")
    done = json.loads((out / runs.CHECKPOINT_MANIFEST).read_text())["step"]
    assert 4 <= done < EPOCHS

    # the printed command finishes the run; a fresh run gives the same, bit for bit
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for argv in (
        shlex.split(resume)[1:],
        ["scripts/train.py", *TRAIN, "--out", str(tmp_path / "full")],
    ):
        finished = subprocess.run(
            [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert finished.returncode == 0, finished.stderr[-2000:]
    full = tmp_path / "full"
    a, b = runs.load_run(out), runs.load_run(full)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    assert set(a.history) == set(b.history)
    for name, value in b.history.items():
        np.testing.assert_array_equal(a.history[name], value, err_msg=name)
        assert a.history[name].dtype == value.dtype, name


def test_the_message_names_the_innermost_stage_and_calls_what_is_saved():
    with cli.stage("sweeping", saved="nothing", resume="python a.py"):
        with cli.stage("sweeping random_2d", saved=lambda: "12 of 40 points", resume="python b.py"):
            assert cli.interruption_message() == (
                "interrupted while sweeping random_2d; saved: 12 of 40 points; resume: python b.py."
            )
        assert cli.interruption_message().endswith("resume: python a.py.")
    assert cli.interruption_message() == "interrupted; nothing was saved."

    def stopped(argv):
        with cli.stage("working", saved="x"):
            raise KeyboardInterrupt

    assert cli.run(stopped) == cli.EXIT_SIGINT


@pytest.mark.parametrize("text", ["16,x", "0", "-3,4"])
def test_hidden_widths_are_checked_by_name(text):
    with pytest.raises(ValueError, match="--hidden: expected positive integers"):
        cli.parse_hidden(text)


def test_an_interrupted_landscape_sweep_resumes_to_the_uninterrupted_values(tmp_path):
    """SIGINT while training (compiling) and mid-sweep: one line, 130, and the rerun says
    what it reuses and finishes with the values of a run never interrupted."""
    args = ["--resolution", "41", "--chunk-size", "32", "--epochs", "30", "--no-progress"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    script = str(ROOT / "scripts" / "landscape.py")

    def start(out):
        return subprocess.Popen(
            _command(Path(script), *args, "--out", str(out)), cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    out = tmp_path / "a"
    early = start(out)
    # the first line comes as training starts (compiling): long before any sweep point
    assert early.stdout.readline().startswith("training the default model")
    early.send_signal(signal.SIGINT)
    _, stderr = early.communicate(timeout=60)
    assert early.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted while training")

    proc = start(out)
    record = out / "sweeps" / "random_2d" / "sweep.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if record.is_file() and json.loads(record.read_text())["points_done"] >= 320:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted while sweeping random_2d; saved: random_2d: "), line
    assert "points done, resuming" in line and "Traceback" not in stderr
    resume = shlex.split(line.split("; resume: ", 1)[1].rstrip("."))
    finished = subprocess.run(
        [sys.executable, *resume[1:]], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "training: reused" in finished.stdout
    assert "random_2d: " in finished.stdout and "points done, resuming" in finished.stdout
    fresh = subprocess.run(
        [sys.executable, script, *args, "--out", str(tmp_path / "b")], cwd=ROOT, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    for name in ("random_2d", "interpolation", "pca_2d", "convex_2d"):
        with (
            np.load(out / "sweeps" / name / "grid.npz") as a,
            np.load(tmp_path / "b" / "sweeps" / name / "grid.npz") as b,
        ):
            for key in b.files:
                if key not in ("config", "calls"):  # calls: the log of wall times
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}/{key}")
            if "calls" in b.files:  # the resumed sweep computed the same points in all
                resumed, once = (json.loads(str(c["calls"])) for c in (a, b))
                assert sum(c["points_computed"] for c in resumed) == sum(
                    c["points_computed"] for c in once
                ), name
