"""The Insights row path (insights/rows.py) writes what the SDK's per-record loop writes.

Both row paths: Arrow's (insights/arrowrows.py, where pyarrow is installed) and the csv
module's (`row_kind`).

Byte for byte: the same RECORD lines (but `time_extracted`, a clock reading) and the same
STATE lines in the same places, on a multi-window, multi-file report with empty values
and both timestamp styles of the sandbox ("...T...sssZ" and "YYYY-MM-DD HH:MM:SS"), with
deselected properties, and across a dropped SFTP connection and a truncated gzip.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import typing as t
from pathlib import Path

import pytest
from helpers import sync_bytes
from hypothesis import given
from hypothesis import strategies as st
from singer_sdk.io_base import SingerWriter

from tap_analytics.common.fastpath import FastRecordsMixin
from tap_analytics.insights import rows as row_path
from tap_analytics.insights.download import to_datetime
from tap_analytics.insights.streams import InsightsReportStream
from tap_analytics.sandbox import DATA_START, Sandbox

APP = "insights_application_exits"
_STAMP = re.compile(rb',"time_extracted":"[^"]*"')
_FILE = re.compile(rb'"source_file":"[^"]*"')


def _config(sandbox: Sandbox, *, days: int = 4, **extra: t.Any) -> dict:
    config = sandbox.config()
    config.pop("alation", None)
    config.pop("scuba", None)
    block = config["insights"]
    block["reports"] = [r for r in block["reports"] if r["name"] == "application_exits"]
    block.update(extra)
    config["start_date"] = DATA_START.isoformat()
    # day 4 (2024-01-04) has no events: a Failed (empty) window in the middle
    config["end_date"] = (DATA_START + dt.timedelta(days=days)).isoformat()
    return config


def _catalog(config: dict, deselect: t.Sequence[str] = ()) -> dict:
    from tap_analytics.tap import TapAnalytics

    catalog = TapAnalytics(config=config, parse_env_config=False).catalog_dict
    for entry in catalog["streams"]:
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = entry["tap_stream_id"] == APP
            elif md["breadcrumb"][-1] in deselect:
                md["metadata"]["selected"] = False
    return catalog


def _comparable(data: bytes) -> bytes:
    """The output without what depends on the clock: `time_extracted`, the signpost, and
    the report file names (the sandbox names them after the query id and the time): each
    becomes its number in order of appearance."""
    data = _STAMP.sub(b"", data)
    data = re.sub(rb',"replication_key_signpost":"[^"]*"', b"", data)
    names: dict[bytes, bytes] = {}
    return _FILE.sub(lambda m: names.setdefault(m.group(0), b'"source_file":"file-%d"'
                                                % len(names)), data)


def _row_path_and_per_record(config: dict, monkeypatch: pytest.MonkeyPatch,
                             catalog: dict | None = None) -> tuple[bytes, bytes, int]:
    calls = []
    real = row_path.sync_windows

    def counting(stream: t.Any) -> t.Iterator[dict]:
        calls.append(stream.name)
        return real(stream)

    with monkeypatch.context() as patch:
        patch.setattr(row_path, "sync_windows", counting)
        fast = sync_bytes(config, catalog=catalog)
    assert calls == [APP]  # the row path ran
    with monkeypatch.context() as patch:
        patch.setattr(row_path, "window_loop_applies", lambda *a, **k: False)
        slow = sync_bytes(config, catalog=catalog)
    return fast, slow, len(calls)


@pytest.fixture(params=["arrow", "csv"])
def row_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test below runs with both row paths: Arrow's (pyarrow installed, checked to
    run) and the csv module's."""
    from tap_analytics.insights import arrowrows

    arrow = request.param == "arrow"
    monkeypatch.setattr(row_path, "arrow_rows_enabled", arrow)
    real = arrowrows.ArrowWindows.emit_window
    used: list[int] = []

    def counting(self: t.Any, *args: t.Any) -> int:
        used.append(1)
        return real(self, *args)

    monkeypatch.setattr(arrowrows.ArrowWindows, "emit_window", counting)
    yield request.param
    assert bool(used) == arrow, "the Arrow row path ran" if used else "it did not run"


