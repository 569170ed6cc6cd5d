"""Alation mid-stream resume: a run killed mid-stream, re-run from its last STATE, loses
nothing and repeats at most one page.

Units build the tap with a state holding a `resume` marker and check the exact first
request. Behaviour tests run the real executable against the sandbox, SIGKILL it after N
output lines (N from seeded RNGs), re-run it from the last STATE it printed and compare
with the sandbox's data; some change the sandbox's data between the two runs.
"""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
import logging
import random
import typing as t
from urllib.parse import urlparse

import pytest
from helpers import SyncResult, run_cli, run_inprocess
from singer_sdk.streams.rest import PageContext
from test_alation_sync import PATHS, STREAMS
from test_faults_sync import _instant, alation_expected, record_key
from test_resume_kill import last_state, run_killed

from tap_analytics.sandbox import Sandbox
from tap_analytics.tap import TapAnalytics

PAGE = 7  # records per request in the behaviour tests: several pages per stream
INCREMENTAL = tuple(STREAMS)  # the five list streams

# -- units: the first request of a resumed run ------------------------------------------

TOKEN = "unit-test-token-r3sm"
BASE = {"base_url": "https://alation.example.com", "api_token": TOKEN, "page_size": 250}


def make_tap(state: dict | None = None, **config: t.Any) -> TapAnalytics:
    cfg = {"start_date": "2024-01-01T00:00:00Z", "alation": dict(BASE), **config}
    return TapAnalytics(config=cfg, state=state, parse_env_config=False)


def first_request(tap: TapAnalytics, stream_name: str) -> t.Any:
    """The request a sync of this stream sends first: its paginator's start offset."""
    stream = tap.streams[stream_name]
    start = stream.get_new_paginator().current_value
    return stream.get_http_request(page=PageContext(stream_context=None, next_page_token=start))


def with_marker(stream: str, key: str, bookmark: t.Any, **marker: t.Any) -> dict:
    return {"bookmarks": {stream: {"replication_key": key, "replication_key_value": bookmark,
                                   "resume": {"replication_key": key, **marker}}}}


@pytest.mark.parametrize(
    ("stream", "key", "bookmark", "marker", "expected"),
    [
        # The interrupted run's filters win over today's start_date/end_date.
        ("alation_execution_events", "ts_executed", "2024-01-03T00:00:00.000000+00:00",
         {"filter_start": "2024-01-03T00:00:00.000000+00:00",
          "filter_end": "2024-01-06T12:00:00.000000+00:00", "skip": 1000,
          "last_key": 4242, "max_value": "2024-01-05T00:00:00.000000+00:00"},
         {"ts_executed__gte": "2024-01-03T00:00:00.000000+00:00",
          "ts_executed__lt": "2024-01-06T12:00:00.000000+00:00", "limit": 250, "skip": 750}),
        # No end in the interrupted run (no end_date): none now either.
        ("alation_execution_sessions", "ts_start", None,
         {"filter_start": "2024-01-01T00:00:00.000000+00:00", "filter_end": None,
          "skip": 500, "last_key": 7, "max_value": None},
         {"ts_start__gte": "2024-01-01T00:00:00.000000+00:00", "limit": 250, "skip": 250}),
        ("alation_queries", "ts_last_saved", "2024-01-02T00:00:00.000000+00:00",
         {"filter_start": "2024-01-02T00:00:00.000000+00:00", "filter_end": None,
          "skip": 260, "last_key": 99, "max_value": "2024-01-02T05:00:00.000000+00:00"},
         {"ts_last_saved__gte": "2024-01-02T00:00:00.000000+00:00", "order_by": "id",
          "limit": 250, "skip": 10}),
        ("alation_scheduled_runs", "ts_sent_to_broker", None,
         {"filter_start": "2024-01-01T00:00:00.000000+00:00",
          "filter_end": "2024-02-01T00:00:00.000000+00:00", "skip": 750,
          "last_key": "c0ffee", "max_value": None},
         {"ts_sent_to_broker__gte": "2024-01-01T00:00:00.000000+00:00",
          "ts_sent_to_broker__lt": "2024-02-01T00:00:00.000000+00:00",
          "order_by": "ts_sent_to_broker", "limit": 250, "skip": 500}),
        # Batches: id__gt the bookmark, never an end.
        ("alation_execution_batches", "id", 4711,
         {"filter_start": 4711, "filter_end": None, "skip": 2500, "last_key": 9000,
          "max_value": 9001},
         {"id__gt": 4711, "limit": 250, "skip": 2250}),
        # A first sync of batches was interrupted: no id filter at all.
        ("alation_execution_batches", "id", None,
         {"filter_start": None, "filter_end": None, "skip": 250, "last_key": 250,
          "max_value": 250},
         {"limit": 250, "skip": 0}),
    ],
)
def test_a_resume_marker_gives_the_same_filters_from_one_page_before_its_offset(
    stream: str, key: str, bookmark: t.Any, marker: dict, expected: dict,
) -> None:
    state = with_marker(stream, key, bookmark, **marker)
    # start_date/end_date moved since the interruption: the marker still decides.
    tap = make_tap(state, start_date="2023-12-01T00:00:00Z", end_date="2024-03-01T00:00:00Z")
    assert first_request(tap, stream).params == expected


