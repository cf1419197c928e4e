"""float32 gradients against the truth: the case tables and the error measures.

Shared by ``scripts/precision_table.py``, which writes the tables of
``docs/precision.md``, and ``tests/test_precision.py``, which asserts them, so
the page and the tests measure the same thing. Three parts:

1. Loss gradients ∂C/∂z on given float32 logits (:data:`LOSS_CASES`): the hand
   ``Loss.grad`` and ``jax.grad(Loss.fn)`` against the textbook formula
   evaluated in 80-digit decimal arithmetic, so the truth owes nothing to the
   formulas under test. Error: ``‖g − t‖₂ / ‖t‖₂`` over the (n, k) array.
2. Networks (:data:`NET_CASES`): ∂C/∂θ for every params leaf θ, by the
   hand-written backward pass (:func:`gdjax.backprop`) and by ``jax.grad`` of the
   same forward pass (:func:`gdjax.objective`), both in float32 and jitted,
   against the truth: the hand gradient in float64 of the very same float32
   params, inputs and targets (cast to float64, exactly), itself checked against
   float64 autodiff (``truth_gap``). Error: the worst leaf's,
   ``max_θ ‖g_θ − t_θ‖₂ / ‖t_θ‖₂``, so the first layers of a deep network, whose
   gradients are orders of magnitude smaller than the last layer's, count as
   much as the last.
3. Activation derivatives σ'(z) (:data:`ACTIVATION_BANDS`): ``deriv(z)``,
   ``derivative(z, σ(z))`` (what backprop calls) and ``jax.grad(fn)`` on a dense
   float32 grid of each stretch of z, against the float64 ``deriv`` (itself
   checked against closed forms in tests/test_activations_losses.py). Error: the
   largest relative error over the grid, in units of ε₃₂ = 2⁻²³.

Everything needs ``jax_enable_x64`` (for the float64 truth).
"""

from __future__ import annotations

import dataclasses
import decimal
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import activations, losses
from gdjax.backprop import backprop, objective
from gdjax.mlp import MLP, Params

__all__ = [
    "EPS32",
    "LossCase",
    "NetCase",
    "Measurement",
    "LOSS_CASES",
    "NET_CASES",
    "ACTIVATION_BANDS",
    "GELU_ROOT",
    "loss_problem",
    "exact_loss_grad",
    "measure_loss",
    "net_problem",
    "measure_net",
    "measure_activation",
    "rel_error",
]

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23

_NEED_X64 = (
    "gdjax._precision computes the truth in float64: call "
    'jax.config.update("jax_enable_x64", True) before creating any array.'
)


def _require_x64() -> None:
    if not jax.config.jax_enable_x64:
        raise RuntimeError(_NEED_X64)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """float32 errors of the hand and the autodiff gradient against the truth."""

    hand: float
    auto: float
    truth_gap: float = 0.0  # float64 autodiff against the float64 truth (networks only)


def rel_error(g, truth) -> float:
    """``max_θ ‖g_θ − t_θ‖₂ / ‖t_θ‖₂`` over the leaves θ of a pytree (one array: one leaf)."""
    errors = []
    for leaf, true in zip(jax.tree.leaves(g), jax.tree.leaves(truth), strict=True):
        leaf, true = np.asarray(leaf, np.float64), np.asarray(true, np.float64)
        errors.append(np.linalg.norm(leaf - true) / np.linalg.norm(true))
    return float(max(errors))


# ---------------------------------------------------------------- 1. loss gradients


@dataclasses.dataclass(frozen=True)
class LossCase:
    """Logits ``z`` of shape ``(n, k)``, ``z ~ N(0, 1)``, and targets; with ``lead`` L > 0:

    - softmax cross-entropy: the true class's logit is raised to max_j z_j + L
      (the row is confident and right: p_y ≈ 1 − (k − 1)e^{−L});
    - sigmoid binary cross-entropy: ``z = ±(L + |N(0, 1)|)``, the sign of the target.

    ``targets``: ``"labels"`` (integer labels for softmax, 0/1 for sigmoid),
    ``"one-hot"`` (float rows) or ``"smoothed"`` (label smoothing: 0.99 on the
    true class and 0.01/k on each; 0.99/0.01 for sigmoid).
    """

    loss: str
    targets: str
    lead: float
    seed: int = 0
    n: int = 64
    k: int = 10

    @property
    def name(self) -> str:
        return f"{self.loss}-{self.targets}-lead{self.lead:g}"


LOSS_CASES: tuple[LossCase, ...] = (
    *(
        LossCase("softmax_cross_entropy", targets, lead)
        for targets in ("labels", "one-hot", "smoothed")
        for lead in (0, 10, 15, 30)
    ),
    *(
        LossCase("sigmoid_binary_cross_entropy", targets, lead, k=4)
        for targets in ("labels", "smoothed")
        for lead in (0, 10, 15, 30)
    ),
)


