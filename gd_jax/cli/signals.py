"""Signals: Ctrl-C and SIGTERM stop a run between files, never in the middle of one."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


class _Interrupt:
    """Raises KeyboardInterrupt, as Python's own SIGINT handler does, and remembers that it did.

    Python drops an exception raised while it runs a garbage-collection callback or a
    finalizer ("Exception ignored in ..."), and JAX runs one at every collection: an interrupt
    that lands there is lost and the run goes on. ``interrupts_deferred`` raises it again at
    the next epoch's files.
    """

    def __init__(self) -> None:
        self.unseen = False  # raised, and not yet known to have reached the program

    def __call__(self, signum: int, frame: Any) -> None:
        self.unseen = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Makes SIGTERM raise KeyboardInterrupt, as SIGINT does, so both stop a run the same clean way.

    Both go through one ``_Interrupt``, so that an interrupt Python drops is raised again
    (SIGINT only where it raised KeyboardInterrupt already: an ignored SIGINT stays ignored).
    Only in the main thread (the only one that may set handlers); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _Interrupt()
    previous = {s: signal.signal(s, handler) for s in _INTERRUPTS
                if s == signal.SIGTERM or signal.getsignal(s) is signal.default_int_handler}
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before)


def _raises_keyboard_interrupt(handler: Any) -> bool:
    return handler is signal.default_int_handler or isinstance(handler, _Interrupt)


def _lost(handlers: list[Any]) -> bool:
    """Whether an interrupt was raised and dropped: raised, yet no KeyboardInterrupt is being handled now."""
    raised = [h for h in handlers if isinstance(h, _Interrupt) and h.unseen]
    for h in raised:
        h.unseen = False
    return bool(raised) and not isinstance(sys.exc_info()[1], KeyboardInterrupt)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Holds an interrupt back until the block is done, so that the files of one epoch are written together.

    At the end of the block it also raises an interrupt Python dropped earlier (see
    ``_Interrupt``): the files it guards are written, and the run stops there.
    Only in the main thread and for signals that raise KeyboardInterrupt; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferred = {s: handler for s in _INTERRUPTS if _raises_keyboard_interrupt(handler := signal.getsignal(s))}
    received: list[int] = []
    for s in deferred:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s, handler in deferred.items():
            signal.signal(s, handler)
        if received or _lost(list(deferred.values())):
            raise KeyboardInterrupt
