"""BATCH mode of the report streams: each report file becomes one batch file.

`stream_batches(stream, batch_config)` is `InsightsReportStream.get_batches`: the same
windows and query look-ahead as the row path (`stream._finished_queries`), then, per
window, `WindowFiles.files()`:

- reader threads (`arrowread.FileReaders`, one SFTP connection each) read the window's
  files: SFTP, gunzip and pyarrow's CSV parser, each file into a small bounded queue of
  raw Arrow batches: memory stays bounded whatever the file size;
- the main thread drains the queues in file order and numbers the rows across the
  window (`row_number`, as the row path); encoder threads convert each batch (text,
  RFC 3339 times, the fixed columns) and encode it (JSON Lines + one gzip member, or
  the Arrow batch for Parquet) in parallel: Arrow's kernels and ISA-L release the GIL,
  so a window's batches use all cores, whatever its file count. The main thread writes
  the results in order into one batch file per report file (`batchfiles.BatchFile`);
  a file is committed, and its BATCH message yielded, only when complete;
- a dropped SFTP connection or a truncated/corrupt gzip re-reads the file from the
  start on the same reader (up to `max_tries` reads, as the row path), skipping the
  rows already queued: no half file, no row twice.

STATE: the SDK writes a STATE after every BATCH message, with the bookmarks it has.
A window's bookmark moves (and its STATE is written) only once the generator is resumed
after the window's last batch, i.e. after the SDK wrote that BATCH message: every STATE
covers exactly the windows whose rows are in batch files already emitted, even one that
a SIGTERM handler writes at any moment. Empty and Failed windows move it too.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import datetime as dt
import logging
import time
import typing as t
import uuid

import pyarrow as pa

from tap_analytics.common.timeutil import format_datetime
from tap_analytics.insights import batchfiles, columnar
from tap_analytics.insights.arrowread import FileReaders, bounded_memory, encoder_count
from tap_analytics.insights.client import iso_z

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig

LOGGER = logging.getLogger("tap-analytics.insights")


class WindowFiles:
    """Report files -> batch files, for one stream; reused across its windows."""

    def __init__(self, stream_name: str, columns: list[str], batch_config: BatchConfig,
                 insights_config: t.Mapping[str, t.Any], *, max_tries: int,
                 workers: int | None = None) -> None:
        self.stream_name = stream_name
        self.batch_config = batch_config
        self.decoder = columnar.ReportDecoder(stream_name, columns)
        self.schema = columnar.output_schema(columns)
        #: JSON Lines hints: one value per batch file; values the tap made itself
        self.constant = ("window_start", "window_end", "source_file")
        self.plain = [columnar.reports.column_name(c) for c in columns
                      if c in columnar.reports.TIME_FIELDS]
        #: Threads that convert and encode batches (the CPU-heavy part), and threads that
        #: read files (SFTP + gunzip + CSV parse: ~1/4 of the CPU; one SFTP connection
        #: each). A window's batches are encoded in parallel whatever its file count.
        encoders = encoder_count()
        self.readers = FileReaders(
            self.decoder, insights_config, max_tries=max_tries,
            workers=workers or max(1, encoders // 2),
            gave_up=lambda rows: "no batch file was emitted for it; the bookmark stays "
                                 "before this window")
        self.sync_id = uuid.uuid4().hex[:12]
        #: Batches being converted and encoded, ahead of the one being written.
        self.depth = encoders + 1
        self._encoders = cf.ThreadPoolExecutor(max_workers=encoders,
                                               thread_name_prefix=f"{stream_name}-encode")
        self._window = 0

    def connect_ahead(self) -> None:
        """Open the readers' SFTP connections now, while the first query runs."""
        self.readers.connect_ahead()

    def files(self, paths: list[str], start: dt.datetime, end: dt.datetime
              ) -> t.Iterator[tuple[str, int]]:
        """(batch file URL, rows) per report file with rows, in file order."""
        self._window += 1
        if not paths:
            return
        window_start, window_end = format_datetime(start), format_datetime(end)
        pending: collections.deque[cf.Future] = collections.deque()
        first_row = 0
        with self.readers.open(paths) as readers:
            for index, path in enumerate(paths):
                name = (f"{self.batch_config.storage.prefix or ''}{self.stream_name}-"
                        f"{start:%Y%m%dT%H%M%S}-{self.sync_id}-{index + 1:04d}"
                        f"{batchfiles.extension(self.batch_config)}")
                out: batchfiles.BatchFile | None = None
                rows = 0
                try:
                    for item in readers.batches(index):
                        if out is None:
                            out = batchfiles.BatchFile(self.batch_config, name, self.schema)
                        pending.append(self._encoders.submit(
                            self._encode, item, path, rows, first_row + rows,
                            window_start, window_end))
                        rows += item.num_rows
                        while len(pending) > self.depth:  # written in file order
                            out.put(*pending.popleft().result())
                    if out is None:
                        continue  # a file without rows: no batch file
                    while pending:
                        out.put(*pending.popleft().result())
                    url = out.commit()
                    out = None
                finally:
                    for future in pending:
                        future.cancel()
                    cf.wait(pending)
                    pending.clear()
                    if out is not None:
                        out.discard()
                first_row += rows
                yield url, rows

    def _encode(self, raw: pa.RecordBatch, path: str, rows_before: int, first_row: int,
                window_start: str, window_end: str) -> tuple[t.Any, int]:
        """Encoder thread: a raw batch -> what `BatchFile.put` writes, and its rows."""
        batch = columnar.complete(
            self.decoder.convert(raw, path, rows_before=rows_before),
            window_start=window_start, window_end=window_end, first_row=first_row,
            source_file=path, schema=self.schema)
        return batchfiles.encode(batch, self.batch_config, constant=self.constant,
                                 plain=self.plain), batch.num_rows

    def close(self) -> None:
        self.readers.close()
        self._encoders.shutdown(wait=True, cancel_futures=True)


