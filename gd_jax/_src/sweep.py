"""Sweeps: a grid of models trained together as one compiled program.

A sweep trains one model for every point of the cartesian product of scalar hyperparameters
times every seed,

.. math:: \\{(h_1, \\dots, h_m, s)\\} = H_1 \\times \\dots \\times H_m \\times S,

with the very epoch ``fit`` runs (``gd.make_epoch``) over a *model axis*: the parameters and
optimizer states of the ``K`` models are stacked (each leaf gains an axis of length ``K``; a
``SweepResult`` always holds it first) and the hyperparameters enter as ``(K,)`` arrays through
the caller's ``make_optimizer(h)`` / ``make_cost(h)`` factories, so the whole grid compiles
once (see ``make_sweep_epoch``).

**Each model is the model ``fit`` trains.** Seed ``s`` gives the keys that ``gd-jax train
--seed s`` uses, ``init_key, shuffle_key = jax.random.split(jax.random.key(s))``
(``seed_keys``); the model starts from ``init(init_key)`` and its epoch ``e`` (0-based) takes
its mini-batches in the order ``gd.shuffled_order(jax.random.fold_in(shuffle_key, e), n)``,
exactly as ``fit(init(init_key), train, key=shuffle_key, ...)`` does.

**Batch order.** ``shuffle="per_model"``: every model draws its own order from its own seed,
so the ``K`` models are statistically ``K`` separate runs. ``shuffle="shared"``: every model
takes the order of the first seed's shuffle key, the usual choice for a hyperparameter sweep
(the seeds then vary the initialisation only); all models then see the same mini-batch, and
the first layer of all ``K`` models becomes one wide matrix product per step,
``x (b, n_0) @ [w_1 ... w_K] (n_0, K n_1)``, instead of ``K`` thin ones; the program keeps the
first-layer weights stacked ``(n_0, K, n_1)`` so that this matrix is the stacked array itself
(``model_axes``), not a copy made every step.

**Per-model divergence.** After each epoch every model is checked as ``fit`` checks a run: a
NaN or infinite mini-batch cost (with own orders; with a shared order ``make_epoch``'s flag
covers all the models at once, so there each model answers through the next two signs), training
cost or parameter, or a root-mean-square parameter growth above ``max_growth`` in the epoch
(values below 1 count as 1). Such a model is marked
diverged at that epoch and frozen at its last good parameters (the end of the previous
epoch, as ``DivergenceError.last_finite``); the others go on and nothing raises. A model
whose training cost reaches ``target_cost`` stops there too (frozen at that epoch's
parameters). Frozen models still ride along in the compiled program (the grid's shape is
fixed), their new values are discarded.

**Devices.** The model axis is split over a one-axis device mesh named ``"model"`` with
``jax.shard_map``: each device trains its own slice of the models, with the data replicated
(resident once on each device, never once per model) and no communication between devices.
When ``K`` is not a multiple of the device count, the grid is padded with copies of its last
model, trained and dropped.

**Widths.** Models of different layer sizes cannot stack into one array. Sweep widths with one
``sweep`` call per width (each compiles once): padding every model to the widest layer would
make the narrow models cost as much as the wide one, and a padded hidden neuron is not inert
under a bias and a sigmoid (``sigma(0 + b) != 0``), so padded models would need masks in every
cost, optimizer and initialiser to stay equal to their unpadded selves.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gd_jax._src.costs import Cost
from gd_jax._src.data.dataset import Dataset
from gd_jax._src.epoch import TrainState, make_epoch, shuffled_order
from gd_jax._src.model import combine_params, partition_params
from gd_jax._src.network import Params
from gd_jax._src.optim import GradientTransformation
from gd_jax._src.parallel import check_same_across_processes, fingerprint, is_peer_failure, peer_lost_error
from gd_jax._src.seeds import SEED_LIMIT, seed_keys
from gd_jax._src.train import (
    check_fit_arguments,
    cost_and_accuracy,
    default_predict_fn,
    infer_n_classes,
    root_mean_square,
)

__all__ = [
    "SHUFFLE_MODES",
    "SweepEpochEnd",
    "SweepResult",
    "grid_points",
    "make_sweep_epoch",
    "seed_keys",
    "sweep",
]

SHUFFLE_MODES = ("per_model", "shared")
MODEL_AXIS = "model"  # the one axis of a sweep's device mesh
Hyper = dict[str, jax.Array]
_RESERVED = ("model", "seed", "epoch", "train_cost", "train_accuracy", "eval_cost", "eval_accuracy", "status")
_METRICS = ("train_cost", "train_accuracy", "eval_cost", "eval_accuracy")


def grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """The cartesian product of ``grid``'s value lists, the last name varying fastest.

    Examples:
      >>> gd.grid_points({"learning_rate": [0.1, 1.0], "lmbda": [0.0, 5.0]})
      [{'learning_rate': 0.1, 'lmbda': 0.0}, {'learning_rate': 0.1, 'lmbda': 5.0},
       {'learning_rate': 1.0, 'lmbda': 0.0}, {'learning_rate': 1.0, 'lmbda': 5.0}]
    """
    _check_grid(grid)
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(list(grid[n]) for n in names))]


def _check_grid(grid: Mapping[str, Sequence[float]]) -> None:
    if not isinstance(grid, Mapping):
        raise ValueError(f"grid must be a dict of name -> list of numbers, got {type(grid).__name__}; "
                         "e.g. grid={'learning_rate': [0.1, 1.0, 3.0]}")
    for name, values in grid.items():
        if not isinstance(name, str) or not name.isidentifier() or name in _RESERVED:
            raise ValueError(f"grid name {name!r} is not allowed; use a Python identifier other than "
                             f"{', '.join(_RESERVED)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"grid[{name!r}] must be a non-empty list of numbers, got {values!r}")
        for v in values:
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"grid[{name!r}] holds {v!r}, not a finite number; sweep finite numbers only")
        if len(set(values)) != len(values):
            raise ValueError(f"grid[{name!r}] repeats a value: {list(values)}; list each value once")


def _check_seeds(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (a count) or a list of seeds, got {seeds}; e.g. seeds=5")
        return list(range(int(seeds)))
    if isinstance(seeds, Sequence) and len(seeds) > 0 and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and 0 <= s < SEED_LIMIT for s in seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeats a seed: {list(seeds)}; list each seed once")
        return [int(s) for s in seeds]
    raise ValueError(f"seeds must be a count >= 1 or a list of distinct integers from 0 to 2**64 - 1, got {seeds!r}")


def model_axes(params: Params, opt_state: Any = None, *, shuffle: str = "shared") -> tuple[Any, Any]:
    """Where the model axis goes in each stacked leaf: the layout the compiled sweep wants.

    With one shared batch order the first layer of all ``K`` models is one wide product
    ``x (b, n_0) @ W (n_0, K n_1)``; stacking gd_jax's first-layer weights as ``(n_0, K, n_1)``
    (model axis 1) makes ``W`` a free reshape of the stacked array and its gradient land in
    that layout too, where the model-major ``(K, n_0, n_1)`` costs a transposing copy of all
    the weights every step. Every other leaf (and every leaf of other parameter layouts, and
    with per-model orders, whose products are ``K`` separate ones) takes axis 0.

    Args:
      params: one model's parameters.
      opt_state: one model's optimizer state (or its ``jax.eval_shape``); its leaves shaped
        like the first-layer weights follow them.
      shuffle: the batch order mode.

    Returns:
      ``(param_axes, state_axes)``: pytrees of ints shaped like ``params`` and ``opt_state``.
    """
    param_axes = jax.tree.map(lambda leaf: 0, params)
    wide_shape = None
    if (shuffle == "shared" and isinstance(params, list) and params and isinstance(params[0], dict)
            and getattr(params[0].get("w"), "ndim", 0) == 2):
        param_axes[0] = dict(param_axes[0], w=1)
        wide_shape = tuple(params[0]["w"].shape)
    state_axes = jax.tree.map(lambda leaf: 1 if tuple(leaf.shape) == wide_shape else 0, opt_state)
    return param_axes, state_axes


def _axis_spec(axis: int) -> P:
    return P(*([None] * axis), MODEL_AXIS)


def _to_axes(tree: Any, axes: Any) -> Any:
    """Leading model axis -> each leaf's model axis."""
    return jax.tree.map(lambda leaf, axis: jnp.moveaxis(leaf, 0, axis), tree, axes)


