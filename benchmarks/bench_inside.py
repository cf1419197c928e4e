"""Benchmark: per-example gradients and norms from the hand backward pass vs autodiff.

    python benchmarks/bench_inside.py            # batch 256, 7 repeats
    python benchmarks/bench_inside.py --quick    # batch 32, 3 repeats

Model: MLP [784, 512, 512, 10], relu, softmax cross-entropy, float32 (669,706
parameters). Cases, each timed as the median of interleaved repeats after a
warm-up call (compilation excluded), every call ending in
``jax.block_until_ready``:

- per-example gradients: ``gdjax.per_example.per_example_grads`` (one batched
  backward pass, outer products by einsum) vs ``jax.jit(jax.vmap(jax.grad(f)))``
  over single examples. Both write B × #params float32 numbers; the achieved
  write rate ``B · #params · 4 bytes / time`` stands in for the fraction of
  memory bandwidth, which is hard to know on a CPU.
- per-example gradient norms: ``per_example_grad_norms`` (‖δ_i‖·‖a_i‖ per layer,
  nothing materialised) vs materialising ``jax.vmap(jax.grad)`` and taking the
  norms. The goal is ≥ 10× faster.

``per_example_section(quick)`` returns the rows as dicts (section, case, value,
unit, notes, repeats) for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import jax
import jax.numpy as jnp
from common import Context, Row, interleaved, rows_from_dicts

from gdjax import MLP, objective
from gdjax.per_example import per_example_grad_norms, per_example_grads

SECTION = "per_example"
SIZES = (784, 512, 512, 10)
LOSS = "softmax_cross_entropy"


def _row(case: str, values: list[float], unit: str, notes: str = "") -> dict:
    return {
        "section": SECTION,
        "case": case,
        "value": float(statistics.median(values)),
        "unit": unit,
        "notes": notes,
        "repeats": [float(v) for v in values],
    }


def per_example_section(quick: bool) -> list[dict]:
    """Per-example gradients and norms, hand vs ``jax.vmap(jax.grad)``; see the module docstring."""
    batch, repeats = (32, 3) if quick else (256, 7)
    model = MLP(SIZES, activation="relu")
    key_p, key_x, key_y = jax.random.split(jax.random.key(0), 3)
    params = model.init(key_p, scheme="he", dtype=jnp.float32)
    x = jax.random.normal(key_x, (batch, SIZES[0]), jnp.float32)
    y = jax.random.randint(key_y, (batch,), 0, SIZES[-1], jnp.int32)
    num_params = sum(p["w"].size + p["b"].size for p in params)
    f = objective(model, LOSS)

    hand_grads = jax.jit(per_example_grads, static_argnums=(0, 1))
    auto_grads = jax.jit(
        jax.vmap(jax.grad(lambda p, xi, yi: f(p, xi[None], yi[None])), in_axes=(None, 0, 0))
    )
    hand_norms = jax.jit(lambda p, x, y: per_example_grad_norms(model, LOSS, p, x, y).total)

    @jax.jit
    def auto_norms(p, x, y):
        g = auto_grads(p, x, y)
        return jnp.sqrt(
            sum(jnp.sum(leaf.reshape(batch, -1) ** 2, axis=1) for leaf in jax.tree.leaves(g))
        )

    # correctness first: the two agree (float32)
    hand, auto = hand_grads(model, LOSS, params, x, y), auto_grads(params, x, y)
    err = max(
        float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
        for a, b in zip(jax.tree.leaves(hand), jax.tree.leaves(auto), strict=True)
    )
    norm_err = float(jnp.max(jnp.abs(hand_norms(params, x, y) / auto_norms(params, x, y) - 1)))
    del hand, auto

    times = interleaved(
        {
            "hand": lambda: hand_grads(model, LOSS, params, x, y),
            "auto": lambda: auto_grads(params, x, y),
        },
        repeats,
    )
    norm_times = interleaved(
        {"hand": lambda: hand_norms(params, x, y), "auto": lambda: auto_norms(params, x, y)},
        repeats,
    )
    bytes_written = batch * num_params * 4
    config = f"{list(SIZES)} relu, {LOSS}, batch {batch}, float32, {num_params} params"
    ratio = [a / h for a, h in zip(times["auto"], times["hand"], strict=True)]
    norm_ratio = [a / h for a, h in zip(norm_times["auto"], norm_times["hand"], strict=True)]
    return [
        _row(
            "per-example grads, hand (outer products)",
            [1e3 * t for t in times["hand"]],
            "ms",
            f"{config}; max rel. diff vs vmap(grad) {err:.1e}",
        ),
        _row("per-example grads, jit(vmap(grad))", [1e3 * t for t in times["auto"]], "ms", config),
        _row("per-example grads, vmap(grad) time / hand time", ratio, "x", "> 1: hand faster"),
        _row(
            "per-example grads, hand, write rate",
            [bytes_written / t / 1e9 for t in times["hand"]],
            "GB/s",
            f"B·#params·4 = {bytes_written / 1e6:.0f} MB per call",
        ),
        _row(
            "per-example grads, vmap(grad), write rate",
            [bytes_written / t / 1e9 for t in times["auto"]],
            "GB/s",
            f"B·#params·4 = {bytes_written / 1e6:.0f} MB per call",
        ),
        _row(
            "per-example norms, hand (‖δ‖·‖a‖, not materialised)",
            [1e3 * t for t in norm_times["hand"]],
            "ms",
            f"{config}; max rel. diff {norm_err:.1e}",
        ),
        _row(
            "per-example norms, materialising vmap(grad)",
            [1e3 * t for t in norm_times["auto"]],
            "ms",
            config,
        ),
        _row(
            "per-example norms, materialising time / hand time",
            norm_ratio,
            "x",
            "goal ≥ 10",
        ),
    ]


def section(ctx: Context) -> list[Row]:
    """Per-example gradients by hand against ``jit(vmap(grad))``; norms without forming them."""
    return rows_from_dicts(per_example_section(ctx.quick))


def format_rows(rows: list[dict]) -> str:
    width = max(len(r["case"]) for r in rows)
    lines = [f"{'case':<{width}}  {'median':>10}  unit   spread (min–max)"]
    for r in rows:
        lo, hi = min(r["repeats"]), max(r["repeats"])
        lines.append(
            f"{r['case']:<{width}}  {r['value']:>10.4g}  {r['unit']:<5}  {lo:.4g}–{hi:.4g}"
        )
    notes = {r["notes"] for r in rows if r["notes"]}
    return "\n".join(lines + [f"  note: {n}" for n in sorted(notes)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 32, 3 repeats")
    args = p.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    print(format_rows(per_example_section(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