def test_an_offset_inside_the_first_page_starts_at_zero() -> None:
    state = with_marker("alation_execution_events", "ts_executed", None,
                        filter_start="2024-01-01T00:00:00.000000+00:00", filter_end=None,
                        skip=100, last_key=3, max_value=None)
    assert first_request(make_tap(state), "alation_execution_events").params["skip"] == 0


@pytest.mark.parametrize(
    ("marker", "why"),
    [
        ({"replication_key": "ts_start"}, "replication key"),
        ({"skip": -10}, "skip"),
        ({"skip": "500"}, "skip"),
        ({"skip": True}, "skip"),
        ({"filter_start": "last tuesday"}, "filter_start"),
        ({"filter_end": 17}, "filter_end"),
        ({"max_value": "2024-01-05 00:00:00+00:00"}, "max_value"),  # not normalised
        ("oops", "not an object"),
    ],
)
def test_a_marker_that_does_not_fit_is_ignored_with_a_warning(
    marker: t.Any, why: str, caplog: pytest.LogCaptureFixture,
) -> None:
    good = {"replication_key": "ts_executed",
            "filter_start": "2024-01-02T00:00:00.000000+00:00", "filter_end": None,
            "skip": 500, "last_key": 1, "max_value": None}
    value = {**good, **marker} if isinstance(marker, dict) else marker
    state = {"bookmarks": {"alation_execution_events": {
        "replication_key": "ts_executed",
        "replication_key_value": "2024-01-04T00:00:00.000000+00:00", "resume": value}}}
    with caplog.at_level(logging.WARNING):
        params = first_request(make_tap(state), "alation_execution_events").params
    # Read again from the bookmark: repeats, loses nothing.
    assert params == {"ts_executed__gte": "2024-01-04T00:00:00.000000+00:00",
                      "limit": 250, "skip": 0}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "resume marker is ignored" in r.getMessage()]
    assert len(warnings) == 1 and why in warnings[0]
    assert "alation_execution_events" in warnings[0]


def test_a_batch_marker_with_an_end_is_ignored() -> None:
    state = with_marker("alation_execution_batches", "id", 10, filter_start=10,
                        filter_end=20, skip=500, last_key=1, max_value=None)
    assert first_request(make_tap(state), "alation_execution_batches").params == {
        "id__gt": 10, "limit": 250, "skip": 0}


def test_a_stream_forced_to_full_table_does_not_resume_mid_stream() -> None:
    state = with_marker("alation_execution_events", "ts_executed", None,
                        filter_start="2024-01-03T00:00:00.000000+00:00", filter_end=None,
                        skip=1000, last_key=1, max_value=None)
    catalog = make_tap().catalog_dict
    for entry in catalog["streams"]:
        if entry["tap_stream_id"] == "alation_execution_events":
            entry["replication_method"] = "FULL_TABLE"
    cfg = {"start_date": "2024-01-01T00:00:00Z", "alation": dict(BASE)}
    tap = TapAnalytics(config=cfg, state=state, catalog=catalog, parse_env_config=False)
    assert first_request(tap, "alation_execution_events").params == {
        "ts_executed__gte": "2024-01-01T00:00:00.000000+00:00", "limit": 250, "skip": 0}


