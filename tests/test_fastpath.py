"""The fast per-record path gives the SDK's own output (values, order, selection, maps)."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import decimal
import io
import json
import logging
import math
import signal
import subprocess
import sys
import time
import typing as t

import pytest
from helpers import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.helpers._typing import conform_record_data_types
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.io_base import SingerWriter

from tap_analytics.common.fastpath import (
    FastRecordsMixin,
    FastSingerWriter,
    compile_conformer,
)

UTC = dt.timezone.utc

SCHEMA = th.PropertiesList(
    th.Property("id", th.IntegerType, required=True),
    th.Property("name", th.StringType),
    th.Property("ts", th.DateTimeType),
    th.Property("day", th.DateType),
    th.Property("flag", th.BooleanType),
    th.Property("ratio", th.NumberType),
    th.Property("big", th.IntegerType),
    th.Property("blob", th.StringType),
    th.Property(
        "nested",
        th.ObjectType(
            th.Property("title", th.StringType),
            th.Property("at", th.DateTimeType),
            th.Property("ok", th.BooleanType),
            th.Property("deep", th.ObjectType(th.Property("n", th.NumberType))),
        ),
    ),
    th.Property(
        "items",
        th.ArrayType(
            th.ObjectType(th.Property("k", th.StringType), th.Property("v", th.NumberType))
        ),
    ),
    th.Property("tags", th.ArrayType(th.StringType)),
    th.Property("free", th.ObjectType()),  # an object without properties
).to_dict()


def varied_records() -> list[dict]:
    """Records covering every conformance rule (returned fresh: conforming mutates)."""
    return [
        {"id": 1, "name": "plain", "ts": "2024-01-01T00:00:00.000000+00:00", "flag": True,
         "ratio": 0.5, "big": 2**70, "tags": ["a", "b"]},
        {"id": 2, "name": None, "ts": None, "flag": None, "ratio": None, "nested": None,
         "items": None, "tags": None},
        {"id": 3, "name": "ünïcødé ✓ \u2028 \"quoted\" \\ 𝄞", "ratio": float("nan"),
         "big": -(2**64)},
        {"id": 4, "ratio": float("inf"), "ts": dt.datetime(2024, 5, 6, 7, 8, 9, 123, UTC),
         "day": dt.date(2024, 2, 29)},
        {"id": 5, "ts": dt.datetime(2024, 5, 6, 7, 8, 9)},  # naive: UTC in the SDK
        {"id": 6, "flag": 0, "blob": b"\x00\xff", "ratio": decimal.Decimal("1.10")},
        {"id": 7, "flag": "false", "unknown": 1, "other_unknown": {"x": 1}},
        {"id": 8, "nested": {"title": "t", "at": dt.datetime(2020, 1, 1, tzinfo=UTC),
                             "ok": 1, "extra": 2, "deep": {"n": float("-inf"), "zz": 0}}},
        {"id": 9, "items": [{"k": "a", "v": 1.5}, {"k": "b", "v": float("nan"), "q": 1},
                            "not-an-object", None]},
        {"id": 10, "free": {"any": [1, 2, {"x": None}], "when": "2024"},
         "tags": ["x", None, 3]},
        {"id": 11, "ratio": 1e16, "big": 0, "name": ""},
        {"id": 12, "nested": {"title": "only plain", "deep": {"n": 2}}, "items": []},
        {"id": 13, "name": json.loads('"cut emoji \\ud83d here"'), "ratio": 2.5},
    ]


def sdk_conform(record: dict, schema: dict = SCHEMA) -> dict:
    return conform_record_data_types(
        stream_name="s", record=record, schema=schema,
        level=TypeConformanceLevel.RECURSIVE, logger=logging.getLogger("test"),
    )


def nan_safe(value: t.Any) -> t.Any:
    """NaN != NaN: map it to a marker so values compare equal."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: nan_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_safe(v) for v in value]
    return value


def test_conformer_equals_sdk_on_varied_records() -> None:
    conform = compile_conformer(SCHEMA)
    for fast_in, sdk_in in zip(varied_records(), varied_records(), strict=True):
        unmapped: list[str] = []
        fast = conform(fast_in, unmapped)
        expected = sdk_conform(sdk_in)
        assert nan_safe(fast) == nan_safe(expected), fast_in
        assert list(fast) == list(expected)  # same key order
        # serialised, the types match too (True vs 1, "x" vs b"x" ...)
        assert json.dumps(nan_safe(fast), default=str) == json.dumps(
            nan_safe(expected), default=str)


