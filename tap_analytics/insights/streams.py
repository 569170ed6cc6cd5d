"""Insights streams: `insights_<name>` (one per report) and `insights_fields`.

A report stream splits [bookmark or start_date, end_date or now) into windows of
`window_hours`. Each window is one query (submit, poll, locate) run on a worker thread,
at most `max_concurrent_queries` (<= 2) in flight; the main thread downloads and emits
the windows strictly in order, and moves the bookmark to a window's end only after all
of its rows were emitted (empty and Failed windows included). The first windows' queries
may already run since the sync started (insights/schedule.py): `submit_query` takes them.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import time
import typing as t

from singer_sdk import Stream
from singer_sdk import typing as th
from singer_sdk.helpers._state import PROGRESS_MARKERS
from typing_extensions import override

from tap_analytics.common.errors import ConfigError, TapAnalyticsError, config_secrets
from tap_analytics.common.fastpath import FastRecordsMixin
from tap_analytics.common.http import BookmarkCheckMixin
from tap_analytics.common.timeutil import format_datetime, parse_datetime, utcnow
from tap_analytics.insights import reports
from tap_analytics.insights import rows as row_path
from tap_analytics.insights.client import InsightsApi, QueryResult, iso_z
from tap_analytics.insights.download import WindowReader
from tap_analytics.insights.schedule import submit_query, window_label

if t.TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig
    from singer_sdk.helpers.types import Context


def shared_api(tap: Tap) -> InsightsApi:
    """The run's one API client (field list cache + query limiter), kept on the tap."""
    api = getattr(tap, "_insights_api", None)
    if api is None:
        config = tap.config
        api = InsightsApi(config["insights"], ca_bundle=config.get("ca_bundle"),
                          secrets=config_secrets(config))
        tap._insights_api = api  # type: ignore[attr-defined]
    return api


def windows(start: dt.datetime, end: dt.datetime, hours: float) -> list[tuple[dt.datetime,
                                                                                dt.datetime]]:
    """[start, end) cut into consecutive windows of `hours` (the last one may be shorter)."""
    size = dt.timedelta(hours=hours)
    out = []
    cursor = start
    while cursor < end:
        stop = min(cursor + size, end)
        out.append((cursor, stop))
        cursor = stop
    return out


class InsightsFieldsStream(FastRecordsMixin, Stream):
    """One record per event type and field of GET /dwh/Q."""

    name = "insights_fields"
    primary_keys: t.ClassVar[list[str]] = ["event_type", "field"]
    replication_key = None
    schema = th.PropertiesList(
        th.Property("event_type", th.StringType, required=True),
        th.Property("field", th.StringType, required=True),
        th.Property("position", th.IntegerType, description="Position in the event's list."),
    ).to_dict()

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict]:
        for event, names in shared_api(self._tap).fields(self.name).items():
            for position, field in enumerate(names):
                yield {"event_type": event, "field": field, "position": position}


