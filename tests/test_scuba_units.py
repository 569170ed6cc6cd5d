"""Scuba pure units: windows, placeholders, the limiter, entry validation, the exact
request built from a state, and the error taxonomy. No server, no waiting."""

from __future__ import annotations

import datetime as dt
import json
import typing as t
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.streams.rest import PageContext

from tap_analytics.common.errors import ConfigError
from tap_analytics.scuba.client import DailyQuotaSpent
from tap_analytics.scuba.limiter import QueryLimiter
from tap_analytics.scuba.windows import Window, plan_windows, render_bql
from tap_analytics.tap import TapAnalytics

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
TOKEN = "unit-token-abcdef-123"


def ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


# -- windows -------------------------------------------------------------------------------


def test_past_end_date_gives_a_short_last_window() -> None:
    now = dt.datetime(2025, 1, 1, tzinfo=UTC)
    plan = plan_windows(T0, T0 + dt.timedelta(days=2, hours=6), now, DAY)
    assert [(w.start, w.end) for w in plan] == [
        (T0, T0 + DAY), (T0 + DAY, T0 + 2 * DAY),
        (T0 + 2 * DAY, T0 + dt.timedelta(days=2, hours=6)),
    ]


def test_open_ended_or_future_end_queries_complete_windows_only() -> None:
    now = T0 + dt.timedelta(days=2, hours=5)
    for end in (None, now + 10 * DAY):
        plan = plan_windows(T0, end, now, DAY)
        assert [w.end for w in plan] == [T0 + DAY, T0 + 2 * DAY]
    assert plan_windows(T0 + 2 * DAY, None, now, DAY) == []  # the current day waits


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 400 * 24), st.integers(1, 90 * 24), st.integers(1, 24 * 30),
       st.booleans())
def test_windows_tile_the_range(span_h: int, size_h: int, lag_h: int, has_end: bool) -> None:
    end = T0 + dt.timedelta(hours=span_h)
    now = end + dt.timedelta(hours=lag_h) if has_end else end
    size = dt.timedelta(hours=size_h)
    plan = plan_windows(T0, end if has_end else None, now, size)
    if plan:
        assert plan[0].start == T0
    for a, b in zip(plan, plan[1:]):
        assert a.end == b.start
    assert all(w.end - w.start <= size and w.end > w.start for w in plan)
    covered = plan[-1].end if plan else T0
    if has_end:
        assert covered == end  # a past end_date is reached exactly
    else:
        assert covered <= end and end - covered < size  # only complete windows


def test_bql_placeholders_leave_other_braces_alone() -> None:
    bql = "select count(*) from M where x = '{a}' and time >= {{start_ms}} and t < {{ end_iso }}"
    window = Window(T0, T0 + DAY)
    assert render_bql(bql, window) == (
        f"select count(*) from M where x = '{{a}}' and time >= {ms(T0)} "
        f"and t < 2024-01-02T00:00:00Z"
    )


# -- the limiter ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_limiter_spaces_every_call_including_retries() -> None:
    clock = FakeClock()
    limiter = QueryLimiter(1.0, margin=0.1, clock=clock, sleep=clock.sleep, assume_recent=False)
    starts: list[float] = []
    attempts = iter([RuntimeError("504"), RuntimeError("504"), "ok", "ok"])

    def send() -> str:
        starts.append(clock.now)
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    limited = limiter.wrap(send)
    for _ in range(2):  # a first try and one retry, then success, then another query
        with pytest.raises(RuntimeError):
            limited()
    assert limited() == "ok"
    clock.now += 5.0  # a slow answer: no wait needed afterwards
    assert limited() == "ok"
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps[:2] == pytest.approx([1.1, 1.1])
    assert gaps[2] >= 1.1
    assert limiter.sent == 4
    assert len(clock.slept) == 2


# -- entries -------------------------------------------------------------------------------


def tap_for(queries: list[dict], state: dict | None = None, **extra: t.Any) -> TapAnalytics:
    config = {
        "start_date": "2024-01-01T00:00:00Z",
        "end_date": "2024-01-05T00:00:00Z",
        "scuba": {"base_url": "http://127.0.0.1:9", "api_token": TOKEN, "queries": queries,
                  **extra},
    }
    return TapAnalytics(config=config, state=state, parse_env_config=False,
                        validate_config=True)


