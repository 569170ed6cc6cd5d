"""The Alation sandbox is faithful to the API doc (so the tap's tests mean something)."""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest
import requests

from tap_analytics.sandbox import ALATION_TOKEN, DATA_END, DATA_START, Sandbox


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(seed=3, services=["alation"]) as sandbox:
        yield sandbox


def get(sb: Sandbox, path: str, token: str | None = ALATION_TOKEN, header: str = "TOKEN",
        **params: t.Any) -> requests.Response:
    headers = {header: token} if token is not None else {}
    return requests.get(f"{sb.alation.url}/integration/v1{path}", headers=headers,
                        params=params, timeout=10)


def test_token_header_and_its_403_bodies(sb: Sandbox) -> None:
    assert get(sb, "/query/", token=None).json() == {"detail": "Missing API token."}
    bad = get(sb, "/query/", token="nope")
    assert bad.status_code == 403 and bad.json() == {"detail": "Invalid API token."}
    assert get(sb, "/query/", header="token", limit=1).status_code == 200
    assert get(sb, "/query/", header="Token", limit=1).status_code == 200


def test_both_timestamp_styles_are_served(sb: Sandbox) -> None:
    event = sb.alation.data["execution_event"][0]
    session = sb.alation.data["execution_session"][0]
    assert event["ts_executed"].endswith("Z") and "T" in event["ts_executed"]
    assert session["ts_start"][10] == " " and session["ts_start"].endswith("+00:00")


def test_data_is_in_range_and_references_are_real(sb: Sandbox) -> None:
    data = sb.alation.data
    batches = {b["id"]: b for b in data["execution_batch"]}
    sessions = {s["id"] for s in data["execution_session"]}
    queries = {q["id"] for q in data["query"]}
    for event in data["execution_event"]:
        assert DATA_START <= instant(event["ts_executed"]) < DATA_END
        batch = batches[event["batch_id"]]
        assert event["session_id"] == batch["session_id"] in sessions
        assert event["query_id"] == batch["query_id"] in queries
        assert {"id": event["id"], "index_in_batch": event["index_in_batch"]} in batch["events"]


def test_paging_with_limit_and_skip(sb: Sandbox) -> None:
    first = get(sb, "/query/execution_event/", limit=7, skip=0).json()
    second = get(sb, "/query/execution_event/", limit=7, skip=7).json()
    ids = [e["id"] for e in sb.alation.data["execution_event"]]
    assert [e["id"] for e in first + second] == ids[:14]
    assert get(sb, "/query/execution_event/", limit="x").status_code == 400


