"""Figures for papers: training curves and loss landscapes.

Figures are built on ``matplotlib.figure.Figure`` directly, without pyplot, so
they work headless and never touch a global figure state. Save them with
``fig.savefig(path, dpi=...)`` or :func:`save`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from gdjax.runs import atomic_write_bytes

__all__ = [
    "training_curves",
    "landscape_1d",
    "landscape_2d",
    "landscape_surface",
    "convex_vs_nonconvex",
    "taylor_predictions",
    "taylor_errors",
    "save",
]


def training_curves(history: Mapping[str, np.ndarray], *, title: str | None = None) -> Figure:
    """Loss, accuracy and per-layer gradient norms from a :func:`gdjax.train.fit` history.

    Panels (each only when the history has its data):

    1. loss: the batch cost C before every step (faint) and per epoch, against
       epochs; the train/test loss at evaluation epochs; log scale;
    2. accuracy: train and test, at evaluation epochs;
    3. ‖∂C/∂w^l‖ per layer l at the diagnostics epochs, log scale: vanishing
       gradients show as lines far apart, first layer lowest.

    A population's history (:func:`gdjax.train.fit_population`: a leading
    member axis) shows each curve as its median over the members, a band from
    the 10th to the 90th percentile, and every member faint.
    """
    if not isinstance(history, Mapping):
        raise TypeError(
            f"history: expected a dict of arrays from gdjax.train.fit (FitResult.history), "
            f"got {type(history).__name__}."
        )
    missing = [k for k in ("epoch", "loss") if k not in history]
    if missing:
        raise ValueError(
            f"history: expected a history from gdjax.train.fit, with 'epoch' and 'loss' "
            f"arrays, got {'an empty dict' if not history else f'keys {sorted(history)}'} "
            f"(missing {', '.join(map(repr, missing))})."
        )
    members = np.ndim(history["loss"]) == 2
    panels = ["loss"]
    if "train_accuracy" in history:
        panels.append("accuracy")
    if "diagnostics/grad_norm" in history:
        panels.append("gradients")
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    epochs = _shared_axis(history["epoch"])
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "loss":
            step_loss = np.asarray(history["step_loss"])
            if step_loss.size and not members:
                steps_per_epoch = step_loss.size / max(len(epochs), 1)
                x = (np.arange(step_loss.size) + 1) / steps_per_epoch
                ax.plot(x, step_loss, color="0.75", lw=0.6, label="batch C (each step)")
            _curve(ax, epochs, history["loss"], color="C0", label="C (epoch mean)", lw=1.5)
            _plot_evaluations(ax, history, "loss")
            if np.all(np.asarray(history["loss"])[np.isfinite(history["loss"])] > 0):
                ax.set_yscale("log")
            ax.set_ylabel("cost C")
        elif panel == "accuracy":
            _plot_evaluations(ax, history, "accuracy")
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("accuracy")
        else:
            norms = np.asarray(history["diagnostics/grad_norm"])
            colors = _layer_colors(norms.shape[-1])
            for layer in range(norms.shape[-1]):
                _curve(
                    ax,
                    _shared_axis(history["diagnostics_epoch"]),
                    norms[..., layer],
                    color=colors[layer],
                    label=f"l = {layer + 1}",
                )
            ax.set_yscale("log")
            ax.set_ylabel(r"$\|\partial C/\partial w^l\|$")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncols=2 if panel == "gradients" and norms.shape[-1] > 6 else 1)
    if title:
        fig.suptitle(title + (f" ({len(history['loss'])} members)" if members else ""), fontsize=10)
    return fig


def _shared_axis(values) -> np.ndarray:
    """Epoch numbers: a population repeats them for every member."""
    values = np.asarray(values)
    return values[0] if values.ndim == 2 else values


def _curve(ax, x, values, *, color, label: str, fmt: str = "-", **kwargs) -> None:
    """One curve; for a population (rows = members), the median, a 10–90 % band, members faint.

    Members that stopped (NaN after a divergence) drop out of the median and the band.
    """
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        ax.plot(x, values, fmt, color=color, label=label, **kwargs)
        return
    for row in values:
        ax.plot(x, row, "-", color=color, alpha=0.15, lw=0.5)
    finite = np.isfinite(values).any(axis=0)
    x, values = np.asarray(x)[finite], values[:, finite]
    low, median, high = np.nanpercentile(values, [10, 50, 90], axis=0)
    ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)
    ax.plot(x, median, fmt, color=color, label=f"{label}, median", **kwargs)


def _plot_evaluations(ax, history: Mapping[str, np.ndarray], metric: str) -> None:
    """Train (green) and test (red) ``metric`` at the evaluation epochs, where recorded."""
    for split, color in (("train", "C2"), ("test", "C3")):
        name = f"{split}_{metric}"
        if name in history:
            _curve(
                ax,
                _shared_axis(history["eval_epoch"]),
                history[name],
                fmt="o-",
                ms=2.5,
                color=color,
                label=f"{split} {metric}",
            )


def _values(values, name: str = "loss") -> np.ndarray:
    if isinstance(values, Mapping) and name not in values:
        raise ValueError(
            f"values: expected an array or a dict with a {name!r} entry (as the sweeps "
            f"return), got keys {sorted(values)}."
        )
    return np.asarray(values[name] if isinstance(values, Mapping) else values)


def _grid_values(values, *axes: tuple[str, np.ndarray]) -> np.ndarray:
    """``values`` (and each entry of a dict of them) checked to have the grid's shape."""
    want = tuple(np.size(a) for _, a in axes)
    for name, a in axes:
        if np.ndim(a) != 1:
            raise ValueError(f"{name}: expected a 1-D array of grid values, got shape "
                             f"{np.shape(a)}.")  # fmt: skip
    entries = values.items() if isinstance(values, Mapping) else [(None, values)]
    for key, v in entries:
        if np.shape(v) != want:
            where = "values" if key is None else f"values[{key!r}]"
            grid = " × ".join(f"len({name}) = {np.size(a)}" for name, a in axes)
            raise ValueError(
                f"{where}: expected shape {want}, one value per grid point ({grid}), got "
                f"shape {np.shape(v)}."
            )
    return _values(values)


