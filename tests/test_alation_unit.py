"""Alation units without a server: exact requests from state, config checks, the CSV parser."""

from __future__ import annotations

import csv
import datetime as dt
import io
import typing as t

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from singer_sdk.streams.rest import PageContext

from tap_analytics.alation.parsers import CSVFormatError, parse_result_csv
from tap_analytics.common.errors import ConfigError
from tap_analytics.tap import TapAnalytics

TOKEN = "unit-test-token-93kd"
BASE = {"base_url": "https://alation.example.com/", "api_token": TOKEN, "page_size": 250}


def make_tap(state: dict | None = None, **config: t.Any) -> TapAnalytics:
    cfg = {"start_date": "2024-01-01T00:00:00Z", "alation": dict(BASE), **config}
    return TapAnalytics(config=cfg, state=state, parse_env_config=False)


def bookmark(stream: str, key: str, value: t.Any) -> dict:
    return {"bookmarks": {stream: {"replication_key": key, "replication_key_value": value}}}


def request_of(tap: TapAnalytics, stream: str, skip: int = 0) -> t.Any:
    return tap.streams[stream].get_http_request(
        page=PageContext(stream_context=None, next_page_token=skip))


def test_first_sync_starts_at_start_date_and_stops_at_end_date() -> None:
    tap = make_tap(end_date="2024-02-01T00:00:00Z")
    req = request_of(tap, "alation_execution_events", skip=500)
    assert req.url == "https://alation.example.com/integration/v1/query/execution_event/"
    assert req.method == "GET"
    assert req.headers["TOKEN"] == TOKEN
    assert req.params == {
        "ts_executed__gte": "2024-01-01T00:00:00.000000+00:00",
        "ts_executed__lt": "2024-02-01T00:00:00.000000+00:00",
        "limit": 250,
        "skip": 500,
    }
    # '+' must travel as %2B: a raw '+' is a space to the server.
    assert "ts_executed__gte=2024-01-01T00%3A00%3A00.000000%2B00%3A00" in req.encode_params()


def test_state_bookmark_wins_over_an_older_start_date_and_is_normalised() -> None:
    state = bookmark("alation_execution_sessions", "ts_start", "2024-03-05 10:11:12.5+00:00")
    req = request_of(make_tap(state), "alation_execution_sessions")
    assert req.params == {"ts_start__gte": "2024-03-05T10:11:12.500000+00:00",
                          "limit": 250, "skip": 0}


def test_a_later_start_date_wins_over_an_old_bookmark() -> None:
    state = bookmark("alation_scheduled_runs", "ts_sent_to_broker",
                     "2023-06-01T00:00:00.000000+00:00")
    req = request_of(make_tap(state, start_date="2024-01-02T03:04:05Z"),
                     "alation_scheduled_runs")
    assert req.params == {"ts_sent_to_broker__gte": "2024-01-02T03:04:05.000000+00:00",
                          "order_by": "ts_sent_to_broker", "limit": 250, "skip": 0}


def test_queries_are_ordered_by_id_for_stable_paging() -> None:
    state = bookmark("alation_queries", "ts_last_saved", "2024-01-09T00:00:00.000001+00:00")
    req = request_of(make_tap(state), "alation_queries", skip=250)
    assert req.url.endswith("/integration/v1/query/")
    assert req.params == {"ts_last_saved__gte": "2024-01-09T00:00:00.000001+00:00",
                          "order_by": "id", "limit": 250, "skip": 250}


def test_batches_filter_on_id_greater_than_the_bookmark_only() -> None:
    state = bookmark("alation_execution_batches", "id", 4711)
    req = request_of(make_tap(state, end_date="2024-02-01T00:00:00Z"),
                     "alation_execution_batches")
    assert req.params == {"id__gt": 4711, "limit": 250, "skip": 0}
    # First sync: no id filter; start_date/end_date do not apply to ids.
    first = request_of(make_tap(), "alation_execution_batches")
    assert first.params == {"limit": 250, "skip": 0}


