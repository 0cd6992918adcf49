"""``gd-jax sweep``: a grid of ``gd-jax train`` runs as one compiled program, in one sweep folder.

Every ``gd-jax train`` option but ``--patience`` and ``--eta-schedule`` is accepted; ``--eta``
(``--learning-rate``), ``--momentum`` and ``--lmbda`` take comma lists, and the sweep trains
their cartesian product times ``--seeds`` seeds::
    gd-jax sweep --eta 0.01,0.1,1,3,10,100 --seeds 5 --epochs 30 --out runs/eta

Seed ``s`` of a sweep is the run ``gd-jax train --seed s`` with the same settings (with
``--shuffle shared`` all models take the first seed's batch order). The sweep folder is a run
folder (``gd_jax.cli.run_folder``: claimed atomically, locked while in use, ``config.json`` with the
settings, the data's fingerprint and one segment per process) that holds

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
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import os
import sys
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np

import gd_jax as gd
from gd_jax._src.checkpoint import load_checkpoint, save_checkpoint
from gd_jax._src.costs import COSTS
from gd_jax._src.data.mnist import load_mnist
from gd_jax._src.distributed import is_writer
from gd_jax._src.parallel import PeerLostError
from gd_jax._src.seeds import seed_keys
from gd_jax._src.serialization import atomic_write_bytes
from gd_jax._src.sweep import SweepResult, grid_points, sweep
from gd_jax._src.sweep_figures import SWEEP_FIGURES, plot_sweep
from gd_jax._src.tensorboard import LiveEvents, write_run_events
from gd_jax._src.train import check_fit_arguments
from gd_jax.cli import run_folder, signals
from gd_jax.cli.errors import BadInput, bad_input
from gd_jax.cli.flags import EXIT_DIVERGED, EXIT_INTERRUPTED, add_network_flags, add_run_folder_flags
from gd_jax.cli.parallel_flags import add_parallel_arguments, exit_peer_lost
from gd_jax.cli.progress import EpochProgress, plural
from gd_jax.cli.resume import check_same_data, command_settings, data_fingerprint, environment

SWEEP_FILES = ("sweep.json", "sweep.csv", "accuracy.png", "costs.png")
# What defines a sweep, saved in config.json and in every checkpoint.
SETTINGS = ("sizes", "epochs", "batch_size", "learning_rate", "momentum", "lmbda", "nesterov", "cost", "activation",
            "init", "seeds", "shuffle", "target_cost", "max_growth", "dataset", "idx_dir", "data_dir", "validation")
RESUME_MAY_CHANGE = ("epochs", "idx_dir", "data_dir")


def _numbers(name: str, example: str):
    def parse(text: str) -> list[float]:
        try:  # an empty entry (1,,2) is a typo, never a value to drop silently
            values = [float(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"--{name} wants a number or a comma list like {example}, got {text!r}")
        return values
    parse.__name__ = name  # argparse names the type in its messages
    return parse


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
    """The options of ``gd-jax sweep`` beyond the data and device ones every command shares:
    those of ``gd-jax train``, with comma lists for the swept ones."""
    add_network_flags(parser)
    parser.add_argument("--learning-rate", "--eta", dest="learning_rate", type=_numbers("eta", "0.1,1,3"),
                        default=[3.0], help="learning rates; a comma list is swept (default 3.0)")
    parser.add_argument("--momentum", type=_numbers("momentum", "0,0.5,0.9"), default=None,
                        help="momentum coefficients in [0, 1); a comma list is swept (default none)")
    parser.add_argument("--lmbda", type=_numbers("lmbda", "0,1,5"), default=None,
                        help="L2 lambda, adding lambda/(2n) sum w^2 to the cost; a comma list is swept (default none)")
    parser.add_argument("--seeds", type=_seeds, default=[0],
                        help="a count (5: seeds 0..4) or a list 2,7,9; seed s is gd-jax train --seed s (default 1)")
    parser.add_argument("--shuffle", choices=("per_model", "shared"), default="per_model",
                        help="per_model: each seed its own batch order (independent runs); shared: one order for all")
    add_run_folder_flags(parser, what="sweep")
    add_parallel_arguments(parser)


def check_settings(s: dict[str, Any]) -> None:
    """The flag values a sweep is defined by, each checked in the flags' words (``BadInput``, one line)."""
    for rate in s["learning_rate"]:
        if not (math.isfinite(rate) and rate > 0):
            raise BadInput(f"--eta {rate:g} is not a positive finite number; the textbook uses 3.0")
    for mu in s["momentum"] or []:
        if not 0 <= mu < 1:
            raise BadInput(f"--momentum {mu:g} is outside [0, 1); 0.9 is a common choice")
    for lmbda in s["lmbda"] or []:
        if not (math.isfinite(lmbda) and lmbda >= 0):
            raise BadInput(f"--lmbda {lmbda:g} is not a finite number >= 0; the textbook uses 5.0 on 50,000 digits")
    if s["nesterov"] and not s["momentum"]:
        raise BadInput("--nesterov needs --momentum, e.g. --momentum 0.9")
    for flag in ("learning_rate", "momentum", "lmbda", "seeds"):
        values = s[flag] or []
        if len(set(values)) != len(values):
            raise BadInput(f"--{flag.replace('_', '-')} repeats a value: {','.join(map(str, values))}; "
                           "list each value once")


