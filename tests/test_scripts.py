"""The command-line scripts write complete, reproducible run directories."""

import importlib.util
import json
import pathlib
import shlex

import jax
import numpy as np
import pytest

from gdjax import runs
from gdjax.train import DivergedWarning

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_script_writes_a_run_directory_that_reruns_identically(tmp_path, capsys):
    train_script = _load_script("train")
    argv = [
        "--data",
        "moons",
        "--hidden",
        "8",
        "--activation",
        "tanh",
        "--optimizer",
        "adam",
        "--lr",
        "0.05",
        "--batch-size",
        "32",
        "--epochs",
        "6",
        "--seed",
        "3",
        "--diagnostics-every",
        "2",
        "--no-progress",
    ]
    assert train_script.main([*argv, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "test_accuracy" in out and "wrote" in out
    run = runs.load_run(tmp_path / "a")
    for name in ("config.json", "params.npz", "opt_state.npz", "history.npz", "meta.json"):
        assert (tmp_path / "a" / name).is_file(), name
    png = tmp_path / "a" / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert run.model.sizes == (2, 8, 1)
    assert run.config["loss"] == "sigmoid_binary_cross_entropy"
    assert run.history["loss"].shape == (6,)
    assert run.history["diagnostics/grad_norm"].shape == (3, 2)
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["wall_time_s"] > 0

    # config.json's command reruns the same training, bit for bit
    command = shlex.split(run.config["command"])[2:]
    command[command.index("--out") + 1] = str(tmp_path / "b")
    assert train_script.main(command) == 0
    rerun = runs.load_run(tmp_path / "b")
    jax.tree.map(np.testing.assert_array_equal, run.params, rerun.params)
    np.testing.assert_array_equal(run.history["step_loss"], rerun.history["step_loss"])


def test_train_script_exits_non_zero_when_training_diverges(tmp_path, capsys):
    train_script = _load_script("train")
    argv = [
        "--data",
        "linear_regression",
        "--hidden",
        "",
        "--optimizer",
        "sgd",
        "--lr",
        "1000",
        "--epochs",
        "300",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    with pytest.warns(DivergedWarning):
        assert train_script.main(argv) == 1
    assert runs.load_run(tmp_path / "run").meta["diverged"].startswith("training diverged")
