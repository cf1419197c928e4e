"""Decision boundaries of small trained MLPs on 2-D data, with the first layer's hyperplanes.

    python scripts/boundaries.py                          # writes results/boundaries/
    python scripts/boundaries.py --epochs 500 --out /tmp/b
    python scripts/boundaries.py --data moons circles --float64 --no-progress

For XOR, moons, circles and spirals (gdjax.data) this trains two networks of
the same shape with full-batch Adam (gdjax.train.fit): one with a non-linear
hidden activation, one with none (identity). Each panel shows the predicted
class regions, the boundary (black), the first layer's lines w_jᵀx + b_j = 0
(dashed) and the training data. The identity stack is one affine map, so its
boundary is a single straight line, however deep it is. Writes boundaries.png
and boundaries.json (train accuracies) to --out. --data picks the data sets
(default all four), --float64 trains in float64, and each training shows a
progress bar unless --no-progress.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from gdjax import MLP, boundaries, cli, data, plots, runs, train

DATASETS = ("xor", "moons", "circles", "spirals")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    cli.add_model_options(p, hidden="16,16", activation="tanh")
    # cli.add_data_option takes one data set; this script draws a panel for each of several.
    p.add_argument(
        "--data", nargs="+", default=list(DATASETS), choices=DATASETS, help="2-D data sets"
    )
    p.add_argument("--epochs", type=int, default=1500, help="full-batch Adam steps")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--n", type=int, default=200, help="examples per data set")
    p.add_argument("--resolution", type=int, default=150, help="grid points per axis")
    p.add_argument("--seed", type=int, default=0)
    cli.add_precision_option(p)
    cli.add_progress_option(p)
    cli.add_output_options(p, out="results/boundaries")
    return p.parse_args(argv)


def dataset(name: str, key: jax.Array, n: int, dtype=jnp.float32) -> data.Dataset:
    if name == "xor":
        return data.xor(key, n=n, noise=0.15, dtype=dtype)
    if name == "spirals":
        return data.spirals(key, n=2 * n, turns=1.0, test_fraction=0.0, dtype=dtype)
    return data.get(name, key, n=n, test_fraction=0.0, dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.float64 else jnp.float32
    datasets = tuple(dict.fromkeys(args.data))  # in the order given, once each
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    activations = (args.activation, "identity")
    fig = Figure(figsize=(2.6 * len(datasets), 2.6 * len(activations) + 0.4), layout="constrained")
    axes = fig.subplots(len(activations), len(datasets), squeeze=False)
    hidden = cli.parse_hidden(args.hidden)
    summary: dict = {
        "hidden": list(hidden),
        "epochs": args.epochs,
        "dtype": jnp.dtype(dtype).name,
        "runs": {},
    }
    for col, name in enumerate(datasets):
        # Each data set keeps its own keys (its place in DATASETS), whichever are drawn.
        data_key, fit_key = jax.random.split(jax.random.fold_in(key, DATASETS.index(name)))
        ds = dataset(name, data_key, args.n, dtype)
        labels = boundaries.class_labels(ds.y)
        for row, act in enumerate(activations):
            model = MLP((2, *hidden, ds.num_outputs), activation=act)
            print(f"{name:>8} {act:>9}  training {args.epochs} epochs", flush=True)
            result = train.fit(
                model,
                ds.loss,
                "adam",
                (ds.x, ds.y),
                epochs=args.epochs,
                key=fit_key,
                learning_rate=args.lr,
                eval_every=0,
                params=model.init(jax.random.split(fit_key)[0], dtype=dtype),
                progress=not args.no_progress,
            )
            grid = boundaries.decision_grid(model, result.params, ds.x, resolution=args.resolution)
            accuracy = float(
                np.mean(np.asarray(boundaries.predict(model, result.params, ds.x)) == labels)
            )
            summary["runs"][f"{name}/{act}"] = {
                "sizes": list(model.sizes),
                "train_accuracy": accuracy,
                "final_loss": float(result.history["loss"][-1]),
            }
            boundaries.plot_decision_boundary(
                axes[row, col],
                grid,
                lines=boundaries.first_layer_lines(model, result.params),
                x=ds.x,
                labels=labels,
                title=f"{name}, σ = {act}: train acc {accuracy:.2f}",
            )
            print(f"{name:>8} {act:>9}  train accuracy {accuracy:.3f}")
    fig.suptitle(
        f"decision boundaries of MLP(2, {', '.join(map(str, hidden))}, ·) after "
        f"{args.epochs} Adam steps; dashed: first-layer lines w_jᵀx + b_j = 0",
        fontsize=9,
    )
    plots.save(fig, out / f"boundaries.{args.format}")
    summary["wall_time_s"] = time.perf_counter() - start
    runs.atomic_write_json(out / "boundaries.json", summary)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
