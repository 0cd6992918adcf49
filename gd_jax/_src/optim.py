"""Hand-rolled gradient-descent update rules with optax's ``init`` / ``update`` protocol.

The textbook rule moves every parameter against its gradient,

.. math:: w \\to w - \\eta \\, \\partial C / \\partial w, \\qquad b \\to b - \\eta \\, \\partial C / \\partial b,

and momentum (chapter 3) keeps a velocity that the gradient accelerates:

.. math:: t \\to \\mu t + g, \\qquad \\Delta p = -\\eta t
   \\quad (\\text{Nesterov: } \\Delta p = -\\eta (\\mu t + g))

which is the textbook's ``v -> mu v - eta g, w -> w + v`` with ``v = -eta t``. L2 regularisation
(chapter 3) adds ``lambda / n`` times each weight to its gradient before that step, and the
textbook's learning-rate schedule multiplies ``eta`` by a factor that ``fit`` lowers between epochs.

Everything here is written from these equations and never calls optax's update code, but it
speaks optax's language: each function returns an ``optax.GradientTransformationExtraArgs``,
states are optax's own NamedTuples arranged as optax arranges them (so a state, or a checkpoint of
one, made by ``gd.sgd`` serves ``optax.sgd`` and back), and any optax transformation can stand in
for, or be chained with, these. The tests run the two side by side and compare bit for bit.

Each rule is a frozen dataclass whose ``init`` and ``update`` compare equal, and hash equal, when
the hyperparameters are equal Python or numpy scalars, so that two ``gd.sgd(3.0)`` built apart
are the same static argument to ``jax.jit`` and share one compiled program.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "GradientTransformation",
    "ScaleState",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "scale_learning_rate",
    "sgd",
    "sgd_update",
]

PyTree = Any
Schedule = Callable[[jax.Array], Any]

#: optax's protocol type, which every optimizer here (and every optax one) is an instance of.
GradientTransformation: TypeAlias = optax.GradientTransformation


class ScaleState(NamedTuple):
    """State of ``scale_learning_rate``.

    Attributes:
      scale: the factor ``s`` (a float32 scalar array, 1.0 at first) multiplying every update,
        so that the effective learning rate is ``s * eta``; replace it between steps with
        ``state._replace(scale=jnp.float32(0.5))``.
      inner_state: the state of the wrapped optimizer.
    """

    scale: jax.Array
    inner_state: PyTree


# ---------------------------------------------------------------------------------------------
# Hyperparameters: checks, and equality by value for jit's static-argument cache.


class _SameObject(NamedTuple):
    """Stands for a hyperparameter compared by identity (an array, a tracer, a schedule, a mask)."""

    object_id: int


def _value_key(value: Any) -> Any:
    """What decides the compiled program a hyperparameter gives, as a hashable value.

    Python and numpy scalars count by type and ``repr``: the ``repr`` of a float round-trips
    exactly (it tells -0.0 from 0.0, and NaN equals NaN), and the type matters because
    ``np.float32(3.0)`` promotes a float16 gradient to float32 where ``3.0`` does not. Arrays
    (tracers included) count by identity, since comparing their values would need the values;
    other hashable values (None, dtypes, functions, tuples of transformations) by themselves.
    """
    if isinstance(value, (jax.Array, np.ndarray)):
        return _SameObject(id(value))
    if isinstance(value, (numbers.Number, np.number, np.bool_)):
        return type(value), repr(value)
    try:
        hash(value)
    except TypeError:  # a mask given as a dict or list of booleans
        return _SameObject(id(value))
    return value


class _Rule:
    """A transformation's hyperparameters (the fields of a frozen dataclass subclass), whose
    ``init(params)`` and ``update(updates, state, params=None, **extra_args)`` methods the
    subclass defines.

    Equality and hashing go by ``_value_key`` of every field, so that equal optimizers built
    apart share a compiled program; ``transformation()`` wraps the rule in optax's protocol type.
    """

    def _key(self) -> tuple:
        return type(self), *(_value_key(getattr(self, f.name)) for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def init(self, params: PyTree) -> PyTree:
        raise NotImplementedError

    def update(self, updates: PyTree, state: PyTree, params: PyTree = None, **extra_args: Any) -> tuple[PyTree, PyTree]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def transformation(self) -> optax.GradientTransformationExtraArgs:
        return optax.GradientTransformationExtraArgs(_Init(self), _Update(self))


# Bound methods compare their instances by identity, so init and update are small callables
# that hold the rule and compare by it.
@dataclasses.dataclass(frozen=True)
class _Init:
    rule: _Rule

    def __call__(self, params: PyTree) -> PyTree:
        return self.rule.init(params)


@dataclasses.dataclass(frozen=True)
class _Update:
    rule: _Rule

    def __call__(self, updates: PyTree, state: PyTree, params: PyTree = None, **extra_args: Any):
        return self.rule.update(updates, state, params, **extra_args)


def _check_scalar(name: str, value: Any, example: str, *, schedule: bool = False) -> None:
    """Refuses what no update could use: a string, a non-scalar array, a schedule where none fits.

    Any number is accepted (0, negative, NaN, complex: as optax accepts them), and so is a
    scalar array, traced or not (``jax.vmap`` over learning rates, ``optax.inject_hyperparams``).
    """
    if callable(value):
        if schedule:
            return
        raise ValueError(f"{name} must be a number or a scalar array here, not a schedule ({value!r}); "
                         f"e.g. {example}")
    if isinstance(value, (numbers.Number, np.number, np.bool_)):
        return
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    kinds = "a number, a scalar array or a schedule (a function of the step count)" if schedule else \
        "a number or a scalar array"
    if dtype is None or shape is None or not (jnp.issubdtype(dtype, jnp.number) or dtype == jnp.bool_):
        raise ValueError(f"{name} must be {kinds}, got {value!r} of type {type(value).__name__}; e.g. {example}")
    if tuple(shape) != ():
        raise ValueError(f"{name} must be a scalar, got an array of shape {tuple(shape)}; to train with several "
                         f"values at once, jax.vmap over a scalar {name}")


def _canonical_dtype(accumulator_dtype: Any) -> Any:
    if accumulator_dtype is None:
        return None
    try:
        return jax.dtypes.canonicalize_dtype(accumulator_dtype)
    except TypeError:
        raise ValueError(f"accumulator_dtype must be a dtype or None, got {accumulator_dtype!r}; "
                         "e.g. jnp.bfloat16 or 'float32'") from None


def _is_none(node: Any) -> bool:
    return node is None


def _increment(count: jax.Array) -> jax.Array:
    """``count + 1``, staying at the dtype's largest value instead of wrapping round to negative steps."""
    largest = jnp.array(jnp.iinfo(count.dtype).max, count.dtype)
    return jnp.where(count < largest, count + jnp.array(1, count.dtype), largest)


