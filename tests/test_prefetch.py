"""common/prefetch.py: ordered, bounded look-ahead over a thread pool.

Events (threading.Event) make the workers finish in a chosen order, so the tests check
ordering, bounds, error placement and clean-up without timing assumptions.
"""

from __future__ import annotations

import itertools
import threading
import typing as t

import pytest

from tap_analytics.common.prefetch import OrderedPrefetch, ordered_prefetch

WAIT = 10.0  # a safety bound for event waits; the tests never rely on it elapsing


def _prefetch_threads() -> list[threading.Thread]:
    return [th for th in threading.enumerate() if th.name.startswith("prefetch")]


class Recorder:
    """A fetch function that records what it was called with and how many ran at once."""

    def __init__(self, fail_at: int | None = None,
                 gates: dict[int, threading.Event] | None = None,
                 on_fail: t.Callable[[], None] | None = None) -> None:
        self.on_fail = on_fail
        self.calls: list[int] = []
        self.running = 0
        self.most_running = 0
        self.fail_at = fail_at
        self.gates = gates or {}
        self.lock = threading.Lock()

    def __call__(self, key: int) -> str:
        with self.lock:
            self.calls.append(key)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            gate = self.gates.get(key)
            if gate is not None:
                assert gate.wait(WAIT), f"gate {key} never opened"
            if key == self.fail_at:
                if self.on_fail is not None:
                    self.on_fail()
                raise RuntimeError(f"page {key} failed")
            return f"page-{key}"
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("in_flight", [1, 2, 4, 16])
def test_results_come_in_key_order(in_flight: int) -> None:
    fetch = Recorder()
    got = list(OrderedPrefetch(fetch, range(37), in_flight))
    assert got == [f"page-{k}" for k in range(37)]
    assert sorted(fetch.calls) == list(range(37))
    assert fetch.most_running <= in_flight
    assert not _prefetch_threads()


def test_later_results_finishing_first_still_wait_their_turn() -> None:
    gates = {k: threading.Event() for k in range(4)}
    finished: list[int] = []

    def fetch(key: int) -> str:
        assert gates[key].wait(WAIT)
        finished.append(key)
        if key == 1:  # the last one to finish opens the first
            gates[0].set()
        return f"page-{key}"

    for k in (3, 2, 1):
        gates[k].set()
    with OrderedPrefetch(fetch, range(4), 4) as prefetch:
        assert list(prefetch) == ["page-0", "page-1", "page-2", "page-3"]
    assert finished.index(0) > finished.index(1)  # page 0 finished after page 1


def test_look_ahead_is_bounded_over_endless_keys() -> None:
    gates = {k: threading.Event() for k in range(100)}
    fetch = Recorder(gates=gates)
    with OrderedPrefetch(fetch, itertools.count(), 3) as prefetch:
        gates[0].set()
        assert next(prefetch) == "page-0"
        # page 0 handed out: keys 1, 2, 3 submitted, nothing beyond
        assert prefetch.waiting == 3
        assert set(fetch.calls) <= {0, 1, 2, 3}
        for gate in gates.values():
            gate.set()
        assert next(prefetch) == "page-1"
    assert max(fetch.calls) <= 4
    assert not _prefetch_threads()


def test_stop_early_drops_the_speculative_results_and_leaves_no_thread() -> None:
    fetch = Recorder()
    pages = ordered_prefetch(fetch, itertools.count(), 4)
    taken = [next(pages) for _ in range(3)]
    pages.close()  # e.g. page 2 was short
    assert taken == ["page-0", "page-1", "page-2"]
    assert max(fetch.calls) <= 2 + 4  # at most max_in_flight beyond the last handed out
    assert not _prefetch_threads()


def test_an_error_surfaces_only_when_its_page_is_reached() -> None:
    fetch = Recorder(fail_at=5)
    got: list[str] = []
    with pytest.raises(RuntimeError, match="page 5 failed"):
        for result in OrderedPrefetch(fetch, range(20), 4):
            got.append(result)
    assert got == [f"page-{k}" for k in range(5)]
    assert not _prefetch_threads()


