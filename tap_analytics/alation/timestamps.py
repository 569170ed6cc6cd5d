"""Alation timestamps: the two UTC styles Alation sends, normalised to the tap's format.

`normalize_ts` is `common.timeutil.normalize` with a fast path for Alation's usual styles;
`compile_page_normalizer` compiles, once per stream schema, the normaliser of a whole page
(the date-time fields of the schema, nested ones included); `normalize_timestamps` walks
a record by field name (for payloads without a schema, e.g. a result's execution event).
"""

from __future__ import annotations

import re
import typing as t

from tap_analytics.common.timeutil import normalize

#: A field holding a timestamp: `ts_*` (ts_executed, ts_last_saved ...) or `*_at`
#: (executed_at, finished_at). Normalised wherever it appears, nested objects included.
TIMESTAMP_FIELD = re.compile(r"^ts_|_at$")

# The two styles Alation sends, already in UTC: a fast path before the general parser.
# (ASCII digits only: `\d` would also match other scripts' digits, which normalize()
# converts.) Both are 27 or 32 characters: "YYYY-MM-DD[T ]HH:MM:SS.ffffff(Z|+00:00)".
# Only values that are certainly valid take it (days 01-28, months 01-12, ...): days
# 29-31 and anything odd go to normalize(), which rejects an impossible date.
_FAST_TS = re.compile(
    r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}(?:Z|\+00:00)"
)
_fast_ts_match = _FAST_TS.fullmatch


def normalize_ts(value: str) -> str | None:
    """normalize() with a fast path for Alation's two usual UTC styles."""
    if _fast_ts_match(value) is not None:
        if len(value) == 32 and value[10] == "T":
            return value  # already in the tap's format
        return value[:10] + "T" + value[11:26] + "+00:00"
    return normalize(value)


TsPaths = dict[str, t.Any]


def timestamp_paths(schema: dict) -> TsPaths:
    """Where the date-time fields of a schema are: {field: True | {sub paths}}.

    Arrays and objects are walked the same way (a list node applies to each item).
    """
    paths: TsPaths = {}
    for name, prop in (schema.get("properties") or {}).items():
        if prop.get("format") == "date-time":
            paths[name] = True
            continue
        node = prop.get("items", prop) if "array" in _types(prop) else prop
        if "object" in _types(node):
            sub = timestamp_paths(node)
            if sub:
                paths[name] = sub
    return paths


def _types(prop: dict) -> list[str]:
    type_ = prop.get("type") or []
    return [type_] if isinstance(type_, str) else list(type_)


def _dicts_in(values: list) -> list[dict]:
    """The dicts among `values`, lists walked (lists of objects, lists of lists)."""
    out: list[dict] = []
    for value in values:
        if value.__class__ is dict:
            out.append(value)
        elif isinstance(value, list):
            out.extend(_dicts_in(value))
        elif isinstance(value, dict):
            out.append(value)
    return out


def compile_page_normalizer(paths: TsPaths) -> t.Callable[[list], None]:
    """Normalise, in place, the timestamp fields named by `paths` (see timestamp_paths)
    of every row of a page: `normalize_page(rows)`, compiled once per stream, one field
    at a time over all rows (nested objects, in lists too: over all of them at once);
    other values are left alone. A bad value raises ValueError naming its field, maybe
    after other rows were normalised: a caller finds the bad row by running it again a
    row at a time (`normalize_page([row])`; a normalised value is given back unchanged)."""
    steps = [(key, None if sub is True else compile_page_normalizer(sub))
             for key, sub in paths.items()]
    fast_match = _fast_ts_match

    def normalize_page(rows: list) -> None:
        if not all(row.__class__ is dict for row in rows):
            rows = _dicts_in(rows)
        for key, sub in steps:
            if sub is not None:
                nested = [value for row in rows if (value := row.get(key)) is not None]
                if nested:
                    sub(nested)
                continue
            for row in rows:
                value = row.get(key)
                if value is None:
                    continue
                if value.__class__ is str and fast_match(value) is not None:
                    if len(value) != 32 or value[10] != "T":
                        row[key] = value[:10] + "T" + value[11:26] + "+00:00"
                elif isinstance(value, str):
                    try:
                        row[key] = normalize_ts(value)
                    except ValueError as exc:
                        raise ValueError(f"field '{key}': {exc}") from None

    return normalize_page


def normalize_timestamps(node: t.Any) -> t.Any:
    """Normalise every timestamp field of a record, in place, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and TIMESTAMP_FIELD.search(key):
                try:
                    node[key] = normalize_ts(value)
                except ValueError as exc:
                    raise ValueError(f"field '{key}': {exc}") from None
            elif isinstance(value, (dict, list)):
                normalize_timestamps(value)
    elif isinstance(node, list):
        for item in node:
            normalize_timestamps(item)
    return node
