"""columnar.py and batchfiles.py alone: Arrow decoding and JSON Lines against the row path.

The reference is the row path's own code: `parsers.iter_csv_gz` + `download.to_datetime`
(the values a RECORD message carries) and `json` for the JSON Lines text.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import typing as t

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_analytics.common.errors import TapAnalyticsError
from tap_analytics.insights import reports
from tap_analytics.insights.batchfiles import json_lines
from tap_analytics.insights.columnar import (
    ReportDecoder,
    complete,
    convert_times,
    output_schema,
)
from tap_analytics.insights.download import to_datetime
from tap_analytics.insights.parsers import iter_csv_gz

COLUMNS = ["TimeStamp", "FlowId", "StartTime", "ExitReason"]


def csv_gz(rows: list[list[str]], *, header: list[str] | None = None, bom: bool = False,
           newline: str = "\r\n") -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator=newline)
    writer.writerow(header or COLUMNS)
    writer.writerows(rows)
    return gzip.compress((("\ufeff" if bom else "") + text.getvalue()).encode())


def row_path(data: bytes, columns: list[str] = COLUMNS) -> list[dict]:
    """What the RECORD path makes of a file (download.WindowReader._read, minus I/O)."""
    rows = iter_csv_gz(io.BytesIO(data))
    header = next(rows)
    out = []
    for row in rows:
        if not row:
            continue
        if len(row) != len(header):  # WindowReader: one clear error
            raise TapAnalyticsError("insights_x", f"{len(row)} values for {len(header)}")
        out.append({reports.column_name(h): to_datetime(v) if h in reports.TIME_FIELDS else v
                    for h, v in zip(header, row)})
    return out


def decoded(data: bytes, *, block_size: int = 1 << 20) -> list[dict]:
    decoder = ReportDecoder("insights_x", COLUMNS, block_size=block_size)
    out: list[dict] = []
    for batch in decoder.batches(gzip.GzipFile(fileobj=io.BytesIO(data)), "f.csv.gz"):
        out += batch.to_pylist()
    return out


TIMES = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"),
    st.integers(10**9, 2 * 10**9).map(str),
    st.integers(10**12, 2 * 10**12).map(str),
    st.sampled_from(["", " ", " 2024-01-01T00:00:00Z ", "2024-02-29 23:59:59",
                     "2024-01-01T10:00:00+02:00", "2024-01-01T00:00:00.1234567Z"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(TIMES, min_size=1, max_size=20))
def test_convert_times_equals_to_datetime(values: list[str]) -> None:
    try:
        expected = [to_datetime(v) for v in values]
    except ValueError:
        with pytest.raises(ValueError):
            convert_times(pa.array(values, pa.string()))
        return
    assert convert_times(pa.array(values, pa.string())).to_pylist() == expected


def test_a_bad_date_is_found_like_the_row_path() -> None:
    values = ["2024-01-01T00:00:00Z", "2023-02-29T00:00:00Z"]
    with pytest.raises(ValueError):
        to_datetime(values[1])
    data = csv_gz([[values[0], "f", "", "x"], [values[1], "f", "", "x"]])
    with pytest.raises(TapAnalyticsError, match=r"f.csv.gz row 2: timestamp '2023-02-29"):
        decoded(data)


CELLS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["2024-01-01T00:00:00Z", "1704067200", ""]),
                          CELLS, st.sampled_from(["", "2024-01-01 01:02:03"]), CELLS),
                min_size=0, max_size=30),
       st.booleans(), st.sampled_from(["\r\n", "\n"]))
def test_decoder_equals_row_path(rows: list[tuple], bom: bool, newline: str) -> None:
    data = csv_gz([list(r) for r in rows], bom=bom, newline=newline)
    try:
        expected = row_path(data)
    except TapAnalyticsError:  # e.g. a bare \r the csv writer left unquoted
        with pytest.raises(TapAnalyticsError):
            decoded(data, block_size=256)
        return
    assert decoded(data, block_size=256) == expected


def test_quoted_newlines_blank_lines_and_empty_strings() -> None:
    body = ('TimeStamp,FlowId,StartTime,ExitReason\n'
            '2024-01-01T00:00:00Z,"a\nb","",""\n\n'
            '2024-01-01T00:00:01Z,"say ""hi""",,x\n').encode()
    data = gzip.compress(body)
    got = decoded(data)
    assert got == row_path(data)
    assert got[0]["flow_id"] == "a\nb" and got[0]["exit_reason"] == ""
    assert got[0]["start_time"] is None


