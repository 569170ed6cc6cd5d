"""Report files -> raw Arrow batches on reader threads: the columnar paths' downloads.

Both columnar paths, BATCH files (`bulk.py`) and RECORD lines (`arrowrows.py`), read a
window's report files the same way: `FileReaders.open(paths)` starts reading each file on
one of a few reader threads (one SFTP connection each: SFTP, Arrow's gzip inflate and
pyarrow's CSV parser, `columnar.ReportDecoder.raw_batches`) into a small bounded queue of
raw batches per file, and `batches(i)` hands a file's batches over in order. Memory stays
bounded whatever the file size.

A dropped SFTP connection or a truncated/corrupt gzip re-reads the file from the start on
the same reader (up to `max_tries` reads, as the row path), skipping the rows already
queued: no row twice, none lost. A file that cannot be read (after the tries, or a CSV
error) raises from `batches(i)` where its rows stop, after every batch before.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import io
import logging
import os
import queue
import threading
import typing as t

import pyarrow as pa

from tap_analytics.common.errors import TapAnalyticsError
from tap_analytics.insights.columnar import ReportDecoder
from tap_analytics.insights.download import BUFFER
from tap_analytics.insights.sftp import SftpDropped, SftpSession

LOGGER = logging.getLogger("tap-analytics.insights")
#: Raw Arrow batches (~256 KiB of CSV each, `columnar.BLOCK_SIZE`) queued per file read.
QUEUE_BATCHES = 2
#: At most this many encoder threads (and half as many reader threads).
MAX_WORKERS = 4
_END = object()
#: glibc's mmap threshold for the columnar paths (see `bounded_memory`). 1M-row report,
#: BATCH jsonl.gz, alternated runs: 128 KiB 1.7-2.0 s after ready, 0.8-1.0 s of system
#: time, peak RSS 143 MB; 1 MiB 1.2-1.4 s, 0.4-0.5 s, 164 MB; 4 MiB and 32 MiB no faster.
MMAP_THRESHOLD = 1 << 20


def bounded_memory() -> None:
    """Keep the process's memory near what it uses (called once per columnar sync).

    Arrow's own buffers stay small here (~10 MB at most), but the default mimalloc pool
    and glibc's sliding mmap threshold (freed 1 MiB blocks of the SFTP/gzip/JSON buffers
    raise it, after which such blocks stay in the heap) kept ~90 MB more resident: peak
    RSS of a 400k-row report 260 MB -> 170 MB with the system pool and a fixed threshold
    (benchmarks/README.md). Both are process-wide; only the columnar paths call it.

    The fixed threshold is `MMAP_THRESHOLD` (1 MiB): every block of a batch (the 256 KiB
    CSV reads, the ~0.5 MB of JSON Lines per batch) is below it, so freed blocks are
    reused from the heap. At 128 KiB each of them was a fresh mmap, page-faulted in and
    unmapped again: ~0.5 s of system time per 1M rows, a third of the work.
    """
    pa.set_memory_pool(pa.system_memory_pool())
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD (glibc): fixed, not sliding
        libc.mallopt(-8, 2)  # M_ARENA_MAX: threads share 2 heaps, not 8 per core


def encoder_count() -> int:
    """Encoder threads for this process: one per core of its CPU set (a container's, not
    the host's), at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


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
    """The caller gave up on the window: the reader stops."""


class ReadFailed(TapAnalyticsError):
    """A file could not be downloaded whole (the tries used up, or it changed between
    reads): not a problem of its data."""


class FileReaders:
    """Reader threads for one stream's report files; reused across its windows.

    `gave_up`: what the error after the last try adds about the output (the BATCH path:
    no batch file was emitted for the file; the RECORD path: how many rows were)."""

    def __init__(self, decoder: ReportDecoder, insights_config: t.Mapping[str, t.Any], *,
                 max_tries: int, workers: int,
                 gave_up: t.Callable[[int], str]) -> None:
        self.decoder = decoder
        self.stream_name = decoder.stream_name
        self.sftp_config = dict(insights_config.get("sftp") or {})
        self.timeout = float(insights_config.get("request_timeout_seconds") or 120)
        self.max_tries = max(1, max_tries)
        self.workers = max(1, workers)
        self.gave_up = gave_up
        self._pool = cf.ThreadPoolExecutor(max_workers=self.workers,
                                           thread_name_prefix=f"{self.stream_name}-file")
        self._abort = threading.Event()
        self._local = threading.local()
        self._sessions: list[SftpSession] = []
        self._lock = threading.Lock()
        self._queues: list[queue.Queue] = []
        #: The first file of the window whose reading failed: later ones are not started.
        self._failed_at = 0
        self._futures: list[cf.Future] = []

    def connect_ahead(self) -> None:
        """Open the readers' SFTP connections now (an SSH handshake takes ~0.5-1 s),
        while the first query runs. Best effort: a failure shows again on first use."""
        for _ in range(self.workers):
            self._pool.submit(self._connect_quietly)

    def _connect_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._session().connect()

    # -- the caller's thread -------------------------------------------------------------

    @contextlib.contextmanager
    def open(self, paths: list[str]) -> t.Iterator[FileReaders]:
        """Start reading every file of `paths` (at most `workers` at once, in order); on
        leaving, the readers still running are stopped and waited for."""
        self._queues = [queue.Queue(maxsize=QUEUE_BATCHES) for _ in paths]
        self._failed_at = len(paths)
        self._futures = [self._pool.submit(self._decode, i, p, q)
                         for i, (p, q) in enumerate(zip(paths, self._queues))]
        try:
            yield self
        finally:
            self._abort.set()  # no-op for finished readers; stops the others
            cf.wait(self._futures)
            self._abort.clear()
            self._queues, self._futures = [], []

    def batches(self, index: int) -> t.Iterator[pa.RecordBatch]:
        """The raw batches of file `index` of `open(paths)`, in file order; raises what
        ended the file's reading, after the batches before it."""
        q = self._queues[index]
        while True:
            item = q.get()  # a reader always ends a file with _END or _Failed
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def close(self) -> None:
        self._abort.set()
        self._pool.shutdown(wait=True)
        for session in self._sessions:
            session.close()

    # -- reader threads ------------------------------------------------------------------

    def _put(self, q: queue.Queue, item: t.Any) -> None:
        while True:
            if self._abort.is_set():
                raise _Aborted
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.2)
                return

    def _decode(self, index: int, path: str, q: queue.Queue) -> None:
        if index > self._failed_at:
            return  # a file before it failed: the caller stops there, never reads this one
        try:
            for batch in self._read_with_retries(path):
                self._put(q, batch)
            self._put(q, _END)
        except _Aborted:
            return
        except BaseException as exc:  # handed to the caller's thread, raised there
            with self._lock:
                self._failed_at = min(self._failed_at, index)
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
                raise ReadFailed(
                    self.stream_name, f"report file {path}: {problem}; gave up after "
                    f"{tries} tries ({self.gave_up(queued)})")
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
                raise ReadFailed(
                    self.stream_name,
                    f"report file {path} changed between reads ({seen} rows now, {skip} "
                    "before)",
                )
        finally:
            stream.close()
