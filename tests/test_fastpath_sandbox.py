"""Records the tap emits (fast path, real CLI) are valid against their schemas, for every
stream of the sandbox config; on real sandbox data the fast path equals the SDK's path."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import pytest
from helpers import TAP_EXE, run_cli, sync_bytes
from jsonschema import Draft7Validator, FormatChecker
from singer_sdk.io_base import SingerWriter

from tap_analytics.common.fastpath import FastRecordsMixin, FastSingerWriter
from tap_analytics.sandbox import Sandbox
from tap_analytics.sandbox.core import Faults

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")

checker = FormatChecker()


@checker.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    """RFC 3339 with an explicit offset (jsonschema checks no date-time by itself here)."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        raise ValueError(f"not an RFC 3339 date-time with an offset: {value!r}")
    dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


def test_checker_rejects_what_the_contract_forbids() -> None:
    validator = Draft7Validator({"type": "string", "format": "date-time"},
                                format_checker=checker)
    assert validator.is_valid("2024-01-01T00:00:00.000000+00:00")
    for bad in ("2024-01-01 00:00:00+00:00", "2024-01-01T00:00:00", "1704067200000",
                "2024-13-01T00:00:00Z"):
        assert not validator.is_valid(bad), bad


def test_every_sandbox_stream_emits_schema_valid_records(sandbox: Sandbox) -> None:
    result = run_cli(sandbox.config(), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.schemas, "no SCHEMA messages"
    empty = [name for name in result.schemas if not result.records.get(name)]
    assert not empty, f"streams without records: {empty}"
    for stream, records in result.records.items():
        assert stream in result.schemas, f"RECORD before/without SCHEMA: {stream}"
        validator = Draft7Validator(result.schemas[stream], format_checker=checker)
        for record in records:
            errors = sorted(validator.iter_errors(record), key=lambda e: list(e.path))
            assert not errors, (
                f"{stream}: {errors[0].message} at {list(errors[0].path)} in {record}")
    # the output ends with the STATE that covers every record (nothing trails it)
    kinds = [m["type"] for m in result.messages]
    assert kinds[-1] == "STATE", kinds[-5:]


def _sync_bytes(config: dict) -> list[dict]:
    return [json.loads(line) for line in sync_bytes(config).decode("utf-8").splitlines()]


def test_fast_path_equals_sdk_path_on_alation_sandbox_data(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tap_analytics.tap import TapAnalytics

    config = {k: v for k, v in sandbox.config().items() if k not in ("scuba", "insights")}
    assert TapAnalytics.message_writer_class is FastSingerWriter
    fast = _sync_bytes(config)
    monkeypatch.setattr(FastRecordsMixin, "fast_path_enabled", False)
    monkeypatch.setattr(TapAnalytics, "message_writer_class", SingerWriter)
    stock = _sync_bytes(config)

    def records(messages: list[dict]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for m in messages:
            if m["type"] == "RECORD":
                out.setdefault(m["stream"], []).append(m["record"])
        return out

    fast_records, stock_records = records(fast), records(stock)
    assert sum(map(len, fast_records.values())) > 1000
    assert fast_records == stock_records
    # the whole output, STATE messages (a resume marker per page) included, in order
    assert sum(m["type"] == "STATE" for m in fast) > 20
    assert _comparable(fast) == _comparable(stock)


def _comparable(messages: list[dict]) -> list[dict]:
    """The messages without what depends on the clock: RECORD time_extracted, the
    replication key signpost (the sync's start time)."""
    out = []
    for message in json.loads(json.dumps(messages)):
        message.pop("time_extracted", None)
        for entry in (message.get("value") or {}).get("bookmarks", {}).values():
            entry.pop("replication_key_signpost", None)
        out.append(message)
    return out


def test_sigterm_mid_sync_leaves_whole_lines_ending_with_a_state(
    fresh_sandbox: t.Callable[..., Sandbox]
) -> None:
    """Meltano stops a tap with SIGTERM: the SDK then writes a last STATE, which writes the
    buffered records out before it; no torn line, nothing after that STATE."""
    sb = fresh_sandbox(services=["alation"], faults=Faults(latency_seconds=0.02))
    config = sb.config()
    config["alation"]["page_size"] = 10
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.json")
        path.write_text(json.dumps(config))
        proc = subprocess.Popen([TAP_EXE, "--config", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first write (SCHEMA .. STATE): well underway
        assert first
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        # Read on through the same buffered reader: communicate(timeout=...) reads the
        # raw pipe and loses what readline() buffered past the first line.
        watchdog = threading.Timer(60, proc.kill)
        watchdog.start()
        try:
            rest = proc.stdout.read()
            proc.wait(timeout=60)
        finally:
            watchdog.cancel()
            proc.stdout.close()
    # An interrupted sync is not a success: exit 128 + SIGTERM, as a shell reports it.
    assert proc.returncode == 128 + signal.SIGTERM, proc.returncode
    lines = (first + rest).decode("utf-8").splitlines()
    messages = [json.loads(line) for line in lines]  # every line is whole JSON
    records = [m for m in messages if m["type"] == "RECORD"]
    assert records, "killed before any record: make the sandbox slower"
    assert messages[-1]["type"] == "STATE", [m["type"] for m in messages[-3:]]
    total = sum(len(v) for k, v in sb.alation.data.items() if k != "query")
    assert len(records) < total, "the sync finished before SIGTERM: nothing was tested"


def test_connection_test_mode_stops_each_alation_stream_after_one_record(
    sandbox: Sandbox
) -> None:
    """`--test` (the SDK's dry run: a record limit) is one of the cases the page loop
    leaves to the SDK's loop: one record per stream, exit 0."""
    config = {k: v for k, v in sandbox.config().items() if k not in ("scuba", "insights")}
    result = run_cli(config, args=["--test"], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = {name: len(records) for name, records in result.records.items()}
    assert counts and set(counts.values()) == {1}, counts
    assert "alation_execution_events" in counts
