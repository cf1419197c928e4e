"""Curvature over a population: every member's λ_max, trace and Taylor step in one call.

Each member's result is checked against an independent reference (the dense
eigenvalues of ``jax.hessian`` on tiny nets, float64) and against the
single-member function on that member; ``member_chunk`` must not change the
numbers; ``converged`` is checked member by member on a population where one
member cannot converge; the tracker inside ``fit_population`` equals tracking
each member's own run; bad input is refused before anything compiles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gdjax import MLP, curvature, objective
from gdjax.train import fit, fit_population

P = 3
SIZES = (2, 4, 1)  # 17 parameters per member


def stacked(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def member(params, i):
    return jax.tree.map(lambda a: a[i], params)


def dense_eigenvalues(f, params, *args):
    flat, unravel = ravel_pytree(params)
    hessian = jax.jit(jax.hessian(lambda u: f(unravel(u), *args)))(flat)
    return np.linalg.eigvalsh(np.asarray(hessian))[::-1]


@pytest.fixture(scope="module")
def population():
    """A tanh MLP's cost, P members with different params (float64), and a batch."""
    model = MLP(SIZES, activation="tanh")
    keys = jax.random.split(jax.random.key(0), P)
    params = jax.vmap(lambda k: model.init(k, dtype=jnp.float64))(keys)
    params = jax.tree.map(
        lambda a: a * jnp.arange(1.0, P + 1).reshape(-1, *[1] * (a.ndim - 1)), params
    )
    x = jax.random.normal(jax.random.key(1), (16, 2), jnp.float64)
    y = jnp.sin(2 * x[:, :1]) * jnp.cos(x[:, 1:])
    return model, objective(model, "mse"), params, x, y


@pytest.fixture(scope="module")
def eigen(population):
    _, f, params, x, y = population
    return curvature.population_top_eigenvalues(f, params, 2, x, y, key=jax.random.key(3))


# ------------------------------------------------------------------ eigenvalues


def test_every_members_top_eigenvalues_equal_dense_and_single(population, eigen):
    _, f, params, x, y = population
    assert eigen.eigenvalues.shape == (P, 2) and eigen.converged.shape == (P,)
    assert eigen.converged.all()
    for i in range(P):
        p = member(params, i)
        np.testing.assert_allclose(
            eigen.eigenvalues[i], dense_eigenvalues(f, p, x, y)[:2], rtol=1e-8
        )
        single = curvature.top_eigenvalues(f, p, 2, x, y, key=jax.random.key(3))
        assert single.converged
        np.testing.assert_allclose(eigen.eigenvalues[i], single.eigenvalues, rtol=1e-10)
        got = eigen.member(i)
        assert got.converged and got.eigenvalues.shape == (2,) and len(got.eigenvectors) == 2
        # each returned vector is a unit eigenvector of member i's own Hessian
        for lam, v in zip(got.eigenvalues, got.eigenvectors, strict=True):
            hv = curvature.hvp(f, p, v, x, y)
            r = np.linalg.norm(ravel_pytree(hv)[0] - lam * ravel_pytree(v)[0])
            assert r <= 1e-8 * abs(lam)
    # the members differ, so a mix-up of members would show
    assert len(set(np.round(eigen.eigenvalues[:, 0], 6))) == P


def test_member_chunk_does_not_change_the_results(population, eigen):
    _, f, params, x, y = population
    chunked = curvature.population_top_eigenvalues(
        f, params, 2, x, y, key=jax.random.key(3), member_chunk=2
    )
    np.testing.assert_allclose(chunked.eigenvalues, eigen.eigenvalues, rtol=1e-12)
    np.testing.assert_array_equal(chunked.converged, eigen.converged)
    np.testing.assert_array_equal(chunked.hvps, eigen.hvps)
    whole = curvature.population_trace(f, params, x, y, key=jax.random.key(4), samples=8)
    split = curvature.population_trace(
        f, params, x, y, key=jax.random.key(4), samples=8, member_chunk=2
    )
    np.testing.assert_allclose(split.samples, whole.samples, rtol=1e-12)


def _diagonal_population(spectra):
    """C(p) = ½ Σ_j s_j x_j² with s held fixed: H = diag(s, 0), one spectrum per member."""
    s = jnp.asarray(np.stack(spectra))

    def f(p):
        return 0.5 * jnp.sum(jax.lax.stop_gradient(p["s"]) * p["x"] ** 2)

    return f, {"s": s, "x": jnp.ones_like(s)}


