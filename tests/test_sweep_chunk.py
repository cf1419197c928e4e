"""Sweeps with data_chunk: each point is the mean of f over chunks of the data.

Chunked sweeps equal the unchunked ones to 1e-12 in float64 (the same sum in
another order) for chunk sizes that do and do not divide n, on 1-D and 2-D
grids, for scalar and dict outputs, through the MLP fast path and a generic
plain-JAX conv net. Chunked sweeps keep the sweep's other invariances bit
for bit (devices, resume), compile once, and refuse a bad data_chunk before
anything compiles.
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
from helpers import conv_apply

from gdjax import MLP, landscape, objective

N = 24  # 6 divides it, 5 does not
MODEL = MLP((3, 6, 5, 2), activation="tanh")
LOSS = "softmax_cross_entropy"
# One object per f for the module: sweeps compile once per (f, shapes, data_chunk).
GENERIC = objective(MODEL, LOSS)
FAST = landscape.mlp_loss(MODEL, LOSS)
FAST_CLF = landscape.mlp_loss(MODEL, LOSS, accuracy=True)


CONV = landscape.model_loss(conv_apply, LOSS)
CONV_CLF = landscape.model_loss(conv_apply, LOSS, accuracy=True)


def _directions(params, seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return (
        landscape.filter_normalized_direction(k1, params, include_bias=True),
        landscape.filter_normalized_direction(k2, params, include_bias=True),
    )


@pytest.fixture(scope="module")
def mlp():
    """float64 MLP params, two directions, N examples of 3 features, 2 classes."""
    keys = jax.random.split(jax.random.key(0), 3)
    params = MODEL.init(keys[0], scheme="normal", dtype=jnp.float64)
    x = jax.random.normal(keys[1], (N, 3), jnp.float64)
    y = jax.random.randint(keys[2], (N,), 0, 2)
    return (params, *_directions(params, 1), x, y)


@pytest.fixture(scope="module")
def conv():
    """float64 conv-net params (a 3-D kernel (4, 1, 3)), two directions, N signals of length 8."""
    keys = jax.random.split(jax.random.key(2), 4)
    params = {
        "conv": {
            "w": 0.5 * jax.random.normal(keys[0], (3, 1, 3), jnp.float64),
            "b": 0.1 * jax.random.normal(keys[1], (3,), jnp.float64),
        },
        "dense": {
            "w": 0.3 * jax.random.normal(keys[2], (3, 18), jnp.float64),
            "b": jnp.zeros((3,), jnp.float64),
        },
    }
    x = jax.random.normal(keys[3], (N, 8), jnp.float64)
    y = jnp.arange(N) % 3
    return (params, *_directions(params, 3), x, y)


ALPHAS, BETAS = np.linspace(-1.0, 1.0, 5), np.linspace(-0.5, 0.5, 3)


def sweep(kind, f, problem, **kw):
    params, d1, d2, x, y = problem
    if kind == "1d":
        return landscape.sweep_1d(f, params, d1, ALPHAS, x, y, vmap_width=2, **kw)
    return landscape.sweep_2d(f, params, d1, d2, ALPHAS, BETAS, x, y, vmap_width=2, **kw)


def assert_equal_to_1e12(got, want):
    """Float64 values to 1e-12; an accuracy (float32 even under x64: gdjax.metrics takes
    the mean of booleans) counts the same examples, its value to the float32 ulp."""
    got, want = (v if isinstance(v, dict) else {"loss": v} for v in (got, want))
    assert set(got) == set(want)
    assert got["loss"].dtype == want["loss"].dtype == np.float64
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-12, atol=1e-15)
    if "accuracy" in got:
        assert got["accuracy"].dtype == want["accuracy"].dtype
        np.testing.assert_array_equal(np.round(got["accuracy"] * N), np.round(want["accuracy"] * N))
        np.testing.assert_allclose(got["accuracy"], want["accuracy"], rtol=2**-23, atol=0)


# ---------------------------------------------------------------- values

CASES = {  # f, its problem, whether it returns {"loss", "accuracy"}
    "generic MLP": (GENERIC, "mlp", False),
    "MLP fast path": (FAST, "mlp", False),
    "MLP fast path, loss and accuracy": (FAST_CLF, "mlp", True),
    "conv net": (CONV, "conv", False),
    "conv net, loss and accuracy": (CONV_CLF, "conv", True),
}


@pytest.mark.parametrize("kind", ["1d", "2d"])
@pytest.mark.parametrize("case", list(CASES))
def test_chunked_sweep_equals_the_unchunked_one(case, kind, request):
    f, problem_name, is_dict = CASES[case]
    problem = request.getfixturevalue(problem_name)
    want = sweep(kind, f, problem)
    assert isinstance(want, dict) == is_dict
    if is_dict:
        assert set(want) == {"loss", "accuracy"}
    for chunk in (5, 6):  # does not divide N, divides it
        assert_equal_to_1e12(sweep(kind, f, problem, data_chunk=chunk), want)


@pytest.mark.parametrize("chunk", [1, N, 100])
def test_chunks_of_one_example_and_of_all_of_them(mlp, chunk):
    want = sweep("2d", FAST_CLF, mlp)
    assert_equal_to_1e12(sweep("2d", FAST_CLF, mlp, data_chunk=chunk), want)


def test_the_centre_of_a_chunked_sweep_is_f_on_all_the_data(conv):
    params, d1, _, x, y = conv
    got = landscape.sweep_1d(CONV_CLF, params, d1, [-1.0, 0.0, 1.0], x, y, data_chunk=5)
    want = CONV_CLF(params, x, y)
    np.testing.assert_allclose(got["loss"][1], want["loss"], rtol=1e-12)
    np.testing.assert_allclose(got["accuracy"][1], want["accuracy"], rtol=1e-12)
    plain = objective(conv_apply, LOSS)(params, x, y)
    np.testing.assert_allclose(got["loss"][1], plain, rtol=1e-12)


def test_float32_chunked_sweep_is_the_unchunked_one_to_rounding(mlp):
    params, d1, d2, x, y = jax.tree.map(
        lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, mlp
    )
    want = landscape.sweep_2d(FAST, params, d1, d2, ALPHAS, BETAS, x, y, vmap_width=2)
    got = landscape.sweep_2d(FAST, params, d1, d2, ALPHAS, BETAS, x, y, vmap_width=2, data_chunk=5)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6)


# ---------------------------------------------------------------- compilation and memory


def test_a_chunked_sweep_compiles_once(mlp, compilations):
    params, d1, d2, x, y = mlp
    kw = dict(vmap_width=2, data_chunk=5, chunk_size=4)
    landscape.sweep_2d(FAST, params, d1, d2, ALPHAS, BETAS, x, y, **kw)
    landscape.sweep_2d(CONV, *_conv_args(), **kw)
    before = compilations.count
    landscape.sweep_2d(FAST, params, d1, d2, ALPHAS + 0.5, BETAS, x, y, **kw)
    # an equal model_loss (same apply, same loss) reuses the compiled chunk
    landscape.sweep_2d(landscape.model_loss(conv_apply, LOSS), *_conv_args(), **kw)
    assert compilations.count == before


def _conv_args():
    keys = jax.random.split(jax.random.key(5), 3)
    params = {
        "conv": {"w": jax.random.normal(keys[0], (3, 1, 3)), "b": jnp.zeros(3)},
        "dense": {"w": jax.random.normal(keys[1], (3, 18)), "b": jnp.zeros(3)},
    }
    d1, d2 = _directions(params, 6)
    x = jax.random.normal(keys[2], (N, 8))
    return params, d1, d2, ALPHAS, BETAS, x, jnp.arange(N) % 3


@pytest.mark.parametrize("fast", [False, True], ids=["generic", "fast path"])
def test_a_blocks_memory_follows_the_chunk_not_the_data(fast):
    """XLA's own count of the compiled block's temporaries: width × k examples, not width × n."""
    model = MLP((2, 128, 128, 1), activation="tanh")
    params = model.init(jax.random.key(0), dtype=jnp.float64)
    n, width = 4096, 4
    f, p, dirs = objective(model, "mse"), params, [params, params]
    args = (np.zeros((n, 2)), np.zeros((n, 1)))
    if fast:
        f, p, dirs, args = landscape._reduce_mlp(landscape.mlp_loss(model, "mse"), p, dirs, args)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("points",))

    def temp_bytes(data_chunk):
        lowered = landscape._eval_chunk.lower(
            f, mesh, width, data_chunk, p, dirs, np.zeros((2 * width, 2)), args
        )
        return lowered.compile().memory_analysis().temp_size_in_bytes

    hidden = width * n * 128 * 8  # one hidden layer's activations for a block, in bytes
    whole, chunked = temp_bytes(None), temp_bytes(64)
    assert whole >= hidden
    assert chunked < hidden / 8, (whole, chunked)


def test_default_vmap_width_counts_one_chunk_per_point(monkeypatch, compilations):
    monkeypatch.setattr(landscape, "_memory_budget", lambda device: 1 << 28)
    model = MLP((2, 512, 1), activation="tanh")
    params = model.init(jax.random.key(0), dtype=jnp.float64)
    x, y = np.zeros((32768, 2)), np.zeros((32768, 1))  # 32768 × 512 floats: 128 MiB a value
    before = compilations.count
    for f in (objective(model, "mse"), landscape.mlp_loss(model, "mse")):
        whole = landscape.default_vmap_width(f, params, x, y)
        chunked = landscape.default_vmap_width(f, params, x, y, data_chunk=64)
        assert whole == 1 and chunked == landscape.MAX_VMAP_WIDTH, (f, whole, chunked)
    assert compilations.count == before  # tracing only, the fast path's products included


# ---------------------------------------------------------------- resume


def test_a_chunked_sweep_resumes_bit_for_bit_and_refuses_another_data_chunk(mlp, tmp_path):
    params, d1, d2, x, y = mlp
    args = (FAST_CLF, params, d1, d2, ALPHAS, BETAS, x, y)
    kw = dict(vmap_width=2, chunk_size=4, data_chunk=5)
    full = landscape.sweep_2d(*args, **kw)
    part = landscape.sweep_2d(*args, out=tmp_path, max_chunks=2, **kw)
    assert np.isnan(part["loss"]).sum() == 7
    for other in (6, None):
        with pytest.raises(ValueError, match=rf"differs in: data_chunk: 5 → {other}\)"):
            landscape.sweep_2d(*args, out=tmp_path, **{**kw, "data_chunk": other})
    resumed = landscape.sweep_2d(*args, out=tmp_path, **{**kw, "chunk_size": 6})
    for name in ("loss", "accuracy"):
        np.testing.assert_array_equal(resumed[name], full[name])
    meta = json.loads((tmp_path / landscape.META_FILE).read_text())
    assert meta["config"]["data_chunk"] == 5
    assert [c["points_computed"] for c in meta["calls"]] == [8, 7]


def test_an_unchunked_directory_refuses_a_chunked_resume(mlp, tmp_path):
    params, d1, d2, x, y = mlp
    args = (GENERIC, params, d1, d2, ALPHAS, BETAS, x, y)
    landscape.sweep_2d(*args, vmap_width=2, out=tmp_path, max_chunks=1, chunk_size=2)
    with pytest.raises(ValueError, match=r"differs in: data_chunk: None → 4\)"):
        landscape.sweep_2d(*args, vmap_width=2, out=tmp_path, data_chunk=4)


# ---------------------------------------------------------------- devices

DEVICES_SCRIPT = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from gdjax import MLP, landscape, objective
assert len(jax.devices()) == 8, jax.devices()
model = MLP((3, 6, 5, 2), activation="tanh")
with np.load(sys.argv[1]) as z:
    a = {k: z[k] for k in z.files}
tree = lambda p: [{"w": a[f"{p}w{i}"], "b": a[f"{p}b{i}"]} for i in range(3)]
args = (tree(""), tree("d1"), tree("d2"), a["alphas"], a["betas"], a["x"], a["y"])
kw = dict(chunk_size=8, vmap_width=2, data_chunk=5)
loss = objective(model, "softmax_cross_entropy")
generic = landscape.sweep_2d(loss, *args, **kw)
fast = landscape.sweep_2d(
    landscape.mlp_loss(model, "softmax_cross_entropy", accuracy=True), *args, **kw
)
resumed = landscape.sweep_2d(loss, *args, out=sys.argv[2], **kw)
np.savez(sys.argv[3], generic=generic, resumed=resumed, **fast)
"""


