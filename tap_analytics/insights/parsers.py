"""Insights bodies and report files -> Python values. No HTTP, no SFTP: fuzzed alone.

- `parse_status(body)`: the status body of GET /dwh/Q/<id>/status.
- `parse_download_paths(body)`: the file paths out of GET /dwh/Q/<id>
  ("Process finished. Download: [u'reports/...csv.gz']": a Python-repr list in a string).
- `iter_csv_gz(fileobj)`: a binary csv.gz stream -> header, then row lists, streamed
  (`iter_csv(binary)`: the same for a stream decompressed elsewhere).
- `error_detail(body)`: the doc's 400/429/500 bodies as one short line.
"""

from __future__ import annotations

import ast
import codecs
import csv
import gzip
import io
import itertools
import json
import re
import typing as t
from dataclasses import dataclass, field

from tap_analytics.common.errors import one_line

TERMINAL_STATUSES = ("Completed", "Failed", "Canceled")
_DOWNLOAD_RE = re.compile(r"Download:\s*(\[.*\])", re.DOTALL)
_NOT_FINISHED_RE = re.compile(r"not\s+finish", re.IGNORECASE)


class ParseError(ValueError):
    """A body or file that does not look like the API's."""


@dataclass
class QueryStatus:
    status: str
    guid: str | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def _as_object(body: t.Any) -> dict:
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"not JSON: {one_line(str(body), 120)!r}") from exc
    if not isinstance(body, dict):
        raise ParseError(f"expected a JSON object, got {type(body).__name__}")
    return body


def parse_status(body: t.Any) -> QueryStatus:
    """{"status": "Completed", "guid": ...} (+ "messages" when Failed)."""
    obj = _as_object(body)
    status = obj.get("status")
    if not isinstance(status, str) or not status.strip():
        raise ParseError(f"no status in {one_line(json.dumps(obj), 160)}")
    # Normalise the case ("completed", "CANCELED") and the British/American spelling.
    canon = status.strip().capitalize()
    if canon == "Cancelled":
        canon = "Canceled"
    messages = obj.get("messages") or []
    if isinstance(messages, str):
        messages = [messages]
    if not isinstance(messages, list):
        messages = [json.dumps(messages)]
    guid = obj.get("guid")
    return QueryStatus(canon, str(guid) if guid is not None else None,
                       [m if isinstance(m, str) else json.dumps(m) for m in messages])


def parse_download_paths(body: t.Any) -> list[str] | None:
    """The file paths of a finished query; None while the process has not finished.

    The API answers {"status": "Process finished. Download: [u'reports/a.csv.gz']"}:
    the bracketed part is a Python 2 repr of a list (u'' or '' or "" quoting, one or
    several files). It is read with `ast.literal_eval`, never `eval`.
    """
    obj = _as_object(body)
    text = obj.get("status")
    if not isinstance(text, str):
        raise ParseError(f"no status text in {one_line(json.dumps(obj), 160)}")
    match = _DOWNLOAD_RE.search(text)
    if not match:
        if _NOT_FINISHED_RE.search(text):
            return None
        raise ParseError(f"no download list in {one_line(text, 160)!r}")
    bracketed = match.group(1)
    try:
        value = ast.literal_eval(bracketed)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ParseError(f"unreadable download list {one_line(bracketed, 160)!r}") from exc
    if isinstance(value, (str, bytes)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ParseError(f"download list is not a list: {one_line(bracketed, 160)!r}")
    paths: list[str] = []
    for item in value:
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace")
        if not isinstance(item, str) or not item.strip():
            raise ParseError(f"bad file name in download list {one_line(bracketed, 160)!r}")
        paths.append(item.strip())
    return paths


def error_detail(body: bytes | str) -> str:
    """One line for an Insights error body, nested message objects included.

    {"code": 400, "message": {"Date_Filters": {"message": "Invalid ...", "code": "422-6"}}}
    -> "Date_Filters: Invalid ... (422-6)"
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return one_line(text, 300)
    return one_line(_flatten_message(payload), 400)


def _flatten_message(node: t.Any, label: str = "") -> str:
    if isinstance(node, list):
        return "; ".join(_flatten_message(item, label) for item in node) or "[]"
    if isinstance(node, dict):
        if "message" in node:
            inner = _flatten_message(node["message"])
            code = node.get("code")
            if isinstance(code, str):  # "422-6"; numeric codes duplicate the HTTP status
                inner = f"{inner} ({code})"
            return f"{label}: {inner}" if label else inner
        parts = [_flatten_message(v, str(k)) for k, v in node.items()]
        joined = "; ".join(parts) if parts else "{}"
        return f"{label}: {joined}" if label else joined
    text = node if isinstance(node, str) else json.dumps(node)
    return f"{label}: {text}" if label else text


def iter_csv_gz(fileobj: t.BinaryIO, *, block: int = 1 << 20) -> t.Iterator[list[str]]:
    """Stream a gzip-compressed CSV: first the header list, then each row list
    (a BOM is dropped; the caller maps rows to its column names).

    Nothing is held beyond the current block (`block` bytes of decompressed text, plus a
    line longer than that). A truncated or corrupt gzip raises EOFError /
    gzip.BadGzipFile / zlib.error from the read that hits it.

    The text is split into lines a block at a time (`_line_blocks`) and handed to the C
    csv reader through `itertools.chain`: no Python call per line (a TextIOWrapper over
    the GzipFile asks the GzipFile whether it is closed on every line).
    """
    return iter_csv(gzip.GzipFile(fileobj=fileobj, mode="rb"), block=block)


def iter_csv(binary: t.BinaryIO, *, block: int = 1 << 20) -> t.Iterator[list[str]]:
    """`iter_csv_gz` for an already decompressed binary stream (`binary.read(n)` may
    return fewer bytes than n; b"" is the end)."""
    return csv.reader(itertools.chain.from_iterable(_line_blocks(binary, block)))


#: A text without "\n" longer than this is cut after its last "\r" (old Mac files).
_LONG_LINE = 4 << 20


def _line_blocks(binary: t.BinaryIO, block: int) -> t.Iterator[io.StringIO]:
    """The decoded text (UTF-8, BOM dropped, bad bytes replaced) as StringIOs of whole
    lines; iterating a StringIO(newline="") splits lines as the csv module expects
    (\n, \r\n or \r, kept at the end of each line), in C."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    carry = ""
    while True:
        data = binary.read(block)
        text = carry + decoder.decode(data, final=not data)
        if not data:
            if text:
                yield io.StringIO(text, newline="")
            return
        # cut after the last "\n": a "\r\n" is never split between two blocks
        cut = text.rfind("\n") + 1
        if not cut and len(text) > _LONG_LINE:
            cut = text.rfind("\r", 0, len(text) - 1) + 1
        if not cut:
            carry = text
            continue
        carry = text[cut:]
        yield io.StringIO(text[:cut], newline="")
