"""gdjax benchmarks: the single entry point, one JSON file per run.

    python benchmarks/run.py                  # full run (a few minutes on 2 CPU cores)
    python benchmarks/run.py --quick          # smoke run, under a minute (CI)
    python benchmarks/run.py --sections training --repeats 9 --out /tmp/b.json

A run is a list of *sections* (:data:`SECTIONS`), each a function
``section(ctx) -> list[Row]`` run in order in one process. Every timing is
taken after a warm-up call (compiles excluded unless a row says otherwise),
ends with ``jax.block_until_ready``, is repeated (``--repeats``) and reported
as the median. Variants that are compared with each other are timed
*interleaved*, a few milliseconds apart, and a ratio is the median of paired
per-sample ratios, so the drifts of a noisy, shared machine cancel; the
training section's docstring says how.

Output: a table on stdout and a JSON file (date, versions, devices, CPU count,
the environment variables in :data:`ENV_VARS` as found, every row with its
repeats). The default path is ``benchmarks/results/<YYYY-MM-DD>-<device>.json``
for a full run and ``benchmarks/results/quick-<YYYY-MM-DD>-<device>.json`` for
``--quick`` (git-ignored); ``--out`` overrides both.

Adding a section: write ``def my_section(ctx: Context) -> list[Row]`` and add
it to :data:`SECTIONS`. Sizes depend on ``ctx.quick``; values one section
leaves for later ones go in ``ctx.shared``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.metadata
import itertools
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdjax
from gdjax import MLP
from gdjax.runs import atomic_write_bytes
from gdjax.train import fit, make_step

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ENV_VARS = ("OPENBLAS_CORETYPE", "XLA_FLAGS", "JAX_PLATFORMS")  # recorded, never changed
DEFAULT_REPEATS = {"full": 5, "quick": 1}


@dataclasses.dataclass
class Row:
    """One measurement: ``value`` (the median of ``repeats``) in ``unit``."""

    section: str
    case: str
    value: float | None
    unit: str
    notes: str = ""
    repeats: list[float] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Context:
    """What every section gets: the mode, the number of repeats, and a shared dict."""

    quick: bool
    repeats: int
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------- timing helpers


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> float:
    """Seconds for ``fn()`` and everything it dispatched to finish."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def matmul_gflops(m: int, k: int, p: int, repeats: int) -> tuple[list[float], int]:
    """GFLOP/s of an (m, k) @ (k, p) float32 product, once per repeat; and products per repeat."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (m, k), jnp.float32)
    b = jax.random.normal(kb, (k, p), jnp.float32)
    flops = 2.0 * m * k * p
    inner = max(1, math.ceil(1e10 / flops))  # ~0.1 s of work at 100 GFLOP/s
    matmul = jax.jit(jnp.matmul)

    def block():
        return [matmul(a, b) for _ in range(inner)]

    block()
    return [flops * inner / timed(block) / 1e9 for _ in range(repeats)], inner


# ---------------------------------------------------------------- section: roofline


def roofline_size(ctx: Context) -> int:
    return 512 if ctx.quick else 2048


def roofline(ctx: Context) -> list[Row]:
    """float32 matmul throughput: the device's practical peak, measured in this run."""
    n = roofline_size(ctx)
    shapes = [
        ((n, n, n), "the roofline; later sections time it again inside their own rounds"),
        ((128, 256, 256), "the largest GEMM of the training step (B=128), for comparison"),
    ]
    rows = []
    for (m, k, p), note in shapes:
        gflops, inner = matmul_gflops(m, k, p, max(3, ctx.repeats))
        info = {"m": m, "k": k, "n": p, "products_per_repeat": inner}
        case = f"matmul {m}x{k} @ {k}x{p} f32"
        rows.append(Row("roofline", case, median(gflops), "GFLOP/s", note, gflops, info))
    return rows


# ---------------------------------------------------------------- section: training

SIZES = (64, 256, 256, 10)
LOSS = "softmax_cross_entropy"
BATCH = 128
LR = 1e-3

# Epoch functions that locate fit's costs: how each one's batches are formed, and which
# finiteness guard (a jnp.where of new against old params and optimizer state) it applies.
EPOCH_VARIANTS = {
    "scan, pre-sliced": ("pre-sliced", None),
    "scan, gather": ("gather", None),
    "scan, perm+gather": ("perm+gather", None),
    "scan, perm+gather, guard(loss)": ("perm+gather", "loss"),
    "scan, perm+gather, guard(loss,grads)": ("perm+gather", "loss+grads"),
}


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _epoch_fn(model, tx, full: int, rest: int, source: str, guard: str | None):
    """A jitted ``epoch(params, opt_state, data, key) -> (params, opt_state, losses)``.

    ``source``: ``"pre-sliced"`` (data = stacked full batches and the ragged one),
    ``"gather"`` (data = x, y and a fixed order; batches gathered ``x[idx]`` in the
    scan) or ``"perm+gather"`` (as fit: a new permutation from ``key`` every epoch).
    ``guard``: None, ``"loss"`` (keep the old params and state unless the loss is
    finite) or ``"loss+grads"`` (… and every gradient entry is finite).
    """

    def step(carry, bx, by):
        params, opt_state = carry
        value, grads = gdjax.backprop(model, LOSS, params, bx, by)
        updates, new_state = tx.update(grads, opt_state, params)
        new = (optax.apply_updates(params, updates), new_state)
        if guard is not None:
            ok = jnp.isfinite(value)
            if guard == "loss+grads":
                ok = ok & _all_finite(grads)
            new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, carry)
        return new, value

    def epoch(params, opt_state, data, key):
        carry = (params, opt_state)
        if source == "pre-sliced":
            xs, ys, x_rest, y_rest = data
            carry, values = jax.lax.scan(lambda c, b: step(c, *b), carry, (xs, ys))
            last = (x_rest, y_rest)
        else:
            x, y, order = data
            if source == "perm+gather":
                order = gdjax.data.permutation(key, x.shape[0])
            cut = order[: full * BATCH].reshape(full, BATCH)
            carry, values = jax.lax.scan(lambda c, i: step(c, x[i], y[i]), carry, cut)
            last = (x[order[full * BATCH :]], y[order[full * BATCH :]])
        if rest:
            carry, value = step(carry, *last)
            values = jnp.concatenate([values, value[None]])
        return (*carry, values)

    return jax.jit(epoch, donate_argnums=(0, 1))


