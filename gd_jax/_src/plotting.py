"""Figures a person reads at a glance: learning curves, confusion matrix, mistakes, hidden neurons.

matplotlib is imported only inside the drawing functions (with the file-only Agg backend), so
``import gd_jax`` never pays for it. Every figure is rendered to memory and written with
``atomic_write_bytes``: a crash never leaves a half-written PNG. Sizes are fixed (``DPI`` dots
per inch, no tight bounding box), so a figure's pixel size depends only on what it shows.

``write_run_figures`` writes the four figures of a run folder; the numbers behind them come
from ``gd_jax._src.analysis`` (``confusion_matrix``, ``misclassified``, ``hidden_weight_images``).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gd_jax._src.analysis import (
    PredictFn,
    confusion_matrix,
    hidden_weight_images,
    misclassified,
    output_activations,
)
from gd_jax._src.data.dataset import Dataset
from gd_jax._src.extras import require
from gd_jax._src.network import Params
from gd_jax._src.serialization import atomic_write_bytes
from gd_jax._src.train import History

__all__ = [
    "DPI",
    "RUN_FIGURES",
    "describe_config",
    "plot_confusion_matrix",
    "plot_hidden_weights",
    "plot_history",
    "plot_misclassified",
    "write_run_figures",
]

DPI = 100
# The figures of a run folder, by file name, in the order write_run_figures draws them.
RUN_FIGURES = ("history.png", "confusion.png", "misclassified.png", "hidden_weights.png")


def pyplot():
    matplotlib = require("matplotlib", purpose="figures")

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def warm_up() -> None:
    """Pays matplotlib's first-figure costs now: pyplot's import, the font's loading, the Agg canvas.

    A first figure costs about a second more than the next one. ``gd-jax train`` calls this in a
    background thread while it trains (XLA releases the GIL, so both cores work), and joins it
    before drawing: the run's figures then cost only their own drawing. Uses no pyplot state.
    """
    pyplot()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=DPI)
    fig.text(0.5, 0.5, "0 1", fontsize=8, fontweight="bold")
    fig.savefig(io.BytesIO(), format="png")


def save_figure(fig, path: str | os.PathLike) -> None:
    plt = pyplot()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


def describe_config(config: Mapping[str, Any]) -> str:
    """One line naming a run's settings, e.g. for a figure's title.

    Names the network, activation, cost, learning rate, batch size, momentum, L2
    regularisation, the stopping and schedule rules, init and seed (those of them ``config``,
    a run's ``config.json``, holds), each once.
    """
    parts = []
    if "sizes" in config:
        parts.append(str(list(config["sizes"])))
    if "activation" in config:
        parts.append(f"{config['activation']}")
    if "cost" in config:
        parts.append(f"{config['cost']} cost")
    if "learning_rate" in config:
        parts.append(f"eta {config['learning_rate']:g}")
    if "batch_size" in config:
        parts.append(f"batch {config['batch_size']}")
    if "momentum" in config:
        momentum = config["momentum"]
        nesterov = " (Nesterov)" if config.get("nesterov") else ""
        parts.append("no momentum" if momentum is None else f"momentum {momentum:g}{nesterov}")
    if config.get("lmbda"):
        parts.append(f"L2 lambda {config['lmbda']:g}")
    if config.get("patience") is not None:
        parts.append(f"patience {config['patience']}")
    if config.get("eta_schedule") is not None:
        parts.append(f"eta halved after {config['eta_schedule']} flat epochs")
    if "init" in config:
        parts.append(f"init {config['init']}")
    if "seed" in config:
        parts.append(f"seed {config['seed']}")
    return ", ".join(parts)


def _eval_name(config: Mapping[str, Any] | None, eval_label: str | None) -> str:
    if eval_label is not None:
        return eval_label
    if config is None or "validation" not in config:
        return "evaluation"
    return "validation" if config["validation"] else "test"


def plot_history(
    history: History | Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    config: Mapping[str, Any] | None = None,
    eval_label: str | None = None,
    test_accuracy: float | None = None,
) -> None:
    """Draws the cost and accuracy per epoch, training and evaluation data together (1100x450 px).

    Args:
      history: the run's ``History`` (or its ``to_dict()``, as in ``history.json``). Columns
        that are absent or None are left out: ``train_accuracy`` is drawn when recorded.
      path: the PNG to write (atomically).
      title: the figure's first title line; default "learning curves". The settings are
        the second line's: a title that names them too would state them twice.
      config: the run's settings (``config.json``): the second title line names them
        (``describe_config``), and its ``validation`` says whether the evaluation curve is
        the test or the validation set.
      eval_label: what the evaluation data is, overriding ``config``: "test", "validation".
      test_accuracy: the final test accuracy, drawn as a dashed line and given in the title.
    """
    if not isinstance(history, History):
        history = History.from_dict(dict(history))
    records = history.epochs
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in records]
    eval_name = _eval_name(config, eval_label)

    def column(name: str) -> list[float] | None:
        values = [r.get(name) for r in records]
        return None if all(v is None for v in values) else [np.nan if v is None else v for v in values]

    fig, (ax_cost, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for ax, kind in ((ax_cost, "cost"), (ax_acc, "accuracy")):
        for who, style in (("train", "C0"), ("eval", "C1")):
            values = column(f"{who}_{kind}")
            if values is not None:
                label = "training data" if who == "train" else f"{eval_name} data"
                ax.plot(epochs, values, marker=".", color=style, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:  # whole epochs, half an epoch of margin (a single epoch would otherwise get fractional ticks)
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
    if test_accuracy is not None:
        ax_acc.axhline(test_accuracy, color="C3", linestyle="--", linewidth=1,
                       label=f"final test accuracy {test_accuracy:.4f}")
    ax_cost.set(xlabel="epoch", ylabel="cost (mean over the data)", title="cost")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (fraction correct)", title="accuracy")
    for ax in (ax_cost, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if not records:
        ax_cost.text(0.5, 0.5, "no finished epoch", transform=ax_cost.transAxes, ha="center")
    lines = [title or "learning curves"]
    if test_accuracy is not None:
        lines[0] += f" - final test accuracy {test_accuracy:.4f}"
    if config:
        lines.append(describe_config(config))
    fig.suptitle("\n".join(lines))
    save_figure(fig, path)


def plot_confusion_matrix(counts: np.ndarray, path: str | os.PathLike, *, title: str | None = None,
                          data_name: str = "test") -> None:
    """Draws a confusion matrix (700x620 px): colour the row's fraction, each cell its count.

    Args:
      counts: ``C[true, answer]``, e.g. from ``gd.confusion_matrix``.
      path: the PNG to write.
      title: the title; default names the data, the accuracy and the number of examples.
      data_name: what the data is, for the default title.
    """
    counts = np.asarray(counts)
    n = counts.shape[0]
    total = int(counts.sum())
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6.2), constrained_layout=True)
    rows = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if fractions[i, j] > 0.6 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set(xlabel="the network's answer", ylabel="true digit")
    fig.colorbar(image, ax=ax, label="fraction of the true digit's examples")
    accuracy = np.trace(counts) / total if total else float("nan")
    ax.set_title(title or f"confusion matrix on the {data_name} set: accuracy {accuracy:.4f} of {total:,} examples")
    save_figure(fig, path)


def _mosaic_axes(fig, rows: int, columns: int, cell: tuple[float, float], top_in: float, bottom_in: float):
    """One axes spanning the figure's cells, in data units of pixels (y down), without frame.

    Drawing every cell into one axes (images as one mosaic, bars as one ``bar`` call) takes a
    fraction of the time of one axes per cell: 64 axes cost about 3 s here, one about 0.3 s.
    """
    height_in = fig.get_size_inches()[1]
    ax = fig.add_axes((0.01, bottom_in / height_in, 0.98, 1 - (top_in + bottom_in) / height_in))
    ax.set_xlim(0, columns * cell[0])
    ax.set_ylim(rows * cell[1], 0)
    ax.set_axis_off()
    return ax


def _rectangle(left: float, top: float, width: float, height: float) -> list[tuple[float, float]]:
    """The four corners of an axis-aligned rectangle, for a ``PolyCollection``."""
    return [(left, top), (left + width, top), (left + width, top + height), (left, top + height)]


def plot_misclassified(
    params: Params,
    data: Dataset,
    path: str | os.PathLike,
    *,
    indices: Sequence[int] | None = None,
    max_digits: int = 32,
    activation: str = "sigmoid",
    predict_fn: PredictFn | None = None,
    image_shape: tuple[int, int] = (28, 28),
    data_name: str = "test",
) -> np.ndarray:
    """Draws a gallery of misclassified examples with their labels and output activations.

    Each cell shows the digit and, below it, the output activations as bars from 0 to 1, each
    labelled with its class (green the true digit, red the network's answer; their columns are
    shaded over the whole 0-1 range and every bar has an outline, so that both show even when
    every activation is near 0). 8 columns of 140x200 px, plus 100 px of titles:
    1120 x (rows * 200 + 100) px.

    Args:
      params: the network.
      data: the examples (x flattened images).
      path: the PNG to write.
      indices: which examples to draw; default the first ``max_digits`` misclassified ones.
      max_digits: the most cells drawn.
      activation, predict_fn: how the network answers (see ``gd.confusion_matrix``).
      image_shape: the shape the rows of ``data.x`` were flattened from.
      data_name: what the data is, for the title.

    Returns:
      The indices drawn.
    """
    wrong = misclassified(params, data, activation=activation, predict_fn=predict_fn)
    chosen = np.asarray(wrong if indices is None else indices, dtype=np.int64)[:max_digits]
    x = np.asarray(data.x)
    y = np.asarray(data.y)
    # All rows, as misclassified just ran them: the same compiled program, no new one for len(chosen) rows.
    a = output_activations(params, x, activation=activation, predict_fn=predict_fn)[chosen]
    columns = 8
    rows = max(1, math.ceil(len(chosen) / columns))
    h, w = image_shape
    # A cell in image pixels: a title line, the digit, the bars (0 to 1), their class labels.
    title_h, gap, bars_h, labels_h = 0.25 * h, 0.12 * h, 0.62 * h, 0.22 * h
    cell = (1.25 * w, title_h + h + gap + bars_h + labels_h + gap)
    plt = pyplot()
    from matplotlib.collections import LineCollection, PolyCollection

    fig = plt.figure(figsize=(columns * 1.4, rows * 2.0 + 1.0))
    ax = _mosaic_axes(fig, rows, columns, cell, top_in=0.6, bottom_in=0.4)
    mosaic = np.full((round(rows * cell[1]), round(columns * cell[0])), np.nan)
    # Frames, shades, bars and base lines are each one collection: one draw call, and the axes'
    # data limits updated once (as separate patches, about 400 of them, they took most of the time).
    frames, shades, shade_colours, bars, bar_colours, base_lines = [], [], [], [], [], []
    n_classes = a.shape[-1] if a.size else 10
    bar_w = w / n_classes
    label_size = 7 if n_classes <= 10 else max(4.5, 70 / n_classes)  # class labels fit under their bars
    for position, (index, scores) in enumerate(zip(chosen, a)):
        row, col = divmod(position, columns)
        left, top = col * cell[0] + 0.125 * w, row * cell[1] + title_h
        mosaic[round(top):round(top) + h, round(left):round(left) + w] = x[index].reshape(image_shape)
        answer, truth = int(scores.argmax()), int(y[index])
        ax.text(left + w / 2, top - 1, f"#{index}: true {truth}, net {answer}", ha="center", va="bottom", fontsize=8)
        frames.append(_rectangle(round(left) - 0.5, round(top) - 0.5, w, h))
        base = top + h + gap + bars_h
        # The true digit's and the answer's columns are shaded over their whole 0-1 range, so
        # that they show where they are even when every activation is near 0.
        for k, colour in ((truth, "C2"), (answer, "C3")):
            if 0 <= k < n_classes:
                shades.append(_rectangle(left + k * bar_w + 0.05 * bar_w, base - bars_h, 0.9 * bar_w, bars_h))
                shade_colours.append(colour)
        for k, score in enumerate(np.clip(scores, 0, 1)):
            colour = "C2" if k == truth else "C3" if k == answer else "0.55"
            # y grows downwards: a bar rises from its base by a negative height.
            bars.append(_rectangle(left + (k + 0.1) * bar_w, base, 0.8 * bar_w, -bars_h * float(score)))
            bar_colours.append(colour)
            ax.text(left + (k + 0.5) * bar_w, base + 0.5, str(k), ha="center", va="top", fontsize=label_size,
                    color=colour if colour != "0.55" else "0.3", fontweight="bold" if k in (truth, answer) else None)
        base_lines.append([(left, base), (left + w, base)])
        ax.text(left - 0.4, base, "0", ha="right", va="center", fontsize=7, color="0.3")
        ax.text(left - 0.4, base - bars_h, "1", ha="right", va="center", fontsize=7, color="0.3")
    cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, extent=(0, mosaic.shape[1], mosaic.shape[0], 0),
              interpolation="nearest")
    ax.add_collection(PolyCollection(frames, facecolors="none", edgecolors="black", linewidths=0.5))
    ax.add_collection(PolyCollection(shades, facecolors=shade_colours, alpha=0.15, linewidths=0))
    ax.add_collection(LineCollection(base_lines, colors="0.3", linewidths=0.5))
    # An outline as wide as the bar: a bar of activation 0 still shows as a line in its colour.
    ax.add_collection(PolyCollection(bars, facecolors=bar_colours, edgecolors=bar_colours, linewidths=1.5,
                                     zorder=3))  # over the base line
    ax.set_xlim(0, columns * cell[0])
    ax.set_ylim(rows * cell[1], 0)
    if not len(chosen):
        ax.text(columns * cell[0] / 2, cell[1] / 2, f"no misclassified {data_name} examples", ha="center")
    fig.suptitle(f"misclassified {data_name} digits: {len(wrong):,} of {len(y):,} (first {len(chosen)} shown)")
    fig.supxlabel(f"bars: the output activation of each class 0-{n_classes - 1}, from 0 to 1 (green the true digit, "
                  "red the network's answer, their columns shaded)", fontsize=10)
    save_figure(fig, path)
    return chosen


def plot_hidden_weights(params: Params, path: str | os.PathLike, *, image_shape: tuple[int, int] | None = None,
                        max_neurons: int = 100) -> None:
    """Draws each hidden neuron's input weights as an image (red positive, blue negative).

    Each neuron has its own symmetric colour scale, ``+-max|w|`` of that neuron (given above
    it), so the pattern of every neuron is visible whatever its size. ``ceil(sqrt(n))``
    columns of 150x160 px plus 100 px of titles: 30 neurons give 900 x 900 px.
    """
    images = hidden_weight_images(params, image_shape)[:max_neurons]
    n, h, w = images.shape
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    title_h, gap = 0.3 * h, 0.2 * h
    cell = (1.1 * w, title_h + h + gap)
    plt = pyplot()
    fig = plt.figure(figsize=(columns * 1.5, rows * 1.6 + 1.0))
    ax = _mosaic_axes(fig, rows, columns, cell, top_in=0.6, bottom_in=0.4)
    mosaic = np.full((round(rows * cell[1]), round(columns * cell[0])), np.nan)
    for j, image in enumerate(images):
        row, col = divmod(j, columns)
        left, top = round(col * cell[0] + 0.05 * w), round(row * cell[1] + title_h)
        scale = float(np.abs(image).max()) or 1.0
        mosaic[top:top + h, left:left + w] = image / scale
        ax.text(left + w / 2, top - 1, f"neuron {j}  |w|<={scale:.2g}", ha="center", va="bottom", fontsize=7)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, extent=(0, mosaic.shape[1], mosaic.shape[0], 0),
              interpolation="nearest")
    ax.set_xlim(0, columns * cell[0])
    ax.set_ylim(rows * cell[1], 0)
    fig.suptitle(f"input weights of the first layer's {n} hidden neurons, as {h}x{w} images")
    fig.supxlabel("each image: one neuron's weight for each input pixel; red: ink there raises the neuron's "
                  "input, blue: lowers it", fontsize=9)
    save_figure(fig, path)


def write_run_figures(
    run_dir: str | os.PathLike,
    params: Params,
    test_data: Dataset,
    history: History | Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    *,
    activation: str | None = None,
    predict_fn: PredictFn | None = None,
    test_accuracy: float | None = None,
    title: str | None = None,
) -> dict[str, str]:
    """Writes a run folder's figures: ``RUN_FIGURES``, each atomically.

    ``history.png`` (learning curves, train and evaluation together), ``confusion.png`` (on
    ``test_data``), ``misclassified.png`` (a gallery of the test digits it gets wrong) and
    ``hidden_weights.png`` (the first layer's weights as images; only for gd_jax's own MLP
    whose inputs are square images).

    Args:
      run_dir: the run folder (must exist).
      params: the trained network.
      test_data: the test set.
      history: the run's history.
      config: the run's settings (``config.json``): titles, the activation, test vs validation.
      activation: the neurons' non-linearity; default ``config["activation"]``, else sigmoid.
      predict_fn: for models other than gd_jax's MLP (then no hidden-weights figure).
      test_accuracy: the final test accuracy; computed from the confusion matrix when None.
      title: the learning curves' first title line.

    Returns:
      ``{file name: path}`` of the figures written.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run folder not found: {run_dir!r}; create it first (figures go into it)")
    config = dict(config or {})
    activation = activation or config.get("activation", "sigmoid")
    paths = {name: os.path.join(run_dir, name) for name in RUN_FIGURES}
    counts = confusion_matrix(params, test_data, activation=activation, predict_fn=predict_fn)
    if test_accuracy is None:
        test_accuracy = float(np.trace(counts) / counts.sum())
    plot_history(history, paths["history.png"], title=title, config=config, test_accuracy=test_accuracy)
    plot_confusion_matrix(counts, paths["confusion.png"])
    plot_misclassified(params, test_data, paths["misclassified.png"], activation=activation, predict_fn=predict_fn)
    written = dict(paths)
    n_inputs = np.shape(params[0]["w"])[0] if predict_fn is None else 0
    if n_inputs and math.isqrt(n_inputs) ** 2 == n_inputs:  # gd_jax's MLP on square images
        plot_hidden_weights(params, paths["hidden_weights.png"])
    else:
        del written["hidden_weights.png"]
    return written