def test_header_in_another_order_is_read_by_name() -> None:
    header = ["ExitReason", "StartTime", "FlowId", "TimeStamp"]
    data = csv_gz([["x", "", "f", "2024-01-01T00:00:00Z"]], header=header)
    assert decoded(data) == row_path(data)


def test_changed_header_is_one_clear_error() -> None:
    data = csv_gz([["2024-01-01T00:00:00Z", "f", "", "x"]],
                  header=["TimeStamp", "FlowId", "StartTime", "ExitReasonRenamed"])
    with pytest.raises(TapAnalyticsError, match="missing: ExitReason; unexpected: "
                       "ExitReasonRenamed"):
        decoded(data)


def test_a_short_row_is_one_clear_error() -> None:
    data = gzip.compress(b"TimeStamp,FlowId,StartTime,ExitReason\n2024-01-01T00:00:00Z,f\n")
    with pytest.raises(TapAnalyticsError, match="f.csv.gz: unreadable CSV"):
        decoded(data)


def test_empty_file_and_header_only_give_no_rows() -> None:
    assert decoded(gzip.compress(b"")) == []
    assert decoded(csv_gz([])) == []


def test_invalid_utf8_is_replaced_as_the_row_path_does() -> None:
    body = b"TimeStamp,FlowId,StartTime,ExitReason\n2024-01-01T00:00:00Z,f\xff,,x\n"
    data = gzip.compress(body)
    assert decoded(data) == row_path(data)
    assert decoded(data)[0]["flow_id"] == "f\ufffd"


def test_complete_numbers_rows_after_first_row() -> None:
    data = csv_gz([["2024-01-01T00:00:00Z", "f", "", str(i)] for i in range(5)])
    decoder = ReportDecoder("insights_x", COLUMNS)
    batch = next(decoder.batches(gzip.GzipFile(fileobj=io.BytesIO(data)), "f"))
    full = complete(batch, window_start="ws", window_end="we", first_row=10,
                    source_file="p", schema=output_schema(COLUMNS))
    rows = full.to_pylist()
    assert [r["row_number"] for r in rows] == [11, 12, 13, 14, 15]
    assert {(r["window_start"], r["window_end"], r["source_file"]) for r in rows} == {
        ("ws", "we", "p")}
    assert list(rows[0]) == ["window_start", "window_end", "row_number", "source_file",
                             "timestamp", "flow_id", "start_time", "exit_reason"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.text(max_size=20)),
                          st.integers(0, 2**53)), min_size=1, max_size=20))
def test_json_lines_are_the_json_of_each_row(rows: list[tuple[t.Any, int]]) -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.int64())],
        names=["text", "n"])
    lines = json_lines(batch).to_pybytes().decode().split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == [{"text": a, "n": b} for a, b in rows]


def test_json_lines_with_constant_and_plain_columns() -> None:
    values = ['a"b', "c\\d", "é\u2028", "tab\there", None, ""]
    n = len(values)
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["w s"] * n), pa.array(list(range(1, n + 1)), pa.int64()),
         pa.array(values, pa.string()),
         pa.array(["2024-01-01T00:00:00.000000+00:00"] * (n - 1) + [None], pa.string())],
        names=["window_start", "row_number", "text", "timestamp"])
    text = json_lines(batch, constant=("window_start",), plain=("timestamp",))
    rows = [json.loads(line) for line in text.to_pybytes().decode().split("\n")[:-1]]
    assert rows == batch.to_pylist()
    assert list(rows[0]) == ["window_start", "row_number", "text", "timestamp"]


