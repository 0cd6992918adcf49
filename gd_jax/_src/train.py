"""Training by mini-batch gradient descent: ``fit`` around the compiled epoch (``epoch.py``).

**Compiled once.** ``fit`` compiles the epoch and the end-of-epoch measurements ahead of
the loop (the time is recorded apart, in ``History.compile_seconds``), and JAX caches both
by their static configuration (cost, optimizer, batch size, classes, shapes), so a
second ``fit`` with equal settings compiles nothing. Each epoch then costs one compiled
call and one device-to-host transfer of a handful of scalars.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gd_jax._src.costs import Cost
from gd_jax._src.data.dataset import Dataset, check_dataset
from gd_jax._src.epoch import TrainState, compile_cached, epoch_impl, jitted_epoch, shuffled_order
from gd_jax._src.model import is_array, is_parameter, pack, partition_params, unpack
from gd_jax._src.network import Params, layer_sizes, predict
from gd_jax._src.optim import GradientTransformation, scale_learning_rate
from gd_jax._src.parallel import data_parallel_epoch

__all__ = [
    "DivergenceError",
    "EpochEnd",
    "History",
    "accuracy",
    "as_arrays",
    "check_fit_arguments",
    "check_model",
    "cost_and_accuracy",
    "evaluate",
    "fit",
    "mlp_predict",
    "root_mean_square",
]

PyTree = Any
PredictFn = Callable[[PyTree, jax.Array], jax.Array]


@dataclasses.dataclass
class History:
    """Per-epoch measurements of a run; ``to_dict`` is JSON-ready.

    Attributes:
      epochs: one dict per finished epoch: ``epoch`` (1-based), ``train_cost`` and
        ``train_accuracy`` (the whole training set, after the epoch), ``eval_cost`` and
        ``eval_accuracy`` (None without eval data), ``seconds`` (the epoch's training time:
        compilation and measurements excluded) and, when ``eta_halving`` is on,
        ``learning_rate_scale``. Accuracies are None when there is no ``predict_fn``.
      stop_reason: ``"epochs"`` (ran them all), ``"target_cost"`` (the training cost fell to
        the target), ``"early_stopping"`` (no better eval accuracy in ``patience`` epochs),
        ``"eta_schedule"`` (the learning rate was halved down to 1/128 of its start) or
        ``"diverged"`` (see ``DivergenceError``).
      compile_seconds: the time the last ``fit`` call spent compiling (near 0 when JAX's
        cache already held the compiled epoch).
      best_epoch: with ``patience``, the epoch whose parameters ``fit`` returned.
    """

    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    stop_reason: str = "epochs"
    compile_seconds: float = 0.0
    best_epoch: int | None = None

    def __getitem__(self, name: str) -> list[Any]:
        """One column, e.g. ``history["eval_accuracy"]``."""
        return [record.get(name) for record in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": [dict(record) for record in self.epochs], "stop_reason": self.stop_reason,
                "compile_seconds": self.compile_seconds, "best_epoch": self.best_epoch}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls([dict(record) for record in d["epochs"]], d.get("stop_reason", "epochs"),
                   d.get("compile_seconds", 0.0), d.get("best_epoch"))


class EpochEnd(NamedTuple):
    """What ``fit`` hands to its ``on_epoch_end`` callback after each finished epoch."""

    epoch: int  # 1-based: the number of epochs done
    state: TrainState
    history: History  # the run's live history: copy it (History.from_dict(h.to_dict())) to keep a snapshot
    best_params: Any = None  # with patience: the parameters of history.best_epoch


class DivergenceError(RuntimeError):
    """Training diverged: it stopped at the end of the epoch where that showed.

    Two signs count, both checked once per epoch (never a host round-trip per step):
    a NaN or infinite cost or parameter, and parameters that blew up, their root mean
    square growing more than ``max_growth`` times in one epoch (values below 1, the scale
    of the textbook's N(0, 1) initialisation, count as 1, so small initialisations may
    grow to unit scale freely). The second catches steps so large that sigmoid networks
    saturate into a finite but useless state, where the cost never becomes NaN: at
    ``eta = 1e4`` the textbook network's parameters grow 44x in its first epoch, while
    healthy runs measured here grew at most 1.1x from unit scale.

    Attributes:
      epoch: the 1-based epoch in which it happened.
      history: the history up to the last finite epoch.
      last_finite: the ``TrainState`` at the end of the last finite epoch.
      growth: the parameters' RMS growth in that epoch (NaN when they became NaN).
      max_growth: the limit it was checked against (None: growth was not checked).
      cost_finite: False when a mini-batch cost or the training cost was NaN or infinite.
    """

    def __init__(self, message: str, *, epoch: int, history: History, last_finite: TrainState,
                 growth: float = math.nan, max_growth: float | None = None, cost_finite: bool = True):
        super().__init__(message)
        self.epoch, self.history, self.last_finite = epoch, history, last_finite
        self.growth, self.max_growth, self.cost_finite = growth, max_growth, cost_finite


@dataclasses.dataclass(frozen=True)
class mlp_predict:  # lower case: it is used as a function, gd.mlp_predict("tanh")(params, x)
    """``predict`` of gd_jax's own MLP layout with a fixed activation, as a ``predict_fn``.

    A frozen dataclass rather than a ``functools.partial`` so that two equal ones compare
    equal, and compiled functions that take it as a static argument are reused.
    """

    activation: str = "sigmoid"

    def __call__(self, params: Params, x: jax.Array) -> jax.Array:
        return predict(params, x, activation=self.activation)


def cost_and_accuracy(params, x, y, *, cost, predict_fn, n_classes):
    """Mean cost and accuracy (NaN without ``predict_fn``) of ``params`` (or ``pack(params)``) on ``(x, y)``."""
    params = unpack(params)
    c = cost(params, x, jax.nn.one_hot(y, n_classes, dtype=x.dtype))
    if predict_fn is None:
        return c, jnp.float32(jnp.nan)
    return c, jnp.mean(jnp.argmax(predict_fn(params, x), axis=-1) == y)


def root_mean_square(params: PyTree) -> jax.Array:
    """``sqrt(sum p^2 / count)`` over every floating-point leaf: the parameters' scale (``max_growth``)."""
    leaves = [p for p in jax.tree.leaves(params) if is_parameter(p)]
    return jnp.sqrt(sum(jnp.sum(jnp.square(p.astype(jnp.float32))) for p in leaves)
                    / max(sum(p.size for p in leaves), 1))


