"""Timestamp normalisation: every emitted timestamp is RFC 3339 with an explicit offset."""

from __future__ import annotations

import datetime as dt
import functools
import re

UTC = dt.timezone.utc

# "2017-10-18 01:19:09.855398+00:00", "2018-01-23T08:17:00.123456Z", "2018-01-01"
_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?|UTC)?$"
)


def parse_datetime(value: str | int | float | dt.datetime) -> dt.datetime:
    """Parse an API timestamp into an aware UTC datetime.

    Accepts ISO 8601 / RFC 3339 with 'T' or ' ' separators, fractional seconds of any
    length, 'Z', '+HH:MM', '+HHMM' or no offset (taken as UTC), and epoch milliseconds.
    Raises ValueError on anything else.
    """
    try:
        return _parse_datetime(value)
    except (OverflowError, OSError) as exc:  # out of the calendar's range
        raise ValueError(f"not a timestamp: {value!r}") from exc


def _parse_datetime(value: str | int | float | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        return from_epoch_ms(value)
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    text = value.strip()
    m = _ISO_RE.match(text)
    if not m:
        raise ValueError(f"not a timestamp: {value!r}")
    year, month, day, hh, mm, ss, frac, off = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz = UTC
    if off and off not in ("Z", "z", "UTC"):
        sign = -1 if off[0] == "-" else 1
        digits = off[1:].replace(":", "")
        hours = int(digits[:2])
        minutes = int(digits[2:4] or 0)
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    parsed = dt.datetime(
        int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0), micro, tz
    )
    return parsed.astimezone(UTC)


@functools.lru_cache(maxsize=4096)
def valid_date(text: str) -> bool:
    """True for a real calendar date "YYYY-MM-DD" (cached: a report has few distinct days)."""
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def format_datetime(value: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds and '+00:00': one fixed width, so string order
    equals time order (the SDK compares bookmarks as strings)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # isoformat always writes 4 year digits (strftime's %Y does not below year 1000).
    return value.isoformat(timespec="microseconds")


def normalize(value: str | int | float | dt.datetime | None) -> str | None:
    """Normalise any API timestamp (or None) to the tap's one RFC 3339 format."""
    if value is None or value == "":
        return None
    return format_datetime(parse_datetime(value))


def from_epoch_ms(ms: int | float) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=ms)


def to_epoch_ms(value: dt.datetime) -> int:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return round(value.timestamp() * 1000)


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)
