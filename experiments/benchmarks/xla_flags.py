"""Which XLA CPU runtime settings make gd_jax's epoch fastest, by batch size.

XLA reads its flags once, when the backend starts, so each setting is measured in its own
fresh process (``XLA_FLAGS`` and ``NPROC`` in that process's environment). Every round
starts one process per setting, in turn, so that a shared machine's drift hits all settings
alike; each process compiles ``gd.make_epoch`` (the epoch ``fit`` runs) for every batch size,
warms it up, and times ``--epochs`` epochs. The figure per (setting, batch size) is the
median over rounds of each process's median epoch, with the spread over rounds and the
load average at every round.

Run: ``python experiments/benchmarks/xla_flags.py [--rounds 3] [--rows 60000] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {
    "default": {},
    "nproc1": {"NPROC": "1"},
    "no_eigen_mt": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
    "no_fusion_emitters": {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"},
    "nproc1_no_eigen_mt": {"NPROC": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
    "nproc1_no_fusion_emitters": {"NPROC": "1", "XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"},
    "no_thunk_runtime": {"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=false"},
}

CHILD = r"""
import json, sys, time, statistics
import jax, numpy as np
import gd_jax as gd
from gd_jax._src.epoch import TrainState, make_epoch
rows, epochs, batch_sizes = int(sys.argv[1]), int(sys.argv[2]), [int(b) for b in sys.argv[3].split(",")]
train, _ = gd.load_mnist("sample")
reps = -(-rows // train.size)
x = jax.device_put(np.tile(np.asarray(train.x), (reps, 1))[:rows])
y = jax.device_put(np.tile(np.asarray(train.y), reps)[:rows])
params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
opt = gd.sgd(3.0)
out = {}
for bs in batch_sizes:
    epoch = jax.jit(make_epoch(gd.quadratic_cost, opt, batch_size=bs, n_classes=10))
    state = TrainState(params, opt.init(params))
    orders = [gd.shuffled_order(jax.random.key(e), rows) for e in range(epochs + 1)]
    jax.block_until_ready(epoch(state, x, y, orders[0]))
    times = []
    for order in orders[1:]:
        t = time.perf_counter(); jax.block_until_ready(epoch(state, x, y, order)); times.append(time.perf_counter() - t)
    out[bs] = statistics.median(times)
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="10,128,1000")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--json")
    args = parser.parse_args()
    names = args.settings.split(",")
    seconds: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    loads = []
    for r in range(args.rounds):
        for name in names:
            env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NPROC")}
            env.update(SETTINGS[name])
            loads.append(os.getloadavg()[0])
            done = subprocess.run([sys.executable, "-c", CHILD, str(args.rows), str(args.epochs), args.batch_sizes],
                                  env=env, capture_output=True, text=True)
            if done.returncode:
                print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            for bs, t in json.loads(done.stdout.strip().splitlines()[-1]).items():
                seconds[name].setdefault(bs, []).append(t)
        print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    base = seconds["default"] if "default" in seconds else None
    print(f"load average during the run: {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} cores")
    print(f"{'setting':<28s}" + "".join(f"{'bs ' + b:>24s}" for b in args.batch_sizes.split(",")))
    for name in names:
        cells = []
        for bs in args.batch_sizes.split(","):
            t = seconds[name].get(bs, [])
            if not t:
                cells.append(f"{'-':>24s}")
                continue
            med = statistics.median(t)
            ratio = statistics.median(base[bs]) / med if base and base.get(bs) else float("nan")
            cells.append(f"{med:9.4f} [{min(t):.3f}-{max(t):.3f}] {ratio:4.2f}x".rjust(24))
        print(f"{name:<28s}" + "".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": {n: SETTINGS[n] for n in names}, "seconds": seconds, "load_average": loads,
                       "rows": args.rows, "epochs": args.epochs, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ")},
                      f, indent=1)


if __name__ == "__main__":
    main()
