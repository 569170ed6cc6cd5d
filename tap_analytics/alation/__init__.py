"""The alation API family: settings, client, streams."""

from __future__ import annotations

import typing as t

from tap_analytics.common.config import check_source_block
from tap_analytics.common.errors import ConfigError

if t.TYPE_CHECKING:
    from singer_sdk import Stream, Tap

MAX_PAGE_SIZE = 10_000
#: alation.max_concurrent_requests: from 1 (sequential) to this.
MAX_CONCURRENT_REQUESTS = 16
DEFAULT_CONCURRENT_REQUESTS = 4


def validate(block: t.Any) -> None:
    """Check the `alation` block; raise ConfigError naming the setting (never its value
    for secrets)."""
    check_source_block(block, "alation", "https://alation.example.com")
    page_size = block.get("page_size", 500)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not (
        1 <= page_size <= MAX_PAGE_SIZE
    ):
        raise ConfigError("alation.page_size", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
    ids = block.get("result_query_ids")
    if ids is not None and (
        not isinstance(ids, list)
        or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)
    ):
        raise ConfigError("alation.result_query_ids", "must be a list of query ids (integers)")
    in_flight = block.get("max_concurrent_requests", DEFAULT_CONCURRENT_REQUESTS)
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or not (
        1 <= in_flight <= MAX_CONCURRENT_REQUESTS
    ):
        raise ConfigError("alation.max_concurrent_requests",
                          f"must be an integer from 1 to {MAX_CONCURRENT_REQUESTS}")
    for name in ("max_tries", "request_timeout_seconds"):
        value = block.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"alation.{name}", "must be a positive integer")


def discover(tap: Tap) -> list[Stream]:
    """Streams of this family for the tap's config (validated here, one clear line)."""
    block = tap.config.get("alation")
    if block is None:
        return []
    validate(block)
    from tap_analytics.alation.streams import STREAM_TYPES

    return [stream_type(tap=tap) for stream_type in STREAM_TYPES]
