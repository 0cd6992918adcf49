"""Training by mini-batch gradient descent: one compiled epoch, and ``fit`` around it.

An epoch draws a permutation of the training set from its key, cuts it into mini-batches
of ``batch_size`` and takes one optimizer step per mini-batch, all inside one
``jax.lax.scan`` under one ``jax.jit``, with the data resident on the device: each step
gathers its own rows, so no shuffled copy of the data set is ever made.

**The last partial batch.** As in the textbook's ``network.py``, every example is used
exactly once per epoch: when ``batch_size`` does not divide ``n``, the ``n mod batch_size``
examples left at the end of the permutation form one smaller, final mini-batch (a second
compiled step shape inside the same epoch). ``batch_size=1`` is stochastic gradient
descent, ``batch_size=n`` full-batch gradient descent (one step an epoch).

**Randomness.** Epoch ``e`` shuffles with ``jax.random.fold_in(key, e)``, so the same key
gives bit-identical parameters, and a run resumed at an epoch boundary draws the same
batches as one that never stopped.
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

from gd_jax.costs import Cost
from gd_jax.data.dataset import Dataset, check_dataset
from gd_jax.network import Params, layer_sizes, predict
from gd_jax.optim import GradientTransformation, apply_updates

__all__ = [
    "DivergenceError",
    "EpochEnd",
    "History",
    "TrainState",
    "accuracy",
    "check_fit_arguments",
    "evaluate",
    "fit",
    "make_epoch",
]


class TrainState(NamedTuple):
    """What an epoch carries from step to step: the parameters and the optimizer state."""

    params: Params
    opt_state: Any


@dataclasses.dataclass
class History:
    """Per-epoch measurements of a run; ``to_dict`` is JSON-ready.

    Attributes:
      epochs: one dict per finished epoch: ``epoch`` (1-based), ``train_cost``, ``eval_cost``
        and ``eval_accuracy`` (None without eval data) and ``seconds`` (the epoch's training
        time, evaluation excluded).
      stop_reason: ``"epochs"`` (ran them all), ``"target_cost"`` (the training cost fell to
        the target) or ``"diverged"`` (see ``DivergenceError``).
    """

    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    stop_reason: str = "epochs"

    def __getitem__(self, name: str) -> list[Any]:
        """One column, e.g. ``history["eval_accuracy"]``."""
        return [record[name] for record in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": [dict(record) for record in self.epochs], "stop_reason": self.stop_reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls([dict(record) for record in d["epochs"]], d.get("stop_reason", "epochs"))


class EpochEnd(NamedTuple):
    """What ``fit`` hands to its ``on_epoch_end`` callback after each finished epoch."""

    epoch: int  # 1-based: the number of epochs done
    state: TrainState
    history: History  # the run's live history: copy it (History.from_dict(h.to_dict())) to keep a snapshot


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
    """

    def __init__(self, message: str, *, epoch: int, history: History, last_finite: TrainState):
        super().__init__(message)
        self.epoch, self.history, self.last_finite = epoch, history, last_finite


