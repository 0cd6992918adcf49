"""``gd-jax train``: train a network into a run folder, or ``--resume`` one.

Everything is validated before the run folder is touched (``_prepare``), so a mistake writes
nothing; then each epoch's checkpoint, parameters and history are written together.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
import traceback
from typing import Any

import jax

import gd_jax as gd
from gd_jax._src.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from gd_jax._src.costs import COSTS, with_l2
from gd_jax._src.data.dataset import check_dataset
from gd_jax._src.distributed import is_writer
from gd_jax._src.parallel import PeerLostError, check_batch_size
from gd_jax._src.seeds import SEED_LIMIT, is_seed, seed_key
from gd_jax._src.tensorboard import LiveEvents
from gd_jax._src.train import DivergenceError, check_fit_arguments
from gd_jax.cli import run_folder, signals
from gd_jax.cli.errors import BadInput, bad_input
from gd_jax.cli.flags import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    UsageError,
    add_data_and_device_flags,
    add_network_flags,
    add_run_folder_flags,
    check_data_flags,
    load_data,
)
from gd_jax.cli.parallel_flags import add_parallel_arguments, exit_peer_lost
from gd_jax.cli.progress import EpochProgress, plural
from gd_jax.cli.resume import check_same_data, command_settings, data_fingerprint, environment

# The settings a run is defined by, saved in config.json and in every checkpoint.
SETTINGS = ("sizes", "epochs", "batch_size", "learning_rate", "momentum", "nesterov", "cost", "activation", "init",
            "seed", "target_cost", "max_growth", "lmbda", "patience", "eta_schedule",
            "dataset", "idx_dir", "data_dir", "validation")
# What --resume may change: how many epochs in all, where the (same) data lives, the divergence threshold.
RESUME_MAY_CHANGE = ("epochs", "idx_dir", "data_dir", "max_growth")
# Settings added after runs were first written, with the value those older runs used.
SETTING_DEFAULTS = {"max_growth": 10.0, "lmbda": None, "patience": None, "eta_schedule": None}
# Options that only steer this invocation, never the run.
INVOCATION_ONLY = ("resume", "no_progress", "no_tensorboard", "no_figures", "download", "debug", "device",
                   "no_compile_cache", "out", "overwrite", "devices", "coordinator", "num_processes", "process_id")


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``train`` and its options to the subcommands."""
    train = commands.add_parser("train", help="train a network and write a run folder",
                                description="Train a network by mini-batch gradient descent; defaults are the "
                                            "textbook's chapter 1 run. With --resume DIR, continue the run in DIR "
                                            "from its last checkpoint with its saved settings; only --epochs (the "
                                            "total, to extend a run), --idx-dir, --data-dir and --max-growth may "
                                            "be changed.")
    add_network_flags(train)
    train.add_argument("--learning-rate", "--eta", dest="learning_rate", type=float, default=3.0,
                       help="learning rate eta (default 3.0)")
    train.add_argument("--momentum", type=float, default=None, help="momentum coefficient in [0, 1) (default none)")
    # Seed 2 is one of the 15 in 20 seeds whose textbook run does not stall (see the docs, "The chapter 1 stalls").
    train.add_argument("--seed", type=int, default=2,
                       help="PRNG seed for initialisation and shuffling, 0 to 2**64-1 (default 2)")
    train.add_argument("--lmbda", type=float, default=None,
                       help="L2 regularisation lambda: adds lambda/(2n) sum w^2 to the cost, n the training examples "
                            "(the textbook's chapter 3; default none)")
    train.add_argument("--patience", type=int, default=None,
                       help="early stopping: stop when the evaluation accuracy has not improved for this many epochs, "
                            "and keep the best epoch's parameters (needs --validation)")
    train.add_argument("--eta-schedule", type=int, default=None, metavar="N",
                       help="halve eta each time the evaluation accuracy has not improved for N epochs; stop once it "
                            "is 1/128 of its start (the textbook's schedule; needs --validation)")
    add_run_folder_flags(train, what="run")
    add_data_and_device_flags(train)
    add_parallel_arguments(train)
    return train


