"""Sharpness λ_max(H) during full-batch gradient descent, against the stability limit 2/η.

    python scripts/sharpness.py                       # a tanh MLP on a smooth regression
    python scripts/sharpness.py --etas 0.2 0.4        # one run per learning rate

On a quadratic, gradient descent with step η is stable only while λ_max < 2/η.
On a neural network the curvature changes as it trains: λ_max rises until it
reaches 2/η and then hovers there ("edge of stability", Cohen et al. 2021) while
the loss keeps falling, non-monotonically. This script measures it: full-batch
GD on a (2, 32, 32, 1) tanh MLP fitting y = sin(2x₁)cos(x₂) on 64 points x ~ N(0, I), in
float64, with λ_max from warm-started Lanczos every --every epochs. Writes
sharpness.json, sharpness.npz and sharpness.png to --out (default results/sharpness).
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
    p.add_argument("--out", default="results/sharpness")
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"])
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def regression_problem(n: int, seed: int):
    """x ~ N(0, I₂), y = sin(2x₁)cos(x₂): smooth, so a small tanh net fits it well."""
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(n, 2)))
    y = jnp.sin(2 * x[:, :1]) * jnp.cos(x[:, 1:])
    return x, y


def figure(records: dict, title: str) -> Figure:
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax_sharp, ax_loss = fig.subplots(1, 2)
    for i, (eta, r) in enumerate(records.items()):
        color = f"C{i}"
        ax_sharp.plot(r["epochs"], r["sharpness"], "o-", ms=2.5, color=color, label=f"η = {eta}")
        ax_sharp.axhline(2 / eta, color=color, ls=":", lw=1)
        ax_loss.semilogy(
            np.arange(1, len(r["loss"]) + 1), r["loss"], color=color, label=f"η = {eta}"
        )
    ax_sharp.set_xlabel("epoch (full-batch GD step)")
    ax_sharp.set_ylabel(r"sharpness $\lambda_{\max}(H)$;  dotted: $2/\eta$")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cost C")
    for ax in (ax_sharp, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = regression_problem(args.n, args.seed)
    model = MLP((2, 32, 32, 1), activation="tanh")
    init = model.init(jax.random.key(args.seed + 1), dtype=jnp.float64)
    records, arrays = {}, {}
    for eta in args.etas:
        tracker = curvature.track_sharpness(model, "mse", x, y, key=jax.random.key(args.seed))
        tracker(0, init)
        result = train.fit(
            model,
            "mse",
            "sgd",
            (x, y),
            epochs=args.epochs,
            key=jax.random.key(args.seed),
            params=init,
            learning_rate=eta,
            eval_every=0,
            callback=tracker,
            callback_every=args.every,
            progress=not args.no_progress,
        )
        ratio = tracker.sharpness * eta / 2
        last_quarter = tracker.epochs >= 0.75 * args.epochs
        records[eta] = {
            "epochs": tracker.epochs,
            "sharpness": tracker.sharpness,
            "loss": result.history["loss"],
        }
        arrays.update({f"eta={eta}/{k}": np.asarray(v) for k, v in records[eta].items()})
        records[eta]["summary"] = {
            "stability_limit_2_over_eta": 2 / eta,
            "sharpness_start": float(tracker.sharpness[0]),
            "sharpness_max": float(tracker.sharpness.max()),
            "sharpness_end": float(tracker.sharpness[-1]),
            "sharpness_over_limit_last_quarter_mean": float(ratio[last_quarter].mean()),
            "loss_start": float(result.history["loss"][0]),
            "loss_end": float(result.history["loss"][-1]),
            "loss_monotone": bool(np.all(np.diff(result.history["loss"]) <= 0)),
            "hvps_per_measurement": float(tracker.hvps.mean()),
            "diverged": result.diverged,
        }
    title = f"full-batch GD, {model.sizes} tanh, mse on {args.n} points (float64)"
    plots.save(figure(records, title), out / f"sharpness.{args.format}")
    np.savez(out / "sharpness.npz", **arrays)
    summary = {
        "model": runs.model_to_dict(model),
        "epochs": args.epochs,
        "every": args.every,
        "runs": {str(eta): r["summary"] for eta, r in records.items()},
        "wall_time_s": time.perf_counter() - start,
    }
    runs.atomic_write_json(out / "sharpness.json", summary)
    print(
        f"{'η':>6}{'2/η':>8}{'λ start':>10}{'λ max':>9}{'λ end':>9}{'λη/2 (last ¼)':>16}"
        f"{'C start':>10}{'C end':>10}{'monotone':>10}"
    )
    for eta, r in records.items():
        s = r["summary"]
        print(
            f"{eta:>6}{2 / eta:>8.3g}{s['sharpness_start']:>10.4g}{s['sharpness_max']:>9.4g}"
            f"{s['sharpness_end']:>9.4g}{s['sharpness_over_limit_last_quarter_mean']:>16.3f}"
            f"{s['loss_start']:>10.3g}{s['loss_end']:>10.3g}{s['loss_monotone']!s:>10}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
