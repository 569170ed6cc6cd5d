"""AlationStream: the base of every Alation stream.

TOKEN header, limit/skip paging (ends on a short page), server-side bookmark filters,
timestamp normalisation and the error taxonomy live here; leaf streams are declarative.

Paging and the mid-stream resume marker: alation/paging.py; timestamps:
alation/timestamps.py.
"""

from __future__ import annotations

import json
import time
import typing as t
from http import HTTPStatus
from urllib.parse import urlparse

import msgspec
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.streams.rest import HTTPRequest, PageContext

from tap_analytics.alation.paging import PagingMixin, ShortPagePaginator
from tap_analytics.alation.timestamps import TsPaths, compile_page_normalizer, timestamp_paths
from tap_analytics.common.errors import TapAnalyticsError, one_line, redact
from tap_analytics.common.fastsync import PartialPage
from tap_analytics.common.http import AnalyticsStream, body_detail
from tap_analytics.common.timeutil import normalize

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

API_PREFIX = "/integration/v1"

#: msgspec parses a page ~2x faster than json.loads, to the same Python values.
_MSGSPEC_DECODE = msgspec.json.Decoder().decode

class AlationStream(PagingMixin, AnalyticsStream):
    """Base for Alation list endpoints (`GET /integration/v1/...`)."""

    source_name = "Alation"
    source_config_key = "alation"

    #: Sent as `order_by` where the endpoint documents one, so limit/skip paging is stable.
    order_by: str | None = None
    #: Filter operator for the bookmark: `gte` (timestamps) or `gt` (ids).
    bookmark_operator = "gte"
    #: Statuses this stream tolerates (handled by the stream, e.g. a 404 warning).
    tolerated_statuses: frozenset[int] = frozenset()
    #: Records are parsed JSON (decode_json), timestamps normalised to strings: only
    #: JSON types (for the fast path's page check, common/fastpath.py).
    records_are_json = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_page_count = 0
        self.pages_done = 0
        self.records_seen = 0
        #: Bookkeeping of the running sync for the resume marker (see begin_run).
        self._run: dict[str, t.Any] | None = None
        self._paginator: ShortPagePaginator | None = None

    # -- request -------------------------------------------------------------------
    @property
    def url_base(self) -> str:
        base = str(self.source_config.get("base_url", "")).rstrip("/")
        # Forgive a base_url given with the API prefix already on it.
        return base if base.endswith(API_PREFIX) else base + API_PREFIX

    @property
    def http_headers(self) -> dict:
        headers = dict(super().http_headers)
        headers["TOKEN"] = str(self.source_config.get("api_token", ""))
        return headers

    @property
    def page_size(self) -> int:
        return int(self.source_config.get("page_size") or 500)

    @property
    def max_concurrent_requests(self) -> int:
        """Page requests in flight at once (alation.max_concurrent_requests; 1: sequential)."""
        return int(self.source_config.get("max_concurrent_requests") or 4)

    @property
    def requests_session(self) -> requests.Session:
        """The stream's session; in a page worker thread, that thread's own (see
        PagingMixin.page_responses: requests.Session is not thread-safe)."""
        sessions = self.__dict__.get("_thread_sessions")
        session = sessions.current() if sessions is not None else None
        return session if session is not None else super().requests_session

    def get_new_paginator(self) -> ShortPagePaginator:
        self._paginator = ShortPagePaginator(
            self, self.page_size, start_value=self.first_skip(None))
        return self._paginator

    def get_http_request(self, *, page: PageContext) -> HTTPRequest:
        """GET url?<bookmark filters>&order_by=..&limit=..&skip=.. (one place for all)."""
        params: dict[str, t.Any] = dict(self.filter_params(page.stream_context))
        if self.order_by:
            params["order_by"] = self.order_by
        params["limit"] = self.page_size
        params["skip"] = page.next_page_token or 0
        return HTTPRequest(
            url=self.get_url(page.stream_context),
            method="GET",
            headers=self.http_headers,
            params=params,
        )

    def state_bookmark(self, context: Context | None) -> t.Any:
        """The bookmark of a completed earlier run (from STATE), or None."""
        state = self.get_context_state(context)
        if state.get("replication_key") != self.replication_key:
            return None
        value = state.get("replication_key_value")
        return None if value in (None, "") else value

    def starting_value(self, context: Context | None) -> t.Any:
        """Where this run starts: the STATE bookmark, or start_date on a first sync."""
        if not self.replication_key:
            return None
        bookmark = self.state_bookmark(context)
        if not self.is_timestamp_replication_key:
            return bookmark  # batch ids: start_date does not apply
        # The later of the STATE bookmark and start_date (what the SDK does too), computed
        # here from state and config so a request can be built outside a running sync.
        try:
            candidates = [normalize(v) for v in (bookmark, self.config.get("start_date")) if v]
        except ValueError:
            raise TapAnalyticsError(
                f"Alation stream '{self.name}'",
                f"the STATE bookmark for {self.replication_key} is not a timestamp "
                f"({one_line(str(bookmark), 60)!r}): fix or remove it from the state",
            ) from None
        return max(candidates) if candidates else None

    def filter_bounds(self, context: Context | None) -> tuple[t.Any, t.Any]:
        """(start, end) of the server filter: a resume marker's, else bookmark/start_date
        and end_date. A resumed run asks for the very record set the interrupted run read."""
        marker = self.resume_marker(context)
        if marker is not None:
            return marker["filter_start"], marker["filter_end"]
        start = self.starting_value(context)
        end_date = self.config.get("end_date")
        end = normalize(end_date) if end_date and self.is_timestamp_replication_key else None
        return start, end

    def filter_params(self, context: Context | None) -> dict[str, t.Any]:
        """Server-side filters: `<key>__gte=<start>` and `<key>__lt=<end_date>`."""
        params: dict[str, t.Any] = {}
        if not self.replication_key:
            return params
        start, end = self.filter_bounds(context)
        if start is not None:
            params[f"{self.replication_key}__{self.bookmark_operator}"] = start
        if end is not None:
            params[f"{self.replication_key}__lt"] = end
        return params

    # -- response ------------------------------------------------------------------
    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status in self.tolerated_statuses:
            return
        if status == HTTPStatus.FORBIDDEN:
            raise TapAnalyticsError(
                f"Alation stream '{self.name}'",
                redact(
                    f"HTTP 403 for {self.url_path(response)}: "
                    f"{body_detail(response) or 'Forbidden'} "
                    "(check alation.api_token and the token user's permissions)",
                    self.secrets,
                ),
            )
        if status == HTTPStatus.BAD_REQUEST:
            raise FatalAPIError(self.response_error_message(response))
        if status == HTTPStatus.NOT_FOUND:
            raise FatalAPIError(
                self.response_error_message(response)
                + " (check alation.base_url: the tap appends /integration/v1/...)"
            )
        super().validate_response(response)

    def url_path(self, response: requests.Response) -> str:
        return urlparse(response.url).path or self.path or ""

    def decode_json(self, response: requests.Response) -> t.Any:
        """The JSON body, or one clear error naming the stream and the URL path."""
        try:
            try:
                return _MSGSPEC_DECODE(response.content)
            except msgspec.DecodeError:
                # lone surrogates, 1e400, NaN...: json.loads reads them as Python does
                return json.loads(response.content)
        except RecursionError:
            raise TapAnalyticsError(
                f"Alation stream '{self.name}'",
                f"the JSON in the response to {self.url_path(response)} is nested too "
                f"deeply to read (HTTP {response.status_code}, "
                f"{len(response.content)} bytes)",
            ) from None
        except ValueError:
            raise TapAnalyticsError(
                f"Alation stream '{self.name}'",
                f"malformed JSON in the response to {self.url_path(response)} "
                f"(HTTP {response.status_code}, {len(response.content)} bytes: "
                f"{one_line(response.text, 80)!r})",
            ) from None

    def parse_response(self, response: requests.Response) -> list[dict]:
        payload = self.decode_json(response)
        if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
            raise TapAnalyticsError(
                f"Alation stream '{self.name}'",
                f"expected a JSON list of objects from {self.url_path(response)}, "
                f"got {type(payload).__name__}",
            )
        self.last_page_count = len(payload)
        self.pages_done += 1
        self.records_seen += len(payload)
        if self._run is not None and self._paginator is not None:
            page_skip = self._paginator.current_value
            self.checkpoint(page_skip)
            if payload:
                self._run["last_key"] = self._key_of(payload[-1])
            if page_skip == self._run["start_skip"]:
                payload = self._overlap(payload)
        elapsed = max(time.monotonic() - self.__dict__.get("_started", time.monotonic()), 1e-6)
        self.logger.info(
            "Alation stream '%s': page %d done (%d records, %d so far, %.0f records/s, "
            "%.1f pages/s, %d requests in flight)",
            self.name,
            self.pages_done,
            self.last_page_count,
            self.records_seen,
            self.records_seen / elapsed,
            self.pages_done / elapsed,
            self.requests_in_flight,
        )
        return payload

    @property
    def ts_paths(self) -> TsPaths:
        paths = self.__dict__.get("_ts_paths")
        if paths is None:
            paths = self.__dict__["_ts_paths"] = timestamp_paths(self.schema)
        return paths

    def _post_process_plan(self) -> tuple[t.Callable[[list], None], str | None, bool]:
        """(the compiled timestamp normaliser of a page, the replication key, whether it
        is a timestamp): looked up once per sync of the stream (reset in
        get_record_pages), not per record."""
        plan = self.__dict__.get("_pp_plan")
        if plan is None:
            key = self.replication_key or None
            plan = (compile_page_normalizer(self.ts_paths), key,
                    bool(key and self.is_timestamp_replication_key))
            self.__dict__["_pp_plan"] = plan
        return plan

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        try:
            page = self.post_process_page([row], context)
        except PartialPage as partial:
            raise partial.error from None
        return page[0] if page else None

    def post_process_page(self, rows: list[dict], context: Context | None = None
                          ) -> list[dict]:
        """`post_process` of each row of a page, at once: timestamps normalised, the rows
        sitting on the STATE bookmark dropped, the resume marker's highest value kept. A
        bad row raises PartialPage with the rows before it (emitted first)."""
        normalize_page, key, timestamp_key = self._post_process_plan()
        try:
            normalize_page(rows)
        except ValueError:
            good = []
            for row in rows:  # again row by row, to find the bad one
                try:
                    normalize_page([row])
                except ValueError as exc:
                    raise PartialPage(self._kept(good, key, timestamp_key, context),
                                      TapAnalyticsError(
                        f"Alation stream '{self.name}'",
                        f"{exc} (in a record from "
                        f"{urlparse(self.url_base).path}{self.path or ''})",
                    )) from None
                good.append(row)
        return self._kept(rows, key, timestamp_key, context)

    def _kept(self, rows: list[dict], key: str | None, timestamp_key: bool,
              context: Context | None) -> list[dict]:
        """The rows to emit (not on the STATE bookmark); the highest replication value
        emitted so far goes to the resume marker's bookkeeping."""
        mark = self.bookmark_mark(context) if timestamp_key and rows else None
        kept = rows if mark is None else [row for row in rows if row.get(key) != mark]
        run = self._run
        if run is not None and key and kept:
            # Records come unsorted: normalised timestamps compare as strings, ids as ints.
            values = [value for row in kept if (value := row.get(key)) is not None]
            top = run["max_value"]
            if values:
                high = max(values)
                run["max_value"] = high if top is None or high > top else top
        return kept

    def bookmark_mark(self, context: Context | None) -> str | None:
        """The replication value of records to drop: the STATE bookmark, when this run
        filters on it (worked out once per sync of the stream, at its first page).

        The server filter is `__gte`, so it sends the records sitting exactly on the
        bookmark again. The bookmark is the highest value of a run that completed: every
        record with that value was emitted by it, so re-emitting them would only make a
        no-change run emit duplicates. (A record created later with the very same
        microsecond timestamp is the one case this skips; Alation timestamps carry
        microseconds, and `__gt` would have the same blind spot.)
        """
        if "_skip_at" not in self.__dict__:
            raw = self.state_bookmark(context)
            # Only a bookmark from STATE (not start_date) marks records already emitted.
            # Both are in normalize()'s fixed format, so string equality is instant equality.
            mark = normalize(raw) if raw is not None else None
            # The start this run filters on (a resumed run: the interrupted run's).
            self.__dict__["_skip_at"] = mark if mark == self.filter_bounds(context)[0] else None
        return self.__dict__["_skip_at"]

    def request_records(self, context: Context | None) -> t.Iterable[dict]:
        for page in self.request_pages(context):
            yield from page

    def get_record_pages(self, context: Context | None) -> t.Iterator[list[dict]]:
        """The records of this stream, a page (one response) at a time, with the resume
        bookkeeping around them. `get_records` is this, flattened; the tap's page loop
        (common/fastsync.py) syncs the pages whole."""
        self.pages_done = 0
        self.records_seen = 0
        self.__dict__["_started"] = time.monotonic()
        self.__dict__.pop("_skip_at", None)
        self.__dict__.pop("_pp_plan", None)
        try:
            if not self.resumable:
                yield from self.request_pages(context)
            else:
                self.begin_run(context)
                try:
                    yield from self.request_pages(context)
                except BaseException:
                    self._run = None  # the marker of the last checkpoint stays in STATE
                    raise
                self.end_run(context)
        except BaseException:
            self.settle_lookaheads(failed=True)
            raise
        self.settle_lookaheads()
        self.logger.info(
            "Alation stream '%s': finished after %d pages, %d records read",
            self.name,
            self.pages_done,
            self.records_seen,
        )

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        for page in self.get_record_pages(context):
            yield from page
