"""The ``gd-jax`` command: ``train`` a network (and ``--resume`` one) and ``evaluate`` a trained one.

This module parses the command line and dispatches; what a run folder is, how it is
claimed, written and resumed lives in ``gd_jax.runs``.

Exit status: 0 done; 2 bad input (one line on stderr naming the fix; ``--debug`` adds the
traceback); 3 the run diverged (the run folder keeps the last good epoch); 4 a process of a
multi-process run lost a peer (``gd_jax.parallel``); 130 interrupted
(Ctrl-C or SIGTERM; resume with ``--resume``). Any other failure is a bug and shows its
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from gd_jax import runs
from gd_jax.runs import BadInput, bad_input, plural

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

# The settings a run is defined by, saved in config.json and in every checkpoint.
SETTINGS = ("sizes", "epochs", "batch_size", "learning_rate", "momentum", "nesterov", "cost", "activation", "init",
            "seed", "target_cost", "max_growth", "lmbda", "patience", "eta_schedule",
            "dataset", "idx_dir", "data_dir", "validation")
# What --resume may change: how many epochs in all, where the (same) data lives, the divergence threshold.
RESUME_MAY_CHANGE = ("epochs", "idx_dir", "data_dir", "max_growth")
# Settings added after runs were first written, with the value those older runs used.
SETTING_DEFAULTS = {"max_growth": 10.0, "lmbda": None, "patience": None, "eta_schedule": None}
# Options that only steer this invocation, never the run.
INVOCATION_ONLY = ("resume", "no_progress", "no_tensorboard", "download", "debug", "device", "no_compile_cache", "out",
                   "overwrite", "devices", "coordinator", "num_processes", "process_id")

# Where the persistent compilation cache lives; "off" (or 0, false, no, empty) turns it off.
COMPILE_CACHE_ENV = "GD_JAX_COMPILE_CACHE"
# How to get JAX for an accelerator, by the platform JAX calls it.
_INSTALL_HINT = {
    "cuda": 'pip install -U "jax[cuda12]" (an NVIDIA GPU with its driver is needed)',
    "gpu": 'pip install -U "jax[cuda12]" (an NVIDIA GPU with its driver is needed)',
    "rocm": "install JAX's ROCm build (see JAX's installation guide; an AMD GPU is needed)",
    "tpu": 'pip install -U "jax[tpu]" (on a Cloud TPU VM)',
}
_PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


class UsageError(BadInput):
    """A command-line mistake: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + error
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes wants comma-separated integers like 784,30,10, got {text!r}") from None
    return sizes


