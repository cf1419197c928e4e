"""Sharpness λ_max(H) during full-batch gradient descent, against the stability limit 2/η.

    python scripts/sharpness.py                       # a tanh MLP on a smooth regression
    python scripts/sharpness.py --etas 0.2 0.4        # the learning rates, trained together
    python scripts/sharpness.py --seeds 5             # each η from 5 initialisations

On a quadratic, gradient descent with step η is stable only while λ_max < 2/η.
On a neural network the curvature changes as it trains: λ_max rises until it
reaches 2/η and then hovers there ("edge of stability", Cohen et al. 2021) while
the loss keeps falling, non-monotonically. This script measures it: full-batch
GD on a (2, 32, 32, 1) tanh MLP fitting y = sin(2x₁)cos(x₂) on 64 points x ~ N(0, I), in
float64, with λ_max from warm-started Lanczos every --every epochs. Every η (and
every seed) is one member of one population (gdjax.train.fit_population), trained
in one jitted program, and every member's λ_max is measured by one batched Lanczos
(gdjax.curvature.track_population_sharpness). Writes sharpness.json, sharpness.npz
and sharpness.png to --out (default results/sharpness).
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

from gdjax import MLP, cli, curvature, plots, runs, train  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument(
        "--etas", type=float, nargs="+", default=[0.1, 0.2, 0.4], help="learning rates η"
    )
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--every", type=int, default=20, help="epochs between λ_max measurements")
    p.add_argument("--n", type=int, default=64, help="training points")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="initialisations per η (seed+1, seed+2, …); more than one: median and band",
    )
    p.add_argument("--out", default="results/sharpness")
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"])
    cli.add_progress_option(p)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds: expected a positive integer, got {args.seeds}.")
    return args


def regression_problem(n: int, seed: int):
    """x ~ N(0, I₂), y = sin(2x₁)cos(x₂): smooth, so a small tanh net fits it well."""
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(n, 2)))
    y = jnp.sin(2 * x[:, :1]) * jnp.cos(x[:, 1:])
    return x, y


def _median_and_band(ax, x, values, color, label, **kwargs):
    """One run's curve, or the median over runs (rows) with a min–max band."""
    if values.shape[0] == 1:
        return ax.plot(x, values[0], color=color, label=label, **kwargs)
    ax.fill_between(x, np.nanmin(values, 0), np.nanmax(values, 0), color=color, alpha=0.2, lw=0)
    return ax.plot(x, np.nanmedian(values, 0), color=color, label=f"{label} (median)", **kwargs)


