"""What every benchmark family shares: rows, the run context, timing, the environment, output.

- :class:`Row` (one measurement) and :class:`Context` (mode, repeats, a shared dict):
  every section is ``section(ctx: Context) -> list[Row]``.
- Timing: :func:`timed` (ends with ``jax.block_until_ready``), :func:`median`,
  :func:`paired_ratio`, :func:`interleaved` (variants alternated call by call, so
  the drifts of a shared machine cancel in their paired ratios) and
  :func:`matmul_gflops` (the float32 roofline, :func:`roofline_size`).
- Memory: :func:`peak_rss_bytes` (``VmHWM`` of a process).
- The record of a run: :func:`environment` (versions, devices, CPUs, the variables
  in :data:`ENV_VARS` as found, never set), :func:`loadavg`, :func:`format_table`
  and :func:`dump_json`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gdjax

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ENV_VARS = ("OPENBLAS_CORETYPE", "XLA_FLAGS", "JAX_PLATFORMS")  # recorded, never changed


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


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each fn, alternating between them; one warm-up call each first."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


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


def roofline_size(ctx: Context) -> int:
    """n of the n³ float32 matmul every roofline fraction refers to."""
    return 512 if ctx.quick else 2048


def rows_from_dicts(dicts: list[dict[str, Any]]) -> list[Row]:
    """Rows from plain dicts (section, case, value, unit, notes, repeats[, info]), the form
    the ``bench_*.py`` functions that also run standalone return."""
    return [Row(**d) for d in dicts]


# ---------------------------------------------------------------- memory


def peak_rss_bytes(pid: int | str = "self") -> int | None:
    """Peak resident set (``VmHWM`` in ``/proc/<pid>/status``) of a process, in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- the record of a run


def device_slug(device) -> str:
    if device.platform == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", str(device.device_kind).lower()).strip("-")


def version(dist: str) -> str | None:
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
            "jaxlib": version("jaxlib"),
            "gdjax": gdjax.__version__,
            "optax": version("optax"),
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


def loadavg() -> list[float] | None:
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
