"""A 500,000-row report through the real path (query, poll, SFTP, gunzip, CSV, typing).

Runs in every suite run (no marker): the rows stream through `get_records` without the
Singer writer, to keep it quick. Its memory is measured in the benchmark, not here.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from tap_analytics.sandbox import DATA_START, Sandbox
from tap_analytics.tap import TapAnalytics

ROWS = 500_000


def test_500k_row_report(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    service = sandbox.insights
    service.rows_override = ROWS
    service.rows_per_file = 200_000  # three files: 200k + 200k + 100k
    config = sandbox.config()
    config["end_date"] = (DATA_START + dt.timedelta(days=1)).isoformat()
    config["insights"]["reports"] = [{
        "name": "big",
        "data": {"ApplicationExitEvent": {"fields": ["TransactionId", "EndTime"]}},
    }]
    tap = TapAnalytics(config=config, parse_env_config=False)
    stream = tap.streams["insights_big"]
    count = 0
    files = []
    last_ts = ""
    window_end = "2024-01-02T00:00:00.000000+00:00"
    for record in stream.get_records(None):
        count += 1
        # every generated row, in order, exactly once (the sandbox numbers them 0..n-1)
        assert record["row_number"] == count
        assert record["transaction_id"] == f"t{count - 1:08d}"
        assert "2024-01-01T00:00:00" <= record["timestamp"] < window_end
        assert record["timestamp"] >= last_ts
        assert record["end_time"] == record["timestamp"]
        last_ts = record["timestamp"]
        if not files or files[-1] != record["source_file"]:
            files.append(record["source_file"])
    assert count == ROWS
    assert len(files) == 3
    assert stream.get_context_state(None)["replication_key_value"] == window_end
