"""The Insights row path: a window's CSV rows -> RECORD lines, a block of rows at a time.

singer-sdk 0.54.9's `Stream._sync_records` builds a dict per row and runs about ten Python
calls on it (post_process, `_process_record`, the write, the state increment, the STATE
frequency check, the counter, a generator hop per level). Insights rows are flat CSV
values of three kinds (strings, RFC 3339 date-times or null, the row number), so
`sync_windows` runs the stream's own window loop (`InsightsReportStream.get_records`,
unchanged) with a `WindowEmitter` that writes each block of rows (`WindowReader.chunks`)
straight into the tap's `FastSingerWriter` buffer:

- the time columns are converted a column at a time (`convert_time_column`: the common
  UTC styles checked and rearranged with str.translate / str.replace over the joined
  column, the per-value `to_datetime` only for other styles);
- the values go into msgspec Structs (one class per file header and selection: field
  order = the record's key order, deselected properties left out) built by `map` in C,
  and `Encoder.encode_lines` encodes the block; the RECORD envelope is spliced around
  each line with `bytes.replace` (msgspec never writes a raw newline inside a line).

What reaches stdout is what the SDK's loop writes: the same RECORD lines in the same
order (`time_extracted` is taken once per block instead of once per millisecond), STATE
messages at the same places (after every `STATE_MSG_FREQUENCY` records, after each
window, at the end) with the same bookmarks, the same record counter. The tests compare
both outputs byte for byte.

Where pyarrow is installed (the `batch` extra), `WindowEmitter.emit_window` hands each
window to `arrowrows.ArrowWindows`, which builds the same lines with Arrow on encoder
threads (every core) and hands report data it cannot take back to `emit_chunks` here.

It runs only where `window_loop_applies` (see there); every other case, and BATCH mode
(`_sync_records(write_messages=False)`), is the SDK's loop over the stream's dicts.

SDK members this reads or calls (singer-sdk 0.54.9; `common/fastsync.py` uses the same):
`Stream._write_starting_replication_value`, `_finalize_state`, `_write_state_message`,
`get_context_state`, `stream_state`, `get_record_counter`, `get_sync_timer`,
`STATE_MSG_FREQUENCY`, `ABORT_AT_RECORD_COUNT`, `partitions`, `state_manager`,
`helpers._catalog.pop_deselected_record_properties`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import operator
import typing as t

import msgspec
from singer_sdk import Stream
from singer_sdk.helpers._catalog import pop_deselected_record_properties

from tap_analytics.common.errors import TapAnalyticsError
from tap_analytics.common.fastpath import FastRecordsMixin, FastSingerWriter, fast_path_for
from tap_analytics.common.timeutil import format_datetime, valid_date
from tap_analytics.insights.download import RowChunk, WindowReader, to_datetime

if t.TYPE_CHECKING:
    from tap_analytics.common.fastpath import RecordFastPath

# --------------------------------------------------------------------------------------
# Time columns
# --------------------------------------------------------------------------------------
#: ASCII digits -> "d", the letter "d" -> "#": a value's shape ("dddd-dd-ddTdd:dd:dd.dddZ").
_SHAPE = str.maketrans({**{str(i): "d" for i in range(10)}, "d": "#"})
_UTC = "+00:00"


def _shapes() -> dict[str, tuple[str, int, str]]:
    """Shape -> (separator, fraction digits, zone) of the UTC styles `to_datetime` turns
    into "YYYY-MM-DDTHH:MM:SS.ffffff+00:00" by rearranging characters (its `_FAST_RE`)."""
    out = {}
    for sep in ("T", " "):
        for digits in range(7):
            for zone in ("", "Z", _UTC):
                shape = ("dddd-dd-dd" + sep + "dd:dd:dd" + ("." + "d" * digits if digits else "")
                         + zone.translate(_SHAPE))
                out[shape] = (sep, digits, zone)
    return out


_SHAPES = _shapes()
_DAY, _HOUR = operator.itemgetter(slice(0, 10)), operator.itemgetter(slice(11, 13))
_HOURS = frozenset(f"{h:02d}" for h in range(24))


class BadTime(ValueError):
    """`index` of the first value of a column that is not a date-time."""

    def __init__(self, index: int, value: str) -> None:
        super().__init__(value)
        self.index = index
        self.value = value


def convert_time_column(values: t.Sequence[str]) -> list[str | None]:
    """`[to_datetime(v) for v in values]`, a column at a time.

    When every non-empty value has the shape of the first one and that shape is one of
    the UTC styles "YYYY-MM-DD[T ]HH:MM:SS[.f]{Z|+00:00|}" (checked on the joined column
    with `str.translate`, the hours, minutes, seconds and days checked as sets), the
    conversion is a few `str.replace` calls on the joined column: all of it in C. Any
    other column goes value by value through `to_datetime`. Raises `BadTime` for the
    first value that is not a date-time."""
    empty = values.count("")
    present = [value for value in values if value] if empty else values
    if present:
        shape = present[0].translate(_SHAPE)
        style = _SHAPES.get(shape)
        if style is not None and _same_shape(present, shape, style[2]):
            return _rearranged(values, style, bool(empty))
    elif values:
        return [None] * len(values)
    return _one_by_one(values)


def _same_shape(present: t.Sequence[str], shape: str, zone: str) -> bool:
    count = len(present)
    joined = "\n".join(present)
    stride = len(shape) + 1
    if len(joined) != count * stride - 1:
        return False
    if joined.translate(_SHAPE) != "\n".join(itertools.repeat(shape, count)):
        return False
    if zone == _UTC and joined.count(_UTC) != count:  # "+dd:dd" is the shape of any offset
        return False
    # Every value has the same width: the n-th character of every value is
    # joined[n::stride]. Hours 00-23, minutes and seconds 00-59, then the distinct days.
    tens = joined[11::stride]
    if tens.strip("01") and not _HOURS.issuperset(map(_HOUR, present)):
        return False
    if joined[14::stride].strip("012345") or joined[17::stride].strip("012345"):
        return False
    return all(map(valid_date, set(map(_DAY, present))))


def _rearranged(values: t.Sequence[str], style: tuple[str, int, str],
                has_empty: bool) -> list[str | None]:
    sep, digits, zone = style
    text = "\n".join(values) + "\n"
    if sep == " ":
        text = text.replace(" ", "T")  # the only space of each value
    end = ("" if digits else ".") + "0" * (6 - digits) + _UTC
    if zone:
        if zone + "\n" != end + "\n":
            text = text.replace(zone + "\n", end + "\n")
    else:
        text = text.replace("\n", end + "\n")  # (empty values too: None below)
    out: list[str | None] = text[:-1].split("\n")  # type: ignore[assignment]
    if has_empty:
        out = [new if old else None for new, old in zip(out, values)]
    return out


def _one_by_one(values: t.Sequence[str]) -> list[str | None]:
    out: list[str | None] = []
    append = out.append
    try:
        for value in values:
            append(to_datetime(value))
    except ValueError:
        raise BadTime(len(out), values[len(out)]) from None
    return out


#: Windows go through the Arrow row path (`arrowrows.py`) where pyarrow is installed;
#: False: always the csv module's path below (the tests compare both).
arrow_rows_enabled = True

# --------------------------------------------------------------------------------------
# When the row path runs
# --------------------------------------------------------------------------------------
_SAMPLE = {"window_start": "", "window_end": "", "row_number": 1, "source_file": ""}


def _property_names(stream: t.Any) -> list[str]:
    return list(stream.schema.get("properties") or {})


def window_loop_applies(stream: t.Any, context: t.Any, write_messages: bool, *,
                        increment_is_noop: bool) -> bool:
    """True when `sync_windows` may stand in for the SDK's `_sync_records`: RECORD lines
    written (not BATCH), no context or partitions, the stream selected, no dry-run record
    limit, the tap's fast record path on (no stream maps, no flattening, the tap's
    FastSingerWriter on a binary stdout), no child streams, the per-record hooks
    (`post_process`, `_process_record`, `_write_record_message`) the default ones and the
    stream's per-record state increment a no-op (`increment_is_noop`, the caller knows)."""
    cls = type(stream)
    fast = fast_path_for(stream) if write_messages else None
    if not (
        fast is not None
        and increment_is_noop
        and context is None
        and stream.selected
        and stream.ABORT_AT_RECORD_COUNT is None
        and not stream.partitions
        and not stream.child_streams
        and cls.post_process is Stream.post_process
        and cls._write_record_message is FastRecordsMixin._write_record_message
        and cls._process_record is FastRecordsMixin._process_record
        and isinstance(fast.writer, FastSingerWriter)
        and FastSingerWriter._binary_stdout() is not None
    ):
        return False
    # Every value is a str, None or the int row number: the compiled conformer must
    # leave such a record as it is (it does for the schema the stream builds).
    sample = dict.fromkeys(_property_names(stream), "")
    sample.update(_SAMPLE)
    unmapped: list[str] = []
    return fast.conform(sample, unmapped) is sample and not unmapped


