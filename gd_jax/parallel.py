"""Data parallelism over a device mesh, within one process or across several (``jax.distributed``).

**Data parallelism.** Every global mini-batch of ``batch_size`` rows is split along the
``"data"`` axis of a one-dimensional device mesh: each of the ``D`` devices holds
``batch_size / D`` rows and a full copy of the parameters and optimizer state. Each device
computes the mean cost of its rows; their mean over the devices is the mean cost of the
global batch,

    C(p) = (1/D) sum_d C_d(p),    C_d(p) = (D/B) sum_{i in rows of d} C_i(p),

so ``jax.grad`` of it is the same mini-batch gradient as on one device, all-reduced across
the devices. Every device then applies the same update to its copy of the parameters, and
the copies stay equal. Only the summation order differs from one device, so the results
agree to rounding (measured: ``experiments/benchmarks/data_parallel.py``).

**The N-times-gradient trap.** Inside ``jax.shard_map`` (with its default ``check_vma``),
``jax.grad`` with respect to replicated parameters of a cost that varies across devices
already sums the per-device gradients (the transpose of the implicit broadcast of the
parameters is a ``psum``). Differentiating each device's own mean cost and then taking the
``pmean`` of the gradients therefore trains with ``D`` times the gradient. Here the mean
over devices is taken of the *cost*, before differentiating, which gives the right gradient.

**Several processes.** With ``jax.distributed`` (``initialize_distributed``) the mesh spans the devices
of every process; each process feeds only its own rows of every global batch
(``jax.make_array_from_process_local_data``), drawn from the same shuffled order, so every
process must hold the same data: ``fit`` compares a fingerprint of it across processes
before the first epoch. Collectives between CPU processes run over gloo (TCP).

**The last partial batch.** When ``batch_size`` does not divide ``n``, the ``n mod
batch_size`` rows left over form one smaller final step, as on one device; it is computed
whole on every device (it may not split evenly), which gives exactly the single-device step.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gd_jax.costs import Cost
from gd_jax.optim import GradientTransformation, apply_updates
from gd_jax.peer_watch import PeerWatch
from gd_jax.train import TrainState

__all__ = [
    "DATA_AXIS",
    "EXIT_PEER_LOST",
    "PeerLostError",
    "add_parallel_arguments",
    "check_batch_size",
    "check_same_across_processes",
    "cpu_count",
    "data_mesh",
    "data_parallel_epoch",
    "exit_peer_lost",
    "fingerprint",
    "initialize_distributed",
    "is_writer",
    "make_data_parallel_epoch",
    "start_parallel",
    "use_cpu_devices",
    "watch_peers",
]

DATA_AXIS = "data"

# JAX's defaults wait 300 s for peers to start and 100 s for a silent one: a lost peer would
# hang the others for minutes. These make a missing or dead peer an error within 30 s.
INITIALIZATION_TIMEOUT_S = 20
HEARTBEAT_TIMEOUT_S = 24  # JAX's own check: the backstop, which aborts with pages of logs
HANG_SILENCE_S = 8  # gd_jax's check (peer_watch), one line; below half of JAX's, so it comes first
SHUTDOWN_TIMEOUT_S = 60  # at a normal end, how long the others wait for process 0 to write its files

EXIT_PEER_LOST = 4  # the CLI's exit status when a peer process died or hung


class PeerLostError(RuntimeError):
    """Another process of a multi-process run died, hung or could not be reached."""


def use_cpu_devices(n: int) -> None:
    """Makes JAX's CPU backend present ``n`` devices (threads of this process's CPU).

    It must run before JAX's backend starts (before the first computation, ``jax.devices()``
    or ``jax.distributed.initialize``): a process cannot change its device count later. On
    a machine with accelerators it changes only the CPU backend, not the default one.

    Raises:
      ValueError: ``n`` is not a positive integer, or the backend has already started
        with another count.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of CPU devices must be a positive integer, got {n!r}; e.g. --devices 4")
    from jax._src import xla_bridge  # the only way to ask whether the backend has started

    if xla_bridge.backends_are_initialized():
        if len(jax.devices("cpu")) == n:
            return
        raise ValueError(f"JAX's backend has already started with {len(jax.devices('cpu'))} CPU devices, so it "
                         f"cannot make {n}; choose the device count before the first JAX computation "
                         f"(e.g. gd-jax train --devices {n}, or JAX_NUM_CPU_DEVICES={n} in the environment)")
    jax.config.update("jax_num_cpu_devices", int(n))


