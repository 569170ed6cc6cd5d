"""BATCH mode of the report streams: each report file becomes one batch file.

`stream_batches(stream, batch_config)` is `InsightsReportStream.get_batches`: the same
windows and query look-ahead as the row path (`stream._finished_queries`), then, per
window, `WindowFiles.files()`:

- reader threads (one SFTP connection each) read the window's files: SFTP, gunzip and
  pyarrow's CSV parser, each file into a small bounded queue of raw Arrow batches:
  memory stays bounded whatever the file size;
- the main thread drains the queues in file order and numbers the rows across the
  window (`row_number`, as the row path); encoder threads convert each batch (text,
  RFC 3339 times, the fixed columns) and encode it (JSON Lines + one gzip member, or
  the Arrow batch for Parquet) in parallel: Arrow's kernels and ISA-L release the GIL,
  so a window's batches use all cores, whatever its file count. The main thread writes
  the results in order into one batch file per report file (`batchfiles.BatchFile`);
  a file is committed, and its BATCH message yielded, only when complete;
- a dropped SFTP connection or a truncated/corrupt gzip re-reads the file from the
  start on the same worker (up to `max_tries` reads, as the row path), skipping the rows
  already queued: no half file, no row twice.

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
import ctypes
import datetime as dt
import io
import logging
import os
import queue
import threading
import time
import typing as t
import uuid

import pyarrow as pa

from tap_analytics.common.errors import TapAnalyticsError
from tap_analytics.common.timeutil import format_datetime
from tap_analytics.insights import batchfiles, columnar
from tap_analytics.insights.client import iso_z
from tap_analytics.insights.download import BUFFER
from tap_analytics.insights.sftp import SftpDropped, SftpSession

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig

LOGGER = logging.getLogger("tap-analytics.insights")
#: Raw Arrow batches (~256 KiB of CSV each, `columnar.BLOCK_SIZE`) queued per file read.
QUEUE_BATCHES = 2
#: At most this many encoder threads (and half as many reader threads).
MAX_WORKERS = 4
_END = object()


def _bounded_memory() -> None:
    """Keep the process's memory near what it uses (called once per BATCH sync).

    Arrow's own buffers stay small here (~10 MB at most), but the default mimalloc pool
    and glibc's sliding mmap threshold (freed 1 MiB blocks of the SFTP/gzip/JSON buffers
    raise it, after which such blocks stay in the heap) kept ~90 MB more resident: peak
    RSS of a 400k-row report 260 MB -> 170 MB with the system pool and a fixed threshold
    (benchmarks/README.md). Both are process-wide; the row path does not use pyarrow.
    """
    pa.set_memory_pool(pa.system_memory_pool())
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (glibc): fixed, not sliding
        libc.mallopt(-8, 2)  # M_ARENA_MAX: threads share 2 heaps, not 8 per core


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Inflated:
    """A csv.gz stream inflated by Arrow (C++, without the GIL; gzip members and the
    trailer's CRC checked), read by the CSV parser through Python: each read a bytes
    copy. Given the native stream itself, Arrow's reader kept ~12 MB more resident at
    1M rows (peak RSS 152 vs 140 MB; 128 vs 126 MB at 100k), for ~0.1 s less. A
    truncated or corrupt stream is an OSError ("Truncated compressed stream", "zlib
    inflate failed")."""

    def __init__(self, raw: t.BinaryIO) -> None:
        self._stream = pa.CompressedInputStream(
            pa.PythonFile(io.BufferedReader(raw, BUFFER), mode="r"), "gzip")  # type: ignore[arg-type]
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(None if size is None or size < 0 else size)

    def close(self) -> None:
        self.closed = True
        self._stream.close()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Aborted(Exception):
    """The main thread gave up on the window: the worker stops."""


class WindowFiles:
    """Report files -> batch files, for one stream; reused across its windows."""

    def __init__(self, stream_name: str, columns: list[str], batch_config: BatchConfig,
                 insights_config: t.Mapping[str, t.Any], *, max_tries: int,
                 workers: int | None = None) -> None:
        self.stream_name = stream_name
        self.batch_config = batch_config
        self.sftp_config = dict(insights_config.get("sftp") or {})
        self.timeout = float(insights_config.get("request_timeout_seconds") or 120)
        self.max_tries = max(1, max_tries)
        self.decoder = columnar.ReportDecoder(stream_name, columns)
        self.schema = columnar.output_schema(columns)
        #: JSON Lines hints: one value per batch file; values the tap made itself
        self.constant = ("window_start", "window_end", "source_file")
        self.plain = [columnar.reports.column_name(c) for c in columns
                      if c in columnar.reports.TIME_FIELDS]
        #: Threads that convert and encode batches (the CPU-heavy part), and threads that
        #: read files (SFTP + gunzip + CSV parse: ~1/4 of the CPU; one SFTP connection
        #: each). A window's batches are encoded in parallel whatever its file count.
        encoders = max(1, min(MAX_WORKERS, _cores()))
        self.workers = workers or max(1, encoders // 2)
        self.sync_id = uuid.uuid4().hex[:12]
        self._pool = cf.ThreadPoolExecutor(max_workers=self.workers,
                                           thread_name_prefix=f"{stream_name}-file")
        #: Batches being converted and encoded, ahead of the one being written.
        self.depth = encoders + 1
        self._encoders = cf.ThreadPoolExecutor(max_workers=encoders,
                                               thread_name_prefix=f"{stream_name}-encode")
        self._abort = threading.Event()
        self._local = threading.local()
        self._sessions: list[SftpSession] = []
        self._lock = threading.Lock()
        self._window = 0

    def connect_ahead(self) -> None:
        """Open the workers' SFTP connections now (an SSH handshake takes ~0.5-1 s),
        while the first query runs. Best effort: a failure shows again on first use."""
        for _ in range(self.workers):
            self._pool.submit(self._connect_quietly)

    def _connect_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._session().connect()

    # -- main thread ---------------------------------------------------------------------

    def files(self, paths: list[str], start: dt.datetime, end: dt.datetime
              ) -> t.Iterator[tuple[str, int]]:
        """(batch file URL, rows) per report file with rows, in file order."""
        self._window += 1
        if not paths:
            return
        window_start, window_end = format_datetime(start), format_datetime(end)
        queues: list[queue.Queue] = [queue.Queue(maxsize=QUEUE_BATCHES) for _ in paths]
        futures = [self._pool.submit(self._decode, p, q) for p, q in zip(paths, queues)]
        pending: collections.deque[cf.Future] = collections.deque()
        first_row = 0
        try:
            for index, (path, q) in enumerate(zip(paths, queues)):
                name = (f"{self.batch_config.storage.prefix or ''}{self.stream_name}-"
                        f"{start:%Y%m%dT%H%M%S}-{self.sync_id}-{index + 1:04d}"
                        f"{batchfiles.extension(self.batch_config)}")
                out: batchfiles.BatchFile | None = None
                rows = 0
                try:
                    while True:
                        item = q.get()  # a worker always ends a file with _END/_Failed
                        if item is _END:
                            break
                        if isinstance(item, _Failed):
                            raise item.error
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
        finally:
            self._abort.set()  # no-op for finished workers; stops the others
            cf.wait(futures)
            self._abort.clear()

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
        self._abort.set()
        self._pool.shutdown(wait=True)
        self._encoders.shutdown(wait=True, cancel_futures=True)
        for session in self._sessions:
            session.close()

    # -- worker threads ------------------------------------------------------------------

    def _put(self, q: queue.Queue, item: t.Any) -> None:
        while True:
            if self._abort.is_set():
                raise _Aborted
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.2)
                return

    def _decode(self, path: str, q: queue.Queue) -> None:
        try:
            for batch in self._read_with_retries(path):
                self._put(q, batch)
            self._put(q, _END)
        except _Aborted:
            return
        except BaseException as exc:  # handed to the main thread, raised there
            with contextlib.suppress(_Aborted):
                self._put(q, _Failed(exc))

    def _session(self) -> SftpSession:
        session = getattr(self._local, "session", None)
        if session is None:
            session = SftpSession(self.sftp_config, timeout=self.timeout)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _read_with_retries(self, path: str) -> t.Iterator[pa.RecordBatch]:
        queued = 0  # rows of this file already handed over
        tries = 0
        while True:
            tries += 1
            try:
                for batch in self._read(path, skip=queued):
                    queued += batch.num_rows
                    yield batch
                return
            except SftpDropped as exc:
                problem = f"the SFTP connection dropped ({exc})"
            except (EOFError, OSError) as exc:  # Arrow's inflate: OSError
                problem = f"the gzip file is truncated or corrupt ({exc})"
            if tries >= self.max_tries:
                raise TapAnalyticsError(
                    self.stream_name,
                    f"report file {path}: {problem}; gave up after {tries} tries "
                    "(no batch file was emitted for it; the bookmark stays before this "
                    "window)",
                )
            wait = min(30.0, 0.5 * 2 ** (tries - 1))
            LOGGER.warning("%s: report file %s: %s; reading it again from the start in "
                           "%.1f s (try %d of %d, skipping %d rows already read)",
                           self.stream_name, path, problem, wait, tries + 1, self.max_tries,
                           queued)
            if self._abort.wait(wait):
                raise _Aborted

    def _read(self, path: str, *, skip: int) -> t.Iterator[pa.RecordBatch]:
        stream = self._session().open_stream(path)
        try:
            gz = _Inflated(stream)  # truncated/corrupt: OSError, read again below
            seen = 0
            for batch in self.decoder.raw_batches(gz, path):
                n = batch.num_rows
                seen += n
                if seen <= skip:
                    continue
                if seen - n < skip:
                    batch = batch.slice(skip - (seen - n))
                yield batch
            if seen < skip:
                raise TapAnalyticsError(
                    self.stream_name,
                    f"report file {path} changed between reads ({seen} rows now, {skip} "
                    "before)",
                )
        finally:
            stream.close()


def stream_batches(stream: t.Any, batch_config: BatchConfig
                   ) -> t.Iterator[tuple[BaseBatchFileEncoding, list[str]]]:
    """`InsightsReportStream.get_batches`: (encoding, [one batch file URL]) per file."""
    plan = stream._plan()
    if plan is None:
        return
    api, todo = plan
    _bounded_memory()
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
                            "%.1f s (%.0f rows/s); bookmark %s", stream.name, i + 1, len(todo),
                            iso_z(w_start), iso_z(w_end), rows, files, took, rows / took,
                            iso_z(w_end))
    finally:
        writer.close()
    LOGGER.info("%s: %d rows in %d window(s), BATCH mode (%s)", stream.name, total, len(todo),
                encoding.format)