def _epoch_end(new_params, old_params, train_x, train_y, eval_x, eval_y, *, cost, predict_fn, n_classes):
    """Everything ``fit`` reads after an epoch, in one compiled call (one transfer to the host)."""
    new_params, old_params = unpack(new_params), unpack(old_params)
    floats = [p for p in jax.tree.leaves(new_params) if is_parameter(p)]
    out = {"growth": root_mean_square(new_params) / jnp.maximum(root_mean_square(old_params), 1.0),
           "params_finite": jnp.all(jnp.asarray([jnp.all(jnp.isfinite(p)) for p in floats]))}
    out["train_cost"], out["train_accuracy"] = cost_and_accuracy(new_params, train_x, train_y, cost=cost,
                                                        predict_fn=predict_fn, n_classes=n_classes)
    if eval_x is not None:
        out["eval_cost"], out["eval_accuracy"] = cost_and_accuracy(new_params, eval_x, eval_y, cost=cost,
                                                          predict_fn=predict_fn, n_classes=n_classes)
    return out


# JAX caches compiled code of these by their static arguments: equal settings compile once.
_epoch_end_cached = jax.jit(_epoch_end, static_argnames=("cost", "predict_fn", "n_classes"))
_evaluate_cached = jax.jit(cost_and_accuracy, static_argnames=("cost", "predict_fn", "n_classes"))


def _is_mlp(params: PyTree) -> bool:
    try:
        layer_sizes(params)
    except (TypeError, KeyError, IndexError, AttributeError):
        return False
    return True


def default_predict_fn(params: PyTree, activation: str = "sigmoid") -> PredictFn | None:
    """gd_jax's ``predict`` for its own MLP layout; None for any other model."""
    return mlp_predict(activation) if _is_mlp(params) else None


