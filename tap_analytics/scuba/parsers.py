"""Scuba / Interana answers -> flat dicts. Bytes or text in, records out; no HTTP here.

Three shapes of answer:

* `POST /v1/query` with `result_format` JSON_POWER_BI: a flat array of dictionaries, one per
  group per time bucket (`parse_power_bi`).
* the same with CSV: a header line and one line per group per time bucket (`parse_csv`).
* the same with DEFAULT ("the format that the UI expects", undocumented): accepted as a list of
  dicts, a `{"columns", "rows"}` table (rows as lists or `{"values": [...]}`), or either of
  those under a `data` / `results` / `result` key (`parse_default`).
* `GET /api/v1/query` (legacy v1): `{"columns": [...], "rows": [{"values": [...]}]}`,
  flattened by `flatten_v1` into one record per group (single_measurement) or per
  (group, timestamp) (time_series).

Column names become lower snake_case (`"measure 1"` -> `measure_1`); epoch-millisecond
time-bucket columns (`start_time_0`, `end_time_0`, `timestamp`, ...) become RFC 3339.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
import typing as t

from tap_analytics.common.names import snake_case, unique_names
from tap_analytics.common.timeutil import normalize

#: Columns holding epoch milliseconds that are emitted as RFC 3339 date-times.
TIME_COLUMN = re.compile(r"^(?:(?:start_time|end_time)(?:_\d+)?|timestamp)$")

POWER_BI = "JSON_POWER_BI"
CSV = "CSV"
DEFAULT = "DEFAULT"


class ParseError(ValueError):
    """The answer does not have a shape this parser knows (message says what)."""


def _text(data: bytes | str) -> str:
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ParseError(f"answer is not UTF-8 text (byte {exc.start})") from None
    return data[1:] if data.startswith("\ufeff") else data


def _load_json(data: bytes | str) -> t.Any:
    text = _text(data)
    if not text.strip():
        raise ParseError("empty answer (expected JSON)")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ParseError(f"malformed JSON answer ({exc})") from None
    except RecursionError:
        raise ParseError("JSON answer nested too deeply to read") from None


@functools.lru_cache(maxsize=1024)
def is_time_column(name: str) -> bool:
    return bool(TIME_COLUMN.match(name))


def convert_time(name: str, value: t.Any) -> t.Any:
    """Epoch ms (number or numeric string) of a time column -> RFC 3339; other values as-is."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        stripped = value.strip()
        if re.fullmatch(r"-?\d+(?:\.\d+)?", stripped):
            value = float(stripped) if "." in stripped else int(stripped)
        else:
            try:
                return normalize(stripped)
            except ValueError:
                raise ParseError(f"column '{name}': not a timestamp: {value!r}") from None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ParseError(f"column '{name}': not a timestamp: {value!r}")
        try:
            return _epoch_text(value)
        except (OverflowError, ValueError):
            raise ParseError(f"column '{name}': epoch ms out of range: {value!r}") from None
    raise ParseError(f"column '{name}': not a timestamp: {value!r}")


@functools.lru_cache(maxsize=8192)
def _epoch_text(ms: int | float) -> str | None:
    """Time buckets repeat across groups: each distinct value is formatted once."""
    return normalize(ms)


def _record(names: list[str], values: t.Sequence[t.Any]) -> dict[str, t.Any]:
    return {
        name: convert_time(name, value) if is_time_column(name) else value
        for name, value in zip(names, values)
    }


