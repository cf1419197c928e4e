"""Decision boundaries: the grid agrees with model.apply; a linear stack draws one straight line.

References: ``model.apply`` at points sampled from the grid (argmax of the
outputs, or the threshold for one output); for the linear stack, the line
through the boundary points fitted by SVD (every point within 1e-6 of it) and
the exact line ``(W x + c)_1 = t`` of the collapsed affine map
``W = w³ w² w¹``.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure

from gdjax import MLP, plots
from gdjax.boundaries import (
    DecisionGrid,
    boundary_points,
    class_labels,
    decision_grid,
    first_layer_lines,
    plot_decision_boundary,
    predict,
)


def _params(sizes, seed, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    return [
        {
            "w": jnp.asarray(rng.normal(size=(o, i)), dtype),
            "b": jnp.asarray(rng.normal(size=o), dtype),
        }
        for i, o in zip(sizes[:-1], sizes[1:], strict=True)
    ]


DATA = np.random.default_rng(0).normal(size=(50, 2))


@pytest.mark.parametrize(
    "sizes, activation, output_activation",
    [
        ((2, 8, 1), "tanh", "identity"),
        ((2, 8, 1), "relu", "sigmoid"),
        ((2, 6, 6, 3), "tanh", "identity"),
    ],
)
def test_grid_classes_agree_with_model_apply(sizes, activation, output_activation):
    model = MLP(sizes, activation=activation, output_activation=output_activation)
    params = _params(sizes, 1)
    grid = decision_grid(model, params, DATA, resolution=40)
    assert grid.labels.shape == (40, 40) and grid.scores.shape == (40, 40, max(sizes[-1], 2))
    rng = np.random.default_rng(2)
    i, j = rng.integers(0, 40, size=(2, 100))
    points = np.stack([grid.xs[j], grid.ys[i]], axis=1)
    out = np.asarray(model.apply(params, jnp.asarray(points)))
    if sizes[-1] == 1:
        expected = (out[:, 0] > (0.5 if output_activation == "sigmoid" else 0.0)).astype(int)
    else:
        expected = np.argmax(out, axis=1)
    np.testing.assert_array_equal(grid.labels[i, j], expected)
    np.testing.assert_array_equal(predict(model, params, jnp.asarray(points)), expected)
    lo, hi = DATA.min(axis=0), DATA.max(axis=0)
    assert grid.xs[0] < lo[0] and grid.xs[-1] > hi[0] and grid.ys[0] < lo[1]


@pytest.mark.parametrize("outputs", [1, 2])
def test_a_linear_stack_has_one_straight_boundary(outputs):
    sizes = (2, 8, 8, outputs)
    model = MLP(sizes, activation="identity")
    params = _params(sizes, 3)
    grid = decision_grid(model, params, DATA, resolution=60)
    points = boundary_points(grid)
    assert len(points) > 60  # the line crosses the grid
    centred = points - points.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    distance = np.abs(centred @ vt[1])  # distance of every point from the fitted line
    assert distance.max() < 1e-6 * np.ptp(grid.xs)
    # and it is the line of the collapsed affine map  W x + c
    w = np.eye(2)
    c = np.zeros(2)
    for p in params:
        w, c = np.asarray(p["w"]) @ w, np.asarray(p["w"]) @ c + np.asarray(p["b"])
    if outputs == 2:
        w, c = w[1] - w[0], c[1] - c[0]
    else:
        w, c = w[0], c[0]
    np.testing.assert_allclose(points @ w + c, 0.0, atol=1e-9)


def test_a_tanh_network_bends_its_boundary():
    sizes = (2, 8, 8, 1)
    model = MLP(sizes, activation="tanh")
    params = _params(sizes, 3)
    points = boundary_points(decision_grid(model, params, DATA, resolution=60))
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    assert np.abs(centred @ vt[1]).max() > 1e-2


def test_panel_draws_regions_lines_and_data(tmp_path):
    sizes = (2, 5, 1)
    model = MLP(sizes, activation="tanh")
    params = _params(sizes, 4)
    w, b = first_layer_lines(model, params)
    np.testing.assert_array_equal(w, params[0]["w"])
    np.testing.assert_array_equal(b, params[0]["b"])
    grid = decision_grid(model, params, DATA, resolution=30)
    fig = Figure()
    ax = fig.subplots()
    labels = class_labels(np.asarray(predict(model, params, jnp.asarray(DATA)))[:, None])
    plot_decision_boundary(ax, grid, lines=(w, b), x=DATA, labels=labels, title="t")
    assert len(ax.lines) >= 1 + 5  # the boundary and the five first-layer lines
    assert plots.save(fig, tmp_path / "b.png").stat().st_size > 1000


MODEL = MLP((2, 3, 1), activation="tanh")
PARAMS = _params((2, 3, 1), 0, jnp.float32)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: decision_grid(MODEL, PARAMS, np.ones((5, 3))),
            r"x: expected 2-D points.*got shape \(5, 3\)",
        ),
        (
            lambda: decision_grid(MODEL, PARAMS, np.ones(2)),
            r"x: expected 2-D points.*got shape \(2,\)",
        ),
        (
            lambda: decision_grid(MODEL, PARAMS, np.ones((0, 2))),
            r"x: expected 2-D points.*got shape \(0, 2\)",
        ),
        (
            lambda: decision_grid(MLP((3, 2)), _params((3, 2), 0), np.ones((5, 2))),
            r"model: expected 2-D inputs \(sizes\[0\] == 2\).*got sizes \(3, 2\)",
        ),
        (
            lambda: decision_grid(MODEL, PARAMS, DATA, resolution=1),
            r"resolution: expected at least 2",
        ),
        (
            lambda: decision_grid(MODEL, PARAMS, DATA, resolution=2.5),
            r"resolution: expected a positive integer",
        ),
        (
            lambda: decision_grid(MODEL, PARAMS, DATA, margin=-1),
            r"margin: expected a finite number ≥ 0, got -1",
        ),
        (
            lambda: decision_grid(MODEL, PARAMS, DATA, threshold="half"),
            r"threshold: expected a number",
        ),
        (lambda: predict(MODEL, PARAMS[:1], DATA), r"params: expected a list of 2"),
        (lambda: boundary_points(np.zeros((3, 3))), r"grid: expected the DecisionGrid"),
        (lambda: class_labels(np.zeros((2, 2, 2))), r"y: expected labels"),
    ],
)
def test_bad_input_is_refused_before_compiling(call, match, compilations):
    with pytest.raises(ValueError, match=match):
        call()
    assert compilations.count == 0


def test_decision_grid_is_a_named_tuple_with_its_extent():
    grid = decision_grid(
        MODEL, PARAMS, np.array([[0.0, 0.0], [1.0, 2.0]]), resolution=3, margin=0.5
    )
    assert isinstance(grid, DecisionGrid)
    assert grid.extent == (-0.5, 1.5, -1.0, 3.0)
    assert grid.scores.dtype == np.float32
