"""SFTP access to the Insights report files (paramiko).

Password or private key (PEM / OpenSSH text: RSA, ECDSA, Ed25519); the server key is
checked against `host_key` when given ('ssh-ed25519 AAAA...'), else a loud warning once.
Files are read as a bounded, pipelined stream (`SftpStream`, read ahead on a helper
thread): no local copy, no whole file in memory.
"""

from __future__ import annotations

import base64
import collections
import io
import logging
import queue
import socket
import threading
import typing as t

import paramiko
from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, int64

from tap_analytics.common.errors import ConfigError, TapAnalyticsError
from tap_analytics.common.prefetch import put_unless_stopped

LOGGER = logging.getLogger("tap-analytics.insights.sftp")


def quiet_prefetch_thread_errors() -> None:
    """paramiko's `readv` sends its read requests from a thread of its own ("Thread-N
    (_prefetch_thread)"). When the connection drops, that thread dies on the closed socket
    and Python prints its traceback on stderr; the reader sees the same drop and downloads
    the file again (or says so in one line), so the traceback is noise: one DEBUG line
    instead. Any other thread's error goes to the hook that was there before."""
    previous = threading.excepthook
    if getattr(previous, "tap_analytics_quiet", False):
        return

    def hook(args: t.Any) -> None:
        thread = args.thread
        if (thread is not None and thread.name.endswith("(_prefetch_thread)")
                and isinstance(args.exc_value, (OSError, EOFError, paramiko.SSHException))):
            LOGGER.debug("SFTP read-ahead thread of paramiko stopped: %s", args.exc_value)
            return
        previous(args)

    hook.tap_analytics_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook
PARAMIKO_LOG = "tap-analytics.insights.sftp.paramiko"

#: Bytes requested per pipelined batch (128 requests of 32 KiB). While the reader's
#: thread is busy, paramiko's threads get the GIL less often: more requests in flight
#: keep the download ahead (1 MiB batches gave half the MB/s on a busy 2-core machine).
READ_AHEAD = 128 * 32768
#: The SSH channel's receive window. paramiko's default, 2 MiB, is half of READ_AHEAD: the
#: server stopped sending until paramiko's transport thread gave window back, which it
#: does as answers are taken, i.e. when the reader's thread gets the GIL. 128 MiB from
#: OpenSSH's sshd, alternated: 62-146 MB/s with 2 MiB, 181-210 MB/s with 8 MiB. What is
#: in flight stays bounded by READ_AHEAD (the requests sent), not by the window.
CHANNEL_WINDOW = 2 * READ_AHEAD
#: Blocks of 32 KiB the read-ahead thread may hold for the reader (4 MiB).
QUEUE_BLOCKS = 128
_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


class SftpDropped(Exception):
    """The SFTP connection broke while reading (retry the file from the start)."""


def load_private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    """A paramiko key from PEM / OpenSSH private key text (RSA, ECDSA or Ed25519)."""
    text = text.strip().replace("\\n", "\n") + "\n"
    last: Exception | None = None
    for cls in _KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException as exc:
            raise ConfigError("insights.sftp.private_key_passphrase",
                              "is required: the private key is encrypted") from exc
        except (paramiko.SSHException, ValueError, TypeError, IndexError) as exc:
            last = exc
    raise ConfigError(
        "insights.sftp.private_key",
        "is not a readable RSA, ECDSA or Ed25519 private key (PEM or OpenSSH text)"
        + (" or the passphrase is wrong" if passphrase else ""),
    ) from last


def parse_host_key(text: str) -> tuple[str, bytes]:
    """'ssh-ed25519 AAAA... [comment]' (or a known_hosts line) -> (key type, key blob)."""
    parts = text.split()
    for i, part in enumerate(parts[:-1]):
        if part.startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                blob = base64.b64decode(parts[i + 1], validate=True)
            except ValueError:
                break
            return part, blob
    raise ConfigError("insights.sftp.host_key",
                      "must look like 'ssh-ed25519 AAAA...' (key type, base64 key)")


