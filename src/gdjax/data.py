"""Built-in data sets, generated on the spot or bundled with scikit-learn: nothing is downloaded.

    function             x         default loss                   what it shows
    linear_regression    (n, d)    mse                            the convex case: one linear layer
    xor                  (n, 2)    sigmoid_binary_cross_entropy   needs a hidden layer
    moons                (n, 2)    sigmoid_binary_cross_entropy   a curved boundary
    circles              (n, 2)    sigmoid_binary_cross_entropy   a closed boundary
    spirals              (n, 2)    sigmoid_binary_cross_entropy   a winding boundary, hard
    digits               (n, 64)   softmax_cross_entropy          8×8 images, 10 classes

Every function returns a :class:`Dataset`: training arrays ``x, y``, held-out
arrays ``x_test, y_test`` (zero rows when there is no split), the name of the
loss the targets are shaped for, the number of classes and the set's name.

**Targets follow the loss** (the ``loss`` argument of the classification sets):

- ``"softmax_cross_entropy"``: integer labels, shape ``(n,)``, dtype int32;
- ``"sigmoid_binary_cross_entropy"`` or ``"mse"``: floats of ``dtype`` — with
  two classes one column ``(n, 1)`` holding 1 for class 1 and 0 for class 0
  (one sigmoid output unit), with more classes one-hot rows ``(n, k)``.

Regression targets are ``(n, k)`` floats for ``"mse"``. So a network for any
set is ``MLP((ds.num_inputs, …, ds.num_outputs))`` with ``output_activation``
``"identity"`` (the cross-entropies take logits).

**Keys and determinism.** Every synthetic set takes an explicit ``jax.random``
key first; the same key and arguments give the same arrays, bit for bit, on the
same machine. The key shuffles the examples (they come in random order, not
sorted by class) and chooses the held-out ones. Random draws are made in
float32 and then cast to ``dtype``, and the equations are evaluated in
``dtype``; so a float64 set has the same points as the float32 one up to
float32 rounding. ``digits`` has a fixed split and ignores the key.

**Held-out split.** ``n`` is the total number of examples before the split;
``round(test_fraction · n)`` of them (at most ``n − 1``) go to the test set,
chosen by the key. ``test_fraction`` must lie in [0, 1); 0 gives an empty test
set (``x_test`` of shape ``(0, d)``).

References: the moons and circles follow ``sklearn.datasets.make_moons`` and
``make_circles``; the two spirals are Lang & Witbrock's benchmark (1988); the
digits are the UCI optical-recognition set as bundled by scikit-learn.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import losses
from gdjax._checks import check_positive_int
from gdjax.mlp import Params

__all__ = [
    "Dataset",
    "linear_regression",
    "xor",
    "moons",
    "circles",
    "spirals",
    "digits",
    "get",
    "permutation",
    "names",
    "from_config",
]

MSE = "mse"
SOFTMAX_CE = "softmax_cross_entropy"
SIGMOID_BCE = "sigmoid_binary_cross_entropy"
CLASSIFICATION_LOSSES = (SIGMOID_BCE, SOFTMAX_CE, MSE)

DIGITS_SPLIT_SEED = 0  # random_state of the fixed digits split


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A training set, its held-out set and the loss its targets are shaped for.

    Attributes:
      x: training inputs, ``(num_train, d)`` floats.
      y: training targets in the form ``loss`` expects (see the module docstring):
        ``(num_train,)`` int32 labels for ``"softmax_cross_entropy"``,
        ``(num_train, k)`` floats otherwise.
      x_test: held-out inputs, ``(num_test, d)``; ``num_test`` may be 0.
      y_test: held-out targets, shaped like ``y`` with ``num_test`` rows.
      loss: the name of the loss (:func:`gdjax.losses.get`) the targets suit.
      num_classes: the number of classes, or ``None`` for regression.
      name: the set's name, e.g. ``"moons"``.
      true_params: for ``linear_regression``, the params that generated the
        targets, ``[{"w": (k, d), "b": (k,)}]`` — params of
        ``MLP((d, k), output_activation="identity")``; ``None`` otherwise.

    A ``Dataset`` is a pytree (arrays are leaves; ``loss``, ``num_classes`` and
    ``name`` are static), so it can be passed to jitted functions.
    """

    x: jax.Array
    y: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    loss: str
    num_classes: int | None
    name: str
    true_params: Params | None = None

    @property
    def num_train(self) -> int:
        """The number of training examples (rows of ``x``)."""
        return self.x.shape[0]

    @property
    def num_test(self) -> int:
        """The number of held-out examples (rows of ``x_test``); may be 0."""
        return self.x_test.shape[0]

    @property
    def num_inputs(self) -> int:
        """The input width ``d``: ``sizes[0]`` of a model for this set."""
        return self.x.shape[1]

    @property
    def num_outputs(self) -> int:
        """The output width ``sizes[-1]`` of a model for this set: columns of
        ``y``, or ``num_classes`` for integer labels."""
        return self.y.shape[1] if self.y.ndim == 2 else self.num_classes

    def __repr__(self) -> str:
        def spec(a) -> str:
            try:
                return f"{a.dtype}[{','.join(str(s) for s in a.shape)}]"
            except AttributeError:
                return repr(a)

        fields = [
            f"name={self.name!r}",
            *(f"{f}={spec(getattr(self, f))}" for f in ("x", "y", "x_test", "y_test")),
            f"loss={self.loss!r}",
            f"num_classes={self.num_classes!r}",
        ]
        if self.true_params is not None:
            fields.append(
                "true_params=[{"
                + ", ".join(f"{k!r}: {spec(v)}" for k, v in self.true_params[0].items())
                + "}]"
            )
        return f"Dataset({', '.join(fields)})"


