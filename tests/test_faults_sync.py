"""With ~10% injected 5xx answers and connection resets, a full sync (the real executable)
still equals the sandbox's data: every key present once, every row as the API gave it.

The SDK retries a request 5 times: with 10% faults a request fails 5 times in a row with a
probability of ~1e-5, so the fault seed below is a sample, not a search for a lucky one.
"""

from __future__ import annotations

import collections
import datetime as dt
import typing as t

import pytest
from helpers import SyncResult, run_cli

from tap_analytics.sandbox import Sandbox
from tap_analytics.sandbox.core import Faults

# Alation list endpoint kind -> (stream, key field)
ALATION_STREAMS = {
    "query": ("alation_queries", "id"),
    "execution_session": ("alation_execution_sessions", "id"),
    "execution_batch": ("alation_execution_batches", "id"),
    "execution_event": ("alation_execution_events", "id"),
    "scheduled_run": ("alation_scheduled_runs", "task_id"),
}


def _instant(value: t.Any) -> dt.datetime | None:
    """A timestamp string as an instant (stdlib only: independent of common.timeutil)."""
    if not isinstance(value, str) or len(value) < 19 or value[4] != "-" or value[10] not in "T ":
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def differences(api: t.Any, emitted: t.Any, where: str = "") -> list[str]:
    """Where `emitted` differs from the API's record: values must be equal, except that
    timestamps may be rewritten to the same instant. Every API field must be present."""
    if isinstance(api, dict):
        if not isinstance(emitted, dict):
            return [f"{where}: {emitted!r} is not an object"]
        out = []
        for key, value in api.items():
            if key not in emitted:
                out.append(f"{where}.{key}: missing")
            else:
                out += differences(value, emitted[key], f"{where}.{key}")
        return out
    if isinstance(api, list):
        if not isinstance(emitted, list) or len(api) != len(emitted):
            return [f"{where}: {emitted!r} != {api!r}"]
        return [d for i, (a, e) in enumerate(zip(api, emitted)) for d in differences(a, e, f"{where}[{i}]")]
    if api == emitted and type(api) is type(emitted):
        return []
    a, e = _instant(api), _instant(emitted)
    if a is not None and e is not None and a == e:
        return []
    return [f"{where}: {emitted!r} != {api!r}"]


def alation_expected(service: t.Any) -> dict[str, dict[t.Any, dict]]:
    """The sandbox's Alation data, by stream and key."""
    expected = {
        stream: {rec[key]: rec for rec in service.data[kind]}
        for kind, (stream, key) in ALATION_STREAMS.items()
    }
    rows: dict[t.Any, dict] = {}
    for query_id in service.result_query_ids:
        event = service.latest_result(query_id)
        if not event:
            continue
        result_id = event["result"]["id"]
        for number, row in enumerate(service.result_rows(result_id), start=1):
            rows[(result_id, number)] = {"query_id": query_id, "row": row}
    expected["alation_query_results"] = rows
    return expected


def record_key(stream: str, record: dict) -> t.Any:
    if stream == "alation_query_results":
        return (record["result_id"], record["row_number"])
    for s, key in ALATION_STREAMS.values():
        if s == stream:
            return record[key]
    raise KeyError(stream)


def assert_alation_complete(result: SyncResult, service: t.Any) -> None:
    expected = alation_expected(service)
    for stream, wanted in expected.items():
        assert wanted, f"the sandbox serves no {stream}: the test would prove nothing"
        got = result.records.get(stream, [])
        keys = collections.Counter(record_key(stream, r) for r in got)
        dupes = {k: n for k, n in keys.items() if n > 1}
        assert not dupes, f"{stream}: duplicated keys {sorted(dupes)[:5]}"
        missing = set(wanted) - set(keys)
        extra = set(keys) - set(wanted)
        assert not missing, f"{stream}: {len(missing)} records lost, e.g. {sorted(missing)[:5]}"
        assert not extra, f"{stream}: unexpected keys {sorted(extra)[:5]}"
        for record in got:
            diff = differences(wanted[record_key(stream, record)], record)
            assert not diff, f"{stream} {record_key(stream, record)}: {diff[:3]}"


def fault_counts(service: t.Any) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for entry in service.log:
        if entry.status == 0:
            counts["reset"] += 1
        elif entry.status >= 500:
            counts["5xx"] += 1
        elif entry.status < 0:
            counts["cut"] += 1
        else:
            counts[str(entry.status)] += 1
    return counts