def _max_growth(text: str) -> float | None:
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-growth wants a number > 1 or 'off', got {text!r}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    import gd_jax
    from gd_jax.costs import COSTS
    from gd_jax.data.mnist import SOURCES
    from gd_jax.launch import add_launch_parser
    from gd_jax.network import ACTIVATIONS, INITS
    from gd_jax.parallel import add_parallel_arguments

    parser = _Parser(prog="gd-jax", description="Train feed-forward networks by gradient descent in JAX.")
    parser.add_argument("--version", action="version", version=f"gd-jax {gd_jax.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", choices=SOURCES, default="sample",
                       help="sample: embedded 5,000/10,000 real MNIST (offline); idx: four IDX files in --idx-dir; "
                            "mnist: full MNIST via tensorflow-datasets (default: sample)")
        p.add_argument("--idx-dir", help="folder of the four MNIST IDX files (with --dataset idx or mnist)")
        p.add_argument("--data-dir", help="tensorflow-datasets data folder (with --dataset mnist; default "
                                          "$TFDS_DATA_DIR)")
        p.add_argument("--download", action="store_true", help="let --dataset mnist download the data")
        p.add_argument("--device", choices=sorted(_PLATFORMS),
                       help="where to compute (default: JAX's choice, the accelerator if JAX has one)")
        p.add_argument("--no-compile-cache", action="store_true",
                       help=f"do not use the persistent compilation cache (also: {COMPILE_CACHE_ENV}=off)")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")

    train = commands.add_parser("train", help="train a network and write a run folder",
                                description="Train a network by mini-batch gradient descent; defaults are the "
                                            "textbook's chapter 1 run. With --resume DIR, continue the run in DIR "
                                            "from its last checkpoint with its saved settings; only --epochs (the "
                                            "total, to extend a run), --idx-dir, --data-dir and --max-growth may "
                                            "be changed.")
    train.add_argument("--sizes", type=_sizes, default=[784, 30, 10], help="layer sizes (default 784,30,10)")
    train.add_argument("--epochs", type=int, default=30, help="epochs in all (default 30)")
    train.add_argument("--batch-size", type=int, default=10, help="mini-batch size (default 10)")
    train.add_argument("--learning-rate", "--eta", dest="learning_rate", type=float, default=3.0,
                       help="learning rate eta (default 3.0)")
    train.add_argument("--momentum", type=float, default=None, help="momentum coefficient in [0, 1) (default none)")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum (needs --momentum)")
    train.add_argument("--cost", choices=list(COSTS), default="quadratic", help="cost function (default quadratic)")
    train.add_argument("--activation", choices=list(ACTIVATIONS), default="sigmoid", help="neurons (default sigmoid)")
    train.add_argument("--init", choices=INITS, default="normal",
                       help="normal: N(0,1) weights (chapter 1); scaled: N(0,1/n_in) (chapter 3) (default normal)")
    # Seed 2 is one of the 15 in 20 seeds whose textbook run does not stall (see README, "Known behaviour").
    train.add_argument("--seed", type=int, default=2,
                       help="PRNG seed for initialisation and shuffling, 0 to 2**64-1 (default 2)")
    train.add_argument("--target-cost", type=float, default=None,
                       help="stop once the training cost is at or below this value")
    train.add_argument("--max-growth", type=_max_growth, default=10.0,
                       help="count the run as diverged when the parameters' root mean square grows more than this "
                            "many times in one epoch; 'off' never (default 10)")
    train.add_argument("--lmbda", type=float, default=None,
                       help="L2 regularisation lambda: adds lambda/(2n) sum w^2 to the cost, n the training examples "
                            "(the textbook's chapter 3; default none)")
    train.add_argument("--patience", type=int, default=None,
                       help="early stopping: stop when the evaluation accuracy has not improved for this many epochs, "
                            "and keep the best epoch's parameters (use with --validation)")
    train.add_argument("--eta-schedule", type=int, default=None, metavar="N",
                       help="halve eta each time the evaluation accuracy has not improved for N epochs; stop once it "
                            "is 1/128 of its start (the textbook's schedule; use with --validation)")
    train.add_argument("--validation", action="store_true",
                       help="evaluate on a validation set held out of the training data (test reported at the end)")
    train.add_argument("--out", help="run folder (default runs/<date-time>)")
    train.add_argument("--overwrite", action="store_true", help="replace the files of an existing run folder")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run in DIR from its last checkpoint, with its saved settings")
    train.add_argument("--no-progress", action="store_true", help="print nothing per epoch")
    train.add_argument("--no-tensorboard", action="store_true",
                       help="write no TensorBoard event file (the figures and history.json are written all the same)")
    common_options(train)
    add_parallel_arguments(train)

    evaluate = commands.add_parser("evaluate", help="evaluate a trained network",
                                   description="Cost and accuracy of a run's params.npz on a dataset's test split; "
                                               "the data options default to the run's own.")
    evaluate.add_argument("run", help="a run folder, or a params .npz file")
    evaluate.add_argument("--cost", choices=list(COSTS), default=None, help="cost (default: the run's)")
    evaluate.add_argument("--activation", choices=list(ACTIVATIONS), default=None, help="neurons (default: the run's)")
    common_options(evaluate)

    from gd_jax.sweep_cli import add_sweep_arguments

    sweep = commands.add_parser("sweep", help="train a grid of models as one compiled program",
                                description="Train the cartesian product of the comma-listed --eta, --momentum and "
                                            "--lmbda values times --seeds seeds as one compiled program, into one "
                                            "sweep folder; every train option applies to all the models.")
    add_sweep_arguments(sweep)
    common_options(sweep)
    launch = add_launch_parser(commands)

    from gd_jax.bench import add_bench_arguments

    bench = commands.add_parser("bench", help="how fast gradient descent runs here, against baselines",
                                description="Seconds per epoch of gd_jax and its peers, checked to compute the same "
                                            "epoch, against the machine's peak; time to accuracy; per-example "
                                            "gradients. See the README's Benchmarks section.")
    add_bench_arguments(bench)
    bench.add_argument("--no-compile-cache", action="store_true", help="do not use the persistent compilation cache")

    from gd_jax.images import add_predict_arguments

    predict = commands.add_parser("predict", help="a trained network's digit for each of your own images",
                                  description="Read PNG/JPEG digits of any size, prepare them as MNIST was made and "
                                              "print the run's predicted digit and its ten output activations.")
    add_predict_arguments(predict)
    parser.gd_jax_commands = (train, evaluate, sweep, launch, bench, predict)
    return parser


