"""Experiment 2: the textbook's chapter 3 on full MNIST, over seeds, beside the published figures.

Chapter 3 of Nielsen's "Neural Networks and Deep Learning" improves the chapter 1 network with
the cross-entropy cost (sigmoid outputs), L2 regularisation ``lambda/(2n) sum w^2`` (``n`` the
training-set size, biases not decayed), N(0, 1/n_in) weights, early stopping and a
learning-rate schedule. Every configuration below is trained over seeds with mini-batches of 10
and measured after every epoch on the training, validation and test sets (the book's
monitoring). Configurations that share a shape, initialisation, epoch count and training set
run as one compiled program (``common.train_models``: every member its own seed, learning rate
and lambda). The published figures are the book's test accuracies (``evaluation_data=test_data``):
we put the mean of the per-seed *peak* (best epoch) beside them, and the final epoch's too.

- Early stopping ("no improvement in 10 epochs" on validation accuracy, keeping the best epoch's
  parameters, as ``gd.fit(patience=10)``) is read off every run's validation curve: the stopping
  epoch and the test accuracy of the parameters it keeps.
- The halving schedule (``halving-30``: halve eta each time validation accuracy has not improved
  for 10 epochs, stop at 1/128 of the start, as ``gd.fit(eta_halving=10)``) against the same
  network at a fixed eta (``scaled-l2-30``).

Writes ``results.md``, ``results.json`` and ``curves.png`` (mean test accuracy per epoch per
configuration), ``overfitting.png`` (1,000 training digits: training cost, training and test
accuracy), ``initialisation.png`` (N(0, 1) against N(0, 1/n_in)) and ``schedule.png`` (halving
against a fixed eta). The files are rewritten after each group, so an interrupted run keeps the
finished groups.

Run: ``python experiments/chapter3.py --idx-dir ../shared/data/mnist-full [--seeds 3]``
"""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Any, NamedTuple

import common
import numpy as np

import gd_jax as gd

BATCH_SIZE = 10
PATIENCE = 10


class Config(NamedTuple):
    name: str
    hidden: int
    init: str  # "normal": N(0, 1), the book's large_weight_initializer; "scaled": N(0, 1/n_in)
    learning_rate: float
    lmbda: float
    epochs: int
    train_size: int | None  # None: the whole training set
    published: float | None
    label: str
    eta_halving: int | None = None


CONFIGS = (
    Config("ce-30", 30, "normal", 0.5, 0.0, 30, None, 0.9549, "cross-entropy, 30 hidden, eta 0.5"),
    Config("l2-30", 30, "normal", 0.5, 5.0, 30, None, 0.9649, "cross-entropy, 30 hidden, eta 0.5, lambda 5.0"),
    Config("scaled-l2-30", 30, "scaled", 0.5, 5.0, 30, None, None,
           "as l2-30 with N(0, 1/n_in) weights (the book: about the same final accuracy, reached faster)"),
    Config("overfit-1000", 30, "normal", 0.5, 0.0, 400, 1000, 0.8227,
           "cross-entropy, 30 hidden, eta 0.5, 1,000 training digits, 400 epochs"),
    Config("overfit-1000-l2", 30, "normal", 0.5, 0.1, 400, 1000, 0.871,
           "as overfit-1000 with lambda 0.1"),
    Config("halving-30", 30, "scaled", 0.5, 5.0, 60, None, None,
           "as scaled-l2-30, halving eta after 10 epochs without improvement, stopping at eta/128 (at most 60 "
           "epochs)", eta_halving=10),
    Config("ce-100", 100, "normal", 0.5, 0.0, 30, None, 0.9682, "cross-entropy, 100 hidden, eta 0.5"),
    Config("l2-100", 100, "normal", 0.5, 5.0, 30, None, 0.9792, "cross-entropy, 100 hidden, eta 0.5, lambda 5.0"),
    Config("l2-100-eta0.1", 100, "normal", 0.1, 5.0, 60, None, 0.9804,
           "cross-entropy, 100 hidden, eta 0.1, lambda 5.0, 60 epochs"),
)


