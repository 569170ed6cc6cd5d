"""GunzipAhead: the decompressed bytes, the gzip errors in the reader's thread, a bound."""

from __future__ import annotations

import gzip
import io
import os
import threading
import zlib

import pytest

from tap_analytics.insights.gunzip import GunzipAhead


class _Raw(io.RawIOBase):
    """A raw stream over bytes that records when it is closed."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = io.BytesIO(data)
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        chunk = self.data.read(min(len(buffer), 4096))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def _payload() -> bytes:
    return b"".join(b"%08d,%s\r\n" % (i, os.urandom(8).hex().encode()) for i in range(30_000))


@pytest.mark.parametrize("size", [1, 7, 4096, 100_000, -1])
def test_reads_back_the_decompressed_bytes(size: int) -> None:
    payload = _payload()
    raw = _Raw(gzip.compress(payload))
    stream = GunzipAhead(raw, block=10_000, ahead=2)
    out = bytearray()
    for _ in range(len(payload) + 10):  # bounded
        data = stream.read(size)
        if not data:
            break
        assert size < 0 or len(data) <= size
        out += data
    assert bytes(out) == payload
    assert stream.read() == b""
    stream.close()
    assert raw.closed


@pytest.mark.parametrize("cut", ["truncated", "corrupt"])
def test_gzip_errors_reach_the_reader_after_the_good_bytes(cut: str) -> None:
    payload = _payload()
    data = gzip.compress(payload)
    if cut == "truncated":
        data = data[: len(data) * 6 // 10]
    else:
        data = data[:2000] + bytes(b ^ 0xFF for b in data[2000:2100]) + data[2100:]
    stream = GunzipAhead(_Raw(data), block=10_000, ahead=2)
    got = bytearray()
    with pytest.raises((EOFError, gzip.BadGzipFile, zlib.error)):
        for _ in range(len(payload)):  # bounded
            block = stream.read(-1)
            if not block:
                break
            got += block
    assert payload.startswith(bytes(got))
    stream.close()


def test_memory_is_bounded_and_close_stops_the_helper() -> None:
    payload = _payload()
    raw = _Raw(gzip.compress(payload))
    stream = GunzipAhead(raw, block=1000, ahead=3, buffer_size=8192)
    assert stream.read(10) == payload[:10]
    helpers = [t for t in threading.enumerate() if t.name == "insights-gunzip-ahead"]
    assert helpers
    # the helper stops after a few blocks ahead: it has not read the whole file
    for _ in range(50):
        if stream._queue.full():
            break
        threading.Event().wait(0.02)
    assert stream._queue.full()
    assert raw.data.tell() < len(raw.data.getvalue())
    stream.close()
    for helper in helpers:
        helper.join(timeout=5)
        assert not helper.is_alive()