def stream_batches(stream: t.Any, batch_config: BatchConfig
                   ) -> t.Iterator[tuple[BaseBatchFileEncoding, list[str]]]:
    """`InsightsReportStream.get_batches`: (encoding, [one batch file URL]) per file."""
    plan = stream._plan()
    if plan is None:
        return
    api, todo = plan
    bounded_memory()
    writer = WindowFiles(stream.name, stream.columns, batch_config, stream.config["insights"],
                         max_tries=api.max_tries)
    writer.connect_ahead()
    encoding = batch_config.encoding
    total = 0
    try:
        with stream.get_record_counter() as counter, contextlib.closing(
                stream._finished_queries(api, todo)) as results:
            for i, result in results:
                w_start, w_end = todo[i]
                began = time.monotonic()
                if result.status == "Failed":
                    LOGGER.info("%s window %d/%d: no data (query %s Failed: %s)", stream.name,
                                i + 1, len(todo), result.guid,
                                "; ".join(result.messages) or "no message")
                rows = files = 0
                for url, n in writer.files(result.paths, w_start, w_end):
                    rows += n
                    files += 1
                    counter.increment(n)
                    yield encoding, [url]
                # The SDK wrote the last BATCH (and a STATE) before resuming us: every row
                # of the window is out, its bookmark is written now. Set before that yield,
                # a SIGTERM in between would save a STATE ahead of the BATCH (the SDK's
                # termination handler writes the state it has).
                stream._window_done(w_end, write=True)
                total += rows
                took = max(time.monotonic() - began, 1e-6)
                LOGGER.info("%s: window %d/%d [%s, %s) done: %d rows in %d batch file(s) in "
                            "%.2f s (%.0f rows/s); bookmark %s", stream.name, i + 1, len(todo),
                            iso_z(w_start), iso_z(w_end), rows, files, took, rows / took,
                            iso_z(w_end))
    finally:
        writer.close()
    LOGGER.info("%s: %d rows in %d window(s), BATCH mode (%s)", stream.name, total, len(todo),
                encoding.format)