def loss_problem(case: LossCase) -> tuple[np.ndarray, np.ndarray]:
    """``(z, y)``: float32 logits and the targets of ``case``."""
    rng = np.random.default_rng(case.seed)
    n, k = case.n, case.k
    z = rng.normal(size=(n, k))
    if case.loss == "softmax_cross_entropy":
        labels = rng.integers(0, k, size=n)
        if case.lead:
            z[np.arange(n), labels] = z.max(axis=-1) + case.lead
        one_hot = np.eye(k)[labels]
        y = {"labels": labels, "one-hot": one_hot, "smoothed": 0.99 * one_hot + 0.01 / k}
    else:
        hard = rng.integers(0, 2, size=(n, k)).astype(np.float64)
        if case.lead:
            z = (2 * hard - 1) * (case.lead + np.abs(z))
        y = {"labels": hard, "smoothed": np.where(hard > 0, 0.99, 0.01)}
    y = y[case.targets]
    return z.astype(np.float32), (y if y.dtype.kind == "i" else y.astype(np.float32))


def exact_loss_grad(loss: str, z: np.ndarray, y: np.ndarray, digits: int = 80) -> np.ndarray:
    """∂C/∂z from the textbook formula in ``digits``-digit decimal arithmetic, as float64.

    softmax: ``(softmax(z)·Σ_k y_k − y) / n``; sigmoid: ``(σ(z) − y) / n``; every
    float input is converted exactly. The cancellation in p_y − 1 costs about
    lead / ln 10 digits (13 for a lead of 30), so ``digits`` must well exceed that.
    """
    n, k = z.shape
    if y.ndim == 1:
        y = np.eye(k)[y]
    out = np.empty((n, k))
    with decimal.localcontext(decimal.Context(prec=digits)):
        for i in range(n):
            zi = [decimal.Decimal(float(v)) for v in z[i]]
            yi = [decimal.Decimal(float(v)) for v in y[i]]
            if loss == "softmax_cross_entropy":
                top = max(zi)
                e = [(v - top).exp() for v in zi]
                total, mass = sum(e), sum(yi)
                g = [ej / total * mass - yj for ej, yj in zip(e, yi, strict=True)]
            else:
                g = [1 / (1 + (-v).exp()) - yj for v, yj in zip(zi, yi, strict=True)]
            out[i] = [float(gj / n) for gj in g]
    return out


@functools.partial(jax.jit, static_argnums=0)
def _loss_grads(loss: losses.Loss, z, y) -> tuple[jax.Array, jax.Array]:
    return loss.grad(z, y), jax.grad(loss.fn)(z, y)


def measure_loss(case: LossCase) -> Measurement:
    """The float32 errors of ``Loss.grad`` and ``jax.grad(Loss.fn)`` for ``case``."""
    _require_x64()
    z, y = loss_problem(case)
    hand, auto = _loss_grads(losses.get(case.loss), jnp.asarray(z), y)
    truth = exact_loss_grad(case.loss, z, y)
    return Measurement(hand=rel_error(hand, truth), auto=rel_error(auto, truth))


# ---------------------------------------------------------------- 2. networks

REGIMES = {
    "ordinary": "default (Glorot) init, random targets",
    "confident": "w^L, b^L scaled and x chosen so every example's margin is near `margin`; "
    "targets that agree with the output",
    "saturated": "as confident, for a sigmoid/tanh output under mse",
    "saturated hidden": "init scale 4, so that hidden units saturate; random targets",
    "deep": "16 layers of 16 units, default init, random targets",
}


@dataclasses.dataclass(frozen=True)
class NetCase:
    """One network row of the precision table.

    Attributes:
      loss: a name from :func:`gdjax.losses.names`.
      targets: ``"labels"`` (integer labels for softmax, 0/1 for sigmoid),
        ``"one-hot"``, ``"smoothed"`` (label smoothing, 0.99 on the class) or
        ``"random"`` (uniform probability rows, or uniform in [0, 1]), or
        ``"real"`` (mse: in the output's range, or its limit where it saturates).
      output_activation, activation: names from :func:`gdjax.activations.names`.
      regime: a key of :data:`REGIMES`.
      sizes: layer widths ``(n_0, …, n_L)``.
      margin: the lead of the top logit over the next (softmax) or |z^L| (one
        output unit) that every example of a confident or saturated case has,
        to within a few percent.
      seed: the PRNG key of the params and the NumPy seed of x and y.
      batch: the number of examples.
    """

    loss: str
    targets: str
    output_activation: str = "identity"
    activation: str = "tanh"
    regime: str = "ordinary"
    sizes: tuple[int, ...] = (8, 32, 32, 4)
    margin: float | None = None
    seed: int = 0
    batch: int = 64

    @property
    def name(self) -> str:
        parts = [self.loss, self.targets, self.output_activation, self.activation, self.regime]
        if self.margin is not None:
            parts.append(f"{self.margin:g}")
        return "-".join(parts).replace(" ", "_")

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1