def _from_axes(tree: Any, axes: Any) -> Any:
    """Each leaf's model axis -> leading model axis."""
    return jax.tree.map(lambda leaf, axis: jnp.moveaxis(leaf, axis, 0), tree, axes)


def make_sweep_epoch(
    make_cost: Callable[[Hyper], Cost],
    make_optimizer: Callable[[Hyper], GradientTransformation],
    *,
    batch_size: int,
    n_classes: int,
    shuffle: str = "per_model",
    param_axes: Any = 0,
    state_axes: Any = 0,
) -> Callable[[TrainState, Hyper, jax.Array, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """``gd.make_epoch`` for ``K`` stacked models: pure and jittable, one compile for all.

    With ``shuffle="per_model"`` it is ``jax.vmap`` of ``make_epoch`` over the models and
    their orders. With ``"shared"`` it is ``make_epoch`` itself, run once on the stacked
    models as one: the cost ``C(P) = sum_k C_k(P_k)`` (each model's cost, vmapped; its
    gradient with respect to ``P_k`` is ``grad C_k``, as the models share no parameter) and
    the optimizer each model's own, vmapped. The scan then carries the stacked state in the
    layout ``param_axes`` gives (see ``model_axes``) instead of the model-major one that
    ``vmap`` of a scan imposes on its carry.

    Args:
      make_cost: ``make_cost(h) -> cost``, where ``h`` maps each hyperparameter name to one
        model's value as a scalar array.
      make_optimizer: ``make_optimizer(h) -> GradientTransformation``.
      batch_size, n_classes: as for ``gd.make_epoch``.
      shuffle: ``"per_model"`` (``orders`` is ``(K, n)``) or ``"shared"`` (``orders`` is ``(n,)``).
      param_axes, state_axes: the model axis of each leaf of the parameters and of the
        optimizer state (an int for all, or pytrees of ints; see ``model_axes``).

    Returns:
      ``epoch(states, hyper, x, y, orders) -> (states, finite)``: ``states`` a ``TrainState``
      whose leaves are stacked along their model axes, ``hyper`` a dict of ``(K,)`` arrays,
      ``finite`` a ``(K,)`` bool array: every mini-batch cost of that model finite
      (``"per_model"``), or of all the models together (``"shared"``).
    """
    if shuffle not in SHUFFLE_MODES:
        raise ValueError(f"shuffle must be one of {', '.join(SHUFFLE_MODES)}, got {shuffle!r}")
    state_in = TrainState(param_axes, state_axes)

    if shuffle == "per_model":
        def one_model(state: TrainState, hyper: Hyper, x: jax.Array, y: jax.Array, order: jax.Array):
            epoch = make_epoch(make_cost(hyper), make_optimizer(hyper), batch_size=batch_size, n_classes=n_classes)
            return epoch(state, x, y, order)

        return jax.vmap(one_model, in_axes=(state_in, 0, None, None, 0), out_axes=(state_in, 0))

    def epoch(states: TrainState, hyper: Hyper, x: jax.Array, y: jax.Array, order: jax.Array):
        def cost(stacked: Params, xb: jax.Array, yb: jax.Array) -> jax.Array:
            costs = jax.vmap(lambda p, h: make_cost(h)(p, xb, yb), in_axes=(param_axes, 0))(stacked, hyper)
            return jnp.sum(costs)

        def init(stacked: Params) -> Any:
            return jax.vmap(lambda p, h: make_optimizer(h).init(p), in_axes=(param_axes, 0),
                            out_axes=state_axes)(stacked, hyper)

        def update(grads: Params, opt_state: Any, stacked: Params | None = None) -> tuple[Params, Any]:
            return jax.vmap(lambda g, s, p, h: make_optimizer(h).update(g, s, p),
                            in_axes=(param_axes, state_axes, param_axes, 0),
                            out_axes=(param_axes, state_axes))(grads, opt_state, stacked, hyper)

        k = jax.tree.leaves(jax.tree.map(lambda leaf, axis: leaf.shape[axis], states.params, param_axes))[0] \
            if not isinstance(param_axes, int) else jax.tree.leaves(states.params)[0].shape[param_axes]
        new, finite = make_epoch(cost, GradientTransformation(init, update), batch_size=batch_size,
                                 n_classes=n_classes)(states, x, y, order)
        return new, jnp.broadcast_to(finite, (k,))

    return epoch


class SweepEpochEnd(NamedTuple):
    """What ``sweep`` hands to its ``on_epoch_end`` callback after each epoch."""

    epoch: int  # 1-based: epochs done
    result: SweepResult  # the live result (its params and records are those after this epoch)


@dataclasses.dataclass
class SweepResult:
    """The models of a sweep, stacked, with a tidy per-model, per-epoch table.

    Attributes:
      params: the parameters of all models, each leaf with a leading model axis ``K``.
      opt_state: the optimizer states, stacked the same way.
      models: one dict per model, in model order: ``model`` (its index), ``seed``, one entry
        per grid name, ``stop_reason`` (``"epochs"``, ``"diverged"``, ``"target_cost"``),
        ``stop_epoch`` (the 1-based epoch where it stopped, None if it trained them all)
        and ``message`` (why, or None).
      records: one dict per model and finished epoch: ``model``, ``seed``, the grid names,
        ``epoch``, ``train_cost``, ``train_accuracy``, ``eval_cost``, ``eval_accuracy``
        (None without eval data) and ``status`` (``"ok"``, ``"target_cost"`` or
        ``"diverged"``; a diverged record holds the measurements of the parameters that
        were discarded).
      grid: the swept values, name -> list.
      seeds: the seeds.
      shuffle: the batch order mode.
      epoch_seconds: training time of each epoch of the sweep, all models together
        (compilation excluded).
      compile_seconds: compile time of the sweep's program in this call.
      memory: the compiled program's memory in bytes: ``argument``, ``output``, ``temp``
        and ``peak`` (their sum less the aliased bytes), per device.
      static: for a framework model (an Equinox module, Flax variables, ...), everything but its
        parameters (``gd.partition_params``), shared by all the models; ``params`` then holds the
        parameters alone and ``model_params(i)`` the whole model. None for gd_jax's MLP.
    """

    params: Params
    opt_state: Any
    models: list[dict[str, Any]]
    records: list[dict[str, Any]]
    grid: dict[str, list[float]]
    seeds: list[int]
    shuffle: str
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    compile_seconds: float = 0.0
    memory: dict[str, int] = dataclasses.field(default_factory=dict)
    static: Any = None

    def __len__(self) -> int:
        return len(self.models)

    @property
    def epochs_done(self) -> int:
        return len(self.epoch_seconds)

    def coords(self, model: int) -> dict[str, Any]:
        """The grid point and seed of ``model``, e.g. ``{"learning_rate": 3.0, "seed": 1}``."""
        return {**{name: self.models[model][name] for name in self.grid}, "seed": self.models[model]["seed"]}

    def model_params(self, model: int) -> Params:
        """One model: its slice of the stacked ``params`` (with ``static`` put back around it, for a
        framework model: the model as ``init`` made it, trained)."""
        return combine_params(jax.tree.map(lambda leaf: leaf[model], self.params), self.static)

    def select(self, **where: Any) -> list[int]:
        """The indices of the models whose coordinates match, e.g. ``select(learning_rate=3.0)``.

        A value may be a list, matching any of its entries; ``seed`` may be given like a grid name.
        """
        for name in where:
            if name not in self.grid and name != "seed":
                raise ValueError(f"select() got {name!r}, which is not a grid name; "
                                 f"choose from {', '.join([*self.grid, 'seed'])}")

        def matches(model: dict[str, Any]) -> bool:
            for name, wanted in where.items():
                options = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
                if model[name] not in options:
                    return False
            return True

        return [m["model"] for m in self.models if matches(m)]

    def final(self, metric: str = "eval_accuracy") -> list[float | None]:
        """Each model's ``metric`` at its last good epoch (None if it has none)."""
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {', '.join(_METRICS)}, got {metric!r}")
        last: dict[int, Any] = {}
        for record in self.records:
            if record["status"] != "diverged":
                last[record["model"]] = record[metric]
        return [last.get(m) for m in range(len(self.models))]

    def summary(self, metric: str = "eval_accuracy") -> list[dict[str, Any]]:
        """One row per grid point: its values, and ``mean``, ``std``, ``min``, ``max`` of ``metric``
        over its seeds at their last good epoch, ``n`` (seeds with a value) and ``diverged``
        (seeds that diverged; their last good epoch still counts)."""
        finals = self.final(metric)
        rows = []
        for point in grid_points(self.grid) if self.grid else [{}]:
            members = [m for m in self.models if all(m[k] == v for k, v in point.items())]
            values = np.array([finals[m["model"]] for m in members if finals[m["model"]] is not None], float)
            stats = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                     "max": float(values.max())} if values.size else dict.fromkeys(("mean", "std", "min", "max"))
            rows.append({**point, **stats, "n": int(values.size),
                         "diverged": sum(m["stop_reason"] == "diverged" for m in members)})
        return rows

    def best(self, metric: str = "eval_accuracy", *, maximize: bool | None = None) -> dict[str, Any]:
        """The grid point with the best mean of ``metric`` over its seeds (see ``summary``).

        Costs are minimised and accuracies maximised unless ``maximize`` says otherwise;
        points where a seed diverged rank last.
        """
        maximize = not metric.endswith("cost") if maximize is None else maximize
        rows = [r for r in self.summary(metric) if r["mean"] is not None]
        if not rows:
            raise ValueError(f"no model has a value of {metric!r}; pass eval_data to sweep() for eval metrics")
        sign = 1.0 if maximize else -1.0
        return max(rows, key=lambda r: (r["diverged"] == 0, sign * r["mean"]))

    def to_dict(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-ready (non-finite numbers become None)."""
        return _json_safe({"grid": self.grid, "seeds": self.seeds, "shuffle": self.shuffle, "models": self.models,
                           "records": self.records, "epoch_seconds": self.epoch_seconds,
                           "compile_seconds": self.compile_seconds, "memory": self.memory})

    def to_json(self, path: str | None = None) -> str:
        """``to_dict`` as JSON text, also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def to_csv(self, path: str | None = None) -> str:
        """The records as CSV text (one row per model and epoch), also written to ``path`` when given."""
        columns = ["model", "seed", *self.grid, "epoch", *_METRICS, "status"]
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        for record in self.records:
            writer.writerow({c: "" if record[c] is None else record[c] for c in columns})
        if path is not None:
            with open(path, "w") as f:
                f.write(out.getvalue())
        return out.getvalue()


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _take(tree: Any, index: np.ndarray) -> Any:
    return jax.tree.map(lambda leaf: leaf[index], tree)


def sweep(init: Callable[[jax.Array], Params], train: Dataset, *, grid: Mapping[str, Sequence[float]],
          make_optimizer: Callable[[Hyper], GradientTransformation], epochs: int, batch_size: int,
          seeds: int | Sequence[int] = 1, cost: Cost | None = None, make_cost: Callable[[Hyper], Cost] | None = None,
          eval_data: Dataset | None = None, shuffle: str = "per_model",
          predict_fn: Callable[[Params, jax.Array], jax.Array] | None = None, n_classes: int | None = None,
          activation: str = "sigmoid", target_cost: float | None = None, max_growth: float | None = 10.0,
          devices: Sequence[jax.Device] | None = None, mesh: Mesh | None = None, resume: SweepResult | None = None,
          on_epoch_end: Callable[[SweepEpochEnd], None] | None = None) -> SweepResult:
    """Trains every model of a hyperparameter grid times seeds, as one compiled program.

    Args:
      init: ``init(key) -> params``, e.g. ``functools.partial(gd.init_mlp, sizes=[784, 30, 10])``.
      train: the training ``Dataset``, resident once on each device whatever the grid's size.
      grid: name -> list of numbers; the sweep trains their product (``grid_points``); ``{}``: seeds only.
      make_optimizer: ``make_optimizer(h) -> optimizer``, ``h`` each grid name's value for one model as
        a traced float32 scalar (arithmetic, not Python ``if``), e.g. ``lambda h: gd.sgd(h["learning_rate"])``.
      epochs, batch_size: as for ``fit`` (``epochs`` the total: a resumed sweep counts those done).
      seeds: a count ``N`` (seeds ``0 .. N-1``) or a list of seeds; see ``seed_keys``.
      cost, make_cost: one of them: the cost, or ``make_cost(h) -> cost`` (an L2 term weighted by ``h["lmbda"]``).
      eval_data: a ``Dataset`` to measure cost and accuracy on after each epoch.
      shuffle: ``"per_model"`` or ``"shared"`` (see the module docstring).
      predict_fn, n_classes, activation, target_cost, max_growth: as for ``fit``, for every model.
      devices, mesh: where the models go (default all of ``jax.devices()``: in a multi-process run every
        device of every process); a mesh's devices are flattened into the model axis. Across processes
        (``jax.distributed``) every process calls ``sweep`` alike, feeds its own devices, gets the whole result.
      resume: a ``SweepResult`` of the same grid, seeds and mode to continue (to ``epochs``).
      on_epoch_end: called with a ``SweepEpochEnd`` after each epoch (checkpoints, progress).

    Returns:
      A ``SweepResult``; model ``i`` has the coordinates ``result.models[i]`` (grid points in
      ``grid_points(grid)`` order, seeds varying fastest).

    Raises:
      ValueError: a bad grid, seed list, mode or argument (the message names the fix).
      PeerLostError: in a multi-process sweep, another process died or hung.
    """
    _check_grid(grid)
    seed_list, make_cost = _check_seeds(seeds), _cost_factory(shuffle, cost, make_cost)
    init_params = {s: init(seed_keys(s)[0]) for s in seed_list}
    first = init_params[seed_list[0]]
    # The same checks, defaults and measurements as fit, so that each model is fit's model.
    check_fit_arguments(first, train, eval_data=eval_data, epochs=epochs, batch_size=batch_size,
                        target_cost=target_cost, max_growth=max_growth, n_classes=n_classes)
    predict_fn = predict_fn or default_predict_fn(first, activation)
    n_classes = n_classes or infer_n_classes(first, train, eval_data)
    static, init_params, make_cost, predict_fn = _parameters_only(init_params, make_cost, predict_fn)
    result = _start_or_resume(resume, grid, seed_list, shuffle, init_params, epochs, make_optimizer, static)
    if result.epochs_done >= epochs or not _active(result).any():
        return result
    program = _Program.build(_model_mesh(mesh, devices), result, init_params[seed_list[0]], make_optimizer, shuffle,
                             train.size)
    body = _device_epoch(make_cost, make_optimizer, program.axes, batch_size=batch_size, n_classes=n_classes,
                         shuffle=shuffle, predict_fn=predict_fn, max_growth=max_growth, has_eval=eval_data is not None)
    state, hyper, data = program.place(result, train, eval_data)
    compiled = _compile(result, program, body, state, hyper, data)
    for epoch in range(result.epochs_done, epochs):
        active = _active(result)
        if not active.any():
            break
        start = time.perf_counter()
        state, metrics = program.run(compiled, state, hyper, active, data, program.orders(result, epoch))
        result.epoch_seconds.append(time.perf_counter() - start)
        unmeasured = {"train_accuracy": predict_fn is None, "eval_cost": eval_data is None,
                      "eval_accuracy": eval_data is None or predict_fn is None}
        for i in np.flatnonzero(active):
            _record(result, int(i), epoch + 1, metrics, unmeasured, target_cost, max_growth)
        result.params, result.opt_state = program.stacked(state)
        if on_epoch_end is not None:
            on_epoch_end(SweepEpochEnd(epoch + 1, result))
    return result


def _parameters_only(models: dict[int, Any], make_cost: Callable[[Hyper], Cost], predict_fn: Any,
                     ) -> tuple[Any, dict[int, Any], Callable[[Hyper], Cost], Any]:
    """A framework model's parameters (its inexact arrays, ``partition_params``) are what the sweep
    stacks and trains; the rest, shared by all the models, is put back around them for the cost and
    the predictions. A model that is all parameters (gd_jax's MLP) passes through unchanged."""
    static = partition_params(next(iter(models.values())))[1]
    if static is None:
        return None, models, make_cost, predict_fn
    params = {s: partition_params(m)[0] for s, m in models.items()}

    def cost_of(hyper: Hyper) -> Cost:
        cost = make_cost(hyper)
        return lambda p, x, y: cost(combine_params(p, static), x, y)

    predict = None if predict_fn is None else (lambda p, x: predict_fn(combine_params(p, static), x))
    return static, params, cost_of, predict


def _cost_factory(shuffle: str, cost: Cost | None, make_cost: Callable[[Hyper], Cost] | None,
                  ) -> Callable[[Hyper], Cost]:
    if shuffle not in SHUFFLE_MODES:
        raise ValueError(f"shuffle must be one of {', '.join(SHUFFLE_MODES)}, got {shuffle!r}")
    if (cost is None) == (make_cost is None):
        raise ValueError("pass exactly one of cost= (a fixed cost) and make_cost= (a factory of the hyperparameters)")
    if make_cost is not None:
        return make_cost

    def same_cost(hyper: Hyper) -> Cost:
        del hyper  # the same cost for every model
        return cost  # type: ignore[return-value]

    return same_cost


def _start_or_resume(resume: SweepResult | None, grid: Mapping[str, Sequence[float]], seed_list: list[int],
                     shuffle: str, init_params: dict[int, Params], epochs: int,
                     make_optimizer: Callable[[Hyper], GradientTransformation], static: Any) -> SweepResult:
    """The sweep's starting result: a copy of ``resume`` (checked to be this sweep), or fresh models,
    each with its optimizer state from its own factory call (``static``: see ``SweepResult``)."""
    result = _resumed(resume, grid, seed_list, shuffle, epochs) if resume is not None else None
    if result is None:
        pairs = list(itertools.product(grid_points(grid), seed_list))
        models = [{"model": i, "seed": s, **point, "stop_reason": "epochs", "stop_epoch": None, "message": None}
                  for i, (point, s) in enumerate(pairs)]
        params = _stack([jax.tree.map(jnp.asarray, init_params[s]) for _, s in pairs])
        result = SweepResult(params=params, opt_state=None, models=models, records=[],
                             grid={name: list(values) for name, values in grid.items()}, seeds=seed_list,
                             shuffle=shuffle)
    if result.opt_state is None:
        hyper = {name: jnp.asarray([m[name] for m in result.models], jnp.float32) for name in result.grid}
        result.opt_state = jax.vmap(lambda p, h: make_optimizer(h).init(p))(result.params, hyper)
    result.static = static
    return result


def _resumed(resume: SweepResult, grid: Mapping[str, Sequence[float]], seed_list: list[int], shuffle: str,
             epochs: int) -> SweepResult:
    grid = {name: list(values) for name, values in grid.items()}
    if (resume.grid, resume.seeds, resume.shuffle) != (grid, seed_list, shuffle):
        raise ValueError(
            f"resume holds a sweep of grid {resume.grid}, seeds {resume.seeds}, shuffle {resume.shuffle!r}, "
            f"not grid {grid}, seeds {seed_list}, shuffle {shuffle!r}; resume with the settings that made it")
    if epochs < resume.epochs_done:
        raise ValueError(f"epochs={epochs} is fewer than the {resume.epochs_done} epochs the sweep has done; "
                         f"pass epochs={resume.epochs_done} or more")
    return dataclasses.replace(resume, models=[dict(m) for m in resume.models],
                               records=[dict(r) for r in resume.records],
                               epoch_seconds=list(resume.epoch_seconds), compile_seconds=0.0)


def _active(result: SweepResult) -> np.ndarray:
    """Which models still train (neither diverged nor at their target cost)."""
    return np.array([m["stop_reason"] == "epochs" for m in result.models])


def _model_mesh(mesh: Mesh | None, devices: Sequence[jax.Device] | None) -> Mesh:
    """The one-axis ``"model"`` mesh of ``mesh``'s devices (flattened), or of ``devices``."""
    if mesh is not None and devices is not None:
        raise ValueError("pass mesh= or devices=, not both; a mesh already names its devices")
    if mesh is not None:
        return Mesh(np.asarray(mesh.devices).reshape(-1), (MODEL_AXIS,))
    return Mesh(np.array(list(jax.devices() if devices is None else devices)), (MODEL_AXIS,))


def _global(value: Any, sharding: NamedSharding) -> jax.Array:
    """A global array from a host value every process holds whole: each process feeds its own devices."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _host(tree: Any) -> Any:
    """The whole of each (sharded, perhaps over several processes) array, as numpy on this process."""
    if jax.process_count() == 1:
        return tree
    return multihost_utils.process_allgather(tree, tiled=True)


@dataclasses.dataclass
class _Program:
    """Where a sweep's models live: the mesh, each leaf's model axis, the padding to whole devices."""

    mesh: Mesh
    axes: TrainState
    pad: np.ndarray  # the model held in each slot of the padded model axis
    k: int
    shuffle: str
    n: int  # training examples

    @classmethod
    def build(cls, mesh: Mesh, result: SweepResult, first: Params, make_optimizer: Callable[[Hyper], Any],
              shuffle: str, n: int) -> _Program:
        k, size = len(result), mesh.devices.size
        k_pad = -(-k // size) * size  # the grid padded with copies of its last model, trained and dropped
        pad = np.concatenate([np.arange(k), np.full(k_pad - k, k - 1)]).astype(np.int32)
        hyper0 = {name: jnp.float32(result.models[0][name]) for name in result.grid}
        axes = TrainState(*model_axes(first, jax.eval_shape(make_optimizer(hyper0).init, first), shuffle=shuffle))
        return cls(mesh, axes, pad, k, shuffle, n)

    def sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    def place(self, result: SweepResult, train: Dataset, eval_data: Dataset | None) -> tuple[Any, Any, Any]:
        """The state, hyperparameters and data on the mesh, each process feeding its own devices."""
        hyper = {name: np.array([m[name] for m in result.models], np.float32) for name in result.grid}
        state = TrainState(result.params, result.opt_state)
        check_same_across_processes(  # each process feeds its own devices: they must hold the same sweep
            "the sweep's data or starting state", fingerprint(train.x, train.y, *jax.tree.leaves(jax.device_get(
                state)), *(() if eval_data is None else (eval_data.x, eval_data.y))),
            "every process must load the same data with the same settings, and resume from the same sweep folder")
        return self.place_state(result), self.by_model(hyper), self.data(train, eval_data)

    def by_model(self, tree: Any) -> Any:
        """Per-model host values (length ``K``), padded and split over the devices."""
        return jax.tree.map(lambda v: _global(np.asarray(v)[self.pad], self.sharding(P(MODEL_AXIS))), tree)

    def place_state(self, result: SweepResult) -> TrainState:
        host = jax.tree.map(lambda leaf: np.asarray(leaf)[self.pad], TrainState(result.params, result.opt_state))
        moved = jax.tree.map(lambda leaf, axis: np.moveaxis(leaf, 0, axis), host, self.axes)
        return jax.tree.map(lambda leaf, axis: _global(leaf, self.sharding(_axis_spec(axis))), moved, self.axes)

    def data(self, train: Dataset, eval_data: Dataset | None) -> tuple[jax.Array, ...]:
        replicated = self.sharding(P())
        x, y = _global(train.x, replicated), _global(train.y, replicated)
        if eval_data is None:
            return x, y, _global(np.asarray(train.x)[:0], replicated), _global(np.asarray(train.y)[:0], replicated)
        return x, y, _global(eval_data.x, replicated), _global(eval_data.y, replicated)

    def orders(self, result: SweepResult, epoch: int) -> jax.Array:
        """Epoch ``epoch``'s batch orders: each model's own (``per_model``) or the first seed's."""
        if self.shuffle == "shared":
            key = seed_keys(result.seeds[0])[1]
            return _global(shuffled_order(jax.random.fold_in(key, epoch), self.n), self.sharding(P()))
        keys = [seed_keys(result.models[i]["seed"])[1] for i in self.pad]
        return _global(np.stack([shuffled_order(jax.random.fold_in(key, epoch), self.n) for key in keys]),
                       self.sharding(P(MODEL_AXIS)))

    def run(self, compiled: Any, state: TrainState, hyper: Any, active: np.ndarray, data: tuple[jax.Array, ...],
            orders: jax.Array) -> tuple[TrainState, dict[str, np.ndarray]]:
        """One epoch of the compiled program; the metrics of every model, on every process."""
        x, y, ex, ey = data
        active = self.by_model(active)
        try:
            state, metrics = jax.block_until_ready(compiled(state, hyper, active, x, y, orders, ex, ey))
            return state, {name: np.asarray(value)[:self.k] for name, value in _host(metrics).items()}
        except Exception as e:  # a collective that failed because a peer died: one line
            if is_peer_failure(e):
                raise peer_lost_error(e) from e
            raise

    def stacked(self, state: TrainState) -> tuple[Params, Any]:
        """The unpadded ``(params, opt_state)``, model axis first (gathered from every process)."""
        try:
            state = _host(state)
        except Exception as e:
            if is_peer_failure(e):
                raise peer_lost_error(e) from e
            raise
        state = jax.tree.map(lambda leaf, axis: jnp.moveaxis(leaf, axis, 0), state, self.axes)
        return tuple(state if len(self.pad) == self.k else _take(state, np.arange(self.k)))


def _device_epoch(make_cost: Callable[[Hyper], Cost], make_optimizer: Callable[[Hyper], GradientTransformation],
                  axes: TrainState, *, batch_size: int, n_classes: int, shuffle: str, predict_fn: Any,
                  max_growth: float | None, has_eval: bool) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """One device's slice of the models: train an epoch, measure it, freeze what must stop.

    """
    epoch_fn = make_sweep_epoch(make_cost, make_optimizer, batch_size=batch_size, n_classes=n_classes,
                                shuffle=shuffle, param_axes=axes.params, state_axes=axes.opt_state)

    def measure(params: Params, h: Hyper, xs: jax.Array, ys: jax.Array) -> tuple[jax.Array, jax.Array]:
        return cost_and_accuracy(params, xs, ys, cost=make_cost(h), predict_fn=predict_fn, n_classes=n_classes)

    def all_finite(params: Params) -> jax.Array:
        return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))

    def sweep_epoch(state, hyper, active, x, y, orders, ex, ey):  # the compiled program's name
        new, finite = epoch_fn(state, hyper, x, y, orders)
        per_model = jax.vmap(measure, in_axes=(axes.params, 0, None, None))
        train_cost, train_acc = per_model(new.params, hyper, x, y)
        if has_eval:
            eval_cost, eval_acc = per_model(new.params, hyper, ex, ey)
        else:
            eval_cost = eval_acc = jnp.full_like(train_cost, jnp.nan)
        rms = jax.vmap(root_mean_square, in_axes=(axes.params,))
        growth = rms(new.params) / jnp.maximum(rms(state.params), 1.0)
        # With a shared order `finite` is all the models' flag together: one model's NaN must
        # not stop the others, so there each model answers for itself through its parameters
        # and training cost (a non-finite mini-batch cost leaves NaN parameters behind).
        params_finite = jax.vmap(all_finite, in_axes=(axes.params,))(new.params)
        ok = jnp.isfinite(train_cost) & jnp.isfinite(growth) & params_finite
        diverged = ~(ok & finite) if shuffle == "per_model" else ~ok
        if max_growth is not None:
            diverged |= growth > max_growth
        keep = active & ~diverged

        def choose(new_leaf: jax.Array, old_leaf: jax.Array, axis: int) -> jax.Array:
            mask = keep.reshape([-1 if d == axis else 1 for d in range(new_leaf.ndim)])
            return jnp.where(mask, new_leaf, old_leaf)

        state = jax.tree.map(choose, new, state, axes)
        metrics = {"train_cost": train_cost, "train_accuracy": train_acc, "eval_cost": eval_cost,
                   "eval_accuracy": eval_acc, "growth": growth, "params_finite": params_finite, "diverged": diverged}
        return state, metrics

    return sweep_epoch