def training(ctx: Context) -> list[Row]:
    """ms/step of make_step, a bare jitted step, scanned epochs and fit, on digits.

    Every variant trains the same model on the same digits in whole epochs of
    ⌈n/B⌉ steps (⌊n/B⌋ batches of 128 and one ragged batch of the rest, as
    ``fit`` does), so "ms/step" is always epoch time / steps per epoch.

    Interleaving: a *round* is one ``fit`` call of 1+E epochs (``grad`` hand or
    auto, alternating). Its callback, after every epoch, times a block of every
    other variant (order rotated each epoch), so each fit epoch has neighbours
    measured within milliseconds of it. A fit epoch is the time from the
    callback's return to its next call: fit's host work plus its jitted epoch.
    Every variant starts each round from the same params and a fresh adam
    state. Rows give the median over rounds of each round's median; ratios pair
    the samples of the same epoch.
    """
    ds = gdjax.data.digits()
    model = MLP(SIZES, activation="relu")
    x, y, n = ds.x, ds.y, ds.num_train
    full, rest = divmod(n, BATCH)
    steps = full + (rest > 0)
    epochs_fit = 6 if ctx.quick else 40  # steady epochs per fit call, after the first
    epochs_block = 1 if ctx.quick else 2  # epochs per timed block of the other variants
    macs = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
    flops_epoch = 6.0 * n * macs  # 2 FLOPs per multiply-add forward, 4 backward

    order = jax.random.permutation(jax.random.key(1), n)
    batches = [(x[i], y[i]) for i in np.array_split(np.asarray(order), [*range(BATCH, n, BATCH)])]
    stacked = (
        jnp.stack([b[0] for b in batches[:full]]),
        jnp.stack([b[1] for b in batches[:full]]),
        *batches[-1],
    )
    params0 = model.init(jax.random.key(0))
    tx = optax.adam(LR)

    def fresh():
        params = jax.tree.map(jnp.array, params0)
        return params, tx.init(params)

    # Every other variant is ``train(state, epochs) -> state``.
    def step_loop(step_fn):
        """a, b, c: one jitted step per batch, called in a tight Python loop."""

        def train(state, epochs):
            params, opt_state = state
            for _ in range(epochs):
                for bx, by in batches:
                    params, opt_state, _ = step_fn(params, opt_state, bx, by)
            return params, opt_state

        return train

    shuffle_keys = (jax.random.fold_in(jax.random.key(2), e) for e in itertools.count())

    def epoch_loop(epoch_fn, data):
        """One jitted call per epoch, in a tight loop."""

        def train(state, epochs):
            params, opt_state = state
            for _ in range(epochs):
                params, opt_state, *_ = epoch_fn(params, opt_state, data, next(shuffle_keys))
            return params, opt_state

        return train

    objective = gdjax.objective(model, LOSS)

    def bare_step(params, opt_state, bx, by):
        value, grads = jax.value_and_grad(objective)(params, bx, by)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    # fit's own jitted epoch (private API: perm + gather, no per-step guard, a finiteness
    # check of the block's end), called as fit calls it — after copying its inputs (kept
    # for a guarded replay) — without fit's host work around it.
    fit_epoch = gdjax.train._make_epochs(
        model, gdjax.losses.get(LOSS), tx, "hand", gdjax.train._Schedule(BATCH, full, rest), 1,
        None, False,
    )  # fmt: skip
    first_epoch = jnp.asarray(1, jnp.int32)
    not_diverged = jnp.asarray(-1, jnp.int32)

    def fit_epoch_direct(params, opt_state, data, key):
        gdjax.train._device_copy((params, opt_state))  # what fit keeps for a replay
        return fit_epoch(params, opt_state, *data, key, first_epoch, not_diverged)

    step_hand = make_step(model, LOSS, tx, grad="hand")
    others = {
        "make_step(hand)": step_loop(step_hand),
        "make_step(auto)": step_loop(make_step(model, LOSS, tx, grad="auto")),
        "make_step(hand).jitted": step_loop(step_hand.jitted),
        "bare step": step_loop(jax.jit(bare_step, donate_argnums=(0, 1))),
    }
    for name, (source, guard) in EPOCH_VARIANTS.items():
        data = stacked if source == "pre-sliced" else (x, y, order)
        others[name] = epoch_loop(_epoch_fn(model, tx, full, rest, source, guard), data)
    others["fit epoch fn"] = epoch_loop(fit_epoch_direct, (x, y))
    for train in others.values():  # warm-up: compile every shape
        jax.block_until_ready(train(fresh(), 1))

    def fit_round(grad: str, model=model, data=ds, loss=LOSS, batch_size=BATCH, epochs=None):
        """One fit call; returns per-epoch ms/step of fit and of ``others``, and more."""
        inner = {} if epochs is not None else others
        states = {name: fresh() for name in inner}
        out: dict[str, Any] = {name: [] for name in ["fit", *inner]}
        last_return = None

        def callback(epoch, *_):
            nonlocal last_return
            now = time.perf_counter()
            if last_return is None:
                out["first_epoch_s"] = now - start
                if inner:
                    peak, _ = matmul_gflops(*(roofline_size(ctx),) * 3, 3)
                    out["peak_gflops"] = median(peak)
            else:
                out["fit"].append(now - last_return)
            names = list(inner)
            turn = epoch % max(1, len(names))
            for name in names[turn:] + names[:turn]:
                t = time.perf_counter()
                states[name] = jax.block_until_ready(inner[name](states[name], epochs_block))
                if epoch > 1:  # pair fit's epoch e with the blocks timed right after it
                    out[name].append((time.perf_counter() - t) / epochs_block)
            last_return = time.perf_counter()

        start = time.perf_counter()
        result = fit(
            model,
            loss,
            tx,
            data,
            epochs=1 + (epochs or epochs_fit),
            key=jax.random.key(0),
            batch_size=batch_size,
            params=params0 if data is ds else None,
            grad=grad,
            eval_every=0,
            progress=False,
            callback=callback,
        )
        jax.block_until_ready(result.params)
        return out

    rounds = []
    for r in range(ctx.repeats):
        for grad in ("hand", "auto") if r % 2 == 0 else ("auto", "hand"):
            out = fit_round(grad)
            # seconds per epoch → ms/step; fit's samples go under fit(<grad>)
            ms = {name: [1e3 * t / steps for t in out.pop(name)] for name in ["fit", *others]}
            ms[f"fit({grad})"] = ms.pop("fit")
            rounds.append({"grad": grad, "ms": ms, **out})

    # f': fit's fixed cost per epoch where compute is negligible.
    tiny_data = (np.linspace(-1, 1, 16, dtype=np.float32).reshape(8, 2), np.zeros((8, 1)))
    tiny = [
        1e3 * median(fit_round("hand", MLP((2, 2, 1)), tiny_data, "mse", None, 100)["fit"])
        for _ in range(ctx.repeats)
    ]

    def per_round(name):
        """Each round's median ms/step of ``name`` (rounds that have it), and all samples."""
        have = [rd["ms"][name] for rd in rounds if name in rd["ms"]]
        return [median(v) for v in have], have

    def paired(a, b):
        """Per round that has both: the median over epochs of a_e / b_e."""
        return [
            median(paired_ratio(rd["ms"][a], rd["ms"][b]))
            for rd in rounds
            if a in rd["ms"] and b in rd["ms"]
        ]

    how = f"ms/step = epoch time / {steps} ({full}x{BATCH} + 1x{rest} examples)"
    blk = f"block of {epochs_block} epoch(s), synced"
    notes = {
        "make_step(hand)": f"make_step(grad='hand') in a Python loop, {blk}; {how}",
        "make_step(auto)": "make_step(grad='auto'): jax.value_and_grad, same loop",
        "make_step(hand).jitted": "the same step's .jitted, without check_batch per call",
        "bare step": "jit(value_and_grad(objective)) + optax adam, donated, same loop",
        "scan, pre-sliced": "one jit call per epoch: lax.scan over pre-sliced batches, hand",
        "scan, gather": "+ gather x[idx] in the scan (fixed order)",
        "scan, perm+gather": "+ new permutation each epoch (as fit), no guard",
        "scan, perm+gather, guard(loss)": "+ where(isfinite(loss), new, old) on params+state",
        "scan, perm+gather, guard(loss,grads)": "+ where(loss and all grads finite, new, old)",
        "fit epoch fn": "train._make_epochs(..., 1, guard=False) + input copy, as fit runs it",
        "fit(hand)": "fit(grad='hand'), epochs 2..1+E: callback return to next callback",
        "fit(auto)": "fit(grad='auto'), as above",
    }
    info = {
        "sizes": SIZES,
        "batch_size": BATCH,
        "num_train": n,
        "steps_per_epoch": steps,
        "ragged_batch": rest,
        "optimizer": f"optax.adam({LR})",
        "loss": LOSS,
        "rounds": [rd["grad"] for rd in rounds],
        "fit_steady_epochs": epochs_fit,
        "epochs_per_block": epochs_block,
        "flops_per_epoch": flops_epoch,
        "nominal_flops_per_step_b128": 6.0 * BATCH * macs,
    }
    rows = []
    for name in [*others, "fit(hand)", "fit(auto)"]:
        meds, samples = per_round(name)
        per_epoch = [[float(f"{t:.4g}") for t in v] for v in samples]  # ms/step, by round
        extra = {**({} if rows else info), "per_epoch": per_epoch}
        rows.append(Row("training", name, median(meds), "ms/step", notes[name], meds, extra))
    for grad in ("hand", "auto"):
        first = [rd["first_epoch_s"] for rd in rounds if rd["grad"] == grad]
        note = "call to first callback: checks, init, trace, compile, epoch 1"
        rows.append(Row("training", f"fit({grad}) first epoch", median(first), "s", note, first))

    # fit's host work per epoch: fit(hand)'s epoch − its own jitted epoch, synced, just after.
    py = [
        median(
            [
                (a - b) * steps
                for a, b in zip(rd["ms"]["fit(hand)"], rd["ms"]["fit epoch fn"], strict=True)
            ]
        )
        for rd in rounds
        if rd["grad"] == "hand"
    ]
    note = "fit(hand) epoch - fit epoch fn epoch (paired): fold_in, sync, history, _as_arrays"
    rows.append(Row("training", "fit Python side", median(py), "ms/epoch", note, py))
    note = "fit of MLP((2,2,1)) on 8 examples, full batch: median epoch, compute ~0"
    rows.append(Row("training", "fit fixed cost (tiny)", median(tiny), "ms/epoch", note, tiny))

    ratios = [
        ("fit(hand) / bare step", "fit(hand)", "bare step", "target <= 1.10"),
        ("fit(auto) / bare step", "fit(auto)", "bare step", ""),
        ("hand / auto (make_step)", "make_step(hand)", "make_step(auto)", "target <= 1.00"),
        ("make_step(hand) / bare step", "make_step(hand)", "bare step", ""),
        ("scan pre-sliced / bare step", "scan, pre-sliced", "bare step", "scan vs Python loop"),
        ("fit epoch fn / bare step", "fit epoch fn", "bare step", "fit without host work"),
        ("fit(hand) / fit epoch fn", "fit(hand)", "fit epoch fn", "fit's host work"),
        ("gather / pre-sliced", "scan, gather", "scan, pre-sliced", "x[idx] in the scan"),
        ("perm+gather / gather", "scan, perm+gather", "scan, gather", "the permutation"),
        ("guard(loss) / no guard", "scan, perm+gather, guard(loss)", "scan, perm+gather", ""),
        ("guard(loss,grads) / no guard", "scan, perm+gather, guard(loss,grads)",
         "scan, perm+gather", ""),
        ("fit epoch fn / no guard", "fit epoch fn", "scan, perm+gather",
         "fit's divergence safety: input copy + end-of-block check"),
    ]  # fmt: skip
    for case, a, b, note in ratios:
        r = paired(a, b)
        note = "; ".join(filter(None, ["per round: median of per-epoch ratios", note]))
        rows.append(Row("training", case, median(r), "ratio", note, r))
    # fit(hand) and fit(auto) run in different rounds: compare them through the bare step.
    r = paired_ratio(paired("fit(hand)", "bare step"), paired("fit(auto)", "bare step"))
    note = "(fit(hand)/bare step) / (fit(auto)/bare step), round by round; target <= 1.00"
    rows.append(Row("training", "hand / auto (fit)", median(r), "ratio", note, r))

    # The roofline moves with the machine's load: take the median of every round's.
    peaks = [rd["peak_gflops"] for rd in rounds]
    peak = median(peaks)
    note = f"{roofline_size(ctx)}^3 float32 matmul, after epoch 1 of each round; median used below"
    rows.append(Row("training", "roofline in rounds", peak, "GFLOP/s", note, peaks))
    for name in ("bare step", "make_step(hand)", "make_step(auto)", "fit(hand)", "fit(auto)"):
        meds, _ = per_round(name)
        frac = [flops_epoch / (steps * t * 1e-3) / 1e9 / peak for t in meds]
        note = f"6*n*sum(n_in*n_out) per epoch / epoch time / {peak:.0f} GFLOP/s"
        rows.append(Row("training", f"roofline: {name}", median(frac), "fraction", note, frac))

    # What fit's epoch spends on its permutation of the n examples, alone, and what
    # jax.random.permutation (two-operand sort) would spend, interleaved.
    shufflers = {
        "gdjax.data.permutation": jax.jit(gdjax.data.permutation, static_argnums=1),
        "jax.random.permutation": jax.jit(jax.random.permutation, static_argnums=1),
    }
    perm_ms: dict[str, list[float]] = {name: [] for name in shufflers}
    for fn in shufflers.values():
        jax.block_until_ready(fn(jax.random.key(3), n))
    for _ in range(max(3, ctx.repeats)):
        for name, fn in shufflers.items():
            calls = [jax.random.key(3)] * 50
            perm_ms[name].append(1e3 * timed(lambda fn=fn, c=calls: [fn(k, n) for k in c]) / 50)
    for name, ms in perm_ms.items():
        note = f"jit({name})(key, {n}); 50 calls per repeat"
        if name.startswith("gdjax"):
            note += ", as in fit's epoch"
        rows.append(Row("training", f"permutation of n: {name}", median(ms), "ms/epoch", note, ms))
    ratio = paired_ratio(*perm_ms.values())
    rows.append(Row("training", "permutation: gdjax / jax.random", median(ratio), "ratio",
                    "single-operand packed-key sort vs sort_key_val", ratio))  # fmt: skip
    return rows


