"""Training-step speed on the four configs of issue 6, against every reference, in one run.

    python benchmarks/bench_steps.py            # standalone: prints a table
    python benchmarks/bench_steps.py --quick

Configs (all float32, plain SGD, learning rate 1e-2):

    (a) [784, 512, 512, 10]            batch 256  relu     softmax cross-entropy
    (b) [784, 1024, 1024, 1024, 10]    batch 512  tanh     softmax cross-entropy
    (c) [32] + [64]×16 + [1]           batch 128  sigmoid  mse
    (d) [2, 16, 16, 1]                 batch 64   tanh     mse

Variants (each one SGD step θ ← θ − η ∂C/∂θ on a fixed batch, except ``fit``):

- ``hand``: :func:`gdjax.train.make_step` with ``grad="hand"`` (``step.jitted``, the
  call without the per-call input check), optax SGD;
- ``auto``: the same with ``grad="auto"`` (``jax.value_and_grad``);
- ``bare``: ``jax.jit(jax.value_and_grad(objective))`` and ``θ − ηg`` written inline,
  donated — what a user writes without gdjax. Called in a Python loop, it is also
  the "Python loop of jitted steps" that ``fit`` is compared with;
- ``fit``: :func:`gdjax.train.fit` per step (epochs inside ``lax.scan``), from
  ``fit(E₂) − fit(E₁)`` over S batches per epoch (removes its fixed cost), with
  E₂ − E₁ sized to ~0.3 s of training (whole blocks of 32 epochs on small models);
- ``torch eager`` / ``torch.compile`` (``torch.compile(net)``: forward and backward
  compiled, optimizer eager) on the same weights and batch, on CUDA when both JAX
  and torch see a GPU, else on the CPU; skipped when torch is not installed;
- ``numpy``: Nielsen's ``network.py`` backprop (the δ equations), batched: one
  matrix product per layer and direction, float32.

Timing: each variant runs blocks of ``S`` steps (block ≈ 0.1 s on this device, at
least 4 steps; ``scan``: whole epochs), 7 rounds (3 with ``--quick``) visit the
variants in a rotating order, and every figure is the median over rounds of
block time / steps; ratios are medians of per-round ratios.
Nominal FLOPs of a step: ``6·B·Σ n_in·n_out`` (forward, two backward products).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import Context, Row, roofline_size, rows_from_dicts

import gdjax
from gdjax import MLP
from gdjax.train import MAX_EPOCHS_PER_CALL, fit, make_step

LR = 1e-2
CONFIGS: dict[str, tuple[tuple[int, ...], int, str, str]] = {
    "a": ((784, 512, 512, 10), 256, "relu", "softmax_cross_entropy"),
    "b": ((784, 1024, 1024, 1024, 10), 512, "tanh", "softmax_cross_entropy"),
    "c": ((32, *[64] * 16, 1), 128, "sigmoid", "mse"),
    "d": ((2, 16, 16, 1), 64, "tanh", "mse"),
}
QUICK_CONFIGS: dict[str, tuple[tuple[int, ...], int, str, str]] = {
    "a": ((64, 64, 10), 32, "relu", "softmax_cross_entropy"),
    "d": ((2, 16, 16, 1), 64, "tanh", "mse"),
}


def flops_per_step(sizes: tuple[int, ...], batch: int) -> float:
    """Nominal FLOPs of one training step: 6·B·Σ n_in·n_out."""
    return 6.0 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def _problem(sizes, batch, loss, batches: int):
    """Glorot params; ``batches`` batches of normal inputs with random labels or targets."""
    kp, kx, ky = jax.random.split(jax.random.key(0), 3)
    model_params = MLP(sizes).init(kp)
    x = jax.random.normal(kx, (batches * batch, sizes[0]), jnp.float32)
    if loss == "softmax_cross_entropy":
        y = jax.random.randint(ky, (batches * batch,), 0, sizes[-1])
    else:
        y = jax.random.normal(ky, (batches * batch, sizes[-1]), jnp.float32)
    return model_params, x, y


# ---------------------------------------------------------------- JAX variants


def _jax_stepper(step: Callable, params, opt_state, x, y) -> Callable[[int], None]:
    """``run(s)``: s steps on the fixed batch (x, y), blocking at the end."""
    state = [params, opt_state]

    def run(steps: int) -> None:
        p, s = state
        for _ in range(steps):
            p, s, _ = step(p, s, x, y)
        jax.block_until_ready(p)
        state[:] = [p, s]

    return run


def _bare_step(model: MLP, loss: str):
    f = gdjax.objective(model, loss)

    def step(params, opt_state, x, y):
        value, grads = jax.value_and_grad(f)(params, x, y)
        return jax.tree.map(lambda p, g: p - LR * g, params, grads), opt_state, value

    return jax.jit(step, donate_argnums=(0,))


def _scan_stepper(model: MLP, loss: str, params, x_all, y_all, batches: int):
    """``run(e)``: e epochs, each the bare step inside one ``lax.scan`` over ``batches``
    pre-sliced batches; the floor any in-JAX training loop (``fit`` included) can
    reach: no permutation, no gather, no guard, no host work between steps."""
    f = gdjax.objective(model, loss)
    xs = x_all.reshape(batches, -1, *x_all.shape[1:])
    ys = y_all.reshape(batches, -1, *y_all.shape[1:])

    def sgd(params, batch):
        value, grads = jax.value_and_grad(f)(params, *batch)
        return jax.tree.map(lambda p, g: p - LR * g, params, grads), value

    epoch = jax.jit(lambda p: jax.lax.scan(sgd, p, (xs, ys)), donate_argnums=0)
    state = [jax.tree.map(jnp.copy, params)]

    def run(epochs: int) -> None:
        p = state[0]
        for _ in range(epochs):
            p, _ = epoch(p)
        jax.block_until_ready(p)
        state[0] = p

    return run


# σ' as autodiff computes it, from the output a = σ(z): cheaper, and wrong in the last
# digits where σ saturates (1 − a and 1 − a² cancel). Only for the ablation below.
AUTODIFF_DERIV = {
    "sigmoid": lambda z, a: a * (1 - a),
    "tanh": lambda z, a: 1 - a * a,
    "relu": lambda z, a: (z > 0).astype(z.dtype),
}


def autodiff_deriv_model(sizes, activation: str) -> MLP:
    """``MLP(sizes, activation)`` whose hand backprop uses autodiff's σ' (the ablation
    ``hand σ'(a)``: what the digit-preserving σ' of gdjax.activations costs)."""
    act = gdjax.activations.get(activation)
    cheap = gdjax.activations.Activation(
        f"{activation}_autodiff_deriv", act.fn, act.deriv, AUTODIFF_DERIV[activation]
    )
    return MLP(sizes, activation=cheap)


# ---------------------------------------------------------------- torch variants


def torch_device() -> str:
    """``"cuda"`` when both torch and JAX see a GPU (so they share it), else ``"cpu"``."""
    import torch  # noqa: PLC0415 (optional dependency)

    return "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"


def torch_mlp(params, activation: str):
    """A torch ``Sequential`` of ``Linear`` layers holding gdjax's params, on :func:`torch_device`.

    gdjax's ``w^l`` is ``(n_l, n_{l-1})``, the layout of ``nn.Linear.weight``.
    """
    import torch  # noqa: PLC0415 (optional dependency)

    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}[activation]
    layers: list[Any] = []
    for i, p in enumerate(params):
        w = np.asarray(p["w"])
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(p["b"]).copy()))
        layers.append(linear)
        if i < len(params) - 1:
            layers.append(act())
    return torch.nn.Sequential(*layers).to(torch_device())


def _torch_stepper(params, x, y, activation: str, loss: str, compiled: bool):
    import torch  # noqa: PLC0415 (optional dependency)

    device = torch_device()
    net = torch_mlp(params, activation)
    xt = torch.from_numpy(np.asarray(x).copy()).to(device)
    if loss == "softmax_cross_entropy":
        yt = torch.from_numpy(np.asarray(y).astype(np.int64)).to(device)
        criterion: Callable = torch.nn.CrossEntropyLoss()
    else:
        yt = torch.from_numpy(np.asarray(y).copy()).to(device)

        def criterion(out, target):  # the seed's C = 1/(2n) Σ‖y − a‖²
            return 0.5 * ((out - target) ** 2).sum(dim=1).mean()

    forward = torch.compile(net) if compiled else net
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def run(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            criterion(forward(xt), yt).backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run, device


# ---------------------------------------------------------------- NumPy (Nielsen)


def _numpy_stepper(params, x, y, activation: str, loss: str):
    """Nielsen's ``network.py`` backprop, batched (rows are examples), float32."""
    ws = [np.asarray(p["w"]).copy() for p in params]
    bs = [np.asarray(p["b"]).copy() for p in params]
    x, y = np.asarray(x), np.asarray(y)
    n = x.shape[0]
    if activation == "relu":

        def sigma(z):
            return np.maximum(z, 0)

        def sigma_prime(z, a):
            return (z > 0).astype(z.dtype)
    elif activation == "tanh":
        sigma = np.tanh

        def sigma_prime(z, a):
            return 1 - a * a
    else:

        def sigma(z):
            return 1 / (1 + np.exp(-z))

        def sigma_prime(z, a):
            return a * (1 - a)

    onehot = None
    if loss == "softmax_cross_entropy":
        onehot = np.eye(ws[-1].shape[0], dtype=np.float32)[y]

    def step() -> None:
        activations, zs = [x], []
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            z = activations[-1] @ w.T + b
            zs.append(z)
            activations.append(sigma(z) if i < len(ws) - 1 else z)
        out = activations[-1]
        if onehot is not None:
            e = np.exp(out - out.max(axis=1, keepdims=True))
            delta = (e / e.sum(axis=1, keepdims=True) - onehot) / n
        else:
            delta = (out - y) / n
        for layer in range(len(ws) - 1, -1, -1):
            grad_w, grad_b = delta.T @ activations[layer], delta.sum(axis=0)
            if layer > 0:
                delta = (delta @ ws[layer]) * sigma_prime(zs[layer - 1], activations[layer])
            ws[layer] -= LR * grad_w
            bs[layer] -= LR * grad_b

    def run(steps: int) -> None:
        for _ in range(steps):
            step()

    return run


