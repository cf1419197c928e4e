"""Minibatch gradient noise vs batch size: the prediction (tr Σ/B)(N−B)/(N−1) against measurement.

    python scripts/batch_noise.py                     # writes results/batch_noise/
    python scripts/batch_noise.py --epochs 0          # at initialisation
    python scripts/batch_noise.py --data moons --hidden 16,16 --no-progress
    python scripts/batch_noise.py runs/digits-…       # at a run's trained params

A (64, 32, 10) tanh MLP on scikit-learn's 8×8 digits (gdjax.data.digits,
N = 1437 training images), trained for --epochs full-batch Adam steps. From one
backward pass, gdjax.per_example.gradient_noise gives the full-batch gradient G,
tr Σ of the per-example gradient covariance (1/N convention) and
B_simple = tr Σ / ‖G‖² without forming any per-example gradient. For each batch
size B, --samples minibatches drawn without replacement measure ‖g_B − G‖²
(gdjax.per_example.minibatch_errors); their mean should match
E‖g_B − G‖² = (tr Σ / B)(N − B)/(N − 1) within its standard error. Writes
batch_noise.png and batch_noise.json to --out. --data picks another built-in
data set (its own loss), --hidden/--activation the MLP; training shows a
progress bar unless --no-progress. Given a run directory from scripts/train.py,
it measures at that run's trained params on the data it was trained on (writing
to RUN_DIR/batch_noise unless --out). Always float64 (there is no --float64: the
variance sums need it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gdjax import MLP, cli, data, per_example, plots, runs, train  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument(
        "run_dir",
        nargs="?",
        help="a run directory from scripts/train.py: measure at its trained params, on its "
        "data (no further training; --data, --hidden, --activation, --epochs are not used)",
    )
    cli.add_data_option(p, default="digits")
    cli.add_model_options(p, hidden="32", activation="tanh")
    p.add_argument("--epochs", type=int, default=10, help="full-batch Adam steps before measuring")
    p.add_argument("--samples", type=int, default=100, help="minibatches per batch size")
    p.add_argument("--seed", type=int, default=0)
    cli.add_output_options(p, out=None)
    cli.add_progress_option(p)
    return p.parse_args(argv)


def batch_sizes(n: int) -> list[int]:
    """1, 2, 4, … below n, then n − n//8, n − 1 and n (where the correction bites)."""
    sizes = [2**i for i in range(n.bit_length()) if 2**i < n]
    return sorted({*sizes, n - n // 8, n - 1, n})


def figure(record: dict, title: str) -> Figure:
    b = np.asarray(record["batch_sizes"], float)
    predicted = np.asarray(record["predicted"])
    measured = np.asarray(record["measured_mean"])
    stderr = np.asarray(record["measured_stderr"])
    n = record["num_examples"]
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax, ax_ratio = fig.subplots(1, 2)
    keep = predicted > 0
    ax.loglog(
        b[keep], predicted[keep], "-", color="C0", label=r"$(\mathrm{tr}\,\Sigma/B)(N-B)/(N-1)$"
    )
    ax.loglog(
        b,
        record["trace_cov"] / b,
        ":",
        color="0.5",
        label=r"$\mathrm{tr}\,\Sigma/B$ (with replacement)",
    )
    ax.errorbar(b[keep], measured[keep], yerr=2 * stderr[keep], fmt="o", ms=3, color="C1",
                label="measured mean ± 2 s.e.")  # fmt: skip
    ax.axhline(record["grad_norm_sq"], color="C2", lw=1, ls="--", label=r"$\|G\|^2$")
    ax.axvline(record["b_simple"], color="C3", lw=1, ls="-.", label=r"$B_{simple}$")
    ax.set_xlabel("batch size B")
    ax.set_ylabel(r"$E\,\|g_B - G\|^2$")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    ratio = np.where(keep, measured / np.where(keep, predicted, 1.0), np.nan)
    rel_err = 2 * stderr / np.where(keep, predicted, 1.0)
    ax_ratio.errorbar(b[keep], ratio[keep], yerr=rel_err[keep], fmt="o", ms=3, color="C1")
    ax_ratio.axhline(1.0, color="C0")
    ax_ratio.set_xscale("log")
    ax_ratio.set_xlabel("batch size B")
    ax_ratio.set_ylabel("measured / predicted (± 2 s.e.)")
    ax_ratio.grid(alpha=0.3, which="both")
    ax_ratio.set_title(f"N = {n}; at B = N both are 0", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.run_dir and not (Path(args.run_dir) / runs.META_FILE).is_file():
        raise SystemExit(
            f"run_dir: expected a run directory from scripts/train.py (with {runs.META_FILE}), "
            f"got {args.run_dir}"
        )
    default_out = Path(args.run_dir) / "batch_noise" if args.run_dir else "results/batch_noise"
    out = Path(args.out or default_out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    init_key, fit_key, sample_key = jax.random.split(key, 3)
    if args.run_dir:  # the trained run, measured in float64 on the data it was trained on
        run = runs.load_run(args.run_dir)
        config = {**run.config}
        config["data_kwargs"] = {**config.get("data_kwargs", {}), "dtype": jnp.float64}
        ds = data.from_config(config)
        model, loss, epochs = run.model, run.config["loss"], 0
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), run.params)
        args.data, args.activation = run.config["data"], model.activation.name
    else:
        ds = data.from_config(
            {"data": args.data, "seed": args.seed, "data_kwargs": {"dtype": jnp.float64}}
        )
        loss, epochs = ds.loss, args.epochs
        hidden = cli.parse_hidden(args.hidden)
        model = MLP((ds.num_inputs, *hidden, ds.num_outputs), args.activation)
        params = model.init(init_key, dtype=jnp.float64)
    x, y = ds.x, ds.y
    args.epochs = epochs
    if epochs > 0:
        params = train.fit(
            model, loss, "adam", (x, y), epochs=args.epochs, key=fit_key, params=params,
            learning_rate=1e-2, eval_every=0, progress=not args.no_progress,
        ).params  # fmt: skip
    noise = per_example.gradient_noise(model, loss, params, x, y)
    n = noise.num_examples
    sizes = batch_sizes(n)
    predicted = noise.expected_error(sizes)
    means, stderrs = [], []
    for i, b in enumerate(sizes):
        errors = np.asarray(
            per_example.minibatch_errors(
                model, loss, params, x, y, b,
                key=jax.random.fold_in(sample_key, i), num_samples=args.samples,
            )
        )  # fmt: skip
        means.append(float(errors.mean()))
        stderrs.append(float(errors.std(ddof=1) / np.sqrt(errors.size)))
    # z-scores of measured vs predicted; at B = N both are 0 (up to rounding): None
    z = [
        (m - p) / s if b < n and s > 0 else None
        for b, m, p, s in zip(sizes, means, predicted, stderrs, strict=True)
    ]
    record = {
        "model": runs.model_to_dict(model),
        "loss": loss,
        "epochs": args.epochs,
        "run_dir": args.run_dir,
        "num_examples": n,
        "samples_per_batch_size": args.samples,
        "grad_norm_sq": noise.grad_norm_sq,
        "trace_cov": noise.trace_cov,
        "b_simple": noise.b_simple,
        "batch_sizes": sizes,
        "predicted": predicted.tolist(),
        "measured_mean": means,
        "measured_stderr": stderrs,
        "z_scores": z,
    }
    trained = f"the run {args.run_dir}" if args.run_dir else f"{args.epochs} Adam steps"
    title = (
        f"minibatch gradient noise, MLP{model.sizes} {args.activation} on {args.data} after "
        f"{trained}: tr Σ = {noise.trace_cov:.3g}, ‖G‖² = {noise.grad_norm_sq:.3g}, "
        f"B_simple = {noise.b_simple:.3g}"
    )
    plots.save(figure(record, title), out / f"batch_noise.{args.format}")
    record["wall_time_s"] = time.perf_counter() - start
    runs.atomic_write_json(out / "batch_noise.json", record)
    print(f"N = {n}, tr Σ = {noise.trace_cov:.4g}, ‖G‖² = {noise.grad_norm_sq:.4g}, "
          f"B_simple = {noise.b_simple:.4g}")  # fmt: skip
    print(f"{'B':>6}{'predicted':>12}{'measured':>12}{'s.e.':>10}{'z':>7}")
    for row in zip(sizes, predicted, means, stderrs, z, strict=True):
        z_text = "—" if row[4] is None else f"{row[4]:.2f}"
        print(f"{row[0]:>6}{row[1]:>12.4g}{row[2]:>12.4g}{row[3]:>10.2g}{z_text:>7}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
