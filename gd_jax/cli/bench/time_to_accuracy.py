"""Time to accuracy: wall seconds from start until the validation accuracy first reaches a target.

gd_jax's ``fit`` (compilation included, and reported apart), PyTorch and vectorized numpy (in
its own process with its own BLAS kernel, as in the epoch benchmark), from the same initial
parameters in the same batch orders; each is evaluated after every epoch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from gd_jax._src.costs import COSTS
from gd_jax._src.epoch import shuffled_order
from gd_jax._src.network import init_mlp
from gd_jax._src.optim import sgd
from gd_jax._src.train import EpochEnd, fit
from gd_jax.cli.bench.config import BenchConfig
from gd_jax.cli.bench.numpy_worker import NumpyWorker, accuracy
from gd_jax.cli.bench.variants import BUILDERS, Problem, Skipped, to_numpy

__all__ = ["measure_time_to_accuracy"]

Curve = list[tuple[float, float]]  # (wall seconds since the start, accuracy) after each epoch


class _Reached(Exception):
    """Stops ``fit`` from its epoch callback once the target accuracy is reached."""


def _record(curve: Curve, target: float, compile_seconds: float | None) -> dict[str, Any]:
    reached = next((i for i, (_, acc) in enumerate(curve) if acc >= target), None)
    return {"status": "ok", "reached": reached is not None,
            "epochs": None if reached is None else reached + 1,
            "seconds": None if reached is None else curve[reached][0],
            "compile_seconds": compile_seconds,
            "accuracy": [acc for _, acc in curve], "wall_seconds": [t for t, _ in curve]}


def _gd_jax(config: BenchConfig, params, train, val, order_key, target: float) -> dict[str, Any]:
    """``fit`` itself, stopped from its callback once the target is reached."""
    curve: Curve = []
    compile_seconds: list[float] = []
    start = time.perf_counter()

    def on_epoch_end(end: EpochEnd) -> None:
        curve.append((time.perf_counter() - start, end.history.epochs[-1]["eval_accuracy"]))
        compile_seconds[:] = [end.history.compile_seconds]  # fit compiled ahead of its first epoch
        if curve[-1][1] >= target:
            raise _Reached

    with contextlib.suppress(_Reached):
        fit(params, train, eval_data=val, epochs=config.max_epochs, batch_size=config.tta_batch_size,
            optimizer=sgd(config.learning_rate), cost=COSTS[config.cost], key=order_key, on_epoch_end=on_epoch_end)
    return _record(curve, target, compile_seconds[0] if compile_seconds else None)


def _epochs_until(epoch: Callable[[Any, np.ndarray], tuple[Any, float]], params, orders, target: float) -> Curve:
    """Runs ``epoch(params, order) -> (params, accuracy)`` over ``orders`` until the target is reached."""
    curve: Curve = []
    start = time.perf_counter()
    for order in orders:
        params, acc = epoch(params, order)
        curve.append((time.perf_counter() - start, acc))
        if acc >= target:
            break
    return curve


def _numpy(config: BenchConfig, worker: NumpyWorker, params, x, y, val, orders, target: float) -> dict[str, Any]:
    worker.call("setup", name="time_to_accuracy", x=x, y=y, params=params, n_classes=config.sizes[-1],
                batch_size=config.tta_batch_size, eta=config.learning_rate, cost=config.cost)

    def epoch(p, order):
        out = worker.call("epoch", name="time_to_accuracy", params=p, order=order, eval=val)
        return out["params"], out["accuracy"]

    return _record(_epochs_until(epoch, params, orders, target), target, None)


def _torch(config: BenchConfig, device, params, x, y, val, orders, target: float) -> dict[str, Any]:
    """Through the same builder as the epoch benchmark (its thread count chosen the same way)."""
    problem = Problem(config, config.tta_batch_size, device, x, y, list(params), orders)
    try:
        runner = BUILDERS["torch"](problem)
    except Skipped as e:
        return {"status": "skipped", "reason": str(e)}

    def epoch(p, order):
        problem.params[:] = p  # the runner starts each epoch from problem.params
        p = runner.epoch(order)
        return p, accuracy([q["w"] for q in p], [q["b"] for q in p], *val)

    return {**_record(_epochs_until(epoch, params, orders, target), target, None), "note": runner.note}


def measure_time_to_accuracy(config: BenchConfig, device: jax.Device, load: Callable, worker: NumpyWorker,
                             log: Callable[[str], None]) -> dict[str, Any]:
    """Wall seconds from start until the evaluation accuracy first reaches the target, per library."""
    train, val, _ = load(config, validation=True)
    target = config.target_accuracy or (0.95 if config.dataset == "mnist" else 0.85)
    init_key, order_key = jax.random.split(jax.random.key(config.seed))
    params = to_numpy(init_mlp(init_key, list(config.sizes)))
    x, y = np.asarray(train.x, np.float32), np.asarray(train.y, np.int32)
    evaluation = (np.asarray(val.x, np.float32), np.asarray(val.y))
    out: dict[str, Any] = {"target": target, "dataset": config.dataset, "train_rows": train.size,
                           "eval_rows": val.size, "batch_size": config.tta_batch_size, "max_epochs": config.max_epochs,
                           "eval": "validation set, after every epoch",
                           "compile_cache": getattr(jax.config, "jax_compilation_cache_dir", None)}
    with jax.default_device(device):
        out["gd_jax"] = _gd_jax(config, params, train, val, order_key, target)
    log(f"  time to accuracy, gd_jax: {out['gd_jax']['seconds']} s")
    orders = [shuffled_order(jax.random.fold_in(order_key, e), train.size) for e in range(config.max_epochs)]
    out["vectorized_numpy"] = _numpy(config, worker, params, x, y, evaluation, orders, target)
    log(f"  time to accuracy, vectorized_numpy: {out['vectorized_numpy']['seconds']} s")
    out["torch"] = _torch(config, device, params, x, y, evaluation, orders, target)
    log(f"  time to accuracy, torch: {out['torch'].get('seconds')} s")
    return out
