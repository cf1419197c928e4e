"""Activation functions σ and their derivatives σ', each written by hand.

The forward pass of layer l is ``a^l = σ(z^l)``; the backward pass needs
``σ'(z^l)`` in ``δ^l = ((w^{l+1})ᵀ δ^{l+1}) ⊙ σ'(z^l)``. Every activation here
carries both, as plain element-wise functions of ``z``. The derivatives are
written from their formulas, not by differentiating ``fn``; the tests check
each one against ``jax.grad``. The backward pass has ``a^l = σ(z^l)`` at hand
too, and an activation may use it (``deriv_with_output``): tanh'(z) =
u(1 + |a|)² with u = e^{−2|z|} needs no division, and sigmoid'(z) = e^{−z}a²
(z ≥ 0) reuses the exponential the forward pass computed σ(z) with.

Where a textbook formula loses digits to rounding (σ(z)(1 − σ(z)) and
1 − tanh²(z) for large |z|, e^z − 1 + 1 for elu), the derivative is evaluated
in an equivalent form that keeps them, and where the textbook formula is the
more accurate one (near z = 0) it is used: so σ' is accurate to float rounding
everywhere and, measured stretch by stretch of z in float32, never less
accurate than ``jax.grad`` of ``fn`` (docs/precision.md, tests/test_precision.py).

At a kink (z = 0 for relu, leaky_relu and elu) the derivative is the one
``jax.grad`` gives for the same ``fn``, so the hand backprop and autodiff agree
everywhere: relu'(0) = 0, leaky_relu'(0) = 1, elu'(0) = 1. (Exact zeros are
common: a layer of dead ReLUs feeds z = b = 0 to the next one.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erfc

__all__ = ["Activation", "get", "names"]

ArrayFn = Callable[[jax.Array], jax.Array]

LEAKY_RELU_SLOPE = 0.01


@dataclasses.dataclass(frozen=True)
class Activation:
    """An element-wise activation σ with its hand-written derivative σ'.

    Attributes:
      name: the registry name, e.g. ``"sigmoid"``.
      fn: ``z ↦ σ(z)``.
      deriv: ``z ↦ σ'(z)``, written by hand.
      deriv_with_output: optional ``(z, a) ↦ σ'(z)`` given also ``a = σ(z)``, for
        an activation whose derivative is cheaper with the value at hand (tanh, sigmoid);
        it must be as accurate as ``deriv``. The backward pass, which has both,
        calls :meth:`derivative`.

    Instances are frozen and hashable, so a model holding one can be a static
    argument of ``jax.jit``. Build your own with ``Activation(name, fn, deriv)``.
    """

    name: str
    fn: ArrayFn = dataclasses.field(repr=False)
    deriv: ArrayFn = dataclasses.field(repr=False)
    deriv_with_output: Callable[[jax.Array, jax.Array], jax.Array] | None = dataclasses.field(
        default=None, repr=False
    )

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.fn(z)

    def derivative(self, z: jax.Array, a: jax.Array) -> jax.Array:
        """σ'(z), given also ``a = σ(z)``: ``deriv_with_output(z, a)`` if set, else ``deriv(z)``."""
        if self.deriv_with_output is None:
            return self.deriv(z)
        return self.deriv_with_output(z, a)


# σ(z) = 1 / (1 + e^{-z});  σ'(z) = σ(z)(1 − σ(z)) = σ(z)σ(−z) = σ'(−z).
# σ(1 − σ) loses digits for large z, where σ(z) rounds near 1 (autodiff, which uses
# it, returns 0 instead of about e^{-z}); near z = 0 it is the most accurate form,
# as 1 − σ is then exact (σ ≥ ½). So, with s = σ(|z|) ≥ ½ and c = σ(−|z|) ≤ ½,
# σ' = s(1 − s) for |z| < ⅝, where 1 − s is exact, and c(1 − c) beyond, where c keeps
# every digit. Within an ulp or two of σ'(z) everywhere, and (measured on a dense
# float32 grid, scripts/precision_table.py) no less accurate than autodiff's
# σ(z)(1 − σ(z)) on any stretch of z.
_SIGMOID_SMALL = 0.625


