"""Experiment 1b: the textbook's own ``network.py`` in float64 numpy, an independent reference for chapter 1.

Chapter 1 of Nielsen's "Neural Networks and Deep Learning" trains sigmoid networks with its
``network.py``: N(0, 1) weights and biases, the quadratic cost, eta 3.0, mini-batches of 10, 30
epochs on 50,000 training digits, test accuracy after every epoch. ``chapter1.py`` reproduces it
with gd_jax (float32, JAX's random numbers), and there many [784, 100, 10] seeds *stall*: an output
neuron is driven far negative on its own digit in the first epoch and never comes back. This
script asks whether that is the book's algorithm or gd_jax, by training the same networks with a
second implementation that shares nothing with gd_jax's training code: ``network.py``'s ``SGD``
written out in float64 numpy, no JAX in the training loop, from two starts:

* **numpy start**, ``network.py``'s own randomness. Seed ``s`` is exactly ``network.py`` run after
  ``random.seed(s); np.random.seed(s)``: ``Network.__init__`` draws ``self.biases =
  [np.random.randn(y, 1) for y in sizes[1:]]`` and then ``self.weights = [np.random.randn(y, x) for
  x, y in zip(sizes[:-1], sizes[1:])]`` from numpy's global legacy generator, which after
  ``np.random.seed(s)`` gives the draws of ``np.random.RandomState(s)`` (here: ``RandomState(s)``,
  biases first, then weights, in those shapes; the weights transposed to the batch-first ``(n_in,
  n_out)``, the biases flattened). Each epoch ``SGD`` calls ``random.shuffle(training_data)`` on the
  list of ``(x, y)`` pairs it keeps shuffling in place from epoch to epoch; a shuffle's permutation
  depends only on the list's length and the generator's state, so here one ``random.Random(s)``
  shuffles a list of row indices in place, once an epoch, and epoch ``e`` visits the rows in that
  list's order after its ``e + 1``-th shuffle.
* **gd_jax start**: the initial parameters and batch orders that ``chapter1.py`` (and ``gd-jax train
  --seed s``) use for seed ``s``: ``init_key, shuffle_key = split(key(s))``, ``gd.init_mlp(init_key,
  sizes, "normal")``, epoch ``e``'s order ``gd.shuffled_order(fold_in(shuffle_key, e), n)``, the
  float32 parameters converted exactly to float64. This is the trajectory gd_jax computes in float32,
  computed in float64; its per-seed stall and peak stand beside gd_jax's own figures for the seed
  (``--gd-jax-results``, a ``chapter1.py`` results.json).

The update is ``network.py``'s ``update_mini_batch``/``backprop``, vectorised over the mini-batch
(batch-first, ``x @ w + b``): for a mini-batch ``B`` of ``m`` examples, ``delta^L = (a^L - y) *
sigma'(z^L)``, ``delta^l = (delta^{l+1} W^{l+1 T}) * sigma'(z^l)``, ``dC/dW^l = a^{l-1 T} delta^l``,
``dC/db^l = sum_rows delta^l``, and ``W -> W - (eta/m) dC/dW``: the sum over the rows is the
textbook's sum of per-example gradients (``tests/test_network_py.py`` checks it against a
per-example loop written as ``network.py`` writes it). The inputs stay float32 (as the pixels in
the book's ``mnist.pkl.gz`` are) and every product is float64. After each epoch: test accuracy
(``network.py``'s ``evaluate``: the argmax of the output activations), *peak* = the best epoch,
and the output neurons measured as ``chapter1.output_neurons`` measures them (mirrored in numpy),
so that *stalled* (an output neuron below 0.5 on every test image at the end) and the stall notes
are ``chapter1.py``'s own functions applied to the same numbers.

Run as a script, numpy's BLAS uses one thread (unless ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` say otherwise): batch-10 products are too small to gain from threads, and one core
stays free.

Writes ``results.md``, ``results.json`` and ``peaks.png`` (peak test accuracy per seed, both
starts, both configurations, beside gd_jax's float32 peaks), rewritten after each block of runs.

Run: ``python experiments/network_py.py --idx-dir ../shared/data/mnist-full [--seeds 20] [--gd-jax-seeds 10]``
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # as a script only: importing the module leaves the caller's environment alone
    # One BLAS thread: read by OpenBLAS/MKL when numpy loads, so it has to be set before numpy is imported.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import chapter1
import common
import jax
import numpy as np

import gd_jax as gd

BATCH_SIZE = 10
LEARNING_RATE = 3.0
CONFIGS = {c.name: c for c in chapter1.TEXTBOOK}  # textbook ([784, 30, 10]) and textbook-100 ([784, 100, 10])
STARTS = ("numpy", "gd_jax")
START_LABELS = {"numpy": "numpy start (network.py's RandomState / random.shuffle)",
                "gd_jax": "gd_jax start (chapter1.py's init and batch orders, in float64)"}
DEFAULT_GD_JAX_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "chapter1",
                                      "results.json")

Layer = tuple[np.ndarray, np.ndarray]  # (w (n_in, n_out), b (n_out,)), float64
Params = list[Layer]


# --- the two starts ---------------------------------------------------------------------------------------

def network_py_init(seed: int, sizes: list[int]) -> Params:
    """``network.Network(sizes)``'s parameters after ``np.random.seed(seed)``, batch-first.

    ``network.py`` draws every bias vector (``randn(y, 1)``) and then every weight matrix
    (``randn(y, x)``, ``y`` neurons fed by ``x``) from numpy's global generator: these are the same
    draws from ``RandomState(seed)``, the weights transposed to ``(n_in, n_out)`` for ``x @ w + b``.
    """
    rng = np.random.RandomState(seed)
    biases = [rng.randn(y, 1) for y in sizes[1:]]
    weights = [rng.randn(y, x) for x, y in itertools.pairwise(sizes)]
    return [(np.ascontiguousarray(w.T), b[:, 0].copy()) for w, b in zip(weights, biases)]


def network_py_orders(seed: int, n: int) -> Iterator[np.ndarray]:
    """Each epoch's row order in ``network.py``'s ``SGD`` after ``random.seed(seed)``, forever.

    ``SGD`` shuffles its training list in place at the start of every epoch, so epoch ``e``'s order
    is the composition of ``e + 1`` shuffles, not a fresh permutation.
    """
    shuffler, order = random.Random(seed), list(range(n))
    while True:
        shuffler.shuffle(order)
        yield np.array(order, dtype=np.int64)


def gd_jax_init(seed: int, sizes: list[int]) -> Params:
    """gd_jax's float32 initial parameters for ``seed`` (as ``chapter1.py`` draws them), exactly in float64."""
    init_key, _ = gd.seed_keys(seed)
    return [(np.asarray(layer["w"], dtype=np.float64), np.asarray(layer["b"], dtype=np.float64))
            for layer in gd.init_mlp(init_key, sizes, "normal")]


