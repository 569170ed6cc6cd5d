"""Look-aheads closed without waiting: their last fetches finish while the sync goes on.

A limit/skip stream learns where it ends only from its short page; by then the pages
asked ahead of it are in flight, and their answers will be dropped. Waiting for them
would hold the next stream back by up to a round trip. Instead the stream hands its
look-ahead to the tap's `Drain` (`add`): the look-ahead is closed at once
(`OrderedPrefetch.close(wait=False)`: nothing not yet started goes out, a running fetch
is not retried), the next stream starts, and the fetches still running finish on their
own in the background. `join()` waits for all of them and then runs each one's clean-up
(closing its sessions): a stream calls it before the sync goes on to another source and
when it fails, so no worker thread outlives the source's streams. `reap()` does the same
for the look-aheads that have already finished, without waiting.

Nothing here knows about HTTP or streams: see alation/paging.py for the use.
"""

from __future__ import annotations

import threading
import typing as t

if t.TYPE_CHECKING:
    from tap_analytics.common.prefetch import OrderedPrefetch


class Drain:
    """Closed look-aheads whose running fetches have not finished yet (see module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[OrderedPrefetch, t.Callable[[], None] | None]] = []

    def add(self, prefetch: OrderedPrefetch,
            cleanup: t.Callable[[], None] | None = None) -> None:
        """Close `prefetch` without waiting; `cleanup` runs once its fetches are done
        (in `join` or `reap`)."""
        prefetch.close(wait=False)
        with self._lock:
            self._items.append((prefetch, cleanup))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def reap(self) -> int:
        """Clean up the look-aheads whose fetches have all finished (no waiting); the
        number still running."""
        with self._lock:
            done = [item for item in self._items if item[0].finished]
            self._items = [item for item in self._items if item not in done]
            left = len(self._items)
        for prefetch, cleanup in done:
            _finish(prefetch, cleanup)
        return left

    def join(self) -> None:
        """Wait for every look-ahead's running fetches and threads, then clean up."""
        with self._lock:
            items, self._items = self._items, []
        errors: list[BaseException] = []
        for prefetch, cleanup in items:
            try:
                _finish(prefetch, cleanup)
            except BaseException as exc:  # every item is cleaned up first
                errors.append(exc)
        if errors:
            raise errors[0]


def _finish(prefetch: OrderedPrefetch, cleanup: t.Callable[[], None] | None) -> None:
    prefetch.join()
    if cleanup is not None:
        cleanup()


__all__ = ["Drain"]