def _check_flags(s: dict[str, Any]) -> None:
    """The command line's own strict checks of a run's settings, in the flags' words."""
    sizes = s["sizes"]
    if len(sizes) < 2 or any(n <= 0 for n in sizes):
        raise UsageError(f"--sizes must be two or more positive integers, input first, got "
                         f"{','.join(map(str, sizes)) or 'nothing'}; e.g. --sizes 784,30,10")
    if s["epochs"] < 0:
        raise UsageError(f"--epochs must be an integer >= 0, got {s['epochs']}; pass 30 for the textbook run")
    if s["batch_size"] < 1:
        raise UsageError(f"--batch-size must be an integer >= 1, got {s['batch_size']}; 1 is stochastic gradient "
                         "descent, the textbook uses 10")
    eta = s["learning_rate"]
    if not (math.isfinite(eta) and eta > 0):
        raise UsageError(f"--eta must be a positive finite number, got {eta}; the textbook uses 3.0")
    if not is_seed(s["seed"]):
        raise UsageError(f"--seed must be an integer from 0 to 2**64 - 1 ({SEED_LIMIT - 1}), got {s['seed']!r}; "
                         "e.g. --seed 2")
    momentum = s["momentum"]
    if momentum is not None and not 0 <= momentum < 1:
        raise UsageError(f"--momentum must be in [0, 1), got {momentum}; 0.9 is a common choice (leave it out for "
                         "plain gradient descent)")
    if s["nesterov"] and momentum is None:
        raise UsageError("--nesterov needs --momentum; pass e.g. --momentum 0.9 --nesterov")
    target = s["target_cost"]
    if target is not None and not (math.isfinite(target) and target >= 0):
        raise UsageError(f"--target-cost must be a finite number >= 0, got {target}; e.g. --target-cost 0.01")
    lmbda = s["lmbda"]
    if lmbda is not None and not (math.isfinite(lmbda) and lmbda >= 0):
        raise UsageError(f"--lmbda must be a finite number >= 0, got {lmbda}; the textbook uses 5.0 on 50,000 digits")
    for flag, value in (("--patience", s["patience"]), ("--eta-schedule", s["eta_schedule"])):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be an integer >= 1, got {value}; e.g. {flag} 10")
    growth = s["max_growth"]
    if growth is not None and not growth > 1:  # inf is fine: the same as off
        raise UsageError(f"--max-growth must be a number > 1 or 'off', got {growth}; the default is 10")
    check_data_flags(s["dataset"], s["idx_dir"], s["data_dir"], s.get("download", False))


def _check_selection(s: dict[str, Any]) -> None:
    """``--patience`` and ``--eta-schedule`` choose by the evaluation accuracy: refused unless it is a validation set's.

    Without ``--validation`` the evaluation data are the test set, so the best epoch (or the
    halving of eta) would be chosen on the test set and the reported test accuracy would be
    optimistic. Refused rather than implied: ``--validation`` holds examples out of the training
    data, a different run from the one the command line describes, and a one-line refusal lets
    the user choose it knowingly.
    """
    if s["validation"]:
        return
    for flag, value in (("--patience", s["patience"]), ("--eta-schedule", s["eta_schedule"])):
        if value is not None:
            raise UsageError(f"{flag} {value} chooses by the evaluation accuracy, which without --validation is the "
                             f"test set's (the test accuracy would then be optimistic); add --validation to watch "
                             f"a validation set held out of the training data")


@dataclasses.dataclass
class _Plan:
    """A validated run, ready to write: its settings, data, starting state and folder."""

    settings: dict[str, Any]
    config: dict[str, Any]
    optimizer: Any
    stateful: Any  # what the optimizer state is the state of (the optimizer, or its eta-schedule wrapper)
    cost: Any
    params: Any
    opt_state: Any  # None: a fresh optimizer.init(params)
    key: Any  # the shuffling key given to fit
    history: Any  # None: a new run
    done: int  # epochs done, updated as checkpoints are written
    checkpoint: str | None  # the checkpoint resumed from
    train: Any
    eval_data: Any
    test: Any
    best_params: Any = None  # with --patience, resumed: the parameters of the best epoch so far