def _given_options(argv: Sequence[str]) -> set[str]:
    """The destinations of the options written on the command line (not taken from defaults)."""
    parser = build_parser()
    for p in (parser, *parser.gd_jax_commands):
        for action in p._actions:  # argparse has no public way to ask which options were given
            if action.dest not in ("help", "command", "version"):
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


# --- the process's environment: compilation cache, device ---------------------------------------------------------


def compile_cache_folder(disabled: bool = False) -> str | None:
    """The persistent compilation cache folder: ``$GD_JAX_COMPILE_CACHE``, else the user's cache folder.

    ``$XDG_CACHE_HOME/gd_jax/jax-compile`` (``~/.cache/gd_jax/jax-compile`` without it).
    None when ``disabled`` or ``$GD_JAX_COMPILE_CACHE`` is ``off``, ``0``, ``false``, ``no`` or empty.
    """
    if disabled:
        return None
    chosen = os.environ.get(COMPILE_CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "false", "no") else os.path.expanduser(chosen)
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "gd_jax", "jax-compile")


def _use_compile_cache(folder: str | None) -> None:
    """Lets JAX keep compiled programs in ``folder`` across processes, so a repeated command compiles nothing."""
    if folder is None:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", folder)
    # The epoch compiles in well under JAX's default 1 s threshold on a CPU, yet dominates a short run.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _select_device(device: str | None):
    """The device to compute on; one line naming the platform and how to get it when JAX cannot use it."""
    import jax

    wanted = _PLATFORMS.get(device) if device else None
    if wanted is not None:
        jax.config.update("jax_platforms", wanted)  # before JAX starts a backend; ignored after
    platform = wanted or os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or None
    try:
        devices = jax.devices(device) if device else jax.devices()
    except (RuntimeError, AssertionError) as e:  # JAX's errors (an assertion for some) when a platform fails to start
        name = platform or "the default"
        first = name.split(",")[0]
        hint = _INSTALL_HINT.get(first, "check JAX's installation guide")
        reason = str(e).split("\n")[0] or "no such device here"
        raise BadInput(f"JAX cannot use the {name!r} platform on this machine ({reason}); to use it, {hint}; or run "
                       "on the CPU with --device cpu") from e
    return devices[0]


# --- train --------------------------------------------------------------------------------------------------------


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
    _check_data_flags(s["dataset"], s["idx_dir"], s["data_dir"], s.get("download", False))


def _check_data_flags(dataset: str, idx_dir: str | None, data_dir: str | None, download: bool) -> None:
    if idx_dir is not None and dataset not in ("idx", "mnist"):
        raise UsageError(f"--idx-dir is read only with --dataset idx (any IDX files) or --dataset mnist (the genuine "
                         f"files); add one of them, or drop --idx-dir (--dataset is {dataset})")
    if data_dir is not None and dataset != "mnist":
        raise UsageError(f"--data-dir is read only with --dataset mnist; add --dataset mnist, or drop --data-dir "
                         f"(--dataset is {dataset})")
    if download and dataset != "mnist":
        raise UsageError(f"--download is only for --dataset mnist; add --dataset mnist, or drop --download "
                         f"(--dataset is {dataset})")


