"""Property-based tests of timestamp normalisation (common/timeutil.py).

Every accepted input format must round-trip to the same instant; the output is one
fixed-width RFC 3339 format with an explicit offset, so that string order == time order
(the SDK compares bookmarks as strings).
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from tap_analytics.common.timeutil import (
    UTC,
    format_datetime,
    from_epoch_ms,
    normalize,
    parse_datetime,
    to_epoch_ms,
)

# The one output format: RFC 3339, microseconds, explicit +00:00 offset.
OUTPUT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")
OUTPUT_WIDTH = len("2024-01-01T00:00:00.000000+00:00")

# Instants well inside datetime's range, so that any offset of +-23:59 stays valid.
instants = st.datetimes(
    min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 30), timezones=st.just(UTC)
)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)


def offset_text(tz: dt.timezone, style: str) -> str:
    delta = tz.utcoffset(None)
    total = int(delta.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total), 60)
    if style == "colon":
        return f"{sign}{hours:02d}:{minutes:02d}"
    if style == "compact":
        return f"{sign}{hours:02d}{minutes:02d}"
    raise AssertionError(style)


def render(local: dt.datetime, *, sep: str, frac_digits: int, zone: str) -> str:
    """Write `local` (a naive wall-clock time) the way an API might."""
    text = local.strftime("%H:%M:%S")
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}{sep}{text}"
    if frac_digits:
        text += "." + f"{local.microsecond:06d}".ljust(9, "0")[:frac_digits]
    return text + zone


def truncated(instant: dt.datetime, frac_digits: int) -> dt.datetime:
    """The instant as it survives `frac_digits` fractional digits (never more than 6)."""
    keep = min(frac_digits, 6)
    micro = instant.microsecond - instant.microsecond % (10 ** (6 - keep))
    return instant.replace(microsecond=micro)


@given(
    instant=instants,
    tz=offsets,
    sep=st.sampled_from(["T", " "]),
    frac_digits=st.integers(min_value=0, max_value=9),
    style=st.sampled_from(["colon", "compact", "Z", "z", "UTC", "none", "hours"]),
)
@example(  # Alation's own format
    instant=dt.datetime(2017, 10, 18, 1, 19, 9, 855398, tzinfo=UTC), tz=dt.timezone.utc,
    sep=" ", frac_digits=6, style="colon",
)
def test_every_accepted_string_format_round_trips_to_the_same_instant(
    instant: dt.datetime, tz: dt.timezone, sep: str, frac_digits: int, style: str
) -> None:
    if style in ("Z", "z", "UTC", "none"):
        tz = UTC
        zone = {"Z": "Z", "z": "z", "UTC": "UTC", "none": ""}[style]
    elif style == "hours":
        tz = dt.timezone(dt.timedelta(hours=int(tz.utcoffset(None).total_seconds() / 3600)))
        zone = offset_text(tz, "colon")[:3]
    else:
        zone = offset_text(tz, style)
    local = instant.astimezone(tz).replace(tzinfo=None)
    text = render(local, sep=sep, frac_digits=frac_digits, zone=zone)

    out = normalize(text)

    assert out is not None
    assert OUTPUT_RE.match(out), out
    expected = truncated(instant, frac_digits)
    assert dt.datetime.fromisoformat(out) == expected
    # Idempotent: the output is itself an accepted input, and maps to itself.
    assert normalize(out) == out


@given(day=st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_a_bare_date_is_midnight_utc(day: dt.date) -> None:
    out = normalize(day.isoformat())
    assert out is not None and OUTPUT_RE.match(out), out
    assert dt.datetime.fromisoformat(out) == dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


@given(ms=st.integers(min_value=-(10**13), max_value=10**14))
@example(ms=0)
@example(ms=1_516_695_420_000)  # Scuba's epoch milliseconds
def test_epoch_milliseconds_round_trip(ms: int) -> None:
    out = normalize(ms)
    assert out is not None and OUTPUT_RE.match(out), out
    parsed = dt.datetime.fromisoformat(out)
    # Independent of the code under test: whole seconds + milliseconds since the epoch.
    seconds, millis = divmod(ms, 1000)
    expected = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=seconds) + dt.timedelta(
        milliseconds=millis
    )
    assert parsed == expected
    assert to_epoch_ms(parsed) == ms
    assert to_epoch_ms(from_epoch_ms(ms)) == ms


@given(instant=instants, tz=offsets)
def test_aware_and_naive_datetimes(instant: dt.datetime, tz: dt.timezone) -> None:
    aware = instant.astimezone(tz)
    assert dt.datetime.fromisoformat(normalize(aware)) == instant
    # A naive datetime is taken as UTC.
    assert dt.datetime.fromisoformat(normalize(instant.replace(tzinfo=None))) == instant


@given(first=instants, second=instants)
@example(first=dt.datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
         second=dt.datetime(1000, 1, 1, tzinfo=UTC))
@example(first=dt.datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=UTC),
         second=dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC))
def test_output_is_fixed_width_and_string_order_is_time_order(
    first: dt.datetime, second: dt.datetime
) -> None:
    a, b = format_datetime(first), format_datetime(second)
    assert len(a) == len(b) == OUTPUT_WIDTH
    assert OUTPUT_RE.match(a) and OUTPUT_RE.match(b), (a, b)
    assert (a < b) == (first < second)
    assert (a == b) == (first == second)


@given(
    first=instants, second=instants, tz1=offsets, tz2=offsets,
)
def test_order_survives_mixed_input_offsets(
    first: dt.datetime, second: dt.datetime, tz1: dt.timezone, tz2: dt.timezone
) -> None:
    # The same instants written in different zones still sort by time once normalised.
    a = normalize(first.astimezone(tz1).isoformat())
    b = normalize(second.astimezone(tz2).isoformat())
    assert (a < b) == (first < second)


@given(text=st.text(max_size=40))
@example(text="2024-13-01")
@example(text="2024-01-01T25:00:00Z")
@example(text="2024-01-01T00:00:00+99:00")
@example(text="9999-12-31T23:59:59-05:00")  # past the end of the calendar in UTC
@example(text="0001-01-01T00:00:00+01:00")  # before its start
@example(text="yesterday")
def test_anything_else_is_a_value_error_never_another_exception(text: str) -> None:
    try:
        out = normalize(text)
    except ValueError:
        return
    # Accepted: then it must be a real timestamp in the one output format.
    assert out is None or OUTPUT_RE.match(out), out


@pytest.mark.parametrize("value", [10**20, -(10**20), float("inf"), float("-inf"), float("nan")])
def test_absurd_epoch_values_are_value_errors(value: float) -> None:
    with pytest.raises(ValueError):
        normalize(value)


@pytest.mark.parametrize("value", [True, False, [], {}, b"2024-01-01"])
def test_non_timestamp_types_are_rejected(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        normalize(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, ""])
def test_empty_is_none(value: object) -> None:
    assert normalize(value) is None  # type: ignore[arg-type]


@given(instant=instants)
def test_parse_of_output_is_the_instant(instant: dt.datetime) -> None:
    assume(instant.tzinfo is not None)
    assert parse_datetime(format_datetime(instant)) == instant
