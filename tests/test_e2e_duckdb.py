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
    PER_RUN_FIELDS,
    Expected,
    MeltanoProject,
    date_time_properties,
    expected_sync,
    json_value,
    make_meltano_project,
    norm,
    samples,
    sandbox_env,
    scalar_properties,
)
from e2e_support import available_services as services

pytestmark = pytest.mark.e2e

SCHEMA = "analytics"
STATE_ID = "sandbox:tap-analytics-to-target-duckdb"


@pytest.fixture(scope="session")
def meltano_project(tmp_path_factory: pytest.TempPathFactory) -> MeltanoProject:
    return make_meltano_project(tmp_path_factory.mktemp("meltano"))


@pytest.fixture(scope="module")
def expected() -> Expected:
    return expected_sync()


def _counts(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = ?",
            [SCHEMA]).fetchall()]
        return {name: con.execute(f'select count(*) from {SCHEMA}."{name}"').fetchone()[0]
                for name in tables}


def _check_warehouse(db: Path, expected: Expected) -> None:
    records = expected.result.records
    with duckdb.connect(str(db), read_only=True) as con:
        for stream in expected.streams:
            schema = expected.result.schemas[stream]
            keys = expected.key_properties[stream]
            rows = records.get(stream, [])
            columns = {name: typ for name, typ in con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = ? and table_name = ?", [SCHEMA, stream]).fetchall()}
            assert columns, f"{stream}: no table in the warehouse"
            for prop in date_time_properties(schema):
                assert columns.get(prop, "").upper().startswith("TIMESTAMP"), (
                    f"{stream}.{prop} is {columns.get(prop)!r}, not a timestamp")
            count = con.execute(f'select count(*) from {SCHEMA}."{stream}"').fetchone()[0]
            assert count == len(rows), f"{stream}: {count} rows loaded, tap emitted {len(rows)}"
            if keys:
                key_sql = ", ".join(f'"{k}"' for k in keys)
                loaded = {tuple(norm(v) for v in r) for r in con.execute(
                    f'select {key_sql} from {SCHEMA}."{stream}"').fetchall()}
                emitted = {tuple(norm(r[k]) for k in keys) for r in rows}
                assert len(emitted) == len(rows), f"{stream}: the tap emitted a key twice"
                assert loaded == emitted, f"{stream}: keys differ"
            scalars = [p for p in scalar_properties(schema) if p in columns]
            nested = [p for p in schema["properties"]
                      if p not in scalars and p in columns and p not in PER_RUN_FIELDS]
            for record in samples(rows):
                where = " and ".join(f'"{k}" = ?' for k in keys) or "true"
                params = [record[k] for k in keys]
                cols = ", ".join(f'"{c}"' for c in scalars + nested)
                found = con.execute(f'select {cols} from {SCHEMA}."{stream}" where {where}',
                                    params).fetchall()
                assert len(found) == 1, f"{stream}: sample {params} found {len(found)} times"
                values = dict(zip(scalars + nested, found[0]))
                for prop in scalars:
                    want = record.get(prop)
                    if want == "":  # target-duckdb 0.8.0 loads "" as NULL (CSV COPY); README
                        want = None
                    assert norm(values[prop]) == norm(want), (
                        f"{stream}.{prop}: {values[prop]!r} != {record.get(prop)!r}")
                for prop in nested:
                    if record.get(prop) is not None:
                        assert json_value(values[prop]) == record[prop], f"{stream}.{prop}"


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

    first = meltano_project.run(*run, database=system_db, env=env)
    assert first.returncode == 0, first.tail()
    _check_warehouse(db, expected)
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
