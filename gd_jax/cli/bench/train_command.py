"""The whole command: wall seconds of ``gd-jax train`` with its defaults, warm compilation cache.

What a person waits for, start to exit: interpreter, imports, data, compiling (from the cache),
30 epochs on the embedded sample, the run folder's checkpoints, figures and event file. One run
fills a compilation cache of its own (a temporary folder, so that neither the user's cache nor
an earlier run changes the figure), then ``runs`` timed runs read it. Each run writes its run
folder under the same temporary folder (its working directory), removed afterwards.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

TRAIN = ("train", "--no-progress")
"""The command timed, after ``python -m gd_jax``: the textbook run with every default."""


def _run_once(command: Sequence[str], cwd: str, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - started, done


def measure_train_command(runs: int, *, command: Sequence[str] | None = None,
                          also: Sequence[str] = ()) -> dict[str, Any]:
    """Times ``command`` (default ``python -m gd_jax train --no-progress``): one cold run, ``runs`` warm ones.

    Args:
      runs: warm runs timed.
      command: the command line; default the textbook run.
      also: flags (e.g. ``("--no-figures",)``) to time the command with as well: each warm run of
        the command is followed by one with them added, from the same cache and folder.

    Returns:
      ``{"command", "status", "cold_seconds", "warm_seconds": [...], "median", "min"}``, with
      ``"also": {"flags", "warm_seconds", "median", "min"}`` when ``also`` is given; a command
      that fails gives ``{"command", "status": "failed", "reason"}`` (its last line of stderr).
    """
    shown = " ".join(command) if command else " ".join(["gd-jax", *TRAIN])
    command = list(command or [sys.executable, "-m", "gd_jax", *TRAIN])
    plan = [("command", command)]  # the cold run, then each warm run, followed by its run with ``also``
    for _ in range(runs):
        plan += [("command", command)] + ([("also", [*command, *also])] if also else [])
    seconds: dict[str, list[float]] = {"command": [], "also": []}
    with tempfile.TemporaryDirectory(prefix="gd-jax-bench-") as folder:
        env = {**os.environ, "GD_JAX_COMPILE_CACHE": os.path.join(folder, "compile-cache")}
        for which, line in plan:  # each run's folder goes to runs/ under the temporary folder
            wall, done = _run_once(line, folder, env)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                return {"command": shown, "status": "failed", "reason": last}
            seconds[which].append(wall)
    cold, warm = seconds["command"][0], seconds["command"][1:]
    result = {"command": shown, "status": "ok", "cold_seconds": cold, "warm_seconds": warm,
              "median": statistics.median(warm), "min": min(warm)}
    if also:
        result["also"] = {"flags": " ".join(also), "warm_seconds": seconds["also"],
                          "median": statistics.median(seconds["also"]), "min": min(seconds["also"])}
    return result
