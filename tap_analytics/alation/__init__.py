"""The alation API family: settings, client, streams."""

from __future__ import annotations

import typing as t
from urllib.parse import urlparse

from tap_analytics.common.errors import ConfigError

if t.TYPE_CHECKING:
    from singer_sdk import Stream, Tap

MAX_PAGE_SIZE = 10_000


def validate(block: t.Any) -> None:
    """Check the `alation` block; raise ConfigError naming the setting (never its value
    for secrets)."""
    if not isinstance(block, dict):
        raise ConfigError("alation", "must be an object")
    base_url = block.get("base_url")
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigError("alation.base_url", "is required")
    parsed = urlparse(base_url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            "alation.base_url", "must be an http(s) URL such as https://alation.example.com"
        )
    token = block.get("api_token")
    if not isinstance(token, str) or not token.strip():
        raise ConfigError("alation.api_token", "is required (a non-empty API token)")
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
    from tap_analytics.alation.streams import STREAM_TYPES  # noqa: PLC0415

    return [stream_type(tap=tap) for stream_type in STREAM_TYPES]
