"""Loss-landscape directions and sweeps: normalisation, exactness, invariance, resume.

Invariance claims tested bit for bit (``np.testing.assert_array_equal``):
chunk size, device count (8 simulated CPU devices, in a subprocess) and
interrupt-and-resume, for the generic path and for the MLP fast path
(:func:`landscape.mlp_loss`). Comparisons with a direct evaluation of ``f`` at
a point, and of the fast path with the generic one, are to float rounding,
since the sweep computes ``θ + α d1 + β d2`` (or ``x wᵀ + α x D1ᵀ + β x D2ᵀ``)
inside a compiled program where XLA may fuse it differently.
"""

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import MLP, landscape, objective, train

MODEL = MLP((2, 8, 8, 1), activation="tanh")
LOSS = objective(MODEL, "mse")  # one f for the module: the sweep compiles once per (f, shapes)
CLF = functools.partial(train.evaluate, MODEL, "sigmoid_binary_cross_entropy")
FAST = landscape.mlp_loss(MODEL, "mse")
FAST_CLF = landscape.mlp_loss(MODEL, "sigmoid_binary_cross_entropy", accuracy=True)


def quadratic(params):
    """Σ θ², exact in float64 for small integer-valued inputs."""
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(params))


@pytest.fixture(scope="module")
def setup():
    """float64 params, two filter-normalised directions and regression/classification data."""
    keys = jax.random.split(jax.random.key(42), 6)
    params = MODEL.init(keys[0], scheme="normal", dtype=jnp.float64)
    d1 = landscape.filter_normalized_direction(keys[1], params)
    d2 = landscape.filter_normalized_direction(keys[2], params)
    x = jax.random.normal(keys[3], (32, 2), jnp.float64)
    y = jax.random.normal(keys[4], (32, 1), jnp.float64)
    labels = (x[:, :1] * x[:, 1:] > 0).astype(jnp.float64)
    return params, d1, d2, x, y, labels


@pytest.fixture(scope="module")
def setup32():
    """The same in float32 (the library's default precision)."""
    keys = jax.random.split(jax.random.key(7), 5)
    params = MODEL.init(keys[0], dtype=jnp.float32)
    d1 = landscape.filter_normalized_direction(keys[1], params)
    d2 = landscape.filter_normalized_direction(keys[2], params)
    x = jax.random.normal(keys[3], (32, 2), jnp.float32)
    y = jax.random.normal(keys[4], (32, 1), jnp.float32)
    return params, d1, d2, x, y


def integer_problem():
    """θ and d with small integer entries: every θ + α d and Σ θ² below is exact."""
    rng = np.random.default_rng(0)
    params = [
        {"w": rng.integers(-3, 4, (3, 2)).astype(np.float64), "b": np.arange(3.0)},
        {"w": rng.integers(-3, 4, (1, 3)).astype(np.float64), "b": np.array([1.0])},
    ]
    d1 = jax.tree.map(lambda p: np.asarray(rng.integers(-2, 3, p.shape), np.float64), params)
    d2 = jax.tree.map(lambda p: np.asarray(rng.integers(-2, 3, p.shape), np.float64), params)
    to_jax = functools.partial(jax.tree.map, jnp.asarray)
    return to_jax(params), to_jax(d1), to_jax(d2), params, d1, d2


def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


# ---------------------------------------------------------------- directions


