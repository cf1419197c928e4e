"""Reference networks as pure JAX functions: the MNIST-1D paper's three, and an MLP with skips.

Each network is a frozen, hashable dataclass holding only its static structure,
with two pure functions over a params pytree::

    net = nets.mnist1d_cnn()
    params = net.init(jax.random.key(0))          # list[dict]: one {"w", "b"} per layer
    logits = net.apply(params, x)                 # x: (batch, 40) → (batch, 10); net(params, x) too
    gdjax.train.fit(net, "softmax_cross_entropy", "adam", ds, params=params, ...)

Two nets built with the same arguments are equal and hash equal, so a net can
be a static argument of ``jax.jit``, and :func:`gdjax.train.fit`, given the net
itself (a net is callable as ``net(params, x)``), reuses the code it compiled
for an equal net. (Given ``net.apply``, it reuses it only for the same net
object: Python compares bound methods by their object's identity.) The nets
train with autodiff (``grad="auto"``); :class:`gdjax.MLP` is the network with
the hand-written backward pass.

    factory                      class          layers (the MNIST-1D paper's sizes)
    logistic_regression()        FeedForward    40 → 10
    mnist1d_mlp()                FeedForward    40 → 100 → 100 (skip) → 10, ReLU
    mnist1d_cnn()                ConvNet1D      conv 25×5/2 → 25×3/2 → 25×3/2, ReLU → 10
    mlp(sizes, residual=…)       FeedForward    any widths, optional skips

Notation (the seed's, as in :mod:`gdjax.mlp`): ``a^0 = x``, ``z^l`` the
pre-activation and ``a^l`` the activation of layer l = 1 … L, ``w^l`` of shape
``(n_out, n_in)``: ``(n_l, n_{l-1})`` for a dense layer and
``(C_l, C_{l-1}, k_l)`` for a convolution (out channels, in channels, kernel
width), the layouts of PyTorch's ``nn.Linear`` and ``nn.Conv1d`` weights, so
the paper's PyTorch params convert leaf for leaf. The last layer is linear: its
``z^L`` are the logits (the cross-entropies take logits).

**Initialisation** (``init(key, scheme=…)``), with ``fan_in = n_{l-1}`` or
``C_{l-1}·k_l`` and ``fan_out = n_l`` or ``C_l·k_l``:

- ``"pytorch"`` (default; the paper's code uses PyTorch's defaults):
  ``w^l, b^l ~ U(−1/√fan_in, 1/√fan_in)``;
- ``"he"`` (He et al. 2015): ``w^l ~ N(0, 2/fan_in)``, ``b^l = 0``;
- ``"glorot"`` (Glorot & Bengio 2010, uniform): ``w^l ~ U(±√(6/(fan_in + fan_out)))``,
  ``b^l = 0``.

References: S. Greydanus and D. Kobak, "Scaling down deep learning with
MNIST-1D", ICML 2024, and its code (``notebooks/models.py`` of
github.com/greydanus/mnist1d: ``LinearBase``, ``MLPBase``, ``ConvBase``);
K. He et al., "Deep residual learning for image recognition", CVPR 2016 (skips).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import activations
from gdjax._checks import check_key, check_memory, shape_of
from gdjax.activations import Activation

__all__ = [
    "FeedForward",
    "ConvNet1D",
    "INIT_SCHEMES",
    "mlp",
    "logistic_regression",
    "mnist1d_mlp",
    "mnist1d_cnn",
]

Params = list[dict[str, jax.Array]]

INIT_SCHEMES = ("pytorch", "he", "glorot")

MNIST1D_INPUTS = 40
MNIST1D_CLASSES = 10


# ---------------------------------------------------------------- shared pieces


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
        raise ValueError(f"{name}: expected an integer ≥ {lo}, got {value!r}.")
    return int(value)


def _int_tuple(name: str, values, lo: int, length: int | None = None) -> tuple[int, ...]:
    """``values`` as a tuple of ints ≥ ``lo`` (of ``length`` entries, if given)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{name}: expected a list or tuple of integers, got {values!r}.")
    if length is not None and len(values) != length:
        raise ValueError(
            f"{name}: expected {length} entries (one per conv layer), got {len(values)}: "
            f"{tuple(values)!r}."
        )
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
            raise ValueError(
                f"{name}: expected integers ≥ {lo}, got {name}[{i}] = {v!r} in {tuple(values)!r}."
            )
    return tuple(int(v) for v in values)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name}: expected True or False, got {value!r}.")
    return bool(value)


