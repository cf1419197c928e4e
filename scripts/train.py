"""Train an MLP on built-in data and write a self-describing run directory.

    python scripts/train.py --data moons --hidden 16,16 --activation tanh \\
        --optimizer adam --lr 1e-2 --batch-size 32 --epochs 200 --seed 0
    python scripts/train.py --seeds 8 --lr 0.003,0.01,0.03   # a population: 8 seeds × 3 η

The run directory (``--out``, default ``runs/<time>-<data>``) holds config.json
(everything needed to rerun), params, optimizer state, history, meta.json and
training_curves.png (loss, accuracy, per-layer gradient norms). With several
seeds or learning rates, every (seed, η) pair is one member of a population
trained in one jitted run (:func:`gdjax.train.fit_population`): the data set
comes from ``--seed`` and is shared, each member's seed draws its init and
shuffles, so member (s, η) is the run ``--seed s --lr η`` when s = --seed. The arrays
carry a leading member axis, config.json lists the members, and the figure
shows the median, a 10–90 % band and every member.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from gdjax import activations, cli, losses, train
    from gdjax.mlp import INIT_SCHEMES

    p = cli.parser(__doc__)
    cli.add_data_option(p)
    cli.add_model_options(p)
    p.add_argument("--output-activation", default="identity", choices=activations.names())
    p.add_argument("--loss", default=None, choices=losses.names(), help="default: the data's")
    p.add_argument("--optimizer", default="adam", choices=list(train.OPTIMIZERS))
    p.add_argument(
        "--lr", default="1e-2", help="learning rate η, or comma-separated values (a population)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: full batch")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds", type=int, default=1, help="train seeds seed … seed+N−1 (a population if N > 1)"
    )
    p.add_argument("--init", default="glorot", choices=INIT_SCHEMES)
    p.add_argument("--grad", default="hand", choices=["hand", "auto"])
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--diagnostics-every", type=int, default=10)
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=10,
        help="epochs between checkpoints in the run directory (0: only at the end); the same "
        "command with the same --out resumes from the last one",
    )
    cli.add_precision_option(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<time>-<data>)")
    cli.add_progress_option(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from gdjax import MLP, cli, data, runs

    try:
        hidden = cli.parse_hidden(args.hidden)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        lrs = [float(v) for v in args.lr.split(",")]
    except ValueError:
        print(f"--lr: expected numbers, comma-separated, got {args.lr!r}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print(f"--seeds: expected a positive integer, got {args.seeds}", file=sys.stderr)
        return 2
    ds = data.from_config({"data": args.data, "seed": args.seed})
    dtype = jnp.float64 if args.float64 else jnp.float32
    if args.float64:
        ds = jax.tree.map(
            lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, ds
        )
    loss = args.loss or ds.loss
    model = MLP((ds.num_inputs, *hidden, ds.num_outputs), args.activation, args.output_activation)
    members = [(seed, lr) for seed in range(args.seed, args.seed + args.seeds) for lr in lrs]
    population = len(members) > 1

    def start(seed: int):
        """(params, fit key) of one run: the same for a seed alone or in a population."""
        init_key, fit_key = jax.random.split(jax.random.split(jax.random.key(seed))[1])
        return model.init(init_key, scheme=args.init, dtype=dtype), fit_key

    starts = [start(seed) for seed, _ in members]
    config = {
        "data": args.data,
        "loss": loss,
        "optimizer": args.optimizer,
        "hyperparams": {"learning_rate": lrs if population else lrs[0]},
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "init": args.init,
        "grad": args.grad,
        "dtype": jnp.dtype(dtype).name,
        "eval_every": args.eval_every,
        "diagnostics_every": args.diagnostics_every,
        "command": " ".join(["python", "scripts/train.py", *(argv or sys.argv[1:])]),
    }
    if population:
        config["members"] = len(members)
        config["member_config"] = [{"seed": s, "learning_rate": lr} for s, lr in members]
    if args.out:
        try:
            out = runs.check_run_dir(args.out, "--out")
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
    else:
        out = runs.new_run_dir("runs", args.data)
    try:  # held while this process writes out: a second run into it is told at once
        held = runs.lock(out, name="--out")
    except runs.DirectoryInUseError as e:
        print(e, file=sys.stderr)
        return 1
    with held:
        return _train(args, argv, out, model, ds, loss, lrs, members, starts, config)


def _train(args, argv, out, model, ds, loss, lrs, members, starts, config) -> int:
    """Train into ``out`` (locked by the caller), save the run and its figure."""
    import jax.numpy as jnp
    import numpy as np

    from gdjax import cli, diagnostics, plots, runs, train

    population = len(members) > 1
    print(f"{model}\ndata: {ds}\nrun directory: {out}")
    began = time.perf_counter()
    command = ["python", "scripts/train.py", *(argv if argv is not None else sys.argv[1:])]
    resume = " ".join(command if args.out else [*command, "--out", str(out)])

    def saved() -> str:
        ckpt = out / runs.CHECKPOINT_MANIFEST
        if not ckpt.is_file():
            return "nothing yet (no checkpoint)"
        return f"checkpoint of epoch {json.loads(ckpt.read_text())['step']} in {out}"

    common = dict(
        run_dir=out,
        checkpoint_every=args.checkpoint_every,
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad=args.grad,
        eval_every=args.eval_every,
        diagnostics_every=args.diagnostics_every,
        progress=not args.no_progress,
    )
    with cli.stage(f"training ({out})", saved=saved, resume=resume):
        if population:
            stack = lambda *trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
            result = train.fit_population(
                model,
                loss,
                args.optimizer,
                ds,
                keys=jnp.stack([key for _, key in starts]),
                params=stack(*[params for params, _ in starts]),
                learning_rate=np.array([lr for _, lr in members]),
                **common,
            )
        else:
            (params, fit_key), lr = starts[0], lrs[0]
            result = train.fit(
                model, loss, args.optimizer, ds, key=fit_key, params=params, learning_rate=lr,
                **common,
            )  # fmt: skip
    wall = time.perf_counter() - began
    runs.save_run(
        out,
        model=model,
        config=config,
        params=result.params,
        opt_state=result.opt_state,
        history=result.history,
        meta_extra={"wall_time_s": wall, "diverged": result.diverged},
    )
    eta = args.lr if population else lrs[0]
    title = f"{args.data}: {model.sizes} {args.activation}, {args.optimizer} η={eta}"
    plots.save(plots.training_curves(result.history, title=title), f"{out}/training_curves.png")
    h = result.history
    if population:
        print(f"{'seed':>6}{'η':>10}{'final loss':>12}{'test acc':>10}  diverged")
        for i, (seed, lr) in enumerate(members):
            acc = h["test_accuracy"][i][-1] if len(h.get("test_accuracy", [[]])[i]) else np.nan
            print(
                f"{seed:>6}{lr:>10.4g}{h['loss'][i][-1]:>12.5g}{acc:>10.4g}  "
                f"{'yes' if result.diverged[i] else 'no'}"
            )
        print(f"({wall:.1f} s for {len(members)} members)\nwrote {out}")
        return 1 if all(result.diverged) else 0
    print(f"final epoch loss {h['loss'][-1]:.5g}", end="")
    for name in ("test_loss", "test_accuracy", "train_accuracy"):
        if name in h and len(h[name]):
            print(f", {name} {h[name][-1]:.4g}", end="")
    print(f"  ({wall:.1f} s)")
    print(
        diagnostics.format_table(
            diagnostics.gradient_report(model, loss, result.params, ds.x, ds.y), model
        )
    )
    print(f"wrote {out}")
    return 1 if result.diverged else 0


if __name__ == "__main__":
    from gdjax import cli

    sys.exit(cli.run(main))
