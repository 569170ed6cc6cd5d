"""An ordered, bounded look-ahead: fetch the next few items while the caller works on one.

`OrderedPrefetch(fetch, keys, max_in_flight)` calls `fetch(key)` for the keys in order on
up to `max_in_flight` worker threads and hands the results back strictly in key order.
Used for limit/skip paging, where the offsets of the next pages are known before a page
arrives (alation/paging.py); nothing in it knows about HTTP.

- Order: result k is handed out only after results 0..k-1, whatever order they finish in.
- Errors: an exception raised by `fetch(key_k)` is raised by the iterator when result k is
  reached, after every result before it was handed out; the later results are dropped.
- Stopping: the caller stops whenever it likes (e.g. on a short page) and calls `close()`
  (or leaves the `with` block): fetches not started are cancelled, running ones are waited
  for and their results dropped. No worker thread is left running after `close()`. A
  fetch may watch the `closing` event to give up early (e.g. not to retry a request
  whose result will be dropped). `close(wait=False)` does the same without waiting: the
  running fetches finish on their own (their results dropped) and `join()` waits for
  them later (common/drain.py keeps such look-aheads until then).
- Bounded: at most `max_in_flight` fetches run at once, and at most `max_waiting`
  (default: `max_in_flight`) are submitted and not yet handed out, so a fetch may start
  as soon as another one finishes, before the caller has taken the results in front of
  it; `keys` may be endless (it is read only as far as needed).
- `max_in_flight == 1` uses no thread: each `fetch` runs in the caller's thread when its
  result is asked for (exactly a plain sequential loop).
"""

from __future__ import annotations

import collections
import queue
import threading
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor

K = t.TypeVar("K")
R = t.TypeVar("R")

#: The most fetches one prefetcher keeps in flight (a sanity bound for callers' settings).
MAX_IN_FLIGHT = 64


class OrderedPrefetch(t.Generic[K, R]):
    """Iterate the results of `fetch` over `keys`, in order, fetching ahead (see module)."""

    def __init__(self, fetch: t.Callable[[K], R], keys: t.Iterable[K], max_in_flight: int,
                 *, thread_name: str = "prefetch", max_waiting: int | None = None) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or not (
                1 <= max_in_flight <= MAX_IN_FLIGHT):
            raise ValueError(f"max_in_flight must be an integer from 1 to {MAX_IN_FLIGHT}")
        if max_waiting is None:
            max_waiting = max_in_flight
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or not (
                max_in_flight <= max_waiting <= 2 * MAX_IN_FLIGHT):
            raise ValueError("max_waiting must be an integer from max_in_flight to "
                             f"{2 * MAX_IN_FLIGHT}")
        self._fetch = fetch
        self._keys = iter(keys)
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting if max_in_flight > 1 else 1
        self._pending: collections.deque[Future[R]] = collections.deque()
        self._executor: ThreadPoolExecutor | None = None
        #: After close(wait=False): the executor and the fetches still to wait for.
        self._leftover: tuple[ThreadPoolExecutor | None, list[Future[R]]] | None = None
        self._thread_name = thread_name
        self._keys_done = False
        self._closed = False
        #: Set when close() starts: results still being fetched will be dropped.
        self.closing = threading.Event()
        #: Results handed out so far.
        self.delivered = 0

    # -- iteration -----------------------------------------------------------------
    def __iter__(self) -> OrderedPrefetch[K, R]:
        return self

    def __next__(self) -> R:
        if self._closed:
            raise StopIteration
        if self.max_in_flight == 1:
            key = self._next_key()
            if key is _END:
                raise StopIteration
            try:
                result = self._fetch(t.cast("K", key))
            except BaseException:
                self.close()
                raise
            self.delivered += 1
            return result
        self._fill()
        if not self._pending:
            raise StopIteration
        future = self._pending.popleft()
        try:
            result = future.result()
        except BaseException:
            self.close()
            raise
        self._fill()  # keep the look-ahead full while the caller works on this result
        self.delivered += 1
        return result

    def start(self) -> None:
        """Submit the first fetches now, before the first result is asked for (e.g. a
        look-ahead started before its reader). Sequential mode fetches nothing ahead."""
        if not self._closed and self.max_in_flight > 1:
            self._fill()

    @property
    def in_flight(self) -> int:
        """Fetches running now (0 when sequential)."""
        return sum(1 for future in self._pending if future.running())

    @property
    def waiting(self) -> int:
        """Fetches submitted and not handed out yet (finished or not)."""
        return len(self._pending)

    def _next_key(self) -> object:
        if self._keys_done:
            return _END
        try:
            return next(self._keys)
        except StopIteration:
            self._keys_done = True
            return _END

    def _fill(self) -> None:
        while len(self._pending) < self.max_waiting:
            key = self._next_key()
            if key is _END:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.max_in_flight, thread_name_prefix=self._thread_name)
            self._pending.append(self._executor.submit(self._fetch, t.cast("K", key)))

    # -- stopping ------------------------------------------------------------------
    def close(self, *, wait: bool = True) -> None:
        """Cancel what has not started, wait for what is running, drop every result.

        `wait=False`: return at once; the running fetches finish on their own (they see
        `closing`) and `join()` waits for them and their threads."""
        self.closing.set()
        self._closed = True
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            future.cancel()
        executor, self._executor = self._executor, None
        running = [future for future in pending if not future.cancelled()]
        if self._leftover is None:
            self._leftover = (executor, running)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if wait:
            self.join()

    def join(self) -> None:
        """Wait for the fetches still running after `close(wait=False)` and their
        threads (at once after `close()`); their results and errors are dropped."""
        if not self._closed:
            raise RuntimeError("join() before close()")
        leftover, self._leftover = self._leftover, (None, [])
        executor, running = leftover or (None, [])
        if executor is not None:
            executor.shutdown(wait=True)
        for future in running:
            future.exception()  # retrieved: a dropped page's error is not reported

    @property
    def finished(self) -> bool:
        """Closed, and no fetch of it still running."""
        leftover = self._leftover
        return self._closed and (leftover is None or all(
            future.done() for future in leftover[1]))

    def __enter__(self) -> OrderedPrefetch[K, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


_END = object()


def ordered_prefetch(fetch: t.Callable[[K], R], keys: t.Iterable[K],
                     max_in_flight: int) -> t.Generator[R, None, None]:
    """`OrderedPrefetch` as a generator: closing the generator (or an exception in it)
    closes the prefetcher, so no thread outlives it."""
    prefetch = OrderedPrefetch(fetch, keys, max_in_flight)
    try:
        yield from prefetch
    finally:
        prefetch.close()


def put_unless_stopped(q: queue.Queue, item: t.Any, stop: threading.Event,
                       poll: float = 0.2) -> bool:
    """Put `item` into the bounded queue `q`, waiting while it is full; False (item
    dropped) once `stop` is set: a read-ahead thread's hand-over that never blocks past
    its reader's close()."""
    while not stop.is_set():
        try:
            q.put(item, timeout=poll)
            return True
        except queue.Full:
            continue
    return False


__all__ = ["MAX_IN_FLIGHT", "OrderedPrefetch", "ordered_prefetch", "put_unless_stopped"]
