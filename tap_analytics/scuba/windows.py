"""Time windows and BQL window placeholders (pure functions, no HTTP, no SDK).

A windowed stream splits [start, end) into windows of `window_days`. The last window:

* with an `end_date` in the past: ends exactly at `end_date` (may be shorter);
* otherwise (no `end_date`, or one in the future): only *complete* windows are queried, the
  unfinished current one waits for a later run. So an open-ended schedule spends exactly one
  query per new window and never re-queries an incomplete window run after run.
"""

from __future__ import annotations

import datetime as dt
import re
import typing as t
from dataclasses import dataclass

from tap_analytics.common.timeutil import format_datetime, to_epoch_ms

#: A bound on the number of windows one run plans (loops stay bounded whatever the config).
MAX_WINDOWS = 100_000

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime

    @property
    def start_ms(self) -> int:
        return to_epoch_ms(self.start)

    @property
    def end_ms(self) -> int:
        return to_epoch_ms(self.end)

    @property
    def start_text(self) -> str:
        return format_datetime(self.start)

    @property
    def end_text(self) -> str:
        return format_datetime(self.end)

    def __str__(self) -> str:
        return f"{self.start.isoformat()} .. {self.end.isoformat()}"


def plan_windows(
    start: dt.datetime,
    end_date: dt.datetime | None,
    now: dt.datetime,
    size: dt.timedelta,
) -> list[Window]:
    """The windows still to query, from `start` (bookmark or start_date) on."""
    if size <= dt.timedelta(0):
        raise ValueError("window size must be positive")
    limit = min(end_date, now) if end_date is not None else now
    partial_tail = end_date is not None and end_date <= now
    windows: list[Window] = []
    cursor = start
    while cursor < limit and len(windows) < MAX_WINDOWS:
        stop = cursor + size
        if stop > limit:
            if not partial_tail:
                break
            stop = limit
        windows.append(Window(cursor, stop))
        cursor = stop
    return windows


def _values(window: Window) -> dict[str, str]:
    return {
        "start_ms": str(window.start_ms),
        "end_ms": str(window.end_ms),
        "start_s": str(window.start_ms // 1000),
        "end_s": str(window.end_ms // 1000),
        "start_iso": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end_iso": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


PLACEHOLDER_NAMES = tuple(_values(Window(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc),
                                         dt.datetime(2000, 1, 2, tzinfo=dt.timezone.utc))))


def placeholders(bql: str) -> list[str]:
    """Names of the `{{name}}` placeholders in a BQL text, in order of appearance."""
    return [m.group(1) for m in PLACEHOLDER.finditer(bql)]


def unknown_placeholders(bql: str) -> list[str]:
    return [name for name in placeholders(bql) if name not in PLACEHOLDER_NAMES]


def render_bql(bql: str, window: Window) -> str:
    """Replace every `{{name}}` with the window's value; other braces are left alone."""
    values = _values(window)

    def sub(match: t.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(name)
        return values[name]

    return PLACEHOLDER.sub(sub, bql)
