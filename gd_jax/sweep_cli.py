"""``gd-jax sweep``: a grid of ``gd-jax train`` runs as one compiled program, in one sweep folder.

Every ``gd-jax train`` option is accepted; ``--eta`` (``--learning-rate``) and ``--momentum``
take comma lists, and the sweep trains their cartesian product times ``--seeds`` seeds::

    gd-jax sweep --eta 0.01,0.1,1,3,10,100 --seeds 5 --epochs 30 --out runs/eta

Seed ``s`` of a sweep is the run ``gd-jax train --seed s`` with the same settings (with
``--shuffle shared`` all models take the first seed's batch order). The sweep folder holds

- ``sweep.json``: the config and the tidy records (one per model and epoch), the models'
  coordinates and how each stopped;
- ``sweep.csv``: the records as a table;
- ``params.npz``: the stacked parameters (``layer0/w`` of shape ``(K, n_0, n_1)``, ...);
- ``accuracy.png``: the final evaluation accuracy against each swept value, mean and spread
  over the seeds; ``costs.png``: every model's training cost curve;
- ``checkpoints/``: the whole sweep's state after each epoch (the newest two are kept),
  from which ``gd-jax sweep --resume DIR`` continues.

It obeys the run folder rules of ``gd-jax train``: an existing folder is never overwritten
unless ``--overwrite`` says so, every file is written atomically, the files of one epoch
are written together even when Ctrl-C or SIGTERM arrives meanwhile.

Exit status: 0 done (models that diverged are frozen and reported, the sweep goes on);
2 bad input (one line on stderr); 3 every model diverged; 130 interrupted.

In ``gd_jax/cli.py``: ``add_sweep_arguments(commands.add_parser("sweep", ...))`` and
dispatch ``"sweep"`` to ``run_sweep(args)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import traceback
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

SWEEP_FILES = ("sweep.json", "sweep.csv", "params.npz", "accuracy.png", "costs.png")
CHECKPOINTS = "checkpoints"
# What defines a sweep, saved in sweep.json and in every checkpoint.
SETTINGS = ("sizes", "epochs", "batch_size", "learning_rate", "momentum", "nesterov", "cost", "activation", "init",
            "seeds", "shuffle", "target_cost", "dataset", "idx_dir", "data_dir", "validation")
RESUME_MAY_CHANGE = ("epochs", "idx_dir", "data_dir")
# The options that take comma lists, and the grid names they sweep.
SWEPT = {"learning_rate": "learning_rate", "momentum": "momentum"}


class SweepUsageError(ValueError):
    """A command-line mistake: one line, exit status 2."""


def _numbers(name: str, example: str):
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"--{name} wants a number or a comma list like {example}, got {text!r}")
        return values
    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _sizes(text: str) -> list[int]:
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes wants comma-separated integers like 784,30,10, got {text!r}") \
            from None


def _seeds(text: str) -> list[int]:
    """``5`` is seeds 0..4; ``2,7,9`` those seeds."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values) or (len(values) == 1 and values[0] < 1):
        raise argparse.ArgumentTypeError(f"--seeds wants a count >= 1 (5: seeds 0..4) or a list like 2,7,9, "
                                         f"got {text!r}")
    return list(range(values[0])) if len(values) == 1 else values


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gd-jax sweep``: those of ``gd-jax train``, comma lists for the swept ones."""
    from gd_jax.costs import COSTS
    from gd_jax.data.mnist import SOURCES
    from gd_jax.network import ACTIVATIONS, INITS

    parser.add_argument("--sizes", type=_sizes, default=[784, 30, 10], help="layer sizes (default 784,30,10)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs in all (default 30)")
    parser.add_argument("--batch-size", type=int, default=10, help="mini-batch size (default 10)")
    parser.add_argument("--learning-rate", "--eta", dest="learning_rate", type=_numbers("eta", "0.1,1,3"),
                        default=[3.0], help="learning rates, a comma list is swept (default 3.0)")
    parser.add_argument("--momentum", type=_numbers("momentum", "0,0.5,0.9"), default=None,
                        help="momentum coefficients in [0, 1), a comma list is swept (default none)")
    parser.add_argument("--nesterov", action="store_true", help="Nesterov momentum (needs --momentum)")
    parser.add_argument("--cost", choices=list(COSTS), default="quadratic", help="cost function (default quadratic)")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default="sigmoid", help="neurons (default sigmoid)")
    parser.add_argument("--init", choices=INITS, default="normal", help="normal: N(0, 1); scaled: N(0, 1/n_in)")
    parser.add_argument("--seeds", type=_seeds, default=[0], help="a count (5: seeds 0..4) or a list 2,7,9 (default 1)")
    parser.add_argument("--shuffle", choices=("per_model", "shared"), default="per_model",
                        help="per_model: each seed its own batch order (independent runs); shared: one order for all")
    parser.add_argument("--target-cost", type=float, default=None, help="a model stops at this training cost")
    parser.add_argument("--dataset", choices=SOURCES, default="sample", help="sample, idx or mnist (default sample)")
    parser.add_argument("--idx-dir", help="folder of the four MNIST IDX files (for --dataset idx or mnist)")
    parser.add_argument("--data-dir", help="tensorflow-datasets data folder (default $TFDS_DATA_DIR)")
    parser.add_argument("--download", action="store_true", help="let --dataset mnist download the data")
    parser.add_argument("--validation", action="store_true",
                        help="evaluate on a held-out validation set each epoch (test once at the end)")
    parser.add_argument("--out", help="sweep folder (default runs/sweep-<date-time>)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an existing sweep folder")
    parser.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR from its newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in SETTINGS}


def _check_settings(s: dict[str, Any]) -> None:
    for rate in s["learning_rate"]:
        if not (math.isfinite(rate) and rate > 0):
            raise SweepUsageError(f"--eta {rate:g} is not a positive finite number; the textbook uses 3.0")
    for mu in s["momentum"] or []:
        if not 0 <= mu < 1:
            raise SweepUsageError(f"--momentum {mu:g} is outside [0, 1); 0.9 is a common choice")
    if s["nesterov"] and not s["momentum"]:
        raise SweepUsageError("--nesterov needs --momentum, e.g. --momentum 0.9")
    for flag in ("learning_rate", "momentum", "seeds"):
        values = s[flag] or []
        if len(set(values)) != len(values):
            raise SweepUsageError(f"--{flag.replace('_', '-')} repeats a value: {','.join(map(str, values))}; "
                                  "list each value once")


def _grid(s: dict[str, Any]) -> dict[str, list[float]]:
    """The swept options (comma lists of two or more values) as a sweep grid."""
    grid = {"learning_rate": s["learning_rate"]}
    if s["momentum"]:
        grid["momentum"] = s["momentum"]
    return grid


def _make_optimizer(s: dict[str, Any]):
    import gd_jax as gd

    def make_optimizer(h):
        return gd.sgd(h["learning_rate"], momentum=h.get("momentum"), nesterov=s["nesterov"])

    return make_optimizer


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise SweepUsageError(f"cannot read {path!r} ({e}); it is damaged: start a new sweep") from None
    if not isinstance(value, dict) or "config" not in value:
        raise SweepUsageError(f"{path!r} does not hold a sweep config; start a new sweep")
    return value


def _resume_settings(args: argparse.Namespace, given: set[str]) -> tuple[str, dict[str, Any], str | None]:
    from gd_jax.checkpoint import latest_checkpoint, read_checkpoint_manifest

    out = args.resume
    for flag in ("out", "overwrite"):
        if flag in given:
            raise SweepUsageError(f"--{flag} cannot be combined with --resume: --resume {out} continues the sweep "
                                  f"in {out} itself; drop --{flag}")
    if not os.path.isdir(out):
        raise FileNotFoundError(f"sweep folder not found: {out!r}; pass the --out folder of an earlier gd-jax sweep")
    checkpoint = latest_checkpoint(os.path.join(out, CHECKPOINTS))
    if checkpoint is not None:
        saved = read_checkpoint_manifest(checkpoint)["config"]["settings"]
    elif os.path.isfile(os.path.join(out, "sweep.json")):
        saved = _read_json(os.path.join(out, "sweep.json"))["config"]["settings"]
    else:
        raise SweepUsageError(f"{out!r} is not a gd-jax sweep folder (no sweep.json, no {CHECKPOINTS}/); "
                              "pass the --out folder of an earlier gd-jax sweep")
    settings = {k: saved.get(k) for k in SETTINGS}
    for k in sorted(given & set(SETTINGS)):
        value = getattr(args, k)
        if k in RESUME_MAY_CHANGE:
            settings[k] = value
        elif value != settings[k]:
            flag = "--" + k.replace("_", "-")
            raise SweepUsageError(
                f"{flag} {_show(value)} conflicts with the sweep's saved {k} {_show(settings[k])}; a resumed sweep "
                "keeps its settings (only --epochs, --idx-dir, --data-dir may change): drop it, or start a new sweep")
    return out, settings, checkpoint


def _show(value: Any) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) \
        else str(value)


def _prepare_out(out: str | None, overwrite: bool) -> str:
    """Checks that the sweep folder can be written, writing nothing yet."""
    import time

    if out is None:
        out = os.path.join("runs", time.strftime("sweep-%Y%m%d-%H%M%S"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise SweepUsageError(f"--out {out!r} is a file, not a folder; choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise SweepUsageError(f"sweep folder {out!r} already exists and is not empty; pass --overwrite, "
                              f"--resume {out} to continue it, or choose another --out")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise SweepUsageError(f"cannot create sweep folder {out!r}: {parent!r} is a file, not a folder; "
                              "choose another --out")
    target = out if os.path.isdir(out) else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise SweepUsageError(f"cannot write sweep folder {out!r}: {target!r} is not writable; choose another --out")
    return out


def _make_out(out: str, overwrite: bool) -> None:
    """Creates the sweep folder; with ``overwrite``, removes the files of the sweep it held before (only those)."""
    from gd_jax.checkpoint import list_checkpoints

    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise SweepUsageError(f"cannot create sweep folder {out!r} ({e.strerror}); choose another --out") from None
    if overwrite:
        for name in SWEEP_FILES:
            if os.path.exists(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))
        for _, path in list_checkpoints(os.path.join(out, CHECKPOINTS)):
            os.unlink(path)


def _write_json(path: str, obj: Any) -> None:
    from gd_jax.serialization import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def _save_stacked(path: str, params: Any) -> None:
    import io

    import numpy as np

    from gd_jax.serialization import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, **{f"layer{i}/{name}": np.asarray(v) for i, layer in enumerate(params)
                        for name, v in layer.items()})
    atomic_write_bytes(path, buffer.getvalue())


def plot_sweep(result: Any, out: str, *, metric: str = "eval_accuracy") -> None:
    """Writes ``accuracy.png`` (final ``metric`` against each swept value, mean and spread over the
    seeds, each seed a dot) and ``costs.png`` (every model's training cost per epoch), atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from gd_jax.serialization import atomic_write_bytes

    def save(fig, name: str) -> None:
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(os.path.join(out, name), png.getvalue())

    finals = result.final(metric)
    names = list(result.grid)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), constrained_layout=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        values = sorted(result.grid[name])
        per_value = [[100 * finals[m["model"]] for m in result.models
                      if m[name] == v and finals[m["model"]] is not None] for v in values]
        for v, ys in zip(values, per_value):
            ax.scatter([v] * len(ys), ys, color="C0", alpha=0.35, s=14)
        means = [np.mean(ys) if ys else np.nan for ys in per_value]
        spread = [np.std(ys) if ys else np.nan for ys in per_value]
        ax.errorbar(values, means, yerr=spread, color="C1", marker="o", capsize=4, label="mean ± std over seeds")
        positive = all(v > 0 for v in values)
        if positive and len(values) > 1 and max(values) / min(values) >= 20:
            ax.set_xscale("log")
        ax.set(xlabel=name, ylabel=f"final {metric.replace('_', ' ')} (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    save(fig, "accuracy.png")

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    first = names[0]
    colours = {v: f"C{i % 10}" for i, v in enumerate(sorted(result.grid[first]))}
    labelled = set()
    for m in result.models:
        records = [r for r in result.records if r["model"] == m["model"] and r["status"] != "diverged"]
        if records:
            v = m[first]
            ax.plot([r["epoch"] for r in records], [r["train_cost"] for r in records], color=colours[v], alpha=0.6,
                    label=None if v in labelled else f"{first} = {v:g}")
            labelled.add(v)
    ax.set(xlabel="epoch", ylabel="training cost", title=f"{len(result)} models")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    save(fig, "costs.png")


def run_sweep(args: argparse.Namespace, given: set[str] | None = None) -> int:
    """Runs ``gd-jax sweep`` for parsed ``args``; ``given`` names the options on the command line
    (those a ``--resume`` must check). Returns the exit status; bad input raises ValueError or
    FileNotFoundError, which ``gd-jax`` prints as one line with status 2."""
    given = set(vars(args)) if given is None else given
    try:
        return _run(args, given)
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print("gd-jax: interrupted before the sweep started; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace, given: set[str]) -> int:
    import functools

    import jax

    import gd_jax as gd
    from gd_jax.checkpoint import load_checkpoint
    from gd_jax.costs import COSTS
    from gd_jax.data.mnist import load_mnist
    from gd_jax.sweep import SweepResult, grid_points, seed_keys, sweep
    from gd_jax.train import check_fit_arguments

    # Everything is validated before the folder is touched: a mistake writes nothing.
    if args.resume is not None:
        out, s, checkpoint = _resume_settings(args, given)
    else:
        s, checkpoint = _settings(args), None
        out = _prepare_out(args.out, args.overwrite)
    _check_settings(s)
    grid = _grid(s)
    grid_points(grid)
    init = functools.partial(gd.init_mlp, sizes=s["sizes"], init=s["init"])
    cost = functools.partial(COSTS[s["cost"]], activation=s["activation"])
    splits = load_mnist(s["dataset"], validation=s["validation"], idx_dir=s["idx_dir"], data_dir=s["data_dir"],
                        download=args.download)
    train, test = splits[0], splits[-1]
    eval_data = splits[1] if s["validation"] else test
    first = init(seed_keys(s["seeds"][0])[0])
    check_fit_arguments(first, train, eval_data=eval_data, epochs=s["epochs"], batch_size=s["batch_size"],
                        target_cost=s["target_cost"])
    config = {"settings": s, "grid": grid, "n_train": train.size, "n_eval": eval_data.size, "gd_jax": gd.__version__,
              "jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "python": platform.python_version()}
    make_optimizer = _make_optimizer(s)
    resume = None
    if checkpoint is not None:
        fresh = sweep(init, train, grid=grid, seeds=s["seeds"], make_optimizer=make_optimizer, cost=cost, epochs=0,
                      batch_size=s["batch_size"], shuffle=s["shuffle"], activation=s["activation"])
        ckpt = load_checkpoint(checkpoint, like=gd.TrainState(fresh.params, fresh.opt_state))
        for k in ("n_train", "n_eval"):
            if ckpt.config.get(k) != config[k]:
                raise SweepUsageError(f"the data changed since the sweep started: {k} is {config[k]}, the checkpoint "
                                      f"was trained with {ckpt.config.get(k)}; resume with the same data")
        saved = ckpt.config["sweep"]
        resume = SweepResult(params=ckpt.state.params, opt_state=ckpt.state.opt_state, models=saved["models"],
                             records=saved["records"], grid=saved["grid"], seeds=saved["seeds"],
                             shuffle=saved["shuffle"], epoch_seconds=saved["epoch_seconds"])
        if s["epochs"] < resume.epochs_done:
            raise SweepUsageError(f"--epochs {s['epochs']} is fewer than the {resume.epochs_done} epochs {out!r} "
                                  f"has done; pass --epochs {resume.epochs_done} or more")

    from gd_jax.cli import _interrupts_deferred

    if args.resume is None:  # a resumed sweep keeps its tables until its next epoch replaces them
        _make_out(out, args.overwrite)
        _write_json(os.path.join(out, "sweep.json"), {"config": config})
    done = [0 if resume is None else resume.epochs_done]

    def save(result: SweepResult) -> None:
        from gd_jax.checkpoint import save_checkpoint

        with _interrupts_deferred():  # the checkpoint and the tables of one epoch, together
            save_checkpoint(os.path.join(out, CHECKPOINTS), epoch=result.epochs_done,
                            state=gd.TrainState(result.params, result.opt_state),
                            key=seed_keys(s["seeds"][0])[1], config={**config, "sweep": result.to_dict()})
            _save_stacked(os.path.join(out, "params.npz"), result.params)
            _write_json(os.path.join(out, "sweep.json"), {"config": config, **result.to_dict()})
            from gd_jax.serialization import atomic_write_bytes

            atomic_write_bytes(os.path.join(out, "sweep.csv"), result.to_csv().encode())
            done[0] = result.epochs_done

    from tqdm import tqdm

    k = len(grid_points(grid)) * len(s["seeds"])
    bar = tqdm(total=s["epochs"], initial=done[0], unit="epoch", disable=args.no_progress, file=sys.stderr,
               dynamic_ncols=True, desc=f"{k} models")

    def on_epoch_end(end: Any) -> None:
        save(end.result)
        finals = [a for a in end.result.final("eval_accuracy") if a is not None]
        diverged = sum(m["stop_reason"] == "diverged" for m in end.result.models)
        bar.set_postfix(best_acc=f"{max(finals):.4f}" if finals else "-", diverged=diverged)
        bar.update(end.epoch - bar.n)

    try:
        if resume is not None:
            print(f"gd-jax: resuming {out} after epoch {done[0]} of {s['epochs']}", file=sys.stderr)
        result = sweep(init, train, grid=grid, seeds=s["seeds"], make_optimizer=make_optimizer, cost=cost,
                       epochs=s["epochs"], batch_size=s["batch_size"], eval_data=eval_data, shuffle=s["shuffle"],
                       activation=s["activation"], target_cost=s["target_cost"], resume=resume,
                       on_epoch_end=on_epoch_end)
        bar.close()
        if not result.epochs_done:
            save(result)
        with _interrupts_deferred():
            plot_sweep(result, out)
    except KeyboardInterrupt:
        bar.close()
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"gd-jax: interrupted; nothing is half-written: the sweep folder {out} keeps epoch {done[0]} of "
              f"{s['epochs']}. Continue with: gd-jax sweep --resume {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        bar.close()

    diverged = [m for m in result.models if m["stop_reason"] == "diverged"]
    for m in diverged:
        coords = ", ".join(f"{n}={m[n]:g}" for n in grid)
        print(f"gd-jax: model {m['model']} ({coords}, seed {m['seed']}) diverged: {m['message']}", file=sys.stderr)
    summary = f"{k} models, {result.epochs_done} epochs in {sum(result.epoch_seconds):.1f} s (compile " \
              f"{result.compile_seconds:.1f} s); "
    if any(a is not None for a in result.final("eval_accuracy")):
        best = result.best("eval_accuracy")
        coords = ", ".join(f"{n}={best[n]:g}" for n in grid)
        summary += f"best: {coords}, eval accuracy {best['mean']:.4f} ± {best['std']:.4f} over {best['n']} seeds; "
    print(f"{summary}{len(diverged)} diverged; sweep folder {out}")
    return EXIT_DIVERGED if len(diverged) == k else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m gd_jax.sweep_cli [options]``: the command on its own, with ``gd-jax``'s exit statuses."""
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one line instead of usage + error
            raise SweepUsageError(f"{message} (see 'gd-jax sweep --help')")

    parser = Parser(prog="gd-jax sweep", description="Train a grid of models as one compiled program.")
    add_sweep_arguments(parser)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops a sweep as Ctrl-C does
    try:
        args = parser.parse_args(argv)
        args.debug = debug
        given = {a.dest for a in parser._actions if any(opt in argv or any(x.startswith(opt + "=") for x in argv)
                                                          for opt in a.option_strings)}
        return run_sweep(args, given)
    except (ValueError, OSError) as e:
        if debug:
            traceback.print_exc()
        print(f"gd-jax: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("gd-jax: interrupted before the sweep started; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
