"""How much faster 16 models train as one sweep than as 16 sequential ``fit`` epochs.

Data: the embedded real-MNIST sample's 5,000 training digits tiled to 60,000 rows (or full
MNIST's 60,000 training digits with ``--data /work/shared/data/mnist-full``, an IDX folder),
resident on the device; [784, 30, 10] sigmoid networks, quadratic cost, ``gd.sgd`` with 16
learning rates from 0.5 to 3.0 (one per model) and each model's own initialisation.

For each batch size three ways to train one epoch of the 16 models are timed:

  sequential   16 calls of ``jax.jit(gd.make_epoch(...))``, one per model, each with its own
               host-drawn order (``shuffled_order``), blocking after each, as 16 ``fit``s do;
  per_model    ``jax.jit(gd.make_sweep_epoch(..., shuffle="per_model"))``: one call, 16 orders;
  shared       the same with ``shuffle="shared"``: one order, the first layer one wide product.

Host order draws are inside every timing (16 for sequential and per_model, 1 for shared).
Times are the medians of ``--repeats`` epochs after a compiling warm-up, timed round-robin so
that drift in the machine's load hits them alike; the minimums are shown too (less sensitive
to other processes on a shared machine). The speed-up is sequential time / sweep time.

Then, for the sweep programs: their compiled memory (``memory_analysis``: arguments, outputs,
temporaries) and the process's peak resident memory, and from the optimised HLO of each
program the ``copy`` instructions inside the loop body with their shapes (a per-step copy of
the stacked weights between the model-major and the wide layout is what the wide product
must avoid). ``--dump DIR`` writes the optimised HLO texts there.

Run: ``python experiments/benchmarks/sweep_speed.py [--batch-sizes 10 128] [--models 16] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import gd_jax as gd
from gd_jax._src.epoch import shuffled_order
from gd_jax._src.sweep import make_sweep_epoch, model_axes

SIZES = [784, 30, 10]
ROWS = 60_000


def load_rows(data: str | None, rows: int) -> tuple[jax.Array, jax.Array]:
    """60,000 training rows on the device: the tiled sample, or an IDX folder's training split."""
    if data is None:
        train, _ = gd.load_mnist("sample")
    else:
        train, _ = gd.load_mnist("idx", idx_dir=data)
    reps = -(-rows // train.size)
    x = np.tile(np.asarray(train.x), (reps, 1))[:rows]
    y = np.tile(np.asarray(train.y), reps)[:rows]
    return jnp.asarray(x), jnp.asarray(y)


def loop_copies(hlo: str) -> list[str]:
    """``name shape`` of every copy or transposing fusion inside the optimised HLO's while-loop bodies."""
    bodies = set(re.findall(r"body=%([\w.\-]+)", hlo))
    found = []
    for computation in re.split(r"\n(?=\S)", hlo):
        if computation.split(" ", 1)[0].lstrip("%") not in bodies:
            continue
        for line in computation.splitlines():
            match = re.match(r"\s*(?:ROOT )?%(\S+) = (\S+) ", line)
            if match and re.match(r"(copy|transpose)", match.group(1)) and "[]" not in match.group(2):
                found.append(f"{match.group(1)} {match.group(2)}")
    return found


def bench_batch_size(batch_size: int, x: jax.Array, y: jax.Array, k: int, repeats: int, dump: str | None) -> None:
    """Times one epoch of ``k`` models three ways at one batch size and prints the table."""
    rates = np.linspace(0.5, 3.0, k).astype(np.float32)
    inits = [gd.init_mlp(jax.random.key(i), SIZES) for i in range(k)]
    keys = [jax.random.key(100 + i) for i in range(k)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *inits)
    hyper = {"learning_rate": jnp.asarray(rates)}

    # One compile for the 16 solo epochs: the learning rate is a traced argument.
    def solo_epoch(state, rate, x, y, order):
        return gd.make_epoch(gd.quadratic_cost, gd.sgd(rate), batch_size=batch_size, n_classes=10)(state, x, y, order)

    solo = jax.jit(solo_epoch)
    solo_states = [gd.TrainState(p, gd.sgd(1.0).init(p)) for p in inits]
    programs, states = {}, {}
    for mode in ("per_model", "shared"):
        # The layout gd.sweep uses: with a shared order the first layer stacked (784, K, 30).
        param_axes, _ = model_axes(inits[0], shuffle=mode)
        programs[mode] = jax.jit(make_sweep_epoch(
            lambda h: gd.quadratic_cost, lambda h: gd.sgd(h["learning_rate"]), batch_size=batch_size,
            n_classes=10, shuffle=mode, param_axes=param_axes))
        # Plain sgd's state holds no arrays, so one model's state serves the stack.
        states[mode] = gd.TrainState(jax.tree.map(lambda leaf, axis: jnp.moveaxis(leaf, 0, axis), stacked,
                                                  param_axes), gd.sgd(1.0).init(inits[0]))

    def sequential(epoch: int) -> None:
        for i in range(k):
            order = shuffled_order(jax.random.fold_in(keys[i], epoch), ROWS)
            jax.block_until_ready(solo(solo_states[i], rates[i], x, y, order))

    def per_model(epoch: int) -> None:
        orders = np.stack([shuffled_order(jax.random.fold_in(key, epoch), ROWS) for key in keys])
        jax.block_until_ready(programs["per_model"](states["per_model"], hyper, x, y, orders))

    def shared(epoch: int) -> None:
        order = shuffled_order(jax.random.fold_in(keys[0], epoch), ROWS)
        jax.block_until_ready(programs["shared"](states["shared"], hyper, x, y, order))

    variants = {"sequential": sequential, "per_model": per_model, "shared": shared}
    for fn in variants.values():
        fn(0)  # compile
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn(repeat + 1)
            times[name].append(time.perf_counter() - start)
    seq_med, seq_min = statistics.median(times["sequential"]), min(times["sequential"])
    print(f"\nbatch size {batch_size}, {k} models, {ROWS} rows: seconds for one epoch of all {k} models")
    print(f"  {'variant':<12} {'median':>8} {'min':>8} {'speed-up (median)':>18} {'speed-up (min)':>15}")
    for name, ts in times.items():
        med, low = statistics.median(ts), min(ts)
        print(f"  {name:<12} {med:8.3f} {low:8.3f} {seq_med / med:18.2f} {seq_min / low:15.2f}")
    mib = 2**20
    for mode in ("per_model", "shared"):
        order = np.zeros((k, ROWS) if mode == "per_model" else (ROWS,), np.int32)
        compiled = programs[mode].lower(states[mode], hyper, x, y, order).compile()
        stats = compiled.memory_analysis()
        hlo = compiled.as_text()
        copies = loop_copies(hlo)
        print(f"  {mode}: compiled memory: arguments {stats.argument_size_in_bytes / mib:.1f} MiB "
              f"(data {(x.nbytes + y.nbytes) / mib:.1f} MiB, once), outputs {stats.output_size_in_bytes / mib:.2f} MiB,"
              f" temporaries {stats.temp_size_in_bytes / mib:.2f} MiB; copies in the loop body: {copies}")
        if dump:
            os.makedirs(dump, exist_ok=True)
            with open(os.path.join(dump, f"sweep_{mode}_bs{batch_size}.hlo.txt"), "w") as f:
                f.write(hlo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 128])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", default=None, help="an MNIST IDX folder (default: the sample tiled to 60,000)")
    parser.add_argument("--dump", default=None, help="write the optimised HLO of each sweep program here")
    args = parser.parse_args()

    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs), {platform.machine()}; "
          f"load average {os.getloadavg()[0]:.2f} at start")
    x, y = load_rows(args.data, ROWS)
    for batch_size in args.batch_sizes:
        bench_batch_size(batch_size, x, y, args.models, args.repeats, args.dump)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"\npeak resident memory of this process: {peak:.0f} MiB; load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