@pytest.mark.parametrize("entry, setting, words", [
    ({"name": "x", "bql": "select 1", "query_response_id": "r1"}, "scuba.queries[0] (x)",
     "exactly one of"),
    ({"name": "x"}, "scuba.queries[0] (x)", "found: none"),
    ({"name": "x", "bql": "select * from M where t > {{start}}"}, "scuba.queries[0] (x).bql",
     "unknown placeholder {{start}}"),
    ({"name": "x", "query": {"dataset": "M", "queries": [
        {"measure": {"aggregator": "median", "column": "c"}}]}},
     "scuba.queries[0] (x).query.queries[0].measure.aggregator", "must be one of"),
    ({"name": "x", "query": {"dataset": "M", "start": 1, "queries": [
        {"measure": {"aggregator": "count_star"}}]}}, "scuba.queries[0] (x).query.start",
     "filled by the tap"),
    ({"name": "x", "query": {"queries": []}}, "scuba.queries[0] (x).query.dataset", "required"),
    ({"name": "x", "query_response_id": "r1", "key_properties": ["nope"]},
     "scuba.queries[0] (x).key_properties", "'nope' is not a field"),
    ({"name": "a b", "query_response_id": "r1"}, "scuba.queries[0].name", "letters"),
])
def test_entry_errors_name_the_setting(entry: dict, setting: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _ = tap_for([entry]).streams
    assert f"setting '{setting}'" in str(info.value)
    assert words in str(info.value)
    assert TOKEN not in str(info.value)


def test_duplicate_names_are_refused() -> None:
    entry = {"name": "x", "query_response_id": "r1"}
    with pytest.raises(ConfigError, match="used twice"):
        _ = tap_for([entry, dict(entry)]).streams


def test_declared_schema_keys_and_epoch_conversion() -> None:
    tap = tap_for([{"name": "d", "bql": "select 1 from M where t >= {{start_ms}}",
                    "schema": {"artist": {"type": "string"},
                               "measure_1": {"type": ["integer", "null"]},
                               "bucket": {"type": "string", "format": "date-time"}}}])
    stream = tap.streams["scuba_d"]
    assert stream.primary_keys == ["artist", "bucket", "window_start", "window_end"]
    assert stream.replication_key == "window_end"
    stream._window = Window(T0, T0 + DAY)
    record = stream._finish({"artist": "A", "measure_1": 2, "bucket": ms(T0)})
    assert record["bucket"] == "2024-01-01T00:00:00.000000+00:00"
    assert record["window_end"] == "2024-01-02T00:00:00.000000+00:00"


def test_undeclared_post_entry_is_open_and_keyless() -> None:
    stream = tap_for([{"name": "o", "query_response_id": "r1"}]).streams["scuba_o"]
    assert stream.schema.get("additionalProperties") is True
    assert list(stream.primary_keys or []) == []
    assert stream.replication_key is None


# -- requests from state ---------------------------------------------------------------------

V1 = {"dataset": "Music", "queries": [{"type": "time_series",
                                       "measure": {"aggregator": "count_star"}}],
      "group_by": ["artist"]}


def test_bookmark_sets_the_first_window_and_the_exact_request() -> None:
    state = {"bookmarks": {"scuba_v": {"replication_key": "window_end",
                                       "replication_key_value":
                                           "2024-01-03T00:00:00.000000+00:00"}}}
    stream = tap_for([{"name": "v", "query": V1}], state=state).streams["scuba_v"]
    plan = stream.planned_windows(now=dt.datetime(2025, 1, 1, tzinfo=UTC))
    assert [(w.start, w.end) for w in plan] == [(T0 + 2 * DAY, T0 + 3 * DAY),
                                                (T0 + 3 * DAY, T0 + 4 * DAY)]
    stream._window = plan[0]
    request = stream.get_http_request(page=PageContext(stream_context=None,
                                                        next_page_token=None))
    assert request.method == "GET"
    assert request.url == "http://127.0.0.1:9/api/v1/query"
    query = json.loads(parse_qs(urlsplit("?" + request.encode_params()).query)["query"][0])
    assert query == {**V1, "start": ms(T0 + 2 * DAY), "end": ms(T0 + 3 * DAY)}
    assert request.headers["Authorization"] == f"Token {TOKEN}"


def test_first_run_starts_at_start_date_and_bql_body() -> None:
    tap = tap_for([{"name": "b", "bql": "select count(*) from M where time >= {{start_ms}}",
                    "result_format": "CSV"}])
    stream = tap.streams["scuba_b"]
    plan = stream.planned_windows(now=dt.datetime(2025, 1, 1, tzinfo=UTC))
    assert len(plan) == 4 and plan[0].start == T0
    stream._window = plan[1]
    body = stream.prepare_request_payload(None, None)
    assert body == {"bql": f"select count(*) from M where time >= {ms(T0 + DAY)}",
                    "return_type": "data", "result_format": "CSV"}


# -- error taxonomy ---------------------------------------------------------------------------


def response(status: int, body: dict | str, path: str = "/v1/query") -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = (json.dumps(body) if isinstance(body, dict) else body).encode()
    resp.url = f"http://127.0.0.1:9{path}?token={TOKEN}"
    return resp


def test_error_taxonomy() -> None:
    stream = tap_for([{"name": "o", "query_response_id": "r1"}]).streams["scuba_o"]
    daily = response(429, {"error": "Request limit exceeded", "message": (
        "The request limit of 1000 queries has been reached. This token can be used for "
        "requests on 2016-03-18 00:00:00")})
    with pytest.raises(DailyQuotaSpent, match="2016-03-18"):
        stream.validate_response(daily)
    assert stream.runtime.daily_limit == 1000
    with pytest.raises(RetriableAPIError):
        stream.validate_response(response(429, {"error": "Request limit exceeded",
                                                "message": "1 query per second"}))
    for status in (500, 502, 504):
        with pytest.raises(RetriableAPIError):
            stream.validate_response(response(status, {"error": "Server error"}))
    with pytest.raises(FatalAPIError) as info:
        stream.validate_response(response(400, {"error": "Invalid parameter",
                                                "message": f"bad {TOKEN}"}))
    text = str(info.value)
    assert "scuba_o" in text and "HTTP 400" in text and "/v1/query" in text
    assert "Invalid parameter" in text and TOKEN not in text and "\n" not in text
    with pytest.raises(FatalAPIError, match="scuba.api_token"):
        stream.validate_response(response(401, {"error": "Invalid token", "message": "x"}))


def test_a_429_that_persists_stops_this_and_later_streams_without_queries() -> None:
    tap = tap_for([{"name": "a", "query": V1}, {"name": "b", "query_response_id": "r1"}])
    first, second = tap.streams["scuba_a"], tap.streams["scuba_b"]
    calls: list[str] = []

    def persistent_429(context: t.Any) -> t.Iterator[dict]:
        calls.append("a")
        raise RetriableAPIError("HTTP 429", response(429, {"error": "Request limit exceeded",
                                                          "message": "slow down"}))
        yield {}  # pragma: no cover

    def never(context: t.Any) -> t.Iterator[dict]:  # pragma: no cover - must not be called
        calls.append("b")
        yield {}

    first.request_records = persistent_429  # type: ignore[method-assign]
    second.request_records = never  # type: ignore[method-assign]
    assert list(first.get_records(None)) == []
    assert list(second.get_records(None)) == []
    assert calls == ["a"]
    assert len(tap.deferred_errors) == 1
    message = str(tap.deferred_errors[0])
    assert "scuba_a" in message and "429 persisted" in message and "0 of 4" in message


def test_setting_defaults_apply_and_overrides_win() -> None:
    from tap_analytics.scuba.settings import SETTINGS

    block = SETTINGS.to_dict()["scuba"]["properties"]
    stream = tap_for([{"name": "o", "query_response_id": "r1"}]).streams["scuba_o"]
    assert stream.backoff_max_tries() == block["max_tries"]["default"]
    assert stream.timeout == block["request_timeout_seconds"]["default"]
    tuned = tap_for([{"name": "o", "query_response_id": "r1"}], max_tries=2,
                    request_timeout_seconds=30).streams["scuba_o"]
    assert (tuned.backoff_max_tries(), tuned.timeout) == (2, 30)


def test_the_sdk_retries_go_through_the_limiter() -> None:
    import itertools

    stream = tap_for([{"name": "o", "query_response_id": "r1"}]).streams["scuba_o"]
    clock = FakeClock()
    stream.runtime.limiters[TOKEN] = QueryLimiter(1.0, margin=0.1, clock=clock,
                                                  sleep=clock.sleep, assume_recent=False)
    no_wait = lambda: (0.0 for _ in itertools.count())  # noqa: E731
    stream.backoff_wait_generator = no_wait  # type: ignore[method-assign]
    stream.backoff_jitter = lambda value: 0.0  # type: ignore[method-assign]
    sent: list[float] = []

    def send(*args: t.Any) -> str:
        sent.append(clock.now)
        if len(sent) < 3:
            raise RetriableAPIError("HTTP 504", response(504, {"error": "Request timed out"}))
        return "answer"

    assert stream.request_decorator(send)() == "answer"
    assert [b - a for a, b in zip(sent, sent[1:])] == pytest.approx([1.1, 1.1])
    assert stream.limiter.sent == 3


def test_limiter_spaces_from_the_end_of_a_slow_query() -> None:
    # The server counts arrivals, which happen anywhere between send and answer: only
    # spacing from the answer is safe whatever the delays.
    clock = FakeClock()
    limiter = QueryLimiter(1.0, margin=0.1, clock=clock, sleep=clock.sleep, assume_recent=False)
    spans: list[tuple[float, float]] = []

    def slow_query() -> None:
        begin = clock.now
        clock.now += 0.7  # the server answers after 0.7 s
        spans.append((begin, clock.now))

    limited = limiter.wrap(slow_query)
    for _ in range(3):
        limited()
    for (_, prev_end), (begin, _) in zip(spans, spans[1:]):
        assert begin - prev_end == pytest.approx(1.1)


def test_a_new_limiter_assumes_a_query_just_ended() -> None:
    # back-to-back runs (separate processes) must not meet within a second either
    clock = FakeClock()
    limiter = QueryLimiter(1.0, margin=0.1, clock=clock, sleep=clock.sleep)
    clock.now += 0.4  # the tap's own start-up
    assert limiter.acquire() == pytest.approx(0.7)
    limiter.release()
