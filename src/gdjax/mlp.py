"""The multilayer perceptron as a chain of functions.

    a^0 = x,   z^l = w^l a^{l-1} + b^l,   a^l = σ(z^l),   l = 1 … L

with ``w^l`` of shape ``(n_l, n_{l-1})`` and ``b^l`` of shape ``(n_l,)``, as in
the seed tutorial. A batch is a matrix whose rows are examples, so the code
computes ``z^l = a^{l-1} @ (w^l)ᵀ + b^l``. Hidden layers use ``activation``;
the last layer uses ``output_activation``.

Params are a plain pytree, ``list[dict]`` with keys ``"w"`` and ``"b"``, so
``jax.grad``, ``optax`` and ``jax.tree_util`` work on them unchanged; the
``MLP`` object holds only static structure and is hashable, so it can be a
static argument of ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import _jit, activations
from gdjax._checks import (
    check_finite,
    check_key,
    check_memory,
    check_real_data,
    describe,
    dtype_of,
    shape_of,
)
from gdjax.activations import Activation

__all__ = ["MLP", "Params", "INIT_SCHEMES"]

Params = list[dict[str, jax.Array]]

INIT_SCHEMES = ("glorot", "he", "normal")

_PARAMS_FORM = (
    "An MLP's params are [{'w': (n_1, n_0) array, 'b': (n_1,) array}, ...], one dict per "
    "layer, as model.init(key) returns them (not nested lists)."
)


@dataclasses.dataclass(frozen=True)
class MLP:
    """A fully connected network ``x → a^1 → … → a^L``.

    Args:
      sizes: layer widths ``(n_0, n_1, …, n_L)``: the input width first, the
        output width last. A list or tuple of at least two positive ints.
      activation: σ of the hidden layers, a name from
        :func:`gdjax.activations.names` or an :class:`~gdjax.activations.Activation`.
      output_activation: σ of the last layer (``"identity"`` gives logits).

    Examples:
      >>> model = MLP(sizes=[3, 16, 2], activation="tanh")
      >>> params = model.init(jax.random.key(0))
      >>> [p["w"].shape for p in params]
      [(16, 3), (2, 16)]
      >>> model.apply(params, jnp.ones((5, 3))).shape
      (5, 2)
    """

    sizes: tuple[int, ...]
    activation: Activation = activations.sigmoid
    output_activation: Activation = activations.identity

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence):
            raise ValueError(
                f"sizes: expected a list or tuple of layer widths like (2, 16, 1), got {sizes!r}."
            )
        if len(sizes) < 2:
            raise ValueError(
                f"sizes: expected at least two entries (input width and output width), "
                f"got {tuple(sizes)!r}."
            )
        for i, n in enumerate(sizes):
            if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
                raise ValueError(
                    f"sizes: expected positive integer widths, got sizes[{i}] = {n!r} "
                    f"in {tuple(sizes)!r}."
                )
        object.__setattr__(self, "sizes", tuple(int(n) for n in sizes))
        object.__setattr__(self, "activation", activations.get(self.activation))
        object.__setattr__(
            self,
            "output_activation",
            activations.get(self.output_activation, argument="output_activation"),
        )

    @property
    def num_params(self) -> int:
        """The number of scalars in params: Σ_l n_l (n_{l-1} + 1)."""
        pairs = zip(self.sizes[:-1], self.sizes[1:], strict=True)
        return sum(n_out * (n_in + 1) for n_in, n_out in pairs)

    def check_size(self, dtype) -> None:
        """Raise ``ValueError`` naming ``sizes`` when params of ``dtype`` would not fit in
        memory (:func:`gdjax._checks.memory_limit`): bytes = :attr:`num_params` × itemsize."""
        dtype = jnp.dtype(dtype)
        check_memory(
            "sizes",
            self.num_params * dtype.itemsize,
            "layer widths whose params",
            f"sizes {self.sizes}: {self.num_params:,} params of {dtype.name} "
            f"({dtype.itemsize} bytes each)",
        )

    @property
    def num_layers(self) -> int:
        """L, the number of weight layers."""
        return len(self.sizes) - 1

    def activation_of(self, layer: int) -> Activation:
        """σ of layer ``layer`` (0-based: ``layer = l − 1``)."""
        return self.output_activation if layer == self.num_layers - 1 else self.activation

    def init(
        self,
        key: jax.Array,
        *,
        scheme: str = "glorot",
        scale: float = 1.0,
        dtype: jnp.dtype | None = None,
    ) -> Params:
        """Draw initial params with an explicit PRNG key.

        Schemes (``n_in = n_{l-1}``, ``n_out = n_l``):

        - ``"glorot"`` (Glorot & Bengio 2010, uniform):
          ``w ~ U(−r, r)``, ``r = scale·√(6 / (n_in + n_out))``; ``b = 0``.
        - ``"he"`` (He et al. 2015, normal): ``w ~ N(0, scale²·2 / n_in)``; ``b = 0``.
        - ``"normal"`` (Nielsen's network.py): ``w, b ~ N(0, scale²)``.

        Args:
          key: a ``jax.random`` key.
          scheme: one of :data:`INIT_SCHEMES`.
          scale: gain multiplying the scheme's standard deviation.
          dtype: a floating dtype for every leaf. ``None`` (the default) is JAX's
            default float dtype, as for ``jnp.zeros`` and ``jax.random.normal``:
            float32, or float64 when ``jax_enable_x64`` is on.

        Returns:
          ``[{"w": (n_1, n_0), "b": (n_1,)}, …]``, one dict per layer.
        """
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"scheme: expected one of {', '.join(INIT_SCHEMES)}, got {scheme!r}.")
        if dtype is None:  # float64 under jax_enable_x64, float32 otherwise
            dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        try:
            floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
        except TypeError:
            floating = False
        if not floating:
            try:
                got = jnp.dtype(dtype).name
            except TypeError:
                got = repr(dtype)
            raise ValueError(f"dtype: expected a floating dtype, got {got}.")
        if isinstance(scale, bool) or not isinstance(scale, int | float | np.number):
            raise ValueError(f"scale: expected a non-negative number, got {scale!r}.")
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"scale: expected a finite, non-negative number, got {scale!r}.")
        check_key(key)
        self.check_size(dtype)
        params = []
        keys = jax.random.split(key, self.num_layers)
        for layer_key, n_in, n_out in zip(keys, self.sizes[:-1], self.sizes[1:], strict=True):
            w_key, b_key = jax.random.split(layer_key)
            shape = (n_out, n_in)
            if scheme == "glorot":
                r = scale * math.sqrt(6.0 / (n_in + n_out))
                w = jax.random.uniform(w_key, shape, dtype, minval=-r, maxval=r)
                b = jnp.zeros((n_out,), dtype)
            elif scheme == "he":
                w = scale * math.sqrt(2.0 / n_in) * jax.random.normal(w_key, shape, dtype)
                b = jnp.zeros((n_out,), dtype)
            else:
                w = scale * jax.random.normal(w_key, shape, dtype)
                b = scale * jax.random.normal(b_key, (n_out,), dtype)
            params.append({"w": w, "b": b})
        return params

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """The network output ``a^L`` for a batch ``x`` of shape ``(batch, n_0)``.

        Called eagerly it compiles once per model and shapes (:mod:`gdjax._jit`);
        inside a user's ``jit``/``vmap``/``grad`` it is traced as part of theirs.
        """
        self._check_call(params, x)
        return _jit.call(_output, (self,), params, x)

    def trace(self, params: Params, x: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
        """Every pre-activation and activation of the forward pass.

            z^l = a^{l-1} (w^l)ᵀ + b^l,   a^l = σ(z^l),   a^0 = x

        ``x`` is cast to the dtype of the first layer's weights.

        Returns:
          ``(zs, acts)``: ``zs[l-1] = z^l`` of shape ``(batch, n_l)`` for
          l = 1 … L, and ``acts[l] = a^l`` for l = 0 … L (``acts[0]`` is ``x``).
        """
        self._check_call(params, x)
        return _jit.call(_forward, (self,), params, x)

    def _check_call(self, params: Params, x: jax.Array) -> None:
        self.check_params(params)
        self.check_input(x)
        check_finite("x", x)  # concrete arrays only: free under jit
        for layer, p in enumerate(params):
            for name in ("w", "b"):
                check_finite(f"params[{layer}][{name!r}]", p[name])

    def check_input(self, x) -> None:
        """Raise ``ValueError`` unless ``x`` has shape ``(batch, sizes[0])``."""
        shape = shape_of(x)
        if len(shape) != 2 or shape[1] != self.sizes[0]:
            raise ValueError(
                f"x: expected shape (batch, {self.sizes[0]}) with {self.sizes[0]} = sizes[0], "
                f"got {shape}."
            )
        check_real_data("x", x)

    def check_params(self, params: Params) -> None:
        """Raise ``ValueError`` unless ``params`` has this model's structure and shapes."""
        if not isinstance(params, list | tuple) or len(params) != self.num_layers:
            if isinstance(params, list | tuple):
                got = f"{len(params)} entries"
            else:
                got = describe(params)
            raise ValueError(
                f"params: expected a list of {self.num_layers} layer dicts for sizes "
                f"{self.sizes}, got {got}. {_PARAMS_FORM}"
            )
        for layer, (p, n_in, n_out) in enumerate(
            zip(params, self.sizes[:-1], self.sizes[1:], strict=True)
        ):
            if not isinstance(p, dict) or set(p) != {"w", "b"}:
                got = f"keys {sorted(p)}" if isinstance(p, dict) else type(p).__name__
                raise ValueError(
                    f"params[{layer}]: expected a dict with keys 'w' and 'b', got {got}. "
                    f"{_PARAMS_FORM}"
                )
            for name, want in (("w", (n_out, n_in)), ("b", (n_out,))):
                if shape_of(p[name]) != want:
                    raise ValueError(
                        f"params[{layer}]['{name}']: expected shape {want} for sizes "
                        f"{self.sizes}, got {shape_of(p[name])}."
                    )
                dtype = dtype_of(p[name])
                if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
                    raise ValueError(
                        f"params[{layer}]['{name}']: expected a floating dtype (float16 … "
                        f"float64), got {dtype}."
                    )
                if dtype != dtype_of(params[0]["w"]):
                    raise ValueError(
                        f"params[{layer}]['{name}']: expected the dtype of params[0]['w'] "
                        f"({dtype_of(params[0]['w'])}) in every leaf, got {dtype}."
                    )


def _forward(model: MLP, params: Params, x: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
    """``(zs, acts)`` of :meth:`MLP.trace`, unchecked: z^l = a^{l-1} (w^l)ᵀ + b^l, a^l = σ(z^l)."""
    a = jnp.asarray(x, dtype=jnp.result_type(params[0]["w"]))
    zs, acts = [], [a]
    for layer, p in enumerate(params):
        z = a @ p["w"].T + p["b"]
        a = model.activation_of(layer).fn(z)
        zs.append(z)
        acts.append(a)
    return zs, acts


def _output(model: MLP, params: Params, x: jax.Array) -> jax.Array:
    return _forward(model, params, x)[1][-1]
