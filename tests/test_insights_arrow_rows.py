"""The Arrow row path (insights/arrowrows.py) writes what the csv module's row path writes.

Both row paths run on the same sandbox report, whose files are rewritten to hold what a
real export may: odd quoting, quoted line breaks, control characters, U+2028, bytes that
are not UTF-8, a BOM, blank lines, other line endings, epoch and offset times. The output
must be the same bytes (but the clock and the file names). Where a file is broken (a
date that does not exist, a short row, an unterminated quote, a changed header), the
Arrow path hands the rest of the window to the csv path: the same rows come out before
the same one-line error.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import signal
import subprocess
import threading
import typing as t
from pathlib import Path

import pytest
from helpers import TAP_EXE, run_cli
from test_insights_rows import APP, _comparable, _config

from tap_analytics.common.errors import TapAnalyticsError
from tap_analytics.insights import arrowrows
from tap_analytics.insights import rows as row_path
from tap_analytics.sandbox import Sandbox

HANDED_OVER = "is read row by row"


def _sync(config: dict, monkeypatch: pytest.MonkeyPatch, *, arrow: bool
          ) -> tuple[bytes, str | None, int]:
    """A sync through a binary stdout with one row path: (stdout, the error line or None,
    windows the Arrow path wrote)."""
    from tap_analytics.tap import TapAnalytics

    calls = []
    real = arrowrows.ArrowWindows.emit_window

    def counting(self: t.Any, *args: t.Any) -> int:
        calls.append(1)
        return real(self, *args)

    with monkeypatch.context() as patch:
        patch.setattr(row_path, "arrow_rows_enabled", arrow)
        patch.setattr(arrowrows.ArrowWindows, "emit_window", counting)
        tap = TapAnalytics(config=config, parse_env_config=False, validate_config=True)
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="utf-8")
        error = None
        with contextlib.redirect_stdout(out):
            try:
                tap.sync_all()
            except TapAnalyticsError as exc:
                error = str(exc)
            finally:
                tap.message_writer.flush()
                out.flush()
    return raw.getvalue(), error, len(calls)


def _both(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
          *, days: int = 2) -> tuple[tuple[bytes, str | None], bool]:
    """Run both paths; assert they agree; (the Arrow run's output and error, whether it
    handed a window over to the csv path)."""
    config = _config(sandbox, days=days)
    with caplog.at_level(logging.INFO, logger="tap-analytics.insights"):
        caplog.clear()
        fast, fast_error, arrow_windows = _sync(config, monkeypatch, arrow=True)
        handed_over = any(HANDED_OVER in r.getMessage() for r in caplog.records)
    slow, slow_error, none = _sync(config, monkeypatch, arrow=False)
    assert arrow_windows > 0 and none == 0
    assert _file_names_out(fast_error) == _file_names_out(slow_error)
    assert _comparable(fast) == _comparable(slow)
    return (fast, fast_error), handed_over


def _file_names_out(error: str | None) -> str | None:
    """An error line without the file's query id and time (the sandbox's names)."""
    return error and re.sub(r"reports/\w+/\w+?_QueryExport_\d+__", "reports/.../", error)


def _rewrite(edit: t.Callable[[int, list[bytes]], list[bytes]], *,
             newline: bytes = b"\r\n") -> t.Callable[[int, bytes], bytes]:
    """A sandbox `rewrite_csv` that edits a file's lines (the header is line 0)."""
    def rewrite(index: int, data: bytes) -> bytes:
        lines = data.split(b"\r\n")
        return newline.join(edit(index, lines))
    return rewrite


def _field(line: bytes, position: int, raw: bytes) -> bytes:
    parts = line.split(b",")
    parts[position] = raw
    return b",".join(parts)


# columns: TimeStamp, FlowId, SessionId, TransactionId, IsTriggerAction, StartTime,
# EndTime, ExitReason (sandbox.insights.DEFAULT_REPORTS)
ODD_VALUES = [
    b'"a""b"', b'a"b', b'"ab"c', b'"multi\r\nline"', b'"lf\nonly"', b'"tab\there"',
    b'"\x01ctl\x1f"', b'back\\slash', b'"\\"', "sep\u2028par\u2029nel\u0085".encode(),
    "caf\u00e9 \u2014 \U0001f600".encode(), b"\xff\xfebad", b'""', b"", b" padded ",
    b'"comma, inside"', b"\x7f",
]
ODD_TIMES = [b" 2024-01-01T00:00:00Z ", b"1704067200", b"1704067200123",
             b"2024-01-01T10:00:00+02:00", b"2024-01-01T00:00:00.1234567Z", b""]


