"""How fast one training epoch runs, as ratios to gd_jax's compiled epoch measured in the same process.

Data: the embedded real-MNIST sample's 5,000 training digits tiled to 60,000 rows (full MNIST's
size), resident on the device; a [784, 30, 10] sigmoid network, quadratic cost, sgd(3.0). For
each batch size the variants are:

  a. gd_jax: ``jax.jit(gd.make_epoch(...))``, which draws ``jax.random.permutation`` on the device
     inside the jit and gathers each mini-batch's rows inside the ``lax.scan`` step;
  b. the same scan, the permutation drawn on the host with numpy (seeded from the key's data)
     and passed in as an index array (the host draw and the transfer are inside the timing);
  c. no scan: a Python loop dispatching one jitted step per mini-batch (data resident, the step
     picks its rows from the device permutation by index);
  d. (a) with ``optax.sgd(3.0)`` in place of ``gd.sgd(3.0)``;
  e. the textbook's numpy loop: per mini-batch ``gd.backprop`` (float64) and ``p - eta g``,
     and e2 as ``network.py`` literally does it, one backprop per example summed over the
     mini-batch; both time a fixed number of mini-batches and extrapolate to the epoch, with
     one BLAS thread unless ``OPENBLAS_NUM_THREADS`` says otherwise (see below);
  f. 16 models at once: ``jax.vmap`` of (a) over initial parameters and keys, against 16
     sequential calls of (a) dispatched back to back (blocking only after the last, so XLA may
     run two independent epochs at once on two cores) and against 16 times the median of (a).

Below the variants, the permutations alone: ``jax.random.permutation`` (sorts random keys in
two rounds at this size), numpy's plus the transfer, and one ``argsort`` of random bits.

Times are the median of a few epochs after a compiling warm-up; a, b, c, d and the
permutations are timed round-robin so that drift in the machine's load hits them alike, and
the ratios are shown both of the medians and of the minimums (less sensitive to other
processes on a shared machine). Before timing, b, c and d are checked to compute the same
epoch as a. Nothing is compared with a fixed threshold: every figure is a ratio to (a) from
the same run.

Run: ``python experiments/benchmarks/epoch_speed.py [--batch-sizes 10 128] [--repeats 7]``
"""

from __future__ import annotations

import os

# One BLAS thread for the numpy baselines unless the caller chose otherwise (it must be set
# before numpy loads): on this 2-core machine OpenBLAS's threads made gd.backprop's tiny
# matmuls 2-4x slower and erratic (one repeat took 50x the others), which timed the
# threading rather than the textbook's loop.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

import gd_jax as gd

SIZES = [784, 30, 10]
ROWS = 60_000
ETA = 3.0
N_CLASSES = SIZES[-1]