def _update_with(transformation: GradientTransformation, updates: PyTree, state: PyTree, params: PyTree,
                 extra_args: dict[str, Any]):
    """Calls ``transformation.update``, passing the extra arguments only if it takes them (as optax.chain)."""
    if isinstance(transformation, optax.GradientTransformationExtraArgs):
        return transformation.update(updates, state, params, **extra_args)
    return transformation.update(updates, state, params)


# ---------------------------------------------------------------------------------------------
# The rules.


@dataclasses.dataclass(frozen=True, eq=False)
class _Identity(_Rule):
    """Updates unchanged, no state: the momentum slot of plain SGD."""

    def init(self, params: PyTree) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state


@dataclasses.dataclass(frozen=True, eq=False)
class _Trace(_Rule):
    """The momentum trace ``t -> g + mu t``; the update is ``t`` (Nesterov: ``g + mu t``).

    The trace is kept in ``accumulator_dtype`` (the parameters' dtype when None) but the update
    leaves it in the dtype that ``g + mu t`` promotes to; a None gradient leaf gives a None
    trace and update there.
    """

    momentum: Any
    nesterov: bool
    accumulator_dtype: Any

    def init(self, params: PyTree) -> optax.TraceState:
        return optax.TraceState(trace=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=self.accumulator_dtype), params))

    def update(self, updates, state, params=None, **extra_args):
        del params, extra_args

        def accelerate(g, t):
            return g + self.momentum * t

        trace = jax.tree.map(lambda g, t: None if g is None else accelerate(g, t), updates, state.trace,
                             is_leaf=_is_none)
        direction = jax.tree.map(accelerate, updates, trace) if self.nesterov else trace
        if self.accumulator_dtype is not None:
            trace = jax.tree.map(lambda t: t.astype(self.accumulator_dtype), trace)
        return direction, optax.TraceState(trace=trace)


