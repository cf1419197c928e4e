"""Decision boundaries of 2-D classifiers, and the first layer's hyperplanes.

Each unit j of the first layer computes ``z^1_j = w_jᵀ x + b_j``: it splits the
input plane along the straight line (hyperplane) ``w_jᵀ x + b_j = 0``, as the
seed says. The activation bends and the next layers combine these half-planes
into a curved decision boundary. Without activations (σ = identity) the whole
network is one affine map ``a^L = W x + c`` with ``W = w^L ⋯ w^1``, so however
many layers it has, two classes are split by **one straight line**: depth adds
nothing without a non-linearity.

For a model on 2-D inputs (``sizes[0] == 2``):

- :func:`class_scores` / :func:`predict` — per-class scores and the predicted class.
- :func:`decision_grid` — the scores and classes on a regular grid over the data.
- :func:`boundary_points` — where the class changes along the grid lines,
  linearly interpolated (exact for an affine network).
- :func:`first_layer_lines` — ``(w^1, b^1)``, the lines ``w_jᵀ x + b_j = 0``.
- :func:`plot_decision_boundary` — one panel: regions, boundary, lines, data.

The class scores: with k ≥ 2 outputs, ``s = a^L`` and the class is ``argmax_c s_c``;
with one output, ``s = (0, a^L − t)`` (class 1 where ``a^L > t``), with the
threshold t = 0.5 after a sigmoid output and 0 otherwise (logits). Pass
``threshold=0.5`` for a network trained with mse on 0/1 targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._checks import check_positive_int, shape_of
from gdjax.mlp import MLP, Params

__all__ = [
    "class_scores",
    "predict",
    "decision_grid",
    "DecisionGrid",
    "boundary_points",
    "first_layer_lines",
    "plot_decision_boundary",
    "class_labels",
]


def _check_model(model: MLP) -> None:
    if not isinstance(model, MLP):
        raise ValueError(f"model: expected a gdjax.MLP, got {type(model).__name__}.")
    if model.sizes[0] != 2:
        raise ValueError(
            f"model: expected 2-D inputs (sizes[0] == 2) to draw a decision boundary in the "
            f"plane, got sizes {model.sizes}."
        )


def _check_points(name: str, x) -> None:
    shape = shape_of(x)
    if len(shape) != 2 or shape[1] != 2 or shape[0] < 1:
        raise ValueError(
            f"{name}: expected 2-D points, an array of shape (n, 2) with n ≥ 1, got shape {shape}."
        )


def _threshold(model: MLP, threshold: float | None) -> float:
    if threshold is None:
        return 0.5 if model.output_activation.name == "sigmoid" else 0.0
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
        raise ValueError(f"threshold: expected a number or None, got {threshold!r}.")
    return float(threshold)


def class_scores(
    model: MLP, params: Params, x: jax.Array, *, threshold: float | None = None
) -> jax.Array:
    """Per-class scores s of shape ``(n, k)``, k ≥ 2; the predicted class is ``argmax s``.

    .. math::

        s = a^L \\ (k \\text{ outputs}),\\qquad s = (0,\\ a^L − t) \\ (\\text{one output})

    Args:
      model: an MLP with ``sizes[0] == 2``.
      params: its params.
      x: points of shape ``(n, 2)``.
      threshold: t for a single output; default 0.5 after a sigmoid output, else 0.
    """
    _check_model(model)
    _check_points("x", x)
    t = _threshold(model, threshold)
    out = model.apply(params, x)
    if out.shape[1] == 1:
        return jnp.concatenate([jnp.zeros_like(out), out - t], axis=1)
    return out


def predict(
    model: MLP, params: Params, x: jax.Array, *, threshold: float | None = None
) -> jax.Array:
    """The predicted class of every row of ``x``, ``argmax_c s_c`` (see :func:`class_scores`).

    >>> model = MLP((2, 1), activation="identity")
    >>> params = [{"w": jnp.array([[1.0, 0.0]]), "b": jnp.zeros(1)}]
    >>> predict(model, params, jnp.array([[-1.0, 5.0], [2.0, 5.0]])).tolist()
    [0, 1]
    """
    return jnp.argmax(class_scores(model, params, x, threshold=threshold), axis=1)


class DecisionGrid(NamedTuple):
    """What :func:`decision_grid` returns (numpy arrays).

    Attributes:
      xs: ``(nx,)`` grid coordinates along the first input.
      ys: ``(ny,)`` grid coordinates along the second input.
      scores: ``(ny, nx, k)`` class scores at ``(xs[j], ys[i])`` in ``[i, j]``.
      labels: ``(ny, nx)`` predicted classes, ``argmax`` of the scores.
    """

    xs: np.ndarray
    ys: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(x_min, x_max, y_min, y_max)`` of the grid."""
        return float(self.xs[0]), float(self.xs[-1]), float(self.ys[0]), float(self.ys[-1])


