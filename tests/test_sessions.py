"""common/sessions.py: one requests.Session per worker thread, made like the template."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from tap_analytics.common.sessions import ThreadSessions


def _template() -> requests.Session:
    session = requests.Session()
    session.verify = "/etc/ssl/private-ca.pem"
    session.cert = ("/tmp/client.pem", "/tmp/client.key")
    session.proxies = {"https": "http://proxy.example:3128"}
    session.trust_env = False
    session.headers["X-Test"] = "1"
    return session


def test_each_thread_gets_its_own_session_made_like_the_template() -> None:
    template = _template()
    sessions = ThreadSessions(template)
    assert sessions.current() is None  # the caller's thread has none: it uses its own
    barrier = threading.Barrier(3)

    def bind(_: int) -> tuple[int, requests.Session]:
        session = sessions.for_this_thread()
        assert sessions.for_this_thread() is session  # the same one on the same thread
        assert sessions.current() is session
        barrier.wait(timeout=10)  # three threads at once: three sessions
        return threading.get_ident(), session

    with ThreadPoolExecutor(max_workers=3) as pool:
        bound = list(pool.map(bind, range(3)))
    made = {id(session) for _, session in bound}
    assert len(made) == 3 and sessions.count == 3
    assert id(template) not in made
    for _, session in bound:
        assert session.verify == "/etc/ssl/private-ca.pem"
        assert session.cert == ("/tmp/client.pem", "/tmp/client.key")
        assert session.proxies == {"https": "http://proxy.example:3128"}
        assert session.proxies is not template.proxies
        assert session.trust_env is False
        assert session.headers["X-Test"] == "1"
    assert sessions.current() is None


def test_close_closes_every_session_once() -> None:
    sessions = ThreadSessions(_template())
    closed: list[int] = []

    barrier = threading.Barrier(2)

    def bind(_: int) -> None:
        session = sessions.for_this_thread()
        original = session.close
        session.close = lambda: (closed.append(id(session)), original())  # type: ignore[method-assign]
        barrier.wait(timeout=10)  # two threads at once: two sessions

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(bind, range(2)))
    assert sessions.count == 2
    sessions.close()
    sessions.close()  # a second close is harmless
    assert len(closed) == len(set(closed)) == 2
    assert sessions.count == 0