@pytest.fixture
def small_files(fresh_sandbox: t.Callable[..., Sandbox]) -> Sandbox:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.rows_per_file = 37  # several files per window, uneven last one
    return sandbox


def test_row_path_output_equals_the_per_record_loop_byte_for_byte(
        small_files: Sandbox, monkeypatch: pytest.MonkeyPatch, row_kind: str) -> None:
    # the SDK's loop asks for a STATE every 50 records too (its StateWriter drops the
    # unchanged ones): the same calls, the same lines
    monkeypatch.setattr(InsightsReportStream, "STATE_MSG_FREQUENCY", 50)
    config = _config(small_files, days=5)
    fast, slow, _ = _row_path_and_per_record(config, monkeypatch)
    lines = fast.splitlines()
    records = [json.loads(line) for line in lines if line.startswith(b'{"type":"RECORD"')]
    values = [r["record"] for r in records if r["stream"] == APP]
    assert len(values) > 400
    assert len({r["source_file"] for r in values}) > 10  # several files per window
    assert len({r["window_start"] for r in values}) == 4  # one window has no rows
    assert any(r["exit_reason"] == "" for r in values)  # empty values
    assert any(r["start_time"].endswith(":00.000000+00:00") for r in values)
    assert sum(line.startswith(b'{"type":"STATE"') for line in lines) >= 5  # per window
    assert _comparable(fast) == _comparable(slow)
    assert all(b'"time_extracted":"' in line for line in lines
               if line.startswith(b'{"type":"RECORD"'))


def test_row_path_equals_the_stock_sdk_records_and_states(
        small_files: Sandbox, monkeypatch: pytest.MonkeyPatch, row_kind: str) -> None:
    from tap_analytics.tap import TapAnalytics

    config = _config(small_files, days=3)
    fast = [json.loads(line) for line in sync_bytes(config).splitlines()]
    monkeypatch.setattr(FastRecordsMixin, "fast_path_enabled", False)
    monkeypatch.setattr(TapAnalytics, "message_writer_class", SingerWriter)
    stock = [json.loads(line) for line in sync_bytes(config).splitlines()]
    for messages in (fast, stock):
        names: dict[str, str] = {}
        for message in messages:
            message.pop("time_extracted", None)
            record = message.get("record") or {}
            if "source_file" in record:
                record["source_file"] = names.setdefault(record["source_file"],
                                                         f"file-{len(names)}")
            for entry in (message.get("value") or {}).get("bookmarks", {}).values():
                entry.pop("replication_key_signpost", None)
    assert sum(m["type"] == "RECORD" for m in fast) > 200
    assert fast == stock


def test_deselected_properties_are_left_out_as_the_sdk_does(
        small_files: Sandbox, monkeypatch: pytest.MonkeyPatch, row_kind: str) -> None:
    config = _config(small_files, days=2)
    catalog = _catalog(config, deselect=("exit_reason", "source_file", "start_time"))
    fast, slow, _ = _row_path_and_per_record(config, monkeypatch, catalog)
    record = json.loads(next(line for line in fast.splitlines()
                             if line.startswith(b'{"type":"RECORD"')))["record"]
    assert "exit_reason" not in record and "start_time" not in record
    assert "end_time" in record and "row_number" in record
    assert _comparable(fast) == _comparable(slow)


@pytest.mark.parametrize("fault", ["drop_once", "truncate"])
def test_a_dropped_connection_or_truncated_gzip_is_read_again_by_the_row_path(
        fresh_sandbox: t.Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch,
        fault: str, row_kind: str) -> None:
    def run(with_fault: bool) -> bytes:
        sandbox = fresh_sandbox(services=["insights"])
        service = sandbox.insights
        service.rows_override = 30_000  # files of several 32 KiB blocks and chunks
        service.rows_per_file = 12_000
        if with_fault:
            if fault == "drop_once":
                service.drop_once = True
            else:
                service.truncate = "once"
        data = sync_bytes(_config(sandbox, days=1))
        assert (service.drops + service.truncations) == int(with_fault)
        return data

    clean, faulty = run(False), run(True)
    assert _comparable(faulty) == _comparable(clean)
    messages = [json.loads(line) for line in faulty.splitlines()]
    records = [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == APP]
    assert [r["row_number"] for r in records] == list(range(1, 30_001))


