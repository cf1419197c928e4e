"""chunked_lanczos: λ_max over 60 000 examples with HVPs accumulated by chunks (issue 16).

    python benchmarks/bench_chunked.py            # standalone: prints a table
    python benchmarks/bench_chunked.py --quick

``gdjax.curvature.top_eigenvalues(f, params, 1, x, y, key=…, tol=1e-3,
data_chunk=k)`` accumulates every Hessian-vector product over chunks of k
examples inside ``jit`` (a ``lax.scan``), so its memory follows k; without
``data_chunk`` each product reuses ∇C linearised once over all n examples
(``hvp_operator``), whose saved activations grow with n. Problem: config (a) of
``bench_steps.py``, ``MLP([784, 512, 512, 10], relu)``, glorot init, float32,
softmax cross-entropy, n random normal examples with random integer labels
(``--quick``: ``[64, 128, 128, 10]``, n = 4096, k = 1024).

- **Peak memory**: each case runs in its own child process (``--child``): it
  builds the data (NumPy, in blocks), runs ``top_eigenvalues`` once with the
  defaults (``confirm=True``: two verified starts; compile included) and reads
  its ``VmHWM`` (peak resident set; on a GPU also the device's
  ``peak_bytes_in_use``). Rows give that peak minus the peak of an idle child
  that imported the same modules (jax, gdjax) and started the backend; gross
  figures, and the peak after building the data, are in the JSON. Cases:
  chunked (k = 4096) and unchunked at n = 60 000 (``--quick``: chunked only).
- **Throughput**: n_cmp is the largest n at which the unchunked run fits
  comfortably; on the 23 GiB CPU machine that is n = 60 000 itself (it peaks
  near 2.3 GiB), so the chunked child, once its peak is read, goes on to time
  both on its data: a warm-up call of the unchunked run (compiles), then
  rounds of one call each in alternating order (``confirm=False``: one start,
  a verified residual; key 1000 + round). HVPs/s = ``Eigen.hvps`` / wall time
  of the call (Lanczos vector work and the measured-residual product
  included); the ratio chunked / unchunked is the median of per-round ratios
  (goal ≥ 0.9).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import Context, Row, format_table, median, paired_ratio, peak_rss_bytes

import gdjax
from gdjax import MLP

SECTION = "chunked_lanczos"
LOSS = "softmax_cross_entropy"
TOL = 1e-3
# sizes, n (the memory case), data_chunk, n_cmp (throughput comparison), rounds
FULL = {"sizes": (784, 512, 512, 10), "n": 60_000, "chunk": 4096, "n_cmp": 60_000, "rounds": 3}
QUICK = {"sizes": (64, 128, 128, 10), "n": 4096, "chunk": 1024, "n_cmp": 4096, "rounds": 1}
GIB = 2**30


# ---------------------------------------------------------------- the child process


def _problem(sizes, n: int):
    """Glorot params; x ~ N(0, 1) drawn by NumPy in blocks of 4096 rows straight into one
    float32 array (so building the data costs at most twice its size: a ``jax.random``
    draw of 60 000 × 784 peaks near 1 GiB), and random integer labels."""
    model = MLP(tuple(sizes), activation="relu")
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = np.empty((n, sizes[0]), np.float32)
    for i in range(0, n, 4096):
        x[i : i + 4096] = rng.standard_normal((min(4096, n - i), sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], n).astype(np.int32)
    x, y = jax.block_until_ready((jnp.asarray(x), jnp.asarray(y)))
    return gdjax.objective(model, LOSS), params, x, y


def _lambda_max(f, params, x, y, chunk, seed: int, confirm: bool) -> dict[str, Any]:
    start = time.perf_counter()
    eig = gdjax.curvature.top_eigenvalues(
        f, params, 1, x, y, key=jax.random.key(seed), tol=TOL, confirm=confirm, data_chunk=chunk
    )
    seconds = time.perf_counter() - start
    lam = float(eig.eigenvalues[0])
    return {
        "s": seconds,
        "lambda": lam,
        "hvps": int(eig.hvps),
        "converged": bool(eig.converged),
        "residual": float(eig.residuals[0]) / abs(lam),
    }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One case in this process (see the module docstring); returns what the parent reads.

    ``mode="run"``: one ``top_eigenvalues`` call with ``data_chunk=spec["chunk"]``
    (defaults otherwise), then the peak RSS. With ``spec["rounds"]`` it then times,
    on the same data, ``confirm=False`` calls chunked (``spec["compare_chunk"]``) and
    unchunked in alternating order (after a warm-up call of each that the first call
    did not compile); the peak memory was read before that.
    """
    jnp.zeros(1).block_until_ready()  # the backend is up: the baseline's state
    out: dict[str, Any] = {"spec": spec}
    if spec["mode"] == "run":
        f, params, x, y = _problem(spec["sizes"], spec["n"])
        out["rss_after_data"] = peak_rss_bytes()
        out["run"] = _lambda_max(f, params, x, y, spec["chunk"], 1000, confirm=True)
    stats = jax.devices()[0].memory_stats() or {}
    out["device_peak_bytes"] = stats.get("peak_bytes_in_use")
    out["peak_rss"] = peak_rss_bytes()
    if spec.get("rounds"):
        cases = {"chunked": spec["compare_chunk"], "unchunked": None}
        out["warmup"] = {
            c: _lambda_max(f, params, x, y, k, 999, False)
            for c, k in cases.items()
            if k != spec["chunk"]
        }
        out["runs"] = {c: [] for c in cases}
        for r in range(spec["rounds"]):
            for c in list(cases)[r % 2 :] + list(cases)[: r % 2]:
                out["runs"][c].append(_lambda_max(f, params, x, y, cases[c], 1000 + r, False))
    return out


