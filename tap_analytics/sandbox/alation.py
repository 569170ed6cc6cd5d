"""A stand-in for Alation's Queries API (../shared/api-docs/alation-queries-api.txt).

Faithful to the doc rather than convenient: TOKEN header (403 bodies), limit/skip paging,
the filter operators on the documented URL parameters (400 bodies), order_by with the
documented choices (and the schedule_ ordering 400), single-object and per-query endpoints,
/sql/ as text/plain, /result/latest/ with both 404 bodies, the result CSV (announced as
application/json, as the doc says), and timestamps in both of the doc's styles
("...123456Z" and "YYYY-MM-DD HH:MM:SS.ffffff+00:00") while filters compare instants.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import typing as t
import uuid

from tap_analytics.sandbox import ALATION_TOKEN, DATA_END, DATA_START
from tap_analytics.sandbox.alation_params import (
    DEFAULT_ORDER,
    ORDERINGS,
    PARAMS,
    BadRequest,
    compile_filter,
    instant,
    int_or_none,
    invalid,
    matches,
    paging_param,
)
from tap_analytics.sandbox.core import Request, Response, Service, json_response, text_response

UTC = dt.timezone.utc
API = "/integration/v1"
KINDS = ("query", "execution_session", "execution_batch", "execution_event", "scheduled_run")
NOT_FOUND = {"detail": "Not found."}


def ts_z(value: dt.datetime) -> str:
    """'2018-01-23T08:17:00.123456Z' (one of the doc's two styles)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def ts_space(value: dt.datetime) -> str:
    """'2017-10-18 01:19:09.855398+00:00' (the other style)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(sep=" ", timespec="microseconds")


class AlationService(Service):
    """Generated, deterministic Alation data for DATA_START..DATA_END."""

    name = "alation"

    def __init__(self, *, seed: int, scale: float) -> None:
        super().__init__()
        self.seed = seed
        self.scale = scale
        self.rng = random.Random(seed)
        self.data: dict[str, list[dict]] = {k: [] for k in KINDS}
        self.by_id: dict[str, dict[t.Any, dict]] = {k: {} for k in KINDS}
        self.version = 0
        self._cache: dict[tuple, list[dict]] = {}
        self._one_shot: list[tuple[str, Response]] = []
        self._generate()

    # -- data ----------------------------------------------------------------------
    def _n(self, base: int, minimum: int) -> int:
        return max(minimum, round(base * self.scale))

    def _generate(self) -> None:
        rng = self.rng
        span = (DATA_END - DATA_START).total_seconds()
        self.datasources = [
            {"title": f"Datasource {i}", "id": i, "url": f"/data/{i}/",
             "uri": f"postgresql://db{i}.example.com:5432/?sslmode=require"}
            for i in (1, 2, 3)
        ]
        nq, ns = self._n(150, 12), self._n(300, 8)
        nb, ne, nr = self._n(500, 10), self._n(1000, 20), self._n(200, 6)
        ns = min(ns, nb)
        for _ in range(nq):
            when = DATA_START + dt.timedelta(seconds=rng.uniform(0, span * 0.98))
            self._add_query(when)
        batch_times = sorted(
            DATA_START + dt.timedelta(seconds=rng.uniform(60, span * 0.97)) for _ in range(nb)
        )
        for s in range(ns):
            batches = batch_times[s * nb // ns:(s + 1) * nb // ns]
            query = self.data["query"][rng.randrange(len(self.data["query"]))]
            session = self._add_session(query["id"], batches[0] - dt.timedelta(seconds=5),
                                        scheduled=rng.random() < 0.3)
            for when in batches:
                # Batch ids follow creation, but clocks jitter: ids and times disagree a bit.
                jittered = when + dt.timedelta(seconds=rng.uniform(-900, 900))
                self._add_batch(session, max(jittered, DATA_START + dt.timedelta(seconds=1)))
        all_batches = self.data["execution_batch"]
        for e in range(ne):
            self._add_event(all_batches[e * len(all_batches) // ne])
        # A few exact ties on the replication keys (same microsecond).
        events = self.data["execution_event"]
        for i in range(3, len(events), max(4, len(events) // 5)):
            events[i]["ts_executed"] = ts_z(self._ev_time[events[i - 1]["id"]])
            self._ev_time[events[i]["id"]] = self._ev_time[events[i - 1]["id"]]
        run_times = sorted(
            DATA_START + dt.timedelta(seconds=rng.uniform(0, span * 0.97)) for _ in range(nr)
        )
        for i, when in enumerate(run_times):
            self._add_run(when, enabled_feature=i >= nr // 2)
        self._index_latest()
        self._choose_result_queries()

    def _add_query(self, when: dt.datetime) -> dict:
        rng = self.rng
        qid = len(self.data["query"]) + 1
        ds = self.datasources[qid % 3]
        content = rng.choice([
            "SELECT count(*) FROM users;\nSELECT TOP 10 * FROM users;",
            "select * from default.employee where name like '%, Jr.%'",
            "UPDATE t SET flag = false;  -- tabs\tand spaces kept  ",
            "SELECT \"Col, A\", 'it''s' FROM s.\"Odd Table\"",
        ])
        rec: dict[str, t.Any] = {
            "datasource_id": ds["id"], "autosave_content": content, "content": content,
            "saved": rng.random() < 0.8, "published": rng.random() < 0.4,
            "url": f"/integration/query/{qid}/", "id": qid,
            "title": rng.choice(["Q1 Revenue", "Daily users", "Orphans", "Q1 Results", ""]),
            "description": rng.choice(["Query description.", "", "Ünïcode, \"quoted\""]),
            "datasource": dict(ds), "ts_last_saved": ts_z(when),
            "has_unsaved_changes": rng.random() < 0.1,
            "catalog_url": f"/query/{qid}/", "compose_url": f"/compose/query/{qid}/",
            "schedules": [],
        }
        if qid % 5 == 0:
            rec["schedules"].append({
                "enabled": qid % 10 == 0, "cron_expression": f"{qid % 60} 1 * * *",
                "ts_last_attempt": ts_z(when + dt.timedelta(hours=1)), "overdue": False,
                "ts_next_run": ts_z(when + dt.timedelta(days=1)),
                "celery_queue": "run_scheduling",
                "celery_task_name": f"rosemeta.tasks.query_scheduling.run_query_{qid}",
                "user": {"username": f"user{qid % 7}@example.com", "is_active": True},
                "db_connection": {"uri": ds["uri"], "username": "dbusername",
                                  "ts_modified": ts_z(when - dt.timedelta(days=3)),
                                  "ts_last_used": ts_z(when + dt.timedelta(hours=1))},
                "latest_session": None,
            })
        if qid % 4 == 1:
            rec["tags"] = [{"id": 1, "name": "@finance", "description": "tag description",
                            "ts_created": ts_z(DATA_START - dt.timedelta(days=30)),
                            "url": "/tag/1/",
                            "ts_updated": ts_z(DATA_START - dt.timedelta(days=2))}]
            rec["domains"] = [{"title": "Finance", "id": 1, "description": "domain"}]
        self._store("query", rec)
        return rec

    def _add_session(self, query_id: int, when: dt.datetime, *, scheduled: bool) -> dict:
        sid = len(self.data["execution_session"]) + 1
        rec = {
            "id": sid,
            "client_session_id": f"{ts_z(when - dt.timedelta(hours=7))}#{sid:08x}",
            "query_id": query_id, "ts_start": ts_space(when),
            "sandbox_id": f"schedule-{query_id}" if scheduled else str(sid % 3),
            "is_scheduled": scheduled, "batch_ids": [],
        }
        self._store("execution_session", rec)
        query = self.by_id["query"][query_id]
        if query["schedules"] and scheduled:
            query["schedules"][0]["latest_session"] = {
                k: rec[k] for k in ("id", "client_session_id", "query_id", "ts_start",
                                    "sandbox_id", "batch_ids")}
        return rec

    def _add_batch(self, session: dict, when: dt.datetime) -> dict:
        bid = len(self.data["execution_batch"]) + 1
        rec = {"id": bid, "query_id": session["query_id"], "session_id": session["id"],
               "events": []}
        self._batch_time = getattr(self, "_batch_time", {})
        self._batch_time[bid] = when
        session["batch_ids"].append(bid)
        self._store("execution_batch", rec)
        return rec

    def _add_event(self, batch: dict, *, with_result: bool = False) -> dict:
        rng = self.rng
        self._ev_time = getattr(self, "_ev_time", {})
        eid = len(self.data["execution_event"]) + 1
        index = len(batch["events"])
        when = self._batch_time[batch["id"]] + dt.timedelta(
            seconds=index * 2 + rng.uniform(0, 1.5))
        session = self.by_id["execution_session"][batch["session_id"]]
        query = self.by_id["query"][batch["query_id"]]
        error = "ERROR: relation \"x\" does not exist" if rng.random() < 0.08 else None
        has_result = error is None and query["id"] % 10 != 3 and rng.random() < 0.5
        if with_result:  # a run that certainly cached a result (rerun_query)
            error, has_result = None, True
        rows = rng.randrange(0, 5000)
        result = None
        if has_result:
            result = {
                "id": eid, "title": f"Result {eid}", "ts_created": ts_space(when),
                "row_count": rows, "byte_count": rows * 37,
                "ts_expiration": ts_z(when + dt.timedelta(days=7)), "truncated": False,
                "expired": False, "deleted": False, "url": f"/execution_result/{eid}/",
                "storage_status": "STORED_ALL",
                "data_schema": [
                    {"norm_type": "INT", "type": "int", "original_name": "x.y", "name": "y"},
                    {"norm_type": "STRING", "type": "varchar", "original_name": "name",
                     "name": "name"}],
                "query": {"id": query["id"], "title": query["title"],
                          "description": query["description"]},
            }
        rec = {
            "id": eid, "result": result, "num_result_rows": rows if error is None else None,
            "execution_error": error, "canceled": rng.random() < 0.03,
            "ts_executed": ts_z(when), "elapsed_seconds": round(rng.uniform(0.01, 90), 6),
            "index_in_batch": index, "batch_id": batch["id"], "session_id": session["id"],
            "query_id": query["id"], "db_username": rng.choice(["alation", "etl", "Xyz"]),
            "statement_content": query["content"].split(";")[0],
            "datasource": dict(query["datasource"]),
        }
        self._ev_time[eid] = when
        batch["events"].append({"id": eid, "index_in_batch": index})
        self._store("execution_event", rec)
        return rec

    def _add_run(self, when: dt.datetime, *, enabled_feature: bool) -> dict:
        rng = self.rng
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        query = session = None
        if enabled_feature and self.data["execution_session"]:
            session = rng.choice(self.data["execution_session"])
            query = self.by_id["query"][session["query_id"]]
        done = rng.random() < 0.9
        rec = {
            "session_id": session["id"] if session else None,
            "query_id": query["id"] if query else None,
            "query_title": query["title"] if query else None,
            "task_id": task_id, "ts_sent_to_broker": ts_space(when),
            "ts_prerun": ts_z(when + dt.timedelta(seconds=1)) if done else None,
            "ts_postrun": ts_space(when + dt.timedelta(seconds=30)) if done else None,
        }
        self.by_id["scheduled_run"][task_id] = rec
        self.data["scheduled_run"].append(rec)
        return rec

    def _store(self, kind: str, rec: dict) -> None:
        self.data[kind].append(rec)
        self.by_id[kind][rec["id"]] = rec

    # -- cached results ------------------------------------------------------------
    def latest_result(self, query_id: int) -> dict | None:
        """The latest (by ts_executed) execution event of a query that has a result."""
        return self._latest.get(query_id)

    def _index_latest(self) -> None:
        self._latest: dict[int, dict] = {}
        for event in self.data["execution_event"]:
            best = self._latest.get(event["query_id"])
            if event["result"] and (
                best is None or self._ev_time[event["id"]] >= self._ev_time[best["id"]]
            ):
                self._latest[event["query_id"]] = event

    def _choose_result_queries(self) -> None:
        with_result = [q["id"] for q in self.data["query"] if self.latest_result(q["id"])]
        without = [q["id"] for q in self.data["query"] if not self.latest_result(q["id"])]
        chosen = with_result[:3]
        truncated = self.latest_result(chosen[1])
        truncated["result"]["truncated"] = True
        truncated["result"]["storage_status"] = "STORED_PART"
        self.result_query_ids = [*chosen, without[0], len(self.data["query"]) + 10_000]

    def result_rows(self, result_id: int) -> list[dict[str, str]]:
        """The rows of a cached result, keyed by the CSV header (strings)."""
        rng = random.Random(self.seed * 1_000_003 + result_id)
        header = ["flag", "count", "name", "note", "my_column"]
        specials = ["", "0", "false", "a, b", 'say "hi"', "line1\nline2", " padded "]
        rows = []
        for i in range(rng.randrange(3, 12)):
            rows.append({
                "flag": ["false", "true", "False", "0"][i % 4],
                "count": str(i * rng.randrange(0, 3)),
                "name": rng.choice(["Days in a Year", "Smith, \"Jr\"", "Ünïcode", ""]),
                "note": specials[i % len(specials)],
                "my_column": rng.choice(["True", "1", "00123", "1e5", "null"]),
            })
        return [{h: r[h] for h in header} for r in rows]

    def result_csv(self, result_id: int) -> str:
        buf = io.StringIO()
        rows = self.result_rows(result_id)
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["flag", "count", "name", "note", "my_column"])
        for row in rows:
            writer.writerow(list(row.values()))
        return buf.getvalue()

    # -- growth and test hooks -----------------------------------------------------
    def _latest_time(self) -> dt.datetime:
        return max([*self._ev_time.values(), *self._batch_time.values(),
                    *(instant(q["ts_last_saved"]) for q in self.data["query"]),
                    *(instant(r["ts_sent_to_broker"]) for r in self.data["scheduled_run"]),
                    *(instant(s["ts_start"]) for s in self.data["execution_session"])])

    def add_newer_records(self, n: int) -> None:
        """n newer records on every list endpoint: later timestamps, newer ids."""
        with self.lock:
            latest = self._latest_time()
            base = latest.replace(microsecond=0) + dt.timedelta(minutes=1)
            for i in range(n):
                when = base + dt.timedelta(seconds=10 * i, microseconds=123456)
                query = self._add_query(when)
                session = self._add_session(query["id"], when + dt.timedelta(seconds=1),
                                            scheduled=False)
                batch = self._add_batch(session, when + dt.timedelta(seconds=2))
                self._add_event(batch)
                self._add_run(when + dt.timedelta(seconds=3), enabled_feature=True)
            self._index_latest()
            self.version += 1
            self._cache.clear()

    def rerun_query(self, query_id: int) -> int:
        """The query runs again now (a new session, batch and event, later than all data)
        and caches a new result, which becomes its latest: returns the new result id."""
        with self.lock:
            when = self._latest_time().replace(microsecond=0) + dt.timedelta(
                minutes=1, microseconds=654321)
            session = self._add_session(query_id, when, scheduled=False)
            batch = self._add_batch(session, when + dt.timedelta(seconds=1))
            event = self._add_event(batch, with_result=True)
            self._index_latest()
            self.version += 1
            self._cache.clear()
            return int(event["result"]["id"])

    def fail_next(self, status: int, count: int = 1, path_prefix: str = API,
                  body: bytes = b"<html>Service Unavailable</html>",
                  content_type: str = "text/html") -> None:
        """The next `count` requests under `path_prefix` get this answer (one-shot)."""
        with self.lock:
            for _ in range(count):
                self._one_shot.append((path_prefix, Response(
                    status=status, body=body, content_type=content_type, faultable=False)))

    # -- HTTP ----------------------------------------------------------------------
    def config_block(self) -> dict[str, t.Any]:
        return {"base_url": self.url, "api_token": ALATION_TOKEN, "page_size": 100,
                "result_query_ids": list(self.result_query_ids)}

    def handle(self, request: Request) -> Response:
        with self.lock:
            for i, (prefix, response) in enumerate(self._one_shot):
                if request.path.startswith(prefix):
                    del self._one_shot[i]
                    return response
            if request.method != "GET":
                return json_response({"detail": f"Method \"{request.method}\" not allowed."},
                                     405)
            token = request.headers.get("token")
            if token is None:
                return json_response({"detail": "Missing API token."}, 403)
            if token != ALATION_TOKEN:
                return json_response({"detail": "Invalid API token."}, 403)
            try:
                return self._route(request)
            except BadRequest as exc:
                return json_response({"error": exc.error}, 400)

    def _route(self, request: Request) -> Response:
        path = request.path
        if not path.startswith(API + "/"):
            return json_response(NOT_FOUND, 404)
        parts = [p for p in path[len(API):].split("/") if p]
        if parts[:1] == ["result"] and len(parts) == 3 and parts[2] == "csv":
            rid = int_or_none(parts[1])
            event = self.by_id["execution_event"].get(rid) if rid else None
            if event is None or not event["result"]:
                return json_response(NOT_FOUND, 404)
            # The doc announces application/json for this CSV body.
            return text_response(self.result_csv(rid), content_type="application/json")
        if parts[:1] != ["query"]:
            return json_response(NOT_FOUND, 404)
        rest = parts[1:]
        if not rest:
            return self._list(request, "query", None)
        if rest[0] in KINDS[1:]:
            if len(rest) == 1:
                return self._list(request, rest[0], None)
            if len(rest) == 2 and rest[0] != "scheduled_run":
                obj = self.by_id[rest[0]].get(int_or_none(rest[1]))
                return json_response(obj) if obj else json_response(NOT_FOUND, 404)
            return json_response(NOT_FOUND, 404)
        qid = int_or_none(rest[0])
        query = self.by_id["query"].get(qid)
        if query is None:
            return json_response(NOT_FOUND, 404)
        if len(rest) == 1:
            return json_response(query)
        if len(rest) == 2 and rest[1] == "sql":
            return text_response(query["content"])
        if len(rest) == 2 and rest[1] in KINDS[1:]:
            return self._list(request, rest[1], qid)
        if rest[1:] == ["result", "latest"]:
            event = self.latest_result(qid)
            if event is None:
                return json_response(
                    {"detail": f"Could not get latest query result ID for query ID {qid}"}, 404)
            when = self._ev_time[event["id"]]
            finished = when + dt.timedelta(seconds=event["elapsed_seconds"])
            return json_response({
                "id": event["result"]["id"], "truncated": event["result"]["truncated"],
                "execution_event": {
                    "executed_at": ts_space(when), "canceled": event["canceled"],
                    "execution_error": event["execution_error"], "finished": True,
                    "finished_at": ts_space(finished),
                    "seconds_taken": event["elapsed_seconds"]}})
        return json_response(NOT_FOUND, 404)

    def _list(self, request: Request, kind: str, query_id: int | None) -> Response:
        limit = paging_param(request, "limit")
        skip = paging_param(request, "skip") or 0
        order = request.param("order_by")
        filters = sorted(
            (k, v[-1]) for k, v in request.query.items()
            if k not in ("limit", "skip", "order_by")
        )
        key = (kind, query_id, tuple(filters), order, self.version)
        rows = self._cache.get(key)
        if rows is None:
            rows = self._select(kind, query_id, filters, order)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = rows
        page = rows[skip:] if limit is None else rows[skip:skip + limit]
        return json_response(page)

    def _select(self, kind: str, query_id: int | None, filters: list[tuple[str, str]],
                order: str | None) -> list[dict]:
        specs = PARAMS[kind]
        predicates = []
        for param, raw in filters:
            name, _, op = param.partition("__")
            if name not in specs:
                continue  # unknown parameters are ignored, as by the real service
            type_, getter = specs[name]
            if kind == "execution_event" and name == "session_is_scheduled":
                sessions = self.by_id["execution_session"]
                getter = lambda rec: sessions[rec["session_id"]]["is_scheduled"]  # noqa: E731, B023
            predicates.append((getter, compile_filter(type_, op, raw, param)))
        choices = ORDERINGS[kind]
        sort_field = DEFAULT_ORDER.get(kind, "id")
        reverse = False
        if order is not None:
            bare = order.lstrip("-")
            if not choices or bare not in choices:
                raise invalid([order], "order_by")
            scheduled = [p for p, _ in filters if p.startswith("schedule_")]
            if kind == "query" and scheduled:
                raise BadRequest(
                    f'Ordering with "{order}" may not be used with filtering on '
                    f'"{scheduled[0]}" You may either remove the filter(s) or remove the '
                    "ordering parameter.")
            sort_field, reverse = choices[bare], order.startswith("-")
        rows = []
        for rec in self.data[kind]:
            if query_id is not None and rec.get("query_id") != query_id:
                continue
            if all(matches(getter(rec), pred) for getter, pred in predicates):
                rows.append(rec)
        if sort_field != "id" or reverse:
            def sort_key(rec: dict) -> tuple:
                value = rec.get(sort_field)
                if isinstance(value, str) and sort_field.startswith("ts_"):
                    value = instant(value)
                return (value is None, value if value is not None else 0)
            rows.sort(key=sort_key, reverse=reverse)
        return rows
