"""The per-family jobs of meltano.yml (`alation`, `scuba`, `insights`) run side by side into
one PostgreSQL, as an orchestrator's workers would run them, and load exactly what one
combined `meltano run tap-analytics target-postgres` loads: the same tables, row counts and
keys. Each job keeps its own state, holding only its family's bookmarks.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from e2e_support import (
    Expected,
    MeltanoProject,
    MeltanoRun,
    Postgres,
    check_warehouse,
    sandbox_env,
    start_postgres,
)
from e2e_support import available_services as services

pytestmark = pytest.mark.e2e

COMBINED, SPLIT = "combined", "split"
FAMILIES = ("alation", "scuba", "insights")


@pytest.fixture(scope="module")
def postgres() -> t.Iterator[Postgres]:
    yield from start_postgres()


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) ", re.M)


def _span(run: MeltanoRun) -> tuple[dt.datetime, dt.datetime]:
    """First and last time stamp of a run's Meltano log."""
    stamps = [dt.datetime.fromisoformat(m.replace("Z", "+00:00"))
              for m in _STAMP.findall(run.stderr)]
    assert stamps, "no time stamp in the Meltano log"
    return min(stamps), max(stamps)


def _keys(pg: Postgres, schema: str, expected: Expected) -> dict[str, list[tuple]]:
    out = {}
    with pg.connect() as con:
        for stream in expected.streams:
            cols = ", ".join(f'"{k}"' for k in expected.key_properties[stream]) or "1"
            out[stream] = sorted(con.execute(
                f'select {cols} from {schema}."{stream}"').fetchall())
    return out


def test_family_jobs_side_by_side_load_what_one_run_loads(
    meltano_project: MeltanoProject, expected: Expected, postgres: Postgres,
    fresh_sandbox: t.Callable, tmp_path: Path,
) -> None:
    families = services()
    assert len(families) >= 2, f"needs two source families, has {families}"
    assert expected.streams, "the tap discovered no stream for the sandbox"
    sb = fresh_sandbox(seed=7, services=families)
    system_db = tmp_path / "meltano.db"
    env = {
        **sandbox_env(sb),
        **postgres.target_env(),
    }

    combined = meltano_project.run(
        "--environment=sandbox", "run", "tap-analytics", "target-postgres",
        database=system_db, env={**env, "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": COMBINED})
    assert combined.returncode == 0, combined.tail()

    # The jobs share one schema; it is created beforehand, as the README says: two targets
    # creating it at the same moment may collide (CREATE SCHEMA IF NOT EXISTS is not atomic).
    with postgres.connect() as con:
        con.execute(f"create schema {SPLIT}")
    split_env = {**env, "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": SPLIT}
    with ThreadPoolExecutor(max_workers=len(families)) as pool:
        runs = dict(zip(families, pool.map(
            lambda job: meltano_project.run("--environment=sandbox", "run", job,
                                            database=system_db, env=split_env),
            families), strict=True))
    for family, run in runs.items():
        assert run.returncode == 0, f"job {family}:\n{run.tail()}"
        emitted = set(run.record_counts())
        assert emitted and all(s.startswith(f"{family}_") for s in emitted), (family, emitted)
    # The premise: the jobs ran at the same time (each one's log overlaps another's).
    spans = {family: _span(run) for family, run in runs.items()}
    for family, (start, end) in spans.items():
        assert any(s < end and start < e for f, (s, e) in spans.items() if f != family), spans

    assert postgres.row_counts(SPLIT) == postgres.row_counts(COMBINED)
    assert _keys(postgres, SPLIT, expected) == _keys(postgres, COMBINED, expected)
    with postgres.connect() as con:
        check_warehouse(lambda sql, params=(): con.execute(sql, list(params)).fetchall(),
                        "%s", SPLIT, expected)

    schedules = meltano_project.run("schedule", "list", "--format=json",
                                    database=system_db, env=env)
    assert schedules.returncode == 0, schedules.tail()
    scheduled = {s["job"]["name"] for s in json.loads(schedules.stdout)["schedules"]["job"]}
    assert scheduled == set(FAMILIES), scheduled

    listed = meltano_project.run("--environment=sandbox", "state", "list",
                                 database=system_db, env=env)
    assert listed.returncode == 0, listed.tail()
    state_ids = set(listed.stdout.split())
    assert "sandbox:tap-analytics-to-target-postgres" in state_ids, listed.stdout
    for family in families:
        state_id = f"sandbox:tap-analytics--{family}-to-target-postgres"
        assert state_id in state_ids, listed.stdout
        state = meltano_project.run("--environment=sandbox", "state", "get", state_id,
                                    database=system_db, env=env)
        assert state.returncode == 0, state.tail()
        bookmarks = json.loads(state.stdout)["singer_state"].get("bookmarks", {})
        assert bookmarks, f"{state_id}: no bookmark"
        assert all(s.startswith(f"{family}_") for s in bookmarks), (state_id, list(bookmarks))
