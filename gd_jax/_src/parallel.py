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
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gd_jax._src.costs import Cost
from gd_jax._src.epoch import TrainState
from gd_jax._src.jax_internals import backend_started
from gd_jax._src.optim import GradientTransformation, apply_updates

__all__ = [
    "DATA_AXIS",
    "PeerLostError",
    "check_batch_size",
    "check_same_across_processes",
    "data_mesh",
    "data_parallel_epoch",
    "fingerprint",
    "make_data_parallel_epoch",
    "use_cpu_devices",
]

DATA_AXIS = "data"

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
    if backend_started():
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
        chosen = list(cast(Sequence[jax.Device], devices))
    return jax.make_mesh((len(chosen),), (DATA_AXIS,), devices=chosen)


def check_batch_size(batch_size: int, n_devices: int, *, name: str = "batch_size") -> None:
    """Raises ``ValueError`` unless ``batch_size`` splits evenly over ``n_devices``.

    The message names the nearest valid sizes, e.g. ``batch_size 10 does not divide evenly
    over 4 devices; use 8 or 12``; ``name`` is what the caller calls the batch size (the
    command line passes ``"--batch-size"``).
    """
    if batch_size % n_devices:
        below = batch_size - batch_size % n_devices
        above = below + n_devices
        nearest = f"{below} or {above}" if below else f"{above}"
        raise ValueError(f"{name} {batch_size} does not divide evenly over {n_devices} devices; use {nearest} "
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
    spans = [s for s in batch_sharding.addressable_devices_indices_map((steps, batch_size)).values() if s]
    lo = min(s[1].start or 0 for s in spans)
    hi = max(batch_size if s[1].stop is None else s[1].stop for s in spans)

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
            if is_peer_failure(e):
                raise peer_lost_error(e) from e
            raise

    return run


def is_peer_failure(e: BaseException) -> bool:
    # JAX raises its generic runtime error when a collective loses a peer: the message
    # (gloo's socket errors, the coordination service's status) is the only sign.
    text = str(e)
    return jax.process_count() > 1 and any(s in text for s in (
        "Gloo", "gloo", "Connection reset", "Connection closed", "Socket closed", "DEADLINE_EXCEEDED", "UNAVAILABLE",
        "unhealthy", "heartbeat"))


def peer_lost_error(e: BaseException) -> PeerLostError:
    me, count = jax.process_index(), jax.process_count()
    others = [p for p in range(count) if p != me]
    who = f"process {others[0]}" if len(others) == 1 else f"one of processes {', '.join(map(str, others))}"
    detail = " ".join(str(e).split())[:160]
    return PeerLostError(f"process {me} of {count} lost contact with {who}: it died or hung ({detail})")
