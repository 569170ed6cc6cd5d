"""A sync that stops on an error still writes every RECORD it produced before the error
(the buffered writer flushes on the way out, as the SDK's line-by-line writer would), and
no STATE claims the records after the last one written."""

from __future__ import annotations

import typing as t

import pytest
from helpers import run_cli

from tap_analytics.sandbox import Sandbox
from tap_analytics.sandbox.core import Faults, Request, Response, json_response

EVENTS = "/integration/v1/query/execution_event/"
GOOD = [{"id": i, "query_id": 7, "session_id": 1, "ts_executed": "2024-01-02T03:04:05Z",
         "execution_state": "SUCCEEDED"} for i in (101, 102, 103)]


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    sandbox = Sandbox(seed=5, scale=0.02, services=["alation"]).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def test_records_before_a_bad_row_are_written_before_the_error_line(sb: Sandbox) -> None:
    service = sb.services["alation"]

    def script(request: Request) -> Response | None:
        if request.path != EVENTS:
            return None
        return json_response([*GOOD, {"id": 104, "ts_executed": "last tuesday"}])

    service.faults = Faults(override=script)
    try:
        result = run_cli(sb.config(), timeout=300)
    finally:
        service.faults = Faults()
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [x for x in result.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(errors) == 1 and "alation_execution_events" in errors[0], errors
    ids = [r["id"] for r in result.records.get("alation_execution_events", [])]
    assert ids == [101, 102, 103], ids
    # Streams synced before the failing one are complete, each closed by its STATE.
    assert any(result.records.get(s) for s in result.records if s != "alation_execution_events")
    # No STATE came after those three records: the next run reads them again.
    last_record = max(i for i, m in enumerate(result.messages) if m["type"] == "RECORD"
                      and m["stream"] == "alation_execution_events")
    assert all(m["type"] != "STATE" for m in result.messages[last_record:])
