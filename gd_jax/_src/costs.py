"""Cost functions ``cost(params, x, y) -> scalar``: the mean over the batch of a per-example cost.

Every cost here averages a per-example cost ``C_x`` over the batch,

.. math:: C = \\frac{1}{n} \\sum_x C_x,

so that ``jax.grad(cost)`` is the mini-batch gradient, the mean of the per-example
gradients. ``y`` is one-hot, shape ``(batch, n_L)``. The ``activation`` keyword names the
hidden neurons' non-linearity (and the output's, for the quadratic cost); bind it with
``functools.partial`` to train other networks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import jax
import jax.numpy as jnp

from gd_jax._src.network import Params, forward, predict

__all__ = [
    "COSTS",
    "Cost",
    "cross_entropy_cost",
    "l2_penalty",
    "log_likelihood_cost",
    "quadratic_cost",
    "with_l2",
]

Cost = Callable[[Params, jax.Array, jax.Array], jax.Array]


def quadratic_cost(params: Params, x: jax.Array, y: jax.Array, *, activation: str = "sigmoid") -> jax.Array:
    """Quadratic (mean squared error) cost, the textbook's chapter 1 cost.

    .. math:: C = \\frac{1}{2n} \\sum_x \\lVert y(x) - a^L(x) \\rVert^2

    Args:
      params: the network.
      x: inputs ``(batch, n_0)``.
      y: one-hot targets ``(batch, n_L)``.
      activation: the neurons' non-linearity.
    """
    a = predict(params, x, activation=activation)
    return 0.5 * jnp.mean(jnp.sum((y - a) ** 2, axis=-1))


def cross_entropy_cost(params: Params, x: jax.Array, y: jax.Array, *, activation: str = "sigmoid") -> jax.Array:
    """Cross-entropy cost for sigmoid output neurons (chapter 3), computed stably.

    .. math:: C = -\\frac{1}{n} \\sum_x \\sum_j \\left[ y_j \\ln a_j + (1 - y_j) \\ln (1 - a_j) \\right],
       \\quad a_j = \\sigma(z_j)

    With ``ln sigma(z) = -softplus(-z)`` and ``ln(1 - sigma(z)) = -softplus(z)`` each term is
    ``softplus(z) - y z``, which stays finite when the sigmoid saturates (where ``ln a``
    of a rounded ``a = 0`` or ``1`` would give ``inf`` and then NaN gradients).

    The output neurons are always sigmoid; ``activation`` sets the hidden ones.
    """
    z = forward(params, x, activation=activation)
    return jnp.mean(jnp.sum(jax.nn.softplus(z) - y * z, axis=-1))


def log_likelihood_cost(params: Params, x: jax.Array, y: jax.Array, *, activation: str = "sigmoid") -> jax.Array:
    """Log-likelihood cost for a softmax output layer (chapter 3).

    .. math:: C = -\\frac{1}{n} \\sum_x \\ln a^L_{y(x)}, \\qquad a^L = \\mathrm{softmax}(z^L)

    computed as ``-sum_j y_j log_softmax(z)_j``, stable for any ``z``.
    """
    z = forward(params, x, activation=activation)
    return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(z, axis=-1), axis=-1))


def l2_penalty(params: Params) -> jax.Array:
    """Half the sum of squared weights (biases excluded), ``1/2 sum_w w^2``."""
    return cast(jax.Array, 0.5 * sum(jnp.sum(layer["w"] ** 2) for layer in params))


def with_l2(cost: Cost, lmbda: float, n: int) -> Cost:
    """Adds the textbook's L2 regularisation term to ``cost``.

    .. math:: C = C_0 + \\frac{\\lambda}{2n} \\sum_w w^2

    where ``n`` is the size of the whole training set (not of the mini-batch), as in
    ``network2.py``, so that each step decays weights by ``1 - eta lambda / n``.
    """
    if n <= 0 or lmbda < 0:
        raise ValueError(f"with_l2 needs lmbda >= 0 and n > 0, got lmbda={lmbda}, n={n}")

    def regularised(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
        return cost(params, x, y) + (lmbda / n) * l2_penalty(params)

    return regularised


COSTS: dict[str, Cost] = {
    "quadratic": quadratic_cost,
    "cross-entropy": cross_entropy_cost,
    "log-likelihood": log_likelihood_cost,
}