jax.tree_util.register_dataclass(
    Dataset,
    data_fields=["x", "y", "x_test", "y_test", "true_params"],
    meta_fields=["loss", "num_classes", "name"],
)


# ---------------------------------------------------------------- input checks


def _describe(value) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of dtype {value.dtype} and shape {tuple(value.shape)}"
    return repr(value)


def _check_key(key) -> jax.Array:
    """``key`` as a typed key if it is a ``jax.random`` key (typed, or raw from
    ``jax.random.PRNGKey``), else a ValueError. Raw keys are wrapped, so both
    kinds give the same data and share one compiled kernel."""
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0:
            return key
        if key.dtype == jnp.uint32 and key.ndim == 1:
            try:
                return jax.random.wrap_key_data(key)
            except (TypeError, ValueError):
                pass
    raise ValueError(
        f"key: expected a jax.random key such as jax.random.key(0), got {_describe(key)}."
    )


def _check_number(name: str, value, expected: str, ok: Callable[[float], bool]) -> float:
    """``value`` as a float if it is a finite real scalar satisfying ``ok``, else a ValueError."""
    v = None
    if not isinstance(value, bool | str | bytes) and np.ndim(value) == 0:
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = None
    if v is None or not math.isfinite(v) or not ok(v):
        raise ValueError(f"{name}: expected {expected}, got {_describe(value)}.")
    return v


def _check_int_at_least(name: str, value, lo: int, why: str = "") -> int:
    value = check_positive_int(name, value)
    if value < lo:
        raise ValueError(f"{name}: expected an integer ≥ {lo}{why}, got {value}.")
    return value


def _check_noise(noise) -> float:
    return _check_number("noise", noise, "a finite number ≥ 0 (a standard deviation)", _nonneg)


def _check_test_fraction(test_fraction) -> float:
    return _check_number(
        "test_fraction", test_fraction, "a fraction in [0, 1)", lambda v: 0 <= v < 1
    )


def _check_dtype(dtype) -> jnp.dtype:
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not jnp.issubdtype(dt, jnp.floating):
        got = dt if dt is not None else repr(dtype)
        raise ValueError(f"dtype: expected a floating dtype such as jnp.float32, got {got}.")
    return dt


def _check_loss(loss, allowed: tuple[str, ...], default: str) -> str:
    if loss is None:
        return default
    name = loss.name if isinstance(loss, losses.Loss) else loss
    if name not in allowed:
        raise ValueError(
            f"loss: expected one of {', '.join(allowed)} for this data set, got {loss!r}."
        )
    return name


