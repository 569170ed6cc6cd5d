"""The URL parameters of the Alation stand-in (../shared/api-docs/alation-queries-api.txt):
the documented filter parameters of each list endpoint with their types, the filter
operators (`name__op=value`: exact/iexact/contains/..., gt/gte/lt/lte, date parts,
isnull) compiled into predicates, the order_by choices, and limit/skip parsing. A bad
value is a `BadRequest` carrying the doc's 400 message.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import typing as t

from tap_analytics.common.timeutil import parse_datetime

if t.TYPE_CHECKING:
    from tap_analytics.sandbox.core import Request

STRING_OPS = {"exact", "iexact", "contains", "icontains", "startswith", "istartswith",
              "endswith", "iendswith", "regex", "iregex"}
COMPARE_OPS = {"gt", "gte", "lt", "lte"}
DATE_PARTS = {"year", "month", "day", "hour", "minute"}

@functools.lru_cache(maxsize=1 << 18)
def instant(text: str) -> dt.datetime:
    return parse_datetime(text)


class BadRequest(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def invalid(values: list[str], param: str) -> BadRequest:
    return BadRequest(f"Invalid value(s) {values!r} for URL parameter '{param}'")


def _sub(*path: str) -> t.Callable[[dict], t.Any]:
    def get(rec: dict) -> t.Any:
        node: t.Any = rec
        for part in path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node
    return get


def _schedule(field: str, *sub: str) -> t.Callable[[dict], t.Any]:
    def get(rec: dict) -> t.Any:
        schedules = rec.get("schedules") or []
        return _sub(field, *sub)(schedules[0]) if schedules else None
    return get


def _field(name: str) -> t.Callable[[dict], t.Any]:
    return lambda rec: rec.get(name)


# URL parameters per list endpoint: name -> (type, getter). Types: int str bool dt enum.
PARAMS: dict[str, dict[str, tuple[str, t.Callable[[dict], t.Any]]]] = {
    "query": {
        **{n: ("int", _field(n)) for n in ("id", "datasource_id")},
        **{n: ("str", _field(n)) for n in ("title", "description", "autosave_content",
                                           "content")},
        # has_unsaved_changes: not in the parameter table, but in the doc's examples.
        **{n: ("bool", _field(n)) for n in ("saved", "published", "has_unsaved_changes")},
        "ts_last_saved": ("dt", _field("ts_last_saved")),
        "datasource_title": ("str", _sub("datasource", "title")),
        "datasource_uri": ("str", _sub("datasource", "uri")),
        "schedule_enabled": ("bool", _schedule("enabled")),
        "schedule_cron_expression": ("str", _schedule("cron_expression")),
        "schedule_ts_last_attempt": ("dt", _schedule("ts_last_attempt")),
        "schedule_celery_task_name": ("str", _schedule("celery_task_name")),
        "schedule_username": ("str", _schedule("user", "username")),
        "schedule_user_is_active": ("bool", _schedule("user", "is_active")),
        "schedule_db_uri": ("str", _schedule("db_connection", "uri")),
        "schedule_db_ts_last_used": ("dt", _schedule("db_connection", "ts_last_used")),
    },
    "execution_session": {
        "id": ("int", _field("id")),
        "client_session_id": ("str", _field("client_session_id")),
        "query_id": ("int", _field("query_id")),
        "ts_start": ("dt", _field("ts_start")),
        "sandbox_id": ("str", _field("sandbox_id")),
        "is_scheduled": ("bool", _field("is_scheduled")),
        "batch_id": ("int", _field("batch_ids")),
    },
    "execution_batch": {
        **{n: ("int", _field(n)) for n in ("id", "query_id", "session_id")},
        "event_id": ("int", lambda r: [e["id"] for e in r.get("events") or []]),
    },
    "execution_event": {
        **{n: ("int", _field(n)) for n in ("id", "query_id", "session_id", "batch_id",
                                           "index_in_batch", "num_result_rows")},
        "execution_error": ("str", _field("execution_error")),
        "canceled": ("bool", _field("canceled")),
        "ts_executed": ("dt", _field("ts_executed")),
        "elapsed_seconds": ("float", _field("elapsed_seconds")),
        "db_username": ("str", _field("db_username")),
        "session_is_scheduled": ("bool", _field("session_is_scheduled")),  # see _select
        "datasource_id": ("int", _sub("datasource", "id")),
        "datasource_title": ("str", _sub("datasource", "title")),
        "result_id": ("int", _sub("result", "id")),
        "result_title": ("str", _sub("result", "title")),
        "result_ts_created": ("dt", _sub("result", "ts_created")),
        "result_row_count": ("int", _sub("result", "row_count")),
        "result_byte_count": ("int", _sub("result", "byte_count")),
        "result_ts_expiration": ("dt", _sub("result", "ts_expiration")),
        "result_truncated": ("bool", _sub("result", "truncated")),
        "result_expired": ("bool", _sub("result", "expired")),
        "result_deleted": ("bool", _sub("result", "deleted")),
        "result_storage_status": (
            "enum:IN_PROGRESS,STORED_PART,STORED_ALL,STORED_PREVIEW",
            _sub("result", "storage_status"),
        ),
    },
    "scheduled_run": {
        "session_id": ("int", _field("session_id")),
        "query_id": ("int", _field("query_id")),
        "query_title": ("str", _field("query_title")),
        "task_id": ("str", _field("task_id")),
        **{n: ("dt", _field(n)) for n in ("ts_sent_to_broker", "ts_prerun", "ts_postrun")},
    },
}

# order_by choices per endpoint (the doc's lists) -> the field sorted on; None: no order_by.
ORDERINGS: dict[str, dict[str, str] | None] = {
    "query": {"id": "id", "title": "title", "description": "description",
              "last_saved_at": "ts_last_saved", "autosave_content": "autosave_content",
              "content": "content", "saved": "saved", "published": "published"},
    "scheduled_run": {"ts_sent_to_broker": "ts_sent_to_broker", "ts_prerun": "ts_prerun",
                      "ts_postrun": "ts_postrun"},
    "execution_session": None,
    "execution_batch": None,
    "execution_event": None,
}
DEFAULT_ORDER = {"scheduled_run": "ts_sent_to_broker"}  # the others: by id

_TRUE = {"true": True, "1": True, "false": False, "0": False}


def _parse(kind: str, raw: str, param: str) -> t.Any:
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return _TRUE[raw.strip().lower()]
        if kind == "dt":
            return parse_datetime(raw)
        if kind.startswith("enum:"):
            if raw not in kind[5:].split(","):
                raise ValueError(raw)
            return raw
        return raw
    except (ValueError, KeyError):
        raise invalid([raw], param) from None


def _as_instant(value: t.Any) -> t.Any:
    return instant(value) if isinstance(value, str) else value


def compile_filter(
    kind: str, op: str, raw: str, param: str
) -> t.Callable[[t.Any], bool]:
    """A predicate on one record value for `param` (= name__op) and its raw argument."""
    if op == "isnull":
        want = _parse("bool", raw, param)
        return lambda v: (v is None) == want
    if op in STRING_OPS:
        if kind not in ("str",) and not kind.startswith("enum") and op != "exact":
            raise invalid([raw], param)
        if op in ("regex", "iregex"):
            try:
                rx = re.compile(raw, re.IGNORECASE if op == "iregex" else 0)
            except re.error:
                raise invalid([raw], param) from None
            return lambda v: isinstance(v, str) and rx.search(v) is not None
        if op == "exact":
            target = _parse(kind, raw, param)
            return (lambda v: _as_instant(v) == target) if kind == "dt" else (
                lambda v: v == target)
        low = raw.lower()
        tests: dict[str, t.Callable[[str], bool]] = {
            "iexact": lambda v: v.lower() == low,
            "contains": lambda v: raw in v,
            "icontains": lambda v: low in v.lower(),
            "startswith": lambda v: v.startswith(raw),
            "istartswith": lambda v: v.lower().startswith(low),
            "endswith": lambda v: v.endswith(raw),
            "iendswith": lambda v: v.lower().endswith(low),
        }
        test = tests[op]
        return lambda v: isinstance(v, str) and test(v)
    if op in COMPARE_OPS:
        if kind == "bool":
            raise invalid([raw], param)
        target = _parse(kind, raw, param)
        cmp = {"gt": lambda a: a > target, "gte": lambda a: a >= target,
               "lt": lambda a: a < target, "lte": lambda a: a <= target}[op]
        if kind == "dt":
            return lambda v: v is not None and cmp(_as_instant(v))
        return lambda v: v is not None and cmp(v)
    if op in DATE_PARTS:
        if kind != "dt":
            raise invalid([raw], param)
        part = _parse("int", raw, param)
        return lambda v: v is not None and getattr(_as_instant(v), op) == part
    if op == "":
        target = _parse(kind, raw, param)
        if kind == "dt":
            return lambda v: v is not None and _as_instant(v) == target
        return lambda v: v == target
    raise invalid([raw], param)


def matches(value: t.Any, predicate: t.Callable[[t.Any], bool]) -> bool:
    if isinstance(value, list):
        return any(predicate(v) for v in value)
    return predicate(value)


def int_or_none(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def paging_param(request: Request, name: str) -> int | None:
    raw = request.param(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise invalid([raw], name)
    return int(raw)
