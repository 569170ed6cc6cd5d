"""The tap's Singer message writer: msgspec-encoded lines, buffered, written in large chunks.

`FastSingerWriter` replaces the SDK's simplejson writer for the whole tap (tap.py). A RECORD
line is assembled by `recordpath.RecordFastPath` straight into its buffer; every other
message is encoded here. See the class for when bytes reach stdout and why a killed process
loses nothing.
"""

from __future__ import annotations

import datetime as dt
import select
import sys
import typing as t

import msgspec
from singer_sdk.singerlib.encoding.base import GenericSingerWriter
from singer_sdk.singerlib.json import serialize_json

if t.TYPE_CHECKING:
    from singer_sdk.singerlib.encoding.simple import Message

#: Write the buffer out when it grows beyond this many bytes even without a STATE
#: (a stream without bookmarks emits no STATE until its end): bounds the memory.
DEFAULT_MAX_BUFFER_BYTES = 8 * 1024 * 1024


def _enc_hook(obj: t.Any) -> t.Any:
    """As the SDK's simplejson default: isoformat for date-times, str() for the rest."""
    return obj.isoformat(sep="T") if isinstance(obj, dt.datetime) else str(obj)


#: Characters msgspec writes raw that `str.splitlines()` (and some JSON-lines readers)
#: treat as line breaks. In JSON they can only occur inside strings, where the escaped
#: form means the same; the SDK's simplejson (ensure_ascii) escapes them too.
_LINE_BREAKERS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"),
                  (b"\xc2\x85", b"\\u0085"))


def escape_line_breakers(data: bytes | bytearray) -> bytes | bytearray:
    """JSON text with U+2028, U+2029 and U+0085 written as escapes."""
    # One-byte searches (memchr, ~20x faster than a search for the whole sequence on
    # long data) rule most sequences out: the lead byte, then the last byte, which is
    # rarer in text (an em dash or a curly quote is \xe2\x80 too). Only a sequence
    # whose bytes are all present is searched for, and only a present one replaced.
    for raw, escaped in _LINE_BREAKERS:
        if raw[:1] in data and raw[-1:] in data and raw in data:
            data = data.replace(raw, escaped)
    return data


def _write_all(target: t.Any, data: bytes | bytearray) -> None:
    """`target.write(data)`, every byte of it. A signal handler that runs inside a write
    blocked on a full pipe and returns (the tap's SIGTERM handler does, so as not to cut
    a line) makes CPython's BufferedWriter.write return early with the count written so
    far (64 KiB of a 10 MiB write, seen here): the rest is written on."""
    view = memoryview(data)
    while view:
        written = target.write(view)
        if written is None:  # a non-blocking raw stream that took nothing: wait a little
            select.select([], [target], [], 1.0)
            continue
        view = view[written:]