def _nonneg(v: float) -> bool:
    return v >= 0


# ---------------------------------------------------------------- shared pieces


def _uniform(key, shape, dtype) -> jax.Array:
    """U[0, 1) draws made in float32 (the same numbers for every dtype), cast to ``dtype``."""
    return jax.random.uniform(key, shape, jnp.float32).astype(dtype)


def _normal(key, shape, dtype) -> jax.Array:
    """N(0, 1) draws made in float32, cast to ``dtype``."""
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)


def _balanced_labels(n: int, num_classes: int) -> jax.Array:
    """``n`` int32 labels ``⌊i·k/n⌋``: classes 0 … k−1 in blocks whose sizes differ by ≤ 1."""
    return (jnp.arange(n, dtype=jnp.int32) * num_classes) // n


def _num_test(n: int, test_fraction: float) -> int:
    return min(round(test_fraction * n), n - 1)


def _targets(labels, num_classes: int, loss: str, dtype) -> jax.Array:
    """Labels in the form ``loss`` expects (see the module docstring)."""
    labels = jnp.asarray(labels, jnp.int32)
    if loss == SOFTMAX_CE:
        return labels
    if num_classes == 2:
        return labels[:, None].astype(dtype)
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def _split(key, x, y, n_test: int):
    """Shuffle the rows with ``key`` (unless it is None) and hold out the last ``n_test``."""
    n = x.shape[0]
    if key is not None:
        order = jax.random.permutation(key, n)
        x, y = x[order], y[order]
    n_train = n - n_test
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# Above 2^24 examples the packed keys keep too few random bits; jax.random.permutation takes over.
_PACKED_MAX_BITS = 24


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of 0 … n−1 (int32), drawn with ``key``.

    The same distribution as :func:`jax.random.permutation`, and faster on XLA's
    CPU (1.5× for 512 items, 4–5× for 60 000; ``gdjax.fit`` draws one per
    epoch). Each round sorts one uint32 array whose low b = ⌈log₂ n⌉ bits hold
    the position i and whose high 32 − b bits are random,

        k_i = (r_i ≪ b) | i,   order = sort(k) & (2^b − 1),

    a single-operand sort, which XLA's CPU runs about five times faster than the
    two-operand ``sort_key_val`` of :func:`jax.random.permutation`. Positions
    whose random bits tie keep their order, so, like JAX, it composes
    ⌈3·ln n / ((32 − b)·ln 2)⌉ rounds, which makes a tie in every round
    improbable (about 1/n). Above 2^24 examples it calls
    :func:`jax.random.permutation`.

    Args:
      key: a ``jax.random`` key; the same key gives the same permutation.
      n: the number of items, a positive integer.

    >>> order = permutation(jax.random.key(0), 5)
    >>> sorted(order.tolist())
    [0, 1, 2, 3, 4]
    """
    key = _check_key(key)
    n = check_positive_int("n", n)
    bits = max(1, (n - 1).bit_length())
    if bits > _PACKED_MAX_BITS:
        return jax.random.permutation(key, n).astype(jnp.int32)
    free = 32 - bits
    rounds = max(1, math.ceil(3 * math.log(n) / (free * math.log(2))))
    position = jnp.arange(n, dtype=jnp.uint32)
    low = jnp.uint32((1 << bits) - 1)
    random_bits = jax.random.bits(key, (rounds, n), jnp.uint32)  # one draw for every round
    order = None
    for r in range(rounds):
        step = (jax.lax.sort((random_bits[r] << bits) | position) & low).astype(jnp.int32)
        order = step if order is None else order[step]
    return order


def _classification(name, arrays, num_classes, loss, dtype) -> Dataset:
    """A Dataset from ``(x, labels, x_test, labels_test)``, targets shaped for ``loss``."""
    x, labels, x_test, labels_test = arrays
    y, y_test = (_targets(a, num_classes, loss, dtype) for a in (labels, labels_test))
    return Dataset(x, y, x_test, y_test, loss, num_classes, name)


# The generators check their arguments in Python, then call one jitted kernel
# that returns (x, labels, x_test, labels_test): one compilation per (sizes,
# dtype) instead of one per primitive, shared by every loss.
def _kernel(*static: str):
    """``jax.jit`` with the sizes and ``dtype`` static."""
    return functools.partial(jax.jit, static_argnames=("n", "n_test", "dtype", *static))


# ---------------------------------------------------------------- regression


def linear_regression(
    key: jax.Array,
    *,
    n: int = 200,
    d: int = 5,
    outputs: int = 1,
    noise: float = 0.1,
    condition: float = 1.0,
    test_fraction: float = 0.2,
    dtype: jnp.dtype = jnp.float32,
) -> Dataset:
    """A linear model plus Gaussian noise: the convex case.

        x = s ⊙ u,   u ~ N(0, I_d),   s_j = condition^(−j / (2(d−1))),   j = 0 … d−1
        y = w x + b + noise · ε,      w ~ N(0, 1)^{k×d},  b ~ N(0, 1)^k,  ε ~ N(0, I_k)

    Fitted by ``MLP((d, k), output_activation="identity")`` with the ``"mse"``
    loss, the cost ``C = 1/(2n) Σ_x ‖y(x) − (w x + b)‖²`` is a convex quadratic
    in ``(w, b)`` — one minimum, which gradient descent reaches — the case the
    seed contrasts with deep networks. Its Hessian in ``w`` is ``E[x xᵀ] =
    diag(s²)``, whose eigenvalues run from 1 down to ``1/condition``: raise
    ``condition`` to make the bowl narrow and plain gradient descent slow
    (``condition`` has no effect when ``d = 1``).

    Args:
      key: a ``jax.random`` key.
      n: the number of examples, before the split.
      d: the input width.
      outputs: ``k``, the number of target columns.
      noise: the standard deviation of ε, ≥ 0 (0 gives exact targets).
      condition: the condition number ≥ 1 of ``E[x xᵀ]``.
      test_fraction: the held-out fraction, in [0, 1).
      dtype: the floating dtype of ``x``, ``y`` and ``true_params``.

    Returns:
      A :class:`Dataset` with ``x`` of shape ``(num_train, d)``, ``y`` of shape
      ``(num_train, k)``, both ``dtype``; ``loss="mse"``, ``num_classes=None``;
      ``true_params = [{"w": (k, d), "b": (k,)}]``, the ``w`` and ``b`` above.

    Examples:
      >>> ds = linear_regression(jax.random.key(0), n=100, d=3)
      >>> ds.x.shape, ds.y.shape, ds.x_test.shape, ds.y.dtype, ds.loss
      ((80, 3), (80, 1), (20, 3), dtype('float32'), 'mse')
      >>> ds.true_params[0]["w"].shape, ds.true_params[0]["b"].shape
      ((1, 3), (1,))
    """
    key = _check_key(key)
    n = check_positive_int("n", n)
    d = check_positive_int("d", d)
    outputs = check_positive_int("outputs", outputs)
    noise = _check_noise(noise)
    condition = _check_number("condition", condition, "a finite number ≥ 1", lambda v: v >= 1)
    test_fraction = _check_test_fraction(test_fraction)
    dtype = _check_dtype(dtype)

    exponents = np.arange(d) / (2 * (d - 1)) if d > 1 else np.zeros(1)
    scales = jnp.asarray(condition**-exponents, dtype)
    n_test = _num_test(n, test_fraction)
    return _linear_regression(key, scales, noise, n=n, outputs=outputs, n_test=n_test, dtype=dtype)


@_kernel("outputs")
def _linear_regression(key, scales, noise, *, n, outputs, n_test, dtype) -> Dataset:
    d = scales.shape[0]
    k_x, k_w, k_b, k_eps, k_split = jax.random.split(key, 5)
    x = _normal(k_x, (n, d), dtype) * scales[None, :]
    w = _normal(k_w, (outputs, d), dtype)
    b = _normal(k_b, (outputs,), dtype)
    y = x @ w.T + b[None, :] + noise * _normal(k_eps, (n, outputs), dtype)
    x, y, x_test, y_test = _split(k_split, x, y, n_test)
    return Dataset(
        x, y, x_test, y_test, MSE, None, "linear_regression", true_params=[{"w": w, "b": b}]
    )


# ---------------------------------------------------------------- two-dimensional classification

_XOR_CORNERS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
_XOR_LABELS = np.array([0, 1, 1, 0], dtype=np.int32)


def xor(
    key: jax.Array | None = None,
    *,
    n: int = 4,
    noise: float = 0.0,
    test_fraction: float = 0.0,
    loss: str | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> Dataset:
    """Exclusive or: the smallest problem no linear model solves.

        x_i = c_{i mod 4} + noise · ε_i,   c = (0,0), (0,1), (1,0), (1,1),   ε_i ~ N(0, I_2)
        label_i = c_1 XOR c_2 of that corner   (0, 1, 1, 0)

    With the defaults (no key, ``n=4``, ``noise=0``) these are the classic four
    points, in the order above. With a key the examples are shuffled, ``n`` may
    exceed 4 (the corners repeat, balanced up to ``n mod 4``), and noise and a
    held-out split are available. No line separates the classes: the best
    linear classifier gets 3 of the 4 corners right.

    Args:
      key: a ``jax.random`` key, or ``None`` (then ``noise`` and
        ``test_fraction`` must be 0 and the examples keep corner order).
      n: the number of examples, ≥ 4, before the split.
      noise: the standard deviation of ε, ≥ 0.
      test_fraction: the held-out fraction, in [0, 1).
      loss: the loss the targets are shaped for (module docstring); default
        ``"sigmoid_binary_cross_entropy"``: ``y`` of shape ``(n, 1)`` in {0, 1}.
      dtype: the floating dtype of ``x`` (and of float targets).

    Returns:
      A :class:`Dataset` with ``x`` of shape ``(num_train, 2)``, ``num_classes=2``.

    Examples:
      >>> ds = xor()
      >>> ds.x.tolist(), ds.y.tolist()
      ([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [[0.0], [1.0], [1.0], [0.0]])
    """
    n = _check_int_at_least("n", n, 4, " (each corner at least once)")
    noise = _check_noise(noise)
    test_fraction = _check_test_fraction(test_fraction)
    loss = _check_loss(loss, CLASSIFICATION_LOSSES, SIGMOID_BCE)
    dtype = _check_dtype(dtype)
    if key is None:
        if noise > 0 or test_fraction > 0:
            raise ValueError(
                "key: expected a jax.random key such as jax.random.key(0) when noise > 0 or "
                f"test_fraction > 0 (got noise={noise}, test_fraction={test_fraction}), got None."
            )
    else:
        key = _check_key(key)
    n_test = _num_test(n, test_fraction)
    return _classification("xor", _xor(key, noise, n=n, n_test=n_test, dtype=dtype), 2, loss, dtype)


@_kernel()
def _xor(key, noise, *, n, n_test, dtype):
    corner = jnp.arange(n) % 4
    x = jnp.asarray(_XOR_CORNERS, dtype)[corner]
    labels = jnp.asarray(_XOR_LABELS)[corner]
    k_split = None
    if key is not None:
        k_eps, k_split = jax.random.split(key)
        x = x + noise * _normal(k_eps, (n, 2), dtype)
    return _split(k_split, x, labels, n_test)


def moons(
    key: jax.Array,
    *,
    n: int = 200,
    noise: float = 0.1,
    test_fraction: float = 0.2,
    loss: str | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> Dataset:
    """Two interleaved half circles (as ``sklearn.datasets.make_moons``).

        t ~ U[0, π)
        class 0:  x = (cos t,     sin t)       + noise · ε      (upper moon, centre (0, 0))
        class 1:  x = (1 − cos t, ½ − sin t)   + noise · ε      (lower moon, centre (1, ½))
        ε ~ N(0, I_2)

    Each half has ``n // 2`` or ``n − n // 2`` points.

    Args:
      key: a ``jax.random`` key.
      n: the number of examples, ≥ 2, before the split.
      noise: the standard deviation of ε, ≥ 0.
      test_fraction: the held-out fraction, in [0, 1).
      loss: the loss the targets are shaped for (module docstring); default
        ``"sigmoid_binary_cross_entropy"``: ``y`` of shape ``(n, 1)`` in {0, 1}.
      dtype: the floating dtype of ``x`` (and of float targets).

    Returns:
      A :class:`Dataset` with ``x`` of shape ``(num_train, 2)``, ``num_classes=2``.

    Examples:
      >>> ds = moons(jax.random.key(0), n=100)
      >>> ds.x.shape, ds.y.shape, ds.x_test.shape, ds.y.dtype
      ((80, 2), (80, 1), (20, 2), dtype('float32'))
      >>> moons(jax.random.key(0), n=100, loss="softmax_cross_entropy").y.dtype
      dtype('int32')
    """
    key = _check_key(key)
    n = _check_int_at_least("n", n, 2, " (one example per class)")
    noise = _check_noise(noise)
    test_fraction = _check_test_fraction(test_fraction)
    loss = _check_loss(loss, CLASSIFICATION_LOSSES, SIGMOID_BCE)
    dtype = _check_dtype(dtype)

    n_test = _num_test(n, test_fraction)
    arrays = _moons(key, noise, n=n, n_test=n_test, dtype=dtype)
    return _classification("moons", arrays, 2, loss, dtype)


@_kernel()
def _moons(key, noise, *, n, n_test, dtype):
    k_t, k_eps, k_split = jax.random.split(key, 3)
    labels = _balanced_labels(n, 2)
    t = jnp.pi * _uniform(k_t, (n,), dtype)
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    lower = jnp.stack([1 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=1)
    x = jnp.where((labels == 0)[:, None], upper, lower)
    x = x + noise * _normal(k_eps, (n, 2), dtype)
    return _split(k_split, x, labels, n_test)


def circles(
    key: jax.Array,
    *,
    n: int = 200,
    noise: float = 0.05,
    factor: float = 0.5,
    test_fraction: float = 0.2,
    loss: str | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> Dataset:
    """Two concentric circles (as ``sklearn.datasets.make_circles``).

        θ ~ U[0, 2π)
        class 0:  x = (cos θ, sin θ)            + noise · ε      (radius 1)
        class 1:  x = factor · (cos θ, sin θ)   + noise · ε      (radius ``factor``)
        ε ~ N(0, I_2)

    The boundary is closed, so a linear classifier does no better than chance;
    the radius ‖x‖ alone separates the classes when ``noise`` is small.

    Args:
      key: a ``jax.random`` key.
      n: the number of examples, ≥ 2, before the split.
      noise: the standard deviation of ε, ≥ 0.
      factor: the inner radius, in (0, 1).
      test_fraction: the held-out fraction, in [0, 1).
      loss: the loss the targets are shaped for (module docstring); default
        ``"sigmoid_binary_cross_entropy"``: ``y`` of shape ``(n, 1)`` in {0, 1}.
      dtype: the floating dtype of ``x`` (and of float targets).

    Returns:
      A :class:`Dataset` with ``x`` of shape ``(num_train, 2)``, ``num_classes=2``.

    Examples:
      >>> ds = circles(jax.random.key(0), n=100, test_fraction=0.0)
      >>> ds.x.shape, ds.y.shape, ds.x_test.shape
      ((100, 2), (100, 1), (0, 2))
    """
    key = _check_key(key)
    n = _check_int_at_least("n", n, 2, " (one example per class)")
    noise = _check_noise(noise)
    factor = _check_number("factor", factor, "a number in (0, 1)", lambda v: 0 < v < 1)
    test_fraction = _check_test_fraction(test_fraction)
    loss = _check_loss(loss, CLASSIFICATION_LOSSES, SIGMOID_BCE)
    dtype = _check_dtype(dtype)

    n_test = _num_test(n, test_fraction)
    arrays = _circles(key, noise, factor, n=n, n_test=n_test, dtype=dtype)
    return _classification("circles", arrays, 2, loss, dtype)


@_kernel()
def _circles(key, noise, factor, *, n, n_test, dtype):
    k_theta, k_eps, k_split = jax.random.split(key, 3)
    labels = _balanced_labels(n, 2)
    theta = 2 * jnp.pi * _uniform(k_theta, (n,), dtype)
    radius = jnp.where(labels == 0, 1.0, factor).astype(dtype)
    x = radius[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1)
    x = x + noise * _normal(k_eps, (n, 2), dtype)
    return _split(k_split, x, labels, n_test)


def spirals(
    key: jax.Array,
    *,
    n: int = 400,
    noise: float = 0.02,
    turns: float = 1.5,
    num_classes: int = 2,
    test_fraction: float = 0.2,
    loss: str | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> Dataset:
    """Interleaved spiral arms, one per class (Lang & Witbrock's two spirals for ``k = 2``).

        t ~ U[0, 1)
        class c:  x = t · (cos θ, sin θ) + noise · ε,   θ = 2π · turns · t + 2π c / k
        ε ~ N(0, I_2)

    Arm ``c`` winds ``turns`` times around the origin, from radius 0 to 1;
    neighbouring arms are ``1 / (k · turns)`` apart along a ray, so ``noise``
    well below that keeps them apart. More turns make the problem harder.

    Args:
      key: a ``jax.random`` key.
      n: the number of examples, ≥ ``num_classes``, before the split.
      noise: the standard deviation of ε, ≥ 0.
      turns: how many times each arm winds around the origin, > 0.
      num_classes: ``k``, the number of arms, ≥ 2.
      test_fraction: the held-out fraction, in [0, 1).
      loss: the loss the targets are shaped for (module docstring); default
        ``"sigmoid_binary_cross_entropy"`` for two arms (``y`` of shape
        ``(n, 1)`` in {0, 1}) and ``"softmax_cross_entropy"`` for more
        (``y`` of shape ``(n,)``, int32).
      dtype: the floating dtype of ``x`` (and of float targets).

    Returns:
      A :class:`Dataset` with ``x`` of shape ``(num_train, 2)``.

    Examples:
      >>> ds = spirals(jax.random.key(0), n=300, num_classes=3)
      >>> ds.x.shape, ds.y.shape, ds.y.dtype, ds.loss, ds.num_outputs
      ((240, 2), (240,), dtype('int32'), 'softmax_cross_entropy', 3)
    """
    key = _check_key(key)
    num_classes = _check_int_at_least("num_classes", num_classes, 2)
    n = _check_int_at_least("n", n, num_classes, " (one example per class)")
    noise = _check_noise(noise)
    turns = _check_number("turns", turns, "a finite number > 0", lambda v: v > 0)
    test_fraction = _check_test_fraction(test_fraction)
    loss = _check_loss(loss, CLASSIFICATION_LOSSES, SIGMOID_BCE if num_classes == 2 else SOFTMAX_CE)
    dtype = _check_dtype(dtype)

    n_test = _num_test(n, test_fraction)
    arrays = _spirals(key, noise, turns, n=n, num_classes=num_classes, n_test=n_test, dtype=dtype)
    return _classification("spirals", arrays, num_classes, loss, dtype)


@_kernel("num_classes")
def _spirals(key, noise, turns, *, n, num_classes, n_test, dtype):
    k_t, k_eps, k_split = jax.random.split(key, 3)
    labels = _balanced_labels(n, num_classes)
    t = _uniform(k_t, (n,), dtype)
    theta = 2 * jnp.pi * (turns * t + labels.astype(dtype) / num_classes)
    x = t[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1)
    x = x + noise * _normal(k_eps, (n, 2), dtype)
    return _split(k_split, x, labels, n_test)


# ---------------------------------------------------------------- digits


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8×8 digit images (pixels 0 … 16, float64) and their labels, read once."""
    from sklearn.datasets import load_digits  # scikit-learn is slow to import: only when needed

    bunch = load_digits()
    images = np.asarray(bunch.data, np.float64)
    labels = np.asarray(bunch.target, np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def digits(
    key: jax.Array | None = None,
    *,
    test_fraction: float = 0.2,
    standardize: bool = True,
    loss: str | None = None,
    dtype: jnp.dtype = jnp.float32,
) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits: 1797 images, 10 classes.

    Each row of ``x`` is an image flattened to 64 pixel intensities in 0 … 16.
    The split is fixed: ``round(test_fraction · 1797)`` images are held out by
    ``sklearn.model_selection.train_test_split`` with ``random_state=0``,
    stratified by class (when each side can hold every class). With
    ``standardize``, every pixel is centred and scaled by the training set's
    statistics,

        x ← (x − μ) / σ,   μ, σ = per-pixel mean and standard deviation over the training set,

    with σ replaced by 1 for pixels constant on the training set (they become 0);
    the test set uses the same μ and σ.

    Args:
      key: ignored; accepted so every set is called as ``f(key, **kwargs)``
        (see :func:`get`). The split does not depend on it.
      test_fraction: the held-out fraction, in [0, 1).
      standardize: centre and scale the pixels as above; ``False`` keeps the
        raw intensities 0 … 16.
      loss: the loss the targets are shaped for (module docstring); default
        ``"softmax_cross_entropy"``: ``y`` of shape ``(n,)``, int32, in 0 … 9.
        ``"mse"`` gives one-hot rows ``(n, 10)`` (the seed's digit network).
      dtype: the floating dtype of ``x`` (and of float targets).

    Returns:
      A :class:`Dataset` with ``x`` of shape ``(num_train, 64)``, ``num_classes=10``.

    Examples:
      >>> ds = digits()
      >>> ds.x.shape, ds.y.shape, ds.x_test.shape, ds.y.dtype
      ((1438, 64), (1438,), (359, 64), dtype('int32'))
    """
    del key  # the split is fixed
    test_fraction = _check_test_fraction(test_fraction)
    if not isinstance(standardize, bool | np.bool_):
        raise ValueError(f"standardize: expected True or False, got {standardize!r}.")
    loss = _check_loss(loss, CLASSIFICATION_LOSSES, SOFTMAX_CE)
    dtype = _check_dtype(dtype)

    images, labels = _digits_arrays()
    num_classes = 10
    n = labels.shape[0]
    n_test = _num_test(n, test_fraction)
    if n_test == 0:
        train, test = np.arange(n), np.arange(0)
    else:
        from sklearn.model_selection import train_test_split

        can_stratify = min(n_test, n - n_test) >= num_classes
        train, test = train_test_split(
            np.arange(n),
            test_size=n_test,
            random_state=DIGITS_SPLIT_SEED,
            stratify=labels if can_stratify else None,
        )
    x, x_test = images[train], images[test]
    if standardize:
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x, x_test = (x - mean) / std, (x_test - mean) / std
    arrays = (jnp.asarray(x, dtype), labels[train], jnp.asarray(x_test, dtype), labels[test])
    return _classification("digits", arrays, num_classes, loss, dtype)


# ---------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., Dataset]] = {
    f.__name__: f for f in (linear_regression, xor, moons, circles, spirals, digits)
}


def names() -> tuple[str, ...]:
    """The names :func:`get` accepts."""
    return tuple(_REGISTRY)


def get(name: str, key: jax.Array | None = None, **kwargs) -> Dataset:
    """The data set called ``name``, as ``<name>(key, **kwargs)``.

    ``xor`` and ``digits`` accept ``key=None``; the others need a key.

    >>> get("moons", jax.random.key(0), n=50, noise=0.2).x.shape
    (40, 2)
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"name: expected one of {', '.join(names())}, got {name!r}.")
    return _REGISTRY[name](key, **kwargs)


def from_config(config: dict) -> Dataset:
    """The data set a run was trained on, regenerated from its ``config.json``.

    The convention of ``scripts/train.py`` (and every script that trains):
    the data key is ``jax.random.split(jax.random.key(seed))[0]``, and
    ``config["data_kwargs"]`` (if present) holds the generator's arguments.

    >>> from_config({"data": "moons", "seed": 0}).x.shape
    (160, 2)
    """
    for field in ("data", "seed"):
        if field not in config:
            raise ValueError(f"config: expected a {field!r} entry, got keys {sorted(config)}.")
    data_key = jax.random.split(jax.random.key(config["seed"]))[0]
    return get(config["data"], data_key, **config.get("data_kwargs", {}))