def infer_n_classes(params: PyTree, *datasets: Dataset | None) -> int:
    """The width of the one-hot targets: the MLP's output layer, else the largest label + 1."""
    if _is_mlp(params):
        return layer_sizes(params)[-1]
    return 1 + max(int(np.max(np.asarray(d.y))) for d in datasets if d is not None)


def evaluate(params: PyTree, data: Dataset, *, cost: Cost, activation: str = "sigmoid",
             predict_fn: PredictFn | None = None, n_classes: int | None = None) -> tuple[float, float]:
    """The mean cost and the accuracy of ``params`` on ``data``, one compiled pass.

    The model is checked against the data first (``check_model``): one ``ValueError``
    naming the fix rather than an error from inside the compiled pass.

    Args:
      params: the model, any pytree (gd_jax's MLP, an Equinox module, Flax variables...).
      data: the ``Dataset`` to measure on.
      cost: ``cost(params, x, y_onehot)``.
      activation: for gd_jax's own MLPs, the neurons' non-linearity used for accuracy.
      predict_fn: ``predict_fn(params, x) -> scores``; the label is the highest score.
        Default: ``predict`` for gd_jax's own MLPs; for other models the accuracy is NaN.
      n_classes: the one-hot width (default: the MLP's output layer, else the largest label + 1).
    """
    predict_fn = predict_fn or default_predict_fn(params, activation)
    n_classes = n_classes or infer_n_classes(params, data)
    params = as_arrays(params)
    check_model(params, data, cost=cost, predict_fn=predict_fn, n_classes=n_classes)
    static = {"cost": cost, "predict_fn": predict_fn, "n_classes": n_classes}
    args = (pack(params), jnp.asarray(data.x), jnp.asarray(data.y))
    c, acc = compile_cached(_evaluate_cached, cost_and_accuracy, args, static)(*args)
    return float(c), float(acc)


def accuracy(params: PyTree, data: Dataset, *, activation: str = "sigmoid",
             predict_fn: PredictFn | None = None) -> float:
    """The fraction of ``data`` whose label is the output with the highest score.

    ``predict_fn(params, x) -> (batch, classes)`` scores any model (``jax.vmap(model)`` for an
    Equinox module); gd_jax's MLPs default to ``predict`` with ``activation``.
    """
    predict_fn = predict_fn or default_predict_fn(params, activation)
    if predict_fn is None:
        raise ValueError("accuracy needs predict_fn(params, x) -> scores for a model that is not a gd_jax MLP")
    a = predict_fn(params, jnp.asarray(data.x))
    return float(jnp.mean(jnp.argmax(a, axis=-1) == jnp.asarray(data.y)))


def check_model(params: PyTree, data: Dataset, *, cost: Cost, predict_fn: PredictFn | None, n_classes: int) -> None:
    """Checks the model against the data before anything compiles, by ``jax.eval_shape`` on one example.

    Each problem raises one ``ValueError`` naming it and the fix: a leaf that is neither an
    array nor a hashable static value (by its path), a ``predict_fn`` whose output is not
    ``(batch, n_classes)`` (a model narrower than its labels names the two widths), a cost
    that fails on one-hot targets of width ``n_classes`` or does not return a scalar.
    Nothing is computed or compiled: ``eval_shape`` traces abstract values only.
    """
    packed = pack(params)  # raises for a leaf that is neither an array nor static
    x = jax.ShapeDtypeStruct((1, *np.shape(data.x)[1:]), jax.dtypes.canonicalize_dtype(data.x.dtype))
    y = jax.ShapeDtypeStruct((1, n_classes), x.dtype)
    classes = f"{n_classes} classes (n_classes, or the largest label + 1)"
    if predict_fn is not None:
        out = _shape_of(lambda m, x: predict_fn(unpack(m), x), packed, x, what=f"predict_fn(params, x) on x {x.shape}",
                        fix="it gets a batch: map a per-example model over it (jax.vmap(model))")
        if len(out) == 2 and out[0] == 1 and out[1] != n_classes:
            raise ValueError(f"the model outputs {out[1]} scores per example but the data needs {classes}; give "
                             f"the model {n_classes} outputs, or pass n_classes={out[1]} if the labels fit")
        if out != (1, n_classes):
            raise ValueError(f"predict_fn(params, x) must return (batch, classes) = (1, {n_classes}) for one "
                             f"example, got {out}; map a per-example model over the batch (jax.vmap(model))")
    c = _shape_of(lambda m, x, y: cost(unpack(m), x, y), packed, x, y,
                  what=f"cost(params, x, y_onehot) on x {x.shape}, one-hot targets of width {n_classes}",
                  fix=f"give the model {n_classes} outputs, one per class, or fix the cost")
    if c != ():
        raise ValueError(f"cost(params, x, y_onehot) must return a scalar, the mean over the batch, but returns "
                         f"shape {c} for one example; average the per-example costs (jnp.mean)")