def _init_dtype(dtype) -> jnp.dtype:
    if dtype is None:  # float64 under jax_enable_x64, float32 otherwise (as MLP.init)
        return jax.dtypes.canonicalize_dtype(jnp.float64)
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype: expected a floating dtype such as jnp.float32, got {dtype!r}.")
    return dt


def _layer(key, shape: tuple[int, ...], fan_in: int, fan_out: int, scheme: str, dtype) -> dict:
    """``{"w": shape, "b": (shape[0],)}`` drawn by ``scheme`` (module docstring)."""
    w_key, b_key = jax.random.split(key)
    bias_shape = (shape[0],)
    if scheme == "pytorch":
        r = 1.0 / math.sqrt(fan_in)
        w = jax.random.uniform(w_key, shape, dtype, minval=-r, maxval=r)
        b = jax.random.uniform(b_key, bias_shape, dtype, minval=-r, maxval=r)
    elif scheme == "he":
        w = math.sqrt(2.0 / fan_in) * jax.random.normal(w_key, shape, dtype)
        b = jnp.zeros(bias_shape, dtype)
    else:  # glorot
        r = math.sqrt(6.0 / (fan_in + fan_out))
        w = jax.random.uniform(w_key, shape, dtype, minval=-r, maxval=r)
        b = jnp.zeros(bias_shape, dtype)
    return {"w": w, "b": b}


def _init(net, key, scheme: str, dtype) -> Params:
    """Params for every layer of ``net`` (its ``param_shapes`` and ``fans``), one key each."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"scheme: expected one of {', '.join(INIT_SCHEMES)}, got {scheme!r}.")
    dtype = _init_dtype(dtype)
    check_key(key)
    count = sum(math.prod(s["w"]) + math.prod(s["b"]) for s in net.param_shapes())
    check_memory(
        "net",
        count * dtype.itemsize,
        "a net whose params",
        f"{net!r}: {count:,} params of {dtype.name} ({dtype.itemsize} bytes each)",
    )
    keys = jax.random.split(key, net.num_layers)
    return [
        _layer(k, shapes["w"], fan_in, fan_out, scheme, dtype)
        for k, shapes, (fan_in, fan_out) in zip(keys, net.param_shapes(), net.fans(), strict=True)
    ]


def _check_params(net, params) -> None:
    """A ValueError unless ``params`` is ``net``'s list of ``{"w", "b"}`` with the right shapes."""
    expected = net.param_shapes()
    if not isinstance(params, list | tuple) or len(params) != len(expected):
        got = (
            f"{len(params)} entries" if isinstance(params, list | tuple) else type(params).__name__
        )
        raise ValueError(
            f"params: expected a list of {len(expected)} dicts {{'w', 'b'}}, one per layer of "
            f"{net!r} (as net.init makes), got {got}."
        )
    for layer, (p, shapes) in enumerate(zip(params, expected, strict=True)):
        if not isinstance(p, dict) or set(p) != {"w", "b"}:
            got = sorted(p) if isinstance(p, dict) else type(p).__name__
            raise ValueError(f"params[{layer}]: expected a dict with keys 'w' and 'b', got {got}.")
        for name, shape in shapes.items():
            if shape_of(p[name]) != shape:
                raise ValueError(
                    f"params[{layer}][{name!r}]: expected shape {shape}, got {shape_of(p[name])}."
                )


