"""SIGKILL + resume for the window streams (Scuba, Insights): nothing lost, at most one
window repeats. Same method as test_resume_kill.py: the real executable, stdout read line by
line, killed after N lines (seeded), re-run from the last STATE it printed."""

from __future__ import annotations

import collections
import json
import random
import typing as t

import pytest
from helpers import SyncResult, run_cli
from test_faults_sync import RUN_DEPENDENT
from test_resume_kill import incremental_streams, last_state, run_killed

from tap_analytics.sandbox import Sandbox

SEEDS = list(range(15))


def row_id(record: dict) -> str:
    return json.dumps({k: v for k, v in record.items() if k not in RUN_DEPENDENT},
                      sort_keys=True)


@pytest.fixture(scope="module", params=["scuba", "insights"])
def family_runs(request: pytest.FixtureRequest) -> t.Iterator[dict]:
    family = request.param
    with Sandbox(seed=5, scale=0.1, services=[family]) as sb:
        config = sb.config()
        if family == "scuba":
            # Not what is tested here: let queries go back to back (the limiter and the
            # sandbox's 1 query/s rule have their own tests).
            sb.scuba.per_second = False
            config["scuba"]["min_seconds_between_queries"] = 0
        full = run_cli(config, timeout=600)
        assert full.returncode == 0, full.stderr[-2000:]
        runs = []
        for seed in SEEDS:
            kill_after = random.Random(seed).randrange(1, len(full.messages))
            lines, killed = run_killed(config, kill_after, timeout=300)
            first = SyncResult.parse("".join(lines))
            state = last_state(lines)
            second = run_cli(config, state=state, timeout=600)
            runs.append({"seed": seed, "kill_after": kill_after, "killed": killed,
                         "first": first, "state": state, "second": second})
        yield {"family": family, "full": full, "runs": runs, "config": config}


def test_kills_happened_mid_sync(family_runs: dict) -> None:
    runs = family_runs["runs"]
    assert sum(r["killed"] for r in runs) >= len(SEEDS) - 1
    assert sum(r["state"] is not None for r in runs) >= 3


def test_nothing_is_lost_after_a_kill_and_a_resume(family_runs: dict) -> None:
    full: SyncResult = family_runs["full"]
    for run in family_runs["runs"]:
        second = run["second"]
        assert second.returncode == 0, (run["seed"], second.stderr[-1500:])
        assert "Traceback" not in second.stderr
        for stream, records in full.records.items():
            wanted = collections.Counter(row_id(r) for r in records)
            got = collections.Counter(row_id(r) for res in (run["first"], second)
                                      for r in res.records.get(stream, []))
            lost = wanted - got
            assert not lost, (
                f"seed {run['seed']} (killed after {run['kill_after']} lines, state "
                f"{json.dumps(run['state'])[:300]}): {stream} lost {sum(lost.values())} "
                f"records, e.g. {list(lost)[:2]}"
            )


def test_at_most_one_window_repeats_after_a_kill(family_runs: dict) -> None:
    problems = []
    for run in family_runs["runs"]:
        first, second = run["first"], run["second"]
        repeated_windows = set()
        duplicates = 0
        for stream in incremental_streams(first) | incremental_streams(second):
            counts = collections.Counter(row_id(r) for res in (first, second)
                                         for r in res.records.get(stream, []))
            for res in (first, second):
                for record in res.records.get(stream, []):
                    if counts[row_id(record)] > 1:
                        repeated_windows.add((stream, record.get("window_start")))
            duplicates += sum(n - 1 for n in counts.values() if n > 1)
        if len(repeated_windows) > 1:
            problems.append((run["seed"], run["kill_after"], duplicates,
                             sorted(repeated_windows, key=str)))
    assert not problems, (
        f"{family_runs['family']}: more than one window repeated after a kill "
        f"(seed, kill after N lines, duplicates, windows): {problems}"
    )


def test_a_re_run_from_the_final_state_emits_no_window_again(family_runs: dict) -> None:
    full: SyncResult = family_runs["full"]
    again = run_cli(family_runs["config"], state=full.final_state, timeout=600)
    assert again.returncode == 0, again.stderr[-1500:]
    repeated = {s: len(again.records.get(s, [])) for s in incremental_streams(full)}
    assert not any(repeated.values()), f"a no-change run re-emitted records: {repeated}"