# ---------------------------------------------------------------- section: fit end to end


def fit_end_to_end(ctx: Context) -> list[Row]:
    """fit as a user calls it (no callback), against a bare jitted step, interleaved.

    ``fit`` caches its compiled epoch, so after a warm-up call a fit of E epochs
    is pure training: permutation, gather, divergence guard and host
    bookkeeping, with epoch e+1 dispatched before epoch e's results are read.
    A round times ``fit(E_long) − fit(E_short)`` (the difference removes the
    fixed per-call cost: checks, init, the last synchronisation) and a bare
    jitted adam step over the same number of epochs of fixed pre-sliced batches
    in a tight Python loop; the ratio is taken round by round.
    """
    ds = gdjax.data.digits()
    model = MLP(SIZES, activation="relu")
    n = ds.num_train
    short, long_ = (2, 6) if ctx.quick else (10, 40)
    kw = dict(
        batch_size=BATCH, key=jax.random.key(0), learning_rate=LR, progress=False, eval_every=0
    )
    tx = gdjax.train.make_optimizer("adam", learning_rate=LR)
    objective = gdjax.objective(model, LOSS)

    def bare(params, opt_state, bx, by):
        value, grads = jax.value_and_grad(objective)(params, bx, by)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    bare = jax.jit(bare, donate_argnums=(0, 1))
    batches = [(ds.x[i : i + BATCH], ds.y[i : i + BATCH]) for i in range(0, n, BATCH)]

    def bare_epochs(epochs: int) -> float:
        params = model.init(jax.random.key(0))
        opt_state = tx.init(params)

        def run():
            nonlocal params, opt_state
            for _ in range(epochs):
                for bx, by in batches:
                    params, opt_state, _ = bare(params, opt_state, bx, by)
            jax.block_until_ready(params)

        return timed(run)

    def fit_epochs(epochs: int) -> float:
        return timed(
            lambda: jax.block_until_ready(
                gdjax.train.fit(model, LOSS, "adam", ds, epochs=epochs, **kw).params
            )
        )

    fit_epochs(short), fit_epochs(long_), bare_epochs(1)  # compile every block size
    steps = (long_ - short) * len(batches)
    fit_ms, bare_ms, ratios = [], [], []
    for _ in range(max(3, ctx.repeats)):
        f = fit_epochs(long_) - fit_epochs(short)
        b = bare_epochs(long_ - short)
        fit_ms.append(1e3 * f / steps)
        bare_ms.append(1e3 * b / steps)
        ratios.append(f / b)
    note = f"fit(E={long_}) − fit(E={short}), compiled epoch cached, no callback"
    return [
        Row("fit", "fit(hand), end to end", median(fit_ms), "ms/step", note, fit_ms),
        Row(
            "fit",
            "bare step, pre-sliced",
            median(bare_ms),
            "ms/step",
            "jit(value_and_grad) + adam, donated, fixed batches, tight loop",
            bare_ms,
        ),
        Row(
            "fit",
            "fit / bare step",
            median(ratios),
            "ratio",
            "round by round; target <= 1.10 (issue 3)",
            ratios,
        ),
    ]


