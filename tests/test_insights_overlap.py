"""Insights queries submitted at sync start (insights/schedule.py), over the sandbox.

The report streams sync last; their first windows are queried while the Alation and
Scuba streams sync. Same records, same STATE, same errors as a run without it, never more
than 2 queries in flight, nothing for a deselected stream, and a sync that stops early
exits without waiting for the queries.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import signal
import subprocess
import tempfile
import typing as t
from pathlib import Path

import pytest
from helpers import TAP_EXE, SyncResult, run_cli

from tap_analytics.common.errors import TapAnalyticsError
from tap_analytics.insights import schedule
from tap_analytics.insights.client import InsightsApi
from tap_analytics.sandbox import DATA_START, Sandbox
from tap_analytics.sandbox.core import Faults, Request, Response, json_response
from tap_analytics.tap import TapAnalytics

APP = "insights_application_exits"
DTMF = "insights_flow_dtmf"
POST_PATH = "/_rest/v4/dwh/Q"


class WithoutEarlySubmit(TapAnalytics):
    submit_queries_at_start = False


def small_config(sb: Sandbox) -> dict:
    """All three sources; two Scuba queries (each costs >= 1 s of its limiter)."""
    config = sb.config()
    config["scuba"]["queries"] = config["scuba"]["queries"][:2]
    return config


def sync(config: dict, *, tap_class: type[TapAnalytics] = TapAnalytics,
         state: dict | None = None, catalog: dict | None = None,
         taps: list[TapAnalytics] | None = None,
         ) -> tuple[SyncResult, BaseException | None]:
    """A sync in this process; the output so far is kept when it fails."""
    tap = tap_class(config=config, state=state, catalog=catalog, parse_env_config=False,
                    validate_config=True)
    if taps is not None:
        taps.append(tap)
    buffer = io.StringIO()
    error: BaseException | None = None
    with contextlib.redirect_stdout(buffer):
        try:
            tap.sync_all()
        except Exception as exc:  # compared by the tests
            error = exc
        finally:
            schedule.abandon(tap)  # what `invoke` does
            flush = getattr(tap.message_writer, "flush", None)
            if flush:
                flush()
    return SyncResult.parse(buffer.getvalue()), error


@contextlib.contextmanager
def fresh(**insights: t.Any) -> t.Iterator[Sandbox]:
    """A private sandbox with all three services; `insights` sets its switches."""
    with Sandbox(seed=7) as sb:
        for key, value in insights.items():
            setattr(sb.insights, key, value)
        yield sb


def without_files(records: dict[str, list[dict]]) -> dict[str, list[dict]]:
    # source_file names the query id and a time stamp: the only per-run values
    return {name: [{k: v for k, v in r.items() if k != "source_file"} for r in rows]
            for name, rows in records.items()}


def without_clock(value: t.Any) -> t.Any:
    """STATE values with the sync's start time (the SDK's signpost) blanked."""
    if isinstance(value, dict):
        return {k: "<now>" if k == "replication_key_signpost" else without_clock(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


@pytest.fixture(scope="module")
def runs() -> t.Iterator[dict[str, t.Any]]:
    """The same sync with and without early submit, each on its own sandbox."""
    out: dict[str, t.Any] = {}
    with contextlib.ExitStack() as stack:
        for mode, tap_class in (("early", TapAnalytics), ("plain", WithoutEarlySubmit)):
            sb = stack.enter_context(fresh(query_seconds=1.0))
            result, error = sync(small_config(sb), tap_class=tap_class)
            assert error is None, error
            out[mode] = (sb, result)
        yield out


def first_post(sb: Sandbox) -> float:
    posts = sb.insights.requests(POST_PATH, "POST")
    assert posts, "no Insights query was submitted"
    return min(r.time for r in posts)


def test_queries_start_before_the_other_sources_finish(runs: dict[str, t.Any]) -> None:
    sb, result = runs["early"]
    alation_last = max(r.time for r in sb.alation.requests())
    scuba_first = min(r.time for r in sb.scuba.requests())
    assert first_post(sb) < alation_last < scuba_first
    # ... and the Insights streams sync last, after Scuba, in their usual order
    order = list(dict.fromkeys(m["stream"] for m in result.messages if m["type"] == "RECORD"))
    assert order[-3:] == [APP, "insights_fields", DTMF]
    # without it, the first query waits for the report stream's turn, after Scuba
    sb_plain, _ = runs["plain"]
    assert first_post(sb_plain) > max(r.time for r in sb_plain.scuba.requests())


def test_same_records_and_states_as_without_early_submit(runs: dict[str, t.Any]) -> None:
    early, plain = runs["early"][1], runs["plain"][1]
    assert len(early.records[APP]) > 500 and len(early.records[DTMF]) > 100
    assert without_files(early.records) == without_files(plain.records)
    assert without_clock(early.states) == without_clock(plain.states)
    bookmark = early.final_state["bookmarks"][APP]["replication_key_value"]
    assert bookmark.startswith("2024-01-08T00:00:00")


def test_each_window_is_queried_once(runs: dict[str, t.Any]) -> None:
    for mode in ("early", "plain"):
        sb, _ = runs[mode]
        bodies = [json.dumps(q.body, sort_keys=True) for q in sb.insights.queries.values()]
        assert len(bodies) == 14, mode  # 7 daily windows x 2 reports
        assert len(set(bodies)) == len(bodies), mode


def test_never_more_than_two_queries_in_flight(runs: dict[str, t.Any]) -> None:
    sb, _ = runs["early"]
    assert sb.insights.max_pending == 2  # the limit is used...
    assert sb.insights.rejected_429 == 0  # ...and never overrun
    assert all(r.status != 429 for r in sb.insights.requests())


def selecting(config: dict, keep: t.Callable[[str], bool]) -> dict:
    catalog = TapAnalytics(config=config, parse_env_config=False).catalog_dict
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = keep(entry["tap_stream_id"])
    return catalog


def test_a_deselected_report_costs_nothing() -> None:
    with Sandbox(seed=7, services=["alation", "insights"]) as sb:
        sb.insights.query_seconds = 0.3
        config = sb.config()
        only_alation = selecting(config, lambda name: name.startswith("alation_"))
        result, error = sync(config, catalog=only_alation)
        assert error is None and result.records["alation_queries"]
        assert sb.insights.requests() == []  # not even the field list

        sb.alation.clear_log()
        no_dtmf = selecting(config, lambda name: name != DTMF)
        result, error = sync(config, catalog=no_dtmf)
        assert error is None and result.records[APP] and DTMF not in result.records
        events = {event for q in sb.insights.queries.values() for event in q.body["data"]}
        assert events == {"ApplicationExitEvent"}


def test_early_queries_start_at_the_bookmark() -> None:
    with Sandbox(seed=7, services=["alation", "insights"]) as sb:
        sb.insights.query_seconds = 0.3
        bookmark = "2024-01-05T00:00:00.000000+00:00"
        state = {"bookmarks": {APP: {"replication_key": "timestamp",
                                     "replication_key_value": bookmark}}}
        config = sb.config()
        config["insights"]["reports"] = config["insights"]["reports"][:1]
        result, error = sync(config, state=state)
        assert error is None
        starts = sorted(q.body["timestamp"]["$gte"] for q in sb.insights.queries.values())
        assert starts == ["2024-01-05T00:00:00Z", "2024-01-06T00:00:00Z",
                          "2024-01-07T00:00:00Z"]
        assert min(r["timestamp"] for r in result.records[APP]) >= bookmark


def test_a_query_of_another_client_is_waited_out() -> None:
    import requests

    from tap_analytics.sandbox import INSIGHTS_TOKEN

    with Sandbox(seed=7, services=["alation", "insights"]) as sb:
        sb.insights.query_seconds = 5.0
        config = sb.config()
        # another client on the same token holds one of the 2 query slots for 5 s
        outsider = requests.post(
            config["insights"]["base_url"] + "/dwh/Q", timeout=10,
            headers={"Authorization": f"Bearer {INSIGHTS_TOKEN}"},
            json={"timestamp": {"$gte": "2024-01-01T00:00:00Z", "$lt": "2024-01-02T00:00:00Z"},
                  "data": {"DtmfEvent": {"fields": ["TimeStamp"]}}})
        assert outsider.status_code == 201
        sb.insights.query_seconds = 1.0  # the tap's own queries
        result, error = sync(config)
        assert error is None, error
        assert sb.insights.rejected_429 >= 1  # an early query met the limit...
        assert sb.insights.max_pending == 2  # ...and never went past it
        events = list(sb.insights.events(DATA_START, DATA_START.replace(day=8)))
        assert len(result.records[APP]) == len(events)  # every row, once


def refuse_queries(request: Request) -> Response | None:
    if request.method == "POST" and request.path == POST_PATH:
        return json_response({"code": 400, "message": "Flow Id is not a valid field."}, 400)
    return None


def test_a_failing_early_query_fails_its_stream_with_the_same_line() -> None:
    lines = {}
    for mode, tap_class in (("early", TapAnalytics), ("plain", WithoutEarlySubmit)):
        with fresh(query_seconds=0.3) as sb:
            sb.insights.faults = Faults(override=refuse_queries)
            result, error = sync(small_config(sb), tap_class=tap_class)
            assert isinstance(error, TapAnalyticsError), error
            # surfaced in the report stream, after the other sources went out whole
            assert result.records["alation_queries"] and result.records["scuba_top_artists"]
            assert APP not in result.records
            lines[mode] = str(error)
    assert lines["early"] == lines["plain"]
    assert lines["early"].startswith(f"{APP}: HTTP 400 for POST /dwh/Q")


def test_the_cli_prints_that_line_once() -> None:
    with fresh(query_seconds=0.3) as sb:
        sb.insights.faults = Faults(override=refuse_queries)
        result = run_cli(small_config(sb), timeout=240)
    errors = [x for x in result.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert result.returncode == 1
    assert errors == [f"tap-analytics: error: {APP}: HTTP 400 for POST /dwh/Q: "
                      "Flow Id is not a valid field."]
    assert result.records["scuba_top_artists"]


def test_an_early_failure_elsewhere_exits_without_waiting_for_the_queries() -> None:
    with fresh(query_seconds=3600.0) as sb:  # the queries would run for an hour
        sb.alation.faults = Faults(latency_seconds=1.0)  # the queries are out before...
        config = small_config(sb)
        config["alation"]["api_token"] = "not-the-token"  # ...Alation refuses the token
        result = run_cli(config, timeout=120)
        queries = list(sb.insights.queries.values())
    assert result.returncode == 1
    assert "alation.api_token" in result.stderr
    assert queries  # the early queries were out (and would run for an hour)
    assert APP not in result.records


def test_after_an_early_failure_the_workers_stop() -> None:
    with fresh(query_seconds=3600.0) as sb:
        sb.alation.faults = Faults(latency_seconds=1.0)
        config = small_config(sb)
        config["alation"]["api_token"] = "not-the-token"
        taps: list[TapAnalytics] = []
        _, error = sync(config, taps=taps)  # abandons the early queries at the end
        assert error is not None and "alation.api_token" in str(error)
        early = taps[0]._insights_early  # type: ignore[attr-defined]
        assert sb.insights.requests(POST_PATH, "POST")  # they were running...
        assert early.join(timeout=60)  # ...and their workers ended (bounded wait)
        assert all(q.future.done() for q in early.queries)
        assert not any(q.taken for q in early.queries)


def test_windows_queried_early_move_no_bookmark_until_their_rows_are_out() -> None:
    outcome = {}
    for mode, tap_class in (("early", TapAnalytics), ("plain", WithoutEarlySubmit)):
        with fresh(query_seconds=0.3, truncate="always") as sb:  # every file is cut
            result, error = sync(small_config(sb), tap_class=tap_class)
            assert isinstance(error, TapAnalyticsError) and APP in str(error)
            if mode == "early":  # the queries of every window had finished...
                assert len(sb.insights.queries) > 2
            # ...yet no STATE names an Insights bookmark: no window's rows all went out
            assert not any(name.startswith("insights_") and "replication_key_value" in value
                           for state in result.states
                           for name, value in state.get("bookmarks", {}).items())
            line = re.sub(r"reports/\S+?\.csv\.gz", "<file>", str(error))  # query id, time
            outcome[mode] = (line, without_clock(result.states),
                             without_files(result.records))
    assert outcome["early"] == outcome["plain"]


def test_a_signal_during_the_early_queries_exits_promptly() -> None:
    with fresh(query_seconds=3600.0) as sb, tempfile.TemporaryDirectory() as tmp:
        sb.alation.faults = Faults(latency_seconds=0.5)  # a slow Alation: time to signal
        config_path = os.path.join(tmp, "config.json")
        Path(config_path).write_text(json.dumps(small_config(sb)))
        proc = subprocess.Popen([TAP_EXE, "--config", config_path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(600):  # bounded: up to 60 s for the first query to go out
                if sb.insights.requests(POST_PATH, "POST") or proc.poll() is not None:
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.1)
            assert sb.insights.requests(POST_PATH, "POST"), "no early query"
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted by signal" in stderr


# -- the plan alone (no query is submitted) ----------------------------------------------


def report_streams(config: dict) -> list[t.Any]:
    tap = TapAnalytics(config=config, parse_env_config=False)
    return [tap.streams[APP], tap.streams[DTMF]]


def test_plan_the_first_windows_of_each_report_in_sync_order(sandbox: Sandbox) -> None:
    queries = schedule.plan(report_streams(sandbox.config()))
    assert [q.stream for q in queries] == [APP] * 7 + [DTMF] * 7  # 7 <= MAX_EARLY_WINDOWS
    assert queries[0].label == "window 1/7 [2024-01-01T00:00:00Z, 2024-01-02T00:00:00Z)"
    assert queries[0].body["timestamp"] == {"$gte": "2024-01-01T00:00:00Z",
                                            "$lt": "2024-01-02T00:00:00Z"}


def test_plan_leaves_out_what_it_cannot_know(sandbox: Sandbox) -> None:
    config = copy.deepcopy(sandbox.config(end_date=False))
    config["start_date"] = (DATA_START.replace(year=2099)).isoformat()
    assert schedule.plan(report_streams(config)) == []  # no window to run
    config["start_date"] = "2020-01-01T00:00:00Z"  # many windows up to now
    queries = schedule.plan(report_streams(config))
    assert len(queries) == 2 * schedule.MAX_EARLY_WINDOWS
    del config["start_date"]  # the stream raises its own error when it runs
    assert schedule.plan(report_streams(config)) == []


def test_plan_skips_deselected_streams_and_a_query_is_taken_once(sandbox: Sandbox) -> None:
    app, dtmf = report_streams(sandbox.config())
    dtmf.selected = False
    queries = schedule.plan([app, dtmf])
    assert {q.stream for q in queries} == {APP}
    config = sandbox.config()
    api = InsightsApi(config["insights"])
    early = schedule.EarlyQueries(api, queries)
    body = app.query_body(*app.window_plan()[0][0])
    future = early.take(APP, body)
    assert future is queries[0].future
    assert early.take(APP, body) is None  # once
    assert early.take(DTMF, body) is None  # another stream's query is not this one
    early.abandon()  # never started: every query is dropped, none was submitted
    assert all(q.future.cancelled() for q in queries)
    assert not api.stop.is_set()  # no worker to stop
    api.close()
