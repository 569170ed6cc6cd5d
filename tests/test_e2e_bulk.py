"""`meltano run tap-analytics target-postgres` in BATCH mode (batch_config: jsonl.gz and
parquet): the Insights report streams hand their batch files (bulk.py) to
meltanolabs-target-postgres, the other streams the SDK's own batch files, and the
warehouse holds exactly the rows and values of the tap's RECORD mode run.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from e2e_support import (
    RUN_TIMEOUT,
    SEED,
    Expected,
    MeltanoProject,
    Postgres,
    check_warehouse,
    sandbox_env,
    start_postgres,
)
from e2e_support import available_services as services
from helpers import run_cli

from tap_analytics.sandbox import Sandbox

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def postgres() -> t.Iterator[Postgres]:
    yield from start_postgres()


@pytest.fixture(scope="module")
def insights_expected() -> Expected:
    """The RECORD mode run of the sandbox (Insights: several files per window)."""
    with Sandbox(seed=SEED, services=services()) as sb:
        sb.insights.rows_per_file = 50
        result = run_cli(sb.config(), timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    keys, bookmarks = {}, {}
    for msg in result.messages:
        if msg["type"] == "SCHEMA":
            keys[msg["stream"]] = list(msg.get("key_properties") or [])
            bookmarks[msg["stream"]] = list(msg.get("bookmark_properties") or [])
    return Expected(result, keys, bookmarks, {})


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_meltano_batch_mode_into_postgres_loads_every_row(
    meltano_project: MeltanoProject, insights_expected: Expected, postgres: Postgres,
    fresh_sandbox: t.Callable[..., Sandbox], tmp_path: Path, fmt: str,
) -> None:
    # every service: meltano.yml's sandbox environment configures all three blocks
    sb = fresh_sandbox(seed=SEED, services=services())
    sb.insights.rows_per_file = 50
    schema = f"bulk_{fmt}"
    env = {
        **sandbox_env(sb),
        "TAP_ANALYTICS_BATCH_CONFIG_ENCODING_FORMAT": fmt,
        "TAP_ANALYTICS_BATCH_CONFIG_ENCODING_COMPRESSION": "gzip",
        "TAP_ANALYTICS_BATCH_CONFIG_STORAGE_ROOT": f"file://{tmp_path / 'batches'}",
        "TAP_ANALYTICS_BATCH_CONFIG_STORAGE_PREFIX": "e2e-",
        **postgres.target_env(),
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
    }
    run = meltano_project.run("--environment=sandbox", "run", "tap-analytics",
                              "target-postgres", database=tmp_path / "meltano.db", env=env)
    assert run.returncode == 0, run.tail()
    assert "BATCH mode" in run.stderr  # the Insights streams really wrote batch files
    files = sorted(p.name for p in (tmp_path / "batches").iterdir())
    assert any(name.startswith("e2e-insights_application_exits-") for name in files)
    with postgres.connect() as con:
        check_warehouse(lambda sql, params=(): con.execute(sql, list(params)).fetchall(),
                        "%s", schema, insights_expected)
