"""The sandbox's HTTP machinery: one threaded server per service, a request log,
and fault injection (5xx, latency, connection resets, malformed bodies).

A service subclasses `Service` and implements `handle(request) -> Response`.
"""

from __future__ import annotations

import dataclasses
import json
import random
import socket
import struct
import threading
import time
import typing as t
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    time: float

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> t.Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: Fault injection may corrupt or reset only responses that allow it.
    faultable: bool = True


def json_response(obj: t.Any, status: int = 200, **kw: t.Any) -> Response:
    return Response(status=status, body=json.dumps(obj).encode(), **kw)


def text_response(text: str, status: int = 200, content_type: str = "text/plain") -> Response:
    return Response(status=status, body=text.encode(), content_type=content_type)


@dataclass
class Faults:
    """Fault injection, per service. Rates are probabilities per request (0..1)."""

    error_rate: float = 0.0  # answer 500/502/503 instead
    reset_rate: float = 0.0  # close the connection without an answer (RST)
    malformed_rate: float = 0.0  # cut a 200 JSON body in half
    latency_seconds: float = 0.0  # added to every answer
    seed: int = 0
    #: Announce the full Content-Length, send half the body, drop the connection
    #: (a transfer cut mid-body: the client sees an incomplete read).
    truncate_rate: float = 0.0
    #: Statuses that `error_rate` picks from.
    error_statuses: tuple[int, ...] = (500, 502, 503)
    #: Only requests whose path starts with one of these prefixes get faults (empty: all).
    paths: tuple[str, ...] = ()
    #: Scripted answers: called with each request before the service; a Response it
    #: returns is sent as is (e.g. an HTML error page, a wrong-shaped body).
    override: t.Callable[[Request], Response | None] | None = field(default=None, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def roll(self) -> float:
        with self._lock:
            return self._rng.random()

    def applies_to(self, path: str) -> bool:
        return not self.paths or any(path.startswith(p) for p in self.paths)

    @property
    def active(self) -> bool:
        return bool(
            self.error_rate or self.reset_rate or self.malformed_rate or self.latency_seconds
            or self.truncate_rate or self.override
        )

    def copy(self) -> Faults:
        """A fresh Faults with the same settings (and a fresh RNG from the same seed)."""
        return Faults(**{
            f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if not f.name.startswith("_")
        })


@dataclass
class LoggedRequest:
    service: str
    method: str
    path: str
    query: dict[str, list[str]]
    time: float
    status: int  # 0: connection reset before answering; -N: status N, body cut mid-transfer


class Service:
    """A stand-in API. Subclasses set `name` and implement `handle`."""

    name = "service"

    def __init__(self) -> None:
        self.faults = Faults()
        self.log: list[LoggedRequest] = []
        self.lock = threading.RLock()
        self.server: ServiceServer | None = None

    def handle(self, request: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError(f"{self.name} sandbox is not started")
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def requests(self, path_prefix: str = "", method: str | None = None) -> list[LoggedRequest]:
        with self.lock:
            return [
                r for r in self.log
                if r.path.startswith(path_prefix) and (method is None or r.method == method)
            ]

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK
    # stall every keep-alive answer by ~40 ms.
    disable_nagle_algorithm = True
    server: ServiceServer

    def log_message(self, format: str, *args: t.Any) -> None:
        return  # quiet

    def _serve(self) -> None:
        service = self.server.service
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            time=time.time(),
        )
        faults = service.faults
        faulty = faults.applies_to(request.path)
        if faults.latency_seconds and faulty:
            time.sleep(faults.latency_seconds)
        if faulty and faults.override is not None:
            scripted = faults.override(request)
            if scripted is not None:
                self._log(service, request, scripted.status)
                self._send(scripted)
                return
        if faulty and faults.reset_rate and faults.roll() < faults.reset_rate:
            self._log(service, request, 0)
            self._reset()
            return
        if faulty and faults.error_rate and faults.roll() < faults.error_rate:
            statuses = faults.error_statuses or (500,)
            status = statuses[int(faults.roll() * len(statuses)) % len(statuses)]
            self._log(service, request, status)
            self._send(Response(status=status, body=b"<html>Bad gateway</html>",
                                content_type="text/html"))
            return
        try:
            response = service.handle(request)
        except Exception as exc:
            response = json_response({"error": "Server error", "message": repr(exc)}, 500)
        if (
            faulty
            and response.faultable
            and response.status == 200
            and faults.malformed_rate
            and faults.roll() < faults.malformed_rate
        ):
            response.body = response.body[: max(1, len(response.body) // 2)]
        if (
            faulty
            and response.faultable
            and response.status == 200
            and len(response.body) > 1
            and faults.truncate_rate
            and faults.roll() < faults.truncate_rate
        ):
            self._log(service, request, -response.status)
            self._send(response, cut=True)
            return
        self._log(service, request, response.status)
        self._send(response)

    def _log(self, service: Service, request: Request, status: int) -> None:
        with service.lock:
            service.log.append(
                LoggedRequest(service.name, request.method, request.path, request.query,
                              request.time, status)
            )

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
        except OSError:
            pass

    def _send(self, response: Response, *, cut: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            if cut:  # half the announced body, then the connection drops
                self.wfile.write(response.body[: len(response.body) // 2])
                self.wfile.flush()
                self._reset()
                return
            self.wfile.write(response.body)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve


class ServiceServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        super().__init__((host, port), _Handler)
        service.server = self
        self._thread: threading.Thread | None = None

    def start(self) -> ServiceServer:
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"sandbox-{self.service.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)
