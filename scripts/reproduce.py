"""Reproduce published results with gdjax, one command each, measured against the paper.

    python scripts/reproduce.py --help              # lists the reproductions
    python scripts/reproduce.py mnist1d-baselines   # full run (minutes on a 2-core CPU)
    python scripts/reproduce.py mnist1d-baselines --quick   # a one-minute smoke version

Each reproduction writes a run directory (``--out``, default
``results/reproduce/<name>``) holding its figure, the raw arrays
(``arrays.npz``) and ``results.json``: every measured number beside the
published one, the seeds, the settings and the wall time. A published number
that is not reached is reported as measured, with the reason where known.

Reproductions:

- ``mnist1d-baselines``: the MNIST-1D paper's logistic regression, MLP and CNN
  (Greydanus & Kobak, ICML 2024, Table 1: 32 %, 68 %, 94 % test accuracy),
  each as a population of seeds trained in one jitted run, with the paper's
  settings (Adam, η = 10⁻², batch 100, 6 000 steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from gdjax import cli, data, nets, plots, runs, train

PUBLISHED_MNIST1D = {  # Greydanus & Kobak (2024), Table 1, test accuracy in %
    "logistic regression": 32.0,
    "MLP": 68.0,
    "CNN": 94.0,
}


def mnist1d_baselines(args: argparse.Namespace, out: Path) -> dict:
    """Test accuracy of the paper's three baselines, mean ± std over seeds, beside Table 1."""
    ds = data.mnist1d()
    seeds = 2 if args.quick else args.seeds
    steps = 600 if args.quick else 6000
    batch = 100
    epochs = steps * batch // ds.num_train  # 4 000 examples: 40 steps an epoch
    models = {
        "logistic regression": nets.logistic_regression(),
        "MLP": nets.mnist1d_mlp(),
        "CNN": nets.mnist1d_cnn(),
    }
    keys = jax.random.split(jax.random.key(args.seed), seeds)
    results, arrays, histories = {}, {}, {}
    for name, net in models.items():
        init_keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys)
        params = jax.vmap(net.init)(init_keys)
        begun = time.perf_counter()
        pop = train.fit_population(
            net,
            "softmax_cross_entropy",
            "adam",
            ds,
            epochs=epochs,
            keys=keys,
            batch_size=batch,
            params=params,
            eval_every=max(1, epochs // 30),
            progress=not args.no_progress,
            learning_rate=1e-2,
        )
        wall = time.perf_counter() - begun
        accuracy = 100 * pop.history["test_accuracy"][:, -1]
        published = PUBLISHED_MNIST1D[name]
        mean, std = float(accuracy.mean()), float(accuracy.std(ddof=1))
        results[name] = {
            "published_test_accuracy_percent": published,
            "measured_test_accuracy_percent": {"mean": mean, "std": std},
            "per_seed": accuracy.tolist(),
            "difference_points": mean - published,
            "within_3_points": bool(abs(mean - published) <= 3),
            "final_train_accuracy_percent": float(
                100 * pop.history["train_accuracy"][:, -1].mean()
            ),
            "diverged_members": sum(m is not None for m in pop.diverged),
            "wall_time_s": wall,
        }
        histories[name] = pop.history
        arrays.update({f"{name}/{k}": v for k, v in pop.history.items()})
        print(
            f"{name:>20}: test accuracy {mean:5.1f} ± {std:4.1f} % over {seeds} seeds "
            f"(paper: {published:.0f} %), {wall:.0f} s"
        )
    plots.save(_baselines_figure(results, histories), out / f"mnist1d_baselines.{args.format}")
    np.savez(out / "arrays.npz", **arrays)
    return {
        "paper": "Greydanus & Kobak (2024), Scaling down deep learning with MNIST-1D, ICML, "
        "Table 1",
        "data": "MNIST-1D regenerated offline by the mnist1d package (default arguments, seed "
        "42): 4 000 train / 1 000 test; the paper's table used its published pickle",
        "settings": {
            "optimizer": "adam",
            "learning_rate": 1e-2,
            "batch_size": batch,
            "steps": epochs * ds.num_train // batch,
            "epochs": epochs,
            "seeds": seeds,
            "init": "pytorch (U(±1/√fan_in)), as the paper's code",
        },
        "models": results,
    }


def _baselines_figure(results: dict, histories: dict) -> Figure:
    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    bars, curves = fig.subplots(1, 2, width_ratios=(1, 1.6))
    names = list(results)
    means = [results[n]["measured_test_accuracy_percent"]["mean"] for n in names]
    stds = [results[n]["measured_test_accuracy_percent"]["std"] for n in names]
    x = np.arange(len(names))
    bars.bar(x, means, yerr=stds, color="C0", alpha=0.8, capsize=4, label="gdjax (mean ± std)")
    bars.scatter(
        x, [results[n]["published_test_accuracy_percent"] for n in names], color="C3", zorder=3,
        marker="D", label="paper (Table 1)",
    )  # fmt: skip
    bars.set_xticks(x, names, fontsize=8)
    bars.set_ylabel("test accuracy (%)")
    bars.set_ylim(0, 100)
    bars.legend(fontsize=8, loc="upper left")
    for i, name in enumerate(names):
        h = histories[name]
        epochs, acc = h["eval_epoch"][0], 100 * h["test_accuracy"]
        low, median, high = np.percentile(acc, [10, 50, 90], axis=0)
        curves.fill_between(epochs, low, high, color=f"C{i}", alpha=0.2, lw=0)
        curves.plot(epochs, median, color=f"C{i}", label=name)
        for row in acc:
            curves.plot(epochs, row, color=f"C{i}", alpha=0.25, lw=0.5)
        curves.axhline(results[name]["published_test_accuracy_percent"], color=f"C{i}", ls=":")
    curves.set_xlabel("epoch (40 steps of batch 100)")
    curves.set_ylabel("test accuracy (%); dotted: paper")
    curves.set_ylim(0, 100)
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8)
    fig.suptitle("MNIST-1D baselines: gdjax populations against Greydanus & Kobak (2024)")
    return fig