def test_a_bad_date_in_a_later_block_names_its_row_in_the_file() -> None:
    rows = [[f"2024-01-01T00:00:{i % 60:02d}Z", "f" * 50, "", "x"] for i in range(400)]
    rows[357][0] = "2023-02-29T00:00:00Z"
    data = csv_gz(rows)
    decoder = ReportDecoder("insights_x", COLUMNS, block_size=4096)
    assert len(list(decoder.raw_batches(gzip.GzipFile(fileobj=io.BytesIO(data)), "f"))) > 3
    with pytest.raises(TapAnalyticsError, match=r"f.csv.gz row 358: timestamp '2023-02-29"):
        decoded(data, block_size=4096)


@pytest.mark.parametrize("backend", ["isal", "zlib"])
def test_gzip_members_of_each_batch_are_one_gzip_file(backend: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch is compressed alone (on any encoder thread); the members written one
    after another are one .jsonl.gz that gzip readers read whole."""
    import zlib

    from singer_sdk.helpers._batch import BatchConfig

    from tap_analytics.insights import batchfiles

    if backend == "zlib":
        monkeypatch.setattr(batchfiles, "deflate", zlib)
    else:
        assert batchfiles.deflate.__name__ == "isal.isal_zlib"  # the `batch` extra's
    config = BatchConfig.from_dict({"encoding": {"format": "jsonl", "compression": "gzip"},
                                    "storage": {"root": "file:///tmp"}})
    batches = [pa.RecordBatch.from_arrays(
        [pa.array([f"v{i}-{j}" for j in range(50 * i + 1)]),
         pa.array(list(range(50 * i + 1)), pa.int64())], names=["text", "n"])
        for i in range(4)]
    members = [batchfiles.encode(b, config) for b in batches]
    assert all(m[:2] == b"\x1f\x8b" for m in members)
    text = gzip.decompress(b"".join(members))
    assert text == b"".join(json_lines(b).to_pybytes() for b in batches)
    assert [json.loads(line) for line in text.splitlines()] == [
        row for b in batches for row in b.to_pylist()]


@pytest.mark.parametrize("bad", ["2023-02-29T00:00:00Z", "2024-04-31 10:00:00",
                                 "0000-01-01T00:00:00Z"])
def test_days_that_do_not_exist_fail_as_in_the_row_path(bad: str) -> None:
    """Arrow's cast checks the calendar, except year 0: each is the row path's error."""
    values = ["2024-01-01T00:00:00Z", "1704067200", bad, "2024-01-01 00:00:01"]
    with pytest.raises(ValueError):
        to_datetime(bad)
    with pytest.raises(ValueError) as raised:
        convert_times(pa.array(values, pa.string()))
    assert getattr(raised.value, "index", None) == 2
    ok = [v for v in values if v != bad]
    assert convert_times(pa.array(ok, pa.string())).to_pylist() == [to_datetime(v) for v in ok]


def test_parquet_batches_are_gathered_into_row_groups(tmp_path: t.Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of ~2,000 rows go out as row groups of PARQUET_ROW_GROUP_BYTES of Arrow data
    (one group per batch made 500 groups per 1M rows), in order, every row once."""
    import pyarrow.parquet as pq
    from singer_sdk.helpers._batch import BatchConfig

    from tap_analytics.insights import batchfiles
    from tap_analytics.insights.batchfiles import BatchFile, encode

    config = BatchConfig.from_dict({"encoding": {"format": "parquet", "compression": "none"},
                                    "storage": {"root": tmp_path.as_uri()}})
    schema = pa.schema([pa.field("row_number", pa.int64()), pa.field("v", pa.string())])

    def batch(first: int, n: int) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(
            [pa.array(range(first, first + n), pa.int64()),
             pa.array([f"v{k % 13}" for k in range(n)], pa.string())], schema=schema)

    # a group holds 16 batches: 40 batches are 3 groups (16, 16, 8)
    monkeypatch.setattr(batchfiles, "PARQUET_ROW_GROUP_BYTES", batch(0, 2_001).nbytes * 16)
    out = BatchFile(config, "f.parquet", schema)
    total = 0
    for _ in range(40):
        out.put(encode(batch(total, 2_001), config), 2_001)
        total += 2_001
    path = tmp_path / "f.parquet"
    assert not path.exists()  # nothing visible before the commit
    out.commit()
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == total
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [
        16 * 2_001, 16 * 2_001, 8 * 2_001]
    assert pq.read_table(path).column("row_number").to_pylist() == list(range(total))
