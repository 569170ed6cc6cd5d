"""The per-record fast path: a buffered msgspec message writer and precompiled conformers.

On singer-sdk 0.54.9 about 80% of a record's CPU goes to the SDK's per-record path:
`pop_deselected_record_properties` (a selection walk even when everything is selected),
`_conform_record_data_types` (re-reads the JSON schema for every field of every record),
a `RecordMessage` + `to_dict()`, simplejson encoding and a stdout flush per message.
This module does the same work once per stream where it can and per record where it must:

- `compile_conformer(schema)` turns a stream schema into a closure that gives exactly the
  SDK's `conform_record_data_types` result (RECURSIVE level: date-times, dates, bytes,
  NaN/inf -> null, exclusive booleans, nested objects, uniform lists, unmapped properties
  dropped or kept by `additionalProperties`) but returns the record itself when nothing
  needs to change, which is the common case for JSON-born records.
- The deselection pass is skipped when every property is selected.
- `FastSingerWriter` encodes with msgspec straight into one byte buffer (a RECORD line is
  assembled from a per-stream prefix, the encoded record and a suffix) and writes it to
  `sys.stdout.buffer` in large chunks. See the class for when it flushes and why a killed
  process loses nothing.
- Stream maps, flattening, non-recursive conformance levels or another message writer:
  the stream takes the SDK's own path (`FastRecordsMixin.fast_path_enabled` decides).

SDK internals this relies on (all checked against singer-sdk 0.54.9; tests/test_fastpath.py
compares the output with the SDK's own path and fails if a new SDK changes it):
`Stream._write_record_message`, `Stream._process_record` and
`Stream._increment_stream_state` (overridden in `FastRecordsMixin`, each in one method
with its own note; the last two fall back to the SDK's outside their common case),
`Stream._tap` / `Stream._stream_version` (read in `sdk_internals`),
`StreamStateManager._is_sorted` / `._check_sorted` (read in `fast_increment_state`), the helper
functions of `singer_sdk.helpers._typing` / `_catalog` (called, never patched).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
import typing as t

import msgspec
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.encoding.base import GenericSingerWriter
from singer_sdk.singerlib.encoding.simple import RecordMessage
from singer_sdk.singerlib.json import serialize_json

from tap_analytics.common.fastsync import fast_increment_state, page_loop_applies, sync_pages

if t.TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message

UTC = dt.timezone.utc

#: Write the buffer out when it grows beyond this many bytes even without a STATE
#: (a stream without bookmarks emits no STATE until its end): bounds the memory.
DEFAULT_MAX_BUFFER_BYTES = 8 * 1024 * 1024

#: Value types the SDK's primitive conformer returns unchanged (bool is an int subclass,
#: but type() is exact, so list it too).
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})
#: List item types the SDK's primitive conformer returns unchanged whatever the item
#: schema (other than an exclusive boolean): floats are not (NaN and ±inf become None).
_LIST_PLAIN = frozenset({str, int, bool, type(None)})
#: Marks a property of exclusive boolean type in a compiled conformer.
_BOOL = object()


def _enc_hook(obj: t.Any) -> t.Any:
    """As the SDK's simplejson default: isoformat for date-times, str() for the rest."""
    return obj.isoformat(sep="T") if isinstance(obj, dt.datetime) else str(obj)


#: Characters msgspec writes raw that `str.splitlines()` (and some JSON-lines readers)
#: treat as line breaks. In JSON they can only occur inside strings, where the escaped
#: form means the same; the SDK's simplejson (ensure_ascii) escapes them too.
_LINE_BREAKERS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"),
                  (b"\xc2\x85", b"\\u0085"))


def escape_line_breakers(data: bytes | bytearray) -> bytes | bytearray:
    """JSON text with U+2028, U+2029 and U+0085 written as escapes."""
    # One-byte searches first (memchr, ~30x faster than a two-byte search on long data)
    if (b"\xe2" in data and b"\xe2\x80" in data) or (b"\xc2" in data and b"\xc2\x85" in data):
        for raw, escaped in _LINE_BREAKERS:
            data = data.replace(raw, escaped)
    return data


