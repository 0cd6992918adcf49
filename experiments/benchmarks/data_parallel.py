"""Data parallelism: seconds per epoch on 1, 2 and 4 CPU devices and on 2 processes, and drift.

Each configuration runs in fresh processes (a process fixes its device count when JAX
starts): ``D`` CPU devices in one process (``jax_num_cpu_devices``), and 2 processes of one
device each joined by ``jax.distributed`` over 127.0.0.1 (gloo collectives). Each trains
``fit`` on the same rows, [784, 30, 10], quadratic cost, sgd(3.0), and reports the median
seconds per epoch (compilation excluded) and the scaling efficiency

    efficiency(D) = t(1) / (D * t(D)),

1.0 being perfect scaling. **On a machine with fewer cores than devices, CPU "devices" are
threads sharing the same cores:** XLA's CPU backend already spreads one device's work over
every core, so more devices add collectives and cannot add compute; efficiencies below 1/D
here say nothing about several real GPUs or hosts, where each device brings its own compute.

It also measures **how far data-parallel training drifts from single-device training**:
the largest absolute parameter difference after 1, 10, 100, ... steps of one epoch with the
same batches (only the gradient's summation order differs).

Run: ``python experiments/benchmarks/data_parallel.py [--rows 5000] [--batch-size 100] [--epochs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One configuration, in a fresh process; prints one JSON line.
_WORKER = """
import json, sys
import jax
import numpy as np
devices, processes, process_id, port, rows, batch_size, epochs, drift_batch = sys.argv[1:9]
devices, processes, process_id = int(devices), int(processes), int(process_id)
rows, batch_size, epochs, drift_batch = int(rows), int(batch_size), int(epochs), int(drift_batch)
from gd_jax._src import distributed, parallel
if processes > 1:
    distributed.initialize_distributed(f"127.0.0.1:{port}", processes, process_id, local_devices=devices)
else:
    parallel.use_cpu_devices(devices)
import gd_jax as gd
train, _ = gd.load_mnist("sample")
reps = -(-rows // train.size)
train = gd.Dataset(np.tile(train.x, (reps, 1))[:rows], np.tile(train.y, reps)[:rows])
mesh = parallel.data_mesh() if devices * processes > 1 else None
params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
_, history = gd.fit(params, train, epochs=epochs, batch_size=batch_size, optimizer=gd.sgd(3.0),
                    cost=gd.quadratic_cost, key=jax.random.key(1), mesh=mesh)
out = {"seconds": history["seconds"], "compile_seconds": history.compile_seconds}

if drift_batch and mesh is not None and processes == 1:
    # The same batches on one device and on the mesh, compared after 1, 10, 100, ... steps.
    n_steps = train.size // drift_batch
    order = gd.shuffled_order(jax.random.key(1), train.size)
    x, y = np.asarray(train.x)[order], np.asarray(train.y)[order]
    opt = gd.sgd(3.0)
    single = jax.jit(gd.make_epoch(gd.quadratic_cost, opt, batch_size=drift_batch, n_classes=10))
    s1 = s2 = gd.TrainState(params, opt.init(params))
    drift, done, chunk = {}, 0, 1
    while done + chunk <= n_steps:
        rows_ = slice(done * drift_batch, (done + chunk) * drift_batch)
        xs, ys = x[rows_], y[rows_]
        s1, _ = single(s1, xs, ys, np.arange(chunk * drift_batch, dtype=np.int32))
        run = parallel.data_parallel_epoch(mesh, xs, ys, s2, np.arange(chunk * drift_batch, dtype=np.int32),
                                           cost=gd.quadratic_cost, optimizer=opt, batch_size=drift_batch,
                                           n_classes=10)
        s2, _ = run(s2, np.arange(chunk * drift_batch, dtype=np.int32))
        done += chunk
        drift[done] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                          for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)))
        chunk = done * 9 if done * 10 <= n_steps else n_steps - done
        if chunk == 0:
            break
    out["drift"] = drift
print(json.dumps(out))
"""


def run(devices: int, processes: int, args: argparse.Namespace, drift_batch: int = 0) -> dict:
    from gd_jax.cli.launch import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-c", textwrap.dedent(_WORKER), str(devices), str(processes)]
    children = [subprocess.Popen([*command, str(i), str(port), str(args.rows), str(args.batch_size),
                                  str(args.epochs), str(drift_batch)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env) for i in range(processes)]
    outs = [c.communicate() for c in children]
    for c, (_, err) in zip(children, outs):
        if c.returncode:
            raise SystemExit(f"configuration {devices} device(s) x {processes} process(es) failed:\n{err[-2000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000, help="training rows (the sample, tiled if more)")
    parser.add_argument("--batch-size", type=int, default=100, help="global mini-batch size (divisible by 4)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration (the median counts)")
    parser.add_argument("--drift-batch", type=int, default=20, help="batch size of the drift measurement")
    args = parser.parse_args()

    print(f"{os.cpu_count()} CPU cores; {args.rows} rows, batch {args.batch_size}, [784, 30, 10], sgd(3.0); "
          f"median of {args.epochs} epochs\n")
    configurations = [(1, 1), (2, 1), (4, 1), (1, 2)]
    results = {}
    for devices, processes in configurations:
        r = run(devices, processes, args, drift_batch=args.drift_batch if devices == 4 else 0)
        results[(devices, processes)] = r
    base = statistics.median(results[(1, 1)]["seconds"])
    print("| devices | processes | s / epoch (median) | range | speed-up | efficiency | compile s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (devices, processes), r in results.items():
        t, total = statistics.median(r["seconds"]), devices * processes
        print(f"| {devices} | {processes} | {t:.3f} | {min(r['seconds']):.3f}-{max(r['seconds']):.3f} | "
              f"{base / t:.2f}x | {base / (total * t):.2f} | {r['compile_seconds']:.1f} |")
    drift = results[(4, 1)].get("drift", {})
    if drift:
        print(f"\nlargest |parameter difference|, 4 devices against 1, batch {args.drift_batch}, after k steps:")
        print(" | ".join(f"k={k}: {v:.1e}" for k, v in drift.items()))


if __name__ == "__main__":
    main()