def sync_windows(stream: t.Any) -> t.Iterator[dict]:
    """The SDK's `_sync_records(None)` for an Insights report stream, the rows written by
    a `WindowEmitter` (only where `window_loop_applies`). Yields no record: the SDK's
    `Stream.sync` only drains the generator."""
    fast = fast_path_for(stream)
    assert fast is not None
    record_counter = stream.get_record_counter()
    timer = stream.get_sync_timer()
    emitter = WindowEmitter(stream, fast, record_counter)
    with record_counter, timer:
        record_counter.with_context({})
        timer.with_context({})
        stream._write_starting_replication_value(None)
        stream.__dict__["window_emitter"] = emitter
        try:
            for record in stream.get_records(None):
                emitter.write_records([record])  # (none: the windows' rows are written)
        finally:
            stream.__dict__.pop("window_emitter", None)
            emitter.close()
        stream._finalize_state(stream.get_context_state(None))
    stream._finalize_state(stream.stream_state)
    stream._write_state_message()
    yield from ()


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
class WindowEmitter:
    """Writes the rows of report windows as RECORD lines (see the module doc)."""

    def __init__(self, stream: t.Any, fast: RecordFastPath, record_counter: t.Any) -> None:
        self.stream = stream
        self.fast = fast
        self.writer: FastSingerWriter = fast.writer  # type: ignore[assignment]
        self.encoder = fast.encoder
        self.counter = record_counter
        self.frequency = max(1, int(stream.STATE_MSG_FREQUENCY))
        self.index = 0  # records written (the SDK's record_index)
        if fast.all_selected:
            self.selected: frozenset[str] | None = None
        else:
            sample = dict.fromkeys(_property_names(stream), "")
            pop_deselected_record_properties(sample, stream.schema, fast.mask)
            self.selected = frozenset(sample)
        self._classes: dict[tuple[str, ...], type] = {}
        #: The Arrow row path (`arrowrows.ArrowWindows`): False where pyarrow is not
        #: installed, None until the first window.
        self._arrow: t.Any = None if arrow_rows_enabled else False

    def emit_window(self, reader: WindowReader, paths: list[str], start: dt.datetime,
                    end: dt.datetime) -> int:
        """Write every row of one window; the number of rows."""
        head = (format_datetime(start), format_datetime(end))
        arrow = self._arrow_windows(reader)
        if arrow:
            return arrow.emit_window(reader, paths, head)  # type: ignore[no-any-return]
        return self.emit_chunks(reader.chunks(paths), head)

    def emit_chunks(self, chunks: t.Generator[RowChunk, None, None],
                    head: tuple[str, str]) -> int:
        """Write the rows of `chunks` (of one window); the number of rows. A failure
        closes `chunks` at once (its SFTP file too, while the connection is open)."""
        count = 0
        with contextlib.closing(chunks):
            for chunk in chunks:
                self._emit_chunk(chunk, head)
                count += len(chunk.rows)
        return count

    def _arrow_windows(self, reader: WindowReader) -> t.Any:
        if self._arrow is None:
            try:
                from tap_analytics.insights.arrowrows import ArrowWindows
            except ImportError:  # no pyarrow: the csv module's path
                self._arrow = False
            else:
                self._arrow = ArrowWindows(
                    self, reader.columns, {"sftp": reader.sftp_config,
                                           "request_timeout_seconds": reader.timeout},
                    max_tries=reader.max_tries)
        return self._arrow

    def close(self) -> None:
        """Stop the Arrow path's threads and SFTP connections (if it ran)."""
        if self._arrow:
            self._arrow.close()
        self._arrow = None if arrow_rows_enabled else False

    def _struct(self, names: tuple[str, ...]) -> type:
        cls = self._classes.get(names)
        if cls is None:
            fields = [f"f{i}" for i in range(len(names))]
            # gc=False: str/int/None values cannot make a cycle; not tracking the Structs
            # spares the collector a walk over every block
            cls = msgspec.defstruct("InsightsRow", fields, rename=dict(zip(fields, names)),
                                    gc=False)
            self._classes[names] = cls
        return cls

    def _emit_chunk(self, chunk: RowChunk, head: tuple[str, str]) -> None:
        rows = chunk.rows
        count = len(rows)
        if not count:
            return
        keep = self.selected
        columns = list(zip(*rows))
        names: list[str] = []
        values: list[t.Iterable] = []
        for name, value in (("window_start", itertools.repeat(head[0], count)),
                            ("window_end", itertools.repeat(head[1], count)),
                            ("row_number", range(chunk.first, chunk.first + count)),
                            ("source_file", itertools.repeat(chunk.path, count))):
            if keep is None or name in keep:
                names.append(name)
                values.append(value)
        for (name, convert), column in zip(chunk.converters, columns):
            if keep is not None and name not in keep:
                continue
            if convert is not None:
                try:
                    column = convert_time_column(column)
                except BadTime as bad:
                    # the rows before the bad one go out, as the SDK's loop would do
                    self._emit_chunk(RowChunk(chunk.path, chunk.converters, chunk.first,
                                              chunk.line, rows[:bad.index]), head)
                    raise TapAnalyticsError(
                        self.stream.name,
                        f"report file {chunk.path} row {chunk.line + bad.index}: {name} "
                        f"{bad.value[:40]!r} is not a date-time",
                    ) from None
            names.append(name)
            values.append(column)
        structs = list(map(self._struct(tuple(names)), *values))
        self._write(structs, names)

    def _write(self, structs: list, names: list[str]) -> None:
        """RECORD lines for `structs`, with a STATE after every `frequency` records."""
        start, count = 0, len(structs)
        while start < count:
            end = min(count, start + self.frequency - self.index % self.frequency)
            self._append(structs[start:end] if (start, end) != (0, count) else structs,
                         names)
            self.advance(end - start)
            start = end

    def advance(self, count: int) -> None:
        """`count` more RECORD lines are in the writer's buffer (none past a STATE that
        falls due): count them, and write the STATE when it is due."""
        self.stream.state_manager.is_flushed = False
        self.index += count
        self.counter.increment(count)
        if self.index % self.frequency == 0:
            self.stream._write_state_message()

    def _append(self, structs: list, names: list[str]) -> None:
        fast = self.fast
        buffer = self.writer.record_buffer()
        if buffer is None:  # stdout turned text-only: one RecordMessage per record
            for struct in structs:
                fast.write(dict(zip(names, msgspec.structs.astuple(struct))),
                           self.stream._write_conformed_record)
            return
        suffix = fast._line_end(fast._time_extracted())
        try:
            lines = self.encoder.encode_lines(structs)
        except UnicodeEncodeError:  # a lone surrogate: the per-record path escapes it
            self.writer.record_appended()
            for struct in structs:
                fast.write(dict(zip(names, msgspec.structs.astuple(struct))),
                           self.stream._write_conformed_record)
            return
        prefix = fast.prefix
        buffer += prefix
        buffer += lines.replace(b"\n", suffix + prefix)
        del buffer[len(buffer) - len(prefix):]  # the prefix after the last line
        self.writer.record_appended()

    def write_records(self, records: list[dict]) -> None:
        """Records that come as dicts (the SDK's steps for each)."""
        for record in records:
            self.stream._write_record_message(record)
            self.stream._increment_stream_state(record, context=None)
            self.index += 1
            if self.index % self.frequency == 0:
                self.stream._write_state_message()
            self.counter.increment()


__all__ = ["WindowEmitter", "convert_time_column", "sync_windows", "window_loop_applies"]
