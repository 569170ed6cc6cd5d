"""Record schemas of the Alation streams (inline, from the API doc's sample responses)."""

from __future__ import annotations

from singer_sdk import typing as th

S = th.StringType
I = th.IntegerType  # noqa: E741
B = th.BooleanType
N = th.NumberType
DT = th.DateTimeType


def _obj(*props: th.Property) -> th.ObjectType:
    return th.ObjectType(*props)


DATASOURCE = _obj(
    th.Property("id", I),
    th.Property("title", S),
    th.Property("url", S),
    th.Property("uri", S),
)

LATEST_SESSION = _obj(
    th.Property("id", I),
    th.Property("client_session_id", S),
    th.Property("query_id", I),
    th.Property("ts_start", DT),
    th.Property("sandbox_id", S),
    th.Property("batch_ids", th.ArrayType(I)),
)

SCHEDULE = _obj(
    th.Property("enabled", B),
    th.Property("cron_expression", S),
    th.Property("ts_last_attempt", DT),
    th.Property("overdue", B),
    th.Property("ts_next_run", DT),
    th.Property("celery_queue", S),
    th.Property("celery_task_name", S),
    th.Property("user", _obj(th.Property("username", S), th.Property("is_active", B))),
    th.Property(
        "db_connection",
        _obj(
            th.Property("uri", S),
            th.Property("username", S),
            th.Property("ts_modified", DT),
            th.Property("ts_last_used", DT),
        ),
    ),
    th.Property("latest_session", LATEST_SESSION),
)

TAG = _obj(
    th.Property("id", I),
    th.Property("name", S),
    th.Property("description", S),
    th.Property("ts_created", DT),
    th.Property("url", S),
    th.Property("ts_updated", DT),
)

DOMAIN = _obj(th.Property("id", I), th.Property("title", S), th.Property("description", S))

QUERIES = th.PropertiesList(
    th.Property("id", I, required=True),
    th.Property("datasource_id", I),
    th.Property("title", S),
    th.Property("description", S),
    th.Property("autosave_content", S),
    th.Property("content", S),
    th.Property("saved", B),
    th.Property("published", B),
    th.Property("url", S),
    th.Property("datasource", DATASOURCE),
    th.Property("ts_last_saved", DT),
    th.Property("has_unsaved_changes", B),
    th.Property("catalog_url", S),
    th.Property("compose_url", S),
    th.Property("tags", th.ArrayType(TAG)),
    th.Property("domains", th.ArrayType(DOMAIN)),
    th.Property("schedules", th.ArrayType(SCHEDULE)),
).to_dict()

EXECUTION_SESSIONS = th.PropertiesList(
    th.Property("id", I, required=True),
    th.Property("client_session_id", S),
    th.Property("query_id", I),
    th.Property("ts_start", DT),
    th.Property("sandbox_id", S),
    th.Property("is_scheduled", B),
    th.Property("batch_ids", th.ArrayType(I)),
).to_dict()

EXECUTION_BATCHES = th.PropertiesList(
    th.Property("id", I, required=True),
    th.Property("query_id", I),
    th.Property("session_id", I),
    th.Property(
        "events",
        th.ArrayType(_obj(th.Property("id", I), th.Property("index_in_batch", I))),
    ),
).to_dict()

RESULT = _obj(
    th.Property("id", I),
    th.Property("title", S),
    th.Property("ts_created", DT),
    th.Property("row_count", I),
    th.Property("byte_count", I),
    th.Property("ts_expiration", DT),
    th.Property("truncated", B),
    th.Property("expired", B),
    th.Property("deleted", B),
    th.Property("url", S),
    th.Property("storage_status", S),
    th.Property(
        "data_schema",
        th.ArrayType(
            _obj(
                th.Property("norm_type", S),
                th.Property("type", S),
                th.Property("original_name", S),
                th.Property("name", S),
            )
        ),
    ),
    th.Property(
        "query",
        _obj(th.Property("id", I), th.Property("title", S), th.Property("description", S)),
    ),
)

EXECUTION_EVENTS = th.PropertiesList(
    th.Property("id", I, required=True),
    th.Property("result", RESULT),
    th.Property("num_result_rows", I),
    th.Property("execution_error", S),
    th.Property("canceled", B),
    th.Property("ts_executed", DT),
    th.Property("elapsed_seconds", N),
    th.Property("index_in_batch", I),
    th.Property("batch_id", I),
    th.Property("session_id", I),
    th.Property("query_id", I),
    th.Property("db_username", S),
    th.Property("statement_content", S),
    th.Property("datasource", DATASOURCE),
).to_dict()

SCHEDULED_RUNS = th.PropertiesList(
    th.Property("task_id", S, required=True),
    th.Property("session_id", I),
    th.Property("query_id", I),
    th.Property("query_title", S),
    th.Property("ts_sent_to_broker", DT),
    th.Property("ts_prerun", DT),
    th.Property("ts_postrun", DT),
).to_dict()

QUERY_RESULTS = th.PropertiesList(
    th.Property("result_id", I, required=True),
    th.Property("row_number", I, required=True, description="1 = first row after the header"),
    th.Property("query_id", I, required=True),
    th.Property(
        "row",
        th.ObjectType(additional_properties=S),
        description="The CSV row keyed by the CSV header; values are the CSV's strings.",
    ),
    th.Property("truncated", B, description="Alation stored only part of the result"),
    th.Property("executed_at", DT),
    th.Property("finished_at", DT),
    th.Property("seconds_taken", N),
    th.Property("canceled", B),
    th.Property("finished", B),
    th.Property("execution_error", S),
).to_dict()
