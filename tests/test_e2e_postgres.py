"""`meltano run tap-analytics target-postgres` (meltanolabs-target-postgres) into a real
PostgreSQL started from Debian's binaries on a free 127.0.0.1 port; checked against the
tap's own run of the same sandbox. A second run loads nothing new.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from e2e_support import (
    Expected,
    MeltanoProject,
    Postgres,
    check_warehouse,
    sandbox_env,
    start_postgres,
)
from e2e_support import available_services as services

pytestmark = pytest.mark.e2e

SCHEMA = "analytics"
STATE_ID = "sandbox:tap-analytics-to-target-postgres"


@pytest.fixture(scope="module")
def postgres() -> t.Iterator[Postgres]:
    yield from start_postgres()


def test_meltano_into_postgres_then_nothing_new(
    meltano_project: MeltanoProject, expected: Expected, postgres: Postgres,
    fresh_sandbox: t.Callable, tmp_path: Path,
) -> None:
    assert expected.streams, "the tap discovered no stream for the sandbox"
    sb = fresh_sandbox(seed=7, services=services())
    system_db = tmp_path / "meltano.db"
    env = {
        **sandbox_env(sb),
        **postgres.target_env(),
    }
    run = ("--environment=sandbox", "run", "tap-analytics", "target-postgres")

    first = meltano_project.run(*run, database=system_db, env=env)
    assert first.returncode == 0, first.tail()
    with postgres.connect() as con:
        check_warehouse(lambda sql, params=(): con.execute(sql, list(params)).fetchall(),
                        "%s", SCHEMA, expected)
    after_first = postgres.row_counts(SCHEMA)
    for stream, count in expected.alation_counts.items():
        assert after_first[stream] == count, f"{stream}: warehouse differs from the sandbox"

    state = meltano_project.run("--environment=sandbox", "state", "get", STATE_ID,
                                database=system_db, env=env)
    assert state.returncode == 0 and '"bookmarks"' in state.stdout, state.tail()

    second = meltano_project.run(*run, database=system_db, env=env)
    assert second.returncode == 0, second.tail()
    assert postgres.row_counts(SCHEMA) == after_first, "the second run changed the row counts"
    emitted = second.record_counts()
    assert set(expected.streams) <= set(emitted), "no record_count metric for some stream"
    for stream, props in expected.bookmark_properties.items():
        if props:
            assert emitted[stream] <= 1, f"{stream}: re-emitted {emitted[stream]}"
