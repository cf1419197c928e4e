"""Populations: member-steps/s of one ``fit_population`` against a loop of separate ``fit`` calls.

    python benchmarks/bench_population.py            # full run, 6-9 min on 2 shared CPU cores
    python benchmarks/bench_population.py --quick    # smoke run, about a minute
    python benchmarks/bench_population.py --out /tmp/population.json

Configs (float32, plain SGD, synthetic data: normal x, normal targets or random labels):

    (d)      [2, 16, 16, 1]         tanh  mse                    batch 64   n 1024  (16 steps/epoch)
    mnist1d  [40, 100, 100, 10]     relu  softmax cross-entropy  batch 100  n 4000  (40 steps/epoch)
    (a)      [784, 512, 512, 10]    relu  softmax cross-entropy  batch 256  n 2048  (8 steps/epoch)

P members have keys ``split(key(0), P)`` and learning rates ``geomspace(1e-3, 1e-1, P)``.
Variants, each timed in every round:

- ``population P``: ``fit_population(..., keys=keys, learning_rate=lrs, eval_every=0,
  progress=False)``; per member-step from ``pop(E₂) − pop(E₁)``, which removes the
  fixed per-call cost (checks, init, history, the last block's sync) as
  ``bench_steps.py`` does for ``fit``;
- ``separate``: the K fits ``fit(..., key=keys[i], learning_rate=lrs[i], eval_every=0,
  progress=False)`` of K members of the P = 8 population (K = 8 full, 2 quick), each
  ``fit(E₂) − fit(E₁)``. The fits share nothing, so P separate fits take P/K times
  the time of these K: one set of fits serves every P and the ratio for P = 64, 256
  is scaled from K fits (so is P = 8 with ``--quick``). Each fit gets its
  optimizer as a transformation built once (``make_optimizer("sgd",
  learning_rate=lr)``, what ``fit`` builds from the name) so that a population
  call in between, which builds P optimizers through the same 64-entry cache,
  does not evict it and make the next fit recompile;
- ``vmap floor P``: ``jit(vmap(...))`` of a ``lax.scan`` over epochs of a
  ``lax.scan`` over the pre-sliced batches, a bare ``jax.value_and_grad`` SGD step,
  each member its own learning rate: no permutation, gather, guard or host work.
  What vmap of the plain step costs on this device; ``population / floor`` says
  how much of it ``fit_population`` adds.

E₁, E₂: a variant's first call runs 1 epoch (its compile time is reported); an
epoch's cost is then ``run(2) − run(1)``. If 32 epochs cost under 0.45 s (0.15 s
with ``--quick``), E₁ = 1 and E₂ = 1 + 32·m (whole blocks of 32, as ``bench_steps.py``
does, so the per-call cost and its jitter cancel over many epochs), else E₁ = 1 and
E₂ = 1 + k ≤ 32; E₂ − E₁ is sized to about 0.3 s (0.1 s with ``--quick``) of
training, 2·0.3/K s per separate fit. Rounds (5, 3 with
``--quick``) visit the variants in a rotating order; figures are medians over rounds,
ratios medians of per-round ratios (both sides timed in the same round). Wall time
is the measure; the same differences in process CPU time (every thread) give a
second ratio that other processes' load on a shared machine disturbs much less. A
listener counts XLA compilations: none may happen inside the timed rounds (the JSON
records the count).

Also reported: the first call of each variant (trace + compile + run, 1 epoch) and
the XLA compilations it made; and, in child processes, the peak resident memory
(``VmHWM``) of a P = 256 population of (d) (P = 8 with ``--quick``) minus that of
a process that only imported jax and gdjax.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import gc
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ENV_VARS = ("OPENBLAS_CORETYPE", "XLA_FLAGS", "JAX_PLATFORMS")  # recorded, never changed
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"

# name: (sizes, activation, loss, batch, n)
CONFIGS: dict[str, tuple[tuple[int, ...], str, str, int, int]] = {
    "d": ((2, 16, 16, 1), "tanh", "mse", 64, 1024),
    "mnist1d": ((40, 100, 100, 10), "relu", "softmax_cross_entropy", 100, 4000),
    "a": ((784, 512, 512, 10), "relu", "softmax_cross_entropy", 256, 2048),
}
SIZES = {"d": (1, 8, 64, 256), "mnist1d": (1, 8, 64, 256), "a": (1, 8)}
QUICK_SIZES = {"d": (1, 8)}
TARGETS = {("d", 64): 20.0, ("a", 1): 1.0, ("a", 8): 1.0}  # population / separate, the issue's
POOL = 8  # the separate fits are members of the P = POOL population
MEMORY_P = {"full": 256, "quick": 8}
LR_RANGE = (1e-3, 1e-1)
BLOCK = 32  # gdjax.train.MAX_EPOCHS_PER_CALL: fit's epochs per jitted call


def learning_rates(size: int):
    import numpy as np  # noqa: PLC0415

    return np.geomspace(*LR_RANGE, size)


def problem(name: str):
    """The model, loss name, batch size and data ``(x, y)`` of config ``name``."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from gdjax import MLP  # noqa: PLC0415

    sizes, activation, loss, batch, n = CONFIGS[name]
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (n, sizes[0]), jnp.float32)
    if loss == "softmax_cross_entropy":
        y = jax.random.randint(ky, (n,), 0, sizes[-1])
    else:
        y = jax.random.normal(ky, (n, sizes[-1]), jnp.float32)
    return MLP(sizes, activation=activation), loss, batch, (x, y)