def _grid(s: dict[str, Any]) -> dict[str, list[float]]:
    """The comma-list options as a sweep grid (a single value is a grid axis of one)."""
    grid = {"learning_rate": s["learning_rate"]}
    for name in ("momentum", "lmbda"):
        if s[name]:
            grid[name] = s[name]
    return grid


def _factories(s: dict[str, Any], n: int):
    """``make_optimizer(h)`` and ``make_cost(h)`` of a sweep's settings; ``n`` the training set's size."""
    base = functools.partial(COSTS[s["cost"]], activation=s["activation"])

    def make_optimizer(h):
        return gd.sgd(h["learning_rate"], momentum=h.get("momentum"), nesterov=s["nesterov"])

    def make_cost(h):
        if "lmbda" not in h:
            return base
        # gd.with_l2's maths with a traced lambda: C_0 + lambda / (2n) sum w^2.
        return lambda params, x, y: base(params, x, y) + (h["lmbda"] / n) * gd.l2_penalty(params)

    return make_optimizer, make_cost


def _save_stacked(path: str, params: Any) -> None:
    """The stacked parameters as ``.npz``: ``layer0/w`` of shape ``(K, n_0, n_1)``, ..., atomically."""



    buffer = io.BytesIO()
    np.savez(buffer, **{f"layer{i}/{name}": np.asarray(v) for i, layer in enumerate(params)
                        for name, v in layer.items()})
    atomic_write_bytes(path, buffer.getvalue())


TENSORBOARD = "tensorboard"  # the sweep folder's subfolder of per-model event files


def write_sweep_events(result: Any, out: str, config: dict[str, Any]) -> list[str]:
    """One TensorBoard run per model, ``tensorboard/model-NNN/``, so TensorBoard's HParams view compares them.

    Each model's run holds its per-epoch scalars (its rows of ``result.records``) and its
    hyperparameters: the sweep's settings with the model's own grid values and seed.
    """
    written = []
    for i in range(len(result.models)):
        folder = _model_events_folder(out, i)
        os.makedirs(folder, exist_ok=True)
        written.append(write_run_events(folder, {"epochs": _model_epochs(result, i)}, _model_config(result, i, config)))
    return written


def _model_events_folder(out: str, i: int) -> str:
    return os.path.join(out, TENSORBOARD, f"model-{i:03d}")


def _model_config(result: Any, i: int, config: dict[str, Any]) -> dict[str, Any]:
    """The sweep's settings with model ``i``'s own grid values and seed (its HParams)."""
    shared = {k: v for k, v in config.items() if k not in ("grid", "segments", "data_sha256", "seeds")}
    return {**shared, **{name: result.models[i][name] for name in result.grid}, "seed": result.models[i]["seed"]}


def _model_epochs(result: Any, i: int, epoch: int | None = None) -> list[dict[str, Any]]:
    """Model ``i``'s records (of ``epoch`` only, when given) as history records."""
    return [{k: v for k, v in r.items() if k not in ("model", "seed", "status", *result.grid)}
            for r in result.records if r["model"] == i and (epoch is None or r["epoch"] == epoch)]


class _LiveSweepEvents:
    """One live TensorBoard stream per model (``LiveEvents``), each epoch's scalars flushed as it ends."""

    def __init__(self, result: SweepResult, out: str, config: dict[str, Any], *, enabled: bool):
        self.streams = [LiveEvents(_model_events_folder(out, i), _model_config(result, i, config),
                                   history={"epochs": _model_epochs(result, i)}, enabled=enabled)
                        for i in range(len(result))] if enabled else []

    def epoch(self, result: SweepResult, epoch: int) -> None:
        for i, stream in enumerate(self.streams):
            for record in _model_epochs(result, i, epoch):
                stream.epoch(record)

    def close(self) -> None:
        for stream in self.streams:
            stream.close()