# ---------------------------------------------------------------- the section


def _calibrate(run: Callable[[int], None], target_s: float, minimum: int = 4) -> int:
    """Steps per block so a block takes about ``target_s`` (after one warm-up step), and at
    least ``minimum``: with 2 steps of a 45 ms config (b), the first one after another
    variant's (cache-cold) weighs half the block, and one noisy run put (b) at 1.12."""
    run(1)
    start = time.perf_counter()
    run(2)
    per = max((time.perf_counter() - start) / 2, 1e-6)
    return int(min(max(minimum, target_s / per), 2000))


def _matmul_stepper(n: int) -> Callable[[int], None]:
    """``run(s)``: s float32 (n, n) @ (n, n) products, blocking at the end."""
    ka, kb = jax.random.split(jax.random.key(1))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)

    def run(steps: int) -> None:
        for _ in range(steps):  # one stream: the last product finishes last
            out = matmul(a, b)
        out.block_until_ready()

    return run


def _fit_stepper(model, loss, x, y, batch, **options):
    """``run(epochs) -> seconds`` of one fit call over the S batches of (x, y); ``options``
    go to ``fit`` as they are (e.g. ``params=``, ``grad=``)."""
    kw = dict(batch_size=batch, key=jax.random.key(0), learning_rate=LR, progress=False)
    kw.update(options)

    def run(epochs: int) -> float:
        start = time.perf_counter()
        result = fit(model, loss, "sgd", (x, y), epochs=epochs, eval_every=0, **kw)
        jax.block_until_ready(result.params)
        return time.perf_counter() - start

    return run


