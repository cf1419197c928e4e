"""as_called: public functions called as the docs show them, against the same call jitted.

    python benchmarks/bench_as_called.py            # standalone: table + JSON in results/
    python benchmarks/bench_as_called.py --quick    # a few seconds (CI runs it via run.py)
    python benchmarks/bench_as_called.py --peers    # + torch / BackPACK / PyHessian, if installed

The problem of issue 20: a (64, 32, 10) ReLU classifier on scikit-learn's
digits (1 438 training examples, 2 410 parameters), float32, softmax
cross-entropy, ``f = gdjax.objective(model, loss)`` built once. For each main
function it reports, side by side,

- ``later call``: the median time of a call **as called** (no ``jax.jit`` by the
  user; gdjax's input checks included), after a first call;
- ``user-jitted``: the same computation inside the user's own
  ``jax.jit(lambda …)`` (where the function can be jitted at all: the
  iterative ones, Lanczos and the landscape sweep, run host loops);
- ``first call``: the first call in this process (compilation included; in
  this process other functions have already warmed JAX up, so it is mostly
  the compile of that function).

The two variants of a function are timed interleaved (``common.interleaved``),
medians of ``repeats``. Without ``--quick`` the first call is also measured in
fresh child processes, with no persistent compilation cache, with an empty one
(cold) and with the one the cold child filled (warm): the compile latency a
script sees with ``gdjax.cli``'s cache on a first and a later run. λ_max is
asked to ``tol=1e-3`` and *verified* against the dense Hessian's ``eigvalsh``.

``--peers`` (never in CI) times, where they are installed, torch's full HVP
(forward, backward with ``create_graph``, second backward: every call) and the
second backward alone on a reused graph, BackPACK's per-example gradients
(``BatchGrad``) and PyHessian's ``eigenvalues(top_n=1, tol=1e-3)`` on the same net
and data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import (
    RESULTS_DIR,
    Context,
    Row,
    dump_json,
    environment,
    format_table,
    interleaved,
    loadavg,
    median,
    timed,
)

import gdjax
import gdjax.cli
from gdjax import MLP, curvature, diagnostics, jacobians, landscape, per_example

SECTION = "as_called"
SIZES = (64, 32, 10)
LOSS = "softmax_cross_entropy"
FULL_OUT = RESULTS_DIR / "2026-12-07-cpu-as-called.json"


def problem(quick: bool) -> dict[str, Any]:
    """The net, its params, the data and ``f``; ``quick`` keeps 256 examples."""
    ds = gdjax.data.digits()
    n = 256 if quick else ds.x.shape[0]
    model = MLP(SIZES, activation="relu")
    params = model.init(jax.random.key(0), dtype=jnp.float32)
    x, y = jnp.asarray(ds.x[:n], jnp.float32), jnp.asarray(ds.y[:n])
    v = jax.tree.map(lambda p: jnp.ones_like(p) / 10, params)
    return {"model": model, "params": params, "x": x, "y": y, "v": v,
            "f": gdjax.objective(model, LOSS)}  # fmt: skip


def cases(p: dict[str, Any]) -> dict[str, Callable[[], tuple[Callable, Callable | None]]]:
    """name -> a builder of (as called, user-jitted or None), thunks on the problem ``p``.

    A builder does its set-up (an operator, directions, a jitted wrapper) only when called.
    """
    model, params, x, y, v, f = (p[k] for k in ("model", "params", "x", "y", "v", "f"))
    key = jax.random.key(1)
    xs = x[:64]
    etas = [1e-3, 1e-2, 0.1, 0.3, 1.0]
    jit = jax.jit

    def hvp():
        j = jit(lambda q, u, a, b: curvature.hvp(f, q, u, a, b))
        return lambda: curvature.hvp(f, params, v, x, y), lambda: j(params, v, x, y)

    def operator():
        op = curvature.hvp_operator(f, params, x, y)
        return lambda: op(v), None

    def gnvp():
        j = jit(lambda q, u, a, b: curvature.gnvp(model, LOSS, q, u, a, b))
        return lambda: curvature.gnvp(model, LOSS, params, v, x, y), lambda: j(params, v, x, y)

    def peg():
        j = jit(lambda q, a, b: per_example.per_example_grads(model, LOSS, q, a, b))
        return (lambda: per_example.per_example_grads(model, LOSS, params, x, y),
                lambda: j(params, x, y))  # fmt: skip

    def pen():
        j = jit(lambda q, a, b: per_example.per_example_grad_norms(model, LOSS, q, a, b))
        return (lambda: per_example.per_example_grad_norms(model, LOSS, params, x, y),
                lambda: j(params, x, y))  # fmt: skip

    def noise():
        return lambda: per_example.gradient_noise(model, LOSS, params, x, y).grad, None

    def report():
        j = jit(lambda q, a, b: diagnostics.gradient_report(model, LOSS, q, a, b))
        return (lambda: diagnostics.gradient_report(model, LOSS, params, x, y),
                lambda: j(params, x, y))  # fmt: skip

    def jac():
        j = jit(lambda q, a: jacobians.jacobian_singular_values(model, q, a))
        return lambda: jacobians.jacobian_singular_values(model, params, xs), lambda: j(params, xs)

    def taylor():
        return (lambda: curvature.taylor_step(f, params, x, y, etas=etas, lambda_max=1.0).actual,
                None)  # fmt: skip

    def trace():
        return lambda: curvature.trace(f, params, x, y, key=key).estimate, None

    def top():
        return (lambda: curvature.top_eigenvalues(f, params, 1, x, y, key=key, tol=1e-3)
                .eigenvalues, None)  # fmt: skip

    def apply():
        j = jit(lambda q, a: model.apply(q, a))
        return lambda: model.apply(params, x), lambda: j(params, x)

    def cost():
        return lambda: f(params, x, y), lambda: jf(params, x, y)

    def loss_call():
        loss, out = gdjax.losses.get(LOSS), model.apply(params, x)
        j = jit(lambda o, b: loss(o, b))
        return lambda: loss(out, y), lambda: j(out, y)

    def backprop():
        j = jit(lambda q, a, b: gdjax.backprop(model, LOSS, q, a, b))
        return lambda: gdjax.backprop(model, LOSS, params, x, y), lambda: j(params, x, y)

    jf = jit(f)

    def sweep():
        d1 = landscape.filter_normalized_direction(jax.random.key(2), params)
        d2 = landscape.filter_normalized_direction(jax.random.key(3), params)
        grid = np.linspace(-1.0, 1.0, 21)
        return lambda: landscape.sweep_2d(f, params, d1, d2, grid, grid, x, y), None

    return {
        "MLP.apply": apply,
        "objective f": cost,
        "Loss(pred, y)": loss_call,
        "backprop": backprop,
        "hvp": hvp,
        "hvp_operator product": operator,
        "gnvp": gnvp,
        "per_example_grads": peg,
        "per_example_grad_norms": pen,
        "gradient_noise": noise,
        "gradient_report": report,
        "jacobian_singular_values (64 ex.)": jac,
        "taylor_step (5 etas, lambda_max given)": taylor,
        "trace (100 samples)": trace,
        "top_eigenvalues k=1 tol=1e-3": top,
        "sweep_2d 21x21": sweep,
    }


MAIN = ("hvp", "per_example_grads", "top_eigenvalues k=1 tol=1e-3", "sweep_2d 21x21",
        "gradient_report")  # fmt: skip


def verify_lambda_max(p: dict[str, Any]) -> dict[str, float]:
    """λ_max to tol 1e-3 against ``eigvalsh`` of the dense Hessian (float32, 2 410²)."""
    from jax.flatten_util import ravel_pytree

    f, params, x, y = p["f"], p["params"], p["x"], p["y"]
    flat, unravel = ravel_pytree(params)
    dense = jax.jit(jax.hessian(lambda u: f(unravel(u), x, y)))(flat)
    truth = float(jnp.linalg.eigvalsh(0.5 * (dense + dense.T))[-1])
    eig = curvature.top_eigenvalues(f, params, 1, x, y, key=jax.random.key(1), tol=1e-3)
    got = float(eig.eigenvalues[0])
    return {"lambda_max": got, "dense": truth, "rel_error": abs(got - truth) / abs(truth),
            "converged": bool(eig.converged), "hvps": int(eig.hvps)}  # fmt: skip


# ---------------------------------------------------------------- child processes


def _child(name: str, quick: bool) -> None:
    """Run in a fresh process: print the first- and second-call seconds of case ``name``."""
    jax.config.update("jax_enable_x64", False)
    p = problem(quick)
    fn = cases(p)[name]()[0]
    first = timed(fn)
    print(json.dumps({"first_s": first, "second_s": timed(fn)}))


def _first_call_children(name: str, quick: bool) -> dict[str, float]:
    """First-call seconds with no persistent cache, an empty one, and the one it filled."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        for label, use_cache in (("no cache", False), ("cold cache", True),
                                 ("warm cache", True)):  # fmt: skip
            env = {**os.environ, "JAX_PLATFORMS": "cpu"}
            if use_cache:
                env["GDJAX_BENCH_CACHE"] = cache
            cmd = [sys.executable, __file__, "--child", name] + (["--quick"] if quick else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])["first_s"]
        out["cache entries"] = len(list(Path(cache).iterdir()))
    return out