def _from_dicts(items: list[t.Any]) -> t.Iterator[dict[str, t.Any]]:
    cache: dict[tuple[str, ...], list[str]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ParseError(f"item {index} of the answer is {type(item).__name__}, not an object")
        keys = tuple(str(k) for k in item)
        names = cache.get(keys)
        if names is None:
            names = cache[keys] = unique_names(list(keys))
        yield _record(names, list(item.values()))


def parse_power_bi(data: bytes | str) -> t.Iterator[dict[str, t.Any]]:
    """JSON_POWER_BI: a flat array of dictionaries, one per group per time bucket."""
    payload = _load_json(data)
    if isinstance(payload, dict):
        payload = _unwrap(payload)
    if not isinstance(payload, list):
        raise ParseError(f"expected a JSON array of objects, got {type(payload).__name__}")
    yield from _from_dicts(payload)


def _number(text: str) -> t.Any:
    """CSV cell -> int / float / None / the text itself."""
    if text == "":
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?", text):
        value = float(text)
        return value if math.isfinite(value) else text
    return text


def parse_csv(data: bytes | str) -> t.Iterator[dict[str, t.Any]]:
    """CSV: header + rows. Numbers become numbers, empty cells None, time columns RFC 3339."""
    text = _text(data)
    if not text.strip():
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except csv.Error as exc:
        raise ParseError(f"malformed CSV header ({exc})") from None
    if not header or not any(h.strip() for h in header):
        raise ParseError("CSV answer has an empty header line")
    names = unique_names(header)
    line = 1
    try:
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(names):
                raise ParseError(
                    f"CSV line {line} has {len(row)} fields, the header has {len(names)}"
                )
            yield _record(names, [_number(cell) for cell in row])
    except csv.Error as exc:
        raise ParseError(f"malformed CSV at line {line + 1} ({exc})") from None


def _unwrap(payload: dict[str, t.Any]) -> t.Any:
    for key in ("data", "results", "result"):
        if key in payload and isinstance(payload[key], (list, dict)):
            return payload[key]
    return payload


def _column_label(column: t.Any, index: int) -> t.Any:
    if isinstance(column, dict):
        return column.get("label", column.get("name", f"column_{index}"))
    return column


def _table_rows(payload: dict[str, t.Any]) -> t.Iterator[dict[str, t.Any]]:
    columns = payload.get("columns")
    rows = payload.get("rows")
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise ParseError("expected 'columns' and 'rows' arrays")
    labels: list[str] = []
    for i, column in enumerate(columns):
        label = _column_label(column, i)
        if isinstance(label, list):
            labels.extend(str(x) for x in label)
        else:
            labels.append(str(label))
    names = unique_names(labels)
    for index, row in enumerate(rows):
        values = row.get("values") if isinstance(row, dict) else row
        if not isinstance(values, list):
            raise ParseError(f"row {index}: expected a list of values")
        if len(values) != len(columns):
            raise ParseError(
                f"row {index} has {len(values)} values for {len(columns)} columns"
            )
        flat: list[t.Any] = []
        for column, value in zip(columns, values):
            label = _column_label(column, 0)
            if isinstance(label, list) and isinstance(value, list):
                flat.extend(value)
            else:
                flat.append(value)
        if len(flat) != len(names):
            raise ParseError(f"row {index} has {len(flat)} values for {len(names)} columns")
        yield _record(names, flat)


def parse_default(data: bytes | str) -> t.Iterator[dict[str, t.Any]]:
    """DEFAULT ("the format that the UI expects"): tolerant of the shapes seen in the wild."""
    payload = _load_json(data)
    if isinstance(payload, dict):
        payload = _unwrap(payload)
    if isinstance(payload, list):
        yield from _from_dicts(payload)
    elif isinstance(payload, dict) and "columns" in payload and "rows" in payload:
        yield from _table_rows(payload)
    else:
        shape = sorted(payload)[:5] if isinstance(payload, dict) else type(payload).__name__
        raise ParseError(f"unknown DEFAULT answer shape: {shape}")


PARSERS: dict[str, t.Callable[[bytes | str], t.Iterator[dict[str, t.Any]]]] = {
    POWER_BI: parse_power_bi,
    CSV: parse_csv,
    DEFAULT: parse_default,
}


def parse_post(data: bytes | str, result_format: str) -> t.Iterator[dict[str, t.Any]]:
    """Parse a `POST /v1/query` answer in the given result format."""
    try:
        parser = PARSERS[result_format]
    except KeyError:
        raise ParseError(f"unknown result_format {result_format!r}") from None
    return parser(data)


# ---------------------------------------------------------------------------------------
# Legacy v1 GET answer


def _dims(columns: list[dict], values: list[t.Any]) -> dict[str, t.Any]:
    dims: dict[str, t.Any] = {}
    for column, value in zip(columns, values):
        if column.get("type") != "array":
            continue
        labels = column.get("label")
        labels = labels if isinstance(labels, list) else [labels]
        items = value if isinstance(value, list) else [value]
        if len(items) != len(labels):
            raise ParseError(
                f"group column {labels} has {len(items)} values for {len(labels)} labels"
            )
        for label, item in zip(labels, items):
            dims[snake_case(str(label))] = item
    return dims


def _measure_names(columns: list[dict], kind: str) -> list[str]:
    """Names for the measure columns of `kind`: first `measure_value`-like label as given,
    the next ones suffixed _2, _3 ... (labels repeat when several queries are sent)."""
    labels = [str(c.get("label")) for c in columns if c.get("type") == kind]
    return unique_names(labels)


def flatten_v1(data: bytes | str) -> t.Iterator[dict[str, t.Any]]:
    """Flatten a v1 columns/rows answer.

    single_measurement (number columns): one record per row: the group-by labels + measures.
    time_series (time_series columns): one record per row and point: group-by labels,
    `timestamp`, `value`, `event_count`, `object_count` (suffixed _2 ... for further
    measures) and the row properties (`rate`, `resolution`, `window`).
    """
    payload = _load_json(data)
    if not isinstance(payload, dict) or not isinstance(payload.get("columns"), list) or (
        not isinstance(payload.get("rows"), list)
    ):
        raise ParseError("expected an object with 'columns' and 'rows' arrays")
    columns = payload["columns"]
    for i, column in enumerate(columns):
        if not isinstance(column, dict) or column.get("type") not in (
            "array", "number", "time_series",
        ):
            raise ParseError(f"column {i} has an unknown type: {json.dumps(column)[:80]}")
    number_names = _measure_names(columns, "number")
    series_cols = [i for i, c in enumerate(columns) if c["type"] == "time_series"]
    number_cols = [i for i, c in enumerate(columns) if c["type"] == "number"]
    for r, row in enumerate(payload["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("values"), list):
            raise ParseError(f"row {r}: expected an object with a 'values' array")
        values = row["values"]
        if len(values) != len(columns):
            raise ParseError(f"row {r} has {len(values)} values for {len(columns)} columns")
        base = _dims(columns, values)
        for name, i in zip(number_names, number_cols):
            base[name] = values[i]
        if not series_cols:
            yield base
            continue
        props = row.get("properties") or {}
        if not isinstance(props, dict):
            raise ParseError(f"row {r}: 'properties' is not an object")
        for key, value in props.items():
            base[snake_case(str(key))] = value
        yield from _points(base, [values[i] for i in series_cols], r)


def _points(base: dict[str, t.Any], series: list[t.Any], row: int) -> t.Iterator[dict]:
    merged: dict[t.Any, dict[str, t.Any]] = {}
    for n, points in enumerate(series):
        if not isinstance(points, list):
            raise ParseError(f"row {row}: a time_series value is not a list of points")
        suffix = "" if n == 0 else f"_{n + 1}"
        for point in points:
            if not isinstance(point, dict) or "timestamp" not in point:
                raise ParseError(f"row {row}: a time_series point has no timestamp")
            stamp = point["timestamp"]
            record = merged.get(stamp)
            if record is None:
                record = merged[stamp] = {**base, "timestamp": convert_time("timestamp", stamp)}
            props = point.get("properties") or {}
            if not isinstance(props, dict):
                raise ParseError(f"row {row}: point properties are not an object")
            record[f"value{suffix}"] = point.get("value")
            record[f"event_count{suffix}"] = props.get("event_count")
            record[f"object_count{suffix}"] = props.get("object_count")
    yield from merged.values()
