"""Two processes on 127.0.0.1 (``jax.distributed`` with gloo CPU collectives) train and sweep
like one.

Each process has 2 simulated CPU devices, so the global mesh has 4 devices in 2
processes. Both run the same script: data-parallel steps (``make_step`` with
``mesh=distributed.global_mesh()``), a data-parallel ``fit`` and a 2-D sweep
with ``out=``; the results are compared with the single-process ones computed
here.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, distributed, landscape, objective, runs, train

MODEL = MLP((3, 8, 2), activation="tanh")
LOSS = "softmax_cross_entropy"


def problem():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 3)), rng.integers(0, 2, 48)
    params = jax.device_get(MODEL.init(jax.random.key(1), dtype=jnp.float64))
    d1 = jax.device_get(landscape.random_direction(jax.random.key(2), params))
    d2 = jax.device_get(landscape.random_direction(jax.random.key(3), params))
    return x, y, params, d1, d2


def steps(mesh=None):
    x, y, params, _, _ = problem()
    step = train.make_step(MODEL, LOSS, "adam", mesh=mesh, learning_rate=0.05)
    opt_state = jax.device_get(step.optimizer.init(params))
    for _ in range(4):
        params, opt_state, metrics = step(params, opt_state, x, y)
    return params, metrics["loss"]


def fit(mesh=None, run_dir=None):
    x, y, params, _, _ = problem()
    checkpoints = {"run_dir": run_dir, "checkpoint_every": 1} if run_dir else {}
    return train.fit(
        MODEL, LOSS, "sgd", (x, y), epochs=3, batch_size=16, key=jax.random.key(0),
        params=params, mesh=mesh, eval_every=0, progress=False, learning_rate=0.3,
        **checkpoints,
    )  # fmt: skip


def sweep(out=None):
    x, y, params, d1, d2 = problem()
    f = objective(MODEL, LOSS)
    grid = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    return landscape.sweep_2d(f, params, d1, d2, *grid, x, y, chunk_size=4, vmap_width=1, out=out)


SCRIPT = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
from gdjax import distributed
port, pid, tests_dir, out = sys.argv[1:5]
distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
import numpy as np
sys.path.insert(0, tests_dir)
import test_distributed as t

assert distributed.process_count() == 2 and distributed.process_index() == int(pid)
assert distributed.is_main_process() == (pid == "0")
mesh = distributed.global_mesh()
assert mesh.devices.size == 4 and len(jax.local_devices()) == 2
params, loss = t.steps(mesh)
result = {f"step/{i}": np.asarray(p) for i, p in enumerate(jax.tree.leaves(params))}
result["step/loss"] = np.asarray(loss)
fitted = t.fit(mesh)
result.update({f"fit/{i}": np.asarray(p) for i, p in enumerate(jax.tree.leaves(fitted.params))})
result["fit/step_loss"] = fitted.history["step_loss"]
checkpointed = t.fit(mesh, run_dir=out + "/ckpt")
leaves = jax.tree.leaves(checkpointed.params)
result.update({f"ckpt/{i}": np.asarray(p) for i, p in enumerate(leaves)})
result["sweep"] = t.sweep(out + "/sweep")
np.savez(f"{out}/process{pid}.npz", **result)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    port, here = str(_free_port()), os.path.dirname(__file__)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SCRIPT), port, str(pid), here, str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    try:
        errors = [p.communicate(timeout=180)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = []
    for pid in (0, 1):
        with np.load(out / f"process{pid}.npz") as z:
            results.append({k: z[k] for k in z.files})
    return out, results


def test_two_processes_take_the_single_process_steps(two_processes):
    _, results = two_processes
    params, loss = steps()
    for r in results:
        for i, leaf in enumerate(jax.tree.leaves(params)):
            np.testing.assert_allclose(r[f"step/{i}"], leaf, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(r["step/loss"], loss, rtol=1e-12)


def test_two_processes_fit_like_one(two_processes):
    _, results = two_processes
    result = fit()
    for r in results:
        for i, leaf in enumerate(jax.tree.leaves(result.params)):
            np.testing.assert_allclose(r[f"fit/{i}"], leaf, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(r["fit/step_loss"], result.history["step_loss"], rtol=1e-12)


def test_two_processes_checkpoint_a_fit_through_process_0(two_processes):
    """fit(run_dir=..., checkpoint_every=1) on a global mesh: the same params as without
    checkpoints on both processes, and one complete checkpoint of the last epoch on disk."""
    out, results = two_processes
    result = fit()
    for r in results:
        for i, leaf in enumerate(jax.tree.leaves(result.params)):
            np.testing.assert_allclose(r[f"ckpt/{i}"], leaf, rtol=1e-12, atol=1e-14)
    ckpt = runs.load_checkpoint(out / "ckpt", like={"opt_state": result.opt_state})
    assert ckpt is not None and ckpt.step == 3
    saved_leaves = jax.tree.leaves(ckpt.trees["params"])
    for saved, leaf in zip(saved_leaves, jax.tree.leaves(result.params), strict=True):
        np.testing.assert_allclose(saved, leaf, rtol=1e-12, atol=1e-14)


def test_a_two_process_sweep_returns_the_full_grid_and_only_process_0_writes(two_processes):
    """What works as landscape.py stands: both processes get every value (all-gathered),
    equal to the one-process sweep, and the out directory records one call on 4 devices."""
    out, results = two_processes
    single = sweep()
    for r in results:
        np.testing.assert_allclose(r["sweep"], single, rtol=1e-12)
    meta = json.loads((out / "sweep" / landscape.META_FILE).read_text())
    assert [(c["devices"], c["points_computed"]) for c in meta["calls"]] == [(4, 20)]
    with np.load(out / "sweep" / landscape.GRID_FILE) as z:
        assert z["done"].all()
        np.testing.assert_allclose(z["values"], single, rtol=1e-12)
    # a resumed one-process call finds everything done and computes nothing
    np.testing.assert_array_equal(sweep(out / "sweep"), z_values(out))


def z_values(out):
    with np.load(out / "sweep" / landscape.GRID_FILE) as z:
        return z["values"]


def test_initialize_checks_its_arguments_and_environment(monkeypatch):
    with pytest.raises(ValueError, match=r"coordinator_address: expected 'host:port'"):
        distributed.initialize("localhost", num_processes=2, process_id=0)
    with pytest.raises(ValueError, match=r"process_id: expected an integer in \[0, 2\)"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=2)
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(ValueError, match=r"num_processes: expected an integer in \$GDJAX_NUM"):
        distributed.initialize("127.0.0.1:1", process_id=0)
    assert distributed.process_count() == 1 and distributed.is_main_process()
    assert not distributed.is_initialized()
