"""Telling a hung peer from a slow one in a multi-process run, through JAX's own key-value store.

A process that dies closes its sockets, and the others' next collective fails at once. A
process that *hangs* (stopped, deadlocked, swapped out) closes nothing: the others wait in
their collective until ``jax.distributed``'s heartbeat check declares it dead, and then JAX
aborts every process with pages of runtime logs (and, in jax 0.10, the callback it offers
for that moment crashes). ``PeerWatch`` gets there first, in one line.

Every process keeps a counter in the coordination service's key-value store (the service
``jax.distributed`` already runs in process 0: no socket of gd_jax's own) and bumps it every
``interval_s`` from a background thread, which runs while the main thread waits in a
collective, as JAX releases the GIL there. The same thread reads all the counters. A peer
whose counter had not moved for ``silence_s`` by the store's last answer has hung (a peer's
silence is known only while the store answers); when the store itself has not answered for
``silence_s``, process 0 (which holds it) has. Either way ``on_lost`` is called
once with a ``PeerLostError`` naming the process. A process that ends normally writes
``done`` in place of its counter, so that a peer still writing its files is not waited for.

``silence_s`` must be shorter than JAX's heartbeat timeout (half of it, to be sure to come
first: a hung process's last heartbeat may be up to half a timeout old when it stops).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gd_jax._src.parallel import PeerLostError

__all__ = ["PeerWatch"]

PREFIX = "gd_jax/alive/"
DONE = "done"


class PeerWatch:
    """Each process's sign of life in the coordination service, and a judge of the others'.

    Args:
      client: the ``jax.distributed`` client (``key_value_set``, ``key_value_dir_get``).
      process_id: this process's number.
      num_processes: how many processes take part.
      on_lost: called once, from the watching thread, with the ``PeerLostError`` of the
        first peer found hung (it usually ends the process).
      silence_s: seconds without a sign of life after which a peer counts as hung.
      interval_s: seconds between two signs of life.
      clock: the time source (seconds), for tests.
    """

    def __init__(self, client: Any, process_id: int, num_processes: int, *,
                 on_lost: Callable[[Exception], None], silence_s: float, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 < interval_s < silence_s:
            raise ValueError(f"interval_s must be positive and below silence_s, got {interval_s} and {silence_s}")
        self.client, self.process_id, self.num_processes = client, process_id, num_processes
        self.on_lost, self.silence_s, self.interval_s, self.clock = on_lost, silence_s, interval_s, clock
        self._beats = 0
        self._stop = threading.Event()
        now = clock()
        self._last_answer = now  # the store's last answer
        self._seen: dict[int, tuple[str | None, float]] = {p: (None, now) for p in range(num_processes)
                                                           if p != process_id}
        self._threads = [threading.Thread(target=self._beat, name="gd-jax-peer-beat", daemon=True),
                         threading.Thread(target=self._judge, name="gd-jax-peer-judge", daemon=True)]

    def start(self) -> PeerWatch:
        """Starts the two daemon threads: one beats and reads, one judges (so a blocked read is noticed)."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, *, done: bool = True) -> None:
        """Stops watching; with ``done`` tells the others this process ended normally."""
        if self._stop.is_set():
            return
        self._stop.set()
        if done:
            try:
                self.client.key_value_set(f"{PREFIX}{self.process_id}", DONE, allow_overwrite=True)
            except Exception:  # the store is gone (process 0 ended first): nobody is left to tell
                pass

    def beat_once(self) -> None:
        """Writes this process's sign of life and reads the others' (one round of the beating thread)."""
        self._beats += 1
        self.client.key_value_set(f"{PREFIX}{self.process_id}", str(self._beats), allow_overwrite=True)
        values = dict(self.client.key_value_dir_get(PREFIX))
        now = self.clock()
        self._last_answer = now
        for peer, (before, _) in list(self._seen.items()):
            value = values.get(f"{PREFIX}{peer}")
            if value != before:
                self._seen[peer] = (value, now)

    def hung(self) -> Exception | None:
        """The ``PeerLostError`` of the first peer silent for ``silence_s`` (None: all alive)."""
        now = self.clock()
        me, n = self.process_id, self.num_processes
        if now - self._last_answer > self.silence_s:
            return PeerLostError(f"process {me} of {n} lost contact with process 0, which holds the run's "
                                 f"coordinator: no answer for {now - self._last_answer:.0f} s, it hung or died")
        for peer, (value, since) in self._seen.items():
            # Measured to the store's last answer, not to now: once the store is silent, a peer's
            # counter cannot be read, and process 0 (the store's holder) is the one to name.
            silent = self._last_answer - since
            if value != DONE and silent > self.silence_s:
                return PeerLostError(f"process {me} of {n} lost contact with process {peer}: no sign of life for "
                                     f"{silent:.0f} s, it hung (stopped, deadlocked or out of memory)")
        return None

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat_once()
            except Exception:  # an unreachable store: the judge notices its silence
                pass
            self._stop.wait(self.interval_s)

    def _judge(self) -> None:
        while not self._stop.wait(self.interval_s / 2):
            error = self.hung()
            if error is not None and not self._stop.is_set():
                self._stop.set()
                self.on_lost(error)
                return