def run_sweep(args: argparse.Namespace, given: set[str], command: list[str] | None = None) -> int:
    """Runs ``gd-jax sweep`` for parsed ``args``; ``given`` names the options written on the command
    line (those ``--resume`` checks), ``command`` is the command line recorded in ``config.json``.

    Returns the exit status; bad input raises ``errors.BadInput`` (one line, status 2, in ``gd-jax``).
    """
    out, plan = _prepare(args, given, command or ["gd-jax", "sweep"])
    args.run_folder = out  # named in the one line a lost peer ends this process with
    if not is_writer():  # processes 1.. of a multi-process sweep train their devices' models and write nothing
        try:
            return _follow(plan)
        except PeerLostError as e:
            exit_peer_lost(e, resume=out, command="sweep")
    if args.resume is not None:
        folder = run_folder.open_run_folder(out)
        folder.write_json(run_folder.CONFIG, plan["config"])
    else:
        folder = run_folder.claim_run_folder(out, plan["config"], overwrite=args.overwrite)
        for name in SWEEP_FILES:  # --overwrite of an earlier sweep: its tables and figures go too
            if os.path.exists(folder.file(name)):
                os.unlink(folder.file(name))
        if os.path.isdir(folder.file(TENSORBOARD)):  # and its per-model event files (gd_jax's own only)
            for name in sorted(os.listdir(folder.file(TENSORBOARD))):
                run_folder.clean_run_files(os.path.join(folder.file(TENSORBOARD), name))
    with folder:
        try:
            return _run(args, plan, folder)
        except PeerLostError as e:
            exit_peer_lost(e, resume=folder.path, command="sweep")
            raise  # not reached: exit_peer_lost ends the process
        except KeyboardInterrupt:
            if getattr(args, "debug", False):
                traceback.print_exc()
            print(f"gd-jax: interrupted; nothing is half-written: the sweep folder {folder.path} keeps epoch "
                  f"{plan['done']} of {plan['settings']['epochs']}. Continue with: gd-jax sweep --resume "
                  f"{folder.path}", file=sys.stderr)
            return EXIT_INTERRUPTED


def _prepare(args: argparse.Namespace, given: set[str], command: list[str]) -> tuple[str | None, dict[str, Any]]:
    """Validates everything a sweep needs, writing nothing; returns its folder and plan."""
    out, settings, saved, checkpoint = command_settings(args, given, settings=SETTINGS,
                                                             may_change=RESUME_MAY_CHANGE, what="sweep")
    if args.resume is None and is_writer():  # in a multi-process sweep, process 0 alone writes the folder
        run_folder.check_out(out, overwrite=args.overwrite)
    check_settings(settings)
    grid = _grid(settings)
    init = functools.partial(gd.init_mlp, sizes=settings["sizes"], init=settings["init"])
    with bad_input():
        first = init(seed_keys(settings["seeds"][0])[0])
        splits = load_mnist(settings["dataset"], validation=settings["validation"], idx_dir=settings["idx_dir"],
                            data_dir=settings["data_dir"], download=args.download)
    train, test = splits[0], splits[-1]
    eval_data = splits[1] if settings["validation"] else test
    with bad_input():
        check_fit_arguments(first, train, eval_data=eval_data, epochs=settings["epochs"],
                            batch_size=settings["batch_size"], target_cost=settings["target_cost"],
                            max_growth=settings["max_growth"])
    make_optimizer, make_cost = _factories(settings, train.size)
    datasets = {"train": train, "test": test} | ({"validation": eval_data} if settings["validation"] else {})
    config = {**settings, "grid": grid, "n_train": train.size, "n_eval": eval_data.size,
              "eval_data": "validation" if settings["validation"] else "test",
              "data_sha256": data_fingerprint(datasets), "segments": [dict(x) for x in saved.get("segments", [])]}
    resume, done = None, 0
    kwargs = dict(grid=grid, seeds=settings["seeds"], make_optimizer=make_optimizer, make_cost=make_cost,
                  batch_size=settings["batch_size"], shuffle=settings["shuffle"], activation=settings["activation"],
                  mesh=getattr(args, "mesh", None))
    if checkpoint is not None:
        fresh = sweep(init, train, epochs=0, **kwargs)
        with bad_input():
            ckpt = load_checkpoint(checkpoint, like=gd.TrainState(fresh.params, fresh.opt_state))
        check_same_data(ckpt.config.get("data_sha256"), config["data_sha256"], out=out)
        state = ckpt.config["sweep"]
        resume = SweepResult(params=ckpt.state.params, opt_state=ckpt.state.opt_state, models=state["models"],
                             records=state["records"], grid=state["grid"], seeds=state["seeds"],
                             shuffle=state["shuffle"], epoch_seconds=state["epoch_seconds"])
        done = resume.epochs_done
        if settings["epochs"] < done:
            raise BadInput(f"--epochs {settings['epochs']} is fewer than the {plural(done, 'epoch')} {out!r} "
                           f"has done; pass --epochs {done} or more")
    elif saved:
        check_same_data(saved.get("data_sha256"), config["data_sha256"], out=out)
    config["segments"].append(environment(command, first_epoch=done + 1))
    models = len(grid_points(grid)) * len(settings["seeds"])
    return out, {"settings": settings, "config": config, "init": init, "train": train, "eval_data": eval_data,
                 "kwargs": kwargs, "test": test, "resume": resume, "done": done, "models": models}