# -- the time columns -------------------------------------------------------------------

_VALUES = st.one_of(
    st.sampled_from(["", " ", "2024-01-01T00:00:00Z", "2024-01-01 23:59:59",
                     "2024-02-30T00:00:00.000Z", "2024-01-01T24:00:00Z", "1704067200",
                     "1704067200123", "2024-01-01T00:00:00.1234567Z",
                     "2024-01-01T00:00:00+00:00", "2024-01-01T00:00:00.5+00:00",
                     "2024-01-01T01:00:00+01:00", "2024-01-01T00:00:00.123Z\n",
                     "2024-01-01T00:00:00.000000+00:00", "not a time"]),
    st.builds(lambda d, s, f, z: f"{d.isoformat()}{s}12:34:56{f}{z}",
              st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2100, 1, 1)),
              st.sampled_from(["T", " "]),
              st.sampled_from(["", ".1", ".12", ".123", ".1234", ".12345", ".123456"]),
              st.sampled_from(["", "Z", "+00:00"])),
)


def _reference(values: list[str]) -> list[str | None] | tuple[int, str]:
    out = []
    for i, value in enumerate(values):
        try:
            out.append(to_datetime(value))
        except ValueError:
            return (i, value)
    return out


@given(st.lists(_VALUES, min_size=1, max_size=30))
def test_time_column_equals_to_datetime_value_by_value(values: list[str]) -> None:
    expected = _reference(values)
    try:
        got: t.Any = row_path.convert_time_column(values)
    except row_path.BadTime as bad:
        got = (bad.index, bad.value)
    assert got == expected


def test_time_column_fast_styles() -> None:
    column = ["2024-01-01T00:00:00.123Z", "", "2024-01-31T23:59:59.999Z"]
    assert row_path.convert_time_column(column) == [
        "2024-01-01T00:00:00.123000+00:00", None, "2024-01-31T23:59:59.999000+00:00"]
    assert row_path.convert_time_column(["2024-01-01 10:11:12", "2024-01-02 00:00:00"]) == [
        "2024-01-01T10:11:12.000000+00:00", "2024-01-02T00:00:00.000000+00:00"]
    with pytest.raises(row_path.BadTime) as bad:
        row_path.convert_time_column(["2024-01-01T00:00:00Z", "2024-13-01T00:00:00Z"])
    assert bad.value.index == 1


def test_the_record_counter_counts_every_row(small_files: Sandbox,
                                             caplog: pytest.LogCaptureFixture,
                                             row_kind: str) -> None:
    config = _config(small_files, days=2)
    with caplog.at_level(logging.INFO, logger="singer_sdk.metrics"):
        out = sync_bytes(config, catalog=_catalog(config))
    rows = sum(line.startswith(b'{"type":"RECORD"') for line in out.splitlines())
    counts = [json.loads(r.getMessage().split("METRIC: ", 1)[1]) for r in caplog.records
              if "METRIC: " in r.getMessage() and '"record_count"' in r.getMessage()]
    app = [c["value"] for c in counts if c["tags"]["stream"] == APP]
    assert rows > 100 and app and sum(app) == rows


def test_batch_mode_does_not_take_the_row_path(small_files: Sandbox, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def not_here(stream: t.Any) -> t.Iterator[dict]:
        raise AssertionError("the row path ran in BATCH mode")

    monkeypatch.setattr(row_path, "sync_windows", not_here)
    config = _config(small_files, days=2)
    config["batch_config"] = {"encoding": {"format": "jsonl", "compression": "gzip"},
                              "storage": {"root": tmp_path.as_uri(), "prefix": "b-"}}
    out = sync_bytes(config, catalog=_catalog(config))
    kinds = [json.loads(line)["type"] for line in out.splitlines()]
    assert "BATCH" in kinds and "RECORD" not in kinds
    assert list(tmp_path.glob("b-*"))
