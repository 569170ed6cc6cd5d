"""BATCH mode of the Insights report streams, over real HTTP and SFTP on loopback.

The batch files (jsonl.gz and parquet) are read back and compared with what the RECORD
path emits for the same sandbox data; the STATE after each BATCH message is checked
against the rows delivered so far; faults (a dropped SFTP connection, a truncated gzip)
and a SIGKILL mid-sync must not lose or half-deliver a file.
"""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
import logging
import os
import random
import typing as t
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest
from helpers import SyncResult, run_cli, run_inprocess
from test_insights_sync import APP, APP_FIELDS, as_compared, days, expected_rows, one_report
from test_resume_kill import last_state, run_killed

from tap_analytics.sandbox import DATA_START, Sandbox

FORMATS = [("jsonl", "gzip"), ("parquet", "none"), ("jsonl", "none")]


def batch_config(root: Path, fmt: str = "jsonl", compression: str | None = "gzip") -> dict:
    return {"encoding": {"format": fmt, "compression": compression},
            "storage": {"root": f"file://{root}", "prefix": "run-"}}


def read_batch_file(url: str, fmt: str, compression: str | None) -> list[dict]:
    path = urlparse(url).path
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    opener = gzip.open if compression == "gzip" else open
    with opener(path, "rt") as fh:  # type: ignore[operator]
        return [json.loads(line) for line in fh if line.strip()]


def delivered(result: SyncResult, stream: str = APP) -> list[list[dict]]:
    """The rows of each BATCH message of `stream`, in message order."""
    out = []
    for message in result.messages:
        if message["type"] == "BATCH" and message["stream"] == stream:
            enc = message["encoding"]
            rows: list[dict] = []
            for url in message["manifest"]:
                rows += read_batch_file(url, enc["format"], enc.get("compression"))
            out.append(rows)
    return out


def without_source(records: list[dict]) -> list[dict]:
    # source_file holds the query's id: another query (another run) names other files
    return [{k: v for k, v in r.items() if k != "source_file"} for r in records]


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(seed=7, services=["insights"]) as sandbox:
        sandbox.insights.query_seconds = 0.05
        sandbox.insights.rows_per_file = 40  # several files per window
        yield sandbox


@pytest.fixture(scope="module")
def record_run(sb: Sandbox) -> SyncResult:
    config = one_report(sb.config())
    config["end_date"] = days(6)
    return run_inprocess(config)


