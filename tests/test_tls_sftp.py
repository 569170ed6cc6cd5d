"""SFTP transport security (Insights report files): the server key is verified when
`insights.sftp.host_key` is set, a loud warning names the unverified server when it is not,
and no report file is left on disk after a sync."""

from __future__ import annotations

import os
import typing as t
from pathlib import Path

import pytest
from helpers import run_cli

from tap_analytics.sandbox import Sandbox
from tap_analytics.sandbox.sftp import generate_key_text, load_key, public_line


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(seed=3, scale=0.05, services=["insights"]) as sandbox:
        yield sandbox


def error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith("tap-analytics: error:")]


def report_rows(result: t.Any) -> int:
    return sum(len(v) for k, v in result.records.items() if k != "insights_fields")


def test_a_different_server_key_is_refused(sb: Sandbox) -> None:
    config = sb.config()
    config["insights"]["sftp"]["host_key"] = public_line(load_key(generate_key_text("ed25519")))
    result = run_cli(config)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-2000:]
    assert "insights.sftp.host_key" in lines[0]
    assert f"127.0.0.1:{sb.insights.sftp.port}" in lines[0], lines[0]
    assert report_rows(result) == 0, "no row may come from an unverified server"


def test_the_configured_server_key_is_accepted_silently(sb: Sandbox) -> None:
    result = run_cli(sb.config())
    assert result.returncode == 0, result.stderr[-2000:]
    assert report_rows(result) > 0
    assert "NOT verified" not in result.stderr


def test_without_host_key_a_loud_warning_names_the_server_and_its_key(sb: Sandbox) -> None:
    config = sb.config()
    del config["insights"]["sftp"]["host_key"]
    result = run_cli(config)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [x for x in result.stderr.splitlines() if "NOT verified" in x]
    assert len(warnings) == 1, result.stderr[-2000:]
    assert f"127.0.0.1:{sb.insights.sftp.port}" in warnings[0]
    # The warning shows the key the server presented, ready to paste into host_key.
    assert sb.insights.sftp.host_key_line.split()[1] in warnings[0]


def test_no_report_file_is_left_on_disk(sb: Sandbox, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    result = run_cli(sb.config(), env={"TMPDIR": str(tmpdir), "HOME": str(home)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert report_rows(result) > 0
    left = [str(p) for p in (*tmpdir.rglob("*"), *home.rglob("*"))]
    assert not left, f"files left behind: {left[:10]}"
    assert not any(name.endswith((".csv.gz", ".csv")) for name in os.listdir("."))