REPRODUCTIONS: dict[str, Callable[[argparse.Namespace, Path], dict]] = {
    "mnist1d-baselines": mnist1d_baselines,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.epilog = "reproductions: " + ", ".join(REPRODUCTIONS)
    p.add_argument("name", choices=list(REPRODUCTIONS), help="which result to reproduce")
    p.add_argument("--quick", action="store_true", help="a one-minute smoke version")
    p.add_argument("--seeds", type=int, default=5, help="members of each population")
    p.add_argument("--seed", type=int, default=0, help="the key the members' keys split from")
    cli.add_output_options(p, out=None)
    cli.add_progress_option(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seeds < 2:
        print(f"--seeds: expected at least 2 (a mean ± std), got {args.seeds}", file=sys.stderr)
        return 2
    out = Path(args.out or f"results/reproduce/{args.name}")
    if out.exists() and not out.is_dir():
        print(f"--out: expected a directory, got {out}, which is a file.", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(
        ["python", "scripts/reproduce.py", *(argv if argv is not None else sys.argv[1:])]
    )
    begun = time.perf_counter()
    with cli.stage(f"reproducing {args.name}", saved="nothing (results are written at the end)",
                   resume=command):  # fmt: skip
        measured = REPRODUCTIONS[args.name](args, out)
    summary = {
        "name": args.name,
        "command": command,
        "quick": args.quick,
        **measured,
        "wall_time_s": time.perf_counter() - begun,
        "devices": [str(d) for d in jax.devices()],
        "dtype": str(jnp.zeros(()).dtype),
    }
    runs.atomic_write_json(out / "results.json", summary)
    print(f"wrote {out} ({summary['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
