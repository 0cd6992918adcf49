"""Checkpoints per epoch: gd_jax's own (one verified .npz) against orbax-checkpoint.

Measures, on this machine, for the state ``gd-jax train`` saves after every epoch (params,
optimizer state, PRNG key, epoch, history and config):

- the import time each adds to a fresh ``gd-jax`` process (best of ``--repeats`` interpreters);
- save and load time per checkpoint (median), for the textbook network and two wider ones,
  with plain SGD and with momentum (a second params-sized tree);
- what a training run pays: ``fit`` on the embedded sample, seconds per epoch with no
  checkpoint, with gd_jax's, with orbax's synchronous and asynchronous saves;
- what a damaged checkpoint does: one flipped byte in the largest data file, then load;
- how many files one checkpoint is.

Needs ``pip install orbax-checkpoint`` (not a gd_jax dependency).
Run: ``python experiments/benchmarks/checkpoint_io.py [--repeats 5] [--epochs 10]``
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

import gd_jax as gd
from gd_jax._src import checkpoint as ck


def import_seconds(statement: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", f"import time; t = time.perf_counter(); {statement}; "
                              "print(time.perf_counter() - t)"], capture_output=True, text=True, check=True)
        times.append(float(out.stdout))
    return min(times)


def median_ms(fn, n: int) -> float:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[1:])  # the first call warms up


def state_of(sizes: list[int], momentum: float | None) -> gd.TrainState:
    params = gd.init_mlp(jax.random.key(0), sizes)
    return gd.TrainState(params, gd.sgd(3.0, momentum=momentum).init(params))


def history_of(n: int) -> gd.History:
    return gd.History([{"epoch": e, "train_cost": 0.1, "eval_cost": 0.1, "eval_accuracy": 0.9, "seconds": 0.2}
                       for e in range(1, n + 1)])


class Orbax:
    """The same contents through orbax: a CheckpointManager keeping 2, state as a pytree, the rest as JSON."""

    def __init__(self, directory: str, *, asynchronous: bool):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=2, enable_async_checkpointing=asynchronous))
        self.asynchronous = asynchronous

    def save(self, epoch: int, state, key, history: gd.History, config: dict) -> None:
        ocp = self.ocp
        tree = {"state": state, "key": jax.random.key_data(key)}
        meta = {"epoch": epoch, "history": history.to_dict(), "config": config}
        self.manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                         meta=ocp.args.JsonSave(meta)))
        if not self.asynchronous:
            self.manager.wait_until_finished()

    def load(self, like):
        ocp = self.ocp
        abstract = {"state": jax.tree.map(ocp.utils.to_shape_dtype_struct, like),
                    "key": jax.ShapeDtypeStruct((2,), np.uint32)}
        return self.manager.restore(self.manager.latest_step(), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def flip_largest_file(directory: str) -> None:
    files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))


def count_files(directory: str) -> int:
    return sum(len(fs) for _, _, fs in os.walk(directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters per import timing (best shown)")
    parser.add_argument("--saves", type=int, default=21, help="saves and loads per timing (median shown)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per training-run timing")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    print(f"jax {jax.__version__}, {jax.devices()[0]}, {os.cpu_count()} CPUs")

    base = import_seconds("import gd_jax, gd_jax._src.checkpoint", args.repeats)
    with_orbax = import_seconds("import gd_jax, gd_jax._src.checkpoint, orbax.checkpoint", args.repeats)
    print(f"\nimport: gd_jax + its checkpoint module {base:.2f} s; + orbax.checkpoint {with_orbax:.2f} s "
          f"(+{with_orbax - base:.2f} s per process)")

    key, config = jax.random.key(1), {"sizes": None, "learning_rate": 3.0}
    print("\nper checkpoint, median ms   save: gd_jax  orbax-sync  orbax-async | load: gd_jax  orbax")
    for sizes in ([784, 30, 10], [784, 100, 10], [784, 1000, 10]):
        for momentum in (None, 0.9):
            state, history = state_of(sizes, momentum), history_of(30)
            with tempfile.TemporaryDirectory() as d:
                save = median_ms(lambda i, d=d, s=state, h=history: ck.save_checkpoint(
                    d, epoch=i, state=s, key=key, history=h, config=config), args.saves)
                load = median_ms(lambda i, d=d, s=state: ck.load_checkpoint(d, like=s), args.saves)
            row = []
            for asynchronous in (False, True):
                with tempfile.TemporaryDirectory() as d:
                    orbax = Orbax(d, asynchronous=asynchronous)
                    row.append(median_ms(lambda i, o=orbax, s=state, h=history: o.save(i, s, key, h, config),
                                         args.saves))
                    if not asynchronous:
                        orbax_load = median_ms(lambda i, o=orbax, s=state: o.load(s), args.saves)
                    orbax.close()
            name = f"{sizes} {'momentum' if momentum else 'plain sgd'}"
            print(f"  {name:<32} {save:8.1f} {row[0]:11.1f} {row[1]:12.1f} | {load:11.1f} {orbax_load:6.1f}")

    train, test = gd.load_mnist("sample")
    print(f"\na training run: fit on the sample ({train.size} digits, eval on {test.size}), [784, 30, 10], batch 10, "
          f"momentum 0.9, {args.epochs} epochs; seconds per epoch after the first (compile)")
    for label in ("no checkpoint", "gd_jax", "orbax sync", "orbax async"):
        with tempfile.TemporaryDirectory() as d:
            saver = None
            if label == "gd_jax":
                callback = ck.checkpoint_callback(d, key=key, config=config)
            elif label.startswith("orbax"):
                saver = Orbax(d, asynchronous=label.endswith("async"))
                callback = lambda end, o=saver: o.save(end.epoch, end.state, key, end.history, config)  # noqa: E731
            else:
                callback = None
            stamps = []

            def on_epoch_end(end, callback=callback, stamps=stamps):
                if callback is not None:
                    callback(end)
                stamps.append(time.perf_counter())

            gd.fit(gd.init_mlp(jax.random.key(0), [784, 30, 10]), train, eval_data=test, epochs=args.epochs,
                   batch_size=10, optimizer=gd.sgd(3.0, momentum=0.9), cost=gd.quadratic_cost, key=key,
                   on_epoch_end=on_epoch_end)
            if saver is not None:
                start = time.perf_counter()
                saver.close()
                stamps[-1] += time.perf_counter() - start  # an async save still running is part of the run
            per_epoch = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
            print(f"  {label:<14} {per_epoch:.3f} s/epoch")

    print("\na damaged checkpoint (one byte flipped in the largest data file), then load:")
    state = state_of([784, 30, 10], 0.9)
    with tempfile.TemporaryDirectory() as d:
        ck.save_checkpoint(d, epoch=1, state=state, key=key, history=history_of(1), config=config)
        files = count_files(d)
        flip_largest_file(d)
        try:
            ck.load_checkpoint(d, like=state)
            print(f"  gd_jax: loaded silently ({files} file a checkpoint)")
        except ck.CheckpointError as e:
            print(f"  gd_jax: refused, {type(e).__name__}: {str(e)[:90]}... ({files} file a checkpoint)")
    with tempfile.TemporaryDirectory() as d:
        orbax = Orbax(d, asynchronous=False)
        orbax.save(1, state, key, history_of(1), config)
        files = count_files(d)
        flip_largest_file(d)
        try:
            restored = orbax.load(state)
            same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored["state"]["state"]),
                                                            jax.tree.leaves(state)))
            print(f"  orbax: loaded silently; values {'unchanged' if same else 'CHANGED'} ({files} files a checkpoint)")
        except Exception as e:  # whatever orbax raises
            print(f"  orbax: refused, {type(e).__name__}: {str(e)[:90]}... ({files} files a checkpoint)")
        orbax.close()


if __name__ == "__main__":
    main()