@dataclasses.dataclass(frozen=True, eq=False)
class _ScaleByLearningRate(_Rule):
    """``u -> -eta u`` for a constant ``eta``; for a schedule, ``-eta(k) u`` at the k-th update (from 0).

    A schedule's value is cast to each update's dtype before the product, and the step count
    ``k`` lives in the state (``optax.ScaleByScheduleState``, int32, stopping at its maximum).
    """

    learning_rate: Any

    def init(self, params: PyTree) -> optax.EmptyState | optax.ScaleByScheduleState:
        del params
        if callable(self.learning_rate):
            return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))
        return optax.EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        del params, extra_args
        # -1 * eta rather than -eta: an unsigned numpy scalar would wrap round under negation.
        if callable(self.learning_rate):
            step = -1 * self.learning_rate(state.count)
            scaled = jax.tree.map(lambda g: jnp.array(step, dtype=g.dtype) * g, updates)
            return scaled, optax.ScaleByScheduleState(count=_increment(state.count))
        step = -1 * self.learning_rate
        return jax.tree.map(lambda g: step * g, updates), state


@dataclasses.dataclass(frozen=True, eq=False)
class _Chain(_Rule):
    """Each transformation in turn, each on the previous one's updates; the state a tuple of theirs."""

    transformations: tuple[GradientTransformation, ...]

    def init(self, params: PyTree) -> tuple:
        return tuple(t.init(params) for t in self.transformations)

    def update(self, updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(self.transformations):
            raise ValueError(f"a chain of {len(self.transformations)} transformations needs the state its init "
                             f"made (a tuple of {len(self.transformations)}), got {type(state).__name__} "
                             f"{jax.tree.structure(state)}; pass optimizer.init(params)")
        new_state = []
        for transformation, inner_state in zip(self.transformations, state):
            updates, inner_state = _update_with(transformation, updates, inner_state, params, extra_args)
            new_state.append(inner_state)
        return updates, tuple(new_state)


def _textbook_mask(params: PyTree) -> PyTree:
    """True for the leaves whose last key is ``"w"`` (a dict key or an attribute), False elsewhere."""

    def is_weight(path, leaf) -> bool:
        del leaf
        last = path[-1] if path else None
        return getattr(last, "key", getattr(last, "name", None)) == "w"

    return jax.tree_util.tree_map_with_path(is_weight, params)


@dataclasses.dataclass(frozen=True, eq=False)
class _AddDecayedWeights(_Rule):
    """``g -> g + wd * p`` on the leaves the mask selects, ``g`` elsewhere; a None gradient stays None."""

    weight_decay: Any
    mask: Any

    def _mask_for(self, params: PyTree) -> PyTree:
        if self.mask is None:
            return _textbook_mask(params)
        mask = self.mask(params) if callable(self.mask) else self.mask
        try:  # the mask must be a prefix of the parameters' tree: each boolean covers a subtree
            jax.tree.map(lambda m, p: None, mask, params, is_leaf=_is_none)
        except ValueError as e:
            raise ValueError(f"add_decayed_weights' mask must be a tree of booleans shaped like the params (or a "
                             f"prefix of them), got {jax.tree.structure(mask)} for params "
                             f"{jax.tree.structure(params)} ({e}); or pass mask=None for the weights 'w'") from None
        return mask

    def init(self, params: PyTree) -> optax.MaskedState:
        self._mask_for(params)  # a mask that does not fit fails here, at the start, with the trees named
        return optax.MaskedState(inner_state=optax.EmptyState())

    def update(self, updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("add_decayed_weights needs the parameters: call update(grads, state, params)")
        # Adding 0 * p would turn an infinite parameter's gradient into NaN; optax skips it too.
        if isinstance(self.weight_decay, (int, float)) and self.weight_decay == 0.0:
            return updates, state

        def decay(g, p):
            return None if g is None else g + self.weight_decay * p

        def on_subtree(selected, g, p):
            return jax.tree.map(decay, g, p, is_leaf=_is_none) if selected else g

        return jax.tree.map(on_subtree, self._mask_for(params), updates, params, is_leaf=_is_none), state


@dataclasses.dataclass(frozen=True, eq=False)
class _ScaleLearningRate(_Rule):
    """``u -> s u`` after the inner optimizer, with ``s`` in the state (cast to each update's dtype)."""

    inner: GradientTransformation

    def init(self, params: PyTree) -> ScaleState:
        return ScaleState(scale=jnp.ones([], jnp.float32), inner_state=self.inner.init(params))

    def update(self, updates, state, params=None, **extra_args):
        updates, inner_state = _update_with(self.inner, updates, state.inner_state, params, extra_args)
        scaled = jax.tree.map(lambda u: jnp.asarray(state.scale, u.dtype) * u, updates)
        return scaled, ScaleState(scale=state.scale, inner_state=inner_state)


def _check_transformation(name: str, value: Any) -> None:
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise ValueError(f"{name} must be a gradient transformation (with init and update, e.g. gd.sgd(3.0) or "
                         f"optax.adam(1e-3)), got {value!r}")


# ---------------------------------------------------------------------------------------------
# The public constructors.


def sgd_update(params: PyTree, grads: PyTree, learning_rate: float | jax.Array) -> PyTree:
    """One step of plain gradient descent, ``p - eta * g`` for every leaf.

    Args:
      params: any pytree of arrays.
      grads: a pytree of the same structure, e.g. ``jax.grad(cost)(params, x, y)``.
      learning_rate: ``eta``, a number or a scalar array (e.g. traced under ``vmap``).
    """
    _check_scalar("learning_rate", learning_rate, "3.0")
    return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """``p + u`` for every leaf, keeping each parameter's dtype; a None parameter stays None (as optax)."""
    return jax.tree.map(lambda p, u: None if p is None else jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
                        params, updates, is_leaf=_is_none)


def chain(*transformations: GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Applies transformations one after another, as ``optax.chain``.

    .. math:: u = T_k(\\dots T_2(T_1(g)))

    Args:
      *transformations: gd_jax's or optax's gradient transformations, applied in order.

    Returns:
      A transformation whose state is the tuple of the transformations' states. Extra keyword
      arguments to its ``update`` reach those that accept them (``GradientTransformationExtraArgs``).

    Examples:
      The textbook's L2 rule, ``w -> (1 - eta lambda / n) w - eta dC/dw``, with lambda 5, n 50,000, eta 0.5:

      >>> params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
      >>> opt = gd.chain(gd.add_decayed_weights(5.0 / 50_000), gd.sgd(0.5))
      >>> state = opt.init(params)
      >>> len(state)   # one state per transformation
      2
    """
    for i, transformation in enumerate(transformations):
        _check_transformation(f"chain's argument {i}", transformation)
    return _Chain(tuple(transformations)).transformation()


def sgd(
    learning_rate: float | jax.Array | Schedule,
    momentum: float | jax.Array | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Stochastic gradient descent, with optional (Nesterov) momentum; the same maths as ``optax.sgd``.

    With ``g`` the gradient, ``t`` the momentum trace and ``eta_k`` the learning rate at the
    k-th update (k = 0, 1, ...):

    .. math:: t \\to \\mu t + g, \\qquad u = -\\eta_k t
       \\quad (\\text{Nesterov: } u = -\\eta_k (\\mu t + g); \\text{ no momentum: } u = -\\eta_k g)

    Like ``optax.sgd`` it is the chain of a momentum trace and a scaling by ``-eta``, and its
    state is the same: ``(TraceState(trace) or EmptyState(), EmptyState() or
    ScaleByScheduleState(count))``, so either library's state serves the other.

    Args:
      learning_rate: ``eta``: a number, a scalar array (traced too: ``jax.vmap`` over learning
        rates, ``optax.inject_hyperparams(gd.sgd)``), or a schedule ``step -> eta`` such as
        ``optax.exponential_decay(3.0, 1000, 0.5)``. Any value is taken, 0 and negative ones too,
        as optax takes them; ``gd-jax train`` checks its own ``--eta``.
      momentum: ``mu`` (a number or scalar array), or None for the plain rule (no trace kept).
      nesterov: use Nesterov's look-ahead form (ignored without momentum, as in optax).
      accumulator_dtype: the dtype of the momentum trace, e.g. ``jnp.bfloat16`` to halve its
        memory; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` accepts and ignores extra
      keyword arguments.

    Raises:
      ValueError: a hyperparameter that no update could use (a string, an array of more than
        one value, an unknown dtype).

    Examples:
      >>> import optax
      >>> train, _ = gd.load_mnist("sample")
      >>> params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
      >>> y = jax.nn.one_hot(train.y[:10], 10)
      >>> grads = jax.grad(gd.quadratic_cost)(params, train.x[:10], y)
      >>> opt = gd.sgd(optax.exponential_decay(3.0, 500, 0.5), momentum=0.9)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> new = gd.apply_updates(params, updates)
      >>> bool(gd.quadratic_cost(new, train.x[:10], y) < gd.quadratic_cost(params, train.x[:10], y))
      True
    """
    _check_scalar("learning_rate", learning_rate, "3.0 or optax.exponential_decay(3.0, 1000, 0.5)", schedule=True)
    if momentum is not None:
        _check_scalar("momentum", momentum, "0.9, or None for no momentum")
    accumulator_dtype = _canonical_dtype(accumulator_dtype)
    trace = _Identity() if momentum is None else _Trace(momentum, nesterov, accumulator_dtype)
    return chain(trace.transformation(), _ScaleByLearningRate(learning_rate).transformation())


def add_decayed_weights(weight_decay: float | jax.Array, mask: Any = None) -> optax.GradientTransformationExtraArgs:
    """Adds ``weight_decay * p`` to the gradient of each selected parameter, as ``optax.add_decayed_weights``.

    .. math:: g \\to g + \\lambda' p \\quad \\text{(selected leaves)}, \\qquad g \\to g \\quad \\text{(others)}

    Chained before ``sgd`` with ``lambda' = lambda / n`` it is the textbook's L2 rule,
    ``w -> (1 - eta lambda / n) w - eta dC/dw``, the same step as training the cost
    ``gd.with_l2(cost, lmbda, n)``.

    Args:
      weight_decay: ``lambda'``, a number or a scalar array (traced too).
      mask: which leaves decay. None (the textbook's choice): the leaves whose last key is
        ``"w"``, weights but never biases. Otherwise as optax: a tree of booleans shaped like the
        params, or a prefix of them (``True`` decays everything), or a function of the params
        returning one.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state, ``MaskedState(EmptyState())``,
      is ``optax.add_decayed_weights(weight_decay, mask)``'s. Its ``update`` needs ``params``.

    Examples:
      Weight decay touches the weights ``"w"``, never the biases:

      >>> params = [{"w": jnp.ones((2, 2)), "b": jnp.ones(2)}]
      >>> zero = jax.tree.map(jnp.zeros_like, params)
      >>> opt = gd.add_decayed_weights(0.1)
      >>> updates, _ = opt.update(zero, opt.init(params), params)
      >>> updates[0]["w"].tolist(), updates[0]["b"].tolist()
      ([[0.1..., 0.1...], [0.1..., 0.1...]], [0.0, 0.0])
    """
    _check_scalar("weight_decay", weight_decay, "5.0 / 50_000 (lmbda / n)")
    return _AddDecayedWeights(weight_decay, mask).transformation()


def scale_learning_rate(optimizer: GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Multiplies ``optimizer``'s updates by a factor ``s`` kept in the state: learning rate ``s * eta``.

    .. math:: u = s \\, u_{\\text{inner}}

    The state is ``ScaleState(scale, inner_state)`` with ``scale`` a float32 scalar array, 1.0
    at first; change it between steps with ``state._replace(scale=...)``, e.g. halving it when
    validation accuracy stalls, as the textbook's schedule does (``fit(..., eta_halving=...)``).
    For plain SGD and momentum the updates equal those of the optimizer built with ``s * eta``
    exactly when ``s`` is a power of two (a halving schedule's values); otherwise they differ
    by the rounding of one product (about 1e-7 relative in float32).

    Args:
      optimizer: any gradient transformation, gd_jax's or optax's.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    _check_transformation("scale_learning_rate's optimizer", optimizer)
    return _ScaleLearningRate(optimizer).transformation()
