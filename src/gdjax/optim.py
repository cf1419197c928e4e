"""Gradient-descent update rules written from their published equations.

Each rule is an ``optax.GradientTransformation``: ``init(params) → state`` and
``update(g, state, params=None) → (u, state)``. Here θ is any leaf of the params
pytree, g = ∂C/∂θ its gradient, η the learning rate, t = 1, 2, … the step, and
the update ``u`` already carries the factor −η: apply it as θ ← θ + u with
``optax.apply_updates``. Products, squares, roots and quotients act element by
element, and every accumulator starts at zero.

    sgd        θ ← θ − η g                                   Robbins & Monro (1951)
    momentum   v ← β v + g,           θ ← θ − η v             Polyak (1964)
    nesterov   v ← β v + g,           θ ← θ − η (g + β v)     Nesterov (1983);
                                                              Sutskever et al. (2013)
    rmsprop    ν ← ρ ν + (1 − ρ) g²,  θ ← θ − η g / √(ν + ε)  Tieleman & Hinton (2012)
    adam       m ← β₁ m + (1 − β₁) g,  v ← β₂ v + (1 − β₂) g²,
               m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ),
               θ ← θ − η m̂ / (√v̂ + ε)                         Kingma & Ba (2015)
    adamw      m, v, m̂, v̂ as in adam,
               θ ← θ − η (m̂ / (√v̂ + ε) + λ θ)                 Loshchilov & Hutter (2019)

Each reproduces its optax counterpart to rounding (checked over 200 steps of an
MLP in ``tests/test_optim.py``): ``optax.sgd(η)``, ``optax.sgd(η, momentum=β)``,
``optax.sgd(η, momentum=β, nesterov=True)``, ``optax.rmsprop(η, ρ, ε)``,
``optax.adam(η, β₁, β₂, ε)`` and ``optax.adamw(η, β₁, β₂, ε, weight_decay=λ)``.

The learning rate is a positive number or, as in optax, a schedule: a callable
``k ↦ η_k`` of the number k = 0, 1, … of updates already made (for instance
``optax.exponential_decay(0.1, 100, 0.5)``), evaluated inside ``update``.
Hyper-parameters are checked when the transformation is built, and a bad one
(or, in :func:`get`, a missing or unknown one) raises ``ValueError`` naming it.
:func:`get` builds a rule from its name.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax._checks import is_concrete

__all__ = [
    "SgdState",
    "MomentumState",
    "RmspropState",
    "AdamState",
    "sgd",
    "momentum",
    "nesterov",
    "rmsprop",
    "adam",
    "adamw",
    "get",
    "names",
    "check_schedule",
]


# ---------------------------------------------------------------- states


class SgdState(NamedTuple):
    """State of :func:`sgd`: ``count`` (int32) = updates made so far (read by schedules)."""

    count: jax.Array


class MomentumState(NamedTuple):
    """State of :func:`momentum` and :func:`nesterov`: the count and the velocity v."""

    count: jax.Array
    velocity: optax.Params


class RmspropState(NamedTuple):
    """State of :func:`rmsprop`: the count and ν, the running mean of g²."""

    count: jax.Array
    nu: optax.Params


class AdamState(NamedTuple):
    """State of :func:`adam` and :func:`adamw`: the step t (``count``), m (``mu``) and v
    (``nu``), uncorrected."""

    count: jax.Array
    mu: optax.Params
    nu: optax.Params


# ---------------------------------------------------------------- hyper-parameter checks

_LEARNING_RATE = "a positive finite number or a schedule (a callable of the update count)"


def _real(value) -> float | None:
    """``value`` as a float if it is a real scalar (not a bool), else None."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if (
        isinstance(value, np.ndarray | jax.Array)
        and value.ndim == 0
        and (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer))
    ):
        return float(value)
    return None


SCHEDULE_STEPS = (0, 1, 10, 100, 1_000, 10_000, 100_000)
"""The update counts k at which a learning-rate schedule is read when it is built."""


def check_schedule(schedule: Callable, name: str = "learning_rate") -> Callable:
    """A schedule ``k ↦ η_k``, read at :data:`SCHEDULE_STEPS` (concrete ints, outside
    ``jit``): a ValueError naming ``name`` if a value is negative, NaN or infinite
    (η_k = 0 is allowed: warm-up and decay-to-zero schedules pass through it).

    A schedule that cannot be called on a plain int (one that needs a traced
    count) is read inside ``update`` only, unchecked.
    """
    for k in SCHEDULE_STEPS:
        try:
            value = schedule(k)
        except Exception:  # not callable on a Python int: nothing to read here
            return schedule
        if not is_concrete(value):
            return schedule
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}: expected a schedule whose values η_k are real numbers, got "
                f"{type(value).__name__} at k = {k}."
            ) from None
        if value.shape != ():
            raise ValueError(
                f"{name}: expected a schedule whose values η_k are scalars, got shape "
                f"{value.shape} at k = {k}."
            )
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"{name}: expected a schedule whose values η_k are finite and ≥ 0 (a "
                f"negative η ascends the loss), got η_{k} = {float(value)!r}."
            )
    return schedule


