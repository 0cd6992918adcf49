"""Models as they are: the float arrays of any pytree are its parameters, everything else is carried.

A model is any pytree: gd_jax's own list of ``{"w", "b"}`` layers, an Equinox module (whose
activation functions are leaves), a Flax linen variables dict, a Flax nnx module or state, a
dict of tuples. Its leaves fall into three kinds:

- **parameters**: inexact (floating-point or complex) arrays. Gradients, optimizer states and
  updates cover these and only these;
- **other arrays** (integer counters, booleans, PRNG keys): carried unchanged, traced by
  ``jax.jit`` like any array;
- **static leaves**: hashable non-array values (functions, strings, Python numbers): carried
  unchanged in the structure, so that equal ones compile once.

``partition_params`` splits a model into its parameters and the rest, ``combine_params``
puts them back, as ``eqx.partition(model, eqx.is_inexact_array)`` and ``eqx.combine`` do:

.. math:: \\text{model} = \\text{combine}(\\theta, s), \\qquad
          \\theta \\leftarrow \\theta - \\eta \\, \\nabla_\\theta C(\\text{combine}(\\theta, s), x, y).

A model whose leaves are all inexact arrays (gd_jax's own MLP) *is* its parameters: the
partition is the identity (``static`` is None), so its compiled step is unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["combine_params", "is_array", "is_parameter", "pack", "partition_params", "unpack"]

PyTree = Any


def is_array(leaf: Any) -> bool:
    """True for a JAX array (tracers included), a numpy array or scalar of a numeric, bool or key dtype."""
    if isinstance(leaf, jax.Array):
        return True
    return isinstance(leaf, (np.ndarray, np.generic)) and leaf.dtype.kind in "biufc"


def is_parameter(leaf: Any) -> bool:
    """True for an array of a floating-point or complex dtype: what training moves."""
    return is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.inexact)


def _check_leaf(path: Any, leaf: Any) -> None:
    if is_array(leaf):
        return
    try:
        hash(leaf)
    except TypeError:
        kind = f"a numpy array of dtype {leaf.dtype}" if isinstance(leaf, np.ndarray) else f"a {type(leaf).__name__}"
        raise ValueError(
            f"model leaf {jax.tree_util.keystr(path)} is {kind}, neither an array nor a hashable static value; "
            "make it a numeric array (jnp.asarray) or a static field (e.g. eqx.field(static=True))") from None


@jax.tree_util.register_pytree_node_class
class _Packed:
    """A tree as ``jax.jit`` and ``lax.scan`` see it: its arrays as children, its other leaves in its structure."""

    def __init__(self, arrays: list[Any], skeleton: tuple[Any, ...]):
        self.arrays, self.skeleton = arrays, skeleton

    def tree_flatten(self) -> tuple[list[Any], tuple[Any, ...]]:
        return self.arrays, self.skeleton

    @classmethod
    def tree_unflatten(cls, skeleton: tuple[Any, ...], arrays: list[Any]) -> _Packed:
        return cls(list(arrays), skeleton)

    def __repr__(self) -> str:
        return f"static part of a model ({len(self.arrays)} carried arrays)"


def pack(tree: PyTree) -> PyTree:
    """``tree`` itself when all its leaves are arrays, else a pytree whose leaves are its arrays alone.

    The packed form crosses ``jax.jit``, ``jax.vmap`` and ``lax.scan`` boundaries; the
    static leaves ride in its structure (compared by equality, so equal models compile once).

    Raises:
      ValueError: a leaf is neither an array nor hashable (the message names its path).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if all(is_array(leaf) for _, leaf in flat):
        return tree
    for path, leaf in flat:
        _check_leaf(path, leaf)
    arrays = [leaf for _, leaf in flat if is_array(leaf)]
    statics = tuple((i, leaf) for i, (_, leaf) in enumerate(flat) if not is_array(leaf))
    return _Packed(arrays, (treedef, len(flat), statics))


def unpack(tree: PyTree) -> PyTree:
    """The tree that ``pack`` packed (anything else unchanged)."""
    if not isinstance(tree, _Packed):
        return tree
    treedef, n, statics = tree.skeleton
    at = dict(statics)
    arrays = iter(tree.arrays)
    return jax.tree.unflatten(treedef, [at[i] if i in at else next(arrays) for i in range(n)])


def partition_params(model: PyTree) -> tuple[PyTree, PyTree | None]:
    """Splits a model into its parameters (its inexact arrays) and everything else.

    Args:
      model: any pytree: gd_jax's MLP, an Equinox module, Flax linen variables, a Flax nnx
        module or state, a user's dict of tuples.

    Returns:
      ``(params, static)``. ``params`` has the model's structure with None in place of every
      leaf that is not an inexact array (the tree to differentiate and to give the
      optimizer: ``optimizer.init(params)``). ``static`` holds everything else, a pytree
      whose only leaves are the model's other arrays (it crosses ``jax.jit`` and
      ``jax.vmap``); None when every leaf is an inexact array, the model then being its own
      ``params``.

    Raises:
      ValueError: a leaf is neither an array nor hashable (the message names its path).

    Example:
      >>> import jax, jax.numpy as jnp, gd_jax as gd
      >>> model = {"w": jnp.ones(2), "act": jnp.tanh, "steps": jnp.array(3)}
      >>> params, static = gd.partition_params(model)
      >>> params["act"] is None and params["steps"] is None
      True
      >>> gd.combine_params(params, static)["act"] is jnp.tanh
      True
    """
    leaves = jax.tree.leaves(model)
    if all(is_parameter(leaf) for leaf in leaves):
        return model, None
    flat, _ = jax.tree_util.tree_flatten_with_path(model)
    for path, leaf in flat:
        _check_leaf(path, leaf)
    params = jax.tree.map(lambda leaf: leaf if is_parameter(leaf) else None, model)
    rest = jax.tree.map(lambda leaf: None if is_parameter(leaf) else leaf, model)
    return params, pack(rest)


def combine_params(params: PyTree, static: PyTree | None) -> PyTree:
    """The model that ``partition_params`` split: ``params``' arrays where it has them, ``static`` elsewhere.

    ``params`` may be the trained parameters, gradients or updates of the same structure.
    With ``static`` None (a model that is all parameters) it returns ``params`` itself.
    """
    if static is None:
        return params
    rest = unpack(static)
    return jax.tree.map(lambda p, r: r if p is None else p, params, rest, is_leaf=lambda leaf: leaf is None)