def make_epoch(cost: Cost, optimizer: GradientTransformation, *, batch_size: int, n_classes: int,
               ) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """Builds one epoch of mini-batch gradient descent as a pure, jittable function.

    Args:
      cost: ``cost(params, x, y_onehot)``, averaging over the batch.
      optimizer: gd_jax's ``sgd`` or any optax ``GradientTransformation``.
      batch_size: examples per mini-batch (the last one may be smaller, see module doc).
      n_classes: width of the one-hot targets built from integer labels.

    Returns:
      ``epoch(state, x, y, key) -> (state, finite)`` where ``x`` is ``(n, n_0)``, ``y`` the
      ``(n,)`` integer labels, and ``finite`` is True when every mini-batch cost of the
      epoch was finite. Being pure, it can be ``jax.vmap``-ed over states and keys to
      train many models at once.
    """

    def step(state: TrainState, rows: jax.Array, x: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
        xb = x[rows]
        yb = jax.nn.one_hot(y[rows], n_classes, dtype=x.dtype)
        c, grads = jax.value_and_grad(cost)(state.params, xb, yb)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(apply_updates(state.params, updates), opt_state), jnp.isfinite(c)

    def epoch(state: TrainState, x: jax.Array, y: jax.Array, key: jax.Array) -> tuple[TrainState, jax.Array]:
        n = x.shape[0]
        full, rest = divmod(n, batch_size)
        order = jax.random.permutation(key, n)
        state, finite = jax.lax.scan(
            lambda s, rows: step(s, rows, x, y), state, order[: full * batch_size].reshape(full, batch_size)
        )
        finite = jnp.all(finite)
        if rest:  # the textbook's smaller last mini-batch
            state, tail_finite = step(state, order[full * batch_size:], x, y)
            finite = finite & tail_finite
        return state, finite

    return epoch


@jax.jit(static_argnames=("cost", "activation", "n_classes"))
def _evaluate(params, x, y, cost, activation, n_classes):
    cost_value = cost(params, x, jax.nn.one_hot(y, n_classes, dtype=x.dtype))
    correct = jnp.mean(jnp.argmax(predict(params, x, activation=activation), axis=-1) == y)
    return cost_value, correct


def evaluate(params: Params, data: Dataset, *, cost: Cost, activation: str = "sigmoid") -> tuple[float, float]:
    """The mean cost and the accuracy of ``params`` on ``data``, one compiled pass."""
    c, acc = _evaluate(params, jnp.asarray(data.x), jnp.asarray(data.y), cost, activation, layer_sizes(params)[-1])
    return float(c), float(acc)


def accuracy(params: Params, data: Dataset, *, activation: str = "sigmoid") -> float:
    """The fraction of ``data`` whose label is the output neuron with the highest activation."""
    a = predict(params, jnp.asarray(data.x), activation=activation)
    return float(jnp.mean(jnp.argmax(a, axis=-1) == jnp.asarray(data.y)))


@jax.jit
def _rms(params: Params) -> jax.Array:
    leaves = jax.tree.leaves(params)
    return jnp.sqrt(sum(jnp.sum(jnp.square(p)) for p in leaves) / sum(p.size for p in leaves))


def _check_int(name: str, value, low: int, high: int | None, fix: str) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}; {fix}")


def check_fit_arguments(params: Params, train: Dataset, *, eval_data: Dataset | None, epochs: int,
                        batch_size: int, target_cost: float | None, max_growth: float | None = 10.0) -> None:
    """Raises ``ValueError`` naming the fix for any argument of ``fit`` that cannot train.

    ``fit`` calls it first; callers that must validate before doing anything else (the
    CLI checks before it creates a run folder) call it themselves.
    """
    sizes = layer_sizes(params)
    _check_int("epochs", epochs, 0, None, "pass 30 for the textbook run")
    check_dataset(train, n_inputs=sizes[0], n_classes=sizes[-1], name="train")
    if eval_data is not None:
        check_dataset(eval_data, n_inputs=sizes[0], n_classes=sizes[-1], name="eval_data")
    n = train.size
    _check_int("batch_size", batch_size, 1, n, f"use 1 (stochastic) up to {n} (full batch), the textbook uses 10")
    if target_cost is not None and not (isinstance(target_cost, (int, float)) and math.isfinite(target_cost)
                                        and target_cost >= 0):
        raise ValueError(f"target_cost must be a finite number >= 0 or None, got {target_cost!r}")
    if max_growth is not None and not (isinstance(max_growth, (int, float)) and max_growth > 1):
        raise ValueError(f"max_growth must be a number > 1 or None, got {max_growth!r}; the default is 10")