def test_random_direction_is_keyed_and_shaped_like_params(setup32):
    params = setup32[0]
    a = landscape.random_direction(jax.random.key(1), params)
    b = landscape.random_direction(jax.random.key(1), params)
    c = landscape.random_direction(jax.random.key(2), params)
    assert jax.tree.map(lambda u: (u.shape, u.dtype), a) == jax.tree.map(
        lambda u: (u.shape, u.dtype), params
    )
    np.testing.assert_array_equal(flat(a), flat(b))
    assert not np.array_equal(flat(a), flat(c))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_filter_normalisation_gives_rows_the_norms_of_theta(dtype):
    params = MODEL.init(jax.random.key(3), scheme="normal", dtype=dtype)
    d = landscape.filter_normalized_direction(jax.random.key(4), params)
    rtol = 1e-5 if dtype == jnp.float32 else 1e-12
    for dl, pl in zip(d, params, strict=True):
        assert dl["w"].dtype == dtype
        np.testing.assert_allclose(
            np.linalg.norm(dl["w"], axis=1), np.linalg.norm(pl["w"], axis=1), rtol=rtol
        )
        np.testing.assert_array_equal(dl["b"], 0.0)


def test_filter_normalisation_with_bias_normalises_the_augmented_rows(setup):
    params = setup[0]
    raw = landscape.random_direction(jax.random.key(5), params)
    d = landscape.normalize_direction(raw, params, include_bias=True)
    for dl, pl, rl in zip(d, params, raw, strict=True):
        aug = np.concatenate([dl["w"], dl["b"][:, None]], axis=1)
        ref = np.concatenate([pl["w"], pl["b"][:, None]], axis=1)
        np.testing.assert_allclose(np.linalg.norm(aug, axis=1), np.linalg.norm(ref, axis=1))
        # each row is a positive multiple of the raw direction's row
        raw_aug = np.concatenate([rl["w"], rl["b"][:, None]], axis=1)
        ratio = aug / raw_aug
        np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-12)
        assert np.all(ratio > 0)


def test_layer_and_none_normalisation(setup):
    params = setup[0]
    raw = landscape.random_direction(jax.random.key(6), params)
    layer = landscape.normalize_direction(raw, params, norm="layer", include_bias=True)
    for dl, pl in zip(layer, params, strict=True):
        for k in ("w", "b"):
            np.testing.assert_allclose(np.linalg.norm(dl[k]), np.linalg.norm(pl[k]), rtol=1e-12)
    none = landscape.normalize_direction(raw, params, norm="none")
    for dl, rl in zip(none, raw, strict=True):
        np.testing.assert_array_equal(dl["w"], rl["w"])
        np.testing.assert_array_equal(dl["b"], 0.0)
    kept = landscape.normalize_direction(raw, params, norm="none", include_bias=True)
    np.testing.assert_array_equal(flat(kept), flat(raw))


def test_a_zero_row_of_theta_gives_a_zero_direction_row():
    params = [{"w": jnp.array([[0.0, 0.0], [3.0, 4.0]]), "b": jnp.zeros(2)}]
    d = landscape.normalize_direction([{"w": jnp.ones((2, 2)), "b": jnp.ones(2)}], params)
    np.testing.assert_allclose(d[0]["w"], [[0.0, 0.0], [5 / np.sqrt(2)] * 2])


def test_orthogonalize_reports_the_cosine_and_removes_it(setup):
    _, d1, d2, *_ = setup
    d2_tilted = jax.tree.map(lambda a, b: b + 0.5 * a, d1, d2)
    v1, v2 = flat(d1), flat(d2_tilted)
    expected_cos = v1 @ v2 / np.linalg.norm(v1) / np.linalg.norm(v2)
    out1, out2, cos = landscape.orthogonalize(d1, d2_tilted)
    assert isinstance(cos, float)
    np.testing.assert_allclose(cos, expected_cos, rtol=1e-12)
    w = flat(out2)
    assert abs(v1 @ w) / np.linalg.norm(v1) / np.linalg.norm(w) < 1e-12
    np.testing.assert_allclose(np.linalg.norm(w), np.linalg.norm(v2), rtol=1e-12)
    np.testing.assert_array_equal(flat(out1), v1)
    with pytest.raises(ValueError, match="d2: expected a direction not parallel to d1"):
        landscape.orthogonalize(d1, jax.tree.map(lambda a: 2 * a, d1))


