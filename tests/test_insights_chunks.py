"""WindowReader.chunks: blocks of CSV rows, each row once, across re-reads (unit level).

The files come from an in-memory stand-in for the SFTP session (the behaviour over real
SFTP is in test_insights_sync.py / test_insights_rows.py); what is under test here is
the block logic: blank lines, the skip after a re-read, a short row, a truncated gzip.
"""

from __future__ import annotations

import csv
import gzip
import io
import typing as t

import pytest

from tap_analytics.common.errors import TapAnalyticsError
from tap_analytics.insights import download
from tap_analytics.insights.download import WindowReader

COLUMNS = ["TimeStamp", "FlowId"]


def _gz(lines: list[str]) -> bytes:
    return gzip.compress("".join(lines).encode())


def _rows(n: int, start: int = 0) -> list[str]:
    return [f"2024-01-01T00:00:{i % 60:02d}Z,f{i}\r\n" for i in range(start, start + n)]


class _Session:
    """Serves a list of byte strings for one path, one per read (the next read gets the
    next version; the last one repeats)."""

    def __init__(self, versions: list[bytes]) -> None:
        self.versions = versions
        self.opened = 0

    def open_stream(self, path: str) -> t.BinaryIO:
        data = self.versions[min(self.opened, len(self.versions) - 1)]
        self.opened += 1
        return io.BytesIO(data)

    def close(self) -> None:
        pass


def _reader(session: _Session, monkeypatch: pytest.MonkeyPatch) -> WindowReader:
    monkeypatch.setattr(download.time, "sleep", lambda s: None)  # the retry back-off
    reader = WindowReader("insights_x", {}, COLUMNS, max_tries=3)
    reader._session = session  # type: ignore[assignment]
    return reader


def _flowids(chunks: t.Iterable[download.RowChunk]) -> list[tuple[int, str]]:
    return [(c.first + i, row[1]) for c in chunks for i, row in enumerate(c.rows)]


def test_blank_lines_only_blocks_and_row_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["TimeStamp,FlowId\r\n", *_rows(3), *(["\r\n"] * 25), *_rows(4, start=3)]
    reader = _reader(_Session([_gz(lines)]), monkeypatch)
    chunks = list(reader.chunks(["a.csv.gz"], size=5))
    assert _flowids(chunks) == [(i + 1, f"f{i}") for i in range(7)]
    assert all(c.rows for c in chunks)
    assert [c.line for c in chunks] == [c.first for c in chunks]  # one file


def test_a_truncated_file_is_read_again_and_rows_go_out_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _gz(["TimeStamp,FlowId\r\n", *_rows(5000)])
    session = _Session([whole[: len(whole) // 2], whole])
    reader = _reader(session, monkeypatch)
    got = _flowids(reader.chunks(["a.csv.gz"], size=700))
    assert got == [(i + 1, f"f{i}") for i in range(5000)]
    assert session.opened == 2


def test_a_short_row_ends_the_file_after_the_rows_before_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["TimeStamp,FlowId\r\n", *_rows(7), "2024-01-01T00:00:00Z\r\n", *_rows(3)]
    reader = _reader(_Session([_gz(lines)]), monkeypatch)
    got: list[tuple[int, str]] = []
    with pytest.raises(TapAnalyticsError, match=r"row 8: 1 values for 2 columns"):
        for chunk in reader.chunks(["a.csv.gz"], size=5):
            got.extend(_flowids([chunk]))
    assert got == [(i + 1, f"f{i}") for i in range(7)]


def test_a_file_that_never_reads_gives_up_after_max_tries(
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = io.StringIO(newline="")
    csv.writer(text).writerows([COLUMNS, *[["2024-01-01T00:00:00Z", f"g{i}"] for i in range(4)]])
    session = _Session([text.getvalue().encode()])  # not gzip: every read fails
    reader = _reader(session, monkeypatch)
    with pytest.raises(TapAnalyticsError, match="truncated or corrupt.*gave up after 3 tries"):
        list(reader.chunks(["a.csv.gz"]))
    assert session.opened == 3
