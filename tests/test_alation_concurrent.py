"""Alation list pages fetched ahead (alation.max_concurrent_requests > 1) change nothing
that reaches stdout: the records and the STATE messages equal the sequential run's
(max_concurrent_requests = 1), page by page, with faults, after a kill; a run with nothing
new still costs one request per stream; an unchanged query result is not downloaded again.

Everything runs against the sandbox over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import collections
import json
import random
import re
import threading
import time
import typing as t

import pytest
from helpers import SyncResult, run_cli, run_inprocess
from test_faults_sync import alation_expected, record_key
from test_resume_kill import last_state, run_killed

from tap_analytics.sandbox import Sandbox
from tap_analytics.sandbox.core import Faults, Request, Response

LIST_PATHS = {
    "alation_queries": "/integration/v1/query/",
    "alation_execution_sessions": "/integration/v1/query/execution_session/",
    "alation_execution_batches": "/integration/v1/query/execution_batch/",
    "alation_execution_events": "/integration/v1/query/execution_event/",
    "alation_scheduled_runs": "/integration/v1/query/scheduled_run/",
}
EVENTS = LIST_PATHS["alation_execution_events"]


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    """A small Alation sandbox (15 queries, 100 events ...); tests here do not mutate it."""
    with Sandbox(seed=5, scale=0.1, services=["alation"]) as sandbox:
        yield sandbox


def config_for(sandbox: Sandbox, page_size: int, in_flight: int, **extra: t.Any) -> dict:
    config = sandbox.config()
    config["alation"].update(page_size=page_size, max_concurrent_requests=in_flight, **extra)
    return config


def comparable_states(result: SyncResult) -> list[dict]:
    """The STATE messages without the SDK's signpost (the wall-clock time of the run)."""
    def strip(node: t.Any) -> t.Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "replication_key_signpost"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return [strip(state) for state in result.states]


def list_requests(sandbox: Sandbox) -> dict[str, list[int]]:
    """The `skip` of every list request, per list path, in arrival order."""
    out: dict[str, list[int]] = collections.defaultdict(list)
    for req in sandbox.alation.requests():
        if req.path in LIST_PATHS.values():
            out[req.path].append(int(req.query.get("skip", ["0"])[-1]))
    return out


def _sync(sandbox: Sandbox, config: dict, state: dict | None = None
          ) -> tuple[SyncResult, dict[str, list[int]]]:
    sandbox.alation.clear_log()
    result = run_inprocess(config, state=state)
    return result, list_requests(sandbox)


def _worker_threads() -> list[str]:
    return [th.name for th in threading.enumerate() if th.name.startswith("tap-analytics-")]


def assert_same_output(sequential: SyncResult, concurrent: SyncResult) -> None:
    assert sorted(concurrent.records) == sorted(sequential.records)
    for stream, records in sequential.records.items():
        assert concurrent.records[stream] == records, f"{stream}: records differ"
    assert comparable_states(concurrent) == comparable_states(sequential)


# -- same output, page sizes 1..N ---------------------------------------------------------
@pytest.mark.parametrize(("page_size", "in_flight"), [
    (1, 4),     # one record per page: every page full until the empty one
    (3, 16),
    (7, 4),     # short last pages
    (25, 4),    # 100 events, 50 batches: exact multiples (an empty page ends them)
    (15, 2),    # 15 queries: one exact page, then an empty one
    (1000, 4),  # everything on a first, short page: nothing fetched ahead
])
def test_concurrent_output_equals_sequential(sb: Sandbox, page_size: int,
                                             in_flight: int) -> None:
    sequential, seq_requests = _sync(sb, config_for(sb, page_size, 1))
    concurrent, con_requests = _sync(sb, config_for(sb, page_size, in_flight))
    assert_same_output(sequential, concurrent)
    assert_alation_complete_enough(sb, concurrent)
    assert not _worker_threads(), "a page worker thread outlived the sync"
    for path, skips in seq_requests.items():
        # the sequential offsets, in order, and at most `in_flight` speculative ones after
        assert sorted(con_requests[path]) == sorted(set(con_requests[path]))
        assert sorted(con_requests[path])[:len(skips)] == skips, path
        extra = len(con_requests[path]) - len(skips)
        assert 0 <= extra <= in_flight, f"{path}: {extra} speculative requests"
        # A first sync has no bookmark, so it fetches ahead from the first page on, even
        # when that page is short (a stream with a bookmark asks its first page alone:
        # see the no-change test below).