class InsightsReportStream(BookmarkCheckMixin, FastRecordsMixin, Stream):
    """Rows of one report, window by window."""

    replication_key = "timestamp"
    is_sorted = False
    primary_keys: t.ClassVar[list[str]] = ["window_start", "row_number"]

    def __init__(self, tap: Tap, *, index: int, report: dict) -> None:
        self.index = index
        self.report = report
        self.columns = reports.report_columns(report)
        super().__init__(tap, name=f"insights_{report['name']}", schema=self._schema())

    def _schema(self) -> dict:
        props = [
            th.Property("window_start", th.DateTimeType, required=True,
                        description="Start of the report window the row came from."),
            th.Property("row_number", th.IntegerType, required=True,
                        description="1-based row number within the window (all files)."),
            th.Property("window_end", th.DateTimeType, required=True),
            th.Property("source_file", th.StringType, description="SFTP path of the file."),
        ]
        for field in self.columns:
            kind = th.DateTimeType if field in reports.TIME_FIELDS else th.StringType
            props.append(th.Property(reports.column_name(field), kind,
                                     description=f"Insights field {field}."))
        return th.PropertiesList(*props).to_dict()

    # The SDK would move the bookmark to the highest `timestamp` emitted (checked against
    # singer-sdk 0.54.9, Stream._increment_stream_state): a window's end is the true
    # bookmark, set in `_window_done` once every row of the window went out.
    @override
    def _increment_stream_state(self, latest_record: dict, *,
                                context: Context | None = None) -> None:
        return

    @override
    def get_replication_key_signpost(self, context: Context | None) -> None:
        return None

    @property
    def where(self) -> str:
        return self.name

    def _range(self) -> tuple[dt.datetime, dt.datetime]:
        # The bookmark (end of the last finished window) wins over start_date, as the
        # contract says; read before any window of this run moved it.
        bookmark = None
        if self.replication_method == "INCREMENTAL":
            # Read, not created: the plan at sync start must leave the STATE as it was.
            bookmarks = self.tap_state.get("bookmarks") or {}
            bookmark = (bookmarks.get(self.tap_stream_id) or {}).get("replication_key_value")
        start_text = bookmark or self.config.get("start_date")
        if not start_text:
            raise ConfigError("start_date", f"is required for {self.name} (the first window)")
        try:
            start = parse_datetime(start_text)
        except ValueError:
            raise TapAnalyticsError(self.name, f"unreadable bookmark {start_text!r} in the "
                                    "state") from None
        end_text = self.config.get("end_date")
        end = parse_datetime(end_text) if end_text else utcnow()
        # The API takes whole seconds.
        return start.replace(microsecond=0), end.replace(microsecond=0)

    def query_body(self, start: dt.datetime, end: dt.datetime) -> dict:
        body: dict[str, t.Any] = {
            "timestamp": {"$gte": iso_z(start), "$lt": iso_z(end)},
            "data": reports.request_data(self.report),
        }
        for key in ("filters", "scope"):
            if self.report.get(key):
                body[key] = self.report[key]
        return body

    def window_plan(self) -> tuple[list[tuple[dt.datetime, dt.datetime]], bool]:
        """The windows a sync would query now, and whether their end is fixed (end_date)."""
        start, end = self._range()
        hours = float(self.config["insights"].get("window_hours") or 24)
        return windows(start, end, hours), bool(self.config.get("end_date"))

    def _window_done(self, end: dt.datetime, *, write: bool) -> None:
        state = self.get_context_state(None)
        state.pop(PROGRESS_MARKERS, None)
        state["replication_key"] = self.replication_key
        state["replication_key_value"] = format_datetime(end)
        self.state_manager.is_flushed = False  # a changed bookmark is news, rows or not
        if write:
            self.finalize_state_progress_markers(state)  # writes the STATE message

    # singer-sdk 0.54.9: `_sync_records` is the SDK's private per-record sync loop (see
    # FastRecordsMixin). Where `row_path.window_loop_applies`, the window loop below runs
    # with a `WindowEmitter` that writes each window's rows as RECORD lines a block at a
    # time (same output, see insights/rows.py); anywhere else (BATCH mode included) the
    # rows go through the SDK's loop as dicts.
    @override
    def _sync_records(self, context: Context | None = None, *,
                      write_messages: bool = True) -> t.Iterator[dict]:
        noop = type(self)._increment_stream_state is InsightsReportStream._increment_stream_state
        if row_path.window_loop_applies(self, context, write_messages, increment_is_noop=noop):
            return row_path.sync_windows(self)
        return super()._sync_records(context, write_messages=write_messages)

    def _window_records(self, reader: WindowReader, paths: list[str], start: dt.datetime,
                        end: dt.datetime) -> t.Generator[dict, None, int]:
        """The rows of one window as records (or written by the row path's emitter, which
        yields none); returns how many."""
        emitter = self.__dict__.get("window_emitter")
        if emitter is not None:
            return emitter.emit_window(reader, paths, start, end)  # type: ignore[no-any-return]
        count = 0
        for record in reader.rows(paths, start, end):
            count += 1
            yield record
        return count

    def _plan(self) -> tuple[InsightsApi, list[tuple[dt.datetime, dt.datetime]]] | None:
        """The API client and the windows to sync (None: nothing to do); checks the
        report's names against the field list once."""
        start, end = self._range()
        api = shared_api(self._tap)
        hours = float(self.config["insights"].get("window_hours") or 24)
        todo = windows(start, end, hours)
        if not todo:
            self.logger.info("%s: nothing to do, bookmark %s is at the end of the range %s",
                             self.name, format_datetime(start), format_datetime(end))
            return None
        reports.check_fields(self.index, self.report, api.fields(self.name))
        self.logger.info("%s: %d window(s) of %g h from %s to %s", self.name, len(todo),
                         hours, iso_z(start), iso_z(end))
        return api, todo

    def _finished_queries(self, api: InsightsApi, todo: list[tuple[dt.datetime, dt.datetime]]
                          ) -> t.Iterator[tuple[int, QueryResult]]:
        """(window index, its query's result), strictly in window order, while up to
        `max_concurrent` queries run ahead (queries submitted at sync start are taken,
        insights/schedule.py). Close it (contextlib.closing) to stop the workers when the
        caller gives up early."""
        pool = cf.ThreadPoolExecutor(max_workers=api.max_concurrent,
                                     thread_name_prefix=f"{self.name}-query")
        futures: dict[int, cf.Future[QueryResult]] = {}
        submitted = 0
        finished = False
        try:
            for i in range(len(todo)):
                while submitted < len(todo) and submitted <= i + api.max_concurrent - 1:
                    s, e = todo[submitted]
                    futures[submitted] = submit_query(
                        self._tap, pool, api, self.query_body(s, e), where=self.name,
                        label=window_label(submitted, todo))
                    submitted += 1
                yield i, futures.pop(i).result()
            finished = True
        finally:
            if not finished:
                api.stop.set()  # let the query workers give up now
            for future in futures.values():
                future.cancel()
            pool.shutdown(wait=True)
            api.stop.clear()  # the workers are done: later streams may use the API again

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict]:
        plan = self._plan()
        if plan is None:
            return
        api, todo = plan
        # In BATCH mode a STATE written here could go out before the BATCH message holding
        # those rows: the bookmark is only updated, and the SDK writes it after each BATCH
        # (every row of a finished window was handed over before the update).
        write_each = not self.get_batch_config(self.config)
        reader = WindowReader(self.name, self.config["insights"], self.columns,
                              max_tries=api.max_tries)
        total_rows = 0
        try:
            with contextlib.closing(self._finished_queries(api, todo)) as results:
                for i, result in results:
                    w_start, w_end = todo[i]
                    began = time.monotonic()
                    if result.status == "Failed":
                        self.logger.info(
                            "%s window %d/%d: no data (query %s Failed: %s)", self.name, i + 1,
                            len(todo), result.guid, "; ".join(result.messages) or "no message")
                    rows = yield from self._window_records(reader, result.paths, w_start, w_end)
                    total_rows += rows
                    self._window_done(w_end, write=write_each)
                    took = max(time.monotonic() - began, 1e-6)
                    self.logger.info(
                        "%s: window %d/%d [%s, %s) done: %d rows in %.2f s (%.0f rows/s); "
                        "bookmark %s", self.name, i + 1, len(todo), iso_z(w_start),
                        iso_z(w_end), rows, took, rows / took, iso_z(w_end))
        finally:
            reader.close()
        self.logger.info("%s: %d rows in %d window(s)", self.name, total_rows, len(todo))

    @override
    def get_batches(self, batch_config: BatchConfig, context: Context | None = None
                    ) -> t.Iterable[tuple[BaseBatchFileEncoding, list[str]]]:
        """BATCH mode: one batch file per report file, written by pyarrow (bulk.py)."""
        from tap_analytics.insights import bulk  # pyarrow is imported in BATCH mode only

        yield from bulk.stream_batches(self, batch_config)
