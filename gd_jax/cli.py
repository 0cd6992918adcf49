"""The ``gd-jax`` command: ``train`` a network (and ``--resume`` one) and ``evaluate`` a trained one.

A run folder (``--out DIR``) holds ``config.json``, ``history.json``, ``params.npz`` (the
last finished epoch's parameters, then the final ones), ``history.png`` at the end, and
``checkpoints/``: the state after each epoch (``epoch-000000.npz`` is the initial state;
the two newest are kept). Every file is written atomically, so a crash, a SIGKILL or a
Ctrl-C at any moment leaves each of them whole, and ``gd-jax train --resume DIR``
continues from the newest checkpoint with the saved config, ending with the parameters
and history that the uninterrupted run would have had.

Exit status: 0 done; 2 bad input (one line on stderr naming the fix; ``--debug`` adds the
traceback); 3 the run diverged (the run folder keeps the last good epoch); 130 interrupted
(Ctrl-C or SIGTERM; resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

# The files a run folder holds; --overwrite removes exactly these (and the checkpoints), nothing else.
RUN_FILES = ("config.json", "history.json", "params.npz", "history.png")
CHECKPOINTS = "checkpoints"
# The settings a run is defined by, saved in config.json and in every checkpoint.
SETTINGS = ("sizes", "epochs", "batch_size", "learning_rate", "momentum", "nesterov", "cost", "activation", "init",
            "seed", "target_cost", "dataset", "idx_dir", "data_dir", "validation")
# What --resume may change: how many epochs in all, and where the (same) data lives.
RESUME_MAY_CHANGE = ("epochs", "idx_dir", "data_dir")
# Options that only steer this invocation, never the run.
INVOCATION_ONLY = ("resume", "no_progress", "download", "debug", "devices", "coordinator", "num_processes",
                   "process_id")


class UsageError(ValueError):
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


def build_parser() -> argparse.ArgumentParser:
    from gd_jax.costs import COSTS
    from gd_jax.data.mnist import SOURCES
    from gd_jax.launch import add_launch_parser
    from gd_jax.network import ACTIVATIONS, INITS
    from gd_jax.parallel import add_parallel_arguments

    parser = _Parser(prog="gd-jax", description="Train feed-forward networks by gradient descent in JAX.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", choices=SOURCES, default="sample",
                       help="sample: embedded 5,000/10,000 real MNIST (offline); idx: four IDX files in --idx-dir; "
                            "mnist: full MNIST via tensorflow-datasets (default: sample)")
        p.add_argument("--idx-dir", help="folder of the four MNIST IDX files (for --dataset idx or mnist)")
        p.add_argument("--data-dir", help="tensorflow-datasets data folder (default $TFDS_DATA_DIR)")
        p.add_argument("--download", action="store_true", help="let --dataset mnist download the data")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")

    train = commands.add_parser("train", help="train a network and write a run folder",
                                description="Train a network by mini-batch gradient descent; defaults are the "
                                            "textbook's chapter 1 run. With --resume DIR, continue the run in DIR "
                                            "from its last checkpoint with its saved settings; only --epochs (the "
                                            "total, to extend a run), --idx-dir and --data-dir may be changed.")
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
    train.add_argument("--seed", type=int, default=2, help="PRNG seed for initialisation and shuffling (default 2)")
    train.add_argument("--target-cost", type=float, default=None,
                       help="stop once the training cost is at or below this value")
    train.add_argument("--validation", action="store_true",
                       help="evaluate on a validation set held out of the training data (test reported at the end)")
    train.add_argument("--out", help="run folder (default runs/<date-time>)")
    train.add_argument("--overwrite", action="store_true", help="replace the files of an existing run folder")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run in DIR from its last checkpoint, with its saved settings")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    data_options(train)
    add_parallel_arguments(train)

    evaluate = commands.add_parser("evaluate", help="evaluate a trained network",
                                   description="Cost and accuracy of a run's params.npz on a dataset's test split.")
    evaluate.add_argument("run", help="a run folder, or a params .npz file")
    evaluate.add_argument("--cost", choices=list(COSTS), default=None, help="cost (default: the run's)")
    evaluate.add_argument("--activation", choices=list(ACTIVATIONS), default=None, help="neurons (default: the run's)")
    data_options(evaluate)
    launch = add_launch_parser(commands)
    parser.gd_jax_commands = (train, evaluate, launch)
    return parser


def _given_options(argv: Sequence[str]) -> set[str]:
    """The destinations of the options written on the command line (not taken from defaults)."""
    parser = build_parser()
    for p in (parser, *parser.gd_jax_commands):
        for action in p._actions:  # argparse has no public way to ask which options were given
            if action.dest not in ("help", "command"):
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


def _load_data(args: argparse.Namespace, *, validation: bool = False):
    from gd_jax.data.mnist import load_mnist

    return load_mnist(args.dataset, validation=validation, idx_dir=args.idx_dir, data_dir=args.data_dir,
                      download=args.download)


def _write_json(path: str, obj: Any) -> None:
    from gd_jax.serialization import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _prepare_out(out: str | None, overwrite: bool) -> str:
    """Checks that the run folder can be written, without writing anything yet."""
    if out is None:
        out = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} is a file, not a folder; choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise UsageError(
            f"run folder {out!r} already exists and is not empty; pass --overwrite, --resume {out} to continue "
            "it, or choose another --out")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"cannot create run folder {out!r}: {parent!r} is a file, not a folder; choose another --out")
    target = out if os.path.isdir(out) else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write run folder {out!r}: {target!r} is not writable; choose another --out")
    return out


def _make_out(out: str, overwrite: bool) -> None:
    """Creates the run folder; with ``overwrite``, removes the files of the run it held before."""
    from gd_jax.checkpoint import list_checkpoints

    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create run folder {out!r} ({e.strerror}); choose another --out") from None
    if overwrite:
        for name in RUN_FILES:
            if os.path.exists(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))
        folder = os.path.join(out, CHECKPOINTS)
        for _, path in list_checkpoints(folder):
            os.unlink(path)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.startswith(".tmp-"):
                    os.unlink(os.path.join(folder, name))
            if not os.listdir(folder):
                os.rmdir(folder)


# The signals that interrupt a run: Ctrl-C, and the SIGTERM that `kill` and job schedulers send.
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Makes SIGTERM raise KeyboardInterrupt, as SIGINT does, so both stop a run the same clean way.

    Only in the main thread (the only one that may set handlers); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Holds an interrupt back until the block is done, so that the files of one epoch are written together.

    Only in the main thread and for signals handled by Python's default KeyboardInterrupt
    handler; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferred = [s for s in _INTERRUPTS if signal.getsignal(s) is signal.default_int_handler]
    received: list[int] = []
    for s in deferred:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s in deferred:
            signal.signal(s, signal.default_int_handler)
        if received:
            raise KeyboardInterrupt


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path!r} ({e}); it is damaged: start a new run") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path!r} does not hold a run config; start a new run")
    return value


def _resume_settings(args: argparse.Namespace, given: set[str]) -> tuple[str, dict[str, Any], str | None]:
    """The run folder, the settings to continue with and the checkpoint to start from (None: epoch 0)."""
    from gd_jax.checkpoint import latest_checkpoint, read_checkpoint_manifest

    out = args.resume
    for flag in ("out", "overwrite"):
        if flag in given:
            raise UsageError(f"--{flag} cannot be combined with --resume: --resume {out} continues the run in {out} "
                             f"itself; drop --{flag}")
    if not os.path.isdir(out):
        raise FileNotFoundError(f"run folder not found: {out!r}; pass the --out folder of an earlier gd-jax train")
    config_path = os.path.join(out, "config.json")
    checkpoint = latest_checkpoint(os.path.join(out, CHECKPOINTS))
    if checkpoint is not None:
        saved = read_checkpoint_manifest(checkpoint)["config"]
        if os.path.isfile(config_path):
            # The checkpoint's own config rules; config.json must describe the same run.
            described = _read_json(config_path)
            differ = [k for k in SETTINGS if k not in RESUME_MAY_CHANGE and described.get(k) != saved.get(k)]
            if differ:
                k = differ[0]
                raise UsageError(
                    f"checkpoint {checkpoint!r} was written by another run than {config_path!r} describes "
                    f"({k} {saved.get(k)!r} there, {described.get(k)!r} here); move the foreign checkpoint away or "
                    "start a new run")
    elif os.path.isfile(config_path):
        saved = _read_json(config_path)  # stopped before its first checkpoint: start at epoch 0
    else:
        raise UsageError(f"{out!r} is not a gd-jax run folder (no config.json, no {CHECKPOINTS}/); "
                         "pass the --out folder of an earlier gd-jax train")
    missing = [k for k in SETTINGS if k not in saved]
    if missing:
        raise UsageError(f"the saved config of {out!r} lacks {', '.join(missing)}; start a new run")
    settings = {k: saved[k] for k in SETTINGS}
    for k in sorted(given - set(INVOCATION_ONLY)):
        value = getattr(args, k)
        if k in RESUME_MAY_CHANGE:
            settings[k] = value
        elif value != settings.get(k):
            flag = "--" + k.replace("_", "-")
            raise UsageError(
                f"{flag} {_show(value)} conflicts with the run's saved {k} {_show(settings.get(k))}; a resumed run "
                f"keeps its settings (only {', '.join('--' + m.replace('_', '-') for m in RESUME_MAY_CHANGE)} may "
                f"change): drop {flag}, or start a new run with --out")
    return out, settings, checkpoint


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _train(args: argparse.Namespace, given: set[str]) -> int:
    import jax

    import gd_jax as gd
    from gd_jax.checkpoint import load_checkpoint
    from gd_jax.costs import COSTS
    from gd_jax.data import check_dataset
    from gd_jax.parallel import PeerLostError, check_batch_size, exit_peer_lost, is_writer, start_parallel
    from gd_jax.train import check_fit_arguments

    try:
        mesh = start_parallel(args)  # before any JAX computation: devices, jax.distributed
    except PeerLostError as e:
        exit_peer_lost(e)
    # Everything is validated before the run folder is touched, so a mistake writes nothing.
    if args.resume is not None:
        out, settings, checkpoint = _resume_settings(args, given)
    else:
        settings, checkpoint = {k: getattr(args, k) for k in SETTINGS}, None
    run = argparse.Namespace(**settings, download=args.download)
    optimizer = gd.sgd(run.learning_rate, momentum=run.momentum, nesterov=run.nesterov)
    cost = functools.partial(COSTS[run.cost], activation=run.activation)
    if args.resume is None:
        out = _prepare_out(args.out, args.overwrite) if is_writer() else args.out
    key = jax.random.key(run.seed)
    init_key, shuffle_key = jax.random.split(key)
    params = gd.init_mlp(init_key, run.sizes, run.init)
    splits = _load_data(run, validation=run.validation)
    train, test = splits[0], splits[-1]
    eval_data = splits[1] if run.validation else test
    check_fit_arguments(params, train, eval_data=eval_data, epochs=run.epochs, batch_size=run.batch_size,
                        target_cost=run.target_cost)
    check_dataset(test, n_inputs=run.sizes[0], n_classes=run.sizes[-1], name="test data")
    if mesh is not None:
        check_batch_size(run.batch_size, mesh.size)
    config = {
        **settings, "n_train": train.size, "n_eval": eval_data.size,
        "gd_jax": gd.__version__, "jax": jax.__version__, "device": str(jax.devices()[0]),
        "python": platform.python_version(), "devices": 1 if mesh is None else mesh.size,
        "processes": jax.process_count(),
    }
    opt_state, history, done = None, None, 0
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint, like=gd.TrainState(params, optimizer.init(params)))
        for k in ("n_train", "n_eval"):
            if ckpt.config.get(k) != config[k]:
                raise UsageError(f"the data changed since the run started: {k} is {config[k]}, the checkpoint was "
                                 f"trained with {ckpt.config.get(k)}; resume with the same data")
        params, opt_state, shuffle_key, history, done = (
            ckpt.state.params, ckpt.state.opt_state, ckpt.key, ckpt.history, ckpt.epoch)
        if run.epochs < done:
            raise UsageError(f"--epochs {run.epochs} is fewer than the {done} epochs {out!r} has done; pass "
                             f"--epochs {done} or more")
    finished = (history is not None and run.target_cost is not None and len(history) > 0
                and history.epochs[-1]["train_cost"] <= run.target_cost)

    plan = _Plan(run, out, config, optimizer, cost, params, opt_state, shuffle_key, history, done, finished,
                 checkpoint, train, eval_data, test, mesh)
    # From here on the run folder is written, every file atomically: an interruption at any
    # moment leaves each file whole, and the newest checkpoint to resume from.
    try:
        return _run(args, plan)
    except PeerLostError as e:  # another process died or hung: one line, and out at once
        exit_peer_lost(e, resume=out)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        if not os.path.isfile(os.path.join(out, "config.json")):
            print(f"gd-jax: interrupted before the run folder {out} was written", file=sys.stderr)
            return EXIT_INTERRUPTED
        state = (f"keeps epoch {plan.done} of {run.epochs}" if plan.done < run.epochs
                 else "holds the finished training; only the final files are missing")
        print(f"gd-jax: interrupted; nothing is half-written: the run folder {out} {state}. "
              f"Continue with: gd-jax train --resume {out}", file=sys.stderr)
        return EXIT_INTERRUPTED


@dataclasses.dataclass
class _Plan:
    """A validated run, ready to write: its settings, data, starting state and folder."""

    run: argparse.Namespace  # the settings (SETTINGS) and --download
    out: str
    config: dict[str, Any]
    optimizer: Any
    cost: Any
    params: Any
    opt_state: Any  # None: a fresh optimizer.init(params)
    key: Any  # the shuffling key given to fit
    history: Any  # None: a new run
    done: int  # epochs done, updated as checkpoints are written
    finished: bool  # the saved run already reached its target cost
    checkpoint: str | None  # the checkpoint resumed from
    train: Any
    eval_data: Any
    test: Any
    mesh: Any = None  # data parallel over this mesh (None: one device)


def _run(args: argparse.Namespace, plan: _Plan) -> int:
    """Trains and writes the run folder (everything is validated by now)."""
    import gd_jax as gd
    from gd_jax.checkpoint import checkpoint_path, save_checkpoint
    from gd_jax.parallel import is_writer
    from gd_jax.plotting import plot_history
    from gd_jax.train import DivergenceError

    run, out, config, history = plan.run, plan.out, plan.config, plan.history
    writer = is_writer()  # in a multi-process run, process 0 alone writes the run folder

    if args.resume is None and writer:
        _make_out(out, args.overwrite)
    if writer:
        _write_json(os.path.join(out, "config.json"), config)

    def save(epoch: int, state: gd.TrainState, history: gd.History) -> None:
        if not writer:
            plan.done = epoch
            return
        with _interrupts_deferred():  # the checkpoint, params.npz and history.json of one epoch, together
            save_checkpoint(os.path.join(out, CHECKPOINTS), epoch=epoch, state=state, key=plan.key, history=history,
                            config=config)
            gd.save_params(os.path.join(out, "params.npz"), state.params)
            _write_json(os.path.join(out, "history.json"), {"config": config, **history.to_dict()})
            plan.done = epoch

    if plan.checkpoint is None:
        save(0, gd.TrainState(plan.params, plan.optimizer.init(plan.params)), gd.History())
    elif writer:
        print(f"gd-jax: resuming {out} after epoch {plan.done} of {run.epochs} ({plan.checkpoint})", file=sys.stderr)

    from tqdm import tqdm

    bar = tqdm(total=run.epochs, initial=plan.done, unit="epoch", disable=args.no_progress or not writer,
               file=sys.stderr,
               dynamic_ncols=True)

    def on_epoch_end(end: gd.EpochEnd) -> None:
        save(end.epoch, end.state, end.history)
        record = end.history.epochs[-1]
        bar.set_postfix(cost=f"{record['train_cost']:.4f}", acc=f"{record['eval_accuracy']:.4f}")
        bar.update(1)

    title = f"{run.sizes}, {run.cost} cost, eta={run.learning_rate}, batch {run.batch_size}"
    try:
        if plan.finished:
            params = plan.params
            history.stop_reason = "target_cost"
        else:
            params, history = gd.fit(plan.params, plan.train, eval_data=plan.eval_data, epochs=run.epochs,
                                     batch_size=run.batch_size, optimizer=plan.optimizer, cost=plan.cost,
                                     key=plan.key, activation=run.activation, target_cost=run.target_cost,
                                     opt_state=plan.opt_state, history=history, on_epoch_end=on_epoch_end,
                                     mesh=plan.mesh)
    except DivergenceError as e:
        bar.close()
        if not writer:
            return EXIT_DIVERGED
        if args.debug:
            traceback.print_exc()
        kept = checkpoint_path(os.path.join(out, CHECKPOINTS), plan.done)
        _write_json(os.path.join(out, "history.json"),
                    {"config": config, **e.history.to_dict(), "divergence": str(e), "last_good_epoch": plan.done})
        if len(e.history):
            plot_history(e.history, os.path.join(out, "history.png"), title=title)
        which = f"{plan.done} (the initial parameters)" if plan.done == 0 else str(plan.done)
        print(f"gd-jax: training diverged: {e} (e.g. --eta {run.learning_rate / 10:g} in a new run); the run folder "
              f"{out} keeps the last good epoch, {which}: {kept} and params.npz", file=sys.stderr)
        return EXIT_DIVERGED
    finally:
        bar.close()

    test = plan.test
    test_cost, test_accuracy = gd.evaluate(params, test, cost=plan.cost, activation=run.activation)
    if not writer:
        return 0
    with _interrupts_deferred():
        gd.save_params(os.path.join(out, "params.npz"), params)
        _write_json(os.path.join(out, "history.json"), {
            "config": config, **history.to_dict(), "test_cost": test_cost, "test_accuracy": test_accuracy})
        if len(history):
            plot_history(history, os.path.join(out, "history.png"), title=title)
    print(f"test accuracy {test_accuracy:.4f} ({round(test_accuracy * test.size)} / {test.size}), "
          f"test cost {test_cost:.4f}, {len(history)} epochs in {sum(history['seconds']):.1f} s; run folder {out}")
    return 0


def _evaluate(args: argparse.Namespace, given: set[str]) -> int:
    import gd_jax as gd
    from gd_jax.costs import COSTS
    from gd_jax.data import check_dataset
    from gd_jax.network import layer_sizes

    path, config = args.run, {}
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        if os.path.isfile(config_path):
            config = _read_json(config_path)
        path = os.path.join(path, "params.npz")
    params = gd.load_params(path)
    cost_name = args.cost or config.get("cost", "quadratic")
    activation = args.activation or config.get("activation", "sigmoid")
    test = _load_data(args)[-1]
    sizes = layer_sizes(params)
    check_dataset(test, n_inputs=sizes[0], n_classes=sizes[-1], name=f"{args.dataset} test data")
    cost = functools.partial(COSTS[cost_name], activation=activation)
    test_cost, test_accuracy = gd.evaluate(params, test, cost=cost, activation=activation)
    print(json.dumps({"params": path, "dataset": args.dataset, "n": test.size, "cost": cost_name,
                      "test_cost": test_cost, "test_accuracy": test_accuracy}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        args.debug = debug
        with _interrupts_as_keyboard_interrupt():
            if args.command == "launch":
                from gd_jax.launch import run_launch

                return run_launch(args)
            return {"train": _train, "evaluate": _evaluate}[args.command](args, _given_options(argv))
    except (ValueError, OSError) as e:  # bad input: bad values, missing or damaged files, unwritable folders
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
