"""The three kinds of `scuba.queries` entry, nearly declarative."""

from __future__ import annotations

import typing as t

from singer_sdk.streams.rest import HTTPRequest, PageContext

from tap_analytics.scuba import parsers
from tap_analytics.scuba.client import ScubaStream, compact_json
from tap_analytics.scuba.windows import render_bql


class SavedQueryStream(ScubaStream):
    """`query_response_id`: POST /v1/query re-runs a query saved in the UI (full table)."""

    path = "/v1/query"
    http_method = "POST"
    payload_as_json = True

    def request_body(self) -> dict[str, t.Any]:
        return {"query_response_id": self.entry.value}

    def prepare_request_payload(self, context: t.Any, next_page_token: t.Any) -> dict:
        return {
            **self.request_body(),
            "return_type": "data",
            "result_format": self.entry.result_format,
        }

    def parse_answer(self, body: bytes) -> t.Iterable[dict[str, t.Any]]:
        return parsers.parse_post(body, self.entry.result_format)


class BqlStream(SavedQueryStream):
    """`bql`: POST /v1/query with a BQL text; `{{start_ms}}`-style placeholders make it
    windowed (incremental), without them it is one query per run (full table)."""

    def request_body(self) -> dict[str, t.Any]:
        bql = self.entry.value
        if self._window is not None:
            bql = render_bql(bql, self._window)
        return {"bql": bql}


class LegacyQueryStream(ScubaStream):
    """`query`: GET /api/v1/query?query=<url-encoded JSON>, start/end filled per window."""

    path = "/api/v1/query"
    http_method = "GET"

    def get_http_request(self, *, page: PageContext) -> HTTPRequest:
        request = super().get_http_request(page=page)
        query = dict(self.entry.value)
        if self._window is not None:
            query["start"] = self._window.start_ms
            query["end"] = self._window.end_ms
        request.params = {"query": compact_json(query)}
        return request

    def parse_answer(self, body: bytes) -> t.Iterable[dict[str, t.Any]]:
        return parsers.flatten_v1(body)


STREAM_CLASSES: dict[str, type[ScubaStream]] = {
    "query_response_id": SavedQueryStream,
    "bql": BqlStream,
    "query": LegacyQueryStream,
}