def assert_alation_complete_enough(sandbox: Sandbox, result: SyncResult) -> None:
    for stream, wanted in alation_expected(sandbox.alation).items():
        got = [record_key(stream, r) for r in result.records.get(stream, [])]
        assert sorted(map(str, got)) == sorted(map(str, wanted)), stream


# -- nothing new: one request per stream -------------------------------------------------
def test_a_no_change_run_costs_one_request_per_stream_with_4_in_flight(sb: Sandbox) -> None:
    full, _ = _sync(sb, config_for(sb, 10, 4))
    again, requests = _sync(sb, config_for(sb, 10, 4), state=full.final_state)
    assert {path: len(skips) for path, skips in requests.items()} == {
        path: 1 for path in LIST_PATHS.values()}
    assert not any(again.records.get(stream) for stream in LIST_PATHS), again.records.keys()
    # and the query results were not downloaded again either
    assert not again.records.get("alation_query_results")
    assert not [r for r in sb.alation.requests() if r.path.endswith("/csv/")]


# -- query results: one request per unchanged query --------------------------------------
def test_unchanged_query_results_cost_one_request_per_query(
        fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(seed=5, scale=0.1, services=["alation"])
    service = sandbox.alation
    config = sandbox.config()
    with_result = [q for q in service.result_query_ids if service.latest_result(q)]
    assert len(with_result) >= 2, "the sandbox must serve results: the test would prove nothing"

    first = run_inprocess(config)
    remembered = first.final_state["bookmarks"]["alation_query_results"]["result_ids"]
    assert remembered == {str(q): service.latest_result(q)["result"]["id"]
                          for q in with_result}

    service.clear_log()
    again = run_inprocess(config, state=first.final_state)
    assert not again.records.get("alation_query_results")
    result_paths = [r.path for r in service.requests() if "/result/" in r.path]
    assert sorted(result_paths) == sorted(
        f"/integration/v1/query/{q}/result/latest/" for q in service.result_query_ids)

    # the query runs again: only its new result is downloaded and emitted
    rerun = with_result[0]
    new_id = service.rerun_query(rerun)
    service.clear_log()
    third = run_inprocess(config, state=again.final_state)
    rows = third.records["alation_query_results"]
    assert {(r["query_id"], r["result_id"]) for r in rows} == {(rerun, new_id)}
    assert [r["row_number"] for r in rows] == list(
        range(1, len(service.result_rows(new_id)) + 1))
    assert [r.path for r in service.requests() if r.path.endswith("/csv/")] == [
        f"/integration/v1/result/{new_id}/csv/"]
    assert third.final_state["bookmarks"]["alation_query_results"]["result_ids"][
        str(rerun)] == new_id

    # full refresh (no state): every result is read again
    service.clear_log()
    full = run_inprocess(config)
    assert {r["query_id"] for r in full.records["alation_query_results"]} == set(with_result)
    assert len([r for r in service.requests() if r.path.endswith("/csv/")]) == len(with_result)


# -- faults: a 5xx on page k of n --------------------------------------------------------
def fail_page(skip: int, *, times: int | None) -> Faults:
    """Answer 503 to the execution_event request at offset `skip` (the first `times`
    times; None: always). Scripted through the sandbox's Faults override."""
    seen = collections.Counter()
    lock = threading.Lock()

    def override(request: Request) -> Response | None:
        if request.path != EVENTS or request.param("skip") != str(skip):
            return None
        with lock:
            seen[skip] += 1
            if times is not None and seen[skip] > times:
                return None
        return Response(status=503, body=b"<html>Service Unavailable</html>",
                        content_type="text/html", faultable=False)

    return Faults(override=override, paths=(EVENTS,))


@pytest.mark.parametrize("page", [0, 3, 9])  # first, middle, last full page (of 10)
def test_a_retried_5xx_on_page_k_changes_nothing(sb: Sandbox, page: int) -> None:
    reference, _ = _sync(sb, config_for(sb, 10, 1))
    sb.alation.faults = fail_page(page * 10, times=1)
    try:
        concurrent, requests = _sync(sb, config_for(sb, 10, 4))
    finally:
        sb.alation.faults = Faults()
    assert_same_output(reference, concurrent)
    assert requests[EVENTS].count(page * 10) == 2  # the 503, then the retry


def test_a_page_that_keeps_failing_stops_after_the_pages_before_it(sb: Sandbox) -> None:
    page = 4
    reference, _ = _sync(sb, config_for(sb, 10, 1))
    events = reference.records["alation_execution_events"]
    results = {}
    sb.alation.faults = fail_page(page * 10, times=None)
    try:
        for in_flight in (1, 4):
            results[in_flight] = run_cli(config_for(sb, 10, in_flight, max_tries=2))
    finally:
        sb.alation.faults = Faults()
    sequential, concurrent = results[1], results[4]
    for result in (sequential, concurrent):
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith("tap-analytics: error:")]
        assert len(errors) == 1 and "503" in errors[0] and EVENTS in errors[0], errors
        # The pages before the failing one went out, in order, and nothing past it; the
        # last STATE covers no record that was not written (the records after it are
        # written on the way out, and the resumed run reads them again).
        marker = result.final_state["bookmarks"]["alation_execution_events"]["resume"]
        assert (page - 1) * 10 <= marker["skip"] <= page * 10
        written = result.records["alation_execution_events"]
        assert marker["skip"] <= len(written) <= page * 10
        assert written == events[:len(written)]
    assert_same_output(sequential, concurrent)


