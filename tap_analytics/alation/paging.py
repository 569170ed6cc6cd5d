"""limit/skip paging of the Alation lists, and the mid-stream resume marker.

`ShortPagePaginator` ends on a short page (no extra empty request). `PagingMixin` (a base
of `AlationStream`) holds the page loop (`request_pages`, with the pages after the first
fetched ahead: `page_responses`) and the resume bookkeeping:

The list endpoints have no usable order for the bookmarks, so the bookmark only moves when
a stream completes. After every fully emitted page the stream writes a STATE whose stream
entry carries a `resume` marker (the filters this run uses, the offset of the next page,
the last record of the page before, the highest value emitted so far); a run killed
mid-stream and re-run from that STATE reads the same record set from one page before that
offset, and drops the records of that overlap page up to the recorded last record. See
`PagingMixin.checkpoint` and docs/alation.md.
"""

from __future__ import annotations

import contextlib
import itertools
import typing as t
from contextlib import closing

from singer_sdk.pagination import OffsetPaginator
from singer_sdk.singerlib.catalog import REPLICATION_INCREMENTAL

from tap_analytics.common.drain import Drain
from tap_analytics.common.handover import Handover
from tap_analytics.common.prefetch import OrderedPrefetch
from tap_analytics.common.sessions import ThreadSessions
from tap_analytics.common.timeutil import normalize

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

    from tap_analytics.alation.client import AlationStream

#: The key of the mid-stream resume marker in a stream's STATE entry.
RESUME_KEY = "resume"


class ShortPagePaginator(OffsetPaginator):
    """limit/skip paging that stops on a short page: no extra empty request."""

    def __init__(self, stream: AlationStream, page_size: int, start_value: int = 0) -> None:
        super().__init__(start_value=start_value, page_size=page_size)
        self._stream = stream

    def has_more(self, response: requests.Response) -> bool:
        # parse_response has consumed the page before the SDK advances the paginator.
        return self._stream.last_page_count >= self.page_size

    def continue_if_empty(self, response: requests.Response) -> bool:
        # A resumed run's overlap page can hold only records emitted before the
        # interruption: parse_response then yields none of a page that was not empty.
        return self._stream.last_page_count > 0