def test_records_on_the_state_bookmark_are_skipped_but_not_on_start_date() -> None:
    state = bookmark("alation_execution_events", "ts_executed",
                     "2024-01-05T00:00:00.250000+00:00")
    stream = make_tap(state).streams["alation_execution_events"]
    on_mark = {"id": 1, "ts_executed": "2024-01-05 00:00:00.25+00:00"}
    later = {"id": 2, "ts_executed": "2024-01-05T00:00:00.250001Z"}
    assert stream.post_process(dict(on_mark)) is None
    kept = stream.post_process(dict(later))
    assert kept is not None and kept["ts_executed"] == "2024-01-05T00:00:00.250001+00:00"
    # Without state, a record exactly at start_date was never emitted: keep it.
    fresh = make_tap(start_date="2024-01-05T00:00:00.25Z").streams["alation_execution_events"]
    assert fresh.post_process(dict(on_mark)) is not None


def test_nested_timestamps_are_normalised() -> None:
    stream = make_tap().streams["alation_queries"]
    rec = {"id": 3, "ts_last_saved": "2018-01-23T00:00:00.123456Z",
           "schedules": [{"ts_next_run": "2018-01-24 08:17:00.5+00:00",
                          "latest_session": {"ts_start": "2018-01-23T08:17:00Z",
                                             "client_session_id": "2018-01-23T01:17Z#0a"}}]}
    out = stream.post_process(rec)
    assert out is not None
    assert out["ts_last_saved"] == "2018-01-23T00:00:00.123456+00:00"
    assert out["schedules"][0]["ts_next_run"] == "2018-01-24T08:17:00.500000+00:00"
    assert out["schedules"][0]["latest_session"]["ts_start"] == "2018-01-23T08:17:00.000000+00:00"
    assert out["schedules"][0]["latest_session"]["client_session_id"] == "2018-01-23T01:17Z#0a"


def test_key_properties_are_not_nullable() -> None:
    tap = make_tap()
    for stream in tap.streams.values():
        if not stream.name.startswith("alation_"):
            continue
        for key in stream.primary_keys:
            type_ = stream.schema["properties"][key]["type"]
            assert "null" not in (type_ if isinstance(type_, list) else [type_]), (
                stream.name, key)


