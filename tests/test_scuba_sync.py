"""Scuba behaviour over real HTTP on loopback: windows, limits, retries, quota, errors.

Every query costs ~1.1 s (the tap's limiter), so the configs here use few windows.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import typing as t

import pytest
from helpers import run_cli, run_inprocess

from tap_analytics.sandbox import SCUBA_TOKEN, Sandbox
from tap_analytics.sandbox.scuba import SAVED

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)


def ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(seed=3, scale=0.5, services=["scuba"]) as sandbox:
        yield sandbox


@pytest.fixture
def scuba(sb: Sandbox) -> t.Any:
    """The sandbox's Scuba service with its limits and log reset for each test."""
    service = sb.scuba
    service.reset_limits()
    service.clear_log()
    service.daily_limit = 1000
    service.per_second = True
    service.timeout_once = set()
    service.fail_next_500 = 0
    return service


USERS_QUERY = {
    "dataset": "Music",
    "queries": [{"type": "single_measurement",
                 "measure": {"aggregator": "unique_count", "column": "userId"},
                 "filter": "(`artist` != \"*null*\")"}],
    "group_by": ["artist"],
    "max_groups": 5,
}
SERIES_QUERY = {
    "dataset": "Music",
    "queries": [{"type": "time_series", "measure": {"aggregator": "count_star"}}],
    "group_by": ["country"],
}
EVENTS_BQL = ("select count(*) from Music where time >= {{start_ms}} and time < {{end_ms}} "
              "group by artist")


def config(sb: Sandbox, queries: list[dict], *, start: str = "2024-01-01T00:00:00Z",
           end: str | None = "2024-01-04T00:00:00Z", **scuba: t.Any) -> dict:
    block = {"base_url": sb.scuba.url, "api_token": SCUBA_TOKEN, "window_days": 1,
             "queries": queries, **scuba}
    cfg: dict[str, t.Any] = {"start_date": start, "scuba": block}
    if end:
        cfg["end_date"] = end
    return cfg


def windows(start: dt.datetime, count: int) -> list[tuple[dt.datetime, dt.datetime]]:
    return [(start + n * DAY, start + (n + 1) * DAY) for n in range(count)]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tap-analytics: error:")]


# --------------------------------------------------------------------------------------


def test_each_window_once_matching_the_source_and_spaced(sb: Sandbox, scuba: t.Any) -> None:
    cfg = config(sb, [
        {"name": "users", "query": USERS_QUERY},
        {"name": "series", "query": SERIES_QUERY},
        {"name": "events", "bql": EVENTS_BQL, "result_format": "CSV"},
    ])
    result = run_inprocess(cfg)
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    wins = windows(start, 3)

    # single_measurement: the top 5 artists of each window, values as the source computes
    users = result.records["scuba_users"]
    assert len(users) == 3 * 5
    for s, e in wins:
        rows = [r for r in users if r["window_start"] == iso(s)]
        assert len(rows) == 5 and all(r["window_end"] == iso(e) for r in rows)
        for row in rows:
            expected = scuba.measure("Music", USERS_QUERY["queries"][0]["filter"],
                                     "unique_count", "userId", (row["artist"],), ms(s), ms(e))
            assert row["measure_value"] == expected
    assert len({(r["artist"], r["window_start"]) for r in users}) == len(users)

    # time_series: one record per (country, 6-hour point), every point of every window
    series = result.records["scuba_series"]
    assert len(series) == 3 * 4 * 4  # windows x countries x points
    keys = {(r["country"], r["window_start"], r["timestamp"]) for r in series}
    assert len(keys) == len(series)
    for row in series:
        stamp = dt.datetime.fromisoformat(row["timestamp"])
        stop = stamp + dt.timedelta(milliseconds=row["resolution"])
        expected = scuba.measure("Music", "", "count_star", None, (row["country"],),
                                 ms(stamp), ms(stop))
        assert row["value"] == expected == row["event_count"]
        assert row["rate"] and row["window"] == row["resolution"]

    # templated BQL, CSV answer: the source's rows for the rendered window, exactly once
    events = result.records["scuba_events"]
    for s, e in wins:
        rendered = EVENTS_BQL.replace("{{start_ms}}", str(ms(s))).replace(
            "{{end_ms}}", str(ms(e)))
        _, rows = scuba.post_rows(scuba.parse_bql(rendered))
        expected = {(row[0], row[1]) for row in rows}
        got = {(r["artist"], r["measure_1"]) for r in events if r["window_start"] == iso(s)}
        assert got == expected
        assert all(r["start_time_0"] == iso(s) for r in events if r["window_start"] == iso(s))
    assert len(events) == 3 * 7

    # the limiter: never two queries in one second, over 9 queries
    times = scuba.query_times()
    assert len(times) == 9
    assert min(gaps(times)) >= 1.0

    # bookmarks: the end of the last window; a re-run spends no query and emits nothing
    for name in ("scuba_users", "scuba_series", "scuba_events"):
        bookmark = result.final_state["bookmarks"][name]
        assert bookmark["replication_key"] == "window_end"
        assert bookmark["replication_key_value"] == iso(wins[-1][1])
    scuba.clear_log()
    again = run_inprocess(cfg, state=result.final_state)
    assert not any(again.records.values())
    assert scuba.requests() == []


