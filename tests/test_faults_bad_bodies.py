"""Malformed or unexpected bodies -> exit 1 and ONE clear error line naming the stream and
the URL path; no traceback page, no secret. Through the real executable, against sandboxes
whose answers are scripted with `Faults(override=...)`."""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass

import pytest
from helpers import run_cli

from tap_analytics.sandbox import (
    ALATION_TOKEN,
    INSIGHTS_TOKEN,
    SCUBA_TOKEN,
    SFTP_PASSWORD,
    Sandbox,
)
from tap_analytics.sandbox.core import Faults, Request, Response, json_response, text_response

SECRETS = (ALATION_TOKEN, SCUBA_TOKEN, INSIGHTS_TOKEN, SFTP_PASSWORD)
HTML_PAGE = ("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>"
             "<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n"
             "</body></html>\n")


def raw(body: str, status: int = 200, content_type: str = "application/json") -> Response:
    return Response(status=status, body=body.encode(), content_type=content_type)


@dataclass
class Case:
    id: str
    family: str
    #: Does this request get the scripted answer?
    match: t.Callable[[Request], bool]
    answer: t.Callable[[Request], Response]
    stream: str
    path: str
    config: t.Callable[[dict], None] | None = None


def at(path: str) -> t.Callable[[Request], bool]:
    return lambda r: r.path == path


def startswith_endswith(prefix: str, suffix: str) -> t.Callable[[Request], bool]:
    return lambda r: r.path.startswith(prefix) and r.path.endswith(suffix)


EVENTS = "/integration/v1/query/execution_event/"
ALATION_CASES = [
    Case("cut_json", "alation", at(EVENTS),
         lambda r: raw('[{"id": 1, "query_id": 2, "ts_exec'),
         "alation_execution_events", EVENTS),
    Case("html_page_200", "alation", at(EVENTS),
         lambda r: raw(HTML_PAGE, 200, "text/html"), "alation_execution_events", EVENTS),
    Case("object_not_list", "alation", at(EVENTS),
         lambda r: json_response({"results": [], "count": 0}),
         "alation_execution_events", EVENTS),
    Case("list_of_numbers", "alation", at(EVENTS), lambda r: json_response([1, 2, 3]),
         "alation_execution_events", EVENTS),
    Case("empty_200", "alation", at(EVENTS), lambda r: raw(""),
         "alation_execution_events", EVENTS),
    Case("json_nested_too_deep", "alation", at(EVENTS),
         lambda r: raw("[" * 100_000 + "]" * 100_000), "alation_execution_events", EVENTS),
    Case("bad_timestamp", "alation", at(EVENTS),
         lambda r: json_response([{"id": 1, "ts_executed": "last tuesday"}]),
         "alation_execution_events", EVENTS),
    Case("html_400", "alation", at(EVENTS), lambda r: raw(HTML_PAGE, 400, "text/html"),
         "alation_execution_events", EVENTS),
    Case("text_403", "alation", at(EVENTS), lambda r: text_response("Forbidden", 403),
         "alation_execution_events", EVENTS),
    Case("json_list_500_exhausted", "alation", at(EVENTS),
         lambda r: json_response([{"error": "boom", "trace": "x" * 5000}], 500),
         "alation_execution_events", EVENTS,
         config=lambda c: c["alation"].update(max_tries=2)),
    Case("latest_result_html", "alation",
         startswith_endswith("/integration/v1/query/", "/result/latest/"),
         lambda r: raw(HTML_PAGE, 200, "text/html"), "alation_query_results",
         "/result/latest/"),
    Case("result_csv_ragged", "alation", startswith_endswith("/integration/v1/result/", "/csv/"),
         lambda r: raw("a,b,c\n1,2,3\n4,5\n", 200, "text/csv"), "alation_query_results",
         "/csv/"),
]


def scuba_kind(request: Request) -> str | None:
    """Which configured sandbox entry a Scuba request belongs to."""
    if request.path == "/v1/query":
        try:
            body = request.json()
        except ValueError:
            return None
        if body.get("query_response_id") == "r9372":
            return "top_artists"
        return "bql"
    if request.path == "/api/v1/query":
        query = request.param("query") or ""
        return "artist_series" if "time_series" in query else "artist_users"
    return None


