"""Experiment 6: a log sweep of the learning rate, over seeds.

The textbook network ([784, 30, 10], quadratic cost, N(0, 1) weights, mini-batches of 10, 30
epochs) for eta from 0.001 to 100 in half decades, each over several seeds, all of them one
compiled program (``common.train_models``: every member its own seed and learning rate).
It shows the three regimes: too slow (the cost falls, but 30 epochs are not enough), good, and
too large (the sigmoids saturate: the cost stops falling and accuracy drops). A learning rate
counts as *good* when its mean final test accuracy is within ``GOOD_WITHIN`` of the best
learning rate's, *too slow* or *too large* when it falls short below or above the best.

Writes ``results.md``, ``results.json``, ``accuracy_vs_eta.png`` (final and peak test accuracy,
mean +- std and min/max over seeds) and ``curves.png`` (mean test accuracy per epoch per eta).

Run: ``python experiments/learning_rate.py --idx-dir ../shared/data/mnist-full``
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import common
import numpy as np

import gd_jax as gd

SIZES = (784, 30, 10)
RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
QUICK_RATES = (0.01, 3.0, 100.0)
PUBLISHED = {3.0: 0.9542}  # the book's chapter 1 peak at eta 3.0
GOOD_WITHIN = 0.02  # two points of accuracy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--seeds", type=int, help="seeds per learning rate (default 3; --quick: 1)")
    parser.add_argument("--epochs", type=int, help="epochs (default 30; --quick: 2)")
    args = common.parse(parser, argv, "learning_rate")
    args.seeds = (1 if args.quick else 3) if args.seeds is None else args.seeds
    args.epochs = (2 if args.quick else 30) if args.epochs is None else args.epochs
    if args.seeds < 1 or args.epochs < 1:
        parser.error(f"--seeds and --epochs must be >= 1, got {args.seeds} and {args.epochs}")
    return args


def classify(rows: list[dict[str, Any]]) -> None:
    """Marks each learning rate too slow, good or too large, relative to the best mean final accuracy."""
    best = max(rows, key=lambda r: r["final"]["mean"])
    for r in rows:
        if best["final"]["mean"] - r["final"]["mean"] <= GOOD_WITHIN:
            r["regime"] = "good"
        else:
            r["regime"] = "too slow" if r["learning_rate"] < best["learning_rate"] else "too large"


def markdown(results: dict[str, Any]) -> str:
    s = results["setup"]
    lines = ["# Experiment 6: learning rate", "", *common.setup_lines(s),
             f"[784, 30, 10], quadratic cost, N(0, 1) weights, mini-batches of 10, {s['epochs']} epochs, {s['seeds']} "
             f"seed(s) per eta, {len(results['rates'])} learning rates as one compiled program ({s['seconds']:.0f} s "
             f"of training). *Good*: mean final test accuracy within {100 * GOOD_WITHIN:.0f} points of the best eta.",
             "", "| eta | regime | final test accuracy " + common.STATS_HEADER[2:] + " peak test accuracy | "
             "training cost at the end | published peak |",
             "| ---: | :--- " + common.STATS_RULE + " ---: | ---: | ---: |"]
    for r in results["rates"]:
        lines.append(f"| {r['learning_rate']:g} | {r['regime']} | {common.stats_cells(r['final'])} | "
                     f"{common.pct(r['peak']['mean'])} +- {100 * r['peak']['std']:.2f} | {r['train_cost_end']:.4f} | "
                     f"{common.pct(PUBLISHED.get(r['learning_rate']))} |")
    lines += ["", "The seeds-reaching column counts seeds whose *final* accuracy reaches the published *peak* (the "
              "book's figure for eta 3.0 is its best epoch).", ""]
    return "\n".join(lines)


def plot_sweep(results: dict[str, Any], path: str) -> None:
    plt = common.pyplot()
    rows = results["rates"]
    eta = [r["learning_rate"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for key, color, label in (("final", "C0", "final"), ("peak", "C1", "peak (best epoch)")):
        mean = np.array([100 * r[key]["mean"] for r in rows])
        ax.errorbar(eta, mean, yerr=[100 * r[key]["std"] for r in rows], fmt="o-", color=color, capsize=3,
                    label=f"{label}: mean +- std")
        ax.fill_between(eta, [100 * r[key]["min"] for r in rows], [100 * r[key]["max"] for r in rows],
                        color=color, alpha=0.15, label=f"{label}: min-max")
    ax.axhline(100 * PUBLISHED[3.0], color="k", ls="--", lw=0.8, label="published peak at eta 3.0 (95.42%)")
    for r in rows:
        ax.annotate(r["regime"], (r["learning_rate"], 100 * r["final"]["mean"]), fontsize=6, rotation=60,
                    xytext=(3, -12), textcoords="offset points")
    ax.set(xscale="log", xlabel="learning rate eta", ylabel="test accuracy (%)",
           title=f"[784, 30, 10] after {results['setup']['epochs']} epochs, "
                 f"{results['setup']['seeds']} seed(s) per eta")
    ax.legend(fontsize=7, loc="lower center")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(results: dict[str, Any], path: str) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    cmap = plt.get_cmap("viridis")
    rows = results["rates"]
    for i, r in enumerate(rows):
        curve = 100 * np.mean(np.array(r["test_accuracy_per_epoch"]), axis=0)
        ax.plot(range(len(curve)), curve, color=cmap(i / max(1, len(rows) - 1)), label=f"eta {r['learning_rate']:g}")
    ax.set(xlabel="epoch", ylabel="test accuracy (%), mean over seeds", title="Test accuracy per epoch by eta")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = common.load_data(args.idx_dir)
    train = data.train.take(5000) if args.quick else data.train
    rates = QUICK_RATES if args.quick else RATES
    members = [common.Member(seed, eta) for eta in rates for seed in range(args.seeds)]
    print(f"{len(members)} networks {list(SIZES)} as one program", flush=True)
    run = common.train_models(SIZES, members, cost=gd.quadratic_cost, init="normal", batch_size=10,
                              epochs=args.epochs, train=train, evals={"test": data.test})
    rows = []
    for k, eta in enumerate(rates):
        cols = slice(k * args.seeds, (k + 1) * args.seeds)
        test = np.concatenate([run.initial["test_accuracy"][None, cols], run.curves["test_accuracy"][:, cols]])
        rows.append({"learning_rate": eta, "seeds": list(range(args.seeds)),
                     "final": common.describe(test[-1], PUBLISHED.get(eta)),
                     "peak": common.describe(test[1:].max(axis=0), PUBLISHED.get(eta)),
                     "train_cost_end": float(run.curves["train_cost"][-1, cols].mean()),
                     "test_accuracy_per_epoch": test.T,  # per seed, index 0 untrained
                     "train_cost_per_epoch": run.curves["train_cost"][:, cols].T})
    classify(rows)
    for r in rows:
        print(f"eta {r['learning_rate']:g}: final {common.pct(r['final']['mean'])} +- {100 * r['final']['std']:.2f} "
              f"({r['regime']})")
    results = {"setup": common.setup_record(data, quick=args.quick, n_train=train.size, seeds=args.seeds,
                                            epochs=args.epochs, seconds=run.seconds,
                                            compile_seconds=run.compile_seconds), "rates": rows}
    common.write_results(args.out, results, markdown(results), {
        "accuracy_vs_eta.png": lambda p: plot_sweep(results, p), "curves.png": lambda p: plot_curves(results, p)})


if __name__ == "__main__":
    sys.exit(main())