# ---------------------------------------------------------------- section: sweeps

# (name, sizes, activation, loss, examples, grid in full mode, grid in quick mode)
SWEEP_CASES = (
    ("large", (784, 512, 512, 10), "relu", "softmax_cross_entropy", 2048, 21, None),
    ("large", (784, 512, 512, 10), "relu", "softmax_cross_entropy", 2048, 51, None),
    ("large (quick)", (64, 128, 128, 10), "relu", "softmax_cross_entropy", 512, None, 5),
    ("small", (2, 16, 16, 1), "tanh", "mse", 1000, 51, 51),
)


def _sweep_problem(sizes, activation, loss, examples):
    """Glorot params, two filter-normalised directions, random normal x and random targets."""
    model = MLP(sizes, activation=activation)
    keys = jax.random.split(jax.random.key(0), 5)
    params = model.init(keys[0])
    d1 = gdjax.landscape.filter_normalized_direction(keys[1], params)
    d2 = gdjax.landscape.filter_normalized_direction(keys[2], params)
    x = jax.random.normal(keys[3], (examples, sizes[0]), jnp.float32)
    if loss == "mse":
        y = jax.random.normal(keys[4], (examples, sizes[-1]), jnp.float32)
    else:
        y = jax.random.randint(keys[4], (examples,), 0, sizes[-1])
    return model, params, d1, d2, x, y


def _one_point(f):
    """The reference method's unit of work, jitted: ``f(θ + α d1 + β d2, x, y)`` for one (α, β)."""

    @jax.jit
    def point(params, d1, d2, a, b, x, y):
        return f(jax.tree.map(lambda p, u, v: p + a * u + b * v, params, d1, d2), x, y)

    return point


def sweeps(ctx: Context) -> list[Row]:
    """Points/s of a 2-D sweep against a loop of one point per jitted call (Li et al.'s method).

    The loop is the reference code's method: one jitted call per grid point
    computing ``C(θ + α d1 + β d2)``, a Python loop over the grid, synced at the
    end. Against it: ``sweep_2d`` of ``gdjax.objective(model, loss)`` (the
    generic path: every point displaces all params and runs the whole net) and
    of ``gdjax.landscape.mlp_loss(model, loss)`` (the fast path: ``x wᵀ, x D1ᵀ,
    x D2ᵀ`` once, then layers 2 … L per point), each with its defaults (vmap
    width and chunk size), and for the small case also with the whole grid as
    one chunk. A repeat times every variant once, in an order rotated each
    repeat, and the matmul roofline (median of 3 products) just before it
    (3 repeats for the large case, 1 for its 51×51 grid on a CPU, where its
    loop alone takes ~45 s; ``max(3, --repeats)`` otherwise); ratios are per
    repeat (loop time / sweep time) and the rows give medians. The roofline
    fraction counts nominal FLOPs, 2·examples·Σ n_in·n_out per point, so the
    fast path, which skips most of layer 1, may pass 100 %.

    The small case also gets an *activation floor*: the time of the jitted
    activation alone over every hidden unit of every example at every point
    (points × examples × Σ hidden sizes values). Any method, the loop
    included, computes those values, so loop time / floor bounds the speed-up
    that batching can buy.
    """
    landscape = gdjax.landscape
    rows = []
    for name, sizes, activation, loss, examples, grid_full, grid_quick in SWEEP_CASES:
        grid = grid_quick if ctx.quick else grid_full
        if grid is None:
            continue
        # the large case's loop takes ~8 s (21x21) or ~45 s (51x51) a repeat on 2 CPU cores
        repeats = max(3, ctx.repeats)
        if name == "large":
            repeats = 3 if grid < 51 or jax.default_backend() != "cpu" else 1
        model, params, d1, d2, x, y = _sweep_problem(sizes, activation, loss, examples)
        alphas = betas = np.linspace(-1.0, 1.0, grid)
        generic = gdjax.objective(model, loss)
        fast = landscape.mlp_loss(model, loss)

        point = _one_point(generic)
        coeffs = [(np.float32(a), np.float32(b)) for a in alphas for b in betas]

        def loop(point=point, params=params, d1=d1, d2=d2, x=x, y=y, coeffs=coeffs):
            return [point(params, d1, d2, a, b, x, y) for a, b in coeffs]

        def sweep(f, chunk_size=None, params=params, d1=d1, d2=d2, x=x, y=y, alphas=alphas):
            return lambda: landscape.sweep_2d(
                f, params, d1, d2, alphas, alphas, x, y, chunk_size=chunk_size
            )

        variants = {
            "loop, 1 point/call": loop,
            "sweep_2d, objective (generic)": sweep(generic),
            "sweep_2d, mlp_loss (fast path)": sweep(fast),
        }
        if name == "small":
            variants["sweep_2d, mlp_loss, 1 chunk"] = sweep(fast, chunk_size=grid * grid)
        if name == "large" and grid >= 51 and jax.default_backend() == "cpu":
            del variants["sweep_2d, objective (generic)"]  # ~45 s; its rate is the 21×21 one
        values = {v: np.asarray(jax.block_until_ready(fn())).ravel() for v, fn in variants.items()}
        ref = values["loop, 1 point/call"]
        errors = {v: float(np.max(np.abs(val - ref) / np.abs(ref))) for v, val in values.items()}

        times: dict[str, list[float]] = {v: [] for v in variants}
        peaks = []
        names = list(variants)
        for r in range(repeats):
            peaks.append(median(matmul_gflops(*(roofline_size(ctx),) * 3, 3)[0]))
            turn = r % len(names)
            for v in names[turn:] + names[:turn]:
                times[v].append(timed(variants[v]))

        points = grid * grid
        flops = 2.0 * examples * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        peak = median(peaks)
        case = f"{name} {list(sizes)} {activation}, {examples} ex, {grid}x{grid}"
        widths = {
            "generic": landscape.default_vmap_width(generic, params, x, y),
            "fast": landscape.default_vmap_width(fast, params, x, y),
        }
        info = {
            "sizes": list(sizes),
            "activation": activation,
            "loss": loss,
            "examples": examples,
            "grid": [grid, grid],
            "nominal_flops_per_point": flops,
            "default_vmap_width": widths,
            "roofline_gflops_per_repeat": peaks,
            "max_rel_diff_vs_loop": errors,
        }
        for v in names:
            rate = [points / t for t in times[v]]
            note = f"{points} points; {errors[v]:.1e} max rel. diff. from the loop"
            rows.append(Row("sweeps", f"{case}: {v}", median(rate), "points/s", note, rate, info))
            info = {}
        loop_t = times["loop, 1 point/call"]
        for v in names[1:]:
            r = paired_ratio(loop_t, times[v])
            rows.append(
                Row(
                    "sweeps",
                    f"{name} {grid}x{grid}: {v} / loop",
                    median(r),
                    "ratio",
                    "loop time / sweep time per repeat",
                    r,
                )
            )
        for v in names:
            frac = [points * flops / t / 1e9 / p for t, p in zip(times[v], peaks, strict=True)]
            note = f"nominal {flops / 1e9:.3g} GFLOP/point; roofline {peak:.0f} GFLOP/s (median)"
            rows.append(
                Row(
                    "sweeps",
                    f"{name} {grid}x{grid}: roofline: {v}",
                    median(frac),
                    "fraction",
                    note,
                    frac,
                )
            )
        if name == "small":
            rows.extend(_activation_floor(sizes, activation, examples, points, loop_t, repeats))
    return rows