def test_odd_values_come_out_as_the_csv_path_writes_them(
        fresh_sandbox: t.Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def edit(index: int, lines: list[bytes]) -> list[bytes]:
        for k, raw in enumerate(ODD_VALUES, start=1):
            if k < len(lines) - 1:
                lines[k] = _field(lines[k], 2 + index % 2, raw)
        for k, raw in enumerate(ODD_TIMES, start=len(ODD_VALUES) + 1):
            if k < len(lines) - 1:
                lines[k] = _field(lines[k], 5, raw)
        if index == 1:
            lines.insert(5, b"")  # a blank line
            lines[0] = b"\xef\xbb\xbf" + lines[0]  # a BOM
        return lines

    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.rows_per_file = 40
    sandbox.insights.rewrite_csv = _rewrite(edit)
    (out, error), handed_over = _both(sandbox, monkeypatch, caplog)
    assert error is None and not handed_over  # Arrow read every file itself
    assert "caf\u00e9 \u2014 \U0001f600".encode() in out  # written as UTF-8, as msgspec does
    assert b"sep\\u2028par\\u2029nel\\u0085" in out  # the writer's escapes, both paths
    assert b'"\\u0001ctl\\u001f"' in out and b'"multi\\r\\nline"' in out
    assert "\ufffd\ufffdbad".encode() in out  # bad bytes replaced


@pytest.mark.parametrize("newline", [b"\n", b"\r"])
def test_other_line_endings(fresh_sandbox: t.Callable[..., Sandbox],
                            monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                            newline: bytes) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.rows_per_file = 40
    sandbox.insights.rewrite_csv = _rewrite(lambda i, lines: lines, newline=newline)
    (out, error), handed_over = _both(sandbox, monkeypatch, caplog, days=1)
    assert error is None and not handed_over
    assert out.count(b'{"type":"RECORD"') > 100


def _broken(file_index: int, line: int, change: t.Callable[[bytes], bytes]
            ) -> t.Callable[[int, list[bytes]], list[bytes]]:
    """An edit that changes one line (0: the header) of one file of the window."""
    def edit(index: int, lines: list[bytes]) -> list[bytes]:
        if index == file_index:
            lines[line] = change(lines[line])
        return lines
    return edit


BROKEN = {
    "bad_time": _broken(1, 20, lambda x: _field(x, 0, b"2024-02-30T00:00:00.000Z")),
    "short_row": _broken(1, 10, lambda x: x.rsplit(b",", 1)[0]),
    "unterminated_quote": _broken(0, 30, lambda x: _field(x, 2, b'"never closed')),
    "changed_header": _broken(2, 0, lambda x: x.replace(b"ExitReason", b"ExitCause")),
}


@pytest.mark.parametrize(("broken", "expected"), [
    ("bad_time", r"row 20: timestamp '2024-02-30T00:00:00.000Z' is not a date-time"),
    ("short_row", r"row 10: 7 values for 8 columns"),
    ("unterminated_quote", r"row 30: \d values for 8 columns"),
    ("changed_header", r"different header than the requested fields \(missing: ExitReason"),
])
def test_a_broken_file_gives_the_same_rows_and_the_same_error(
        fresh_sandbox: t.Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, broken: str, expected: str) -> None:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.rows_per_file = 40
    sandbox.insights.rewrite_csv = _rewrite(BROKEN[broken])
    (out, error), handed_over = _both(sandbox, monkeypatch, caplog, days=1)
    assert error is not None and re.search(expected, error), error
    assert error.startswith(f"{APP}: report file ")
    assert handed_over
    records = out.count(b'{"type":"RECORD","stream":"' + APP.encode())
    assert records >= 9  # the rows before the broken one came out (same in both paths)
    last_record = out.rindex(b'{"type":"RECORD"')
    assert b'"type":"STATE"' not in out[last_record:]  # no STATE claims the window


def test_without_pyarrow_the_csv_path_runs(small_files: Sandbox,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tap_analytics.insights.arrowrows", None)
    out, error, arrow_windows = _sync(_config(small_files, days=2), monkeypatch, arrow=True)
    assert error is None and arrow_windows == 0
    assert out.count(b'{"type":"RECORD"') > 100


@pytest.fixture
def small_files(fresh_sandbox: t.Callable[..., Sandbox]) -> Sandbox:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.rows_per_file = 37
    return sandbox


def test_sigterm_mid_window_leaves_a_state_a_resume_completes(
        fresh_sandbox: t.Callable[..., Sandbox], tmp_path: Path) -> None:
    """Meltano stops a tap with SIGTERM: the Arrow path's reader and encoder threads stop,
    the lines written are whole, the last STATE covers only whole windows,
    and a run from it brings every row of the range (the cut window again, whole)."""
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.rows_override = 60_000  # per window: 3 windows, 2 files each
    sandbox.insights.rows_per_file = 30_000
    config = _config(sandbox, days=3)
    (tmp_path / "config.json").write_text(json.dumps(config))
    proc = subprocess.Popen([TAP_EXE, "--config", str(tmp_path / "config.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        lines: list[bytes] = []
        records = 0
        while records < 70_000:  # well into window 2
            line = proc.stdout.readline()
            assert line, "the tap ended early"
            lines.append(line)
            records += line.startswith(b'{"type":"RECORD"')
        proc.send_signal(signal.SIGTERM)
        lines += proc.stdout.read().splitlines(keepends=True)
        proc.wait(timeout=60)
        stderr = proc.stderr.read().decode()
    finally:
        watchdog.cancel()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert lines[-1].endswith(b"\n")
    messages = [json.loads(line) for line in lines]  # every line is whole JSON
    # The last STATE resumes the sync. (The records of the cut window may follow it: the
    # write under way when the signal came is finished, so no line is cut; no STATE
    # covers them and the next run reads the window again.)
    state = next(m for m in reversed(messages) if m["type"] == "STATE")["value"]
    bookmark = state["bookmarks"][APP]["replication_key_value"]
    first = [m["record"] for m in messages if m["type"] == "RECORD"]
    assert len(first) < 3 * 60_000, "the sync finished before SIGTERM: nothing was tested"
    covered = {(r["window_start"], r["row_number"]) for r in first
               if r["window_start"] < bookmark}
    assert covered and len(covered) % 60_000 == 0  # whole windows only

    resumed = run_cli(config, state=state, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = [(r["window_start"], r["row_number"]) for r in resumed.records[APP]]
    assert all(window >= bookmark for window, _ in again)  # nothing covered twice
    assert len(set(again)) == len(again)
    assert covered | set(again) == {(w, n) for w in {w for w, _ in covered | set(again)}
                                    for n in range(1, 60_001)}
    assert len(covered | set(again)) == 3 * 60_000  # every row of every window
