"""The insights API family: settings, client, streams."""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from singer_sdk import Stream, Tap


def discover(tap: Tap) -> list[Stream]:
    """Streams of this family for the tap's config (validated here, one clear line)."""
    return []
