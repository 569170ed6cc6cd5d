"""The HTTP behaviour shared by every API family: TLS, retries, one-line errors."""

from __future__ import annotations

import json
import re
import typing as t
from urllib.parse import urlparse

import backoff
import requests
from singer_sdk import RESTStream
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_analytics.common.errors import TapAnalyticsError, config_secrets, one_line, redact
from tap_analytics.common.fastpath import FastRecordsMixin

if t.TYPE_CHECKING:
    from backoff._typing import Details

# Bounded retries: 5 tries, waits 1, 2, 4, 8 s (+ jitter) -> about 15 s in all per request.
DEFAULT_MAX_TRIES = 5


def body_detail(response: requests.Response) -> str:
    """A short, single-line description of an error body (JSON fields preferred)."""
    text = response.text or ""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested absurdly deep
        return one_line(text, 200)
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        payload = payload[0]
    if isinstance(payload, dict):
        parts = []
        for key in ("error", "detail", "message", "code"):
            value = payload.get(key)
            if value not in (None, ""):
                if not isinstance(value, str):
                    value = json.dumps(value, sort_keys=True)
                parts.append(value if key != "code" else f"code {value}")
        if parts:
            return one_line(": ".join(parts), 300)
    return one_line(text, 200)


_CERT_REASON = re.compile(r"certificate verify failed: ([^(']+)|(Hostname mismatch[^(']*)")


def tls_error_message(exc: requests.exceptions.SSLError, url: str | None = None) -> str:
    """One line for a TLS failure: server, reason, and what to do. Not retryable: a
    certificate does not become valid by waiting."""
    req = getattr(exc, "request", None)
    parsed = urlparse(url or (getattr(req, "url", None) or ""))
    where = f"https://{parsed.hostname}:{parsed.port or 443}{parsed.path}" if parsed.hostname \
        else "the server"
    found = _CERT_REASON.search(str(exc))
    if found:
        reason = (found.group(1) or found.group(2) or "").strip()
        return (f"TLS certificate verification failed for {where}: {reason} "
                "(if the server uses a private CA, set ca_bundle to that CA's PEM file)")
    return (f"TLS handshake failed for {where}: {one_line(str(exc), 160)} "
            "(check the URL's scheme and port; for a private CA set ca_bundle)")


class BookmarkCheckMixin:
    """For any SDK stream: a STATE bookmark that is not a date-time (hand-edited, or from
    another tap) is one clear line naming the stream, not a bare ValueError from the SDK's
    start-value comparison. Put it before the SDK stream class in the bases."""

    def compare_start_date(self, value: str, start_date_value: str) -> str:
        try:
            return super().compare_start_date(value, start_date_value)  # type: ignore[misc]
        except (ValueError, TypeError):
            source = getattr(self, "source_name", "")
            name = getattr(self, "name", "?")
            raise TapAnalyticsError(
                f"{source} stream '{name}'" if source else name,
                f"the state's bookmark for {getattr(self, 'replication_key', '?')} "
                f"({one_line(str(value), 60)!r}) is not a date-time: fix or remove it from "
                "the state",
            ) from None


class AnalyticsStream(BookmarkCheckMixin, FastRecordsMixin, RESTStream):
    """Base for all REST streams of the tap.

    Subclasses set `source_name` ("Alation", "Scuba", "Insights") and
    `source_config_key` ("alation", ...); they own auth headers and paging.
    """

    source_name: str = "API"
    source_config_key: str = ""

    @property
    def source_config(self) -> dict:
        return dict(self.config.get(self.source_config_key) or {})

    @property
    def secrets(self) -> list[str]:
        """Every secret value of the config, for redaction."""
        return config_secrets(self.config)

    @property
    def requests_session(self) -> requests.Session:
        session = super().requests_session
        ca_bundle = self.config.get("ca_bundle")
        # TLS verification is always on; a CA bundle only changes what is trusted.
        session.verify = ca_bundle if ca_bundle else True
        return session

    @property
    def timeout(self) -> int:
        return int(self.source_config.get("request_timeout_seconds") or 300)

    def request_decorator(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        """The SDK's retrying decorator, except for TLS failures: one clear error at once."""

        def no_retry_on_tls(*args: t.Any, **kwargs: t.Any) -> t.Any:
            try:
                return func(*args, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise TapAnalyticsError(
                    f"{self.source_name} stream '{self.name}'",
                    redact(tls_error_message(exc), self.secrets),
                ) from None

        return super().request_decorator(no_retry_on_tls)

    def backoff_max_tries(self) -> int:
        return int(self.source_config.get("max_tries") or DEFAULT_MAX_TRIES)

    def backoff_wait_generator(self) -> t.Generator[float, None, None]:
        return backoff.expo(base=2, factor=1, max_value=30)

    def backoff_handler(self, details: Details) -> None:
        exc = details.get("exception")
        if isinstance(exc, RetriableAPIError) and exc.response is not None:
            reason = f"status {exc.response.status_code}"
        else:
            reason = type(exc).__name__ if exc else "error"
        self.logger.warning(
            "%s stream '%s': retrying %s in %.1f s after try %d (%s)",
            self.source_name,
            self.name,
            self.path,
            details.get("wait") or 0.0,
            details.get("tries") or 0,
            reason,
        )

    def response_error_message(self, response: requests.Response) -> str:
        """One line: source, stream, status, URL path, trimmed body; never a secret."""
        path = urlparse(response.url).path or self.path
        msg = (
            f"{self.source_name} stream '{self.name}': HTTP {response.status_code} "
            f"for {path}"
        )
        detail = body_detail(response)
        if detail:
            msg += f": {detail}"
        return redact(msg, self.secrets)

    def describe_fatal(self, exc: FatalAPIError) -> str:
        return redact(str(exc), self.secrets)
