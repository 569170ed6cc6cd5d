"""Work started ahead of the stream that will use it, handed over when that stream syncs.

A stream that syncs next asks for its first pages with requests that depend only on the
config and on its own STATE entry, both fixed before the sync starts, so they can go out
while the stream before it is still reading. `Handover` keeps such head starts, one per
stream name: `offer(name, item, check, close)` stores one; the stream takes it when its
sync starts with `take(name, check)`, where `check` is what it would send first now
(e.g. its first request's URL): the item is handed over only when the check is equal,
otherwise it is closed and the stream starts as if nothing had been offered. What nobody
took is closed by `close_all()` (after a failure, or at the end of the source's streams),
so nothing started ahead outlives the sync.

Nothing here knows about HTTP or streams: see alation/paging.py for the use.
"""

from __future__ import annotations

import threading
import typing as t


class Handover:
    """Head starts for the streams that sync next (see module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[t.Any, t.Any, t.Callable[[], None]]] = {}

    def offer(self, name: str, item: t.Any, check: t.Any,
              close: t.Callable[[], None]) -> None:
        """Keep `item` for the stream `name` (an earlier offer for it is closed)."""
        with self._lock:
            earlier = self._items.pop(name, None)
            self._items[name] = (item, check, close)
        if earlier is not None:
            earlier[2]()

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._items

    def take(self, name: str, check: t.Any) -> t.Any | None:
        """The item offered for `name` if it was offered with this `check`; else None
        (an item offered with another check is closed)."""
        with self._lock:
            entry = self._items.pop(name, None)
        if entry is None:
            return None
        item, offered_check, close = entry
        if offered_check == check:
            return item
        close()
        return None

    def close_all(self) -> None:
        """Close every item nobody took (all are closed, the first error is raised)."""
        with self._lock:
            entries, self._items = list(self._items.values()), {}
        errors: list[BaseException] = []
        for _, _, close in entries:
            try:
                close()
            except BaseException as exc:  # every item is closed first
                errors.append(exc)
        if errors:
            raise errors[0]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


__all__ = ["Handover"]