def _activation_floor(sizes, activation, examples, points, loop_t, repeats) -> list[Row]:
    """Seconds of σ alone over points × examples × Σ hidden sizes values; loop time / that.

    One point's values (examples × Σ hidden, a few hundred KiB) stay in cache and
    are shifted by a tiny per-point constant, so the figure is σ's arithmetic, not
    memory traffic: a floor for any method.
    """
    sigma = gdjax.activations.get(activation).fn
    z = jax.random.normal(jax.random.key(0), (examples, sum(sizes[1:-1])), jnp.float32)

    @jax.jit
    def all_points(z):
        def one(i, acc):
            return acc + jnp.sum(sigma(z + i.astype(z.dtype) * 1e-7))

        return jax.lax.fori_loop(0, points, one, jnp.zeros((), z.dtype))

    count = points * z.size
    jax.block_until_ready(all_points(z))
    floor = [timed(lambda: all_points(z)) for _ in range(max(3, repeats))]
    bound = [t / median(floor) for t in loop_t]
    note = f"{activation} (+ a sum) over {count:.3g} in-cache values: what every method computes"
    return [
        Row("sweeps", f"small: {activation} floor", median(floor), "s", note, floor),
        Row(
            "sweeps",
            "small: loop / floor",
            median(bound),
            "ratio",
            "the most any batching of the small case can gain over the loop",
            bound,
        ),
    ]


# ---------------------------------------------------------------- section: curvature

CURVATURE_TOL = 1e-3  # relative tolerance for λ_max, every method


def _curvature_problem(ctx: Context):
    """Glorot relu MLP, random normal x, random integer labels, softmax cross-entropy."""
    sizes, examples = ((64, 128, 128, 10), 256) if ctx.quick else ((784, 512, 512, 10), 2048)
    model = MLP(sizes, activation="relu")
    keys = jax.random.split(jax.random.key(0), 4)
    params = model.init(keys[0])
    x = jax.random.normal(keys[1], (examples, sizes[0]), jnp.float32)
    y = jax.random.randint(keys[2], (examples,), 0, sizes[-1])
    leaves, treedef = jax.tree.flatten(params)
    v_keys = jax.random.split(keys[3], len(leaves))
    v = jax.tree.unflatten(
        treedef,
        [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(v_keys, leaves, strict=True)],
    )
    return model, params, x, y, v


def _torch_on_gpu() -> bool:
    """Whether torch runs on CUDA here: only when JAX is on a GPU too, so both use one device."""
    from bench_steps import torch_device  # noqa: PLC0415

    return torch_device() == "cuda"


def _torch_copy(params, x, y):
    """A torch copy of the relu MLP (``bench_steps.torch_mlp``), inputs, labels and loss."""
    import torch  # noqa: PLC0415 (optional dependency)
    from bench_steps import torch_device, torch_mlp  # noqa: PLC0415

    net = torch_mlp(params, "relu")
    inputs = torch.from_numpy(np.asarray(x).copy()).to(torch_device())
    targets = torch.from_numpy(np.asarray(y).astype(np.int64)).to(torch_device())
    return net, inputs, targets, torch.nn.CrossEntropyLoss()


def _pyhessian_lambda_max(params, x, y, seed: int = 0) -> dict[str, Any]:
    """PyHessian's power iteration on a torch copy of the network: λ, HVPs, seconds, vector.

    ``hessian(...)`` does the forward pass and the ``create_graph`` backward pass
    (timed with the rest); ``eigenvalues`` calls ``hessian_vector_product`` (imported
    by name into ``pyhessian.hessian``) once per iteration, which is where HVPs are
    counted. It stops when the Rayleigh quotient changes by < tol relative (a rule
    that measures no residual). ``vector`` is its returned eigenvector as gdjax
    params (``torch_mlp``'s ``Linear`` weight and bias per layer), for measuring.
    """
    import torch  # noqa: PLC0415 (optional dependency)
    from pyhessian import hessian  # noqa: PLC0415

    module = sys.modules["pyhessian.hessian"]
    net, inputs, targets, criterion = _torch_copy(params, x, y)
    original = module.hessian_vector_product
    count = 0

    def counted(*a, **kw):
        nonlocal count
        count += 1
        return original(*a, **kw)

    module.hessian_vector_product = counted
    try:
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # its backward(create_graph=True) warns every call
            warnings.simplefilter("ignore", UserWarning)
            start = time.perf_counter()
            h = hessian(net, criterion, data=(inputs, targets), cuda=_torch_on_gpu())
            values, vectors = h.eigenvalues(top_n=1, maxIter=100, tol=CURVATURE_TOL)
            if _torch_on_gpu():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        for param in net.parameters():
            param.grad = None  # break the parameter <-> graph cycle that backward left
    finally:
        module.hessian_vector_product = original
    flat = [t.detach().cpu().numpy() for t in vectors[0]]
    vector = [
        {"w": jnp.asarray(w), "b": jnp.asarray(b)}
        for w, b in zip(flat[::2], flat[1::2], strict=True)
    ]
    return {"lambda": float(values[0]), "hvps": count, "s": seconds, "vector": vector}


def _pyhessian_rayleigh_sequence(params, x, y, iterations: int) -> list[float]:
    """PyHessian's estimate after each of ``iterations`` power steps (tol=0, so none stops early).

    Its iteration i computes ``Hv`` and the Rayleigh quotient ``vᵀHv`` (its λ after i
    HVPs); the wrapper records that quotient as PyHessian does.
    """
    import torch  # noqa: PLC0415 (optional dependency)
    from pyhessian import hessian  # noqa: PLC0415

    module = sys.modules["pyhessian.hessian"]
    net, inputs, targets, criterion = _torch_copy(params, x, y)
    original = module.hessian_vector_product
    quotients: list[float] = []

    def recorded(grads, params, v):
        hv = original(grads, params, v)
        quotients.append(float(sum((a * b).sum() for a, b in zip(hv, v, strict=True))))
        return hv

    module.hessian_vector_product = recorded
    try:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            h = hessian(net, criterion, data=(inputs, targets), cuda=_torch_on_gpu())
            h.eigenvalues(top_n=1, maxIter=iterations, tol=0.0)
        for param in net.parameters():
            param.grad = None
    finally:
        module.hessian_vector_product = original
    return quotients