def _check_learning_rate(value):
    if callable(value):
        return check_schedule(value)
    if not is_concrete(value):
        return value
    x = _real(value)
    if x is None or not (0 < x < math.inf):
        raise ValueError(f"learning_rate: expected {_LEARNING_RATE}, got {value!r}.")
    return x


def _check_decay(name: str, value):
    """A decay rate in [0, 1): the weight the old value keeps at each step."""
    if not is_concrete(value):
        return value
    x = _real(value)
    if x is None or not (0 <= x < 1):
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}.")
    return x


def _check_eps(value):
    if not is_concrete(value):
        return value
    x = _real(value)
    if x is None or not (0 < x < math.inf):
        raise ValueError(
            f"eps: expected a positive finite number (it keeps the denominator away from "
            f"zero where g = 0), got {value!r}."
        )
    return x


def _check_weight_decay(value):
    if not is_concrete(value):
        return value
    x = _real(value)
    if x is None or not (0 <= x < math.inf):
        raise ValueError(
            f"weight_decay: expected a non-negative finite number (λ, the fraction of θ "
            f"removed per unit of learning rate), got {value!r}."
        )
    return x


_NEEDS_PARAMS = (
    "params: adamw's update needs the current params θ for its decay term −ηλθ, got None; "
    "call opt.update(grads, state, params)."
)

# ---------------------------------------------------------------- shared pieces


def _zeros_like(params: optax.Params) -> optax.Params:
    return jax.tree.map(jnp.zeros_like, params)


def _new_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def _descend(learning_rate, count: jax.Array, directions: optax.Updates) -> optax.Updates:
    """The update ``−η_k · d`` for each leaf d, with η_k the learning rate at update count k.

    The step size is cast to each leaf's dtype, so float32 params stay float32.
    """
    eta = learning_rate(count) if callable(learning_rate) else learning_rate
    return jax.tree.map(lambda d: jnp.asarray(-eta, d.dtype) * d, directions)


# ---------------------------------------------------------------- update rules


