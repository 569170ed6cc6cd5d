"""Checks every source block shares: an object, an http(s) base_url, a non-empty token."""

from __future__ import annotations

import typing as t
from urllib.parse import urlparse

from tap_analytics.common.errors import ConfigError


def check_source_block(block: t.Any, source: str, example_url: str) -> None:
    """Raise ConfigError naming the setting (never echoing a secret)."""
    if not isinstance(block, t.Mapping):
        raise ConfigError(source, "must be an object")
    base_url = block.get("base_url")
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigError(f"{source}.base_url", "is required")
    parsed = urlparse(base_url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{source}.base_url", f"must be an http(s) URL such as {example_url}")
    token = block.get("api_token")
    if not isinstance(token, str) or not token.strip():
        raise ConfigError(f"{source}.api_token", "is required (a non-empty API token)")