def _prepare(args: argparse.Namespace, given: set[str], command: list[str]) -> tuple[str | None, _Plan]:
    """Validates everything a run needs, writing nothing; returns its folder (None: a default name) and plan."""


    out, settings, saved, checkpoint = command_settings(args, given, settings=SETTINGS,
                                                             may_change=RESUME_MAY_CHANGE, defaults=SETTING_DEFAULTS)
    _check_flags({**settings, "download": args.download})
    if args.out is not None and not args.out.strip():
        raise UsageError("--out is empty; pass a folder name such as --out runs/textbook, or leave --out out for "
                         "runs/<date-time>")
    if args.resume is None:  # a run saved before this rule keeps resuming as it started
        _check_selection(settings)
    key = seed_key(settings["seed"])
    optimizer = gd.sgd(settings["learning_rate"], momentum=settings["momentum"], nesterov=settings["nesterov"])
    # With the schedule, fit wraps the optimizer so that its state carries the learning-rate scale:
    # checkpoints hold that state.
    stateful = gd.scale_learning_rate(optimizer) if settings["eta_schedule"] is not None else optimizer
    cost: Any = functools.partial(COSTS[settings["cost"]], activation=settings["activation"])  # type: ignore[call-arg]
    if args.resume is None and is_writer():  # in a multi-process run, process 0 alone writes the run folder
        run_folder.check_out(out, overwrite=args.overwrite)
    init_key, shuffle_key = jax.random.split(key)
    with bad_input():
        params = gd.init_mlp(init_key, settings["sizes"], settings["init"])
    splits = load_data(settings["dataset"], idx_dir=settings["idx_dir"], data_dir=settings["data_dir"],
                        download=args.download, validation=settings["validation"])
    train, test = splits[0], splits[-1]
    eval_data = splits[1] if settings["validation"] else test
    if settings["lmbda"]:  # the textbook's L2: lambda / (2n) sum w^2, n the whole training set's size
        cost = with_l2(cost, settings["lmbda"], train.size)
    if not 1 <= settings["batch_size"] <= train.size:
        raise UsageError(f"--batch-size must be between 1 and {train.size} (the training examples), got "
                         f"{settings['batch_size']}; 1 is stochastic, {train.size} full-batch gradient descent, the "
                         "textbook uses 10")
    with bad_input():
        if args.mesh is not None:
            check_batch_size(settings["batch_size"], args.mesh.size, name="--batch-size")
        check_fit_arguments(params, train, eval_data=eval_data, epochs=settings["epochs"],
                            batch_size=settings["batch_size"], target_cost=settings["target_cost"],
                            max_growth=settings["max_growth"], patience=settings["patience"],
                            eta_halving=settings["eta_schedule"])
        check_dataset(test, n_inputs=settings["sizes"][0], n_classes=settings["sizes"][-1], name="test data")
    datasets = {"train": train, "test": test}
    if settings["validation"]:
        datasets["validation"] = eval_data
    config = {
        **settings, "n_train": train.size, "n_eval": eval_data.size, "n_test": test.size,
        "eval_data": "validation" if settings["validation"] else "test",
        "data_sha256": data_fingerprint(datasets),
        "segments": [dict(s) for s in saved.get("segments", [])],
    }
    opt_state, history, done, best_params = None, None, 0, None
    if checkpoint is not None:
        assert out is not None  # a resumed run's folder
        with bad_input():
            ckpt = load_checkpoint(checkpoint, like=gd.TrainState(params, stateful.init(params)))
        for k in ("n_train", "n_eval"):
            if ckpt.config.get(k) != config[k]:
                raise BadInput(f"the data changed since the run started: {k} is {config[k]}, the checkpoint was "
                               f"trained with {ckpt.config.get(k)}; resume with the same data")
        check_same_data(ckpt.config.get("data_sha256"), config["data_sha256"], out=out)
        params, opt_state, shuffle_key, history, done = (
            ckpt.state.params, ckpt.state.opt_state, ckpt.key, ckpt.history, ckpt.epoch)
        if settings["patience"] is not None and history.best_epoch is not None:
            best_path = os.path.join(out, run_folder.best_params_name(history.best_epoch))
            with bad_input():
                best_params = gd.load_params(best_path)
        if settings["epochs"] < done:
            raise UsageError(f"--epochs {settings['epochs']} is fewer than the {plural(done, 'epoch')} {out!r} has "
                             f"done; pass --epochs {done} or more")
    elif saved:  # resumed before its first checkpoint
        check_same_data(saved.get("data_sha256"), config["data_sha256"], out=out or "")
    for segment in config["segments"]:  # the epochs a killed segment saved are all it contributed
        if segment.get("last_epoch") is None or segment["last_epoch"] > done:
            segment["last_epoch"] = done
    config["segments"].append(environment(command, first_epoch=done + 1))
    plan = _Plan(settings, config, optimizer, stateful, cost, params, opt_state, shuffle_key, history, done,
                 checkpoint, train, eval_data, test, best_params)
    return out, plan


