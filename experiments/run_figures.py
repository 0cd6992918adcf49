"""The run figures and TensorBoard events of the textbook network trained on full MNIST.

Trains Nielsen's chapter 1 network ([784, 30, 10] sigmoid, quadratic cost, eta 3.0, batches
of 10, 30 epochs) on the first 50,000 MNIST training digits, evaluating on the official
10,000 test digits after each epoch as the book's ``network.py`` does, then writes into the
output folder what ``gd-jax train`` writes into a run folder: ``history.png``,
``confusion.png``, ``misclassified.png``, ``hidden_weights.png``
(``gd_jax._src.plotting.write_run_figures``) and a TensorBoard event file
(``gd_jax._src.tensorboard.write_run_events``, with the parameter and gradient norms per epoch
that ``gd.norms_recorder`` records); plus ``results.md`` and ``results.json`` (the
history, the confusion matrix, the misclassified indices, the time each step took).

Full MNIST is read from a folder holding it in any packaging (``gd_jax._src.data.genuine``,
verified by content); by default the project's ``shared/data/mnist-full`` found beside the
repository or a folder above it.

Run: ``python experiments/run_figures.py [--mnist-dir DIR] [--epochs 30] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import gd_jax as gd
from gd_jax._src.analysis import confusion_matrix, misclassified
from gd_jax._src.data.genuine import read_genuine_mnist
from gd_jax._src.data.mnist import to_dataset
from gd_jax._src.plotting import write_run_figures
from gd_jax._src.tensorboard import write_run_events

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "run_figures"


def find_mnist_full() -> Path | None:
    """``shared/data/mnist-full`` beside the repository or beside a folder above it."""
    for folder in (HERE.parent, *HERE.parent.parents):
        candidate = folder / "shared" / "data" / "mnist-full"
        if candidate.is_dir():
            return candidate
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist-dir", type=Path, default=None, help="full MNIST in any packaging")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2, help="keys as gd-jax train --seed derives them")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    mnist_dir = args.mnist_dir or find_mnist_full()
    if mnist_dir is None:
        parser.error("full MNIST not found beside the repository; pass --mnist-dir")
    arrays = read_genuine_mnist(mnist_dir)
    train, test = to_dataset(*arrays["train"]).take(50_000), to_dataset(*arrays["test"])

    config = {"sizes": [784, 30, 10], "epochs": args.epochs, "batch_size": 10, "learning_rate": 3.0,
              "momentum": None, "nesterov": False, "cost": "quadratic", "activation": "sigmoid", "init": "normal",
              "seed": args.seed, "dataset": "mnist", "validation": False}
    init_key, shuffle_key = jax.random.split(jax.random.key(args.seed))
    params = gd.init_mlp(init_key, config["sizes"])
    start = time.perf_counter()
    params, history = gd.fit(params, train, eval_data=test, epochs=args.epochs, batch_size=10,
                             optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key,
                             on_epoch_end=gd.norms_recorder(train, cost=gd.quadratic_cost, n_classes=10))
    fit_seconds = time.perf_counter() - start
    test_cost, test_accuracy = gd.evaluate(params, test, cost=gd.quadratic_cost)

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    figures = write_run_figures(args.out, params, test, history, config, test_accuracy=test_accuracy,
                                title="the textbook network on full MNIST")
    figures_seconds = time.perf_counter() - start
    start = time.perf_counter()
    events = write_run_events(args.out, history, config, figures=list(figures.values()), test_cost=test_cost,
                              test_accuracy=test_accuracy)
    events_seconds = time.perf_counter() - start

    counts = confusion_matrix(params, test)
    wrong = misclassified(params, test)
    results = {
        "config": config, "history": history.to_dict(), "test_cost": test_cost, "test_accuracy": test_accuracy,
        "confusion_matrix": counts.tolist(), "misclassified": wrong.tolist(),
        "seconds": {"fit": fit_seconds, "figures": figures_seconds, "tensorboard_events": events_seconds},
        "figures": sorted(figures), "events": os.path.basename(events),
        "machine": {"platform": platform.platform(), "jax": jax.__version__, "devices": str(jax.devices())},
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    best = int(np.argmax(history["eval_accuracy"]))
    lines = [
        "# The textbook network on full MNIST: run figures",
        "",
        f"`python experiments/run_figures.py --epochs {args.epochs} --seed {args.seed}`: [784, 30, 10] sigmoid, "
        "quadratic cost, eta 3.0, batches of 10, trained on the first 50,000 MNIST training digits, evaluated "
        "on the 10,000 test digits after each epoch.",
        "",
        f"- final test accuracy **{test_accuracy:.4f}** ({int(np.trace(counts))} / {counts.sum()}), test cost "
        f"{test_cost:.4f}; best epoch {history['epoch'][best]} at {history['eval_accuracy'][best]:.4f}",
        f"- {len(wrong)} test digits misclassified; the most confused pair: true "
        f"{_most_confused(counts)[0]} called {_most_confused(counts)[1]} "
        f"({_most_confused(counts)[2]} times)",
        f"- training {fit_seconds:.1f} s ({history.compile_seconds:.1f} s of it compiling), the four figures "
        f"{figures_seconds:.1f} s, the TensorBoard events {events_seconds:.2f} s ({platform.machine()}, "
        f"{jax.devices()[0].platform})",
        "",
        *[f"![{name}]({name})" for name in sorted(figures)],
        "",
    ]
    (args.out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines[:7]))


def _most_confused(counts: np.ndarray) -> tuple[int, int, int]:
    off = counts.copy()
    np.fill_diagonal(off, 0)
    true, answer = np.unravel_index(int(off.argmax()), off.shape)
    return int(true), int(answer), int(off[true, answer])


if __name__ == "__main__":
    main()
