"""Alation result CSV text -> rows keyed by the header (no HTTP here)."""

from __future__ import annotations

import csv
import io
import typing as t


class CSVFormatError(ValueError):
    """The CSV cannot be read as a header plus rows of the same width."""


def header_names(header: list[str]) -> list[str]:
    """The header as record keys: exact names; an empty or repeated name gets a suffix."""
    names: list[str] = []
    seen: set[str] = set()
    for index, raw in enumerate(header, start=1):
        base = raw if raw != "" else f"column_{index}"
        name, n = base, 1
        while name in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name)
        names.append(name)
    return names


def parse_result_csv(text: str) -> t.Iterator[dict[str, str]]:
    """Yield one dict per data row, values exactly as in the CSV (always strings).

    Quoted fields may hold commas, quotes and newlines. An empty body yields nothing.
    A row wider or narrower than the header raises CSVFormatError (with its row number).
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        names = header_names(header)
        width = len(names)
        for row_number, row in enumerate(reader, start=1):
            if not row:  # a blank line (e.g. a trailing newline pair)
                continue
            if len(row) != width:
                raise CSVFormatError(
                    f"row {row_number} has {len(row)} fields, the header has {width}"
                )
            yield dict(zip(names, row))
    except csv.Error as exc:
        raise CSVFormatError(f"unreadable CSV at line {reader.line_num}: {exc}") from None
