"""``gd-jax launch -n N train|sweep ...``: N processes of one run on this machine.

The command is validated once, before any process starts (a bad flag is one line and exit
status 2, not one line per process). Each process is ``python -m gd_jax train ...
--coordinator 127.0.0.1:PORT --num-processes N --process-id I``, with a free port; process 0
runs the coordinator and writes the run (or sweep) folder. The launcher waits for all of
them: the first non-zero exit status is its own, and the other processes are then stopped
(SIGTERM, then SIGKILL after a grace period), so that a failed run never leaves processes
behind. This is the multi-host recipe run on one host: on several hosts, start the same
command on each with ``--coordinator`` naming process 0.
"""

from __future__ import annotations

import argparse
import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from gd_jax.cli import sweep as sweep_command
from gd_jax.cli import train as train_command
from gd_jax.cli.flags import Parser, UsageError, add_data_and_device_flags

__all__ = ["COMMANDS", "add_launch_parser", "check_command", "free_port", "launch", "run_launch"]

COMMANDS = ("train", "sweep")  # what launch runs as several processes

LOCALHOST = "127.0.0.1"
GRACE_S = 5.0  # how long a stopped process may take to exit before it is killed


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in processes:
        try:
            p.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(command: Sequence[str], n: int, *, host: str = LOCALHOST, port: int | None = None,
           poll_s: float = 0.05) -> int:
    """Runs ``python -m gd_jax COMMAND`` as ``n`` processes of one run; returns the run's exit status.

    Args:
      command: the gd-jax command and its options, e.g. ``["train", "--epochs", "2"]``.
      n: the number of processes.
      host: the coordinator's address (and where it binds).
      port: the coordinator's port (default: a free one).

    Returns:
      0 when every process ended with 0; else the first non-zero status (a process killed
      by signal ``s`` counts as ``128 + s``, as in a shell), after stopping the others.
    """
    port = port or free_port(host)
    processes = [subprocess.Popen([sys.executable, "-m", "gd_jax", *command, "--coordinator", f"{host}:{port}",
                                   "--num-processes", str(n), "--process-id", str(i)], stdin=subprocess.DEVNULL)
                 for i in range(n)]
    try:
        while True:
            statuses = [p.poll() for p in processes]
            failed = [(i, s) for i, s in enumerate(statuses) if s not in (None, 0)]
            if failed:
                i, status = failed[0]
                _stop(processes)
                print(f"gd-jax launch: process {i} of {n} {_describe(status)}; stopped the others", file=sys.stderr,
                      flush=True)
                return 128 - status if status < 0 else status
            if all(s == 0 for s in statuses):
                return 0
            time.sleep(poll_s)
    except KeyboardInterrupt:  # Ctrl-C reaches the children too; give them their clean stop
        _stop(processes)
        return 130
    finally:
        _stop(processes)


def add_launch_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``launch`` command to the ``gd-jax`` sub-command parsers (``parser.add_subparsers()``)."""
    p = commands.add_parser(
        "launch", help="run a command as N processes of one data-parallel run on this machine",
        description="Start N processes of one run on this machine (coordinator 127.0.0.1 on a free port), e.g. "
                    "gd-jax launch -n 2 train --epochs 2 --out runs/two. Process 0 writes the run folder. The "
                    "first non-zero exit status is returned, and the other processes are stopped.")
    p.add_argument("-n", "--num-processes", dest="launch_processes", type=int, required=True, metavar="N",
                   help="number of processes")
    p.add_argument("--port", type=int, default=None, help="the coordinator's port on 127.0.0.1 (default: a free one)")
    p.add_argument("launch_command", nargs=argparse.REMAINDER, metavar="train ...",
                   help="the command each process runs")
    return p


def run_launch(args: argparse.Namespace) -> int:
    """``gd-jax launch``: validates, then ``launch``; returns the exit status.

    Raises:
      ValueError: a bad process count, no command, or flags that the launcher sets itself.
    """
    n, command = args.launch_processes, list(args.launch_command)
    if n < 1:
        raise ValueError(f"-n must be a positive number of processes, got {n}; e.g. gd-jax launch -n 2 train")
    if not command or command[0] not in COMMANDS:
        raise ValueError(f"gd-jax launch runs 'train' or 'sweep' as {n} processes, got "
                         f"{' '.join(command) or 'no command'!r}; e.g. gd-jax launch -n 2 train --epochs 2")
    own = [f for f in ("--coordinator", "--num-processes", "--process-id")
           if any(a == f or a.startswith(f + "=") for a in command)]
    if own:
        raise ValueError(f"gd-jax launch sets {own[0]} itself; drop it (to start processes by hand, run "
                         f"gd-jax {command[0]} --coordinator HOST:PORT --num-processes N --process-id I on each)")
    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    check_command(command)
    return launch(command, n, port=args.port)


def _command_parser() -> Parser:
    parser = Parser(prog="gd-jax")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train_command.add_parser(commands)
    sweep_parser = commands.add_parser("sweep")
    sweep_command.add_sweep_arguments(sweep_parser)
    add_data_and_device_flags(sweep_parser)
    return parser


def check_command(command: Sequence[str]) -> None:
    """Validates a ``train`` or ``sweep`` command line once, as each process would, before any starts.

    Checks the flags and their values (what needs no data and no folder: a resumed run's
    saved settings are checked by the processes).

    Raises:
      UsageError: the first mistake, in one line naming the fix.
    """
    args = _command_parser().parse_args(list(command))
    if getattr(args, "resume", None) is not None:
        return
    checks: dict[str, Callable[[dict], None]] = {"train": train_command._check_flags,
                                                  "sweep": sweep_command.check_settings}
    names = train_command.SETTINGS if args.command == "train" else sweep_command.SETTINGS
    settings = {name: getattr(args, name) for name in names}
    try:
        checks[args.command]({**settings, "download": args.download})
    except ValueError as e:
        raise UsageError(str(e)) from None
    for name in ("epochs", "batch_size"):
        if not isinstance(settings[name], int) or settings[name] < (0 if name == "epochs" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be an integer >= {0 if name == 'epochs' else 1}, "
                             f"got {settings[name]}")
    target = settings.get("target_cost")
    if target is not None and not (math.isfinite(target) and target >= 0):
        raise UsageError(f"--target-cost must be a finite number >= 0, got {target}; e.g. --target-cost 0.01")