def run_train(args: argparse.Namespace, given: set[str], command: list[str]) -> int:
    # Everything is validated before the run folder is touched, so a mistake writes nothing.
    out, plan = _prepare(args, given, command)
    args.run_folder = out  # named in the one line a lost peer ends this process with
    if not is_writer():
        try:
            return _follow(plan, args.mesh)
        except PeerLostError as e:  # another process died or hung: one line, and out at once
            exit_peer_lost(e, resume=out)
    if args.resume is not None:
        folder = run_folder.open_run_folder(args.resume)
        folder.write_json(run_folder.CONFIG, plan.config)
    else:
        folder = run_folder.claim_run_folder(out, plan.config, overwrite=args.overwrite)
    # From here on the run folder is written, every file atomically: an interruption at any
    # moment leaves each file whole, and the newest checkpoint to resume from.
    with folder:
        try:
            return _run(args, plan, folder)
        except PeerLostError as e:
            exit_peer_lost(e, resume=folder.path)
        except KeyboardInterrupt:
            if args.debug:
                traceback.print_exc()
            total = plan.settings["epochs"]
            state = (f"keeps epoch {plan.done} of {total}" if plan.done < total
                     else "holds the finished training; only the final files are missing")
            print(f"gd-jax: interrupted; nothing is half-written: the run folder {folder.path} {state}. "
                  f"Continue with: gd-jax train --resume {folder.path}", file=sys.stderr)
            return EXIT_INTERRUPTED


