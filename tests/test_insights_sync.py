"""Insights behaviour over real HTTP and SFTP on loopback (the sandbox)."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import re
import typing as t

import pytest

from tap_analytics.common.errors import ConfigError, TapAnalyticsError
from tap_analytics.sandbox import DATA_END, DATA_START, Sandbox
from tap_analytics.sandbox.insights import FLOWS, value_of
from tap_analytics.sandbox.sftp import generate_key_text
from helpers import run_cli, run_inprocess

UTC = dt.timezone.utc
APP = "insights_application_exits"
DTMF = "insights_flow_dtmf"
APP_FIELDS = ["TimeStamp", "FlowId", "SessionId", "TransactionId", "IsTriggerAction",
              "StartTime", "EndTime", "ExitReason"]
TIME_FIELDS = ("TimeStamp", "StartTime", "EndTime")


def _snake(name: str) -> str:
    # Written out here (not imported) so the mapping itself is under test.
    return {"TimeStamp": "timestamp", "FlowId": "flow_id", "SessionId": "session_id",
            "TransactionId": "transaction_id", "IsTriggerAction": "is_trigger_action",
            "StartTime": "start_time", "EndTime": "end_time", "ExitReason": "exit_reason",
            "DtmfInput": "dtmf_input", "DtmfSource": "dtmf_source"}[name]


def _as_utc(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def expected_rows(service: t.Any, fields: list[str], start: dt.datetime, end: dt.datetime,
                  flow: str | None = None) -> list[dict]:
    """The sandbox's generated rows, as the record values the user should get."""
    rows = []
    for k, ts in service.events(start, end):
        if flow is not None and value_of("FlowId", k, ts) != flow:
            continue
        row = {}
        for f in fields:
            raw = value_of(f, k, ts)
            row[_snake(f)] = _as_utc(raw) if f in TIME_FIELDS else raw
        rows.append(row)
    return rows


def as_compared(records: list[dict], fields: list[str]) -> list[dict]:
    out = []
    for rec in records:
        row = {}
        for f in fields:
            value = rec[_snake(f)]
            row[_snake(f)] = dt.datetime.fromisoformat(value) if f in TIME_FIELDS else value
        out.append(row)
    return out


def one_report(config: dict, name: str = "application_exits", **extra: t.Any) -> dict:
    config = copy.deepcopy(config)
    config["insights"]["reports"] = [r for r in config["insights"]["reports"] if r["name"] == name]
    config["insights"].update(extra)
    return config


def days(n: int) -> str:
    return (DATA_START + dt.timedelta(days=n)).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(seed=7, services=["insights"]) as sandbox:
        # long enough that two pipelined queries surely overlap, even on a busy machine
        sandbox.insights.query_seconds = 0.6
        yield sandbox


@pytest.fixture(scope="module")
def full_run(sb: Sandbox) -> t.Any:
    sb.insights.clear_log()
    return run_inprocess(sb.config())


# -- the whole flow ---------------------------------------------------------------------


def test_every_row_once_with_generated_values(sb: Sandbox, full_run: t.Any) -> None:
    records = full_run.records[APP]
    expected = expected_rows(sb.insights, APP_FIELDS, DATA_START, DATA_END)
    assert len(expected) > 500
    assert as_compared(records, APP_FIELDS) == expected
    keys = [(r["window_start"], r["row_number"]) for r in records]
    assert len(set(keys)) == len(keys)
    # "0"/"false" stay what the API sent (no boolean coercion)
    assert {r["is_trigger_action"] for r in records} == {"0", "1", "false", "true"}
    assert all(r["timestamp"].endswith("+00:00") for r in records)


def test_filters_are_sent_and_rows_respect_them(sb: Sandbox, full_run: t.Any) -> None:
    records = full_run.records[DTMF]
    fields = ["TimeStamp", "FlowId", "DtmfInput", "DtmfSource"]
    assert as_compared(records, fields) == expected_rows(
        sb.insights, fields, DATA_START, DATA_END, flow=FLOWS[0])
    assert {r["flow_id"] for r in records} == {FLOWS[0]}