# ---------------------------------------------------------------- the section


def section(ctx: Context) -> list[Row]:
    return as_called(ctx.quick, ctx.repeats if not ctx.quick else 3, children=not ctx.quick)


def as_called(quick: bool, repeats: int, *, children: bool) -> list[Row]:
    p = problem(quick)
    table = cases(p)
    names = ("hvp", "per_example_grads", "gradient_report") if quick else tuple(table)
    rows: list[Row] = []
    n = p["x"].shape[0]
    for name in names:
        called, jitted = table[name]()
        first = timed(called)
        fns = {"as called": called} | ({"user-jitted": jitted} if jitted else {})
        times = interleaved(fns, repeats)
        ms = {k: [1e3 * t for t in v] for k, v in times.items()}
        rows.append(Row(SECTION, f"{name} first call", 1e3 * first, "ms",
                        "in-process, compile included"))  # fmt: skip
        for label, values in ms.items():
            rows.append(Row(SECTION, f"{name} {label}", median(values), "ms",
                            f"later calls, median of {repeats}, n={n}", values))  # fmt: skip
        if jitted:
            ratio = [a / b for a, b in zip(ms["as called"], ms["user-jitted"], strict=True)]
            rows.append(Row(SECTION, f"{name} as called / user-jitted", median(ratio), "ratio",
                            "paired per sample"))  # fmt: skip
    if children:
        for name in MAIN:
            first = _first_call_children(name, quick)
            for label in ("no cache", "cold cache", "warm cache"):
                rows.append(Row(SECTION, f"{name} first call, fresh process, {label}",
                                1e3 * first[label], "ms",
                                "child process; persistent compilation cache",
                                info={"cache_entries": first["cache entries"]}))  # fmt: skip
        check = verify_lambda_max(p)
        rows.append(Row(SECTION, "lambda_max tol=1e-3 relative error vs dense eigvalsh",
                        check["rel_error"], "ratio",
                        f"converged={check['converged']}, {check['hvps']} HVPs",
                        info=check))  # fmt: skip
    return rows


