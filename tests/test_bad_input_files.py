"""Bad input to run files, sweeps and plots: an error naming the argument, before any compile.

Issue 19, the families in runs, landscape and plots: each row is a call, the
exception it must raise and a pattern that names the argument.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, landscape, plots, runs

MODEL = MLP((2, 3, 2), "tanh")
PARAMS = MODEL.init(jax.random.key(0), dtype=jnp.float64)
X = np.linspace(-1, 1, 8).reshape(4, 2)
LABELS_OUT_OF_RANGE = np.array([0, 1, 2, 1])  # 2 outputs: labels 0 and 1 only
DIRS = [jax.tree.map(jnp.ones_like, PARAMS)] * 2
GRID = np.linspace(-1, 1, 3)


def _file(tmp_path):
    (tmp_path / "file").write_text("")
    return tmp_path / "file"


def _sweep(out, f=None, y=None, axes=(GRID, GRID)):
    f = f or landscape.mlp_loss(MODEL, "softmax_cross_entropy")
    y = np.array([0, 1, 1, 0]) if y is None else y
    return landscape.sweep_2d(f, PARAMS, *DIRS, *axes, X, y, out=out)


def _save_run(path, **kw):
    args = dict(model=MODEL, config={"loss": "mse"}, params=PARAMS)
    return runs.save_run(path, **{**args, **kw})


CASES = [
    # (id, call(tmp_path), exception, pattern naming the argument)
    ("load_run(None)", lambda t: runs.load_run(None), TypeError, r"^path: expected a run dir"),
    ("load_run(3)", lambda t: runs.load_run(3), TypeError, r"^path: .* got int 3"),
    (
        "load_checkpoint(None)",
        lambda t: runs.load_checkpoint(None),
        TypeError,
        r"^run_dir: expected a directory path",
    ),
    (
        "save_run into a file",
        lambda t: _save_run(_file(t)),
        ValueError,
        r"^path: expected a directory .* which is a file",
    ),
    (
        "save_run below a file",
        lambda t: _save_run(_file(t) / "run"),
        ValueError,
        r"^path: expected a directory .* is inside .*file, which is a file",
    ),
    (
        "check_run_dir of a file",
        lambda t: runs.check_run_dir(_file(t)),
        ValueError,
        r"^run_dir: expected a directory",
    ),
    (
        "check_run_dir(None)",
        lambda t: runs.check_run_dir(None),
        TypeError,
        r"^run_dir: expected a directory path",
    ),
    (
        "save_checkpoint into a file",
        lambda t: runs.save_checkpoint(_file(t), step=0, trees={}, fingerprint={}),
        ValueError,
        r"^run_dir: expected a directory",
    ),
    (
        "save_pytree of a string leaf",
        lambda t: runs.save_pytree(t / "a.npz", {"w": np.ones(2), "name": "tanh"}),
        ValueError,
        r"^tree: expected numeric .* leaf \['name'\] of type str",
    ),
    (
        "save_pytree of an object leaf",
        lambda t: runs.save_pytree(t / "a.npz", [np.array([object()])]),
        ValueError,
        r"^tree: expected numeric .* leaf \[0\] .* dtype object",
    ),
    (
        "save_run with a string in the history",
        lambda t: _save_run(t / "run", history={"note": np.array(["a", "b"])}),
        ValueError,
        r"^tree: .* leaf \['note'\]",
    ),
    (
        "sweep out that is a file",
        lambda t: _sweep(_file(t)),
        ValueError,
        r"^out: expected a directory .* which is a file",
    ),
    ("sweep out that is an int", lambda t: _sweep(3), TypeError, r"^out: expected a directory"),
    (
        "sweep labels out of range (mlp_loss)",
        lambda t: _sweep(None, y=LABELS_OUT_OF_RANGE),
        ValueError,
        r"^y: expected integer labels in \[0, 1\] for 2 output units, got label 2",
    ),
    (
        "sweep labels out of range (model_loss)",
        lambda t: _sweep(
            None,
            f=landscape.model_loss(MODEL.apply, "softmax_cross_entropy"),
            y=LABELS_OUT_OF_RANGE,
        ),
        ValueError,
        r"^y: expected integer labels in \[0, 1\] for 2 output units, got label 2",
    ),
    (
        "a 10^10-point grid",
        lambda t: _sweep(None, axes=(np.arange(100_000.0), np.arange(100_000.0))),
        ValueError,
        r"^alphas, betas: expected a grid .* 10,000,000,000 points, which need about [\d,.]+ GB",
    ),
    (
        "pca of a trajectory that never moved",
        lambda t: landscape.pca_directions([PARAMS] * 5),
        ValueError,
        r"^trajectory: .* never moved",
    ),
    (
        "pca of records that are all equal before the last",
        lambda t: landscape.pca_directions([PARAMS] * 4 + [DIRS[0]]),
        ValueError,
        r"^trajectory: .* all equal",
    ),
    (
        "training_curves of an empty history",
        lambda t: plots.training_curves({}),
        ValueError,
        r"^history: expected a history .* 'epoch' .* an empty dict",
    ),
    (
        "training_curves of a list",
        lambda t: plots.training_curves([]),
        TypeError,
        r"^history: expected a dict",
    ),
    (
        "landscape_1d of other length",
        lambda t: plots.landscape_1d(GRID, np.ones(4)),
        ValueError,
        r"^values: expected shape \(3,\), .* got shape \(4,\)",
    ),
    (
        "landscape_2d transposed",
        lambda t: plots.landscape_2d(GRID, np.linspace(0, 1, 4), np.ones((4, 3))),
        ValueError,
        r"^values: expected shape \(3, 4\), .* got shape \(4, 3\)",
    ),
    (
        "landscape_2d dict entry of other shape",
        lambda t: plots.landscape_2d(
            GRID, GRID, {"loss": np.ones((3, 3)), "accuracy": np.ones((2, 3))}
        ),
        ValueError,
        r"^values\['accuracy'\]: expected shape \(3, 3\)",
    ),
    (
        "landscape_surface of other shape",
        lambda t: plots.landscape_surface(GRID, GRID, np.ones(9)),
        ValueError,
        r"^values: expected shape \(3, 3\)",
    ),
    (
        "landscape_2d without a loss entry",
        lambda t: plots.landscape_2d(GRID, GRID, {"accuracy": np.ones((3, 3))}),
        ValueError,
        r"^values: expected an array or a dict with a 'loss' entry",
    ),
]


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_argument_before_compiling(
    tmp_path, compilations, call, error, pattern
):
    with pytest.raises(error, match=pattern):
        call(tmp_path)
    assert compilations.count == 0
    assert [p.name for p in tmp_path.iterdir() if p.name != "file"] == []  # nothing written


def test_surface_ticks_are_few_enough_not_to_overlap():
    fig = plots.landscape_surface(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41), np.ones((41, 41)))
    (ax,) = fig.axes
    fig.canvas.draw()
    for axis in (ax.xaxis, ax.yaxis):
        ticks = [t for t in axis.get_ticklocs() if -1 <= t <= 1]
        assert 2 <= len(ticks) <= plots.SURFACE_TICKS + 1
        boxes = [
            label.get_window_extent()
            for label in axis.get_ticklabels()
            if label.get_visible() and label.get_text()
        ]
        for a, b in zip(boxes, boxes[1:], strict=False):
            assert not a.overlaps(b)