def test_interpolation_sweep_ends_at_both_solutions(setup):
    params_a, d1, _, x, y, _ = setup
    params_b = jax.tree.map(lambda p, d: p + d, params_a, d1)
    d = landscape.interpolation_direction(params_a, params_b)
    alphas = np.array([0.0, 0.5, 1.0])
    values = landscape.sweep_1d(LOSS, params_a, d, alphas, x, y, vmap_width=2)
    assert values.shape == (3,) and values.dtype == np.float64
    np.testing.assert_allclose(values[0], LOSS(params_a, x, y), rtol=1e-13)
    np.testing.assert_allclose(values[2], LOSS(params_b, x, y), rtol=1e-13)


def test_pca_directions_recover_a_planar_trajectory():
    rng = np.random.default_rng(1)
    final = [{"w": rng.normal(size=(4, 3)), "b": rng.normal(size=4)}]
    u, v = rng.normal(size=16), rng.normal(size=16)
    a = np.linspace(2.0, 0.0, 7)
    b = np.sin(np.linspace(0.0, 3.0, 7)) - np.sin(3.0)

    def unflat(vec):
        return [{"w": jnp.asarray(vec[:12].reshape(4, 3)), "b": jnp.asarray(vec[12:])}]

    traj = [unflat(flat(final) + ai * u + bi * v) for ai, bi in zip(a, b, strict=True)]
    res = landscape.pca_directions(traj)
    basis = np.stack([flat(dj) for dj in res.directions])
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-12)
    assert res.coords.shape == (7, 2)
    np.testing.assert_allclose(res.coords[-1], 0.0, atol=1e-12)
    rel = np.stack([flat(p) - flat(traj[-1]) for p in traj])
    np.testing.assert_allclose(res.coords, rel @ basis.T, atol=1e-12)
    np.testing.assert_allclose(res.coords @ basis, rel, atol=1e-10)  # the path lies in the plane
    np.testing.assert_allclose(res.explained_variance_ratio.sum(), 1.0, rtol=1e-12)
    assert res.explained_variance_ratio[0] >= res.explained_variance_ratio[1]
    with pytest.raises(ValueError, match=r"trajectory: expected at least k \+ 2 = 4"):
        landscape.pca_directions(traj[:3])


# ---------------------------------------------------------------- sweeps


def test_quadratic_gives_the_exact_parabola_and_paraboloid():
    params, d1, d2, p_np, d1_np, d2_np = integer_problem()
    alphas = np.arange(-2.0, 2.01, 0.25)
    betas = np.arange(-1.0, 1.01, 0.5)
    got_1d = landscape.sweep_1d(quadratic, params, d1, alphas, chunk_size=4, vmap_width=2)
    pp, dd, pd = flat(p_np) @ flat(p_np), flat(d1_np) @ flat(d1_np), flat(p_np) @ flat(d1_np)
    np.testing.assert_array_equal(got_1d, pp + 2 * alphas * pd + alphas**2 * dd)

    got_2d = landscape.sweep_2d(quadratic, params, d1, d2, alphas, betas, vmap_width=2)
    pts = flat(p_np) + alphas[:, None, None] * flat(d1_np) + betas[None, :, None] * flat(d2_np)
    np.testing.assert_array_equal(got_2d, np.sum(pts**2, axis=-1))


def test_sweep_2d_equals_a_loop_over_points_and_records_loss_and_accuracy(setup):
    params, d1, d2, x, _, labels = setup
    alphas, betas = np.linspace(-1.0, 1.0, 5), np.linspace(-0.5, 0.5, 3)
    got = landscape.sweep_2d(CLF, params, d1, d2, alphas, betas, x, labels, vmap_width=2)
    assert set(got) == {"loss", "accuracy"}
    assert got["loss"].shape == got["accuracy"].shape == (5, 3)
    assert got["loss"].dtype == np.float64
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            point = jax.tree.map(lambda p, u, v: p + a * u + b * v, params, d1, d2)  # noqa: B023
            want = train.evaluate(MODEL, "sigmoid_binary_cross_entropy", point, x, labels)
            np.testing.assert_allclose(got["loss"][i, j], want["loss"], rtol=1e-12)
            np.testing.assert_allclose(got["accuracy"][i, j], want["accuracy"], rtol=1e-12)
    centre = train.evaluate(MODEL, "sigmoid_binary_cross_entropy", params, x, labels)
    np.testing.assert_allclose(got["loss"][2, 1], centre["loss"], rtol=1e-13)


