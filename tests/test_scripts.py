"""The command-line scripts write complete, reproducible run directories."""

import importlib.util
import json
import pathlib
import shlex

import jax
import numpy as np
import pytest

import gdjax
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


def _png_shape(path) -> tuple[int, ...]:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    return imread(path).shape


def test_landscape_script_default_run_writes_figures_and_resumes(tmp_path, capsys):
    landscape_script = _load_script("landscape")
    out = tmp_path / "land"
    argv = ["--out", str(out), "--resolution", "9", "--epochs", "30", "--no-progress"]
    assert landscape_script.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = {
        "landscape_2d.png",
        "landscape_surface.png",
        "interpolation.png",
        "pca_trajectory.png",
        "convex_vs_nonconvex.png",
    }
    assert set(summary["figures"]) == expected
    for name in expected:
        height, width, _ = _png_shape(out / name)
        assert height > 300 and width > 400, name
    # the centre of the random plane is θ* itself
    with np.load(out / "sweeps" / "random_2d" / "grid.npz") as grid:
        loss, done = grid["values/loss"], grid["done"]
    assert loss.shape == (9, 9) and done.all()
    np.testing.assert_allclose(loss[4, 4], summary["loss_at_theta"], rtol=1e-6)
    with np.load(out / "trajectory_projection.npz") as projection:
        coords, actual_loss = projection["coords"], projection["actual_loss"]
    assert coords.shape[1] == 2 and actual_loss.shape == (coords.shape[0],)

    # a second run reuses the training and computes no sweep point again
    assert landscape_script.main(argv) == 0
    for sweep in ("random_2d", "interpolation", "pca_2d", "convex_2d"):
        calls = json.loads((out / "sweeps" / sweep / "sweep.json").read_text())["calls"]
        assert calls[-1]["points_computed"] == 0, sweep


def test_landscape_script_takes_a_train_run_directory(tmp_path, capsys):
    train_script = _load_script("train")
    run_dir = tmp_path / "run"
    assert (
        train_script.main(
            [
                "--data",
                "circles",
                "--hidden",
                "8",
                "--epochs",
                "20",
                "--no-progress",
                "--out",
                str(run_dir),
            ]
        )
        == 0
    )
    landscape_script = _load_script("landscape")
    assert landscape_script.main([str(run_dir), "--resolution", "7", "--no-progress"]) == 0
    summary = json.loads((run_dir / "landscape" / "summary.json").read_text())
    assert "landscape_2d.png" in summary["figures"] and "pca" not in summary
    run = runs.load_run(run_dir)
    assert summary["loss_at_theta"] == pytest.approx(float(run.history["train_loss"][-1]), rel=1e-5)


def test_taylor_script_measures_the_linear_prediction_error(tmp_path, capsys):
    """The seed's question, measured: the tangent's error grows like η; 2nd order is better."""
    taylor_script = _load_script("taylor")
    out = tmp_path / "taylor"
    # --threshold 0.6: reached by the steps in layers 1-2 on this grid, not by layer 3 (max 0.45)
    argv = ["--out", str(out), "--points", "13", "--epochs", "20", "--threshold", "0.6"]
    assert taylor_script.main(argv) == 0
    summary = json.loads((out / "taylor.json").read_text())
    for name in summary["figures"]:
        height, width, _ = _png_shape(out / name)
        assert height > 300 and width > 400, name
    with np.load(out / "taylor.npz") as arrays:
        etas = arrays["etas"]
        first = arrays["all layers/first_order_error"]
        second = arrays["all layers/second_order_error"]
    small = etas < 0.1 * summary["per_direction"]["all layers"]["stability_limit_2_over_lambda"]
    # O(η): the error per unit η is nearly constant for small steps
    ratio = first[small] / etas[small]
    assert ratio.max() / ratio.min() < 1.5
    assert np.all(second[small] < first[small])
    assert set(summary["per_direction"]) == {"all layers", "layer 1", "layer 2", "layer 3"}
    assert summary["lambda_max"] > 0
    # GD on a quadratic converges below 2/λ_max and blows up above it
    stability = {r["eta_times_lambda_over_2"]: r for r in summary["quadratic_stability"]["runs"]}
    assert stability[0.9]["loss_ratio"] < 1e-2 and stability[0.99]["loss_ratio"] < 1
    assert stability[1.01]["loss_ratio"] > 1 and stability[1.1]["loss_ratio"] > 1e6
    # one Newton step solves linear regression, but not the non-linear network
    newton = summary["newton"]
    assert newton["linear_regression_distance"] < 1e-8
    assert newton["mlp_grad_norm_after"] > 1e-3
    # the table names a threshold never reached as a bound on η, never "nan"
    printed = capsys.readouterr().out
    assert "η @ 60% err" in printed and "nan" not in printed.lower()
    eta_max = f"> {etas.max():.4g}"
    reached = {
        label: np.isfinite(r["eta_where_first_order_error_exceeds_threshold"])
        for label, r in summary["per_direction"].items()
    }
    assert not reached["layer 3"] and reached["layer 1"]  # both kinds of row are shown
    for label, was_reached in reached.items():
        row = next(line for line in printed.splitlines() if line.startswith(label))
        assert (eta_max in row) != was_reached, row
    assert f"up to the largest η swept, η_max = {etas.max():.4g}" in printed


