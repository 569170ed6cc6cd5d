"""Report definitions: checked before anything is submitted (one ConfigError naming it).

`check_shape` runs at start-up (no API call); `check_fields` runs once per sync against
the field list of GET /dwh/Q. The columns of a report are the union of its events'
fields, in order, with `TimeStamp` always requested (it is the window field and the
stream's replication key `timestamp`).
"""

from __future__ import annotations

import re
import typing as t

from tap_analytics.common.errors import ConfigError, TapAnalyticsError
from tap_analytics.common.names import snake_case

OPERATORS = ("$eq", "$gt", "$gte", "$lt", "$lte", "$ne")
TIME_FIELDS = ("TimeStamp", "StartTime", "EndTime")
WINDOW_FIELD = "TimeStamp"
#: The doc's common fields: valid in every event, though GET /dwh/Q lists only the
#: event-specific ones (Request 2 of the doc asks for all of these).
COMMON_FIELDS = (
    "EventName", "EventVersion", "EventSku", "TimeStamp", "HostId", "CustomerId",
    "CustomerName", "Originator", "OriginatorId", "FlowId", "FlowName", "ActionId",
    "ActionName", "IsTriggerAction", "SessionId", "TransactionId", "ApplicationRegion",
    "PassthroughVersion", "Passthrough",
)
#: Keys GET /dwh/Q may use for the common fields themselves.
COMMON_KEYS = ("Common", "CommonFields", "Common Fields")
_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_ISO8601 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$"
)


def column_name(field: str) -> str:
    """Record property of a report column: snake_case, with TimeStamp -> `timestamp`
    (not `time_stamp`): it is the window field and the replication key."""
    if field == WINDOW_FIELD:
        return "timestamp"
    return snake_case(field)


def report_label(index: int, report: t.Mapping[str, t.Any]) -> str:
    name = report.get("name")
    return f"insights.reports[{index}]" + (f" ({name})" if isinstance(name, str) else "")


def report_columns(report: t.Mapping[str, t.Any]) -> list[str]:
    """The CSV columns the report asks for: its fields in order, TimeStamp first if absent."""
    columns: list[str] = []
    for spec in (report.get("data") or {}).values():
        for name in (spec or {}).get("fields") or []:
            if name not in columns:
                columns.append(name)
    if WINDOW_FIELD not in columns:
        columns.insert(0, WINDOW_FIELD)
    return columns


def request_data(report: t.Mapping[str, t.Any]) -> dict:
    """The `data` block as submitted: each event also asks for TimeStamp."""
    data = {}
    for event, spec in (report.get("data") or {}).items():
        fields = list((spec or {}).get("fields") or [])
        if WINDOW_FIELD not in fields:
            fields.insert(0, WINDOW_FIELD)
        data[event] = {**spec, "fields": fields}
    return data


def check_shape(index: int, report: t.Any) -> None:
    """Structure, names, operators and dates: no API call."""
    where = f"insights.reports[{index}]"
    if not isinstance(report, dict):
        raise ConfigError(where, "must be an object with name and data")
    label = report_label(index, report)
    name = report.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{where}.name", "must be lower-case letters, digits and _ "
                          "(the stream is insights_<name>)")
    data = report.get("data")
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{label}.data", 'must be {"<EventName>": {"fields": [...]}}')
    for event, spec in data.items():
        fields = spec.get("fields") if isinstance(spec, dict) else None
        if not isinstance(fields, list) or not fields or not all(
            isinstance(f, str) and f for f in fields
        ):
            raise ConfigError(f"{label}.data.{event}.fields", "must be a non-empty list of "
                              "field names")
    seen: dict[str, str] = {}
    for field in report_columns(report):
        column = column_name(field)
        if column in seen and seen[column] != field:
            raise ConfigError(f"{label}.data", f"fields '{seen[column]}' and '{field}' would "
                              f"both become column '{column}'")
        seen[column] = field
    if report.get("filters") is not None:
        _check_filters(f"{label}.filters", report["filters"])
    scope = report.get("scope")
    if scope is not None:
        if not isinstance(scope, dict) or "filters" not in scope or "scope" not in scope:
            raise ConfigError(f"{label}.scope", "must have both 'filters' and 'scope' "
                              "(see the API doc)")
        _check_filters(f"{label}.scope.filters", scope["filters"])