def _shape_of(fn: Callable[..., Any], *args: Any, what: str, fix: str) -> tuple:
    """The shape ``fn(*args)`` would have (``jax.eval_shape``), its failure as a ``ValueError`` naming ``what``."""
    try:
        out = jax.eval_shape(fn, *args)
    except Exception as e:  # any error of user code, told in one line with the fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{what} fails on one example ({type(e).__name__}: {first}); {fix}") from e
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(f"{what} must return one array, got {jax.tree.structure(out)}; {fix}")
    return tuple(out.shape)


def _check_int(name: str, value, low: int, high: int | None, fix: str) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}; {fix}")


def check_fit_arguments(params: PyTree, train: Dataset, *, eval_data: Dataset | None, epochs: int,
                        batch_size: int, target_cost: float | None, max_growth: float | None = 10.0,
                        n_classes: int | None = None, patience: int | None = None,
                        eta_halving: int | None = None) -> None:
    """Raises ``ValueError`` naming the fix for any argument of ``fit`` that cannot train.

    ``fit`` calls it first; callers that must validate before doing anything else (the
    CLI checks before it creates a run folder) call it themselves. The data is checked
    against the model where the model's shape can be read (gd_jax's own MLPs).
    """
    sizes = layer_sizes(params) if _is_mlp(params) else None
    _check_int("epochs", epochs, 0, None, "pass 30 for the textbook run")
    if n_classes is not None:
        _check_int("n_classes", n_classes, 1, None, "pass the number of classes")
    n_inputs = sizes[0] if sizes else None
    classes = n_classes or (sizes[-1] if sizes else None)
    check_dataset(train, n_inputs=n_inputs, n_classes=classes, name="train")
    if eval_data is not None:
        check_dataset(eval_data, n_inputs=n_inputs, n_classes=classes, name="eval_data")
    n = train.size
    _check_int("batch_size", batch_size, 1, n, f"use 1 (stochastic) up to {n} (full batch), the textbook uses 10")
    if target_cost is not None and not (isinstance(target_cost, (int, float)) and math.isfinite(target_cost)
                                        and target_cost >= 0):
        raise ValueError(f"target_cost must be a finite number >= 0 or None, got {target_cost!r}")
    if max_growth is not None and not (isinstance(max_growth, (int, float)) and max_growth > 1):
        raise ValueError(f"max_growth must be a number > 1 or None, got {max_growth!r}; the default is 10")
    for name, value in (("patience", patience), ("eta_halving", eta_halving)):
        if value is not None:
            _check_int(name, value, 1, None, "the textbook uses 10")
            if eval_data is None:
                raise ValueError(f"{name} watches the evaluation accuracy: pass eval_data (a validation set)")


@dataclasses.dataclass
class _Watch:
    """The evaluation-accuracy bookkeeping behind ``patience`` and ``eta_halving``, replayable from a history."""

    best_epoch: int | None = None
    best_accuracy: float = -math.inf
    since_best: int = 0  # epochs since the best accuracy (patience)
    since_change: int = 0  # epochs without improvement since the last halving (eta_halving)
    scale: float = 1.0

    def observe(self, epoch: int, accuracy: float, eta_halving: int | None) -> None:
        if accuracy > self.best_accuracy:
            self.best_epoch, self.best_accuracy, self.since_best, self.since_change = epoch, accuracy, 0, 0
            return
        self.since_best += 1
        self.since_change += 1
        if eta_halving is not None and self.since_change >= eta_halving:
            self.scale, self.since_change = self.scale / 2, 0

    @classmethod
    def replay(cls, history: History, eta_halving: int | None) -> _Watch:
        watch = cls()
        for record in history.epochs:
            if record.get("eval_accuracy") is not None:
                watch.observe(record["epoch"], record["eval_accuracy"], eta_halving)
        return watch