def test_alation_clean_sync_equals_the_sandbox(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sb = fresh_sandbox(seed=5, scale=0.1, services=["alation"])
    result = run_cli(sb.config())
    assert result.returncode == 0, result.stderr[-2000:]
    assert_alation_complete(result, sb.alation)


@pytest.mark.parametrize("fault_seed", [101])
def test_alation_sync_with_10_percent_faults_equals_the_sandbox(
    fresh_sandbox: t.Callable[..., Sandbox], fault_seed: int
) -> None:
    faults = Faults(error_rate=0.05, reset_rate=0.03, truncate_rate=0.02, seed=fault_seed)
    sb = fresh_sandbox(seed=5, scale=0.2, services=["alation"], faults=faults)
    config = sb.config()
    config["alation"]["page_size"] = 10  # many pages: many chances for a fault
    result = run_cli(config, timeout=600)

    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    counts = fault_counts(sb.alation)
    # The faults really happened, on enough requests to mean something.
    assert counts["reset"] >= 1 and counts["5xx"] >= 1, counts
    assert sum(counts.values()) >= 50, counts
    # Each retried fault was logged as a retry, naming the stream.
    assert result.stderr.count("retrying") >= counts["reset"] + counts["5xx"] + counts["cut"]
    assert_alation_complete(result, sb.alation)


# -- Scuba and Insights: a faulty sync equals a clean sync of the same sandbox ----------


RUN_DEPENDENT = {"source_file"}


def as_multiset(result: SyncResult) -> dict[str, collections.Counter]:
    import json  # noqa: PLC0415

    # The name of the file a row came from differs per run (it carries the query's time).
    return {
        stream: collections.Counter(
            json.dumps({k: v for k, v in r.items() if k not in RUN_DEPENDENT}, sort_keys=True)
            for r in records)
        for stream, records in result.records.items()
    }


def assert_same_records(clean: SyncResult, faulty: SyncResult) -> None:
    a, b = as_multiset(clean), as_multiset(faulty)
    assert set(a) == set(b), (sorted(a), sorted(b))
    for stream in a:
        lost = a[stream] - b[stream]
        extra = b[stream] - a[stream]
        assert not lost, f"{stream}: {sum(lost.values())} records lost, e.g. {list(lost)[:2]}"
        assert not extra, f"{stream}: {sum(extra.values())} records extra, e.g. {list(extra)[:2]}"


@pytest.mark.parametrize("family", ["scuba", "insights"])
def test_sync_with_10_percent_faults_equals_a_clean_sync(
    fresh_sandbox: t.Callable[..., Sandbox], family: str
) -> None:
    clean_sb = fresh_sandbox(seed=5, scale=0.2, services=[family])
    clean = run_cli(clean_sb.config(), timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert sum(len(v) for v in clean.records.values()) >= 20, "too little data to mean much"

    faults = Faults(error_rate=0.05, reset_rate=0.03, truncate_rate=0.02, seed=202)
    sb = fresh_sandbox(seed=5, scale=0.2, services=[family], faults=faults)
    config = sb.config()
    config[family]["max_tries"] = 5
    faulty = run_cli(config, timeout=600)

    assert faulty.returncode == 0, faulty.stderr[-2000:]
    assert "Traceback" not in faulty.stderr
    counts = fault_counts(sb.services[family])
    assert counts["reset"] + counts["5xx"] + counts["cut"] >= 1, counts
    assert_same_records(clean, faulty)


def test_insights_sftp_drop_and_truncated_gzip_once_are_recovered(
    fresh_sandbox: t.Callable[..., Sandbox],
) -> None:
    clean_sb = fresh_sandbox(seed=5, scale=0.2, services=["insights"])
    clean = run_cli(clean_sb.config(), timeout=600)
    assert clean.returncode == 0, clean.stderr[-2000:]

    sb = fresh_sandbox(seed=5, scale=0.2, services=["insights"])
    sb.insights.drop_once = True
    sb.insights.truncate = "once"
    faulty = run_cli(sb.config(), timeout=600)
    assert faulty.returncode == 0, faulty.stderr[-2000:]
    assert sb.insights.drops >= 1 and sb.insights.truncations >= 1, (
        sb.insights.drops, sb.insights.truncations)
    assert_same_records(clean, faulty)
    assert "Traceback" not in faulty.stderr
