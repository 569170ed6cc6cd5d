"""The Alation streams: name, path, key, replication key, schema."""

from __future__ import annotations

import threading
import typing as t
from http import HTTPStatus

from tap_analytics.alation import schemas
from tap_analytics.alation.client import AlationStream
from tap_analytics.alation.parsers import CSVFormatError, parse_result_csv
from tap_analytics.alation.timestamps import normalize_timestamps
from tap_analytics.common.errors import TapAnalyticsError
from tap_analytics.common.prefetch import OrderedPrefetch
from tap_analytics.common.sessions import ThreadSessions

#: The key, in `alation_query_results`' STATE entry, of the result ids already emitted.
RESULT_IDS_KEY = "result_ids"

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context


class QueriesStream(AlationStream):
    name = "alation_queries"
    path = "/query/"
    primary_keys = ("id",)
    replication_key = "ts_last_saved"
    # Ordered by id: new queries come last and a re-saved query keeps its place, so
    # limit/skip pages stay stable. (Not ordered by the bookmark: is_sorted stays False.)
    order_by = "id"
    schema = schemas.QUERIES


class ExecutionSessionsStream(AlationStream):
    name = "alation_execution_sessions"
    path = "/query/execution_session/"
    primary_keys = ("id",)
    replication_key = "ts_start"
    schema = schemas.EXECUTION_SESSIONS


class ExecutionBatchesStream(AlationStream):
    name = "alation_execution_batches"
    path = "/query/execution_batch/"
    primary_keys = ("id",)
    # Batches carry no timestamp: the id is the bookmark (`id__gt`), start/end_date
    # do not apply.
    replication_key = "id"
    bookmark_operator = "gt"
    schema = schemas.EXECUTION_BATCHES


class ExecutionEventsStream(AlationStream):
    name = "alation_execution_events"
    path = "/query/execution_event/"
    primary_keys = ("id",)
    replication_key = "ts_executed"
    schema = schemas.EXECUTION_EVENTS


class ScheduledRunsStream(AlationStream):
    name = "alation_scheduled_runs"
    path = "/query/scheduled_run/"
    primary_keys = ("task_id",)
    replication_key = "ts_sent_to_broker"
    # The documented default, sent explicitly; ties keep no guaranteed order, so the
    # stream is still treated as unsorted.
    order_by = "ts_sent_to_broker"
    schema = schemas.SCHEDULED_RUNS


class _Fetched(t.NamedTuple):
    """What was fetched for one result query: `response` is the CSV response, or the
    latest-result 404, or None when the result is unchanged since the last run."""

    query_id: int
    result_id: int | None
    meta: dict[str, t.Any]
    response: requests.Response | None