def _hvps_to(values: Sequence[float], reference: float, rel: float) -> int | None:
    """The first m (1-based) from which every ``values[m-1:]`` is within ``rel`` of reference."""
    ok = [abs(v - reference) <= rel * abs(reference) for v in values]
    for m in range(1, len(ok) + 1):
        if all(ok[m - 1 :]):
            return m
    return None


def curvature(ctx: Context) -> list[Row]:
    """One HVP against one gradient, and λ_max by Lanczos, power iteration and PyHessian.

    The problem: ``MLP([784, 512, 512, 10], relu)`` (``[64, 128, 128, 10]`` with
    ``--quick``), glorot init, float32, 2048 (256) random normal examples with random
    integer labels, softmax cross-entropy. HVP and gradient are each one jitted call,
    timed interleaved (alternating which goes first); the ratio is the median of
    paired ratios. λ_max to ``tol = 1e-3`` (:func:`_lambda_max_rows`): gdjax's
    variants (:data:`LAMBDA_VARIANTS`) and PyHessian (if ``torch`` and ``pyhessian``
    import) on a torch copy of the same weights and data, over several random starts,
    interleaved, each scored against a reference λ*; then :func:`_matched_accuracy`.
    """
    model, params, x, y, v = _curvature_problem(ctx)
    f = gdjax.objective(model, LOSS)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    info = {
        "sizes": model.sizes,
        "activation": "relu",
        "examples": int(x.shape[0]),
        "num_params": int(n_params),
        "loss": LOSS,
        "tol": CURVATURE_TOL,
    }
    rows: list[Row] = []

    # (1) one HVP vs one gradient; and one product of hvp_operator (θ linearised once,
    # as every iterative method uses it), all interleaved.
    grad = jax.jit(jax.grad(f))
    hvp = jax.jit(gdjax.curvature.hvp, static_argnums=0)
    product = gdjax.curvature.hvp_operator(f, params, x, y)
    calls = {
        "g": lambda: grad(params, x, y),
        "h": lambda: hvp(f, params, v, x, y),
        "op": lambda: product(v),
    }
    jax.block_until_ready([call() for call in calls.values()])
    pairs = max(7, 2 * ctx.repeats + 1)
    ms: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(pairs):
        order = list(calls)[i % len(calls) :] + list(calls)[: i % len(calls)]
        for name in order:
            ms[name].append(1e3 * timed(calls[name]))
    note = "jit(jax.grad(objective))(params, x, y), interleaved with the HVPs"
    rows.append(Row("curvature", "gradient", median(ms["g"]), "ms", note, ms["g"], info))
    note = "jit(gdjax.curvature.hvp) (jvp of grad), interleaved with the gradient"
    rows.append(Row("curvature", "hvp", median(ms["h"]), "ms", note, ms["h"]))
    note = "one product of hvp_operator(f, params, x, y): forward and backward done once"
    rows.append(Row("curvature", "hvp_operator product", median(ms["op"]), "ms", note, ms["op"]))
    ratio = paired_ratio(ms["h"], ms["g"])
    note = "one-off hvp; median of paired per-sample ratios; target <= 2.0"
    rows.append(Row("curvature", "hvp / gradient", median(ratio), "ratio", note, ratio))
    ratio = paired_ratio(ms["op"], ms["g"])
    note = "per product at a fixed theta (Lanczos, power, trace, SLQ, Newton-CG); target <= 2.0"
    rows.append(Row("curvature", "hvp_operator / gradient", median(ratio), "ratio", note, ratio))

    # (2) λ_max to tol = 1e-3: gdjax's variants and PyHessian, scored against λ*.
    rows.extend(_lambda_max_rows(ctx, f, params, x, y, product, info))
    return rows


# What each gdjax variant is, and what its ``converged`` means. Every variant's
# ``converged`` is decided on the residual ‖Hv − λv‖ *measured* with one true product
# (counted in its HVPs): ≤ tol·|λ| puts an eigenvalue of H within tol·|λ| of λ
# (Bauer–Fike). Only two independent starts that agree (``confirm=True``, the default)
# also make it unlikely that this eigenvalue is not λ_max.
LAMBDA_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "lanczos": (
        {},
        "defaults (criterion='residual', confirm=True): stops on the Lanczos residual "
        "estimate; converged = measured residual <= tol*|l| in two independent starts that "
        "agree (verified)",
    ),
    "lanczos(one run)": (
        {"confirm": False},
        "criterion='residual', confirm=False: one start; converged = measured residual <= "
        "tol*|l| (verified: an eigenvalue within tol; not checked that it is the largest)",
    ),
    "lanczos(eigenvalue)": (
        {"criterion": "eigenvalue"},
        "criterion='eigenvalue', confirm=True: heuristic stop on the estimated error "
        "min(r, r^2/gap); converged only if the measured residuals meet tol",
    ),
    "lanczos(eigenvalue, one run)": (
        {"criterion": "eigenvalue", "confirm": False},
        "criterion='eigenvalue', confirm=False: the old README row's rule, one start, plus "
        "the one measured residual; converged only if it meets tol",
    ),
    "power(one run)": (
        {"method": "power", "confirm": False},
        "method='power', confirm=False: stops when ||Hv - (v'Hv)v|| <= tol*|v'Hv| "
        "(measured every step)",
    ),
}
VERIFIED_VARIANTS = ("lanczos", "lanczos(one run)")  # the rule itself is a verified bound


