"""The devices and processes flags of ``train`` and ``sweep``, and the exit for a lost peer."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

import jax
from jax.sharding import Mesh

from gd_jax._src.distributed import INITIALIZATION_TIMEOUT_S, cpu_count, initialize_distributed, watch_peers
from gd_jax._src.parallel import PeerLostError, data_mesh, use_cpu_devices

EXIT_PEER_LOST = 4  # the CLI's exit status when a peer process died or hung


def _devices_flag(text: str) -> int | str:
    if text == "all":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"--devices wants a positive number or 'all', got {text!r}")


def add_parallel_arguments(parser: Any) -> None:
    """Adds ``--devices`` and the multi-process flags to an ``argparse`` parser."""
    group = parser.add_argument_group("devices and processes (see README, More devices and hosts)")
    group.add_argument("--devices", type=_devices_flag, default=None, metavar="N|all",
                       help="use N devices of each process (all: every one; on a CPU-only machine N CPU devices are "
                            "made, all = one per core): train runs data-parallel (the batch size must divide by the "
                            "total device count), sweep spreads its models over them")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0 in a multi-process run (with --num-processes, --process-id)")
    group.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in the run")
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0 to N-1")


def start_parallel(args: Any) -> Mesh | None:
    """Acts on the flags of ``add_parallel_arguments``: call before any JAX computation.

    Makes the CPU devices asked for, joins the multi-process run, and returns the mesh to
    pass to ``fit`` (None: one device, the default).

    Raises:
      ValueError: inconsistent flags (one line naming the fix).
      PeerLostError: the other processes did not join in time.
    """
    distributed = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in distributed) and any(v is None for v in distributed):
        raise ValueError("a multi-process run needs all of --coordinator HOST:PORT, --num-processes N and "
                         "--process-id I (or use: gd-jax launch -n N train ...)")
    local = cpu_count() if args.devices == "all" else args.devices
    if distributed[0] is not None:
        # JAX aborts a process whose peers do not join in time, with pages of runtime logs;
        # say it in one line just before that.
        late = PeerLostError(f"process {args.process_id} of {args.num_processes} could not join the run at "
                             f"{args.coordinator} within {INITIALIZATION_TIMEOUT_S} s: start all {args.num_processes} "
                             "processes with the same --coordinator (process 0's address), each with its own "
                             "--process-id")
        watchdog = threading.Timer(INITIALIZATION_TIMEOUT_S - 0.5, exit_peer_lost, (late,))
        watchdog.daemon = True
        watchdog.start()
        try:
            initialize_distributed(args.coordinator, args.num_processes, args.process_id, local_devices=local)
        finally:
            watchdog.cancel()
        args.peer_watch = watch_peers(args.process_id, args.num_processes, on_lost=lambda e: exit_peer_lost(
            e, resume=getattr(args, "run_folder", None), command=getattr(args, "command", "train")))
    elif local is not None:
        use_cpu_devices(local)
    if args.devices is None and distributed[0] is None:
        return None
    return data_mesh(None if args.devices in (None, "all") else args.devices)


def exit_peer_lost(error: PeerLostError, resume: str | None = None, command: str = "train") -> None:
    """Prints ``error`` as one line and ends the process at once with ``EXIT_PEER_LOST``.

    With ``resume`` (the run or sweep folder) the line ends with how to continue it
    (``gd-jax launch -n N COMMAND --resume FOLDER``).

    ``os._exit`` skips ``jax.distributed``'s shutdown, which would otherwise wait for the
    lost peer and then abort the process with pages of runtime logs.
    """
    hint = f"; continue with: gd-jax launch -n {jax.process_count()} {command} --resume {resume}" if resume else ""
    print(f"gd-jax: error: {error}{hint}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_PEER_LOST)