# ---------------------------------------------------------------- peers (never in CI)


def peers(quick: bool, repeats: int) -> list[Row]:
    """torch / BackPACK / PyHessian / loss-landscapes on the same net and data, where installed."""
    try:
        import torch
    except ImportError:
        return [Row(SECTION, "peers", None, "-", "torch is not installed")]
    p = problem(quick)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    ws = [(np.array(q["w"]), np.array(q["b"])) for q in p["params"]]

    def fresh_net():  # the same weights as gdjax's params, a new module for each tool
        net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        with torch.no_grad():
            for layer, (w, b) in zip((net[0], net[2]), ws, strict=True):
                layer.weight.copy_(torch.from_numpy(w))
                layer.bias.copy_(torch.from_numpy(b))
        return net

    x = torch.from_numpy(np.array(p["x"]))
    y = torch.from_numpy(np.array(p["y"])).long()
    crit = torch.nn.CrossEntropyLoss()
    rows: list[Row] = []

    ours = cases(p)

    def time_it(label: str, fn, notes: str = "", warmup: int = 3, against: str = "") -> None:
        """The peer's median time; with ``against``, interleaved with that gdjax case as
        called (alternating which runs first in each round) and their per-round ratio."""
        mine = None
        if against:
            gdjax_call = ours[against]()[0]

            def mine():
                return jax.block_until_ready(gdjax_call())

        for _ in range(warmup):
            fn()
            if mine:
                mine()
        times, gd = [], []
        for r in range(repeats):
            for which in ((0, 1) if r % 2 == 0 else (1, 0)) if mine else (0,):
                t = time.perf_counter()
                fn() if which == 0 else mine()
                (times if which == 0 else gd).append(1e3 * (time.perf_counter() - t))
        rows.append(Row(SECTION, f"peer {label}", median(times), "ms", notes, times))
        if mine:
            ratios = [a / b for a, b in zip(gd, times, strict=True)]
            rows.append(Row(SECTION, f"gdjax {against} as called, same rounds", median(gd), "ms",
                            f"interleaved with {label}", gd))  # fmt: skip
            rows.append(Row(SECTION, f"gdjax {against} / {label}", median(ratios), "ratio",
                            "median of per-round ratios (< 1: gdjax faster)", ratios))  # fmt: skip

    net = fresh_net()
    params = list(net.parameters())
    vs = [torch.full_like(q, 0.1) for q in params]

    def full_hvp():  # forward, backward with a graph, and the second backward: every call
        g = torch.autograd.grad(crit(net(x), y), params, create_graph=True)
        return torch.autograd.grad(g, params, vs)

    grads = torch.autograd.grad(crit(net(x), y), params, create_graph=True)

    def reused_hvp():
        return torch.autograd.grad(grads, params, vs, retain_graph=True)

    time_it("torch full HVP", full_hvp, against="hvp")
    time_it("torch HVP, reused graph", reused_hvp)
    try:
        from backpack import backpack, extend
        from backpack.extensions import BatchGrad

        bnet, bcrit = extend(fresh_net()), extend(torch.nn.CrossEntropyLoss())

        def batch_grad():
            bnet.zero_grad()
            with backpack(BatchGrad()):
                bcrit(bnet(x), y).backward()
            return [q.grad_batch for q in bnet.parameters()]

        time_it("BackPACK BatchGrad", batch_grad, against="per_example_grads")
    except ImportError:
        rows.append(Row(SECTION, "peer BackPACK", None, "-", "backpack-for-pytorch not installed"))
    try:
        from pyhessian import hessian

        hnet = fresh_net()

        def top():
            return hessian(hnet, crit, data=(x, y), cuda=False).eigenvalues(top_n=1, tol=1e-3)

        values, _ = top()
        time_it(
            "PyHessian eigenvalues top_n=1 tol=1e-3",
            top,
            f"lambda_max={values[0]:.6g}",
            1,
            against="top_eigenvalues k=1 tol=1e-3",
        )
    except ImportError:
        rows.append(Row(SECTION, "peer PyHessian", None, "-", "pyhessian not installed"))
    try:
        import loss_landscapes
        import loss_landscapes.metrics

        lnet, metric = fresh_net(), loss_landscapes.metrics.Loss(crit, x, y)

        def plane():
            return loss_landscapes.random_plane(
                lnet, metric, distance=1, steps=21, normalization="layer", deepcopy_model=True
            )

        time_it(
            "loss-landscapes random_plane 21x21",
            plane,
            "layer-normalised (filter divides by the zero biases)",
            1,
            against="sweep_2d 21x21",
        )
    except ImportError:
        rows.append(Row(SECTION, "peer loss-landscapes", None, "-", "not installed"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--peers", action="store_true", help="also time torch peers")
    parser.add_argument("--out", type=Path, help=f"JSON path (default: {FULL_OUT})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.environ.get("GDJAX_BENCH_CACHE"):  # a child: the scripts' cache, in a temporary dir
        gdjax.cli.enable_compile_cache(os.environ["GDJAX_BENCH_CACHE"])
    if args.child:
        _child(args.child, args.quick)
        return
    jax.config.update("jax_enable_x64", False)
    start = time.perf_counter()
    load_start = loadavg()
    rows = as_called(args.quick, 3 if args.quick else args.repeats, children=not args.quick)
    if args.peers:
        rows += peers(args.quick, 3 if args.quick else args.repeats)
    text = format_table(rows)
    print(text)
    if args.out or not args.quick:
        out = args.out or FULL_OUT
        report = {"section": SECTION, "quick": args.quick, **environment(),
                  "loadavg_1_5_15min": {"start": load_start, "end": loadavg()},
                  "wall_s": round(time.perf_counter() - start, 1),
                  "rows": [r.__dict__ for r in rows]}  # fmt: skip
        out.write_text(dump_json(report) + "\n")
        out.with_suffix(".log").write_text(
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}\n{text}\n"
        )
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