def test_timestamp_filters_compare_instants_not_strings(sb: Sandbox) -> None:
    # Sessions are served as "YYYY-MM-DD HH:MM:SS.ffffff+00:00"; filter with the Z style.
    session = sb.alation.data["execution_session"][40]
    as_z = instant(session["ts_start"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    gte = {s["id"] for s in get(sb, "/query/execution_session/", ts_start__gte=as_z).json()}
    gt = {s["id"] for s in get(sb, "/query/execution_session/", ts_start__gt=as_z).json()}
    expected = {s["id"] for s in sb.alation.data["execution_session"]
                if instant(s["ts_start"]) >= instant(session["ts_start"])}
    assert gte == expected and session["id"] in gte and gt == gte - {
        s["id"] for s in sb.alation.data["execution_session"]
        if instant(s["ts_start"]) == instant(session["ts_start"])}
    # A raw '+' arrives as a space: the server rejects it, as Alation would.
    raw = f"{sb.alation.url}/integration/v1/query/execution_session/?ts_start__gte=" \
          "2024-01-02T00:00:00+00:00"
    bad = requests.get(raw, headers={"TOKEN": ALATION_TOKEN}, timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("Invalid value(s) [")
    assert "for URL parameter 'ts_start__gte'" in bad.json()["error"]


@pytest.mark.parametrize(
    ("path", "params", "check"),
    [
        ("/query/execution_event/", {"db_username__iexact": "xyz"},
         lambda r: r["db_username"] == "Xyz"),
        ("/query/execution_event/", {"db_username__exact": "Xyz"},
         lambda r: r["db_username"] == "Xyz"),
        ("/query/execution_event/", {"execution_error__isnull": "false"},
         lambda r: r["execution_error"] is not None),
        ("/query/", {"content__icontains": "update"}, lambda r: "update" in r["content"].lower()),
        ("/query/", {"content__contains": "UPDATE"}, lambda r: "UPDATE" in r["content"]),
        ("/query/", {"title__istartswith": "q1"}, lambda r: r["title"].lower().startswith("q1")),
        ("/query/", {"title__endswith": "Results"}, lambda r: r["title"].endswith("Results")),
        ("/query/", {"content__iregex": "^select.*employee"},
         lambda r: r["content"].lower().startswith("select * from default.employee")),
        ("/query/", {"has_unsaved_changes": "false", "saved": "true"},
         lambda r: r["saved"] is True and r["has_unsaved_changes"] is False),
        ("/query/", {"id": "3"}, lambda r: r["id"] == 3),
        ("/query/execution_session/", {"query_id__gt": "50"}, lambda r: r["query_id"] > 50),
        ("/query/execution_batch/", {"session_id__lt": "20"}, lambda r: r["session_id"] < 20),
        ("/query/execution_event/", {"result_storage_status": "STORED_PART"},
         lambda r: (r["result"] or {}).get("storage_status") == "STORED_PART"),
        ("/query/execution_session/", {"ts_start__day": "3", "ts_start__hour": "5"},
         lambda r: instant(r["ts_start"]).day == 3 and instant(r["ts_start"]).hour == 5),
        ("/query/scheduled_run/", {"ts_sent_to_broker__gt": "2024-01-03",
                                   "ts_sent_to_broker__lt": "2024-01-04"},
         lambda r: instant(r["ts_sent_to_broker"]).day == 3),
        ("/query/execution_event/", {"result_ts_created__gte": "2024-01-06T00:00:00Z"},
         lambda r: r["result"] is not None
         and instant(r["result"]["ts_created"]) >= instant("2024-01-06T00:00:00Z")),
    ],
)
def test_filter_operators(sb: Sandbox, path: str, params: dict, check: t.Callable) -> None:
    response = get(sb, path, **params)
    assert response.status_code == 200, response.text
    rows = response.json()
    assert rows, "the filter should match something in the generated data"
    assert all(check(r) for r in rows)
    unfiltered = get(sb, path).json()
    assert len(rows) == sum(1 for r in unfiltered if check(r)) < len(unfiltered)


@pytest.mark.parametrize(
    ("path", "params", "error"),
    [
        ("/query/execution_event/", {"result_storage_status": "LOST"},
         "Invalid value(s) ['LOST'] for URL parameter 'result_storage_status'"),
        ("/query/execution_event/", {"ts_executed__gte": "yesterday"},
         "Invalid value(s) ['yesterday'] for URL parameter 'ts_executed__gte'"),
        ("/query/", {"id__gt": "three"}, "Invalid value(s) ['three'] for URL parameter 'id__gt'"),
        ("/query/", {"order_by": "ts_last_saved"},
         "Invalid value(s) ['ts_last_saved'] for URL parameter 'order_by'"),
        ("/query/", {"order_by": "id", "schedule_enabled": "true"},
         'Ordering with "id" may not be used with filtering on "schedule_enabled"'),
    ],
)
def test_bad_requests_answer_400_with_the_docs_body(
    sb: Sandbox, path: str, params: dict, error: str
) -> None:
    response = get(sb, path, **params)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)


def test_orderings(sb: Sandbox) -> None:
    runs = get(sb, "/query/scheduled_run/").json()  # default: ts_sent_to_broker
    times = [instant(r["ts_sent_to_broker"]) for r in runs]
    assert times == sorted(times) and len(runs) == len(sb.alation.data["scheduled_run"])
    saved = get(sb, "/query/", order_by="-last_saved_at").json()
    times = [instant(q["ts_last_saved"]) for q in saved]
    assert times == sorted(times, reverse=True)
    assert [q["id"] for q in get(sb, "/query/", order_by="id").json()] == sorted(
        q["id"] for q in sb.alation.data["query"])


def test_single_objects_per_query_lists_sql_and_results(sb: Sandbox) -> None:
    event = sb.alation.data["execution_event"][10]
    assert get(sb, f"/query/execution_event/{event['id']}/").json() == event
    assert get(sb, "/query/execution_batch/999999/").json() == {"detail": "Not found."}
    query_id = event["query_id"]
    assert get(sb, f"/query/{query_id}/").json()["id"] == query_id
    for kind in ("execution_session", "execution_batch", "execution_event"):
        rows = get(sb, f"/query/{query_id}/{kind}/").json()
        assert rows and all(r["query_id"] == query_id for r in rows)
    sql = get(sb, f"/query/{query_id}/sql/")
    assert sql.headers["Content-Type"].startswith("text/plain")
    assert sql.text == sb.alation.by_id["query"][query_id]["content"]
    with_result, no_result, missing = sb.alation.result_query_ids[0], *sb.alation.result_query_ids[3:]
    latest = get(sb, f"/query/{with_result}/result/latest/").json()
    assert set(latest) == {"id", "truncated", "execution_event"}
    csv_text = get(sb, f"/result/{latest['id']}/csv/").text
    assert csv_text.splitlines()[0] == "flag,count,name,note,my_column"
    assert get(sb, f"/query/{no_result}/result/latest/").json() == {
        "detail": f"Could not get latest query result ID for query ID {no_result}"}
    assert get(sb, f"/query/{missing}/result/latest/").json() == {"detail": "Not found."}


def test_add_newer_records_is_newer_everywhere() -> None:
    with Sandbox(seed=3, scale=0.2, services=["alation"]) as sandbox:
        service = sandbox.alation
        before = {k: list(v) for k, v in service.data.items()}
        service.add_newer_records(2)
        fields = {"query": "ts_last_saved", "execution_session": "ts_start",
                  "execution_event": "ts_executed", "scheduled_run": "ts_sent_to_broker"}
        for kind, rows in service.data.items():
            new = rows[len(before[kind]):]
            assert len(new) == 2, kind
            if kind in fields:
                latest_old = max(instant(r[fields[kind]]) for r in before[kind])
                assert all(instant(r[fields[kind]]) > latest_old for r in new), kind
            if kind != "scheduled_run":
                assert min(r["id"] for r in new) > max(r["id"] for r in before[kind])
        # Served at once (no stale cache).
        served = get(sandbox, "/query/execution_event/").json()
        assert [e["id"] for e in served][-2:] == [e["id"] for e in service.data[
            "execution_event"][-2:]]