class QueryResultsStream(AlationStream):
    """Rows of the latest cached result of each `alation.result_query_ids` query.

    Per query: GET /query/<id>/result/latest/ (result id, truncated flag, execution
    metadata), then GET /result/<result id>/csv/. A query without an available result
    (404) is logged as a warning and skipped.

    The stream's STATE entry remembers, per query, the result id whose rows were all
    emitted (`{"result_ids": {"15": 79}}`): a run whose latest result id is the same
    downloads no CSV and emits nothing for that query. Without a state (a first sync, a
    full refresh) every query's latest result is read.
    """

    name = "alation_query_results"
    path = "/query/{query_id}/result/latest/"
    primary_keys = ("result_id", "row_number")
    replication_key = None
    schema = schemas.QUERY_RESULTS
    tolerated_statuses = frozenset({HTTPStatus.NOT_FOUND})

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        # Timestamps were normalised in _fetch; CSV values stay untouched strings.
        return row

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        ids = self.query_ids()
        read = self.results_read(context)
        known = dict(read)  # what the fetches compare with (read on worker threads)
        handover = self._tap.__dict__.get("_alation_handover")
        early = handover.take(self.name, (ids, sorted(known.items()))) if (
            handover is not None and context is None) else None
        fetched, sessions = early if early is not None else self._results_ahead(ids, known)
        self.__dict__["_next_started"] = False
        try:
            for item in fetched:
                self._start_next_early()  # every request of this stream has been sent
                result_id = yield from self._rows_of(item)
                if result_id is not None:
                    # Every row of this result went through the sync loop (emitted).
                    read[str(item.query_id)] = result_id
                    self.get_context_state(context)[RESULT_IDS_KEY] = read
        except BaseException:
            self.settle_lookaheads(failed=True)
            raise
        finally:
            fetched.close()
            sessions.close()
            self.__dict__.pop("_thread_sessions", None)
        self.settle_lookaheads()

    def query_ids(self) -> tuple[int, ...]:
        """alation.result_query_ids, a repeated id once."""
        return tuple(dict.fromkeys(int(q) for q in self.source_config.get(
            "result_query_ids") or []))

    def _results_ahead(self, ids: t.Sequence[int], known: dict[str, int]
                       ) -> tuple[OrderedPrefetch, ThreadSessions]:
        # The requests of the next queries go out while this one's rows are emitted
        # (up to alation.max_concurrent_requests queries at once); rows and errors come
        # in query order. A query starts as soon as another one is done (one more
        # waiting result than in flight), not only when the first one is taken.
        in_flight = max(1, min(self.max_concurrent_requests, len(ids)))
        sessions = ThreadSessions(self.requests_session)
        fetched = OrderedPrefetch(lambda q: self._fetch(q, known.get(str(q))), ids,
                                  in_flight, thread_name=f"tap-analytics-{self.name}",
                                  max_waiting=in_flight + 1)
        self.__dict__["_thread_sessions"] = sessions
        self.__dict__["_sync_thread"] = threading.get_ident()
        return fetched, sessions

    def start_early(self) -> None:
        """The first queries' requests, sent before this stream's sync (see
        PagingMixin.start_early): they depend only on the config and on the result ids
        in this stream's STATE entry, and are taken over when both are unchanged."""
        ids = self.query_ids()
        if not ids:
            return
        with self._state_untouched():
            known = dict(self.results_read(None))
        fetched, sessions = self._results_ahead(ids, known)
        fetched.start()

        def close() -> None:
            fetched.close()
            sessions.close()
            self.__dict__.pop("_thread_sessions", None)

        self.handover.offer(self.name, (fetched, sessions), (ids, sorted(known.items())),
                            close)

    def results_read(self, context: Context | None) -> dict[str, int]:
        """{query id (string): result id} of the results already emitted, from STATE.
        Entries that are not `"<id>": <int>` are ignored (the query is read again)."""
        stored = self.get_context_state(context).get(RESULT_IDS_KEY)
        if not isinstance(stored, dict):
            return {}
        return {str(k): v for k, v in stored.items()
                if str(k).isdigit() and type(v) is int}

    def _fetch(self, query_id: int, read_id: int | None) -> _Fetched:
        """The requests for one query (maybe on a worker thread, with its own session):
        its latest result, then, unless that result was emitted before (`read_id`), the
        CSV."""
        sessions = self.__dict__.get("_thread_sessions")
        if sessions is not None and threading.get_ident() != self.__dict__.get("_sync_thread"):
            sessions.for_this_thread()  # a worker: requests_session is now its own
        response = self.get(f"/query/{query_id}/result/latest/")
        if response.status_code == HTTPStatus.NOT_FOUND:
            return _Fetched(query_id, None, {}, response)
        latest = self.decode_json(response)
        if not isinstance(latest, dict) or not isinstance(latest.get("id"), int):
            raise TapAnalyticsError(
                f"Alation stream '{self.name}'",
                f"no result id in the response to {self.url_path(response)}",
            )
        result_id = latest["id"]
        if result_id == read_id:
            return _Fetched(query_id, result_id, {}, None)
        event = latest.get("execution_event")
        event = event if isinstance(event, dict) else {}
        try:
            normalize_timestamps(event)
        except ValueError as exc:
            raise TapAnalyticsError(f"Alation stream '{self.name}'", str(exc)) from None
        meta = {
            "result_id": result_id,
            "query_id": query_id,
            "truncated": bool(latest.get("truncated")),
            **{k: event.get(k) for k in ("executed_at", "finished_at", "seconds_taken",
                                         "canceled", "finished", "execution_error")},
        }
        return _Fetched(query_id, result_id, meta, self.get(f"/result/{result_id}/csv/"))

    def _rows_of(self, fetched: _Fetched) -> t.Generator[dict[str, t.Any], None, int | None]:
        """The rows of a query's latest result; returns its result id (None: no result).
        A result emitted before is not downloaded again: no rows, its id returned."""
        query_id, result_id, meta, csv_response = fetched
        if csv_response is None:
            self.logger.info(
                "Alation stream '%s': query %d, result %d: unchanged since the last "
                "run, not downloaded", self.name, query_id, result_id)
            return result_id
        if csv_response.status_code == HTTPStatus.NOT_FOUND:
            self.warn_no_result(query_id, csv_response)
            return None
        if csv_response.headers.get("Content-Type", "").startswith("text/html"):
            # A login or proxy page, not a result (Alation sends CSV, labelled JSON).
            raise TapAnalyticsError(
                f"Alation stream '{self.name}'",
                f"expected the CSV of result {result_id} from {self.url_path(csv_response)}, "
                "got an HTML page (check alation.base_url and any proxy in between)",
            )
        # The doc announces application/json for this CSV body: decode it as UTF-8 text.
        text = csv_response.content.decode("utf-8", errors="replace")
        count = 0
        try:
            for count, row in enumerate(parse_result_csv(text), start=1):
                yield {**meta, "row_number": count, "row": row}
        except CSVFormatError as exc:
            raise TapAnalyticsError(
                f"Alation stream '{self.name}'",
                f"result {result_id} of query {query_id} ({self.url_path(csv_response)}): "
                f"{exc}",
            ) from None
        self.logger.info(
            "Alation stream '%s': query %d, result %d: %d rows%s",
            self.name, query_id, result_id, count,
            " (truncated by Alation)" if meta["truncated"] else "",
        )
        return result_id

    def warn_no_result(self, query_id: int, response: requests.Response) -> None:
        from tap_analytics.common.http import body_detail

        self.logger.warning(
            "Alation stream '%s': no available result for query %d (HTTP 404 for %s: %s); "
            "skipped",
            self.name, query_id, self.url_path(response), body_detail(response),
        )

    def get(self, path: str) -> requests.Response:
        """One GET through the SDK's retrying request path (backoff + validate_response).

        `_request` is the SDK's single-request function (auth, timeout, metrics,
        validate_response), the one `request_records` wraps in `request_decorator`;
        checked against singer-sdk 0.54.9. Used here because this stream makes two
        different requests per query, which the paginated path cannot express.
        """
        prepared = self.build_prepared_request(
            method="GET", url=self.url_base + path, headers=self.http_headers
        )
        decorated = self.request_decorator(self._request)
        return decorated(prepared, None)


STREAM_TYPES: tuple[type[AlationStream], ...] = (
    QueriesStream,
    ExecutionSessionsStream,
    ExecutionBatchesStream,
    ExecutionEventsStream,
    ScheduledRunsStream,
    QueryResultsStream,
)
