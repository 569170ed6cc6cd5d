"""(c) A stock singer-sdk tap for the same endpoint: RESTStream, no fast path.

    python -m benchmarks.stock_tap --config CONFIG.json > out

What the SDK's cookiecutter template gives: a RESTStream with the same schema, the same
limit/skip paging (the SDK's OffsetPaginator), the TOKEN header, the SDK's default message
writer and per-record path. No timestamp normalisation (the tap does more work per
record than this stream).
"""

from __future__ import annotations

import typing as t

from singer_sdk import RESTStream, Tap
from singer_sdk import typing as th
from singer_sdk.pagination import OffsetPaginator

from tap_analytics.alation.schemas import EXECUTION_EVENTS


class StockEvents(RESTStream):
    name = "alation_execution_events"
    path = "/query/execution_event/"
    primary_keys = ("id",)
    replication_key = "ts_executed"
    schema = EXECUTION_EVENTS
    records_jsonpath = "$[*]"

    @property
    def url_base(self) -> str:
        return self.config["base_url"].rstrip("/") + "/integration/v1"

    @property
    def http_headers(self) -> dict:
        return {"TOKEN": self.config["api_token"]}

    def get_new_paginator(self) -> OffsetPaginator:
        # The SDK's own paginator: an empty page ends paging (one extra request).
        return OffsetPaginator(start_value=0, page_size=self.config["page_size"])

    def get_url_params(self, context: t.Any, next_page_token: t.Any) -> dict:
        params = {"limit": self.config["page_size"], "skip": next_page_token or 0,
                  "order_by": "ts_executed"}
        start = self.get_starting_replication_key_value(context)
        if start:
            params["ts_executed__gte"] = start
        return params


class StockTap(Tap):
    name = "tap-stock-bench"
    config_jsonschema = th.PropertiesList(
        th.Property("base_url", th.StringType, required=True),
        th.Property("api_token", th.StringType, required=True, secret=True),
        th.Property("page_size", th.IntegerType, default=500),
        th.Property("start_date", th.DateTimeType),
    ).to_dict()

    def discover_streams(self) -> list[RESTStream]:
        return [StockEvents(self)]


if __name__ == "__main__":
    StockTap.cli()
