"""The page-at-a-time sync loop: the SDK's `Stream._sync_records`, one page per step.

singer-sdk 0.54.9's `_sync_records` runs about ten Python calls per record (the record
limit check, `post_process`, `_process_record`, `_write_record_message`,
`_increment_stream_state`, the STATE frequency check, the record counter, a generator
hop per level of `get_records`). For a stream that can hand over whole pages
(`get_record_pages(context)`, e.g. a limit/skip listing) `sync_pages` does the same work
per page: post-process the page, write its RECORD lines in one loop, move the bookmark
once, count once. What reaches stdout is what the SDK's loop writes: the same RECORD
lines in the same order, and the same STATE messages at the same places (after every
`STATE_MSG_FREQUENCY` records, at the end), with the same bookmarks in them.

It runs only in the common case (`page_loop_applies`): the fast record path is on, no
partitions and no context, no child streams, the stream selected, no dry-run record
limit, and the SDK's per-record hooks not overridden below `FastRecordsMixin`. Any other
case runs the SDK's own loop (over the same pages, flattened by the stream).

SDK members this reads or calls (checked against singer-sdk 0.54.9; the tests compare its
output with the SDK's loop): `Stream._write_starting_replication_value`,
`_finalize_state`, `_write_state_message`, `get_context_state`, `stream_state`,
`get_record_counter`, `get_sync_timer`,
`STATE_MSG_FREQUENCY`, `ABORT_AT_RECORD_COUNT`, `partitions`, `state_manager`.
"""

from __future__ import annotations

import typing as t

from tap_analytics.common.recordpath import _childless, fast_path_for

_PROGRESS_MARKERS = "progress_markers"
_JSON_KEY_TYPES = frozenset({str, int, float})


class PartialPage(Exception):
    """Raised by a page post-processor that failed part way: `records` are the records
    before the failure (post-processed, to be emitted as the SDK's loop would have
    emitted them), `error` is what to raise once they are out."""

    def __init__(self, records: list[dict], error: BaseException) -> None:
        super().__init__(str(error))
        self.records = records
        self.error = error


def _state_plan(stream: t.Any) -> tuple[bool, str | None, bool, t.Any]:
    """(fast increment usable, replication key, check_sorted, state manager), cached for
    one sync of the stream (dropped in `finalize_state_progress_markers`)."""
    cache = stream.__dict__.get("_fast_state_cache")
    if cache is None:
        from singer_sdk.singerlib.catalog import REPLICATION_INCREMENTAL

        manager = stream.state_manager
        usable = (
            stream.replication_method == REPLICATION_INCREMENTAL
            and bool(stream.replication_key)
            and not (manager._is_sorted and manager.state_partitioning_keys is None)
        )
        cache = (usable, stream.replication_key, bool(manager._check_sorted), manager)
        stream.__dict__["_fast_state_cache"] = cache
    return cache


def fast_increment_state(stream: t.Any, record: dict, context: t.Any) -> bool:
    """The SDK's per-record bookmark increment (singer-sdk 0.54.9,
    `Stream._increment_stream_state` -> `helpers._state.increment_state`) for the common
    case; False (nothing done) for any other case, which the caller hands to the SDK.

    The common case: INCREMENTAL replication with a replication key, an unsorted stream
    (so the SDK keeps the value in the state's `progress_markers`), the progress markers
    already created by an earlier record (the SDK logs a warning when it creates them),
    and old and new values of plain JSON types (which `to_json_compatible` returns
    unchanged). Then, as the SDK: the new value is stored when there is no old one, when
    `check_sorted` is off, or when it is >= the old one.
    """
    usable, key, check_sorted, manager = _state_plan(stream)
    if not usable or not record:
        return False
    progress = manager.get_context_state(context).get(_PROGRESS_MARKERS)
    if progress is None:
        return False
    new = record.get(key)
    old = progress.get("replication_key_value")
    if new.__class__ not in _JSON_KEY_TYPES or (
            old is not None and old.__class__ not in _JSON_KEY_TYPES):
        return False  # None (the SDK warns), a missing key, datetimes, ...: the SDK's
    if old is None or not check_sorted or new >= old:
        progress["replication_key"] = key
        progress["replication_key_value"] = new
    return True


