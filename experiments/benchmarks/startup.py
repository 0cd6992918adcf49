"""Time to a trained network from the command line: ``gd-jax train`` with a cold and a warm compilation cache.

Each measurement is the wall time of one fresh ``python -m gd_jax train`` process (imports,
data, compilation, training, files), in a new empty folder:

- ``--epochs 0``: start-up alone (imports, data, initialisation, the first files);
- the default run (30 epochs of the textbook network on the sample);

each with the persistent compilation cache off, cold (an empty cache folder) and warm (the
folder the cold run filled). It prints the medians and the ratios to the cache-off run, the
CPU seconds the process used (user + system: less sensitive than wall time to other work on a
shared machine), and the training and compile seconds the run itself reports (its closing line).

Run: ``python experiments/benchmarks/startup.py [--repeats 3] [--epochs 30]``
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(args: list[str], cache: str, workdir: str) -> tuple[float, float, str]:
    """Wall and CPU seconds of one ``gd-jax train`` process, and its closing line."""
    env = {**os.environ, "GD_JAX_COMPILE_CACHE": cache}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gd_jax", "train", "--no-progress", *args], cwd=workdir, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"gd-jax train {' '.join(args)} failed:\n{done.stderr}")
    return seconds, cpu, done.stdout.strip().splitlines()[-1]


def measure(args: list[str], repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    times: dict[str, list[float]] = {"off": [], "cold": [], "warm": []}
    cpus: dict[str, list[float]] = {"off": [], "cold": [], "warm": []}
    lines: dict[str, str] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as workdir:
            cache = os.path.join(workdir, "cache")
            for mode, folder in (("off", "off"), ("cold", cache), ("warm", cache)):
                seconds, cpu, lines[mode] = run_once(args, folder, workdir)
                times[mode].append(seconds)
                cpus[mode].append(cpu)
    for mode, line in lines.items():
        match = re.search(r"trained in ([0-9.]+) s, compiling ([0-9.]+) s", line)
        if match:
            print(f"    {mode:>4}: training {match.group(1)} s, compiling {match.group(2)} s (as the run reports)")
    return times, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="processes per measurement (median reported)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the full run (default 30, the textbook's)")
    options = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; medians of {options.repeats}")
    for label, args in (("--epochs 0", ["--epochs", "0"]), (f"--epochs {options.epochs}", ["--epochs",
                                                                                           str(options.epochs)])):
        print(f"gd-jax train {label}:")
        times, cpus = measure(args, options.repeats)
        off, off_cpu = statistics.median(times["off"]), statistics.median(cpus["off"])
        for mode in ("off", "cold", "warm"):
            median, cpu = statistics.median(times[mode]), statistics.median(cpus[mode])
            print(f"  cache {mode:>4}: {median:6.2f} s wall ({median / off:.2f}x of cache off), {cpu:6.2f} s CPU "
                  f"({cpu / off_cpu:.2f}x)  wall of each: {', '.join(f'{t:.2f}' for t in times[mode])}")


if __name__ == "__main__":
    main()