def _follow(plan: dict[str, Any]) -> int:
    """Processes 1.. of a multi-process sweep: train in step with process 0, which writes everything."""
    s = plan["settings"]
    try:
        result = sweep(plan["init"], plan["train"], epochs=s["epochs"], eval_data=plan["eval_data"],
                       target_cost=s["target_cost"], max_growth=s["max_growth"], resume=plan["resume"],
                       **plan["kwargs"])
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # process 0 reports it
    return EXIT_DIVERGED if all(m["stop_reason"] == "diverged" for m in result.models) else 0


class _SweepProgress(EpochProgress):
    """``train``'s progress (a bar on a terminal, one plain line per epoch otherwise) for a whole sweep."""

    def describe(self, record: Mapping[str, Any]) -> str:
        best = f"best {self.eval_name} accuracy {record['best']:.4f}" if record["best"] is not None else "no model left"
        return f"{record['models']}, {best}, {record['diverged']} diverged"


def _epoch_record(result: SweepResult, epoch: int) -> dict[str, Any]:
    finals = [a for a in result.final("eval_accuracy") if a is not None and math.isfinite(a)]
    return {"epoch": epoch, "seconds": result.epoch_seconds[-1] if result.epoch_seconds else 0.0,
            "models": plural(len(result), "model"), "best": max(finals) if finals else None,
            "diverged": sum(m["stop_reason"] == "diverged" for m in result.models)}


def _coords(point: dict[str, Any], grid: dict[str, list[float]]) -> str:
    return ", ".join(f"{n}={point[n]:g}" for n in grid)


def _diverged_line(result: SweepResult, folder: str) -> str:
    """One line: which grid points diverged (with their seeds), why, and the fix."""
    diverged = [m for m in result.models if m["stop_reason"] == "diverged"]
    points: dict[str, list[int]] = {}
    for m in diverged:
        points.setdefault(_coords(m, result.grid), []).append(m["seed"])
    listed = "; ".join(f"{p} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))})" for p, s in points.items())
    smaller = min(m["learning_rate"] for m in diverged) / 10
    every = len(diverged) == len(result)
    what = "every model diverged" if every else f"{len(diverged)} of {plural(len(result), 'model')} diverged"
    return (f"gd-jax: {what}: {listed}; the learning rate is probably too large: try --eta {smaller:g} or smaller "
            f"in a new sweep (sweep.json says how each diverged); the sweep folder {folder} keeps their records")


def _best_line(result: SweepResult, plan: dict[str, Any]) -> str:
    """The best grid point, and on what it was chosen (an honest selection says so)."""
    s, grid = plan["settings"], result.grid
    if not any(a is not None for a in result.final("eval_accuracy")):
        return ""
    best = result.best("eval_accuracy")
    seeds = f"over {plural(best['n'], 'seed')}"
    if not s["validation"]:
        return (f"best: {_coords(best, grid)}, test accuracy {best['mean']:.4f} ± {best['std']:.4f} {seeds}, chosen "
                f"on the test set (so this flatters it; pass --validation to choose on held-out data and test once); ")
    members = [i for i in result.select(**{n: best[n] for n in grid})
               if result.models[i]["stop_reason"] != "diverged"] or result.select(**{n: best[n] for n in grid})
    cost = plan["kwargs"]["make_cost"]({n: best[n] for n in grid})
    tests = [gd.evaluate(result.model_params(i), plan["test"], cost=cost, activation=s["activation"])[1]
             for i in members]
    return (f"best on validation: {_coords(best, grid)}, validation accuracy {best['mean']:.4f} {seeds}; tested once: "
            f"test accuracy {np.mean(tests):.4f} ± {np.std(tests):.4f}; ")