SCUBA_CASES = [
    Case("post_cut_json", "scuba", lambda r: scuba_kind(r) == "top_artists",
         lambda r: raw('{"columns": ["artist", "measure 1"], "rows": [["Bee'),
         "scuba_top_artists", "/v1/query"),
    Case("post_html_200", "scuba", lambda r: scuba_kind(r) == "top_artists",
         lambda r: raw(HTML_PAGE, 200, "text/html"), "scuba_top_artists", "/v1/query"),
    Case("post_list_not_object", "scuba", lambda r: scuba_kind(r) == "top_artists",
         lambda r: json_response([["a", 1]]), "scuba_top_artists", "/v1/query"),
    Case("post_html_400", "scuba", lambda r: scuba_kind(r) == "top_artists",
         lambda r: raw(HTML_PAGE, 400, "text/html"), "scuba_top_artists", "/v1/query"),
    Case("v1_cut_json", "scuba", lambda r: scuba_kind(r) == "artist_series",
         lambda r: raw('{"rows": [{"values": [[1516, 3'), "scuba_artist_series",
         "/api/v1/query"),
    Case("v1_list_not_object", "scuba", lambda r: scuba_kind(r) == "artist_series",
         lambda r: json_response([1, 2, 3]), "scuba_artist_series", "/api/v1/query"),
    Case("v1_unexpected_403_body", "scuba", lambda r: scuba_kind(r) == "artist_series",
         lambda r: text_response("<b>nope</b>", 403), "scuba_artist_series",
         "/api/v1/query"),
]

Q = "/_rest/v4/dwh/Q"
# Insights messages name the path under base_url (".../_rest/v4"): "POST /dwh/Q".
INSIGHTS_CASES = [
    Case("fields_html_200", "insights", lambda r: r.method == "GET" and r.path == Q,
         lambda r: raw(HTML_PAGE, 200, "text/html"), "insights_application_exits", "/dwh/Q"),
    Case("submit_cut_json", "insights", lambda r: r.method == "POST" and r.path == Q,
         lambda r: raw('{"id": "5dcf', 201), "insights_application_exits", "/dwh/Q"),
    Case("submit_list_not_object", "insights", lambda r: r.method == "POST" and r.path == Q,
         lambda r: json_response(["x"], 201), "insights_application_exits", "/dwh/Q"),
    Case("status_unexpected", "insights",
         lambda r: r.method == "GET" and r.path.startswith(Q + "/") and r.path.endswith("/status"),
         lambda r: json_response({"state": "weird"}), "insights_application_exits", "/status"),
    Case("download_unexpected", "insights",
         lambda r: r.method == "GET" and r.path.startswith(Q + "/")
         and not r.path.endswith("/status"),
         lambda r: text_response("<html>Process exploded</html>", 200, "text/html"),
         "insights_application_exits", "/dwh/Q/"),
    Case("submit_html_500_exhausted", "insights",
         lambda r: r.method == "POST" and r.path == Q,
         lambda r: raw(HTML_PAGE, 500, "text/html"), "insights_application_exits", "/dwh/Q",
         config=lambda c: c["insights"].update(max_tries=2)),
]

CASES = ALATION_CASES + SCUBA_CASES + INSIGHTS_CASES


@pytest.fixture(scope="module")
def sandboxes() -> t.Iterator[dict[str, Sandbox]]:
    started: dict[str, Sandbox] = {}
    try:
        for family in ("alation", "scuba", "insights"):
            started[family] = Sandbox(seed=3, scale=0.05, services=[family]).start()
        yield started
    finally:
        for sb in started.values():
            sb.stop()


def check_one_error(result: t.Any, case: Case) -> str:
    output = result.stderr
    assert result.returncode == 1, f"exit {result.returncode}: {output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    lines = [x for x in output.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(lines) == 1, f"{lines!r}\n{output[-2000:]}"
    line = lines[0]
    assert case.stream in line, f"stream {case.stream!r} not named: {line}"
    assert case.path in line, f"URL path {case.path!r} not named: {line}"
    assert len(line) < 800, f"not a short line: {len(line)} chars"
    everything = output + "\n".join(json.dumps(m) for m in result.messages)
    for secret in SECRETS:
        assert secret not in everything, f"a secret leaked: {line}"
    return line


@pytest.mark.parametrize("case", CASES, ids=[f"{c.family}-{c.id}" for c in CASES])
def test_unexpected_body_is_one_clear_line(sandboxes: dict[str, Sandbox], case: Case) -> None:
    sb = sandboxes[case.family]
    service = sb.services[case.family]
    served: list[str] = []

    def script(request: Request) -> Response | None:
        if not case.match(request):
            return None
        served.append(request.path)
        return case.answer(request)

    service.faults = Faults(override=script)
    try:
        config = sb.config()
        if case.config:
            case.config(config)
        result = run_cli(config, timeout=300)
    finally:
        service.faults = Faults()
    assert served, "the scripted answer was never asked for: the case tests nothing"
    check_one_error(result, case)


@pytest.mark.parametrize("family", ["alation", "scuba", "insights"])
def test_the_same_sandboxes_sync_cleanly_without_the_script(
    sandboxes: dict[str, Sandbox], family: str
) -> None:
    # The failures above come from the scripted answers, not from the sandboxes.
    result = run_cli(sandboxes[family].config(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.records
