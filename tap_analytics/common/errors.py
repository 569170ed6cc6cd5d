"""Errors a user sees as one clear line (no traceback page, never a secret)."""

from __future__ import annotations

import re
import typing as t

_MAX_DETAIL = 300


class TapAnalyticsError(Exception):
    """An error the tap reports to the user as a single line, then exits non-zero.

    `where` names the stream, setting or URL path the problem belongs to.
    """

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


class ConfigError(TapAnalyticsError):
    """A setting is missing or wrong: `where` is the setting's dotted name."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"setting '{setting}'", message)


class QuotaExhausted(TapAnalyticsError):
    """A limit that cannot be waited out (e.g. Scuba's daily quota).

    The stream stops cleanly with a resumable state; the tap exits non-zero at the end.
    """


def one_line(text: str, limit: int = _MAX_DETAIL) -> str:
    """Collapse whitespace and trim, so a body or message fits in one log line."""
    flat = re.sub(r"\s+", " ", text or "").strip()
    if len(flat) > limit:
        flat = flat[: limit - 3] + "..."
    return flat


def redact(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """Replace every occurrence of each (non-trivial) secret with '***'."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


SECRET_WORDS = ("token", "password", "private_key", "secret", "passphrase")


def config_secrets(config: t.Mapping[str, t.Any] | None) -> list[str]:
    """Every secret string in a config (found by setting name), for redaction."""
    found: list[str] = []

    def walk(node: t.Any, key: str = "") -> None:
        if isinstance(node, t.Mapping):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and any(w in key for w in SECRET_WORDS):
            found.append(node)

    walk(config or {})
    return found
