"""Signals: Ctrl-C and SIGTERM stop a run between files, never in the middle of one."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Makes SIGTERM raise KeyboardInterrupt, as SIGINT does, so both stop a run the same clean way.

    Only in the main thread (the only one that may set handlers); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Holds an interrupt back until the block is done, so that the files of one epoch are written together.

    Only in the main thread and for signals handled by Python's default KeyboardInterrupt
    handler; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferred = [s for s in _INTERRUPTS if signal.getsignal(s) is signal.default_int_handler]
    received: list[int] = []
    for s in deferred:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s in deferred:
            signal.signal(s, signal.default_int_handler)
        if received:
            raise KeyboardInterrupt