def test_chunk_size_does_not_change_a_bit(setup32, compilations):
    params, d1, d2, x, y = setup32
    alphas, betas = np.linspace(-1, 1, 7), np.linspace(-1, 1, 5)
    results = [
        landscape.sweep_2d(LOSS, params, d1, d2, alphas, betas, x, y, chunk_size=c, vmap_width=2)
        for c in (2, 6, 36)
    ]
    assert results[0].dtype == np.float32
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    before = compilations.count
    landscape.sweep_2d(LOSS, params, d1, d2, alphas + 0.5, betas, x, y, chunk_size=6, vmap_width=2)
    assert compilations.count == before  # new grid values, same chunk shape: nothing recompiles


def test_a_sweep_compiles_once_for_all_its_chunks(setup32, compilations):
    params, d1, _, x, y = setup32
    landscape.sweep_1d(LOSS, params, d1, np.linspace(-1, 1, 3), x, y, chunk_size=4, vmap_width=2)
    f = objective(MODEL, "mse")  # a new f: the chunk program compiles again, once
    before = compilations.count
    landscape.sweep_1d(f, params, d1, np.linspace(-1, 1, 11), x, y, chunk_size=4, vmap_width=2)
    assert compilations.count - before == 1  # 3 chunks, the last one padded


def test_interrupted_sweep_resumes_to_the_uninterrupted_result(setup32, tmp_path):
    params, d1, d2, x, y = setup32
    alphas, betas = np.linspace(-1, 1, 6), np.linspace(-1, 1, 4)
    kw = dict(chunk_size=4, vmap_width=2)
    full = landscape.sweep_2d(LOSS, params, d1, d2, alphas, betas, x, y, **kw)

    seen = []
    part = landscape.sweep_2d(
        LOSS,
        params,
        d1,
        d2,
        alphas,
        betas,
        x,
        y,
        out=tmp_path,
        max_chunks=2,
        callback=lambda done, total: seen.append((done, total)),
        **kw,
    )
    assert seen == [(4, 24), (8, 24)]
    assert np.isnan(part).sum() == 16
    with np.load(tmp_path / landscape.GRID_FILE) as npz:
        assert npz["done"].shape == (6, 4) and npz["done"].sum() == 8
        np.testing.assert_array_equal(npz["alphas"], alphas)
        np.testing.assert_array_equal(npz["values"][npz["done"]], full[npz["done"]])

    # resumed with another chunk size: only the 16 missing points are computed
    resumed = landscape.sweep_2d(
        LOSS, params, d1, d2, alphas, betas, x, y, out=tmp_path, chunk_size=6, vmap_width=2
    )
    np.testing.assert_array_equal(resumed, full)
    meta = json.loads((tmp_path / landscape.META_FILE).read_text())
    assert [c["points_computed"] for c in meta["calls"]] == [8, 16]
    assert meta["points_done"] == meta["points_total"] == 24
    again = landscape.sweep_2d(LOSS, params, d1, d2, alphas, betas, x, y, out=tmp_path)
    np.testing.assert_array_equal(again, full)  # vmap_width taken from the directory
    meta = json.loads((tmp_path / landscape.META_FILE).read_text())
    assert meta["calls"][-1]["points_computed"] == 0


