"""Kill the tap (SIGKILL) at random points of a sync, re-run from the last STATE it emitted.

The real executable runs in a subprocess; its stdout is read line by line, as a target
would, and the process is killed after N lines (N from a seeded RNG). The second run starts
from the last STATE among those N lines. Across the seeds:
- nothing is lost: the union of the records of both runs covers the sandbox's data;
- at most one page repeats in the incremental streams (duplicates are counted).
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import typing as t
from pathlib import Path

import pytest
from helpers import TAP_EXE, SyncResult, run_cli
from test_faults_sync import alation_expected, record_key

from tap_analytics.sandbox import Sandbox

SEEDS = list(range(15))
PAGE_SIZE = 10


def run_killed(config: dict, kill_after: int, *, state: dict | None = None,
               timeout: float = 180) -> tuple[list[str], bool]:
    """Run the tap; read stdout line by line; SIGKILL it after `kill_after` lines.

    Returns the lines read and whether the kill happened (the tap may finish first).
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [TAP_EXE]
        for name, value in (("config", config), ("state", state)):
            if value is not None:
                path = Path(tmp, f"{name}.json")
                path.write_text(json.dumps(value))
                cmd += [f"--{name}", str(path)]
        with open(Path(tmp, "stderr.txt"), "wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
            watchdog = threading.Timer(timeout, proc.kill)  # a hung tap cannot hang the test
            watchdog.start()
            lines: list[str] = []
            killed = False
            try:
                assert proc.stdout is not None
                while len(lines) < kill_after:
                    raw = proc.stdout.readline()
                    if not raw:
                        break
                    lines.append(raw.decode())
                if len(lines) >= kill_after and proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
            finally:
                proc.stdout.close()  # type: ignore[union-attr]
                proc.wait(timeout=30)
                watchdog.cancel()
    return lines, killed


def last_state(lines: list[str]) -> dict | None:
    states = [json.loads(line)["value"] for line in lines
              if line.strip() and json.loads(line)["type"] == "STATE"]
    return states[-1] if states else None


@pytest.fixture(scope="module")
def alation_sandbox() -> t.Iterator[Sandbox]:
    with Sandbox(seed=5, scale=0.1, services=["alation"]) as sb:
        yield sb


@pytest.fixture(scope="module")
def full_run(alation_sandbox: Sandbox) -> tuple[dict, SyncResult]:
    config = alation_sandbox.config()
    config["alation"]["page_size"] = PAGE_SIZE
    result = run_cli(config)
    assert result.returncode == 0, result.stderr[-2000:]
    return config, result


@pytest.fixture(scope="module")
def kill_runs(alation_sandbox: Sandbox, full_run: tuple[dict, SyncResult]) -> list[dict]:
    """One kill + resume per seed (shared by the tests below: the runs are the cost)."""
    config, full = full_run
    total = len(full.messages)
    runs = []
    for seed in SEEDS:
        kill_after = random.Random(seed).randrange(1, total)
        lines, killed = run_killed(config, kill_after)
        first = SyncResult.parse("".join(lines))
        state = last_state(lines)
        second = run_cli(config, state=state)
        runs.append({"seed": seed, "kill_after": kill_after, "killed": killed,
                     "first": first, "state": state, "second": second})
    return runs


def incremental_streams(result: SyncResult) -> set[str]:
    return {m["stream"] for m in result.messages
            if m["type"] == "SCHEMA" and m.get("bookmark_properties")}


def test_the_runs_really_were_killed_mid_sync(kill_runs: list[dict]) -> None:
    assert sum(r["killed"] for r in kill_runs) >= len(SEEDS) - 1
    # Some kills came after a STATE, so some second runs really resumed from a bookmark.
    assert sum(r["state"] is not None for r in kill_runs) >= 3
    assert len({r["kill_after"] for r in kill_runs}) >= len(SEEDS) // 2


def test_nothing_is_lost_after_a_kill_and_a_resume(
    alation_sandbox: Sandbox, kill_runs: list[dict]
) -> None:
    expected = alation_expected(alation_sandbox.alation)
    for run in kill_runs:
        assert run["second"].returncode == 0, (run["seed"], run["second"].stderr[-1500:])
        assert "Traceback" not in run["second"].stderr
        for stream, wanted in expected.items():
            got = {record_key(stream, r) for res in (run["first"], run["second"])
                   for r in res.records.get(stream, [])}
            missing = set(wanted) - got
            assert not missing, (
                f"seed {run['seed']} (killed after {run['kill_after']} lines, "
                f"state {json.dumps(run['state'])[:300]}): {stream} lost {len(missing)} "
                f"records, e.g. {sorted(missing)[:5]}"
            )


def test_at_most_one_page_repeats_after_a_kill(kill_runs: list[dict]) -> None:
    report = []
    for run in kill_runs:
        first, second = run["first"], run["second"]
        streams = incremental_streams(second) | incremental_streams(first)
        dupes: collections.Counter = collections.Counter()
        for stream in streams:
            keys = collections.Counter(
                record_key(stream, r) for res in (first, second)
                for r in res.records.get(stream, []))
            dupes[stream] = sum(n - 1 for n in keys.values() if n > 1)
        total = sum(dupes.values())
        report.append((run["seed"], run["kill_after"], total, dict(+dupes)))
    too_many = [r for r in report if r[2] > PAGE_SIZE]
    assert not too_many, (
        f"more than one page ({PAGE_SIZE} records) repeated after a kill: "
        f"(seed, kill after N lines, duplicates, per stream) {too_many}"
    )


def test_a_resumed_run_re_run_from_its_final_state_emits_nothing_new(
    alation_sandbox: Sandbox, full_run: tuple[dict, SyncResult]
) -> None:
    config, full = full_run
    again = run_cli(config, state=full.final_state)
    assert again.returncode == 0, again.stderr[-1500:]
    repeated = {s: len(again.records.get(s, [])) for s in incremental_streams(full)}
    assert not any(repeated.values()), f"a no-change run re-emitted records: {repeated}"