def quick(config: Config) -> Config:
    """The same configuration shrunk for CI: a few epochs, halving after 1 epoch without improvement."""
    return config._replace(epochs=4 if config.train_size else 2,
                           eta_halving=1 if config.eta_halving else None)


def early_stopping(validation: np.ndarray, test: np.ndarray, patience: int) -> dict[str, Any]:
    """What ``fit(patience=...)`` would return, read off one run's per-epoch curves (epoch 1 first)."""
    best, since = 0, 0
    for e in range(1, len(validation)):
        if validation[e] > validation[best]:
            best, since = e, 0
        else:
            since += 1
            if since >= patience:
                return {"stopped_after": e + 1, "best_epoch": best + 1, "test_accuracy": float(test[best])}
    return {"stopped_after": None, "best_epoch": best + 1, "test_accuracy": float(test[best])}


def records(config: Config, seeds: list[int], run: common.GroupRun, cols: slice) -> dict[str, Any]:
    curves = {k: v[:, cols].T for k, v in run.curves.items()}  # (seeds, epochs)
    stop = [run.stopped_after[i] for i in range(cols.start, cols.stop)]
    epochs_run = [s or config.epochs for s in stop]
    test = [curves["test_accuracy"][i, :epochs_run[i]] for i in range(len(seeds))]
    stops = [early_stopping(curves["validation_accuracy"][i, :epochs_run[i]], test[i], PATIENCE)
             for i in range(len(seeds))]
    return {
        "config": config._asdict(), "seeds": seeds,
        "peak": common.describe([t.max() for t in test], config.published),
        "final": common.describe([t[-1] for t in test], config.published),
        "peak_epoch": [int(np.argmax(t)) + 1 for t in test],
        "early_stopping": stops,
        "early_stopping_test": common.describe([s["test_accuracy"] for s in stops], config.published),
        "epochs_run": epochs_run,
        "curves": curves,
        "seconds": run.seconds,
    }


def explain_gap(block: dict[str, Any]) -> str:
    """One line about how ours compares with the book, and what the seeds say about it."""
    p, peak = block["config"]["published"], block["peak"]
    if p is None:
        return ""
    gap = 100 * (peak["mean"] - p)
    spread = f"seeds span {common.pct(peak['min'])}-{common.pct(peak['max'])}"
    if abs(gap) <= 0.5:
        return f"{gap:+.2f} points, within 0.5 ({spread})."
    inside = peak["min"] <= p <= peak["max"]
    return (f"{gap:+.2f} points, more than 0.5: {spread}; the published figure is "
            f"{'inside' if inside else 'outside'} our seeds' range" +
            (" (one run of the book is one draw from that spread)." if inside else "."))


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Experiment 2: chapter 3 over seeds", "", *common.setup_lines(results["setup"]),
             "Cross-entropy cost throughout, mini-batches of 10, test accuracy after every epoch; *peak* is the best "
             f"epoch, *early stopping* the test accuracy of the best-validation epoch with patience {PATIENCE}.", "",
             "| configuration | published | ours: peak " + common.STATS_HEADER[2:] + " final | early stopping | "
             "seeds | epochs |", "| :--- | ---: " + common.STATS_RULE + " ---: | ---: | ---: | ---: |"]
    for name, b in results["configs"].items():
        c = b["config"]
        lines.append(f"| {name} | {common.pct(c['published'])} | {common.stats_cells(b['peak'])} | "
                     f"{common.pct(b['final']['mean'])} +- {100 * b['final']['std']:.2f} | "
                     f"{common.pct(b['early_stopping_test']['mean'])} | {b['peak']['n']} | "
                     f"{value_range(b['epochs_run'])} |")
    lines += ["", "## Each configuration beside the book", ""]
    for name, b in results["configs"].items():
        stops = b["early_stopping"]
        stopped = [s["stopped_after"] for s in stops if s["stopped_after"]]
        lines.append(f"- **{name}** ({b['config']['label']}): {explain_gap(b)} Peak epochs {b['peak_epoch']}; early "
                     f"stopping stopped {len(stopped)} of {len(stops)} seeds"
                     + (f" (after epochs {stopped})" if stopped else "") + ", keeping epochs "
                     f"{[s['best_epoch'] for s in stops]}.")
    h = results["configs"].get("halving-30")
    f = results["configs"].get("scaled-l2-30")
    if h and f:
        scales = h["curves"]["learning_rate_scale"]
        lines += ["", "## Halving schedule against a fixed eta", "",
                  f"Fixed eta 0.5, 30 epochs: peak {common.pct(f['peak']['mean'])}, "
                  f"final {common.pct(f['final']['mean'])}. "
                  f"Halving: peak {common.pct(h['peak']['mean'])}, final {common.pct(h['final']['mean'])}, after "
                  f"{value_range(h['epochs_run'])} epochs, its learning rate by then "
                  f"{value_range([f'1/{round(1 / s)}' if s else 'stopped' for s in np.asarray(scales)[:, -1]])} "
                  f"of its start (the schedule stops at 1/128, or at {h['config']['epochs']} epochs)."]
    o, ol = results["configs"].get("overfit-1000"), results["configs"].get("overfit-1000-l2")
    if o and ol:
        gap = lambda b: np.mean(np.asarray(b["curves"]["train_accuracy"])[:, -1]  # noqa: E731
                                - np.asarray(b["curves"]["test_accuracy"])[:, -1])
        lines += ["", "## Overfitting on 1,000 digits", "",
                  f"At the end, training accuracy exceeds test accuracy by {100 * gap(o):.1f} points without L2 and "
                  f"{100 * gap(ol):.1f} points with lambda 0.1."]
    return "\n".join(lines)


