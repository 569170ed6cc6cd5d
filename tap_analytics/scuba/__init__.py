"""The scuba API family (Scuba, formerly Interana): settings, client, streams."""

from __future__ import annotations

import typing as t
from decimal import Decimal

from tap_analytics.common.config import check_source_block
from tap_analytics.common.errors import ConfigError

if t.TYPE_CHECKING:
    from singer_sdk import Stream, Tap


#: The SDK reads a config file's JSON floats as Decimal (singer_sdk.helpers._util.load_json).
NUMBER = (int, float, Decimal)


def _positive(block: dict, name: str, *, integer: bool) -> None:
    value = block.get(name)
    if value is None:
        return
    kinds = (int,) if integer else NUMBER
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        kind = "integer" if integer else "number"
        raise ConfigError(f"scuba.{name}", f"must be a positive {kind}")


def validate(block: t.Any) -> None:
    """Check the `scuba` block; raise ConfigError naming the setting (never a secret)."""
    check_source_block(block, "scuba", "https://my_cluster.scuba.io")
    _positive(block, "window_days", integer=False)
    _positive(block, "max_tries", integer=True)
    _positive(block, "request_timeout_seconds", integer=True)
    value = block.get("min_seconds_between_queries")
    if value is not None and (isinstance(value, bool) or not isinstance(value, NUMBER)
                              or value < 0):
        raise ConfigError("scuba.min_seconds_between_queries", "must be a number >= 0")


def discover(tap: Tap) -> list[Stream]:
    """Streams of this family for the tap's config (validated here, one clear line).

    Never sends a query: schemas come from the entry (declared, or derived from the v1
    query object), so discovery costs no quota.
    """
    block = tap.config.get("scuba")
    if block is None:
        return []
    validate(block)
    from tap_analytics.scuba.entries import parse_entries
    from tap_analytics.scuba.limiter import runtime_for
    from tap_analytics.scuba.streams import STREAM_CLASSES

    entries = parse_entries(block)
    runtime = runtime_for(tap, float(block.get("min_seconds_between_queries", 1.0)))
    return [STREAM_CLASSES[e.kind](tap, e, runtime) for e in entries]
