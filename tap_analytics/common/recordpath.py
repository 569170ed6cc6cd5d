"""The per-stream RECORD line builder: `RecordFastPath` (compiled conformer, line prefix,
selection decision) and `fast_path_for(stream)`, which says when a stream may use it.

Stream maps, flattening, non-recursive conformance levels or another message writer: the
stream takes the SDK's own path (`fast_path_for` returns None). SDK private members read here
(checked against singer-sdk 0.54.9): `Stream._tap`, `Stream._stream_version` (in
`sdk_internals`, the one place).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import typing as t

from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.json import serialize_json

from tap_analytics.common.conform import compile_conformer
from tap_analytics.common.writer import FastSingerWriter, make_encoder

UTC = dt.timezone.utc


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


__all__ = ["RecordFastPath", "fast_path_for", "sdk_internals"]
