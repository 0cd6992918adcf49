"""Several processes, one run: joining ``jax.distributed`` fast, and noticing a lost peer.

Process 0 runs JAX's coordination service; every process joins it within a timeout, and a
``PeerWatch`` on the service's key-value store turns a hung or dead peer into one
``PeerLostError`` within seconds, where JAX's own heartbeat would abort the process with
pages of runtime logs (it stays as the backstop).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable

import jax

from gd_jax._src.jax_internals import distributed_client
from gd_jax._src.parallel import PeerLostError, use_cpu_devices
from gd_jax._src.peer_watch import PeerWatch

__all__ = ["cpu_count", "initialize_distributed", "is_writer", "watch_peers"]

# JAX's defaults wait 300 s for peers to start and 100 s for a silent one: a lost peer would
# hang the others for minutes. These make a missing or dead peer an error within 30 s.
INITIALIZATION_TIMEOUT_S = 20
HEARTBEAT_TIMEOUT_S = 24  # JAX's own check: the backstop, which aborts with pages of logs
HANG_SILENCE_S = 8  # gd_jax's check (peer_watch), one line; below half of JAX's, so it comes first
SHUTDOWN_TIMEOUT_S = 60  # at a normal end, how long the others wait for process 0 to write its files


def initialize_distributed(coordinator: str, num_processes: int, process_id: int, *,
                           local_devices: int | None = None, initialization_timeout: int = INITIALIZATION_TIMEOUT_S,
                           heartbeat_timeout: int = HEARTBEAT_TIMEOUT_S) -> None:
    """Joins a multi-process run through ``jax.distributed``, with timeouts that fail fast.

    Call it first, before any JAX computation. Process 0 runs the coordinator, bound to
    exactly ``coordinator`` (JAX's default binds every interface); every process must be
    started within ``initialization_timeout`` seconds, and a process that sends no
    heartbeat for ``heartbeat_timeout`` seconds counts as dead, which stops the others.

    Args:
      coordinator: ``HOST:PORT`` of process 0, reachable from every process (``127.0.0.1``
        for processes on one machine).
      num_processes: how many processes take part.
      process_id: this process's number, 0 to ``num_processes - 1``.
      local_devices: on CPU, how many devices this process presents (``use_cpu_devices``).
      initialization_timeout: seconds to wait for every process to join.
      heartbeat_timeout: seconds of silence after which a peer counts as dead.

    Raises:
      ValueError: malformed arguments (one line naming the fix).
      PeerLostError: a peer did not join in time.
    """
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator wants HOST:PORT of process 0, e.g. 127.0.0.1:1234, got {coordinator!r}")
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"--num-processes must be a positive integer, got {num_processes!r}")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id must be between 0 and {num_processes - 1} for {num_processes} processes, "
                         f"got {process_id!r}")
    if local_devices is not None:
        use_cpu_devices(local_devices)
    # gd_jax does not use JAX's preemption notices; off, a lost coordinator logs no extra lines about them.
    jax.config.update("jax_enable_preemption_service", False)
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id, coordinator_bind_address=coordinator,
                                   initialization_timeout=initialization_timeout,
                                   heartbeat_timeout_seconds=heartbeat_timeout,
                                   shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
    except RuntimeError as e:
        if "only be called once" in str(e) or "backend" in str(e):
            raise
        detail = " ".join(str(e).split())[:200]
        raise PeerLostError(f"process {process_id} of {num_processes} could not join the run at {coordinator} within "
                            f"{initialization_timeout} s: start all {num_processes} processes with the same "
                            f"--coordinator ({detail})") from None
    if jax.process_count() != num_processes:  # pragma: no cover - jax.distributed guarantees it
        raise PeerLostError(f"expected {num_processes} processes, JAX sees {jax.process_count()}")


def cpu_count() -> int:
    """The CPU cores this process may run on (``--devices all`` on a CPU-only machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def watch_peers(process_id: int, num_processes: int, *, on_lost: Callable[[Exception], None],
                silence_s: float = HANG_SILENCE_S) -> PeerWatch | None:
    """Starts a ``PeerWatch`` on ``jax.distributed``'s client: a hung peer ends in ``on_lost``.

    Call it after ``initialize_distributed``; call ``stop()`` on the result when the work is
    done (it is also stopped at interpreter exit), so that the others do not wait for this
    process while they finish. Returns None when JAX offers no client to watch through
    (its own heartbeat check then remains).
    """
    client = distributed_client()
    if client is None:
        return None
    watch = PeerWatch(client, process_id, num_processes, on_lost=on_lost, silence_s=silence_s).start()
    atexit.register(watch.stop)
    return watch


def is_writer() -> bool:
    """True in the process that writes files (process 0; the only one without jax.distributed)."""
    return jax.process_index() == 0
