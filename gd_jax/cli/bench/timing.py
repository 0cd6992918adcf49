"""Interleaved timing, memory, the load and the machine: what makes a bench figure honest and reproducible."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jaxlib
import numpy as np

from gd_jax._src import xla_config

__all__ = ["CpuSnapshot", "Measured", "Timing", "busy", "describe_machine", "device_memory", "git_commit",
           "load_note", "other_cores", "peak_rss_bytes", "reset_peak_rss", "time_round_robin"]


class Timing(NamedTuple):
    """Seconds of repeated runs and their summary."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """Half the range relative to the median: the run's noise, ``(max - min) / (2 median)``."""
        return (max(self.seconds) - min(self.seconds)) / (2 * self.median) if self.median > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "median": self.median, "min": min(self.seconds),
                "max": max(self.seconds), "spread": self.spread}


class Measured(NamedTuple):
    """What a run that times itself returns (numpy in its own process): its own seconds, without the IPC."""

    seconds: float


def time_round_robin(runs: dict[str, Callable[[int], Any]], repeats: int) -> dict[str, Timing]:
    """Seconds of ``run(r)`` for r in 0..repeats-1, interleaved across the runs so that drift hits all alike.

    A run that returns ``Measured`` is taken at its own word (it timed itself, in another process).
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            out = jax.block_until_ready(fn(r))
            seconds = time.perf_counter() - start
            times[name].append(out.seconds if isinstance(out, Measured) else seconds)
    return {name: Timing(t) for name, t in times.items()}


def busy(load: float, cpus: int | None = None) -> bool:
    """Whether a 1-minute load average means the machine was too busy to quote: above half its cores."""
    return load > (cpus or os.cpu_count() or 1) / 2


class CpuSnapshot(NamedTuple):
    """Where the machine's and this process's CPU clocks stood at one moment (see ``other_cores``)."""

    wall: float
    machine_busy: float | None  # seconds all cores were busy since boot; None where the kernel does not say
    own: float  # this process's seconds, and those of its children that have been waited for

    @classmethod
    def now(cls) -> CpuSnapshot:
        t = os.times()
        return cls(time.time(), _machine_busy_seconds(), t.user + t.system + t.children_user + t.children_system)


def _machine_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot, steal included (Linux's ``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def other_cores(since: CpuSnapshot, until: CpuSnapshot | None = None) -> float | None:
    """How many cores other processes kept busy on average from ``since`` to ``until`` (default now);
    None where it cannot be told.

    The machine's busy time less this process's and its waited-for children's: the load average
    cannot say this, since it counts this run's own threads (a bench that keeps two cores busy
    reads a load near 2 on a machine it has to itself). Call it after the children have exited.
    """
    end = until or CpuSnapshot.now()
    if since.machine_busy is None or end.machine_busy is None or end.wall <= since.wall:
        return None
    others = (end.machine_busy - since.machine_busy) - (end.own - since.own)
    return max(others, 0.0) / (end.wall - since.wall)


def load_note(loads: list[float], cpus: int | None, *, others: float | None = None) -> str | None:
    """The warning a report carries when the machine was busy, else None.

    With ``others`` (``other_cores`` over the run) the machine was busy when other processes kept
    more than half its cores busy on average, or when the load average before the run
    (``loads[0]``) was above half of them; without it, when any load average read was.
    """
    if others is not None:
        if busy(others, cpus):
            what = f"other processes kept {others:.2f} of {cpus} cores busy on average, above half of them"
        elif busy(loads[0], cpus):
            what = f"load average {loads[0]:.2f} on {cpus} cores before the run, above half of them"
        else:
            return None
    else:
        worst = max(loads, default=0.0)
        if not busy(worst, cpus):
            return None
        what = f"load average up to {worst:.2f} on {cpus} cores, above half of them"
    return (f"WARNING: the machine was busy ({what}): these figures measure the contention as much as the code; "
            "do not quote them, rerun when it is quiet")


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS counter of this process (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """This process's peak resident set (since the last reset on Linux, else since it started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    except ImportError:
        return None


def device_memory(device: jax.Device) -> dict[str, int] | None:
    """Device memory in use and its peak, where the backend reports it (GPUs, TPUs; not the CPU)."""
    try:
        stats = device.memory_stats()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    if not stats:
        return None
    return {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in stats}


def git_commit() -> dict[str, Any] | None:
    """The commit of the gd_jax source being measured, and whether the working tree differs from it."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def describe_machine(device: jax.Device) -> dict[str, Any]:
    """The machine and software a run measured: device, cores, versions, thread settings, XLA's configuration."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "jax": jax.__version__,
                                       "jaxlib": jaxlib.__version__, "numpy": np.__version__}
    for name in ("optax", "torch", "threadpoolctl"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "platform": device.platform, "device_kind": device.device_kind, "device": str(device),
        "device_count": jax.device_count(device.platform), "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}", "node": platform.node(),
        "versions": versions,
        "environment": {k: os.environ.get(k) for k in ("XLA_FLAGS", "NPROC", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                        "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "xla": xla_config.describe(),
    }