def _load_data(dataset: str, *, idx_dir, data_dir, download: bool, validation: bool = False):
    from gd_jax.data.mnist import load_mnist

    with bad_input():
        return load_mnist(dataset, validation=validation, idx_dir=idx_dir, data_dir=data_dir, download=download)


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
    import jax

    import gd_jax as gd
    from gd_jax.checkpoint import load_checkpoint
    from gd_jax.costs import COSTS, with_l2
    from gd_jax.data import check_dataset
    from gd_jax.parallel import check_batch_size, is_writer
    from gd_jax.train import check_fit_arguments

    out, settings, saved, checkpoint = runs.command_settings(args, given, settings=SETTINGS,
                                                             may_change=RESUME_MAY_CHANGE, defaults=SETTING_DEFAULTS)
    _check_flags({**settings, "download": args.download})
    key = runs.seed_key(settings["seed"])
    optimizer = gd.sgd(settings["learning_rate"], momentum=settings["momentum"], nesterov=settings["nesterov"])
    # With the schedule, fit wraps the optimizer so that its state carries the learning-rate scale:
    # checkpoints hold that state.
    stateful = gd.scale_learning_rate(optimizer) if settings["eta_schedule"] is not None else optimizer
    cost = functools.partial(COSTS[settings["cost"]], activation=settings["activation"])
    if args.resume is None and is_writer():  # in a multi-process run, process 0 alone writes the run folder
        runs.check_out(out, overwrite=args.overwrite)
    init_key, shuffle_key = jax.random.split(key)
    with bad_input():
        params = gd.init_mlp(init_key, settings["sizes"], settings["init"])
    splits = _load_data(settings["dataset"], idx_dir=settings["idx_dir"], data_dir=settings["data_dir"],
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
            check_batch_size(settings["batch_size"], args.mesh.size)
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
        "data_sha256": runs.data_fingerprint(datasets),
        "segments": [dict(s) for s in saved.get("segments", [])],
    }
    opt_state, history, done, best_params = None, None, 0, None
    if checkpoint is not None:
        with bad_input():
            ckpt = load_checkpoint(checkpoint, like=gd.TrainState(params, stateful.init(params)))
        for k in ("n_train", "n_eval"):
            if ckpt.config.get(k) != config[k]:
                raise BadInput(f"the data changed since the run started: {k} is {config[k]}, the checkpoint was "
                               f"trained with {ckpt.config.get(k)}; resume with the same data")
        runs.check_same_data(ckpt.config.get("data_sha256"), config["data_sha256"], out=out)
        params, opt_state, shuffle_key, history, done = (
            ckpt.state.params, ckpt.state.opt_state, ckpt.key, ckpt.history, ckpt.epoch)
        if settings["patience"] is not None and history.best_epoch is not None:
            best_path = os.path.join(out, runs.best_params_name(history.best_epoch))
            with bad_input():
                best_params = gd.load_params(best_path)
        if settings["epochs"] < done:
            raise UsageError(f"--epochs {settings['epochs']} is fewer than the {plural(done, 'epoch')} {out!r} has "
                             f"done; pass --epochs {done} or more")
    elif saved:
        runs.check_same_data(saved.get("data_sha256"), config["data_sha256"], out=out)
    for segment in config["segments"]:  # the epochs a killed segment saved are all it contributed
        if segment.get("last_epoch") is None or segment["last_epoch"] > done:
            segment["last_epoch"] = done
    config["segments"].append(runs.environment(command, first_epoch=done + 1))
    plan = _Plan(settings, config, optimizer, stateful, cost, params, opt_state, shuffle_key, history, done,
                 checkpoint, train, eval_data, test, best_params)
    return out, plan


def _train(args: argparse.Namespace, given: set[str], command: list[str]) -> int:
    from gd_jax.parallel import PeerLostError, exit_peer_lost, is_writer

    # Everything is validated before the run folder is touched, so a mistake writes nothing.
    out, plan = _prepare(args, given, command)
    args.run_folder = out  # named in the one line a lost peer ends this process with
    if not is_writer():
        try:
            return _follow(plan, args.mesh)
        except PeerLostError as e:  # another process died or hung: one line, and out at once
            exit_peer_lost(e, resume=out)
    if args.resume is not None:
        folder = runs.open_run_folder(out)
        folder.write_json(runs.CONFIG, plan.config)
    else:
        folder = runs.claim_run_folder(out, plan.config, overwrite=args.overwrite)
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