def test_records_on_the_bookmark_are_still_dropped_when_resuming() -> None:
    mark = "2024-01-05T00:00:00.250000+00:00"
    state = with_marker("alation_execution_events", "ts_executed", mark, filter_start=mark,
                        filter_end=None, skip=500, last_key=1, max_value=None)
    stream = make_tap(state).streams["alation_execution_events"]
    assert stream.post_process({"id": 1, "ts_executed": "2024-01-05 00:00:00.25+00:00"}) is None
    assert stream.post_process({"id": 2, "ts_executed": "2024-01-05T00:00:00.250001Z"})


# -- behaviour: the real executable, killed and resumed -----------------------------------

def sandbox_config(sb: Sandbox) -> dict:
    config = sb.config()
    config["alation"]["page_size"] = PAGE
    return config


def duplicates(*runs: SyncResult) -> dict[str, int]:
    out = {}
    for stream in INCREMENTAL:
        keys = collections.Counter(record_key(stream, r) for run in runs
                                   for r in run.records.get(stream, []))
        out[stream] = sum(n - 1 for n in keys.values() if n > 1)
    return out


def missing(sb: Sandbox, *runs: SyncResult) -> dict[str, list]:
    out = {}
    for stream, wanted in alation_expected(sb.alation).items():
        got = {record_key(stream, r) for run in runs for r in run.records.get(stream, [])}
        lost = sorted(set(wanted) - got, key=str)
        if lost:
            out[stream] = lost[:5]
    return out


def markers(state: dict | None) -> dict[str, dict]:
    return {s: v["resume"] for s, v in ((state or {}).get("bookmarks") or {}).items()
            if isinstance(v, dict) and "resume" in v}


def kill_and_resume(config: dict, kill_after: int, state: dict | None = None
                    ) -> tuple[SyncResult, dict | None, bool]:
    lines, killed = run_killed(config, kill_after, state=state)
    return SyncResult.parse("".join(lines)), last_state(lines) or state, killed


def highest(sb: Sandbox, stream: str) -> t.Any:
    kind, _, rkey, _ = STREAMS[stream]
    values = [rec[rkey] for rec in sb.alation.data[kind]]
    return max(values) if rkey == "id" else max(_instant(v) for v in values)


def as_comparable(stream: str, value: t.Any) -> t.Any:
    return value if STREAMS[stream][2] == "id" else _instant(value)


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(seed=11, scale=0.1, services=["alation"]) as box:
        yield box


