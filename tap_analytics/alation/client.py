"""AlationStream: the base of every Alation stream.

TOKEN header, limit/skip paging (ends on a short page), server-side bookmark filters,
timestamp normalisation and the error taxonomy live here; leaf streams are declarative.
"""

from __future__ import annotations

import json
import re
import typing as t
from http import HTTPStatus
from urllib.parse import urlparse

from singer_sdk.exceptions import FatalAPIError
from singer_sdk.pagination import OffsetPaginator
from singer_sdk.streams.rest import HTTPRequest, PageContext

from tap_analytics.common.errors import TapAnalyticsError, one_line, redact
from tap_analytics.common.http import AnalyticsStream, body_detail
from tap_analytics.common.timeutil import normalize

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

#: A field holding a timestamp: `ts_*` (ts_executed, ts_last_saved ...) or `*_at`
#: (executed_at, finished_at). Normalised wherever it appears, nested objects included.
TIMESTAMP_FIELD = re.compile(r"^ts_|_at$")

API_PREFIX = "/integration/v1"


# The two styles Alation sends, already in UTC: a fast path before the general parser.
_FAST_TS = re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d\.\d{6})(?:Z|\+00:00)")


def normalize_ts(value: str) -> str | None:
    """normalize() with a fast path for Alation's two usual UTC styles."""
    m = _FAST_TS.fullmatch(value)
    if m:
        return f"{m.group(1)}T{m.group(2)}+00:00"
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


def normalize_at_paths(node: t.Any, paths: TsPaths) -> None:
    """Normalise, in place, the timestamp fields named by `paths` (see timestamp_paths)."""
    if isinstance(node, list):
        for item in node:
            normalize_at_paths(item, paths)
        return
    if not isinstance(node, dict):
        return
    for key, sub in paths.items():
        value = node.get(key)
        if value is None:
            continue
        if sub is True:
            if isinstance(value, str):
                try:
                    node[key] = normalize_ts(value)
                except ValueError as exc:
                    raise ValueError(f"field '{key}': {exc}") from None
        else:
            normalize_at_paths(value, sub)


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

    def __init__(self, stream: AlationStream, page_size: int) -> None:
        super().__init__(start_value=0, page_size=page_size)
        self._stream = stream

    def has_more(self, response: requests.Response) -> bool:
        # parse_response has consumed the page before the SDK advances the paginator.
        return self._stream.last_page_count >= self.page_size


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

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_page_count = 0
        self.pages_done = 0
        self.records_seen = 0

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
        return ShortPagePaginator(self, self.page_size)

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

    def filter_params(self, context: Context | None) -> dict[str, t.Any]:
        """Server-side filters: `<key>__gte=<start>` and `<key>__lt=<end_date>`."""
        params: dict[str, t.Any] = {}
        if not self.replication_key:
            return params
        start = self.starting_value(context)
        if start is not None:
            params[f"{self.replication_key}__{self.bookmark_operator}"] = start
        end_date = self.config.get("end_date")
        if end_date and self.is_timestamp_replication_key:
            params[f"{self.replication_key}__lt"] = normalize(end_date)
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
            return json.loads(response.content)
        except ValueError:
            raise TapAnalyticsError(
                f"Alation stream '{self.name}'",
                f"malformed JSON in the response to {self.url_path(response)} "
                f"(HTTP {response.status_code}, {len(response.content)} bytes: "
                f"{one_line(response.text, 80)!r})",
            ) from None

    def parse_response(self, response: requests.Response) -> t.Iterable[dict]:
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
        self.logger.info(
            "Alation stream '%s': page %d done (%d records, %d so far)",
            self.name,
            self.pages_done,
            len(payload),
            self.records_seen,
        )
        return payload

    @property
    def ts_paths(self) -> TsPaths:
        paths = self.__dict__.get("_ts_paths")
        if paths is None:
            paths = self.__dict__["_ts_paths"] = timestamp_paths(self.schema)
        return paths

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        try:
            normalize_at_paths(row, self.ts_paths)
        except ValueError as exc:
            raise TapAnalyticsError(f"Alation stream '{self.name}'", str(exc)) from None
        if self.replication_key and self.is_timestamp_replication_key:
            return self.skip_if_at_bookmark(row, context)
        return row

    def skip_if_at_bookmark(self, row: dict, context: Context | None) -> dict | None:
        """Drop a record whose replication value equals the STATE bookmark.

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
            self.__dict__["_skip_at"] = mark if mark == self.starting_value(context) else None
        mark = self.__dict__["_skip_at"]
        if mark is not None and row.get(self.replication_key) == mark:
            return None
        return row

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        self.pages_done = 0
        self.records_seen = 0
        self.__dict__.pop("_skip_at", None)
        yield from super().get_records(context)
        self.logger.info(
            "Alation stream '%s': finished after %d pages, %d records read",
            self.name,
            self.pages_done,
            self.records_seen,
        )
