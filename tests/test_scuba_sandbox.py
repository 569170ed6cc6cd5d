"""The Scuba stand-in answers as the docs say (the tap's tests are only as good as it is)."""

from __future__ import annotations

import json
import re
import typing as t

import pytest
import requests

from tap_analytics.sandbox import SCUBA_TOKEN, Sandbox

AUTH = {"Authorization": f"Token {SCUBA_TOKEN}"}
Q = {"dataset": "Music", "start": 1704067200000, "end": 1704153600000,
     "queries": [{"type": "single_measurement", "measure": {"aggregator": "count_star"}}],
     "group_by": ["artist"]}


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(seed=9, services=["scuba"]) as sandbox:
        yield sandbox


@pytest.fixture
def svc(sb: Sandbox) -> t.Any:
    service = sb.scuba
    service.reset_limits()
    service.per_second = False  # most checks here send queries back to back
    service.daily_limit = 1000
    service.timeout_once = set()
    service.fail_next_500 = 0
    return service


def get(svc: t.Any, query: t.Any, headers: dict | None = None) -> requests.Response:
    params = {"query": query if isinstance(query, str) else json.dumps(query)}
    return requests.get(f"{svc.url}/api/v1/query", params=params,
                        headers=AUTH if headers is None else headers, timeout=10)


def post(svc: t.Any, body: t.Any, headers: dict | None = None) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(f"{svc.url}/v1/query", data=data, timeout=10,
                         headers={**(AUTH if headers is None else headers),
                                  "Content-Type": "application/json"})


@pytest.mark.parametrize("query, message", [
    ({**Q, "end": Q["start"]}, "End time must be after start time"),
    ({k: v for k, v in Q.items() if k != "dataset"}, "Missing required field: dataset"),
    ({**Q, "queries": [{"measure": {"aggregator": "median", "column": "x"}}]},
     "Invalid aggregator: median"),
    ("{not json", "Malformed query parameter"),
    ({**Q, "group_by": ["nope"]}, "Unknown column"),
])
def test_v1_validation_400s(svc: t.Any, query: t.Any, message: str) -> None:
    resp = get(svc, query)
    assert resp.status_code == 400
    assert resp.json()["error"] == "Invalid parameter"
    assert message in resp.json()["message"]


@pytest.mark.parametrize("body, message", [
    ("{broken", "Malformed JSON"),
    ({"query_response_id": "r1", "result_format": "CSV"}, "Unknown query_response_id"),
    ({"bql": "select count(*) from Music", "query_response_id": "r9372",
      "result_format": "CSV"}, "Exactly one of"),
    ({"bql": "select count(*) from Music"}, "result_format is required"),
    ({"bql": "select count(*) from Music where time >= 5 and time < 5",
      "result_format": "CSV"}, "End time must be after start time"),
])
def test_post_validation_400s(svc: t.Any, body: t.Any, message: str) -> None:
    resp = post(svc, body)
    assert resp.status_code == 400
    assert message in resp.json()["message"]


def test_401_invalid_token(svc: t.Any) -> None:
    resp = post(svc, {"query_response_id": "r9372", "result_format": "CSV"},
                headers={"Authorization": "Token wrong"})
    assert resp.status_code == 401
    assert resp.json()["error"] == "Invalid token"


def test_per_second_and_per_day_429(svc: t.Any) -> None:
    svc.per_second = True
    assert get(svc, Q).status_code == 200
    quick = get(svc, Q)
    assert quick.status_code == 429
    assert "has been reached" not in quick.json()["message"]
    svc.per_second = False
    svc.daily_limit = 2
    assert get(svc, Q).status_code == 200  # 2nd counted query
    spent = get(svc, Q)
    assert spent.status_code == 429
    assert spent.json()["error"] == "Request limit exceeded"
    assert re.fullmatch(
        r"The request limit of 2 queries has been reached\. This token can be used for "
        r"requests on \d{4}-\d{2}-\d{2} 00:00:00", spent.json()["message"])


def test_504_once_then_from_cache_and_500(svc: t.Any) -> None:
    svc.timeout_once = {"Music"}
    first = get(svc, Q)
    assert first.status_code == 504 and first.json()["error"] == "Request timed out"
    again = get(svc, Q)
    assert again.status_code == 200 and svc.cache_hits == 1
    svc.timeout_once = set()
    svc.fail_next_500 = 1
    assert get(svc, Q).json() == {"error": "Server error",
                                  "message": "An unexpected error occurred"}
    assert get(svc, Q).status_code == 200


def test_answers_are_deterministic_and_additive(svc: t.Any) -> None:
    assert get(svc, Q).json() == get(svc, Q).json()
    series = {**Q, "queries": [{"type": "time_series", "measure": {"aggregator": "count_star"}}],
              "group_by": ["country"]}
    whole = get(svc, {**series, "end": Q["start"] + 2 * 86_400_000}).json()
    day1 = get(svc, series).json()
    day2 = get(svc, {**series, "start": Q["end"], "end": Q["end"] + 86_400_000}).json()

    def totals(answer: dict) -> dict[str, int]:
        return {row["values"][0][0]: sum(p["value"] for p in row["values"][1])
                for row in answer["rows"]}

    both = totals(day1)
    for key, value in totals(day2).items():
        both[key] = both.get(key, 0) + value
    assert totals(whole) == both


def test_post_formats_carry_the_same_rows(svc: t.Any) -> None:
    body = {"query_response_id": "r9373"}
    power_bi = post(svc, {**body, "result_format": "JSON_POWER_BI"}).json()
    default = post(svc, {**body, "result_format": "DEFAULT"}).json()
    text = post(svc, {**body, "result_format": "CSV"}).text
    lines = text.strip().split("\r\n")
    assert len(lines) - 1 == len(power_bi) == len(default["rows"]) > 0
    assert lines[0].split(",") == [c["label"] for c in default["columns"]]
    assert set(power_bi[0]) == {"measure 1", "measure 2", "start_time_0", "end_time_0",
                                "country"}
