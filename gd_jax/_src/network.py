"""Feed-forward networks as pytrees: initialisation and the forward pass.

A network with layer sizes ``[n_0, n_1, ..., n_L]`` is a list of ``L`` layers, each a dict
``{"w": (n_in, n_out), "b": (n_out,)}``. Arrays are batch first, so a layer maps a batch
``x`` of shape ``(batch, n_in)`` to

.. math:: z = x w + b, \\qquad a = \\sigma(z),

and ``predict`` applies that layer after layer, as ``feedforward`` does in the textbook's
``network.py`` (which stores the transpose, ``w a + b`` on column vectors).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "INITS", "Params", "forward", "init_mlp", "layer_sizes", "predict"]

Layer = dict[str, jax.Array]
Params = list[Layer]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "identity": lambda z: z,
}
INITS = ("normal", "scaled")


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def init_mlp(key: jax.Array, sizes: Sequence[int], init: str = "normal", *, dtype=jnp.float32) -> Params:
    """Initialises a fully connected network.

    Args:
      key: a JAX PRNG key; the only source of randomness.
      sizes: neurons per layer, input first, e.g. ``[784, 30, 10]``.
      init: ``"normal"``: every weight and bias ~ N(0, 1), as in the textbook's
        ``network.py`` (chapter 1); ``"scaled"``: weights ~ N(0, 1/n_in), biases ~ N(0, 1),
        as in ``network2.py`` (chapter 3), which keeps sigmoids out of saturation.
      dtype: float32 by default; float64 for gradient checks (needs ``jax_enable_x64``).

    Returns:
      A list of ``len(sizes) - 1`` dicts ``{"w": (n_in, n_out), "b": (n_out,)}``.
    """
    if len(sizes) < 2 or not _all_ints(sizes) or any(s <= 0 for s in sizes):
        raise ValueError(
            f"sizes must be two or more positive integers (input, hidden..., output), got {list(sizes)}; "
            "e.g. [784, 30, 10]"
        )
    sizes = [int(s) for s in sizes]
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    return _init_mlp(key, tuple(sizes), init, jnp.dtype(dtype))


# All the network's numbers come from one draw of N(0, 1) values, laid out layer by layer
# (w, then b), in one compiled program: the per-layer draws it replaces compiled a dozen
# random-number programs on first use, about 1 s on a 2-core CPU, where this takes 0.25 s.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_mlp(key: jax.Array, sizes: tuple[int, ...], init: str, dtype) -> Params:
    shapes = list(itertools.pairwise(sizes))
    z = jax.random.normal(key, (sum(n_in * n_out + n_out for n_in, n_out in shapes),), dtype)
    params, offset = [], 0
    for n_in, n_out in shapes:
        w = z[offset: offset + n_in * n_out].reshape(n_in, n_out)
        offset += n_in * n_out
        b = z[offset: offset + n_out]
        offset += n_out
        scale = 1.0 if init == "normal" else 1.0 / math.sqrt(n_in)
        params.append({"w": (scale * w).astype(dtype), "b": b})
    return params


def _all_ints(sizes) -> bool:
    try:
        return all(int(s) == s and not isinstance(s, bool) for s in sizes)
    except (TypeError, ValueError):
        return False


def layer_sizes(params: Params) -> list[int]:
    """The ``sizes`` list that built ``params``, e.g. ``[784, 30, 10]``."""
    return [int(params[0]["w"].shape[0])] + [int(layer["w"].shape[1]) for layer in params]


def forward(params: Params, x: jax.Array, *, activation: str = "sigmoid") -> jax.Array:
    """The output layer's weighted input ``z^L`` (before its activation).

    Hidden layers apply ``activation``; the last layer's ``z`` is returned raw so that
    costs can be computed stably from it (cross-entropy, log-likelihood).

    Args:
      params: the network.
      x: inputs of shape ``(batch, n_0)``.
      activation: the name of the neurons' non-linearity, a key of ``ACTIVATIONS``.
    """
    sigma = _activation(activation)
    a = x
    for layer in params[:-1]:
        a = sigma(a @ layer["w"] + layer["b"])
    return a @ params[-1]["w"] + params[-1]["b"]


def predict(params: Params, x: jax.Array, *, activation: str = "sigmoid") -> jax.Array:
    """The network's output activations ``a^L = sigma(z^L)``, shape ``(batch, n_L)``."""
    return _activation(activation)(forward(params, x, activation=activation))
