"""In float32 the hand gradients are at least as accurate as autodiff's, everywhere.

The cases and error measures are those of ``gdjax._precision``, which
``scripts/precision_table.py`` tabulates in docs/precision.md (same seeds). A
hand error passes if it is at most 1.1 × autodiff's, or within a few ulps of
the result (where both are that close, which of the two is ahead is a matter
of rounding order). Then the loss gradients on confident logits, directly,
against 80-digit decimal arithmetic, in float32 and float64.
"""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import _precision as P
from gdjax import activations, losses

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPS64 = float(np.finfo(np.float64).eps)


def _at_least_as_accurate(hand: float, auto: float, ulps: float) -> bool:
    return hand <= 1.1 * auto or hand <= ulps


@pytest.mark.parametrize("case", P.LOSS_CASES, ids=[c.name for c in P.LOSS_CASES])
def test_loss_gradient_is_at_least_as_accurate_as_autodiff(case):
    """And accurate in itself, to 16 ε₃₂ (at most 2.4 ε₃₂ measured), however confident."""
    m = P.measure_loss(case)
    assert _at_least_as_accurate(m.hand, m.auto, 4 * P.EPS32), (m.hand, m.auto)
    assert m.hand <= 16 * P.EPS32


@pytest.mark.parametrize("case", P.NET_CASES, ids=[c.name for c in P.NET_CASES])
def test_backprop_is_at_least_as_accurate_as_autodiff(case):
    """A few ulps: 4 ε₃₂ √L for L layers, as independent roundings grow over L layers.

    Where no formula cancels (ordinary, deep, saturated hidden units) both
    gradients are within a few ε₃₂·√L and their ratio is a coin toss of rounding
    order: over seeds 0–7 of the deep cases it ranged from 0.6 to 1.6.
    """
    m = P.measure_net(case)
    ulps = 4 * P.EPS32 * math.sqrt(case.num_layers)
    assert _at_least_as_accurate(m.hand, m.auto, ulps), (m.hand, m.auto)


@pytest.mark.parametrize("case", P.NET_CASES, ids=[c.name for c in P.NET_CASES])
def test_the_float64_truth_agrees_with_float64_autodiff(case):
    """The truth (float64 backprop) against float64 jax.grad: to ~1e-15, or, on
    confident or saturated outputs, to what autodiff's own p − 1, σ(1 − σ) or
    1 − tanh² keeps (ε₆₄ e^margin, or ε₆₄ e^{2·margin} for tanh)."""
    m = P.measure_net(case)
    if case.margin is None:
        bound = 1e-13
    else:
        rate = 2 if case.output_activation == "tanh" else 1
        bound = 10 * EPS64 * math.exp(rate * case.margin)
    assert m.truth_gap <= bound


@pytest.mark.parametrize("name", activations.names())
def test_activation_derivatives_are_at_least_as_accurate_as_autodiff(name):
    """``deriv(z)`` and ``derivative(z, σ(z))``, band by band (errors in ε₃₂)."""
    for band, err in P.measure_activation(name).items():
        for form in ("deriv", "derivative"):
            assert _at_least_as_accurate(err[form], err["auto"], 4.0), (band, form, err)


# ---------------------------------------------------------------- confident logits, directly


def _confident_logits(lead: float, dtype, n: int = 8, k: int = 10):
    """Logits ~ N(0, 1), the true class raised to lead above the row's maximum."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(n, k))
    labels = rng.integers(0, k, size=n)
    z[np.arange(n), labels] = z.max(axis=1) + lead
    return z.astype(dtype), labels


def _check_against_truth(got, truth, z, dtype):
    """Element by element: a relative error of 4 ε plus the |z_j − z_max| ε/2 that the
    rounding of z_j − z_max costs e^{z_j − z_max} (autodiff pays it too); below the
    dtype's smallest normal number, absolutely."""
    info = np.finfo(dtype)
    spread = np.ptp(z.astype(np.float64), axis=-1, keepdims=True)
    rtol = float(info.eps) * (4 + spread / 2)
    got = np.asarray(got, np.float64)
    assert np.all(np.isfinite(got))
    assert np.all(np.abs(got - truth) <= rtol * np.abs(truth) + float(info.tiny))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lead", [10, 15, 30, 100, 700])
