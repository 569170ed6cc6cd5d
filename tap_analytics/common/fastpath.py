"""The per-record fast path: a buffered msgspec message writer and precompiled conformers.

On singer-sdk 0.54.9 about 80% of a record's CPU goes to the SDK's per-record path:
`pop_deselected_record_properties` (a selection walk even when everything is selected),
`_conform_record_data_types` (re-reads the JSON schema for every field of every record),
a `RecordMessage` + `to_dict()`, simplejson encoding and a stdout flush per message.
The tap does the same work once per stream where it can and per record where it must,
in four modules that import one way (fastpath -> fastsync -> recordpath -> conform, writer):

- `conform.compile_conformer(schema)`: the SDK's conforming, compiled once per schema;
  returns the record itself when nothing needs to change (the common case).
- `writer.FastSingerWriter`: msgspec lines in one byte buffer, written to
  `sys.stdout.buffer` in large chunks (see the class for when it flushes and why a killed
  process loses nothing).
- `recordpath.RecordFastPath`: a stream's RECORD line builder (the deselection pass is
  skipped when every property is selected); `fast_path_for(stream)` says when a stream may
  use it: stream maps, flattening, non-recursive conformance levels or another message
  writer take the SDK's own path.
- this module: `FastRecordsMixin`, the overrides of the SDK's private per-record members
  (`FastRecordsMixin.fast_path_enabled` turns them off), and `fastsync.sync_pages`, the
  page-at-a-time loop for streams with `get_record_pages`.

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
import typing as t

from singer_sdk.singerlib.encoding.simple import RecordMessage

from tap_analytics.common.conform import compile_conformer
from tap_analytics.common.fastsync import fast_increment_state, page_loop_applies, sync_pages
from tap_analytics.common.recordpath import (
    RecordFastPath,
    _childless,
    fast_path_for,
    sdk_internals,
)
from tap_analytics.common.writer import DEFAULT_MAX_BUFFER_BYTES, FastSingerWriter


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
        if page_loop_applies(self, context, write_messages, FastRecordsMixin):
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