def _sigmoid(z):
    return jax.nn.sigmoid(z)


def _sigmoid_deriv(z):
    s, c = jax.nn.sigmoid(jnp.abs(z)), jax.nn.sigmoid(-jnp.abs(z))
    return jnp.where(jnp.abs(z) < _SIGMOID_SMALL, s * (1 - s), c * (1 - c))


# With a = σ(z) at hand: for z < 1, σ' = a(1 − a), autodiff's form (1 − a is exact for
# z ≥ 0 and keeps its digits for z < 0, where a < ½); for z ≥ 1, where 1 − a would
# cancel, σ(−z) = e^{−z}σ(z), so σ' = e^{−z}a². Every digit kept on both sides, and
# e^{−z} is the very exponential XLA:CPU evaluates σ(z) = 1/(1 + e^{−z}) with: in one
# jitted step the forward and backward passes share it (one exponential per unit, as
# autodiff's a(1 − a), instead of two). For z < −88 (float32) e^{−z} overflows in the
# branch not taken; that inf is harmless, but jax_debug_infs, when on, would report it,
# so then the overflow-free form of ``_sigmoid_deriv`` is used instead.
# Differentiated (σ'' = σ'(1 − 2σ), as a = σ(z) moves with z), the rule below never
# touches the overflowed exponential, so gradients through backprop stay finite.
@jax.custom_jvp
def _sigmoid_deriv_with_output(z, a):
    if jax.config.jax_debug_infs:
        return _sigmoid_deriv(z)
    e = jnp.where(z < 1, 1, jnp.exp(-z))
    return jnp.where(z < 1, a * (1 - a), e * (a * a))


@_sigmoid_deriv_with_output.defjvp
def _sigmoid_deriv_with_output_jvp(primals, tangents):
    z, a = primals
    dz, _ = tangents
    d = _sigmoid_deriv_with_output(z, a)
    return d, d * (1 - 2 * a) * dz


# tanh'(z) = 1 − tanh²(z) = 1/cosh²(z) = 4u / (1 + u)²,  u = e^{−2|z|}.
# 1 − tanh²(z) (and autodiff) loses digits to cancellation for large |z|, since tanh(z)
# itself is rounded near ±1; 4u/(1 + u)² keeps them. For |z| < ¾, where tanh² < ⅖,
# 1 − tanh²(z) is the more accurate of the two (fewer roundings) and is used there.
_TANH_SMALL = 0.75


def _tanh_deriv(z):
    u = jnp.exp(-2 * jnp.abs(z))
    t = jnp.tanh(z)
    return jnp.where(jnp.abs(z) < _TANH_SMALL, 1 - t * t, 4 * u / (1 + u) ** 2)


# With a = tanh(z) at hand: 1 + |a| = 2/(1 + u), so tanh'(z) = u(1 + |a|)², the same
# value with no division and every digit kept (1 + |a| ∈ [1, 2] loses none); for
# |z| < ¾, 1 − a² as above.
def _tanh_deriv_with_output(z, a):
    large = jnp.exp(-2 * jnp.abs(z)) * jnp.square(1 + jnp.abs(a))
    return jnp.where(jnp.abs(z) < _TANH_SMALL, 1 - a * a, large)


# relu(z) = max(z, 0);  relu'(z) = 1 if z > 0 else 0.
def _relu(z):
    return jnp.where(z > 0, z, jnp.zeros_like(z))


def _relu_deriv(z):
    return (z > 0).astype(z.dtype)


# leaky_relu(z) = z if z ≥ 0 else s·z;  leaky_relu'(z) = 1 if z ≥ 0 else s  (s = 0.01).
def _leaky_relu(z):
    return jnp.where(z >= 0, z, LEAKY_RELU_SLOPE * z)


