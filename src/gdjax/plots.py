"""Figures for papers: training curves (more kinds join as the landscape and curvature work lands).

Figures are built on ``matplotlib.figure.Figure`` directly, without pyplot, so
they work headless and never touch a global figure state. Save them with
``fig.savefig(path, dpi=...)`` or :func:`save`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["training_curves", "save"]


def training_curves(history: Mapping[str, np.ndarray], *, title: str | None = None) -> Figure:
    """Loss, accuracy and per-layer gradient norms from a :func:`gdjax.train.fit` history.

    Panels (each only when the history has its data):

    1. loss: the batch cost C before every step (faint) and per epoch, against
       epochs; the train/test loss at evaluation epochs; log scale;
    2. accuracy: train and test, at evaluation epochs;
    3. ‖∂C/∂w^l‖ per layer l at the diagnostics epochs, log scale: vanishing
       gradients show as lines far apart, first layer lowest.
    """
    panels = ["loss"]
    if "train_accuracy" in history:
        panels.append("accuracy")
    if "diagnostics/grad_norm" in history:
        panels.append("gradients")
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    epochs = np.asarray(history["epoch"])
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "loss":
            step_loss = np.asarray(history["step_loss"])
            if step_loss.size:
                steps_per_epoch = step_loss.size / max(len(epochs), 1)
                x = (np.arange(step_loss.size) + 1) / steps_per_epoch
                ax.plot(x, step_loss, color="0.75", lw=0.6, label="batch C (each step)")
            ax.plot(epochs, history["loss"], color="C0", lw=1.5, label="C (epoch mean)")
            for name, color in (("train_loss", "C2"), ("test_loss", "C3")):
                if name in history:
                    ax.plot(
                        history["eval_epoch"],
                        history[name],
                        "o-",
                        ms=2.5,
                        color=color,
                        label=name.replace("_", " "),
                    )
            if np.all(np.asarray(history["loss"]) > 0):
                ax.set_yscale("log")
            ax.set_ylabel("cost C")
        elif panel == "accuracy":
            for name, color in (("train_accuracy", "C2"), ("test_accuracy", "C3")):
                if name in history:
                    ax.plot(
                        history["eval_epoch"],
                        history[name],
                        "o-",
                        ms=2.5,
                        color=color,
                        label=name.replace("_", " "),
                    )
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("accuracy")
        else:
            norms = np.asarray(history["diagnostics/grad_norm"])
            colors = _layer_colors(norms.shape[1])
            for layer in range(norms.shape[1]):
                ax.plot(
                    history["diagnostics_epoch"],
                    norms[:, layer],
                    color=colors[layer],
                    label=f"l = {layer + 1}",
                )
            ax.set_yscale("log")
            ax.set_ylabel(r"$\|\partial C/\partial w^l\|$")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncols=2 if panel == "gradients" and norms.shape[1] > 6 else 1)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _layer_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def save(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix: .png, .pdf, .svg)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
    return path