# ---------------------------------------------------------------- memory (child processes)


def _vmhwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource  # noqa: PLC0415 (not Linux: ru_maxrss, KiB on Linux, bytes on macOS)

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(kind: str, members: int) -> None:
    """Print ``REPORT {json}``: this process's peak RSS after ``kind`` ran (``import``:
    nothing but the imports; ``fit``: one fit of (d); ``population``: ``members`` of them)."""
    import jax  # noqa: PLC0415

    import gdjax  # noqa: F401, PLC0415

    report: dict[str, Any] = {"kind": kind, "members": members}
    if kind != "import":
        from gdjax.train import fit, fit_population  # noqa: PLC0415

        model, loss, batch, data = problem("d")
        kw = dict(batch_size=batch, eval_every=0, progress=False, epochs=2)
        start = time.perf_counter()
        if kind == "population":
            keys = jax.random.split(jax.random.key(0), members)
            lrs = learning_rates(members)
            r = fit_population(model, loss, "sgd", data, keys=keys, learning_rate=lrs, **kw)
            report["diverged"] = sum(m is not None for m in r.diverged)
        else:
            r = fit(model, loss, "sgd", data, key=jax.random.key(0), learning_rate=1e-3, **kw)
            report["diverged"] = int(r.diverged is not None)
        jax.block_until_ready(r.params)
        report["seconds"] = time.perf_counter() - start
    report["vmhwm_bytes"] = _vmhwm_bytes()
    print("REPORT " + json.dumps(report), flush=True)


def _run_child(kind: str, members: int = 0) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--members",
        str(members),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT ") :])
    raise RuntimeError(f"child {kind} failed (rc {out.returncode}): {out.stderr[-2000:]}")


# ---------------------------------------------------------------- the measurement


class Compiles:
    """Counts XLA backend compilations (and their seconds) through ``jax.monitoring``."""

    def __init__(self) -> None:
        import jax  # noqa: PLC0415

        self.count, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **_: Any) -> None:
        if event == BACKEND_COMPILE:
            self.count += 1
            self.seconds += duration

    def mark(self) -> tuple[int, float]:
        return self.count, self.seconds

    def since(self, mark: tuple[int, float]) -> tuple[int, float]:
        return self.count - mark[0], self.seconds - mark[1]


@dataclasses.dataclass
class Variant:
    """A way of training: ``run(epochs) -> seconds`` for one call (population, floor) or
    for all of its fits (separate), which train ``members`` members."""

    name: str
    members: int
    run: Callable[[int], float]
    e1: int = 0
    e2: int = 0
    first_s: float = 0.0
    first_compiles: tuple[int, float] = (0, 0.0)
    samples: list[float] = dataclasses.field(default_factory=list)  # ms per member-step
    cpu: list[float] = dataclasses.field(default_factory=list)  # the same in process CPU time
    call_ms: list[float] = dataclasses.field(default_factory=list)  # per call (per fit)


def _least(run: Callable[[int], float], epochs: int) -> float:
    """A call's seconds: the least of three when it is short (< 0.1 s), so that one
    call preempted by another process on a shared machine does not decide alone."""
    seconds = run(epochs)
    return min(seconds, run(epochs), run(epochs)) if seconds < 0.1 else seconds


