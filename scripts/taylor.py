"""How wrong is the linear prediction of a gradient step? Measured, per layer.

    python scripts/taylor.py                   # trains a small default model first
    python scripts/taylor.py runs/<run-dir>    # a run directory from scripts/train.py
    python scripts/taylor.py --data circles --hidden 8,8 --float64 --no-progress

For the step θ' = θ − η ∇C (the gradient-descent step) it measures, for every η
on a log grid around 2/λ_max, the actual change ΔC = C(θ') − C(θ) beside the
first-order (tangent) prediction −η‖∇C‖² and the second-order prediction that
adds ½η² ∇Cᵀ H ∇C; then the same for a step in one layer's params at a time
(the seed question's "weight number 129", layer by layer). Everything is
computed in float64; --float64 also trains the default model in float64
(float32 otherwise), on --data with --hidden/--activation, showing progress
unless --no-progress. Writes taylor.json, taylor.npz and two figures to --out
(default results/taylor or <run-dir>/taylor).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from gdjax import MLP, cli, curvature, data, objective, plots, runs, train  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("run_dir", nargs="?", help="a run directory from scripts/train.py")
    cli.add_data_option(p)
    cli.add_model_options(p, hidden="16,16", activation="tanh")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--points", type=int, default=41, help="number of step sizes η")
    p.add_argument("--epochs", type=int, default=100, help="default model's training epochs")
    p.add_argument("--threshold", type=float, default=0.1, help="first-order error to report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"])
    cli.add_precision_option(p)
    cli.add_progress_option(p)
    return p.parse_args(argv)


def load_or_train(args) -> tuple[MLP, str, list, data.Dataset]:
    """The run's model, loss, params and data; or an MLP (default (2, 16, 16, 1), tanh)
    trained on --data (default moons)."""
    if args.run_dir:
        run = runs.load_run(args.run_dir)
        return run.model, run.config["loss"], run.params, data.from_config(run.config)
    train_key = jax.random.split(jax.random.key(args.seed))[1]
    kwargs = {"n": 400, "noise": 0.15} if args.data in ("moons", "circles") else {}
    ds = data.from_config({"data": args.data, "seed": args.seed, "data_kwargs": kwargs})
    model = MLP(
        (ds.num_inputs, *cli.parse_hidden(args.hidden), ds.num_outputs), activation=args.activation
    )
    # Trained in float32 (the key fit would draw them with), as for the numbers in
    # docs/is-gradient-descent-broken.md, unless --float64; under x64 (which this
    # script turns on for the analysis) MLP.init's default would be float64.
    dtype = jnp.float64 if args.float64 else jnp.float32
    params = model.init(jax.random.split(train_key)[0], dtype=dtype)
    result = train.fit(
        model,
        ds.loss,
        "adam",
        ds,
        epochs=args.epochs,
        key=train_key,
        params=params,
        learning_rate=0.02,
        eval_every=0,
        progress=not args.no_progress,
    )
    return model, ds.loss, result.params, ds


def linear_regression_problem(seed: int):
    ds = data.linear_regression(jax.random.key(seed), n=200, d=5, noise=0.1, dtype=jnp.float64)
    model = MLP((5, 1), output_activation="identity")
    return model, ds


def quadratic_stability(seed: int, epochs: int = 100, progress: bool = True) -> dict:
    """Full-batch GD on linear regression (C is a quadratic) just below and above 2/λ_max.

    On a quadratic, each step multiplies the error along eigenvector k by
    (1 − ηλ_k): it shrinks for every k only when η < 2/λ_max.
    """
    model, ds = linear_regression_problem(seed)
    f = objective(model, "mse")
    params = model.init(jax.random.key(seed), dtype=jnp.float64)
    lam = float(
        curvature.top_eigenvalues(f, params, 1, ds.x, ds.y, key=jax.random.key(seed)).eigenvalues[0]
    )
    runs_ = []
    for factor in (0.9, 0.99, 1.01, 1.1):
        eta = factor * 2 / lam
        with warnings.catch_warnings():  # a divergence above 2/λ is the point: recorded below
            warnings.simplefilter("ignore", train.DivergedWarning)
            result = train.fit(
                model,
                "mse",
                "sgd",
                (ds.x, ds.y),
                epochs=epochs,
                key=jax.random.key(seed),
                params=params,
                learning_rate=eta,
                eval_every=0,
                progress=progress,
            )
        loss = result.history["step_loss"]
        runs_.append(
            {
                "eta_times_lambda_over_2": factor,
                "eta": eta,
                "loss_start": float(loss[0]),
                "loss_end": float(loss[-1]),
                "loss_ratio": float(loss[-1] / loss[0]),
                "diverged": result.diverged is not None,
            }
        )
    return {"lambda_max": lam, "stability_limit": 2 / lam, "epochs": epochs, "runs": runs_}


DENSE_NEWTON_MAX_PARAMS = 2000


def newton_one_step(f, params, x, y, seed: int) -> dict:
    """One dense Newton step θ − H⁻¹∇C: exact on linear regression, not on the MLP."""
    model, ds = linear_regression_problem(seed)
    f_lr = objective(model, "mse")
    p0 = model.init(jax.random.key(seed), dtype=jnp.float64)
    step = curvature.newton_step(f_lr, p0, ds.x, ds.y, method="dense")
    design = np.concatenate([np.asarray(ds.x), np.ones((ds.num_train, 1))], axis=1)
    solution = np.linalg.lstsq(design, np.asarray(ds.y), rcond=None)[0].ravel()
    reached = np.concatenate([np.ravel(step.params[0]["w"]), np.ravel(step.params[0]["b"])])

    def grad_norm(p) -> float:
        return float(optax.tree.norm(jax.grad(f)(p, x, y)))

    # on the MLP: damped just enough to make H + λI positive definite (H is indefinite);
    # a dense Hessian of n params costs n² numbers and n HVPs: conjugate gradients above 2 000
    size = sum(int(np.size(p)) for p in jax.tree.leaves(params))
    method = "dense" if size <= DENSE_NEWTON_MAX_PARAMS else "cg"
    mlp = curvature.newton_step(f, params, x, y, method=method, damping=1e-3)
    return {
        "linear_regression_distance": float(np.linalg.norm(reached - solution)),
        "mlp_loss_before": float(f(params, x, y)),
        "mlp_loss_after": float(f(mlp.params, x, y)),
        "mlp_grad_norm_before": grad_norm(params),
        "mlp_grad_norm_after": grad_norm(mlp.params),
        "mlp_damping": 1e-3,
        "mlp_method": method,
        "mlp_converged": bool(mlp.converged),
    }


def eta_threshold_cell(eta_threshold: float, etas) -> str:
    """The table's "η @ err" entry: the η, or ``> η_max`` when the swept range never reached it.

    ``taylor_step`` reports NaN when the first-order error stays below the
    threshold up to the largest η swept; the honest statement is a lower bound.
    """
    if math.isnan(eta_threshold):
        return f"> {float(np.max(etas)):.4g}"
    return f"{eta_threshold:.4g}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out or (Path(args.run_dir) / "taylor" if args.run_dir else "results/taylor"))
    out.mkdir(parents=True, exist_ok=True)
    model, loss, params, ds = load_or_train(args)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    x = jnp.asarray(ds.x, jnp.float64)
    y = ds.y if jnp.issubdtype(ds.y.dtype, jnp.integer) else jnp.asarray(ds.y, jnp.float64)
    f = objective(model, loss)
    key = jax.random.key(args.seed + 1)
    eig = curvature.top_eigenvalues(f, params, 1, x, y, key=key)
    lam = float(eig.eigenvalues[0])
    scale = 2.0 / abs(lam)
    etas = np.geomspace(1e-4 * scale, 10 * scale, args.points)

    results = {
        "all layers": curvature.taylor_step(
            f, params, x, y, etas=etas, key=key, threshold=args.threshold, lambda_max=lam
        )
    }
    for layer in range(model.num_layers):
        results[f"layer {layer + 1}"] = curvature.taylor_step(
            f, params, x, y, etas=etas, layer=layer, key=key, threshold=args.threshold
        )

    what = f"{model.sizes} {model.activation.name} on {ds.name}, step −η∇C"
    names = [
        plots.save(
            plots.taylor_predictions(results["all layers"], title=what),
            out / f"taylor_predictions.{args.format}",
        ).name,
        plots.save(
            plots.taylor_errors(results, title=what), out / f"taylor_errors.{args.format}"
        ).name,
    ]
    summary = {
        "model": runs.model_to_dict(model),
        "loss": loss,
        "data": ds.name,
        "loss_at_theta": float(f(params, x, y)),
        "lambda_max": lam,
        "figures": names,
        "per_direction": {},
    }
    arrays = {"etas": etas}
    for label, r in results.items():
        at = {
            f"eta={m}/lambda_max": float(
                np.interp(np.log(m / abs(r.lambda_max)), np.log(r.etas), r.first_order_error)
            )
            for m in (0.01, 0.1, 1.0)
        }
        summary["per_direction"][label] = {
            "lambda_max": r.lambda_max,
            "stability_limit_2_over_lambda": r.stability_limit,
            "eta_where_first_order_error_exceeds_threshold": r.eta_threshold,
            "threshold": r.threshold,
            "slope_gradC_dot_d": r.slope,
            "curvature_dHd": r.curvature,
            "first_order_relative_error": at,
        }
        for field in (
            "actual",
            "first_order",
            "second_order",
            "first_order_error",
            "second_order_error",
        ):
            arrays[f"{label}/{field}"] = np.asarray(getattr(r, field))
    summary["quadratic_stability"] = quadratic_stability(args.seed, progress=not args.no_progress)
    summary["newton"] = newton_one_step(f, params, x, y, args.seed)
    summary["wall_time_s"] = time.perf_counter() - start
    runs.atomic_write_json(out / "taylor.json", summary)
    np.savez(out / "taylor.npz", **arrays)

    print(f"{what}\nλ_max = {lam:.4g}, 2/λ_max = {2 / lam:.4g}")
    at_threshold = f"η @ {100 * args.threshold:.3g}% err"
    print(
        f"{'direction':<12}{'λ_max':>10}{'2/λ_max':>10}{at_threshold:>14}"
        f"{'err @ 0.01/λ':>14}{'err @ 0.1/λ':>13}{'err @ 1/λ':>11}"
    )
    for label, r in results.items():
        e = summary["per_direction"][label]["first_order_relative_error"]
        print(
            f"{label:<12}{r.lambda_max:>10.4g}{r.stability_limit:>10.4g}"
            f"{eta_threshold_cell(r.eta_threshold, r.etas):>14}{e['eta=0.01/lambda_max']:>14.2%}"
            f"{e['eta=0.1/lambda_max']:>13.2%}{e['eta=1.0/lambda_max']:>11.2%}"
        )
    if any(math.isnan(r.eta_threshold) for r in results.values()):
        print(
            f"> η_max: the first-order error stays below {100 * args.threshold:.3g}% up to "
            f"the largest η swept, η_max = {float(np.max(etas)):.4g}"
        )
    q = summary["quadratic_stability"]
    print(
        f"linear regression (a quadratic C), λ_max = {q['lambda_max']:.4g}: full-batch GD for "
        f"{q['epochs']} epochs, C_end/C_start = "
        + ", ".join(
            f"{r['loss_ratio']:.3g} at η = {r['eta_times_lambda_over_2']}·2/λ" for r in q["runs"]
        )
    )
    n = summary["newton"]
    print(
        f"one Newton step: linear regression ‖θ − θ_lstsq‖ = {n['linear_regression_distance']:.2e};"
        f" the MLP's C {n['mlp_loss_before']:.4g} → {n['mlp_loss_after']:.4g}, ‖∇C‖ "
        f"{n['mlp_grad_norm_before']:.3g} → {n['mlp_grad_norm_after']:.3g}"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