def test_schema_types_and_key(full_run: t.Any) -> None:
    schema = full_run.schemas[APP]
    props = schema["properties"]
    for name in ("timestamp", "start_time", "end_time", "window_start"):
        assert props[name]["format"] == "date-time"
    assert "string" in props["is_trigger_action"]["type"]
    assert set(schema["required"]) >= {"window_start", "row_number"}
    key_msgs = [m for m in full_run.messages if m["type"] == "SCHEMA" and m["stream"] == APP]
    assert key_msgs[0]["key_properties"] == ["window_start", "row_number"]
    assert key_msgs[0]["bookmark_properties"] == ["timestamp"]


def test_fields_stream(full_run: t.Any) -> None:
    pairs = {(r["event_type"], r["field"]) for r in full_run.records["insights_fields"]}
    assert ("ApplicationExitEvent", "ExitReason") in pairs
    assert ("DtmfEvent", "DtmfSource") in pairs
    assert len(pairs) == 7


def test_never_more_than_two_pending_and_pipelined(sb: Sandbox, full_run: t.Any) -> None:
    assert sb.insights.max_pending == 2  # two windows really ran at once
    assert sb.insights.rejected_429 == 0
    # the field list was fetched once for the whole run
    gets = [r for r in sb.insights.requests("/_rest/v4/dwh/Q", "GET") if r.path.rstrip("/")
            == "/_rest/v4/dwh/Q"]
    assert len(gets) == 1


