"""ScubaStream: auth, the per-token limiter around the SDK's retries, the error taxonomy,
time windows with their own bookmarks, and the daily-quota stop."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import typing as t

import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_analytics.common.errors import QuotaExhausted, TapAnalyticsError, redact
from tap_analytics.common.http import AnalyticsStream, body_detail
from tap_analytics.common.timeutil import parse_datetime, utcnow
from tap_analytics.scuba import parsers
from tap_analytics.scuba.limiter import QueryLimiter, ScubaRuntime
from tap_analytics.scuba.windows import Window, plan_windows

if t.TYPE_CHECKING:
    from singer_sdk import Tap

    from tap_analytics.scuba.entries import QueryEntry

BOOKMARK_KEY = "window_end"
#: The defaults of settings.py (the SDK does not fill defaults into the config).
DEFAULT_MAX_TRIES = 4
DEFAULT_TIMEOUT = 200
# "The request limit of 1000 queries has been reached. This token can be used ... on <date>"
_DAILY_RE = re.compile(r"request limit of (\d+) quer", re.IGNORECASE)
_DAILY_WORDS = ("has been reached", "can be used for requests on", "per day", "daily")


class DailyQuotaSpent(Exception):
    """The server said the token's daily quota is spent (not retried)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class ScubaStream(AnalyticsStream):
    """One `scuba.queries` entry. Leaf classes say how the request looks and how the
    answer is parsed; windows, limits and state live here."""

    source_name = "Scuba"
    source_config_key = "scuba"

    def __init__(self, tap: Tap, entry: QueryEntry, runtime: ScubaRuntime) -> None:
        self.entry = entry
        self.runtime = runtime
        self._window: Window | None = None
        super().__init__(tap=tap, name=entry.stream_name, schema=entry.schema)
        self.primary_keys = list(entry.key)
        self.replication_key = BOOKMARK_KEY if entry.windowed else None
        self._use_schema(entry.schema)

    def _use_schema(self, schema: dict[str, t.Any]) -> None:
        """Take field facts from the schema in force (the entry's, or one pinned in a
        catalog, which the SDK applies after __init__)."""
        properties = schema.get("properties") or {}
        # Field names seen so far when the schema is open (no declared schema): warn once
        # per new field, as targets may drop what the schema does not name.
        self._undeclared: set[str] | None = (
            set(properties) if schema.get("additionalProperties") else None
        )
        self._datetime_fields = [
            name for name, prop in properties.items()
            if isinstance(prop, dict) and prop.get("format") == "date-time"
        ]

    # -- requests ---------------------------------------------------------------------

    @property
    def url_base(self) -> str:
        return str(self.source_config.get("base_url", "")).rstrip("/")

    @property
    def http_headers(self) -> dict[str, str]:
        headers = dict(super().http_headers)
        headers["Authorization"] = f"Token {self.source_config.get('api_token', '')}"
        headers["Accept"] = "application/json, text/csv;q=0.9, */*;q=0.5"
        return headers

    @property
    def timeout(self) -> int:
        # The server gives up at 180 s (504); wait a little longer than that by default.
        return int(self.source_config.get("request_timeout_seconds") or DEFAULT_TIMEOUT)

    def backoff_max_tries(self) -> int:
        return int(self.source_config.get("max_tries") or DEFAULT_MAX_TRIES)

    @property
    def limiter(self) -> QueryLimiter:
        return self.runtime.limiter(str(self.source_config.get("api_token", "")))

    def request_decorator(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        # The limiter wraps each *try*: the SDK's backoff retries go through it too, so no
        # two queries (first tries or retries) ever leave closer than 1 s (+ margin).
        return super().request_decorator(self.limiter.wrap(func))

    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status == 429:
            detail = body_detail(response)
            if _is_daily(detail):
                match = _DAILY_RE.search(detail)
                if match:
                    self.runtime.daily_limit = int(match.group(1))
                raise DailyQuotaSpent(redact(detail, self.secrets))
            raise RetriableAPIError(self.response_error_message(response), response)
        if 400 <= status < 500:
            raise FatalAPIError(self._fatal_message(response))
        super().validate_response(response)

    def _fatal_message(self, response: requests.Response) -> str:
        msg = self.response_error_message(response)
        if response.status_code in (401, 403):
            msg += " (check the setting scuba.api_token)"
        elif response.status_code == 400:
            msg += f" (check the setting {self.entry.setting})"
        return msg

    # -- answers ----------------------------------------------------------------------

    def parse_answer(self, body: bytes) -> t.Iterable[dict[str, t.Any]]:  # pragma: no cover
        raise NotImplementedError

    def parse_response(self, response: requests.Response) -> t.Iterable[dict]:
        # Parsed whole before the first record is emitted: a broken answer never leaves
        # half a window behind.
        try:
            return list(self.parse_answer(response.content))
        except parsers.ParseError as exc:
            raise TapAnalyticsError(
                f"Scuba stream '{self.name}'",
                f"unreadable answer from {self.path}: {exc}",
            ) from None

    def _finish(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        if self._undeclared is not None:
            extra = set(record) - self._undeclared
            if extra:
                self._undeclared |= extra
                self.logger.warning(
                    "Scuba stream '%s': fields %s are not in a declared schema; some targets "
                    "drop such fields: pin the schema (`python -m tap_analytics.scuba schema "
                    "--config CONFIG --name %s`) in the entry's `schema` or in catalog.json",
                    self.name, sorted(extra), self.entry.name,
                )
        for name in self._datetime_fields:  # a declared date-time given as epoch ms
            value = record.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                record[name] = parsers.convert_time(name, value)
        if self._window is not None:
            record["window_start"] = self._window.start_text
            record["window_end"] = self._window.end_text
        return record

    # -- windows and state ------------------------------------------------------------

    def bookmark(self) -> dt.datetime | None:
        state = self.get_context_state(None)
        if state.get("replication_key") == BOOKMARK_KEY and state.get("replication_key_value"):
            return parse_datetime(state["replication_key_value"])
        return None

    def planned_windows(self, now: dt.datetime | None = None) -> list[Window]:
        start = self.bookmark()
        start_date = self.config.get("start_date")
        if start_date:
            first = parse_datetime(start_date)
            start = first if start is None or first > start else start
        if start is None:
            raise TapAnalyticsError(
                f"Scuba stream '{self.name}'",
                "needs the setting 'start_date' (no bookmark yet to start from)",
            )
        end_date = self.config.get("end_date")
        days = float(self.source_config.get("window_days") or 1)
        return plan_windows(
            start,
            parse_datetime(end_date) if end_date else None,
            now or utcnow(),
            dt.timedelta(days=days),
        )

    def _increment_stream_state(self, latest_record: dict, *, context: t.Any = None) -> None:
        # Checked against singer-sdk 0.54.9: the SDK would move the bookmark to the first
        # record's window_end while the rest of that window is still unsent (a SIGTERM then
        # saves a state that skips rows) and never moves it for an empty window. Windowed
        # streams advance the bookmark themselves, once per fully emitted window
        # (`_commit_window`); full-table streams have no bookmark.
        return

    def _commit_window(self, window: Window) -> None:
        """The bookmark is the end of the last fully emitted window: store it, emit STATE."""
        state = self.get_context_state(None)
        state["replication_key"] = BOOKMARK_KEY
        state["replication_key_value"] = window.end_text
        if self.get_batch_config(self.config) is not None:
            # BATCH mode: records wait in a batch file until its BATCH message; the SDK
            # writes STATE right after each BATCH message, so a STATE from here could
            # announce windows whose rows are not yet delivered.
            self.state_manager.is_flushed = False
            return
        # Checked against singer-sdk 0.54.9: `_write_state_message` only writes when the
        # state manager is marked unflushed; there is no public "emit state now".
        self.state_manager.is_flushed = False
        self._write_state_message()

    # -- the sync ---------------------------------------------------------------------

    def get_records(self, context: t.Any) -> t.Iterable[dict[str, t.Any]]:
        self._use_schema(self.effective_schema)
        if self.runtime.exhausted is not None:
            self.logger.warning(
                "Scuba stream '%s' skipped: the token's daily query quota is spent "
                "(it resumes from its bookmark on the next run)", self.name,
            )
            return
        plan: list[Window | None] = list(self.planned_windows()) if self.entry.windowed else [
            None
        ]
        total = len(plan)
        if self.entry.windowed:
            self.logger.info(
                "Scuba stream '%s': %d window(s) to query%s", self.name, total,
                f" ({plan[0]} first)" if plan else " (up to date)",
            )
        for number, window in enumerate(plan, start=1):
            self._window = window
            started = time.monotonic()
            try:
                rows = list(self.request_records(context))
            except DailyQuotaSpent as exc:
                self._stop_on_quota(exc.detail, number - 1, total)
                return
            except RetriableAPIError as exc:
                if exc.response is not None and exc.response.status_code == 429:
                    self._stop_on_quota(
                        "HTTP 429 persisted after the bounded retries", number - 1, total
                    )
                    return
                raise
            for row in rows:
                yield self._finish(row)
            if window is not None:
                self._commit_window(window)
            elapsed = max(time.monotonic() - started, 1e-6)
            self.logger.info(
                "Scuba stream '%s': %s %d/%d done (%s): %d record(s), %.0f records/s; "
                "queries sent this run: %d%s",
                self.name,
                "window" if window is not None else "query",
                number,
                total,
                window or "full table",
                len(rows),
                len(rows) / elapsed,
                self.runtime.queries_sent,
                self._quota_note(),
            )
        self._window = None

    def _quota_note(self) -> str:
        limit = self.runtime.daily_limit
        return f" (token limit {limit}/day)" if limit else " (token limit 1000/day by default)"

    def _stop_on_quota(self, detail: str, done: int, total: int) -> None:
        bookmark = self.bookmark()
        resume = (
            f"the next run resumes at {bookmark.isoformat()}" if bookmark is not None
            else "the next run starts this stream again"
        )
        error = QuotaExhausted(
            f"Scuba stream '{self.name}'",
            f"daily query quota of the token is spent ({detail}); stopped after {done} of "
            f"{total} {'window(s)' if self.entry.windowed else 'query'}, later Scuba streams "
            f"skipped; {resume}",
        )
        self.runtime.exhausted = error
        self.logger.error("%s", error)
        deferred = getattr(self._tap, "deferred_errors", None)
        if isinstance(deferred, list):
            deferred.append(error)
        else:  # a tap without deferred errors: stop now (state was emitted per window)
            raise error


def _is_daily(detail: str) -> bool:
    text = detail.lower()
    return bool(_DAILY_RE.search(detail)) or any(word in text for word in _DAILY_WORDS)


def compact_json(obj: t.Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)