@pytest.mark.parametrize("targets", ["labels", "one-hot"])
def test_softmax_cross_entropy_gradient_on_confident_logits(targets, lead, dtype):
    """p_y − 1 = −Σ_{j≠y} p_j to rounding: leads of 30 give ~1e-13, which
    exp(z − logsumexp z) − 1 rounds to 0 in float32; 100 and more is below float32's
    smallest normal number (gradient 0 then), and 700 still fits float64."""
    z, labels = _confident_logits(lead, dtype)
    y = labels if targets == "labels" else np.eye(z.shape[1], dtype=dtype)[labels]
    truth = P.exact_loss_grad("softmax_cross_entropy", z, labels, digits=400)
    grad = losses.softmax_cross_entropy.grad(jnp.asarray(z), y)
    assert grad.dtype == dtype
    _check_against_truth(grad, truth, z, dtype)
    assert np.all(np.asarray(grad)[np.arange(len(labels)), labels] <= 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lead", [10, 15, 30, 100, 700])
def test_sigmoid_binary_cross_entropy_gradient_on_confident_logits(lead, dtype):
    """σ(z) − 1 = −σ(−z) for y = 1, z ≫ 0 (and σ(z) for y = 0, z ≪ 0), to a few ulps."""
    rng = np.random.default_rng(2)
    magnitude = lead + np.abs(rng.normal(size=(8, 3)))
    z = np.concatenate([magnitude, -magnitude], axis=1).astype(dtype)
    y = np.concatenate([np.ones((8, 3)), np.zeros((8, 3))], axis=1).astype(dtype)
    truth = P.exact_loss_grad("sigmoid_binary_cross_entropy", z, y, digits=400)
    grad = np.asarray(losses.sigmoid_binary_cross_entropy.grad(jnp.asarray(z), y), np.float64)
    info = np.finfo(dtype)
    assert np.all(np.abs(grad - truth) <= 4 * float(info.eps) * np.abs(truth) + float(info.tiny))


def test_probability_rows_are_exact_to_rounding():
    """Soft targets, both forms of the leading class's entry: Σ_{j≠c} y_j − S(1 − p_c)
    where y_c carries most of the mass (label smoothing on a confident row), p_c S − y_c
    where it does not (the leading class is the wrong one, or the row is nearly flat)."""
    z = np.array([[20.0, 0.0, 1.0], [12.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    y = np.array([[0.999, 0.0005, 0.0005], [0.98, 0.01, 0.01], [0.1, 0.6, 0.3], [0.0, 0.5, 0.5]])
    z, y = z.astype(np.float32), y.astype(np.float32)
    truth = P.exact_loss_grad("softmax_cross_entropy", z, y)
    grad = np.asarray(losses.softmax_cross_entropy.grad(jnp.asarray(z), y), np.float64)
    np.testing.assert_allclose(grad, truth, rtol=16 * P.EPS32, atol=0)


@pytest.mark.parametrize("name", losses.names())
def test_loss_gradients_stay_jit_vmap_and_grad_compatible(name):
    """The hand gradient traces under jit and vmap (a row at a time) and differentiates
    to the loss's Hessian-vector product (what the curvature code takes)."""
    loss = losses.get(name)
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.normal(size=(5, 3)) * 8)
    y = {
        "mse": jnp.asarray(rng.normal(size=(5, 3))),
        "softmax_cross_entropy": jnp.asarray(rng.integers(0, 3, size=5)),
        "sigmoid_binary_cross_entropy": jnp.asarray(rng.uniform(size=(5, 3))),
    }[name]
    np.testing.assert_allclose(jax.jit(loss.grad)(z, y), loss.grad(z, y), rtol=1e-14)
    rows = jax.vmap(lambda zi, yi: loss.grad(zi[None], yi[None])[0])(z, y)
    np.testing.assert_allclose(rows, 5 * loss.grad(z, y), rtol=1e-13)
    v = jnp.asarray(rng.normal(size=(5, 3)))
    hand = jax.jvp(lambda u: loss.grad(u, y), (z,), (v,))[1]
    auto = jax.jvp(jax.grad(lambda u: loss.fn(u, y)), (z,), (v,))[1]
    np.testing.assert_allclose(hand, auto, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- the script and the page


def _script():
    path = ROOT / "scripts" / "precision_table.py"
    spec = importlib.util.spec_from_file_location("precision_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_replaces_only_what_is_between_the_markers():
    script = _script()
    page = f"# Title\n\nbefore\n\n{script.START}\nold table\n{script.END}\n\nafter\n"
    new = f"{script.START}\nnew table\n{script.END}"
    assert script.update_page(page, new) == f"# Title\n\nbefore\n\n{new}\n\nafter\n"
    assert script.update_page("# Title\n", new) == f"# Title\n\n{new}\n"


def test_the_page_holds_one_row_per_case():
    script = _script()
    text = (ROOT / "docs" / "precision.md").read_text()
    assert text.count(script.START) == 1 and text.count(script.END) == 1
    block = text.split(script.START)[1].split(script.END)[0]
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    forms = sum(2 + (activations.get(n).deriv_with_output is not None) for n in activations.names())
    header_rows = 3
    assert len(rows) == len(P.LOSS_CASES) + len(P.NET_CASES) + forms + header_rows
