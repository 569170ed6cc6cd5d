"""Alation behaviour over real HTTP on loopback: full sync, incremental, errors, paging."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import typing as t

import pytest
from helpers import run_cli, run_inprocess

from tap_analytics.common.errors import TapAnalyticsError
from tap_analytics.sandbox import Sandbox
from tap_analytics.sandbox.core import Faults

# stream -> (sandbox kind, key field, replication key, filter operator)
STREAMS = {
    "alation_queries": ("query", "id", "ts_last_saved", "gte"),
    "alation_execution_sessions": ("execution_session", "id", "ts_start", "gte"),
    "alation_execution_batches": ("execution_batch", "id", "id", "gt"),
    "alation_execution_events": ("execution_event", "id", "ts_executed", "gte"),
    "alation_scheduled_runs": ("scheduled_run", "task_id", "ts_sent_to_broker", "gte"),
}
PATHS = {
    "alation_queries": "/integration/v1/query/",
    "alation_execution_sessions": "/integration/v1/query/execution_session/",
    "alation_execution_batches": "/integration/v1/query/execution_batch/",
    "alation_execution_events": "/integration/v1/query/execution_event/",
    "alation_scheduled_runs": "/integration/v1/query/scheduled_run/",
}
TS_KEY = re.compile(r"^ts_|_at$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def instant(text: str) -> dt.datetime:
    """An instant from either of the doc's styles (independent of the tap's code)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_same(emitted: t.Any, served: t.Any, where: str = "") -> None:
    """Emitted equals served, except timestamps: same instant, RFC 3339 with offset."""
    if isinstance(served, dict):
        assert isinstance(emitted, dict), where
        assert set(emitted) == set(served), where
        for key, value in served.items():
            if isinstance(value, str) and TS_KEY.search(key):
                assert RFC3339.match(emitted[key]), f"{where}.{key}: {emitted[key]}"
                assert instant(emitted[key]) == instant(value), f"{where}.{key}"
            else:
                assert_same(emitted[key], value, f"{where}.{key}")
    elif isinstance(served, list):
        assert isinstance(emitted, list) and len(emitted) == len(served), where
        for i, (e, s) in enumerate(zip(emitted, served)):
            assert_same(e, s, f"{where}[{i}]")
    else:
        assert emitted == served and type(emitted) is type(served), where


@pytest.fixture(scope="module")
def synced() -> t.Iterator[tuple[Sandbox, t.Any]]:
    """One full sync of a default sandbox (read-only for the tests that use it)."""
    with Sandbox(seed=7, services=["alation"]) as sb:
        yield sb, run_inprocess(sb.config())


def test_full_sync_equals_the_served_data(synced: tuple[Sandbox, t.Any]) -> None:
    sb, result = synced
    for stream, (kind, key, _, _) in STREAMS.items():
        served = {rec[key]: rec for rec in sb.alation.data[kind]}
        emitted = result.records.get(stream, [])
        keys = [rec[key] for rec in emitted]
        assert len(keys) == len(set(keys)), f"duplicate keys in {stream}"
        assert set(keys) == set(served), stream
        assert len(served) >= 150  # several pages at page_size 100
        for rec in emitted:
            assert_same(rec, served[rec[key]], f"{stream}[{rec[key]}]")


def test_bookmarks_are_the_maximum_whatever_the_served_order(
    synced: tuple[Sandbox, t.Any],
) -> None:
    sb, result = synced
    bookmarks = result.final_state["bookmarks"]
    events = sb.alation.data["execution_event"]
    # Precondition: the API serves events by id, which is not time order.
    times = [instant(e["ts_executed"]) for e in events]
    assert times != sorted(times)
    for stream, (kind, _, rkey, _) in STREAMS.items():
        values = [rec[rkey] for rec in sb.alation.data[kind]]
        mark = bookmarks[stream]["replication_key_value"]
        if rkey == "id":
            assert mark == max(values)
        else:
            assert instant(mark) == max(instant(v) for v in values), stream


def test_query_results_rows_are_the_csv_strings(synced: tuple[Sandbox, t.Any]) -> None:
    sb, result = synced
    service = sb.alation
    rows = result.records["alation_query_results"]
    with_results = [q for q in service.result_query_ids if service.latest_result(q)]
    assert len(with_results) == 3
    seen_values: set[str] = set()
    truncated_seen = False
    for query_id in with_results:
        event = service.latest_result(query_id)
        result_id = event["result"]["id"]
        mine = sorted((r for r in rows if r["query_id"] == query_id),
                      key=lambda r: r["row_number"])
        expected = service.result_rows(result_id)
        assert [r["row"] for r in mine] == expected
        assert [r["row_number"] for r in mine] == list(range(1, len(expected) + 1))
        assert {r["result_id"] for r in mine} == {result_id}
        assert {r["truncated"] for r in mine} == {event["result"]["truncated"]}
        truncated_seen |= event["result"]["truncated"]
        assert all(instant(r["executed_at"]) == instant(event["ts_executed"]) for r in mine)
        for r in mine:
            seen_values.update(r["row"].values())
    # The values that conforming could have turned into booleans stayed strings.
    assert {"false", "0", "True", "", "line1\nline2", "a, b"} <= seen_values
    assert truncated_seen
    assert {r["query_id"] for r in rows} == set(with_results)