def _check_input(net, x) -> None:
    shape = shape_of(x)
    if len(shape) != 2 or shape[1] != net.num_inputs:
        raise ValueError(
            f"x: expected shape (batch, {net.num_inputs}) for {type(net).__name__} with "
            f"{net.num_inputs} inputs, got {shape}."
        )


# ---------------------------------------------------------------- dense


@dataclasses.dataclass(frozen=True)
class FeedForward:
    """A fully connected network with optional skip connections, logits out.

        a^0 = x
        z^l = w^l a^{l-1} + b^l                                         l = 1 … L
        a^l = a^{l-1} + σ(z^l)   if residual, 2 ≤ l ≤ L−1 and n_l = n_{l-1}   (a skip)
        a^l = σ(z^l)             otherwise, for l ≤ L−1
        output = z^L                                                    (logits)

    A skip joins two hidden layers of equal width (He et al. 2016); the input
    (l = 1) and the output layer (l = L) never have one. Without skips this is
    :class:`gdjax.MLP` with ``output_activation="identity"``, on the same params.

    Args:
      sizes: widths ``(n_0, n_1, …, n_L)``, input first, output last; at least two.
      activation: σ of the hidden layers, a name from
        :func:`gdjax.activations.names` or an :class:`~gdjax.activations.Activation`.
      residual: add the skips above. ``True`` needs two consecutive hidden
        layers of equal width (else there is nowhere to put a skip, and the
        constructor says so).

    Params: ``[{"w": (n_l, n_{l-1}), "b": (n_l,)} for l = 1 … L]``, as :class:`gdjax.MLP`'s.

    Examples:
      >>> net = mlp((40, 100, 100, 100, 10), residual=True)
      >>> net.skips
      (2, 3)
      >>> params = net.init(jax.random.key(0))
      >>> net.apply(params, jnp.ones((5, 40))).shape
      (5, 10)
      >>> net == mlp([40, 100, 100, 100, 10], residual=True, activation="relu")
      True
    """

    sizes: tuple[int, ...]
    activation: Activation = activations.relu
    residual: bool = False

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence) or len(sizes) < 2:
            raise ValueError(
                f"sizes: expected a list or tuple of at least two widths, input first and output "
                f"last, like (40, 100, 10), got {sizes!r}."
            )
        object.__setattr__(self, "sizes", _int_tuple("sizes", sizes, 1))
        object.__setattr__(self, "activation", activations.get(self.activation))
        object.__setattr__(self, "residual", _check_bool("residual", self.residual))
        if self.residual and not self.skips:
            raise ValueError(
                f"residual: expected sizes with two consecutive hidden layers of equal width "
                f"to join by a skip (such as (40, 100, 100, 10)), got residual=True with sizes "
                f"{self.sizes}. Pass residual=False for a plain MLP."
            )

    @property
    def num_layers(self) -> int:
        """L, the number of weight layers."""
        return len(self.sizes) - 1

    @property
    def num_inputs(self) -> int:
        """n_0, the input width."""
        return self.sizes[0]

    @property
    def skips(self) -> tuple[int, ...]:
        """The layers l (1-based) with a skip ``a^l = a^{l-1} + σ(z^l)``; none if not residual."""
        if not getattr(self, "residual", False):
            return ()
        widths = self.sizes
        return tuple(
            layer for layer in range(2, self.num_layers) if widths[layer] == widths[layer - 1]
        )

    def param_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """``[{"w": (n_l, n_{l-1}), "b": (n_l,)}, …]``, the shapes :meth:`init` makes."""
        return [{"w": (o, i), "b": (o,)} for i, o in zip(self.sizes, self.sizes[1:], strict=False)]

    def fans(self) -> list[tuple[int, int]]:
        """``(fan_in, fan_out) = (n_{l-1}, n_l)`` of every layer."""
        return list(zip(self.sizes, self.sizes[1:], strict=False))

    def init(self, key: jax.Array, *, scheme: str = "pytorch", dtype=None) -> Params:
        """Initial params drawn with ``key`` by ``scheme`` (module docstring).

        Args:
          key: a ``jax.random`` key; layer l draws from ``jax.random.split(key, L)[l-1]``.
          scheme: one of :data:`INIT_SCHEMES`; ``"pytorch"`` by default.
          dtype: a floating dtype for every leaf; ``None`` is JAX's default
            float (float64 under ``jax_enable_x64``), as :meth:`gdjax.MLP.init`.
        """
        return _init(self, key, scheme, dtype)

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """The logits ``z^L`` for a batch ``x`` of shape ``(batch, n_0)``: ``(batch, n_L)``.

        ``x`` is cast to the dtype of ``w^1``; a batch computes ``z^l = a^{l-1} (w^l)ᵀ + b^l``.
        """
        _check_params(self, params)
        _check_input(self, x)
        a = jnp.asarray(x, jnp.result_type(params[0]["w"]))
        skips = self.skips
        for layer, p in enumerate(params[:-1], start=1):  # layer = l of the equations
            h = self.activation.fn(a @ p["w"].T + p["b"])
            a = a + h if layer in skips else h
        return a @ params[-1]["w"].T + params[-1]["b"]

    def __call__(self, params: Params, x: jax.Array) -> jax.Array:
        """:meth:`apply`: the net is itself an ``apply(params, x)``, compared by value."""
        return self.apply(params, x)