def test_a_failing_page_past_the_end_is_dropped_not_retried(sb: Sandbox) -> None:
    # 100 events, pages of 10: the empty page at offset 100 ends the stream; the pages
    # asked ahead of it (110, 120, ...) answer 503. Their retries stop when the look-ahead
    # closes: the run ends as the sequential one, without waiting out 5 tries of each.
    reference, _ = _sync(sb, config_for(sb, 10, 1, max_tries=5))
    seen: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def override(request: Request) -> Response | None:
        skip = int(request.param("skip") or 0)
        if request.path != EVENTS or skip <= 100:
            return None
        with lock:
            seen[skip] += 1
        return Response(status=503, body=b"busy", content_type="text/plain",
                        faultable=False)

    sb.alation.faults = Faults(override=override, paths=(EVENTS,))
    try:
        concurrent, _ = _sync(sb, config_for(sb, 10, 4, max_tries=5))
    finally:
        sb.alation.faults = Faults()
    assert_same_output(reference, concurrent)
    assert seen, "no page past the end was asked: the test proved nothing"
    assert max(seen.values()) <= 2, seen  # the first try, at most one retry under way
    assert not _worker_threads()


# -- kill mid-sync, resume ---------------------------------------------------------------
def test_kill_mid_sync_then_resume_loses_nothing(sb: Sandbox) -> None:
    config = config_for(sb, 10, 4)
    sb.alation.faults = Faults(latency_seconds=0.005)  # pages really overlap in flight
    try:
        full = run_cli(config)
        assert full.returncode == 0, full.stderr[-1500:]
        expected = alation_expected(sb.alation)
        resumed = 0
        for seed in range(4):
            kill_after = random.Random(100 + seed).randrange(5, len(full.messages))
            lines, _ = run_killed(config, kill_after)
            state = last_state(lines)
            resumed += state is not None
            second = run_cli(config, state=state)
            assert second.returncode == 0, second.stderr[-1500:]
            first = SyncResult.parse("".join(lines))
            for stream, wanted in expected.items():
                got = {record_key(stream, r) for res in (first, second)
                       for r in res.records.get(stream, [])}
                missing = set(wanted) - got
                assert not missing, (seed, kill_after, stream, sorted(missing)[:5],
                                     json.dumps(state)[:300])
        assert resumed >= 2, "no run resumed from a STATE: the test proved little"
    finally:
        sb.alation.faults = Faults()


# -- progress ----------------------------------------------------------------------------
PAGE_LINE = re.compile(
    r"Alation stream '(\w+)': page \d+ done \(\d+ records, \d+ so far, \d+ records/s, "
    r"([0-9.]+) pages/s, (\d+) requests in flight\)")


def test_the_page_log_line_shows_pages_per_second_and_requests_in_flight(sb: Sandbox) -> None:
    sb.alation.faults = Faults(latency_seconds=0.02, paths=(EVENTS,))
    try:
        result = run_cli(config_for(sb, 5, 4))
    finally:
        sb.alation.faults = Faults()
    assert result.returncode == 0, result.stderr[-1500:]
    lines = [m for m in PAGE_LINE.finditer(result.stderr)]
    events = [m for m in lines if m.group(1) == "alation_execution_events"]
    assert len(events) == 21, result.stderr[-2000:]  # 20 full pages, then the empty one
    assert all(float(m.group(2)) > 0 for m in lines)
    in_flight = [int(m.group(3)) for m in events]
    assert max(in_flight) <= 4
    # each page's successors were sent before its line: the look-ahead is visible
    assert max(in_flight) >= 1, in_flight


