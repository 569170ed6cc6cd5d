"""Settings of the `scuba` block (Scuba, formerly Interana)."""

from __future__ import annotations

from singer_sdk import typing as th

QUERY_ENTRY = th.ObjectType(
    th.Property(
        "name",
        th.StringType,
        required=True,
        description="Stream name suffix: the stream is `scuba_<name>`.",
    ),
    th.Property(
        "query_response_id",
        th.StringType,
        description="A saved query's response id (e.g. r9372): POST /v1/query.",
    ),
    th.Property(
        "bql",
        th.StringType,
        description="A BQL query: POST /v1/query. Time-window placeholders {{start_ms}}, "
        "{{end_ms}}, {{start_s}}, {{end_s}}, {{start_iso}}, {{end_iso}} make it incremental "
        "(one query per window); without them one query per run.",
    ),
    th.Property(
        "query",
        th.ObjectType(additional_properties=True),
        description="A v1 query object (dataset, queries, group_by, ...): GET /api/v1/query. "
        "The tap fills start/end per window.",
    ),
    th.Property(
        "result_format",
        th.StringType,
        default="JSON_POWER_BI",
        allowed_values=["JSON_POWER_BI", "CSV", "DEFAULT"],
        description="Result format for query_response_id / bql entries.",
    ),
    th.Property(
        "schema",
        th.ObjectType(additional_properties=True),
        description="JSON Schema `properties` of the stream's records (snake_case names); "
        "when absent the schema is derived without spending a query (see docs/scuba.md; "
        "`python -m tap_analytics.scuba schema` prints one to pin).",
    ),
    th.Property(
        "key_properties",
        th.ArrayType(th.StringType),
        description="Override of the stream's key (default: dimensions + time bucket).",
    ),
    additional_properties=False,
)

SETTINGS = th.Property(
    "scuba",
    th.ObjectType(
        th.Property(
            "base_url",
            th.StringType,
            required=True,
            description="Cluster URL, e.g. https://my_cluster.scuba.io.",
        ),
        th.Property(
            "api_token",
            th.StringType,
            required=True,
            secret=True,
            description="Scuba/Interana API token (Authorization: Token <token>).",
        ),
        th.Property(
            "queries",
            th.ArrayType(QUERY_ENTRY),
            required=True,
            description="One stream per entry; each has exactly one of "
            "query_response_id, bql, query.",
        ),
        th.Property(
            "window_days",
            th.NumberType,
            default=1,
            description="Size of the time windows a long range is split into (days, "
            "fractions allowed). Without a past end_date only complete windows are queried.",
        ),
        th.Property(
            "min_seconds_between_queries",
            th.NumberType,
            default=1.0,
            description="Client-side limiter: seconds between the end of one query and the "
            "start of the next (+0.1 s margin; Scuba allows 1 query/s per token).",
        ),
        th.Property(
            "max_tries",
            th.IntegerType,
            default=4,
            description="Tries per query on 504/5xx/429-per-second (bounded backoff).",
        ),
        th.Property(
            "request_timeout_seconds",
            th.IntegerType,
            default=200,
            description="Seconds to wait for one query (the server gives up at 180 s).",
        ),
    ),
    description="Scuba / Interana query results. Absent: no Scuba streams.",
)