def _check_filters(where: str, filters: t.Any) -> None:
    if not isinstance(filters, dict):
        raise ConfigError(where, 'must be {"<EventName>": {"<Field>": {"$eq": ...}}}')
    for event, by_field in filters.items():
        if not isinstance(by_field, dict):
            raise ConfigError(f"{where}.{event}", 'must be {"<Field>": {"$eq": ...}}')
        for field, condition in by_field.items():
            here = f"{where}.{event}.{field}"
            if not isinstance(condition, dict) or not condition:
                raise ConfigError(here, 'must be an object of operators, e.g. {"$eq": "x"}')
            for op, value in condition.items():
                if op not in OPERATORS:
                    raise ConfigError(here, f"operator '{op}' is not one of "
                                      f"{', '.join(OPERATORS)}")
                for item in value if isinstance(value, list) else [value]:
                    if not isinstance(item, (str, int, float, bool)) or item is None:
                        raise ConfigError(here, "values must be strings, numbers or booleans")
                    if isinstance(item, str) and (
                        field in TIME_FIELDS or _DATE_LIKE.match(item)
                    ) and not _ISO8601.match(item):
                        raise ConfigError(here, f"date '{item}' is not ISO 8601; use "
                                          "'YYYY-MM-DDTHH:MM:SSZ'")


def filter_fields(filters: t.Any) -> t.Iterator[tuple[str, str]]:
    for event, by_field in (filters or {}).items():
        for field in by_field or {}:
            yield event, field


def check_fields(index: int, report: t.Mapping[str, t.Any],
                 available: t.Mapping[str, list[str]]) -> None:
    """Event and field names against GET /dwh/Q (case-sensitive, as the API is)."""
    label = report_label(index, report)
    common = set(COMMON_FIELDS)
    for key in COMMON_KEYS:
        common.update(available.get(key) or [])
    events = [e for e in available if e not in COMMON_KEYS]

    def check(where: str, event: str, field: str | None) -> None:
        if event not in available or event in COMMON_KEYS:
            hint = _closest(event, events)
            raise ConfigError(where, f"event '{event}' is not in the API's field list"
                              + (f" (did you mean '{hint}'?)" if hint else ""))
        if field is not None and field not in common and field not in available[event]:
            known = [*available[event], *sorted(common)]
            hint = _closest(field, known)
            raise ConfigError(where, f"field '{field}' is not a field of {event}"
                              + (f" (did you mean '{hint}'?)" if hint else ""))

    for event, spec in (report.get("data") or {}).items():
        check(f"{label}.data", event, None)
        for field in spec.get("fields") or []:
            check(f"{label}.data.{event}", event, field)
    for event, field in filter_fields(report.get("filters")):
        check(f"{label}.filters", event, field)
    for event, field in filter_fields((report.get("scope") or {}).get("filters")):
        check(f"{label}.scope.filters", event, field)


def check_header(stream: str, path: str, header: t.Sequence[str],
                 columns: t.Sequence[str]) -> None:
    """A report file's CSV header must be exactly the requested fields (any order)."""
    if set(header) != set(columns) or len(header) != len(columns):
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        raise TapAnalyticsError(
            stream,
            f"report file {path} has a different header than the requested fields "
            f"(missing: {', '.join(missing) or '-'}; unexpected: {', '.join(extra) or '-'})",
        )


def _closest(name: str, options: t.Iterable[str]) -> str | None:
    def squash(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    for option in options:
        if squash(option) == squash(name):
            return option
    return None