def figure(records: dict, title: str) -> Figure:
    """Sharpness of each η with its limit 2/η (dashed), and the cost; over seeds, the
    median and the min–max band."""
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax_sharp, ax_loss = fig.subplots(1, 2)
    for i, (eta, r) in enumerate(records.items()):
        color = f"C{i}"
        _median_and_band(
            ax_sharp, r["epochs"], r["sharpness"], color, f"η = {eta}", marker="o", ms=2.5
        )
        ax_sharp.axhline(2 / eta, color=color, ls="--", lw=1)
        epochs = np.arange(1, r["loss"].shape[1] + 1)
        _median_and_band(ax_loss, epochs, r["loss"], color, f"η = {eta}")
    seeds = next(iter(records.values()))["sharpness"].shape[0]
    ax_sharp.set_xlabel("epoch (full-batch GD step)")
    ax_sharp.set_ylabel(r"sharpness $\lambda_{\max}(H)$;  dashed: $2/\eta$")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cost C" + (f" (band: min–max over {seeds} seeds)" if seeds > 1 else ""))
    ax_loss.set_yscale("log")
    for ax in (ax_sharp, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def _summary(eta, epochs, sharpness, loss, hvps, converged, diverged, total_epochs) -> dict:
    """The numbers of one run (one member): its λ_max against 2/η, and its cost."""
    ratio = sharpness * eta / 2
    last_quarter = epochs >= 0.75 * total_epochs
    return {
        "stability_limit_2_over_eta": 2 / eta,
        "sharpness_start": float(sharpness[0]),
        "sharpness_max": float(sharpness.max()),
        "sharpness_end": float(sharpness[-1]),
        "sharpness_over_limit_last_quarter_mean": float(ratio[last_quarter].mean()),
        "loss_start": float(loss[0]),
        "loss_end": float(loss[-1]),
        "loss_monotone": bool(np.all(np.diff(loss) <= 0)),
        "hvps_per_measurement": float(hvps.mean()),
        "converged": bool(converged.all()),
        "diverged": diverged,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = regression_problem(args.n, args.seed)
    model = MLP((2, 32, 32, 1), activation="tanh")
    etas = list(args.etas)
    inits = [
        model.init(jax.random.key(args.seed + 1 + s), dtype=jnp.float64) for s in range(args.seeds)
    ]
    # Member (s, e) = s·len(etas) + e: initialisation s trained with step etas[e].
    members = [(s, e) for s in range(args.seeds) for e in range(len(etas))]
    params = jax.tree.map(lambda *a: jnp.stack(a), *[inits[s] for s, _ in members])
    learning_rate = jnp.asarray([etas[e] for _, e in members])
    tracker = curvature.track_population_sharpness(
        model, "mse", x, y, key=jax.random.key(args.seed)
    )
    with cli.stage(f"training {len(members)} runs ({out})", saved="nothing (written at the end)"):
        tracker(0, params)
        result = train.fit_population(
            model,
            "mse",
            "sgd",
            (x, y),
            epochs=args.epochs,
            keys=jnp.stack([jax.random.key(args.seed)] * len(members)),
            params=params,
            learning_rate=learning_rate,
            eval_every=0,
            callback=tracker,
            callback_every=args.every,
            progress=not args.no_progress,
        )
    loss = np.asarray(result.history["loss"])  # (members, epochs)
    records, arrays, summaries = {}, {}, {}
    for e, eta in enumerate(etas):
        rows = [i for i, (_, e_i) in enumerate(members) if e_i == e]  # one per seed
        records[eta] = {
            "epochs": tracker.epochs,
            "sharpness": tracker.sharpness[:, rows].T,  # (seeds, records)
            "loss": loss[rows],  # (seeds, epochs)
        }
        each = [
            _summary(
                eta,
                tracker.epochs,
                tracker.sharpness[:, i],
                loss[i],
                tracker.hvps[:, i],
                tracker.converged[:, i],
                result.diverged[i],
                args.epochs,
            )
            for i in rows
        ]
        summaries[eta] = dict(each[0])  # the --seed run, as with one seed
        arrays[f"eta={eta}/epochs"] = tracker.epochs
        arrays[f"eta={eta}/sharpness"] = records[eta]["sharpness"][0]
        arrays[f"eta={eta}/loss"] = records[eta]["loss"][0]
        if args.seeds > 1:
            arrays[f"eta={eta}/sharpness_seeds"] = records[eta]["sharpness"]
            arrays[f"eta={eta}/loss_seeds"] = records[eta]["loss"]
            summaries[eta]["seeds"] = {
                key: [s[key] for s in each]
                for key in ("sharpness_max", "sharpness_end", "loss_end", "diverged")
            }
    seeds = f", {args.seeds} seeds" if args.seeds > 1 else ""
    title = f"full-batch GD, {model.sizes} tanh, mse on {args.n} points (float64{seeds})"
    plots.save(figure(records, title), out / f"sharpness.{args.format}")
    np.savez(out / "sharpness.npz", **arrays)
    summary = {
        "model": runs.model_to_dict(model),
        "epochs": args.epochs,
        "every": args.every,
        "seeds": args.seeds,
        "runs": {str(eta): s for eta, s in summaries.items()},
        "wall_time_s": time.perf_counter() - start,
    }
    runs.atomic_write_json(out / "sharpness.json", summary)
    print(
        f"{'η':>6}{'2/η':>8}{'λ start':>10}{'λ max':>9}{'λ end':>9}{'λη/2 (last ¼)':>16}"
        f"{'C start':>10}{'C end':>10}{'monotone':>10}"
    )
    for eta, s in summaries.items():
        print(
            f"{eta:>6}{2 / eta:>8.3g}{s['sharpness_start']:>10.4g}{s['sharpness_max']:>9.4g}"
            f"{s['sharpness_end']:>9.4g}{s['sharpness_over_limit_last_quarter_mean']:>16.3f}"
            f"{s['loss_start']:>10.3g}{s['loss_end']:>10.3g}{s['loss_monotone']!s:>10}"
        )
    if args.seeds > 1:
        print(f"over {args.seeds} seeds (median [min, max]):")
        for eta, s in summaries.items():
            top, end = np.asarray(s["seeds"]["sharpness_max"]), np.asarray(s["seeds"]["loss_end"])
            print(
                f"{eta:>6}  λ max {np.median(top):.4g} [{top.min():.4g}, {top.max():.4g}]"
                f"  C end {np.median(end):.3g} [{end.min():.3g}, {end.max():.3g}]"
                f"  diverged {sum(d is not None for d in s['seeds']['diverged'])}"
            )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