def sgd(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    """Plain gradient descent: a step of length η against the gradient.

    For every leaf θ of the params with gradient g = ∂C/∂θ and learning rate η:

    .. math::

        θ ← θ − η g

    This is the seed's rule ``w ← w − η ∂C/∂w``, unchanged. It matches
    ``optax.sgd(learning_rate)``.

    Args:
      learning_rate: η, a positive number, or a schedule ``k ↦ η_k`` of the
        number k of updates already made.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`SgdState`; its
      update is ``−η g``.

    Examples:
      >>> opt = sgd(learning_rate=0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([0.5, -3.0])}, state)
      >>> [round(float(u), 4) for u in updates["w"]]
      [-0.05, 0.3]

    References:
      Robbins & Monro (1951), "A stochastic approximation method";
      Nielsen, *Neural Networks and Deep Learning*, ch. 1.
    """
    learning_rate = _check_learning_rate(learning_rate)

    def init_fn(params):
        del params
        return SgdState(count=_new_count())

    def update_fn(updates, state, params=None):
        del params
        updates = _descend(learning_rate, state.count, updates)
        return updates, SgdState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def momentum(
    learning_rate: optax.ScalarOrSchedule, beta: float = 0.9
) -> optax.GradientTransformation:
    """Heavy-ball momentum: descend along a decaying sum of past gradients.

    The velocity v (zero at the start) accumulates the gradients g = ∂C/∂θ,
    each step keeping a fraction β of the old velocity; θ then moves by η
    times the velocity:

    .. math::

        v ← β v + g,\\quad θ ← θ − η v

    With a constant gradient the step tends to η g / (1 − β). This is the form
    of ``optax.sgd(learning_rate, momentum=beta)``, which it matches; Polyak
    writes it as θ_{t+1} = θ_t − η g_t + β (θ_t − θ_{t−1}), the same iteration.

    Args:
      learning_rate: η, a positive number, or a schedule ``k ↦ η_k``.
      beta: β in [0, 1), the momentum coefficient (β = 0 is :func:`sgd`).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`MomentumState`;
      its update is ``−η v``.

    Examples:
      >>> opt = momentum(learning_rate=0.1, beta=0.9)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = opt.init(params)
      >>> g = {"w": jnp.array([0.5, -3.0])}
      >>> updates, state = opt.update(g, state)  # v = g
      >>> [round(float(u), 4) for u in updates["w"]]
      [-0.05, 0.3]
      >>> updates, state = opt.update(g, state)  # v = 0.9 g + g
      >>> [round(float(u), 4) for u in updates["w"]]
      [-0.095, 0.57]

    References:
      Polyak (1964), "Some methods of speeding up the convergence of iteration
      methods", USSR Computational Mathematics and Mathematical Physics 4(5).
    """
    learning_rate = _check_learning_rate(learning_rate)
    beta = _check_decay("beta", beta)

    def init_fn(params):
        return MomentumState(count=_new_count(), velocity=_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        velocity = jax.tree.map(lambda v, g: beta * v + g, state.velocity, updates)
        updates = _descend(learning_rate, state.count, velocity)
        return updates, MomentumState(count=optax.safe_increment(state.count), velocity=velocity)

    return optax.GradientTransformation(init_fn, update_fn)


def nesterov(
    learning_rate: optax.ScalarOrSchedule, beta: float = 0.9
) -> optax.GradientTransformation:
    """Nesterov's accelerated gradient: momentum with a look-ahead step.

    The velocity v is updated as in :func:`momentum`, but θ moves by the
    gradient g = ∂C/∂θ plus β times the *new* velocity:

    .. math::

        v ← β v + g,\\quad θ ← θ − η (g + β v)

    Sutskever et al. (2013) write the method as v ← β v − η ∇C(θ + β v),
    θ ← θ + v, with the gradient taken at the look-ahead point θ + β v. Tracking
    the look-ahead point itself as the parameters gives the form above
    (Bengio, Boulanger-Lewandowski & Pascanu 2013), in which the gradient is
    taken at the current parameters. It is the form of
    ``optax.sgd(learning_rate, momentum=beta, nesterov=True)``, which it matches.

    Args:
      learning_rate: η, a positive number, or a schedule ``k ↦ η_k``.
      beta: β in [0, 1), the momentum coefficient.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`MomentumState`;
      its update is ``−η (g + β v)``.

    Examples:
      >>> opt = nesterov(learning_rate=0.1, beta=0.9)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([0.5, -3.0])}, state)  # v = g
      >>> [round(float(u), 4) for u in updates["w"]]  # −η (g + 0.9 g)
      [-0.095, 0.57]

    References:
      Nesterov (1983), "A method for solving the convex programming problem
      with convergence rate O(1/k²)", Soviet Mathematics Doklady 27;
      Sutskever, Martens, Dahl & Hinton (2013), "On the importance of
      initialization and momentum in deep learning", ICML;
      Bengio, Boulanger-Lewandowski & Pascanu (2013), "Advances in optimizing
      recurrent networks", ICASSP.
    """
    learning_rate = _check_learning_rate(learning_rate)
    beta = _check_decay("beta", beta)

    def init_fn(params):
        return MomentumState(count=_new_count(), velocity=_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        velocity = jax.tree.map(lambda v, g: beta * v + g, state.velocity, updates)
        look_ahead = jax.tree.map(lambda v, g: g + beta * v, velocity, updates)
        updates = _descend(learning_rate, state.count, look_ahead)
        return updates, MomentumState(count=optax.safe_increment(state.count), velocity=velocity)

    return optax.GradientTransformation(init_fn, update_fn)


def rmsprop(
    learning_rate: optax.ScalarOrSchedule, decay: float = 0.9, eps: float = 1e-8
) -> optax.GradientTransformation:
    """RMSprop: divide the gradient by a running root mean square of its recent values.

    ν (zero at the start) is an exponential moving average of the squared
    gradient g² with decay ρ; each coordinate's step is g scaled by the inverse
    of its root, so every coordinate moves at a similar rate:

    .. math::

        ν ← ρ ν + (1 − ρ) g²,\\quad θ ← θ − η \\frac{g}{\\sqrt{ν + ε}}

    As in ``optax.rmsprop`` (its default ``eps_in_sqrt=True``, ``initial_scale=0``),
    ε sits *inside* the square root, unlike PyTorch's ``g / (√ν + ε)`` (so
    ε = 1e-8 here damps like 1e-4 there); and there is no bias correction, so
    the first step has length η / √(1 − ρ) per coordinate (≈ 3.16 η for
    ρ = 0.9). It matches ``optax.rmsprop(learning_rate, decay, eps)``.

    Args:
      learning_rate: η, a positive number, or a schedule ``k ↦ η_k``.
      decay: ρ in [0, 1), the weight the running mean keeps at each step.
      eps: ε > 0, added to ν under the square root.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`RmspropState`;
      its update is ``−η g / √(ν + ε)``.

    Examples:
      >>> opt = rmsprop(learning_rate=0.1, decay=0.9)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([0.5, -3.0])}, state)
      >>> [round(float(u), 4) for u in updates["w"]]  # −η sign(g) / √(1 − ρ): no bias correction
      [-0.3162, 0.3162]

    References:
      Tieleman & Hinton (2012), *Neural Networks for Machine Learning*,
      Coursera, lecture 6.5, "rmsprop: divide the gradient by a running
      average of its recent magnitude".
    """
    learning_rate = _check_learning_rate(learning_rate)
    decay = _check_decay("decay", decay)
    eps = _check_eps(eps)

    def init_fn(params):
        return RmspropState(count=_new_count(), nu=_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        # The terms in optax's order: XLA may fuse a·b + c·d into one fused
        # multiply-add, and which product it fuses decides the last bit.
        nu = jax.tree.map(lambda n, g: (1 - decay) * g**2 + decay * n, state.nu, updates)
        scaled = jax.tree.map(lambda g, n: g / jnp.sqrt(n + eps), updates, nu)
        updates = _descend(learning_rate, state.count, scaled)
        return updates, RmspropState(count=optax.safe_increment(state.count), nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Adam: steps from bias-corrected moving averages of the gradient and its square.

    m and v (zero at the start) are exponential moving averages of the gradient
    g and of g², with decays β₁ and β₂. Because they start at zero they are
    biased towards zero early on; dividing by 1 − βᵗ at step t = 1, 2, …
    removes that bias, giving m̂ and v̂:

    .. math::

        m ← β_1 m + (1 − β_1) g,\\quad v ← β_2 v + (1 − β_2) g^2,

        \\hat m = \\frac{m}{1 − β_1^t},\\quad \\hat v = \\frac{v}{1 − β_2^t},\\quad
        θ ← θ − η \\frac{\\hat m}{\\sqrt{\\hat v} + ε}

    Thanks to the correction the first step is −η g / (|g| + ε) ≈ −η sign(g).
    ε sits outside the square root, as in the paper and in
    ``optax.adam(learning_rate, b1, b2, eps)``, which it matches.

    Args:
      learning_rate: η, a positive number, or a schedule ``k ↦ η_k``.
      b1: β₁ in [0, 1), the decay of the first moment m.
      b2: β₂ in [0, 1), the decay of the second moment v.
      eps: ε > 0, added to √v̂ in the denominator.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`AdamState`
      (``count`` = t, ``mu`` = m, ``nu`` = v); its update is ``−η m̂ / (√v̂ + ε)``.

    Examples:
      >>> opt = adam(learning_rate=0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([0.5, -3.0])}, state)
      >>> [round(float(u), 4) for u in updates["w"]]  # −η sign(g): the bias correction
      [-0.1, 0.1]

    References:
      Kingma & Ba (2015), "Adam: a method for stochastic optimization", ICLR,
      Algorithm 1.
    """
    learning_rate = _check_learning_rate(learning_rate)
    b1 = _check_decay("b1", b1)
    b2 = _check_decay("b2", b2)
    eps = _check_eps(eps)

    def init_fn(params):
        return AdamState(count=_new_count(), mu=_zeros_like(params), nu=_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        direction, new_state = _adam_direction(b1, b2, eps, updates, state)
        return _descend(learning_rate, state.count, direction), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def _adam_direction(b1, b2, eps, grads, state: AdamState) -> tuple[optax.Updates, AdamState]:
    """Adam's step direction ``m̂ / (√v̂ + ε)`` and the state after step t = count + 1."""
    # The terms in optax's order (see rmsprop): the same rounding, bit for bit.
    mu = jax.tree.map(lambda m, g: (1 - b1) * g + b1 * m, state.mu, grads)
    nu = jax.tree.map(lambda v, g: (1 - b2) * g**2 + b2 * v, state.nu, grads)
    t = optax.safe_increment(state.count)
    # 1 − βᵗ is formed at the precision of the integer power, then cast to
    # each leaf's dtype (as optax does), so float32 moments stay float32.
    correction1, correction2 = 1 - b1**t, 1 - b2**t
    m_hat = jax.tree.map(lambda m: m / correction1.astype(m.dtype), mu)
    v_hat = jax.tree.map(lambda v: v / correction2.astype(v.dtype), nu)
    direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), m_hat, v_hat)
    return direction, AdamState(count=t, mu=mu, nu=nu)


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
) -> optax.GradientTransformation:
    """AdamW: Adam with weight decay decoupled from the gradient.

    m, v, m̂ and v̂ are Adam's (see :func:`adam`), built from the gradient
    g = ∂C/∂θ alone. The decay λθ is added to Adam's direction *after* the
    normalisation by √v̂, so every weight shrinks by the same fraction ηλ per
    step, whatever its gradient history:

    .. math::

        m ← β_1 m + (1 − β_1) g,\\quad v ← β_2 v + (1 − β_2) g^2,

        \\hat m = \\frac{m}{1 − β_1^t},\\quad \\hat v = \\frac{v}{1 − β_2^t},\\quad
        θ ← θ − η \\left(\\frac{\\hat m}{\\sqrt{\\hat v} + ε} + λ θ\\right)

    Adam with an L2 penalty ½λ‖θ‖² in C instead feeds λθ through m and v, so
    weights with large gradients are barely regularised; Loshchilov & Hutter
    show the two differ for adaptive methods (they coincide for plain SGD).
    In their Algorithm 2 the step is η_t (α m̂ / (√v̂ + ε) + λθ), with α the
    step size and η_t a schedule multiplier; here, as in ``optax.adamw`` and
    ``torch.optim.AdamW``, one learning rate η (possibly a schedule) multiplies
    both terms (α = 1, η_t = η), so the decay per step is ηλ. It matches
    ``optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay)``, and
    with λ = 0 it is :func:`adam`.

    Args:
      learning_rate: η, a positive number, or a schedule ``k ↦ η_k``.
      b1: β₁ in [0, 1), the decay of the first moment m.
      b2: β₂ in [0, 1), the decay of the second moment v.
      eps: ε > 0, added to √v̂ in the denominator.
      weight_decay: λ ≥ 0, the decay coefficient (optax's default, 1e-4).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`AdamState`; its
      update is ``−η (m̂ / (√v̂ + ε) + λθ)``, so ``update`` needs the params:
      ``opt.update(grads, state, params)``.

    Examples:
      >>> opt = adamw(learning_rate=0.1, weight_decay=0.5)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = opt.init(params)
      >>> zero = {"w": jnp.zeros(2)}
      >>> updates, state = opt.update(zero, state, params)  # g = 0: only the decay −ηλθ
      >>> [round(float(u), 4) for u in updates["w"]]
      [-0.05, 0.1]

    References:
      Loshchilov & Hutter (2019), "Decoupled weight decay regularization",
      ICLR, Algorithm 2 (AdamW).
    """
    learning_rate = _check_learning_rate(learning_rate)
    b1 = _check_decay("b1", b1)
    b2 = _check_decay("b2", b2)
    eps = _check_eps(eps)
    weight_decay = _check_weight_decay(weight_decay)

    def init_fn(params):
        return AdamState(count=_new_count(), mu=_zeros_like(params), nu=_zeros_like(params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NEEDS_PARAMS)
        direction, new_state = _adam_direction(b1, b2, eps, updates, state)
        # d + λθ, then −η times it: optax's order (add_decayed_weights, then the rate)
        direction = jax.tree.map(lambda d, p: d + weight_decay * p, direction, params)
        return _descend(learning_rate, state.count, direction), new_state

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
}


def names() -> tuple[str, ...]:
    """The names :func:`get` accepts."""
    return tuple(_REGISTRY)


def get(name: str, **hyperparams) -> optax.GradientTransformation:
    """Build the update rule called ``name`` with the given hyper-parameters.

    ``get("adam", learning_rate=1e-3, b1=0.9)`` is ``adam(learning_rate=1e-3, b1=0.9)``.
    The names are those :func:`gdjax.train.make_optimizer` takes. ``learning_rate``
    is required; a missing one, or a hyper-parameter the rule does not take,
    raises ``ValueError`` naming it.

    >>> opt = get("momentum", learning_rate=0.1, beta=0.5)
    >>> state = opt.init(jnp.zeros(2))
    >>> type(state).__name__
    'MomentumState'
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"name: expected one of {', '.join(names())}, got {name!r}.")
    factory = _REGISTRY[name]
    if "learning_rate" not in hyperparams:
        raise ValueError(
            f"learning_rate: expected {_LEARNING_RATE} for {name!r}, got none; pass it, "
            f"e.g. get({name!r}, learning_rate=1e-3)."
        )
    accepted = tuple(inspect.signature(factory).parameters)
    unknown = sorted(set(hyperparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"hyperparams: expected some of {', '.join(accepted)} for {name!r}, "
            f"got {', '.join(map(repr, unknown))}."
        )
    return factory(**hyperparams)