def _isoformat_datetimes(node: t.Any) -> t.Any:
    if isinstance(node, dt.datetime):
        return node.isoformat(sep="T")
    if isinstance(node, dict):
        return {k: _isoformat_datetimes(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_isoformat_datetimes(v) for v in node]
    return node


def make_encoder() -> msgspec.json.Encoder:
    return msgspec.json.Encoder(enc_hook=_enc_hook, decimal_format="number")


class FastSingerWriter(GenericSingerWriter[bytes, "Message"]):
    """Singer messages as msgspec-encoded lines, buffered, written in large chunks.

    When bytes reach stdout:
    - Lines are buffered in order. A STATE is appended and the whole buffer is written
      and flushed at once, so a STATE always reaches the target together with, and
      after, every record it covers (SCHEMA, ACTIVATE_VERSION, BATCH simply keep their
      place in the buffer).
    - At the end of each stream (`FastRecordsMixin.finalize_state_progress_markers`) and
      of the sync (`TapAnalytics.invoke`).
    - When the buffer passes `max_buffer_bytes` (a stream without bookmarks emits no STATE
      until its end; this bounds the memory).

    Why a killed process loses nothing: what a killed process had not written is only
    records after its last written STATE. The bookmark in that STATE does not cover them,
    so the next run (from that STATE) extracts them again. The one case where records
    after the last STATE do reach the target is the size-bound write: those records are
    re-sent by the resumed run (at-least-once, Singer's usual contract, and what the stock
    SDK does for every record); targets merge them on the key properties. A STATE is
    never written ahead of a record it covers.

    Lines are always whole: the buffer is written as a unit of complete lines. When
    stdout has no binary buffer (e.g. `contextlib.redirect_stdout(io.StringIO())` in
    tests), each message is written as text at once.
    """

    def __init__(self, max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES) -> None:
        super().__init__()
        self.max_buffer_bytes = max_buffer_bytes
        self.encoder = make_encoder()
        self._buffer = bytearray()
        self._target: t.Any = None  # the binary stream the buffer is meant for
        #: Where an unfinished RECORD line starts in the buffer (see record_buffer)
        self.open_from: int | None = None
        self._writing = False
        self._exit: tuple[int, str] | None = None

    # -- encoding --------------------------------------------------------------------
    def serialize_message(self, message: Message) -> bytes:
        data = message.to_dict()
        if data.get("type") == "RECORD":
            stamp = data.get("time_extracted")
            if isinstance(stamp, dt.datetime):  # as simplejson's default: isoformat
                data["time_extracted"] = stamp.isoformat(sep="T")
        else:  # SCHEMA/STATE/...: rare, so convert any date-time as the SDK would
            data = _isoformat_datetimes(data)
        try:
            return self.encoder.encode(data) + b"\n"
        except UnicodeEncodeError:  # a lone surrogate: the SDK's encoder escapes it
            return serialize_json(data).encode("ascii") + b"\n"

    # -- writing ---------------------------------------------------------------------
    @staticmethod
    def _binary_stdout() -> t.Any:
        return getattr(sys.stdout, "buffer", None)

    def write_message(self, message: Message) -> None:
        line = self.serialize_message(message)
        self.write_line(line, final=getattr(message, "type", None) == "STATE")

    def write_line(self, line: bytes | bytearray, *, final: bool = False) -> None:
        """Append one complete line; `final=True` writes the buffer out now."""
        self._drop_unfinished_line()
        target = self._binary_stdout()
        if target is None:  # text-only stdout: no buffering, no bytes
            self.flush()
            sys.stdout.write(bytes(escape_line_breakers(line)).decode("utf-8"))
            return
        if target is not self._target:
            self.flush()
            self._target = target
        self._buffer += line
        if final or len(self._buffer) >= self.max_buffer_bytes:
            self.flush()

    def record_buffer(self) -> bytearray | None:
        """The byte buffer a caller appends RECORD lines to, or None when stdout takes
        text only. Until `record_appended()`, what is appended after `open_from` (set
        here to the buffer's end; a caller appending several lines moves it to the end
        of each complete line) is an unfinished line: a STATE or a flush coming in
        before then can only come from a signal handler (SIGTERM mid-record), and drops
        it first, so no torn line is ever written. No STATE covers a dropped record yet:
        the next run reads it again."""
        target = self._binary_stdout()
        if target is None:
            return None
        if target is not self._target:
            self.flush()
            self._target = target
        self.open_from = len(self._buffer)
        return self._buffer

    def record_appended(self) -> None:
        """The lines appended since `record_buffer()` are complete."""
        self.open_from = None
        if len(self._buffer) >= self.max_buffer_bytes:
            self.flush()

    def _drop_unfinished_line(self) -> None:
        if self.open_from is not None:
            del self._buffer[self.open_from:]
            self.open_from = None

    @property
    def writing(self) -> bool:
        """True while `flush` is writing to stdout (a signal handler may run inside it)."""
        return self._writing

    def exit_after_write(self, code: int, message: str) -> None:
        """A signal handler ran inside a stdout write: let the write finish (a SystemExit
        raised in it would cut a line), write what was added meanwhile (the handler's
        STATE), then print `message` and exit with `code`."""
        self._exit = (code, message)

    def flush(self) -> None:
        """Write every buffered line and flush stdout."""
        self._drop_unfinished_line()
        if self._writing or not self._buffer:
            # Re-entered from a signal handler while writing: the outer call writes it.
            return
        target = self._target
        if target is None:
            self._buffer.clear()
            return
        self._writing = True
        try:
            while self._buffer:  # lines added during the write (a handler's STATE) too
                sys.stdout.flush()  # anything printed as text goes first
                data = self._buffer
                self._buffer = bytearray()
                _write_all(target, escape_line_breakers(data))
                target.flush()
        finally:
            self._writing = False
        if self._exit is not None:
            code, message = self._exit
            self._exit = None
            print(message, file=sys.stderr, flush=True)
            sys.exit(code)

    def pending_bytes(self) -> int:
        return len(self._buffer)


__all__ = ["DEFAULT_MAX_BUFFER_BYTES", "FastSingerWriter", "escape_line_breakers", "make_encoder"]