def _choose_epochs(run: Callable[[int], float], target_s: float) -> tuple[int, int, float]:
    """``(E₁, E₂, seconds per epoch)`` for ``run(E₂) − run(E₁)`` ≈ ``target_s``.

    An epoch's cost is ``run(2) − run(1)`` (the per-call cost, 5–70 ms, cancels). When a
    block of 32 epochs costs under 1.5·``target_s``, ``E₂ − E₁`` is whole blocks of 32
    (E₁ = 1, E₂ = 1 + 32·m: only the 1- and 32-epoch programs run), timed once more to
    size m (if that block turns out to cost over 3·``target_s``, the 2-epoch estimate was
    a preempted call: it falls back); otherwise E₁ = 1 and E₂ = 1 + k ≤ 32.
    """
    one = _least(run, 1)
    run(2)  # compile the 2-epoch block
    per_epoch = max(_least(run, 2) - one, 1e-6)
    if BLOCK * per_epoch <= 1.5 * target_s:
        run(1 + BLOCK)  # compile the 32-epoch block
        per_block = max(_least(run, 1 + BLOCK) - one, 1e-4)
        if per_block <= 3 * target_s:
            blocks = min(64, max(1, round(target_s / per_block)))
            return 1, 1 + BLOCK * blocks, per_block / BLOCK
        per_epoch = per_block / BLOCK
    return 1, 1 + min(BLOCK - 1, max(1, round(target_s / per_epoch))), per_epoch