def landscape_1d(
    alphas: np.ndarray, values, *, title: str | None = None, xlabel: str = r"$\alpha$"
) -> Figure:
    """C(θ + α d) against α, with accuracy on a second axis when ``values`` has it.

    ``values`` is an array, or a dict with ``"loss"`` (and ``"accuracy"``) as
    returned by :func:`gdjax.landscape.sweep_1d`.
    """
    loss = _grid_values(values, ("alphas", alphas))
    fig = Figure(figsize=(4.8, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(alphas, loss, color="C0", lw=1.6, label="loss")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cost C", color="C0")
    ax.grid(alpha=0.3)
    if isinstance(values, Mapping) and "accuracy" in values:
        twin = ax.twinx()
        twin.plot(alphas, values["accuracy"], color="C3", lw=1.2, ls="--", label="accuracy")
        twin.set_ylabel("accuracy", color="C3")
        twin.set_ylim(0, 1.02)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _log_levels(z: np.ndarray, num: int) -> np.ndarray:
    finite = z[np.isfinite(z) & (z > 0)]
    return np.geomspace(finite.min(), finite.max(), num)


def landscape_2d(
    alphas: np.ndarray,
    betas: np.ndarray,
    values,
    *,
    levels: int = 30,
    log_levels: bool = True,
    filled: bool = True,
    trajectory: np.ndarray | None = None,
    trajectory_loss: np.ndarray | None = None,
    title: str | None = None,
    labels: tuple[str, str] = (r"$\alpha$ (direction 1)", r"$\beta$ (direction 2)"),
) -> Figure:
    """Contours of C(θ + α d1 + β d2) over the grid, optionally with a trajectory.

    ``values[i, j]`` is the cost at ``(alphas[i], betas[j])``. Levels are
    log-spaced by default, so the basin's floor and its walls both show.
    ``trajectory`` is a ``(T, 2)`` array of projected coordinates; its markers are
    coloured by ``trajectory_loss``, the *actual* cost at each recorded point, so
    the figure never suggests that the path lies on the plotted surface.
    """
    z = _grid_values(values, ("alphas", alphas), ("betas", betas)).T  # contour: (betas, alphas)
    fig = Figure(figsize=(5.4, 4.2), layout="constrained")
    ax = fig.subplots()
    lv = _log_levels(z, levels) if log_levels and np.any(z > 0) else levels
    norm = None
    if log_levels:
        from matplotlib.colors import LogNorm

        norm = LogNorm(vmin=np.min(lv), vmax=np.max(lv))
    mappable = None
    if filled:
        mappable = ax.contourf(
            alphas, betas, z, levels=lv, cmap="viridis", norm=norm, extend="both"
        )
    ax.contour(alphas, betas, z, levels=lv, colors="k", linewidths=0.4, alpha=0.6, norm=norm)
    if trajectory is not None:
        trajectory = np.asarray(trajectory)
        ax.plot(trajectory[:, 0], trajectory[:, 1], color="w", lw=1.0)
        # Same colour scale as the surface: where a marker's colour differs from the
        # surface under it, the path is off the plane.
        sc = ax.scatter(
            trajectory[:, 0],
            trajectory[:, 1],
            s=16,
            c=trajectory_loss,
            cmap="viridis",
            norm=norm,
            edgecolors="w",
            linewidths=0.6,
            zorder=3,
        )
        mappable = mappable or sc
    if mappable is not None:
        label = "cost C" + (
            " (surface; markers: actual C on the path)" if trajectory_loss is not None else ""
        )
        bar = fig.colorbar(mappable, ax=ax, label=label, format="%.2g")
        if log_levels and np.ndim(lv):
            bar.set_ticks(np.geomspace(np.min(lv), np.max(lv), 6))
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title:
        ax.set_title(title, fontsize=9)
    return fig


SURFACE_TICKS = 5
"""At most this many ticks on each axis of a 3-D surface, so their labels do not overlap."""


def _surface(ax, alphas, betas, z, log: bool) -> None:
    from matplotlib.ticker import MaxNLocator

    a, b = np.meshgrid(alphas, betas, indexing="ij")
    shown = np.log10(np.maximum(z, np.finfo(float).tiny)) if log else z
    ax.plot_surface(a, b, shown, cmap="viridis", linewidth=0, antialiased=True)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(SURFACE_TICKS))
    ax.tick_params(labelsize=7, pad=0)
    ax.set_xlabel(r"$\alpha$", labelpad=2)
    ax.set_ylabel(r"$\beta$", labelpad=2)
    ax.set_zlabel(r"$\log_{10} C$" if log else "C", labelpad=2)


def landscape_surface(
    alphas: np.ndarray, betas: np.ndarray, values, *, log: bool = False, title: str | None = None
) -> Figure:
    """The 3-D surface C(θ + α d1 + β d2) (``log=True`` plots log₁₀ C)."""
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    _surface(ax, alphas, betas, _grid_values(values, ("alphas", alphas), ("betas", betas)), log)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def convex_vs_nonconvex(
    convex: tuple[np.ndarray, np.ndarray, np.ndarray],
    nonconvex: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    titles: tuple[str, str] = ("linear regression (convex)", "deep net (non-convex)"),
) -> Figure:
    """Two surfaces side by side, as in the seed's picture: a convex bowl and a deep net.

    Each argument is ``(alphas, betas, values)`` from :func:`gdjax.landscape.sweep_2d`.
    """
    fig = Figure(figsize=(9.6, 4.2), layout="constrained")
    for i, ((alphas, betas, values), title) in enumerate(
        zip((convex, nonconvex), titles, strict=True)
    ):
        z = _grid_values(values, ("alphas", alphas), ("betas", betas))
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        _surface(ax, alphas, betas, z, log=False)
        ax.set_title(title, fontsize=10)
    return fig


def _mark_scales(ax, result) -> None:
    if np.isfinite(result.stability_limit):
        ax.axvline(result.stability_limit, color="k", ls=":", lw=1, label=r"$2/\lambda_{\max}$")
    if np.isfinite(result.eta_threshold):
        ax.axvline(
            result.eta_threshold,
            color="C3",
            ls="--",
            lw=1,
            label=f"1st-order error = {result.threshold:.0%}",
        )


def taylor_predictions(result, *, title: str | None = None) -> Figure:
    """|ΔC| actual against its first- and second-order predictions, against η (log–log).

    ``result`` is a :class:`gdjax.curvature.TaylorResult` for θ' = θ + η d.
    Where the lines part, the linear (tangent) prediction stops describing the step.
    """
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.subplots()
    etas = np.asarray(result.etas)
    ax.loglog(etas, np.abs(result.actual), color="k", lw=2, label=r"actual $|\Delta C|$")
    ax.loglog(
        etas,
        np.abs(result.first_order),
        color="C0",
        ls="--",
        label=r"1st order $|\eta\,\nabla C^\top d|$",
    )
    ax.loglog(
        etas,
        np.abs(result.second_order),
        color="C1",
        ls="-.",
        label=r"2nd order $|\eta\,\nabla C^\top d + \frac{1}{2}\eta^2 d^\top H d|$",
    )
    _mark_scales(ax, result)
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel(r"$|\Delta C|$")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def taylor_errors(results: Mapping[str, object], *, title: str | None = None) -> Figure:
    """Relative error of the first-order (solid) and second-order (dashed) predictions vs η.

    ``results`` maps a label (``"all layers"``, ``"layer 1"``, …) to a
    :class:`gdjax.curvature.TaylorResult`. A reference line of slope 1 shows
    the first-order error's O(η) growth.
    """
    fig = Figure(figsize=(5.4, 3.9), layout="constrained")
    ax = fig.subplots()
    colors = _layer_colors(len(results))
    for color, (label, r) in zip(colors, results.items(), strict=True):
        etas = np.asarray(r.etas)
        ax.loglog(etas, r.first_order_error, color=color, lw=1.6, label=f"{label}, 1st order")
        ax.loglog(
            etas, r.second_order_error, color=color, lw=1.0, ls="--", label=f"{label}, 2nd order"
        )
    first = next(iter(results.values()))
    etas = np.asarray(first.etas)
    err = np.asarray(first.first_order_error)
    anchor = np.nanargmin(np.abs(np.log(np.maximum(err, 1e-300)) - np.log(1e-2)))
    ax.loglog(
        etas,
        err[anchor] * etas / etas[anchor],
        color="0.6",
        lw=0.8,
        ls=":",
        label=r"$\propto \eta$",
    )
    _mark_scales(ax, first)
    ax.axhline(first.threshold, color="0.4", lw=0.6)
    ax.set_ylim(1e-8, 1e2)
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel("relative error of the prediction")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncols=2)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def _layer_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def save(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix: .png, .pdf, .svg).

    The figure is rendered in memory and written with
    :func:`gdjax.runs.atomic_write_bytes`, like every other file gdjax writes:
    through a uniquely named temporary file, so processes saving the same
    figure at once do not collide and a reader never sees a partial one, and
    with the mode ``open()`` would give it (``0o666 & ~umask``).
    """
    path = Path(path)
    fmt = path.suffix[1:].lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"path: expected a file name ending in one of "
            f"{', '.join('.' + s for s in sorted(supported))}, got {os.fspath(path)!r}."
        )
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())