def test_taylor_script_says_a_threshold_beyond_the_swept_range_is_above_eta_max():
    cell = _load_script("taylor").eta_threshold_cell
    etas = np.geomspace(1e-3, 4.6321, 5)
    assert cell(float("nan"), etas) == "> 4.632"
    assert cell(0.9712, etas) == "0.9712"


def test_sharpness_script_tracks_lambda_max_up_to_2_over_eta(tmp_path, capsys):
    sharpness_script = _load_script("sharpness")
    out = tmp_path / "sharp"
    argv = ["--etas", "0.2", "--epochs", "200", "--every", "20", "--out", str(out), "--no-progress"]
    assert sharpness_script.main(argv) == 0
    summary = json.loads((out / "sharpness.json").read_text())["runs"]["0.2"]
    height, width, _ = _png_shape(out / "sharpness.png")
    assert height > 300 and width > 600
    with np.load(out / "sharpness.npz") as arrays:
        epochs, sharpness = arrays["eta=0.2/epochs"], arrays["eta=0.2/sharpness"]
    assert list(epochs) == list(range(0, 201, 20))
    # progressive sharpening: from below the stability limit 2/η = 10 up to it
    assert summary["sharpness_start"] < 0.6 * 10 and summary["sharpness_max"] > 0.9 * 10
    assert sharpness.max() == pytest.approx(summary["sharpness_max"])
    assert summary["loss_end"] < 0.2 * summary["loss_start"]


def _bar_shown(err: str) -> bool:
    """Whether a training progress bar (tqdm's "epochs" bar) was drawn on stderr."""
    return "epochs:" in err


def test_boundaries_script_takes_the_shared_data_precision_and_progress_flags(tmp_path, capsys):
    script = _load_script("boundaries")
    out = tmp_path / "b"
    argv = ["--hidden", "4", "--epochs", "3", "--n", "24", "--resolution", "6", "--data", "xor"]
    assert script.main([*argv, "--float64", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "boundaries.json").read_text())
    assert set(summary["runs"]) == {"xor/tanh", "xor/identity"}
    assert summary["dtype"] == "float64" and summary["hidden"] == [4]
    assert not _bar_shown(capsys.readouterr().err)


def test_batch_noise_script_takes_data_hidden_and_shows_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    script = _load_script("batch_noise")
    out = tmp_path / "noise"
    argv = ["--data", "moons", "--hidden", "4", "--epochs", "2", "--samples", "3"]
    assert script.main([*argv, "--out", str(out)]) == 0
    record = json.loads((out / "batch_noise.json").read_text())
    assert record["loss"] == "sigmoid_binary_cross_entropy"  # the data set's own loss
    assert record["model"]["sizes"] == [2, 4, 1] and record["num_examples"] == 160
    assert _bar_shown(capsys.readouterr().err)  # training shows progress by default


def test_batch_noise_script_measures_a_trained_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    argv = ["--data", "moons", "--hidden", "5", "--epochs", "3", "--no-progress"]
    assert _load_script("train").main([*argv, "--out", str(run_dir)]) == 0
    run = runs.load_run(run_dir)
    script = _load_script("batch_noise")
    assert script.main([str(run_dir), "--samples", "3", "--no-progress"]) == 0
    record = json.loads((run_dir / "batch_noise" / "batch_noise.json").read_text())
    assert record["model"] == runs.model_to_dict(run.model) and record["epochs"] == 0
    assert record["run_dir"] == str(run_dir) and record["loss"] == run.config["loss"]
    ds = gdjax.data.from_config({**run.config, "data_kwargs": {"dtype": np.float64}})
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), run.params)
    want = gdjax.per_example.gradient_noise(run.model, run.config["loss"], params, ds.x, ds.y)
    np.testing.assert_allclose(record["trace_cov"], want.trace_cov, rtol=1e-12)
    with pytest.raises(SystemExit, match="run_dir: expected a run directory"):
        script.main([str(tmp_path), "--no-progress"])


def test_taylor_script_trains_its_default_model_on_data_hidden_float64(monkeypatch):
    script = _load_script("taylor")
    trained = {}
    real_fit = script.train.fit

    def spy(model, loss, optimizer, data, **kwargs):
        trained.update(model=model, **kwargs)
        return real_fit(model, loss, optimizer, data, **kwargs)

    monkeypatch.setattr(script.train, "fit", spy)
    args = script.parse_args(
        ["--data", "circles", "--hidden", "5", "--epochs", "2", "--float64", "--no-progress"]
    )
    model, loss, params, ds = script.load_or_train(args)
    assert model.sizes == (2, 5, 1) and trained["progress"] is False and ds.name == "circles"
    assert {p["w"].dtype for p in trained["params"]} == {np.dtype("float64")}
    args = script.parse_args(["--hidden", "3", "--epochs", "1"])
    script.load_or_train(args)
    assert trained["progress"] is True  # progress unless --no-progress
    assert {p["w"].dtype for p in trained["params"]} == {np.dtype("float32")}


@pytest.mark.parametrize("name", ["boundaries", "batch_noise", "taylor"])
def test_scripts_show_the_shared_flags_with_their_defaults(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        _load_script(name).parse_args(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--data", "--hidden", "--activation", "--no-progress"):
        assert flag in text, (name, flag)
    assert "no progress bars (default: False)" in text
    assert ("--float64" in text) == (name != "batch_noise")  # batch_noise is always float64