def _floor_runner(model, loss, data, batch, lrs):
    """``run(epochs) -> seconds``: the vmapped bare-SGD scan over pre-sliced batches."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    import gdjax  # noqa: PLC0415

    f = gdjax.objective(model, loss)
    x, y = data
    steps = x.shape[0] // batch
    xs = x[: steps * batch].reshape(steps, batch, *x.shape[1:])
    ys = y[: steps * batch].reshape(steps, batch, *y.shape[1:])
    size = len(lrs)
    lr = jnp.asarray(lrs, jnp.float32)
    params = [jax.vmap(model.init)(jax.random.split(jax.random.key(0), size))]
    compiled: dict[int, Callable] = {}

    def member(params, lr, count):
        def step(p, b):
            value, grads = jax.value_and_grad(f)(p, *b)
            return jax.tree.map(lambda a, g: a - lr * g, p, grads), value

        def epoch(p, _):
            return jax.lax.scan(step, p, (xs, ys))

        return jax.lax.scan(epoch, params, None, length=count)

    def run(epochs: int) -> float:
        if epochs not in compiled:
            compiled[epochs] = jax.jit(
                jax.vmap(lambda p, r: member(p, r, epochs)), donate_argnums=0
            )
        start = time.perf_counter()
        params[0], values = compiled[epochs](params[0], lr)
        jax.block_until_ready((params[0], values))
        return time.perf_counter() - start

    return run


def _row(case, value, unit, notes="", samples=(), info=None) -> dict[str, Any]:
    return {
        "section": "population",
        "case": case,
        "value": value,
        "unit": unit,
        "notes": notes,
        "repeats": list(samples),
        "info": info or {},
    }


def measure_config(name: str, sizes, pool_size: int, rounds: int, target_s: float, compiles):
    """Every variant of config ``name`` set up (first calls, epochs chosen, compiled), then
    timed in interleaved rounds. Returns ``(variants, facts)``."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from gdjax.train import fit, fit_population, make_optimizer  # noqa: PLC0415

    began = time.perf_counter()

    model, loss, batch, data = problem(name)
    kw = dict(batch_size=batch, eval_every=0, progress=False)
    diverged: dict[str, int] = {}

    def timed_pop(epochs, keys, lrs, label):
        start = time.perf_counter()
        r = fit_population(
            model, loss, "sgd", data, epochs=epochs, keys=keys, learning_rate=lrs, **kw
        )
        jax.block_until_ready(r.params)
        seconds = time.perf_counter() - start
        diverged[label] = max(diverged.get(label, 0), sum(m is not None for m in r.diverged))
        return seconds

    def timed_fits(epochs, members):
        total, failed = 0.0, 0
        for key, tx in members:
            start = time.perf_counter()
            r = fit(model, loss, tx, data, epochs=epochs, key=key, **kw)
            jax.block_until_ready(r.params)
            total += time.perf_counter() - start
            failed += r.diverged is not None
        diverged["separate"] = max(diverged.get("separate", 0), failed)
        return total

    # Separate fits: pool_size members of the P = POOL population, each its own key and lr.
    pool_keys = jax.random.split(jax.random.key(0), POOL)
    picks = [int(i) for i in np.round(np.linspace(0, POOL - 1, pool_size))]
    pool = [
        (pool_keys[i], make_optimizer("sgd", learning_rate=float(learning_rates(POOL)[i])))
        for i in picks
    ]
    sep = Variant("separate", pool_size, lambda e: timed_fits(e, pool))
    mark = compiles.mark()
    sep.first_s = timed_fits(1, pool[:1])
    sep.first_compiles = compiles.since(mark)
    new_lr = []  # (seconds, compiles, compile seconds) of the first call with a new lr
    for member in pool[1:]:
        mark = compiles.mark()
        new_lr.append((timed_fits(1, [member]), *compiles.since(mark)))
    per_fit_s = 2 * target_s / pool_size
    sep.e1, sep.e2, _ = _choose_epochs(lambda e: timed_fits(e, pool[:1]), per_fit_s)
    sep.run(sep.e1), sep.run(sep.e2)  # every count compiled for every member
    variants = [sep]
    for size in sizes:
        keys, lrs = jax.random.split(jax.random.key(0), size), learning_rates(size)
        label = f"population {size}"
        pop = Variant(label, size, functools.partial(timed_pop, keys=keys, lrs=lrs, label=label))
        mark = compiles.mark()
        pop.first_s = pop.run(1)
        pop.first_compiles = compiles.since(mark)
        pop.e1, pop.e2, per_epoch = _choose_epochs(pop.run, target_s)
        pop.run(pop.e1), pop.run(pop.e2)
        floor_run = _floor_runner(model, loss, data, batch, lrs)
        count = max(1, round(target_s / per_epoch))
        floor_run(count)  # compile
        variants += [pop, Variant(f"vmap floor {size}", size, floor_run, 0, count)]

    steps = -(-data[0].shape[0] // batch)
    gc.collect()
    gc.disable()  # no cyclic collection inside a timed block
    mark = compiles.mark()
    try:
        for r in range(rounds):
            for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
                member_steps = v.members * (v.e2 - v.e1) * steps
                c0 = time.process_time()
                seconds = v.run(v.e2)
                c1 = time.process_time()
                short = v.run(v.e1) if v.e1 else 0.0
                seconds -= short
                if v.e1:  # what a call costs beyond its epochs: t(E₁) − E₁·(per epoch)
                    calls = v.members if v.name == "separate" else 1
                    v.call_ms.append(1e3 * (short - v.e1 * seconds / (v.e2 - v.e1)) / calls)
                cpu = 2 * c1 - c0 - time.process_time()  # (c1 - c0) - (c2 - c1)
                v.samples.append(1e3 * seconds / member_steps)
                v.cpu.append(1e3 * cpu / member_steps)
    finally:
        gc.enable()
    facts = {
        "steps_per_epoch": steps,
        "separate_fits": picks,
        "new_lr_first_calls": new_lr,
        "compiles_in_rounds": compiles.since(mark)[0],
        "diverged_members": diverged,
        "epochs": {v.name: [v.e1, v.e2] for v in variants},
        "per_call_ms": {v.name: v.call_ms for v in variants if v.call_ms},
        "cpu_ms_per_member_step": {v.name: v.cpu for v in variants},
        "wall_s": round(time.perf_counter() - began, 1),
    }
    return variants, facts


def config_rows(name: str, sizes, variants: list[Variant], facts) -> list[dict[str, Any]]:
    """The table's rows for one config: rates, ratios, floors, first calls."""
    layers, activation, loss, batch, n = CONFIGS[name]
    label = f"({name})" if len(name) == 1 else name
    info = {
        "sizes": list(layers),
        "activation": activation,
        "loss": loss,
        "batch": batch,
        "n": n,
        "learning_rates": f"geomspace({LR_RANGE[0]}, {LR_RANGE[1]}, P)",
        **facts,
    }
    by_name = {v.name: v for v in variants}
    flops = 6.0 * batch * sum(a * b for a, b in zip(layers[:-1], layers[1:], strict=True))

    def gflops(v: Variant) -> float:  # nominal 6·B·Σ n_in·n_out per member-step
        return flops / (statistics.median(v.samples) * 1e-3) / 1e9

    sep, k = by_name["separate"], by_name["separate"].members
    med = statistics.median
    picked = ", ".join(map(str, facts["separate_fits"]))
    rows = [
        _row(
            f"{label} separate fits",
            1e3 / med(sep.samples),
            "member-steps/s",
            f"{med(sep.samples) * 1e3:.3g} us/step, {gflops(sep):.3g} GFLOP/s nominal; {k} "
            f"fits (members {picked} of P = {POOL}), fit(E2) - fit(E1), E = {sep.e1}, {sep.e2}; "
            f"per call {med(sep.call_ms):.3g} ms",
            sep.samples,
            info,
        )
    ]
    for size in sizes:
        pop, flo = by_name[f"population {size}"], by_name[f"vmap floor {size}"]
        rows.append(
            _row(
                f"{label} P={size} population",
                1e3 / med(pop.samples),
                "member-steps/s",
                f"{med(pop.samples) * 1e3:.3g} us/member-step, {gflops(pop):.3g} GFLOP/s "
                f"nominal; pop(E2) - pop(E1), E = {pop.e1}, {pop.e2}; per call "
                f"{med(pop.call_ms):.3g} ms",
                pop.samples,
            )
        )
        ratios = [s / p for s, p in zip(sep.samples, pop.samples, strict=True)]
        target = TARGETS.get((name, size))
        note = f"target >= {target:g}" if target else "member-steps/s, same rounds"
        if size != k:
            note += f"; {size} separate fits timed as {size}/{k} x {k}"
        rows.append(
            _row(f"{label} P={size} population / separate", med(ratios), "ratio", note, ratios)
        )
        cpu = [s / p for s, p in zip(sep.cpu, pop.cpu, strict=True)]
        rows.append(
            _row(
                f"{label} P={size} population / separate, CPU time",
                med(cpu),
                "ratio",
                "the same in process CPU time (all threads), which other processes' load "
                "disturbs less",
                cpu,
                {"cpu_ms_per_member_step": {"separate": sep.cpu, "population": pop.cpu}},
            )
        )
        rows.append(
            _row(
                f"{label} P={size} vmap floor",
                1e3 / med(flo.samples),
                "member-steps/s",
                f"bare vmapped scan, {flo.e2} epochs per call; {gflops(flo):.3g} GFLOP/s; "
                f"{med(sep.samples) / med(flo.samples):.3g}x separate fits",
                flo.samples,
            )
        )
        over = [p / f for p, f in zip(pop.samples, flo.samples, strict=True)]
        rows.append(
            _row(
                f"{label} P={size} population / floor",
                med(over),
                "time ratio",
                "what fit_population adds to vmap of the bare step (1: nothing)",
                over,
            )
        )
    count, secs = sep.first_compiles
    rows.append(
        _row(
            f"{label} fit first call",
            sep.first_s,
            "s",
            f"first fit of this config in the process, 1 epoch: {count} XLA compiles, "
            f"{secs:.2f} s compiling",
        )
    )
    new_lr = facts["new_lr_first_calls"]
    if new_lr:
        rows.append(
            _row(
                f"{label} fit first call, new lr",
                med(t for t, _, _ in new_lr),
                "s",
                f"median of {len(new_lr)} fits, each a new learning rate: "
                f"{med(c for _, c, _ in new_lr):g} XLA compiles, "
                f"{med(s for _, _, s in new_lr):.2f} s compiling",
                [t for t, _, _ in new_lr],
            )
        )
    for size in sizes:
        pop = by_name[f"population {size}"]
        count, secs = pop.first_compiles
        what = "the first population of this config" if size == sizes[0] else "a new P"
        rows.append(
            _row(
                f"{label} P={size} population first call",
                pop.first_s,
                "s",
                f"1 epoch, {what}: {count} XLA compiles, {secs:.2f} s compiling",
            )
        )
    if k == POOL and POOL in sizes:
        fits_s = sep.first_s + sum(t for t, _, _ in new_lr)
        pop_s = by_name[f"population {POOL}"].first_s
        rows.append(
            _row(
                f"{label} P={POOL} first calls: separate / population",
                fits_s / pop_s,
                "ratio",
                f"{POOL} new fit calls ({fits_s:.1f} s) / one new population call "
                f"({pop_s:.1f} s), 1 epoch each: compilation",
            )
        )
    return rows


def population_section(quick: bool, rounds: int, target_s: float) -> tuple[list[dict], dict]:
    """Rows (dicts: section, case, value, unit, notes, repeats, info) and run facts."""
    compiles = Compiles()
    rows: list[dict[str, Any]] = []
    facts: dict[str, Any] = {"compiles_in_rounds": {}, "diverged": {}}
    for name, sizes in (QUICK_SIZES if quick else SIZES).items():
        pool_size = 2 if quick else POOL
        variants, config_facts = measure_config(name, sizes, pool_size, rounds, target_s, compiles)
        facts["compiles_in_rounds"][name] = config_facts["compiles_in_rounds"]
        facts["diverged"][name] = config_facts["diverged_members"]
        new = config_rows(name, sizes, variants, config_facts)
        print(format_table(new), flush=True)
        rows += new
    return rows, facts


def memory_rows(quick: bool) -> list[dict[str, Any]]:
    """Peak RSS (``VmHWM``) of child processes: imports only, a population, one fit."""
    members = MEMORY_P["quick" if quick else "full"]
    base = _run_child("import")
    pop = _run_child("population", members)
    mib = 2.0**20
    out = [
        ("import jax, gdjax", base, "baseline: a process that only imported jax and gdjax"),
        (
            f"P={members} population, minus baseline",
            pop,
            f"(d), fit_population 2 epochs, {pop['seconds']:.1f} s incl. compile",
        ),
    ]
    if not quick:
        one = _run_child("fit")
        out.append(("one fit, minus baseline", one, "(d), fit 2 epochs, for comparison"))
    rows = []
    for case, report, note in out:
        value = report["vmhwm_bytes"] - (0 if report is base else base["vmhwm_bytes"])
        notes = f"{note}; VmHWM {report['vmhwm_bytes'] / mib:.0f} MiB"
        rows.append(_row(f"(d) peak RSS: {case}", value / mib, "MiB", notes, (), report))
    return rows


# ---------------------------------------------------------------- output


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import gdjax  # noqa: PLC0415

    return {
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": _version("jaxlib"),
            "gdjax": gdjax.__version__,
            "optax": _version("optax"),
            "numpy": np.__version__,
        },
        "backend": jax.default_backend(),
        "devices": [
            {"id": d.id, "platform": d.platform, "device_kind": str(d.device_kind)}
            for d in jax.devices()
        ],
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "env": {name: os.environ.get(name) for name in ENV_VARS},
    }


