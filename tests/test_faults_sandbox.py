"""The sandbox's fault injection really happens, over HTTP/1.1 keep-alive with requests."""

from __future__ import annotations

import collections
import json
import typing as t

import pytest
import requests

from tap_analytics.sandbox.core import (
    Faults,
    Request,
    Response,
    Service,
    ServiceServer,
    json_response,
    text_response,
)


class EchoService(Service):
    """A minimal service: echoes the `n` parameter in a JSON body of some size."""

    name = "echo"

    def __init__(self, pad: int = 200) -> None:
        super().__init__()
        self.pad = pad

    def handle(self, request: Request) -> Response:
        return json_response({"n": request.param("n"), "pad": "x" * self.pad})


@pytest.fixture
def echo() -> t.Iterator[EchoService]:
    service = EchoService()
    server = ServiceServer(service).start()
    try:
        yield service
    finally:
        server.stop()


def classify(session: requests.Session, url: str) -> str:
    try:
        response = session.get(url, timeout=10)
    except requests.exceptions.ChunkedEncodingError:
        return "cut"
    except requests.exceptions.ConnectionError:
        return "reset"
    if response.status_code != 200:
        return str(response.status_code)
    try:
        body = response.json()
    except ValueError:
        return "malformed"
    return "ok" if isinstance(body, dict) and "n" in body else "wrong"


def run(service: EchoService, count: int, path: str = "/x") -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    with requests.Session() as session:  # one pooled keep-alive connection
        for i in range(count):
            counts[classify(session, f"{service.url}{path}?n={i}")] += 1
    return counts


def test_no_faults_by_default(echo: EchoService) -> None:
    counts = run(echo, 50)
    assert counts == {"ok": 50}
    assert len(echo.requests("/x")) == 50


def test_error_rate_answers_5xx_and_the_connection_stays_usable(echo: EchoService) -> None:
    echo.faults = Faults(error_rate=0.3, seed=3)
    counts = run(echo, 400)
    errors = {k: v for k, v in counts.items() if k not in ("ok",)}
    assert set(errors) <= {"500", "502", "503"}, counts
    assert set(errors) == {"500", "502", "503"}, "every status of the set occurs"
    # 30% of 400 = 120; a binomial spread of +-4 sigma (~37) is plenty.
    assert 83 <= sum(errors.values()) <= 157, counts
    assert counts["ok"] + sum(errors.values()) == 400
    # The log records what was answered.
    logged = collections.Counter(str(r.status) for r in echo.requests("/x") if r.status != 200)
    assert logged == collections.Counter(errors)


def test_reset_rate_drops_the_connection_and_the_pool_recovers(echo: EchoService) -> None:
    echo.faults = Faults(reset_rate=0.2, seed=5)
    counts = run(echo, 300)
    assert set(counts) == {"ok", "reset"}, counts
    assert 30 <= counts["reset"] <= 90, counts
    # Every reset is logged with status 0, and the next request on the session worked.
    assert sum(1 for r in echo.requests("/x") if r.status == 0) == counts["reset"]


def test_malformed_rate_cuts_json_bodies_of_200_answers(echo: EchoService) -> None:
    echo.faults = Faults(malformed_rate=0.25, seed=9)
    counts = run(echo, 200)
    assert set(counts) == {"ok", "malformed"}, counts
    assert 20 <= counts["malformed"] <= 80, counts


def test_truncate_rate_drops_the_connection_mid_body(echo: EchoService) -> None:
    echo.pad = 50_000  # big enough that the body is really sent in pieces
    echo.faults = Faults(truncate_rate=0.25, seed=11)
    counts = run(echo, 120)
    assert set(counts) == {"ok", "cut"}, counts
    assert 10 <= counts["cut"] <= 50, counts
    assert sum(1 for r in echo.requests("/x") if r.status == -200) == counts["cut"]


def test_latency_is_added_to_every_answer(echo: EchoService) -> None:
    # Measured through the server's own request log, not asserted against a clock budget.
    echo.faults = Faults(latency_seconds=0.05)
    with requests.Session() as session:
        for i in range(3):
            response = session.get(f"{echo.url}/x?n={i}", timeout=10)
            assert response.elapsed.total_seconds() >= 0.05
    assert len(echo.requests("/x")) == 3


def test_paths_limit_faults_to_matching_requests(echo: EchoService) -> None:
    echo.faults = Faults(error_rate=1.0, paths=("/bad/",))
    assert run(echo, 20, "/good/x") == {"ok": 20}
    assert set(run(echo, 20, "/bad/x")) <= {"500", "502", "503"}


def test_error_statuses_are_configurable(echo: EchoService) -> None:
    echo.faults = Faults(error_rate=1.0, error_statuses=(504,))
    assert run(echo, 10) == {"504": 10}


def test_override_scripts_unexpected_bodies(echo: EchoService) -> None:
    def script(request: Request) -> Response | None:
        n = int(request.param("n") or 0)
        if n == 1:
            return text_response("<html><body>Bad Gateway</body></html>", 200, "text/html")
        if n == 2:
            return json_response([{"n": 2}])  # a list where an object is expected
        if n == 3:
            return text_response("oops", 418)
        return None

    echo.faults = Faults(override=script)
    with requests.Session() as session:
        got = [session.get(f"{echo.url}/x?n={i}", timeout=10) for i in range(5)]
    assert got[0].json()["n"] == "0" and got[4].json()["n"] == "4"
    assert got[1].status_code == 200 and got[1].text.startswith("<html>")
    assert got[2].json() == [{"n": 2}]
    assert (got[3].status_code, got[3].text) == (418, "oops")


def test_faults_are_deterministic_per_seed() -> None:
    def pattern(seed: int) -> list[str]:
        service = EchoService()
        service.faults = Faults(error_rate=0.2, reset_rate=0.1, malformed_rate=0.1, seed=seed)
        server = ServiceServer(service).start()
        try:
            with requests.Session() as session:
                return [classify(session, f"{service.url}/x?n={i}") for i in range(60)]
        finally:
            server.stop()

    assert pattern(1) == pattern(1)
    assert pattern(1) != pattern(2)


def test_copy_keeps_every_setting_and_restarts_the_rng() -> None:
    def script(request: Request) -> Response | None:
        return None

    faults = Faults(error_rate=0.1, reset_rate=0.2, malformed_rate=0.3, latency_seconds=0.4,
                    truncate_rate=0.5, error_statuses=(502,), paths=("/a",), override=script,
                    seed=42)
    first = [faults.roll() for _ in range(5)]
    clone = faults.copy()
    assert clone is not faults
    for name in ("error_rate", "reset_rate", "malformed_rate", "latency_seconds",
                 "truncate_rate", "error_statuses", "paths", "override", "seed"):
        assert getattr(clone, name) == getattr(faults, name), name
    assert [clone.roll() for _ in range(5)] == first


def test_post_bodies_are_read_before_a_fault(echo: EchoService) -> None:
    # A fault must not leave an unread request body on a keep-alive connection
    # (the next request would be parsed from the leftover bytes).
    echo.faults = Faults(error_rate=0.5, seed=2)
    payload = json.dumps({"q": "x" * 5000})
    statuses = collections.Counter()
    with requests.Session() as session:
        for i in range(60):
            r = session.post(f"{echo.url}/x?n={i}", data=payload, timeout=10)
            statuses[r.status_code] += 1
            if r.status_code == 200:
                assert r.json()["n"] == str(i)
    assert statuses[200] and sum(v for k, v in statuses.items() if k != 200)