@pytest.fixture(scope="module")
def full(sb: Sandbox) -> SyncResult:
    result = run_cli(sandbox_config(sb))
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_uninterrupted_run_writes_a_marker_per_page_and_ends_without_any(
    sb: Sandbox, full: SyncResult,
) -> None:
    assert not missing(sb, full) and not any(duplicates(full).values())
    for stream in INCREMENTAL:
        n = len(full.records[stream])
        skips = [m[stream]["skip"] for m in map(markers, full.states) if stream in m]
        # One STATE per fully emitted page, with the offset of the next one.
        assert sorted(set(skips)) == list(range(PAGE, PAGE * (n // PAGE) + 1, PAGE))
        assert n > 2 * PAGE  # several pages: the kills below land mid-stream
    assert markers(full.final_state) == {}
    for stream in INCREMENTAL:
        bookmark = full.final_state["bookmarks"][stream]["replication_key_value"]
        assert as_comparable(stream, bookmark) == highest(sb, stream)


def test_every_marker_covers_exactly_the_records_before_it(full: SyncResult) -> None:
    """A marker's max_value is the highest value among the records printed before it, and
    those are the records of the pages before its offset."""
    emitted: dict[str, list] = collections.defaultdict(list)
    checked = 0
    for msg in full.messages:
        if msg["type"] == "RECORD" and msg["stream"] in STREAMS:
            emitted[msg["stream"]].append(msg["record"])
        elif msg["type"] == "STATE":
            for stream, marker in markers(msg["value"]).items():
                rkey = STREAMS[stream][2]
                before = emitted[stream]
                assert len(before) == marker["skip"]
                assert marker["max_value"] == max(r[rkey] for r in before)
                assert marker["last_key"] == record_key(stream, before[-1])
                checked += 1
    assert checked >= 10


@pytest.fixture(scope="module")
def kills(sb: Sandbox, full: SyncResult) -> list[dict]:
    config = sandbox_config(sb)
    rng = random.Random(2024)
    points = sorted(rng.sample(range(2, len(full.messages)), 10))
    runs = []
    for n in points:
        first, state, killed = kill_and_resume(config, n)
        second = run_cli(config, state=state)
        runs.append({"n": n, "killed": killed, "first": first, "state": state,
                     "second": second})
    return runs


def test_kill_and_resume_loses_nothing_and_repeats_at_most_one_page_per_stream(
    sb: Sandbox, kills: list[dict],
) -> None:
    assert sum(r["killed"] for r in kills) >= 7
    resumed_mid_stream = 0
    for run in kills:
        where = f"killed after {run['n']} lines, state {json.dumps(run['state'])[:300]}"
        assert run["second"].returncode == 0, (where, run["second"].stderr[-1500:])
        assert not missing(sb, run["first"], run["second"]), where
        dupes = duplicates(run["first"], run["second"])
        assert all(n <= PAGE for n in dupes.values()), (where, dupes)
        resumed_mid_stream += bool(markers(run["state"]))
        # The resumed run ends as an uninterrupted one: no marker, bookmark = maximum.
        final = run["second"].final_state
        assert markers(final) == {}
        for stream in INCREMENTAL:
            value = final["bookmarks"][stream]["replication_key_value"]
            assert as_comparable(stream, value) == highest(sb, stream), (where, stream)
    assert resumed_mid_stream >= 5


def test_a_no_change_run_after_a_resume_emits_nothing_in_one_request_per_stream(
    sb: Sandbox, kills: list[dict],
) -> None:
    run = next(r for r in kills if markers(r["state"]))
    sb.alation.clear_log()
    again = run_cli(sandbox_config(sb), state=run["second"].final_state)
    assert again.returncode == 0, again.stderr[-1500:]
    assert {s: len(again.records.get(s, [])) for s in INCREMENTAL} == dict.fromkeys(
        INCREMENTAL, 0)
    for stream, path in PATHS.items():
        assert len([r for r in sb.alation.requests(path) if r.path == path]) == 1, stream


def test_a_resumed_run_killed_again_still_loses_nothing(sb: Sandbox, full: SyncResult) -> None:
    config = sandbox_config(sb)
    rng = random.Random(77)
    total = len(full.messages)
    for _ in range(3):
        first, state1, _ = kill_and_resume(config, rng.randrange(total // 4, total // 2))
        second, state2, _ = kill_and_resume(config, rng.randrange(5, total // 2), state1)
        third = run_cli(config, state=state2)
        assert third.returncode == 0, third.stderr[-1500:]
        assert not missing(sb, first, second, third)
        # Each interruption repeats at most one page.
        assert all(n <= 2 * PAGE for n in duplicates(first, second, third).values())
        assert markers(third.final_state) == {}


# -- the data changed between the kill and the resume --------------------------------------

def kill_in_stream(config: dict, full: SyncResult, stream: str, pages: int) -> tuple[
        SyncResult, dict]:
    """Kill right after the STATE whose marker for `stream` is at offset pages*PAGE."""
    for n, msg in enumerate(full.messages, start=1):
        if msg["type"] == "STATE" and markers(msg["value"]).get(stream, {}).get(
                "skip") == pages * PAGE:
            first, state, _ = kill_and_resume(config, n)
            assert markers(state)[stream]["skip"] == pages * PAGE
            return first, state  # type: ignore[return-value]
    raise AssertionError(f"no STATE with a {stream} marker at {pages * PAGE}")


def remove(sb: Sandbox, kind: str, ids: set) -> None:
    """Records that left the listing (deleted in Alation, or out of the filter now)."""
    service = sb.alation
    with service.lock:
        service.data[kind] = [r for r in service.data[kind] if r["id"] not in ids]
        for key in ids:
            service.by_id[kind].pop(key, None)
        service.version += 1
        service._cache.clear()


def listing(sb: Sandbox, kind: str, marker: dict) -> list[int]:
    """The record ids of the endpoint's listing for the marker's filters (default order)."""
    lo, hi = _instant(marker["filter_start"]), _instant(marker["filter_end"])
    rkey = {"execution_event": "ts_executed"}[kind]
    return [r["id"] for r in sb.alation.data[kind] if lo <= _instant(r[rkey]) < hi]


@pytest.mark.parametrize("gone", ["before_the_last_record", "the_last_record_itself"])
def test_records_leaving_the_listing_before_the_offset_make_the_resume_skip_nothing(
    fresh_sandbox: t.Callable[..., Sandbox], gone: str,
) -> None:
    box = fresh_sandbox(seed=3, scale=0.1, services=["alation"])
    config = sandbox_config(box)
    full = run_cli(config)
    stream, kind = "alation_execution_events", "execution_event"
    first, state = kill_in_stream(config, full, stream, pages=3)
    marker = markers(state)[stream]
    ids = listing(box, kind, marker)
    assert ids[marker["skip"] - 1] == marker["last_key"]
    # Three records of the pages already emitted leave: everything after the offset
    # moves three places forward.
    if gone == "before_the_last_record":
        removed = {ids[0], ids[PAGE + 2], ids[marker["skip"] - 2]}
    else:
        removed = {ids[1], ids[PAGE], marker["last_key"]}
    remove(box, kind, removed)
    second = run_cli(config, state=state)
    assert second.returncode == 0, second.stderr[-1500:]
    assert not missing(box, first, second)
    assert all(n <= PAGE for n in duplicates(first, second).values())


def test_newer_records_arriving_after_the_kill_are_read_by_the_resume_or_the_next_run(
    fresh_sandbox: t.Callable[..., Sandbox],
) -> None:
    box = fresh_sandbox(seed=4, scale=0.1, services=["alation"])
    config = sandbox_config(box)
    config.pop("end_date")
    full = run_cli(config)
    first, state = kill_in_stream(config, full, "alation_execution_events", pages=2)
    box.alation.add_newer_records(4)
    second = run_cli(config, state=state)
    third = run_cli(config, state=second.final_state)
    assert second.returncode == third.returncode == 0, second.stderr[-1500:]
    assert not missing(box, first, second, third)


# -- the final bookmark and BATCH mode ------------------------------------------------------

def test_the_final_bookmark_counts_what_was_emitted_before_the_kill(sb: Sandbox) -> None:
    """The records left after the offset may all be older than those emitted before the
    kill: the bookmark is then the marker's max_value, not the resumed run's maximum.
    (The marker's offset is one page: the resumed run reads every record again.)"""
    config = sandbox_config(sb)
    stream, rkey = "alation_execution_events", "ts_executed"
    start, end = "2024-01-01T00:00:00.000000+00:00", "2024-01-08T00:00:00.000000+00:00"
    data_max = max(_instant(r[rkey]) for r in sb.alation.data["execution_event"])
    above = (data_max + dt.timedelta(seconds=1)).isoformat(timespec="microseconds")
    below = "2024-01-01T00:00:00.000001+00:00"
    for max_value, expected in ((above, _instant(above)), (below, data_max)):
        state = with_marker(stream, rkey, None, filter_start=start, filter_end=end,
                            skip=PAGE, last_key=None, max_value=max_value)
        result = run_inprocess(config, state=state)
        bookmark = result.final_state["bookmarks"][stream]
        assert "resume" not in bookmark
        assert _instant(bookmark["replication_key_value"]) == expected


def test_batch_mode_writes_no_marker(sb: Sandbox, tmp_path: t.Any) -> None:
    """In BATCH mode records wait in a batch file until its BATCH message: a mid-page
    STATE would claim records not delivered yet."""
    config = sandbox_config(sb)
    config["batch_config"] = {"encoding": {"format": "jsonl", "compression": "gzip"},
                              "storage": {"root": f"file://{tmp_path}"}}
    result = run_inprocess(config)
    assert not any(markers(state) for state in result.states)
    delivered = collections.Counter()
    for msg in result.messages:
        if msg["type"] == "BATCH":
            for url in msg["manifest"]:
                with gzip.open(urlparse(url).path, "rt") as fh:
                    delivered[msg["stream"]] += sum(1 for line in fh if line.strip())
    assert {s: delivered[s] for s in INCREMENTAL} == {
        s: len(alation_expected(sb.alation)[s]) for s in INCREMENTAL}
