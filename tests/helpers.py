"""Test helpers: run the tap (in-process or as the real CLI) and read its Singer output."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAP_EXE = str(Path(sys.executable).parent / "tap-analytics")


@dataclass
class SyncResult:
    messages: list[dict]
    stderr: str = ""
    returncode: int = 0
    records: dict[str, list[dict]] = field(default_factory=dict)
    states: list[dict] = field(default_factory=list)
    schemas: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def parse(cls, stdout: str, stderr: str = "", returncode: int = 0) -> SyncResult:
        messages = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        result = cls(messages=messages, stderr=stderr, returncode=returncode)
        for msg in messages:
            if msg["type"] == "RECORD":
                result.records.setdefault(msg["stream"], []).append(msg["record"])
            elif msg["type"] == "STATE":
                result.states.append(msg["value"])
            elif msg["type"] == "SCHEMA":
                result.schemas[msg["stream"]] = msg["schema"]
        return result

    @property
    def final_state(self) -> dict:
        return self.states[-1] if self.states else {}


def run_cli(
    config: dict,
    *,
    state: dict | None = None,
    catalog: dict | None = None,
    args: t.Sequence[str] = (),
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> SyncResult:
    """Run the real `tap-analytics` executable in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [TAP_EXE]
        paths = {"config": config, "state": state, "catalog": catalog}
        for name, value in paths.items():
            if value is not None:
                path = os.path.join(tmp, f"{name}.json")
                Path(path).write_text(json.dumps(value))
                cmd += [f"--{name}", path]
        cmd += list(args)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **(env or {})}, check=False,
        )
    return SyncResult.parse(
        proc.stdout if "--about" not in args and "--discover" not in args else "",
        proc.stderr, proc.returncode,
    ) if "--about" not in args and "--discover" not in args else SyncResult(
        messages=[], stderr=proc.stderr + "\n" + proc.stdout, returncode=proc.returncode
    )


def check_setting_flags(name: str, setting: dict, prop: dict) -> None:
    """A Meltano setting declared as its --about property: sensitive exactly when the
    property is a secret (not kind password), and described."""
    secret = bool(prop.get("secret") or prop.get("writeOnly"))
    assert bool(setting.get("sensitive")) == secret, f"{name}: sensitive should be {secret}"
    assert setting.get("kind") != "password", f"{name}: use sensitive, not kind password"
    assert setting.get("description"), f"{name}: no description"


def sync_bytes(config: dict, *, catalog: dict | None = None) -> bytes:
    """A full sync in this process through a binary stdout (as the CLI's: the fast
    writer's byte path, not run_inprocess's text stdout); stdout as bytes."""
    from tap_analytics.common.writer import FastSingerWriter
    from tap_analytics.tap import TapAnalytics

    tap = TapAnalytics(config=config, catalog=catalog, parse_env_config=False,
                       validate_config=True)
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    with contextlib.redirect_stdout(out):
        tap.sync_all()
        if isinstance(tap.message_writer, FastSingerWriter):
            tap.message_writer.flush()
        out.flush()
    return raw.getvalue()


def run_inprocess(config: dict, *, state: dict | None = None,
                  catalog: dict | None = None) -> SyncResult:
    """Run a full sync in this process (faster; exceptions propagate)."""
    from tap_analytics.tap import TapAnalytics

    tap = TapAnalytics(config=config, state=state, catalog=catalog,
                       parse_env_config=False, validate_config=True)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tap.sync_all()
    return SyncResult.parse(buffer.getvalue())