def test_eight_devices_give_the_single_device_chunked_result_bit_for_bit(mlp, tmp_path):
    params, d1, d2, x, y = mlp
    arrays = {"alphas": ALPHAS, "betas": BETAS, "x": x, "y": y}
    for prefix, tree in (("", params), ("d1", d1), ("d2", d2)):
        for i, layer in enumerate(tree):
            arrays.update({f"{prefix}w{i}": layer["w"], f"{prefix}b{i}": layer["b"]})
    problem, out, result = tmp_path / "problem.npz", tmp_path / "sweep", tmp_path / "result.npz"
    np.savez(problem, **{k: np.asarray(v) for k, v in arrays.items()})
    args = (GENERIC, params, d1, d2, ALPHAS, BETAS, x, y)
    kw = dict(chunk_size=2, vmap_width=2, data_chunk=5)
    single = landscape.sweep_2d(*args, **kw)
    single_fast = landscape.sweep_2d(FAST_CLF, *args[1:], **kw)
    landscape.sweep_2d(*args, out=out, max_chunks=3, **kw)  # start on 1 device, finish on 8

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    script = textwrap.dedent(DEVICES_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(problem), str(out), str(result)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(result) as r:
        np.testing.assert_array_equal(r["generic"], single)
        np.testing.assert_array_equal(r["resumed"], single)
        np.testing.assert_array_equal(r["loss"], single_fast["loss"])
        np.testing.assert_array_equal(r["accuracy"], single_fast["accuracy"])
    meta = json.loads((out / landscape.META_FILE).read_text())
    assert [(c["devices"], c["points_computed"]) for c in meta["calls"]] == [(1, 6), (8, 9)]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (0, r"data_chunk: expected a positive integer \(examples per chunk\), got 0\."),
        (-3, r"data_chunk: expected a positive integer \(examples per chunk\), got -3\."),
        (2.5, r"data_chunk: expected None or a positive integer .*got 2\.5\."),
        (4.0, r"data_chunk: expected None or a positive integer .*got 4\.0\."),
        (True, r"data_chunk: expected None or a positive integer .*got True\."),
        ("4", r"data_chunk: expected None or a positive integer .*got '4'\."),
    ],
)
@pytest.mark.parametrize("f", [GENERIC, FAST], ids=["generic", "fast"])
def test_bad_data_chunk_is_refused_before_compiling(mlp, f, bad, match, compilations):
    params, d1, d2, x, y = mlp
    before = compilations.count
    with pytest.raises(ValueError, match=match):
        landscape.sweep_1d(f, params, d1, ALPHAS, x, y, data_chunk=bad)
    with pytest.raises(ValueError, match=match):
        landscape.sweep_2d(f, params, d1, d2, ALPHAS, BETAS, x, y, data_chunk=bad)
    with pytest.raises(ValueError, match=match):
        landscape.default_vmap_width(f, params, x, y, data_chunk=bad)
    assert compilations.count == before


def test_data_of_different_lengths_is_refused_naming_each_argument(mlp, compilations):
    params, d1, d2, x, y = mlp
    short = np.asarray(y)[:-1]
    before = compilations.count
    for f in (GENERIC, FAST, lambda p, x, y: GENERIC(p, x, y[: len(x)])):
        with pytest.raises(
            ValueError,
            match=r"data_chunk: expected every data argument to have the same number of "
            r"examples \(rows, axis 0\) to split into chunks, got leading sizes \[23, 24\] "
            r"\(args\[0\]: 24, args\[1\]: 23\)",
        ):
            landscape.sweep_2d(f, params, d1, d2, ALPHAS, BETAS, x, short, data_chunk=4)
    with pytest.raises(ValueError, match=r"got leading sizes \[24, None\].*args\[2\]: a scalar"):
        landscape.sweep_1d(
            lambda p, x, y, t: GENERIC(p, x, y) * t, params, d1, ALPHAS, x, y, 2.0, data_chunk=4
        )
    with pytest.raises(ValueError, match=r"data_chunk: expected data arguments to split"):
        landscape.sweep_1d(lambda p: jnp.sum(p[0]["w"] ** 2), params, d1, ALPHAS, data_chunk=4)
    assert compilations.count == before