def decision_grid(
    model: MLP,
    params: Params,
    x: jax.Array,
    *,
    resolution: int = 200,
    margin: float = 0.25,
    threshold: float | None = None,
) -> DecisionGrid:
    """The classifier's scores and classes on a regular ``resolution × resolution`` grid.

    The grid spans the bounding box of the points ``x``, widened by ``margin``
    times its size on every side; every grid point is one row of a single
    batched ``model.apply``.

    Args:
      model: an MLP with ``sizes[0] == 2``.
      params: its params.
      x: the data, ``(n, 2)``: only its extent is used.
      resolution: grid points per axis, ≥ 2.
      margin: the fraction of the data's extent added on each side, ≥ 0.
      threshold: as in :func:`class_scores`.

    Returns:
      A :class:`DecisionGrid` ``(xs, ys, scores, labels)``.

    Examples:
      >>> model = MLP((2, 1), activation="identity")
      >>> params = [{"w": jnp.array([[1.0, 0.0]]), "b": jnp.zeros(1)}]
      >>> grid = decision_grid(model, params, jnp.array([[-1.0, -1.0], [1.0, 1.0]]), resolution=5)
      >>> grid.labels[0].tolist()         # class 1 right of the line x₁ = 0
      [0, 0, 0, 1, 1]
      >>> boundary_points(grid)[:2].tolist()
      [[0.0, -1.5], [0.0, -0.75]]
    """
    _check_model(model)
    _check_points("x", x)
    resolution = check_positive_int("resolution", resolution)
    if resolution < 2:
        raise ValueError(f"resolution: expected at least 2 points per axis, got {resolution}.")
    if (
        isinstance(margin, bool)
        or not isinstance(margin, int | float | np.number)
        or not np.isfinite(margin)
        or margin < 0
    ):
        raise ValueError(f"margin: expected a finite number ≥ 0, got {margin!r}.")
    threshold = _threshold(model, threshold)
    model.check_params(params)
    points = np.asarray(x, np.float64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = margin * np.where(hi > lo, hi - lo, 1.0)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    gx, gy = np.meshgrid(xs, ys)
    dtype = jnp.result_type(params[0]["w"]) if isinstance(params, list | tuple) and params else None
    flat = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype)
    scores = np.asarray(class_scores(model, params, flat, threshold=threshold))
    scores = scores.reshape(resolution, resolution, -1)
    return DecisionGrid(xs=xs, ys=ys, scores=scores, labels=np.argmax(scores, axis=-1))


def boundary_points(grid: DecisionGrid) -> np.ndarray:
    """Points of the decision boundary: where the class changes between neighbouring grid points.

    For neighbours p (class i) and q (class j ≠ i) along a grid row or column,
    the boundary point is where the score difference ``d = s_i − s_j`` (> 0 at p,
    ≤ 0 at q) crosses zero on the segment, by linear interpolation:

    .. math::

        p + \\frac{d(p)}{d(p) − d(q)}\\,(q − p)

    Exact when the scores are affine in x (a network without activations).

    Returns:
      ``(m, 2)`` points (m = 0 when the grid holds a single class).
    """
    if not isinstance(grid, DecisionGrid):
        raise ValueError(
            f"grid: expected the DecisionGrid returned by decision_grid, got {type(grid).__name__}."
        )
    gx, gy = np.meshgrid(grid.xs, grid.ys)
    coords = np.stack([gx, gy], axis=-1)
    found = []
    for axis in (0, 1):
        n = grid.labels.shape[axis]
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(0, n - 1), slice(1, n)
        a, b = tuple(a), tuple(b)
        la, lb = grid.labels[a], grid.labels[b]
        changed = la != lb
        if not np.any(changed):
            continue
        sa, sb = grid.scores[a][changed], grid.scores[b][changed]
        i, j = la[changed], lb[changed]
        rows = np.arange(i.size)
        da = sa[rows, i] - sa[rows, j]
        db = sb[rows, i] - sb[rows, j]
        denom = da - db  # > 0 except on exact ties (argmax picks the lower class)
        t = np.divide(da, denom, out=np.full_like(da, 0.5), where=denom > 0)
        t = np.clip(t, 0.0, 1.0)
        pa, pb = coords[a][changed], coords[b][changed]
        found.append(pa + t[:, None] * (pb - pa))
    return np.concatenate(found) if found else np.zeros((0, 2))


