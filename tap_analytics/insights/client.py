"""The Insights query API: field list, submit, poll, locate. Thread-safe, bounded.

One `InsightsApi` per tap run (kept on the tap object, never global): it owns the HTTP
session, the field list (fetched once, only when a report is synced) and the limiter that
keeps at most `max_concurrent_queries` (<= 2) queries in flight for the token.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import threading
import time
import typing as t
from dataclasses import dataclass

import requests

from tap_analytics.common.errors import TapAnalyticsError, one_line, redact
from tap_analytics.common.http import tls_error_message
from tap_analytics.insights.parsers import (
    ParseError,
    QueryStatus,
    error_detail,
    parse_download_paths,
    parse_status,
)

LOGGER = logging.getLogger("tap-analytics.insights")
API_MAX_CONCURRENT = 2
#: Resubmissions of a window whose query the server canceled.
MAX_CANCELED_RETRIES = 3


def iso_z(value: dt.datetime) -> str:
    """The API's date format: 'YYYY-MM-DDTHH:MM:SSZ'."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class QueryResult:
    """The outcome of one window's query."""

    guid: str
    status: str  # Completed / Failed
    paths: list[str]
    messages: list[str]


class InsightsApi:
    def __init__(self, config: t.Mapping[str, t.Any], *, ca_bundle: str | None = None,
                 secrets: list[str] | None = None) -> None:
        self.base_url = str(config["base_url"]).rstrip("/")
        self.token = str(config["api_token"])
        self.poll_interval = max(0.01, float(config.get("poll_interval_seconds") or 10))
        self.max_poll_interval = max(self.poll_interval,
                                     float(config.get("max_poll_interval_seconds") or 60))
        self.query_timeout = float(config.get("query_timeout_seconds") or 6 * 3600)
        self.max_tries = max(1, int(config.get("max_tries") or 5))
        self.timeout = float(config.get("request_timeout_seconds") or 120)
        limit = int(config.get("max_concurrent_queries") or API_MAX_CONCURRENT)
        self.max_concurrent = max(1, min(API_MAX_CONCURRENT, limit))
        self.slots = threading.BoundedSemaphore(self.max_concurrent)
        self.secrets = [self.token, *(secrets or [])]
        self.session = requests.Session()
        self.session.verify = ca_bundle or True
        self.session.headers.update({
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        })
        self._fields: dict[str, list[str]] | None = None
        self._fields_lock = threading.Lock()
        self.stop = threading.Event()  # set when the sync aborts: workers give up

    # -- HTTP ----------------------------------------------------------------------------

    def _fail(self, where: str, message: str) -> TapAnalyticsError:
        return TapAnalyticsError(where, redact(message, self.secrets))

    def request(self, method: str, path: str, *, where: str, json_body: t.Any = None,
                wait_on_429: bool = False) -> requests.Response:
        """One API call with bounded retries (5xx, 504, resets); 4xx -> clear error.

        With `wait_on_429` a 429 ("max concurrent queries per user (2) reached") is waited
        out (growing waits, bounded by the query timeout) instead of counting as a try.
        """
        url = f"{self.base_url}{path}"
        tries = 0
        waited_429 = 0.0
        wait_429 = self.poll_interval
        while True:
            if self.stop.is_set():
                raise self._fail(where, "sync aborted")
            tries += 1
            try:
                # verify passed explicitly: Session.request would otherwise let
                # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override it.
                response = self.session.request(method, url, json=json_body,
                                                timeout=self.timeout,
                                                verify=self.session.verify)
            except requests.exceptions.SSLError as exc:
                # A certificate does not become valid by waiting: no retry.
                raise self._fail(where, tls_error_message(exc, url)) from None
            except requests.RequestException as exc:
                if tries >= self.max_tries:
                    raise self._fail(where, f"{method} {path}: network error "
                                     f"{type(exc).__name__} after {tries} tries") from None
                self._sleep_retry(where, method, path, tries, type(exc).__name__)
                continue
            status = response.status_code
            if status < 400:
                return response
            detail = error_detail(response.content)
            if status == 429 and wait_on_429:
                tries -= 1
                if waited_429 >= self.query_timeout:
                    raise self._fail(where, f"{method} {path}: HTTP 429 for "
                                     f"{waited_429:.0f} s: {detail}")
                LOGGER.info("%s: %s (HTTP 429), waiting %.1f s", where, detail, wait_429)
                self.stop.wait(wait_429)
                waited_429 += wait_429
                wait_429 = min(wait_429 * 2, self.max_poll_interval)
                continue
            if status in (401, 403):
                raise self._fail(where, f"HTTP {status} for {path}: the api_token was refused "
                                 f"(check insights.api_token): {detail}")
            if status == 429 or status >= 500:
                if tries >= self.max_tries:
                    raise self._fail(where, f"HTTP {status} for {method} {path} after "
                                     f"{tries} tries: {detail}")
                self._sleep_retry(where, method, path, tries, f"HTTP {status}")
                continue
            raise self._fail(where, f"HTTP {status} for {method} {path}: {detail}")

    def _sleep_retry(self, where: str, method: str, path: str, tries: int, why: str) -> None:
        wait = min(30.0, 2 ** (tries - 1)) * (0.5 + random.random() / 2)
        LOGGER.warning("%s: retrying %s %s in %.1f s after try %d (%s)",
                       where, method, path, wait, tries, why)
        self.stop.wait(wait)

    def _json(self, response: requests.Response, where: str) -> t.Any:
        try:
            return response.json()
        except ValueError:
            raise self._fail(where, f"{urlpath(response)}: not JSON: "
                             f"{one_line(response.text, 120)!r}") from None

    # -- the API -------------------------------------------------------------------------

    def fields(self, where: str = "insights_fields") -> dict[str, list[str]]:
        """GET /dwh/Q: {event type: [field, ...]}; fetched once per run."""
        with self._fields_lock:
            if self._fields is None:
                body = self._json(self.request("GET", "/dwh/Q", where=where), where)
                if not isinstance(body, dict):
                    raise self._fail(where, "GET /dwh/Q: expected an object of event types")
                fields: dict[str, list[str]] = {}
                for event, spec in body.items():
                    names = spec.get("fields") if isinstance(spec, dict) else spec
                    if not isinstance(names, list):
                        raise self._fail(where, f"GET /dwh/Q: event '{event}' has no field list")
                    fields[str(event)] = [str(n) for n in names]
                self._fields = fields
            return self._fields

    def run_query(self, body: dict, *, where: str, label: str) -> QueryResult:
        """Submit, poll to a terminal status, locate the files. Holds one query slot
        while the query runs; resubmits a Canceled query a bounded number of times."""
        for attempt in range(1, MAX_CANCELED_RETRIES + 2):
            with self._slot(where):
                guid = self.submit(body, where=where)
                final = self.poll(guid, where=where, label=label)
            if final.status == "Canceled":
                LOGGER.warning("%s %s: query %s was Canceled by the server%s (try %d of %d)",
                               where, label, guid,
                               f": {'; '.join(final.messages)}" if final.messages else "",
                               attempt, MAX_CANCELED_RETRIES + 1)
                continue
            if final.status == "Failed":
                return QueryResult(guid, "Failed", [], final.messages)
            return QueryResult(guid, "Completed", self.locate(guid, where=where), [])
        raise self._fail(where, f"{label}: the server canceled the query "
                         f"{MAX_CANCELED_RETRIES + 1} times; try a smaller window_hours "
                         "or a narrower report")

    @contextlib.contextmanager
    def _slot(self, where: str) -> t.Iterator[None]:
        """One of the token's query slots, for as long as a query runs."""
        while not self.slots.acquire(timeout=0.5):
            if self.stop.is_set():
                raise self._fail(where, "sync aborted")
        try:
            yield
        finally:
            self.slots.release()

    def submit(self, body: dict, *, where: str) -> str:
        response = self.request("POST", "/dwh/Q", where=where, json_body=body, wait_on_429=True)
        obj = self._json(response, where)
        guid = obj.get("id") if isinstance(obj, dict) else None
        if not isinstance(guid, str) or not guid:
            raise self._fail(where, f"POST /dwh/Q: no query id in {one_line(response.text, 160)}")
        return guid

    def poll(self, guid: str, *, where: str, label: str) -> QueryStatus:
        """Poll the status until Completed / Failed / Canceled; waits grow on long runs."""
        started = time.monotonic()
        interval = self.poll_interval
        last = None
        polls = 0
        while True:
            response = self.request("GET", f"/dwh/Q/{guid}/status", where=where)
            try:
                status = parse_status(self._json(response, where))
            except ParseError as exc:
                raise self._fail(where, f"GET /dwh/Q/{guid}/status: {exc}") from None
            polls += 1
            if status.status != last:
                LOGGER.info("%s %s: query %s is %s (after %.1f s)", where, label, guid,
                            status.status, time.monotonic() - started)
                last = status.status
            if status.terminal:
                return status
            elapsed = time.monotonic() - started
            if elapsed >= self.query_timeout:
                raise self._fail(where, f"{label}: query {guid} still {status.status} after "
                                 f"{elapsed:.0f} s (insights.query_timeout_seconds)")
            self.stop.wait(min(interval, max(0.0, self.query_timeout - elapsed)))
            if self.stop.is_set():
                raise self._fail(where, "sync aborted")
            if polls >= 10:  # long wait: back off, up to max_poll_interval
                interval = min(interval * 1.5, self.max_poll_interval)

    def locate(self, guid: str, *, where: str) -> list[str]:
        """GET /dwh/Q/<id> until it names the file(s) (bounded like a poll)."""
        started = time.monotonic()
        interval = self.poll_interval
        while True:
            response = self.request("GET", f"/dwh/Q/{guid}", where=where)
            try:
                paths = parse_download_paths(self._json(response, where))
            except ParseError as exc:
                raise self._fail(where, f"GET /dwh/Q/{guid}: {exc}") from None
            if paths is not None:
                return paths
            if time.monotonic() - started >= self.query_timeout:
                raise self._fail(where, f"GET /dwh/Q/{guid}: still 'not finished' after the "
                                 "query completed")
            self.stop.wait(interval)
            interval = min(interval * 1.5, self.max_poll_interval)

    def close(self) -> None:
        self.stop.set()
        self.session.close()


def urlpath(response: requests.Response) -> str:
    from urllib.parse import urlparse

    return urlparse(response.url).path