def test_a_state_after_each_window_and_empty_windows_advance(sb: Sandbox, scuba: t.Any) -> None:
    # No event at all on 2024-01-02: that window answers no row, the bookmark still moves.
    quiet = (ms(dt.datetime(2024, 1, 2, tzinfo=UTC)), ms(dt.datetime(2024, 1, 3, tzinfo=UTC)))
    scuba.quiet_ranges = [quiet]
    try:
        cfg = config(sb, [{"name": "users", "query": USERS_QUERY}])
        result = run_inprocess(cfg)
    finally:
        scuba.quiet_ranges = []
    assert len(scuba.requests()) == 3
    starts = {r["window_start"] for r in result.records["scuba_users"]}
    assert starts == {"2024-01-01T00:00:00.000000+00:00", "2024-01-03T00:00:00.000000+00:00"}
    values = [s["bookmarks"]["scuba_users"].get("replication_key_value")
              for s in result.states if "scuba_users" in s.get("bookmarks", {})]
    marks = [v for v in values if v]
    # one STATE per window, in order, the empty window's included
    assert marks == sorted(marks)
    assert {"2024-01-02T00:00:00.000000+00:00", "2024-01-03T00:00:00.000000+00:00",
            "2024-01-04T00:00:00.000000+00:00"} <= set(marks)


def test_open_ended_range_queries_only_complete_windows(sb: Sandbox, scuba: t.Any) -> None:
    # No end_date: the current, unfinished window is left for a later run.
    now = dt.datetime.now(UTC)
    start = (now - dt.timedelta(days=1, hours=12)).replace(microsecond=0)
    cfg = config(sb, [{"name": "users", "query": USERS_QUERY}],
                 start=start.strftime("%Y-%m-%dT%H:%M:%SZ"), end=None)
    result = run_inprocess(cfg)
    asked = [json.loads(r.query["query"][0]) for r in scuba.requests()]
    assert [(q["start"], q["end"]) for q in asked] == [(ms(start), ms(start + DAY))]
    assert result.final_state["bookmarks"]["scuba_users"]["replication_key_value"] == iso(
        start + DAY)


def test_504_once_then_served_from_cache(sb: Sandbox, scuba: t.Any) -> None:
    scuba.timeout_once = {"r9372"}
    cfg = config(sb, [{"name": "top", "query_response_id": "r9372"}])
    result = run_inprocess(cfg)
    assert [r.status for r in scuba.requests("/v1/query")] == [504, 200]
    assert scuba.cache_hits == 1
    _, rows = scuba.post_rows(dict(SAVED["r9372"]))
    assert len(result.records["scuba_top"]) == len(rows)
    assert {(r["artist"], r["measure_1"]) for r in result.records["scuba_top"]} == {
        (row[0], row[1]) for row in rows}
    assert min(gaps(scuba.query_times())) >= 1.0


def test_500_retried_then_success(sb: Sandbox, scuba: t.Any) -> None:
    scuba.fail_next_500 = 1
    cfg = config(sb, [{"name": "users", "query": USERS_QUERY}], end="2024-01-02T00:00:00Z")
    result = run_inprocess(cfg)
    assert [r.status for r in scuba.requests()] == [500, 200]
    assert len(result.records["scuba_users"]) == 5


def test_5xx_exhausted_is_one_line_without_the_token(sb: Sandbox, scuba: t.Any) -> None:
    scuba.fail_next_500 = 10
    cfg = config(sb, [{"name": "users", "query": USERS_QUERY}], end="2024-01-02T00:00:00Z",
                 max_tries=2)
    result = run_cli(cfg)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-2000:]
    assert "scuba_users" in lines[0] and "HTTP 500" in lines[0] and "/api/v1/query" in lines[0]
    assert "Traceback" not in result.stderr
    assert SCUBA_TOKEN not in result.stderr
    assert len(scuba.requests()) == 2