def _run(args: argparse.Namespace, plan: _Plan, folder: runs.RunFolder) -> int:
    """Trains and writes the run folder (everything is validated by now)."""
    import gd_jax as gd
    from gd_jax.checkpoint import checkpoint_path, save_checkpoint
    from gd_jax.train import DivergenceError

    s, config = plan.settings, plan.config
    history = plan.history

    def save(epoch: int, state: gd.TrainState, history: gd.History, best_params: Any = None) -> None:
        with runs.interrupts_deferred():  # the checkpoint, params.npz and history.json of one epoch, together
            new_best = best_params is not None and history.best_epoch == epoch  # what --patience returns
            if new_best:  # before the checkpoint that records it
                gd.save_params(folder.file(runs.best_params_name(epoch)), best_params)
            save_checkpoint(folder.checkpoints, epoch=epoch, state=state, key=plan.key, history=history,
                            config=config)
            if new_best:
                runs.remove_best_params_except(folder.path, epoch)
            gd.save_params(folder.file("params.npz"), state.params)
            folder.write_json("history.json", {"config": config, **history.to_dict()})
            plan.done = epoch

    if plan.checkpoint is None:
        save(0, gd.TrainState(plan.params, plan.stateful.init(plan.params)), gd.History())
    else:
        print(f"gd-jax: resuming {folder.path} after epoch {plan.done} of {s['epochs']} ({plan.checkpoint})",
              file=sys.stderr)

    progress = runs.EpochProgress(s["epochs"], plan.done, eval_name=config["eval_data"], enabled=not args.no_progress)
    live = {"history": history if history is not None else gd.History()}

    def on_epoch_end(end: gd.EpochEnd) -> None:
        save(end.epoch, end.state, end.history, end.best_params)
        live["history"] = end.history
        progress.epoch_end(end.history.epochs[-1])

    def finish_segment() -> None:
        config["segments"][-1]["last_epoch"] = plan.done
        folder.write_json(runs.CONFIG, config)

    try:
        params, history = _fit(plan, on_epoch_end=on_epoch_end, mesh=args.mesh)
    except DivergenceError as e:
        progress.close()
        if args.debug:
            traceback.print_exc()
        kept = checkpoint_path(folder.checkpoints, plan.done)
        message, fact = _divergence(e, s)
        with runs.interrupts_deferred():
            finish_segment()
            folder.write_json("history.json", {"config": config, **e.history.to_dict(), "divergence": fact,
                                               "last_good_epoch": plan.done})
            runs.write_figures(folder, e.history, config, tensorboard=not args.no_tensorboard)
        which = f"{plan.done} (the initial parameters)" if plan.done == 0 else str(plan.done)
        print(f"gd-jax: training diverged: {message}; the run folder {folder.path} keeps the last good epoch, "
              f"{which}: {kept} and params.npz", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        progress.close()
        with runs.interrupts_deferred():
            finish_segment()
            folder.write_json("history.json", {"config": config, **live["history"].to_dict()})
            runs.write_figures(folder, live["history"], config, tensorboard=not args.no_tensorboard)
        raise
    finally:
        progress.close()

    test = plan.test
    test_cost, test_accuracy = gd.evaluate(params, test, cost=plan.cost, activation=s["activation"])
    with runs.interrupts_deferred():
        finish_segment()
        gd.save_params(folder.file("params.npz"), params)
        folder.write_json("history.json", {"config": config, **history.to_dict(), "test_cost": test_cost,
                                           "test_accuracy": test_accuracy})
        runs.write_figures(folder, history, config, params=params, test=test, test_cost=test_cost,
                           test_accuracy=test_accuracy, tensorboard=not args.no_tensorboard)
    trained = len(history) - (len(plan.history) if plan.history is not None else 0)
    seconds = sum(r["seconds"] for r in history.epochs[len(history) - trained:])
    compile_seconds = history.compile_seconds if trained else 0.0  # fit compiled nothing when it had nothing to do
    if s["patience"] is not None and history.best_epoch is not None:
        best = history.best_epoch
        why = (f"stopped early: no better {config['eval_data']} accuracy in the {plural(s['patience'], 'epoch')} "
               f"after epoch {best}" if history.stop_reason == "early_stopping"
               else f"the best {config['eval_data']} accuracy was epoch {best}'s")
        print(f"{why}; params.npz holds epoch {best}'s parameters (also {runs.best_params_name(best)})")
    if history.stop_reason == "eta_schedule":
        print(f"stopped by the schedule: eta fell to 1/128 of {s['learning_rate']:g} after "
              f"{plural(len(history), 'epoch')}")
    print(f"test accuracy {test_accuracy:.4f} ({round(test_accuracy * test.size)} / {test.size}), test cost "
          f"{test_cost:.4f}; {plural(trained, 'epoch')} trained in {seconds:.1f} s, compiling {compile_seconds:.1f} "
          f"s; run folder {folder.path}")
    return 0


def _fit(plan: _Plan, *, on_epoch_end: Any, mesh: Any) -> tuple[Any, Any]:
    import gd_jax as gd

    s = plan.settings
    return gd.fit(plan.params, plan.train, eval_data=plan.eval_data, epochs=s["epochs"], batch_size=s["batch_size"],
                  optimizer=plan.optimizer, cost=plan.cost, key=plan.key, activation=s["activation"],
                  target_cost=s["target_cost"], max_growth=s["max_growth"], patience=s["patience"],
                  eta_halving=s["eta_schedule"], opt_state=plan.opt_state, history=plan.history,
                  best_params=plan.best_params, on_epoch_end=on_epoch_end, mesh=mesh)


def _follow(plan: _Plan, mesh: Any) -> int:
    """Processes 1.. of a multi-process run: train in step with process 0, which writes everything."""
    from gd_jax.train import DivergenceError

    try:
        _fit(plan, on_epoch_end=None, mesh=mesh)
    except DivergenceError:
        return EXIT_DIVERGED  # process 0 reports it
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # so does it
    return 0


# --- evaluate -----------------------------------------------------------------------------------------------------


def _evaluate(args: argparse.Namespace, given: set[str], command: list[str]) -> int:
    import gd_jax as gd
    from gd_jax.costs import COSTS
    from gd_jax.data import check_dataset
    from gd_jax.network import layer_sizes

    path, config = args.run, {}
    if os.path.isdir(path):
        config_path = os.path.join(path, runs.CONFIG)
        if os.path.isfile(config_path):
            config = runs.read_json(config_path)
        path = os.path.join(path, "params.npz")
    with bad_input():
        params = gd.load_params(path)
    cost_name = args.cost or config.get("cost", "quadratic")
    activation = args.activation or config.get("activation", "sigmoid")
    # The data the run trained on unless told otherwise: a --dataset idx run is evaluated on its own IDX files.
    data = {k: getattr(args, k) if k in given else config.get(k, getattr(args, k))
            for k in ("dataset", "idx_dir", "data_dir")}
    if "dataset" in given and args.dataset != config.get("dataset"):
        data["idx_dir"] = args.idx_dir  # another data set: the run's folders do not apply
        data["data_dir"] = args.data_dir
    _check_data_flags(data["dataset"], data["idx_dir"], data["data_dir"], args.download)
    test = _load_data(data["dataset"], idx_dir=data["idx_dir"], data_dir=data["data_dir"], download=args.download)[-1]
    sizes = layer_sizes(params)
    with bad_input():
        check_dataset(test, n_inputs=sizes[0], n_classes=sizes[-1], name=f"{data['dataset']} test data")
    cost = functools.partial(COSTS[cost_name], activation=activation)
    test_cost, test_accuracy = gd.evaluate(params, test, cost=cost, activation=activation)
    print(json.dumps({"params": path, "dataset": data["dataset"], "idx_dir": data["idx_dir"], "n": test.size,
                      "cost": cost_name, "test_cost": test_cost, "test_accuracy": test_accuracy}))
    return 0


def _start_parallel(args: argparse.Namespace) -> Any:
    """``--devices`` and the multi-process flags, acted on before JAX starts; the mesh or None."""
    from gd_jax.parallel import PeerLostError, exit_peer_lost, start_parallel

    if args.device and (args.devices is not None or args.coordinator is not None):
        import jax

        jax.config.update("jax_platforms", _PLATFORMS[args.device])  # the mesh is made of --device's devices
    try:
        with bad_input():
            return start_parallel(args)
    except PeerLostError as e:
        exit_peer_lost(e)
def _bench(args: argparse.Namespace, given: set[str], command_line: list[str]) -> int:
    from gd_jax.bench import run_bench

    return run_bench(args, " ".join(command_line))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help and --version print and exit; parse errors raise UsageError
            return int(e.code or 0)
        args.debug = debug
        if args.command == "predict":
            from gd_jax.images import run_predict

            return run_predict(args)
        if args.command == "launch":
            from gd_jax.launch import run_launch

            with bad_input(), runs.interrupts_as_keyboard_interrupt():  # SIGTERM stops the processes too
                return run_launch(args)
        _use_compile_cache(compile_cache_folder(args.no_compile_cache))
        args.mesh = _start_parallel(args) if args.command == "train" else None
        import jax

        platforms = jax.config.jax_platforms
        try:
            device = _select_device(args.device)
            # Only this command computes there (a caller's own JAX work, e.g. in tests, keeps its default).
            with runs.interrupts_as_keyboard_interrupt(), jax.default_device(device if args.device else None):
                from gd_jax.sweep_cli import run_sweep

                command = {"train": _train, "evaluate": _evaluate, "sweep": run_sweep, "bench": _bench}[args.command]
                return command(args, _given_options(argv), ["gd-jax", *argv])
        finally:
            jax.config.update("jax_platforms", platforms)
            if getattr(args, "peer_watch", None) is not None:  # done: the others need not wait for this process
                args.peer_watch.stop()
    except BadInput as e:  # bad input: settings, data files, run folders; anything else is a bug
        if debug:
            traceback.print_exc()
        print(f"gd-jax: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("gd-jax: interrupted before training started; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
