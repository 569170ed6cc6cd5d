"""Section 3: requests per stream for a full sync and for an incremental sync with no new
data, against the sandbox (all services), read from the sandbox's request logs.

Checks: an incremental no-change sync makes one request per Alation list stream; Scuba
never sends two queries within one second (per run: each run is its own process) and the
incremental run never re-runs a time window the full run finished.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
import typing as t
from collections import Counter
from pathlib import Path

from benchmarks.common import TAP

ALATION_LISTS = {
    "/integration/v1/query/": "alation_queries",
    "/integration/v1/query/execution_session/": "alation_execution_sessions",
    "/integration/v1/query/execution_batch/": "alation_execution_batches",
    "/integration/v1/query/execution_event/": "alation_execution_events",
    "/integration/v1/query/scheduled_run/": "alation_scheduled_runs",
}
_BQL_WINDOW = re.compile(r"time\s*>=\s*'?(\d+)'?\s+and\s+time\s*<\s*'?(\d+)'?", re.I)


def _alation_stream(path: str) -> str:
    if path in ALATION_LISTS:
        return ALATION_LISTS[path]
    return "alation_query_results"  # /query/<id>/result/latest/, /result/<id>/csv/ ...


def _pattern(path: str) -> str:
    return re.sub(r"/[0-9a-f]{32}(?=/|$)", "/{guid}", re.sub(r"/\d+(?=/|$)", "/{id}", path))


class ScubaSpy:
    """Wraps the Scuba service's handler to keep every query (the log has no bodies)."""

    def __init__(self, service: t.Any, config: dict) -> None:
        self.queries: list[dict] = []
        self.names = {}
        for entry in config["scuba"]["queries"]:
            key = entry.get("query_response_id") or entry.get("bql") or json.dumps(
                {k: v for k, v in (entry.get("query") or {}).items()}, sort_keys=True)
            self.names[key] = entry["name"]
        original = service.handle

        def handle(request: t.Any) -> t.Any:
            response = original(request)
            self.queries.append(self._describe(request, response.status))
            return response

        service.handle = handle

    def _describe(self, request: t.Any, status: int) -> dict:
        info: dict[str, t.Any] = {"time": request.time, "status": status, "window": None,
                                  "identity": request.path, "entry": "?"}
        if request.path == "/v1/query":
            try:
                body = json.loads(request.body or b"{}")
            except ValueError:
                body = {}
            bql = str(body.get("bql") or "")
            if body.get("query_response_id"):
                info["identity"] = f"rid:{body['query_response_id']}"
                info["entry"] = self.names.get(body["query_response_id"], "?")
            elif bql:
                match = _BQL_WINDOW.search(bql)
                if match:
                    info["window"] = (int(match.group(1)), int(match.group(2)))
                info["identity"] = "bql:" + _BQL_WINDOW.sub("time window", bql)
                info["entry"] = next((n for k, n in self.names.items()
                                      if k.split("{{")[0].strip() and
                                      bql.startswith(k.split("{{")[0].strip()[:30])), "?")
        else:
            raw = (request.query.get("query") or ["{}"])[-1]
            try:
                query = json.loads(raw)
            except ValueError:
                query = {}
            if isinstance(query, dict):
                if "start" in query and "end" in query:
                    info["window"] = (query["start"], query["end"])
                rest = {k: v for k, v in query.items() if k not in ("start", "end")}
                info["identity"] = "get:" + json.dumps(rest, sort_keys=True)
                for key, name in self.names.items():
                    if key.startswith("{") and json.loads(key).get("queries") == rest.get(
                            "queries") and json.loads(key).get("group_by") == rest.get(
                            "group_by"):
                        info["entry"] = name
        return info


def _counts(sb: t.Any) -> dict[str, Counter]:
    per_stream: dict[str, Counter] = {}
    for name, service in sb.services.items():
        counter: Counter = Counter()
        for req in service.requests():
            if name == "alation":
                counter[_alation_stream(req.path)] += 1
            else:
                counter[f"{req.method} {_pattern(req.path)}"] += 1
        per_stream[name] = counter
    return per_stream


def _min_gap(times: list[float]) -> float | None:
    times = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return min(gaps) if gaps else None


def _final_state(stdout_lines: list[bytes]) -> dict:
    state: dict = {}
    for line in stdout_lines:
        if line.startswith(b'{"type":"STATE"'):
            state = json.loads(line)["value"]
    return state


def _sync(cmd: list[str]) -> tuple[t.Any, list[bytes]]:
    import subprocess

    proc = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    return proc, proc.stdout.splitlines()


def run(log: t.Callable[[str], None] = print) -> dict:
    from tap_analytics.sandbox import Sandbox

    result: dict[str, t.Any] = {}
    with Sandbox(seed=7) as sb, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        config = sb.config()
        spy = ScubaSpy(sb.scuba, config)
        (tmp / "config.json").write_text(json.dumps(config))
        runs = {}
        state: dict = {}
        for phase in ("full", "incremental"):
            for service in sb.services.values():
                service.clear_log()
            spy.queries.clear()
            cmd = [TAP, "--config", str(tmp / "config.json")]
            if phase == "incremental":
                (tmp / "state.json").write_text(json.dumps(state))
                cmd += ["--state", str(tmp / "state.json")]
            proc, lines = _sync(cmd)
            records = Counter(json.loads(x)["stream"] for x in lines
                              if x.startswith(b'{"type":"RECORD"'))
            state = _final_state(lines) or state
            runs[phase] = {
                "returncode": proc.returncode,
                "stderr_tail": proc.stderr.decode("utf-8", "replace")[-800:],
                "records": dict(records),
                "requests": {k: dict(v) for k, v in _counts(sb).items()},
                "scuba": list(spy.queries),
            }
            total = sum(sum(v.values()) for v in runs[phase]["requests"].values())
            log(f"    {phase:11s} sync: exit {proc.returncode}, {sum(records.values()):,d} "
                f"records, {total} requests")
            if proc.returncode != 0:
                log("      !! " + runs[phase]["stderr_tail"].replace("\n", "\n      "))
        result["runs"] = runs
        inc = runs["incremental"]
        result["alation_incremental_requests"] = {
            stream: inc["requests"].get("alation", {}).get(stream, 0)
            for stream in ALATION_LISTS.values()
        }
        gaps = {phase: _min_gap([q["time"] for q in runs[phase]["scuba"]])
                for phase in runs}
        result["scuba_min_gap_s"] = gaps
        result["scuba_429"] = {phase: sum(1 for q in runs[phase]["scuba"] if q["status"] == 429)
                               for phase in runs}
        finished: dict[str, list[tuple[int, int]]] = {}
        for q in runs["full"]["scuba"]:
            if q["window"] and q["status"] == 200:
                finished.setdefault(q["identity"], []).append(tuple(q["window"]))
        reruns = []
        for q in inc["scuba"]:
            if not q["window"]:
                continue
            s2, e2 = q["window"]
            for s1, e1 in finished.get(q["identity"], []):
                if s2 < e1 and s1 < e2:
                    reruns.append({"identity": q["identity"][:80], "window": q["window"],
                                   "finished": [s1, e1]})
        result["scuba_window_reruns"] = reruns
        result["scuba_queries"] = {
            phase: {"windowed": sum(1 for q in runs[phase]["scuba"] if q["window"]),
                    "unwindowed": sum(1 for q in runs[phase]["scuba"] if not q["window"])}
            for phase in runs
        }
        for phase in runs:  # keep the JSON small
            runs[phase]["scuba"] = [
                {k: q[k] for k in ("time", "status", "window", "entry")}
                for q in runs[phase]["scuba"]]
    return result
