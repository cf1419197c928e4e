"""generic: what the generic model path costs against the MLP path, both autodiff (issue 16).

    python benchmarks/bench_generic.py            # standalone: prints a table
    python benchmarks/bench_generic.py --quick

``train.make_step`` and ``train.fit`` take a :class:`gdjax.MLP` or any function
``apply(params, x)`` (:class:`gdjax.models.ApplyModel`: ``params=`` required,
gradient by autodiff). On the configs (a)–(d) of ``bench_steps.py`` (``--quick``:
config (d) only), float32, plain SGD (η = 1e-2), the same params and batches,
``grad="auto"`` everywhere, it times

- ``make_step``: ``make_step(model, …)`` called as users call it (the per-call
  ``check_batch`` included), and its ``.jitted`` (the compiled step alone), per step;
- ``fit``: per step, from ``fit(E₂) − fit(1)`` (fit's fixed per-call cost
  cancels; E₂ − 1 ≥ 2 epochs, sized to ~1 s of training as in ``bench_steps.py``),

each for ``model=mlp`` (the MLP path) and ``model=mlp.apply`` (the generic path:
one bound-method object, passed every time), in blocks of ~0.1 s (at least 4
steps, the same number for both paths). A round runs, for each kind in a
rotating order, an ABBA quartet of the two paths (A = MLP on even rounds), and
its ratio is Σ generic / Σ MLP over the quartet, so a linear drift cancels; 7
rounds (3 with ``--quick``), rows and ratios are medians (target generic / MLP
≤ 1.02). To say where a difference comes from, it also times the
per-call input check of each path alone (``gdjax.models.check_batch``, as
``make_step``'s wrapper calls it, interleaved) and records whether the two
paths lower to the same StableHLO (``make_step``'s jitted step; ``fit``'s
jitted epoch, through the private ``gdjax.train.epochs._make_epochs``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from bench_steps import (
    CONFIGS,
    LR,
    QUICK_CONFIGS,
    _calibrate,
    _fit_extra_epochs,
    _fit_stepper,
    _jax_stepper,
    _problem,
)
from common import Context, Row, format_table, median

import gdjax
from gdjax import MLP
from gdjax.models import as_loss, as_model, check_batch
from gdjax.train import make_step

SECTION = "generic"
PATHS = ("mlp", "generic")
TARGET = "target <= 1.02"


def _same_lowering(model: MLP, apply, loss: str, params, x, y, batch: int) -> dict[str, Any]:
    """Whether the MLP and generic paths lower to the same StableHLO (make_step, fit's epoch)."""
    out: dict[str, Any] = {}
    steps = [make_step(m, loss, "sgd", "auto", learning_rate=LR) for m in (model, apply)]
    state = steps[0].optimizer.init(params)
    texts = [s.jitted.lower(params, state, x[:batch], y[:batch]).as_text() for s in steps]
    out["make_step_same_stablehlo"] = texts[0] == texts[1]
    try:  # private API: fit's jitted epoch, as fit builds it (one epoch, unguarded)
        train = gdjax.train
        n = x.shape[0]
        schedule = train.epochs._Schedule(batch, n // batch, n % batch)
        tx = train.make_optimizer("sgd", learning_rate=LR)
        args = (params, tx.init(params), x, y, jax.random.key(0)) + tuple(
            jnp.asarray(v, jnp.int32) for v in (1, -1)
        )
        texts = [
            train.epochs._make_epochs(
                as_model(m), as_loss(loss), tx, "auto", schedule, 1, None, False
            )
            .lower(*args)
            .as_text()
            for m in (model, apply)
        ]
        out["fit_epoch_same_stablehlo"] = texts[0] == texts[1]
    except Exception as exc:  # noqa: BLE001 (a diagnostic; a private API may move)
        out["fit_epoch_same_stablehlo"] = f"not compared: {type(exc).__name__}: {exc}"[:200]
    return out


def _check_cost_us(model: MLP, apply, loss: str, params, x, y, repeats: int) -> dict[str, list]:
    """µs per call of ``check_batch`` (make_step's per-call check) per path, interleaved."""
    models = {"mlp": as_model(model), "generic": as_model(apply)}
    loss_obj = as_loss(loss)
    calls = 200
    us: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():
        check_batch(m, loss_obj, params, x, y, finite_params=False)  # warm the caches
    for r in range(repeats):
        for name in list(models)[r % 2 :] + list(models)[: r % 2]:
            m = models[name]
            start = time.perf_counter()
            for _ in range(calls):
                check_batch(m, loss_obj, params, x, y, finite_params=False)
            us[name].append(1e6 * (time.perf_counter() - start) / calls)
    return us


def generic_section(quick: bool, repeats: int = 7) -> list[Row]:
    """Rows for every config: make_step and fit, MLP path against generic path."""
    configs = {"d": QUICK_CONFIGS["d"]} if quick else CONFIGS  # quick: the dispatch-bound one
    rounds = 3 if quick else max(7, repeats)
    block_s = 0.03 if quick else 0.1
    rows: list[Row] = []
    for name, config in configs.items():
        rows.extend(_config_rows(name, config, quick, rounds, block_s))
    return rows


def _config_rows(name: str, config, quick: bool, rounds: int, block_s: float) -> list[Row]:
    """The rows of one config (see the module docstring)."""
    rows: list[Row] = []
    sizes, batch, activation, loss = config
    model = MLP(sizes, activation=activation)
    apply = model.apply  # one object: ApplyModel is hashed by it, so compiled code is reused
    models = {"mlp": model, "generic": apply}
    fit_batches = 4 if quick else 8
    params, x_all, y_all = _problem(sizes, batch, loss, fit_batches)
    x, y = x_all[:batch], y_all[:batch]
    runners: dict[str, Callable[[int], None]] = {}
    for path, m in models.items():
        step = make_step(m, loss, "sgd", "auto", learning_rate=LR)
        for suffix, fn in (("make_step", step), ("make_step.jitted", step.jitted)):
            p = jax.tree.map(jnp.copy, params)
            runners[f"{path} {suffix}"] = _jax_stepper(fn, p, step.optimizer.init(p), x, y)
    # Both paths run blocks of the same number of steps, calibrated on the MLP path
    # (the other's runner gets a warm-up step), so the final sync weighs the same.
    steps_of = {}
    for what in ("make_step", "make_step.jitted"):
        steps_of[f"mlp {what}"] = steps_of[f"generic {what}"] = _calibrate(
            runners[f"mlp {what}"], block_s
        )
        runners[f"generic {what}"](1)
    fits = {
        path: _fit_stepper(m, loss, x_all, y_all, batch, params=params, grad="auto")
        for path, m in models.items()
    }
    start = time.perf_counter()  # a block of compiled steps: their time per step
    runners["mlp make_step.jitted"](steps_of["mlp make_step.jitted"])
    step_s = (time.perf_counter() - start) / steps_of["mlp make_step.jitted"]
    e1 = 1
    extra = max(2, _fit_extra_epochs(fit_batches * step_s, 10 * block_s))
    e2 = e1 + extra
    for run in fits.values():
        run(e1), run(e2)  # compile every block size

    def sample(path: str, what: str) -> float:
        """ms per step of one block of ``path``'s ``what``."""
        if what == "fit":
            return 1e3 * (fits[path](e2) - fits[path](e1)) / (extra * fit_batches)
        v = f"{path} {what}"
        start = time.perf_counter()
        runners[v](steps_of[v])
        return 1e3 * (time.perf_counter() - start) / steps_of[v]

    # Each round: for each kind (order rotated), an ABBA quartet of the two paths
    # (A = mlp on even rounds, generic on odd), so a linear drift cancels in the
    # round's ratio sum(generic) / sum(mlp).
    kinds = ("make_step", "make_step.jitted", "fit")
    variants = [f"{path} {what}" for what in kinds for path in PATHS]
    ms: dict[str, list[float]] = {v: [] for v in variants}  # per step
    ratios: dict[str, list[float]] = {what: [] for what in kinds}
    for r in range(rounds):
        a, b = PATHS if r % 2 == 0 else PATHS[::-1]
        for what in kinds[r % 3 :] + kinds[: r % 3]:
            got: dict[str, list[float]] = {a: [], b: []}
            for path in (a, b, b, a):
                got[path].append(sample(path, what))
            for path in PATHS:
                ms[f"{path} {what}"].extend(got[path])
            ratios[what].append(sum(got["generic"]) / sum(got["mlp"]))

    label = f"({name}) {'-'.join(map(str, sizes)) if len(sizes) < 8 else '32-64x16-1'}"
    info = {
        "sizes": list(sizes),
        "batch": batch,
        "activation": activation,
        "loss": loss,
        "grad": "auto",
        "optimizer": f"sgd({LR})",
        "steps_per_block": steps_of,
        "fit_epochs": [e1, e2],
        "fit_batches_per_epoch": fit_batches,
        "generic_model": "mlp.apply (a bound method, one object)",
        **_same_lowering(model, apply, loss, params, x_all, y_all, batch),
    }
    notes = {
        "make_step": "make_step(model, loss, 'sgd', 'auto') per step, check_batch included",
        "make_step.jitted": "the same step's .jitted: the compiled step alone",
        "fit": f"fit(E={e2}) - fit(E={e1}), {fit_batches} batches/epoch, per step",
    }
    for v in variants:
        path, what = v.split(" ", 1)
        note = f"{path} path: {notes[what]}"
        rows.append(Row(SECTION, f"{label} {v}", median(ms[v]), "ms/step", note, ms[v], info))
        info = {}
    for what in kinds:
        ratio = ratios[what]
        note = f"model=mlp.apply / model=mlp, grad='auto', per round (ABBA); {TARGET}"
        rows.append(
            Row(SECTION, f"({name}) generic / mlp: {what}", median(ratio), "ratio", note, ratio)
        )
    fit_epoch = {path: [fit_batches * t for t in ms[f"{path} fit"]] for path in fits}
    for path, values in fit_epoch.items():
        note = f"{path} path: fit per epoch ({fit_batches} steps of batch {batch})"
        rows.append(
            Row(
                SECTION,
                f"({name}) {path} fit per epoch",
                median(values),
                "ms/epoch",
                note,
                values,
            )
        )

    us = _check_cost_us(model, apply, loss, params, x, y, max(3, rounds))
    for path, values in us.items():
        note = f"gdjax.models.check_batch per call ({path} path), as make_step runs it"
        rows.append(
            Row(SECTION, f"({name}) {path} per-call check", median(values), "us", note, values)
        )
    step_us = 1e3 * median(ms["mlp make_step"])
    diff = [(g - m) / step_us for g, m in zip(us["generic"], us["mlp"], strict=True)]
    note = "(generic check - mlp check) / median mlp make_step time: its share of the ratio"
    rows.append(
        Row(SECTION, f"({name}) extra check / mlp step", median(diff), "fraction", note, diff)
    )
    return rows


def section(ctx: Context) -> list[Row]:
    """The generic path (``model=mlp.apply``) against the MLP path, make_step and fit."""
    return generic_section(ctx.quick, ctx.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(format_table(generic_section(args.quick, args.repeats)))


if __name__ == "__main__":
    main()
