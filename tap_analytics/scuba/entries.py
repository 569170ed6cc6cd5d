"""`scuba.queries` entries: validation (one clear ConfigError each) and schemas derived
without spending a query."""

from __future__ import annotations

import copy
import re
import typing as t
from dataclasses import dataclass, field

from tap_analytics.common.errors import ConfigError
from tap_analytics.common.names import snake_case
from tap_analytics.scuba import windows

KINDS = ("query_response_id", "bql", "query")
RESULT_FORMATS = ("JSON_POWER_BI", "CSV", "DEFAULT")
AGGREGATORS = (
    "count_star", "unique_count", "sum", "avg", "min", "max",
    "P1", "P5", "P10", "P25", "P50", "P75", "P90", "P95", "P99",
)
QUERY_TYPES = ("single_measurement", "time_series")
NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")

DATETIME = {"type": ["string"], "format": "date-time"}
DATETIME_NULL = {"type": ["string", "null"], "format": "date-time"}
NUMBER_NULL = {"type": ["number", "null"]}
INTEGER_NULL = {"type": ["integer", "null"]}
STRING = {"type": ["string"]}
STRING_NULL = {"type": ["string", "null"]}

WINDOW_FIELDS = {"window_start": DATETIME, "window_end": DATETIME}


@dataclass
class QueryEntry:
    index: int
    name: str
    kind: str  # one of KINDS
    value: t.Any  # the response id, the BQL text or the v1 query object
    result_format: str = "JSON_POWER_BI"
    schema: dict[str, t.Any] = field(default_factory=dict)
    key: list[str] = field(default_factory=list)
    windowed: bool = False
    declared_schema: bool = False
    query_type: str = "single_measurement"  # v1 `query` entries only

    @property
    def setting(self) -> str:
        return f"scuba.queries[{self.index}]"

    @property
    def stream_name(self) -> str:
        return f"scuba_{self.name}"


def _schema(properties: dict[str, t.Any], key: list[str], *, extra: bool) -> dict[str, t.Any]:
    schema: dict[str, t.Any] = {
        "type": "object",
        "properties": properties,
        "required": list(key),
    }
    if extra:
        schema["additionalProperties"] = True
    return schema


def _non_null(prop: dict[str, t.Any]) -> dict[str, t.Any]:
    prop = dict(prop)
    kind = prop.get("type")
    if isinstance(kind, list):
        kept = [k for k in kind if k != "null"]
        prop["type"] = kept or ["string"]
    return prop


def _is_numeric(prop: t.Any) -> bool:
    if not isinstance(prop, dict):
        return False
    kind = prop.get("type")
    kinds = set(kind if isinstance(kind, list) else [kind]) - {"null"}
    return bool(kinds) and kinds <= {"number", "integer"}


def parse_entry(index: int, raw: t.Any, seen: set[str]) -> QueryEntry:
    where = f"scuba.queries[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name", "is required")
    if not NAME_RE.match(name):
        raise ConfigError(f"{where}.name", f"'{name}' may hold only letters, digits and _")
    where = f"scuba.queries[{index}] ({name})"
    if name in seen:
        raise ConfigError(where, f"the name '{name}' is used twice")
    seen.add(name)
    kinds = [k for k in KINDS if raw.get(k) not in (None, "", {})]
    if len(kinds) != 1:
        found = ", ".join(kinds) if kinds else "none"
        raise ConfigError(
            where, f"needs exactly one of query_response_id, bql, query (found: {found})"
        )
    kind = kinds[0]
    result_format = raw.get("result_format") or "JSON_POWER_BI"
    if result_format not in RESULT_FORMATS:
        raise ConfigError(f"{where}.result_format", f"must be one of {list(RESULT_FORMATS)}")
    entry = QueryEntry(index=index, name=name, kind=kind, value=raw[kind],
                       result_format=result_format)
    if kind == "query_response_id":
        if not isinstance(entry.value, str) or not entry.value.strip():
            raise ConfigError(f"{where}.query_response_id", "must be a non-empty string")
    elif kind == "bql":
        if not isinstance(entry.value, str) or not entry.value.strip():
            raise ConfigError(f"{where}.bql", "must be a non-empty string")
        unknown = windows.unknown_placeholders(entry.value)
        if unknown:
            raise ConfigError(
                f"{where}.bql",
                f"unknown placeholder {{{{{unknown[0]}}}}} "
                f"(known: {', '.join('{{' + n + '}}' for n in windows.PLACEHOLDER_NAMES)})",
            )
        entry.windowed = bool(windows.placeholders(entry.value))
    else:
        _check_v1_query(where, entry)
        entry.windowed = True
    _derive_schema(where, entry, raw)
    return entry