def _compile(result: SweepResult, program: _Program, body: Callable[..., Any], state: TrainState, hyper: Any,
             data: tuple[jax.Array, ...]) -> Any:
    """The sweep's epoch compiled once for its mesh; its compile time and memory go into ``result``."""
    state_specs = jax.tree.map(_axis_spec, program.axes)
    order_spec = P(MODEL_AXIS) if program.shuffle == "per_model" else P()
    by_model = P(MODEL_AXIS)
    jitted = jax.jit(jax.shard_map(
        body, mesh=program.mesh, in_specs=(state_specs, by_model, by_model, P(), P(), order_spec, P(), P()),
        out_specs=(state_specs, P(MODEL_AXIS))))
    active = program.by_model(_active(result))
    start = time.perf_counter()
    compiled = jitted.lower(state, hyper, active, *data[:2], program.orders(result, result.epochs_done),
                            *data[2:]).compile()
    if jax.process_count() > 1:  # the gathers of each epoch's state and measurements compile here too
        program.stacked(state)
        _host(program.by_model({"float": np.zeros(program.k, np.float32), "bool": np.zeros(program.k, bool)}))
    result.compile_seconds = time.perf_counter() - start
    result.memory = _memory(compiled)
    return compiled


def _record(result: SweepResult, i: int, epoch: int, metrics: dict[str, np.ndarray], unmeasured: dict[str, bool],
            target_cost: float | None, max_growth: float | None) -> None:
    """Appends model ``i``'s record of ``epoch`` and updates its stop status."""
    model = result.models[i]
    values: dict[str, float | None] = {name: float(metrics[name][i]) for name in _METRICS}
    for name, missing in unmeasured.items():
        if missing:  # no eval data, or no predict_fn for accuracy
            values[name] = None
    status = "ok"
    if metrics["diverged"][i]:
        status = "diverged"
        growth, cost = float(metrics["growth"][i]), float(metrics["train_cost"][i])
        if not metrics["params_finite"][i]:
            why = f"the parameters became NaN or infinite in epoch {epoch}"
        elif not math.isfinite(growth):
            why = f"the parameters grew past float32's range in epoch {epoch} (training cost {cost:.4g})"
        elif not math.isfinite(cost) or max_growth is None or growth <= max_growth:
            why = f"the cost became NaN or infinite in epoch {epoch} (training cost {cost})"
        else:
            why = (f"the parameters grew {growth:.3g}x in epoch {epoch} (more than max_growth={max_growth}), "
                   f"saturating the network (training cost {cost:.4g})")
        model.update(stop_reason="diverged", stop_epoch=epoch,
                     message=f"{why}; frozen at epoch {epoch - 1}; the learning rate is probably too large")
    elif target_cost is not None and float(metrics["train_cost"][i]) <= target_cost:
        status = "target_cost"
        model.update(stop_reason="target_cost", stop_epoch=epoch,
                     message=f"the training cost {values['train_cost']:.4g} reached target_cost={target_cost}")
    result.records.append({"model": i, "seed": model["seed"], **{name: model[name] for name in result.grid},
                           "epoch": epoch, **values, "status": status})


def _memory(compiled: Any) -> dict[str, int]:
    """The compiled program's memory per device, where the backend reports it."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    if stats is None:
        return {}
    argument, output = int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes)
    temp, alias = int(stats.temp_size_in_bytes), int(stats.alias_size_in_bytes)
    return {"argument": argument, "output": output, "temp": temp, "peak": argument + output + temp - alias}