def increment_state_many(stream: t.Any, records: list[dict], context: t.Any) -> None:
    """`stream._increment_stream_state(record)` for each record in order, with the
    common case (see fast_increment_state) done in one loop and stored once."""
    usable, key, check_sorted, manager = _state_plan(stream)
    increment = stream._increment_stream_state
    if not usable:
        for record in records:
            increment(record, context=context)
        return
    index, count = 0, len(records)
    while index < count:
        progress = manager.get_context_state(context).get(_PROGRESS_MARKERS)
        if progress is None:  # the SDK creates the markers (and warns) on a record
            increment(records[index], context=context)
            index += 1
            continue
        old = top = progress.get("replication_key_value")
        if old is not None and old.__class__ not in _JSON_KEY_TYPES:
            increment(records[index], context=context)
            index += 1
            continue
        while index < count:
            record = records[index]
            new = record.get(key) if record else None
            if new.__class__ not in _JSON_KEY_TYPES:
                break  # None, a missing key, an empty record, ...: the SDK's, below
            if top is None or not check_sorted or new >= top:
                top = new
            index += 1
        if top is not old or (top is not None and "replication_key" not in progress):
            progress["replication_key"] = key
            progress["replication_key_value"] = top
        if index < count:
            increment(records[index], context=context)
            index += 1


def _same_owner(cls: type, paged: str, flat: str) -> bool:
    """True when the first class of the MRO that defines `paged` or `flat` defines both:
    e.g. a subclass that overrides `get_records` alone no longer reads pages."""
    for klass in cls.__mro__:
        has_paged, has_flat = paged in klass.__dict__, flat in klass.__dict__
        if has_paged or has_flat:
            return has_paged and has_flat
    return False


def page_loop_applies(stream: t.Any, context: t.Any, write_messages: bool,
                      mixin: type) -> bool:
    """True when `sync_pages` may stand in for the SDK's `_sync_records` (see above).

    `mixin` is the class whose per-record overrides the page loop stands in for
    (`fastpath.FastRecordsMixin`): a subclass that overrides one of them keeps the SDK's
    loop. Passed in, so that this module does not import the mixin's."""
    cls = type(stream)
    return (
        write_messages
        and context is None
        and _same_owner(cls, "get_record_pages", "get_records")
        and stream.selected
        and stream.ABORT_AT_RECORD_COUNT is None
        and not stream.partitions
        and cls._write_record_message is mixin._write_record_message
        and cls._increment_stream_state is mixin._increment_stream_state
        and cls._process_record is mixin._process_record
        and fast_path_for(stream) is not None
        and _childless(stream)
    )


def sync_pages(stream: t.Any) -> t.Iterator[dict]:
    """The SDK's `_sync_records(None)` for a stream with `get_record_pages`, a page at a
    time (only where `page_loop_applies`). Yields each record, as the SDK's does."""
    fast = fast_path_for(stream)
    assert fast is not None
    post_page = (stream.post_process_page
                 if _same_owner(type(stream), "post_process_page", "post_process") else None)
    post = stream.post_process
    frequency = max(1, int(stream.STATE_MSG_FREQUENCY))
    state_manager = stream.state_manager
    fallback = stream._write_conformed_record
    record_counter = stream.get_record_counter()
    timer = stream.get_sync_timer()
    index = 0

    with record_counter, timer:
        record_counter.with_context({})
        timer.with_context({})
        stream._write_starting_replication_value(None)
        for raw in stream.get_record_pages(None):
            pending: BaseException | None = None
            try:
                if post_page is not None:
                    page = post_page(raw, None)
                else:
                    page = []
                    for record in raw:
                        record = post(record, None)
                        if record is not None:
                            page.append(record)
            except PartialPage as partial:
                page, pending = partial.records, partial.error
            start, count = 0, len(page)
            while start < count:
                # up to the next STATE message (every `frequency` records), as the SDK
                end = min(count, start + frequency - index % frequency)
                segment = page if (start == 0 and end == count) else page[start:end]
                fast.write_many(segment, fallback)
                state_manager.is_flushed = False
                increment_state_many(stream, segment, None)
                index += end - start
                record_counter.increment(end - start)
                if index % frequency == 0:
                    stream._write_state_message()
                yield from segment
                start = end
            if pending is not None:
                raise pending
        stream._finalize_state(stream.get_context_state(None))
    stream._finalize_state(stream.stream_state)
    stream._write_state_message()


__all__ = [
    "PartialPage",
    "fast_increment_state",
    "increment_state_many",
    "page_loop_applies",
    "sync_pages",
]