def _check_v1_query(where: str, entry: QueryEntry) -> None:
    query = entry.value
    setting = f"{where}.query"
    if not isinstance(query, dict):
        raise ConfigError(setting, "must be an object (the v1 query object)")
    for filled in ("start", "end"):
        if filled in query:
            raise ConfigError(
                f"{setting}.{filled}",
                "is filled by the tap for each window (from start_date / the bookmark): "
                "remove it",
            )
    if not isinstance(query.get("dataset"), str) or not query["dataset"]:
        raise ConfigError(f"{setting}.dataset", "is required (a dataset name)")
    queries = query.get("queries")
    if not isinstance(queries, list) or not queries:
        raise ConfigError(f"{setting}.queries", "must be a non-empty list of query objects")
    types = set()
    for i, sub in enumerate(queries):
        sub_where = f"{setting}.queries[{i}]"
        if not isinstance(sub, dict):
            raise ConfigError(sub_where, "must be an object")
        qtype = sub.get("type", "single_measurement")
        if qtype not in QUERY_TYPES:
            raise ConfigError(f"{sub_where}.type", f"must be one of {list(QUERY_TYPES)}")
        types.add(qtype)
        measure = sub.get("measure")
        if not isinstance(measure, dict):
            raise ConfigError(f"{sub_where}.measure", "is required (an object)")
        if measure.get("aggregator") not in AGGREGATORS:
            raise ConfigError(
                f"{sub_where}.measure.aggregator", f"must be one of {list(AGGREGATORS)}"
            )
        if measure["aggregator"] != "count_star" and not measure.get("column"):
            raise ConfigError(f"{sub_where}.measure.column", "is required for this aggregator")
    if len(types) > 1:
        raise ConfigError(f"{setting}.queries", "mixes single_measurement and time_series")
    entry.query_type = types.pop()
    group_by = query.get("group_by", [])
    if not isinstance(group_by, list) or not all(isinstance(g, str) and g for g in group_by):
        raise ConfigError(f"{setting}.group_by", "must be a list of column names")


def _derive_schema(where: str, entry: QueryEntry, raw: dict[str, t.Any]) -> None:
    declared = raw.get("schema")
    key_override = raw.get("key_properties")
    if key_override is not None and (
        not isinstance(key_override, list) or not all(isinstance(k, str) for k in key_override)
    ):
        raise ConfigError(f"{where}.key_properties", "must be a list of field names")
    if declared:
        props = declared.get("properties", declared) if isinstance(declared, dict) else None
        if not isinstance(props, dict) or not all(isinstance(v, dict) for v in props.values()):
            raise ConfigError(
                f"{where}.schema", "must map field names to JSON Schema objects"
            )
        properties = copy.deepcopy(props)
        if entry.windowed:
            properties.update(WINDOW_FIELDS)
        if key_override is not None:
            key = list(key_override)
        else:  # dimensions and time buckets: every declared non-numeric field
            key = [n for n, p in properties.items() if not _is_numeric(p)]
        entry.declared_schema = True
        extra = bool(isinstance(declared, dict) and declared.get("additionalProperties"))
    elif entry.kind == "query":
        properties, key = _v1_properties(entry)
        if key_override is not None:
            key = list(key_override)
        extra = False
    else:
        properties = {
            "start_time_0": DATETIME_NULL,
            "end_time_0": DATETIME_NULL,
            **(WINDOW_FIELDS if entry.windowed else {}),
        }
        # Without a declared schema the dimensions are unknown: no key unless given.
        key = list(key_override or [])
        extra = True
    for name in key:
        if name not in properties:
            raise ConfigError(
                f"{where}.key_properties", f"'{name}' is not a field of the stream's schema"
            )
        properties[name] = _non_null(properties[name])
    entry.key = key
    entry.schema = _schema(properties, key, extra=extra)


def _v1_properties(entry: QueryEntry) -> tuple[dict[str, t.Any], list[str]]:
    query = entry.value
    dims = [snake_case(g) for g in query.get("group_by", [])]
    properties: dict[str, t.Any] = {d: STRING for d in dims}
    if not dims:
        properties["result"] = STRING_NULL  # the answer's group label ("All") when ungrouped
    count = len(query["queries"])
    suffixes = [""] + [f"_{n}" for n in range(2, count + 1)]
    key = [*dims, "window_start"]
    if entry.query_type == "single_measurement":
        for suffix in suffixes:
            properties[f"measure_value{suffix}"] = NUMBER_NULL
    else:
        properties["timestamp"] = DATETIME
        key.append("timestamp")
        for suffix in suffixes:
            properties[f"value{suffix}"] = NUMBER_NULL
            properties[f"event_count{suffix}"] = INTEGER_NULL
            properties[f"object_count{suffix}"] = INTEGER_NULL
        properties.update({"rate": STRING_NULL, "resolution": INTEGER_NULL,
                           "window": INTEGER_NULL})
    properties.update(WINDOW_FIELDS)
    return properties, key


def parse_entries(block: dict[str, t.Any]) -> list[QueryEntry]:
    queries = block.get("queries")
    if not isinstance(queries, list):
        raise ConfigError("scuba.queries", "must be a list of query entries")
    seen: set[str] = set()
    return [parse_entry(i, raw, seen) for i, raw in enumerate(queries)]