def requests_of(service: t.Any, stream: str) -> list[t.Any]:
    """The logged requests to exactly this stream's list path."""
    return [r for r in service.requests(PATHS[stream]) if r.path == PATHS[stream]]


def _requests_by_path(service: t.Any) -> dict[str, list[t.Any]]:
    return {stream: requests_of(service, stream) for stream in PATHS}


def test_incremental_sync_emits_exactly_the_new_records() -> None:
    with Sandbox(seed=5, services=["alation"]) as sb:
        config = sb.config(end_date=False)
        config["alation"]["result_query_ids"] = []
        first = run_inprocess(config)
        state = first.final_state
        before = {s: {r[k] for r in first.records[s]} for s, (_, k, _, _) in STREAMS.items()}

        sb.alation.add_newer_records(3)
        sb.alation.clear_log()
        second = run_inprocess(config, state=state)
        logged = _requests_by_path(sb.alation)
        for stream, (kind, key, rkey, op) in STREAMS.items():
            new = {r[key] for r in sb.alation.data[kind]} - before[stream]
            assert len(new) == 3
            got = [r[key] for r in second.records.get(stream, [])]
            assert sorted(got, key=str) == sorted(new, key=str), stream
            # Each request carried the bookmark filter, in the bookmark's exact format.
            bookmark = state["bookmarks"][stream]["replication_key_value"]
            for req in logged[stream]:
                assert req.query[f"{rkey}__{op}"] == [str(bookmark)], stream

        third_state = second.final_state
        for stream, (kind, _, rkey, _) in STREAMS.items():
            value = third_state["bookmarks"][stream]["replication_key_value"]
            if rkey == "id":
                assert value == max(r["id"] for r in sb.alation.data[kind])
            else:
                newest = max(instant(r[rkey]) for r in sb.alation.data[kind])
                assert instant(value) == newest, stream

        sb.alation.clear_log()
        third = run_inprocess(config, state=third_state)
        assert not any(third.records.get(s) for s in STREAMS), "a no-change run emitted"
        for stream, reqs in _requests_by_path(sb.alation).items():
            assert len(reqs) == 1, stream
        for stream in STREAMS:
            assert (third.final_state["bookmarks"][stream]["replication_key_value"]
                    == third_state["bookmarks"][stream]["replication_key_value"])


def test_end_date_bounds_the_first_sync() -> None:
    with Sandbox(seed=5, services=["alation"]) as sb:
        config = sb.config()
        config["alation"]["result_query_ids"] = []
        cut = dt.datetime(2024, 1, 4, tzinfo=dt.timezone.utc)
        config["end_date"] = "2024-01-04T00:00:00Z"
        result = run_inprocess(config)
        events = result.records["alation_execution_events"]
        expected = {e["id"] for e in sb.alation.data["execution_event"]
                    if instant(e["ts_executed"]) < cut}
        assert {e["id"] for e in events} == expected
        assert 0 < len(expected) < len(sb.alation.data["execution_event"])
        req = requests_of(sb.alation, "alation_execution_events")[0]
        assert instant(req.query["ts_executed__lt"][0]) == cut


def test_short_last_page_ends_paging() -> None:
    with Sandbox(seed=5, services=["alation"]) as sb:
        config = sb.config()
        config["alation"]["page_size"] = 40
        config["alation"]["result_query_ids"] = []
        # One request at a time: the exact request count. With pages fetched ahead, up
        # to max_concurrent_requests more are sent and dropped (test_alation_concurrent).
        config["alation"]["max_concurrent_requests"] = 1
        run_inprocess(config)
        for stream, (kind, _, _, _) in STREAMS.items():
            n = len(sb.alation.data[kind])
            # A full last page needs one more (empty) answer to know it was the last.
            expected = math.ceil(n / 40) + (1 if n % 40 == 0 else 0)
            reqs = requests_of(sb.alation, stream)
            assert len(reqs) == expected, stream
            assert sorted(int(r.query["skip"][0]) for r in reqs) == [
                40 * i for i in range(expected)]
            assert {r.query["limit"][0] for r in reqs} == {"40"}


def test_server_errors_are_retried_then_succeed() -> None:
    with Sandbox(seed=5, services=["alation"]) as sb:
        config = sb.config()
        config["alation"]["result_query_ids"] = []
        sb.alation.fail_next(429, path_prefix=PATHS["alation_execution_events"],
                             body=b'{"detail": "Request was throttled."}',
                             content_type="application/json")
        sb.alation.fail_next(503, path_prefix=PATHS["alation_execution_events"])
        result = run_inprocess(config)
        statuses = [r.status for r in requests_of(sb.alation, "alation_execution_events")]
        assert statuses[:3] == [429, 503, 200]
        assert len(result.records["alation_execution_events"]) == len(
            sb.alation.data["execution_event"])