_ONE_OUT = (8, 32, 32, 1)
_DEEP = (8, *([16] * 15), 4)

NET_CASES: tuple[NetCase, ...] = (
    # softmax cross-entropy on logits: integer labels, one-hot rows, probability rows
    NetCase("softmax_cross_entropy", "labels"),
    *(
        NetCase("softmax_cross_entropy", "labels", regime="confident", margin=m)
        for m in (10, 15, 30)
    ),
    NetCase("softmax_cross_entropy", "one-hot", regime="confident", margin=15),
    NetCase("softmax_cross_entropy", "random"),
    NetCase("softmax_cross_entropy", "smoothed", regime="confident", margin=15),
    # sigmoid binary cross-entropy on logits: 0/1 and fractional targets
    NetCase("sigmoid_binary_cross_entropy", "labels", sizes=_ONE_OUT),
    *(
        NetCase(
            "sigmoid_binary_cross_entropy", "labels", regime="confident", margin=m, sizes=_ONE_OUT
        )
        for m in (10, 15)
    ),
    NetCase("sigmoid_binary_cross_entropy", "random", sizes=_ONE_OUT),
    NetCase(
        "sigmoid_binary_cross_entropy", "smoothed", regime="confident", margin=15, sizes=_ONE_OUT
    ),
    # mse through identity, sigmoid and tanh outputs
    NetCase("mse", "real"),
    NetCase("mse", "real", output_activation="sigmoid", sizes=_ONE_OUT),
    NetCase("mse", "real", "sigmoid", regime="saturated", margin=8, sizes=_ONE_OUT),
    NetCase("mse", "real", output_activation="tanh", sizes=_ONE_OUT),
    NetCase("mse", "real", "tanh", regime="saturated", margin=5, sizes=_ONE_OUT),
    # deep sigmoid and tanh networks
    NetCase("mse", "real", activation="sigmoid", regime="deep", sizes=_DEEP),
    NetCase("softmax_cross_entropy", "labels", activation="tanh", regime="deep", sizes=_DEEP),
    # the other hidden activations whose σ' is not a constant, ordinary and saturated
    *(
        NetCase("softmax_cross_entropy", "labels", activation=name, regime=regime)
        for name in ("sigmoid", "softplus", "elu", "gelu")
        for regime in ("ordinary", "saturated hidden")
    ),
    NetCase("softmax_cross_entropy", "labels", regime="saturated hidden"),
)


def _margins(case: NetCase, z: np.ndarray) -> np.ndarray:
    """Per example: the lead of the top logit over the next (softmax), else min_k |z_k|."""
    if case.loss == "softmax_cross_entropy":
        top = np.sort(z, axis=-1)
        return top[:, -1] - top[:, -2]
    return np.min(np.abs(z), axis=-1)


def _targets(case: NetCase, z: np.ndarray, rng: np.random.Generator):
    """Targets that agree with the output z^L (confident, saturated) or drawn at random."""
    n, k = z.shape
    agree = case.regime in ("confident", "saturated")
    if case.loss == "softmax_cross_entropy":
        labels = np.argmax(z, axis=-1) if agree else rng.integers(0, k, size=n)
        one_hot = np.eye(k)[labels]
        y = {
            "labels": labels,
            "one-hot": one_hot,
            "smoothed": 0.99 * one_hot + 0.01 / k,
            "random": rng.dirichlet(np.ones(k), size=n),
        }[case.targets]
    elif case.loss == "sigmoid_binary_cross_entropy":
        hard = (z > 0) if agree else rng.integers(0, 2, size=(n, k)).astype(bool)
        y = {
            "labels": hard.astype(np.float32),
            "smoothed": np.where(hard, 0.99, 0.01),
            "random": rng.uniform(size=(n, k)),
        }[case.targets]
    elif case.output_activation == "sigmoid":  # mse: in the output's range, or its limit
        y = (z > 0) if agree else rng.uniform(size=(n, k))
    elif case.output_activation == "tanh":
        y = np.sign(z) if agree else rng.uniform(-1, 1, size=(n, k))
    else:
        y = rng.normal(size=(n, k))
    y = np.asarray(y)
    return y if y.dtype.kind == "i" else y.astype(np.float32)


