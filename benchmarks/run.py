"""gdjax benchmarks: the single entry point, one JSON file per run.

    python benchmarks/run.py                  # full run (a few minutes on 2 CPU cores)
    python benchmarks/run.py --quick          # smoke run, under a minute (CI)
    python benchmarks/run.py --sections training --repeats 9 --out /tmp/b.json

A run is a list of *sections* (:data:`SECTIONS`), each a function
``section(ctx) -> list[Row]`` run in order in one process. Each family of
sections lives in its own module (``bench_<family>.py``, most also runnable
alone); what they share (rows, timing, interleaving, the environment record,
the JSON) is in ``common.py``. Every timing is taken after a warm-up call
(compiles excluded unless a row says otherwise), ends with
``jax.block_until_ready``, is repeated (``--repeats``) and reported as the
median. Variants that are compared with each other are timed *interleaved*, a
few milliseconds apart, and a ratio is the median of paired per-sample ratios,
so the drifts of a noisy, shared machine cancel.

Output: a table on stdout and a JSON file (date, versions, devices, CPU count,
the environment variables in :data:`common.ENV_VARS` as found, every row with its
repeats). The default path is ``benchmarks/results/<YYYY-MM-DD>-<device>.json``
for a full run and ``benchmarks/results/quick-<YYYY-MM-DD>-<device>.json`` for
``--quick`` (git-ignored); ``--out`` overrides both.

Adding a section: write ``def my_section(ctx: Context) -> list[Row]`` in a
``bench_<family>.py`` module and add it to :data:`SECTIONS`. Sizes depend on
``ctx.quick``; values one section leaves for later ones go in ``ctx.shared``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench_as_called
import bench_chunked
import bench_curvature
import bench_generic
import bench_inside
import bench_memory
import bench_roofline
import bench_scale
import bench_steps
import bench_sweeps
import bench_training
import jax
from common import (
    RESULTS_DIR,
    Context,
    Row,
    device_slug,
    dump_json,
    environment,
    format_table,
    loadavg,
)

from gdjax.runs import atomic_write_bytes

DEFAULT_REPEATS = {"full": 5, "quick": 1}

SECTIONS: dict[str, Callable[[Context], list[Row]]] = {
    "roofline": bench_roofline.roofline,
    "steps": bench_steps.section,
    "training": bench_training.training,
    "fit": bench_training.fit_end_to_end,
    "curvature": bench_curvature.curvature,
    "sweeps": bench_sweeps.sweeps,
    "memory": bench_memory.section,
    "per_example": bench_inside.section,
    "scale": bench_scale.section,
    "generic": bench_generic.section,
    "chunked_lanczos": bench_chunked.section,
    "as_called": bench_as_called.section,
}


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

    load_start = loadavg()
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
            "loadavg_1_5_15min": {"start": load_start, "end": loadavg()},
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


if __name__ == "__main__":
    main()