@pytest.mark.parametrize(("fmt", "compression"), FORMATS)
def test_batch_files_equal_the_record_path(sb: Sandbox, record_run: SyncResult,
                                           tmp_path: Path, fmt: str,
                                           compression: str | None) -> None:
    config = one_report(sb.config())
    config["end_date"] = days(6)
    config["batch_config"] = batch_config(tmp_path, fmt, compression)
    result = run_inprocess(config)
    assert APP not in result.records  # no RECORD message for the report
    batches = delivered(result)
    rows = [r for b in batches for r in b]
    expected = record_run.records[APP]
    assert len(expected) > 500
    assert without_source(rows) == without_source(expected)
    assert as_compared(rows, APP_FIELDS) == expected_rows(
        sb.insights, APP_FIELDS, DATA_START, DATA_START + dt.timedelta(days=6))
    # one batch file per report file: each file's rows, whole, in one BATCH message
    per_window = collections.Counter(r["window_start"] for r in expected)
    assert len(batches) == sum(-(-n // 40) for n in per_window.values())
    for batch in batches:
        assert len({r["source_file"] for r in batch}) == 1
        assert 0 < len(batch) <= 40
    assert len({r["source_file"] for r in rows}) == len(batches)
    manifests = [m["manifest"] for m in result.messages if m["type"] == "BATCH"
                 and m["stream"] == APP]
    assert all(len(m) == 1 and m[0].startswith(f"file://{tmp_path}/run-{APP}-")
               for m in manifests)
    assert result.schemas[APP]["properties"].keys() == expected[0].keys()


def test_state_after_each_batch_covers_exactly_the_emitted_windows(
        sb: Sandbox, record_run: SyncResult, tmp_path: Path) -> None:
    config = one_report(sb.config())
    config["end_date"] = days(6)
    config["batch_config"] = batch_config(tmp_path)
    result = run_inprocess(config)
    per_window = collections.Counter(r["window_start"] for r in record_run.records[APP])
    so_far: list[dict] = []
    marks = []
    for message in result.messages:
        if message["type"] == "BATCH" and message["stream"] == APP:
            url = message["manifest"][0]
            rows = read_batch_file(url, "jsonl", "gzip")
            start = rows[0]["window_start"]
            if start > min(per_window):
                # the windows before this one (the empty day too) were bookmarked already
                assert marks and marks[-1] == start, (start, marks[-1:])
            so_far += rows
        elif message["type"] == "STATE":
            mark = message["value"]["bookmarks"].get(APP, {}).get("replication_key_value")
            if mark is None:
                assert not so_far or len({r["window_start"] for r in so_far}) == 1
                continue
            marks.append(mark)
            done = collections.Counter(r["window_start"] for r in so_far
                                       if r["window_end"] <= mark)
            # every window up to the bookmark is complete, none beyond it is counted
            assert all(done[w] == per_window[w] for w in done), mark
            assert all(w in done for w in per_window if w < mark)
    assert marks == sorted(marks)
    # the empty day (2024-01-04) moved the bookmark too: it ends at end_date
    assert marks[-1] == "2024-01-07T00:00:00.000000+00:00"
    assert "2024-01-04T00:00:00.000000+00:00" not in per_window
    assert "2024-01-05T00:00:00.000000+00:00" in marks


def fault_config(sandbox: Sandbox, root: Path, end_day: int = 2,
                 encoding: tuple[str, str] = ("jsonl", "gzip"), **extra: t.Any) -> dict:
    config = one_report(sandbox.config(), **extra)
    config["end_date"] = days(end_day)
    config["batch_config"] = batch_config(root, *encoding)
    return config


@pytest.mark.parametrize("encoding", FORMATS[:2])
def test_dropped_connection_mid_file_rereads_it(
        fresh_sandbox: t.Callable[..., Sandbox], tmp_path: Path,
        caplog: pytest.LogCaptureFixture, encoding: tuple[str, str]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    service = sandbox.insights
    service.query_seconds = 0.05
    service.rows_override = 40_000  # a file of many 32 KiB blocks
    service.rows_per_file = 20_000  # two files, decoded in parallel
    service.drop_once = True
    with caplog.at_level(logging.WARNING):
        result = run_inprocess(fault_config(sandbox, tmp_path, end_day=1, encoding=encoding))
    assert service.drops == 1
    batches = delivered(result)
    assert [len(b) for b in batches] == [20_000, 20_000]
    rows = [r for b in batches for r in b]
    assert [r["row_number"] for r in rows] == list(range(1, 40_001))
    assert len({r["transaction_id"] for r in rows}) == 40_000
    warned = [rec.getMessage() for rec in caplog.records if "reading it again" in
              rec.getMessage()]
    assert len(warned) == 1 and "SFTP connection dropped" in warned[0]


@pytest.mark.parametrize("encoding", FORMATS[:2])
def test_truncated_gzip_once_is_read_again(fresh_sandbox: t.Callable[..., Sandbox],
                                           tmp_path: Path, encoding: tuple[str, str]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.query_seconds = 0.05
    sandbox.insights.truncate = "once"
    result = run_inprocess(fault_config(sandbox, tmp_path, encoding=encoding))
    assert sandbox.insights.truncations == 1
    rows = [r for b in delivered(result) for r in b]
    assert as_compared(rows, APP_FIELDS) == expected_rows(
        sandbox.insights, APP_FIELDS, DATA_START, DATA_START + dt.timedelta(days=2))


def test_truncated_gzip_always_fails_clearly_without_a_half_file(
        fresh_sandbox: t.Callable[..., Sandbox], tmp_path: Path) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.query_seconds = 0.05
    sandbox.insights.truncate = "always"
    result = run_cli(fault_config(sandbox, tmp_path, max_tries=2))
    assert result.returncode == 1
    lines = [x for x in result.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "truncated or corrupt" in lines[0] and APP in lines[0]
    assert "Traceback" not in result.stderr
    # file 1 read max_tries times; its sibling file, decoded in parallel, maybe once more
    assert sandbox.insights.truncations >= 2
    assert not [m for m in result.messages if m["type"] == "BATCH" and m["stream"] == APP]
    assert result.final_state.get("bookmarks", {}).get(APP, {}).get(
        "replication_key_value") is None
    assert not [p for p in os.listdir(tmp_path) if APP in p]  # no half file


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ({"encoding": {"format": "csv"}, "storage": {"root": "file:///tmp"}}, "batch_config"),
        ({"encoding": {"format": "jsonl"}}, "batch_config"),
    ],
)
def test_bad_batch_config_is_one_clear_line(sb: Sandbox, batch: dict, expected: str) -> None:
    config = one_report(sb.config())
    config["end_date"] = days(1)
    config["batch_config"] = batch
    result = run_cli(config)
    assert result.returncode == 1
    lines = [x for x in result.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not result.messages or all(m["type"] != "BATCH" for m in result.messages)


def test_missing_pyarrow_names_batch_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from tap_analytics.common.errors import ConfigError
    from tap_analytics.insights import check_batch_support

    check_batch_support({"encoding": {"format": "parquet"}})  # installed here: fine
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"'batch_config'.*parquet.*tap-analytics\[batch\]"):
        check_batch_support({"encoding": {"format": "parquet"}})


# -- a kill during a bulk sync ----------------------------------------------------------

KILL_SEEDS = range(6)


@pytest.fixture(scope="module")
def kill_sandbox() -> t.Iterator[Sandbox]:
    with Sandbox(seed=11, services=["insights"]) as sandbox:
        sandbox.insights.query_seconds = 0.05
        sandbox.insights.rows_per_file = 50
        yield sandbox


def test_a_kill_during_a_bulk_sync_resumes_without_losing_a_window(
        kill_sandbox: Sandbox, tmp_path: Path) -> None:
    config = one_report(kill_sandbox.config())
    config["end_date"] = days(6)
    config["batch_config"] = batch_config(tmp_path)
    full = run_cli(config)
    assert full.returncode == 0, full.stderr[-2000:]
    wanted = {(r["window_start"], r["row_number"]) for b in delivered(full) for r in b}
    assert len(wanted) > 500
    killed = resumed = 0
    for seed in KILL_SEEDS:
        kill_after = random.Random(seed).randrange(2, len(full.messages))
        lines, was_killed = run_killed(config, kill_after)
        killed += was_killed
        first = SyncResult.parse("".join(lines))
        state = last_state(lines)
        resumed += bool(state and state["bookmarks"].get(APP, {}).get("replication_key_value"))
        second = run_cli(config, state=state)
        assert second.returncode == 0, (seed, second.stderr[-1500:])
        got = collections.Counter((r["window_start"], r["row_number"])
                                  for res in (first, second) for b in delivered(res) for r in b)
        missing = wanted - set(got)
        assert not missing, f"seed {seed} (killed after {kill_after} lines): lost {missing}"
        # only the window being written at the kill is delivered twice
        twice = {w for (w, _n), c in got.items() if c > 1}
        assert len(twice) <= 1, (seed, sorted(twice))
    assert killed >= len(KILL_SEEDS) - 1
    assert resumed >= 2
