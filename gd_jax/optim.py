"""Hand-rolled gradient-descent update rules with optax's ``init`` / ``update`` protocol.

The textbook rule moves every parameter against its gradient,

.. math:: w \\to w - \\eta \\, \\partial C / \\partial w, \\qquad b \\to b - \\eta \\, \\partial C / \\partial b,

and momentum (chapter 3) keeps a velocity that the gradient accelerates:

.. math:: t \\to \\mu t + g, \\qquad \\Delta p = -\\eta t
   \\quad (\\text{Nesterov: } \\Delta p = -\\eta (\\mu t + g))

which is the textbook's ``v -> mu v - eta g, w -> w + v`` with ``v = -eta t``. These are
written from the equations, without optax, and return optax's conventions (updates to be
added, states as NamedTuples), so that any optax transformation can stand in for them
and the tests can run the two side by side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["GradientTransformation", "SgdState", "apply_updates", "sgd", "sgd_update"]

PyTree = Any


class GradientTransformation(NamedTuple):
    """A pair of pure functions, as in optax.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(grads, state, params=None) -> (updates, new_state)``; the new
        parameters are ``apply_updates(params, updates)``.
    """

    init: Callable[[PyTree], PyTree]
    update: Callable[..., tuple[PyTree, PyTree]]


class SgdState(NamedTuple):
    """State of ``sgd``: the momentum trace (a pytree like params), or None without momentum."""

    trace: PyTree


def _check_learning_rate(learning_rate) -> None:
    if isinstance(learning_rate, (int, float)) and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(
            f"learning_rate must be a positive finite number, got {learning_rate}; the textbook uses 3.0"
        )


def sgd_update(params: PyTree, grads: PyTree, learning_rate: float | jax.Array) -> PyTree:
    """One step of plain gradient descent, ``p - eta * g`` for every leaf.

    Args:
      params: any pytree of arrays.
      grads: a pytree of the same structure, e.g. ``jax.grad(cost)(params, x, y)``.
      learning_rate: ``eta``, a positive number (or a scalar array, e.g. under ``vmap``).
    """
    _check_learning_rate(learning_rate)
    return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """``p + u`` for every leaf, keeping each parameter's dtype (as ``optax.apply_updates``)."""
    return jax.tree.map(lambda p, u: (p + u).astype(jnp.result_type(p)), params, updates)


def sgd(
    learning_rate: float | jax.Array, momentum: float | None = None, nesterov: bool = False
) -> GradientTransformation:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Args:
      learning_rate: ``eta > 0``.
      momentum: ``mu`` in ``[0, 1)``, or None for the plain rule (no state kept).
      nesterov: use Nesterov's look-ahead form of momentum.

    Returns:
      A ``GradientTransformation``; with ``momentum=None`` its updates are ``-eta * g``.

    Example::

      opt = gd.sgd(3.0, momentum=0.9)
      state = opt.init(params)
      updates, state = opt.update(grads, state, params)
      params = gd.apply_updates(params, updates)
    """
    _check_learning_rate(learning_rate)
    if momentum is not None and not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1) or None, got {momentum}; 0.9 is a common choice")
    if nesterov and momentum is None:
        raise ValueError("nesterov=True needs a momentum coefficient; pass e.g. momentum=0.9")

    def init(params: PyTree) -> SgdState:
        if momentum is None:
            return SgdState(trace=None)
        return SgdState(trace=jax.tree.map(jnp.zeros_like, params))

    def update(grads: PyTree, state: SgdState, params: PyTree = None) -> tuple[PyTree, SgdState]:
        del params  # the rule depends on the gradient alone
        if momentum is None:
            return jax.tree.map(lambda g: -learning_rate * g, grads), state
        trace = jax.tree.map(lambda g, t: g + momentum * t, grads, state.trace)
        direction = jax.tree.map(lambda g, t: g + momentum * t, grads, trace) if nesterov else trace
        return jax.tree.map(lambda d: -learning_rate * d, direction), SgdState(trace=trace)

    return GradientTransformation(init, update)
