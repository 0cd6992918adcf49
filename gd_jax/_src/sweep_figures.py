"""The figures of a sweep folder: final accuracy against each swept value, and every cost curve.

Both figures cope with models that diverged, all of them included: a diverged model's
records after its last good epoch are not drawn, a grid point with no finite value is left
empty, an axis is log-scaled only when it has positive values to scale, and an axis with
nothing to show says so in its title instead of raising. No library warning (matplotlib's
empty legend, numpy's mean of nothing) reaches the caller.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

from gd_jax._src.plotting import pyplot, save_figure

__all__ = ["SWEEP_FIGURES", "plot_sweep"]

SWEEP_FIGURES = ("accuracy.png", "costs.png")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _point_values(result: Any, name: str, finals: list[float | None]) -> tuple[list[float], list[list[float]]]:
    """The sorted values of grid name ``name`` and, for each, the finite finals of its models."""
    values = sorted(result.grid[name])
    return values, [[finals[m["model"]] for m in result.models if m[name] == v and _finite(finals[m["model"]])]
                    for v in values]


def _accuracy_axis(ax: Any, result: Any, name: str, finals: list[float | None], metric: str) -> None:
    values, per_value = _point_values(result, name, finals)
    for v, ys in zip(values, per_value):
        ax.scatter([v] * len(ys), ys, color="C0", alpha=0.35, s=14)
    drawn = [(v, float(np.mean(ys)), float(np.std(ys))) for v, ys in zip(values, per_value) if ys]
    if drawn:
        xs, means, spread = zip(*drawn)
        ax.errorbar(xs, means, yerr=spread, color="C1", marker="o", capsize=4, label="mean ± std over seeds")
        ax.legend(fontsize="small")
        if all(v > 0 for v in xs) and len(xs) > 1 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
    else:  # nothing to scale: the swept values as labels over an empty axis
        ax.text(0.5, 0.5, "every model diverged", transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set(xlabel=name, ylabel=f"final {metric.replace('_', ' ')} (fraction)")
    ax.grid(alpha=0.3)


def _costs_axis(ax: Any, result: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    first = next(iter(result.grid), None)
    values = sorted(result.grid[first]) if first else [None]
    colours = {v: f"C{i % 10}" for i, v in enumerate(values)}
    labelled: set[Any] = set()
    positive = False
    for m in result.models:
        records = [r for r in result.records if r["model"] == m["model"] and r["status"] != "diverged"
                   and _finite(r["train_cost"])]
        if not records:
            continue
        v = m[first] if first else None
        costs = [r["train_cost"] for r in records]
        positive |= any(c > 0 for c in costs)
        ax.plot([r["epoch"] for r in records], costs, color=colours[v], alpha=0.6, marker="o" if len(records) == 1
                else None, label=None if v in labelled or first is None else f"{first} = {v:g}")
        labelled.add(v)
    if positive:
        ax.set_yscale("log")
    if labelled - {None}:
        ax.legend(fontsize="small")
    if not labelled:
        ax.text(0.5, 0.5, "every model diverged in its first epoch", transform=ax.transAxes, ha="center",
                va="center")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="training cost")
    ax.grid(alpha=0.3)


def plot_sweep(result: Any, out: str | os.PathLike, *, metric: str = "eval_accuracy", title: str = "") -> list[str]:
    """Writes a sweep's ``accuracy.png`` and ``costs.png`` into ``out``, atomically.

    ``accuracy.png``: the final ``metric`` (a fraction) against each swept value, each
    seed a dot, the mean and spread over the seeds; ``costs.png``: every model's training
    cost per epoch (whole-epoch ticks), up to its last good epoch.

    Args:
      result: a ``SweepResult``.
      out: the folder to write into.
      metric: the record field of ``accuracy.png``.
      title: a line naming the sweep (its settings), above each figure.

    Returns:
      The paths written.
    """
    plt = pyplot()
    diverged = sum(m["stop_reason"] == "diverged" for m in result.models)
    note = f"{len(result)} models" + (f", {diverged} diverged" if diverged else "")
    paths = [os.path.join(os.fspath(out), name) for name in SWEEP_FIGURES]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a figure of diverged models is an outcome: no library warning
        finals = result.final(metric)
        names = list(result.grid) or ["seed"]
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), constrained_layout=True, squeeze=False)
        grid_result = result if result.grid else _seeds_as_grid(result)
        for ax, name in zip(axes[0], names):
            _accuracy_axis(ax, grid_result, name, finals, metric)
        heading = f"{title} - {note}" if title else note
        fig.suptitle(f"final {metric.replace('_', ' ')} against each swept value\n{heading}", fontsize="medium")
        save_figure(fig, paths[0])

        fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
        _costs_axis(ax, result)
        ax.set_title(f"training cost per epoch\n{heading}", fontsize="medium")
        save_figure(fig, paths[1])
    return paths


class _SeedsGrid:
    """A seeds-only sweep seen as a grid over ``seed`` (for its accuracy figure)."""

    def __init__(self, result: Any):
        self.grid = {"seed": list(result.seeds)}
        self.models = result.models


def _seeds_as_grid(result: Any) -> Any:
    return _SeedsGrid(result)
