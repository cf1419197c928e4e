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
TRAIN = [
    "--data", "digits", "--hidden", "256,256", "--epochs", "200", "--batch-size", "8",
    "--checkpoint-every", "2", "--diagnostics-every", "0", "--no-progress",
]  # fmt: skip


def _interrupt(argv: list[str], ready: Path, signum: int) -> tuple[int, str]:
    """Start ``scripts/train.py argv``, send ``signum`` once ``ready`` holds a checkpoint
    of epoch ≥ 4; return the exit status and stderr."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *argv],
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
    assert 4 <= done < 200

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