class SftpSession:
    """One SFTP connection; `open_stream(path)` gives a file-like binary stream."""

    _warned_unverified = False

    def __init__(self, sftp_config: t.Mapping[str, t.Any], *, timeout: float = 60) -> None:
        self.host = str(sftp_config.get("host") or "")
        self.port = int(sftp_config.get("port") or 22)
        self.username = str(sftp_config.get("username") or "")
        self.password = sftp_config.get("password") or None
        key_text = sftp_config.get("private_key") or None
        self.pkey = (load_private_key(key_text, sftp_config.get("private_key_passphrase"))
                     if key_text else None)
        self.expected = parse_host_key(sftp_config["host_key"]) if sftp_config.get(
            "host_key") else None
        if not self.password and not self.pkey:
            raise ConfigError("insights.sftp", "needs a password or a private_key")
        self.timeout = timeout
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None

    @property
    def where(self) -> str:
        return f"sftp://{self.host}:{self.port}"

    def connect(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._transport is not None and self._transport.is_active():
            return self._sftp
        self.close()
        quiet_prefetch_thread_errors()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise SftpDropped(f"cannot connect to {self.where}: {exc.strerror or exc}") from exc
        transport = paramiko.Transport(sock, default_window_size=CHANNEL_WINDOW)
        # paramiko logs every connect at INFO under "paramiko": keep its chatter to warnings.
        transport.set_log_channel(PARAMIKO_LOG)
        logging.getLogger(PARAMIKO_LOG).setLevel(logging.WARNING)
        transport.banner_timeout = self.timeout
        transport.handshake_timeout = self.timeout
        if self.expected:
            # Ask for the configured key type so a server with several keys shows that one.
            options = transport.get_security_options()
            if self.expected[0] in options.key_types:
                options.key_types = (self.expected[0],)
        try:
            transport.start_client(timeout=self.timeout)
            self._check_host_key(transport.get_remote_server_key())
            self._authenticate(transport)
            self._sftp = paramiko.SFTPClient.from_transport(transport)
        except TapAnalyticsError:
            transport.close()
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            raise SftpDropped(f"SSH handshake with {self.where} failed: {exc}") from exc
        self._transport = transport
        if self._sftp is None:  # pragma: no cover - paramiko returns None only on failure
            raise SftpDropped(f"no SFTP channel on {self.where}")
        self._sftp.get_channel().settimeout(self.timeout)
        return self._sftp

    def _check_host_key(self, key: paramiko.PKey) -> None:
        if self.expected is None:
            if not SftpSession._warned_unverified:
                SftpSession._warned_unverified = True
                LOGGER.warning(
                    "WARNING: the SFTP server %s is NOT verified (no insights.sftp.host_key "
                    "set); it presents %s %s. Set host_key to that value to verify it.",
                    self.where, key.get_name(), key.get_base64(),
                )
            return
        kind, blob = self.expected
        if key.get_name() != kind or key.asbytes() != blob:
            raise TapAnalyticsError(
                "insights.sftp.host_key",
                f"the server {self.where} presented a different key ({key.get_name()} "
                f"{key.get_fingerprint().hex()[:16]}...) than configured: refusing to connect "
                "(check the host or update host_key)",
            )

    def _authenticate(self, transport: paramiko.Transport) -> None:
        try:
            if self.pkey is not None:
                try:
                    transport.auth_publickey(self.username, self.pkey)
                except paramiko.AuthenticationException:
                    if not self.password:
                        raise
                    transport.auth_password(self.username, self.password)
            else:
                transport.auth_password(self.username, self.password)
        except paramiko.AuthenticationException as exc:
            raise TapAnalyticsError(
                "insights.sftp",
                f"authentication as '{self.username}' on {self.where} failed "
                "(check username, password / private_key)",
            ) from exc

    def open_stream(self, path: str) -> SftpStream:
        sftp = self.connect()
        try:
            handle = sftp.open(path, "rb")
            size = handle.stat().st_size
        except FileNotFoundError as exc:
            raise TapAnalyticsError(f"{self.where}/{path}", "report file not found") from exc
        except PermissionError as exc:
            raise TapAnalyticsError(f"{self.where}/{path}", "permission denied") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.close()
            raise SftpDropped(f"{path}: {exc}") from exc
        return SftpStream(handle, int(size or 0), self)

    def close(self) -> None:
        for thing in (self._sftp, self._transport):
            if thing is not None:
                try:
                    thing.close()
                except Exception:
                    pass
        self._sftp = None
        self._transport = None


_REQUEST = 32768  # bytes per read request (what every SFTP server accepts)


class _Responses:
    """Read requests sent on one SFTP client and their answers, by request number
    (paramiko's request layer: `_async_request` / `_read_response`, which its own
    SFTPFile uses; answers may come in any order)."""

    def __init__(self, client: paramiko.SFTPClient) -> None:
        self.client = client
        self.answers: dict[int, bytes | BaseException] = {}

    def ask(self, handle: bytes, offset: int, length: int) -> int:
        return self.client._async_request(self, CMD_READ, handle, int64(offset),
                                          int(length))

    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:
        """paramiko: the answer to another request of ours came while we waited."""
        self.answers[num] = self._data(kind, msg)

    def _data(self, kind: int, msg: paramiko.Message) -> bytes | BaseException:
        if kind == CMD_DATA:
            return msg.get_binary()
        if kind == CMD_STATUS:
            try:
                self.client._convert_status(msg)  # raises EOFError, IOError...
            except Exception as exc:
                return exc
        return SftpDropped(f"unexpected SFTP answer {kind} to a read")

    def take(self, num: int) -> bytes:
        """The data of request `num` (waiting for it); its error raised."""
        answer = self.answers.pop(num, None)
        while answer is None:
            kind, msg = self.client._read_response(num)
            if kind is not None:
                answer = self._data(kind, msg)
            else:
                answer = self.answers.pop(num, None)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class SftpStream(io.RawIOBase):
    """A remote file as a raw binary stream, read ahead on a helper thread.

    The helper thread keeps `READ_AHEAD` bytes of 32 KiB read requests in flight (`_fetch`)
    and puts the blocks in a bounded queue (`QUEUE_BLOCKS`):
    the download of the next blocks runs while the reader decompresses and emits the
    current ones, and memory stays flat (at most the queue plus one batch in flight).
    Any transport failure becomes `SftpDropped` in the reader (distinct from gzip's own
    EOFError); closing the stream stops the helper.
    """

    def __init__(self, handle: paramiko.SFTPFile, size: int, session: SftpSession) -> None:
        super().__init__()
        self.handle = handle
        self.size = size
        self.session = session
        self.offset = 0  # next byte requested by the helper
        self.delivered = 0  # bytes handed to the reader
        self._buffer = b""
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUE_BLOCKS)
        self._stop = threading.Event()
        self._helper = threading.Thread(target=self._fetch, daemon=True,
                                        name="insights-sftp-read-ahead")
        self._helper.start()

    def readable(self) -> bool:
        return True

    def _put(self, item: bytes | BaseException | None) -> bool:
        """Queue an item for the reader; False when the stream was closed meanwhile."""
        return put_unless_stopped(self._queue, item, self._stop)

    def _fetch(self) -> None:
        """The helper thread: every block of the file in order, then None (EOF).

        The pipeline is ours, on this one thread: up to `READ_AHEAD` bytes of 32 KiB read
        requests in flight, the responses taken in file order. paramiko's own `readv` /
        `prefetch` sends from a second thread and marks the prefetch done whenever the
        responses catch up with the requests sent so far; the rest of the file is then
        read one synchronous request at a time (seen here: 4 MiB at ~37 ms per 32 KiB,
        a 4 s stall in one run of three).
        """
        try:
            client = self.handle.sftp
            responses = _Responses(client)
            window = max(1, READ_AHEAD // _REQUEST)
            pending: collections.deque[tuple[int, int, int]] = collections.deque()
            offset = 0
            while (offset < self.size or pending) and not self._stop.is_set():
                while offset < self.size and len(pending) < window:
                    length = min(_REQUEST, self.size - offset)
                    pending.append((responses.ask(self.handle.handle, offset, length),
                                    offset, length))
                    offset += length
                self.offset = offset
                num, at, length = pending.popleft()
                block = responses.take(num)
                while len(block) < length:  # a server may answer with fewer bytes
                    more = responses.take(responses.ask(self.handle.handle, at + len(block),
                                                        length - len(block)))
                    if not more:
                        raise SftpDropped("short read")
                    block += more
                if not self._put(block):
                    return
            self._put(None)
        except SftpDropped as exc:
            self._put(exc)
        except (TimeoutError, paramiko.SSHException, EOFError, OSError) as exc:
            self._put(SftpDropped(f"connection lost after {self.offset} bytes: {exc}"))
        except Exception as exc:  # anything else: the reader raises it
            self._put(exc)

    def readinto(self, buffer: t.Any) -> int:
        if not self._buffer:
            if self.delivered >= self.size:
                return 0
            item = self._next_item()
            if isinstance(item, BaseException):
                if isinstance(item, SftpDropped):
                    self.session.close()
                raise item
            if item is None:
                if self.delivered < self.size:
                    self.session.close()
                    raise SftpDropped(f"connection lost after {self.delivered} bytes")
                return 0
            self._buffer = item
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        self.delivered += n
        return n

    def _next_item(self) -> bytes | BaseException | None:
        # Bounded: the helper always ends with an item (data, an error or None) unless the
        # connection hangs, which paramiko's channel timeout turns into an error.
        while True:
            try:
                return self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self._helper.is_alive() and self._queue.empty():
                    return SftpDropped(f"the read-ahead stopped after {self.delivered} bytes")

    def close(self) -> None:
        self._stop.set()
        if self._helper.is_alive() and threading.current_thread() is not self._helper:
            self._helper.join(timeout=5)
        try:
            self.handle.close()
        except Exception:
            pass
        super().close()
