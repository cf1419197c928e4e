"""Where a training step's time goes: a jax.profiler trace of hand / auto / bare steps.

    python benchmarks/profile_step.py                  # configs (c) and (d), 200 steps each
    python benchmarks/profile_step.py --configs a,b,c,d --steps 50 --out /tmp/profile.json

For each config of ``bench_steps.py`` and each variant (``hand``: ``make_step`` with
the hand backprop; ``auto``: ``make_step`` with ``jax.value_and_grad``; ``bare``:
``jit(value_and_grad)`` with ``θ − ηg`` inline), it runs the jitted step under
``jax.profiler.trace`` and reads the trace back (``*.trace.json.gz``, Chrome trace
format: open it in https://ui.perfetto.dev). XLA's CPU runtime records one event
per executed kernel (thunk), named after its HLO instruction; each name is looked
up in the compiled HLO and classed by what the kernel computes:

- ``matmul``: a ``dot`` or a library GEMM (``ynn_fusion``, custom calls);
- ``transcendental``: a fusion holding ``exponential``, ``tanh``, ``logistic``,
  ``log`` or ``erf`` (with or without divides);
- ``divide``: a fusion with a ``divide`` and no transcendental;
- ``other``: every other kernel (adds, multiplies, selects, reductions, copies).

Variants are traced in interleaved blocks (``--rounds`` of ``--steps`` steps) and
every figure is a median over blocks: on a shared machine one block can run 3×
slower than the next. It prints, per step: the wall time under the profiler, the
number of kernels, and the kernel time in each class, and writes the table (and
every block's figures) as JSON. On a GPU the trace holds device
kernels under other names; this reader is written for XLA's CPU runtime.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from bench_steps import CONFIGS, LR, _bare_step, _problem

from gdjax import MLP
from gdjax.train import make_step

CLASSES = ("matmul", "transcendental", "divide", "other")
TRANSCENDENTAL = ("exponential", "tanh", "logistic", "log", "log-plus-one", "erf", "power")
_SKIP = ("ThreadpoolListener", "ThunkExecutor", "end: ")


def _computations(hlo: str) -> dict[str, str]:
    """``name -> body`` of every computation in an HLO module's text."""
    bodies: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", hlo):
        header = re.match(r"(?:ENTRY\s+)?%?([\w.\-]+)\s", block)
        if header:
            bodies[header.group(1)] = block
    return bodies


_OPCODE = re.compile(r"=\s*\S+\s+([a-z][\w\-]*)\(")  # "%x = f32[8] exponential(" -> exponential


def _opcodes(body: str) -> list[str]:
    """The opcode of every instruction in ``body``, in order (with repeats)."""
    return _OPCODE.findall(body)