def _lambda_max_rows(ctx: Context, f, params, x, y, product, info) -> list[Row]:
    """λ_max to ``tol = 1e-3`` by gdjax (:data:`LAMBDA_VARIANTS`) and PyHessian.

    Every method runs once per *round* from a new random start (gdjax key and torch
    seed ``r``), interleaved in a rotating order, so times, HVP counts and errors
    are over starts and ratios are medians of per-round paired ratios. Before the
    rounds: each gdjax variant's first call after ``jax.clear_caches()`` (trace,
    compile and run, cold), then the reference λ* (Lanczos to tol 1e-8, confirmed;
    its measured residual is recorded). Per run: time, HVPs (gdjax: Lanczos steps or
    power iterations plus the measured-residual products; PyHessian:
    ``hessian_vector_product`` calls), ``converged``, the measured residual
    ``‖Hv − λv‖/|λ|`` (PyHessian's returned pair measured afterwards with gdjax's
    operator, not counted or timed) and the error ``|λ − λ*|/|λ*|``.
    """
    rows: list[Row] = []
    rounds = 2 if ctx.quick else max(3, ctx.repeats)
    tol = CURVATURE_TOL

    def gdjax_run(options, r):
        key = jax.random.key(1000 + r)
        start = time.perf_counter()
        eig = gdjax.curvature.top_eigenvalues(f, params, 1, x, y, key=key, tol=tol, **options)
        seconds = time.perf_counter() - start
        lam = float(eig.eigenvalues[0])
        return {"s": seconds, "lambda": lam, "hvps": int(eig.hvps),
                "converged": bool(eig.converged),
                "residual": float(eig.residuals[0]) / abs(lam)}  # fmt: skip

    # Full runs: every first call cold, after jax.clear_caches(). --quick: caches are not
    # cleared (each cold compile costs seconds), so later variants reuse compiled pieces.
    first = {}
    for name, (options, _) in LAMBDA_VARIANTS.items():
        if not ctx.quick:
            jax.clear_caches()
        first[name] = gdjax_run(options, 0)["s"]
    first_note = (
        "first call in this process (--quick: caches not cleared; compiled pieces shared)"
        if ctx.quick
        else "first call after jax.clear_caches(): trace + compile + run, cold (key 1000)"
    )

    ref = gdjax.curvature.top_eigenvalues(f, params, 1, x, y, key=jax.random.key(1), tol=1e-8)
    reference = float(ref.eigenvalues[0])
    ref_residual = float(ref.residuals[0]) / abs(reference)
    info["reference_lambda"] = reference
    info["reference"] = {
        "rule": "top_eigenvalues(tol=1e-8), confirm=True, key 1; in float32 the measured "
        "residual stops near the rounding floor (~1e-7|l|), above 1e-8, so converged=False; "
        "the measured residual bounds the distance from l* to an eigenvalue",
        "hvps": int(ref.hvps),
        "converged": bool(ref.converged),
        "measured_residual_rel": ref_residual,
    }
    ref_note = f"l* = {reference:.6g}, Lanczos to 1e-8, measured residual {ref_residual:.1e}|l*|"

    try:
        import pyhessian  # noqa: F401, PLC0415
        import torch  # noqa: PLC0415
    except ImportError as exc:
        torch = None
        skipped = f"skipped: {exc} (pip install torch==2.13.0 pyhessian==0.1)"
    methods = list(LAMBDA_VARIANTS) + (["pyhessian"] if torch is not None else [])
    if torch is not None:
        pyhessian_first = _pyhessian_lambda_max(params, x, y, seed=0)["s"]

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    for r in range(rounds):
        for name in methods[r % len(methods) :] + methods[: r % len(methods)]:
            if name == "pyhessian":
                run = _pyhessian_lambda_max(params, x, y, seed=r)
                vector = run.pop("vector")
                hv = product(vector)
                lam = run["lambda"]
                diff = jax.tree.map(lambda a, b, lam=lam: a - lam * b, hv, vector)
                run["residual"] = _tree_norm(diff) / _tree_norm(vector) / abs(lam)
                run["converged"] = None  # PyHessian claims nothing
            else:
                run = gdjax_run(LAMBDA_VARIANTS[name][0], r)
            run["rel_error"] = abs(run["lambda"] - reference) / abs(reference)
            runs[name].append(run)

    for name in methods:
        rs = runs[name]
        times = [run["s"] for run in rs]
        hvps = [float(run["hvps"]) for run in rs]
        errors = [run["rel_error"] for run in rs]
        residuals = [run["residual"] for run in rs]
        extra = {key: [run[key] for run in rs] for key in rs[0]}
        extra["seeds"] = list(range(rounds))
        if name == "pyhessian":
            rule = (
                "hessian(...).eigenvalues(top_n=1, maxIter=100, tol=1e-3): stops when the "
                "Rayleigh quotient changes by < tol relative (not verified: no residual)"
            )
            extra.update(
                first_call_s=pyhessian_first,
                torch=torch.__version__,
                pyhessian=_version("pyhessian"),
                torch_threads=torch.get_num_threads(),
                torch_device="cuda" if _torch_on_gpu() else "cpu",
            )
            first_s, note_first = pyhessian_first, "first call (torch warm-up; no compile)"
        else:
            rule = LAMBDA_VARIANTS[name][1]
            conv = sum(run["converged"] for run in rs)
            first_s, note_first = first[name], first_note
        extra["rule"] = rule
        note = f"median of {rounds} starts, interleaved; {rule}"
        rows.append(Row("curvature", f"{name}: lambda_max", median(times), "s", note, times,
                        extra))  # fmt: skip
        rows.append(Row("curvature", f"{name}: first call", first_s, "s", note_first, [first_s]))
        note = (
            "hessian_vector_product calls"
            if name == "pyhessian"
            else ("Lanczos steps / power iterations + the measured-residual products, all starts")
        )
        rows.append(Row("curvature", f"{name}: HVPs", median(hvps), "HVPs", note, hvps))
        per = [1e3 * t / h for t, h in zip(times, hvps, strict=True)]
        note = "steady time / HVPs (including the method's own vector work)"
        rows.append(Row("curvature", f"{name}: per HVP", median(per), "ms", note, per))
        if name != "pyhessian":
            note = f"converged=True in {conv} of {rounds} starts (claimed on measured residuals)"
            flags = [float(run["converged"]) for run in rs]
            rows.append(Row("curvature", f"{name}: converged", conv / rounds, "fraction", note,
                            flags))  # fmt: skip
        note = "max over starts of ||Hv - lv|| / |l|" + (
            " (PyHessian's returned pair, measured afterwards by gdjax; not counted)"
            if name == "pyhessian"
            else " (the measured residual converged is decided on; tol = 1e-3)"
        )
        rows.append(Row("curvature", f"{name}: residual", max(residuals), "rel. to l", note,
                        residuals))  # fmt: skip
        note = f"max over starts of |l - l*| / |l*| ({ref_note})"
        rows.append(Row("curvature", f"{name}: rel. error", max(errors), "rel. error", note,
                        errors))  # fmt: skip

    if torch is None:
        rows.append(Row("curvature", "pyhessian", None, "-", skipped))
        return rows
    py_times = [run["s"] for run in runs["pyhessian"]]
    for name in LAMBDA_VARIANTS:
        ratio = paired_ratio(py_times, [run["s"] for run in runs[name]])
        note = "pyhessian time / gdjax time, median of per-start paired ratios"
        if name in VERIFIED_VARIANTS:
            note += "; target >= 2 (verified 1e-3 in <= 0.5x PyHessian's time)"
        rows.append(Row("curvature", f"pyhessian / {name} time", median(ratio), "ratio", note,
                        ratio))  # fmt: skip
    rows.extend(_matched_accuracy(f, params, x, y, jax.random.key(1000), reference))
    return rows


def _tree_norm(tree) -> float:
    return float(jnp.sqrt(sum(jnp.vdot(a, a) for a in jax.tree.leaves(tree))))


