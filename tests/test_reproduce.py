"""scripts/reproduce.py: every reproduction's --quick run completes and reports every field.

The published numbers themselves are measured by the full runs (their
results.json lives in docs/reproductions/), not asserted here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce.py"
# name -> the fields each model's entry must have
MODEL_FIELDS = {
    "published_test_accuracy_percent",
    "measured_test_accuracy_percent",
    "per_seed",
    "difference_points",
    "within_3_points",
    "diverged_members",
    "wall_time_s",
}


def test_help_lists_every_reproduction():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "mnist1d-baselines" in out and "--quick" in out and "(default: 5)" in out


def test_mnist1d_baselines_quick_writes_figure_arrays_and_results(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "GDJAX_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "mnist1d-baselines", "--quick", "--no-progress",
         "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True and results["settings"]["seeds"] == 2
    assert set(results["models"]) == {"logistic regression", "MLP", "CNN"}
    for name, entry in results["models"].items():
        assert MODEL_FIELDS <= set(entry), name
        assert len(entry["per_seed"]) == 2
        assert 0 <= entry["measured_test_accuracy_percent"]["mean"] <= 100
    assert (out / "mnist1d_baselines.png").read_bytes()[:4] == b"\x89PNG"
    import numpy as np

    with np.load(out / "arrays.npz") as arrays:
        assert arrays["CNN/test_accuracy"].shape[0] == 2


@pytest.mark.parametrize(
    "argv, match",
    [
        (["nope"], "invalid choice"),
        (["mnist1d-baselines", "--seeds", "1"], "--seeds: expected at least 2"),
    ],
)
def test_bad_arguments_are_refused_by_name(argv, match):
    proc = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and match in proc.stderr
