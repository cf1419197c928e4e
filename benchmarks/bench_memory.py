"""Peak memory of a 201×201 sweep of config (a): the chunking must keep it bounded.

    python benchmarks/bench_memory.py                 # parent: runs the child, prints the peak
    python benchmarks/bench_memory.py --grid 51 --limit 30

The sweep runs in a child process (``--child``): config (a) ``[784, 512, 512, 10]``
relu, Glorot weights, 2 048 random normal examples, two filter-normalised
directions, :func:`gdjax.landscape.mlp_loss`, ``sweep_2d(..., out=DIR)`` over a
``grid × grid`` plane in [−1, 1]². The parent polls the child's ``VmHWM`` (peak
resident set, from ``/proc/<pid>/status``) until it exits or ``--limit`` seconds
pass, then stops it; the sweep directory says how many points were done. Memory
is allocated per chunk, so the peak is reached within the first chunks: a
run stopped early on a slow CPU still measures the peak of the whole sweep
(the row says how many points it covered). On a GPU the child also reports
the device's ``peak_bytes_in_use``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Context, Row, peak_rss_bytes, rows_from_dicts

SIZES = (784, 512, 512, 10)
EXAMPLES = 2048


def child(grid: int, out: Path) -> None:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import gdjax  # noqa: PLC0415

    model = gdjax.MLP(SIZES, activation="relu")
    keys = jax.random.split(jax.random.key(0), 5)
    params = model.init(keys[0])
    d1 = gdjax.landscape.filter_normalized_direction(keys[1], params)
    d2 = gdjax.landscape.filter_normalized_direction(keys[2], params)
    x = jax.random.normal(keys[3], (EXAMPLES, SIZES[0]), jnp.float32)
    y = jax.random.randint(keys[4], (EXAMPLES,), 0, SIZES[-1])
    f = gdjax.landscape.mlp_loss(model, "softmax_cross_entropy")
    axis = np.linspace(-1.0, 1.0, grid)
    start = time.perf_counter()
    values = gdjax.landscape.sweep_2d(f, params, d1, d2, axis, axis, x, y, out=out, progress=False)
    seconds = time.perf_counter() - start
    stats = jax.devices()[0].memory_stats() or {}
    report = {
        "points": grid * grid,
        "seconds": seconds,
        "finite": bool(np.all(np.isfinite(np.asarray(values)))),
        "device": str(jax.devices()[0].device_kind),
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
        "device_bytes_limit": stats.get("bytes_limit"),
    }
    print("REPORT " + json.dumps(report), flush=True)


def _points_done(out: Path) -> int:
    try:
        return int(json.loads((out / "sweep.json").read_text())["points_done"])
    except (OSError, ValueError, KeyError):
        return 0


def memory_section(quick: bool, grid: int = 201, limit_s: float = 60.0) -> list[dict[str, Any]]:
    """Rows (dicts: section, case, value, unit, notes, repeats, info)."""
    if quick:
        grid, limit_s = 11, 20.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep"
        cmd = [sys.executable, __file__, "--child", "--grid", str(grid), "--out", str(out)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        peak = 0
        while proc.poll() is None and time.perf_counter() - start < limit_s:
            peak = max(peak, peak_rss_bytes(proc.pid) or 0)
            time.sleep(0.1)
        finished = proc.poll() is not None
        if not finished:
            peak = max(peak, peak_rss_bytes(proc.pid) or 0)
            proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate()
        done = _points_done(out)
        report: dict[str, Any] = {}
        for line in stdout.decode().splitlines():
            if line.startswith("REPORT "):
                report = json.loads(line[len("REPORT ") :])
        if finished and proc.returncode != 0:
            raise RuntimeError(f"memory child failed:\n{stderr.decode()[-2000:]}")
    total = grid * grid
    scope = "whole sweep" if finished else f"stopped after {limit_s:.0f} s"
    note = f"{done}/{total} points ({scope}); peak RSS of the process; target <= 2 GiB"
    info = {"grid": [grid, grid], "sizes": list(SIZES), "examples": EXAMPLES, **report}
    rows = [
        dict(
            section="memory",
            case=f"sweep {grid}x{grid}, config (a): peak RSS",
            value=peak / 2**30,
            unit="GiB",
            notes=note,
            repeats=[],
            info=info,
        )  # fmt: skip
    ]
    if report.get("device_peak_bytes"):
        rows.append(
            dict(
                section="memory",
                case=f"sweep {grid}x{grid}, config (a): device peak",
                value=report["device_peak_bytes"] / 2**30,
                unit="GiB",
                notes=f"peak_bytes_in_use on {report['device']}; {report['seconds']:.1f} s",
                repeats=[],
                info={},
            )  # fmt: skip
        )
    return rows


def section(ctx: Context) -> list[Row]:
    """Peak resident memory of a 201×201 sweep of config (a), in a child process.

    On a CPU the child is stopped after 30 s (the peak is reached in the first
    chunks), on a GPU it runs to the end.
    """
    import jax  # noqa: PLC0415

    limit = 30.0 if jax.default_backend() == "cpu" else 300.0
    return rows_from_dicts(memory_section(ctx.quick, limit_s=limit))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--grid", type=int, default=201)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--limit", type=float, default=60.0, help="seconds before stopping")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.grid, args.out)
        return
    for r in memory_section(args.quick, args.grid, args.limit):
        print(f"{r['case']:<45} {r['value']:>8.3f} {r['unit']:<4} {r['notes']}")


if __name__ == "__main__":
    main()
