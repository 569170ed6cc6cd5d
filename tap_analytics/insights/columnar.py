"""A report csv.gz -> Arrow record batches with the RECORD path's columns and values.

The BATCH path (`bulk.py`) reads report files with pyarrow's streaming CSV reader instead
of building a dict per row. What comes out must equal what the row path
(`download.WindowReader`) emits, value for value:

- the columns of the report under their record names (`reports.column_name`), in the
  file's column order (the RECORD lines' key order; `complete` puts them in the order
  of the schema it is given), every value the string the file holds (no type guessing,
  empty strings stay empty strings);
- time fields (`reports.TIME_FIELDS`) in the tap's RFC 3339 form: the common UTC shape is
  rebuilt with Arrow compute kernels, anything else goes through `download.to_datetime`
  (the row path's own function) value by value; an empty time value is null;
- `complete()` adds `window_start`, `window_end`, `row_number` (1-based across the
  window's files) and `source_file`.

Memory is bounded by `block_size`: the file is read block by block from any binary
file-like object (the SFTP stream through gunzip); never whole.
"""

from __future__ import annotations

import logging
import typing as t

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tap_analytics.common.errors import TapAnalyticsError, one_line
from tap_analytics.common.timeutil import valid_date
from tap_analytics.insights import reports
from tap_analytics.insights.download import to_datetime

LOGGER = logging.getLogger("tap-analytics.insights")

#: Decompressed CSV bytes per Arrow block (one record batch each, roughly). 256 KiB:
#: peak RSS of a 1M-row .jsonl.gz run 152 MB -> 140 MB against 512 KiB (129 -> 125 MB at
#: 100k rows), for ~10% more CPU; 1 MiB took 204 MB before the encoder threads.
BLOCK_SIZE = 1 << 18

# download._FAST_RE (RE2 syntax): the shape the row path rebuilds without a datetime
# round trip; `valid_date` is checked per distinct day below.
_FAST = r"^\d{4}-\d{2}-\d{2}[T ](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|\+00:00)?$"


def output_schema(columns: list[str]) -> pa.Schema:
    """The batch files' schema: the fixed columns, then the report's columns."""
    return pa.schema([
        pa.field("window_start", pa.string(), nullable=False),
        pa.field("window_end", pa.string(), nullable=False),
        pa.field("row_number", pa.int64(), nullable=False),
        pa.field("source_file", pa.string()),
        *[pa.field(reports.column_name(c), pa.string()) for c in columns],
    ])


class BadData(TapAnalyticsError):
    """A report file's data that the tap cannot take: its CSV, its header, a value."""


class BadValue(ValueError):
    """A time value the row path would reject too (index into the batch given)."""

    def __init__(self, index: int, value: str) -> None:
        super().__init__(value)
        self.index = index
        self.value = value


# Arguments of compute functions are Arrow scalars, not Python values: pyarrow converts
# a Python value by trying to import dateutil (absent unless something else needs it),
# a failed import each call, holding the GIL (~1 s per 1M rows before).
_EMPTY = pa.scalar("", pa.string())
_NULL = pa.scalar(None, pa.string())
_FALSE = pa.scalar(False)
_ONE = pa.scalar(1, pa.int64())

#: 0001-01-01T00:00:00 in microseconds since the epoch: the first day `valid_date` takes.
_YEAR_1_US = -62135596800 * 10**6


def _may_hold(values: pa.Array, text: bytes) -> bool:
    """False when no value of `values` contains `text` (a fast, conservative look at the
    whole data buffer: a view's neighbours may make it say True)."""
    data = values.buffers()[2] if values.type in (pa.string(), pa.binary()) else None
    return data is None or text in data.to_pybytes()


def _cast_fast(values: pa.Array, fast: pa.Array) -> pa.Array:
    """The `fast` values (the fast shape) in the tap's form, through Arrow's timestamp
    cast ("YYYY-MM-DD HH:MM:SS.ffffff", 6 digits); null elsewhere. ArrowInvalid when a
    value is no real date (Arrow checks the calendar; year 0, which it takes, raises)."""
    naive = pc.utf8_rtrim(pc.if_else(fast, values, _NULL), "Z")
    if _may_hold(values, b"+"):  # the shape's other UTC suffix
        naive = pc.replace_substring(naive, "+00:00", "")
    stamps = naive.cast(pa.timestamp("us"))
    first = pc.min(stamps.cast(pa.int64())).as_py()
    if first is not None and first < _YEAR_1_US:
        raise pa.ArrowInvalid("a year before 1")
    return pc.binary_replace_slice(pc.binary_replace_slice(
        stamps.cast(pa.string()), 10, 11, "T"), 26, 26, "+00:00")