def _matched_accuracy(f, params, x, y, key, reference: float) -> list[Row]:
    """HVPs until λ_max is within CURVATURE_TOL of a tight reference, for Lanczos and PyHessian.

    The two stopping rules differ (Lanczos: a measured residual bound; PyHessian: the
    change of its estimate), so their HVP counts at ``tol`` are not a like-for-like
    comparison. Here both are run past convergence and scored against one reference
    λ* (Lanczos to tol 1e-8): the count is the first m after which the estimate stays
    within ``CURVATURE_TOL·|λ*|``. That is an *oracle* stop (it needs λ*), usable by
    neither method and verified by neither: it compares convergence speed only.
    Lanczos' estimate after m steps is its top Ritz value (one start, key 1000, as
    round 0 of the timed runs; ``max_iters=m``, ``confirm=False``; m excludes the
    measured-residual product); PyHessian's is its Rayleigh quotient vᵀHv (seed 0).
    """
    steps = 16
    lanczos = [
        float(
            gdjax.curvature.top_eigenvalues(
                f, params, 1, x, y, key=key, max_iters=m, tol=1e-30, confirm=False
            ).eigenvalues[0]
        )
        for m in range(1, steps + 1)
    ]
    rows = []
    info = {"reference_lambda": reference, "lanczos_estimates": lanczos}
    m_lanczos = _hvps_to(lanczos, reference, CURVATURE_TOL)
    note = (
        f"oracle count, not a stopping rule: first m after which |ritz_m - l*| <= 1e-3 |l*| "
        f"(l* = {reference:.6g}); Lanczos steps, no confirm, no residual product"
    )
    rows.append(Row("curvature", "matched 1e-3: lanczos HVPs", m_lanczos, "HVPs", note, [], info))
    quotients = _pyhessian_rayleigh_sequence(params, x, y, 3 * steps)
    m_pyhessian = _hvps_to(quotients, reference, CURVATURE_TOL)
    note = "same oracle count for PyHessian's power-iteration estimate v'Hv (seed 0)"
    extra = {"pyhessian_estimates": quotients}
    rows.append(
        Row("curvature", "matched 1e-3: pyhessian HVPs", m_pyhessian, "HVPs", note, [], extra)
    )
    if m_lanczos and m_pyhessian:
        note = "pyhessian HVPs / lanczos HVPs at oracle-matched accuracy (neither verified)"
        ratio = m_pyhessian / m_lanczos
        rows.append(Row("curvature", "matched 1e-3: pyhessian / lanczos", ratio, "ratio", note))
    return rows


def _rows(dicts: list[dict[str, Any]]) -> list[Row]:
    """Rows from the plain dicts that the ``bench_*.py`` modules return."""
    return [Row(**d) for d in dicts]


def steps(ctx: Context) -> list[Row]:
    """The four configs (a)–(d): gdjax hand/auto steps, bare jit(grad), fit, torch, NumPy.

    See ``benchmarks/bench_steps.py`` (also runnable on its own).
    """
    from bench_steps import steps_section  # noqa: PLC0415 (benchmarks/ is sys.path[0])

    return _rows(steps_section(ctx.quick, ctx.repeats, roofline_size(ctx)))


def memory(ctx: Context) -> list[Row]:
    """Peak resident memory of a 201×201 sweep of config (a), in a child process.

    See ``benchmarks/bench_memory.py``; on a CPU the child is stopped after 30 s
    (the peak is reached in the first chunks), on a GPU it runs to the end.
    """
    from bench_memory import memory_section  # noqa: PLC0415

    limit = 30.0 if jax.default_backend() == "cpu" else 300.0
    return _rows(memory_section(ctx.quick, limit_s=limit))


def per_example(ctx: Context) -> list[Row]:
    """Per-example gradients by hand against ``jit(vmap(grad))``; norms without forming them.

    See ``benchmarks/bench_inside.py`` (config [784, 512, 512, 10], batch 256).
    """
    from bench_inside import per_example_section  # noqa: PLC0415

    return _rows(per_example_section(ctx.quick))


def scale(ctx: Context) -> list[Row]:
    """Sweeps and data-parallel steps on 1, 2, 4, 8 simulated CPU devices; checkpoint overhead.

    See ``benchmarks/bench_scale.py``; each device count runs in a child process.
    """
    from bench_scale import scale_section  # noqa: PLC0415

    return _rows(scale_section(ctx.quick))


SECTIONS: dict[str, Callable[[Context], list[Row]]] = {
    "roofline": roofline,
    "steps": steps,
    "training": training,
    "fit": fit_end_to_end,
    "curvature": curvature,
    "sweeps": sweeps,
    "memory": memory,
    "per_example": per_example,
    "scale": scale,
}


# ---------------------------------------------------------------- run, print, save


def device_slug(device) -> str:
    if device.platform == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", str(device.device_kind).lower()).strip("-")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    devices = jax.devices()
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
            {"id": d.id, "platform": d.platform, "device_kind": str(d.device_kind)} for d in devices
        ],
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "env": {name: os.environ.get(name) for name in ENV_VARS},
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def format_table(rows: list[Row]) -> str:
    header = ("section", "case", "value", "unit", "notes")
    cells = [header] + [(r.section, r.case, _fmt(r.value), r.unit, r.notes) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = []
    for i, c in enumerate(cells):
        lines.append(
            f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:>{widths[2]}}  "
            f"{c[3]:<{widths[3]}}  {c[4]}".rstrip()
        )
        if i == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def default_out(quick: bool, date: str) -> Path:
    prefix = "quick-" if quick else ""
    return RESULTS_DIR / f"{prefix}{date}-{device_slug(jax.devices()[0])}.json"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (< 1 min)")
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/…)")
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"fit rounds per grad in training; matmul timings (at least 3) (default "
        f"{DEFAULT_REPEATS})",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, in order (default: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="record a section that raises as an error row and run the next (device runs)",
    )
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        parser.error(f"--sections: expected names from {', '.join(SECTIONS)}, got {unknown}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats: expected a positive integer, got {args.repeats}")

    jax.config.update("jax_enable_x64", False)
    mode = "quick" if args.quick else "full"
    ctx = Context(quick=args.quick, repeats=args.repeats or DEFAULT_REPEATS[mode])
    now = datetime.datetime.now(datetime.UTC)
    out = args.out or default_out(args.quick, now.date().isoformat())

    load_start = _loadavg()
    start = time.perf_counter()
    rows: list[Row] = []
    section_s: dict[str, float] = {}

    def report(complete: bool) -> dict[str, Any]:
        return {
            "date": now.date().isoformat(),
            "timestamp": now.isoformat(timespec="seconds"),
            "mode": mode,
            "repeats": ctx.repeats,
            "sections": names,
            "complete": complete,
            **environment(),
            "argv": list(sys.argv[1:] if argv is None else argv),
            "loadavg_1_5_15min": {"start": load_start, "end": _loadavg()},
            "wall_s": round(time.perf_counter() - start, 2),
            "section_wall_s": section_s,
            "rows": [dataclasses.asdict(r) for r in rows],
        }

    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        t = time.perf_counter()
        gc.collect()
        gc.disable()  # no cyclic collection inside a timed block
        try:
            new_rows = SECTIONS[name](ctx)
        except Exception as exc:
            if not args.keep_going:
                raise
            message = f"{type(exc).__name__}: {exc}"[:500]
            new_rows = [Row(name, "ERROR", None, "-", message)]
        finally:
            gc.enable()
        rows.extend(new_rows)
        section_s[name] = round(time.perf_counter() - t, 2)
        print(format_table(new_rows), flush=True)
        # Every finished section is on disk: an interrupted run keeps what it measured.
        atomic_write_bytes(out, (dump_json(report(complete=name == names[-1])) + "\n").encode())
    final = report(complete=True)
    print(f"\n{mode} run, {ctx.repeats} repeats, {final['wall_s']:.1f} s; devices: "
          f"{', '.join(d['device_kind'] for d in final['devices'])}")  # fmt: skip
    print(f"wrote {out}")
    return final


def _loadavg() -> list[float] | None:
    """The 1, 5 and 15 min load averages: other processes share a CPU machine."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


_NUMBER = r"(?:-?[\d.eE+-]+|NaN|-?Infinity|null)"
_NUMBER_LIST = re.compile(rf"\[\s*(?:{_NUMBER},\s*)*{_NUMBER}\s*\]")


def dump_json(report: dict[str, Any]) -> str:
    """Indented JSON with every list of numbers on one line."""
    text = json.dumps(report, indent=2, default=_json_default)
    return _NUMBER_LIST.sub(lambda m: f"[{', '.join(re.findall(_NUMBER, m.group(0)))}]", text)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | np.ndarray):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    main()
