"""Insights units: the request a tap with a given state sends, windows, keys, settings."""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest

from tap_analytics.common.errors import ConfigError
from tap_analytics.insights.sftp import load_private_key, parse_host_key
from tap_analytics.insights.streams import windows
from tap_analytics.sandbox.sftp import generate_key_text, load_key, public_line
from tap_analytics.tap import TapAnalytics

UTC = dt.timezone.utc
REPORT = {
    "name": "exits",
    "data": {"ApplicationExitEvent": {"fields": ["FlowId", "ExitReason"]}},
    "filters": {"ApplicationExitEvent": {"FlowId": {"$eq": "5dcf48b453e0ab04386da7d1"}}},
}


def config(**insights: t.Any) -> dict:
    block = {
        "base_url": "https://api.example.invalid/_rest/v4",
        "api_token": "tok-123456",
        "reports": [REPORT],
        "sftp": {"host": "sftp.example.invalid", "username": "me", "password": "pw-123456"},
        **insights,
    }
    return {"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-01-03T12:00:00Z",
            "insights": block}


def tap(cfg: dict, state: dict | None = None) -> TapAnalytics:
    return TapAnalytics(config=cfg, state=state, parse_env_config=False)


def test_first_request_from_start_date() -> None:
    stream = tap(config()).streams["insights_exits"]
    start, end = stream._range()
    assert (start, end) == (dt.datetime(2024, 1, 1, tzinfo=UTC),
                            dt.datetime(2024, 1, 3, 12, tzinfo=UTC))
    body = stream.query_body(*windows(start, end, 24)[0])
    assert body == {
        "timestamp": {"$gte": "2024-01-01T00:00:00Z", "$lt": "2024-01-02T00:00:00Z"},
        "data": {"ApplicationExitEvent": {"fields": ["TimeStamp", "FlowId", "ExitReason"]}},
        "filters": {"ApplicationExitEvent": {"FlowId": {"$eq": "5dcf48b453e0ab04386da7d1"}}},
    }
    assert REPORT["data"]["ApplicationExitEvent"]["fields"] == ["FlowId", "ExitReason"]


def test_request_from_state_bookmark() -> None:
    state = {"bookmarks": {"insights_exits": {
        "replication_key": "timestamp",
        "replication_key_value": "2024-01-02T06:00:00.000000+00:00"}}}
    stream = tap(config(window_hours=12), state).streams["insights_exits"]
    start, end = stream._range()
    got = [(stream.query_body(s, e)["timestamp"]) for s, e in windows(start, end, 12)]
    assert got == [
        {"$gte": "2024-01-02T06:00:00Z", "$lt": "2024-01-02T18:00:00Z"},
        {"$gte": "2024-01-02T18:00:00Z", "$lt": "2024-01-03T06:00:00Z"},
        {"$gte": "2024-01-03T06:00:00Z", "$lt": "2024-01-03T12:00:00Z"},
    ]


def test_windows_cover_range_without_overlap() -> None:
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    end = start + dt.timedelta(hours=50, minutes=30)
    cut = windows(start, end, 24)
    assert [(b - a).total_seconds() / 3600 for a, b in cut] == [24, 24, 2.5]
    assert all(cut[i][1] == cut[i + 1][0] for i in range(len(cut) - 1))
    assert windows(end, start, 24) == []


def test_schema_and_key() -> None:
    stream = tap(config()).streams["insights_exits"]
    props = stream.schema["properties"]
    assert list(props)[:4] == ["window_start", "row_number", "window_end", "source_file"]
    assert {"timestamp", "flow_id", "exit_reason"} <= set(props)
    assert "time_stamp" not in props
    assert stream.primary_keys == ["window_start", "row_number"]
    assert stream.replication_key == "timestamp"


def test_no_reports_only_fields_stream_and_absent_block() -> None:
    assert set(tap(config(reports=[])).streams) == {"insights_fields"}
    assert not any(n.startswith("insights") for n in tap({"start_date": "2024-01-01T00:00:00Z"})
                   .streams)


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"max_concurrent_queries": 3}, "insights.max_concurrent_queries"),
        ({"window_hours": 0}, "insights.window_hours"),
        ({"reports": [REPORT, REPORT]}, "insights.reports[1].name"),
        ({"reports": [{**REPORT, "name": "Bad Name"}]}, "insights.reports[0].name"),
        ({"reports": [{**REPORT, "scope": {"filters": {}}}]},
         "insights.reports[0] (exits).scope"),
        ({"sftp": {"host": "h", "username": "u"}}, "insights.sftp"),
        ({"sftp": {"host": "h", "username": "u", "password": "p",
                   "host_key": "not a key"}}, "insights.sftp.host_key"),
        ({"sftp": {"host": "h", "username": "u", "private_key": "garbage-key-text"}},
         "insights.sftp.private_key"),
    ],
)
def test_config_errors_name_the_setting(change: dict, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        tap(config(**change))
    assert str(info.value).startswith(f"setting '{setting}'")
    assert "garbage-key-text" not in str(info.value)


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_private_keys_of_each_kind_load(kind: str) -> None:
    text = generate_key_text(kind)
    key = load_private_key(text)
    assert key.can_sign()
    # the env-var form with literal \n works too
    assert load_private_key(text.replace("\n", "\\n")).asbytes() == key.asbytes()


def test_encrypted_key_needs_its_passphrase() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    text = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"s3cret-pass")).decode()
    with pytest.raises(ConfigError, match="private_key_passphrase"):
        load_private_key(text)
    assert load_private_key(text, "s3cret-pass").can_sign()


def test_host_key_formats() -> None:
    assert parse_host_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 comment")[0] == "ssh-ed25519"
    key = load_key(generate_key_text("ecdsa"))
    kind, blob = parse_host_key(f"[sftp.example.com]:22 {public_line(key)}")
    assert (kind, blob) == ("ecdsa-sha2-nistp256", key.asbytes())
    with pytest.raises(ConfigError):
        parse_host_key("ssh-ed25519 !!!notbase64")


def test_paramikos_read_ahead_thread_dying_on_a_dropped_socket_is_one_debug_line(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import threading

    from tap_analytics.insights.sftp import quiet_prefetch_thread_errors

    class FakeFile:  # paramiko names the thread after this method
        def _prefetch_thread(self) -> None:
            raise OSError("Socket is closed")

    def other() -> None:
        raise OSError("Socket is closed")

    saved = threading.excepthook
    seen: list[str] = []
    try:
        threading.excepthook = lambda args: seen.append(args.thread.name)
        quiet_prefetch_thread_errors()
        quiet_prefetch_thread_errors()  # once is enough: not wrapped twice
        with caplog.at_level(logging.DEBUG, logger="tap-analytics.insights.sftp"):
            for target in (FakeFile()._prefetch_thread, other):
                thread = threading.Thread(target=target)
                thread.start()
                thread.join()
    finally:
        threading.excepthook = saved
    assert len(seen) == 1 and seen[0].endswith("(other)"), seen
    assert "read-ahead thread of paramiko stopped: Socket is closed" in caplog.text