def gd_jax_orders(seed: int, n: int) -> Iterator[np.ndarray]:
    """gd_jax's batch order for ``seed``, epoch after epoch: ``shuffled_order(fold_in(shuffle_key, e), n)``."""
    _, shuffle_key = gd.seed_keys(seed)
    e = 0
    while True:
        yield gd.shuffled_order(jax.random.fold_in(shuffle_key, e), n).astype(np.int64)
        e += 1


START_FUNCTIONS: dict[str, tuple[Callable[[int, list[int]], Params], Callable[[int, int], Iterator[np.ndarray]]]] = {
    "numpy": (network_py_init, network_py_orders),
    "gd_jax": (gd_jax_init, gd_jax_orders),
}


# --- network.py's algorithm, vectorised over the mini-batch ------------------------------------------------

def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^{-z})``, written as ``network.py`` writes it (``e^{-z}`` may overflow to inf: then 0)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def forward(params: Params, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The activations of every layer (input first) and the output layer's weighted input ``z^L``."""
    activations, z = [x], None
    for w, b in params:
        z = activations[-1] @ w + b
        activations.append(sigmoid(z))
    return activations, z


def gradients(params: Params, x: np.ndarray, y_onehot: np.ndarray) -> Params:
    """The sum over the mini-batch's rows of each example's quadratic-cost gradient, per layer ``(dW, db)``.

    ``network.py``'s ``backprop`` for a whole mini-batch at once: row ``i`` of ``delta^l`` is
    example ``i``'s error, ``delta^L = (a^L - y) sigma'(z^L)``, ``delta^l = (delta^{l+1} W^{l+1 T})
    sigma'(z^l)`` with ``sigma'(z) = a (1 - a)``; then ``dC/dW^l = a^{l-1 T} delta^l`` and ``dC/db^l``
    the column sums, which add up the per-example gradients ``update_mini_batch`` sums.
    """
    activations, _ = forward(params, x)
    a_out = activations[-1]
    delta = (a_out - y_onehot) * a_out * (1.0 - a_out)
    grads: Params = []
    for layer in range(len(params) - 1, -1, -1):
        grads.append((activations[layer].T @ delta, delta.sum(axis=0)))
        if layer > 0:
            a = activations[layer]
            delta = (delta @ params[layer][0].T) * a * (1.0 - a)
    return grads[::-1]


def train_epoch(params: Params, x: np.ndarray, y_onehot: np.ndarray, order: np.ndarray, *, learning_rate: float,
                batch_size: int) -> Params:
    """One epoch of ``network.py``'s ``SGD``: mini-batches of ``order`` (the last may be smaller), each
    ``W -> W - (eta / m) sum_B dC_x/dW``. Returns new parameters; ``params`` is left as it was.

    The update is made in place on a copy: a fresh ``(784, 100)`` array for each of 5,000 steps
    would cost more than the step's arithmetic.
    """
    params = [(w.copy(), b.copy()) for w, b in params]
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        step = learning_rate / len(rows)
        for (w, b), (dw, db) in zip(params, gradients(params, x[rows], y_onehot[rows])):
            w -= step * dw
            b -= step * db
    return params


def output_neurons(params: Params, x: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, list]:
    """``chapter1.output_neurons`` in float64 numpy, with the test accuracy: per output neuron ``j``, the
    largest ``a_j`` over all examples, the mean ``z_j`` and ``sigma'(z_j)`` over the examples of digit ``j``,
    and how many examples are predicted as ``j``."""
    activations, z = forward(params, x)
    a = activations[-1]
    own = np.eye(n_classes)[y]
    per_class = own.sum(axis=0)
    predicted = np.argmax(a, axis=-1)
    return {
        "max_activation": a.max(axis=0).tolist(),
        "mean_z_own": ((own * z).sum(axis=0) / per_class).tolist(),
        "mean_sigma_prime_own": ((own * a * (1 - a)).sum(axis=0) / per_class).tolist(),
        "predicted": np.bincount(predicted, minlength=n_classes).tolist(),
        "accuracy": float(np.mean(predicted == y)),
    }


def train_seed(params: Params, orders: Iterator[np.ndarray], train: gd.Dataset, test: gd.Dataset, *, epochs: int,
               n_classes: int) -> dict[str, Any]:
    """Trains one network for ``epochs`` epochs; its record in ``chapter1.py``'s shape (test set only)."""
    x = np.asarray(train.x)  # float32 pixels, promoted to float64 in each product, as in network.py
    y_onehot = np.eye(n_classes)[np.asarray(train.y)]
    test_x, test_y = np.asarray(test.x, dtype=np.float64), np.asarray(test.y)
    neurons = [output_neurons(params, test_x, test_y, n_classes)]
    start = time.perf_counter()
    for _ in range(epochs):
        params = train_epoch(params, x, y_onehot, next(orders), learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE)
        neurons.append(output_neurons(params, test_x, test_y, n_classes))
    seconds = time.perf_counter() - start
    test_accuracy = [n.pop("accuracy") for n in neurons]
    max_activation = [n["max_activation"] for n in neurons]
    dead = chapter1.dead_digits(max_activation[-1])
    spans = chapter1.off_spans(max_activation)
    return {
        "final_accuracy": test_accuracy[-1],
        "peak_accuracy": max(test_accuracy[1:]),
        "peak_epoch": int(np.argmax(test_accuracy[1:])) + 1,
        "stalled": bool(dead),
        "dead_digits": dead,
        "dead_since_epoch": {str(j): chapter1.dead_since(max_activation, j) for j in dead},
        "off_epochs": spans,
        "recovered": any(d not in map(str, dead) for d in spans),
        "test_accuracy_per_epoch": test_accuracy,  # index 0 is the untrained network
        "output_neurons_per_epoch": neurons,
        "seconds": seconds,
    }


# --- gd_jax's own figures ---------------------------------------------------------------------------------

def read_gd_jax_results(path: str) -> dict[str, Any]:
    """A ``chapter1.py`` results.json; ValueError when it is not one."""
    try:
        with open(path) as f:
            results = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"--gd-jax-results {path!r} is not JSON ({e}); pass a results.json written by "
                         "experiments/chapter1.py") from None
    if not isinstance(results, dict) or not isinstance(results.get("configs"), dict) or "setup" not in results:
        raise ValueError(f"--gd-jax-results {path!r} has no 'setup' and 'configs'; pass a results.json written by "
                         "experiments/chapter1.py")
    return results


