"""Data-parallel steps and fit (``mesh=``) equal the one-device run; low-precision gaps.

The multi-device runs happen in a subprocess with 8 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``, which must be set
before JAX starts); the one-device references are computed here, in the test
process, and compared: float64 to 1e-12, float32 to 1e-5 (the sums over the
batch are split into per-device partial sums, so only the rounding differs).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, backprop, objective, train

MODEL = MLP((3, 8, 2), activation="tanh")
LOSS = "softmax_cross_entropy"
N = 48  # divisible by 1, 2, 4, 8


def problem(dtype):
    """The same data and init in every process (from keys, no files needed)."""
    key = jax.random.key(0)
    x = jax.random.normal(key, (N, 3), dtype)
    y = jnp.asarray(np.random.default_rng(0).integers(0, 2, N))
    return x, y, MODEL.init(jax.random.key(1), dtype=dtype)


def run_steps(grad, dtype, mesh=None, steps=4):
    x, y, params = problem(dtype)
    step = train.make_step(MODEL, LOSS, "momentum", grad=grad, mesh=mesh, learning_rate=0.1)
    opt_state = step.optimizer.init(params)
    for _ in range(steps):
        params, opt_state, metrics = step(params, opt_state, x, y)
    return params, metrics["loss"]


def run_fit(dtype, mesh=None, n=N, model=MODEL):
    x, y, params = problem(dtype)
    return train.fit(
        model,
        LOSS,
        "adam",
        (x[:n], y[:n]),
        epochs=3,
        batch_size=16,
        key=jax.random.key(2),
        params=params,
        mesh=mesh,
        eval_every=3,
        progress=False,
        learning_rate=0.05,
    )


# (devices, dtype, grad) of the steps run on a mesh; every device count divides N.
STEP_CASES = [
    *[(8, dtype, grad) for dtype in ("float64", "float32") for grad in ("hand", "auto")],
    (2, "float64", "hand"),
    (4, "float64", "hand"),
]
FIT_DEVICES = (4, 8)

SCRIPT = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
sys.path.insert(0, sys.argv[2])
import test_data_parallel as t
from gdjax import train

assert len(jax.devices()) == 8, jax.devices()
out, errors = {}, {}
for k, dtype, grad in t.STEP_CASES:
    mesh = Mesh(np.asarray(jax.devices()[:k]), ("data",))
    params, loss = t.run_steps(grad, jnp.dtype(dtype), mesh)
    assert params[0]["w"].sharding.mesh.size == k
    for i, leaf in enumerate(jax.tree.leaves(params)):
        out[f"step/{grad}/{dtype}/{k}/{i}"] = np.asarray(leaf)
    out[f"step/{grad}/{dtype}/{k}/loss"] = np.asarray(loss)
for k in t.FIT_DEVICES:
    res = t.run_fit(jnp.float64, Mesh(np.asarray(jax.devices()[:k]), ("data",)))
    for i, leaf in enumerate(jax.tree.leaves(res.params)):
        out[f"fit/{k}/{i}"] = np.asarray(leaf)
    out[f"fit/{k}/step_loss"] = res.history["step_loss"]
    out[f"fit/{k}/test"] = res.history["train_accuracy"]
# a model given as a function apply(params, x) (autodiff) on the same mesh
res = t.run_fit(jnp.float64, Mesh(np.asarray(jax.devices()), ("data",)), model=t.MODEL.apply)
for i, leaf in enumerate(jax.tree.leaves(res.params)):
    out[f"fit/apply/{i}"] = np.asarray(leaf)

# The step is partitioned: the compiled program all-reduces the gradient sums.
x, y, params = t.problem(jnp.float32)
step = train.make_step(t.MODEL, t.LOSS, "sgd", mesh="local", learning_rate=0.1)
replicated = train.step.NamedSharding(step.mesh, train.step.P())
args = train.step._put((params, step.optimizer.init(params)), replicated)
hlo = step.jitted.lower(*args, x, y).compile().as_text()
out["all_reduce"] = np.asarray("all-reduce" in hlo)

def message(fn):
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None

errors["step rows"] = message(lambda: step(*args, x[:12], y[:12]))  # 12 rows over 8
errors["fit ragged"] = message(lambda: t.run_fit(jnp.float32, "local", n=44))  # r = 12
errors["fit batch"] = message(lambda: train.fit(t.MODEL, t.LOSS, "sgd", (x, y), epochs=1,
                              key=jax.random.key(0), batch_size=12, mesh="local",
                              learning_rate=0.1, progress=False))
errors["fit full"] = message(lambda: train.fit(t.MODEL, t.LOSS, "sgd", (x[:44], y[:44]),
                             epochs=1, key=jax.random.key(0), mesh="local",
                             learning_rate=0.1, progress=False))
errors["no data axis"] = message(lambda: train.make_step(
    t.MODEL, t.LOSS, "sgd", mesh=Mesh(np.asarray(jax.devices()), ("batch",)), learning_rate=0.1))
np.savez(sys.argv[1], **out)
print(json.dumps(errors))
"""


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    """Run SCRIPT once on 8 simulated devices: its arrays and its error messages."""
    result = tmp_path_factory.mktemp("dp") / "result.npz"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(result), os.path.dirname(__file__)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(result) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("devices", "dtype", "grad"), STEP_CASES)