def test_floats_as_is_encodes_to_the_same_json_as_the_sdk() -> None:
    from singer_sdk.singerlib.json import serialize_json

    from tap_analytics.common.writer import make_encoder

    conform = compile_conformer(SCHEMA, floats_as_is=True)
    encoder = make_encoder()
    for fast_in, sdk_in in zip(varied_records(), varied_records(), strict=True):
        out = conform(fast_in, [])
        try:
            fast = json.loads(encoder.encode(out))
        except UnicodeEncodeError:  # the lone surrogate: the writer falls back likewise
            fast = json.loads(serialize_json(out))
        assert fast == json.loads(serialize_json(sdk_conform(sdk_in))), fast_in
    nan_record = {"id": 1, "ratio": float("nan")}
    assert conform(nan_record, []) is nan_record  # left alone: msgspec writes null


def test_conformer_reports_unmapped_paths_and_keeps_additional() -> None:
    closed = copy.deepcopy(SCHEMA)
    closed["properties"]["nested"]["additionalProperties"] = False
    record = {"id": 1, "zz": 1, "nested": {"title": "a", "qq": 2}}
    unmapped: list[str] = []
    out = compile_conformer(closed)(copy.deepcopy(record), unmapped)
    assert out == {"id": 1, "nested": {"title": "a"}}
    assert out == sdk_conform(copy.deepcopy(record), closed)
    assert unmapped == ["zz", "nested.qq"]
    open_schema = {**SCHEMA, "additionalProperties": True}
    assert compile_conformer(open_schema)({"id": 1, "zz": 1}, []) == {"id": 1, "zz": 1}