def _divergence(e: Any, settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The one-line message and the structured record of a divergence, in the command line's words."""
    growth = e.growth if math.isfinite(e.growth) else None
    fact = {"epoch": e.epoch, "reason": "growth" if e.cost_finite and growth is not None else "nonfinite",
            "growth": growth, "max_growth": e.max_growth, "cost_finite": e.cost_finite, "message": str(e)}
    smaller = f"--eta {settings['learning_rate'] / 10:g}"
    if fact["reason"] == "growth":
        saturates = settings["activation"] in ("sigmoid", "tanh")  # bounded neurons saturate; relu's grow on
        what = "saturating the network" if saturates else "far beyond their starting scale"
        message = (f"the parameters grew {growth:.3g}x in epoch {e.epoch}, more than --max-growth {e.max_growth:g}: "
                   f"{what}; the learning rate is probably too large: try {smaller} in a new run (or, if the run "
                   f"was healthy, resume it with a larger --max-growth, or --max-growth off)")
    else:
        message = (f"the cost became NaN or infinite in epoch {e.epoch}; the learning rate is probably too large: "
                   f"try {smaller} in a new run")
    return message, fact


def _run(args: argparse.Namespace, plan: _Plan, folder: run_folder.RunFolder) -> int:
    """Trains and writes the run folder (everything is validated by now)."""

    s, config = plan.settings, plan.config
    history = plan.history

    def save(epoch: int, state: gd.TrainState, history: gd.History, best_params: Any = None) -> None:
        with signals.interrupts_deferred():  # the checkpoint, params.npz and history.json of one epoch, together
            new_best = best_params is not None and history.best_epoch == epoch  # what --patience returns
            if new_best:  # before the checkpoint that records it
                gd.save_params(folder.file(run_folder.best_params_name(epoch)), best_params)
            save_checkpoint(folder.checkpoints, epoch=epoch, state=state, key=plan.key, history=history,
                            config=config)
            if new_best:
                run_folder.remove_best_params_except(folder.path, epoch)
            gd.save_params(folder.file("params.npz"), state.params)
            folder.write_json("history.json", {"config": config, **history.to_dict()})
            plan.done = epoch

    if plan.checkpoint is None:
        save(0, gd.TrainState(plan.params, plan.stateful.init(plan.params)), gd.History())
    else:
        print(f"gd-jax: resuming {folder.path} after epoch {plan.done} of {s['epochs']} ({plan.checkpoint})",
              file=sys.stderr)

    progress = EpochProgress(s["epochs"], plan.done, eval_name=config["eval_data"], enabled=not args.no_progress)
    live = {"history": history if history is not None else gd.History()}
    # TensorBoard follows the run: each epoch's scalars are flushed as it ends (a resumed stream goes on).
    events = LiveEvents(folder.path, config, history=history, enabled=not args.no_tensorboard)
    # matplotlib's first-figure costs, paid while training
    warm_up = None if args.no_figures else run_folder.start_figure_warm_up()

    def on_epoch_end(end: gd.EpochEnd) -> None:
        save(end.epoch, end.state, end.history, end.best_params)
        live["history"] = end.history
        events.epoch(end.history.epochs[-1])
        progress.epoch_end(end.history.epochs[-1])

    def finish_segment() -> None:
        config["segments"][-1]["last_epoch"] = plan.done
        folder.write_json(run_folder.CONFIG, config)

    try:
        params, history = _fit(plan, on_epoch_end=on_epoch_end, mesh=args.mesh)
    except DivergenceError as e:
        progress.close()
        if args.debug:
            traceback.print_exc()
        kept = checkpoint_path(folder.checkpoints, plan.done)
        message, fact = _divergence(e, s)
        with signals.interrupts_deferred():
            finish_segment()
            folder.write_json("history.json", {"config": config, **e.history.to_dict(), "divergence": fact,
                                               "last_good_epoch": plan.done})
            run_folder.write_figures(folder, e.history, config, tensorboard=not args.no_tensorboard,
                                     figures=not args.no_figures, warm_up=warm_up)
        which = f"{plan.done} (the initial parameters)" if plan.done == 0 else str(plan.done)
        print(f"gd-jax: training diverged: {message}; the run folder {folder.path} keeps the last good epoch, "
              f"{which}: {kept} and params.npz", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        progress.close()
        with signals.interrupts_deferred():
            finish_segment()
            folder.write_json("history.json", {"config": config, **live["history"].to_dict()})
            run_folder.write_figures(folder, live["history"], config, tensorboard=not args.no_tensorboard,
                                     figures=not args.no_figures, warm_up=warm_up)
        raise
    finally:
        progress.close()
        events.close()

    test = plan.test
    test_cost, test_accuracy = gd.evaluate(params, test, cost=plan.cost, activation=s["activation"])
    with signals.interrupts_deferred():
        finish_segment()
        gd.save_params(folder.file("params.npz"), params)
        folder.write_json("history.json", {"config": config, **history.to_dict(), "test_cost": test_cost,
                                           "test_accuracy": test_accuracy})
        run_folder.write_figures(folder, history, config, params=params, test=test, test_cost=test_cost,
                                 test_accuracy=test_accuracy, tensorboard=not args.no_tensorboard,
                                 figures=not args.no_figures, warm_up=warm_up)
    trained = len(history) - (len(plan.history) if plan.history is not None else 0)
    seconds = sum(r["seconds"] for r in history.epochs[len(history) - trained:])
    compile_seconds = history.compile_seconds if trained else 0.0  # fit compiled nothing when it had nothing to do
    if s["patience"] is not None and history.best_epoch is not None:
        best = history.best_epoch
        why = (f"stopped early: no better {config['eval_data']} accuracy in the {plural(s['patience'], 'epoch')} "
               f"after epoch {best}" if history.stop_reason == "early_stopping"
               else f"the best {config['eval_data']} accuracy was epoch {best}'s")
        print(f"{why}; params.npz holds epoch {best}'s parameters (also {run_folder.best_params_name(best)})")
    if history.stop_reason == "eta_schedule":
        print(f"stopped by the schedule: eta fell to 1/128 of {s['learning_rate']:g} after "
              f"{plural(len(history), 'epoch')}")
    print(f"test accuracy {test_accuracy:.4f} ({round(test_accuracy * test.size)} / {test.size}), test cost "
          f"{test_cost:.4f}; {plural(trained, 'epoch')} trained in {seconds:.1f} s, compiling {compile_seconds:.1f} "
          f"s; run folder {folder.path}")
    return 0


def _fit(plan: _Plan, *, on_epoch_end: Any, mesh: Any) -> tuple[Any, Any]:
    s = plan.settings
    return gd.fit(plan.params, plan.train, eval_data=plan.eval_data, epochs=s["epochs"], batch_size=s["batch_size"],
                  optimizer=plan.optimizer, cost=plan.cost, key=plan.key, activation=s["activation"],
                  target_cost=s["target_cost"], max_growth=s["max_growth"], patience=s["patience"],
                  eta_halving=s["eta_schedule"], opt_state=plan.opt_state, history=plan.history,
                  best_params=plan.best_params, on_epoch_end=on_epoch_end, mesh=mesh)


def _follow(plan: _Plan, mesh: Any) -> int:
    """Processes 1.. of a multi-process run: train in step with process 0, which writes everything."""

    try:
        _fit(plan, on_epoch_end=None, mesh=mesh)
    except DivergenceError:
        return EXIT_DIVERGED  # process 0 reports it
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # so does it
    return 0