def _leaky_relu_deriv(z):
    return jnp.where(z >= 0, jnp.ones_like(z), jnp.full_like(z, LEAKY_RELU_SLOPE))


# softplus(z) = log(1 + e^z);  softplus'(z) = σ(z).
def _softplus(z):
    return jnp.logaddexp(z, 0)


# elu(z) = z if z > 0 else e^z − 1;  elu'(z) = 1 if z > 0 else e^z.
# The negative branch is evaluated at z⁻ = (0 if z > 0 else z), so a large positive
# z never produces e^z = inf (whose zero cotangent would turn into NaN), and at
# z = 0 autodiff of elu gives e^0 = 1, the same as elu'.
def _negative_part(z):
    return jnp.where(z > 0, jnp.zeros_like(z), z)


def _elu(z):
    return jnp.where(z > 0, z, jnp.expm1(_negative_part(z)))


def _elu_deriv(z):
    return jnp.where(z > 0, jnp.ones_like(z), jnp.exp(_negative_part(z)))


# gelu(z) = z·Φ(z) (exact, not the tanh approximation), Φ(z) = ½ erfc(−z/√2);
# gelu'(z) = Φ(z) + z·φ(z), φ(z) = e^{−z²/2}/√(2π).
# For z < −3/2, zφ(z) < 0 dominates and is evaluated from z itself, so the rounding of
# c = −z/√2, which e^{−c²} would amplify by about z², is skipped: half autodiff's error
# there. For z ≥ −3/2, around the root z ≈ −0.752 where the two terms cancel, every
# float32 form errs by about 0.15 ε_32 (absolute, mostly XLA's erfc); there zφ(z) =
# z(2/√π)(½)e^{−c²}/√2 is evaluated in the order jax.grad uses (the same value at most
# points; the other orders measured were up to 30% worse near the root).
_GELU_TAIL = -1.5


def _std_normal_cdf(z):
    return 0.5 * erfc(-z / math.sqrt(2.0))


def _gelu(z):
    return z * _std_normal_cdf(z)


def _gelu_deriv(z):
    c = -z / math.sqrt(2.0)
    near = ((-2 / math.sqrt(math.pi)) * (0.5 * z)) * jnp.exp(-jnp.square(c)) / math.sqrt(2.0)
    tail = z * jnp.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return 0.5 * erfc(c) + jnp.where(z < _GELU_TAIL, tail, -near)


# identity(z) = z;  identity'(z) = 1.
def _identity(z):
    return z


def _identity_deriv(z):
    return jnp.ones_like(z)


sigmoid = Activation("sigmoid", _sigmoid, _sigmoid_deriv, _sigmoid_deriv_with_output)
tanh = Activation("tanh", jnp.tanh, _tanh_deriv, _tanh_deriv_with_output)
relu = Activation("relu", _relu, _relu_deriv)
leaky_relu = Activation("leaky_relu", _leaky_relu, _leaky_relu_deriv)
softplus = Activation("softplus", _softplus, _sigmoid)
elu = Activation("elu", _elu, _elu_deriv)
gelu = Activation("gelu", _gelu, _gelu_deriv)
identity = Activation("identity", _identity, _identity_deriv)

_REGISTRY: dict[str, Activation] = {
    a.name: a for a in (sigmoid, tanh, relu, leaky_relu, softplus, elu, gelu, identity)
}


def names() -> tuple[str, ...]:
    """The names :func:`get` accepts."""
    return tuple(_REGISTRY)


def get(name: str | Activation, *, argument: str = "activation") -> Activation:
    """Return the activation called ``name`` (an :class:`Activation` passes through).

    ``argument`` is the name a bad ``name`` is reported under (e.g.
    ``"output_activation"``).

    >>> float(get("sigmoid").deriv(jnp.array(0.0)))
    0.25
    """
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"{argument}: expected one of {', '.join(names())} or an Activation, got {name!r}."
        )
    return _REGISTRY[name]