def test_per_second_429_is_waited_out(sb: Sandbox, scuba: t.Any) -> None:
    # A limiter set too tight (0 s): the server's per-second 429s are retried, nothing lost.
    cfg = config(sb, [{"name": "users", "query": USERS_QUERY}], end="2024-01-03T00:00:00Z",
                 min_seconds_between_queries=0)
    result = run_inprocess(cfg)
    statuses = [r.status for r in scuba.requests()]
    assert 429 in statuses
    assert statuses.count(200) == 2
    assert len(result.records["scuba_users"]) == 10
    assert scuba.daily_counts[SCUBA_TOKEN] == 2


def test_daily_quota_stops_cleanly_and_the_next_run_resumes(sb: Sandbox, scuba: t.Any) -> None:
    queries = [
        {"name": "a_users", "query": USERS_QUERY},
        {"name": "b_events", "bql": EVENTS_BQL, "result_format": "JSON_POWER_BI"},
    ]
    cfg = config(sb, queries, end="2024-01-05T00:00:00Z")
    scuba.daily_limit = 3

    first = run_cli(cfg)
    assert first.returncode == 1
    lines = error_lines(first.stderr)
    assert len(lines) == 1, first.stderr[-2000:]
    assert "scuba_a_users" in lines[0] and "quota" in lines[0]
    assert "The request limit of 3 queries has been reached" in lines[0]
    assert SCUBA_TOKEN not in first.stderr and "Traceback" not in first.stderr
    # 3 answered windows + the refused one; the later stream spent nothing
    assert [r.status for r in scuba.requests()] == [200, 200, 200, 429]
    assert len(first.records["scuba_a_users"]) == 15
    assert "scuba_b_events" not in first.records
    state = first.final_state
    assert state["bookmarks"]["scuba_a_users"]["replication_key_value"] == (
        "2024-01-04T00:00:00.000000+00:00")
    assert "replication_key_value" not in state["bookmarks"].get("scuba_b_events", {})

    # next day: the finished windows are not asked again
    scuba.reset_limits()
    scuba.clear_log()
    scuba.daily_limit = 1000
    second = run_cli(cfg, state=state)
    assert second.returncode == 0, second.stderr[-2000:]
    asked = [json.loads(r.query["query"][0])["start"] for r in scuba.requests("/api/v1/query")]
    assert asked == [ms(dt.datetime(2024, 1, 4, tzinfo=UTC))]
    assert len(scuba.requests("/v1/query")) == 4

    users = first.records["scuba_a_users"] + second.records["scuba_a_users"]
    keys = [(r["artist"], r["window_start"]) for r in users]
    assert len(keys) == len(set(keys)) == 4 * 5
    assert {r["window_start"] for r in users} == {
        iso(s) for s, _ in windows(dt.datetime(2024, 1, 1, tzinfo=UTC), 4)}
    assert len(second.records["scuba_b_events"]) == 4 * 7
    assert min(gaps(scuba.query_times())) >= 1.0


def test_401_is_one_line_and_never_shows_the_token(sb: Sandbox, scuba: t.Any) -> None:
    wrong = "wrong-token-abcdef12345"
    cfg = config(sb, [{"name": "top", "query_response_id": "r9372"}])
    cfg["scuba"]["api_token"] = wrong
    result = run_cli(cfg)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert "scuba_top" in lines[0] and "HTTP 401" in lines[0] and "Invalid token" in lines[0]
    assert "scuba.api_token" in lines[0]
    assert wrong not in result.stderr and "Traceback" not in result.stderr
    assert len(scuba.requests()) == 1  # a 401 is not retried


def test_400_is_one_line_naming_stream_and_path(sb: Sandbox, scuba: t.Any) -> None:
    cfg = config(sb, [{"name": "bad", "bql": "select count(*) from NoSuchData"}])
    result = run_cli(cfg)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    line = lines[0]
    assert "scuba_bad" in line and "HTTP 400" in line and "/v1/query" in line
    assert "Invalid parameter" in line and "Unknown dataset: NoSuchData" in line
    assert SCUBA_TOKEN not in result.stderr


