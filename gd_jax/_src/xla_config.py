"""XLA's CPU runtime configuration: chosen by workload, set before the backend starts, recorded.

At the textbook's batch of 10 an epoch is 6,000 steps of a few dozen tiny kernels each, and
XLA's CPU thread pool costs more in hand-offs than it gains in parallel work: one thread is
faster. At batches of 128 and more the products are large enough for the pool to pay. XLA reads
its settings once, when the CPU backend starts (the first array or device query of the
process), so a choice must be made before that:

- the library: ``configure_cpu(batch_size=..., models=...)`` before any JAX computation (it
  returns what it did; after the backend started it changes nothing and says so);
- the command line: the same call right after parsing the options (the batch size is known)
  and before anything asks JAX for a device;
- a user's own ``XLA_FLAGS`` or ``NPROC`` always win: what they set is left as it is.

``describe()`` is what a run records (the bench JSON, a run's config): the settings in force,
whether gd_jax chose them, and why.

The choice (``cpu_settings``) rests on ``experiments/benchmarks/xla_flags.py``, which times
each setting in fresh processes, interleaved; its results are committed under
``experiments/benchmarks/results/`` (``*-xla-flags-*.json``; rerun it to see the figures on your
machine). Only settings that measured faster are used: the XLA
flags tried there (``xla_cpu_multi_thread_eigen``, ``xla_cpu_use_fusion_emitters``,
``xla_cpu_use_thunk_runtime``) were not, and are not set.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from gd_jax._src.jax_internals import backend_started

__all__ = ["SMALL_WORK", "configure_cpu", "cpu_settings", "describe"]

SMALL_WORK = 16
"""Rows per step (batch size times models trained together) up to which one XLA thread is faster."""
_CHOICE = "GD_JAX_XLA_CHOICE"  # where the choice is noted for describe(): the process's environment, as XLA's own
_KEYS = ("XLA_FLAGS", "NPROC")


def cpu_settings(batch_size: int, models: int = 1) -> dict[str, str]:
    """The environment settings that ran this workload fastest on the CPU (``{}``: XLA's defaults).

    Args:
      batch_size: rows per mini-batch.
      models: models trained as one program (a sweep), each with its own rows per step.
    """
    if batch_size < 1 or models < 1:
        raise ValueError(f"batch_size and models must be >= 1, got {batch_size} and {models}")
    if batch_size * models <= SMALL_WORK:
        return {"NPROC": "1"}  # one thread: no pool hand-offs between a step's tiny kernels
    return {}


def configure_cpu(batch_size: int, models: int = 1, *,
                  environ: MutableMapping[str, str] | None = None) -> dict[str, Any]:
    """Sets ``cpu_settings(batch_size, models)`` in the environment unless the user set them or XLA started.

    Returns:
      What a run records: ``{"applied": {...}, "reason": ...}`` plus ``describe()``'s fields.
    """
    env = os.environ if environ is None else environ
    wanted = cpu_settings(batch_size, models)
    if backend_started():
        reason = "not applied: JAX's backend had already started (configure before the first JAX computation)"
        applied: dict[str, str] = {}
    elif any(env.get(k) for k in _KEYS):
        reason = "not applied: the environment sets XLA_FLAGS or NPROC, which win"
        applied = {}
    else:
        applied = wanted
        env.update(wanted)
        reason = (f"gd_jax's choice for {batch_size * models} rows a step "
                  f"({'one thread' if wanted else 'XLA defaults'}; see gd_jax/_src/xla_config.py)")
        env[_CHOICE] = reason
    return {"applied": applied, "wanted": wanted, "reason": reason, **describe(env)}


def describe(environ: MutableMapping[str, str] | None = None) -> dict[str, Any]:
    """The XLA CPU configuration in force: ``XLA_FLAGS``, ``NPROC``, who chose them, whether XLA started."""
    env = os.environ if environ is None else environ
    return {"XLA_FLAGS": env.get("XLA_FLAGS"), "NPROC": env.get("NPROC"),
            "chosen_by": env.get(_CHOICE, "the environment (gd_jax chose nothing)"),
            "backend_started": backend_started()}
