"""A gzip stream decompressed on a helper thread, a bounded number of blocks ahead.

zlib releases the GIL while it inflates (and while it computes the CRC of a large
block), so on a machine with a spare core the decompression of the next blocks runs while
the reader's thread parses and emits the current ones. At most `ahead` blocks of `block`
bytes wait in the queue: memory stays flat whatever the file size.

Errors of the compressed stream (EOFError, gzip.BadGzipFile, zlib.error, a dropped
connection) are raised in the reader's thread, from the read that reaches them, as the
same exception objects: callers handle them as if they had decompressed themselves.
"""

from __future__ import annotations

import gzip
import io
import queue
import threading
import typing as t

from tap_analytics.common.prefetch import put_unless_stopped

#: Decompressed bytes per block (a failure loses at most the block being filled: those
#: rows are read again) and blocks queued ahead (1 MiB).
BLOCK = 64 * 1024
AHEAD = 16


class GunzipAhead(io.RawIOBase):
    """The decompressed bytes of `raw` (a binary stream of gzip data), read ahead."""

    def __init__(self, raw: t.BinaryIO, *, block: int = BLOCK, ahead: int = AHEAD,
                 buffer_size: int = 1 << 20) -> None:
        super().__init__()
        self.raw = raw
        self.block = block
        buffered = io.BufferedReader(raw, buffer_size)  # type: ignore[arg-type]
        self._source = gzip.GzipFile(fileobj=buffered, mode="rb")
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(max(1, ahead))
        self._stop = threading.Event()
        self._pending = b""
        self._done = False
        self._helper = threading.Thread(target=self._inflate, daemon=True,
                                        name="insights-gunzip-ahead")
        self._helper.start()

    def readable(self) -> bool:
        return True

    def _put(self, item: bytes | BaseException) -> bool:
        """Queue an item for the reader; False when the stream was closed meanwhile."""
        return put_unless_stopped(self._queue, item, self._stop)

    def _inflate(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(self.block)
                if not self._put(data) or not data:
                    return  # b"": the end (after the gzip trailer was checked)
        except BaseException as exc:  # raised in the reader's thread
            self._put(exc)

    def read(self, size: int | None = -1) -> bytes:
        """The next decompressed bytes: up to `size` (all of the current block when
        size is negative or None); b"" at the end."""
        if not self._pending:
            if self._done:
                return b""
            item = self._next()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
                return b""
            self._pending = item
        if size is None or size < 0 or size >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def readinto(self, buffer: t.Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _next(self) -> bytes | BaseException:
        # Bounded: the helper always ends with an item (data, b"" or an error) unless
        # the stream below hangs, which its own timeout turns into an error.
        while True:
            try:
                return self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self._helper.is_alive() and self._queue.empty():
                    return EOFError("the decompression stopped")

    def close(self) -> None:
        if self.closed:
            return
        self._stop.set()
        if self._helper.is_alive() and threading.current_thread() is not self._helper:
            self._helper.join(timeout=10)
        try:
            self.raw.close()
        finally:
            super().close()
