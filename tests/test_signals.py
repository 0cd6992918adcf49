"""Ctrl-C and SIGTERM: held back while one epoch's files are written, and never lost.

Real signals, sent to this process; the handlers are Python's own until the command line's
context manager installs its one.
"""

import contextlib
import gc
import os
import signal
import sys
import threading

import pytest

from gd_jax.cli import signals

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signal handlers can only be set in the main thread")


@pytest.fixture(autouse=True)
def _python_s_own_sigint_handler():
    """SIGINT raising KeyboardInterrupt, as in a terminal, whatever this process inherited (a process
    started in the background by a non-interactive shell ignores SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _not_raised_again():
    """A KeyboardInterrupt that escapes would stop pytest itself: fail the test instead."""
    try:
        yield
    except KeyboardInterrupt:
        pytest.fail("an interrupt already handled was raised again")


def _interrupt_inside_a_gc_callback(monkeypatch) -> list[BaseException]:
    """SIGINT arriving while Python runs a garbage-collection callback (as JAX's runs at every collection);
    returns what Python dropped there ("Exception ignored in ...")."""
    sent, dropped = [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_value))

    def callback(phase, info):
        if phase == "start" and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            (lambda: None)()  # a call: Python runs the handler here, inside the callback, and drops its exception

    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    return dropped


def test_an_interrupt_python_drops_is_raised_at_the_next_epoch_s_files(monkeypatch):
    written = []
    with signals.interrupts_as_keyboard_interrupt():
        dropped = _interrupt_inside_a_gc_callback(monkeypatch)  # Python drops it and goes on
        assert [type(e) for e in dropped] == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt):
            with signals.interrupts_deferred():
                written.append("epoch 2")
        with _not_raised_again(), signals.interrupts_deferred():  # raised once, not at every later block
            written.append("the final files")
    assert written == ["epoch 2", "the final files"]


def test_an_interrupt_the_command_handles_is_not_raised_again():
    done = []
    with signals.interrupts_as_keyboard_interrupt(), _not_raised_again():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            (lambda: None)()
        except KeyboardInterrupt:  # the command's own handling: it writes what it has, then reports
            with signals.interrupts_deferred():
                done.append("history.json")
            done.append("reported")
        with signals.interrupts_deferred():
            done.append("nothing more to raise")
    assert done == ["history.json", "reported", "nothing more to raise"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_during_an_epoch_s_files_waits_for_them(signum):
    written = []
    with signals.interrupts_as_keyboard_interrupt():
        with pytest.raises(KeyboardInterrupt):
            with signals.interrupts_deferred():
                os.kill(os.getpid(), signum)
                (lambda: None)()
                written.append("history.json")
    assert written == ["history.json"]


def test_handlers_are_restored_and_an_ignored_sigint_stays_ignored():
    before_term = signal.getsignal(signal.SIGTERM)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals.interrupts_as_keyboard_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            (lambda: None)()
            with signals.interrupts_deferred():
                pass
        assert signal.getsignal(signal.SIGTERM) is before_term
    finally:
        signal.signal(signal.SIGINT, previous)
