"""What a `fit` epoch costs beyond training: the end-of-epoch bookkeeping, and compilation.

For the textbook run on the embedded sample ([784, 30, 10], quadratic cost, eta 3, batch 10,
5,000 training and 10,000 evaluation digits) it times whole `fit` calls and splits each into
training (the sum of the epochs' `seconds`), compilation (`History.compile_seconds`, where the
fit reports it) and the rest: shuffling, measuring the training and evaluation sets, the
divergence checks, callbacks. A first `fit` warms JAX's caches; the timed ones follow it with the
same settings, as a user's second run would. Works against any gd_jax version that has `fit`
(older ones report no compile time and count it into epoch 1).

    python experiments/benchmarks/fit_overhead.py [--epochs 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax

import gd_jax as gd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()

    train, test = gd.load_mnist("sample")
    init_key, shuffle_key = jax.random.split(jax.random.key(2))
    params = gd.init_mlp(init_key, [784, 30, 10])
    optimizer = gd.sgd(3.0)

    def run():
        start = time.perf_counter()
        _, history = gd.fit(params, train, eval_data=test, epochs=args.epochs, batch_size=args.batch_size,
                            optimizer=optimizer, cost=gd.quadratic_cost, key=shuffle_key)
        return time.perf_counter() - start, history

    first_wall, first = run()
    shares, walls, trainings = [], [], []
    for _ in range(args.repeats):
        wall, history = run()
        compile_seconds = getattr(history, "compile_seconds", 0.0)
        training = sum(history["seconds"])
        rest = wall - training - compile_seconds
        walls.append(wall)
        trainings.append(training)
        shares.append(rest / (training + rest))
    epoch = statistics.median(trainings) / args.epochs
    print(f"gd_jax from {os.path.dirname(gd.__file__)}; jax {jax.__version__}; load {os.getloadavg()[0]:.1f}")
    print(f"first fit: {first_wall:.2f} s wall for {args.epochs} epochs "
          f"(compile {getattr(first, 'compile_seconds', float('nan')):.2f} s reported)")
    print(f"warm fits: {statistics.median(walls):.3f} s wall, training {epoch * 1e3:.1f} ms an epoch")
    print(f"bookkeeping share of an epoch (median of {args.repeats}): {statistics.median(shares):.1%} "
          f"(min {min(shares):.1%}, max {max(shares):.1%})")


if __name__ == "__main__":
    main()
