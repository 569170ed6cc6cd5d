"""Insights reports downloaded from OpenSSH's own sshd (not the sandbox's paramiko server).

The sandbox's Insights HTTP service writes the report files into the home directory of a
dedicated test user (`export_dir`); `sshd -D -f <own config>` serves them with
internal-sftp on 127.0.0.1, host key pinned in `insights.sftp.host_key`, password and
key login. Needs root (the user is created with useradd) and `openssh-server`
(`scripts/test` and `.ci/run` install it); skipped with the reason otherwise.
"""

from __future__ import annotations

import datetime as dt
import os
import typing as t

import pytest

from helpers import run_cli
from tap_analytics.sandbox import DATA_START, Sandbox
from tap_analytics.sandbox.sshd import OpenSshSftp, unavailable_reason

pytestmark = pytest.mark.sshd

APP = "insights_application_exits"


@pytest.fixture(scope="module")
def sshd() -> t.Iterator[OpenSshSftp]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"OpenSSH sshd test: {reason}")
    with OpenSshSftp() as server:
        yield server


@pytest.fixture
def exported(fresh_sandbox: t.Callable[..., Sandbox], sshd: OpenSshSftp) -> Sandbox:
    sandbox = fresh_sandbox(services=["insights"])
    sandbox.insights.export_dir = sshd.home
    sandbox.insights.rows_per_file = 60  # several files per window
    return sandbox


def _config(sandbox: Sandbox, sftp: dict | None) -> dict:
    config = sandbox.config()
    block = config["insights"]
    block["reports"] = [r for r in block["reports"] if r["name"] == "application_exits"]
    if sftp is not None:
        block["sftp"] = sftp
    config["start_date"] = DATA_START.isoformat()
    config["end_date"] = (DATA_START + dt.timedelta(days=2)).isoformat()
    return config


def _rows(result: t.Any) -> list[dict]:
    rows = []
    for record in result.records[APP]:
        record = dict(record)
        record.pop("source_file")  # named after the query id and the time
        rows.append(record)
    return rows


@pytest.mark.parametrize("login", ["password", "key"])
def test_reports_download_from_openssh_sshd(exported: Sandbox, sshd: OpenSshSftp,
                                            login: str) -> None:
    sftp = sshd.sftp_config(password=login == "password", key=login == "key")
    result = run_cli(_config(exported, sftp))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "NOT verified" not in result.stderr  # the host key is pinned
    # the files came from sshd's disk, the user's tree
    files = {r["source_file"] for r in result.records[APP]}
    assert len(files) >= 4
    for name in files:
        assert os.path.isfile(os.path.join(sshd.home, name)), name
    # the same rows as through the sandbox's own SFTP server
    reference = run_cli(_config(exported, None))
    assert reference.returncode == 0, reference.stderr[-2000:]
    assert _rows(result) == _rows(reference)
    assert len(_rows(result)) > 200
    assert result.final_state["bookmarks"][APP]["replication_key_value"] == \
        "2024-01-03T00:00:00.000000+00:00"


def test_a_wrong_host_key_is_refused(exported: Sandbox, sshd: OpenSshSftp) -> None:
    sftp = sshd.sftp_config()
    # the sandbox's paramiko server key: a valid key, not this server's
    sftp["host_key"] = exported.config()["insights"]["sftp"]["host_key"]
    result = run_cli(_config(exported, sftp))
    assert result.returncode == 1
    assert "insights.sftp.host_key" in result.stderr
    assert sshd.password not in result.stderr


def test_the_channel_window_holds_every_read_request_in_flight(sshd: OpenSshSftp) -> None:
    """The read-ahead keeps READ_AHEAD bytes of requests in flight; a receive window
    smaller than that (paramiko's default, 2 MiB) made sshd wait for window adjusts that
    only come as the reader's thread gets the GIL (62-146 vs 181-210 MB/s here)."""
    from tap_analytics.insights.sftp import READ_AHEAD, SftpSession

    session = SftpSession(sshd.sftp_config(), timeout=30)
    try:
        channel = session.connect().get_channel()
        assert channel is not None
        assert channel.in_window_size >= READ_AHEAD
        assert channel.in_max_packet_size >= 32768
    finally:
        session.close()
