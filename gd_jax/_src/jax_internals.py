"""The two questions gd_jax asks of JAX that JAX's public API does not answer.

Both read private JAX state; this module is the one place that does, each read guarded so
that a JAX that moved the name degrades to a documented fallback instead of failing, and
``tests/test_jax_internals.py`` checks both at the tested versions and at the declared floor
(jax 0.8.1 to 0.10.2). orbax reads the distributed client the same way.
"""

from __future__ import annotations

from typing import Any


def backend_started() -> bool:
    """Whether JAX's backends have started, after which the CPU device count is fixed.

    Fallback where JAX no longer has the private flag: False, and ``jax_num_cpu_devices`` is
    set as if the backend had not started (JAX then ignores or refuses it itself).
    """
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - not at the supported versions
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if callable(started) else False


def distributed_client() -> Any | None:
    """``jax.distributed``'s client of the coordination service, or None (not started, or not found).

    gd_jax's peer watch reads and writes its key-value store; without it, JAX's own
    heartbeat check remains the only watch.
    """
    try:
        from jax._src import distributed
    except ImportError:  # pragma: no cover - not at the supported versions
        return None
    client = getattr(getattr(distributed, "global_state", None), "client", None)
    if client is None or not hasattr(client, "key_value_dir_get"):
        return None
    return client