def tiled_sample(rows: int) -> tuple[jax.Array, jax.Array]:
    """The sample's real training digits repeated to ``rows`` rows, on the device."""
    train, _ = gd.load_mnist("sample")
    reps = -(-rows // train.size)
    x = np.tile(np.asarray(train.x), (reps, 1))[:rows]
    y = np.tile(np.asarray(train.y), reps)[:rows]
    return jnp.asarray(x), jnp.asarray(y)


def make_step(cost: Callable, optimizer: gd.GradientTransformation) -> Callable:
    """One optimizer step on the rows ``rows`` of resident data, the same work as gd.make_epoch's step.

    Returns ``(state, finite)``, ``finite`` telling whether the mini-batch cost was finite, as
    gd.make_epoch checks it, so that the variants differ from (a) only where they say they do.
    """

    def step(state: gd.TrainState, x: jax.Array, y: jax.Array, rows: jax.Array) -> tuple[gd.TrainState, jax.Array]:
        yb = jax.nn.one_hot(y[rows], N_CLASSES, dtype=x.dtype)
        c, grads = jax.value_and_grad(cost)(state.params, x[rows], yb)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return gd.TrainState(gd.apply_updates(state.params, updates), opt_state), jnp.isfinite(c)

    return step


def make_epoch_from_order(cost: Callable, optimizer: gd.GradientTransformation, batch_size: int) -> Callable:
    """Variant (b): the epoch's scan, given the permutation ``order`` (n,) instead of a key."""
    step = make_step(cost, optimizer)

    def epoch(state: gd.TrainState, x: jax.Array, y: jax.Array, order: jax.Array) -> tuple[gd.TrainState, jax.Array]:
        full, rest = divmod(x.shape[0], batch_size)
        batches = order[: full * batch_size].reshape(full, batch_size)
        state, finite = jax.lax.scan(lambda s, rows: step(s, x, y, rows), state, batches)
        finite = jnp.all(finite)
        if rest:  # the smaller last mini-batch, as in gd.make_epoch
            state, tail_finite = step(state, x, y, order[full * batch_size:])
            finite = finite & tail_finite
        return state, finite

    return epoch


def host_permutation(key: jax.Array, n: int) -> np.ndarray:
    """A permutation of ``range(n)`` drawn by numpy, seeded from the key's bits (deterministic per key)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key))).permutation(n).astype(np.int32)


def make_loop_epoch(cost: Callable, optimizer: gd.GradientTransformation, batch_size: int, n: int) -> Callable:
    """Variant (c): a Python loop, one jitted step dispatched per mini-batch; no scan."""
    step = make_step(cost, optimizer)
    full, rest = divmod(n, batch_size)

    @jax.jit
    def indexed_step(state, x, y, batches, i):  # one dispatch: picks its rows from the resident permutation
        return step(state, x, y, jax.lax.dynamic_index_in_dim(batches, i, keepdims=False))

    def permutation(key):
        order = jnp.asarray(gd.shuffled_order(key, n))  # the order gd.fit draws for this key
        return order[: full * batch_size].reshape(full, batch_size), order[full * batch_size:]

    tail_step = jax.jit(step)

    def epoch(state, x, y, key):
        batches, tail = permutation(key)
        finite = []  # kept on the device: reading each flag on the host would block every step
        for i in range(full):
            state, ok = indexed_step(state, x, y, batches, i)
            finite.append(ok)
        if rest:
            state, ok = tail_step(state, x, y, tail)
            finite.append(ok)
        return state, finite

    return epoch


def numpy_sgd(params: list[dict[str, np.ndarray]], x: np.ndarray, y1h: np.ndarray, order: np.ndarray,
              batch_size: int, n_batches: int, *, per_example: bool) -> list[dict[str, np.ndarray]]:
    """Variant (e): ``n_batches`` mini-batch steps of the textbook's numpy SGD with ``gd.backprop``.

    ``per_example=True`` mirrors ``network.py``'s ``update_mini_batch``: one backprop per
    example, the gradients summed, then divided by the batch size.
    """
    for i in range(n_batches):
        rows = order[i * batch_size:(i + 1) * batch_size]
        if per_example:
            grads = [gd.backprop(params, x[r:r + 1], y1h[r:r + 1]) for r in rows]
            grads = [{k: sum(g[layer][k] for g in grads) / len(rows) for k in ("w", "b")}
                     for layer in range(len(params))]
        else:
            grads = gd.backprop(params, x[rows], y1h[rows])
        params = [{k: p[k] - ETA * g[k] for k in ("w", "b")} for p, g in zip(params, grads)]
    return params


def time_round_robin(fns: dict[str, Callable[[int], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each ``fn(repeat)`` for repeat 0..repeats-1, after one untimed warm-up each, interleaved."""
    for fn in fns.values():
        jax.block_until_ready(fn(repeats))  # compiles; an index the timed repeats do not use
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(r))
            times[name].append(time.perf_counter() - start)
    return times