class PagingMixin:
    """The page loop and the resume marker of an Alation list stream (see the module
    docstring). Mixed into `AlationStream`, whose members it uses."""

    # -- mid-stream resume -----------------------------------------------------------
    @property
    def resumable(self) -> bool:
        """Incremental list streams resume mid-stream (not a catalog-forced FULL_TABLE)."""
        return bool(self.replication_key) and (
            self.replication_method == REPLICATION_INCREMENTAL)

    def resume_marker(self, context: Context | None) -> dict[str, t.Any] | None:
        """The `resume` marker of this stream's STATE entry, checked; None if absent.

        A marker that does not fit this stream (hand-edited, another replication key) is
        ignored with a warning: the stream then re-reads from its bookmark, losing nothing.
        """
        if not self.resumable:
            return None
        marker = self.get_context_state(context).get(RESUME_KEY)
        if marker is None:
            return None
        problem = self._marker_problem(marker)
        if problem is None:
            return marker
        if not self.__dict__.get("_marker_warned"):
            self.__dict__["_marker_warned"] = True
            self.logger.warning(
                "Alation stream '%s': the STATE resume marker is ignored (%s); "
                "the stream is read again from its bookmark", self.name, problem)
        return None

    def _marker_problem(self, marker: t.Any) -> str | None:
        if not isinstance(marker, dict):
            return "not an object"
        if marker.get("replication_key") != self.replication_key:
            return f"it is for replication key {marker.get('replication_key')!r}"
        skip = marker.get("skip")
        if type(skip) is not int or skip < 0:
            return "'skip' is not a non-negative integer"
        for name in ("filter_start", "filter_end", "max_value"):
            value = marker.get(name)
            if value is None:
                continue
            if self.is_timestamp_replication_key:
                try:
                    ok = isinstance(value, str) and normalize(value) == value
                except ValueError:
                    ok = False
            else:
                ok = type(value) is int
            if not ok:
                return f"{name!r} is not a {self.replication_key} value"
        if not self.is_timestamp_replication_key and marker.get("filter_end") is not None:
            return "'filter_end' is set for an id bookmark"
        return None

    def first_skip(self, context: Context | None) -> int:
        """Where paging starts: 0, or one page before a resume marker's offset.

        The page of overlap keeps a record from being skipped when records before the
        offset left the listing since the interruption (the rest shift to lower offsets).
        """
        marker = self.resume_marker(context)
        return max(0, marker["skip"] - self.page_size) if marker else 0

    def begin_run(self, context: Context | None) -> None:
        """Start the bookkeeping of one sync of this stream (called by get_records)."""
        marker = self.resume_marker(context)
        self._run = {
            "context": context,
            "marker": dict(marker) if marker else None,
            "start_skip": self.first_skip(context),
            "max_value": marker.get("max_value") if marker else None,
            "last_key": None,
            # BATCH mode: records wait in a batch file until its BATCH message, so a STATE
            # written mid-page would claim records not yet delivered: the SDK's STATE only.
            "checkpoints": self.get_batch_config(self.config) is None,
        }
        if marker:
            self.logger.info(
                "Alation stream '%s': resuming an interrupted sync at offset %d "
                "(filters %s .. %s)", self.name, self._run["start_skip"],
                marker["filter_start"], marker["filter_end"])

    def checkpoint(self, page_skip: int) -> None:
        """Write the resume marker for the pages before `page_skip` and emit a STATE.

        Called when the page at `page_skip` has been received: the SDK consumes records
        lazily (RESTStream.request_records asks for the next page only after the previous
        page's last record went through _sync_records: written and counted in the
        bookmark), so every record of the earlier pages has been emitted by now. The
        bookmark itself does not move (the listing is unsorted); the marker does.
        """
        run = self._run
        if run is None or not run["checkpoints"] or page_skip <= run["start_skip"]:
            return
        start, end = self.filter_bounds(run["context"])
        self.get_context_state(run["context"])[RESUME_KEY] = {
            "replication_key": self.replication_key,
            "filter_start": start,
            "filter_end": end,
            "skip": page_skip,
            "last_key": run["last_key"],
            "max_value": run["max_value"],
        }
        self.write_state_now()

    def write_state_now(self) -> None:
        """Emit a STATE message mid-stream.

        singer-sdk 0.54.9 has no public way for a stream to do this: the private
        `Stream._write_state_message` writes the tap state through the tap's StateWriter,
        but only when `state_manager.is_flushed` is False (each RECORD clears it). A page
        whose records were all dropped leaves it set, so it is cleared first.
        Checked against singer-sdk 0.54.9.
        """
        self.state_manager.is_flushed = False
        self._write_state_message()

    def end_run(self, context: Context | None) -> None:
        """The stream completed: drop the marker; the bookmark covers the earlier runs.

        The SDK sets the final bookmark to the highest value emitted by this run; records
        emitted before an interruption may be higher, so that value is counted too.
        """
        run, self._run = self._run, None
        self.get_context_state(context).pop(RESUME_KEY, None)
        marker = run["marker"] if run else None
        if marker and marker.get("max_value") is not None and self.replication_key:
            self.state_manager.increment_state(
                {self.replication_key: marker["max_value"]},
                context=context,
                replication_key=self.replication_key,
            )

    def _overlap(self, payload: list[dict]) -> list[dict]:
        """Of a resumed run's first (overlap) page, the records after the marker's last
        record; the whole page when that record is not on it (the listing moved)."""
        marker = self._run["marker"] if self._run else None
        if not marker or marker["skip"] <= self._run["start_skip"]:  # type: ignore[index]
            return payload
        last_key = marker.get("last_key")
        keys = [self._key_of(rec) for rec in payload]
        if last_key is not None and last_key in keys:
            at = len(keys) - 1 - keys[::-1].index(last_key)
            self.logger.info(
                "Alation stream '%s': %d records of the overlap page were emitted "
                "before the interruption", self.name, at + 1)
            return payload[at + 1:]
        self.logger.info(
            "Alation stream '%s': the listing moved since the interruption; "
            "the overlap page is read again whole", self.name)
        return payload

    def _key_of(self, record: dict) -> t.Any:
        keys = self.primary_keys or ()
        if len(keys) != 1:
            return None
        value = record.get(keys[0])
        return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None

    def request_pages(self, context: Context | None) -> t.Iterator[list[dict]]:
        """The SDK's `RESTStream.request_records` (singer-sdk 0.54.9), one list of
        records per response instead of one record at a time: the same paginator calls,
        request counter, sync costs and stop on an empty page. Only the private
        `_prepare_request` of the SDK is called (this stream has no `prepare_request`).
        The responses come from `page_responses` (fetched ahead, in offset order)."""
        paginator = self.get_new_paginator()
        pages = 0
        responses = self.page_responses(context, paginator)
        with self.get_http_request_counter() as request_counter, closing(responses):
            request_counter.with_context(context)
            for prepared_request, resp in responses:
                request_counter.increment()
                self.update_sync_costs(prepared_request, resp, context)
                records = self.parse_response(resp)
                if not isinstance(records, list):
                    records = list(records)
                if not records:
                    if paginator.continue_if_empty(resp):
                        paginator.advance(resp)
                        continue
                    self.log("Pagination stopped after %d pages because no records were "
                             "found in the last response", pages)
                    break
                yield records
                pages += 1
                paginator.advance(resp)

    def page_responses(self, context: Context | None, paginator: ShortPagePaginator
                       ) -> t.Iterator[tuple[requests.PreparedRequest, requests.Response]]:
        """(request, response) of each page, in offset order, while the paginator (which
        the caller advances after each page) is not finished.

        With `alation.max_concurrent_requests` > 1 the next offsets are fetched ahead
        (common/prefetch.py), each worker thread with its own session and the same
        retrying request function (backoff, error taxonomy) per page. A short page
        finishes the paginator: the pages fetched beyond it are dropped unread. A stream
        with a bookmark fetches its first page alone, so that a run with nothing new
        costs one request; a first sync (no bookmark: there is no such run to protect)
        fetches ahead from the first page on. Those first requests may have gone out
        while the stream before this one was read (`start_early`): they are taken over
        when they are the very requests this sync would send.
        """
        send = self.request_decorator(self._request)
        in_flight = self.max_concurrent_requests
        self.__dict__["_next_started"] = False
        if in_flight <= 1:
            while not paginator.finished:
                prepared = self._prepare_request(context=context, page=paginator)
                yield prepared, send(prepared, context)
            return
        ahead = self._take_early(context, paginator)
        if self._has_bookmark(context):
            if ahead is not None:  # the first page, asked alone before this sync
                yield from self._pages_from(ahead, paginator)
            else:
                prepared = self._prepare_request(context=context, page=paginator)
                response = send(prepared, context)
                self._start_next_early()
                yield prepared, response
            if paginator.finished or self.last_page_count < paginator.page_size:
                return
            ahead = None
        if ahead is None:
            ahead = self._look_ahead(context, paginator.current_value, in_flight)
        yield from self._pages_from(ahead, paginator)

    def _has_bookmark(self, context: Context | None) -> bool:
        """The stream resumes from a bookmark of an earlier run (not only start_date)."""
        if not self.resumable:
            return False
        state = self.get_context_state(context)
        return state.get("replication_key_value") is not None or RESUME_KEY in state

    def _look_ahead(self, context: Context | None, first: int, in_flight: int, *,
                    first_only: bool = False) -> _LookAhead:
        """Pages from offset `first` on (or that page alone), fetched ahead."""
        # Requests are prepared in the sync's thread (the prefetcher reads the offsets
        # as it submits them); the workers only send them.
        offsets = [first] if first_only else itertools.count(first, self.page_size)
        planned = ((offset, self._prepare_request(context=context, page=_At(offset)))
                   for offset in offsets)
        sessions = ThreadSessions(self.requests_session)

        def fetch(item: tuple[int, requests.PreparedRequest]
                  ) -> tuple[int, requests.PreparedRequest, requests.Response]:
            offset, prepared = item
            sessions.for_this_thread()  # requests_session is now this thread's own
            return offset, prepared, send_ahead(prepared, context)

        prefetch = OrderedPrefetch(fetch, planned, in_flight,
                                   thread_name=f"tap-analytics-{self.name}")

        def request_unless_dropped(prepared: requests.PreparedRequest,
                                   ctx: Context | None) -> requests.Response:
            # Each try (the first, and every retry after a backoff wait) first checks
            # that the stream still wants the page: one past the end, or after an
            # error, is not retried while the look-ahead closes.
            if prefetch.closing.is_set():
                raise DroppedPage(prepared.path_url)
            return self._request(prepared, ctx)

        send_ahead = self.request_decorator(request_unless_dropped)
        self.__dict__["_thread_sessions"] = sessions

        def release() -> None:
            sessions.close()
            if self.__dict__.get("_thread_sessions") is sessions:
                del self.__dict__["_thread_sessions"]

        return _LookAhead(prefetch, release, first, first_only)

    def _pages_from(self, ahead: _LookAhead, paginator: ShortPagePaginator
                    ) -> t.Iterator[tuple[requests.PreparedRequest, requests.Response]]:
        prefetch = ahead.prefetch
        self.__dict__["_prefetch"] = prefetch
        try:
            while not paginator.finished:
                try:
                    offset, prepared, response = next(prefetch)
                except StopIteration:  # a first page asked alone, and it was full
                    return
                if offset != paginator.current_value:  # cannot happen: same arithmetic
                    raise RuntimeError(f"page at offset {offset} arrived for offset "
                                       f"{paginator.current_value}")
                self._start_next_early()
                yield prepared, response
        finally:
            self.__dict__.pop("_prefetch", None)
            # The page handed out last was short or empty (the paginator is finished, or
            # request_pages stopped on the empty page): the stream has every page it
            # needs. The pages asked past its end are dropped and finish in the
            # background, so the next stream starts now instead of a round trip later
            # (common/drain.py); a failure still waits for them (settle_lookaheads).
            if paginator.finished or (
                    prefetch.delivered and self.last_page_count < paginator.page_size):
                self.lookahead_drain.add(prefetch, ahead.release)
            else:  # an error, the caller stopped early, or a full first page alone
                prefetch.close()
                ahead.release()

    # -- the next stream's first requests, sent while this one is read ---------------
    def start_early(self) -> None:
        """Send this stream's first requests now, before its sync: its first page alone
        (a stream with a bookmark) or its first `max_concurrent_requests` pages, from
        the offset its sync will start at. They depend only on the config and this
        stream's STATE entry; the sync takes them over (`_take_early`) when they are
        the very requests it would send first."""
        context = None
        with self._state_untouched():
            ahead = self._look_ahead(context, self.first_skip(context),
                                     self.max_concurrent_requests,
                                     first_only=self._has_bookmark(context))
            check = (self._first_url(context, ahead.first), ahead.first_only)
            ahead.prefetch.start()  # the first requests are prepared (and sent) now

        def close() -> None:
            ahead.prefetch.close()
            ahead.release()

        self.handover.offer(self.name, ahead, check, close)

    @contextlib.contextmanager
    def _state_untouched(self) -> t.Iterator[None]:
        """Reading this stream's STATE entry before its sync (get_context_state) must
        not create one: the STATE messages of the streams before it would show it."""
        state = self.tap_state
        had = "bookmarks" in state, self.name in state.get("bookmarks", {})
        try:
            yield
        finally:
            bookmarks = state.get("bookmarks", {})
            if not had[1] and bookmarks.get(self.name) == {}:
                del bookmarks[self.name]
            if not had[0] and bookmarks == {}:
                state.pop("bookmarks", None)

    def _take_early(self, context: Context | None, paginator: ShortPagePaginator
                    ) -> _LookAhead | None:
        handover = self._tap.__dict__.get("_alation_handover")
        if handover is None or context is not None or not handover.has(self.name):
            return None
        check = (self._first_url(context, paginator.current_value),
                 self._has_bookmark(context))
        ahead = handover.take(self.name, check)
        if ahead is None:
            self.logger.warning("Alation stream '%s': the requests sent ahead of its sync "
                                "were not the ones it needs; sent again", self.name)
        return ahead

    def _first_url(self, context: Context | None, offset: int) -> str | None:
        return self._prepare_request(context=context, page=_At(offset)).url

    def _start_next_early(self) -> None:
        """Once per sync, when no dropped page of an earlier stream is still in flight:
        the next Alation list stream in sync order sends its first requests."""
        if self.__dict__.get("_next_started", True):
            return
        if self.lookahead_drain.reap():
            return  # at most this stream's and one other stream's requests at once
        self.__dict__["_next_started"] = True
        following = self._next_stream()
        if not (isinstance(following, PagingMixin) and following.starts_early
                and following.max_concurrent_requests > 1 and not following.partitions):
            return
        try:
            following.start_early()
        except Exception as exc:  # its own sync meets the problem again, in its turn
            self.logger.debug("Alation stream '%s': not started early (%s)",
                              following.name, exc)

    #: The stream's first requests may be sent before its sync (start_early).
    starts_early = True

    def _next_stream(self) -> t.Any:
        """The next selected stream after this one in the tap's sync order, or None."""
        after = False
        for stream in self._tap.streams.values():
            if stream is self:
                after = True
            elif after and stream.selected:
                return stream
        return None

    def _per_tap(self, name: str, make: t.Callable[[], t.Any]) -> t.Any:
        """One object per tap, shared by its Alation streams (made on first use)."""
        objects = self._tap.__dict__
        if name not in objects:
            objects[name] = make()
        return objects[name]

    @property
    def handover(self) -> Handover:
        """The tap's first requests sent ahead of their streams (one per tap)."""
        return self._per_tap("_alation_handover", Handover)

    @property
    def lookahead_drain(self) -> Drain:
        """The tap's look-aheads still finishing their dropped pages (one per tap)."""
        return self._per_tap("_lookahead_drain", Drain)

    def settle_lookaheads(self, *, failed: bool = False) -> None:
        """At the end of this stream's sync: the dropped pages of earlier streams that
        have come back are cleaned up; after the last Alation stream to sync (or a
        failure) every one is waited for, and what was sent ahead for a stream that
        did not take it is closed, so no worker thread outlives the source."""
        handover = self._tap.__dict__.get("_alation_handover")
        last = failed or self._last_alation_stream()
        try:
            if handover is not None and last:
                handover.close_all()
        finally:
            drain = self._tap.__dict__.get("_lookahead_drain")
            if drain is not None:
                if last:
                    drain.join()
                else:
                    drain.reap()

    def _last_alation_stream(self) -> bool:
        """No selected Alation stream syncs after this one (the tap's stream order)."""
        after = False
        for stream in self._tap.streams.values():
            if stream is self:
                after = True
            elif after and isinstance(stream, PagingMixin) and stream.selected:
                return False
        return True

    @property
    def requests_in_flight(self) -> int:
        """Page requests sent ahead and not answered yet (for the progress line)."""
        prefetch = self.__dict__.get("_prefetch")
        return prefetch.in_flight if prefetch is not None else 0


class DroppedPage(Exception):
    """A page request given up because its page will not be used (never retried, never
    raised to the user: the look-ahead drops it)."""


class _LookAhead(t.NamedTuple):
    """A stream's pages fetched ahead: the prefetcher, what closes its sessions, the
    first offset, and whether it asks that one page only."""

    prefetch: OrderedPrefetch
    release: t.Callable[[], None]
    first: int
    first_only: bool


class _At(t.NamedTuple):
    """What `_prepare_request` reads of a paginator: the offset of the page to ask for."""

    current_value: int
