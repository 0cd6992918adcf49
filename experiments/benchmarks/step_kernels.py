"""Kernels a step and seconds an epoch of variants of ``make_epoch``'s step, all computing the same numbers.

Each variant rewrites only how the compiled step is expressed (the maths and every float are
the same: the script checks the trained parameters are bit-for-bit equal to the current
``gd.make_epoch``'s), then counts the kernels of its optimised HLO's loop body
(``gd_jax.cli.bench.step_kernels``) and times its epochs interleaved with the others'.

- ``current``: ``gd_jax._src.epoch.make_epoch`` as it is;
- ``carry_flag``: the finiteness flag carried as one scalar (``finite & isfinite(c)``) instead
  of a stacked flag per step reduced after the loop;
- ``barrier``: ``optimization_barrier`` between the gradients and the update, so that XLA sees
  every read of the old parameters happen before any is overwritten (no defensive copy);
- ``onehot_in_step``: the one-hot targets built in the step from the gathered labels instead of
  gathered from a one-hot matrix built once an epoch;
- combinations.

Run: ``python experiments/benchmarks/step_kernels.py [--batch-sizes 10,128] [--repeats 7]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import gd_jax as gd
from gd_jax._src.epoch import TrainState, make_epoch
from gd_jax._src.optim import apply_updates
from gd_jax.cli.bench.variants import step_kernels


def variant_epoch(cost, optimizer, *, batch_size, n_classes, carry_flag=False, barrier=False, onehot_in_step=False):
    def step(state, xb, yb):
        c, grads = jax.value_and_grad(cost)(state.params, xb, yb)
        params = state.params
        if barrier:
            params, grads = jax.lax.optimization_barrier((params, grads))
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        return TrainState(apply_updates(params, updates), opt_state), jnp.isfinite(c)

    def epoch(state, x, y, order):
        n = x.shape[0]
        full, rest = divmod(n, batch_size)
        targets = None if onehot_in_step else jax.nn.one_hot(y, n_classes, dtype=x.dtype)

        def batch(rows):
            yb = jax.nn.one_hot(y[rows], n_classes, dtype=x.dtype) if onehot_in_step else targets[rows]
            return x[rows], yb

        rows_all = order[: full * batch_size].reshape(full, batch_size)
        if carry_flag:
            def body(carry, rows):
                s, ok = carry
                s, f = step(s, *batch(rows))
                return (s, ok & f), None
            (state, finite), _ = jax.lax.scan(body, (state, jnp.array(True)), rows_all)
        else:
            state, flags = jax.lax.scan(lambda s, rows: step(s, *batch(rows)), state, rows_all)
            finite = jnp.all(flags)
        if rest:
            state, tail = step(state, *batch(order[full * batch_size:]))
            finite = finite & tail
        return state, finite

    return epoch


VARIANTS = {
    "current": None,
    "carry_flag": {"carry_flag": True},
    "barrier": {"barrier": True},
    "onehot_in_step": {"onehot_in_step": True},
    "carry_flag+barrier": {"carry_flag": True, "barrier": True},
    "all_three": {"carry_flag": True, "barrier": True, "onehot_in_step": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="10,128,1000")
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    train, _ = gd.load_mnist("sample")
    reps = -(-args.rows // train.size)
    x = jax.device_put(np.tile(np.asarray(train.x), (reps, 1))[: args.rows])
    y = jax.device_put(np.tile(np.asarray(train.y), reps)[: args.rows])
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    opt = gd.sgd(3.0)
    state = TrainState(params, opt.init(params))
    orders = [gd.shuffled_order(jax.random.key(r), args.rows) for r in range(args.repeats)]
    loads = [os.getloadavg()[0]]
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        compiled, reference = {}, None
        for name, options in VARIANTS.items():
            fn = make_epoch(gd.quadratic_cost, opt, batch_size=bs, n_classes=10) if options is None else \
                variant_epoch(gd.quadratic_cost, opt, batch_size=bs, n_classes=10, **options)
            compiled[name] = jax.jit(fn).lower(state, x, y, orders[0]).compile()
            out = jax.tree.leaves(compiled[name](state, x, y, orders[0]))
            reference = reference or out
            equal = all(np.array_equal(a, b) for a, b in zip(out, reference))
            kernels = step_kernels(compiled[name].as_text())
            print(f"bs {bs} {name:<20s} kernels/step {kernels['count']:3d} {kernels['by_opcode']} "
                  f"bit-for-bit equal to current: {equal}")
        seconds = {name: [] for name in compiled}
        for r in range(args.repeats):
            for name, fn in compiled.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(state, x, y, orders[r]))
                seconds[name].append(time.perf_counter() - start)
            loads.append(os.getloadavg()[0])
        base = statistics.median(seconds["current"])
        for name, s in seconds.items():
            print(f"bs {bs} {name:<20s} median {statistics.median(s):.4f} s [{min(s):.4f}-{max(s):.4f}] "
                  f"current/this {base / statistics.median(s):.3f}x")
    print(f"load average {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