def setup_mismatch(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The settings (data, training digits, epochs, batch size) in which two setups differ."""
    return [f"{k} {theirs.get(k)!r} (here {ours[k]!r})" for k in ("data", "n_train", "epochs", "batch_size")
            if theirs.get(k) != ours[k]]


def agreement(runs: list[dict[str, Any]], gd_jax_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per seed of the gd_jax start, its float64 stall and peak beside gd_jax's float32 ones, and the tally."""
    theirs = {r["seed"]: r for r in gd_jax_runs}
    rows = []
    for r in runs:
        g = theirs.get(r["seed"])
        if g is None:
            continue
        rows.append({"seed": r["seed"], "peak_float64": r["peak_accuracy"], "peak_float32": g["peak_accuracy"],
                     "peak_difference": r["peak_accuracy"] - g["peak_accuracy"],
                     "stalled_float64": r["stalled"], "stalled_float32": g["stalled"],
                     "dead_digits_float64": r["dead_digits"], "dead_digits_float32": g["dead_digits"],
                     "same_stall": r["stalled"] == g["stalled"],
                     "same_dead_digits": r["dead_digits"] == g["dead_digits"]})
    differences = [abs(row["peak_difference"]) for row in rows]
    return {"seeds": len(rows), "rows": rows,
            "same_stall": sum(row["same_stall"] for row in rows),
            "same_dead_digits": sum(row["same_dead_digits"] for row in rows),
            "largest_peak_difference": max(differences) if differences else None,
            "median_peak_difference": float(np.median(differences)) if differences else None}


# --- results ----------------------------------------------------------------------------------------------

def summarise(config: chapter1.Config, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak and final test accuracy over seeds, the stall count and the healthy seeds' mean peak."""
    healthy = [r["peak_accuracy"] for r in runs if not r["stalled"]]
    return {
        "peak": common.describe([r["peak_accuracy"] for r in runs], config.published),
        "final": common.describe([r["final_accuracy"] for r in runs]),
        "seeds": len(runs),
        "stalled": sum(r["stalled"] for r in runs),
        "recovered": sum(r["recovered"] for r in runs),
        "peak_not_stalled": float(np.mean(healthy)) if healthy else None,
        "seconds": sum(r["seconds"] for r in runs),
    }


def yes_no(stalled: bool, digits: list[int]) -> str:
    return f"yes ({', '.join(map(str, digits))})" if stalled else "no"


def markdown(results: dict[str, Any]) -> str:
    """Ours beside the book for both starts, per-seed tables, and the gd_jax start beside gd_jax's float32 run."""
    meta = results["setup"]
    lines = [
        "# Experiment 1b: the textbook's network.py in float64 numpy, beside gd_jax",
        "",
        f"`network.py`'s `SGD` written out in float64 numpy (no JAX in the training loop): sigmoid networks, "
        f"N(0, 1) weights and biases, quadratic cost, eta {LEARNING_RATE}, mini-batches of {meta['batch_size']}, "
        f"{meta['epochs']} epochs; test accuracy after every epoch, *peak* = the best epoch (the book's figure). "
        f"A run is *stalled* when one output neuron stays below {chapter1.DEAD_BELOW} on every test image at the "
        "end (`chapter1.py`'s definition and functions). *numpy start*: `network.py` itself after "
        "`random.seed(s); np.random.seed(s)`. *gd_jax start*: the initial parameters and batch orders "
        "`chapter1.py` uses for seed s, so the run is gd_jax's float32 trajectory computed in float64.",
        "",
        *common.setup_lines(meta),
        "| configuration | start | published peak | peak test accuracy " + common.STATS_HEADER[2:]
        + " final test accuracy | stalled seeds | mean peak of the seeds not stalled |",
        "| :--- | :--- | ---: " + common.STATS_RULE + " ---: | ---: | ---: |",
    ]
    def row(name: str, start: str, published: float, s: dict[str, Any]) -> str:
        return (f"| {name} | {start} | {common.pct(published)} | {common.stats_cells(s['peak'])} | "
                f"{common.pct(s['final']['mean'])} +- {100 * s['final']['std']:.2f} | {s['stalled']} / {s['seeds']} | "
                f"{common.pct(s['peak_not_stalled'])} |")

    for name, block in results["configs"].items():
        published = block["config"]["published"]
        for start, part in block["starts"].items():
            lines.append(row(name, start, published, part["summary"]))
        gd_jax_summary = block.get("gd_jax_float32_summary")
        if gd_jax_summary is not None:
            lines.append(row(name, "gd_jax itself (float32, `chapter1.py`)", published, gd_jax_summary))
    lines += ["", meta["gd_jax_results_note"], ""]
    for name, block in results["configs"].items():
        p = block["config"]["published"]
        for start, part in block["starts"].items():
            gap = part["summary"]["peak"]["gap_points"]
            lines.append(f"- {name}, {start} start: mean peak {common.pct(part['summary']['peak']['mean'])} against "
                         f"the published {common.pct(p)}, {gap:+.2f} points "
                         f"({'within' if abs(gap) <= 0.5 else 'outside'} 0.5).")
    lines.append("")
    counts = np.array(meta["test_digit_counts"])
    for name, block in results["configs"].items():
        for start, part in block["starts"].items():
            compared = {row["seed"]: row for row in part.get("agreement", {}).get("rows", [])}
            extra = " gd_jax float32: peak | stalled (digits) | same stall verdict |" if compared else ""
            lines += [
                f"## {name}, {START_LABELS[start]}: {block['config']['label']}",
                "",
                "| seed | peak test accuracy (epoch) | final test accuracy | stalled (digits) "
                "| output neuron off after epochs (digit: epochs) |" + extra,
                "| ---: | ---: | ---: | :--- | :--- |" + (" ---: | :--- | :---: |" if compared else ""),
            ]
            for r in part["runs"]:
                row = (f"| {r['seed']} | {common.pct(r['peak_accuracy'])} ({r['peak_epoch']}) | "
                       f"{common.pct(r['final_accuracy'])} | {yes_no(r['stalled'], r['dead_digits'])} | "
                       f"{chapter1.format_spans(r['off_epochs'])} |")
                c = compared.get(r["seed"])
                if c is not None:
                    float32 = yes_no(c["stalled_float32"], c["dead_digits_float32"])
                    row += f" {common.pct(c['peak_float32'])} | {float32} | {'yes' if c['same_stall'] else '**no**'} |"
                elif compared:
                    row += " - | - | - |"
                lines.append(row)
            s = part["summary"]
            lines += ["", f"Stalled {s['stalled']} of {s['seeds']} seeds (mean peak of the others "
                      f"{common.pct(s['peak_not_stalled'])}); {s['recovered']} seeds had an output neuron off "
                      "for a while that came back.", ""]
            a = part.get("agreement")
            if a and a["seeds"]:
                lines += [f"Beside gd_jax's own float32 run of the same seeds: the same stall verdict for "
                          f"{a['same_stall']} of {a['seeds']} seeds, the same dead digits for {a['same_dead_digits']}; "
                          f"peak differences (float64 - float32) median {100 * a['median_peak_difference']:.2f}, "
                          f"largest {100 * a['largest_peak_difference']:.2f} points.", ""]
            stalled = [r for r in part["runs"] if r["stalled"]]
            if stalled:
                lines += ["Stalled seeds:", ""]
                lines += [f"- seed {r['seed']}: {chapter1.stall_note(r, counts)}" for r in stalled]
                lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
    """Peak test accuracy per seed, one panel per configuration: both starts, and gd_jax's float32 peaks."""
    plt = common.pyplot()
    blocks = results["configs"]
    fig, axes = plt.subplots(1, len(blocks), figsize=(5.5 * len(blocks), 4.8), squeeze=False, constrained_layout=True)
    styles = {"numpy": ("o", "C0", 0.0), "gd_jax": ("s", "C2", -0.15)}
    for ax, (name, block) in zip(axes[0], blocks.items()):
        for start, part in block["starts"].items():
            marker, color, shift = styles[start]
            runs = part["runs"]
            seeds = np.array([r["seed"] for r in runs]) + shift
            peaks = [100 * r["peak_accuracy"] for r in runs]
            s = part["summary"]
            ax.scatter(seeds, peaks, marker=marker, color=color, s=26, zorder=3,
                       label=f"{start} start, float64 ({s['stalled']}/{s['seeds']} stalled)")
            bad = [(x, p) for x, p, r in zip(seeds, peaks, runs) if r["stalled"]]
            if bad:
                ax.scatter(*zip(*bad), marker=marker, facecolors="none", edgecolors="C3", s=80, lw=1.2, zorder=4)
        gd_runs = block.get("gd_jax_float32_runs")
        if gd_runs:
            stalled = sum(r["stalled"] for r in gd_runs)
            ax.scatter([r["seed"] + 0.15 for r in gd_runs], [100 * r["peak_accuracy"] for r in gd_runs], marker="x",
                       color=["C3" if r["stalled"] else "k" for r in gd_runs], s=26, zorder=3,
                       label=f"gd_jax float32, chapter1.py ({stalled}/{len(gd_runs)} stalled, red)")
        published = block["config"]["published"]
        ax.axhline(100 * published, color="k", ls="--", lw=0.8, label=f"published peak {100 * published:.2f}%")
        ax.set(title=f"{name}: {block['config']['label']}", xlabel="seed", ylabel="peak test accuracy (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)  # seeds are whole numbers
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: stalls sit low
    fig.suptitle("network.py in float64 numpy: peak test accuracy per seed (red ring: stalled, an output neuron "
                 f"below {chapter1.DEAD_BELOW} on every test image at the end)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 from network.py's own randomness (default 20; "
                        "--quick: 2)")
    parser.add_argument("--gd-jax-seeds", type=int, help="seeds 0..N-1 from gd_jax's start (default 10; --quick: 2)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 30; --quick: 2)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these configurations: "
                        + ", ".join(CONFIGS))
    parser.add_argument("--gd-jax-results", help="gd_jax's own per-seed figures: a results.json of "
                        "experiments/chapter1.py (default experiments/results/chapter1/results.json, compared "
                        "when present and made with the same data, epochs and batch size)")
    args = common.parse(parser, argv, "network_py")
    args.seeds = (2 if args.quick else 20) if args.seeds is None else args.seeds
    args.gd_jax_seeds = (2 if args.quick else 10) if args.gd_jax_seeds is None else args.gd_jax_seeds
    args.epochs = (2 if args.quick else 30) if args.epochs is None else args.epochs
    for value, flag in ((args.seeds, "--seeds"), (args.gd_jax_seeds, "--gd-jax-seeds"), (args.epochs, "--epochs")):
        if value < 0 or (flag == "--epochs" and value < 1):
            parser.error(f"{flag} must be at least {1 if flag == '--epochs' else 0}, got {value}")
    if args.seeds + args.gd_jax_seeds == 0:
        parser.error("--seeds and --gd-jax-seeds are both 0: nothing to train; give either at least 1")
    for name in args.only or []:
        if name not in CONFIGS:
            parser.error(f"--only {name!r} is not a configuration; choose from {', '.join(CONFIGS)}")
    if args.gd_jax_results is not None and not os.path.isfile(args.gd_jax_results):
        parser.error(f"--gd-jax-results {args.gd_jax_results!r} is not a file; pass a results.json written by "
                     "experiments/chapter1.py, or leave the option out")
    try:
        path = args.gd_jax_results or DEFAULT_GD_JAX_RESULTS
        args.gd_jax = read_gd_jax_results(path) if os.path.isfile(path) else None
        args.gd_jax_path = path
    except (OSError, ValueError) as e:
        parser.error(str(e))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = common.load_data(args.idx_dir)
    train = data.train.take(5000) if args.quick else data.train  # as chapter1.py --quick
    setup = common.setup_record(
        data, batch_size=BATCH_SIZE, epochs=args.epochs, learning_rate=LEARNING_RATE, seeds=args.seeds,
        gd_jax_seeds=args.gd_jax_seeds, quick=args.quick, n_train=train.size, dead_below=chapter1.DEAD_BELOW,
        float_type="float64", test_digit_counts=np.bincount(np.asarray(data.test.y), minlength=10).tolist())
    # The comparison with gd_jax's float32 figures only means something for the same data and schedule.
    gd_jax_setup = (args.gd_jax or {}).get("setup", {})
    mismatch = setup_mismatch(setup, gd_jax_setup) if args.gd_jax is not None else []
    compare = args.gd_jax is not None and not mismatch
    shown_path = os.path.relpath(args.gd_jax_path)
    if args.gd_jax is None:
        setup["gd_jax_results_note"] = f"No gd_jax results at `{shown_path}`: the gd_jax start is not compared."
    elif mismatch:
        setup["gd_jax_results_note"] = (f"gd_jax's results at `{shown_path}` were made with other settings "
                                        f"({'; '.join(mismatch)}): not compared.")
    else:
        setup["gd_jax_results_note"] = (f"gd_jax's own float32 figures: `{shown_path}` (made by "
                                        f"`{gd_jax_setup.get('command')}` on {gd_jax_setup.get('date')}).")
    setup["gd_jax_results"] = shown_path
    print(setup["gd_jax_results_note"], flush=True)
    results: dict[str, Any] = {"setup": setup, "configs": {}}
    n_classes = 10
    seeds_of = {"numpy": args.seeds, "gd_jax": args.gd_jax_seeds}
    for name, config in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        sizes = list(config.sizes)
        block: dict[str, Any] = {"config": config._asdict(), "starts": {}}
        if compare and name in args.gd_jax["configs"]:
            theirs = args.gd_jax["configs"][name]["runs"]
            block["gd_jax_float32_runs"] = [{k: r[k] for k in ("seed", "peak_accuracy", "peak_epoch",
                                                               "final_accuracy", "stalled", "dead_digits")}
                                            for r in theirs]
            block["gd_jax_float32_summary"] = summarise(config, [r | {"seconds": 0.0} for r in theirs])
        results["configs"][name] = block
        for start in STARTS:
            if seeds_of[start] == 0:
                continue
            init, orders = START_FUNCTIONS[start]
            runs = []
            for seed in range(seeds_of[start]):
                run = train_seed(init(seed, sizes), orders(seed, train.size), train, data.test, epochs=args.epochs,
                                 n_classes=n_classes)
                runs.append({"seed": seed} | run)
                print(f"{name} {start} seed {seed}: peak {common.pct(run['peak_accuracy'])} (epoch "
                      f"{run['peak_epoch']}), stalled {yes_no(run['stalled'], run['dead_digits'])}, "
                      f"{run['seconds']:.0f} s", flush=True)
            part = {"runs": runs, "summary": summarise(config, runs)}
            if start == "gd_jax" and "gd_jax_float32_runs" in block:
                part["agreement"] = agreement(runs, block["gd_jax_float32_runs"])
            block["starts"][start] = part
            s = part["summary"]
            print(f"{name} {start} start: peak {common.pct(s['peak']['mean'])} +- {100 * s['peak']['std']:.2f} "
                  f"(min {common.pct(s['peak']['min'])}, max {common.pct(s['peak']['max'])}), "
                  f"stalled {s['stalled']}/{s['seeds']}", flush=True)
            # Written after each block, so that an interrupted run keeps the blocks it finished.
            common.write_results(args.out, results, markdown(results), {"peaks.png": lambda p: plot(results, p)})


if __name__ == "__main__":
    sys.exit(main())
