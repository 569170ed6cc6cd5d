"""common/drain.py and OrderedPrefetch.close(wait=False) / join() / max_waiting: a
look-ahead closed without waiting lets its running fetches finish in the background, and
is waited for later; results in flight are dropped either way.

Events (threading.Event) hold the fetches, so nothing depends on timing.
"""

from __future__ import annotations

import itertools
import threading
import typing as t

import pytest
from test_prefetch import WAIT, Recorder, _prefetch_threads

from tap_analytics.common.drain import Drain
from tap_analytics.common.prefetch import OrderedPrefetch


def _held_after_first(prefetch_holds: dict[int, threading.Event]) -> tuple[
        OrderedPrefetch, Recorder]:
    fetch = Recorder(gates=prefetch_holds)
    prefetch = OrderedPrefetch(fetch, itertools.count(), 4)
    assert next(prefetch) == "page-0"  # pages 1-4 now asked, the held ones still running
    _until(lambda: set(prefetch_holds) <= set(fetch.calls))  # ... and started
    return prefetch, fetch


def _until(condition: t.Callable[[], bool]) -> None:
    pause = threading.Event()
    for _ in range(int(WAIT / 0.005)):
        if condition():
            return
        pause.wait(0.005)
    raise AssertionError("the condition never became true")


def test_close_without_waiting_returns_while_a_fetch_runs_and_join_waits_for_it() -> None:
    gate = threading.Event()
    prefetch, fetch = _held_after_first({3: gate})
    prefetch.close(wait=False)  # returns although page 3 is still being fetched
    assert prefetch.closing.is_set()
    assert fetch.running == 1 and not prefetch.finished
    assert _prefetch_threads()
    assert list(prefetch) == []  # closed: nothing more is handed out
    gate.set()
    prefetch.join()
    assert prefetch.finished and fetch.running == 0
    assert max(fetch.calls) <= 4  # nothing new was asked after close
    assert not _prefetch_threads()


def test_join_before_close_is_an_error() -> None:
    prefetch = OrderedPrefetch(lambda k: k, range(3), 2)
    with pytest.raises(RuntimeError, match="before close"):
        prefetch.join()
    prefetch.close()


def test_the_drain_cleans_up_only_what_has_finished_until_joined() -> None:
    gates = {2: threading.Event(), 3: threading.Event()}
    first, _ = _held_after_first({2: gates[2]})
    second, _ = _held_after_first({3: gates[3]})
    cleaned: list[str] = []
    drain = Drain()
    drain.add(first, lambda: cleaned.append("first"))
    drain.add(second, lambda: cleaned.append("second"))
    assert len(drain) == 2 and first.closing.is_set() and second.closing.is_set()
    assert drain.reap() == 2 and cleaned == []  # both still running: nothing waited for
    gates[2].set()
    _until(lambda: first.finished)
    assert drain.reap() == 1 and cleaned == ["first"]
    threading.Timer(0.05, gates[3].set).start()
    drain.join()  # waits for the held fetch
    assert cleaned == ["first", "second"] and len(drain) == 0
    assert not _prefetch_threads()


def test_a_failing_cleanup_does_not_keep_the_others_from_running() -> None:
    drain = Drain()
    cleaned: list[int] = []
    for key in range(3):
        prefetch = OrderedPrefetch(lambda k: k, itertools.count(), 2)
        next(prefetch)

        def cleanup(key: int = key) -> None:
            cleaned.append(key)
            if key == 1:
                raise OSError("cleanup failed")
        drain.add(prefetch, cleanup)
    with pytest.raises(OSError, match="cleanup failed"):
        drain.join()
    assert cleaned == [0, 1, 2] and len(drain) == 0
    assert not _prefetch_threads()


def test_max_waiting_starts_a_fetch_as_soon_as_another_one_finishes() -> None:
    # 2 in flight, 4 waiting: page 0 is held; page 1 finishes, so page 2 starts (and then
    # page 3) while nothing has been handed out yet; never more than 2 at once.
    gate0 = threading.Event()
    started = {k: threading.Event() for k in range(6)}
    fetch = Recorder(gates={0: gate0})

    def recorded(key: int) -> str:
        started[key].set()
        return fetch(key)

    prefetch = OrderedPrefetch(recorded, range(6), 2, max_waiting=4)
    taker = threading.Thread(target=lambda: results.append(next(prefetch)))
    results: list[str] = []
    taker.start()
    assert started[3].wait(WAIT)  # pages 1-3 went while page 0 was still running
    assert not started[4].is_set()  # 4 waiting at most: page 4 waits for a hand-out
    gate0.set()
    taker.join(WAIT)
    assert results == ["page-0"]
    assert list(prefetch) == [f"page-{k}" for k in range(1, 6)]
    assert fetch.most_running <= 2
    prefetch.close()
    assert not _prefetch_threads()


def test_without_max_waiting_a_fetch_waits_for_the_hand_out() -> None:
    gate0 = threading.Event()
    fetch = Recorder(gates={0: gate0})
    prefetch = OrderedPrefetch(fetch, range(6), 2)
    taker = threading.Thread(target=lambda: next(prefetch))
    taker.start()
    threading.Event().wait(0.2)
    assert sorted(fetch.calls) == [0, 1]  # page 1 done, page 2 not asked: 2 waiting
    gate0.set()
    taker.join(WAIT)
    prefetch.close()
    assert not _prefetch_threads()


@pytest.mark.parametrize("bad", [1, 129, True, 3.0])
def test_max_waiting_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="max_waiting"):
        OrderedPrefetch(lambda k: k, range(3), 2, max_waiting=bad)  # type: ignore[arg-type]
