"""AlationStream: the base of every Alation stream.

TOKEN header, limit/skip paging (ends on a short page), server-side bookmark filters,
timestamp normalisation and the error taxonomy live here; leaf streams are declarative.

Mid-stream resume: the list endpoints have no usable order for the bookmarks, so the
bookmark only moves when a stream completes. After every fully emitted page the stream
writes a STATE whose stream entry carries a `resume` marker (the filters this run uses, the
offset of the next page, the last record of the page before, the highest value emitted so
far); a run killed mid-stream and re-run from that STATE reads the same record set from one
page before that offset, and drops the records of that overlap page up to the recorded last
record. See `AlationStream.checkpoint` and docs/alation.md.
"""

from __future__ import annotations

import json
import re
import time
import typing as t
from http import HTTPStatus
from urllib.parse import urlparse

import msgspec
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.pagination import OffsetPaginator
from singer_sdk.singerlib.catalog import REPLICATION_INCREMENTAL
from singer_sdk.streams.rest import HTTPRequest, PageContext

from tap_analytics.common.errors import TapAnalyticsError, one_line, redact
from tap_analytics.common.fastsync import PartialPage
from tap_analytics.common.http import AnalyticsStream, body_detail
from tap_analytics.common.timeutil import normalize

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

#: A field holding a timestamp: `ts_*` (ts_executed, ts_last_saved ...) or `*_at`
#: (executed_at, finished_at). Normalised wherever it appears, nested objects included.
TIMESTAMP_FIELD = re.compile(r"^ts_|_at$")

API_PREFIX = "/integration/v1"

#: msgspec parses a page ~2x faster than json.loads, to the same Python values.
_MSGSPEC_DECODE = msgspec.json.Decoder().decode

#: The key of the mid-stream resume marker in a stream's STATE entry.
RESUME_KEY = "resume"


# The two styles Alation sends, already in UTC: a fast path before the general parser.
# (ASCII digits only: `\d` would also match other scripts' digits, which normalize()
# converts.) Both are 27 or 32 characters: "YYYY-MM-DD[T ]HH:MM:SS.ffffff(Z|+00:00)".
# Only values that are certainly valid take it (days 01-28, months 01-12, ...): days
# 29-31 and anything odd go to normalize(), which rejects an impossible date.
_FAST_TS = re.compile(
    r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}(?:Z|\+00:00)"
)
_fast_ts_match = _FAST_TS.fullmatch


def normalize_ts(value: str) -> str | None:
    """normalize() with a fast path for Alation's two usual UTC styles."""
    if _fast_ts_match(value) is not None:
        if len(value) == 32 and value[10] == "T":
            return value  # already in the tap's format
        return value[:10] + "T" + value[11:26] + "+00:00"
    return normalize(value)


TsPaths = dict[str, t.Any]


def timestamp_paths(schema: dict) -> TsPaths:
    """Where the date-time fields of a schema are: {field: True | {sub paths}}.

    Arrays and objects are walked the same way (a list node applies to each item).
    """
    paths: TsPaths = {}
    for name, prop in (schema.get("properties") or {}).items():
        if prop.get("format") == "date-time":
            paths[name] = True
            continue
        node = prop.get("items", prop) if "array" in _types(prop) else prop
        if "object" in _types(node):
            sub = timestamp_paths(node)
            if sub:
                paths[name] = sub
    return paths


def _types(prop: dict) -> list[str]:
    type_ = prop.get("type") or []
    return [type_] if isinstance(type_, str) else list(type_)


def _dicts_in(values: list) -> list[dict]:
    """The dicts among `values`, lists walked (lists of objects, lists of lists)."""
    out: list[dict] = []
    for value in values:
        if value.__class__ is dict:
            out.append(value)
        elif isinstance(value, list):
            out.extend(_dicts_in(value))
        elif isinstance(value, dict):
            out.append(value)
    return out


def compile_page_normalizer(paths: TsPaths) -> t.Callable[[list], None]:
    """Normalise, in place, the timestamp fields named by `paths` (see timestamp_paths)
    of every row of a page: `normalize_page(rows)`, compiled once per stream, one field
    at a time over all rows (nested objects, in lists too: over all of them at once);
    other values are left alone. A bad value raises ValueError naming its field, maybe
    after other rows were normalised: a caller finds the bad row by running it again a
    row at a time (`normalize_page([row])`; a normalised value is given back unchanged)."""
    steps = [(key, None if sub is True else compile_page_normalizer(sub))
             for key, sub in paths.items()]
    fast_match = _fast_ts_match

    def normalize_page(rows: list) -> None:
        if not all(row.__class__ is dict for row in rows):
            rows = _dicts_in(rows)
        for key, sub in steps:
            if sub is not None:
                nested = [value for row in rows if (value := row.get(key)) is not None]
                if nested:
                    sub(nested)
                continue
            for row in rows:
                value = row.get(key)
                if value is None:
                    continue
                if value.__class__ is str and fast_match(value) is not None:
                    if len(value) != 32 or value[10] != "T":
                        row[key] = value[:10] + "T" + value[11:26] + "+00:00"
                elif isinstance(value, str):
                    try:
                        row[key] = normalize_ts(value)
                    except ValueError as exc:
                        raise ValueError(f"field '{key}': {exc}") from None

    return normalize_page


def normalize_timestamps(node: t.Any) -> t.Any:
    """Normalise every timestamp field of a record, in place, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and TIMESTAMP_FIELD.search(key):
                try:
                    node[key] = normalize_ts(value)
                except ValueError as exc:
                    raise ValueError(f"field '{key}': {exc}") from None
            elif isinstance(value, (dict, list)):
                normalize_timestamps(value)
    elif isinstance(node, list):
        for item in node:
            normalize_timestamps(item)
    return node


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


class AlationStream(AnalyticsStream):
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
            "Alation stream '%s': page %d done (%d records, %d so far, %.0f records/s)",
            self.name,
            self.pages_done,
            self.last_page_count,
            self.records_seen,
            self.records_seen / elapsed,
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

    def request_pages(self, context: Context | None) -> t.Iterator[list[dict]]:
        """The SDK's `RESTStream.request_records` (singer-sdk 0.54.9), one list of
        records per response instead of one record at a time: the same paginator calls,
        request counter, sync costs and stop on an empty page. Only the private
        `_prepare_request` of the SDK is called (this stream has no `prepare_request`)."""
        paginator = self.get_new_paginator()
        decorated_request = self.request_decorator(self._request)
        pages = 0
        with self.get_http_request_counter() as request_counter:
            request_counter.with_context(context)
            while not paginator.finished:
                prepared_request = self._prepare_request(context=context, page=paginator)
                resp = decorated_request(prepared_request, context)
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
        self.logger.info(
            "Alation stream '%s': finished after %d pages, %d records read",
            self.name,
            self.pages_done,
            self.records_seen,
        )

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        for page in self.get_record_pages(context):
            yield from page