def test_converged_is_claimed_per_member_and_only_where_measured():
    # Member 0: λ_max = 10 far above the rest (in [0, 1]): converged within 10 steps.
    # Member 1: 40 evenly spaced eigenvalues in [0, 10], which 10 steps cannot resolve.
    n = 40
    easy = np.concatenate([[10.0], np.linspace(0.0, 1.0, n - 1)])
    hard = np.linspace(0.0, 10.0, n)
    f, params = _diagonal_population([easy, hard])
    eig = curvature.population_top_eigenvalues(f, params, 1, key=jax.random.key(0), max_iters=10)
    assert eig.converged.tolist() == [True, False]
    assert eig.eigenvalues[0, 0] == pytest.approx(10.0, rel=1e-12)
    assert eig.residuals[0, 0] <= 1e-8 * 10.0
    assert eig.residuals[1, 0] > 1e-8 * 10.0  # the reason it is not claimed, measured
    single = curvature.top_eigenvalues(f, member(params, 1), 1, key=jax.random.key(0), max_iters=10)
    assert not single.converged
    # Given enough steps, the same member converges, to the true value.
    more = curvature.population_top_eigenvalues(f, params, 1, key=jax.random.key(0), max_iters=80)
    assert more.converged.tolist() == [True, True]
    np.testing.assert_allclose(more.eigenvalues[:, 0], [10.0, 10.0], rtol=1e-10)


def test_smallest_and_warm_start_per_member(population, eigen):
    _, f, params, x, y = population
    low = curvature.population_top_eigenvalues(
        f, params, 1, x, y, key=jax.random.key(5), which="smallest", confirm=False
    )
    for i in range(P):
        assert low.eigenvalues[i, 0] == pytest.approx(
            dense_eigenvalues(f, member(params, i), x, y)[-1], rel=1e-7, abs=1e-9
        )
    top = jax.tree.map(lambda a: a[:, 0], eigen.eigenvectors)
    warm = curvature.population_top_eigenvalues(f, params, 1, x, y, key=jax.random.key(6), init=top)
    assert warm.converged.all()
    np.testing.assert_allclose(warm.eigenvalues[:, 0], eigen.eigenvalues[:, 0], rtol=1e-10)
    # member i started from its own vector, as top_eigenvalues started from it
    single = curvature.top_eigenvalues(
        f, member(params, 1), 1, x, y, key=jax.random.key(6), init=member(top, 1)
    )
    np.testing.assert_allclose(warm.eigenvalues[1], single.eigenvalues, rtol=1e-10)


# ------------------------------------------------------------------ trace


def test_trace_per_member_equals_single_trace_and_the_exact_trace(population):
    _, f, params, x, y = population
    est = curvature.population_trace(f, params, x, y, key=jax.random.key(7), samples=64)
    assert est.samples.shape == (P, 64)
    for i in range(P):
        p = member(params, i)
        single = curvature.trace(f, p, x, y, key=jax.random.key(7), samples=64)
        np.testing.assert_allclose(est.samples[i], single.samples, rtol=1e-12)
        assert est.member(i).estimate == pytest.approx(single.estimate, rel=1e-12)
        exact = dense_eigenvalues(f, p, x, y).sum()
        assert abs(est.estimate[i] - exact) < 5 * est.stderr[i]
    # H = diag(s): every Rademacher sample is exactly tr H
    g, diagonal = _diagonal_population([np.arange(1.0, 5.0), np.arange(2.0, 6.0)])
    exact = curvature.population_trace(g, diagonal, key=jax.random.key(0), samples=4)
    np.testing.assert_allclose(exact.estimate, [10.0, 14.0], rtol=1e-14)
    np.testing.assert_array_equal(exact.stderr, [0.0, 0.0])


# ------------------------------------------------------------------ Taylor