def test_state_after_each_window_and_empty_window_moves_bookmark(full_run: t.Any) -> None:
    marks = []
    seen_rows = 0
    for msg in full_run.messages:
        if msg["type"] == "RECORD" and msg["stream"] == APP:
            seen_rows += 1
        if msg["type"] == "STATE":
            value = msg["value"]["bookmarks"].get(APP, {}).get("replication_key_value")
            if value and (not marks or marks[-1][0] != value):
                marks.append((value, seen_rows))
    values = [m[0] for m in marks]
    assert values == [
        (DATA_START + dt.timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
        for d in range(1, 8)
    ]
    # day 4 (2024-01-04) has no events: its window ends with the same row count
    assert marks[3][1] == marks[2][1]
    # a window's bookmark is written only after its rows: 144 events a day
    assert [m[1] for m in marks] == [144, 288, 432, 432, 576, 720, 864]


def test_failed_window_logged_zero_rows(sb: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    config = one_report(sb.config())
    config["start_date"], config["end_date"] = days(3), days(4)
    with caplog.at_level(logging.INFO):
        result = run_inprocess(config)
    assert result.records.get(APP, []) == []
    assert result.final_state["bookmarks"][APP]["replication_key_value"].startswith(
        "2024-01-05T00:00:00")
    assert "All data fields have empty values" in caplog.text


def test_resume_from_state_after_window_k(sb: Sandbox, full_run: t.Any) -> None:
    state = next(
        m["value"] for m in full_run.messages if m["type"] == "STATE"
        and m["value"]["bookmarks"].get(APP, {}).get("replication_key_value", "").startswith(
            "2024-01-03T")
    )
    sb.insights.clear_log()
    resumed = run_inprocess(one_report(sb.config()), state=copy.deepcopy(state))
    posts = [r for r in sb.insights.requests("/_rest/v4/dwh/Q", "POST")]
    assert len(posts) == 5  # windows 3..7 only
    first = full_run.records[APP]
    before = [r for r in first if r["timestamp"] < "2024-01-03"]
    assert as_compared(before + resumed.records[APP], APP_FIELDS) == as_compared(
        first, APP_FIELDS)
    # and a run from the final state asks for nothing and emits nothing
    sb.insights.clear_log()
    again = run_inprocess(one_report(sb.config()), state=resumed.final_state)
    assert again.records.get(APP, []) == []
    assert sb.insights.requests("/_rest/v4/dwh/Q", "POST") == []


def test_cli_state_round_trip(sb: Sandbox) -> None:
    config = one_report(sb.config())
    config["end_date"] = days(2)
    first = run_cli(config)
    assert first.returncode == 0, first.stderr
    assert len(first.records[APP]) == 288
    config["end_date"] = days(3)
    second = run_cli(config, state=first.final_state)
    assert second.returncode == 0, second.stderr
    assert {r["window_start"][:10] for r in second.records[APP]} == {"2024-01-03"}
    assert second.final_state["bookmarks"][APP]["replication_key_value"].startswith(
        "2024-01-04T00:00:00")


def test_window_hours_change_the_split_not_the_rows(sb: Sandbox) -> None:
    config = one_report(sb.config(), window_hours=7)
    config["end_date"] = days(1)
    result = run_inprocess(config)
    assert as_compared(result.records[APP], APP_FIELDS) == expected_rows(
        sb.insights, APP_FIELDS, DATA_START, DATA_START + dt.timedelta(days=1))
    assert len({r["window_start"] for r in result.records[APP]}) == 4  # 7+7+7+3 h


def test_key_auth_works(sb: Sandbox) -> None:
    config = one_report(sb.config())
    config["end_date"] = days(1)
    sftp = config["insights"]["sftp"]
    del sftp["password"]
    sftp["private_key"] = sb.insights.client_key_text
    result = run_inprocess(config)
    assert len(result.records[APP]) == 144


# -- faults -----------------------------------------------------------------------------


def fault_config(sandbox: Sandbox, end_day: int = 2, **extra: t.Any) -> dict:
    config = one_report(sandbox.config(), **extra)
    config["end_date"] = days(end_day)
    return config


def test_canceled_query_is_resubmitted(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.cancel_next = 1
    result = run_inprocess(fault_config(sandbox))
    assert as_compared(result.records[APP], APP_FIELDS) == expected_rows(
        sandbox.insights, APP_FIELDS, DATA_START, DATA_START + dt.timedelta(days=2))
    assert len(sandbox.insights.requests("/_rest/v4/dwh/Q", "POST")) == 3


def test_canceled_too_often_is_a_clear_error(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.cancel_next = 100
    result = run_cli(fault_config(sandbox, end_day=1))
    assert result.returncode == 1
    lines = [x for x in result.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(lines) == 1
    assert APP in lines[0] and "canceled" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.final_state.get("bookmarks", {}).get(APP, {}).get(
        "replication_key_value") is None


def test_truncated_gzip_once_is_read_again(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.truncate = "once"
    result = run_inprocess(fault_config(sandbox))
    assert sandbox.insights.truncations == 1
    assert as_compared(result.records[APP], APP_FIELDS) == expected_rows(
        sandbox.insights, APP_FIELDS, DATA_START, DATA_START + dt.timedelta(days=2))


def test_truncated_gzip_always_fails_clearly_without_state(
        fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.truncate = "always"
    config = fault_config(sandbox, max_tries=2)
    result = run_cli(config)
    assert result.returncode == 1
    assert "truncated or corrupt" in result.stderr and APP in result.stderr
    assert sandbox.insights.truncations == 2
    assert result.final_state.get("bookmarks", {}).get(APP, {}).get(
        "replication_key_value") is None


def test_dropped_connection_mid_file(fresh_sandbox: t.Callable[..., Sandbox],
                                     caplog: pytest.LogCaptureFixture) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    service = sandbox.insights
    service.rows_override = 40_000  # a file of several 32 KiB blocks
    service.rows_per_file = 40_000
    service.drop_once = True
    config = fault_config(sandbox, end_day=1)
    with caplog.at_level(logging.WARNING):
        result = run_inprocess(config)
    assert service.drops == 1
    records = result.records[APP]
    assert len(records) == 40_000
    assert [r["row_number"] for r in records] == list(range(1, 40_001))
    assert len({r["transaction_id"] for r in records}) == 40_000
    # the drop came after rows had gone out, and those were skipped on the re-read
    skipped = [rec.getMessage() for rec in caplog.records if "skipping" in rec.getMessage()]
    assert skipped and "skipping 0 rows" not in skipped[0]


def test_host_key_mismatch(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    config = fault_config(sandbox, end_day=1)
    from tap_analytics.sandbox.sftp import load_key, public_line

    config["insights"]["sftp"]["host_key"] = public_line(load_key(generate_key_text()))
    result = run_cli(config)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("tap-analytics: error: insights.sftp.host_key:")
    assert "different key" in line
    assert APP not in result.records


def test_auth_failure_is_not_retried(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    config = fault_config(sandbox, end_day=1)
    config["insights"]["sftp"]["password"] = "wrong-password-123"
    result = run_cli(config)
    assert result.returncode == 1
    assert "authentication as 'insights'" in result.stderr
    assert "wrong-password-123" not in result.stderr
    assert sandbox.insights.sftp.auth_failures == 1


def test_missing_host_key_warns_once(fresh_sandbox: t.Callable[..., Sandbox],
                                     caplog: pytest.LogCaptureFixture) -> None:
    from tap_analytics.insights.sftp import SftpSession

    sandbox = fresh_sandbox(services=["insights"])
    config = fault_config(sandbox, end_day=3)
    del config["insights"]["sftp"]["host_key"]
    SftpSession._warned_unverified = False
    with caplog.at_level(logging.WARNING):
        result = run_inprocess(config)
    assert len(result.records[APP]) == 432
    warnings = [r for r in caplog.records if "NOT verified" in r.getMessage()]
    assert len(warnings) == 1
    assert sandbox.insights.sftp.host_key_line in warnings[0].getMessage()


def test_bad_token_one_line(sb: Sandbox) -> None:
    config = fault_config(sb, end_day=1)
    config["insights"]["api_token"] = "not-the-token-xyz"
    result = run_cli(config)
    assert result.returncode == 1
    line = [x for x in result.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(line) == 1 and "HTTP 403" in line[0] and "api_token" in line[0]
    assert "not-the-token-xyz" not in result.stderr


# -- report validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"data": {"Application ExitEvent": {"fields": ["FlowId"]}}},
         "event 'Application ExitEvent' is not in the API's field list (did you mean "
         "'ApplicationExitEvent'?)"),
        ({"data": {"ApplicationExitEvent": {"fields": ["Flow Id"]}}},
         "field 'Flow Id' is not a field of ApplicationExitEvent (did you mean 'FlowId'?)"),
        ({"filters": {"DtmfEvent": {"Nope": {"$eq": "1"}}}},
         "field 'Nope' is not a field of DtmfEvent"),
    ],
)
def test_names_checked_against_field_list(sb: Sandbox, change: dict, expected: str) -> None:
    config = fault_config(sb, end_day=1)
    config["insights"]["reports"][0].update(change)
    sb.insights.clear_log()
    with pytest.raises(ConfigError) as info:
        run_inprocess(config)
    assert expected in str(info.value)
    assert "insights.reports[0] (application_exits)" in str(info.value)
    assert sb.insights.requests("/_rest/v4/dwh/Q", "POST") == []


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"ApplicationExitEvent": {"FlowId": {"eq": "x"}}}, "operator 'eq' is not one of"),
        ({"ApplicationExitEvent": {"StartTime": {"$gte": "2019-10-19 01:45:36.123Z"}}},
         "is not ISO 8601"),
        ({"ApplicationExitEvent": ["FlowId"]}, "must be"),
    ],
)
def test_operators_and_dates_checked_at_start(sb: Sandbox, filters: dict,
                                              expected: str) -> None:
    config = fault_config(sb, end_day=1)
    config["insights"]["reports"][0]["filters"] = filters
    result = run_cli(config, args=["--discover"])
    assert result.returncode == 1
    assert expected in result.stderr
    assert "insights.reports[0] (application_exits).filters" in result.stderr


def test_discovery_makes_no_api_call(sb: Sandbox) -> None:
    sb.insights.clear_log()
    result = run_cli(sb.config(), args=["--discover"])
    assert result.returncode == 0, result.stderr
    assert sb.insights.log == []


def test_server_400_shown_in_one_line(sb: Sandbox) -> None:
    # Validation passes (valid names); the server still refuses a date: its body is shown.
    from tap_analytics.insights.client import InsightsApi

    api = InsightsApi(sb.config()["insights"])
    with pytest.raises(TapAnalyticsError) as info:
        api.submit({"timestamp": {"$gte": "2024-01-01 00:00:00", "$lt": "2024-01-02"},
                    "data": {"DtmfEvent": {"fields": ["DtmfInput"]}}}, where=DTMF)
    text = str(info.value)
    assert text.startswith(f"{DTMF}: HTTP 400 for POST /dwh/Q: Date_Filters: Invalid date")
    assert "(422-6)" in text and "\n" not in text
    api.close()


def test_429_is_waited_out(sb: Sandbox) -> None:
    from tap_analytics.insights.client import InsightsApi

    service = sb.insights
    config = sb.config()["insights"]
    api = InsightsApi({**config, "max_concurrent_queries": 2})
    body = {"timestamp": {"$gte": "2024-01-01T00:00:00Z", "$lt": "2024-01-01T01:00:00Z"},
            "data": {"DtmfEvent": {"fields": ["DtmfInput"]}}}
    before = service.rejected_429
    # two queries of someone else's are pending: the third must wait, then succeed
    other = InsightsApi(config)
    other.submit(body, where="other")
    other.submit(body, where="other")
    guid = api.submit(body, where=DTMF)
    assert guid
    assert service.rejected_429 > before
    assert service.max_pending <= 2
    api.close()
    other.close()


def test_not_finished_yet_is_asked_again(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.locate_lag = 2
    result = run_inprocess(fault_config(sandbox, end_day=1))
    assert len(result.records[APP]) == 144
    locates = [r for r in sandbox.insights.requests("/_rest/v4/dwh/Q/", "GET")
               if not r.path.endswith("/status")]
    assert len(locates) == 3  # two "not finish yet", then the file list


def test_changed_header_is_one_clear_error(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.wrong_header = True
    result = run_cli(fault_config(sandbox, end_day=1))
    assert result.returncode == 1
    line = [x for x in result.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(line) == 1
    assert line[0].startswith(f"tap-analytics: error: {APP}: report file reports/")
    assert "missing: ExitReason; unexpected: ExitReasonRenamed" in line[0]
    assert APP not in result.records


def test_query_timeout_is_a_clear_error(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.query_seconds = 60
    config = fault_config(sandbox, end_day=1, query_timeout_seconds=0.6)
    with pytest.raises(TapAnalyticsError) as info:
        run_inprocess(config)
    assert str(info.value).startswith(f"{APP}: window 1/1 [2024-01-01T00:00:00Z, "
                                      "2024-01-02T00:00:00Z): query ")
    assert "still Pending after" in str(info.value)
    assert "query_timeout_seconds" in str(info.value)


def test_progress_and_status_transitions_logged(sb: Sandbox,
                                                caplog: pytest.LogCaptureFixture) -> None:
    config = fault_config(sb, end_day=2)
    with caplog.at_level(logging.INFO):
        run_inprocess(config)
    text = caplog.text
    assert "window 1/2 [2024-01-01T00:00:00Z, 2024-01-02T00:00:00Z): query " in text
    assert "is Pending" in text and "is Completed" in text
    assert re.search(r"window 2/2 \[[^)]*\) done: 144 rows in [\d.]+ s \(\d+ rows/s\)", text)


def test_one_query_at_a_time_when_configured(fresh_sandbox: t.Callable[..., Sandbox]) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.query_seconds = 0.4
    result = run_inprocess(fault_config(sandbox, end_day=3, max_concurrent_queries=1))
    assert sandbox.insights.max_pending == 1
    assert as_compared(result.records[APP], APP_FIELDS) == expected_rows(
        sandbox.insights, APP_FIELDS, DATA_START, DATA_START + dt.timedelta(days=3))
