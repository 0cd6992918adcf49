"""Learning curves of a run as a PNG: cost and accuracy per epoch."""

from __future__ import annotations

import io
import os

from gd_jax.serialization import atomic_write_bytes
from gd_jax.train import History

__all__ = ["plot_history"]


def plot_history(history: History, path: str | os.PathLike, *, title: str | None = None) -> None:
    """Draws training/eval cost and eval accuracy against the epoch, and saves the figure to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    epochs = history["epoch"]
    fig, (ax_cost, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_cost.plot(epochs, history["train_cost"], marker=".", label="training")
    if any(c is not None for c in history["eval_cost"]):
        ax_cost.plot(epochs, history["eval_cost"], marker=".", label="evaluation")
    ax_cost.set(xlabel="epoch", ylabel="cost", title="cost")
    ax_cost.legend()
    accuracies = history["eval_accuracy"]
    if any(a is not None for a in accuracies):
        ax_acc.plot(epochs, [100 * a for a in accuracies], marker=".", color="C2")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="evaluation accuracy")
    for ax in (ax_cost, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
