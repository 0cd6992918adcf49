"""Gradients of a cost: per mini-batch, per example, and by finite differences.

For a cost that is the mean of per-example costs, the mini-batch gradient is the mean of
the per-example gradients,

.. math:: \\nabla C = \\frac{1}{|B|} \\sum_{x \\in B} \\nabla C_x,

which is what ``jax.grad(cost)`` computes in one backward pass; ``per_example_grads``
keeps the terms apart (with ``jax.vmap``) for when they are wanted one by one: gradient
noise, per-example clipping, influence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gd_jax._src.costs import Cost
from gd_jax._src.network import Params

__all__ = ["batch_grad", "finite_difference_grad", "per_example_grads"]


def per_example_grads(cost: Cost, params: Params, x: jax.Array, y: jax.Array) -> Params:
    """The gradient of ``cost`` at each example separately.

    Args:
      cost: ``cost(params, x, y)`` averaging over a batch.
      params: the network.
      x: inputs ``(batch, n_0)``.
      y: targets ``(batch, ...)``.

    Returns:
      A pytree like ``params`` whose leaves have a leading batch axis: leaf ``[i]`` is
      ``grad C_{x_i}``. Their mean over the batch axis is ``jax.grad(cost)(params, x, y)``.
    """

    def one(p: Params, xi: jax.Array, yi: jax.Array) -> jax.Array:
        # A batch of one, so that the cost's mean is the example's own cost.
        return cost(p, xi[None], yi[None])

    return jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, x, y)


def batch_grad(cost: Cost, params: Params, x: jax.Array, y: jax.Array) -> Params:
    """The mini-batch gradient ``1/|B| sum_x grad C_x``, i.e. ``jax.grad(cost)``."""
    return jax.grad(cost)(params, x, y)


def finite_difference_grad(cost: Cost, params: Params, x, y, *, eps: float = 1e-6) -> Params:
    """Central finite differences ``(C(p + eps e_i) - C(p - eps e_i)) / (2 eps)``, one parameter at a time.

    A slow, autodiff-free reference for checking gradients on small networks; run it in
    float64 (``jax_enable_x64``) so that the truncation and rounding errors, O(eps^2) and
    O(ulp / eps), are both far below the tolerance checked.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    value = jax.jit(cost)
    grads = []
    for k, leaf in enumerate(leaves):
        base = np.array(leaf)
        g = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            shifted = []
            for sign in (1, -1):
                p = base.copy()
                p[i] += sign * eps
                trial = leaves[:k] + [jnp.asarray(p)] + leaves[k + 1:]
                shifted.append(float(value(jax.tree_util.tree_unflatten(treedef, trial), x, y)))
            g[i] = (shifted[0] - shifted[1]) / (2 * eps)
        grads.append(g)
    return jax.tree_util.tree_unflatten(treedef, grads)