def device_slug() -> str:
    import jax  # noqa: PLC0415

    device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", str(device.device_kind).lower()).strip("-")


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [("case", "value", "unit", "notes")]
    cells += [(r["case"], f"{r['value']:.4g}", r["unit"], r["notes"]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    lines = []
    for i, c in enumerate(cells):
        lines.append(f"{c[0]:<{widths[0]}}  {c[1]:>{widths[1]}}  {c[2]:<{widths[2]}}  {c[3]}")
        if i == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


def _loadavg() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="(d) only, P <= 8, 3 rounds")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 3)")
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/…)")
    parser.add_argument("--child", choices=("import", "fit", "population"), help=argparse.SUPPRESS)
    parser.add_argument("--members", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.members)
        return

    import jax  # noqa: PLC0415

    jax.config.update("jax_enable_x64", False)
    mode = "quick" if args.quick else "full"
    rounds = args.rounds or (3 if args.quick else 5)
    now = datetime.datetime.now(datetime.UTC)
    prefix = "quick-" if args.quick else ""
    out = (
        args.out
        or RESULTS_DIR / f"{prefix}{now.date().isoformat()}-{device_slug()}-population.json"
    )
    load_start, start = _loadavg(), time.perf_counter()
    env = environment()
    print(
        f"OPENBLAS_CORETYPE={env['env']['OPENBLAS_CORETYPE']}  backend={env['backend']}  "
        f"cpus={env['cpu_affinity']}  load={load_start}  mode={mode}, {rounds} rounds",
        flush=True,
    )
    rows, facts = population_section(args.quick, rounds, 0.1 if args.quick else 0.3)
    memory = memory_rows(args.quick)
    print(format_table(memory), flush=True)
    rows += memory
    compiled = facts["compiles_in_rounds"]
    print(
        f"XLA compiles inside the timed rounds: {compiled} (must be 0); diverged members: "
        f"{facts['diverged']}; load {load_start} -> {_loadavg()}",
        flush=True,
    )
    report = {
        "date": now.date().isoformat(),
        "timestamp": now.isoformat(timespec="seconds"),
        "mode": mode,
        "repeats": rounds,
        "sections": ["population"],
        "complete": True,
        **env,
        "argv": sys.argv[1:],
        "loadavg_1_5_15min": {"start": load_start, "end": _loadavg()},
        "wall_s": round(time.perf_counter() - start, 2),
        **facts,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
