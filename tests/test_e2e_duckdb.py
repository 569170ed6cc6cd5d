"""`meltano run tap-analytics target-duckdb` against the sandbox, with the real Meltano.

The warehouse must hold exactly what the tap emits for the sandbox (itself checked against
the sandbox's data by the family tests; Alation's counts are checked here too): every
stream a table, every key once, sample values equal, date-times typed as timestamps.
A second run loads nothing new; after the sandbox grows, a third run loads exactly that.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import duckdb
import pytest
from e2e_support import (
    Expected,
    MeltanoProject,
    check_warehouse,
    sandbox_env,
)
from e2e_support import available_services as services

pytestmark = pytest.mark.e2e

SCHEMA = "analytics"
STATE_ID = "sandbox:tap-analytics-to-target-duckdb"


def _counts(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = ?",
            [SCHEMA]).fetchall()]
        return {name: con.execute(f'select count(*) from {SCHEMA}."{name}"').fetchone()[0]
                for name in tables}


def test_meltano_into_duckdb_then_incremental(
    meltano_project: MeltanoProject, expected: Expected, fresh_sandbox: t.Callable,
    tmp_path: Path,
) -> None:
    assert expected.streams, "the tap discovered no stream for the sandbox"
    sb = fresh_sandbox(seed=7, services=services())
    db = tmp_path / "warehouse.duckdb"
    system_db = tmp_path / "meltano.db"
    env = {**sandbox_env(sb), "TARGET_DUCKDB_FILEPATH": str(db)}
    run = ("--environment=sandbox", "run", "tap-analytics", "target-duckdb")

    # Meltano discovers before every run: that must cost no request (Scuba's daily quota).
    catalog = meltano_project.run("--environment=sandbox", "invoke", "--dump=catalog",
                                  "tap-analytics", database=system_db, env=env)
    assert catalog.returncode == 0, catalog.tail()
    discovered = {s["tap_stream_id"] for s in json.loads(catalog.stdout)["streams"]}
    assert discovered == set(expected.streams)
    spent = {name: len(service.requests()) for name, service in sb.services.items()}
    assert not any(spent.values()), f"discovery sent requests: {spent}"

    first = meltano_project.run(*run, database=system_db, env=env)
    assert first.returncode == 0, first.tail()
    assert all(service.requests() for service in sb.services.values()), "request log is empty"
    with duckdb.connect(str(db), read_only=True) as con:
        check_warehouse(lambda sql, params=(): con.execute(sql, list(params)).fetchall(),
                        "?", SCHEMA, expected, empty_string_is_null=True)
    for stream, count in expected.alation_counts.items():
        assert _counts(db)[stream] == count, f"{stream}: warehouse differs from the sandbox"
    after_first = _counts(db)

    state = meltano_project.run("--environment=sandbox", "state", "get", STATE_ID,
                                database=system_db, env=env)
    assert state.returncode == 0, state.tail()
    bookmarks = json.loads(state.stdout)["singer_state"]["bookmarks"]
    for stream, props in expected.bookmark_properties.items():
        if props:
            assert stream in bookmarks, f"{stream}: no bookmark in Meltano's state"

    second = meltano_project.run(*run, database=system_db, env=env)
    assert second.returncode == 0, second.tail()
    assert _counts(db) == after_first, "the second run changed the row counts"
    emitted = second.record_counts()
    assert set(expected.streams) <= set(emitted), "no record_count metric for some stream"
    for stream, props in expected.bookmark_properties.items():
        if props:  # incremental: nothing new (at most the one boundary record of `>=`)
            assert emitted.get(stream, 0) <= 1, f"{stream}: re-emitted {emitted[stream]}"

    if "alation" in sb.services:
        sb.alation.add_newer_records(3)
        third = meltano_project.run(*run, database=system_db, env=env)
        assert third.returncode == 0, third.tail()
        now = _counts(db)
        for stream, kind in (("alation_queries", "query"),
                             ("alation_execution_events", "execution_event"),
                             ("alation_scheduled_runs", "scheduled_run")):
            assert now[stream] == len(sb.alation.data[kind]) == after_first[stream] + 3, stream
