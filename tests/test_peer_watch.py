"""``PeerWatch``'s rule on a stand-in for the coordination service, with a hand-moved clock.

The end-to-end cases (a stopped peer, a stopped coordinator, under ``gd-jax train``) are in
``tests/test_parallel.py``; here the rule itself: who counts as hung, and when.
"""

import threading

import pytest

from gd_jax._src.parallel import PeerLostError
from gd_jax._src.peer_watch import DONE, PeerWatch


class Store:
    """The key-value store ``jax.distributed``'s client offers, in memory; can stop answering."""

    def __init__(self):
        self.values: dict[str, str] = {}
        self.answering = True

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None:
        if not self.answering:
            raise RuntimeError("DEADLINE_EXCEEDED")
        assert allow_overwrite or key not in self.values
        self.values[key] = value

    def key_value_dir_get(self, prefix: str) -> list[tuple[str, str]]:
        if not self.answering:
            raise RuntimeError("DEADLINE_EXCEEDED")
        return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _three_processes(store, clock, silence_s=8.0):
    return [PeerWatch(store, i, 3, on_lost=lambda e: None, silence_s=silence_s, clock=clock) for i in range(3)]


def _beat(watches, clock, seconds, skip=()):
    """Every watch but ``skip`` beats once a second for ``seconds``."""
    for _ in range(int(seconds)):
        clock.now += 1.0
        for i, w in enumerate(watches):
            if i not in skip:
                w.beat_once()


def test_peers_that_keep_beating_are_never_hung():
    store, clock = Store(), Clock()
    watches = _three_processes(store, clock)
    _beat(watches, clock, 60)
    assert all(w.hung() is None for w in watches)


@pytest.mark.parametrize("silent", [1, 2])
def test_a_silent_peer_is_named_after_silence_s_and_not_before(silent):
    store, clock = Store(), Clock()
    watches = _three_processes(store, clock)
    _beat(watches, clock, 5)
    # Its last beat is seen by the others on their next beat, a second later: after 9 silent
    # seconds its counter was last seen moving 8 s ago, not yet over the silence.
    _beat(watches, clock, 9, skip={silent})
    assert watches[0].hung() is None
    _beat(watches, clock, 1, skip={silent})
    error = watches[0].hung()
    assert isinstance(error, PeerLostError)
    assert str(error) == (f"process 0 of 3 lost contact with process {silent}: no sign of life for 9 s, it hung "
                          "(stopped, deadlocked or out of memory)")
    assert watches[3 - silent].hung() is not None  # the third process sees it too


def test_a_peer_that_ended_normally_is_not_waited_for():
    store, clock = Store(), Clock()
    watches = _three_processes(store, clock)
    _beat(watches, clock, 3)
    watches[2].stop()  # done: process 2 now waits for the others to finish, silently
    assert store.values["gd_jax/alive/2"] == DONE
    _beat(watches, clock, 60, skip={2})
    assert watches[0].hung() is None and watches[1].hung() is None


def test_a_store_that_stops_answering_names_process_0():
    store, clock = Store(), Clock()
    watches = _three_processes(store, clock)
    _beat(watches, clock, 3)
    store.answering = False  # process 0, which holds the store, hung
    clock.now += 9.0
    with pytest.raises(RuntimeError):
        watches[1].beat_once()
    assert str(watches[1].hung()).startswith("process 1 of 3 lost contact with process 0, which holds the run's "
                                             "coordinator: no answer for 9 s")


def test_the_threads_call_on_lost_once_with_the_hung_peer():
    store = Store()
    lost = []
    called = threading.Event()
    me = PeerWatch(store, 0, 2, on_lost=lambda e: (lost.append(e), called.set()), silence_s=0.3,
                   interval_s=0.05).start()
    store.values["gd_jax/alive/1"] = "1"  # process 1 beat once, then stopped
    assert called.wait(10)
    me._stop.wait(0.3)  # time for a second call, which must not come
    assert len(lost) == 1 and "lost contact with process 1" in str(lost[0])
    me.stop()


@pytest.mark.parametrize("interval_s, silence_s", [(0.0, 8.0), (8.0, 8.0), (-1.0, 8.0)])
def test_an_interval_that_cannot_detect_silence_is_refused(interval_s, silence_s):
    with pytest.raises(ValueError, match="interval_s must be positive and below silence_s"):
        PeerWatch(Store(), 0, 2, on_lost=print, silence_s=silence_s, interval_s=interval_s)


def test_a_store_that_stops_answering_is_named_though_process_0_s_counter_stopped_first():
    """Process 0's counter last moved at 103 s; the store answered until 105 s, then stopped (process 0
    hung). At 111.5 s process 0's counter has not moved for 8.5 s, but only 2 s of that silence were
    read from the store: process 0 is named as the store's holder once the store is silent for 8 s."""
    store, clock = Store(), Clock()
    watches = _three_processes(store, clock)
    _beat(watches, clock, 3)
    _beat(watches, clock, 2, skip={0})  # process 0's beats run late; the store still answers
    store.answering = False
    clock.now += 6.5
    assert watches[1].hung() is None
    clock.now += 2.0
    assert str(watches[1].hung()).startswith("process 1 of 3 lost contact with process 0, which holds the run's "
                                             "coordinator: no answer for 8 s")