def first_layer_lines(model: MLP, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """The first layer's hyperplanes ``w_jᵀ x + b_j = 0``, j = 1 … n_1, as ``(w^1, b^1)``.

    Returns:
      ``w`` of shape ``(n_1, 2)`` and ``b`` of shape ``(n_1,)``, numpy.
    """
    _check_model(model)
    model.check_params(params)
    return np.asarray(params[0]["w"], np.float64), np.asarray(params[0]["b"], np.float64)


def _line_segment(w: np.ndarray, b: float, extent) -> np.ndarray | None:
    """Two points of ``w₀x + w₁y + b = 0`` spanning the box, or None for w = 0."""
    x0, x1, y0, y1 = extent
    if abs(w[1]) >= abs(w[0]) and w[1] != 0:
        xs = np.array([x0, x1])
        return np.stack([xs, -(w[0] * xs + b) / w[1]], axis=1)
    if w[0] != 0:
        ys = np.array([y0, y1])
        return np.stack([-(w[1] * ys + b) / w[0], ys], axis=1)
    return None


def plot_decision_boundary(
    ax,
    grid: DecisionGrid,
    *,
    lines: tuple[np.ndarray, np.ndarray] | None = None,
    x: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    title: str | None = None,
) -> None:
    """Draw one panel: class regions, the boundary, the first layer's lines and the data.

    Args:
      ax: a matplotlib ``Axes``.
      grid: from :func:`decision_grid`.
      lines: optional ``(w, b)`` from :func:`first_layer_lines`, drawn as thin
        dashed lines ``w_jᵀ x + b_j = 0``.
      x, labels: optional data points ``(n, 2)`` and their classes ``(n,)``.
      title: optional panel title.
    """
    from matplotlib.colors import ListedColormap

    k = grid.scores.shape[-1]
    colors = [f"C{c}" for c in range(k)]
    ax.contourf(
        grid.xs,
        grid.ys,
        grid.labels,
        levels=np.arange(k + 1) - 0.5,
        cmap=ListedColormap(colors),
        alpha=0.25,
    )
    points = boundary_points(grid)
    if points.size:
        ax.plot(points[:, 0], points[:, 1], "k.", ms=0.8)
    extent = grid.extent
    if lines is not None:
        for w, b in zip(*lines, strict=True):
            segment = _line_segment(w, b, extent)
            if segment is not None:
                ax.plot(segment[:, 0], segment[:, 1], color="0.35", lw=0.6, ls="--")
    if x is not None:
        x = np.asarray(x)
        c = None if labels is None else [colors[int(i) % k] for i in np.asarray(labels)]
        ax.scatter(x[:, 0], x[:, 1], c=c, s=6, edgecolors="k", linewidths=0.2)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def class_labels(y: Sequence | np.ndarray) -> np.ndarray:
    """Integer classes from targets shaped as :mod:`gdjax.data` makes them.

    ``(n,)`` integer labels pass through; a ``(n, 1)`` column of 0/1 gives its
    values; ``(n, k)`` one-hot rows give their argmax.

    >>> class_labels(np.array([[0.0], [1.0]])).tolist(), class_labels(np.eye(3)).tolist()
    ([0, 1], [0, 1, 2])
    """
    y = np.asarray(y)
    if y.ndim == 1:
        return y.astype(np.int64)
    if y.ndim == 2 and y.shape[1] == 1:
        return (y[:, 0] > 0.5).astype(np.int64)
    if y.ndim == 2:
        return np.argmax(y, axis=1)
    raise ValueError(f"y: expected labels (n,) or targets (n, k), got shape {y.shape}.")