def value_range(values: list) -> str:
    """``a`` when all values are equal, else ``a-b`` (smallest and largest; strings as listed)."""
    if len(set(values)) == 1:
        return str(values[0])
    return f"{min(values)}-{max(values)}" if all(isinstance(v, int) for v in values) else ", ".join(map(str, values))


def _band(ax, curves: np.ndarray, color: str, label: str, start: int = 1) -> None:
    x = np.arange(start, start + curves.shape[1])
    ax.plot(x, 100 * curves.mean(axis=0), color=color, label=label)
    ax.fill_between(x, 100 * curves.min(axis=0), 100 * curves.max(axis=0), color=color, alpha=0.2)


def plot_curves(results: dict[str, Any], path: str) -> None:
    plt = common.pyplot()
    names = [n for n, b in results["configs"].items() if b["config"]["train_size"] is None]
    if not names:
        return _empty(plt, path)
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.6), sharey=True, squeeze=False,
                             constrained_layout=True)
    for ax, name in zip(axes[0], names):
        b = results["configs"][name]
        test = b["curves"]["test_accuracy"][:, :min(b["epochs_run"])]
        _band(ax, test, "C0", "test, mean and range")
        if b["config"]["published"]:
            ax.axhline(100 * b["config"]["published"], color="k", ls="--", lw=0.8, label="published")
        ax.set(title=name, xlabel="epoch")
        ax.title.set_fontsize(9)
        ax.set_ylim(93, 99)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _empty(plt, path: str) -> None:
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.text(0.5, 0.5, "not run", ha="center")
    ax.axis("off")
    fig.savefig(path)
    plt.close(fig)