@pytest.mark.parametrize("args", [["--discover"], ["--about"], ["--about", "--format=json"]])
def test_discovery_spends_no_query(sb: Sandbox, scuba: t.Any, args: list[str]) -> None:
    result = run_cli(sb.config(), args=args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert scuba.requests() == []


def test_discover_catalog_schemas_and_keys(sb: Sandbox, scuba: t.Any) -> None:
    from tap_analytics.tap import TapAnalytics

    tap = TapAnalytics(config=sb.config(), parse_env_config=False, validate_config=True)
    catalog = {s["tap_stream_id"]: s for s in tap.catalog_dict["streams"]}
    assert scuba.requests() == []
    series = catalog["scuba_artist_series"]
    assert series["key_properties"] == ["artist", "window_start", "timestamp"]
    assert series["replication_key"] == "window_end"
    props = series["schema"]["properties"]
    assert {"value", "event_count", "object_count", "rate", "resolution", "window"} <= set(props)
    users = catalog["scuba_artist_users"]
    assert users["key_properties"] == ["artist", "window_start"]
    assert "measure_value" in users["schema"]["properties"]
    assert catalog["scuba_top_artists"].get("replication_key") is None


def test_schema_probe_spends_exactly_one_query(sb: Sandbox, scuba: t.Any, tmp_path: t.Any) -> None:
    cfg = config(sb, [{"name": "open", "query_response_id": "r9373", "result_format": "CSV"}])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "tap_analytics.scuba", "schema", "--config", str(path),
         "--name", "open"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    schema = json.loads(proc.stdout)["schema"]
    assert schema["country"]["type"] == ["string"]
    assert schema["measure_1"]["type"] == ["integer"]
    assert schema["measure_2"]["type"] == ["integer"]
    assert schema["start_time_0"] == {"type": ["string"], "format": "date-time"}
    assert len(scuba.requests()) == 1
    assert SCUBA_TOKEN not in proc.stderr + proc.stdout


def test_catalog_pins_the_schema_of_an_open_entry(sb: Sandbox, scuba: t.Any) -> None:
    from tap_analytics.tap import TapAnalytics

    cfg = config(sb, [{"name": "open", "query_response_id": "r9373"}])
    tap = TapAnalytics(config=cfg, parse_env_config=False, validate_config=True)
    catalog = tap.catalog_dict
    entry = catalog["streams"][0]
    assert entry["schema"].get("additionalProperties") is True
    pinned = {
        "country": {"type": ["string"]},
        "measure_1": {"type": ["integer", "null"]},
        "start_time_0": {"type": ["string"], "format": "date-time"},
        "end_time_0": {"type": ["string"], "format": "date-time"},
    }
    entry["schema"] = {"type": "object", "properties": pinned}
    entry["key_properties"] = ["country", "start_time_0"]
    for meta in entry["metadata"]:
        if meta["breadcrumb"] == []:
            meta["metadata"]["table-key-properties"] = ["country", "start_time_0"]
        elif meta["breadcrumb"][-1] not in pinned:
            meta["metadata"]["selected"] = False
    result = run_inprocess(cfg, catalog=catalog)
    records = result.records["scuba_open"]
    assert records and all(set(r) == set(pinned) for r in records)  # measure_2 left out
    assert set(result.schemas["scuba_open"]["properties"]) == set(pinned)
    key_msgs = [m for m in result.messages if m["type"] == "SCHEMA"]
    assert key_msgs[0]["key_properties"] == ["country", "start_time_0"]
    assert len(scuba.requests()) == 1


def test_batch_mode_states_never_run_ahead_of_batches(
    sb: Sandbox, scuba: t.Any, tmp_path: t.Any,
) -> None:
    import gzip
    from urllib.parse import urlparse

    cfg = config(sb, [{"name": "users", "query": USERS_QUERY}])
    cfg["batch_config"] = {"encoding": {"format": "jsonl", "compression": "gzip"},
                           "storage": {"root": f"file://{tmp_path}"}, "batch_size": 7}
    result = run_inprocess(cfg)
    delivered: list[dict] = []
    checked = 0
    for message in result.messages:
        if message["type"] == "BATCH":
            for url in message["manifest"]:
                with gzip.open(urlparse(url).path, "rt") as fh:
                    delivered += [json.loads(line) for line in fh if line.strip()]
        elif message["type"] == "STATE":
            mark = message["value"]["bookmarks"].get("scuba_users", {}).get(
                "replication_key_value")
            if not mark:
                continue
            done = [r for r in delivered if r["window_end"] <= mark]
            windows_done = {r["window_start"] for r in done}
            assert len(done) == 5 * len(windows_done)  # every row of a finished window
            assert max(r["window_end"] for r in done) == mark
            checked += 1
    assert checked >= 2
    assert len(delivered) == 15