# -- the next stream does not wait for the pages asked past the end ------------------------
SESSIONS = LIST_PATHS["alation_execution_sessions"]
BATCHES = LIST_PATHS["alation_execution_batches"]


def hold_pages_past_the_end(path: str, end: int, release: threading.Event,
                            seen: list[str], *, release_after: float | None = None
                            ) -> Faults:
    """Pages of `path` are answered 50 ms late (so pages overlap in flight), and those
    past its end (offset > `end`) only once `release` is set (10 s at most;
    `release_after`: set that long after the first one arrived). The first
    execution_event request after the 4 sent ahead of its sync (offset >= 40) sets it,
    and records whether it arrived while such a page was still held."""
    held = [0]
    lock = threading.Lock()

    def override(request: Request) -> Response | None:
        skip = int(request.param("skip") or 0)
        if request.path == path and skip > end:
            with lock:
                held[0] += 1
                if release_after is not None and held[0] == 1 and not release.is_set():
                    threading.Timer(release_after, release.set).start()
            release.wait(10)
            with lock:
                held[0] -= 1
            return None
        if request.path == path:
            time.sleep(0.05)
        elif request.path == EVENTS and skip >= 40 and not seen:
            with lock:
                seen.append("event request while a batch page was held"
                            if held[0] else "event request, nothing held")
            release.set()
        return None

    return Faults(override=override, paths=(path, EVENTS))


def _asked_past_the_end(sandbox: Sandbox, path: str, end: int) -> int:
    return sum(1 for r in sandbox.alation.requests()
               if r.path == path and int(r.query.get("skip", ["0"])[-1]) > end)


def test_the_next_stream_goes_on_while_the_pages_past_the_end_are_in_flight(
        sb: Sandbox) -> None:
    # 50 batches, pages of 10: the empty page at 50 ends them; the pages asked past it
    # are held. execution_events (next) takes over its 4 pages sent ahead and goes on.
    reference, _ = _sync(sb, config_for(sb, 10, 1))
    release = threading.Event()
    seen: list[str] = []
    sb.alation.faults = hold_pages_past_the_end(BATCHES, 50, release, seen)
    try:
        concurrent, _ = _sync(sb, config_for(sb, 10, 4))
    finally:
        release.set()
        sb.alation.faults = Faults()
    # without the drain, the events' requests would wait for the held pages
    assert seen == ["event request while a batch page was held"], seen
    assert_same_output(reference, concurrent)
    assert 0 < _asked_past_the_end(sb, BATCHES, 50) <= 4
    assert not _worker_threads(), "a page worker thread outlived the sync"


def test_the_last_alation_stream_to_sync_waits_for_the_dropped_pages(sb: Sandbox) -> None:
    # every stream after execution_events deselected: it is the last Alation stream, so
    # its own dropped pages are waited for before the sync moves on (or ends)
    from test_insights_overlap import selecting

    config = config_for(sb, 10, 4)
    catalog = selecting(config, lambda name: name in (
        "alation_execution_batches", "alation_execution_events"))
    release = threading.Event()
    sb.alation.faults = hold_pages_past_the_end(EVENTS, 100, release, [],
                                                release_after=1.0)
    try:
        sb.alation.clear_log()
        result = run_inprocess(config, catalog=catalog)
        assert release.is_set(), "the sync ended while a dropped page was still held"
        assert not _worker_threads(), "a page worker thread outlived the sync"
    finally:
        release.set()
        sb.alation.faults = Faults()
    assert sorted(result.records) == ["alation_execution_batches", "alation_execution_events"]
    assert _asked_past_the_end(sb, EVENTS, 100), "no page past the end was asked: " \
        "the test proved nothing"


