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
- ``edge-of-stability``: Cohen et al. (ICLR 2021), Fig. 1: full-batch gradient
  descent of a tanh MLP with MSE on 1 000 MNIST-1D examples, three step sizes η
  in one population, the full-batch Hessian's λ_max every k steps against 2/η.
- ``landscape-depth``: Li et al. (NeurIPS 2018), skip connections scaled down:
  filter-normalised planes around plain and residual MLPs of 2, 6 and 10
  hidden layers on MNIST-1D, and the convexity measure |λ_min/λ_max| of the
  Hessian at each trained point.
- ``taylor-real``: the seed question on MNIST-1D: the first- and second-order
  Taylor error of one gradient step against η, whole and per layer, for a
  trained (40, 100, 100, 10) MLP (``scripts/taylor.py`` on it).
"""

from __future__ import annotations

import argparse
import dataclasses
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


def landscape_depth(args: argparse.Namespace, out: Path) -> dict:
    """Li et al. (2018), skip connections, scaled down: plain and residual MLPs of several
    depths on MNIST-1D, a filter-normalised plane around each, and |λ_min/λ_max| there."""
    jax.config.update("jax_enable_x64", True)  # the eigenvalues in float64; training in float32
    from gdjax import curvature, landscape, models

    ds = data.mnist1d()
    depths = (2, 4) if args.quick else (2, 6, 10)
    steps = 200 if args.quick else 4000
    resolution = 9 if args.quick else 31
    if args.quick:  # a smoke run: 1 000 examples make every product 4 times cheaper
        ds = dataclasses.replace(
            ds, x=ds.x[:1000], y=ds.y[:1000], x_test=ds.x_test[:500], y_test=ds.y_test[:500]
        )
    epochs = steps * 100 // ds.num_train
    grid = np.linspace(-1.0, 1.0, resolution)
    x64 = jnp.asarray(ds.x, jnp.float64)
    results, arrays, planes = {}, {"grid": grid}, {}
    for depth in depths:
        for residual in (False, True):
            name = f"{depth} hidden, {'residual' if residual else 'plain'}"
            net = nets.mlp((40, *[100] * depth, 10), residual=residual)
            key = jax.random.fold_in(jax.random.key(args.seed), depth)
            params = net.init(jax.random.split(key)[0], dtype=jnp.float32)
            begun = time.perf_counter()
            result = train.fit(
                net, "softmax_cross_entropy", "adam", ds, epochs=epochs, key=key, params=params,
                batch_size=100, eval_every=epochs, progress=not args.no_progress,
                learning_rate=1e-3,
            )  # fmt: skip
            trained = result.params
            f = landscape.model_loss(net, "softmax_cross_entropy")
            k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
            d1, d2, _ = landscape.orthogonalize(
                landscape.filter_normalized_direction(k1, trained),
                landscape.filter_normalized_direction(k2, trained),
            )
            plane = np.asarray(
                landscape.sweep_2d(f, trained, d1, d2, grid, grid, ds.x, ds.y, data_chunk=1000)
            )
            p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), trained)
            f64 = models.objective(net, "softmax_cross_entropy")
            top = curvature.top_eigenvalues(f64, p64, 1, x64, ds.y, key=key, tol=1e-3)
            # λ_min sits at the edge of a spectrum crowded near 0: Lanczos needs many steps
            low = curvature.top_eigenvalues(
                f64, p64, 1, x64, ds.y, key=key, which="smallest", tol=1e-3, max_iters=300
            )
            lam_max, lam_min = float(top.eigenvalues[0]), float(low.eigenvalues[0])
            results[name] = {
                "depth": depth,
                "residual": residual,
                "train_accuracy": float(result.history["train_accuracy"][-1]),
                "test_accuracy": float(result.history["test_accuracy"][-1]),
                "loss_at_centre": float(plane[resolution // 2, resolution // 2]),
                "plane_max_loss": float(plane.max()),
                "lambda_max": lam_max,
                "lambda_min": lam_min,
                "abs_lambda_min_over_lambda_max": abs(lam_min) / abs(lam_max),
                "eigenvalues_converged": bool(top.converged and low.converged),
                "lambda_max_converged": bool(top.converged),
                "lambda_min_converged": bool(low.converged),
                "lambda_max_residual": float(np.max(top.residuals)),
                "lambda_min_residual": float(np.max(low.residuals)),
                "wall_time_s": time.perf_counter() - begun,
            }
            planes[name] = plane
            arrays[f"{name}/plane"] = plane
            print(
                f"{name:>22}: test acc {results[name]['test_accuracy']:.3f}, λ_max {lam_max:.4g}, "
                f"λ_min {lam_min:.4g}, |λ_min/λ_max| {abs(lam_min) / abs(lam_max):.3g}"
            )
    plots.save(_depth_figure(grid, planes, results), out / f"landscape_depth.{args.format}")
    np.savez(out / "arrays.npz", **arrays)
    ratios = {
        r: [results[f"{d} hidden, {r}"]["abs_lambda_min_over_lambda_max"] for d in depths]
        for r in ("plain", "residual")
    }
    deepest = depths[-1]
    return {
        "paper": "Li, Xu, Taylor, Studer & Goldstein (2018), Visualizing the Loss Landscape of "
        "Neural Nets, NeurIPS, Fig. 5 and Table 1 (skip connections; |λ_min/λ_max|)",
        "paper_claim": "without skip connections deep nets' landscapes turn chaotic and "
        "non-convex (|λ_min/λ_max| grows with depth); with skips they stay smooth",
        "settings": {
            "depths": list(depths),
            "width": 100,
            "activation": "relu",
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "batch_size": 100,
            "steps": epochs * ds.num_train // 100,
            "plane": f"filter-normalised random directions, {resolution}² points on [−1, 1]²",
            "eigenvalues": "Lanczos, float64, verified to 1e-3 (converged flags per net)",
        },
        "nets": results,
        "observed": {
            "ratio_by_depth": ratios,
            "plain_ratio_grows_with_depth": bool(np.all(np.diff(ratios["plain"]) > 0)),
            "deepest_plain_over_residual_ratio": ratios["plain"][-1] / ratios["residual"][-1],
            "deepest": deepest,
        },
    }


def _depth_figure(grid, planes: dict, results: dict) -> Figure:
    names = list(planes)
    depths = sorted({results[n]["depth"] for n in names})
    fig = Figure(figsize=(3.4 * len(depths), 6.4), layout="constrained")
    axes = fig.subplots(2, len(depths), squeeze=False)
    levels = np.linspace(0, 5, 26)
    for name in names:
        r = results[name]
        ax = axes[int(r["residual"]), depths.index(r["depth"])]
        shown = ax.contour(grid, grid, np.clip(planes[name].T, 0, 5), levels=levels, linewidths=0.7)
        ax.set_title(f"{name}\n|λmin/λmax| = {r['abs_lambda_min_over_lambda_max']:.3g}", fontsize=8)
        ax.set_aspect("equal")
    fig.colorbar(shown, ax=axes, shrink=0.6, label="cost C (clipped at 5)")
    fig.suptitle("MLPs on MNIST-1D, filter-normalised planes (Li et al. 2018, scaled down)")
    return fig


def taylor_real(args: argparse.Namespace, out: Path) -> dict:
    """The seed question on MNIST-1D: scripts/taylor.py on a trained (40, 100, 100, 10) MLP."""
    import importlib.util

    from gdjax import MLP

    ds = data.mnist1d()
    model = MLP((40, 100, 100, 10), activation="relu")
    steps = 400 if args.quick else 4000
    epochs = steps * 100 // ds.num_train
    key = jax.random.key(args.seed)
    params = model.init(jax.random.split(key)[0], dtype=jnp.float32)
    result = train.fit(
        model, "softmax_cross_entropy", "adam", ds, epochs=epochs, key=key, params=params,
        batch_size=100, eval_every=epochs, progress=not args.no_progress, learning_rate=1e-2,
    )  # fmt: skip
    run_dir = out / "train"
    config = {"data": "mnist1d", "loss": "softmax_cross_entropy", "optimizer": "adam",
              "hyperparams": {"learning_rate": 1e-2}, "batch_size": 100, "epochs": epochs,
              "seed": args.seed}  # fmt: skip
    runs.save_run(run_dir, model=model, config=config, params=result.params,
                  history=result.history)  # fmt: skip
    path = Path(__file__).resolve().parent / "taylor.py"
    spec = importlib.util.spec_from_file_location("taylor_script", path)
    taylor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(taylor)  # turns on x64: the analysis is in float64
    points = ["--points", "21"] if args.quick else []
    argv = [str(run_dir), "--out", str(out), "--format", args.format, *points]
    if taylor.main(argv) != 0:
        raise RuntimeError("scripts/taylor.py failed")
    import json

    measured = json.loads((out / "taylor.json").read_text())
    return {
        "question": "is gradient descent broken because it steps along a linear "
        "approximation? (the seed question), on real data",
        "model": "gdjax.MLP (40, 100, 100, 10) relu, trained with Adam (η = 10⁻², batch 100, "
        f"{epochs * ds.num_train // 100} steps) on MNIST-1D",
        "train_accuracy": float(result.history["train_accuracy"][-1]),
        "test_accuracy": float(result.history["test_accuracy"][-1]),
        "taylor": measured,
    }


def edge_of_stability(args: argparse.Namespace, out: Path) -> dict:
    """Cohen et al. (2021), Fig. 1: full-batch GD's sharpness rises to 2/η and hovers there."""
    from gdjax import MLP, curvature

    ds = data.mnist1d(loss="mse")  # one-hot targets
    n = 1000
    x, y = jnp.asarray(ds.x[:n], jnp.float32), jnp.asarray(ds.y[:n], jnp.float32)
    model = MLP((40, 64, 64, 10), activation="tanh")
    etas = np.array([0.1, 0.15, 0.2])
    steps, every = (600, 30) if args.quick else (4000, 20)
    keys = jnp.stack([jax.random.key(args.seed)] * len(etas))  # one init, one η per member
    params = jax.vmap(lambda k: model.init(jax.random.split(k)[0], dtype=jnp.float32))(keys)
    tracker = curvature.track_population_sharpness(
        model, "mse", x, y, key=jax.random.key(args.seed + 1), tol=1e-3
    )
    tracker(0, params)
    pop = train.fit_population(
        model, "mse", "sgd", (x, y), epochs=steps, keys=keys, params=params, eval_every=0,
        callback=tracker, callback_every=every, progress=not args.no_progress,
        learning_rate=etas,
    )  # fmt: skip
    sharpness, recorded = np.asarray(tracker.sharpness), np.asarray(tracker.epochs)
    results = {}
    for i, eta in enumerate(etas):
        limit = 2 / eta
        # the first upward crossing: at init λ_max may start above 2/η and fall at once
        # (the catapult of the first steps); progressive sharpening brings it back
        above = sharpness[:, i] >= limit
        reached = np.flatnonzero(above[1:] & ~above[:-1]) + 1
        first = int(recorded[reached[0]]) if reached.size else None
        after = sharpness[reached[0] :, i] * eta / 2 if reached.size else np.array([])
        loss = pop.history["loss"][i]
        results[f"eta={eta:g}"] = {
            "eta": float(eta),
            "stability_limit_2_over_eta": limit,
            "sharpness_start": float(sharpness[0, i]),
            "sharpness_min": float(sharpness[:, i].min()),
            "sharpness_end": float(sharpness[-1, i]),
            "first_step_sharpness_reaches_2_over_eta": first,  # from below
            "median_eta_lambda_over_2_after": float(np.median(after)) if after.size else None,
            "loss_start": float(loss[0]),
            "loss_end": float(loss[-1]),
            "loss_increases_after_reaching": int(
                np.sum(np.diff(loss[first - 1 :]) > 0) if first else 0
            ),
            "lanczos_converged_fraction": float(np.mean(np.asarray(tracker.converged)[:, i])),
            "diverged": pop.diverged[i],
        }
        print(
            f"η = {eta:g}: 2/η = {limit:.3g}, λ_max {sharpness[0, i]:.3g} → "
            f"{sharpness[-1, i]:.3g}, reaches 2/η at step {first}, median ηλ/2 after: "
            f"{results[f'eta={eta:g}']['median_eta_lambda_over_2_after']}"
        )
    plots.save(
        _eos_figure(etas, recorded, sharpness, pop.history["loss"]),
        out / f"edge_of_stability.{args.format}",
    )
    np.savez(
        out / "arrays.npz", etas=etas, steps=recorded, sharpness=sharpness,
        loss=pop.history["loss"], converged=np.asarray(tracker.converged),
    )  # fmt: skip
    return {
        "paper": "Cohen, Kaur, Li, Kolter & Talwalkar (2021), Gradient Descent on Neural "
        "Networks Typically Occurs at the Edge of Stability, ICLR, Fig. 1",
        "paper_claim": "full-batch GD: the sharpness rises (progressive sharpening) until it "
        "reaches 2/η, then hovers just above it while the loss keeps falling, non-monotonically",
        "settings": {
            "data": f"MNIST-1D, the first {n} training examples, one-hot targets",
            "model": "gdjax.MLP (40, 64, 64, 10) tanh, identity output, glorot init",
            "loss": "mse (C = 1/(2n) Σ‖y − a‖²)",
            "optimizer": "full-batch gradient descent",
            "steps": steps,
            "sharpness_every": every,
            "sharpness": "λ_max of the full-batch Hessian by Lanczos (tol 1e-3, warm-started)",
            "population": "one member per η, the same init",
        },
        "per_eta": results,
    }


def _eos_figure(etas, steps, sharpness, loss) -> Figure:
    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    ax_loss, ax_sharp = fig.subplots(1, 2)
    for i, eta in enumerate(etas):
        color = f"C{i}"
        ax_loss.plot(np.arange(1, loss.shape[1] + 1), loss[i], color=color, label=f"η = {eta:g}")
        ax_sharp.plot(steps, sharpness[:, i], color=color, label=f"η = {eta:g}")
        ax_sharp.axhline(2 / eta, color=color, ls="--", lw=1)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step (full-batch GD)")
    ax_loss.set_ylabel("train loss C")
    ax_sharp.set_xlabel("step")
    ax_sharp.set_ylabel(r"sharpness $\lambda_{\max}(H)$;  dashed: $2/\eta$")
    for ax in (ax_loss, ax_sharp):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Edge of stability on MNIST-1D (Cohen et al. 2021, Fig. 1 layout)")
    return fig


REPRODUCTIONS: dict[str, Callable[[argparse.Namespace, Path], dict]] = {
    "mnist1d-baselines": mnist1d_baselines,
    "edge-of-stability": edge_of_stability,
    "landscape-depth": landscape_depth,
    "taylor-real": taylor_real,
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
