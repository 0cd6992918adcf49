"""One epoch of mini-batch gradient descent as one compiled, pure function.

An epoch takes a batch order (a permutation of the training rows), cuts it into
mini-batches of ``batch_size`` and takes one optimizer step per mini-batch, all inside one
``jax.lax.scan`` under one ``jax.jit``, with the data resident on the device: each step
gathers its own rows, so no shuffled copy of the data set is ever made.

**The last partial batch.** As in the textbook's ``network.py``, every example is used
exactly once per epoch: when ``batch_size`` does not divide ``n``, the ``n mod batch_size``
examples left at the end of the order form one smaller, final mini-batch (a second
compiled step shape inside the same epoch). ``batch_size=1`` is stochastic gradient
descent, ``batch_size=n`` full-batch gradient descent (one step an epoch).

**Randomness.** Epoch ``e`` (0-based) visits the rows in ``shuffled_order(fold_in(key, e), n)``,
a permutation drawn on the host from the key's bits: the same key gives bit-identical
parameters, and a run resumed at an epoch boundary draws the same batches as one that
never stopped. The order is drawn with numpy because an on-device
``jax.random.permutation`` of 60,000 rows is a sort network, far slower on a CPU than
numpy's shuffle; the epoch itself stays a pure function of the order it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gd_jax._src.costs import Cost
from gd_jax._src.model import combine_params, pack, partition_params, unpack
from gd_jax._src.optim import GradientTransformation, apply_updates

__all__ = ["TrainState", "bind_static", "make_epoch", "shuffled_order"]

PyTree = Any


class TrainState(NamedTuple):
    """What an epoch carries from step to step: the parameters and the optimizer state."""

    params: PyTree
    opt_state: Any


def shuffled_order(key: jax.Array, n: int) -> np.ndarray:
    """A permutation of ``range(n)`` drawn on the host, determined by ``key`` alone.

    Args:
      key: a typed (``jax.random.key``) or raw (``jax.random.PRNGKey``) PRNG key.
      n: the number of rows.

    Returns:
      An int32 numpy array of shape ``(n,)``: the order in which an epoch visits the rows.
    """
    typed = jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)
    bits = np.asarray(jax.random.key_data(key) if typed else key, dtype=np.uint32).ravel()
    return np.random.default_rng(bits.tolist()).permutation(n).astype(np.int32)


def make_epoch(cost: Cost, optimizer: GradientTransformation, *, batch_size: int, n_classes: int,
               ) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """Builds one epoch of mini-batch gradient descent as a pure, jittable function.

    Any model works (see ``gd.partition_params``): the step differentiates its inexact
    arrays ``theta`` and carries the rest ``s`` unchanged,

    .. math:: \\theta \\leftarrow \\theta + \\mathrm{update}\\big(\\nabla_\\theta
              C(\\mathrm{combine}(\\theta, s), x_B, y_B)\\big),

    so ``state.opt_state`` is ``optimizer.init(gd.partition_params(model)[0])``. For a model
    whose leaves are all float arrays (gd_jax's MLP) that is ``optimizer.init(params)`` and
    the compiled step is exactly the plain one.

    Args:
      cost: ``cost(params, x, y_onehot)``, averaging over the batch.
      optimizer: gd_jax's ``sgd`` or any optax ``GradientTransformation``.
      batch_size: examples per mini-batch (the last one may be smaller, see module doc).
      n_classes: width of the one-hot targets built from integer labels.

    Returns:
      ``epoch(state, x, y, order) -> (state, finite)`` where ``x`` is ``(n, n_0)``, ``y`` the
      ``(n,)`` integer labels, ``order`` an ``(n,)`` integer permutation of the rows (e.g.
      ``shuffled_order(key, n)``), and ``finite`` is True when every mini-batch cost of the
      epoch was finite. Being pure, it can be ``jax.vmap``-ed over states and orders to
      train many models at once. A model with non-array leaves (an Equinox module) crosses
      ``jax.jit`` through ``eqx.filter_jit``, or as ``(params, static)`` recombined inside.
    """

    def epoch(state: TrainState, x: jax.Array, y: jax.Array, order: jax.Array) -> tuple[TrainState, jax.Array]:
        params, static = partition_params(state.params)  # at trace time; (params, None) for a plain model
        run = _plain_epoch(bind_static(cost, static), optimizer, batch_size=batch_size, n_classes=n_classes)
        new, finite = run(TrainState(params, state.opt_state), x, y, order)
        return TrainState(combine_params(new.params, static), new.opt_state), finite

    return epoch


def bind_static(cost: Cost, static: PyTree | None) -> Cost:
    """``cost`` as a function of a model's parameters alone (``cost`` itself when the model is all parameters)."""
    if static is None:
        return cost
    return lambda params, x, y: cost(combine_params(params, static), x, y)


def _plain_epoch(cost: Cost, optimizer: GradientTransformation, *, batch_size: int, n_classes: int,
                 ) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """``make_epoch`` for a model whose every leaf is a parameter (``state.params`` all float arrays)."""

    def step(state: TrainState, xb: jax.Array, yb: jax.Array) -> tuple[TrainState, jax.Array]:
        c, grads = jax.value_and_grad(cost)(state.params, xb, yb)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(apply_updates(state.params, updates), opt_state), jnp.isfinite(c)

    def epoch(state: TrainState, x: jax.Array, y: jax.Array, order: jax.Array) -> tuple[TrainState, jax.Array]:
        n = x.shape[0]
        full, rest = divmod(n, batch_size)
        targets = jax.nn.one_hot(y, n_classes, dtype=x.dtype)  # once an epoch, not once a step
        state, finite = jax.lax.scan(lambda s, rows: step(s, x[rows], targets[rows]), state,
                                     order[: full * batch_size].reshape(full, batch_size))
        finite = jnp.all(finite)
        if rest:  # the textbook's smaller last mini-batch
            rows = order[full * batch_size:]
            state, tail_finite = step(state, x[rows], targets[rows])
            finite = finite & tail_finite
        return state, finite

    return epoch


def epoch_impl(state, x, y, order, *, cost, optimizer, batch_size, n_classes):
    """The epoch that ``fit`` compiles; a model with static leaves comes and goes ``pack``-ed."""
    state = TrainState(unpack(state.params), state.opt_state)
    new, finite = make_epoch(cost, optimizer, batch_size=batch_size, n_classes=n_classes)(state, x, y, order)
    return TrainState(pack(new.params), new.opt_state), finite


# JAX caches compiled code of the epoch by its static arguments: equal settings compile once.
_STATIC = ("cost", "optimizer", "batch_size", "n_classes")
jitted_epoch = jax.jit(epoch_impl, static_argnames=_STATIC)


def _hashable(*values: Any) -> bool:
    try:
        for v in values:
            hash(v)
    except TypeError:
        return False
    return all(isinstance(v, Hashable) for v in values)


def compile_cached(cached: Any, fn: Callable, args: tuple, static: dict[str, Any]) -> Callable:
    """``fn`` compiled for ``args``: through JAX's cache when the static settings can be hashed."""
    if _hashable(*static.values()):
        return cached.lower(*args, **static).compile()
    return jax.jit(lambda *a: fn(*a, **static)).lower(*args).compile()
