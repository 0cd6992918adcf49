"""Gradients of a cost: per mini-batch, per example, and by finite differences.

For a cost that is the mean of per-example costs, the mini-batch gradient is the mean of
the per-example gradients,

.. math:: \\nabla C = \\frac{1}{|B|} \\sum_{x \\in B} \\nabla C_x,

which is what ``jax.grad(cost)`` computes in one backward pass; ``per_example_grads``
keeps the terms apart for when they are wanted one by one: gradient noise, per-example
clipping, influence.

**The closed form for dense layers.** For gd_jax's own layout (a list of ``{"w": (n_in, n_out),
"b": (n_out,)}`` layers, ``z = a @ w + b``) and its own costs, example ``i``'s gradient is, per
layer ``l``, the outer product of the layer's input and its error,

.. math:: \nabla_{w^l} C_i = a^{l-1}_i \\otimes \\delta^l_i, \\qquad \nabla_{b^l} C_i = \\delta^l_i,
          \\qquad \\delta^l_i = \\partial C_i / \\partial z^l_i .

The errors of all examples come from one batch backward pass: give each example its own copy
of the biases (``b`` broadcast to ``(batch, n_out)``, which ``a @ w + b`` accepts unchanged);
the gradient of the batch cost with respect to that copy is ``delta^l_i / |B|``. The products
are the same as ``vmap(grad)``'s, without materialising anything but the result; any other
model or cost (an L2 term, another layout) takes ``jax.vmap(jax.grad)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gd_jax._src.costs import COSTS, Cost
from gd_jax._src.network import ACTIVATIONS, Params

__all__ = ["batch_grad", "dense_per_example_grads", "finite_difference_grad", "per_example_grads"]


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
      gd_jax's dense networks with gd_jax's costs take the closed form
      (``dense_per_example_grads``); anything else ``jax.vmap(jax.grad)``.
    """
    activation = _closed_form_activation(cost, params)
    if activation is not None:
        return _dense_per_example(cost, params, x, y, activation)
    return vmap_per_example_grads(cost, params, x, y)


def vmap_per_example_grads(cost: Cost, params: Params, x: jax.Array, y: jax.Array) -> Params:
    """``per_example_grads`` by ``jax.vmap(jax.grad)`` over batches of one, for any model and cost."""

    def one(p: Params, xi: jax.Array, yi: jax.Array) -> jax.Array:
        # A batch of one, so that the cost's mean is the example's own cost.
        return cost(p, xi[None], yi[None])

    return jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, x, y)


def _dense_layout(params) -> bool:
    return (isinstance(params, Sequence) and len(params) > 0
            and all(isinstance(layer, dict) and set(layer) == {"w", "b"} and jnp.ndim(layer["w"]) == 2
                    and jnp.ndim(layer["b"]) == 1 for layer in params))


def _closed_form_activation(cost: Cost, params) -> str | None:
    """The hidden activation when ``cost`` is one of gd_jax's costs (or one bound to an activation by
    ``functools.partial``) and ``params`` gd_jax's dense layout; else None (no closed form known)."""
    if not _dense_layout(params):
        return None
    keywords: dict = {}
    while isinstance(cost, functools.partial):
        if cost.args:
            return None
        keywords = {**cost.keywords, **keywords}
        cost = cost.func
    if cost not in COSTS.values() or set(keywords) - {"activation"}:
        return None
    activation = keywords.get("activation", "sigmoid")
    return activation if activation in ACTIVATIONS else None


def _dense_per_example(cost: Cost, params: Params, x: jax.Array, y: jax.Array, activation: str) -> Params:
    batch = x.shape[0]
    own_biases = [{"w": layer["w"], "b": jnp.broadcast_to(layer["b"], (batch, *layer["b"].shape))}
                  for layer in params]
    # d(mean_i C_i)/d b_i = delta_i / batch: the errors of every example from one backward pass.
    deltas = [g["b"] * batch for g in jax.grad(cost)(own_biases, x, y)]
    sigma = ACTIVATIONS[activation]
    inputs = [x]
    for layer in params[:-1]:
        inputs.append(sigma(inputs[-1] @ layer["w"] + layer["b"]))
    return [{"w": a[:, :, None] * d[:, None, :], "b": d} for a, d in zip(inputs, deltas)]


def dense_per_example_grads(cost: Cost, params: Params, x: jax.Array, y: jax.Array) -> Params:
    """``per_example_grads`` in closed form (outer products of each layer's input and error).

    Raises:
      ValueError: ``params`` not gd_jax's dense layout, or ``cost`` not one of gd_jax's costs
        (use ``per_example_grads``, which falls back to ``vmap(grad)``).
    """
    activation = _closed_form_activation(cost, params)
    if activation is None:
        raise ValueError("the closed form needs gd_jax's dense layout (a list of {'w', 'b'} layers) and one of "
                         f"gd_jax's costs ({', '.join(COSTS)}); use per_example_grads for any other model or cost")
    return _dense_per_example(cost, params, x, y, activation)


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