def test_steps_on_several_devices_equal_the_one_device_step(eight_devices, devices, dtype, grad):
    arrays, _ = eight_devices
    rtol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    params, loss = run_steps(grad, jnp.dtype(dtype))
    for i, leaf in enumerate(jax.tree.leaves(params)):
        got = arrays[f"step/{grad}/{dtype}/{devices}/{i}"]
        assert got.dtype == leaf.dtype
        np.testing.assert_allclose(got, leaf, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(arrays[f"step/{grad}/{dtype}/{devices}/loss"], loss, rtol=rtol)


def test_fit_on_4_and_8_devices_equals_the_one_device_fit(eight_devices):
    arrays, _ = eight_devices
    result = run_fit(jnp.float64)
    for k in FIT_DEVICES:
        for i, leaf in enumerate(jax.tree.leaves(result.params)):
            np.testing.assert_allclose(arrays[f"fit/{k}/{i}"], leaf, rtol=1e-12, atol=1e-14)
        step_loss = result.history["step_loss"]
        np.testing.assert_allclose(arrays[f"fit/{k}/step_loss"], step_loss, rtol=1e-12)
        np.testing.assert_array_equal(arrays[f"fit/{k}/test"], result.history["train_accuracy"])


def test_a_function_model_on_8_devices_equals_its_one_device_fit(eight_devices):
    arrays, _ = eight_devices
    result = run_fit(jnp.float64, model=MODEL.apply)
    for i, leaf in enumerate(jax.tree.leaves(result.params)):
        np.testing.assert_allclose(arrays[f"fit/apply/{i}"], leaf, rtol=1e-12, atol=1e-14)


def test_the_sharded_step_all_reduces_its_gradients(eight_devices):
    arrays, _ = eight_devices
    assert bool(arrays["all_reduce"])


def test_batches_that_do_not_split_over_the_devices_are_refused(eight_devices):
    _, errors = eight_devices
    assert "x: expected a batch whose rows split evenly over the 8 devices" in errors["step rows"]
    assert "got 12 rows (12 % 8 = 4)" in errors["step rows"]
    assert (
        "batch_size: expected a batch size B such that B and the last batch"
        in (errors["fit ragged"])
    )
    assert "got B = 16 and, with n = 44 training examples, r = 12" in errors["fit ragged"]
    assert "got B = 12 and, with n = 48 training examples, r = 0" in errors["fit batch"]
    assert "full-batch steps whose n = 44 training examples" in errors["fit full"]
    assert "mesh: expected a jax.sharding.Mesh with an axis named 'data'" in errors["no data axis"]


def test_mesh_argument_is_checked_before_compiling(compilations):
    before = compilations.count
    with pytest.raises(ValueError, match=r"mesh: expected None, 'local', 'global', True or"):
        train.make_step(MODEL, LOSS, "sgd", mesh="everywhere", learning_rate=0.1)
    with pytest.raises(ValueError, match=r"mesh: expected None, 'local'"):
        train.fit(
            MODEL, LOSS, "sgd", problem(jnp.float32)[:2], epochs=1, key=jax.random.key(0),
            mesh=8, learning_rate=0.1, progress=False,
        )  # fmt: skip
    assert compilations.count == before
    assert train.data_mesh(None) is None and train.data_mesh(True).axis_names == ("data",)


# ---------------------------------------------------------------- precision

# Max relative error of the hand gradient against jax.grad, per dtype: the bounds
# docs/precision.md documents (measured: see there; the bound leaves headroom).
PRECISION_BOUNDS = {"float64": 1e-13, "float32": 2e-6, "bfloat16": 0.1, "float16": 1e-2}
PRECISION_CASES = [
    (MLP((8, 32, 32, 4), activation="tanh"), "mse"),
    (MLP((8, 32, 32, 4), activation="sigmoid"), "softmax_cross_entropy"),
    (MLP((8, 64, 4), activation="relu"), "softmax_cross_entropy"),
]


def hand_vs_auto_gap(model, loss, dtype, seed=3, n=64):
    """max over leaves of ‖g_hand − g_auto‖_∞ / ‖g_auto‖_∞, both computed in ``dtype``.

    Data and params are drawn with numpy (nothing to compile) and cast to ``dtype``;
    one jitted call computes both gradients.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, model.sizes[0]))
    if loss == "mse":
        y = jnp.asarray(rng.normal(size=(n, model.sizes[-1])), dtype)
    else:
        y = jnp.asarray(rng.integers(0, model.sizes[-1], n))
    params = [
        {"w": rng.uniform(-1, 1, (m, k)) * np.sqrt(3 / k), "b": rng.normal(0, 0.1, m)}
        for k, m in zip(model.sizes[:-1], model.sizes[1:], strict=True)
    ]
    x, params = jnp.asarray(x, dtype), jax.tree.map(lambda a: jnp.asarray(a, dtype), params)

    @jax.jit
    def both(params, x, y):
        auto = jax.grad(objective(model, loss))(params, x, y)
        return backprop(model, loss, params, x, y)[1], auto

    hand, auto = jax.device_get(both(params, x, y))
    assert all(g.dtype == dtype for g in jax.tree.leaves(hand))
    gaps = [
        np.max(np.abs(np.float64(h) - np.float64(a))) / np.max(np.abs(np.float64(a)))
        for h, a in zip(jax.tree.leaves(hand), jax.tree.leaves(auto), strict=True)
    ]
    return float(max(gaps))


@pytest.mark.parametrize("dtype", list(PRECISION_BOUNDS))
def test_hand_and_auto_gradients_agree_to_the_documented_bound(dtype):
    gaps = [hand_vs_auto_gap(m, loss, jnp.dtype(dtype)) for m, loss in PRECISION_CASES[::2]]
    assert all(np.isfinite(gaps)), gaps
    assert max(gaps) <= PRECISION_BOUNDS[dtype], (dtype, gaps)