ETA_HALVING_FLOOR = 1 / 128  # the textbook stops once eta has fallen to 1/128 of its start


def fit(
    params: PyTree,
    train: Dataset,
    *,
    epochs: int,
    batch_size: int,
    optimizer: GradientTransformation,
    cost: Cost,
    key: jax.Array,
    eval_data: Dataset | None = None,
    predict_fn: PredictFn | None = None,
    n_classes: int | None = None,
    activation: str = "sigmoid",
    target_cost: float | None = None,
    max_growth: float | None = 10.0,
    patience: int | None = None,
    eta_halving: int | None = None,
    opt_state: Any = None,
    history: History | None = None,
    best_params: PyTree | None = None,
    on_epoch_end: Callable[[EpochEnd], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[PyTree, History]:
    """Trains ``params`` on ``train`` by mini-batch gradient descent.

    Each epoch visits the rows in a fresh shuffled order, cut into mini-batches ``B``, and
    takes one optimizer step per mini-batch on the gradient of the mean cost,

    .. math:: \\theta \\leftarrow \\theta - \\eta \\, \\nabla_\\theta \\frac{1}{|B|} \\sum_{x \\in B} C_x(\\theta)

    (for ``gd.sgd(eta)``; any optimizer's update in general), as one compiled ``lax.scan``
    (see ``gd_jax._src.epoch`` for the shuffling and last-batch rules). After each epoch the
    training cost and accuracy, and with ``eval_data`` its cost and accuracy, are measured
    with the new parameters, in one compiled call.

    **Any model works**, as it is: gd_jax's MLP, an Equinox module, Flax linen variables, a
    Flax nnx module or state, a dict of tuples. Its inexact (float) arrays are trained; its
    other leaves (activation functions, integer counters, PRNG keys) are carried unchanged
    (``gd.partition_params``), and the model comes back with the type it came in with.
    ``cost(params, x, y_onehot)`` is the only function ``fit`` needs; accuracy comes from
    ``predict_fn(params, x) -> scores`` (the label is the highest score), for gd_jax's MLP
    ``predict`` with ``activation``. Before compiling, the model is checked against the data
    on one example (``jax.eval_shape``): a wrong output width, a cost that is not a scalar
    or a leaf that is neither an array nor static is one ``ValueError`` naming the fix.

    **What the stopping rules watch.** ``patience`` and ``eta_halving`` watch the accuracy on
    ``eval_data``, and ``patience`` returns the parameters of its best epoch: that is model
    selection, so pass a validation split (rows held out of ``train``), never the test set,
    whose accuracy would then be optimistic. ``target_cost`` watches the training cost.

    Args:
      params: the initial model, any pytree (see above); never modified.
      train: the training ``Dataset`` (x ``(n, n_0)`` floats, y ``(n,)`` integer labels).
      epochs: the total number of epochs (a resumed run counts those in ``history``).
      batch_size: mini-batch size, 1 (stochastic) to ``n`` (full batch).
      optimizer: ``gd.sgd(...)`` or any optax ``GradientTransformation``; it sees the
        model's float arrays only (``gd.partition_params(params)[0]``).
      cost: ``cost(params, x, y_onehot)``, e.g. ``gd.quadratic_cost``; a scalar, the mean
        over the batch.
      key: the PRNG key every shuffle derives from.
      eval_data: a ``Dataset`` to report cost and accuracy on after each epoch, and the one
        ``patience`` and ``eta_halving`` watch: a validation split, not the test set.
      predict_fn: ``predict_fn(params, x) -> scores`` of shape ``(batch, n_classes)`` for
        accuracy (default: gd_jax's ``predict`` for its own MLPs, none for other models:
        accuracies are then None).
      n_classes: the width of the one-hot targets (default: the MLP's output layer, else
        the largest label + 1).
      activation: the neurons' non-linearity used for accuracy of gd_jax's MLPs (bind the
        same one into ``cost`` with ``functools.partial``).
      target_cost: stop early once the training cost is at or below this value.
      max_growth: the largest growth of the parameters' root mean square in one epoch
        before the run counts as diverged (see ``DivergenceError``); None to allow any.
      patience: early stopping, the textbook's "no improvement in ``patience`` epochs" of
        ``eval_data``'s accuracy; ``fit`` then returns the best epoch's parameters
        (``history.best_epoch``).
      eta_halving: the textbook's learning-rate schedule: halve the learning rate each time
        ``eval_data``'s accuracy has not improved for ``eta_halving`` epochs, and stop once
        it has fallen to 1/128 of its start. The optimizer is wrapped in
        ``gd.scale_learning_rate``, whose state (``opt_state``, checkpoints) holds the scale.
      opt_state: optimizer state to continue from (default: ``optimizer.init`` of the
        model's float arrays).
      history: the history of the epochs already done, to resume a run.
      best_params: when resuming with ``patience``, the parameters of ``history.best_epoch``
        (``EpochEnd.best_params`` of the run so far, ``Checkpoint.best_params``).
      on_epoch_end: called with an ``EpochEnd`` after each finite epoch (checkpoints:
        ``gd.checkpoint_callback``; progress bars).
      mesh: train data-parallel on this device mesh (``gd.data_mesh()``): each mini-batch
        split over its ``"data"`` axis, ``batch_size`` a multiple of its size; across
        processes after ``gd.initialize_distributed``. See ``gd_jax._src.parallel``. Default:
        one device. Models whose leaves are all arrays only.

    Returns:
      ``(params, history)``: the trained model (with ``patience``, the best epoch's), of the
      type ``params`` came in with, and the ``History``.

    Raises:
      ValueError: bad hyperparameters, data, or a model that does not fit the data (the
        message names the fix).
      DivergenceError: the cost became NaN or infinite, or the parameters blew up;
        ``on_epoch_end`` is not called for that epoch, so the last checkpoint it wrote is
        the last good one.

    Example:
      >>> import jax, gd_jax as gd
      >>> data, test = gd.load_mnist("sample")
      >>> train, validation = gd.Dataset(data.x[:4000], data.y[:4000]), gd.Dataset(data.x[4000:], data.y[4000:])
      >>> params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
      >>> params, history = gd.fit(params, train, eval_data=validation, epochs=3, batch_size=10,
      ...                          optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(1),
      ...                          patience=10)
      >>> len(history), gd.accuracy(params, test) > 0.8
      (3, True)
    """
    check_fit_arguments(params, train, eval_data=eval_data, epochs=epochs, batch_size=batch_size,
                        target_cost=target_cost, max_growth=max_growth, n_classes=n_classes, patience=patience,
                        eta_halving=eta_halving)
    history = History() if history is None else History.from_dict(history.to_dict())
    predict_fn = predict_fn or default_predict_fn(params, activation)
    n_classes = n_classes or infer_n_classes(params, train, eval_data)
    params = as_arrays(params)
    check_model(params, train, cost=cost, predict_fn=predict_fn, n_classes=n_classes)
    optimizer = optimizer if eta_halving is None else scale_learning_rate(optimizer)
    watch = _Watch.replay(history, eta_halving)
    _check_resume(watch, patience, best_params)
    history.stop_reason = _stop_before_training(history, epochs=epochs, target_cost=target_cost,
                                                eta_halving=eta_halving, watch=watch)
    if len(history) >= epochs or history.stop_reason != "epochs":
        keep_best = history.stop_reason == "epochs" and patience is not None and best_params is not None
        return (best_params if keep_best else params), history

    state = TrainState(pack(params), optimizer.init(partition_params(params)[0]) if opt_state is None else opt_state)
    run = _compile_epoch(state, train, eval_data, first=len(history), key=key, cost=cost, optimizer=optimizer,
                         batch_size=batch_size, n_classes=n_classes, predict_fn=predict_fn, mesh=mesh)
    history.compile_seconds = run.compile_seconds
    best = best_params
    for epoch in range(len(history), epochs):
        new_state, seconds, m = run(state, epoch)
        _check_divergence(m, epoch + 1, history=history, last_finite=state, max_growth=max_growth)
        state = new_state
        record = _record(epoch + 1, m, seconds, scale=watch.scale if eta_halving is not None else None)
        history.epochs.append(record)
        state, best = _observe(watch, record, state, best, patience=patience, eta_halving=eta_halving)
        history.best_epoch = watch.best_epoch if patience is not None else None
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(epoch + 1, _unpacked(state), history, best if patience is not None else None))
        history.stop_reason = _stop_reason(record["train_cost"], watch, target_cost=target_cost, patience=patience,
                                           eta_halving=eta_halving)
        if history.stop_reason != "epochs":
            break
    return (best if patience is not None and best is not None else unpack(state.params)), history


def as_arrays(model: PyTree) -> PyTree:
    """``model`` with its numpy arrays as JAX arrays; its other leaves unchanged (never modifies ``model``).

    ``jax.device_put`` copies a numpy array to the device as it is (dtype canonicalised as
    ``jnp.asarray`` does) without compiling anything; ``jnp.asarray`` compiles and loads a small
    program per shape, some 8 ms each in a fresh process.
    """
    return jax.tree.map(lambda leaf: jax.device_put(leaf) if is_array(leaf) else leaf, model)


def _unpacked(state: TrainState) -> TrainState:
    """The state as the user sees it: the model with the type it came in with."""
    return TrainState(unpack(state.params), state.opt_state)


def _check_resume(watch: _Watch, patience: int | None, best_params: PyTree | None) -> None:
    if patience is not None and watch.best_epoch is not None and best_params is None:
        raise ValueError(f"resuming with patience needs best_params, the parameters of epoch {watch.best_epoch} "
                         "(EpochEnd.best_params of the run so far, Checkpoint.best_params of its checkpoint)")


def _stop_before_training(history: History, *, epochs: int, target_cost: float | None, eta_halving: int | None,
                          watch: _Watch) -> str:
    """Why a resumed run has nothing left to do (``"epochs"`` when it has, or has run them all)."""
    if len(history) and target_cost is not None and history.epochs[-1]["train_cost"] <= target_cost:
        return "target_cost"  # a resumed run that had already reached its target
    if len(history) and eta_halving is not None and watch.scale <= ETA_HALVING_FLOOR:
        return "eta_schedule"
    return "epochs"


class _Epochs(NamedTuple):
    """The compiled epoch and end-of-epoch measurements of one ``fit``, with the device data they read."""

    epoch_fn: Callable[..., tuple[TrainState, jax.Array]]
    end_fn: Callable[..., dict[str, jax.Array]]
    train: Dataset  # on the device
    eval_x: jax.Array | None
    eval_y: jax.Array | None
    key: jax.Array
    first: int  # the first epoch to run (0-based), whose order was drawn to compile
    order0: np.ndarray
    compile_seconds: float

    def __call__(self, state: TrainState, epoch: int) -> tuple[TrainState, float, dict[str, float]]:
        """Trains epoch ``epoch`` (0-based): the new state, its seconds, and its measurements as floats."""
        order = self.order0 if epoch == self.first else shuffled_order(jax.random.fold_in(self.key, epoch),
                                                                       self.train.size)
        start = time.perf_counter()
        new_state, finite = self.epoch_fn(state, self.train.x, self.train.y, order)
        jax.block_until_ready(new_state)
        seconds = time.perf_counter() - start
        m = jax.device_get(self.end_fn(new_state.params, state.params, self.train.x, self.train.y, self.eval_x,
                                       self.eval_y))
        m = {k: float(v) for k, v in m.items()}
        m["batches_finite"] = float(bool(finite))
        return new_state, seconds, m


def _compile_epoch(state: TrainState, train: Dataset, eval_data: Dataset | None, *, first: int, key: jax.Array,
                   cost: Cost, optimizer: GradientTransformation, batch_size: int, n_classes: int,
                   predict_fn: PredictFn | None, mesh: jax.sharding.Mesh | None) -> _Epochs:
    """Moves the data to the device once and compiles the epoch and its measurements ahead of the loop.

    Compiled ahead, so that epoch 1's seconds are training alone; JAX's cache makes a second
    ``fit`` with equal settings compile nothing.
    """
    host = train
    train = Dataset(*jax.device_put((train.x, train.y)))  # moved to the device once (see as_arrays)
    eval_x, eval_y = (None, None) if eval_data is None else jax.device_put((eval_data.x, eval_data.y))
    start = time.perf_counter()
    order0 = shuffled_order(jax.random.fold_in(key, first), train.size)
    if mesh is None:
        epoch_fn = compile_cached(jitted_epoch, epoch_impl, (state, train.x, train.y, order0),
                                  {"cost": cost, "optimizer": optimizer, "batch_size": batch_size,
                                   "n_classes": n_classes})
    elif state.params is not unpack(state.params):
        raise ValueError("mesh= trains models whose leaves are all arrays; train this model on one device "
                         "(mesh=None), or hold its static leaves outside the model")
    else:  # the same epoch, data-parallel: run(state, order) -> (state, finite)
        run = data_parallel_epoch(mesh, host.x, host.y, state, order0, cost=cost, optimizer=optimizer,
                                  batch_size=batch_size, n_classes=n_classes)
        epoch_fn = lambda state, x, y, order: run(state, order)  # noqa: E731
    end_fn = compile_cached(_epoch_end_cached, _epoch_end,
                            (state.params, state.params, train.x, train.y, eval_x, eval_y),
                            {"cost": cost, "predict_fn": predict_fn, "n_classes": n_classes})
    return _Epochs(epoch_fn, end_fn, train, eval_x, eval_y, key, first, order0, time.perf_counter() - start)


def _check_divergence(m: dict[str, float], epoch: int, *, history: History, last_finite: TrainState,
                      max_growth: float | None) -> None:
    """Raises ``DivergenceError`` when epoch ``epoch`` (1-based) made the cost or the parameters blow up."""
    growth, train_cost = m["growth"], m["train_cost"]
    cost_finite = bool(m["batches_finite"]) and math.isfinite(train_cost)
    problem = None
    if not (cost_finite and m["params_finite"] and math.isfinite(growth)):
        problem = f"the cost became NaN or infinite in epoch {epoch} (training cost {train_cost})"
    elif max_growth is not None and growth > max_growth:
        problem = (f"the parameters grew {growth:.3g}x in epoch {epoch} (more than max_growth={max_growth}; "
                   f"training cost {train_cost:.4g})")
    if problem:
        history.stop_reason = "diverged"
        raise DivergenceError(f"{problem}; the learning rate is probably too large: try one 10x smaller",
                              epoch=epoch, history=history, last_finite=_unpacked(last_finite), growth=growth,
                              max_growth=max_growth, cost_finite=cost_finite)


def _record(epoch: int, m: dict[str, float], seconds: float, *, scale: float | None) -> dict[str, Any]:
    """The history's record of a finished epoch (None for what was not measured)."""
    measured = {k: None if math.isnan(v) else v for k, v in m.items()}  # NaN: not measured
    record = {"epoch": epoch, "train_cost": m["train_cost"], "train_accuracy": measured["train_accuracy"],
              "eval_cost": measured.get("eval_cost"), "eval_accuracy": measured.get("eval_accuracy"),
              "seconds": seconds}
    if scale is not None:
        record["learning_rate_scale"] = scale  # the scale this epoch trained with
    return record


def _observe(watch: _Watch, record: dict[str, Any], state: TrainState, best: PyTree | None, *,
             patience: int | None, eta_halving: int | None) -> tuple[TrainState, PyTree | None]:
    """Feeds the eval accuracy to ``patience`` and ``eta_halving``: the state (scale halved?) and the best params."""
    if record["eval_accuracy"] is None or (patience is None and eta_halving is None):
        return state, best
    watch.observe(record["epoch"], record["eval_accuracy"], eta_halving)
    if watch.best_epoch == record["epoch"]:
        best = unpack(state.params)
    if eta_halving is not None and watch.scale != record["learning_rate_scale"]:
        state = TrainState(state.params, state.opt_state._replace(scale=jnp.float32(watch.scale)))
    return state, best


def _stop_reason(train_cost: float, watch: _Watch, *, target_cost: float | None, patience: int | None,
                 eta_halving: int | None) -> str:
    """Why the run stops after this epoch, ``"epochs"`` when it goes on."""
    if target_cost is not None and train_cost <= target_cost:
        return "target_cost"
    if patience is not None and watch.since_best >= patience:
        return "early_stopping"
    if eta_halving is not None and watch.scale <= ETA_HALVING_FLOOR:
        return "eta_schedule"
    return "epochs"