def _run_child(spec: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chunked_lanczos child {spec} failed:\n{proc.stderr[-3000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT ") :])
    raise RuntimeError(f"chunked_lanczos child {spec} printed no report:\n{proc.stdout[-2000:]}")


# ---------------------------------------------------------------- the section


def chunked_section(quick: bool) -> list[Row]:
    """Rows: peak memory (net of an idle child) and HVPs/s, chunked against unchunked."""
    cfg = QUICK if quick else FULL
    sizes, n, chunk, n_cmp, rounds = (cfg[k] for k in ("sizes", "n", "chunk", "n_cmp", "rounds"))
    base = _run_child({"mode": "baseline"})["peak_rss"]
    rows: list[Row] = []
    label = f"{'-'.join(map(str, sizes))}"
    info: dict[str, Any] = {
        "sizes": list(sizes),
        "activation": "relu",
        "loss": LOSS,
        "tol": TOL,
        "baseline_peak_rss_bytes": base,
        "backend": jax.default_backend(),
    }
    cases = [(n, chunk)] + ([] if quick else [(n, None)])
    if n_cmp != n:
        cases += [(n_cmp, chunk), (n_cmp, None)]
    throughput = None
    for size, k in cases:
        spec = {"mode": "run", "sizes": list(sizes), "n": size, "chunk": k}
        if size == n_cmp and k == chunk:  # this child also runs the throughput rounds
            spec.update(rounds=rounds, compare_chunk=chunk)
        rep = _run_child(spec)
        if "runs" in rep:
            throughput = {key: rep.pop(key) for key in ("runs", "warmup")}
        run = rep["run"]
        net = (rep["peak_rss"] - base) / GIB
        name = f"data_chunk={k}" if k else "unchunked"
        note = (
            f"peak RSS - idle child's ({base / GIB:.2f} GiB); top_eigenvalues(tol=1e-3), "
            f"confirm=True: {run['hvps']} HVPs, {run['s']:.1f} s incl. compile, "
            f"converged={run['converged']}"
        )
        if k and size == n:
            note += "; goal <= 1.5 GiB"
        extra = {**info, **rep} if not rows else rep
        rows.append(
            Row(SECTION, f"{label}, n={size}, {name}: peak memory", net, "GiB", note, [net], extra)
        )
        if rep.get("device_peak_bytes"):
            value = rep["device_peak_bytes"] / GIB
            rows.append(
                Row(
                    SECTION,
                    f"{label}, n={size}, {name}: device peak",
                    value,
                    "GiB",
                    "peak_bytes_in_use of the device",
                    [value],
                )
            )

    assert throughput is not None
    rate: dict[str, list[float]] = {}
    for case, runs in throughput["runs"].items():
        rate[case] = [run["hvps"] / run["s"] for run in runs]
        hvps = [run["hvps"] for run in runs]
        name = f"data_chunk={chunk}" if case == "chunked" else "unchunked"
        note = (
            f"HVPs / s of top_eigenvalues(tol=1e-3, confirm=False), {rounds} rounds "
            f"interleaved; HVPs {hvps}; {n_cmp}*HVPs/s = {n_cmp * median(rate[case]):.3g}"
        )
        rows.append(
            Row(
                SECTION,
                f"{label}, n={n_cmp}, {name}: throughput",
                median(rate[case]),
                "HVP/s",
                note,
                rate[case],
                {"runs": runs, "warmup": throughput["warmup"].get(case)},
            )
        )
    ratio = paired_ratio(rate["chunked"], rate["unchunked"])
    note = "HVPs/s chunked / unchunked, median of per-round ratios; goal >= 0.9"
    rows.append(
        Row(
            SECTION,
            f"{label}, n={n_cmp}: chunked / unchunked throughput",
            median(ratio),
            "ratio",
            note,
            ratio,
        )
    )
    return rows


def section(ctx: Context) -> list[Row]:
    """λ_max over 60 000 examples, chunked against unchunked: peak memory and HVPs/s."""
    return chunked_section(ctx.quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        print("REPORT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    print(format_table(chunked_section(args.quick)))


if __name__ == "__main__":
    main()
