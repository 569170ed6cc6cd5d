"""The page-at-a-time sync loop (common/fastsync.py) and its page-level helpers: the
conformer's page check and the Alation page normaliser. Each is checked against the
per-record path it stands in for (the SDK's loop, the per-record conformer, the
per-record normaliser)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import typing as t

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from singer_sdk import Stream
from singer_sdk import typing as th
from singer_sdk.io_base import SingerWriter
from test_fastpath import SCHEMA, comparable, make_tap, run_binary
from test_fastpath import records as record_strategy
from test_fastpath_state import EVENT_PATHS, LEAF_SCHEMA, STAMPS, _event, normalize_at_paths

from tap_analytics.alation.timestamps import compile_page_normalizer
from tap_analytics.alation.schemas import EXECUTION_EVENTS
from tap_analytics.common.fastpath import (
    FastRecordsMixin,
    FastSingerWriter,
    compile_conformer,
    fast_path_for,
)
from tap_analytics.common.fastsync import PartialPage, page_loop_applies
from tap_analytics.sandbox.alation import AlationService


# -- the conformer's page check ---------------------------------------------------------
def _unchanged_by_conform(conform: t.Any, rows: list[dict]) -> bool:
    for row in rows:
        unmapped: list[str] = []
        if conform(row, unmapped) is not row or unmapped:
            return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_strategy, max_size=5), st.booleans())
def test_page_check_passes_only_pages_the_conformer_leaves_alone(
        rows: list[dict], floats_as_is: bool) -> None:
    conform = compile_conformer(SCHEMA, floats_as_is=floats_as_is)
    if conform.page_ok(rows):
        assert _unchanged_by_conform(conform, copy.deepcopy(rows))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
              st.floats(allow_nan=True, allow_infinity=True)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "k", "n", "zz"]), inner, max_size=3)),
    max_leaves=6,
)
leaf_rows = st.dictionaries(st.sampled_from(["id", "ok", "leaf", "rows", "unknown"]),
                            json_values, max_size=5)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(leaf_rows, max_size=4))
def test_page_check_with_json_values_passes_only_unchanged_pages(rows: list[dict]) -> None:
    """Values a JSON parser gives (the case where the type check is skipped)."""
    conform = compile_conformer(LEAF_SCHEMA, floats_as_is=True)
    if conform.page_ok(rows, True):
        assert _unchanged_by_conform(conform, copy.deepcopy(rows))


def _events() -> list[dict]:
    return copy.deepcopy(AlationService(seed=7, scale=1).data["execution_event"])


def test_page_check_passes_plain_sandbox_pages_and_fails_each_kind_of_change() -> None:
    conform = compile_conformer(EXECUTION_EVENTS, floats_as_is=True)
    page = _events()
    assert len(page) > 20
    assert any(row.get("result") for row in page)  # nested objects are checked too
    assert conform.page_ok(page, True)
    assert conform.page_ok(page, False)
    with_result = next(i for i, row in enumerate(page) if row.get("result"))
    changes: list[t.Callable[[list[dict]], None]] = [
        lambda p: p[3].update(canceled=1),                           # boolean as number
        lambda p: p[5].update(surprise="x"),                         # unknown key
        lambda p: p[with_result]["result"].update(truncated="no"),   # nested boolean
    ]
    for change in changes:
        changed = copy.deepcopy(page)
        change(changed)
        assert not conform.page_ok(changed, True)
        assert not _unchanged_by_conform(conform, changed)
    # a nested object that allows more properties keeps an unknown one
    changed = copy.deepcopy(page)
    changed[7]["datasource"]["extra"] = 1
    assert conform.page_ok(changed, True)
    assert _unchanged_by_conform(conform, changed)
    # conservative: text where an object belongs passes unchanged, but row by row
    changed = copy.deepcopy(page)
    changed[9]["datasource"] = "Datasource 3"
    assert not conform.page_ok(changed, True)
    assert _unchanged_by_conform(conform, changed)


# -- the page normaliser ------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*STAMPS, None, 17, ""]), max_size=6))
def test_page_normaliser_equals_the_reference_walk_row_by_row(stamps: list[t.Any]) -> None:
    by_page = [_event(stamp) for stamp in stamps]
    by_row = copy.deepcopy(by_page)
    row_error = None
    try:
        for row in by_row:
            normalize_at_paths(row, EVENT_PATHS)
    except ValueError as exc:
        row_error = exc
    try:
        compile_page_normalizer(EVENT_PATHS)(by_page)
    except ValueError as exc:
        assert row_error is not None  # only a page the reference rejects fails
        assert str(exc).startswith("field '")
        return
    assert row_error is None
    assert by_page == by_row


def test_page_normaliser_walks_lists_and_ignores_other_values() -> None:
    paths = {"items": {"at": True}}
    rows = [{"items": [{"at": "2024-01-01 00:00:00.000000Z"}, "text", 3, {"at": None},
                       [{"at": "2024-01-02T00:00:00Z"}]]}, {"items": "x"}, {}]
    compile_page_normalizer(paths)(rows)
    assert rows == [{"items": [{"at": "2024-01-01T00:00:00.000000+00:00"}, "text", 3,
                               {"at": None}, [{"at": "2024-01-02T00:00:00.000000+00:00"}]]},
                    {"items": "x"}, {}]


# -- the page loop against the SDK's loop -----------------------------------------------
PAGED_SCHEMA = th.PropertiesList(
    th.Property("id", th.IntegerType, required=True),
    th.Property("ts", th.DateTimeType),
    th.Property("ok", th.BooleanType),
    th.Property("v", th.StringType),
).to_dict()


def _rows(values: list[t.Any], key: str) -> list[dict]:
    rows = []
    for i, value in enumerate(values):
        row = {"id": i, "ts": None, "ok": i % 3 == 0, "v": "x" * (i % 4)}
        if key is not None:
            row[key] = value
        if i % 5 == 4:
            row["ok"] = 1  # the conformer makes it True: a page that needs a change
        if i == 6:
            row["dropped"] = "unknown key"
        rows.append(row)
    return rows


def _paged_stream(values: list[t.Any], key: str | None, page_size: int, *, fast: bool,
                  check_sorted: bool = True, fail_at: int | None = None,
                  frequency: int = 3) -> type:
    """A stream whose records come in pages (`get_record_pages`); `fail_at`: the id of
    the record its post-processing rejects (the rows before it on the page come out)."""

    def post_process(self: t.Any, row: dict, context: t.Any = None) -> dict | None:
        if row["id"] == fail_at:
            raise ValueError(f"bad record {fail_at}")
        return None if row["id"] == 2 else row  # a dropped record

    def post_process_page(self: t.Any, rows: list[dict], context: t.Any = None) -> list:
        out = []
        for row in rows:
            try:
                kept = post_process(self, row, context)
            except ValueError as exc:
                raise PartialPage(out, exc) from None
            if kept is not None:
                out.append(kept)
        return out

    def get_record_pages(self: t.Any, context: t.Any) -> t.Iterator[list[dict]]:
        rows = _rows(values, key)
        for start in range(0, len(rows), page_size):
            yield copy.deepcopy(rows[start:start + page_size])

    def get_records(self: t.Any, context: t.Any) -> t.Iterator[dict]:
        for page in self.get_record_pages(context):
            yield from page

    body: dict[str, t.Any] = {
        "name": "paged", "primary_keys": ("id",), "replication_key": key,
        "is_sorted": False, "check_sorted": check_sorted, "schema": PAGED_SCHEMA,
        "STATE_MSG_FREQUENCY": frequency, "get_record_pages": get_record_pages,
        "get_records": get_records, "post_process": post_process,
    }
    if fast:
        body["post_process_page"] = post_process_page
    bases = (FastRecordsMixin, Stream) if fast else (Stream,)
    return type("Paged", bases, body)


def _no_signpost(messages: list[dict]) -> list[dict]:
    out = comparable(messages)
    for msg in out:
        for entry in (msg.get("value") or {}).get("bookmarks", {}).values():
            entry.pop("replication_key_signpost", None)
    return out


IDS = [5, 3, 9, 9, 1, None, 12, 7, 2, 11, 4, 4, 13]
STAMP_VALUES = ["2024-01-03T00:00:00.000000+00:00", "2024-01-01T00:00:00.000000+00:00",
                "2024-01-05T00:00:00.000000+00:00", None, "2024-01-02T00:00:00.000000+00:00",
                "2024-01-05T00:00:00.000001+00:00", "2024-01-04T00:00:00.000000+00:00"]


@pytest.mark.parametrize("page_size", [1, 2, 4, 100])
@pytest.mark.parametrize("check_sorted", [True, False])
@pytest.mark.parametrize(("key", "values"),
                         [("id", IDS), ("ts", STAMP_VALUES), (None, IDS)],
                         ids=["id", "ts", "full-table"])
def test_page_loop_writes_what_the_sdk_loop_writes(
        key: str | None, values: list, check_sorted: bool, page_size: int) -> None:
    if key == "id":
        values = [v if v is not None else 0 for v in values]  # ids are never null
    fast_tap = make_tap(_paged_stream(values, key, page_size, fast=True,
                                      check_sorted=check_sorted), FastSingerWriter)
    stream = fast_tap.streams["paged"]
    assert page_loop_applies(stream, None, True, FastRecordsMixin)
    fast = run_binary(fast_tap)
    stock = run_binary(make_tap(_paged_stream(values, key, page_size, fast=False,
                                              check_sorted=check_sorted), SingerWriter))
    kinds = [m["type"] for m in fast]
    assert kinds.count("RECORD") == len(values) - 1  # id 2 is dropped by post_process
    if key is not None:
        assert kinds.count("STATE") >= 3  # every 3 records and at the end
    assert _no_signpost(fast) == _no_signpost(stock)


@pytest.mark.parametrize("page_size", [2, 5])
def test_a_record_failing_post_processing_stops_where_the_sdk_loop_stops(
        page_size: int) -> None:
    outputs = []
    for fast in (True, False):
        tap = make_tap(_paged_stream(STAMP_VALUES + STAMP_VALUES[:2], "ts", page_size,
                                     fast=fast, fail_at=6, frequency=2),
                       FastSingerWriter if fast else SingerWriter)
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="utf-8")
        with contextlib.redirect_stdout(out), pytest.raises(ValueError, match="bad record 6"):
            tap.sync_all()
        if isinstance(tap.message_writer, FastSingerWriter):
            tap.message_writer.flush()
        out.flush()
        outputs.append([json.loads(line) for line in raw.getvalue().decode().splitlines()])
    fast_messages, stock_messages = outputs
    ids = [m["record"]["id"] for m in fast_messages if m["type"] == "RECORD"]
    assert ids == [0, 1, 3, 4, 5]  # everything before the bad record (2 is dropped)
    assert _no_signpost(fast_messages) == _no_signpost(stock_messages)


def test_the_sdk_loop_runs_where_the_page_loop_does_not_apply() -> None:
    paged = _paged_stream(IDS, "id", 4, fast=True)
    tap = make_tap(paged, FastSingerWriter)
    stream = tap.streams["paged"]
    assert page_loop_applies(stream, None, True, FastRecordsMixin)
    assert not page_loop_applies(stream, None, False, FastRecordsMixin)  # get_records of a parent
    assert not page_loop_applies(stream, {"part": 1}, True, FastRecordsMixin)  # a partition
    stream.ABORT_AT_RECORD_COUNT = 5                          # a dry run
    assert not page_loop_applies(stream, None, True, FastRecordsMixin)
    stream.ABORT_AT_RECORD_COUNT = None

    class OwnRecords(paged):  # type: ignore[misc, valid-type]
        def get_records(self, context: t.Any) -> t.Iterator[dict]:
            yield {"id": 1}

    assert not page_loop_applies(make_tap(OwnRecords, FastSingerWriter).streams["paged"],
                                 None, True, FastRecordsMixin)

    class NoFastPath(paged):  # type: ignore[misc, valid-type]
        fast_path_enabled = False

    assert not page_loop_applies(make_tap(NoFastPath, FastSingerWriter).streams["paged"],
                                 None, True, FastRecordsMixin)


# -- a signal handler writing a STATE while a RECORD line is half appended ---------------
class _Interrupt:
    """A value whose encoding (msgspec's enc_hook -> str()) does what the tap's SIGTERM
    handler does: write a STATE (flushing the buffer), then exit."""

    def __init__(self, writer: FastSingerWriter) -> None:
        self.writer = writer

    def __str__(self) -> str:
        self.writer.write_line(b'{"type":"STATE","value":{"at":"signal"}}\n', final=True)
        raise SystemExit(143)


@pytest.mark.parametrize("how", ["page", "record"])
def test_a_state_written_mid_record_drops_the_unfinished_line(how: str) -> None:
    tap = make_tap(_paged_stream(IDS, "id", 4, fast=True), FastSingerWriter)
    stream = tap.streams["paged"]
    writer = tap.message_writer
    assert isinstance(writer, FastSingerWriter)
    fast = fast_path_for(stream)
    assert fast is not None
    rows = [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": _Interrupt(writer)},
            {"id": 4, "v": "d"}]
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        if how == "page":
            fast.write_many(rows, stream._write_conformed_record)
        else:
            for row in rows:
                fast.write(row, stream._write_conformed_record)
    out.flush()
    lines = raw.getvalue().decode().splitlines()
    messages = [json.loads(line) for line in lines]  # every line is whole JSON
    assert [m["type"] for m in messages] == ["RECORD", "RECORD", "STATE"]
    assert [m["record"]["id"] for m in messages[:2]] == [1, 2]


def test_complete_lines_are_not_dropped_by_a_later_flush() -> None:
    tap = make_tap(_paged_stream(IDS, "id", 4, fast=True), FastSingerWriter)
    stream = tap.streams["paged"]
    writer = tap.message_writer
    fast = fast_path_for(stream)
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    with contextlib.redirect_stdout(out):
        fast.write_many([{"id": 1}, {"id": 2}], stream._write_conformed_record)
        assert writer.open_from is None
        writer.write_line(b'{"type":"STATE","value":{}}\n', final=True)
    out.flush()
    kinds = [json.loads(line)["type"] for line in raw.getvalue().decode().splitlines()]
    assert kinds == ["RECORD", "RECORD", "STATE"]
