"""A STATE the tap cannot use (hand-edited, from another tap, not JSON) -> one line naming the
stream (or the file) and the state; never an 'unexpected error' or a traceback. A state
that is merely empty or for unknown streams is a fresh start."""

from __future__ import annotations

import json
import subprocess
import tempfile
import typing as t
from pathlib import Path

import pytest
from helpers import TAP_EXE, run_cli

from tap_analytics.sandbox import Sandbox


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(seed=3, scale=0.05) as sandbox:
        yield sandbox


def only(sb: Sandbox, family: str) -> dict:
    return {k: v for k, v in sb.config().items()
            if k not in ("alation", "scuba", "insights") or k == family}


BAD_BOOKMARKS = [
    ("alation", "alation_queries", "ts_last_saved", "garbage"),
    ("alation", "alation_execution_events", "ts_executed", 12),
    ("scuba", "scuba_artist_events", "window_end", "not-a-time"),
    ("insights", "insights_application_exits", "timestamp", "2024-99-99"),
]


@pytest.mark.parametrize(("family", "stream", "key", "value"), BAD_BOOKMARKS,
                         ids=[f"{b[1]}-{b[3]}" for b in BAD_BOOKMARKS])
def test_an_unreadable_bookmark_is_one_line_naming_the_stream(
    sb: Sandbox, family: str, stream: str, key: str, value: t.Any
) -> None:
    state = {"bookmarks": {stream: {"replication_key": key, "replication_key_value": value}}}
    result = run_cli(only(sb, family), state=state)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert stream in lines[0], lines[0]
    assert "state" in lines[0], lines[0]
    assert "unexpected error" not in lines[0], lines[0]


def test_a_state_file_that_is_not_json_is_one_line(sb: Sandbox) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config, state = Path(tmp, "config.json"), Path(tmp, "state.json")
        config.write_text(json.dumps(only(sb, "alation")))
        state.write_text('{"bookmarks": {"alation_queries": ')
        proc = subprocess.run([TAP_EXE, "--config", str(config), "--state", str(state)],
                              capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "--state" in lines[0] and "not valid JSON" in lines[0], lines[0]


@pytest.mark.parametrize("state", [{}, {"bookmarks": {}},
                                   {"bookmarks": {"some_other_stream": {"x": 1}}}])
def test_an_empty_or_foreign_state_is_a_fresh_start(sb: Sandbox, state: dict) -> None:
    fresh = run_cli(only(sb, "alation"))
    again = run_cli(only(sb, "alation"), state=state)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {k: len(v) for k, v in again.records.items()} == {
        k: len(v) for k, v in fresh.records.items()}


def test_the_bookmark_check_mixin_works_on_a_plain_sdk_stream() -> None:
    # The fix offered to streams that are not AnalyticsStream (e.g. Insights reports).
    from singer_sdk import Stream, Tap  # noqa: PLC0415
    from singer_sdk import typing as th  # noqa: PLC0415

    from tap_analytics.common.errors import TapAnalyticsError  # noqa: PLC0415
    from tap_analytics.common.http import BookmarkCheckMixin  # noqa: PLC0415

    class Plain(BookmarkCheckMixin, Stream):
        name = "plain_stream"
        replication_key = "ts"
        schema = th.PropertiesList(th.Property("ts", th.DateTimeType)).to_dict()

        def get_records(self, context: t.Any) -> t.Iterable[dict]:
            return []

    class Dummy(Tap):
        name = "dummy"
        config_jsonschema = th.PropertiesList().to_dict()

        def discover_streams(self) -> list[Stream]:
            return [Plain(self)]

    stream = Dummy(config={}, parse_env_config=False).streams["plain_stream"]
    assert stream.compare_start_date("2024-02-01T00:00:00Z", "2024-01-01T00:00:00Z") == (
        "2024-02-01T00:00:00Z")
    with pytest.raises(TapAnalyticsError) as caught:
        stream.compare_start_date("2024-99-99", "2024-01-01T00:00:00Z")
    assert "plain_stream" in str(caught.value) and "state" in str(caught.value)
