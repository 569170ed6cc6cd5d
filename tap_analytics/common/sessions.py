"""One `requests.Session` per worker thread (requests.Session is not thread-safe).

`ThreadSessions(template)` hands each thread that asks (`for_this_thread()`) a session of
its own, made like the template (TLS `verify` / CA bundle, client certificate, proxies,
`trust_env`, default headers); `current()` is that thread's session or None (the stream's
own session is used then); `close()` closes them all, once the workers have stopped.
Requests are still prepared by the stream (auth, headers): a worker only sends them.
"""

from __future__ import annotations

import threading

import requests


class ThreadSessions:
    def __init__(self, template: requests.Session) -> None:
        self._template = template
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []

    def current(self) -> requests.Session | None:
        """This thread's session, if it has one."""
        return getattr(self._local, "session", None)

    def for_this_thread(self) -> requests.Session:
        """This thread's session, made on first use."""
        session = self.current()
        if session is None:
            session = self._new_session()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _new_session(self) -> requests.Session:
        template = self._template
        session = requests.Session()
        session.verify = template.verify
        session.cert = template.cert
        session.proxies = dict(template.proxies)
        session.trust_env = template.trust_env
        session.headers.update(template.headers)
        return session

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


__all__ = ["ThreadSessions"]