def fit(
    params: Params,
    train: Dataset,
    *,
    epochs: int,
    batch_size: int,
    optimizer: GradientTransformation,
    cost: Cost,
    key: jax.Array,
    eval_data: Dataset | None = None,
    activation: str = "sigmoid",
    target_cost: float | None = None,
    max_growth: float | None = 10.0,
    opt_state: Any = None,
    history: History | None = None,
    on_epoch_end: Callable[[EpochEnd], None] | None = None,
) -> tuple[Params, History]:
    """Trains ``params`` on ``train`` by mini-batch gradient descent.

    Each epoch is one compiled ``lax.scan`` over the shuffled mini-batches (see the module
    docstring for the shuffling and last-batch rules). After each epoch the training cost,
    and with ``eval_data`` its cost and accuracy, are measured with the new parameters.

    Args:
      params: the initial network; never modified.
      train: the training ``Dataset`` (x ``(n, n_0)`` floats, y ``(n,)`` integer labels).
      epochs: the total number of epochs (a resumed run counts those in ``history``).
      batch_size: mini-batch size, 1 (stochastic) to ``n`` (full batch).
      optimizer: ``gd.sgd(...)`` or any optax ``GradientTransformation``.
      cost: ``cost(params, x, y_onehot)``, e.g. ``gd.quadratic_cost``.
      key: the PRNG key every shuffle derives from.
      eval_data: a ``Dataset`` to report cost and accuracy on after each epoch.
      activation: the neurons' non-linearity used for accuracy (bind the same one into
        ``cost`` with ``functools.partial``).
      target_cost: stop early once the training cost is at or below this value.
      max_growth: the largest growth of the parameters' root mean square in one epoch
        before the run counts as diverged (see ``DivergenceError``); None to allow any.
      opt_state: optimizer state to continue from (default ``optimizer.init(params)``).
      history: the history of the epochs already done, to resume a run.
      on_epoch_end: called with an ``EpochEnd`` after each finite epoch (checkpoints,
        progress bars).

    Returns:
      ``(params, history)``.

    Raises:
      ValueError: bad hyperparameters or data (the message names the fix).
      DivergenceError: the cost became NaN or infinite, or the parameters blew up;
        ``on_epoch_end`` is not called for that epoch, so the last checkpoint it wrote is
        the last good one.
    """
    check_fit_arguments(params, train, eval_data=eval_data, epochs=epochs, batch_size=batch_size,
                        target_cost=target_cost, max_growth=max_growth)
    history = History() if history is None else History.from_dict(history.to_dict())
    n_classes = layer_sizes(params)[-1]
    # The state is not donated: a diverged epoch must leave the last finite state readable,
    # and donation measured no faster here (the state is small next to the data).
    epoch_fn = jax.jit(make_epoch(cost, optimizer, batch_size=batch_size, n_classes=n_classes))
    train = Dataset(jnp.asarray(train.x), jnp.asarray(train.y))  # moved to the device once
    if eval_data is not None:
        eval_data = Dataset(jnp.asarray(eval_data.x), jnp.asarray(eval_data.y))
    params = jax.tree.map(jnp.asarray, params)
    state = TrainState(params, optimizer.init(params) if opt_state is None else opt_state)
    history.stop_reason = "epochs"
    for epoch in range(len(history), epochs):
        start = time.perf_counter()
        new_state, finite = epoch_fn(state, train.x, train.y, jax.random.fold_in(key, epoch))
        jax.block_until_ready(new_state)
        seconds = time.perf_counter() - start
        train_cost, _ = evaluate(new_state.params, train, cost=cost, activation=activation)
        growth = float(_rms(new_state.params)) / max(float(_rms(state.params)), 1.0)
        problem = None
        if not (bool(finite) and math.isfinite(train_cost) and math.isfinite(growth)):
            problem = f"the cost became NaN or infinite in epoch {epoch + 1} (training cost {train_cost})"
        elif max_growth is not None and growth > max_growth:
            problem = (f"the parameters grew {growth:.3g}x in epoch {epoch + 1} (more than max_growth={max_growth}), "
                       f"saturating the network (training cost {train_cost:.4g})")
        if problem:
            history.stop_reason = "diverged"
            raise DivergenceError(
                f"{problem}; the learning rate is probably too large: try one 10x smaller",
                epoch=epoch + 1, history=history, last_finite=state,
            )
        state = new_state
        record = {"epoch": epoch + 1, "train_cost": train_cost, "eval_cost": None, "eval_accuracy": None,
                  "seconds": seconds}
        if eval_data is not None:
            record["eval_cost"], record["eval_accuracy"] = evaluate(
                state.params, eval_data, cost=cost, activation=activation)
        history.epochs.append(record)
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(epoch + 1, state, history))
        if target_cost is not None and train_cost <= target_cost:
            history.stop_reason = "target_cost"
            break
    return state.params, history