def test_resume_refuses_a_different_sweep(setup32, tmp_path):
    params, d1, d2, x, y = setup32
    alphas, betas = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    kw = dict(vmap_width=2, out=tmp_path)
    landscape.sweep_2d(LOSS, params, d1, d2, alphas, betas, x, y, max_chunks=1, **kw)
    with pytest.raises(ValueError, match=r"different sweep \(differs in: grid\)"):
        landscape.sweep_2d(LOSS, params, d1, d2, alphas * 2, betas, x, y, **kw)
    with pytest.raises(ValueError, match=r"differs in: directions"):
        landscape.sweep_2d(LOSS, params, d2, d1, alphas, betas, x, y, **kw)
    with pytest.raises(ValueError, match=r"differs in: args"):
        landscape.sweep_2d(LOSS, params, d1, d2, alphas, betas, x, y + 1, **kw)
    with pytest.raises(ValueError, match=r"differs in: .*vmap_width"):
        landscape.sweep_2d(LOSS, params, d1, d2, alphas, betas, x, y, vmap_width=4, out=tmp_path)


KILLED_SCRIPT = """
import os, signal, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from gdjax import MLP, landscape, objective
loss = objective(MLP((2, 8, 8, 1), activation="tanh"), "mse")
with np.load(sys.argv[1]) as z:
    a = {k: z[k] for k in z.files}
params = [{"w": a["w0"], "b": a["b0"]}, {"w": a["w1"], "b": a["b1"]}, {"w": a["w2"], "b": a["b2"]}]
d1 = [{"w": a[f"d1w{i}"], "b": a[f"d1b{i}"]} for i in range(3)]
d2 = [{"w": a[f"d2w{i}"], "b": a[f"d2b{i}"]} for i in range(3)]

def die(done, total):
    if done >= 8:
        os.kill(os.getpid(), signal.SIGKILL)

landscape.sweep_2d(loss, params, d1, d2, a["alphas"], a["betas"], a["x"], a["y"],
                   chunk_size=4, vmap_width=2, out=sys.argv[2], callback=die)
"""


def _save_problem(path, params, d1, d2, x, y, alphas, betas):
    arrays = {"x": x, "y": y, "alphas": alphas, "betas": betas}
    for i in range(3):
        arrays.update({f"w{i}": params[i]["w"], f"b{i}": params[i]["b"]})
        arrays.update({f"d1w{i}": d1[i]["w"], f"d1b{i}": d1[i]["b"]})
        arrays.update({f"d2w{i}": d2[i]["w"], f"d2b{i}": d2[i]["b"]})
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def _run(script, *argv, devices=1):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, argv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_killed_sweep_resumes_without_recomputing(setup32, tmp_path):
    params, d1, d2, x, y = setup32
    alphas, betas = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    problem, out = tmp_path / "problem.npz", tmp_path / "sweep"
    _save_problem(problem, params, d1, d2, x, y, alphas, betas)
    proc = _run(KILLED_SCRIPT, problem, out)
    assert proc.returncode == -9, proc.stderr

    with np.load(problem) as z:  # the arrays exactly as the killed process read them
        a = {k: z[k] for k in z.files}
    p = [{"w": a[f"w{i}"], "b": a[f"b{i}"]} for i in range(3)]
    e1 = [{"w": a[f"d1w{i}"], "b": a[f"d1b{i}"]} for i in range(3)]
    e2 = [{"w": a[f"d2w{i}"], "b": a[f"d2b{i}"]} for i in range(3)]
    args = (p, e1, e2, alphas, betas, a["x"], a["y"])
    with np.load(out / landscape.GRID_FILE) as npz:
        assert npz["done"].sum() == 8  # two chunks were stored before the kill
    resumed = landscape.sweep_2d(LOSS, *args, chunk_size=4, vmap_width=2, out=out)
    full = landscape.sweep_2d(LOSS, *args, chunk_size=4, vmap_width=2)
    np.testing.assert_array_equal(resumed, full)
    meta = json.loads((out / landscape.META_FILE).read_text())
    assert [c["points_computed"] for c in meta["calls"]] == [8, 12]