def _run(args: argparse.Namespace, plan: dict[str, Any], folder: run_folder.RunFolder) -> int:
    """Trains the sweep and writes its folder (everything is validated by now)."""
    s, config = plan["settings"], plan["config"]
    resume = plan["resume"]
    if resume is not None and resume.epochs_done >= s["epochs"]:
        print(f"gd-jax: {folder.path} is already complete: {plural(resume.epochs_done, 'epoch')} of "
              f"{s['epochs']}; nothing to train (pass a larger --epochs to continue it)", file=sys.stderr)
        return _finish(args, plan, folder, resume, trained=False)
    if resume is not None and all(m["stop_reason"] != "epochs" for m in resume.models):
        print(f"gd-jax: every model of {folder.path} has stopped (diverged or reached --target-cost) by epoch "
              f"{resume.epochs_done}; nothing to resume: start a new sweep (sweep.json says why each stopped)",
              file=sys.stderr)
        return EXIT_DIVERGED if all(m["stop_reason"] == "diverged" for m in resume.models) else 0

    def save(result: SweepResult) -> None:
        with signals.interrupts_deferred():  # the checkpoint and the tables of one epoch, together
            save_checkpoint(folder.checkpoints, epoch=result.epochs_done,
                            state=gd.TrainState(result.params, result.opt_state),
                            key=seed_keys(s["seeds"][0])[1], config={**config, "sweep": result.to_dict()})
            _save_stacked(folder.file("params.npz"), result.params)
            folder.write_json("sweep.json", {"config": config, **result.to_dict()})
            atomic_write_bytes(folder.file("sweep.csv"), result.to_csv().encode())
            plan["done"] = result.epochs_done

    progress = _SweepProgress(s["epochs"], plan["done"], eval_name=config["eval_data"], enabled=not args.no_progress)
    start = resume if resume is not None else sweep(plan["init"], plan["train"], epochs=0, **plan["kwargs"])
    events = _LiveSweepEvents(start, folder.path, config, enabled=not args.no_tensorboard)

    def on_epoch_end(end: Any) -> None:
        save(end.result)
        events.epoch(end.result, end.epoch)  # TensorBoard follows the sweep
        progress.epoch_end(_epoch_record(end.result, end.epoch))

    try:
        if resume is not None:
            print(f"gd-jax: resuming {folder.path} after epoch {plan['done']} of {s['epochs']}", file=sys.stderr)
        result = sweep(plan["init"], plan["train"], epochs=s["epochs"], eval_data=plan["eval_data"],
                       target_cost=s["target_cost"], max_growth=s["max_growth"], resume=resume,
                       on_epoch_end=on_epoch_end, **plan["kwargs"])
        if not result.epochs_done:
            save(result)
    finally:
        progress.close()
        events.close()
    return _finish(args, plan, folder, result, trained=True)


def _finish(args: argparse.Namespace, plan: dict[str, Any], folder: run_folder.RunFolder, result: SweepResult, *,
            trained: bool) -> int:
    """Writes the figures and TensorBoard files, prints the summary; returns the exit status."""
    config, k = plan["config"], len(result)
    with signals.interrupts_deferred():
        if args.no_figures:  # those an earlier segment drew would describe the sweep as it was
            run_folder.remove_figures(folder.path, SWEEP_FIGURES)
        else:
            plot_sweep(result, folder.path, title=_title(plan["settings"]))
        if not args.no_tensorboard:
            write_sweep_events(result, folder.path, config)
    diverged = sum(m["stop_reason"] == "diverged" for m in result.models)
    if diverged:
        print(_diverged_line(result, folder.path), file=sys.stderr)
    if diverged == k:
        return EXIT_DIVERGED
    done = plural(result.epochs_done, "epoch")
    timing = (f"{done} in {sum(result.epoch_seconds):.1f} s (compile {result.compile_seconds:.1f} s)" if trained
              else f"{done}, already complete")
    print(f"{plural(k, 'model')}, {timing}; {_best_line(result, plan)}{diverged} diverged; sweep folder {folder.path}")
    return 0


def _title(s: dict[str, Any]) -> str:
    return (f"{','.join(map(str, s['sizes']))} {s['activation']}, {s['cost']} cost, batch {s['batch_size']}, "
            f"{plural(len(s['seeds']), 'seed')}")
