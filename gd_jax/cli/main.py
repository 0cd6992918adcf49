"""The ``gd-jax`` command: parses the command line and dispatches to one module per subcommand.

Exit status: 0 done; 2 bad input (one line on stderr naming the fix; ``--debug`` adds the
traceback); 3 the run diverged (the run folder keeps the last good epoch); 4 a process of a
multi-process run lost a peer; 130 interrupted (Ctrl-C or SIGTERM; resume with ``--resume``);
141 the reader of its output quit early (``| head``), as a shell reports SIGPIPE.
Any other failure is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import jax

import gd_jax
from gd_jax._src import xla_config
from gd_jax._src.extras import MissingExtraError, ensure_installed
from gd_jax._src.parallel import PeerLostError
from gd_jax.cli import bench, evaluate, launch, predict, run_folder, signals, sweep, train
from gd_jax.cli.errors import BadInput, bad_input
from gd_jax.cli.flags import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    PLATFORMS,
    Parser,
    add_data_and_device_flags,
    compile_cache_folder,
    select_device,
    use_compile_cache,
)
from gd_jax.cli.parallel_flags import exit_peer_lost, start_parallel


def build_parser() -> argparse.ArgumentParser:
    """The whole ``gd-jax`` parser, every subcommand and option (the CLI reference is generated from it)."""
    parser = Parser(prog="gd-jax", description="Train feed-forward networks by gradient descent in JAX.")
    parser.add_argument("--version", action="version", version=f"gd-jax {gd_jax.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train_parser = train.add_parser(commands)
    evaluate_parser = evaluate.add_parser(commands)
    sweep_parser = commands.add_parser("sweep", help="train a grid of models as one compiled program",
                                       description="Train the cartesian product of the comma-listed --eta, --momentum "
                                                   "and --lmbda values times --seeds seeds as one compiled program, "
                                                   "into one sweep folder; every train option applies to all the "
                                                   "models.")
    sweep.add_sweep_arguments(sweep_parser)
    add_data_and_device_flags(sweep_parser)
    launch_parser = launch.add_launch_parser(commands)
    bench_parser = commands.add_parser("bench", help="how fast gradient descent runs here, against baselines",
                                       description="Seconds per epoch of gd_jax and its peers, checked to compute the "
                                                   "same epoch, against the machine's peak; time to accuracy; "
                                                   "per-example gradients.")
    bench.add_bench_arguments(bench_parser)
    bench_parser.add_argument("--no-compile-cache", action="store_true",
                              help="do not use the persistent compilation cache")
    predict_parser = commands.add_parser("predict", help="a trained network's digit for each of your own images",
                                         description="Read PNG/JPEG digits of any size, prepare them as MNIST was "
                                                     "made and print the run's predicted digit and its ten output "
                                                     "activations.")
    predict.add_predict_arguments(predict_parser)
    parser.gd_jax_commands = (train_parser, evaluate_parser, sweep_parser, launch_parser, bench_parser,  # type: ignore[attr-defined]
                              predict_parser)
    return parser


def _given_options(argv: Sequence[str]) -> set[str]:
    """The destinations of the options written on the command line (not taken from defaults)."""
    parser = build_parser()
    for p in (parser, *parser.gd_jax_commands):  # type: ignore[attr-defined]
        for action in p._actions:  # argparse has no public way to ask which options were given
            if action.dest not in ("help", "command", "version"):
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


def _check_extras(args: argparse.Namespace) -> None:
    """Before anything is read or written: the optional packages this command will need (one line if not)."""
    if args.command in ("train", "sweep"):
        if not getattr(args, "no_figures", False):
            ensure_installed("matplotlib", purpose="the run folder's figures", instead="pass --no-figures")
        ensure_installed("tqdm", purpose="the progress bar")
        if not getattr(args, "no_tensorboard", False):
            ensure_installed("tensorboard", purpose="TensorBoard event files", instead="pass --no-tensorboard")
    elif args.command == "predict":
        ensure_installed("PIL", purpose="reading image files")


def _configure_xla(args: argparse.Namespace) -> None:
    """XLA's CPU settings for this run's work (``_src/xla_config.py``), before JAX's backend starts.

    The rows of one step decide: a resumed run's come from its saved settings, so it trains as
    it started. Several devices or processes keep XLA's defaults (their threads are the devices).
    Each segment of the run folder records what was in force (``resume.environment``).
    """
    if args.command not in ("train", "sweep") or args.devices is not None or args.coordinator is not None:
        return
    settings = vars(args)
    if args.resume is not None:
        try:
            settings = {**settings, **run_folder.read_json(os.path.join(args.resume, run_folder.CONFIG))}
        except BadInput:
            return  # the command reports the damaged folder itself
    models = 1
    if args.command == "sweep":
        for name in ("learning_rate", "momentum", "lmbda", "seeds"):
            models *= len(settings.get(name) or [None])
    batch_size = settings.get("batch_size")
    if isinstance(batch_size, int) and batch_size >= 1:
        xla_config.configure_cpu(batch_size, models)


def _start_parallel(args: argparse.Namespace) -> Any:
    """``--devices`` and the multi-process flags, acted on before JAX starts; the mesh or None."""
    if args.device and (args.devices is not None or args.coordinator is not None):
        jax.config.update("jax_platforms", PLATFORMS[args.device])  # the mesh is made of --device's devices
    try:
        with bad_input():
            return start_parallel(args)
    except PeerLostError as e:
        exit_peer_lost(e)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    try:
        status = _run(argv)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then one more case below
        return status
    except BrokenPipeError:  # the reader of stdout quit early (e.g. `gd-jax predict ... | head -1`): not an error
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def run() -> None:
    """The ``gd-jax`` program (and ``python -m gd_jax``): runs ``main`` and exits with its status.

    The process ends right after, so everything still alive is frozen out of the garbage
    collector first (``gc.freeze``): the interpreter's last collection then skips JAX's and
    matplotlib's objects, which took 0.3 s of a ``gd-jax train`` here, every run. Callers that
    go on (tests, scripts) call ``main`` instead and keep their collector as it was.
    """
    status = main()
    gc.freeze()
    sys.exit(status)


def _run(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help and --version print and exit; parse errors raise UsageError
            return int(e.code or 0)
        args.debug = debug
        _check_extras(args)
        if args.command == "predict":
            return predict.run_predict(args)
        if args.command == "launch":
            with bad_input(), signals.interrupts_as_keyboard_interrupt():  # SIGTERM stops the processes too
                return launch.run_launch(args)
        use_compile_cache(compile_cache_folder(args.no_compile_cache))
        _configure_xla(args)
        args.mesh = _start_parallel(args) if args.command in ("train", "sweep") else None
        platforms = jax.config.jax_platforms  # type: ignore[attr-defined]
        try:
            device = select_device(args.device)
            # Only this command computes there (a caller's own JAX work, e.g. in tests, keeps its default).
            with signals.interrupts_as_keyboard_interrupt(), jax.default_device(device if args.device else None):
                command = {"train": train.run_train, "evaluate": evaluate.run_evaluate, "sweep": sweep.run_sweep,
                           "bench": _bench}[args.command]
                return command(args, _given_options(argv), ["gd-jax", *argv])
        finally:
            jax.config.update("jax_platforms", platforms)
            if getattr(args, "peer_watch", None) is not None:  # done: the others need not wait for this process
                args.peer_watch.stop()
    except (BadInput, MissingExtraError) as e:  # bad input or a missing extra; anything else is a bug
        if debug:
            traceback.print_exc()
        print(f"gd-jax: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("gd-jax: interrupted before training started; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that Python's final flush of a closed pipe prints nothing either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. captured in a test)
        pass


def _bench(args: argparse.Namespace, given: set[str], command_line: list[str]) -> int:
    return bench.run_bench(args, " ".join(command_line))
