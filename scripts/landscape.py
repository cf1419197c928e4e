"""Loss-landscape sweeps around a trained MLP, with plots: gdjax's main job.

    python scripts/landscape.py                  # trains a small default model first
    python scripts/landscape.py runs/<run-dir>   # a run directory from scripts/train.py

With no run directory it trains a tanh MLP (2, 16, 16, 1) on two moons with
full-batch Adam, recording the trajectory, then sweeps:

- the line from the initial to the trained params, θ(α) = θ₀ + α (θ* − θ₀)
  (Goodfellow et al. 2015);
- the plane of two filter-normalised random directions around θ* (Li et al. 2018);
- the plane of the trajectory's two PCA directions, with the path drawn over it
  and coloured by the *actual* loss at each recorded point (Li et al. 2018, §7);
- the same random plane around the least-squares solution of linear regression,
  for the convex-versus-deep-net figure of the seed tutorial.

Everything goes to ``--out`` (default ``results/landscape`` or ``<run-dir>/landscape``):
config.json, the resumable sweep directories under sweeps/, summary.json and
the figures. Run the same command again after an interruption and the sweeps
continue where they stopped.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import MLP, cli, data, landscape, plots, runs, train


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("run_dir", nargs="?", help="a run directory from scripts/train.py")
    cli.add_output_options(p, out=None)
    p.add_argument("--resolution", type=int, default=41, help="grid points per axis")
    p.add_argument("--span", type=float, default=1.0, help="sweep α, β over [−span, span]")
    p.add_argument("--norm", default="filter", choices=landscape.NORMS)
    p.add_argument("--epochs", type=int, default=300, help="default model's training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=None, help="grid points per compiled call")
    p.add_argument(
        "--data-chunk",
        type=int,
        default=None,
        help="examples per chunk of each point's loss (memory follows it; default: all at once)",
    )
    cli.add_progress_option(p)
    return p.parse_args(argv)


def sweep_status(directory: Path) -> str | None:
    """What a sweep directory holds: ``"38 784 of 90 601 points done, resuming"``,
    ``"complete (121 points), reused"``, or None when there is none."""
    record = directory / "sweep.json"
    if not record.is_file():
        return None
    try:
        state = json.loads(record.read_text())
        state = {k: int(state.get(k, 0)) for k in ("points_done", "points_total")}
    except (OSError, ValueError, TypeError, AttributeError):
        return "record unreadable; the sweep checks its grid.npz"
    done, total = (
        f"{state.get(k, 0):,}".replace(",", " ") for k in ("points_done", "points_total")
    )
    if done == total:
        return f"complete ({total} points), reused"
    return f"{done} of {total} points done, resuming"


def train_default(out: Path, args) -> tuple[runs.Run, list]:
    """Train (or, on a rerun, reload) the default moons model and its trajectory."""
    run_dir, traj_file = out / "train", out / "trajectory.npz"
    model = MLP((2, 16, 16, 1), activation="tanh")
    if (run_dir / "meta.json").is_file() and traj_file.is_file():
        print(f"training: reused {run_dir}")
        run = runs.load_run(run_dir)
        with np.load(traj_file) as stored:
            trajectory = [
                [{"w": stored[f"{t}/{i}/w"], "b": stored[f"{t}/{i}/b"]} for i in range(3)]
                for t in range(int(stored["length"]))
            ]
        return run, trajectory
    data_kwargs = {"n": 400, "noise": 0.15}
    train_key = jax.random.split(jax.random.key(args.seed))[1]
    init_key, fit_key = jax.random.split(train_key)
    ds = data.from_config({"data": "moons", "seed": args.seed, "data_kwargs": data_kwargs})
    params = model.init(init_key)
    trajectory = [jax.tree.map(np.asarray, params)]

    def record(epoch, params, opt_state, history):
        trajectory.append(jax.tree.map(np.asarray, params))

    print(f"training the default model ({args.epochs} epochs) into {run_dir}")
    result = train.fit(
        model,
        ds.loss,
        "adam",
        ds,
        epochs=args.epochs,
        key=fit_key,
        params=params,
        learning_rate=0.02,
        callback=record,
        callback_every=max(1, args.epochs // 30),
        eval_every=10,
        progress=not args.no_progress,
    )
    config = {
        "data": "moons",
        "data_kwargs": data_kwargs,
        "loss": ds.loss,
        "optimizer": "adam",
        "hyperparams": {"learning_rate": 0.02},
        "epochs": args.epochs,
        "seed": args.seed,
    }
    runs.save_run(
        run_dir,
        model=model,
        config=config,
        params=result.params,
        opt_state=result.opt_state,
        history=result.history,
    )
    flat = {
        f"{t}/{i}/{k}": v
        for t, ps in enumerate(trajectory)
        for i, p in enumerate(ps)
        for k, v in p.items()
    }
    buffer = io.BytesIO()
    np.savez(buffer, length=len(trajectory), **flat)
    runs.atomic_write_bytes(traj_file, buffer.getvalue())
    return runs.load_run(run_dir), trajectory


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.run_dir and not (Path(args.run_dir) / "meta.json").is_file():
        which = "has none" if Path(args.run_dir).is_dir() else "is no directory"
        print(
            f"run_dir: expected a run directory from scripts/train.py (with meta.json), got "
            f"{args.run_dir}, which {which}.",
            file=sys.stderr,
        )
        return 2
    out = Path(
        args.out or (Path(args.run_dir) / "landscape" if args.run_dir else "results/landscape")
    )
    try:
        runs.check_run_dir(out, "--out")
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    try:  # held while this process writes out (the sweeps lock their own directories too)
        held = runs.lock(out, name="--out")
    except runs.DirectoryInUseError as e:
        print(e, file=sys.stderr)
        return 1
    with held:
        return _main(args, argv, out, start)


def _main(args, argv, out: Path, start: float) -> int:
    command = " ".join(
        ["python", "scripts/landscape.py", *(argv if argv is not None else sys.argv[1:])]
    )
    runs.atomic_write_json(
        out / "config.json",
        {
            **vars(args),
            "command": command,
        },
    )
    progress = not args.no_progress
    sweep_kw = dict(chunk_size=args.chunk_size, data_chunk=args.data_chunk, progress=progress)

    def sweep(sweep_fn, name: str, *sweep_args):
        """One resumable sweep into out/sweeps/<name>, saying what it reuses."""
        directory = out / "sweeps" / name
        status = sweep_status(directory)
        if status is not None:
            print(f"{name}: {status}")
        saved = lambda: f"{name}: {sweep_status(directory) or 'nothing yet'} in {directory}"  # noqa: E731
        with cli.stage(f"sweeping {name}", saved=saved, resume=command):
            return sweep_fn(*sweep_args, out=directory, **sweep_kw)

    if args.run_dir:
        run, trajectory = runs.load_run(args.run_dir), None
    else:
        with cli.stage(
            "training the default model", saved="nothing (it trains again)", resume=command
        ):
            run, trajectory = train_default(out, args)
    ds = data.from_config(run.config)
    model, params = run.model, run.params
    loss = run.config["loss"]
    # loss and accuracy at each point; an MLPLoss lets the sweep precompute the first layer
    f = landscape.mlp_loss(model, loss, accuracy=True)
    grid = np.linspace(-args.span, args.span, args.resolution)
    summary: dict = {
        "model": runs.model_to_dict(model),
        "loss_at_theta": float(f(params, ds.x, ds.y)["loss"]),
    }
    figures = []

    def save(fig, name):
        path = plots.save(fig, out / f"{name}.{args.format}")
        figures.append(path.name)

    # 1. the random filter-normalised plane around θ*
    k1, k2 = jax.random.split(jax.random.key(args.seed + 1))
    d1 = landscape.filter_normalized_direction(k1, params, norm=args.norm)
    d2 = landscape.filter_normalized_direction(k2, params, norm=args.norm)
    d1, d2, cosine = landscape.orthogonalize(d1, d2)
    plane = sweep(landscape.sweep_2d, "random_2d", f, params, d1, d2, grid, grid, ds.x, ds.y)
    summary["random_2d"] = {
        "cosine_before_orthogonalising": cosine,
        "min_loss": float(np.nanmin(plane["loss"])),
        "max_loss": float(np.nanmax(plane["loss"])),
    }
    what = f"{model.sizes} {model.activation.name} on {ds.name}"
    save(
        plots.landscape_2d(grid, grid, plane, title=f"{args.norm}-normalised random plane, {what}"),
        "landscape_2d",
    )
    save(plots.landscape_surface(grid, grid, plane, title=what), "landscape_surface")

    # 2. the line from θ₀ to θ*, and 3. the PCA plane of the trajectory
    if trajectory is not None:
        theta0 = jax.tree.map(jnp.asarray, trajectory[0])
        line = np.linspace(-0.5, 1.5, 81)  # steps of 0.025: 0 (init) and 1 (trained) on it
        direction = landscape.interpolation_direction(theta0, params)
        interp = sweep(landscape.sweep_1d, "interpolation", f, theta0, direction, line, ds.x, ds.y)
        save(
            plots.landscape_1d(
                line,
                interp,
                title=f"θ₀ + α(θ* − θ₀), {what}",
                xlabel=r"$\alpha$ (0: init, 1: trained)",
            ),
            "interpolation",
        )
        pca = landscape.pca_directions([jax.tree.map(jnp.asarray, t) for t in trajectory])
        coords = pca.coords
        lo, hi = coords.min(0), coords.max(0)
        pad = 0.25 * (hi - lo) + 1e-3
        alphas = np.linspace(lo[0] - pad[0], hi[0] + pad[0], args.resolution)
        betas = np.linspace(lo[1] - pad[1], hi[1] + pad[1], args.resolution)
        pca_plane = sweep(
            landscape.sweep_2d, "pca_2d", f, params, *pca.directions, alphas, betas, ds.x, ds.y
        )
        path_loss = np.array(
            [float(f(jax.tree.map(jnp.asarray, t), ds.x, ds.y)["loss"]) for t in trajectory]
        )
        buffer = io.BytesIO()
        np.savez(
            buffer,
            coords=coords,
            actual_loss=path_loss,
            explained_variance_ratio=pca.explained_variance_ratio,
        )
        runs.atomic_write_bytes(out / "trajectory_projection.npz", buffer.getvalue())
        ev = pca.explained_variance_ratio
        save(
            plots.landscape_2d(
                alphas,
                betas,
                pca_plane,
                trajectory=coords,
                trajectory_loss=path_loss,
                title=f"training path on its PCA plane ({ev[0]:.0%}, {ev[1]:.0%} of variance)",
                labels=("PC 1", "PC 2"),
            ),
            "pca_trajectory",
        )
        summary["interpolation"] = {
            "loss_at_init": float(interp["loss"][np.argmin(abs(line))]),
            "max_loss_between": float(np.max(interp["loss"][(line >= 0) & (line <= 1)])),
        }
        summary["pca"] = {"explained_variance_ratio": ev.tolist()}

    # 4. the convex bowl of linear regression beside the deep net
    lr_ds = data.linear_regression(jax.random.key(args.seed), n=200, d=2, noise=0.3)
    lr_model = MLP((2, 1), output_activation="identity")
    design = np.concatenate([np.asarray(lr_ds.x), np.ones((lr_ds.num_train, 1))], axis=1)
    solution = np.linalg.lstsq(design, np.asarray(lr_ds.y), rcond=None)[0]
    lr_params = [
        {"w": jnp.asarray(solution[:2].T, jnp.float32), "b": jnp.asarray(solution[2], jnp.float32)}
    ]
    # its two weights are the axes: C is a quadratic in them, a bowl
    c1 = [{"w": jnp.array([[1.0, 0.0]]), "b": jnp.zeros(1)}]
    c2 = [{"w": jnp.array([[0.0, 1.0]]), "b": jnp.zeros(1)}]
    bowl = sweep(
        landscape.sweep_2d,
        "convex_2d",
        landscape.mlp_loss(lr_model, "mse"),
        lr_params,
        c1,
        c2,
        grid * 2,
        grid * 2,
        lr_ds.x,
        lr_ds.y,
    )
    save(
        plots.convex_vs_nonconvex(
            (grid * 2, grid * 2, bowl),
            (grid, grid, plane),
            titles=("linear regression: a convex bowl", f"deep net {model.sizes}: non-convex"),
        ),
        "convex_vs_nonconvex",
    )

    summary["figures"] = figures
    summary["wall_time_s"] = time.perf_counter() - start
    runs.atomic_write_json(out / "summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "model"}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
