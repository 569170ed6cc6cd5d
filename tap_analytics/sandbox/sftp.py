"""A small paramiko SFTP server on 127.0.0.1 for the Insights sandbox (read-only).

Host key and a client key pair are generated per server (Ed25519). Auth: the sandbox
password, or the generated client key (so tests can try key auth). Files come from a
provider callback `provide(path) -> Served | None`, which may ask for faults: a file
served truncated, or the connection dropped once a read reaches an offset.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import typing as t
from dataclasses import dataclass

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

LOGGER = logging.getLogger("tap-analytics.sandbox.sftp")
MAX_CONNECTIONS = 64
SERVER_LOG = "tap-analytics.sandbox.sftp.paramiko"


@dataclass
class Served:
    """How one file is served: the local file, the size shown, where to drop."""

    local_path: str
    size: int
    drop_at: int | None = None  # close the connection when a read reaches this offset


def generate_key_text(kind: str = "ed25519") -> str:
    """A new private key as OpenSSH text ("ed25519", "ecdsa" or "rsa")."""
    if kind == "ed25519":
        key: t.Any = ed25519.Ed25519PrivateKey.generate()
    elif kind == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(kind)
    fmt = (serialization.PrivateFormat.OpenSSH if kind == "ed25519"
           else serialization.PrivateFormat.TraditionalOpenSSL)  # PEM for RSA/ECDSA
    return key.private_bytes(serialization.Encoding.PEM, fmt,
                             serialization.NoEncryption()).decode()


def load_key(text: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue
    raise ValueError("unreadable key")


def public_line(key: paramiko.PKey) -> str:
    """'ssh-ed25519 AAAA...': the form a user puts in `host_key`."""
    return f"{key.get_name()} {key.get_base64()}"


class _Auth(paramiko.ServerInterface):
    def __init__(self, server: SftpServer, transport: paramiko.Transport) -> None:
        self.server = server
        self.transport = transport

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        if username == self.server.username and password == self.server.password:
            return paramiko.AUTH_SUCCESSFUL
        self.server.auth_failures += 1
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.server.username and any(
            key.asbytes() == k.asbytes() for k in self.server.authorized_keys
        ):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _Handle(paramiko.SFTPHandle):
    def __init__(self, served: Served, transport: paramiko.Transport) -> None:
        super().__init__(os.O_RDONLY)
        self.served = served
        self.transport = transport
        self.readfile = open(served.local_path, "rb")

    def stat(self) -> paramiko.SFTPAttributes:
        attrs = paramiko.SFTPAttributes()
        attrs.st_size = self.served.size
        attrs.st_mode = 0o100444
        return attrs

    def read(self, offset: int, length: int) -> bytes | int:
        drop_at = self.served.drop_at
        if drop_at is not None and offset + length > drop_at:
            # The connection "drops" mid-file: the socket goes away under the client.
            try:
                self.transport.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            except OSError:
                pass
            return paramiko.SFTP_CONNECTION_LOST
        length = max(0, min(length, self.served.size - offset))
        if length == 0:
            return b""
        return super().read(offset, length)


class _Sftp(paramiko.SFTPServerInterface):
    def __init__(self, server: _Auth, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.sandbox = server.server
        self.transport = server.transport

    def _served(self, path: str) -> Served | None:
        return self.sandbox.provide(path.lstrip("/"))

    def open(self, path: str, flags: int, attr: t.Any) -> t.Any:
        if flags & (os.O_WRONLY | os.O_RDWR):
            return paramiko.SFTP_PERMISSION_DENIED
        served = self._served(path)
        if served is None:
            return paramiko.SFTP_NO_SUCH_FILE
        self.sandbox.opens.append(path.lstrip("/"))
        return _Handle(served, self.transport)

    def stat(self, path: str) -> t.Any:
        served = self._served(path)
        if served is None:
            return paramiko.SFTP_NO_SUCH_FILE
        attrs = paramiko.SFTPAttributes()
        attrs.st_size = served.size
        attrs.st_mode = 0o100444
        return attrs

    lstat = stat

    def canonicalize(self, path: str) -> str:
        return "/" + path.lstrip("/")


class SftpServer:
    """Listens on 127.0.0.1 (random port) until `stop()`."""

    def __init__(self, provide: t.Callable[[str], Served | None], *, username: str,
                 password: str) -> None:
        self.provide = provide
        self.username = username
        self.password = password
        self.host_key = load_key(generate_key_text("ed25519"))
        self.client_key_text = generate_key_text("ed25519")
        self.authorized_keys = [load_key(self.client_key_text)]
        self.auth_failures = 0
        self.opens: list[str] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._transports: list[paramiko.Transport] = []
        self._lock = threading.Lock()

    def authorize(self, key_text: str) -> None:
        self.authorized_keys.append(load_key(key_text))

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("SFTP sandbox is not started")
        return int(self._sock.getsockname()[1])

    @property
    def host_key_line(self) -> str:
        return public_line(self.host_key)

    def start(self) -> SftpServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="sandbox-sftp", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            with self._lock:
                self._transports = [tr for tr in self._transports if tr.is_active()]
                if len(self._transports) >= MAX_CONNECTIONS:
                    conn.close()
                    continue
            conn.settimeout(None)
            transport = paramiko.Transport(conn)
            # Clients that hang up (or faults we inject) are normal here: no error spam.
            transport.set_log_channel(SERVER_LOG)
            logging.getLogger(SERVER_LOG).setLevel(logging.CRITICAL)
            transport.add_server_key(self.host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Sftp)
            with self._lock:
                self._transports.append(transport)
            try:
                transport.start_server(server=_Auth(self, transport))
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for transport in self._transports:
                transport.close()
            self._transports.clear()

