"""What the experiment scripts share: data, many models trained as one program, statistics, output.

**Many models, one program.** ``train_models`` trains a group of networks of one shape (seeds,
learning rates, L2 strengths) as one compiled epoch: gd_jax's sweep epoch
(``gd.make_sweep_epoch``, ``gd.make_epoch`` vmapped over the stacked parameters, the
hyperparameters and the batch orders), so a 20-seed run compiles once. It is ``gd.sweep``'s
engine with what the experiments add around it: several evaluation sets, a probe of every
member after each epoch, and the textbook's halving schedule per member. Each member draws
its keys exactly as ``gd-jax train --seed`` does (``gd.seed_keys``) and visits the rows in
``fit``'s order (``shuffled_order(fold_in(shuffle_key, epoch), n)``), so a member's curve is the
curve ``gd.fit`` computes for that seed (equal up to float rounding of the batched products;
``tests/test_experiments.py`` checks it).

**Data.** ``--idx-dir DIR`` reads full MNIST from four IDX files (the textbook's split: 50,000
training, the last 10,000 training digits as validation, the 10,000 test digits); without it the
embedded sample (5,000 training digits, of which the last 833 are validation, and the official
test set). ``--quick`` shrinks every experiment to a few seeds and epochs for CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

import gd_jax as gd
from gd_jax._src.serialization import atomic_write_bytes
from gd_jax._src.train import cost_and_accuracy

Params = list[dict[str, jax.Array]]


class Data(NamedTuple):
    """The three sets an experiment uses, and where they came from."""

    train: gd.Dataset
    validation: gd.Dataset
    test: gd.Dataset
    source: str  # "full MNIST (...)" or "embedded sample"


class Member(NamedTuple):
    """One network of a group trained together: its seed, learning rate and L2 strength."""

    seed: int
    learning_rate: float
    lmbda: float = 0.0  # the textbook's L2 regularisation, lambda/(2n) sum w^2 with n the training-set size


class GroupRun(NamedTuple):
    """What ``train_models`` measured, members along the last axis.

    Attributes:
      curves: name -> ``(epochs, members)`` array: ``train_cost``, ``train_accuracy`` and, per
        evaluation set ``s``, ``s_cost`` and ``s_accuracy``; with ``eta_halving`` also
        ``learning_rate_scale`` (the scale each epoch trained with, 0 once stopped).
      initial: name -> ``(members,)``: the same measurements of the untrained networks.
      probes: per epoch (index 0: the untrained networks) the ``probe`` output, members first.
      params: the final parameters, stacked along a leading member axis.
      stopped_after: per member, the epoch after which ``eta_halving`` stopped it (None: ran on).
      seconds: wall time of the training epochs, compilation and measurements excluded.
      compile_seconds: time spent compiling.
    """

    curves: dict[str, np.ndarray]
    initial: dict[str, np.ndarray]
    probes: list[Any]
    params: Params
    stopped_after: list[int | None]
    seconds: float
    compile_seconds: float


def stack(trees: Sequence[Any]) -> Any:
    """Stacks equal-structured pytrees along a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any, i: int) -> Any:
    """Member ``i`` of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[i], tree)


def train_models(
    sizes: Sequence[int],
    members: Sequence[Member],
    *,
    cost: gd.costs.Cost,
    init: str,
    batch_size: int,
    epochs: int,
    train: gd.Dataset,
    evals: dict[str, gd.Dataset],
    probe: Callable[[Params, jax.Array, jax.Array], Any] | None = None,
    probe_on: str = "test",
    eta_halving: int | None = None,
    watch: str = "validation",
    log: Callable[[str], None] | None = print,
) -> GroupRun:
    """Trains every member on ``train`` for ``epochs`` epochs as one vmapped, compiled epoch.

    Args:
      sizes: the layer sizes shared by all members.
      members: one ``Member(seed, learning_rate)`` per network.
      cost: ``cost(params, x, y_onehot)``, unregularised: each member adds its own L2 term
        ``lmbda/(2n) sum w^2`` (``gd.with_l2``'s, with a per-member lambda).
      init: ``"normal"`` (chapter 1) or ``"scaled"`` (chapter 3).
      batch_size: mini-batch size (the last batch of an epoch may be smaller, as in ``fit``).
      epochs: epochs to train.
      train: the training set.
      evals: name -> evaluation set, measured (cost, accuracy) after every epoch.
      probe: an optional ``probe(params, x, y) -> pytree`` of one network on the evaluation set
        ``probe_on``, measured for every member before training and after every epoch.
      probe_on: the evaluation set the probe sees.
      eta_halving: the textbook's schedule: halve a member's learning rate each time its
        ``watch`` accuracy has not improved for this many epochs, stop the member once it has
        fallen to 1/128 of its start (the rule of ``gd.fit(eta_halving=...)``).
      watch: the evaluation set ``eta_halving`` watches.
      log: where a line per epoch goes (None: silent).

    Returns:
      A ``GroupRun``.
    """
    n_classes = sizes[-1]
    x, y = jnp.asarray(train.x), jnp.asarray(train.y)
    n = x.shape[0]
    keys = [gd.seed_keys(m.seed) for m in members]
    params = stack([gd.init_mlp(k[0], list(sizes), init) for k in keys])
    rates = np.array([m.learning_rate for m in members], dtype=np.float32)
    lmbdas = jnp.array([m.lmbda for m in members], dtype=jnp.float32)

    def regularised(lmbda):  # gd.with_l2(cost, lmbda, n), written out so that lmbda may be traced
        return lambda p, x, y: cost(p, x, y) + (lmbda / n) * gd.l2_penalty(p)

    # gd.sweep's compiled epoch, each member with its own batch order, learning rate and lambda
    # (traced scalars); plain sgd keeps no state, so the members' parameters are the whole state.
    sweep_epoch = gd.make_sweep_epoch(lambda h: regularised(h["lmbda"]), lambda h: gd.sgd(h["learning_rate"]),
                                      batch_size=batch_size, n_classes=n_classes, shuffle="per_model")

    def one_epoch(p, rates, lmbdas, orders, x, y):
        state, finite = sweep_epoch(gd.TrainState(p, jax.vmap(gd.sgd(1.0).init)(p)),
                                    {"learning_rate": rates, "lmbda": lmbdas}, x, y, orders)
        return state.params, finite

    measure = jax.vmap(lambda p, lmbda, x, y: cost_and_accuracy(p, x, y, cost=regularised(lmbda),
                                                                predict_fn=gd.forward, n_classes=n_classes),
                       in_axes=(0, 0, None, None))
    sets = {"train": (x, y)} | {name: (jnp.asarray(d.x), jnp.asarray(d.y)) for name, d in evals.items()}

    def measure_all(p, lmbdas, sets):
        out = {}
        for name, (sx, sy) in sets.items():
            out[f"{name}_cost"], out[f"{name}_accuracy"] = measure(p, lmbdas, sx, sy)
        if probe is not None:
            out["probe"] = jax.vmap(probe, in_axes=(0, None, None))(p, *sets[probe_on])
        return out

    orders = lambda e: np.stack([gd.shuffled_order(jax.random.fold_in(k[1], e), n) for k in keys])  # noqa: E731
    start = time.perf_counter()
    epoch_fn = jax.jit(one_epoch).lower(
        params, rates, lmbdas, orders(0), x, y).compile()
    measure_fn = jax.jit(measure_all).lower(params, lmbdas, sets).compile()
    compile_seconds = time.perf_counter() - start

    first = jax.device_get(measure_fn(params, lmbdas, sets))
    probes = [first.pop("probe", None)]
    initial = {k: np.asarray(v) for k, v in first.items()}
    curves: dict[str, list] = {k: [] for k in initial}
    scale = np.ones(len(members), dtype=np.float32)
    best = np.full(len(members), -np.inf)
    since_change = np.zeros(len(members), dtype=int)
    stopped_after: list[int | None] = [None] * len(members)
    if eta_halving is not None:
        curves["learning_rate_scale"] = []
    seconds = 0.0
    for e in range(epochs):
        start = time.perf_counter()
        params, _ = epoch_fn(params, rates * scale, lmbdas, orders(e), x, y)
        jax.block_until_ready(params)
        seconds += time.perf_counter() - start
        m = jax.device_get(measure_fn(params, lmbdas, sets))
        probes.append(m.pop("probe", None))
        for k, v in m.items():
            curves[k].append(np.asarray(v))
        if eta_halving is not None:
            curves["learning_rate_scale"].append(scale.copy())
            for i, acc in enumerate(m[f"{watch}_accuracy"]):
                if stopped_after[i] is not None:
                    continue
                if acc > best[i]:
                    best[i], since_change[i] = acc, 0
                    continue
                since_change[i] += 1
                if since_change[i] >= eta_halving:
                    scale[i], since_change[i] = scale[i] / 2, 0
                    if scale[i] <= 1 / 128:
                        scale[i], stopped_after[i] = 0.0, e + 1  # lr 0: the member no longer moves
            if all(s is not None for s in stopped_after):
                break
        if log is not None:
            shown = next(iter(evals), "train")
            acc = m[f"{shown}_accuracy"]
            log(f"  epoch {e + 1:3d}/{epochs}: {shown} accuracy mean {np.mean(acc):.4f} "
                f"(min {np.min(acc):.4f}, max {np.max(acc):.4f}), {seconds:.0f} s")
    return GroupRun({k: np.array(v) for k, v in curves.items()}, initial, probes, params, stopped_after,
                    seconds, compile_seconds)


# --- statistics -------------------------------------------------------------------------------------------

def describe(values: Sequence[float], published: float | None = None) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max of ``values`` (fractions), and how many reach ``published``."""
    v = np.asarray(values, dtype=float)
    out = {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
           "min": float(v.min()), "max": float(v.max())}
    if published is not None:
        out["published"] = published
        out["reaching_published"] = int(np.sum(v >= published - 1e-9))
        out["gap_points"] = 100 * (out["mean"] - published)
    return out


def pct(fraction: float | None, digits: int = 2) -> str:
    """A fraction as a percentage string, ``0.9542 -> '95.42%'``."""
    return "-" if fraction is None or not math.isfinite(fraction) else f"{100 * fraction:.{digits}f}%"


def stats_cells(d: dict[str, Any]) -> str:
    """``mean +- std | min | max | reaching`` markdown cells of a ``describe`` dict."""
    reach = f"{d['reaching_published']} / {d['n']}" if "reaching_published" in d else "-"
    return (f"{pct(d['mean'])} +- {100 * d['std']:.2f} | {pct(d['min'])} | {pct(d['max'])} | {reach}")


STATS_HEADER = "| mean +- std | min | max | seeds reaching the published figure |"
STATS_RULE = "| ---: | ---: | ---: | ---: |"


# --- command line, data, output --------------------------------------------------------------------------

class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad value is one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--idx-dir", help="full MNIST: a folder with the four MNIST IDX files (default: the "
                        "embedded 5,000-digit sample)")
    parser.add_argument("--quick", action="store_true", help="a few seeds and epochs (CI): checks the machinery, "
                        "not the published figures")
    parser.add_argument("--out", help="output folder (default runs/<experiment>/<date-time>)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing --out folder")


def prepare_out(out: str | None, experiment: str, overwrite: bool) -> str:
    """The output folder; refuses a file, or a non-empty folder unless ``overwrite``."""
    if out is None:
        out = os.path.join("runs", experiment, time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a folder; choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ValueError(f"output folder {out!r} already exists and is not empty; pass --overwrite or choose "
                         "another --out")
    return out


def parse(parser: argparse.ArgumentParser, argv: list[str] | None, experiment: str) -> argparse.Namespace:
    """Parses the arguments; bad values end in one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    try:
        args.out = prepare_out(args.out, experiment, args.overwrite)
        if args.idx_dir is not None and not os.path.isdir(args.idx_dir):
            raise FileNotFoundError(f"--idx-dir {args.idx_dir!r} is not a folder; pass the folder holding the "
                                    "four MNIST IDX files (e.g. ../shared/data/mnist-full)")
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    return args


def load_data(idx_dir: str | None) -> Data:
    """Full MNIST (50,000 / 10,000 / 10,000) from ``idx_dir``, else the embedded sample."""
    if idx_dir is None:
        train, validation, test = gd.load_mnist("sample", validation=True)
        return Data(train, validation, test, "the embedded MNIST sample")
    train, validation, test = gd.load_mnist("idx", idx_dir=idx_dir, validation=True)
    return Data(train, validation, test, "full MNIST")


def setup_record(data: Data | None, **settings: Any) -> dict[str, Any]:
    """The versions, machine, command and data behind a result, for results.json and results.md."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    record = {
        "command": " ".join(["python", *[os.path.relpath(sys.argv[0])], *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gd_jax": gd.__version__, "git_commit": commit or None, "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
    }
    if data is not None:
        record |= {"data": data.source, "n_train": data.train.size, "n_validation": data.validation.size,
                   "n_test": data.test.size}
    return record | settings


def setup_lines(setup: dict[str, Any]) -> list[str]:
    """Markdown lines that say how a result was made."""
    lines = [f"Made by `{setup['command']}` on {setup['date']}: gd_jax {setup['gd_jax']}"
             + (f" (commit {setup['git_commit']})" if setup.get("git_commit") else "")
             + f", jax {setup['jax']}, numpy {setup['numpy']}, Python {setup['python']}, "
             f"{setup['device']} ({setup['cpu_count']} cores)."]
    if "data" in setup:
        lines.append(f"Data: {setup['data']}, {setup['n_train']:,} training, {setup['n_validation']:,} "
                     f"validation and {setup['n_test']:,} test digits.")
    if setup.get("quick"):
        lines.append("**Quick run** (`--quick`): a few seeds and epochs to check the machinery; these numbers are "
                     "not comparable with the published ones.")
    return lines + [""]


def to_json(value: Any) -> Any:
    """Arrays and numpy scalars as plain lists and numbers; NaN and inf as None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return to_json(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_results(out: str, results: dict[str, Any], markdown: str, figures: dict[str, Callable[[str], None]]) -> None:
    """Writes results.json, results.md and each figure (``draw(path)``) into ``out``, each file atomically."""
    os.makedirs(out, exist_ok=True)
    atomic_write_bytes(os.path.join(out, "results.json"), (json.dumps(to_json(results), indent=1) + "\n").encode())
    atomic_write_bytes(os.path.join(out, "results.md"), (markdown.rstrip() + "\n").encode())
    for name, draw in figures.items():
        with tempfile.TemporaryDirectory() as scratch:  # drawn aside, then moved in whole like the rest
            drawn = os.path.join(scratch, os.path.basename(name))
            draw(drawn)
            with open(drawn, "rb") as f:
                atomic_write_bytes(os.path.join(out, name), f.read())
    print(f"results in {out}: results.md, results.json, {', '.join(figures)}")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
