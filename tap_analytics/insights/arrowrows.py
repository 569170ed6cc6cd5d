"""The Insights row path on Arrow: a window's report files -> RECORD lines, on every core.

Where pyarrow is installed (the `batch` extra), `rows.WindowEmitter` writes a window's
rows through `ArrowWindows` instead of Python's csv module: the BATCH path's machinery
(`arrowread.FileReaders`: SFTP, Arrow's inflate and CSV parser on reader threads), then,
on encoder threads, per raw batch of ~2,000 rows: the time columns converted by Arrow's
kernels (`columnar.ReportDecoder.convert`), the fixed columns added (`columnar.complete`)
and whole RECORD lines built by one string join (`batchfiles.json_lines`, the envelope
as the lines' head and tail). Arrow's kernels release the GIL, so the batches of a
window are encoded in parallel; the main thread only appends each batch's lines to the
writer's buffer, in order.

The bytes are the Python row path's: the same keys in the same order (the fixed columns,
then the file's columns; deselected ones left out), values written as msgspec writes
them (the tests compare both paths byte for byte), STATE messages at the same places (a
batch is cut where a STATE falls due), `time_extracted` read when a batch is handed to
an encoder.

Data the Arrow path does not take as the Python path would (`columnar.BadData`: a CSV
error, a changed header, a value that is not a date-time; or a value msgspec could not
encode) hands the rest of the window to the Python row path, from the first row not yet
written: it emits the rows the Python path would have emitted before the problem, and
raises the same error, word for word. A download that fails (the tries used up, a
refused login) fails as in the Python path, after the rows read before it.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import typing as t

import pyarrow as pa

from tap_analytics.common.errors import one_line
from tap_analytics.insights import batchfiles, columnar, reports
from tap_analytics.insights.arrowread import FileReaders, bounded_memory, encoder_count

if t.TYPE_CHECKING:
    from tap_analytics.insights.download import WindowReader

LOGGER = logging.getLogger("tap-analytics.insights")
_FIXED = ("window_start", "window_end", "row_number", "source_file")
_CONSTANT = ("window_start", "window_end", "source_file")


class _HandOver(Exception):
    """The Arrow path gives the rest of the window to the Python row path."""

    def __init__(self, file_index: int, reason: BaseException) -> None:
        super().__init__(str(reason))
        self.file_index = file_index
        self.reason = reason


class ArrowWindows:
    """Writes report windows as RECORD lines for a `rows.WindowEmitter` (its writer,
    counter, STATE cadence and Python fallback); one per stream sync."""

    def __init__(self, emitter: t.Any, columns: list[str], insights_config: t.Mapping,
                 *, max_tries: int) -> None:
        self.emitter = emitter
        self.stream_name = emitter.stream.name
        self.decoder = columnar.ReportDecoder(self.stream_name, columns)
        self.plain = frozenset(reports.column_name(c) for c in columns
                               if c in reports.TIME_FIELDS)
        encoders = encoder_count()
        self.readers = FileReaders(
            self.decoder, insights_config, max_tries=max_tries,
            workers=max(1, encoders // 2),
            gave_up=lambda rows: f"{rows} rows were read; the bookmark stays before this "
                                 "window")
        self._encoders = cf.ThreadPoolExecutor(max_workers=encoders,
                                               thread_name_prefix=f"{self.stream_name}-encode")
        #: Batches being encoded ahead of the one being written.
        self.depth = encoders + 1
        self._schemas: dict[tuple[str, ...], tuple[pa.Schema, list[str]]] = {}
        self._window_rows = 0  # rows of the window being written, in the files before
        self._file_rows = 0  # rows of the file being written, written so far
        bounded_memory()

    def close(self) -> None:
        self.readers.close()
        self._encoders.shutdown(wait=True, cancel_futures=True)

    # -- main thread ---------------------------------------------------------------------

    def emit_window(self, reader: WindowReader, paths: list[str],
                    head: tuple[str, str]) -> int:
        """Write every row of one window (`head`: its start and end as written); the
        number of rows."""
        if not paths:
            return 0
        self._window_rows = self._file_rows = 0
        try:
            with self.readers.open(paths) as readers:
                for index, path in enumerate(paths):
                    self._file_rows = 0
                    self._emit_file(readers.batches(index), index, path, head)
                    self._window_rows += self._file_rows
        except _HandOver as over:
            done = self._window_rows
            skip = self._file_rows
            LOGGER.info("%s: report file %s: the rest of the window from row %d of the file "
                        "is read row by row (%s)", self.stream_name, paths[over.file_index],
                        skip + 1, one_line(str(over.reason), 160))
            rest = self.emitter.emit_chunks(
                reader.chunks(paths[over.file_index:], rows_before=done, skip=skip), head)
            return done + skip + rest
        return self._window_rows

    def _emit_file(self, batches: t.Iterator[pa.RecordBatch], index: int, path: str,
                   head: tuple[str, str]) -> None:
        emitter = self.emitter
        pending: collections.deque[cf.Future] = collections.deque()
        submitted = emitter.index  # records written or being encoded
        rows = 0  # rows of the file handed to the encoders
        failure: BaseException | None = None  # what ended the file's batches
        try:
            while failure is None:
                try:
                    raw = next(batches)
                except StopIteration:
                    break
                except (columnar.BadData, pa.ArrowInvalid) as exc:
                    failure = exc  # the batches before it are written first
                    break
                except Exception as exc:  # the download's (ReadFailed, SFTP login): raised
                    failure = exc  # after the batches before it
                    break
                for piece in self._pieces(raw, submitted):
                    pending.append(self._encoders.submit(
                        self._encode, piece, path, rows, self._window_rows + rows, head,
                        emitter.fast._line_end(emitter.fast._time_extracted())))
                    rows += piece.num_rows
                    submitted += piece.num_rows
                    while len(pending) > self.depth:  # written in order
                        self._write(*pending.popleft().result())
            while pending:
                self._write(*pending.popleft().result())
        except (columnar.BadData, pa.ArrowException, UnicodeEncodeError) as exc:
            # an encoder's (any Arrow kernel's complaint about a value included): the
            # rows before are out, the csv path takes the rest as it always did
            raise _HandOver(index, exc) from None
        finally:
            for future in pending:
                future.cancel()
            cf.wait(pending)
        if isinstance(failure, (columnar.BadData, pa.ArrowInvalid)):
            raise _HandOver(index, failure)
        if failure is not None:
            raise failure

    def _pieces(self, raw: pa.RecordBatch, submitted: int) -> t.Iterator[pa.RecordBatch]:
        """`raw` cut where a STATE falls due (after every `frequency` records)."""
        frequency = self.emitter.frequency
        start, count = 0, raw.num_rows
        while start < count:
            end = min(count, start + frequency - (submitted + start) % frequency)
            yield raw if (start, end) == (0, count) else raw.slice(start, end - start)
            start = end

    def _write(self, lines: pa.Buffer, batch: pa.RecordBatch) -> None:
        emitter = self.emitter
        buffer = emitter.writer.record_buffer()
        if buffer is None:  # stdout turned text-only: one RecordMessage per record
            for record in batch.to_pylist():
                emitter.fast.write(record, emitter.stream._write_conformed_record)
        else:
            buffer += lines
            emitter.writer.record_appended()
        self._file_rows += batch.num_rows
        emitter.advance(batch.num_rows)

    # -- encoder threads -----------------------------------------------------------------

    def _schema(self, names: tuple[str, ...]) -> tuple[pa.Schema, list[str]]:
        """The record's columns for a file's header (record names, in file order): the
        output schema and the file columns to convert, deselected ones left out."""
        found = self._schemas.get(names)
        if found is None:
            keep = self.emitter.selected
            fixed = [n for n in _FIXED if keep is None or n in keep]
            own = [n for n in names if keep is None or n in keep]
            types = {"row_number": pa.int64()}
            schema = pa.schema([pa.field(n, types.get(n, pa.string())) for n in fixed + own])
            found = self._schemas[names] = (schema, own)
        return found

    def _encode(self, raw: pa.RecordBatch, path: str, rows_before: int, first_row: int,
                head: tuple[str, str], line_end: bytes) -> tuple[pa.Buffer, pa.RecordBatch]:
        """A raw batch -> its RECORD lines (and the batch, for a text-only stdout)."""
        schema, own = self._schema(tuple(raw.schema.names))
        converted = self.decoder.convert(raw.select(own), path, rows_before=rows_before)
        batch = columnar.complete(converted, window_start=head[0], window_end=head[1],
                                  first_row=first_row, source_file=path, schema=schema)
        lines = batchfiles.json_lines(batch, constant=_CONSTANT, plain=self.plain,
                                      head=self.emitter.fast.prefix.decode(),
                                      tail=line_end.decode())
        return lines, batch