def test_conformer_returns_plain_records_uncopied_and_rebuilds_changed_ones() -> None:
    conform = compile_conformer(SCHEMA)
    plain = {"id": 1, "name": "x", "nested": {"title": "y"}, "tags": ["a"]}
    assert conform(plain, []) is plain
    changed = {"id": 1, "flag": 1}
    out = conform(changed, [])
    assert out == {"id": 1, "flag": True} and changed == {"id": 1, "flag": 1}


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.datetimes(timezones=st.sampled_from([UTC, None])), st.dates(), st.binary(max_size=4),
)
any_value = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["title", "at", "ok", "deep", "n", "k", "v", "x"]),
                        inner, max_size=4),
    ),
    max_leaves=8,
)
records = st.dictionaries(
    st.sampled_from([*SCHEMA["properties"], "unknown"]), any_value, max_size=8
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_conformer_equals_sdk_on_generated_records(record: dict) -> None:
    try:
        expected: t.Any = sdk_conform(copy.deepcopy(record))
    except (KeyError, TypeError) as exc:  # the SDK itself fails on this input
        expected = type(exc)
    got = compile_conformer(SCHEMA)(copy.deepcopy(record), [])
    if expected in (KeyError, TypeError):
        return
    assert nan_safe(got) == nan_safe(expected)
    assert json.dumps(nan_safe(got), default=repr) == json.dumps(
        nan_safe(expected), default=repr)


# --------------------------------------------------------------------------------------
# Whole tap: fast path + FastSingerWriter vs the stock SDK path + SingerWriter
# --------------------------------------------------------------------------------------
class _Rows(Stream):
    name = "rows"
    primary_keys = ("id",)
    replication_key = None
    schema = SCHEMA

    def get_records(self, context: t.Any) -> t.Iterable[dict]:
        yield from varied_records()


class FastRows(FastRecordsMixin, _Rows):
    pass


class StockRows(_Rows):
    pass


class IncrementalRows(FastRecordsMixin, Stream):
    name = "inc"
    primary_keys = ("id",)
    replication_key = "id"
    is_sorted = True
    schema = th.PropertiesList(th.Property("id", th.IntegerType, required=True),
                               th.Property("v", th.StringType)).to_dict()
    STATE_MSG_FREQUENCY = 3
    count = 10

    def get_records(self, context: t.Any) -> t.Iterable[dict]:
        for i in range(1, self.count + 1):
            yield {"id": i, "v": "x" * 10}


def make_tap(stream_cls: type, writer: type, config: dict | None = None,
             catalog: dict | None = None) -> Tap:
    class _Tap(Tap):
        name = "tap-fastpath-test"
        config_jsonschema = th.PropertiesList(th.Property("x", th.StringType)).to_dict()
        message_writer_class = writer

        def discover_streams(self) -> list[Stream]:
            return [stream_cls(self)]

    return _Tap(config=config or {}, catalog=catalog, parse_env_config=False,
                validate_config=False)


def run_binary(tap: Tap) -> list[dict]:
    """Sync with a real byte stdout (TextIOWrapper over BytesIO), like a pipe."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=False)
    with contextlib.redirect_stdout(out):
        tap.sync_all()
        out.flush()
    # str.splitlines() also breaks on U+2028/U+2029/U+0085: they must arrive escaped
    return [json.loads(line) for line in raw.getvalue().decode("utf-8").splitlines()]


def comparable(messages: list[dict]) -> list[dict]:
    result = []
    for msg in messages:
        msg = dict(msg)
        if msg["type"] == "RECORD":
            stamp = msg.pop("time_extracted")
            parsed = dt.datetime.fromisoformat(stamp)
            assert parsed.utcoffset() == dt.timedelta(0)
            assert stamp.endswith("+00:00")
        result.append(msg)
    return result


def test_fast_tap_output_equals_stock_sdk_output() -> None:
    fast = run_binary(make_tap(FastRows, FastSingerWriter))
    stock = run_binary(make_tap(StockRows, SingerWriter))
    assert [m["type"] for m in fast].count("RECORD") == len(varied_records())
    assert comparable(fast) == comparable(stock)


def test_text_stdout_gets_the_same_messages() -> None:
    tap = make_tap(FastRows, FastSingerWriter)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        tap.sync_all()
    text = [json.loads(line) for line in buf.getvalue().splitlines()]
    stock = run_binary(make_tap(StockRows, SingerWriter))
    assert comparable(text) == comparable(stock)


@pytest.mark.parametrize(
    "config",
    [
        {"stream_maps": {"rows": {"name": None, "id_x2": "id * 2"}}},
        {"stream_maps": {"rows": {"__filter__": "id % 2 == 0"}}},
        {"stream_maps": {"rows_copy": {"__source__": "rows"}}},
        {"flattening_enabled": True, "flattening_max_depth": 2},
    ],
    ids=["map", "filter", "alias", "flatten"],
)
def test_stream_maps_and_flattening_fall_back_to_the_sdk(config: dict) -> None:
    fast = run_binary(make_tap(FastRows, FastSingerWriter, config=config))
    stock = run_binary(make_tap(StockRows, SingerWriter, config=config))
    assert comparable(fast) == comparable(stock)
    records = [m["record"] for m in fast if m["type"] == "RECORD"]
    assert records
    if "stream_maps" in config and "rows" in config["stream_maps"]:
        if "id_x2" in config["stream_maps"]["rows"]:
            assert all(r["id_x2"] == 2 * r["id"] and "name" not in r for r in records)
        else:
            assert all(r["id"] % 2 == 0 for r in records)
    if config.get("flattening_enabled"):
        assert any("nested__title" in r for r in records)


def test_deselected_properties_are_removed() -> None:
    catalog = make_tap(FastRows, FastSingerWriter).catalog_dict
    for entry in catalog["streams"]:
        for md in entry["metadata"]:
            if md["breadcrumb"] in (["properties", "name"], ["properties", "nested"]):
                md["metadata"]["selected"] = False
    fast = run_binary(make_tap(FastRows, FastSingerWriter, catalog=copy.deepcopy(catalog)))
    stock = run_binary(make_tap(StockRows, SingerWriter, catalog=copy.deepcopy(catalog)))
    recs = [m["record"] for m in fast if m["type"] == "RECORD"]
    assert recs and all("name" not in r and "nested" not in r for r in recs)
    assert comparable(fast) == comparable(stock)


# --------------------------------------------------------------------------------------
# The writer: when bytes reach stdout
# --------------------------------------------------------------------------------------
class _Sink(io.BytesIO):
    """A binary stdout that records the bytes of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []
        self.on_write: t.Callable[[bytes], None] | None = None  # runs inside a write

    def write(self, data: t.Any) -> int:
        self.chunks.append(bytes(data))
        if self.on_write is not None:
            self.on_write(bytes(data))
        return super().write(data)


def sink_stdout() -> tuple[_Sink, io.TextIOWrapper]:
    sink = _Sink()
    return sink, io.TextIOWrapper(sink, encoding="utf-8")


def test_records_reach_stdout_only_with_the_state_that_covers_them() -> None:
    tap = make_tap(IncrementalRows, FastSingerWriter)
    sink, out = sink_stdout()
    with contextlib.redirect_stdout(out):
        tap.sync_all()
    assert sink.chunks, "nothing written"
    for chunk in sink.chunks:
        lines = [json.loads(x) for x in chunk.splitlines()]
        # every write ends with a STATE: no records trail the last STATE
        assert lines[-1]["type"] == "STATE", lines[-1]
        # a STATE never precedes a record it covers
        seen = 0
        for msg in lines:
            if msg["type"] == "RECORD":
                seen = msg["record"]["id"]
            elif msg["type"] == "STATE":
                bookmark = msg["value"]["bookmarks"]["inc"].get("replication_key_value")
                assert bookmark is None or bookmark <= seen or seen == 0
    records = [json.loads(x) for c in sink.chunks for x in c.splitlines()
               if b'"RECORD"' in x]
    assert [r["record"]["id"] for r in records] == list(range(1, 11))


def test_buffer_is_bounded() -> None:
    class Many(IncrementalRows):
        STATE_MSG_FREQUENCY = 10**9  # no STATE until the end
        count = 2000

    tap = make_tap(Many, FastSingerWriter)
    tap.message_writer.max_buffer_bytes = 4096
    sink, out = sink_stdout()
    with contextlib.redirect_stdout(out):
        tap.sync_all()
    assert len(sink.chunks) > 10
    # each size-bound write holds whole lines only, and stays near the bound
    for chunk in sink.chunks:
        assert chunk.endswith(b"\n")
        assert len(chunk) < 4096 + 200
    ids = [json.loads(x)["record"]["id"] for c in sink.chunks for x in c.splitlines()
           if b'"RECORD"' in x]
    assert ids == list(range(1, 2001))


def test_unflushed_records_stay_buffered_until_stream_end() -> None:
    writer = FastSingerWriter()
    sink, out = sink_stdout()
    with contextlib.redirect_stdout(out):
        writer.write_line(b'{"type":"RECORD"}\n')
        assert sink.chunks == [] and writer.pending_bytes() > 0
        writer.write_line(b'{"type":"STATE","value":{}}\n', final=True)
    assert sink.chunks == [b'{"type":"RECORD"}\n{"type":"STATE","value":{}}\n']


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "\u2028", "\u2029", "\u0085", "\u2014", "\u201c", "é",
                                 "\u20ac", '"', "\n"]), max_size=40))
