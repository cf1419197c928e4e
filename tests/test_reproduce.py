"""scripts/reproduce.py: every reproduction's --quick run completes and reports every field.

The published numbers themselves are measured by the full runs (their
results.json lives in docs/reproductions/), not asserted here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    for name in ("mnist1d-baselines", "edge-of-stability", "landscape-depth", "taylor-real"):
        assert name in out
    assert "--quick" in out and "(default: 5)" in out


def quick(name: str, tmp_path: Path) -> tuple[Path, dict]:
    """Run ``reproduce.py name --quick`` as a user would; its directory and results.json."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "GDJAX_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), name, "--quick", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["name"] == name and results["quick"] is True and results["wall_time_s"] > 0
    return out, results


def test_mnist1d_baselines_quick_writes_figure_arrays_and_results(tmp_path):
    out, results = quick("mnist1d-baselines", tmp_path)
    assert results["quick"] is True and results["settings"]["seeds"] == 2
    assert set(results["models"]) == {"logistic regression", "MLP", "CNN"}
    for name, entry in results["models"].items():
        assert MODEL_FIELDS <= set(entry), name
        assert len(entry["per_seed"]) == 2
        assert 0 <= entry["measured_test_accuracy_percent"]["mean"] <= 100
    assert (out / "mnist1d_baselines.png").read_bytes()[:4] == b"\x89PNG"
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


def test_landscape_depth_quick_reports_every_net(tmp_path):
    out, results = quick("landscape-depth", tmp_path)
    nets = results["nets"]
    assert set(nets) == {f"{d} hidden, {r}" for d in (2, 4) for r in ("plain", "residual")}
    for name, entry in nets.items():
        assert entry["lambda_min"] <= entry["lambda_max"], name
        ratio = abs(entry["lambda_min"]) / abs(entry["lambda_max"])
        assert entry["abs_lambda_min_over_lambda_max"] == ratio
        assert isinstance(entry["eigenvalues_converged"], bool)
    observed = results["observed"]
    assert len(observed["ratio_by_depth"]["plain"]) == 2
    assert isinstance(observed["plain_ratio_grows_with_depth"], bool)
    assert (out / "landscape_depth.png").read_bytes()[:4] == b"\x89PNG"
    with np.load(out / "arrays.npz") as arrays:
        assert arrays["2 hidden, plain/plane"].shape == (9, 9)


def test_taylor_real_quick_reports_every_layer(tmp_path):
    out, results = quick("taylor-real", tmp_path)
    per = results["taylor"]["per_direction"]
    assert set(per) == {"all layers", "layer 1", "layer 2", "layer 3"}
    for entry in per.values():
        assert entry["stability_limit_2_over_lambda"] == 2 / entry["lambda_max"]
        assert entry["first_order_relative_error"]["eta=0.01/lambda_max"] < 0.05
    assert results["taylor"]["newton"]["mlp_method"] == "cg"  # 15 210 params: no dense H
    for name in ("taylor_predictions.png", "taylor_errors.png", "taylor.npz"):
        assert (out / name).is_file(), name


def test_edge_of_stability_quick_reports_every_step_size(tmp_path):
    out, results = quick("edge-of-stability", tmp_path)
    per = results["per_eta"]
    assert set(per) == {"eta=0.1", "eta=0.15", "eta=0.2"}
    for entry in per.values():
        assert entry["stability_limit_2_over_eta"] == 2 / entry["eta"]
        assert entry["diverged"] is None
        first = entry["first_step_sharpness_reaches_2_over_eta"]
        assert (first is None) == (entry["median_eta_lambda_over_2_after"] is None)
    with np.load(out / "arrays.npz") as arrays:
        assert arrays["sharpness"].shape == (len(arrays["steps"]), 3)
        assert arrays["loss"].shape == (3, 600)
    assert (out / "edge_of_stability.png").is_file()
