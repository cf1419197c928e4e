"""Curvature: every matrix-free quantity equals the same quantity from the dense Hessian.

The references are built densely, on tiny float64 models only:
``H = jax.hessian`` of the cost of the flattened params (``ravel_pytree``),
``G = Jᵀ H_out J`` from ``jax.jacobian`` of the network output and
``jax.hessian`` of the loss, ``numpy.linalg.eigvalsh``, ``numpy.trace`` and
``numpy.linalg.lstsq``; for the spectral density, the spectral projectors of
the dense H (whose Hutchinson variance is known exactly) and Gauss quadrature's
exactness on polynomials; for per-layer curvature, the diagonal blocks of H.
The edge-of-stability test trains a small network with ``gdjax.train.fit``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gdjax import MLP, activations, curvature, losses, objective, train
from gdjax.curvature.eigen import _ritz_errors

# ------------------------------------------------------------------ helpers


def make_problem(seed, sizes, activation="tanh", loss_name="mse", batch=12, soft=False, scale=1.0):
    """Model, cost f, float64 params (NumPy-drawn, Glorot-scaled) and a batch (x, y)."""
    model = MLP(sizes, activation=activation)
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        r = scale * np.sqrt(6.0 / (n_in + n_out))
        params.append(
            {
                "w": jnp.asarray(rng.uniform(-r, r, size=(n_out, n_in))),
                "b": jnp.asarray(0.1 * rng.normal(size=n_out)),
            }
        )
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])))
    k = sizes[-1]
    if loss_name == "mse":
        y = jnp.asarray(rng.normal(size=(batch, k)))
    elif loss_name == "sigmoid_binary_cross_entropy":
        y = jnp.asarray(rng.integers(0, 2, size=(batch, k)), jnp.float64)
    elif soft:
        y = jax.nn.softmax(jnp.asarray(rng.normal(size=(batch, k))), axis=-1)
    else:
        y = jnp.asarray(rng.integers(0, k, size=batch), jnp.int32)
    return model, objective(model, loss_name), params, x, y


def dense_hessian(f, params, *args):
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.jit(jax.hessian(lambda u: f(unravel(u), *args)))(flat))


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def random_like(rng, params):
    _, unravel = ravel_pytree(params)
    return unravel(jnp.asarray(rng.normal(size=flat(params).size)))


def assert_close(a, b, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def integral(values, grid):
    """The trapezoid rule on a (possibly non-uniform) grid."""
    return float(np.sum(np.diff(grid) * (values[1:] + values[:-1]) / 2))


# ------------------------------------------------------------------ hvp


@pytest.mark.parametrize("activation", activations.names())
def test_hvp_equals_dense_hessian_times_v(activation):
    # relu and leaky_relu have σ'' = 0 almost everywhere; the products must still agree.
    _, f, params, x, y = make_problem(0, (3, 4, 2), activation)
    v = random_like(np.random.default_rng(1), params)
    hv = curvature.hvp(f, params, v, x, y)
    want = dense_hessian(f, params, x, y) @ flat(v)
    assert_close(flat(hv), want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize(
    ("loss_name", "soft"),
    [("softmax_cross_entropy", False), ("softmax_cross_entropy", True)]
    + [("sigmoid_binary_cross_entropy", False)],
)
def test_hvp_equals_dense_hessian_for_cross_entropies(loss_name, soft):
    _, f, params, x, y = make_problem(2, (3, 5, 3), "softplus", loss_name, soft=soft)
    v = random_like(np.random.default_rng(3), params)
    want = dense_hessian(f, params, x, y) @ flat(v)
    assert_close(flat(curvature.hvp(f, params, v, x, y)), want, rtol=1e-10, atol=1e-14)


def test_hvp_under_jit_equals_eager():
    _, f, params, x, y = make_problem(4, (3, 4, 2), "gelu")
    v = random_like(np.random.default_rng(5), params)
    jitted = jax.jit(curvature.hvp, static_argnums=0)
    assert_close(flat(jitted(f, params, v, x, y)), flat(curvature.hvp(f, params, v, x, y)), 1e-13)


# ------------------------------------------------------------------ Gauss–Newton


def dense_ggn(model, loss_name, params, x, y):
    """``G = Jᵀ H_out J`` with J the Jacobian of the flattened output and H_out by autodiff."""
    loss = losses.get(loss_name)
    flat0, unravel = ravel_pytree(params)
    out = model.apply(params, x)
    jac = np.asarray(jax.jit(jax.jacobian(lambda u: model.apply(unravel(u), x).ravel()))(flat0))
    h_out = np.asarray(
        jax.jit(jax.hessian(lambda a: loss.fn(a.reshape(out.shape), y)))(out.ravel())
    )
    return jac.T @ h_out @ jac


GGN_CASES = [
    ("mse", False),
    ("softmax_cross_entropy", False),
    ("softmax_cross_entropy", True),
    ("sigmoid_binary_cross_entropy", False),
]


@pytest.mark.parametrize(("loss_name", "soft"), GGN_CASES)
def test_gnvp_equals_dense_ggn_and_is_psd(loss_name, soft):
    model, _, params, x, y = make_problem(6, (3, 5, 3), "sigmoid", loss_name, soft=soft)
    g = dense_ggn(model, loss_name, params, x, y)
    rng = np.random.default_rng(7)
    for _ in range(2):
        v = random_like(rng, params)
        want = g @ flat(v)
        got = flat(curvature.gnvp(model, loss_name, params, v, x, y))
        assert_close(got, want, rtol=1e-10, atol=1e-13 * np.abs(want).max())
        assert got @ flat(v) >= 0  # vᵀGv ≥ 0
    eigenvalues = np.linalg.eigvalsh(g)
    assert eigenvalues.min() >= -1e-12 * eigenvalues.max()


@pytest.mark.parametrize(("loss_name", "soft"), GGN_CASES)
def test_gnvp_equals_hessian_for_a_linear_model(loss_name, soft):
    # No hidden layer and identity output: a^L is linear in θ, so H = G exactly.
    model, f, params, x, y = make_problem(8, (4, 3), "identity", loss_name, soft=soft)
    assert_close(dense_ggn(model, loss_name, params, x, y), dense_hessian(f, params, x, y), 1e-10)
    v = random_like(np.random.default_rng(9), params)
    assert_close(
        flat(curvature.gnvp(model, loss_name, params, v, x, y)),
        flat(curvature.hvp(f, params, v, x, y)),
        rtol=1e-10,
    )


def test_gnvp_differs_from_hessian_for_a_nonlinear_model():
    model, f, params, x, y = make_problem(10, (3, 5, 2), "tanh")
    h, g = dense_hessian(f, params, x, y), dense_ggn(model, "mse", params, x, y)
    assert np.linalg.norm(h - g) > 1e-3 * np.linalg.norm(h)
    assert np.linalg.eigvalsh(h).min() < 0 <= np.linalg.eigvalsh(g).min() + 1e-12


# ------------------------------------------------------------------ eigenvalues

# 4·10 + 10 + 10·10 + 10 + 10·2 + 2 = 182 params: a dense Hessian is cheap.
EIG_SIZES = (4, 10, 10, 2)


@pytest.fixture(scope="module")
def eig_problem():
    _, f, params, x, y = make_problem(11, EIG_SIZES, "tanh", batch=32, scale=1.5)
    h = dense_hessian(f, params, x, y)
    return f, params, (x, y), h, np.linalg.eigvalsh(h)


def test_lanczos_top_k_equals_eigvalsh(eig_problem):
    f, params, args, h, eigenvalues = eig_problem
    k = 5
    eig = curvature.top_eigenvalues(f, params, k, *args, key=jax.random.key(0))
    want = eigenvalues[::-1][:k]
    assert eig.converged
    assert eig.eigenvalues.shape == (k,) and eig.residuals.shape == (k,)
    assert_close(eig.eigenvalues, want, rtol=1e-6)
    assert eig.hvps < h.shape[0]  # far fewer products than the dimension
    for lam, v, estimate in zip(eig.eigenvalues, eig.eigenvectors, eig.residuals, strict=True):
        assert jax.tree.structure(v) == jax.tree.structure(params)
        u = flat(v)
        assert abs(np.linalg.norm(u) - 1) < 1e-10
        residual = np.linalg.norm(flat(curvature.hvp(f, params, v, *args)) - lam * u)
        assert residual <= 1e-6 * abs(lam)
        assert abs(residual - estimate) <= 1e-10 * abs(lam)  # the |β s| estimate is honest


def test_lanczos_largest_magnitude(eig_problem):
    f, params, args, _, eigenvalues = eig_problem
    eig = curvature.top_eigenvalues(f, params, 3, *args, key=jax.random.key(1), which="magnitude")
    want = eigenvalues[np.argsort(-np.abs(eigenvalues))][:3]
    assert eig.converged
    assert_close(eig.eigenvalues, want, rtol=1e-6)


def test_lanczos_smallest_finds_the_negative_curvature(eig_problem):
    f, params, args, _, eigenvalues = eig_problem
    assert eigenvalues[0] < 0  # a tanh net away from a minimum: some negative curvature
    eig = curvature.top_eigenvalues(f, params, 3, *args, key=jax.random.key(3), which="smallest")
    assert eig.converged
    assert_close(eig.eigenvalues, eigenvalues[:3], rtol=1e-6)
    for lam, v in zip(eig.eigenvalues, eig.eigenvectors, strict=True):
        u = flat(v)
        residual = np.linalg.norm(flat(curvature.hvp(f, params, v, *args)) - lam * u)
        assert residual <= 1e-6 * np.abs(eigenvalues).max()


@pytest.mark.parametrize("max_iters", [7, 8, 9, 17])
def test_lanczos_basis_padding_does_not_change_the_result(eig_problem, max_iters):
    """The basis buffer is padded to whole blocks of rows; the projection reads filled rows only."""
    f, params, args, h, eigenvalues = eig_problem
    eig = curvature.top_eigenvalues(
        f, params, 1, *args, key=jax.random.key(4), max_iters=max_iters, tol=1e-30, confirm=False
    )
    assert eig.hvps == max_iters + 1 and not eig.converged  # + 1: the measured residual
    q = np.stack([flat(v) for v in eig.eigenvectors])
    # The Ritz value is the Rayleigh quotient of its Ritz vector: qᵀHq, to rounding.
    assert_close(eig.eigenvalues[0], float(q[0] @ h @ q[0]), rtol=1e-10)
    assert eig.eigenvalues[0] <= eigenvalues[-1] * (1 + 1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-5])
def test_eigenvalue_criterion_stops_sooner_and_claims_only_what_it_measured(eig_problem, seed, tol):
    """criterion="eigenvalue" stops on an estimate; converged is the measured residual bound."""
    f, params, args, _, eigenvalues = eig_problem
    key = jax.random.key(10 + seed)
    by_value = curvature.top_eigenvalues(
        f, params, 1, *args, key=key, tol=tol, criterion="eigenvalue"
    )
    by_residual = curvature.top_eigenvalues(f, params, 1, *args, key=key, tol=tol)
    assert by_value.hvps <= by_residual.hvps
    assert by_value.errors[0] <= by_value.residuals[0]
    assert by_residual.converged
    # Some eigenvalue of H lies within the measured residual of each Ritz value.
    for eig in (by_value, by_residual):
        nearest = np.abs(eigenvalues - eig.eigenvalues[0]).min()
        assert nearest <= eig.residuals[0] * (1 + 1e-9) + 1e-14
    measured_ok = by_value.residuals[0] <= tol * abs(by_value.eigenvalues[0])
    assert by_value.converged == measured_ok


def test_eigenvalue_criterion_saves_products_at_a_loose_tol(eig_problem):
    f, params, args, _, eigenvalues = eig_problem
    counts = {
        criterion: curvature.top_eigenvalues(
            f, params, 1, *args, key=jax.random.key(20), tol=1e-4, criterion=criterion
        ).hvps
        for criterion in ("residual", "eigenvalue")
    }
    print(f"\nλ_max to 1e-4: {counts}")
    assert counts["eigenvalue"] < counts["residual"]


def test_ritz_errors_use_the_gap_to_the_other_ritz_values():
    theta = np.array([10.0, 4.0, 3.5])
    residuals = np.array([0.1, 0.5, 2.0])
    errors = _ritz_errors(theta, residuals)
    # θ_1: gap = min(6 − 0.5, 6.5 − 2) = 4.5, r²/gap = 0.01/4.5; θ_2, θ_3: gaps ≤ 0 → r.
    assert_close(errors, [0.01 / 4.5, 0.5, 2.0], rtol=1e-15)
    assert_close(_ritz_errors(theta[:1], residuals[:1]), [0.1], rtol=0)


def test_power_iteration_finds_lambda_max_with_more_products(eig_problem):
    f, params, args, _, eigenvalues = eig_problem
    lam_max = eigenvalues[np.argmax(np.abs(eigenvalues))]
    assert lam_max == eigenvalues[-1]  # the largest eigenvalue is also the largest in magnitude
    lanczos = curvature.top_eigenvalues(f, params, 1, *args, key=jax.random.key(2))
    power = curvature.top_eigenvalues(f, params, 1, *args, key=jax.random.key(2), method="power")
    for eig in (lanczos, power):
        assert eig.converged
        assert_close(eig.eigenvalues[0], lam_max, rtol=1e-6)
    print(
        f"\nλ_max = {lam_max:.6f} (tol 1e-8): Lanczos {lanczos.hvps} HVPs, power iteration "
        f"{power.hvps} HVPs ({power.hvps - lanczos.hvps} more, {power.hvps / lanczos.hvps:.1f}×)"
    )
    assert power.hvps > lanczos.hvps


def test_power_iteration_with_deflation(eig_problem):
    f, params, args, _, eigenvalues = eig_problem
    eig = curvature.top_eigenvalues(f, params, 2, *args, key=jax.random.key(3), method="power")
    # The deflated P H P met tol; converged is claimed on the residuals of H itself,
    # which for v_2 also carry the error of v_1 (here about 1.5·tol|λ_2|).
    for lam, v, r in zip(eig.eigenvalues, eig.eigenvectors, eig.residuals, strict=True):
        residual = np.linalg.norm(flat(curvature.hvp(f, params, v, *args)) - lam * flat(v))
        assert_close(r, residual, rtol=1e-6)
    assert eig.converged == bool(np.all(eig.residuals <= 1e-8 * np.abs(eig.eigenvalues)))
    assert_close(eig.eigenvalues, eigenvalues[np.argsort(-np.abs(eigenvalues))][:2], rtol=1e-6)
    u, v = (flat(e) for e in eig.eigenvectors)
    assert abs(u @ v) < 1e-6


def test_lanczos_warm_start_needs_fewer_products(eig_problem, compilations):
    f, params, args, _, eigenvalues = eig_problem
    cold = curvature.top_eigenvalues(f, params, 1, *args, key=jax.random.key(4))
    # Nearby points (as after training steps), warm-started from the last eigenvector.
    near = [jax.tree.map(lambda p, s=s: p * (1 + s), params) for s in (1e-3, 2e-3)]
    warm = curvature.top_eigenvalues(
        f, near[0], 1, *args, key=jax.random.key(5), init=cold.eigenvectors[0]
    )
    fresh = curvature.top_eigenvalues(f, near[0], 1, *args, key=jax.random.key(5))
    assert warm.converged and fresh.converged
    assert_close(warm.eigenvalues, fresh.eigenvalues, rtol=1e-8)
    assert warm.hvps < fresh.hvps
    compiled = compilations.count
    again = curvature.top_eigenvalues(
        f, near[1], 1, *args, key=jax.random.key(6), init=warm.eigenvectors[0]
    )
    assert again.converged
    assert compilations.count == compiled  # same f, same shapes: nothing recompiles


def test_lanczos_finds_repeated_eigenvalues():
    # Two outputs, linear model, mse: H = I₂ ⊗ AᵀA/n, every eigenvalue twice. A single
    # Krylov space holds one copy of each; the restart after breakdown finds the other.
    _, f, params, x, y = make_problem(12, (3, 2), "identity", batch=20)
    eigenvalues = np.linalg.eigvalsh(dense_hessian(f, params, x, y))[::-1]
    assert_close(eigenvalues[0::2], eigenvalues[1::2], rtol=1e-10)
    eig = curvature.top_eigenvalues(f, params, 4, x, y, key=jax.random.key(6))
    assert eig.converged
    assert_close(eig.eigenvalues, eigenvalues[:4], rtol=1e-6)


def test_lanczos_on_the_whole_space_is_exact():
    _, f, params, x, y = make_problem(13, (2, 3, 1), "tanh")
    eigenvalues = np.linalg.eigvalsh(dense_hessian(f, params, x, y))[::-1]
    n = eigenvalues.size
    eig = curvature.top_eigenvalues(f, params, n, x, y, key=jax.random.key(7), confirm=False)
    assert eig.converged and eig.hvps == 2 * n  # n Lanczos steps, n measured residuals
    assert_close(eig.eigenvalues, eigenvalues, rtol=1e-8, atol=1e-10 * eigenvalues[0])


# ------------------------------------------------------------------ trace


def test_hutchinson_trace_within_three_standard_errors(eig_problem):
    f, params, args, h, _ = eig_problem
    est = curvature.trace(f, params, *args, key=jax.random.key(8), samples=200)
    assert est.samples.shape == (200,)
    assert est.stderr > 0
    print(f"\ntr H = {np.trace(h):.4f}, Hutchinson: {est.estimate:.4f} ± {est.stderr:.4f}")
    assert abs(est.estimate - np.trace(h)) <= 3 * est.stderr


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    def f(p, scale):
        return 0.5 * jnp.sum(scale * p["a"] ** 2)

    scale = jnp.arange(1.0, 6.0)
    est = curvature.trace(f, {"a": jnp.ones(5)}, scale, key=jax.random.key(9), samples=3)
    assert est.estimate == pytest.approx(15.0, rel=1e-14) and est.stderr == 0


# ------------------------------------------------------------------ spectral density


def projector_variance(u, inside):
    """Var of ``vᵀPv`` for Rademacher v and ``P = U_S U_Sᵀ``: ``2(‖P‖_F² − Σ_i P_ii²)``."""
    p = u[:, inside] @ u[:, inside].T
    return 2 * (np.sum(p**2) - np.sum(np.diag(p) ** 2))


@pytest.fixture(scope="module")
def full_slq(eig_problem):
    """SLQ with m = n Lanczos steps: the quadrature is the exact spectral measure of each v̂."""
    f, params, args, h, eigenvalues = eig_problem
    runs = 20
    sd = curvature.spectral_density(
        f, params, *args, key=jax.random.key(20), lanczos_steps=h.shape[0], runs=runs
    )
    return sd, runs


def test_slq_with_m_equal_n_has_the_eigenvalues_as_nodes(eig_problem, full_slq):
    _, _, _, h, eigenvalues = eig_problem
    sd, runs = full_slq
    n = h.shape[0]
    assert sd.nodes.shape == sd.weights.shape == (runs, n) and sd.hvps == runs * n
    scale = np.abs(eigenvalues).max()
    np.testing.assert_allclose(
        sd.nodes, np.broadcast_to(eigenvalues, (runs, n)), atol=1e-10 * scale
    )
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(sd.weights >= 0)
    assert integral(sd.density, sd.grid) == pytest.approx(1.0, abs=1e-3)
    assert sd.grid[0] < eigenvalues[0] and eigenvalues[-1] < sd.grid[-1]


def test_slq_mass_agrees_with_the_dense_eigenvalue_histogram(eig_problem, full_slq):
    # With m = n each run's mass below t is v̂ᵀPv̂ = vᵀPv/n, P the projector on the
    # eigenvectors with λ < t: Hutchinson's estimate of tr P / n, whose variance for
    # Rademacher v is known exactly. Allow 4 standard deviations of the mean of the runs.
    _, _, _, h, eigenvalues = eig_problem
    sd, runs = full_slq
    n = h.shape[0]
    _, u = np.linalg.eigh(h)
    lines = []
    for t in (-0.1, 0.0, 1e-3, 0.1, 1.0):
        below = eigenvalues < t
        tol = 4 * np.sqrt(projector_variance(u, below) / runs) / n
        lines.append(
            f"  λ < {t:5}: SLQ {sd.mass(high=t):.4f}, dense {below.mean():.4f} ± {tol:.4f}"
        )
        assert abs(sd.mass(high=t) - below.mean()) <= tol
        assert sd.mass(low=t) == pytest.approx(1 - sd.mass(high=t), abs=1e-12)
    print("\nfraction of the", n, "eigenvalues (", runs, "runs, m = n):\n" + "\n".join(lines))
    # E[n Σ_i τ_i θ_i] = E[vᵀHv] = tr H: Hutchinson's estimator again.
    per_run = n * np.sum(sd.weights * sd.nodes, axis=1)
    stderr = np.sqrt(2 * (np.sum(h**2) - np.sum(np.diag(h) ** 2)) / runs)
    print(f"tr H = {np.trace(h):.4f}, SLQ {per_run.mean():.4f} (standard error {stderr:.4f})")
    assert abs(per_run.mean() - np.trace(h)) <= 3 * stderr


def test_slq_quadrature_is_exact_for_low_degree_moments(eig_problem, full_slq, compilations):
    # Gauss quadrature with m nodes integrates polynomials of degree ≤ 2m − 1 exactly:
    # Σ_i τ_i θ_i^k = v̂ᵀH^k v̂ for k ≤ 2m − 1, whatever m. So a 3-step run from the same
    # start vectors has the moments k ≤ 5 of the m = n run.
    f, params, args, _, eigenvalues = eig_problem
    sd_full, runs = full_slq
    sd = curvature.spectral_density(
        f, params, *args, key=jax.random.key(20), lanczos_steps=3, runs=runs, sigma=0.05
    )
    assert sd.nodes.shape == (runs, 3) and sd.sigma == 0.05
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    for k in range(1, 6):
        got = np.sum(sd.weights * sd.nodes**k, axis=1)
        want = np.sum(sd_full.weights * sd_full.nodes**k, axis=1)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    # Ritz values interlace: every node lies inside [λ_min, λ_max].
    scale = np.abs(eigenvalues).max()
    assert np.all(sd.nodes >= eigenvalues[0] - 1e-12 * scale)
    assert np.all(sd.nodes <= eigenvalues[-1] + 1e-12 * scale)
    assert integral(sd.density, sd.grid) == pytest.approx(1.0, abs=1e-3)
    compiled = compilations.count
    curvature.spectral_density(
        f, params, *args, key=jax.random.key(21), lanczos_steps=3, runs=runs, sigma=0.05
    )
    assert compilations.count == compiled  # same f, m and runs: nothing recompiles


def test_slq_with_repeated_eigenvalues_and_a_given_grid():
    # Linear model, two outputs, mse: H = I₂ ⊗ AᵀA/n with A = [x, 1], so each eigenvalue of
    # AᵀA/n appears twice. The Krylov space of v̂ holds one copy of each; once it closes,
    # Lanczos restarts, and the second copies come back as nodes of weight 0.
    _, f, params, x, y = make_problem(12, (3, 2), "identity", batch=20)
    a = np.hstack([np.asarray(x), np.ones((20, 1))])
    eigenvalues = np.repeat(np.linalg.eigvalsh(a.T @ a / 20), 2)
    grid = np.linspace(eigenvalues[0] - 1, eigenvalues[-1] + 1, 4001)
    sd = curvature.spectral_density(
        f,
        params,
        x,
        y,
        key=jax.random.key(22),
        lanczos_steps=8,
        runs=3,
        grid=grid,
        distribution="gaussian",
    )
    np.testing.assert_allclose(sd.nodes, np.broadcast_to(eigenvalues, (3, 8)), rtol=1e-10)
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.sum(sd.weights > 1e-12, axis=1) == 4)
    assert np.array_equal(sd.grid, grid)
    assert integral(sd.density, sd.grid) == pytest.approx(1.0, abs=1e-3)
    again = curvature.spectral_density(
        f, params, x, y, key=jax.random.key(22), lanczos_steps=8, runs=3, grid=50
    )
    assert again.grid.shape == (50,) and again.grid[0] < eigenvalues[0]


# ------------------------------------------------------------------ Taylor error of a step


@pytest.fixture(scope="module")
def quadratic():
    """Linear regression with mse: C is exactly quadratic in θ."""
    _, f, params, x, y = make_problem(14, (3, 1), "identity", batch=30)
    return f, params, (x, y), dense_hessian(f, params, x, y)


ETAS = np.geomspace(1e-3, 1.0, 16)


def test_taylor_second_order_is_exact_on_a_quadratic(quadratic):
    f, params, args, h = quadratic
    res = curvature.taylor_step(f, params, *args, etas=ETAS)
    g = flat(jax.grad(f)(params, *args))
    d = -g
    assert_close(flat(res.direction), d, rtol=1e-14)
    assert res.slope == pytest.approx(g @ d, rel=1e-12)
    assert res.curvature == pytest.approx(d @ h @ d, rel=1e-10)
    c0 = float(f(params, *args))
    # ΔC is known only to about ε·C (cancellation in C(θ + ηd) − C(θ)).
    rounding = 64 * np.finfo(np.float64).eps * c0
    np.testing.assert_allclose(res.second_order, res.actual, rtol=0, atol=rounding)
    # The first-order error is exactly the quadratic term ½η²dᵀHd.
    np.testing.assert_allclose(
        res.actual - res.first_order, 0.5 * ETAS**2 * (d @ h @ d), rtol=0, atol=rounding
    )
    big = np.abs(res.actual) > 1e6 * rounding
    assert np.all(res.second_order_error[big] < 1e-8)
    assert np.all(np.diff(res.first_order_error) > 0)  # grows like O(η)


def test_taylor_threshold_and_stability_limit(quadratic):
    f, params, args, h = quadratic
    res = curvature.taylor_step(f, params, *args, etas=ETAS, threshold=0.1)
    # Relative first-order error e(η) = ½ηc / |s + ½ηc| (s = ∇Cᵀd < 0, c = dᵀHd): e = 0.1 at
    s, c = res.slope, res.curvature
    eta_exact = 0.1 * 2 * -s / (c * 1.1)
    assert ETAS[0] < eta_exact < ETAS[-1]
    assert res.eta_threshold == pytest.approx(eta_exact, rel=0.05)  # log-log interpolation
    assert res.threshold == 0.1
    lam_max = np.linalg.eigvalsh(h)[-1]
    assert res.lambda_max == pytest.approx(lam_max, rel=1e-6)
    assert res.stability_limit == pytest.approx(2 / lam_max, rel=1e-6)
    # Already above the threshold at the smallest η: that η (an upper bound); never: NaN.
    early = curvature.taylor_step(f, params, *args, etas=ETAS, threshold=1e-6, lambda_max=1.0)
    assert early.eta_threshold == ETAS[0]
    never = curvature.taylor_step(f, params, *args, etas=ETAS[:2], lambda_max=1.0)
    assert np.isnan(never.eta_threshold)
    given = curvature.taylor_step(f, params, *args, etas=ETAS, lambda_max=2.0)
    assert given.lambda_max == 2.0 and given.stability_limit == 1.0


def test_taylor_given_direction_and_layer():
    _, f, params, x, y = make_problem(15, (3, 4, 2), "tanh")
    h = dense_hessian(f, params, x, y)
    rng = np.random.default_rng(16)
    direction = random_like(rng, params)
    res = curvature.taylor_step(f, params, x, y, etas=[1e-3, 1e-2, 0.1], direction=direction)
    u = flat(direction)
    assert res.curvature == pytest.approx(u @ h @ u, rel=1e-10)
    assert np.all(res.second_order_error < res.first_order_error)

    # Layer 1 (w², b²) only: the default direction is −∇C zeroed outside that layer.
    res = curvature.taylor_step(f, params, x, y, etas=[1e-2, 0.1], layer=1)
    grads = jax.grad(f)(params, x, y)
    assert np.all(flat(res.direction[0]) == 0)
    assert_close(flat(res.direction[1]), -flat(grads[1]), rtol=1e-14)
    # λ_max is that of the layer's diagonal block of H.
    n0 = flat(params[0]).size
    assert res.lambda_max == pytest.approx(np.linalg.eigvalsh(h[n0:, n0:])[-1], rel=1e-6)
    d = flat(res.direction)
    assert res.curvature == pytest.approx(d @ h @ d, rel=1e-10)


# ------------------------------------------------------------------ per-layer curvature


def dense_blocks(h, params):
    """The diagonal blocks H_ll of the flattened Hessian (ravel_pytree keeps layers contiguous)."""
    sizes = [flat(p).size for p in params]
    ends = np.cumsum(sizes)
    return [h[end - size : end, end - size : end] for size, end in zip(sizes, ends, strict=True)]


def test_layer_curvature_equals_the_dense_diagonal_blocks(eig_problem):
    f, params, args, h, eigenvalues = eig_problem
    blocks = dense_blocks(h, params)
    exact = curvature.layer_curvature(
        f, params, *args, key=jax.random.key(30), trace_method="exact"
    )
    assert exact.num_params.tolist() == [b.shape[0] for b in blocks] == [50, 110, 22]
    assert exact.exact.all() and exact.converged.all() and np.all(exact.trace_stderr == 0)
    assert_close(exact.lambda_max, [np.linalg.eigvalsh(b)[-1] for b in blocks], rtol=1e-6)
    assert_close(exact.trace, [np.trace(b) for b in blocks], rtol=1e-10, atol=1e-12)
    assert exact.trace.sum() == pytest.approx(np.trace(h), rel=1e-10)
    assert np.all(exact.lambda_max <= eigenvalues[-1] * (1 + 1e-8))  # a Rayleigh quotient
    print(
        f"\nλ_max(H) = {eigenvalues[-1]:.4f}; per layer λ_max(H_ll) = {exact.lambda_max.round(4)}, "
        f"tr H_ll = {exact.trace.round(4)}, HVPs {exact.hvps}"
    )

    # "auto": exact where n_l ≤ samples (layers 0 and 2), Hutchinson for the 110-param layer.
    auto = curvature.layer_curvature(f, params, *args, key=jax.random.key(31), samples=60)
    assert auto.exact.tolist() == [True, False, True]
    assert_close(auto.trace[auto.exact], exact.trace[auto.exact], rtol=1e-10, atol=1e-12)
    assert auto.trace_stderr[1] > 0 and auto.hvps[1] >= 60
    assert abs(auto.trace[1] - np.trace(blocks[1])) <= 3 * auto.trace_stderr[1]
    assert_close(auto.lambda_max, exact.lambda_max, rtol=1e-6)


# ------------------------------------------------------------------ sharpness during training

# Full-batch GD on a small tanh regression: starting at ≈ 0.46·(2/η), λ_max rises to 2/η
# within ~160 epochs (progressive sharpening), overshoots to ≈ 1.2·(2/η), the loss spikes
# and λ_max drops to ≈ 0.83·(2/η), then it climbs back and hovers at 2/η (edge of stability).
EOS_ETA, EOS_EPOCHS, EOS_EVERY = 0.2, 500, 20


def test_sharpness_rises_to_the_edge_of_stability():
    model = MLP((2, 32, 32, 1), activation="tanh")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 2)))
    y = jnp.sin(2 * x[:, :1]) * jnp.cos(x[:, 1:])
    params = model.init(jax.random.key(1), dtype=jnp.float64)
    warm = curvature.track_sharpness(model, "mse", x, y, key=jax.random.key(2))
    cold = curvature.track_sharpness(model, "mse", x, y, key=jax.random.key(2), warm_start=False)

    def both(epoch, params, opt_state, history):
        warm(epoch, params, opt_state, history)
        cold(epoch, params, opt_state, history)

    warm(0, params)  # the start
    result = train.fit(
        model,
        "mse",
        "sgd",
        (x, y),
        epochs=EOS_EPOCHS,
        key=jax.random.key(0),
        params=params,
        batch_size=None,
        learning_rate=EOS_ETA,
        callback=both,
        callback_every=EOS_EVERY,
        eval_every=0,
        progress=False,
    )
    assert result.diverged is None
    want_epochs = np.arange(EOS_EVERY, EOS_EPOCHS + 1, EOS_EVERY)
    assert np.array_equal(warm.epochs, np.concatenate([[0], want_epochs]))
    assert np.array_equal(cold.epochs, want_epochs)
    assert warm.converged.all() and cold.converged.all()
    assert_close(warm.sharpness[1:], cold.sharpness, rtol=1e-6)  # same λ_max either way
    print(
        f"\nHVPs per measurement: warm start {warm.hvps[1:].mean():.2f}, "
        f"random start {cold.hvps.mean():.2f}"
    )
    assert warm.hvps[1:].mean() < cold.hvps.mean()

    ratio = warm.sharpness * EOS_ETA / 2  # λ_max / (2/η)
    rows = (f"{e:5d}  {r:.3f}" for e, r in zip(warm.epochs, ratio, strict=True))
    print("epoch  λ_max·η/2:\n" + "\n".join(rows))
    assert ratio[0] < 0.6  # starts well below the stability limit …
    crossed = np.flatnonzero(ratio >= 1)
    assert crossed.size > 0  # … rises to it …
    after = ratio[crossed[0] :]
    assert np.all((0.5 <= after) & (after <= 1.5))  # … and stays near it
    assert 0.75 <= ratio[-len(ratio) // 4 :].mean() <= 1.25
    loss = result.history["loss"]
    assert loss[-1] < 0.05 * loss[0]  # training still progresses …
    assert np.any(np.diff(loss) > 0)  # … but not monotonically


# ------------------------------------------------------------------ Newton's step


def test_one_dense_newton_step_solves_linear_regression(quadratic):
    f, params, (x, y), _ = quadratic
    result = curvature.newton_step(f, params, x, y)
    a = np.hstack([np.asarray(x), np.ones((x.shape[0], 1))])  # columns: w, then b
    solution = np.linalg.lstsq(a, np.asarray(y), rcond=None)[0].ravel()
    got = np.concatenate([flat(result.params[0]["w"]), flat(result.params[0]["b"])])
    assert_close(got, solution, rtol=1e-8)
    assert result.converged and result.residual < 1e-12
    assert np.linalg.norm(flat(jax.grad(f)(result.params, x, y))) < 1e-12


def test_cg_newton_matches_dense_on_convex_problems(quadratic):
    f, params, args, _ = quadratic
    dense = curvature.newton_step(f, params, *args)
    cg = curvature.newton_step(f, params, *args, method="cg")
    assert cg.converged and not cg.negative_curvature
    assert 0 < cg.iterations <= flat(params).size
    assert_close(flat(cg.params), flat(dense.params), rtol=1e-8)
    # Logistic regression (convex), damped.
    _, f, params, x, y = make_problem(17, (3, 1), "identity", "sigmoid_binary_cross_entropy")
    dense = curvature.newton_step(f, params, x, y, damping=1e-3)
    cg = curvature.newton_step(f, params, x, y, damping=1e-3, method="cg")
    assert cg.converged
    assert_close(flat(cg.params), flat(dense.params), rtol=1e-8)


def test_one_newton_step_does_not_solve_a_nonlinear_network():
    model = MLP((2, 8, 1), activation="tanh")
    f = objective(model, "mse")
    params = model.init(jax.random.key(1), dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(18).normal(size=(40, 2)))
    y = jnp.sin(2 * x[:, :1]) * jnp.cos(x[:, 1:])
    grad_norm = jax.jit(lambda p: jnp.linalg.norm(ravel_pytree(jax.grad(f)(p, x, y))[0]))
    loss = jax.jit(lambda p: f(p, x, y))
    assert np.linalg.eigvalsh(dense_hessian(f, params, x, y))[0] < 0  # H is indefinite
    one = curvature.newton_step(f, params, x, y).params
    # A reference minimum: Levenberg–Marquardt (damped Newton, damping adapted).
    best, damping = params, 1.0
    for _ in range(60):
        trial = curvature.newton_step(f, best, x, y, damping=damping).params
        if float(loss(trial)) < float(loss(best)):
            best, damping = trial, damping / 3
        else:
            damping *= 3
    print(
        f"\nloss: start {float(loss(params)):.4f}, one Newton step {float(loss(one)):.4f}, "
        f"Levenberg–Marquardt {float(loss(best)):.4f}; ‖∇C‖ after one step "
        f"{float(grad_norm(one)):.3g}"
    )
    assert float(loss(one)) > float(loss(best)) + 0.01
    assert float(grad_norm(one)) > 0.1 * float(grad_norm(params))  # not near stationary
    cg = curvature.newton_step(f, params, x, y, method="cg")
    assert cg.negative_curvature and not cg.converged


# ------------------------------------------------------------------ bad input

TINY = MLP((2, 2), activation="identity")
TINY_PARAMS = [{"w": np.ones((2, 2)), "b": np.zeros(2)}]  # 6 params
TINY_F = objective(TINY, "mse")
TINY_ARGS = (np.ones((3, 2)), np.zeros((3, 2)))
KEY = jax.random.key(0)

BAD_CALLS = {
    "k larger than the number of params": (
        lambda: curvature.top_eigenvalues(TINY_F, TINY_PARAMS, 7, *TINY_ARGS, key=KEY),
        r"k: expected at most 6, the number of parameters \(H is 6×6\), got 7",
    ),
    "k zero": (
        lambda: curvature.top_eigenvalues(TINY_F, TINY_PARAMS, 0, *TINY_ARGS, key=KEY),
        r"k: expected a positive integer, got 0",
    ),
    "k not an int": (
        lambda: curvature.top_eigenvalues(TINY_F, TINY_PARAMS, 1.0, *TINY_ARGS, key=KEY),
        r"k: expected a positive integer, got 1.0",
    ),
    "unknown method": (
        lambda: curvature.top_eigenvalues(
            TINY_F, TINY_PARAMS, 1, *TINY_ARGS, key=KEY, method="arnoldi"
        ),
        r"method: expected one of 'lanczos', 'power', got 'arnoldi'",
    ),
    "unknown criterion": (
        lambda: curvature.top_eigenvalues(
            TINY_F, TINY_PARAMS, 1, *TINY_ARGS, key=KEY, criterion="vector"
        ),
        r"criterion: expected one of 'residual', 'eigenvalue', got 'vector'",
    ),
    "power iteration with the eigenvalue criterion": (
        lambda: curvature.top_eigenvalues(
            TINY_F, TINY_PARAMS, 1, *TINY_ARGS, key=KEY, method="power", criterion="eigenvalue"
        ),
        r"criterion: power iteration knows no gap to the other eigenvalues",
    ),
    "power iteration for the algebraically largest": (
        lambda: curvature.top_eigenvalues(
            TINY_F, TINY_PARAMS, 1, *TINY_ARGS, key=KEY, method="power", which="largest"
        ),
        r"which: power iteration converges to the eigenvalue of largest magnitude",
    ),
    "init with another structure": (
        lambda: curvature.top_eigenvalues(
            TINY_F, TINY_PARAMS, 1, *TINY_ARGS, key=KEY, init={"w": np.ones((2, 2))}
        ),
        r"init: expected a pytree with the structure of params",
    ),
    "no key": (
        lambda: curvature.top_eigenvalues(TINY_F, TINY_PARAMS, 1, *TINY_ARGS, key=0),
        r"key: expected a PRNG key",
    ),
    "max_iters below k": (
        lambda: curvature.top_eigenvalues(TINY_F, TINY_PARAMS, 3, *TINY_ARGS, key=KEY, max_iters=2),
        r"max_iters: expected an integer in \[k, n\] = \[3, 6\] for Lanczos, got 2",
    ),
    "hvp vector with another shape": (
        lambda: curvature.hvp(
            TINY_F, TINY_PARAMS, [{"w": np.ones((2, 3)), "b": np.zeros(2)}], *TINY_ARGS
        ),
        r"v\[0\]\['w'\]: expected shape \(2, 2\) \(the shape of params\[0\]\['w'\]\), "
        r"got \(2, 3\)",
    ),
    "samples zero": (
        lambda: curvature.trace(TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, samples=0),
        r"samples: expected a positive integer, got 0",
    ),
    "samples one": (
        lambda: curvature.trace(TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, samples=1),
        r"samples: expected at least 2",
    ),
    "etas with a negative step": (
        lambda: curvature.taylor_step(TINY_F, TINY_PARAMS, *TINY_ARGS, etas=[0.1, -1.0]),
        r"etas: expected positive finite step sizes, got -1.0",
    ),
    "etas with a zero step": (
        lambda: curvature.taylor_step(TINY_F, TINY_PARAMS, *TINY_ARGS, etas=[0.0, 1.0]),
        r"etas: expected positive finite step sizes, got 0.0",
    ),
    "etas not finite": (
        lambda: curvature.taylor_step(TINY_F, TINY_PARAMS, *TINY_ARGS, etas=[np.inf]),
        r"etas: expected positive finite step sizes, got inf",
    ),
    "etas empty": (
        lambda: curvature.taylor_step(TINY_F, TINY_PARAMS, *TINY_ARGS, etas=[]),
        r"etas: expected a non-empty 1-D sequence of step sizes, got shape \(0,\)",
    ),
    "etas a matrix": (
        lambda: curvature.taylor_step(TINY_F, TINY_PARAMS, *TINY_ARGS, etas=np.ones((2, 2))),
        r"etas: expected a non-empty 1-D sequence of step sizes, got shape \(2, 2\)",
    ),
    "direction with another structure": (
        lambda: curvature.taylor_step(
            TINY_F, TINY_PARAMS, *TINY_ARGS, etas=[0.1], direction={"w": np.ones((2, 2))}
        ),
        r"direction: expected a pytree with the structure of params",
    ),
    "direction with another shape": (
        lambda: curvature.taylor_step(
            TINY_F,
            TINY_PARAMS,
            *TINY_ARGS,
            etas=[0.1],
            direction=[{"w": np.ones((2, 2)), "b": np.zeros(3)}],
        ),
        r"direction\[0\]\['b'\]: expected shape \(2,\).*got \(3,\)",
    ),
    "layer out of range": (
        lambda: curvature.taylor_step(TINY_F, TINY_PARAMS, *TINY_ARGS, etas=[0.1], layer=1),
        r"layer: expected an index in \[0, 0\]",
    ),
    "negative damping": (
        lambda: curvature.newton_step(TINY_F, TINY_PARAMS, *TINY_ARGS, damping=-1.0),
        r"damping: expected a non-negative finite number, got -1.0",
    ),
    "unknown Newton method": (
        lambda: curvature.newton_step(TINY_F, TINY_PARAMS, *TINY_ARGS, method="lbfgs"),
        r"method: expected one of 'dense', 'cg', got 'lbfgs'",
    ),
    "dense Newton on a large model": (
        lambda: curvature.newton_step(TINY_F, [{"w": np.zeros((70, 70))}], *TINY_ARGS),
        r"params: method='dense' forms the 4900×4900 Hessian; expected at most 4096",
    ),
    "lanczos_steps zero": (
        lambda: curvature.spectral_density(
            TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, lanczos_steps=0
        ),
        r"lanczos_steps: expected a positive integer, got 0",
    ),
    "lanczos_steps larger than the number of params": (
        lambda: curvature.spectral_density(
            TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, lanczos_steps=7
        ),
        r"lanczos_steps: expected at most 6, the number of parameters",
    ),
    "runs zero": (
        lambda: curvature.spectral_density(TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, runs=0),
        r"runs: expected a positive integer, got 0",
    ),
    "sigma negative": (
        lambda: curvature.spectral_density(TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, sigma=-1.0),
        r"sigma: expected a positive finite number, got -1.0",
    ),
    "grid of one point": (
        lambda: curvature.spectral_density(TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, grid=1),
        r"grid: expected at least 2 points, got 1",
    ),
    "grid decreasing": (
        lambda: curvature.spectral_density(
            TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, grid=[1.0, 0.0]
        ),
        r"grid: expected None, a number of points ≥ 2, or a 1-D increasing array",
    ),
    "unknown start distribution": (
        lambda: curvature.spectral_density(
            TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, distribution="uniform"
        ),
        r"distribution: expected one of 'rademacher', 'gaussian', got 'uniform'",
    ),
    "spectral density without a key": (
        lambda: curvature.spectral_density(TINY_F, TINY_PARAMS, *TINY_ARGS, key=None),
        r"key: expected a PRNG key",
    ),
    "layer curvature of params that are one array, not layers": (
        lambda: curvature.layer_curvature(TINY_F, TINY_PARAMS[0]["w"], *TINY_ARGS, key=KEY),
        r"params: expected a pytree with top-level entries to split into layers.*got a single",
    ),
    "unknown trace method": (
        lambda: curvature.layer_curvature(
            TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, trace_method="dense"
        ),
        r"trace_method: expected one of 'auto', 'exact', 'hutchinson', got 'dense'",
    ),
    "layer curvature with one sample": (
        lambda: curvature.layer_curvature(TINY_F, TINY_PARAMS, *TINY_ARGS, key=KEY, samples=1),
        r"samples: expected at least 2",
    ),
    "sharpness of something that is neither an MLP nor a function": (
        lambda: curvature.track_sharpness(3, "mse", *TINY_ARGS, key=KEY),
        r"model: expected a gdjax.MLP or a function, got int",
    ),
    "sharpness with an unknown loss": (
        lambda: curvature.track_sharpness(TINY, "l1", *TINY_ARGS, key=KEY),
        r"loss: expected one of",
    ),
    "sharpness on inputs of the wrong width": (
        lambda: curvature.track_sharpness(TINY, "mse", np.ones((3, 4)), TINY_ARGS[1], key=KEY),
        r"x: expected shape \(batch, 2\)",
    ),
    "sharpness with fewer targets than inputs": (
        lambda: curvature.track_sharpness(TINY, "mse", TINY_ARGS[0], np.zeros((2, 2)), key=KEY),
        r"y: expected 3 examples",
    ),
    "sharpness with tol zero": (
        lambda: curvature.track_sharpness(TINY, "mse", *TINY_ARGS, key=KEY, tol=0.0),
        r"tol: expected a positive finite number, got 0.0",
    ),
    "sharpness recorded at a negative epoch": (
        lambda: curvature.track_sharpness(TINY, "mse", *TINY_ARGS, key=KEY)(-1, TINY_PARAMS),
        r"epoch: expected a non-negative integer, got -1",
    ),
    "cg_iters zero": (
        lambda: curvature.newton_step(TINY_F, TINY_PARAMS, *TINY_ARGS, method="cg", cg_iters=0),
        r"cg_iters: expected a positive integer, got 0",
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_input_is_refused_before_compiling(case, compilations):
    call, message = case
    with pytest.raises(ValueError, match=message):
        call()
    assert compilations.count == 0


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "softplus"])
def test_hvp_operator_equals_hvp_and_the_dense_hessian(activation, compilations):
    _, f, params, x, y = make_problem(31, (3, 5, 4, 2), activation, batch=9)
    h = dense_hessian(f, params, x, y)
    product = curvature.hvp_operator(f, params, x, y)
    vs = [
        jax.tree.map(
            lambda p, s=seed: jax.random.normal(jax.random.key(s), p.shape, p.dtype), params
        )
        for seed in range(3)
    ]
    got = [product(vs[0])]
    compiled = compilations.count
    got += [product(v) for v in vs[1:]]
    assert compilations.count == compiled  # linearised once: later products reuse the kernel
    for v, hv in zip(vs, got, strict=True):
        assert jax.tree.structure(hv) == jax.tree.structure(params)
        assert_close(flat(hv), flat(curvature.hvp(f, params, v, x, y)), rtol=1e-12)
        assert_close(flat(hv), h @ flat(v), rtol=1e-10, atol=1e-12)


def test_hvp_operator_refuses_a_v_of_another_structure():
    product = curvature.hvp_operator(TINY_F, TINY_PARAMS, *TINY_ARGS)
    with pytest.raises(ValueError, match=r"v: expected"):
        product({"w": np.ones((2, 2))})