@pytest.mark.parametrize(
    ("body", "what"),
    [(b'[{"id": 1, "query_id": ', "malformed JSON"),
     (b'{"detail": "odd"}', "expected a JSON list")],
)
def test_a_bad_200_body_is_one_clear_error(body: bytes, what: str) -> None:
    with Sandbox(seed=5, services=["alation"]) as sb:
        config = sb.config()
        sb.alation.fail_next(200, path_prefix=PATHS["alation_execution_batches"], body=body,
                             content_type="application/json")
        with pytest.raises(TapAnalyticsError) as info:
            run_inprocess(config)
        text = str(info.value)
        assert "alation_execution_batches" in text
        assert PATHS["alation_execution_batches"] in text
        assert what in text
        assert "\n" not in text


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tap-analytics: error:")]


def test_bad_token_is_one_line_naming_alation_the_stream_and_403() -> None:
    with Sandbox(seed=5, services=["alation"]) as sb:
        config = sb.config()
        secret = "wrong-token-7d1e9f"
        config["alation"]["api_token"] = secret
        result = run_cli(config, timeout=120)
        assert result.returncode != 0
        lines = _error_lines(result.stderr)
        assert len(lines) == 1, result.stderr[-2000:]
        line = lines[0]
        assert "Alation" in line and "403" in line and "Invalid API token." in line
        assert re.search(r"stream 'alation_\w+'", line)
        assert secret not in result.stderr and "Traceback" not in result.stderr
        # A fatal error is not retried: no page is asked twice. A first sync fetches
        # ahead from its first page, so up to max_concurrent_requests (4) pages were
        # already asked when the first 403 came back.
        asked = [(r.path, tuple(r.query.get("skip", ["0"]))) for r in sb.alation.log]
        assert len(asked) == len(set(asked)), asked
        assert 1 <= len(asked) <= 4
        assert {r.status for r in sb.alation.log} == {403}


def test_bad_request_shows_the_bodys_error_text() -> None:
    with Sandbox(seed=5, services=["alation"]) as sb:
        error = "Invalid value(s) ['x'] for URL parameter 'ts_start__gte'"
        sb.alation.fail_next(400, path_prefix=PATHS["alation_execution_sessions"],
                             body=json.dumps({"error": error}).encode(),
                             content_type="application/json")
        result = run_cli(sb.config(), timeout=120)
        assert result.returncode != 0
        lines = _error_lines(result.stderr)
        assert len(lines) == 1
        assert error in lines[0] and "alation_execution_sessions" in lines[0]
        assert "400" in lines[0]


def test_cli_full_run_warns_on_queries_without_result_and_logs_progress() -> None:
    with Sandbox(seed=7, services=["alation"]) as sb:
        result = run_cli(sb.config(), timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        ids = sb.alation.result_query_ids
        missing = [q for q in ids if not sb.alation.latest_result(q)]
        assert len(missing) == 2
        for query_id in missing:
            assert re.search(rf"WARNING.*no available result for query {query_id}\b",
                             result.stderr)
        assert "Could not get latest query result ID" in result.stderr
        assert "Not found." in result.stderr
        assert re.search(r"alation_execution_events': page 10 done \(100 records, 1000 so far",
                         result.stderr)
        rows = result.records["alation_query_results"]
        assert any(r["row"]["flag"] == "false" for r in rows)
        assert all(isinstance(v, str) for r in rows for v in r["row"].values())
        # Progress is per page, not per record.
        assert sum(1 for line in result.stderr.splitlines() if " done (" in line) < 60


def test_resets_and_5xx_at_random_lose_nothing() -> None:
    faults = Faults(error_rate=0.12, reset_rate=0.12, seed=4)
    with Sandbox(seed=5, scale=0.3, services=["alation"], faults=faults) as sb:
        config = sb.config()
        config["alation"]["result_query_ids"] = []
        config["alation"]["max_tries"] = 10
        result = run_inprocess(config)
        statuses = [r.status for r in sb.alation.log]
        assert 0 in statuses and any(s >= 500 for s in statuses)  # faults did happen
        for stream, (kind, key, _, _) in STREAMS.items():
            assert sorted(r[key] for r in result.records[stream]) == sorted(
                r[key] for r in sb.alation.data[kind]), stream


def test_html_instead_of_csv_is_one_clear_error_and_repeated_ids_read_once() -> None:
    with Sandbox(seed=7, services=["alation"]) as sb:
        config = sb.config()
        first = sb.alation.result_query_ids[0]
        config["alation"]["result_query_ids"] = [first, first]
        result = run_inprocess(config)
        assert len(sb.alation.requests(f"/integration/v1/query/{first}/result/latest/")) == 1
        rows = result.records["alation_query_results"]
        assert len(rows) == len({(r["result_id"], r["row_number"]) for r in rows}) > 0

        sb.alation.fail_next(200, path_prefix="/integration/v1/result/",
                             body=b"<html><body>Please log in</body></html>")
        with pytest.raises(TapAnalyticsError, match="got an HTML page"):
            run_inprocess(config)