def test_a_result_query_starts_as_soon_as_another_one_is_done(sb: Sandbox) -> None:
    # 2 in flight, 3 queries: the first query's latest result is held until the third
    # query's request arrives (10 s at most); the second query is done at once, so the
    # third goes out while the first is still held, and the rows still come in order.
    ids = list(sb.alation.result_query_ids)[:3]
    assert len(ids) == 3
    first, third = (f"/integration/v1/query/{q}/result/latest/" for q in (ids[0], ids[2]))
    release = threading.Event()
    held: list[str] = []
    seen: list[bool] = []

    def override(request: Request) -> Response | None:
        if request.path == first:
            held.append(request.path)
            release.wait(10)
            held.remove(request.path)
        elif request.path == third:
            seen.append(bool(held))  # the first one still held?
            release.set()
        return None

    only_results = {"alation_query_results"}
    from test_insights_overlap import selecting

    reference = run_inprocess(config_for(sb, 10, 1, result_query_ids=ids),
                              catalog=selecting(config_for(sb, 10, 1),
                                                only_results.__contains__))
    sb.alation.faults = Faults(override=override, paths=(first, third))
    try:
        config = config_for(sb, 10, 2, result_query_ids=ids)
        result = run_inprocess(config, catalog=selecting(config, only_results.__contains__))
    finally:
        release.set()
        sb.alation.faults = Faults()
    assert seen == [True]
    assert result.records == reference.records
    assert [r["query_id"] for r in result.records["alation_query_results"]] == sorted(
        (r["query_id"] for r in reference.records["alation_query_results"]),
        key=ids.index)
    assert not _worker_threads()


# -- the next stream's first pages are asked while this one is read ----------------------
def note_session_requests(seen: list[str], fail_events_at: int | None = None) -> Faults:
    """execution_event pages are answered 20 ms late (the one at `fail_events_at`: 503);
    each execution_session request notes whether the events' last page (offset 100, of
    100 events) had been asked for by then."""
    asked_last = threading.Event()

    def override(request: Request) -> Response | None:
        skip = int(request.param("skip") or 0)
        if request.path == EVENTS:
            if skip >= 100:
                asked_last.set()
            time.sleep(0.02)
            if skip == fail_events_at:
                return Response(status=503, body=b"busy", content_type="text/plain",
                                faultable=False)
        elif request.path == SESSIONS:
            seen.append(f"skip={skip}: events "
                        f"{'asked to the end' if asked_last.is_set() else 'still read'}")
        return None

    return Faults(override=override, paths=(EVENTS, SESSIONS))


def test_the_next_streams_first_pages_are_asked_while_this_one_is_read(sb: Sandbox) -> None:
    reference, seq_requests = _sync(sb, config_for(sb, 10, 1))
    seen: list[str] = []
    sb.alation.faults = note_session_requests(seen)
    try:
        concurrent, requests = _sync(sb, config_for(sb, 10, 4))
    finally:
        sb.alation.faults = Faults()
    # sessions' first 4 pages went out while execution_events was still being read
    assert sorted(seen[:4]) == [f"skip={k}: events still read" for k in (0, 10, 20, 30)], seen
    assert all(line.endswith("asked to the end") for line in seen[4:]), seen
    assert_same_output(reference, concurrent)  # records and STATE messages
    sessions = requests[SESSIONS]
    assert sorted(sessions)[:len(seq_requests[SESSIONS])] == seq_requests[SESSIONS]
    assert not _worker_threads()


def test_a_failing_stream_closes_the_next_streams_early_requests(sb: Sandbox) -> None:
    # execution_events fails for good at offset 60, after execution_sessions' first
    # pages went out: they are dropped, no thread is left, nothing of sessions is emitted
    seen: list[str] = []
    sb.alation.faults = note_session_requests(seen, fail_events_at=60)
    try:
        with pytest.raises(Exception, match="503"):
            run_inprocess(config_for(sb, 10, 4, max_tries=1))
    finally:
        sb.alation.faults = Faults()
    assert seen, "no session page was asked ahead: the test proved nothing"
    assert not _worker_threads(), "a page worker thread outlived the failed sync"


def test_a_stream_with_a_bookmark_sends_its_first_page_alone_ahead(sb: Sandbox) -> None:
    # the next run from the final STATE: each stream's first page is asked ahead alone
    # (a run with nothing new costs one request per stream) and taken over by its sync
    full, _ = _sync(sb, config_for(sb, 10, 4))
    reference, _ = _sync(sb, config_for(sb, 10, 1), state=full.final_state)
    seen: list[str] = []
    sb.alation.faults = note_session_requests(seen)
    try:
        again, requests = _sync(sb, config_for(sb, 10, 4), state=full.final_state)
    finally:
        sb.alation.faults = Faults()
    assert {path: len(skips) for path, skips in requests.items()} == {
        path: 1 for path in LIST_PATHS.values()}
    assert seen == ["skip=0: events still read"], seen
    assert_same_output(reference, again)
    assert not _worker_threads()
