"""Experiment 3: three modes of gradient descent, against epochs and against wall time.

The textbook network ([784, 30, 10], quadratic cost, N(0, 1) weights, seed 0) trained with
``gd.fit`` in each mode of gradient descent:

- **stochastic**: one example per step (batch 1), ``n`` steps an epoch;
- **mini-batch**: batches of 10 (the textbook's) and of 100;
- **full batch**: the whole training set per step, one step an epoch.

Each mode gets its own learning rate (a step on one example's gradient is ten times noisier than
on ten examples', and a full-batch step can be much larger), given in ``MODES``, and its own
number of epochs, chosen so that each mode runs for a comparable wall time. Training cost and
test accuracy are recorded after every epoch, with each epoch's training time
(``History.epochs[i]["seconds"]``: compilation and the end-of-epoch measurement excluded), so
the curves can be drawn against epochs (examples seen) and against wall time (what it costs).
One model per mode: a wall time is only meaningful for a model trained alone.

Writes ``results.md``, ``results.json`` and ``modes.png``.

Run: ``python experiments/modes.py --idx-dir ../shared/data/mnist-full``
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NamedTuple

import common
import numpy as np

import gd_jax as gd

SIZES = [784, 30, 10]
SEED = 0


class Mode(NamedTuple):
    name: str
    batch_size: int | None  # None: the whole training set
    learning_rate: float
    epochs: int
    quick_epochs: int


MODES = (
    Mode("stochastic (batch 1)", 1, 0.3, 3, 1),
    Mode("mini-batch 10", 10, 3.0, 10, 2),
    Mode("mini-batch 100", 100, 10.0, 30, 3),
    Mode("full batch", None, 10.0, 150, 10),
)


def run_mode(mode: Mode, data: common.Data, train: gd.Dataset, epochs: int) -> dict[str, Any]:
    init_key, shuffle_key = gd.seed_keys(SEED)
    batch_size = mode.batch_size or train.size
    record: dict[str, Any] = {"mode": mode.name, "batch_size": batch_size, "learning_rate": mode.learning_rate,
                              "epochs": epochs, "steps_per_epoch": -(-train.size // batch_size)}
    try:
        _, history = gd.fit(gd.init_mlp(init_key, SIZES), train, eval_data=data.test, epochs=epochs,
                            batch_size=batch_size, optimizer=gd.sgd(mode.learning_rate), cost=gd.quadratic_cost,
                            key=shuffle_key)
        record["diverged"] = None
    except gd.DivergenceError as e:
        history = e.history
        record["diverged"] = str(e)
    seconds = np.cumsum(history["seconds"])
    record |= {"test_accuracy": history["eval_accuracy"], "train_cost": history["train_cost"],
               "train_accuracy": history["train_accuracy"], "cumulative_seconds": seconds.tolist(),
               "seconds_per_epoch": float(np.median(history["seconds"])), "compile_seconds": history.compile_seconds,
               "final_test_accuracy": history["eval_accuracy"][-1], "peak_test_accuracy": max(history["eval_accuracy"]),
               "training_seconds": float(seconds[-1])}
    return record


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Experiment 3: three modes of gradient descent", "", *common.setup_lines(results["setup"]),
             f"[784, 30, 10], quadratic cost, N(0, 1) weights, seed {SEED}; one model per mode, trained alone with "
             "`gd.fit`. Seconds are training time (compilation and per-epoch measurements excluded) on a shared "
             "machine: compare ratios, not absolute values.", "",
             "| mode | batch | eta | steps / epoch | epochs | s / epoch (median) | training s | final test accuracy "
             "| peak test accuracy | final training cost |",
             "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["modes"]:
        lines.append(f"| {r['mode']} | {r['batch_size']:,} | {r['learning_rate']} | {r['steps_per_epoch']:,} | "
                     f"{len(r['test_accuracy'])} | {r['seconds_per_epoch']:.3f} | {r['training_seconds']:.1f} | "
                     f"{common.pct(r['final_test_accuracy'])} | {common.pct(r['peak_test_accuracy'])} | "
                     f"{r['train_cost'][-1]:.4f} |" + (f" diverged: {r['diverged']}" if r["diverged"] else ""))
    lines += ["", "## Accuracy reached within the same wall time", ""]
    budget = min(r["training_seconds"] for r in results["modes"])
    lines.append(f"Best test accuracy of each mode within the shortest run's {budget:.1f} s of training, and after "
                 "its first epoch (one pass over the data):")
    lines.append("")
    best_time, best_epoch = None, None
    for r in results["modes"]:
        within = [a for a, s in zip(r["test_accuracy"], r["cumulative_seconds"]) if s <= budget * (1 + 1e-6)]
        r_best = max(within) if within else None
        lines.append(f"- {r['mode']}: {common.pct(r_best) if within else 'no epoch finished'} within the time; "
                     f"{common.pct(r['test_accuracy'][0])} after one epoch ({r['steps_per_epoch']:,} steps, "
                     f"{r['cumulative_seconds'][0]:.2f} s)")
        if r_best is not None and (best_time is None or r_best > best_time[1]):
            best_time = (r["mode"], r_best)
        if best_epoch is None or r["test_accuracy"][0] > best_epoch[1]:
            best_epoch = (r["mode"], r["test_accuracy"][0])
    lines += ["", f"Per pass over the data the most accurate after one epoch is {best_epoch[0]}; within equal "
              f"training time it is {best_time[0] if best_time else '-'}. A step's cost here is mostly fixed "
              "overhead at small batches (compare the seconds per epoch with the steps per epoch), so batch 1 buys "
              "many more steps per epoch at a high price per example, and the full batch takes a single step "
              "per pass."]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for i, r in enumerate(results["modes"]):
        epochs = np.arange(1, len(r["test_accuracy"]) + 1)
        label = f"{r['mode']}, eta {r['learning_rate']}"
        for row, (key, scale) in enumerate((("test_accuracy", 100), ("train_cost", 1))):
            axes[row][0].plot(epochs, scale * np.asarray(r[key]), "o-", ms=2, color=f"C{i}", label=label)
            axes[row][1].plot(r["cumulative_seconds"], scale * np.asarray(r[key]), "o-", ms=2, color=f"C{i}",
                              label=label)
    for row, ylabel in enumerate(("test accuracy (%)", "training cost")):
        axes[row][0].set(xscale="log", xlabel="epoch (passes over the training set)", ylabel=ylabel)
        axes[row][1].set(xscale="log", xlabel="training seconds", ylabel=ylabel)
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    axes[1][0].set_yscale("log")
    axes[1][1].set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Stochastic, mini-batch and full-batch gradient descent")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    return common.parse(parser, argv, "modes")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = common.load_data(args.idx_dir)
    train = data.train.take(2000) if args.quick else data.train
    modes = []
    for mode in MODES:
        modes.append(run_mode(mode, data, train, mode.quick_epochs if args.quick else mode.epochs))
        r = modes[-1]
        print(f"{mode.name}: {r['seconds_per_epoch']:.3f} s/epoch, final test accuracy "
              f"{common.pct(r['final_test_accuracy'])}", flush=True)
    results = {"setup": common.setup_record(data, quick=args.quick, n_train=train.size), "modes": modes}
    common.write_results(args.out, results, markdown(results), {"modes.png": lambda p: plot(results, p)})


if __name__ == "__main__":
    sys.exit(main())