# ---------------------------------------------------------------- convolutional


@dataclasses.dataclass(frozen=True)
class ConvNet1D:
    """1-D convolutions with a linear read-out: the MNIST-1D paper's CNN by default.

    The input row ``x`` of width n_0 is one channel, ``a^0[0, t] = x[t]``. Conv
    layer l = 1 … L−1 has C_l output channels, kernel width k_l, stride s_l and
    p_l zeros padded on each side (``â^{l-1}`` is ``a^{l-1}`` padded so):

        z^l[c, t] = b^l[c] + Σ_{c'} Σ_{j=0}^{k_l−1} w^l[c, c', j] · â^{l-1}[c', s_l·t + j]
        a^l = σ(z^l),    T_l = ⌊(T_{l-1} + 2 p_l − k_l) / s_l⌋ + 1 positions,  T_0 = n_0

    (a cross-correlation, as ``torch.nn.Conv1d``), and the read-out is linear
    on the flattened last activation, channel-major like PyTorch's ``view``:

        z^L = w^L vec(a^{L-1}) + b^L,   vec(a)[c·T + t] = a[c, t]          (logits)

    The paper's net (``mnist1d_cnn()``): n_0 = 40, three layers of 25
    channels, kernels 5, 3, 3, stride 2 and padding 1 each, so
    T = 40 → 19 → 10 → 5 and the read-out is 125 → 10.

    Args:
      num_inputs: n_0, the width of an input row.
      channels: (C_1, …, C_{L-1}), one per conv layer.
      kernel_sizes: (k_1, …), as many as ``channels``.
      strides: (s_1, …), as many as ``channels``.
      padding: (p_1, …), zeros on each side, as many as ``channels``.
      num_outputs: n_L, the logits.
      activation: σ of the conv layers, a name or an :class:`~gdjax.activations.Activation`.

    Params: ``[{"w": (C_l, C_{l-1}, k_l), "b": (C_l,)}`` for the conv layers
    (C_0 = 1), then ``{"w": (n_L, C_{L-1}·T_{L-1}), "b": (n_L,)}]``.

    Examples:
      >>> net = mnist1d_cnn()
      >>> net.lengths
      (40, 19, 10, 5)
      >>> params = net.init(jax.random.key(0))
      >>> [p["w"].shape for p in params]
      [(25, 1, 5), (25, 25, 3), (25, 25, 3), (10, 125)]
      >>> net.apply(params, jnp.ones((2, 40))).shape
      (2, 10)
    """

    num_inputs: int = MNIST1D_INPUTS
    channels: tuple[int, ...] = (25, 25, 25)
    kernel_sizes: tuple[int, ...] = (5, 3, 3)
    strides: tuple[int, ...] = (2, 2, 2)
    padding: tuple[int, ...] = (1, 1, 1)
    num_outputs: int = MNIST1D_CLASSES
    activation: Activation = activations.relu

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "num_inputs", _check_int("num_inputs", self.num_inputs, 1))
        channels = _int_tuple("channels", self.channels, 1)
        if not channels:
            raise ValueError("channels: expected at least one conv layer, got ().")
        set_(self, "channels", channels)
        n = len(channels)
        set_(self, "kernel_sizes", _int_tuple("kernel_sizes", self.kernel_sizes, 1, n))
        set_(self, "strides", _int_tuple("strides", self.strides, 1, n))
        set_(self, "padding", _int_tuple("padding", self.padding, 0, n))
        set_(self, "num_outputs", _check_int("num_outputs", self.num_outputs, 1))
        set_(self, "activation", activations.get(self.activation))
        length = self.num_inputs
        for i, (k, s, p) in enumerate(
            zip(self.kernel_sizes, self.strides, self.padding, strict=True)
        ):
            if length + 2 * p < k:
                raise ValueError(
                    f"kernel_sizes: expected kernel_sizes[{i}] ≤ {length + 2 * p}, the padded "
                    f"width of the input to conv layer {i + 1} ({length} positions + 2·{p} "
                    f"padding; widths {self.lengths} from num_inputs={self.num_inputs}), got {k}."
                )
            length = (length + 2 * p - k) // s + 1

    @property
    def num_layers(self) -> int:
        """L: the conv layers and the read-out."""
        return len(self.channels) + 1

    @property
    def lengths(self) -> tuple[int, ...]:
        """``(T_0 = n_0, T_1, …, T_{L-1})``: positions of the input and of each conv output."""
        out = [self.num_inputs]
        for k, s, p in zip(self.kernel_sizes, self.strides, self.padding, strict=True):
            if out[-1] + 2 * p < k:
                break
            out.append((out[-1] + 2 * p - k) // s + 1)
        return tuple(out)

    def param_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The shapes :meth:`init` makes (class docstring)."""
        ins = (1, *self.channels[:-1])
        shapes = [
            {"w": (c, c_in, k), "b": (c,)}
            for c, c_in, k in zip(self.channels, ins, self.kernel_sizes, strict=True)
        ]
        flat = self.channels[-1] * self.lengths[-1]
        return [*shapes, {"w": (self.num_outputs, flat), "b": (self.num_outputs,)}]

    def fans(self) -> list[tuple[int, int]]:
        """``(fan_in, fan_out)``: ``(C_{l-1}·k_l, C_l·k_l)`` per conv layer, then the read-out's."""
        fans = [(w[1] * w[2], w[0] * w[2]) for w in (s["w"] for s in self.param_shapes()[:-1])]
        n_out, n_in = self.param_shapes()[-1]["w"]
        return [*fans, (n_in, n_out)]

    def init(self, key: jax.Array, *, scheme: str = "pytorch", dtype=None) -> Params:
        """Initial params drawn with ``key`` by ``scheme`` (module docstring).

        Args:
          key: a ``jax.random`` key; layer l draws from ``jax.random.split(key, L)[l-1]``.
          scheme: one of :data:`INIT_SCHEMES`; ``"pytorch"`` (the paper's) by default.
          dtype: a floating dtype for every leaf; ``None`` is JAX's default
            float (float64 under ``jax_enable_x64``), as :meth:`gdjax.MLP.init`.
        """
        return _init(self, key, scheme, dtype)

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """The logits ``z^L`` for a batch ``x`` of shape ``(batch, n_0)``: ``(batch, n_L)``.

        ``x`` is cast to the dtype of ``w^1``.
        """
        _check_params(self, params)
        _check_input(self, x)
        a = jnp.asarray(x, jnp.result_type(params[0]["w"]))[:, None, :]  # (batch, C_0 = 1, T_0)
        for p, s, pad in zip(params[:-1], self.strides, self.padding, strict=True):
            z = jax.lax.conv_general_dilated(
                a, p["w"], (s,), [(pad, pad)], dimension_numbers=("NCH", "OIH", "NCH")
            )
            a = self.activation.fn(z + p["b"][None, :, None])
        a = a.reshape(a.shape[0], -1)  # vec: channel-major, as torch's view
        return a @ params[-1]["w"].T + params[-1]["b"]

    def __call__(self, params: Params, x: jax.Array) -> jax.Array:
        """:meth:`apply`: the net is itself an ``apply(params, x)``, compared by value."""
        return self.apply(params, x)


# ---------------------------------------------------------------- factories


def mlp(
    sizes: Sequence[int], *, residual: bool = False, activation: str | Activation = "relu"
) -> FeedForward:
    """A :class:`FeedForward` network of widths ``sizes``, with skips if ``residual``.

    For depth studies, ``mlp((40, *[100] * depth, 10), residual=r)`` has
    ``depth`` hidden layers and, with ``r``, ``depth − 1`` skips.

    Examples:
      >>> [mlp((40, *[100] * d, 10), residual=True).skips for d in (2, 6)]
      [(2,), (2, 3, 4, 5, 6)]
    """
    return FeedForward(sizes, activation, residual)


def logistic_regression(
    num_inputs: int = MNIST1D_INPUTS, num_classes: int = MNIST1D_CLASSES
) -> FeedForward:
    """Multinomial logistic regression, one linear layer: ``z^1 = w^1 x + b^1``, 40 → 10.

    The paper's ``LinearBase``; train it with ``"softmax_cross_entropy"``.

    Examples:
      >>> [p["w"].shape for p in logistic_regression().init(jax.random.key(0))]
      [(10, 40)]
    """
    return FeedForward((num_inputs, num_classes))


def mnist1d_mlp(
    hidden: int = 100, num_inputs: int = MNIST1D_INPUTS, num_classes: int = MNIST1D_CLASSES
) -> FeedForward:
    """The MNIST-1D paper's MLP (``MLPBase``): one residual block, ReLU.

        a^1 = relu(w^1 x + b^1)                 40 → 100
        a^2 = a^1 + relu(w^2 a^1 + b^2)         100 → 100, a skip
        z^3 = w^3 a^2 + b^3                     100 → 10 (logits)

    Examples:
      >>> net = mnist1d_mlp()
      >>> net.sizes, net.skips
      ((40, 100, 100, 10), (2,))
    """
    hidden = _check_int("hidden", hidden, 1)
    return FeedForward((num_inputs, hidden, hidden, num_classes), "relu", True)


def mnist1d_cnn(
    channels: int = 25, num_inputs: int = MNIST1D_INPUTS, num_classes: int = MNIST1D_CLASSES
) -> ConvNet1D:
    """The MNIST-1D paper's CNN (``ConvBase``): three ReLU conv layers, a linear read-out.

        a^l = relu(conv_{stride 2, padding 1}(w^l, a^{l-1}) + b^l),   kernels 5, 3, 3
        z^4 = w^4 vec(a^3) + b^4                                     25·5 = 125 → 10

    See :class:`ConvNet1D` for the convolution's equation.

    Examples:
      >>> mnist1d_cnn() == ConvNet1D()
      True
    """
    channels = _check_int("channels", channels, 1)
    return ConvNet1D(num_inputs, (channels,) * 3, (5, 3, 3), (2, 2, 2), (1, 1, 1), num_classes)
