"""Models the tests share."""

import jax
import jax.numpy as jnp


def conv_apply(params, x):
    """A 1-D conv net in plain JAX: conv (kernel 3, VALID) → tanh → dense → logits.

    ``params = {"conv": {"w": (C, 1, 3), "b": (C,)}, "dense": {"w": (k, C·(L−2)), "b": (k,)}}``
    for signals x of shape (n, L).
    """
    h = jax.lax.conv_general_dilated(
        x[:, None, :],
        params["conv"]["w"],
        window_strides=(1,),
        padding="VALID",
        dimension_numbers=("NCH", "OIH", "NCH"),
    )
    h = jnp.tanh(h + params["conv"]["b"][None, :, None])
    return h.reshape(h.shape[0], -1) @ params["dense"]["w"].T + params["dense"]["b"]