def _isoformat_datetimes(node: t.Any) -> t.Any:
    if isinstance(node, dt.datetime):
        return node.isoformat(sep="T")
    if isinstance(node, dict):
        return {k: _isoformat_datetimes(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_isoformat_datetimes(v) for v in node]
    return node


def make_encoder() -> msgspec.json.Encoder:
    return msgspec.json.Encoder(enc_hook=_enc_hook, decimal_format="number")


# --------------------------------------------------------------------------------------
# Conforming
# --------------------------------------------------------------------------------------
Conformer = t.Callable[[dict, list], dict]


def _sdk_typing() -> t.Any:
    # Checked against singer-sdk 0.54.9: the schema predicates and the primitive
    # conformer live in the private module `singer_sdk.helpers._typing`. Using the SDK's
    # own functions (at compile time, and for rare non-plain values) keeps its semantics.
    from singer_sdk.helpers import _typing

    return _typing


def compile_conformer(
    schema: dict, parent: str | None = None, *, floats_as_is: bool = False
) -> Conformer:
    """A function `conform(record, unmapped) -> record` equal to the SDK's RECURSIVE
    `_conform_record_data_types(record, schema, RECURSIVE, parent)`; property paths it
    drops are appended to `unmapped`. The input record is returned as is (not copied)
    when no field changes.

    `floats_as_is=True` leaves float values alone (the SDK turns NaN and ±inf into None):
    for a caller that encodes with msgspec, which writes NaN and ±inf as `null` too, so the
    JSON is the same and finite floats cost no Python-level check."""
    typing_ = _sdk_typing()
    properties: dict = schema.get("properties") or {}
    keep_unknown = bool(schema.get("additionalProperties"))
    #: name -> None (plain: the SDK's primitive conform), _BOOL (an exclusive boolean)
    #: or a per-value function (nested object, uniform list)
    specs: dict[str, t.Any] = {}
    for name, prop_schema in properties.items():
        specs[name] = _compile_property(name, prop_schema, parent, typing_, floats_as_is)

    missing = object()
    plain = _PLAIN_TYPES | {float} if floats_as_is else _PLAIN_TYPES
    boolean = _BOOL
    primitive = typing_._conform_primitive_property
    specs_get = specs.get

    def generic(record: dict, unmapped: list) -> dict:
        changed: dict | None = None
        dropped: list | None = None
        for key, value in record.items():
            spec = specs_get(key, missing)
            if spec is None:
                if value.__class__ in plain:
                    continue
                new = primitive(value, properties[key])
            elif spec is boolean:
                if value is None or value.__class__ is bool:
                    continue
                new = primitive(value, properties[key])
            elif spec is missing:
                if keep_unknown:
                    continue
                unmapped.append(key if parent is None else f"{parent}.{key}")
                if dropped is None:
                    dropped = []
                dropped.append(key)
                continue
            else:
                new = spec(value, unmapped)
            if new is not value:
                if changed is None:
                    changed = {}
                changed[key] = new
        if changed is None and dropped is None:
            # The SDK would build an equal copy; the record is serialised right away.
            return record
        changed = changed or {}
        skip = frozenset(dropped or ())
        return {
            key: changed[key] if key in changed else value
            for key, value in record.items()
            if key not in skip
        }

    known = frozenset(properties)
    #: plain properties keep these unchanged (the SDK's primitive conform returns dicts and
    #: lists of a property without a nested schema as they are)
    allowed = frozenset({*plain, dict, list})
    #: (key, spec, the nested object's conformer or None): for a nested object whose
    #: own properties are all plain, its C-level check is done right here (no call)
    special = [(key, spec, getattr(spec, "sub", None), getattr(spec, "leaf_items", None))
               for key, spec in specs.items() if spec is not None]
    issuperset_known = known.issuperset
    issuperset_allowed = allowed.issuperset

    def conform(record: dict, unmapped: list) -> dict:
        # Common case, checked in C: known keys only, JSON-born value types only. Then
        # only the few special properties (booleans, nested objects, lists) need a look.
        if not (issuperset_known(record) and issuperset_allowed(map(type, record.values()))):
            return generic(record, unmapped)
        changed: dict | None = None
        for key, spec, sub, items in special:
            value = record.get(key)
            if value is None:
                continue
            if spec is boolean:
                if value.__class__ is bool:
                    continue
                new = primitive(value, properties[key])
            elif items is not None and value.__class__ is list:
                for item in value:
                    if not (item.__class__ is dict and items.known_check(item)
                            and items.allowed_check(map(type, item.values()))):
                        break
                else:
                    continue  # what spec(value) returns: the list itself
                new = spec(value, unmapped)
            elif sub is not None and value.__class__ is dict:
                if sub.leaf and sub.known_check(value) and sub.allowed_check(
                        map(type, value.values())):
                    continue  # what sub(value) returns: the object itself
                new = sub(value, unmapped)
            else:
                new = spec(value, unmapped)
            if new is not value:
                if changed is None:
                    changed = {}
                changed[key] = new
        if changed is None:
            return record  # the SDK would build an equal copy; it is serialised at once
        return {key: changed.get(key, value) if key in changed else value
                for key, value in record.items()}

    def page_ok(rows: list[dict], json_values: bool = False) -> bool:
        """True when `conform(row)` is `row` (nothing changed, nothing unmapped) for every
        row of `rows` (dicts): checked a property at a time over all rows, most of it in
        C. False means: conform the rows one by one. `json_values=True`: every value is
        known to come from a JSON parser (str, int, float, bool, None, list, dict), which
        the plain-type check accepts when floats are left as they are (floats_as_is), so
        it is skipped then."""
        if not keep_unknown and not all(map(issuperset_known, rows)):
            return False  # an unknown key: dropped (and reported) row by row
        if not (json_values and floats_as_is) and not all(
                [issuperset_allowed(map(type, row.values())) for row in rows]):
            return False
        for key, spec, sub, _items in special:
            values = [value for row in rows if (value := row.get(key)) is not None]
            if not values:
                continue
            if spec is boolean:
                if not all([value.__class__ is bool for value in values]):
                    return False
            elif sub is not None:  # a nested object
                if not (all([value.__class__ is dict for value in values])
                        and sub.page_ok(values, json_values)):
                    return False
            else:
                kind, item_sub = getattr(spec, "page_items", (None, None))
                if kind is None or not all([value.__class__ is list for value in values]):
                    return False
                items = [item for value in values for item in value]
                if kind == "objects":
                    if not (all([item.__class__ is dict for item in items])
                            and item_sub.page_ok(items, json_values)):
                        return False
                elif not all([item.__class__ in _LIST_PLAIN for item in items]):
                    return False
        return True

    conform.leaf = not special  # type: ignore[attr-defined]
    conform.known_check = issuperset_known  # type: ignore[attr-defined]
    conform.allowed_check = issuperset_allowed  # type: ignore[attr-defined]
    conform.page_ok = page_ok  # type: ignore[attr-defined]
    return conform


def _compile_property(name: str, prop_schema: dict, parent: str | None, typing_: t.Any,
                      floats_as_is: bool) -> t.Any:
    """None for a plain property, _BOOL for an exclusive boolean (None and bools pass
    unchanged, anything else becomes `value != 0`), else the per-value conformer."""
    path = name if parent is None else f"{parent}.{name}"
    primitive = typing_._conform_primitive_property
    uniform_list = bool(typing_.is_uniform_list(prop_schema))
    object_with_props = bool(typing_.is_object_type(prop_schema)) and "properties" in prop_schema
    exclusive_bool = typing_._is_exclusive_boolean_type(prop_schema)
    if not (uniform_list or object_with_props):
        return _BOOL if exclusive_bool else None

    sub = (compile_conformer(prop_schema, path, floats_as_is=floats_as_is)
           if object_with_props else None)
    item_schema = prop_schema.get("items") if uniform_list else None
    item_is_object = bool(item_schema is not None and typing_.is_object_type(item_schema))
    item_sub = (
        compile_conformer(item_schema, path, floats_as_is=floats_as_is)
        if item_is_object and "properties" in (item_schema or {})
        else None
    )

    if sub is not None and not uniform_list:  # a nested object (the usual case)

        def conform_object(value: t.Any, unmapped: list) -> t.Any:
            if isinstance(value, dict):
                return sub(value, unmapped)
            return primitive(value, prop_schema)

        conform_object.sub = sub  # type: ignore[attr-defined]
        return conform_object

    def conform_value(value: t.Any, unmapped: list) -> t.Any:
        if uniform_list and isinstance(value, list):
            out = []
            same = True
            for item in value:
                if item_is_object and isinstance(item, dict):
                    # (an object item schema without properties fails in the SDK; kept)
                    new = item if item_sub is None else item_sub(item, unmapped)
                else:
                    new = primitive(item, item_schema)
                same = same and new is item
                out.append(new)
            return value if same else out
        if sub is not None and isinstance(value, dict):
            return sub(value, unmapped)
        return primitive(value, prop_schema)

    if uniform_list and sub is None:
        # what a page check may conclude for a list value (see page_ok)
        if item_is_object and item_sub is not None:
            conform_value.page_items = ("objects", item_sub)  # type: ignore[attr-defined]
        elif not item_is_object and not typing_._is_exclusive_boolean_type(item_schema or {}):
            conform_value.page_items = ("plain", None)  # type: ignore[attr-defined]
    if uniform_list and item_is_object and item_sub is not None and item_sub.leaf:
        # A list of objects whose properties are all plain: an item passing its
        # object's C-level check comes back as is, and so does a list of such items.
        conform_value.leaf_items = item_sub  # type: ignore[attr-defined]
    return conform_value


# --------------------------------------------------------------------------------------
# The message writer
# --------------------------------------------------------------------------------------
class FastSingerWriter(GenericSingerWriter[bytes, "Message"]):
    """Singer messages as msgspec-encoded lines, buffered, written in large chunks.

    When bytes reach stdout:
    - Lines are buffered in order. A STATE is appended and the whole buffer is written
      and flushed at once, so a STATE always reaches the target together with, and
      after, every record it covers (SCHEMA, ACTIVATE_VERSION, BATCH simply keep their
      place in the buffer).
    - At the end of each stream (`FastRecordsMixin.finalize_state_progress_markers`) and
      of the sync (`TapAnalytics.invoke`).
    - When the buffer passes `max_buffer_bytes` (a stream without bookmarks emits no STATE
      until its end; this bounds the memory).

    Why a killed process loses nothing: what a killed process had not written is only
    records after its last written STATE. The bookmark in that STATE does not cover them,
    so the next run (from that STATE) extracts them again. The one case where records
    after the last STATE do reach the target is the size-bound write: those records are
    re-sent by the resumed run (at-least-once, Singer's usual contract, and what the stock
    SDK does for every record); targets merge them on the key properties. A STATE is
    never written ahead of a record it covers.

    Lines are always whole: the buffer is written as a unit of complete lines. When
    stdout has no binary buffer (e.g. `contextlib.redirect_stdout(io.StringIO())` in
    tests), each message is written as text at once.
    """

    def __init__(self, max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES) -> None:
        super().__init__()
        self.max_buffer_bytes = max_buffer_bytes
        self.encoder = make_encoder()
        self._buffer = bytearray()
        self._target: t.Any = None  # the binary stream the buffer is meant for
        #: Where an unfinished RECORD line starts in the buffer (see record_buffer)
        self.open_from: int | None = None
        self._writing = False

    # -- encoding --------------------------------------------------------------------
    def serialize_message(self, message: Message) -> bytes:
        data = message.to_dict()
        if data.get("type") == "RECORD":
            stamp = data.get("time_extracted")
            if isinstance(stamp, dt.datetime):  # as simplejson's default: isoformat
                data["time_extracted"] = stamp.isoformat(sep="T")
        else:  # SCHEMA/STATE/...: rare, so convert any date-time as the SDK would
            data = _isoformat_datetimes(data)
        try:
            return self.encoder.encode(data) + b"\n"
        except UnicodeEncodeError:  # a lone surrogate: the SDK's encoder escapes it
            return serialize_json(data).encode("ascii") + b"\n"

    # -- writing ---------------------------------------------------------------------
    @staticmethod
    def _binary_stdout() -> t.Any:
        return getattr(sys.stdout, "buffer", None)

    def write_message(self, message: Message) -> None:
        line = self.serialize_message(message)
        self.write_line(line, final=getattr(message, "type", None) == "STATE")

    def write_line(self, line: bytes | bytearray, *, final: bool = False) -> None:
        """Append one complete line; `final=True` writes the buffer out now."""
        self._drop_unfinished_line()
        target = self._binary_stdout()
        if target is None:  # text-only stdout: no buffering, no bytes
            self.flush()
            sys.stdout.write(bytes(escape_line_breakers(line)).decode("utf-8"))
            return
        if target is not self._target:
            self.flush()
            self._target = target
        self._buffer += line
        if final or len(self._buffer) >= self.max_buffer_bytes:
            self.flush()

    def record_buffer(self) -> bytearray | None:
        """The byte buffer a caller appends RECORD lines to, or None when stdout takes
        text only. Until `record_appended()`, what is appended after `open_from` (set
        here to the buffer's end; a caller appending several lines moves it to the end
        of each complete line) is an unfinished line: a STATE or a flush coming in
        before then can only come from a signal handler (SIGTERM mid-record), and drops
        it first, so no torn line is ever written. No STATE covers a dropped record yet:
        the next run reads it again."""
        target = self._binary_stdout()
        if target is None:
            return None
        if target is not self._target:
            self.flush()
            self._target = target
        self.open_from = len(self._buffer)
        return self._buffer

    def record_appended(self) -> None:
        """The lines appended since `record_buffer()` are complete."""
        self.open_from = None
        if len(self._buffer) >= self.max_buffer_bytes:
            self.flush()

    def _drop_unfinished_line(self) -> None:
        if self.open_from is not None:
            del self._buffer[self.open_from:]
            self.open_from = None

    def flush(self) -> None:
        """Write every buffered line and flush stdout."""
        self._drop_unfinished_line()
        if self._writing or not self._buffer:
            # Re-entered from a signal handler while writing: the outer call writes it.
            return
        target = self._target
        if target is None:
            self._buffer.clear()
            return
        self._writing = True
        try:
            sys.stdout.flush()  # anything printed as text goes first
            data = self._buffer
            self._buffer = bytearray()
            target.write(escape_line_breakers(data))
            target.flush()
        finally:
            self._writing = False

    def pending_bytes(self) -> int:
        return len(self._buffer)


# --------------------------------------------------------------------------------------
# The per-stream fast path
# --------------------------------------------------------------------------------------
def _unchanged(record: dict, unmapped: list) -> dict:
    return record


class RecordFastPath:
    """Per stream: the compiled conformer, the line prefix, the selection decision."""

    def __init__(self, stream: t.Any, schema: dict, writer: t.Any, version: int | None,
                 mask: t.Any, alias: str) -> None:
        self.stream_name = stream.name
        self.logger: logging.Logger = stream.logger
        self.schema = schema
        self.full_schema = stream.schema
        self.writer = writer if isinstance(writer, FastSingerWriter) else None
        self.encoder = self.writer.encoder if self.writer else make_encoder()
        # NaN/±inf floats stay floats: msgspec writes them as null, as the SDK's path does
        self.conform = compile_conformer(schema, floats_as_is=True)
        #: The stream's records come straight from a JSON parser (plus what its own
        #: post_process puts in, JSON types too): a page check may skip the type check.
        self.json_values = bool(getattr(stream, "records_are_json", False))
        self.mask = mask
        #: Skip `pop_deselected_record_properties` when everything is selected (the mask
        #: resolves every missing breadcrumb to its parent's value, so all-True is all).
        self.all_selected = all(mask.values())
        self.version = version
        self.prefix = b'{"type":"RECORD","stream":' + self.encoder.encode(alias) + b',"record":'
        self.suffix_head = (
            b"" if version is None else b',"version":' + str(int(version)).encode()
        ) + b',"time_extracted":"'
        self._warned: set[tuple[str, ...]] = set()
        self._stamp_at = -1.0
        self._stamp = ""
        self._suffix_of: str | None = None
        self._suffix = b""

    def _time_extracted(self) -> str:
        """As the SDK's RecordMessage: now in UTC, isoformat(sep="T"); the string is
        reused within one millisecond (records of one page share their extraction)."""
        now = time.time()
        if not 0 <= now - self._stamp_at < 0.001:
            self._stamp_at = now
            self._stamp = dt.datetime.fromtimestamp(now, UTC).isoformat(sep="T")
        return self._stamp

    def _warn_unmapped(self, unmapped: list[str]) -> None:
        key = tuple(unmapped)
        if key not in self._warned:
            self._warned.add(key)
            self.logger.warning(
                "Properties %s were present in the '%s' stream but not found in catalog "
                "schema. Ignoring.", key, self.stream_name,
            )

    def _line_end(self, now: str) -> bytes:
        """The end of a RECORD line (version, time_extracted), built once per time stamp."""
        if now is not self._suffix_of:
            self._suffix_of = now
            self._suffix = self.suffix_head + now.encode() + b'"}\n'
        return self._suffix

    def _append_line(self, out: dict, buffer: bytearray, suffix: bytes) -> None:
        buffer += self.prefix
        mark = len(buffer)
        try:
            self.encoder.encode_into(out, buffer, -1)
        except UnicodeEncodeError:  # a lone surrogate ("\ud83d"): UTF-8 cannot hold it
            del buffer[mark:]
            buffer += serialize_json(out).encode("ascii")  # the SDK's encoder: escaped
        buffer += suffix

    def write(self, record: dict, fallback_write: t.Callable[[dict, str], None]) -> None:
        """One record (the per-record path); see write_many."""
        if not self.all_selected:
            pop_deselected_record_properties(record, self.full_schema, self.mask)
        unmapped: list[str] = []
        out = self.conform(record, unmapped)
        if unmapped:
            self._warn_unmapped(unmapped)
        now = self._time_extracted()
        buffer = self.writer.record_buffer() if self.writer is not None else None
        if buffer is None:
            fallback_write(out, now)
            return
        self._append_line(out, buffer, self._line_end(now))
        self.writer.record_appended()  # type: ignore[union-attr]

    def write_many(self, records: list[dict],
                   fallback_write: t.Callable[[dict, str], None]) -> None:
        """Conform each record and append its RECORD line to the writer's buffer, in one
        loop (a page from `sync_pages`, or one record); text-only stdout: `fallback_write`
        (a RecordMessage) per record."""
        conform = self.conform
        if not self.all_selected:
            for record in records:
                pop_deselected_record_properties(record, self.full_schema, self.mask)
        now = self._time_extracted()
        writer = self.writer
        buffer = writer.record_buffer() if writer is not None else None
        if buffer is None:
            for record in records:
                unmapped: list[str] = []
                out = conform(record, unmapped)
                if unmapped:
                    self._warn_unmapped(unmapped)
                fallback_write(out, now)
            return
        assert writer is not None
        if self.conform.page_ok(records, self.json_values):  # type: ignore[attr-defined]
            conform = _unchanged  # the common case: no record needs a change
        suffix = self._line_end(now)
        append_line = self._append_line
        limit = writer.max_buffer_bytes
        unmapped = []
        for record in records:
            out = conform(record, unmapped)
            if unmapped:
                self._warn_unmapped(unmapped)
                unmapped = []
            append_line(out, buffer, suffix)
            writer.open_from = len(buffer)  # the line is complete (see record_buffer)
            if len(buffer) >= limit:
                writer.record_appended()  # written out
                buffer = writer.record_buffer()
                assert buffer is not None
        writer.record_appended()


def sdk_internals(stream: t.Any) -> tuple[t.Any, int | None]:
    """(the stream's tap, the RECORD `version`) of a singer-sdk stream.

    Checked against singer-sdk 0.54.9: the SDK keeps both in private members
    (`Stream._tap`, `Stream._stream_version`). This is the one place the tap reads them.
    """
    return stream._tap, stream._stream_version


def fast_path_for(stream: t.Any) -> RecordFastPath | None:
    """The stream's RecordFastPath, or None where the SDK's own path must run."""
    cached = stream.__dict__.get("_fast_path_cache")
    schema = stream.effective_schema
    tap, version = sdk_internals(stream)
    if cached is not None and cached[0] is schema and cached[1] == version:
        return cached[2]
    fast: RecordFastPath | None = None
    maps = stream.stream_maps
    if (
        getattr(stream, "fast_path_enabled", True)
        and stream.TYPE_CONFORMANCE_LEVEL == TypeConformanceLevel.RECURSIVE
        and len(maps) == 1
        and isinstance(maps[0], SameRecordTransform)
        and not maps[0].flattening_enabled
    ):
        fast = RecordFastPath(
            stream, schema, tap.message_writer, version, stream.mask, maps[0].stream_alias
        )
    stream.__dict__["_fast_path_cache"] = (schema, version, fast)
    return fast


def _childless(stream: t.Any) -> bool:
    """True when the SDK's `_process_record` has nothing to do for a record without a
    partition context: no child streams, the SDK's own child-context methods, the
    default record map (cached per sync of the stream)."""
    cached = stream.__dict__.get("_childless_cache")
    if cached is None:
        from singer_sdk import Stream

        cls = type(stream)
        cached = (
            not stream.child_streams
            and cls.generate_child_contexts is Stream.generate_child_contexts
            and cls.get_child_context is Stream.get_child_context
            and fast_path_for(stream) is not None
        )
        stream.__dict__["_childless_cache"] = cached
    return cached


class FastRecordsMixin:
    """Mix into a singer-sdk Stream (before the SDK class) for the fast per-record path.

    Falls back to the SDK's own path when a stream map or flattening is configured, or the
    stream conforms at another level than RECURSIVE. `fast_path_enabled = False` on a
    stream class turns the fast path off.
    """

    fast_path_enabled: bool = True

    # singer-sdk 0.54.9: `_sync_records(context, write_messages=)` is the SDK's private
    # per-record sync loop (called by `Stream.sync`). A stream that hands over whole pages
    # (`get_record_pages`) is synced a page at a time by `fastsync.sync_pages`, which
    # writes what the SDK's loop writes; every other case is the SDK's loop.
    def _sync_records(self, context: t.Any = None, *,
                      write_messages: bool = True) -> t.Iterator[dict]:
        if page_loop_applies(self, context, write_messages):
            return sync_pages(self)
        return super()._sync_records(  # type: ignore[misc]
            context, write_messages=write_messages)

    # singer-sdk 0.54.9: `_write_record_message(record)` is the SDK's private per-record
    # writer (called by `_sync_records` for each selected record, before the state
    # increment). One of the mixin's three overrides of SDK private members.
    def _write_record_message(self, record: dict) -> None:
        fast = fast_path_for(self)
        if fast is None:
            super()._write_record_message(record)  # type: ignore[misc]
            return
        fast.write(record, self._write_conformed_record)
        self.state_manager.is_flushed = False  # type: ignore[attr-defined]

    # singer-sdk 0.54.9: `_process_record(record, child_context, partition_context)` is
    # the SDK's private per-record step before the write (adds the partition context's
    # keys to the record, syncs child streams). With no child streams, no partition
    # context and the SDK's own child-context methods it does nothing but build and drop
    # a copy of the record per record: skipped then.
    def _process_record(self, record: dict, child_context: t.Any = None,
                        partition_context: t.Any = None) -> None:
        if partition_context or not _childless(self):
            super()._process_record(  # type: ignore[misc]
                record, child_context=child_context, partition_context=partition_context)

    # singer-sdk 0.54.9: `_increment_stream_state(record, context=)` is the SDK's private
    # per-record bookmark step (`StreamStateManager.increment_state` ->
    # `helpers._state.increment_state`). `fast_increment_state` does the same for the
    # common case (unsorted stream, progress markers present, plain JSON values) at a
    # fraction of the cost; everything else goes to the SDK.
    def _increment_stream_state(self, latest_record: dict, *,
                                context: t.Any = None) -> None:
        if not fast_increment_state(self, latest_record, context):
            super()._increment_stream_state(  # type: ignore[misc]
                latest_record, context=context)

    def _write_conformed_record(self, record: dict, time_extracted: str) -> None:
        """Fallback (text stdout or another message writer): a RecordMessage."""
        tap, version = sdk_internals(self)
        tap.write_message(
            RecordMessage(
                stream=self.stream_maps[0].stream_alias,  # type: ignore[attr-defined]
                record=record,
                version=version,
                time_extracted=dt.datetime.fromisoformat(time_extracted),
            )
        )

    def finalize_state_progress_markers(self, state: dict | None = None) -> None:
        self.__dict__.pop("_fast_state_cache", None)
        self.__dict__.pop("_childless_cache", None)
        super().finalize_state_progress_markers(state)  # type: ignore[misc]
        writer = sdk_internals(self)[0].message_writer
        if isinstance(writer, FastSingerWriter):
            writer.flush()


__all__ = [
    "DEFAULT_MAX_BUFFER_BYTES",
    "FastRecordsMixin",
    "FastSingerWriter",
    "RecordFastPath",
    "compile_conformer",
    "fast_path_for",
    "sdk_internals",
]