def test_an_error_on_a_later_page_waits_behind_a_slow_earlier_page() -> None:
    gates = {0: threading.Event()}
    fetch = Recorder(fail_at=2, gates=gates, on_fail=gates[0].set)
    prefetch = OrderedPrefetch(fetch, range(6), 4)
    # page 2 fails while page 0 still waits (its failure opens page 0): nothing raised yet
    assert next(prefetch) == "page-0"
    assert next(prefetch) == "page-1"
    with pytest.raises(RuntimeError, match="page 2 failed"):
        next(prefetch)
    assert list(prefetch) == []  # closed after the error
    assert not _prefetch_threads()


def test_sequential_mode_runs_each_fetch_when_asked_in_the_callers_thread() -> None:
    threads: list[str] = []

    def fetch(key: int) -> int:
        threads.append(threading.current_thread().name)
        return key * 10

    prefetch = OrderedPrefetch(fetch, itertools.count(), 1)
    assert next(prefetch) == 0
    assert next(prefetch) == 10
    assert len(threads) == 2  # nothing fetched ahead
    prefetch.close()
    assert threads == [threading.current_thread().name] * 2


def test_sequential_mode_error_is_raised_at_its_page() -> None:
    fetch = Recorder(fail_at=1)
    prefetch = OrderedPrefetch(fetch, range(5), 1)
    assert next(prefetch) == "page-0"
    with pytest.raises(RuntimeError):
        next(prefetch)
    assert fetch.calls == [0, 1]
    assert list(prefetch) == []


def test_close_while_running_waits_for_the_running_fetches() -> None:
    gates = {k: threading.Event() for k in (1, 2, 3)}
    fetch = Recorder(gates=gates)
    prefetch = OrderedPrefetch(fetch, range(8), 4)
    assert next(prefetch) == "page-0"  # pages 1-4 now in flight, 1-3 held
    closer = threading.Thread(target=prefetch.close)
    closer.start()
    for gate in gates.values():
        gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert fetch.running == 0
    assert max(fetch.calls) <= 4
    assert not _prefetch_threads()


def test_generator_close_from_a_consumer_that_breaks() -> None:
    fetch = Recorder()
    for result in ordered_prefetch(fetch, itertools.count(), 8):
        if result == "page-10":
            break
    # the for loop dropped the generator: CPython closes it at once
    assert not _prefetch_threads()


@pytest.mark.parametrize("bad", [0, -1, 65, True, 2.0, "4"])
def test_max_in_flight_is_checked(bad: t.Any) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        OrderedPrefetch(lambda k: k, range(3), bad)


def test_short_key_lists_end_cleanly() -> None:
    assert list(ordered_prefetch(lambda k: k + 1, [], 4)) == []
    assert list(ordered_prefetch(lambda k: k + 1, [1, 2], 4)) == [2, 3]
    assert not _prefetch_threads()


def test_a_running_fetch_sees_closing_and_can_give_up() -> None:
    started = threading.Event()
    gave_up: list[int] = []
    holder: dict[str, OrderedPrefetch] = {}

    def fetch(key: int) -> int:
        if key == 0:
            return 0
        started.set()
        # e.g. a retry loop: wait for the next try, stop when the result will be dropped
        assert holder["p"].closing.wait(WAIT)
        gave_up.append(key)
        raise RuntimeError("dropped")  # retrieved by close(), never raised to the caller

    prefetch = OrderedPrefetch(fetch, range(3), 2)
    holder["p"] = prefetch
    assert not prefetch.closing.is_set()
    assert next(prefetch) == 0
    assert started.wait(WAIT)
    prefetch.close()
    assert prefetch.closing.is_set()
    assert gave_up  # the running fetch saw `closing` and ended; close() waited for it
    assert not _prefetch_threads()


def test_put_unless_stopped_waits_while_full_and_gives_up_once_stopped() -> None:
    import queue
    import threading

    from tap_analytics.common.prefetch import put_unless_stopped

    q: queue.Queue[int] = queue.Queue(1)
    stop = threading.Event()
    assert put_unless_stopped(q, 1, stop)
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(put_unless_stopped(q, 2, stop,
                                                                                poll=0.01)))
    waiter.start()
    assert q.get(timeout=5) == 1  # room again: the waiting put goes through
    waiter.join(timeout=5)
    assert results == [True] and q.get(timeout=5) == 2
    q.put(3)
    stop.set()
    assert put_unless_stopped(q, 4, stop, poll=0.01) is False
    assert q.get_nowait() == 3 and q.empty()