def test_taylor_step_per_member_equals_single_taylor_step(population):
    _, f, params, x, y = population
    etas = [0.01, 0.1, 1.0, 3.0]
    res = curvature.population_taylor_step(f, params, x, y, etas=etas)
    assert res.actual.shape == (P, 4) and res.lambda_max.shape == (P,)
    assert res.lambda_max_converged.all()
    chunked = curvature.population_taylor_step(f, params, x, y, etas=etas, member_chunk=2)
    np.testing.assert_allclose(chunked.actual, res.actual, rtol=1e-12)
    np.testing.assert_allclose(chunked.lambda_max, res.lambda_max, rtol=1e-12)
    for i in range(P):
        single = curvature.taylor_step(f, member(params, i), x, y, etas=etas)
        got = res.member(i)
        for name in ("actual", "first_order", "second_order", "first_order_error"):
            np.testing.assert_allclose(getattr(got, name), getattr(single, name), rtol=1e-10)
        assert got.slope == pytest.approx(single.slope, rel=1e-12)
        assert got.curvature == pytest.approx(single.curvature, rel=1e-12)
        assert got.lambda_max == pytest.approx(single.lambda_max, rel=1e-8)
        assert got.stability_limit == pytest.approx(single.stability_limit, rel=1e-8)
        assert got.eta_threshold == pytest.approx(single.eta_threshold, rel=1e-8, nan_ok=True)


# ------------------------------------------------------------------ tracking


def test_tracker_in_fit_population_equals_tracking_each_member(population, compilations):
    model, _, _, x, y = population
    etas = jnp.array([0.1, 0.5])
    keys = jnp.stack([jax.random.key(2)] * 2)
    init = model.init(jax.random.key(9), dtype=jnp.float64)
    start = stacked([init, init])
    tracker = curvature.track_population_sharpness(
        model, "mse", x, y, key=jax.random.key(0), tol=1e-10
    )
    tracker(0, start)
    result = fit_population(
        model,
        "mse",
        "sgd",
        (x, y),
        epochs=6,
        keys=keys,
        params=start,
        learning_rate=etas,
        eval_every=0,
        callback=tracker,
        callback_every=3,
        progress=False,
    )
    assert tracker.epochs.tolist() == [0, 3, 6]
    assert tracker.sharpness.shape == (3, 2) and tracker.converged.all()
    for i, eta in enumerate(etas.tolist()):
        single = curvature.track_sharpness(model, "mse", x, y, key=jax.random.key(0), tol=1e-10)
        single(0, init)
        own = fit(
            model,
            "mse",
            "sgd",
            (x, y),
            epochs=6,
            key=jax.random.key(2),
            params=init,
            learning_rate=eta,
            eval_every=0,
            callback=single,
            callback_every=3,
            progress=False,
        )
        np.testing.assert_allclose(tracker.sharpness[:, i], single.sharpness, rtol=1e-8)
        np.testing.assert_allclose(
            ravel_pytree(member(result.params, i))[0], ravel_pytree(own.params)[0], rtol=1e-10
        )
    # A further record at new params: same shapes, nothing recompiles.
    compiled = compilations.count
    tracker(7, result.params)
    assert compilations.count == compiled
    assert tracker.sharpness.shape == (4, 2)


# ------------------------------------------------------------------ bad input