def data_mesh(devices: int | str | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-dimensional mesh whose ``"data"`` axis runs over the devices that train.

    Args:
      devices: ``None`` or ``"all"``: every device of the default backend (of every process
        after ``jax.distributed.initialize``); an integer ``k``: the first ``k`` devices of
        each process; or an explicit sequence of devices.

    Raises:
      ValueError: more devices asked for than a process has.
    """
    if devices is None or devices == "all":
        chosen = jax.devices()
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        local = jax.local_devices()
        if not 1 <= devices <= len(local):
            raise ValueError(f"asked for {devices} devices but this process has {len(local)} "
                             f"({local[0].platform}); pass a number from 1 to {len(local)}, or 'all'")
        chosen = [d for p in range(jax.process_count())
                  for d in [d for d in jax.devices() if d.process_index == p][:devices]]
    elif isinstance(devices, str):
        raise ValueError(f"devices must be a number or 'all', got {devices!r}")
    else:
        chosen = list(devices)
    return jax.make_mesh((len(chosen),), (DATA_AXIS,), devices=chosen)


def check_batch_size(batch_size: int, n_devices: int) -> None:
    """Raises ``ValueError`` unless ``batch_size`` splits evenly over ``n_devices``.

    The message names the nearest valid sizes, e.g. ``batch_size 10 does not divide evenly
    over 4 devices; use 8 or 12``.
    """
    if batch_size % n_devices:
        below = batch_size - batch_size % n_devices
        above = below + n_devices
        nearest = f"{below} or {above}" if below else f"{above}"
        raise ValueError(f"batch_size {batch_size} does not divide evenly over {n_devices} devices; use {nearest} "
                         f"(a multiple of {n_devices}), or train on fewer devices")


def make_data_parallel_epoch(cost: Cost, optimizer: GradientTransformation, *, mesh: Mesh, n_classes: int,
                             ) -> Callable[..., tuple[TrainState, jax.Array]]:
    """Builds one data-parallel epoch as a pure, jittable function.

    Args:
      cost: ``cost(params, x, y_onehot)``, averaging over the batch.
      optimizer: gd_jax's ``sgd`` or any optax ``GradientTransformation``.
      mesh: a mesh with a ``"data"`` axis (``data_mesh()``).
      n_classes: the width of the one-hot targets built from integer labels.

    Returns:
      ``epoch(state, xs, ys, tail_x, tail_y) -> (state, finite)``: ``xs`` ``(steps, B, n_0)``
      and ``ys`` ``(steps, B)`` hold the epoch's mini-batches in order, sharded along ``B``
      over ``"data"``; ``state`` is replicated; ``tail_x``, ``tail_y`` are the smaller last
      mini-batch, replicated, or ``None``. ``finite`` is True when every mini-batch cost was
      finite.
    """

    def device_epoch(state: TrainState, xs: jax.Array, ys: jax.Array) -> tuple[TrainState, jax.Array]:
        def step(state: TrainState, batch: tuple[jax.Array, jax.Array]) -> tuple[TrainState, jax.Array]:
            xb, yb = batch
            targets = jax.nn.one_hot(yb, n_classes, dtype=xb.dtype)

            def batch_cost(params):
                # The mean over devices of the cost, not of the gradients: see "the trap" above.
                return jax.lax.pmean(cost(params, xb, targets), DATA_AXIS)

            c, grads = jax.value_and_grad(batch_cost)(state.params)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            return TrainState(apply_updates(state.params, updates), opt_state), jnp.isfinite(c)

        state, finite = jax.lax.scan(step, state, (xs, ys))
        return state, jnp.all(finite)

    sharded = jax.shard_map(device_epoch, mesh=mesh, in_specs=(P(), P(None, DATA_AXIS), P(None, DATA_AXIS)),
                            out_specs=(P(), P()))

    def tail_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
        c, grads = jax.value_and_grad(cost)(state.params, x, jax.nn.one_hot(y, n_classes, dtype=x.dtype))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(apply_updates(state.params, updates), opt_state), jnp.isfinite(c)

    def epoch(state, xs, ys, tail_x=None, tail_y=None):
        finite = jnp.bool_(True)
        if xs.shape[0]:
            state, finite = sharded(state, xs, ys)
        if tail_x is not None:
            state, tail_finite = tail_step(state, tail_x, tail_y)
            finite = finite & tail_finite
        return state, finite

    return epoch


def _epoch_impl(state, xs, ys, tail_x, tail_y, *, cost, optimizer, mesh, n_classes):
    return make_data_parallel_epoch(cost, optimizer, mesh=mesh, n_classes=n_classes)(state, xs, ys, tail_x, tail_y)


# Compiled once per configuration (cost, optimizer, mesh, classes, shapes), like train.py's epoch.
_epoch_cached = jax.jit(_epoch_impl, static_argnames=("cost", "optimizer", "mesh", "n_classes"))


def _replicate(tree: Any, sharding: NamedSharding) -> Any:
    """Copies each leaf (on this process's devices) to every addressable device of ``sharding``."""

    def leaf(a):
        a = jnp.asarray(a)
        devices = sorted(sharding.addressable_devices, key=lambda d: d.id)
        return jax.make_array_from_single_device_arrays(a.shape, sharding, [jax.device_put(a, d) for d in devices])

    return jax.tree.map(leaf, tree)


def _local(tree: Any) -> Any:
    """This process's copy of a replicated tree, on its first local device."""
    device = jax.local_devices()[0]
    return jax.tree.map(lambda a: jax.device_put(a.addressable_data(0), device), tree)


def fingerprint(*arrays: Any) -> str:
    """The SHA-256 (hex) of the arrays' shapes, dtypes and bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.shape}{a.dtype.str};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_same_across_processes(what: str, digest: str, fix: str) -> None:
    """Raises ``ValueError`` on every process unless all processes passed the same ``digest``.

    A collective: every process must call it, with the same ``what``.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = np.frombuffer(bytes.fromhex(digest), dtype=np.uint8)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
    differ = [p for p in range(len(every)) if not np.array_equal(every[p], every[0])]
    if differ:
        p = differ[0]
        theirs, first = every[p].tobytes().hex()[:12], every[0].tobytes().hex()[:12]
        raise ValueError(f"{what} differs between processes: process {p} has fingerprint {theirs}, process 0 has "
                         f"{first}; {fix}")


def data_parallel_epoch(mesh: Mesh, x: Any, y: Any, state: TrainState, order: np.ndarray, *, cost: Cost,
                        optimizer: GradientTransformation, batch_size: int, n_classes: int,
                        ) -> Callable[[TrainState, np.ndarray], tuple[TrainState, jax.Array]]:
    """A compiled data-parallel epoch that ``fit(..., mesh=mesh)`` calls like its own.

    Feeds each epoch from the host: this process gathers only its own rows of every global
    mini-batch from ``order`` and hands them to JAX with
    ``jax.make_array_from_process_local_data``.

    Args:
      mesh: the mesh to train on (``data_mesh()``).
      x, y: the whole training set (every process holds the same), ``(n, n_0)`` and ``(n,)``.
      state: the starting state (to compile for, and to compare across processes).
      order: the first epoch's batch order (``shuffled_order``), compared across processes.
      cost, optimizer, n_classes: as for ``make_epoch``.
      batch_size: the global mini-batch size; it must divide by the mesh's device count.

    Returns:
      ``run(state, order) -> (state, finite)``: the state before and after is this process's
      ordinary (single-device) copy, so that everything else ``fit`` does is unchanged.

    Raises:
      ValueError: ``batch_size`` does not split over the devices, or the data, the starting
        state or the order differ between processes.
    """
    n_devices = mesh.shape[DATA_AXIS]
    check_batch_size(batch_size, n_devices)
    x, y = np.asarray(x), np.asarray(y)
    fix = ("every process must load the same data (same --dataset and files) with the same settings and seed, "
           "and resume from the same run folder")
    check_same_across_processes("the training data", fingerprint(x, y), fix)
    check_same_across_processes("the starting state (parameters, optimizer state) or batch order",
                                fingerprint(*jax.tree.leaves(jax.device_get(state)), order), fix)

    n = x.shape[0]
    steps, rest = divmod(n, batch_size)
    batch_sharding = NamedSharding(mesh, P(None, DATA_AXIS))
    replicated = NamedSharding(mesh, P())
    # The columns of every global batch whose rows this process's devices hold.
    spans = batch_sharding.addressable_devices_indices_map((steps, batch_size))
    lo = min(s[1].start or 0 for s in spans.values())
    hi = max(batch_size if s[1].stop is None else s[1].stop for s in spans.values())

    def feed(order: np.ndarray):
        rows = np.asarray(order)[: steps * batch_size].reshape(steps, batch_size)[:, lo:hi]
        xs = jax.make_array_from_process_local_data(batch_sharding, x[rows], (steps, batch_size, x.shape[1]))
        ys = jax.make_array_from_process_local_data(batch_sharding, y[rows], (steps, batch_size))
        if not rest:
            return xs, ys, None, None
        tail = np.asarray(order)[steps * batch_size:]
        return (xs, ys, jax.make_array_from_process_local_data(replicated, x[tail], (rest, x.shape[1])),
                jax.make_array_from_process_local_data(replicated, y[tail], (rest,)))

    static = {"cost": cost, "optimizer": optimizer, "mesh": mesh, "n_classes": n_classes}
    args = (_replicate(state, replicated), *feed(order))
    try:
        hash(tuple(static.values()))
        lowered = _epoch_cached.lower(*args, **static)
    except TypeError:  # settings that cannot be hashed (an optimizer holding arrays): compiled uncached
        lowered = jax.jit(lambda *a: _epoch_impl(*a, **static)).lower(*args)
    compiled = lowered.compile()

    def run(state: TrainState, order: np.ndarray) -> tuple[TrainState, jax.Array]:
        try:
            # Waited for here, inside the try: a collective fails when its result is awaited.
            new_state, finite = jax.block_until_ready(compiled(_replicate(state, replicated), *feed(order)))
            return _local(new_state), _local(finite)
        except Exception as e:  # a collective that failed because a peer died: say so in one line
            if _is_peer_failure(e):
                raise _peer_lost(e) from e
            raise

    return run


def _is_peer_failure(e: BaseException) -> bool:
    # JAX raises its generic runtime error when a collective loses a peer: the message
    # (gloo's socket errors, the coordination service's status) is the only sign.
    text = str(e)
    return jax.process_count() > 1 and any(s in text for s in (
        "Gloo", "gloo", "Connection reset", "Connection closed", "Socket closed", "DEADLINE_EXCEEDED", "UNAVAILABLE",
        "unhealthy", "heartbeat"))


def _peer_lost(e: BaseException) -> PeerLostError:
    me, count = jax.process_index(), jax.process_count()
    others = [p for p in range(count) if p != me]
    who = f"process {others[0]}" if len(others) == 1 else f"one of processes {', '.join(map(str, others))}"
    detail = " ".join(str(e).split())[:160]
    return PeerLostError(f"process {me} of {count} lost contact with {who}: it died or hung ({detail})")


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


# The command line: `gd-jax train --devices N|all`, `--coordinator HOST:PORT --num-processes N --process-id I`.


def _devices_flag(text: str) -> int | str:
    if text == "all":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    import argparse

    raise argparse.ArgumentTypeError(f"--devices wants a positive number or 'all', got {text!r}")


def add_parallel_arguments(parser: Any) -> None:
    """Adds ``--devices`` and the multi-process flags to an ``argparse`` parser."""
    group = parser.add_argument_group("devices and processes (see README, More devices and hosts)")
    group.add_argument("--devices", type=_devices_flag, default=None, metavar="N|all",
                       help="train data-parallel on N devices of each process (all: every one; on a CPU-only "
                            "machine N CPU devices are made, all = one per core); the batch size must divide by "
                            "the total device count")
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
        import threading

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
        args.peer_watch = watch_peers(args.process_id, args.num_processes,
                                      on_lost=lambda e: exit_peer_lost(e, resume=getattr(args, "run_folder", None)))
    elif local is not None:
        use_cpu_devices(local)
    if args.devices is None and distributed[0] is None:
        return None
    return data_mesh(None if args.devices in (None, "all") else args.devices)


def watch_peers(process_id: int, num_processes: int, *, on_lost: Callable[[Exception], None],
                silence_s: float = HANG_SILENCE_S) -> PeerWatch | None:
    """Starts a ``PeerWatch`` on ``jax.distributed``'s client: a hung peer ends in ``on_lost``.

    Call it after ``initialize_distributed``; call ``stop()`` on the result when the work is
    done (it is also stopped at interpreter exit), so that the others do not wait for this
    process while they finish. Returns None when JAX offers no client to watch through
    (its own heartbeat check then remains).
    """
    import atexit

    # The client is not public API; orbax reads it the same way. Without it, JAX's check stays.
    from jax._src import distributed

    client = getattr(distributed.global_state, "client", None)
    if client is None or not hasattr(client, "key_value_dir_get"):
        return None
    watch = PeerWatch(client, process_id, num_processes, on_lost=on_lost, silence_s=silence_s).start()
    atexit.register(watch.stop)
    return watch


def is_writer() -> bool:
    """True in the process that writes files (process 0; the only one without jax.distributed)."""
    return jax.process_index() == 0


def exit_peer_lost(error: PeerLostError, resume: str | None = None) -> None:
    """Prints ``error`` as one line and ends the process at once with ``EXIT_PEER_LOST``.

    ``os._exit`` skips ``jax.distributed``'s shutdown, which would otherwise wait for the
    lost peer and then abort the process with pages of runtime logs.
    """
    import sys

    hint = f"; continue with: gd-jax launch -n {jax.process_count()} train --resume {resume}" if resume else ""
    print(f"gd-jax: error: {error}{hint}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_PEER_LOST)