def kernel_classes(hlo: str) -> dict[str, str]:
    """``instruction name -> class`` for every instruction of the compiled module."""
    bodies = _computations(hlo)
    classes: dict[str, str] = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+\s+([a-z][\w\-]*)\(", line)
        if not m:
            continue
        name, opcode = m.groups()
        ops = {opcode}
        called = re.search(r"calls=%?([\w.\-]+)", line)
        if called and called.group(1) in bodies:
            ops |= set(_opcodes(bodies[called.group(1)]))
        if "dot" in ops or "custom-call" in ops or name.startswith("ynn_fusion"):
            classes[name] = "matmul"
        elif ops & set(TRANSCENDENTAL):
            classes[name] = "transcendental"
        elif "divide" in ops:
            classes[name] = "divide"
        else:
            classes[name] = "other"
    return classes


def kernel_events(trace_dir: Path) -> list[tuple[str, float]]:
    """``(name, microseconds)`` of every kernel event in the trace written to ``trace_dir``."""
    (path,) = sorted(trace_dir.glob("plugins/profile/*/*.trace.json.gz"))[-1:]
    events = json.load(gzip.open(path))["traceEvents"]
    threads = {
        e["tid"]: e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    return [
        (e["name"], float(e["dur"]))
        for e in events
        if e.get("ph") == "X"
        and threads.get(e.get("tid"), "") != "python"
        and not e["name"].startswith(_SKIP)
    ]


def _variants(model: MLP, loss: str):
    """``name -> (jitted step, optimizer state)`` for hand, auto and bare."""
    out = {}
    for grad in ("hand", "auto"):
        step = make_step(model, loss, "sgd", grad, learning_rate=LR)
        out[grad] = (step.jitted, step.optimizer.init)
    out["bare"] = (_bare_step(model, loss), lambda params: ())
    return out


def _traced(step, params, state, x, y, steps: int, trace_dir: Path):
    """Run ``steps`` steps under the profiler; ``(params, state, wall seconds)``."""
    with jax.profiler.trace(str(trace_dir)):
        start = time.perf_counter()
        for _ in range(steps):
            params, state, _ = step(params, state, x, y)
        jax.block_until_ready(params)
        wall = time.perf_counter() - start
    return params, state, wall


def profile_config(name: str, steps: int, rounds: int, trace_root: Path) -> list[dict[str, Any]]:
    """Per variant: medians over ``rounds`` traced blocks (variants interleaved)."""
    sizes, batch, activation, loss = CONFIGS[name]
    model = MLP(sizes, activation=activation)
    params0, x, y = _problem(sizes, batch, loss, 1)
    variants = _variants(model, loss)
    state: dict[str, list] = {}
    classes: dict[str, dict[str, str]] = {}
    ops: dict[str, collections.Counter] = {}
    for variant, (step, init) in variants.items():
        params = jax.tree.map(jnp.copy, params0)
        opt_state = init(params)
        hlo = step.lower(params, opt_state, x, y).compile().as_text()
        classes[variant] = kernel_classes(hlo)
        ops[variant] = collections.Counter(_opcodes(hlo))
        for _ in range(3):  # compile and warm up outside the trace
            params, opt_state, _ = step(params, opt_state, x, y)
        state[variant] = [params, opt_state]
    samples: dict[str, dict[str, list[float]]] = {
        v: collections.defaultdict(list) for v in variants
    }
    for r in range(rounds):
        order = list(variants)[r % len(variants) :] + list(variants)[: r % len(variants)]
        for variant in order:
            trace_dir = trace_root / f"{name}-{variant}-{r}"
            params, opt_state, wall = _traced(
                variants[variant][0], *state[variant], x, y, steps, trace_dir
            )
            state[variant] = [params, opt_state]
            per_class: dict[str, float] = collections.defaultdict(float)
            kernels = 0
            for kernel, us in kernel_events(trace_dir):
                per_class[classes[variant].get(kernel, "other")] += us / steps
                kernels += 1
            samples[variant]["wall_us"].append(1e6 * wall / steps)
            samples[variant]["kernels_per_step"].append(kernels / steps)
            for cls in CLASSES:
                samples[variant][cls].append(per_class.get(cls, 0.0))
    rows = []
    for variant in variants:
        med = {k: statistics.median(v) for k, v in samples[variant].items()}
        rows.append(
            dict(
                config=name,
                variant=variant,
                wall_us=med["wall_us"],
                kernels_per_step=med["kernels_per_step"],
                kernel_us={cls: med[cls] for cls in CLASSES},
                hlo_ops={
                    op: ops[variant][op]
                    for op in ("fusion", "dot", *TRANSCENDENTAL, "divide")
                    if ops[variant][op]
                },
                samples={k: list(v) for k, v in samples[variant].items()},
                traces=str(trace_root / f"{name}-{variant}-*"),
            )  # fmt: skip
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="c,d", help="comma-separated, from a,b,c,d")
    parser.add_argument("--steps", type=int, default=100, help="steps per traced block")
    parser.add_argument("--rounds", type=int, default=5, help="traced blocks per variant")
    parser.add_argument("--trace-dir", type=Path, help="where traces go (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="JSON path for the table")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not names or any(c not in CONFIGS for c in names):
        parser.error(f"--configs: expected names from {','.join(CONFIGS)}, got {args.configs!r}")
    for flag in ("steps", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag}: expected a positive integer, got {getattr(args, flag)}")
    root = args.trace_dir or Path(tempfile.mkdtemp(prefix="gdjax-profile-"))
    with jax.profiler.trace(str(root / "warm-up")):  # the first session starts slower
        jax.block_until_ready(jax.jit(jnp.tanh)(jnp.ones(8)))
    rows = [row for name in names for row in profile_config(name, args.steps, args.rounds, root)]
    print(f"{'config':<7}{'variant':<8}{'wall µs':>9}{'kernels':>9}{'matmul':>9}"
          f"{'transc.':>9}{'divide':>9}{'other':>9}   hlo ops")  # fmt: skip
    for r in rows:
        k = r["kernel_us"]
        print(f"({r['config']})    {r['variant']:<8}{r['wall_us']:9.1f}{r['kernels_per_step']:9.0f}"
              f"{k['matmul']:9.1f}{k['transcendental']:9.1f}{k['divide']:9.1f}{k['other']:9.1f}"
              f"   {r['hlo_ops']}")  # fmt: skip
    print(f"medians over {args.rounds} traced blocks of {args.steps} steps, variants "
          f"interleaved; kernel times in µs per step; traces under {root}")  # fmt: skip
    if args.out:
        env = {"jax": jax.__version__, "device": str(jax.devices()[0]), "steps": args.steps,
               "rounds": args.rounds}  # fmt: skip
        args.out.write_text(json.dumps({"env": env, "rows": rows}, indent=1))
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
