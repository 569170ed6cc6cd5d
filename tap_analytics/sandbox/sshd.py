"""OpenSSH's own `sshd` as the Insights SFTP server (tests and benchmarks, not the demo).

    with OpenSshSftp() as server:          # root only: it creates a system user
        service.export_dir = server.home    # the Insights stand-in writes report files there
        config["insights"]["sftp"] = server.sftp_config(password=True)

`/usr/sbin/sshd -D -f <config>` from the OS package `openssh-server`, with its own config
in a temporary directory: 127.0.0.1 on a free port, its own Ed25519 host key (pinned in
`host_key`), `internal-sftp` forced (no shell), one dedicated user (`tap-sftp-test`,
created with useradd when missing, a random password set with chpasswd for each server)
who may log in with that password or with a fresh Ed25519 key. The system's sshd service,
its config and its host keys are never used or touched.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

SSHD = "/usr/sbin/sshd"
USER = "tap-sftp-test"


class Unavailable(RuntimeError):
    """sshd cannot run here (the reason says why)."""


def unavailable_reason(user: str = USER) -> str | None:
    """None when `OpenSshSftp` can start here, else why not (for a pytest skip)."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is not installed (Debian package openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed"
    if os.geteuid() != 0:
        return (f"not root: sshd needs root to switch to the test user '{user}' and the "
                "user cannot be created")
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpenSshSftp:
    def __init__(self, user: str = USER) -> None:
        self.user = user
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.home = ""
        self.host_key_line = ""
        self.client_key_text = ""
        self._tmp: str | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> OpenSshSftp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sftp_config(self, *, password: bool = True, key: bool = False) -> dict:
        """The tap's `insights.sftp` block for this server."""
        block: dict[str, t.Any] = {"host": "127.0.0.1", "port": self.port,
                                   "username": self.user, "host_key": self.host_key_line}
        if password:
            block["password"] = self.password
        if key:
            block["private_key"] = self.client_key_text
        return block

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> OpenSshSftp:
        reason = unavailable_reason(self.user)
        if reason:
            raise Unavailable(reason)
        self._tmp = tempfile.mkdtemp(prefix="tap-sshd-")
        tmp = Path(self._tmp)
        self._ensure_user()
        self.home = pwd.getpwnam(self.user).pw_dir
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                            "-f", str(tmp / name)], check=True, timeout=60)
        self.host_key_line = " ".join((tmp / "host_key.pub").read_text().split()[:2])
        self.client_key_text = (tmp / "client_key").read_text()
        ssh_dir = Path(self.home) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
        entry = pwd.getpwnam(self.user)
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        # sshd's privilege separation directory (the package makes it when the service
        # starts, which it never does here)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.port = _free_port()
        config = tmp / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {tmp / 'host_key'}",
            f"PidFile {tmp / 'sshd.pid'}",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "PasswordAuthentication yes",
            "PubkeyAuthentication yes",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin no",
            f"AllowUsers {self.user}",
            "Subsystem sftp internal-sftp",
            "ForceCommand internal-sftp",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "LogLevel ERROR",
            "",
        ]))
        log = tmp / "sshd.log"
        with open(log, "wb") as err:
            self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                          stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = log.read_text(errors="replace")
                self.stop()
                raise Unavailable(f"sshd exited at start: {err.strip()[:300]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise Unavailable("sshd did not listen within 20 s")

    def _ensure_user(self) -> None:
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin",
                            self.user], check=True, timeout=60, capture_output=True)
        subprocess.run(["chpasswd"], input=f"{self.user}:{self.password}\n".encode(),
                       check=True, timeout=60, capture_output=True)
        subprocess.run(["usermod", "--unlock", self.user], check=False, timeout=60,
                       capture_output=True)

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            self._proc = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