DEVICES_SCRIPT = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from gdjax import MLP, landscape, objective
assert len(jax.devices()) == 8, jax.devices()
model = MLP((2, 8, 8, 1), activation="tanh")
loss = objective(model, "mse")
with np.load(sys.argv[1]) as z:
    a = {k: z[k] for k in z.files}
params = [{"w": a[f"w{i}"], "b": a[f"b{i}"]} for i in range(3)]
d1 = [{"w": a[f"d1w{i}"], "b": a[f"d1b{i}"]} for i in range(3)]
d2 = [{"w": a[f"d2w{i}"], "b": a[f"d2b{i}"]} for i in range(3)]
args = (params, d1, d2, a["alphas"], a["betas"], a["x"], a["y"])
fresh = landscape.sweep_2d(loss, *args, chunk_size=8, vmap_width=2)
resumed = landscape.sweep_2d(loss, *args, chunk_size=8, vmap_width=2, out=sys.argv[2])
fast = landscape.sweep_2d(landscape.mlp_loss(model, "mse"), *args, chunk_size=8, vmap_width=2)
np.savez(sys.argv[3], fresh=fresh, resumed=resumed, fast=fast)
"""


def test_eight_devices_give_the_single_device_result_bit_for_bit(setup32, tmp_path):
    params, d1, d2, x, y = setup32
    alphas, betas = np.linspace(-1, 1, 7), np.linspace(-1, 1, 6)
    problem, out, result = tmp_path / "problem.npz", tmp_path / "sweep", tmp_path / "result.npz"
    _save_problem(problem, params, d1, d2, x, y, alphas, betas)
    with np.load(problem) as z:
        a = {k: z[k] for k in z.files}
    p = [{"w": a[f"w{i}"], "b": a[f"b{i}"]} for i in range(3)]
    e1 = [{"w": a[f"d1w{i}"], "b": a[f"d1b{i}"]} for i in range(3)]
    e2 = [{"w": a[f"d2w{i}"], "b": a[f"d2b{i}"]} for i in range(3)]
    args = (p, e1, e2, alphas, betas, a["x"], a["y"])
    single = landscape.sweep_2d(LOSS, *args, chunk_size=2, vmap_width=2)
    single_fast = landscape.sweep_2d(FAST, *args, chunk_size=2, vmap_width=2)
    # start on 1 device, finish on 8
    landscape.sweep_2d(LOSS, *args, chunk_size=2, vmap_width=2, out=out, max_chunks=3)

    proc = _run(DEVICES_SCRIPT, problem, out, result, devices=8)
    assert proc.returncode == 0, proc.stderr
    with np.load(result) as r:
        np.testing.assert_array_equal(r["fresh"], single)
        np.testing.assert_array_equal(r["resumed"], single)
        np.testing.assert_array_equal(r["fast"], single_fast)
    meta = json.loads((out / landscape.META_FILE).read_text())
    assert [(c["devices"], c["points_computed"]) for c in meta["calls"]] == [(1, 6), (8, 36)]
    assert [c["chunk_size"] for c in meta["calls"]] == [2, 16]  # 8 rounded up to 8 × 2


def test_progress_bar_counts_points(setup32, capsys):
    params, d1, _, x, y = setup32
    landscape.sweep_1d(LOSS, params, d1, np.linspace(-1, 1, 5), x, y, vmap_width=2, progress=True)
    err = capsys.readouterr().err
    assert "sweep 1d" in err and "5/5" in err


# ---------------------------------------------------------------- Hessian directions


def test_sweep_along_the_top_hessian_eigenvector_has_curvature_lambda_max(setup):
    params, _, _, x, y, _ = setup
    hd = landscape.hessian_directions(LOSS, params, x, y, k=2, key=jax.random.key(3))
    assert hd.converged and hd.eigenvalues.shape == (2,)
    assert hd.eigenvalues[0] >= hd.eigenvalues[1]
    basis = np.stack([flat(v) for v in hd.directions])
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-10)
    assert all(b[np.argmax(np.abs(b))] > 0 for b in basis)  # sign convention
    # f(θ + α v) = f(θ) + α g·v + ½ λ α² + O(α³): the second difference is λ + O(h²)
    h = 1e-3
    for v, lam in zip(hd.directions, hd.eigenvalues, strict=True):
        g = landscape.sweep_1d(LOSS, params, v, [-h, 0.0, h], x, y, vmap_width=2)
        np.testing.assert_allclose((g[0] - 2 * g[1] + g[2]) / h**2, lam, rtol=1e-5)
    # and the whole 1-D sweep near 0 is that parabola
    alphas = np.linspace(-0.01, 0.01, 9)
    v, lam = hd.directions[0], hd.eigenvalues[0]
    g = landscape.sweep_1d(LOSS, params, v, alphas, x, y, vmap_width=2)
    slope = flat(jax.grad(LOSS)(params, x, y)) @ flat(v)
    parabola = g[4] + slope * alphas + 0.5 * lam * alphas**2
    np.testing.assert_allclose(g, parabola, rtol=0, atol=1e-6 * abs(lam))


# ---------------------------------------------------------------- the MLP fast path


@pytest.mark.parametrize(("precision", "rtol"), [("float64", 1e-12), ("float32", 2e-6)])
def test_mlp_fast_path_equals_the_generic_sweep_to_rounding(setup, setup32, precision, rtol):
    if precision == "float64":
        params, d1, d2, x, y, _ = setup
    else:
        params, d1, d2, x, y = setup32
    alphas, betas = np.linspace(-1, 1, 6), np.linspace(-0.5, 0.5, 5)
    generic = landscape.sweep_2d(LOSS, params, d1, d2, alphas, betas, x, y, vmap_width=2)
    fast = landscape.sweep_2d(FAST, params, d1, d2, alphas, betas, x, y, vmap_width=2)
    assert fast.dtype == generic.dtype == np.dtype(precision)
    np.testing.assert_allclose(fast, generic, rtol=rtol)
    along = landscape.sweep_1d(FAST, params, d1, alphas, x, y, vmap_width=2)
    np.testing.assert_allclose(along, landscape.sweep_1d(LOSS, params, d1, alphas, x, y), rtol=rtol)
    np.testing.assert_allclose(FAST(params, x, y), LOSS(params, x, y), rtol=rtol)


def test_mlp_fast_path_reports_loss_and_accuracy_like_evaluate(setup):
    params, d1, d2, x, _, labels = setup
    alphas, betas = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    generic = landscape.sweep_2d(CLF, params, d1, d2, alphas, betas, x, labels, vmap_width=2)
    fast = landscape.sweep_2d(FAST_CLF, params, d1, d2, alphas, betas, x, labels, vmap_width=2)
    assert set(fast) == {"loss", "accuracy"}
    np.testing.assert_allclose(fast["loss"], generic["loss"], rtol=1e-12)
    # a prediction exactly at the decision boundary could flip with rounding: one example
    np.testing.assert_allclose(fast["accuracy"], generic["accuracy"], atol=1 / len(x))


def test_mlp_fast_path_is_bitwise_invariant_to_chunk_size(setup32, compilations):
    params, d1, d2, x, y = setup32
    alphas, betas = np.linspace(-1, 1, 7), np.linspace(-1, 1, 5)
    results = [
        landscape.sweep_2d(FAST, params, d1, d2, alphas, betas, x, y, chunk_size=c, vmap_width=2)
        for c in (2, 6, 36)
    ]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    before = compilations.count
    landscape.sweep_2d(FAST, params, d1, d2, alphas - 0.5, betas, x, y, chunk_size=6, vmap_width=2)
    assert compilations.count == before


def test_fast_and_generic_sweeps_do_not_share_a_directory(setup32, tmp_path):
    params, d1, d2, x, y = setup32
    alphas, betas = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    kw = dict(vmap_width=2, out=tmp_path)
    landscape.sweep_2d(FAST, params, d1, d2, alphas, betas, x, y, max_chunks=1, **kw)
    with pytest.raises(ValueError, match=r"differs in: f\b"):
        landscape.sweep_2d(LOSS, params, d1, d2, alphas, betas, x, y, **kw)
    other = landscape.mlp_loss(MLP((2, 8, 8, 1), activation="sigmoid"), "mse")
    with pytest.raises(ValueError, match=r"differs in: f\b"):
        landscape.sweep_2d(other, params, d1, d2, alphas, betas, x, y, **kw)


def test_mlp_loss_input_errors(setup32):
    params, d1, d2, x, y = setup32
    with pytest.raises(ValueError, match="model: expected a gdjax.MLP"):
        landscape.mlp_loss(LOSS, "mse")
    with pytest.raises(ValueError, match="loss: expected one of"):
        landscape.mlp_loss(MODEL, "hinge")
    with pytest.raises(ValueError, match=r"expected the two arguments x, y after the grid, got 1"):
        landscape.sweep_1d(FAST, params, d1, [0.0, 1.0], x)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 2\)"):
        landscape.sweep_1d(FAST, params, d1, [0.0, 1.0], x[:, :1], y)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(d2="drop_layer"), r"d2: expected a pytree with the structure of params"),
        (dict(d2="transpose"), r"d2\[0\]\['w'\]: expected shape \(8, 2\) like params"),
        (dict(alphas=[[0.0, 1.0]]), r"alphas: expected a 1-D array of at least 2"),
        (dict(alphas=[0.0]), r"alphas: expected a 1-D array of at least 2"),
        (dict(alphas=[0.0, np.nan]), r"alphas: expected finite values"),
        (dict(betas=[1.0, 1.0]), r"betas: expected strictly increasing values"),
        (dict(chunk_size=0), r"chunk_size: expected a positive integer, got 0"),
        (dict(f=lambda p, x, y: p[0]["b"]), r"f: expected f\(params, \*args\) to return"),
    ],
)
def test_bad_sweep_input_fails_before_compiling(setup32, compilations, change, match):
    params, d1, d2, x, y = setup32
    kw = dict(f=LOSS, d2=d2, alphas=[0.0, 1.0], betas=[0.0, 1.0], chunk_size=None)
    kw.update(change)
    if kw["d2"] == "drop_layer":
        kw["d2"] = d2[:2]
    elif kw["d2"] == "transpose":
        kw["d2"] = [{"w": layer["w"].T, "b": layer["b"]} for layer in d2]
    before = compilations.count
    with pytest.raises(ValueError, match=match):
        landscape.sweep_2d(
            kw["f"],
            params,
            d1,
            kw["d2"],
            kw["alphas"],
            kw["betas"],
            x,
            y,
            chunk_size=kw["chunk_size"],
        )
    assert compilations.count == before


def test_bad_direction_input(setup32):
    params = setup32[0]
    d = landscape.random_direction(jax.random.key(0), params)
    with pytest.raises(ValueError, match=r"norm: expected one of 'filter', 'layer', 'none'"):
        landscape.normalize_direction(d, params, norm="filters")
    with pytest.raises(ValueError, match=r"norm: expected one of"):
        landscape.filter_normalized_direction(jax.random.key(0), params, norm="Filter")
    bad = [dict(layer) for layer in d]
    bad[2] = {"w": bad[2]["w"], "b": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"direction\[2\]\['b'\]: expected shape \(1,\)"):
        landscape.normalize_direction(bad, params)
    with pytest.raises(ValueError, match=r"params_b: expected a pytree with the structure"):
        landscape.interpolation_direction(params, params[:1])
    with pytest.raises(ValueError, match=r"d1: expected a non-zero direction"):
        landscape.orthogonalize(jax.tree.map(jnp.zeros_like, d), d)