def plot_overfitting(results: dict[str, Any], path: str) -> None:
    plt = common.pyplot()
    blocks = [results["configs"][n] for n in ("overfit-1000", "overfit-1000-l2") if n in results["configs"]]
    if not blocks:
        return _empty(plt, path)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for i, b in enumerate(blocks):
        lab = f"lambda {b['config']['lmbda']}"
        c = b["curves"]
        x = np.arange(1, c["train_cost"].shape[1] + 1)
        ax.plot(x, c["train_cost"].mean(axis=0), color=f"C{i}", label=f"training cost, {lab}")
        _band(bx, c["test_accuracy"], f"C{i}", f"test, {lab}")
        bx.plot(x, 100 * c["train_accuracy"].mean(axis=0), color=f"C{i}", ls=":", label=f"training, {lab}")
        if b["config"]["published"]:
            bx.axhline(100 * b["config"]["published"], color=f"C{i}", ls="--", lw=0.8,
                       label=f"published peak, {lab}")
    ax.set(xlabel="epoch", ylabel="training cost (with the L2 term)", yscale="log", title="1,000 training digits")
    bx.set(xlabel="epoch", ylabel="accuracy (%)", title="training against test accuracy")
    ax.legend(fontsize=7)
    bx.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pair(results: dict[str, Any], path: str, names: tuple[str, str], title: str) -> None:
    plt = common.pyplot()
    blocks = [(n, results["configs"][n]) for n in names if n in results["configs"]]
    if not blocks:
        return _empty(plt, path)
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for i, (name, b) in enumerate(blocks):
        _band(ax, b["curves"]["test_accuracy"][:, :min(b["epochs_run"])], f"C{i}", f"{name}: {b['config']['label']}")
    ax.set(xlabel="epoch", ylabel="test accuracy (%), mean and range over seeds", title=title)
    ax.legend(fontsize=6, loc="lower right")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--seeds", type=int, help="seeds per configuration (default 3; --quick: 1)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these configurations: "
                        + ", ".join(c.name for c in CONFIGS))
    args = common.parse(parser, argv, "chapter3")
    args.seeds = (1 if args.quick else 3) if args.seeds is None else args.seeds
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    names = [c.name for c in CONFIGS]
    for name in args.only or []:
        if name not in names:
            parser.error(f"--only {name!r} is not a configuration; choose from {', '.join(names)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = common.load_data(args.idx_dir)
    base_train = data.train.take(5000) if args.quick else data.train
    configs = [quick(c) if args.quick else c for c in CONFIGS if not args.only or c.name in args.only]
    seeds = list(range(args.seeds))
    results: dict[str, Any] = {"setup": common.setup_record(data, quick=args.quick, seeds=args.seeds,
                                                            n_train=base_train.size, patience=PATIENCE),
                               "configs": {}}
    shape = lambda c: (c.hidden, c.init, c.epochs, c.train_size, c.eta_halving)  # noqa: E731
    for (hidden, init, epochs, train_size, halving), group in itertools.groupby(configs, key=shape):
        group = list(group)
        train = base_train.take(train_size) if train_size else base_train
        members = [common.Member(s, c.learning_rate, c.lmbda) for c in group for s in seeds]
        print(f"{', '.join(c.name for c in group)}: {len(members)} networks [784, {hidden}, 10], {epochs} epochs on "
              f"{train.size:,} digits, as one program", flush=True)
        run = common.train_models((784, hidden, 10), members, cost=gd.cross_entropy_cost, init=init,
                                  batch_size=BATCH_SIZE, epochs=epochs, train=train,
                                  evals={"test": data.test, "validation": data.validation}, eta_halving=halving,
                                  log=lambda line: print(line, flush=True) if "0/" in line else None)
        for k, c in enumerate(group):
            b = records(c, seeds, run, slice(k * len(seeds), (k + 1) * len(seeds)))
            results["configs"][c.name] = b
            print(f"{c.name}: peak {common.pct(b['peak']['mean'])} +- {100 * b['peak']['std']:.2f} "
                  f"(published {common.pct(c.published)})", flush=True)
        common.write_results(args.out, results, markdown(results), {
            "curves.png": lambda p: plot_curves(results, p),
            "overfitting.png": lambda p: plot_overfitting(results, p),
            "initialisation.png": lambda p: plot_pair(results, p, ("l2-30", "scaled-l2-30"),
                                                      "N(0, 1) against N(0, 1/n_in) weights"),
            "schedule.png": lambda p: plot_pair(results, p, ("scaled-l2-30", "halving-30"),
                                                "fixed eta against the halving schedule")})


if __name__ == "__main__":
    sys.exit(main())
