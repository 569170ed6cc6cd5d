"""common/handover.py: work started ahead of a stream is handed over only when the stream
would start with the very same thing (`check`); anything else is closed, once."""

from __future__ import annotations

import itertools
import threading

import pytest
from test_prefetch import WAIT, Recorder, _prefetch_threads

from tap_analytics.common.handover import Handover
from tap_analytics.common.prefetch import OrderedPrefetch


class Item:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_taken_with_the_same_check_it_is_handed_over_once() -> None:
    handover, item = Handover(), Item()
    handover.offer("b", item, ("url?skip=0", False), item.close)
    assert handover.has("b") and len(handover) == 1
    assert handover.take("b", ("url?skip=0", False)) is item
    assert item.closed == 0 and not handover.has("b")
    assert handover.take("b", ("url?skip=0", False)) is None  # once
    handover.close_all()
    assert item.closed == 0  # taken: the taker closes it


def test_taken_with_another_check_it_is_closed_and_not_handed_over() -> None:
    handover, item = Handover(), Item()
    handover.offer("b", item, ("url?skip=0", False), item.close)
    assert handover.take("b", ("url?skip=250", False)) is None
    assert item.closed == 1 and len(handover) == 0
    assert handover.take("other", "x") is None


def test_a_second_offer_closes_the_first_and_close_all_closes_the_rest() -> None:
    handover, first, second, third = Handover(), Item(), Item(), Item()
    handover.offer("b", first, 1, first.close)
    handover.offer("b", second, 2, second.close)
    handover.offer("c", third, 3, third.close)
    assert (first.closed, second.closed, third.closed) == (1, 0, 0)
    handover.close_all()
    assert (first.closed, second.closed, third.closed) == (1, 1, 1)
    assert len(handover) == 0


def test_close_all_closes_every_item_and_raises_the_first_error() -> None:
    handover, closed = Handover(), []

    def closer(name: str) -> None:
        closed.append(name)
        if name == "b":
            raise OSError("close failed")

    for name in "abc":
        handover.offer(name, name, name, lambda name=name: closer(name))
    with pytest.raises(OSError, match="close failed"):
        handover.close_all()
    assert closed == ["a", "b", "c"] and len(handover) == 0


def test_a_started_look_ahead_fetches_before_the_first_result_is_asked() -> None:
    started = threading.Event()
    fetch = Recorder()

    def recorded(key: int) -> str:
        if key == 2:
            started.set()
        return fetch(key)

    prefetch = OrderedPrefetch(recorded, itertools.count(), 3)
    prefetch.start()
    assert started.wait(WAIT)  # pages 0-2 went out with no result asked for
    assert next(prefetch) == "page-0"
    prefetch.close()
    assert max(fetch.calls) <= 3
    assert not _prefetch_threads()
    sequential = OrderedPrefetch(fetch, itertools.count(100), 1)
    sequential.start()  # sequential mode: nothing is fetched ahead
    assert max(fetch.calls) <= 3
    sequential.close()