def test_bad_input_is_refused_by_name_before_compiling(population, compilations):
    _, f, params, x, y = population
    key = jax.random.key(0)
    scalar_leaf = [{"w": params[0]["w"], "b": jnp.zeros(())}, params[1]]
    ragged = [{"w": params[0]["w"][:2], "b": params[0]["b"]}, params[1]]
    wrong_init = jax.tree.map(lambda a: a[:2], params)
    model = MLP(SIZES, activation="tanh")
    tracker = curvature.track_population_sharpness(model, "mse", x, y, key=key)
    before = compilations.count
    cases = [
        (
            lambda: curvature.population_top_eigenvalues(f, scalar_leaf, 1, x, y, key=key),
            r"params\[0\]\['b'\]: expected a leading member axis",
        ),
        (
            lambda: curvature.population_top_eigenvalues(f, ragged, 1, x, y, key=key),
            r"params\[0\]\['w'\]: expected a leading member axis of size 3",
        ),
        (
            lambda: curvature.population_top_eigenvalues(
                f, params, 1, x, y, key=key, member_chunk=0
            ),
            "member_chunk: expected a positive integer",
        ),
        (
            lambda: curvature.population_trace(f, params, x, y, key=key, member_chunk=True),
            "member_chunk: expected a positive integer",
        ),
        (
            lambda: curvature.population_top_eigenvalues(f, params, 18, x, y, key=key),
            "k: expected at most 17",
        ),
        (
            lambda: curvature.population_top_eigenvalues(
                f, params, 1, x, y, key=key, init=wrong_init
            ),
            r"init\[0\]\['b'\]: expected shape \(3, 4\)",
        ),
        (
            lambda: curvature.population_top_eigenvalues(
                f, params, 1, x, y, key=key, data_chunk=-1
            ),
            "data_chunk",
        ),
        (
            lambda: curvature.population_taylor_step(f, params, x, y, etas=[0.1], lambda_max=[1.0]),
            r"lambda_max: expected None or one value per member, shape \(3,\)",
        ),
        (
            lambda: curvature.population_taylor_step(f, params, x, y, etas=[-0.1]),
            "etas: expected positive",
        ),
        (
            lambda: curvature.population_trace(f, params, x, y, key=key, samples=1),
            "samples: expected at least 2",
        ),
        (
            lambda: curvature.track_population_sharpness(
                model, "mse", x, y, key=key, member_chunk=0
            ),
            "member_chunk",
        ),
        (lambda: tracker(-1, params), "epoch"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert compilations.count == before


def test_zero_direction_is_refused_naming_the_member():
    f, params = _diagonal_population([np.ones(3), np.ones(3)])
    params = {"s": params["s"], "x": jnp.asarray([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])}
    with pytest.raises(ValueError, match="all zeros for member 1"):
        curvature.population_taylor_step(f, params, etas=[0.1])


# ------------------------------------------------------------------ the script


def test_sharpness_script_trains_etas_and_seeds_as_one_population(tmp_path, capsys):
    import importlib.util
    import json
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sharpness.py"
    spec = importlib.util.spec_from_file_location("sharpness_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    common = ["--etas", "0.2", "0.4", "--epochs", "20", "--every", "10", "--n", "16"]
    both, one = tmp_path / "seeds", tmp_path / "one"
    assert script.main([*common, "--seeds", "2", "--out", str(both), "--no-progress"]) == 0
    assert "over 2 seeds" in capsys.readouterr().out
    assert script.main([*common, "--out", str(one), "--no-progress"]) == 0
    summary = json.loads((both / "sharpness.json").read_text())
    assert summary["seeds"] == 2
    assert len(summary["runs"]["0.4"]["seeds"]["sharpness_max"]) == 2
    assert (both / "sharpness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(both / "sharpness.npz") as seeds, np.load(one / "sharpness.npz") as single:
        for eta in ("0.2", "0.4"):
            assert seeds[f"eta={eta}/sharpness_seeds"].shape == (2, 3)
            assert seeds[f"eta={eta}/loss_seeds"].shape == (2, 20)
            # the --seed run is the same member whether or not other seeds train beside it
            np.testing.assert_allclose(
                seeds[f"eta={eta}/sharpness"], single[f"eta={eta}/sharpness"], rtol=1e-8
            )
            np.testing.assert_array_equal(
                seeds[f"eta={eta}/sharpness_seeds"][0], seeds[f"eta={eta}/sharpness"]
            )
        assert "eta=0.2/sharpness_seeds" not in single.files


# ------------------------------------------------------------------ landscape sweeps


def test_one_sweep_gives_every_members_plane(population):
    from gdjax import landscape

    _, f, params, x, y = population
    d1 = jax.vmap(landscape.random_direction)(jax.random.split(jax.random.key(1), P), params)
    d2 = jax.vmap(landscape.random_direction)(jax.random.split(jax.random.key(2), P), params)
    alphas, betas = np.linspace(-1, 1, 3), np.linspace(-0.5, 0.5, 2)
    g = landscape.members(f, P)
    values = landscape.sweep_2d(g, params, d1, d2, alphas, betas, x, y)
    grid = g.stack(values)
    assert grid.shape == (P, 3, 2)
    chunked = g.stack(landscape.sweep_2d(g, params, d1, d2, alphas, betas, x, y, data_chunk=5))
    np.testing.assert_allclose(chunked, grid, rtol=1e-12)
    for i in range(P):
        single = landscape.sweep_2d(
            f, member(params, i), member(d1, i), member(d2, i), alphas, betas, x, y
        )
        np.testing.assert_allclose(grid[i], single, rtol=1e-12)
    with pytest.raises(
        ValueError, match=r"params\[0\]\['b'\]: expected a leading member axis of size 4"
    ):
        landscape.sweep_1d(landscape.members(f, 4), params, d1, alphas, x, y)
