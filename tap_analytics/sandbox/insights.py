"""IntelePeer Insights stand-in: the query API of the doc + an SFTP server for the files.

Endpoints (under /_rest/v4, `Authorization: Bearer <INSIGHTS_TOKEN>`):
  GET  /dwh/Q                 field list (the doc's events; common fields are not listed)
  POST /dwh/Q                 validate -> 201 {"id"}; the doc's 400 bodies; 429 when a
                              third query would be pending
  GET  /dwh/Q/<id>/status     Pending -> Completed (Failed + messages when no rows)
  GET  /dwh/Q/<id>            "Process has not finish yet..." / "Process finished.
                              Download: [u'reports/...csv.gz', ...]"; 500 list body for
                              an unknown id
Data: one event every `600 / scale` s from DATA_START to DATA_END, none on 2024-01-04
(an empty day), values derived from the event number only (so any windowing of a range
sees the same rows). Report files are written gzip-compressed to a temp dir on first
download (streamed, never held in memory) and served over SFTP.

Fault switches (attributes): `cancel_next` (n queries end Canceled), `truncate`
("once" / "always"), `drop_once` (the SFTP connection drops mid-file once),
`rows_override` (n rows per report, spread over the window: big reports),
`query_seconds` (time until a query completes), `rows_per_file`, `wrong_header` (a
renamed column in the files), `locate_lag` (extra "not finish yet" answers per query),
`export_dir` (write the files for an external SFTP server, e.g. OpenSSH's sshd).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
import typing as t
from dataclasses import dataclass, field

from tap_analytics.sandbox import DATA_END, DATA_START, INSIGHTS_TOKEN, SFTP_PASSWORD
from tap_analytics.sandbox.core import Request, Response, Service, json_response
from tap_analytics.sandbox.sftp import Served, SftpServer

PREFIX = "/_rest/v4"
SFTP_USER = "insights"
FIELDS = {
    "ApplicationExitEvent": {"fields": ["StartTime", "EndTime", "Path", "ExitReason"]},
    "DtmfEvent": {"fields": ["DtmfInput", "DtmfSource", "ErrorReason"]},
}
COMMON = (
    "EventName", "EventVersion", "EventSku", "TimeStamp", "HostId", "CustomerId",
    "CustomerName", "Originator", "OriginatorId", "FlowId", "FlowName", "ActionId",
    "ActionName", "IsTriggerAction", "SessionId", "TransactionId", "ApplicationRegion",
    "PassthroughVersion", "Passthrough",
)
OPERATORS = ("$eq", "$gt", "$gte", "$lt", "$lte", "$ne")
FLOWS = ("5dcf48b453e0ab04386da7d1", "5dcf48b453e0ab04386da7d2", "5dcf48b453e0ab04386da7d3")
EXIT_REASONS = ("Hangup", "Transfer, then hangup", 'Caller said "bye"', "Timeout — no input",
                "")
GAP = (DATA_START + dt.timedelta(days=3), DATA_START + dt.timedelta(days=4))
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")

DEFAULT_REPORTS = [
    {
        "name": "application_exits",
        "data": {"ApplicationExitEvent": {"fields": [
            "TimeStamp", "FlowId", "SessionId", "TransactionId", "IsTriggerAction",
            "StartTime", "EndTime", "ExitReason"]}},
    },
    {
        "name": "flow_dtmf",
        "data": {"DtmfEvent": {"fields": ["FlowId", "DtmfInput", "DtmfSource"]}},
        "filters": {"DtmfEvent": {"FlowId": {"$eq": FLOWS[0]}}},
    },
]


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def value_of(field_name: str, k: int, ts: dt.datetime) -> str:
    """The generated value of `field_name` for event number k at time ts (CSV text)."""
    if field_name == "TimeStamp":
        return _iso(ts)
    if field_name == "StartTime":
        return (ts - dt.timedelta(seconds=30 + k % 90)).strftime("%Y-%m-%d %H:%M:%S")
    if field_name == "EndTime":
        return _iso(ts)
    if field_name == "FlowId":
        return FLOWS[k % 3]
    if field_name == "SessionId":
        return f"s{k // 2:07d}"
    if field_name == "TransactionId":
        return f"t{k:08d}"
    if field_name == "IsTriggerAction":
        return ("0", "1", "false", "true")[k % 4]
    if field_name == "ExitReason":
        return EXIT_REASONS[k % len(EXIT_REASONS)]
    if field_name == "DtmfInput":
        return str(k % 10)
    if field_name == "EventName":
        return "ApplicationExitEvent"
    return f"{field_name}-{k % 7}"


@dataclass
class Query:
    guid: str
    body: dict
    fields: list[str]
    start: dt.datetime
    end: dt.datetime
    created: float
    done_at: float
    outcome: str  # Completed / Failed / Canceled
    messages: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rows: list[tuple[int, int]] = field(default_factory=list)  # (first, count) per file
    local: dict[str, str] = field(default_factory=dict)
    lag: int = 0

    def status(self, now: float) -> str:
        return self.outcome if now >= self.done_at else "Pending"


class InsightsService(Service):
    name = "insights"

    def __init__(self, *, seed: int, scale: float) -> None:
        super().__init__()
        self.seed = seed
        self.scale = scale
        self.interval = dt.timedelta(seconds=600 / max(scale, 0.001))
        self.queries: dict[str, Query] = {}
        self.query_seconds = 0.3
        self.rows_per_file = 100
        self.rows_override: int | None = None
        self.cancel_next = 0
        self.truncate: str | None = None  # "once" | "always"
        self.drop_once = False
        self.wrong_header = False  # the files' header names one column differently
        self.locate_lag = 0  # "not finish yet" answers from GET /dwh/Q/<id> after completion
        #: Tests: (file index within its query, the file's CSV bytes) -> the bytes served
        #: (odd quoting, bad values, broken rows in a file the server otherwise makes).
        self.rewrite_csv: t.Callable[[int, bytes], bytes] | None = None
        #: None: files served by the built-in paramiko SFTP server. A directory: the files
        #: are written there (under their download paths) when a query is located, for an
        #: external SFTP server whose login directory it is (OpenSSH's sshd in the tests).
        self.export_dir: str | None = None
        self.max_pending = 0
        self.rejected_429 = 0
        self.drops = 0
        self.truncations = 0
        self._counter = 0
        self._dir: str | None = None
        self._file_lock = threading.Lock()
        self._written: dict[tuple, list[str]] = {}  # report -> its local files, in order
        self.sftp: SftpServer | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start_extra(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="insights-sandbox-")
        self.sftp = SftpServer(self._provide, username=SFTP_USER,
                               password=SFTP_PASSWORD).start()

    def stop_extra(self) -> None:
        if self.sftp is not None:
            self.sftp.stop()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def config_block(self) -> dict:
        assert self.sftp is not None
        return {
            "base_url": self.url + PREFIX,
            "api_token": INSIGHTS_TOKEN,
            "poll_interval_seconds": 0.2,
            "window_hours": 24,
            "max_tries": 3,
            "reports": json.loads(json.dumps(DEFAULT_REPORTS)),
            "sftp": {
                "host": "127.0.0.1",
                "port": self.sftp.port,
                "username": SFTP_USER,
                "password": SFTP_PASSWORD,
                "host_key": self.sftp.host_key_line,
            },
        }

    @property
    def client_key_text(self) -> str:
        assert self.sftp is not None
        return self.sftp.client_key_text

    # -- data -------------------------------------------------------------------------

    def events(self, start: dt.datetime, end: dt.datetime) -> t.Iterator[tuple[int, dt.datetime]]:
        """(event number, time) of every generated event in [start, end)."""
        lo = max(start, DATA_START)
        hi = min(end, DATA_END)
        if lo >= hi:
            return
        step = self.interval.total_seconds()
        k = max(0, int(-(-(lo - DATA_START).total_seconds() // step)))
        while True:
            ts = DATA_START + dt.timedelta(seconds=k * step)
            if ts >= hi:
                return
            if not GAP[0] <= ts < GAP[1] and ts >= lo:
                yield k, ts
            k += 1

    def rows(self, fields: list[str], start: dt.datetime, end: dt.datetime,
             filters: dict | None = None) -> t.Iterator[list[str]]:
        """The report rows of a window (CSV text values, in `fields` order)."""
        if self.rows_override is not None:
            n = self.rows_override
            span = (end - start) / max(n, 1)
            source: t.Iterable[tuple[int, dt.datetime]] = (
                (i, start + span * i) for i in range(n))
        else:
            source = self.events(start, end)
        conditions = [(f, op, v) for by_field in (filters or {}).values()
                      for f, cond in by_field.items() for op, v in cond.items()]
        for k, ts in source:
            row = [value_of(f, k, ts) for f in fields]
            if conditions and not all(
                _matches(value_of(f, k, ts), op, v) for f, op, v in conditions
            ):
                continue
            yield row

    # -- HTTP -------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth:
            return json_response({"code": 401, "message": "Authorization required"}, 401)
        if auth != f"Bearer {INSIGHTS_TOKEN}":
            return json_response({"code": 403, "message": "Invalid token"}, 403)
        path = request.path
        if not path.startswith(PREFIX + "/dwh/Q"):
            return json_response({"code": 404, "message": "Not found"}, 404)
        rest = path[len(PREFIX + "/dwh/Q"):].strip("/")
        if not rest:
            if request.method == "GET":
                return json_response(FIELDS)
            if request.method == "POST":
                return self._submit(request)
            return json_response({"code": 405, "message": "Method not allowed"}, 405)
        parts = rest.split("/")
        query = self.queries.get(parts[0])
        if query is None:
            return json_response([{"message": "could not get QueryRequest object: "
                                   "QueryRequest matching query does not exist.",
                                   "code": 500}], 500)
        now = time.monotonic()
        status = query.status(now)
        if parts[1:] == ["status"]:
            body: dict[str, t.Any] = {"status": status, "guid": query.guid}
            if status == "Failed":
                body["messages"] = query.messages
            return json_response(body)
        if len(parts) == 1:
            with self.lock:
                lagging = status != "Pending" and query.lag > 0
                if lagging:
                    query.lag -= 1
            if status == "Pending" or lagging:
                text = "Process has not finish yet, please verify the status of your request"
            elif status == "Completed":
                if self.export_dir:  # the files are on the (external) SFTP server now
                    for name in query.files:
                        self._materialize(query, name)
                text = "Process finished. Download: [" + ", ".join(
                    f"u'{p}'" for p in query.files) + "]"
            else:
                text = f"Process {status.lower()}"
            return json_response({"status": text, "guid": query.guid})
        return json_response({"code": 404, "message": "Not found"}, 404)

    def _error(self, message: t.Any) -> Response:
        return json_response({"code": 400, "message": message}, 400)

    def _submit(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return self._error("Invalid JSON body")
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            return self._error("data is required")
        ts = body.get("timestamp") or {}
        start_text = ts.get("$gte") or ts.get("$gt")
        end_text = ts.get("$lt") or ts.get("$lte")
        bad_dates = [d for d in (start_text, end_text) if not isinstance(d, str)
                     or not _DATE_RE.match(d)]
        if bad_dates:
            return self._error({"Date_Filters": {
                "message": f"Invalid date filters [{', '.join(map(str, bad_dates))}]. They "
                "must be in ISO8601 format. Example: 'YYYY-MM-DDTHH:MM:SSZ'",
                "code": "422-6"}})
        fields: list[str] = []
        for event, spec in body["data"].items():
            if event not in FIELDS:
                return self._error(f"{event} is not a valid schema name.")
            for f in (spec or {}).get("fields") or []:
                if f not in FIELDS[event]["fields"] and f not in COMMON:
                    return self._error(f"{f} is not a valid field.")
                if f not in fields:
                    fields.append(f)
        for block in (body.get("filters"), (body.get("scope") or {}).get("filters")):
            for event, by_field in (block or {}).items():
                if event not in FIELDS:
                    return self._error(f"{event} is not a valid schema name.")
                for f, cond in by_field.items():
                    if f not in FIELDS[event]["fields"] and f not in COMMON:
                        return self._error(f"{f} is not a valid field.")
                    bad = [op for op in cond if op not in OPERATORS]
                    if bad:
                        return self._error({"Operators": f"Invalid operators [{', '.join(bad)}]"
                                            ", try to use any of these ($gte, $lte, $gt, $lt,"
                                            " $ne, $eq)."})
        start, end = _parse(start_text), _parse(end_text)
        if "$lte" in ts:
            end += dt.timedelta(microseconds=1)
        now = time.monotonic()
        with self.lock:
            pending = sum(1 for q in self.queries.values() if q.status(now) == "Pending")
            if pending >= 2:
                self.rejected_429 += 1
                return json_response({"code": 429, "message": "max concurrent queries per "
                                      "user (2) reached"}, 429)
            self._counter += 1
            guid = hashlib.md5(f"{self.seed}-{self._counter}".encode()).hexdigest()
            if self.rows_override is not None and not body.get("filters"):
                count = self.rows_override
            else:
                count = sum(1 for _ in self.rows(fields, start, end, body.get("filters")))
            outcome, messages = "Completed", []
            if self.cancel_next > 0:
                self.cancel_next -= 1
                outcome = "Canceled"
            elif count == 0:
                outcome = "Failed"
                messages = ["Query range to wide",
                            "All data fields have empty values, advise adding core fields"]
            query = Query(guid, body, fields, start, end, now,
                          now + self.query_seconds, outcome, messages, lag=self.locate_lag)
            if outcome == "Completed":
                per = max(1, self.rows_per_file)
                stamp = int(time.time() * 1000)
                for n, first in enumerate(range(0, count, per)):
                    query.files.append(f"reports/{guid}/{guid[:16]}_QueryExport_{stamp}__"
                                       f"{n:012d}.csv.gz")
                    query.rows.append((first, min(per, count - first)))
            self.queries[guid] = query
            self.max_pending = max(self.max_pending, pending + 1)
        return json_response({"id": guid}, 201)

    # -- files (SFTP) -----------------------------------------------------------------

    def _provide(self, path: str) -> Served | None:
        for query in list(self.queries.values()):
            if path in query.files:
                local = self._materialize(query, path)
                size = os.path.getsize(local)
                served = Served(local, size)
                with self.lock:
                    if self.truncate in ("once", "always"):
                        if self.truncate == "once":
                            self.truncate = None
                        self.truncations += 1
                        served.size = size * 6 // 10
                    elif self.drop_once:
                        self.drop_once = False
                        self.drops += 1
                        served.drop_at = max(1, size // 2)
                return served
        return None

    def _materialize(self, query: Query, path: str) -> str:
        """Write all files of a query in one streamed pass (gzip level 1), once."""
        assert self._dir is not None
        with self._file_lock:
            # Files are immutable and their content depends on the query only: a query
            # asking for the same report again gets the same files (no rewrite of a big
            # report for each benchmark run).
            same = (tuple(query.fields), query.start, query.end,
                    json.dumps(query.body.get("filters"), sort_keys=True),
                    tuple(query.rows), self.rows_override, self.wrong_header,
                    self.rewrite_csv)
            if not query.local and same in self._written:
                query.local = dict(zip(query.files, self._written[same]))
                if self.export_dir:  # the external server serves them under their names
                    for name, written in list(query.local.items()):
                        local = os.path.join(self.export_dir, name)
                        os.makedirs(os.path.dirname(local), exist_ok=True)
                        os.link(written, local)
                        query.local[name] = local
            if not query.local:
                rows = self.rows(query.fields, query.start, query.end,
                                 query.body.get("filters"))
                for index, (name, (_first, count)) in enumerate(zip(query.files,
                                                                    query.rows)):
                    if self.export_dir:
                        local = os.path.join(self.export_dir, name)
                        os.makedirs(os.path.dirname(local), exist_ok=True)
                    else:
                        local = os.path.join(self._dir, name.replace("/", "_"))
                    with open(local, "wb") as raw, gzip.GzipFile(
                        fileobj=raw, mode="wb", compresslevel=1, mtime=0
                    ) as gz:
                        out: t.Any = io.BytesIO() if self.rewrite_csv else gz
                        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
                        writer = csv.writer(text)
                        header = list(query.fields)
                        if self.wrong_header:
                            header[-1] = header[-1] + "Renamed"
                        writer.writerow(header)
                        for _ in range(count):
                            writer.writerow(next(rows))
                        text.flush()
                        text.detach()
                        if self.rewrite_csv:
                            gz.write(self.rewrite_csv(index, out.getvalue()))
                    query.local[name] = local
                self._written[same] = [query.local[name] for name in query.files]
            return query.local[path]


def _matches(value: str, op: str, target: t.Any) -> bool:
    target = str(target).lower() if isinstance(target, bool) else str(target)
    if op == "$eq":
        return value == target
    if op == "$ne":
        return value != target
    if op == "$gt":
        return value > target
    if op == "$gte":
        return value >= target
    if op == "$lt":
        return value < target
    if op == "$lte":
        return value <= target
    return False