def stacked(trees: list) -> object:
    """A list of pytrees of the same structure as one pytree with a leading model axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def max_difference(a, b) -> float:
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def bench_batch_size(batch_size: int, x: jax.Array, y: jax.Array, args: argparse.Namespace,
                     ) -> tuple[list[tuple], dict[str, float], dict[str, float], float, float]:
    """All variants at one batch size.

    Returns:
      ``(rows, medians, checks, vmap_gain, vmap_gain_blocked)``: table rows ``(label, seconds
      per epoch of each repeat, note)``, the median seconds of a-d and of the permutations
      alone, the largest parameter differences between variants after one epoch, and the
      throughput of the vmapped models over that of the sequential epochs dispatched back to
      back (which XLA may run two at a time) and over ``models`` times the median of (a).
    """
    n = x.shape[0]
    full, rest = divmod(n, batch_size)
    n_batches = full + bool(rest)
    key = jax.random.key(0)
    init_key, shuffle_key = jax.random.split(key)
    params = gd.init_mlp(init_key, SIZES)
    cost = gd.quadratic_cost
    ours, theirs = gd.sgd(ETA), optax.sgd(ETA)
    state = gd.TrainState(params, ours.init(params))
    optax_state = gd.TrainState(params, theirs.init(params))

    # gd.make_epoch takes the batch order; fit draws it on the host with gd.shuffled_order.
    epoch_a_order = jax.jit(gd.make_epoch(cost, ours, batch_size=batch_size, n_classes=N_CLASSES))
    epoch_b = jax.jit(make_epoch_from_order(cost, ours, batch_size))
    epoch_c = make_loop_epoch(cost, ours, batch_size, n)
    epoch_d_order = jax.jit(gd.make_epoch(cost, theirs, batch_size=batch_size, n_classes=N_CLASSES))

    def epoch_a(state, x, y, key):
        return epoch_a_order(state, x, y, gd.shuffled_order(key, n))

    def epoch_d(state, x, y, key):
        return epoch_d_order(state, x, y, gd.shuffled_order(key, n))

    def key_of(r: int) -> jax.Array:
        return jax.random.fold_in(shuffle_key, r + 1)

    # The variants compute the same epoch: checked once, so that the timings compare like with like.
    same_order = jnp.asarray(gd.shuffled_order(key_of(0), n))
    check = {
        "b (given a's permutation) vs a": max_difference(epoch_b(state, x, y, same_order)[0].params,
                                                         epoch_a(state, x, y, key_of(0))[0].params),
        "c vs a": max_difference(epoch_c(state, x, y, key_of(0))[0].params,
                                 epoch_a(state, x, y, key_of(0))[0].params),
        "d vs a": max_difference(epoch_d(optax_state, x, y, key_of(0))[0].params,
                                 epoch_a(state, x, y, key_of(0))[0].params),
    }

    permute_device = jax.jit(lambda k: jax.random.permutation(k, n))
    # jax.random.permutation sorts random keys in rounds (two at this n); one sort shows what a round costs.
    argsort_bits = jax.jit(lambda k: jnp.argsort(jax.random.bits(k, (n,))))
    times = time_round_robin({
        "a": lambda r: epoch_a(state, x, y, key_of(r)),
        "b": lambda r: epoch_b(state, x, y, jax.device_put(host_permutation(key_of(r), n))),
        "c": lambda r: epoch_c(state, x, y, key_of(r)),
        "d": lambda r: epoch_d(optax_state, x, y, key_of(r)),
        "perm_device": lambda r: permute_device(key_of(r)),
        "perm_host": lambda r: jax.device_put(host_permutation(key_of(r), n)),
        "perm_argsort": lambda r: argsort_bits(key_of(r)),
    }, args.repeats)

    # (e) numpy: a fixed number of mini-batches, extrapolated to the epoch.
    x64 = np.asarray(x, dtype=np.float64)
    y1h = np.eye(N_CLASSES)[np.asarray(y)]
    params64 = [{k: np.asarray(v, dtype=np.float64) for k, v in layer.items()} for layer in params]
    order = host_permutation(key_of(0), n)
    numpy_times = {}
    for per_example, budget, repeats in ((False, args.numpy_batches, args.repeats),
                                         (True, args.numpy_per_example_batches, 3)):
        measured = min(budget, full)
        numpy_sgd(params64, x64, y1h, order, batch_size, min(3, measured), per_example=per_example)  # warm caches
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            numpy_sgd(params64, x64, y1h, order, batch_size, measured, per_example=per_example)
            runs.append((time.perf_counter() - start) / measured * n_batches)
        numpy_times[per_example] = (runs, measured)

    # (f) 16 models at once against 16 sequential epochs of (a).
    model_keys = jax.random.split(jax.random.key(1), args.models)
    states = [gd.TrainState(p, ours.init(p)) for p in (gd.init_mlp(k, SIZES) for k in model_keys)]
    shuffle_keys = jax.random.split(jax.random.key(2), args.models)
    epoch_f_orders = jax.jit(jax.vmap(gd.make_epoch(cost, ours, batch_size=batch_size, n_classes=N_CLASSES),
                                      in_axes=(0, None, None, 0)))

    def epoch_f(states, x, y, keys):
        return epoch_f_orders(states, x, y, np.stack([gd.shuffled_order(k, n) for k in keys]))
    batched_state = stacked(states)
    many = time_round_robin({
        "vmap": lambda r: epoch_f(batched_state, x, y, [jax.random.fold_in(k, r) for k in shuffle_keys]),
        "sequential": lambda r: [epoch_a(s, x, y, jax.random.fold_in(k, r)) for s, k in zip(states, shuffle_keys)],
    }, args.vmap_repeats)

    med = {name: statistics.median(t) for name, t in times.items()}
    rows = [
        ("a  gd_jax epoch: scan, host order (gd.shuffled_order)", times["a"], "gd.make_epoch under jax.jit"),
        ("b  scan, host numpy permutation passed in", times["b"], "host draw + transfer included"),
        ("c  Python loop, one jitted step per batch", times["c"], "no scan"),
        ("d  scan with optax.sgd", times["d"], ""),
        ("e  numpy, gd.backprop per mini-batch (f64)", numpy_times[False][0],
         f"extrapolated from {numpy_times[False][1]} of {n_batches} mini-batches"),
        ("e2 numpy, backprop per example (network.py)", numpy_times[True][0],
         f"extrapolated from {numpy_times[True][1]} of {n_batches} mini-batches"),
        (f"f  {args.models} models, vmap: per model-epoch", [t / args.models for t in many["vmap"]],
         f"{args.models} models in {statistics.median(many['vmap']):.2f} s"),
        (f"f  {args.models} models, sequential: per model-epoch", [t / args.models for t in many["sequential"]],
         f"{args.models} models in {statistics.median(many['sequential']):.2f} s"),
        ("   permutation alone, device (jitted)", times["perm_device"], "part of a"),
        ("   permutation alone, host numpy + transfer", times["perm_host"], "part of b"),
        ("   one device sort: argsort of random bits", times["perm_argsort"], "for comparison"),
    ]
    return rows, med, check, statistics.median(many["sequential"]) / statistics.median(many["vmap"]), \
        args.models * med["a"] / statistics.median(many["vmap"])


def print_table(batch_size: int, n_batches: int, rows: list[tuple], med: dict, check: dict, vmap_gain: float,
                vmap_gain_blocked: float, args: argparse.Namespace) -> None:
    base, base_min = med["a"], min(rows[0][1])
    print(f"\nbatch size {batch_size}: {n_batches} mini-batches per epoch; median of {args.repeats} epochs "
          f"(f: {args.vmap_repeats}), range in brackets; ratios of the medians and of the minimums")
    print(f"  {'variant':<48s} {'s/epoch':>9s} {'[min - max]':>17s} {'ratio to a':>11s} {'(of mins)':>10s}  note")
    for label, runs, note in rows:
        m = statistics.median(runs)
        spread = f"[{min(runs):.4f}-{max(runs):.4f}]"
        print(f"  {label:<48s} {m:9.4f} {spread:>17s} {m / base:10.2f}x {min(runs) / base_min:9.2f}x  {note}")
    print(f"  {args.models} models: vmap gives {vmap_gain:.2f}x the throughput of {args.models} sequential epochs "
          f"dispatched back to back, {vmap_gain_blocked:.2f}x that of {args.models} x (a)")
    print(f"  b vs a: {med['b'] / base:.3f}x (a - b = {1000 * (base - med['b']):+.1f} ms per epoch); the device "
          f"permutation alone is {med['perm_device'] / base:.1%} of a, the host one "
          f"{med['perm_host'] / base:.1%}")
    print("  same computation (max |param difference| after one epoch): "
          + "; ".join(f"{k} {v:.1e}" for k, v in check.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 128], help="default 10 128")
    parser.add_argument("--repeats", type=int, default=7, help="timed epochs per variant a-d (median shown)")
    parser.add_argument("--vmap-repeats", type=int, default=3, help="timed repeats of (f)")
    parser.add_argument("--models", type=int, default=16, help="models trained at once in (f)")
    parser.add_argument("--numpy-batches", type=int, default=1000, help="mini-batches timed for (e)")
    parser.add_argument("--numpy-per-example-batches", type=int, default=200, help="mini-batches timed for (e2)")
    parser.add_argument("--rows", type=int, default=ROWS, help="training rows, the sample tiled (default 60000)")
    args = parser.parse_args()
    for name in ("repeats", "vmap_repeats", "models", "numpy_batches", "numpy_per_example_batches", "rows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if any(b < 1 or b > args.rows for b in args.batch_sizes):
        parser.error(f"batch sizes must be between 1 and --rows ({args.rows}), got {args.batch_sizes}")

    x, y = tiled_sample(args.rows)
    print(f"epoch speed: {args.rows:,} rows (the 5,000-digit sample tiled), {SIZES}, quadratic cost, sgd({ETA})")
    print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
          f"optax {optax.__version__}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"device {jax.devices()[0]} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at start, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} (numpy baselines)")
    start = time.perf_counter()
    for batch_size in args.batch_sizes:
        rows, med, check, vmap_gain, vmap_gain_blocked = bench_batch_size(batch_size, x, y, args)
        print_table(batch_size, -(-args.rows // batch_size), rows, med, check, vmap_gain, vmap_gain_blocked, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