def test_no_alation_block_no_alation_streams() -> None:
    tap = TapAnalytics(config={"start_date": "2024-01-01T00:00:00Z"}, parse_env_config=False)
    assert not [name for name in tap.streams if name.startswith("alation_")]


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"base_url": "ftp://alation.example.com"}, "alation.base_url"),
        ({"base_url": "alation.example.com"}, "alation.base_url"),
        ({"api_token": ""}, "alation.api_token"),
        ({"page_size": 0}, "alation.page_size"),
        ({"page_size": 100_001}, "alation.page_size"),
        ({"result_query_ids": [15, "16"]}, "alation.result_query_ids"),
        ({"result_query_ids": [True]}, "alation.result_query_ids"),
    ],
)
def test_a_broken_block_names_the_setting_never_the_token(change: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        TapAnalytics(config={"alation": {**BASE, **change}}, parse_env_config=False)
    assert f"'{setting}" in str(info.value)
    assert TOKEN not in str(info.value)


# -- the CSV parser --------------------------------------------------------------
def test_csv_quotes_commas_newlines_and_strings_stay_strings() -> None:
    text = 'flag,count,name\nfalse,0,"Smith, ""Jr"""\nTrue,,"two\nlines"\n'
    assert list(parse_result_csv(text)) == [
        {"flag": "false", "count": "0", "name": 'Smith, "Jr"'},
        {"flag": "True", "count": "", "name": "two\nlines"},
    ]


def test_csv_edge_cases() -> None:
    assert list(parse_result_csv("")) == []
    assert list(parse_result_csv("only,header\n")) == []
    assert list(parse_result_csv("\ufeffa,a,\n1,2,3\r\n")) == [
        {"a": "1", "a_2": "2", "column_3": "3"}]
    with pytest.raises(CSVFormatError, match="row 2 has 1 fields"):
        list(parse_result_csv("a,b\n1,2\n3\n"))


@settings(max_examples=60, deadline=None)
@given(st.lists(
    st.lists(st.text(alphabet=st.characters(blacklist_characters="\x00",
                                            blacklist_categories=("Cs",))),
             min_size=3, max_size=3),
    max_size=6,
))
def test_csv_round_trip(rows: list[list[str]]) -> None:
    header = ["h1", "h 2", "h,3"]
    buf = io.StringIO()
    # Default "\r\n" terminator: the writer then quotes any field holding \r or \n.
    csv.writer(buf).writerows([header, *rows])
    assert list(parse_result_csv(buf.getvalue())) == [dict(zip(header, r)) for r in rows]


# -- the schemas cover the doc's sample responses --------------------------------------
DOC_SAMPLES = {
    "alation_queries": {
        "datasource_id": 1, "autosave_content": "SELECT 1;", "content": "SELECT 1;",
        "saved": True, "published": False, "url": "/integration/query/123/", "id": 123,
        "title": "Query Title", "description": "Query description.",
        "datasource": {"title": "Datasource Title", "id": 1, "url": "/data/1/",
                       "uri": "dbtype://server:port/?param=val"},
        "ts_last_saved": "2018-01-23T00:00:00.123456Z", "has_unsaved_changes": False,
        "catalog_url": "/query/123/", "compose_url": "/compose/query/123/",
        "domains": [{"title": "domain title", "id": 1, "description": "domain description"}],
        "tags": [{"id": 1, "name": "@tag_name", "description": "tag description",
                  "ts_created": "2024-04-12T11:58:56.176079Z", "url": "/tag/1/",
                  "ts_updated": "2024-04-12T12:03:40.884535Z"}],
        "schedules": [{
            "enabled": False, "cron_expression": "17 1 * * *",
            "ts_last_attempt": "2018-01-23T08:17:00.123456Z", "overdue": False,
            "ts_next_run": "2018-01-24T08:17:00.123456Z", "celery_queue": "run_scheduling",
            "celery_task_name": "rosemeta.tasks.query_scheduling.run_query_123",
            "user": {"username": "someone@example.com", "is_active": True},
            "db_connection": {"uri": "dbtype://server:port/?param=val",
                              "username": "dbusername",
                              "ts_modified": "2018-01-01T15:00:00.123456Z",
                              "ts_last_used": "2018-01-23T08:17:00.123456Z"},
            "latest_session": {"id": 1234, "client_session_id": "2018-01-23T01:17:00Z#0a1b",
                               "query_id": 123, "ts_start": "2018-01-23T08:17:00.123456Z",
                               "sandbox_id": "schedule-123", "batch_ids": [1234]}}],
    },
    "alation_execution_sessions": {
        "id": 1234, "client_session_id": "2018-01-23T01:17:00.123456Z#0a1b3c4d",
        "query_id": 123, "ts_start": "2018-01-23T08:17:00.123456Z",
        "sandbox_id": "schedule-123", "is_scheduled": True, "batch_ids": [1234]},
    "alation_execution_batches": {
        "id": 1, "query_id": 1, "session_id": 1, "events": [{"id": 1, "index_in_batch": 0}]},
    "alation_execution_events": {
        "id": 12345,
        "result": {"id": 12345, "title": "Result Title",
                   "ts_created": "2018-01-23T08:17:00.123456Z", "row_count": 250000,
                   "byte_count": 17500000, "ts_expiration": "2018-02-23T08:17:00.123456Z",
                   "truncated": False, "expired": False, "deleted": False,
                   "url": "/execution_result/12345/", "storage_status": "STORED_PART",
                   "data_schema": [{"norm_type": "INT", "type": "int",
                                    "original_name": "x.y", "name": "y"}],
                   "query": {"id": 123, "title": "Query Title",
                             "description": "Query description."}},
        "num_result_rows": 250000, "execution_error": None, "canceled": False,
        "ts_executed": "2018-01-23T08:17:00.123456Z", "elapsed_seconds": 7.654321,
        "index_in_batch": 0, "batch_id": 1234, "session_id": 1234, "query_id": 123,
        "db_username": "alation", "statement_content": "select * from default.employee",
        "datasource": {"title": "Datasource Title", "id": 1, "url": "/data/1/",
                       "uri": "dbtype://server:port/?param=val"}},
    "alation_scheduled_runs": {
        "session_id": 1234, "query_id": 123, "query_title": "Query Title",
        "task_id": "af406fcd-8c9d-4837-a34e-5b5e88eca923",
        "ts_sent_to_broker": "2018-01-23T08:17:00.123456Z", "ts_prerun": None,
        "ts_postrun": None},
}


def _missing(sample: t.Any, schema: dict, path: str = "") -> list[str]:
    """Sample fields the schema does not declare (at any depth)."""
    out: list[str] = []
    if isinstance(sample, dict):
        props = schema.get("properties") or {}
        for key, value in sample.items():
            if key not in props:
                out.append(f"{path}.{key}")
            else:
                out += _missing(value, props[key], f"{path}.{key}")
    elif isinstance(sample, list):
        for item in sample:
            out += _missing(item, schema.get("items") or {}, f"{path}[]")
    return out


@pytest.mark.parametrize("stream_name", sorted(DOC_SAMPLES))
def test_schemas_declare_every_field_of_the_docs_samples(stream_name: str) -> None:
    stream = make_tap().streams[stream_name]
    assert _missing(DOC_SAMPLES[stream_name], stream.schema) == []
    # and every timestamp of the sample comes out normalised
    out = stream.post_process(json_copy(DOC_SAMPLES[stream_name]))
    assert out is not None
    text = str(out)
    assert "Z'" not in text
    assert ("123456+00:00" in text) == (stream_name != "alation_execution_batches")


def json_copy(obj: t.Any) -> t.Any:
    import json  # noqa: PLC0415

    return json.loads(json.dumps(obj))


def test_base_url_with_or_without_the_api_prefix() -> None:
    for base in ("https://a.example.com", "https://a.example.com/",
                 "https://a.example.com/integration/v1/"):
        tap = TapAnalytics(config={"alation": {**BASE, "base_url": base}},
                           parse_env_config=False)
        req = request_of(tap, "alation_queries")
        assert req.url == "https://a.example.com/integration/v1/query/"


def test_a_broken_state_bookmark_is_one_clear_error() -> None:
    from tap_analytics.common.errors import TapAnalyticsError  # noqa: PLC0415

    state = bookmark("alation_queries", "ts_last_saved", "last tuesday")
    with pytest.raises(TapAnalyticsError, match=r"alation_queries.*STATE bookmark.*not a"):
        request_of(make_tap(state), "alation_queries")


@pytest.mark.parametrize("value", [
    "2024-02-30T00:00:00.000000Z",
    "2023-02-29 00:00:00.000000+00:00",
    "2024-13-01T00:00:00.000000Z",
    "2024-01-01T24:00:00.000000Z",
    "0000-01-01T00:00:00.000000Z",
])
def test_the_timestamp_fast_path_never_lets_an_impossible_date_through(value: str) -> None:
    from tap_analytics.alation.timestamps import normalize_ts

    with pytest.raises(ValueError):
        normalize_ts(value)


@given(st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 31)),
       st.sampled_from(["T", " "]), st.sampled_from(["Z", "+00:00"]))
def test_the_timestamp_fast_path_equals_normalize(
    moment: dt.datetime, sep: str, suffix: str
) -> None:
    from tap_analytics.alation.timestamps import normalize_ts
    from tap_analytics.common.timeutil import normalize

    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S.%f") + suffix
    assert normalize_ts(text) == normalize(text)
