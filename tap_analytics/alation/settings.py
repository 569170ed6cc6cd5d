"""Settings of the `alation` block (nested object in the tap config)."""

from __future__ import annotations

from singer_sdk import typing as th

SETTINGS = th.Property(
    "alation",
    th.ObjectType(
        th.Property(
            "base_url",
            th.StringType,
            required=True,
            description="Alation instance URL, e.g. https://alation.example.com "
            "(the tap appends /integration/v1/...).",
        ),
        th.Property(
            "api_token",
            th.StringType,
            required=True,
            secret=True,
            description="Alation API token, sent in the TOKEN header.",
        ),
        th.Property(
            "page_size",
            th.IntegerType,
            default=500,
            description="Records per page (the `limit` parameter of limit/skip paging).",
        ),
        th.Property(
            "result_query_ids",
            th.ArrayType(th.IntegerType),
            description="Query ids whose latest cached result rows feed "
            "`alation_query_results`.",
        ),
        th.Property(
            "max_concurrent_requests",
            th.IntegerType,
            default=4,
            description="Requests in flight at once per stream (1 to 16; 1: one at a time): "
            "list pages fetched ahead, and the next result queries' requests. While a "
            "stream's last pages are read, the next stream's first requests go out: at "
            "most twice this number at a stream boundary. Records are still emitted "
            "strictly in order.",
        ),
        th.Property(
            "max_tries",
            th.IntegerType,
            default=5,
            description="Tries per request on 5xx, 429 and dropped connections (bounded backoff).",
        ),
        th.Property(
            "request_timeout_seconds",
            th.IntegerType,
            default=300,
            description="Seconds to wait for one HTTP response.",
        ),
    ),
    description="Alation query-log metadata. Absent: no Alation streams.",
)