def net_problem(case: NetCase) -> tuple[MLP, losses.Loss, Params, np.ndarray, np.ndarray]:
    """``(model, loss, params, x, y)`` for ``case``; params and x in float32.

    For a confident or saturated case, w^L and b^L are scaled so that the median
    margin (see :class:`NetCase`) over 32·batch draws of x is ``margin``, and the
    ``batch`` draws whose margin is nearest ``margin`` are kept.
    """
    _require_x64()
    model = MLP(case.sizes, activation=case.activation, output_activation=case.output_activation)
    scale = 4.0 if case.regime == "saturated hidden" else 1.0
    params = model.init(jax.random.key(case.seed), scale=scale, dtype=jnp.float64)
    rng = np.random.default_rng(case.seed)
    if case.margin is None:
        x = rng.normal(size=(case.batch, case.sizes[0]))
    else:
        pool = rng.normal(size=(32 * case.batch, case.sizes[0]))
        factor = case.margin / np.median(
            _margins(case, np.asarray(model.trace(params, pool)[0][-1]))
        )
        params = [*params[:-1], {name: factor * leaf for name, leaf in params[-1].items()}]
        margins = _margins(case, np.asarray(model.trace(params, pool)[0][-1]))
        x = pool[np.argsort(np.abs(margins - case.margin))[: case.batch]]
    params = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), params)
    x = x.astype(np.float32)
    z = np.asarray(model.trace(params, x)[0][-1])
    return model, losses.get(case.loss), params, x, _targets(case, z, rng)


def _as_float64(tree):
    def cast(a):
        a = np.asarray(a)
        return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a

    return jax.tree.map(cast, tree)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _grads(model: MLP, loss: losses.Loss, params: Params, x, y) -> tuple[Params, Params]:
    """``(hand, autodiff)`` gradients, one compilation per model, loss, shapes and dtype."""
    return backprop(model, loss, params, x, y)[1], jax.grad(objective(model, loss))(params, x, y)


def measure_net(case: NetCase) -> Measurement:
    """The float32 hand and autodiff errors of ``case`` against the float64 truth."""
    model, loss, params, x, y = net_problem(case)
    hand, auto = _grads(model, loss, params, x, y)
    truth, auto64 = _grads(model, loss, *_as_float64((params, x, y)))
    return Measurement(
        hand=rel_error(hand, truth), auto=rel_error(auto, truth), truth_gap=rel_error(auto64, truth)
    )


# ---------------------------------------------------------------- 3. activation derivatives

ACTIVATION_BANDS: tuple[tuple[float, float], ...] = (
    (-40, -10),
    (-10, -3),
    (-3, -1),
    (-1, 1),
    (1, 3),
    (3, 10),
    (10, 40),
)
GELU_ROOT = -0.7517915246  # gelu'(z) = 0 here; relative error is unbounded near it
_GRID = 20001
_SMALLEST = 1e-30  # below this σ' (or a factor of it) nears float32's underflow


@functools.partial(jax.jit, static_argnums=0)
def _derivatives(act: activations.Activation, z) -> dict[str, jax.Array]:
    return {
        "auto": jax.vmap(jax.grad(act.fn))(z),
        "deriv": act.deriv(z),
        "derivative": act.derivative(z, act.fn(z)),
    }


def measure_activation(name: str) -> dict[tuple[float, float], dict[str, float]]:
    """Largest relative error, in units of ε₃₂, of σ' over a float32 grid of each band.

    Returns, for each band of :data:`ACTIVATION_BANDS`, ``{"auto": …, "deriv": …,
    "derivative": …}`` for ``jax.grad(fn)``, ``deriv(z)`` and ``derivative(z, fn(z))``
    (jitted). Left out: grid points where σ'(z) < 1e-30 (near float32's underflow,
    where XLA flushes to zero), and, for gelu, |z − z₀| < 0.05 around the root z₀
    of gelu', where every float32 evaluation has an absolute error of about
    0.15 ε₃₂ and so an unbounded relative one.
    """
    _require_x64()
    act = activations.get(name)
    grids = [np.linspace(lo, hi, _GRID).astype(np.float32) for lo, hi in ACTIVATION_BANDS]
    if name == "gelu":
        grids = [z[np.abs(z - GELU_ROOT) > 0.05] for z in grids]
    z = np.concatenate(grids)
    truth = np.asarray(act.deriv(jnp.asarray(z, jnp.float64)))
    got = {form: np.asarray(g, np.float64) for form, g in _derivatives(act, jnp.asarray(z)).items()}
    out, start = {}, 0
    for band, grid in zip(ACTIVATION_BANDS, grids, strict=True):
        part = slice(start, start + len(grid))
        start += len(grid)
        t = truth[part]
        kept = np.abs(t) >= _SMALLEST
        out[band] = {
            form: float(np.max(np.abs(g[part][kept] - t[kept]) / np.abs(t[kept]), initial=0.0))
            / EPS32
            for form, g in got.items()
        }
    return out
