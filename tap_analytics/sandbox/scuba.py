"""Scuba / Interana stand-in: `POST /v1/query` (query_response_id or BQL) and the legacy
`GET /api/v1/query?query=<url-encoded JSON>`, faithful to ../shared/api-docs.

Every value is a pure function of (seed, scale, query, window): re-running a window gives
the same rows, and a count over a window is the sum of its hours' counts.

Limits, as the docs give them: 1 query per second per token (a second query within 1 s is
answered 429) and `daily_limit` queries per day per token (429 "Request limit exceeded",
"The request limit of N queries has been reached. This token can be used for requests on
<date> 00:00:00"). Tests may set:

* `daily_limit` (default 1000), `per_second` (default True);
* `timeout_once`: query keys (a query_response_id or a dataset name) whose first run answers
  504 "Request timed out"; the same request again is answered "from cache";
* `fail_next_500`: the next N queries answer 500 {"error": "Server error"}.

`arrivals[token]` lists the arrival time (time.time()) of every query of each token.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import itertools
import json
import math
import re
import threading
import typing as t

from tap_analytics.sandbox import DATA_END, DATA_START, SCUBA_TOKEN
from tap_analytics.sandbox.core import Request, Response, Service, json_response

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

DATASETS: dict[str, dict[str, list[t.Any]]] = {
    "Music": {
        "artist": ["3 Doors Down", "Justin Bieber", "OneRepublic", "Taylor Swift",
                   "The White Stripes", "Gorillaz", "Beethoven"],
        "country": ["US", "DE", "FR", "JP"],
        "userId": [f"u{n:03d}" for n in range(12)],
        "song": ["Kryptonite", "Sorry", "Apologize", "Shake It Off", "Seven Nation Army"],
    },
    "my_data": {
        "browser_type": ["Chrome", "Firefox", "Safari", "Edge"],
        "action.event": ["appDownloadLink", "click", "view"],
        "impression": [f"i{n}" for n in range(8)],
    },
}
AGGREGATORS = {
    "count_star", "unique_count", "sum", "avg", "min", "max",
    "P1", "P5", "P10", "P25", "P50", "P75", "P90", "P95", "P99",
}
BQL_AGGREGATORS = {"count": "count_star", "count_unique": "unique_count",
                   "unique_count": "unique_count", "sum": "sum", "avg": "avg",
                   "min": "min", "max": "max"}
RESULT_FORMATS = ("JSON_POWER_BI", "CSV", "DEFAULT")

_MS = lambda d: int(d.timestamp() * 1000)  # noqa: E731

#: Saved queries (as if run in the UI): response id -> definition.
SAVED: dict[str, dict[str, t.Any]] = {
    "r9372": {"dataset": "Music", "group_by": ["artist"],
              "measures": [("count_star", None)], "bucket_ms": DAY_MS,
              "start": _MS(DATA_START), "end": _MS(DATA_END)},
    "r9373": {"dataset": "Music", "group_by": ["country"],
              "measures": [("count_star", None), ("unique_count", "userId")],
              "bucket_ms": 7 * DAY_MS, "start": _MS(DATA_START), "end": _MS(DATA_END)},
}


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def _err(status: int, error: str, message: str) -> Response:
    return json_response({"error": error, "message": message}, status, faultable=False)


class ScubaService(Service):
    name = "scuba"

    def __init__(self, *, seed: int, scale: float) -> None:
        super().__init__()
        self.seed = seed
        self.scale = scale
        self.token = SCUBA_TOKEN
        self.daily_limit = 1000
        self.per_second = True
        self.timeout_once: set[str] = set()
        self.fail_next_500 = 0
        #: (start_ms, end_ms) ranges without any event: groups without events are left out
        #: of answers, as the real service does, so a window there answers no rows.
        self.quiet_ranges: list[tuple[int, int]] = []
        self.arrivals: dict[str, list[float]] = {}
        self.daily_counts: dict[str, int] = {}
        self.cache_hits = 0
        self._timed_out: set[str] = set()
        self._state_lock = threading.Lock()

    # -- the tap config -----------------------------------------------------------------

    def config_block(self) -> dict[str, t.Any]:
        return {
            "base_url": self.url,
            "api_token": SCUBA_TOKEN,
            "window_days": 2,
            "queries": [
                {
                    "name": "top_artists",
                    "query_response_id": "r9372",
                    "schema": {
                        "artist": {"type": "string"},
                        "measure_1": {"type": ["integer", "null"]},
                        "start_time_0": {"type": "string", "format": "date-time"},
                        "end_time_0": {"type": "string", "format": "date-time"},
                    },
                },
                {
                    "name": "artist_events",
                    "bql": "select count(*) from Music where time >= {{start_ms}} "
                           "and time < {{end_ms}} group by artist",
                    "result_format": "CSV",
                    "schema": {
                        "artist": {"type": "string"},
                        "measure_1": {"type": ["integer", "null"]},
                        "start_time_0": {"type": "string", "format": "date-time"},
                        "end_time_0": {"type": "string", "format": "date-time"},
                    },
                },
                {"name": "event_counts",
                 "bql": "select count(*), count_unique(userId) from Music",
                 "result_format": "DEFAULT",
                 "schema": {
                     "measure_1": {"type": ["integer", "null"]},
                     "measure_2": {"type": ["integer", "null"]},
                     "start_time_0": {"type": "string", "format": "date-time"},
                     "end_time_0": {"type": "string", "format": "date-time"},
                 }},
                {
                    "name": "artist_series",
                    "query": {"dataset": "Music",
                              "queries": [{"type": "time_series",
                                           "measure": {"aggregator": "count_star"}}],
                              "group_by": ["artist"], "max_groups": 5},
                },
                {
                    "name": "artist_users",
                    "query": {"dataset": "Music",
                              "queries": [{"type": "single_measurement",
                                           "measure": {"aggregator": "unique_count",
                                                       "column": "userId"},
                                           "filter": "(`artist` != \"*null*\")"}],
                              "group_by": ["artist"], "max_groups": 5},
                },
            ],
        }

    # -- deterministic data -------------------------------------------------------------

    def _hash(self, *parts: t.Any) -> int:
        text = json.dumps([self.seed, *parts], sort_keys=True, default=str)
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")

    def hourly_count(self, dataset: str, filt: str, group: tuple, hour: int) -> int:
        """Events of one group in one hour (the atom every measure is built from)."""
        at = hour * HOUR_MS
        if any(lo <= at < hi for lo, hi in self.quiet_ranges):
            return 0
        return int((self._hash("h", dataset, filt, group, hour) % 40) * self.scale)

    def measure(self, dataset: str, filt: str, aggregator: str, column: str | None,
                group: tuple, start: int, end: int) -> int | float:
        """The value of one measure for one group over [start, end) (epoch ms)."""
        first = -(-start // HOUR_MS)
        last = -(-end // HOUR_MS)
        count = sum(self.hourly_count(dataset, filt, group, h) for h in range(first, last))
        if aggregator == "count_star":
            return count
        if aggregator == "unique_count":
            return math.ceil(count * 0.37)
        if aggregator == "sum":
            return count * 3
        base = self._hash("m", dataset, filt, aggregator, column, group, start, end) % 100_000
        return round(base / 1000.0, 3)

    def groups(self, dataset: str, group_by: list[str]) -> list[tuple]:
        columns = DATASETS[dataset]
        for col in group_by:
            if col not in columns:
                raise BadRequest(f"Unknown column '{col}' in dataset '{dataset}'")
        if not group_by:
            return [("All",)]
        return list(itertools.product(*(columns[c] for c in group_by)))

    # -- HTTP -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path not in ("/v1/query", "/api/v1/query"):
            return _err(404, "Not found", f"No such endpoint: {request.path}")
        expected = "POST" if request.path == "/v1/query" else "GET"
        if request.method != expected:
            return _err(405, "Method not allowed", f"Use {expected} for {request.path}")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Token ") or auth[len("Token "):] != self.token:
            return _err(401, "Invalid token", "The authentication token is invalid or missing")
        token = auth[len("Token "):]
        with self._state_lock:
            times = self.arrivals.setdefault(token, [])
            previous = times[-1] if times else None
            times.append(request.time)
            if self.per_second and previous is not None and request.time - previous < 1.0:
                return _err(429, "Request limit exceeded",
                            "Too many requests: this token may send 1 query per second")
            used = self.daily_counts.get(token, 0)
            if used >= self.daily_limit:
                tomorrow = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).date()
                return _err(
                    429, "Request limit exceeded",
                    f"The request limit of {self.daily_limit} queries has been reached. "
                    f"This token can be used for requests on {tomorrow} 00:00:00",
                )
            self.daily_counts[token] = used + 1
        try:
            if request.path == "/v1/query":
                return self._post(request)
            return self._get(request)
        except BadRequest as exc:
            return _err(400, "Invalid parameter", exc.message)

    def _injected(self, key: str, canonical: str) -> Response | None:
        with self._state_lock:
            if self.fail_next_500 > 0:
                self.fail_next_500 -= 1
                return _err(500, "Server error", "An unexpected error occurred")
            if key in self.timeout_once:
                if canonical not in self._timed_out:
                    self._timed_out.add(canonical)
                    return _err(504, "Request timed out",
                                "The request timed out before the query could complete")
                self.cache_hits += 1
        return None

    # POST /v1/query ---------------------------------------------------------------------

    def _post(self, request: Request) -> Response:
        try:
            body = json.loads(request.body or b"")
        except ValueError:
            raise BadRequest("Malformed JSON in the request body") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object")
        has_id, has_bql = bool(body.get("query_response_id")), bool(body.get("bql"))
        if has_id == has_bql:
            raise BadRequest("Exactly one of query_response_id or bql is required")
        return_type = body.get("return_type", "data")
        if return_type not in ("data", "explore_url"):
            raise BadRequest(f"Invalid return_type: {return_type}")
        result_format = body.get("result_format")
        if return_type == "data" and result_format not in RESULT_FORMATS:
            raise BadRequest("result_format is required: JSON_POWER_BI, DEFAULT or CSV")
        if has_id:
            rid = str(body["query_response_id"])
            if rid not in SAVED:
                raise BadRequest(f"Unknown query_response_id: {rid}")
            spec = dict(SAVED[rid])
            key = rid
        else:
            spec = self.parse_bql(str(body["bql"]))
            key = spec["dataset"]
        canonical = json.dumps(body, sort_keys=True)
        injected = self._injected(key, canonical)
        if injected is not None:
            return injected
        if return_type == "explore_url":
            return json_response({"explore_url": f"{self.url}/explorer?qr={key}"})
        columns, rows = self.post_rows(spec)
        return self.render(columns, rows, result_format)

    def parse_bql(self, bql: str) -> dict[str, t.Any]:
        """A small BQL subset: select <measures> from <dataset> [where time >= A and
        time < B] [group by c1, c2]. A and B are epoch ms or quoted ISO date-times."""
        m = re.match(r"^\s*select\s+(.+?)\s+from\s+([A-Za-z_][\w.]*)(.*)$", bql,
                     re.IGNORECASE | re.DOTALL)
        if not m:
            raise BadRequest("Could not parse BQL: expected select ... from <dataset>")
        select, dataset, rest = m.groups()
        if dataset not in DATASETS:
            raise BadRequest(f"Unknown dataset: {dataset}")
        measures = []
        for item in select.split(","):
            mm = re.match(r"^\s*(\w+)\s*\(\s*(\*|[\w.]+)\s*\)\s*$", item)
            if not mm or mm.group(1).lower() not in BQL_AGGREGATORS:
                raise BadRequest(f"Could not parse BQL measure: {item.strip()}")
            agg = BQL_AGGREGATORS[mm.group(1).lower()]
            column = None if mm.group(2) == "*" else mm.group(2)
            if agg == "count_star" and column is not None:
                agg = "unique_count"
            measures.append((agg, column))
        group_by: list[str] = []
        g = re.search(r"group\s+by\s+([\w.\s,]+?)\s*$", rest, re.IGNORECASE)
        if g:
            group_by = [c.strip() for c in g.group(1).split(",") if c.strip()]
        start, end = _MS(DATA_START), _MS(DATA_END)
        lo = re.search(r"time\s*>=?\s*('[^']*'|\d+)", rest, re.IGNORECASE)
        hi = re.search(r"time\s*<=?\s*('[^']*'|\d+)", rest, re.IGNORECASE)
        if lo:
            start = _bql_time(lo.group(1))
        if hi:
            end = _bql_time(hi.group(1))
        if end <= start:
            raise BadRequest("End time must be after start time")
        return {"dataset": dataset, "group_by": group_by, "measures": measures,
                "bucket_ms": end - start, "start": start, "end": end, "filter": rest.strip()}

    def post_rows(self, spec: dict[str, t.Any]) -> tuple[list[str], list[list[t.Any]]]:
        """Rows of a POST answer: one per group per time bucket."""
        dataset, group_by = spec["dataset"], spec["group_by"]
        filt = spec.get("filter", "")
        names = [f"measure {n}" for n in range(1, len(spec["measures"]) + 1)]
        columns = [*group_by, *names, "start_time_0", "end_time_0"]
        rows = []
        for group in self.groups(dataset, group_by):
            b_start = spec["start"]
            while b_start < spec["end"]:
                b_end = min(b_start + spec["bucket_ms"], spec["end"])
                values = [self.measure(dataset, filt, agg, col, group, b_start, b_end)
                          for agg, col in spec["measures"]]
                if not self.measure(dataset, filt, "count_star", None, group, b_start, b_end):
                    b_start = b_end
                    continue  # no event of this group in this bucket: no row
                dims = list(group) if group_by else []
                rows.append([*dims, *values, b_start, b_end])
                b_start = b_end
        return columns, rows

    @staticmethod
    def render(columns: list[str], rows: list[list[t.Any]], result_format: str) -> Response:
        if result_format == "CSV":
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(columns)
            writer.writerows(rows)
            return Response(body=out.getvalue().encode(), content_type="text/csv")
        if result_format == "DEFAULT":
            kinds = ["time" if c.endswith(("_time_0",)) else
                     "number" if c.startswith("measure") else "string" for c in columns]
            payload = {
                "columns": [{"label": c, "type": k} for c, k in zip(columns, kinds)],
                "rows": [{"values": r} for r in rows],
            }
            return json_response(payload)
        # JSON_POWER_BI: flat array of dicts, one per group per time bucket (doc order:
        # measures, end_time_0, start_time_0, then the split-by columns)
        ordered = [c for c in columns if c.startswith("measure")] + [
            "end_time_0", "start_time_0"] + [c for c in columns if not c.startswith(
                "measure") and not c.endswith("_time_0")]
        index = {c: i for i, c in enumerate(columns)}
        return json_response([{c: r[index[c]] for c in ordered} for r in rows])

    # GET /api/v1/query ------------------------------------------------------------------

    def _get(self, request: Request) -> Response:
        raw = request.param("query")
        if raw is None or raw == "":
            raise BadRequest("Missing required query parameter: query")
        try:
            query = json.loads(raw)
        except ValueError:
            raise BadRequest("Malformed query parameter: not valid JSON") from None
        if not isinstance(query, dict):
            raise BadRequest("Malformed query parameter: expected a JSON object")
        dataset = query.get("dataset")
        if not dataset:
            raise BadRequest("Missing required field: dataset")
        if dataset not in DATASETS:
            raise BadRequest(f"Unknown dataset: {dataset}")
        for field in ("start", "end"):
            if not isinstance(query.get(field), int) or isinstance(query.get(field), bool):
                raise BadRequest(f"Missing or invalid field: {field} (epoch milliseconds)")
        start, end = query["start"], query["end"]
        if end <= start:
            raise BadRequest("End time must be after start time")
        subs = query.get("queries")
        if not isinstance(subs, list) or not subs:
            raise BadRequest("Missing required field: queries")
        types = set()
        for sub in subs:
            if not isinstance(sub, dict) or not isinstance(sub.get("measure"), dict):
                raise BadRequest("Each query needs a measure object")
            agg = sub["measure"].get("aggregator")
            if agg not in AGGREGATORS:
                raise BadRequest(f"Invalid aggregator: {agg}")
            if agg != "count_star" and not sub["measure"].get("column"):
                raise BadRequest(f"Missing measure column for aggregator {agg}")
            qtype = sub.get("type", "single_measurement")
            if qtype not in ("single_measurement", "time_series"):
                raise BadRequest(f"Invalid query type: {qtype}")
            types.add(qtype)
        if len(types) > 1:
            raise BadRequest("All queries must have the same type")
        group_by = query.get("group_by") or []
        groups = self.groups(dataset, group_by)
        canonical = json.dumps(query, sort_keys=True)
        injected = self._injected(dataset, canonical)
        if injected is not None:
            return injected
        return json_response(self.v1_answer(query, groups, types.pop()))

    def v1_answer(self, query: dict, groups: list[tuple], qtype: str) -> dict[str, t.Any]:
        dataset, start, end = query["dataset"], query["start"], query["end"]
        group_by = query.get("group_by") or []
        subs = query["queries"]
        label = group_by if group_by else ["result"]

        def total(group: tuple) -> int | float:
            sub = subs[0]
            return self.measure(dataset, sub.get("filter", ""), sub["measure"]["aggregator"],
                                sub["measure"].get("column"), group, start, end)

        def events(group: tuple) -> int | float:
            return self.measure(dataset, subs[0].get("filter", ""), "count_star", None,
                                group, start, end)

        ranked = sorted((g for g in groups if events(g)), key=lambda g: (-total(g), g))
        chosen = ranked[: int(query.get("max_groups", 10))]
        chosen.sort()
        kind = "number" if qtype == "single_measurement" else "time_series"
        columns = [{"type": "array", "label": label}] + [
            {"type": kind, "label": "measure_value"} for _ in subs]
        rows = []
        span = end - start
        resolution = 6 * HOUR_MS if span <= 2 * DAY_MS else DAY_MS if span <= 14 * DAY_MS \
            else 7 * DAY_MS
        for group in chosen:
            values: list[t.Any] = [list(group)]
            for sub in subs:
                agg, col = sub["measure"]["aggregator"], sub["measure"].get("column")
                filt = sub.get("filter", "")
                if qtype == "single_measurement":
                    values.append(self.measure(dataset, filt, agg, col, group, start, end))
                    continue
                points = []
                stamp = start
                while stamp < end:
                    stop = min(stamp + resolution, end)
                    events = self.measure(dataset, filt, "count_star", None, group, stamp, stop)
                    points.append({
                        "timestamp": stamp,
                        "properties": {"object_count": math.ceil(events * 0.37),
                                       "event_count": events},
                        "value": self.measure(dataset, filt, agg, col, group, stamp, stop),
                    })
                    stamp = stop
                values.append(points)
            row: dict[str, t.Any] = {"values": values}
            if qtype == "time_series":
                row["properties"] = {"window": resolution, "resolution": resolution,
                                     "rate": "hour"}
            rows.append(row)
        return {"rows": rows, "columns": columns}

    # -- for tests --------------------------------------------------------------------------

    def query_times(self, token: str = SCUBA_TOKEN) -> list[float]:
        with self._state_lock:
            return list(self.arrivals.get(token, []))

    def reset_limits(self) -> None:
        with self._state_lock:
            self.arrivals.clear()
            self.daily_counts.clear()
            self._timed_out.clear()
            self.cache_hits = 0


def _bql_time(text: str) -> int:
    text = text.strip("'")
    if text.isdigit():
        return int(text)
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid time value: {text}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return _MS(value)