def _fit_extra_epochs(epoch_s: float, target_s: float) -> int:
    """E₂ − E₁ for ``fit(E₂) − fit(E₁)``: about ``target_s`` of training at ``epoch_s`` per
    epoch (estimated from a block of bare steps), at least 1. Past one block the count is a
    whole number of blocks of ``MAX_EPOCHS_PER_CALL`` epochs, so the difference is
    made of full blocks: a tiny model ((d): ~0.1 ms per epoch) runs thousands of
    epochs, so fit's per-call cost (checks, init, compile-cache lookups, the last
    block's sync: ~4 ms) cancels out instead of swamping a 10-epoch difference."""
    extra = max(1, round(target_s / epoch_s))
    if extra > MAX_EPOCHS_PER_CALL:
        extra = MAX_EPOCHS_PER_CALL * round(extra / MAX_EPOCHS_PER_CALL)
    return extra


def steps_section(
    quick: bool, repeats: int = 5, roofline_n: int | None = None
) -> list[dict[str, Any]]:
    """Rows (dicts: section, case, value, unit, notes, repeats, info) for every config.

    With ``roofline_n``, every round also times float32 ``n³`` matmuls (a block of
    about the same length as the others), and roofline fractions divide each
    round's step GFLOP/s by that round's matmul GFLOP/s: on a machine whose speed
    drifts, a roofline measured once, minutes earlier, can put a step above 100 %.
    """
    rows: list[dict[str, Any]] = []
    configs = QUICK_CONFIGS if quick else CONFIGS
    rounds = 3 if quick else max(7, repeats)
    block_s = 0.03 if quick else 0.1
    try:
        import torch  # noqa: PLC0415

        torch_version: str | None = torch.__version__
    except ImportError:
        torch_version = None

    def row(case, value, unit, notes="", samples=(), info=None):
        rows.append(
            dict(
                section="steps",
                case=case,
                value=value,
                unit=unit,
                notes=notes,
                repeats=list(samples),
                info=info or {},
            )  # fmt: skip
        )

    for name, (sizes, batch, activation, loss) in configs.items():
        model = MLP(sizes, activation=activation)
        fit_batches = 4 if quick else 8
        params, x_all, y_all = _problem(sizes, batch, loss, fit_batches)
        x, y = x_all[:batch], y_all[:batch]
        runners: dict[str, Callable[[int], None]] = {}
        for grad in ("hand", "auto"):
            step = make_step(model, loss, "sgd", grad, learning_rate=LR)
            p = jax.tree.map(jnp.copy, params)
            runners[grad] = _jax_stepper(step.jitted, p, step.optimizer.init(p), x, y)
        step = make_step(autodiff_deriv_model(sizes, activation), loss, "sgd", "hand",
                         learning_rate=LR)  # fmt: skip
        p = jax.tree.map(jnp.copy, params)
        runners["hand σ'(a)"] = _jax_stepper(step.jitted, p, step.optimizer.init(p), x, y)
        runners["bare"] = _jax_stepper(
            _bare_step(model, loss), jax.tree.map(jnp.copy, params), (), x, y
        )
        scan_epochs = _scan_stepper(model, loss, params, x_all, y_all, fit_batches)
        runners["scan"] = lambda steps, run=scan_epochs, b=fit_batches: run(steps // b)
        runners["numpy"] = _numpy_stepper(params, x, y, activation, loss)
        device = "-"
        if torch_version is not None:
            runners["torch eager"], device = _torch_stepper(
                params, x, y, activation, loss, compiled=False
            )
            if not quick:
                runners["torch.compile"], _ = _torch_stepper(
                    params, x, y, activation, loss, compiled=True
                )
        sizes_of = {v: _calibrate(run, block_s) for v, run in runners.items() if v != "scan"}
        sizes_of["scan"] = fit_batches * _calibrate(scan_epochs, block_s, 1)  # whole epochs
        if roofline_n:
            runners["matmul"] = _matmul_stepper(roofline_n)
            sizes_of["matmul"] = _calibrate(runners["matmul"], block_s)
        fit_run = _fit_stepper(model, loss, x_all, y_all, batch)
        e1 = 1 if quick else 2
        start = time.perf_counter()  # one calibrated block of bare steps: their time per step
        runners["bare"](sizes_of["bare"])
        bare_s = (time.perf_counter() - start) / sizes_of["bare"]
        e2 = e1 + _fit_extra_epochs(fit_batches * bare_s, 3 * block_s)
        fit_run(e1), fit_run(e2)  # compile every block size
        samples: dict[str, list[float]] = {v: [] for v in [*runners, "fit"]}
        order = list(samples)
        for r in range(rounds):
            for variant in order[r % len(order) :] + order[: r % len(order)]:
                if variant == "fit":
                    seconds = fit_run(e2) - fit_run(e1)
                    samples["fit"].append(1e3 * seconds / ((e2 - e1) * fit_batches))
                    continue
                start = time.perf_counter()
                runners[variant](sizes_of[variant])
                samples[variant].append(1e3 * (time.perf_counter() - start) / sizes_of[variant])
        flops = flops_per_step(sizes, batch)
        info = {"sizes": list(sizes), "batch": batch, "activation": activation, "loss": loss,
                "flops_per_step": flops, "torch": torch_version, "torch_device": device,
                "steps_per_block": sizes_of, "fit_epochs": [e1, e2],
                "fit_batches": fit_batches}  # fmt: skip
        label = f"({name}) {'-'.join(map(str, sizes)) if len(sizes) < 8 else '32-64x16-1'}"
        roofline = None
        fractions: dict[str, list[float]] = {}  # per variant: nominal GFLOP/s / roofline, per round
        if roofline_n:  # GFLOP/s of the n³ matmul, round by round
            matmul_ms = samples.pop("matmul")
            roofline = [2 * roofline_n**3 / (ms * 1e-3) / 1e9 for ms in matmul_ms]
            info["roofline_n"], info["roofline_gflops"] = roofline_n, roofline
            fractions = {
                variant: [flops / (t * 1e-3) / 1e9 / r for t, r in zip(ms, roofline, strict=True)]
                for variant, ms in samples.items()
            }
        for variant, ms in samples.items():
            value = statistics.median(ms)
            note = ""
            if roofline:
                note = f"{statistics.median(fractions[variant]):.0%} of matmul roofline"
            row(
                f"{label} {variant}",
                value,
                "ms/step",
                note,
                ms,
                info if variant == "hand" else None,
            )

        def ratio(a: str, b: str, target: str, samples=samples, name=name):
            if a in samples and b in samples:
                per_round = [x / y for x, y in zip(samples[a], samples[b], strict=True)]
                row(f"({name}) {a} / {b}", statistics.median(per_round), "ratio", target, per_round)

        ratio("hand", "bare", "target <= 1.00 each, <= 0.95 median")
        ratio("hand", "auto", "hand backprop vs autodiff inside make_step")
        ratio("auto", "bare", "make_step's calling convention (optax state, metrics dict) vs "
              "the inline update, both autodiff")  # fmt: skip
        ratio("hand σ'(a)", "bare", "ablation: hand backprop with autodiff's inexact σ' = f(a)")
        ratio("fit", "bare", "target <= 1.10 on (a)/(b); <= 0.25 on (d) (bare = Python loop)")
        ratio("scan", "bare", "the floor for fit / bare: bare steps in lax.scan, pre-sliced")
        ratio("fit", "scan", "fit's own cost: permutation, gather, guard, host work")
        ratio("hand", "torch eager", "target <= 0.67 (1.5x faster)")
        ratio("hand", "torch.compile", "target <= 1.00")
        ratio("hand", "numpy", "Nielsen's network.py, batched")
        if roofline:
            gflops = flops / (statistics.median(samples["hand"]) * 1e-3) / 1e9
            peak = statistics.median(roofline)
            note = f"{gflops:.1f} GFLOP/s nominal over {peak:.1f} GFLOP/s ({roofline_n}³ matmul, "
            note += "same rounds); target >= 0.95 on (b)"
            row(f"({name}) hand: roofline", statistics.median(fractions["hand"]), "fraction", note,
                fractions["hand"])  # fmt: skip
    return rows


def section(ctx: Context) -> list[Row]:
    """The four configs (a)–(d): gdjax hand/auto steps, bare jit(grad), fit, torch, NumPy."""
    return rows_from_dicts(steps_section(ctx.quick, ctx.repeats, roofline_size(ctx)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for r in steps_section(args.quick, args.repeats, 512 if args.quick else 2048):
        print(f"{r['case']:<40} {r['value']:>10.4g} {r['unit']:<8} {r['notes']}")


if __name__ == "__main__":
    main()
