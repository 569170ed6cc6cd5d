"""Insights queries submitted at sync start, so they run on the server while the other
sources sync.

An Insights query spends minutes on the server before its file exists, so the Insights
streams sync last (`sync_last`) and `EarlyQueries` submits, when the sync starts, the
first windows (up to `MAX_EARLY_WINDOWS`) of every selected report stream that has
windows to run, in sync order, on `max_concurrent_queries` daemon worker threads and
through the same `InsightsApi` (its slots keep the token's 2-in-flight limit across the
tap, its 429 handling applies). When the report stream runs, it takes each early query
that is the very query it would submit (same body) instead of submitting again
(`submit_query`): done, running, or still queued (the early workers then run it). The
windows after those it submits itself, with its normal look-ahead.

Nothing here touches the state: a stream still moves its bookmark only after the rows of
a window went out. An early query's error stays in its future until the stream asks for
that window's result, so it surfaces there, with the line the stream's own query would
have given. `abandon()` (end of the sync, error or signal) makes the workers give up.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import datetime as dt
import json
import logging
import threading
import typing as t
from dataclasses import dataclass, field

from tap_analytics.common.errors import ConfigError, TapAnalyticsError
from tap_analytics.insights import reports
from tap_analytics.insights.client import InsightsApi, QueryResult, iso_z

LOGGER = logging.getLogger("tap-analytics.insights")

Window = tuple[dt.datetime, dt.datetime]
#: Windows per report stream queried ahead while the other streams sync. A finished
#: query costs the tap nothing (a file on the server, a path here); the bound keeps an
#: interrupted sync from leaving many unread reports behind.
MAX_EARLY_WINDOWS = 8


class ReportStream(t.Protocol):
    """What the scheduler needs of a report stream (insights/streams.py)."""

    name: str
    index: int
    report: dict
    selected: bool

    def window_plan(self) -> tuple[list[Window], bool]: ...

    def query_body(self, start: dt.datetime, end: dt.datetime) -> dict: ...


def window_label(i: int, todo: t.Sequence[Window]) -> str:
    """How logs and errors name window i (0-based) of a run's windows."""
    start, end = todo[i]
    return f"window {i + 1}/{len(todo)} [{iso_z(start)}, {iso_z(end)})"


def _key(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


@dataclass
class EarlyQuery:
    stream: str
    index: int  # the report's index in insights.reports (for the field check)
    report: dict
    body: dict
    label: str
    future: cf.Future[QueryResult] = field(default_factory=cf.Future)
    taken: bool = False


class EarlyQueries:
    """The queries submitted at sync start, until their streams take them."""

    def __init__(self, api: InsightsApi, queries: list[EarlyQuery]) -> None:
        self.api = api
        self.queries = queries
        self._queue = collections.deque(queries)
        self._lock = threading.Lock()
        self._abandoned = False
        self.workers: list[threading.Thread] = []

    def start(self) -> EarlyQueries:
        # Daemon threads: a sync that stops before the report streams run must never be
        # held open by a query still polling on the server.
        for n in range(min(self.api.max_concurrent, len(self.queries))):
            worker = threading.Thread(target=self._work, name=f"insights-early-{n}",
                                      daemon=True)
            worker.start()
            self.workers.append(worker)
        return self

    def _next(self) -> EarlyQuery | None:
        with self._lock:
            return self._queue.popleft() if self._queue and not self._abandoned else None

    def _work(self) -> None:
        while (query := self._next()) is not None:
            if not query.future.set_running_or_notify_cancel():
                continue
            try:
                self._check(query)
                result = self.api.run_query(query.body, where=query.stream, label=query.label)
            except BaseException as exc:  # handed to the stream, raised there
                query.future.set_exception(exc)
            else:
                query.future.set_result(result)

    def _check(self, query: EarlyQuery) -> None:
        """The stream's own field check, so no invalid report is submitted. It raises
        the same ConfigError when the stream runs, before it takes this query. A field
        list that cannot be read now is not a reason to hold the query back: the stream
        reads it again itself."""
        try:
            available = self.api.fields(query.stream)
        except TapAnalyticsError:
            return
        reports.check_fields(query.index, query.report, available)

    def take(self, stream: str, body: dict) -> cf.Future[QueryResult] | None:
        """The early query of `stream` with exactly this body, once; None if none."""
        key = _key(body)
        with self._lock:
            for query in self.queries:
                if not query.taken and query.stream == stream and _key(query.body) == key:
                    query.taken = True
                    return query.future
        return None

    def abandon(self) -> None:
        """The sync is over (done, failed or interrupted): queued queries are dropped,
        running ones give up at their next step."""
        with self._lock:
            self._abandoned = True
            pending = list(self._queue)
            self._queue.clear()
        for query in pending:
            query.future.cancel()
        if any(not q.future.done() for q in self.queries):
            self.api.stop.set()  # the workers' requests, waits and polls end now

    def join(self, timeout: float) -> bool:
        """Wait (bounded) for the workers; True when all of them ended."""
        for worker in self.workers:
            worker.join(timeout)
        return not any(worker.is_alive() for worker in self.workers)


def plan(streams: t.Iterable[ReportStream]) -> list[EarlyQuery]:
    """The first windows of each selected report stream that has windows to run.

    A stream whose range cannot be worked out (no start_date, an unreadable bookmark)
    gets no early query: it raises its own clear error when it runs. Without end_date the
    last, partial window is left out (its end moves with the clock).
    """
    queries: list[EarlyQuery] = []
    for stream in streams:
        if not stream.selected:
            continue
        try:
            todo, fixed_end = stream.window_plan()
        except (ConfigError, TapAnalyticsError, ValueError):
            continue
        for i in range(min(MAX_EARLY_WINDOWS, len(todo))):
            start, end = todo[i]
            if not fixed_end and i == len(todo) - 1:
                break
            queries.append(EarlyQuery(stream.name, stream.index, stream.report,
                                      stream.query_body(start, end), window_label(i, todo)))
    return queries


def sync_last(streams: dict[str, t.Any], last: t.Iterable[t.Any]) -> None:
    """Move `last` (the Insights streams, in their order) to the end of the tap's ordered
    stream dict: the SDK syncs in that order, and their queries run on the server while
    the others sync."""
    for stream in list(last):
        streams[stream.name] = streams.pop(stream.name)


def start(tap: t.Any, api: InsightsApi, streams: t.Iterable[ReportStream]) -> None:
    """Submit the early queries on worker threads; kept on the tap for its streams."""
    queries = plan(streams)
    if not queries:
        return
    names = sorted({q.stream for q in queries})
    LOGGER.info("insights: submitting %d query(ies) at sync start (%s), at most %d in "
                "flight", len(queries), ", ".join(names), api.max_concurrent)
    tap._insights_early = EarlyQueries(api, queries).start()


def abandon(tap: t.Any) -> None:
    early: EarlyQueries | None = getattr(tap, "_insights_early", None)
    if early is not None:
        early.abandon()


def submit_query(tap: t.Any, pool: cf.Executor, api: InsightsApi, body: dict, *,
                 where: str, label: str) -> cf.Future[QueryResult]:
    """The query of one window: the one submitted at sync start if it is this very
    query, else a new one on the stream's pool."""
    early: EarlyQueries | None = getattr(tap, "_insights_early", None)
    future = early.take(where, body) if early is not None else None
    if future is not None:
        LOGGER.info("%s %s: taking the query submitted at sync start", where, label)
        return future
    return pool.submit(api.run_query, body, where=where, label=label)
