"""curvature: one HVP against one gradient, and λ_max by Lanczos, power iteration and PyHessian.

See :func:`curvature` for the problem and :func:`_lambda_max_rows` for the method.
PyHessian runs only if ``torch`` and ``pyhessian`` import (optional).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import Context, Row, median, paired_ratio, timed, version

import gdjax
from gdjax import MLP

LOSS = "softmax_cross_entropy"
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
                pyhessian=version("pyhessian"),
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
