"""Scale-out benchmarks: sweep points/s and data-parallel step time on 1, 2, 4, 8 simulated
CPU devices, and the overhead of checkpointing every epoch.

    python benchmarks/bench_scale.py            # full
    python benchmarks/bench_scale.py --quick    # smoke run

Each device count runs in its own subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=k``
must be set before JAX starts). Simulated devices share this machine's cores, so
these numbers measure the overhead of sharding (partitioning, all-reduces,
all-gathers), not a speed-up; on real accelerators the same code splits the work.
Every timing follows a warm-up call (compiles excluded) and is the median of
``repeats`` samples.

:func:`scale_section` returns rows ``{section, case, value, unit, notes, repeats}``
for ``benchmarks/run.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from common import Context, Row, rows_from_dicts

DEVICE_COUNTS = (1, 2, 4, 8)

WORKER = """
import json, statistics, sys, time
import jax, jax.numpy as jnp, numpy as np
from gdjax import MLP, landscape, objective, train
quick, repeats = sys.argv[1] == "1", int(sys.argv[2])
k = len(jax.devices())
model = MLP((64, 64, 10), activation="relu")
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 64)).astype(np.float32)
y = rng.integers(0, 10, 512)
params = model.init(jax.random.key(0))

# sweep points/s (2-D sweep of the full-batch loss, all devices)
f = objective(model, "softmax_cross_entropy")
d1 = landscape.filter_normalized_direction(jax.random.key(1), params)
d2 = landscape.filter_normalized_direction(jax.random.key(2), params)
res = 16 if quick else 32
axis = np.linspace(-1, 1, res)
run = lambda: landscape.sweep_2d(f, params, d1, d2, axis, axis, x, y, vmap_width=8)
run()
sweep = []
for _ in range(repeats):
    t = time.perf_counter(); run(); sweep.append(res * res / (time.perf_counter() - t))

# data-parallel step (batch 512 split over the k devices)
step = train.make_step(model, "softmax_cross_entropy", "sgd", mesh="local", learning_rate=0.1)
p = jax.tree.map(jnp.array, params)
s = step.optimizer.init(p)
xs, ys = train.step._put((x, y), train.step.NamedSharding(step.mesh, train.step.P("data")))
# Each step is waited for: with many steps in flight, the collectives of 8 simulated
# devices on 2 cores can starve and hit XLA's 40 s rendezvous timeout.
n = 20 if quick else 50
p, s, m = step(p, s, xs, ys); jax.block_until_ready(p)
ms = []
for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(n):
        p, s, m = step(p, s, xs, ys)
        jax.block_until_ready(p)
    ms.append((time.perf_counter() - t) / n * 1e3)
print(json.dumps({"devices": k, "sweep": sweep, "step_ms": ms}))
"""

CHECKPOINT_WORKER = """
import json, sys, tempfile, time
import jax
from gdjax import MLP, data, train
quick, repeats = sys.argv[1] == "1", int(sys.argv[2])
ds = data.digits()
model = MLP((64, 64, 10), activation="relu")
epochs = 5 if quick else 200  # scripts/train.py's default epochs
def run(run_dir):
    kwargs = dict(epochs=epochs, batch_size=64, key=jax.random.key(0), eval_every=1,
                  progress=False, learning_rate=1e-3)
    if run_dir is not None:
        kwargs.update(run_dir=run_dir, checkpoint_every=1)
    t = time.perf_counter()
    train.fit(model, ds.loss, "adam", ds, **kwargs)
    return time.perf_counter() - t
run(None); run(tempfile.mkdtemp())  # warm-up: compile both
plain, ckpt = [], []
for _ in range(repeats):  # interleaved, so drifts of a shared machine cancel
    plain.append(run(None))
    ckpt.append(run(tempfile.mkdtemp()))
print(json.dumps({"plain": plain, "ckpt": ckpt, "epochs": epochs}))
"""


def _worker(script: str, devices: int, quick: bool, repeats: int) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), "1" if quick else "0", str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker on {devices} devices failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scale_section(quick: bool) -> list[dict]:
    """Rows for sweep points/s and step ms on 1, 2, 4, 8 simulated devices, and the
    checkpoint-every-epoch overhead on the digits run."""
    repeats = 1 if quick else 5
    rows = []
    for k in DEVICE_COUNTS[:2] if quick else DEVICE_COUNTS:  # quick: 1 and 2 devices
        r = _worker(WORKER, k, quick, repeats)
        rows.append(
            {
                "section": "scale",
                "case": f"sweep_2d points/s, {k} devices",
                "value": statistics.median(r["sweep"]),
                "unit": "points/s",
                "notes": "MLP 64-64-10 relu, 512 examples, vmap_width 8, simulated CPU devices",
                "repeats": r["sweep"],
            }
        )
        rows.append(
            {
                "section": "scale",
                "case": f"data-parallel step, {k} devices",
                "value": statistics.median(r["step_ms"]),
                "unit": "ms/step",
                "notes": "make_step(mesh='local'), sgd, batch 512 split over the devices",
                "repeats": r["step_ms"],
            }
        )
    c = _worker(CHECKPOINT_WORKER, 1, quick, repeats)
    ratios = [b / a - 1 for a, b in zip(c["plain"], c["ckpt"], strict=True)]
    rows.append(
        {
            "section": "scale",
            "case": "checkpoint every epoch: overhead",
            "value": 100 * statistics.median(ratios),
            "unit": "%",
            "notes": (
                f"digits, MLP 64-64-10, adam, batch 64, {c['epochs']} epochs, eval_every=1 in "
                f"both; fit(run_dir, checkpoint_every=1) vs none; paired ratio, goal <= 5%"
            ),
            "repeats": [100 * r for r in ratios],
        }
    )
    rows.append(
        {
            "section": "scale",
            "case": "digits fit without checkpoints",
            "value": 1e3 * statistics.median(c["plain"]) / c["epochs"],
            "unit": "ms/epoch",
            "notes": "the baseline of the overhead row",
            "repeats": [1e3 * t / c["epochs"] for t in c["plain"]],
        }
    )
    return rows


def section(ctx: Context) -> list[Row]:
    """Sweeps and data-parallel steps on 1, 2, 4, 8 simulated CPU devices; checkpoint overhead.

    Each device count runs in a child process.
    """
    return rows_from_dicts(scale_section(ctx.quick))


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    rows = scale_section(quick)
    print(f"{'case':45s} {'value':>12s}  unit")
    for row in rows:
        print(f"{row['case']:45s} {row['value']:12.4g}  {row['unit']}")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