def convert_times(values: pa.Array) -> pa.Array:
    """A string array of report time values -> the row path's `to_datetime` values.

    Values of the common UTC shape (`download._FAST_RE`, on a real calendar day) are
    parsed and printed by Arrow's own timestamp cast (no regex captures, no Python per
    value, the calendar checked by the cast); everything else (epochs, offsets,
    padding, bad dates) goes through the row path's own function, value by value. An
    empty value is null, as `to_datetime("")`.
    """
    fast = pc.fill_null(pc.match_substring_regex(values, _FAST), _FALSE)
    try:
        built = _cast_fast(values, fast)
    except pa.ArrowInvalid:  # a day that does not exist (Feb 30): those go the slow way
        day = pc.utf8_slice_codeunits(values, 0, 10)
        bad = [d for d in pc.unique(day.filter(fast)).to_pylist() if not valid_date(d)]
        fast = pc.and_(fast, pc.invert(pc.is_in(day, pa.array(bad, pa.string()))))
        try:
            built = _cast_fast(values, fast)
        except pa.ArrowInvalid:  # anything else Arrow reads otherwise: all the slow way
            built, fast = pa.nulls(len(values), pa.string()), pa.repeat(False, len(values))
    slow = pc.and_(pc.invert(fast), pc.not_equal(values, _EMPTY))
    if not pc.any(slow).as_py():
        return built
    fixed = []
    where = pc.indices_nonzero(slow).to_pylist()
    for index, value in zip(where, values.filter(slow).to_pylist()):
        try:
            fixed.append(to_datetime(value))
        except ValueError:
            raise BadValue(index, value) from None
    return pc.replace_with_mask(built, slow, pa.array(fixed, pa.string()))


def _as_text(values: pa.Array) -> pa.Array:
    """CSV bytes -> str as the row path decodes them (UTF-8, bad bytes replaced)."""
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([v.decode("utf-8", "replace") for v in values.to_pylist()],
                        pa.string())


class ReportDecoder:
    """Decodes the report files of one stream (thread-safe: no state between files)."""

    def __init__(self, stream_name: str, columns: list[str], *,
                 block_size: int = BLOCK_SIZE) -> None:
        self.stream_name = stream_name
        self.columns = columns
        #: record names of the time fields
        self.times = frozenset(reports.column_name(c) for c in columns
                               if c in reports.TIME_FIELDS)
        self.block_size = block_size

    def batches(self, fileobj: t.Any, path: str) -> t.Iterator[pa.RecordBatch]:
        """The report columns of every row of one file, in file order (`raw_batches`,
        each through `convert`, on this thread)."""
        rows = 0
        for raw in self.raw_batches(fileobj, path):
            yield self.convert(raw, path, rows_before=rows)
            rows += raw.num_rows

    def raw_batches(self, fileobj: t.Any, path: str) -> t.Iterator[pa.RecordBatch]:
        """The CSV rows of one file as parsed: binary columns in the file's column order
        (the RECORD path's key order), named by their record names.

        `fileobj` is the decompressed CSV (binary, file-like). Errors of the file itself
        (header, width) are one BadData error; errors of the transport (SftpDropped,
        EOFError of a truncated gzip) pass through for the caller to retry.
        """
        try:
            reader = pacsv.open_csv(
                fileobj,
                read_options=pacsv.ReadOptions(block_size=self.block_size, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.binary() for c in self.columns}),
            )
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                LOGGER.warning("%s: report file %s is empty (no header)", self.stream_name,
                               path)
                return  # as the row path: nothing to emit
            raise self._csv_error(path, exc) from None
        try:
            header = reader.schema.names
            try:
                reports.check_header(self.stream_name, path, header, self.columns)
            except TapAnalyticsError as exc:
                raise BadData(exc.where, exc.message) from None
            names = [reports.column_name(c) for c in header]
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as exc:
                    raise self._csv_error(path, exc) from None
                if batch.num_rows:
                    yield pa.RecordBatch.from_arrays(batch.columns, names=names)
        finally:  # stop Arrow's read-ahead of `fileobj` before its owner closes it
            reader.close()

    def convert(self, raw: pa.RecordBatch, path: str, *, rows_before: int) -> pa.RecordBatch:
        """A raw batch -> the RECORD path's values: text, time fields in RFC 3339.
        `rows_before`: rows of the file before this batch (for the error's row number).
        Thread-safe: the BATCH path converts a file's batches on several threads."""
        arrays = []
        for name, column in zip(raw.schema.names, raw.columns):
            text = _as_text(column)
            if name in self.times:
                try:
                    text = convert_times(text)
                except BadValue as exc:
                    raise BadData(
                        self.stream_name, f"report file {path} row "
                        f"{rows_before + exc.index + 1}: {name} "
                        f"{exc.value[:40]!r} is not a date-time") from None
            arrays.append(text)
        return pa.RecordBatch.from_arrays(arrays, names=raw.schema.names)

    def _csv_error(self, path: str, exc: Exception) -> BadData:
        return BadData(self.stream_name, f"report file {path}: unreadable CSV "
                                 f"({one_line(str(exc), 160)})")


def _constant(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def complete(batch: pa.RecordBatch, *, window_start: str, window_end: str, first_row: int,
             source_file: str, schema: pa.Schema) -> pa.RecordBatch:
    """A decoded batch plus the fixed columns, as `schema` (its columns, in its order: the
    fixed ones and those of `batch`, by name); `first_row` rows of the window came
    before."""
    n = batch.num_rows
    fixed = {"window_start": lambda: _constant(window_start, n),
             "window_end": lambda: _constant(window_end, n),
             "row_number": lambda: pc.add(pc.cumulative_sum(pa.repeat(_ONE, n)),
                                          pa.scalar(first_row, pa.int64())),
             "source_file": lambda: _constant(source_file, n)}
    return pa.RecordBatch.from_arrays(
        [fixed[name]() if name in fixed else batch.column(name) for name in schema.names],
        schema=schema)