def test_escape_line_breakers_equals_the_plain_replacements(parts: list[str]) -> None:
    from tap_analytics.common.writer import escape_line_breakers

    data = "".join(parts).encode("utf-8")
    expected = (data.replace("\u2028".encode(), b"\\u2028")
                .replace("\u2029".encode(), b"\\u2029").replace("\u0085".encode(), b"\\u0085"))
    assert bytes(escape_line_breakers(bytearray(data))) == expected
    assert bytes(escape_line_breakers(data)) == expected


def test_a_signal_inside_a_stdout_write_lets_it_finish_then_writes_the_state() -> None:
    """SIGTERM while stdout's pipe holds a write up: the handler (tap._handle_termination)
    adds the SDK's last STATE and asks for the exit; the write finishes whole, the STATE
    follows it, then the exit. Raising SystemExit inside the write cut the line and lost
    that STATE."""
    writer = FastSingerWriter()
    sink, out = sink_stdout()
    calls = []

    def handler_inside_write(data: bytes) -> None:
        if not calls:  # the first write is interrupted by the "signal"
            calls.append(data)
            writer.write_line(b'{"type":"STATE","value":{"last":true}}\n', final=True)
            assert writer.writing
            writer.exit_after_write(143, "interrupted by signal 15")

    sink.on_write = handler_inside_write
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        writer.write_line(b'{"type":"RECORD","record":{"id":1}}\n')
        writer.write_line(b'{"type":"STATE","value":{}}\n', final=True)
    assert exited.value.code == 143
    lines = b"".join(sink.chunks).splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["RECORD", "STATE", "STATE"]
    assert json.loads(lines[-1])["value"] == {"last": True}
    assert not writer.writing


_SIGNAL_MID_WRITE = r"""
import signal, sys
from tap_analytics.common.writer import FastSingerWriter
writer = FastSingerWriter(max_buffer_bytes=1 << 30)
signal.signal(signal.SIGTERM, lambda *a: print("handler ran", file=sys.stderr, flush=True))
for i in range(100_000):  # ~6 MB in one write: the pipe (64 KiB) holds it up
    writer.write_line(b'{"type":"RECORD","stream":"s","record":{"id":%d}}\n' % i)
print("writing", file=sys.stderr, flush=True)
writer.write_line(b'{"type":"STATE","value":{"n":100000}}\n', final=True)
"""


def test_a_signal_handler_returning_inside_a_blocked_write_loses_no_byte() -> None:
    """CPython's BufferedWriter.write returns early, with the count written so far, when a
    signal handler runs inside a write that a full pipe holds up and returns (the tap's
    SIGTERM handler does): the writer writes the rest, so the output is every line whole
    (it was cut after 64 KiB, mid-line, with the STATE lost)."""
    proc = subprocess.Popen([sys.executable, "-c", _SIGNAL_MID_WRITE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stderr.readline() == b"writing\n"
        time.sleep(0.3)  # the pipe is full: the write is blocked
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr.readline() == b"handler ran\n"
        out = proc.stdout.read()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    lines = out.splitlines()
    assert len(lines) == 100_001 and out.endswith(b"\n")
    assert [json.loads(x)["record"]["id"] for x in lines[:-1]] == list(range(100_000))
    assert json.loads(lines[-1]) == {"type": "STATE", "value": {"n": 100000}}
