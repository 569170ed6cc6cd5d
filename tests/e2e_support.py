"""End-to-end machinery: the real Meltano (from .venv-meltano) in a temporary project,
PostgreSQL started from Debian's binaries, and the expected data of Sandbox(seed=7).

The temporary project is a copy of meltano.yml (the tap installed from this checkout), so a
test run never writes into the repository's .meltano/. Plugins are installed once per
test session; each test gets its own system database (its own Meltano state).
"""

from __future__ import annotations

import datetime as dt
import decimal
import glob
import importlib.util
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, SyncResult, run_cli

from tap_analytics.sandbox import SERVICES, Sandbox

sys.path.insert(0, str(ROOT / "scripts"))
from meltano_sandbox import meltano_env

MELTANO_EXE = os.environ.get("MELTANO_EXE") or str(ROOT / ".venv-meltano" / "bin" / "meltano")
SEED = 7
RUN_TIMEOUT = 900


def available_services() -> list[str]:
    """The sandbox services present in this checkout (all three once every family landed)."""
    return [name for name, (module, _) in SERVICES.items() if importlib.util.find_spec(module)]


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that would configure a plugin."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("TAP_ANALYTICS_", "TARGET_", "MELTANO_"))}


@dataclass
class MeltanoRun:
    returncode: int
    stdout: str
    stderr: str

    def record_counts(self) -> dict[str, int]:
        """Records the tap reported per stream (its `record_count` METRIC log lines)."""
        counts: dict[str, int] = {}
        decoder = json.JSONDecoder()
        for line in self.stderr.splitlines():
            at = line.find("METRIC: {")
            if at < 0:
                continue
            metric, _ = decoder.raw_decode(line, at + len("METRIC: "))
            if metric.get("metric") == "record_count":
                stream = metric["tags"]["stream"]
                counts[stream] = counts.get(stream, 0) + int(metric["value"])
        return counts

    def tail(self, n: int = 40) -> str:
        return "\n".join((self.stdout + self.stderr).splitlines()[-n:])


class MeltanoProject:
    """A temporary Meltano project: this checkout's meltano.yml, plugins installed once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def env(self, database: Path, extra: t.Mapping[str, str] | None = None) -> dict[str, str]:
        return {
            **_clean_env(),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_DATABASE_URI": f"sqlite:///{database}",
            "NO_COLOR": "1",
            **(extra or {}),
        }

    def run(self, *args: str, database: Path, env: t.Mapping[str, str] | None = None,
            timeout: float = RUN_TIMEOUT) -> MeltanoRun:
        proc = subprocess.run(
            [MELTANO_EXE, *args], cwd=self.root, env=self.env(database, env),
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            check=False,
        )
        return MeltanoRun(proc.returncode, proc.stdout, proc.stderr)


def make_meltano_project(base: Path) -> MeltanoProject:
    if not os.access(MELTANO_EXE, os.X_OK):
        pytest.fail(f"Meltano not found at {MELTANO_EXE}: run ./scripts/bootstrap "
                    "(or ./scripts/test, which installs it)", pytrace=False)
    project = base / "project"
    project.mkdir()
    text = (ROOT / "meltano.yml").read_text()
    text, n = re.subn(r"(?m)^(\s*pip_url:\s*)-e \.(\[[a-z,]+\])?\s*$", rf"\1-e {ROOT}\2", text)
    assert n == 1, "meltano.yml: the tap's `pip_url: -e .` line was not found"
    (project / "meltano.yml").write_text(text)
    mp = MeltanoProject(project)
    result = mp.run("install", database=base / "install.db")
    if result.returncode != 0:
        pytest.fail(f"meltano install failed:\n{result.tail()}", pytrace=False)
    return mp


# --- expected data: the tap run directly against the same (deterministic) sandbox ----

@dataclass
class Expected:
    result: SyncResult
    key_properties: dict[str, list[str]]
    bookmark_properties: dict[str, list[str]]
    alation_counts: dict[str, int]

    @property
    def streams(self) -> list[str]:
        return sorted(self.result.schemas)


ALATION_KINDS = {
    "alation_queries": "query",
    "alation_execution_sessions": "execution_session",
    "alation_execution_batches": "execution_batch",
    "alation_execution_events": "execution_event",
    "alation_scheduled_runs": "scheduled_run",
}


def expected_sync() -> Expected:
    with Sandbox(seed=SEED, services=available_services()) as sb:
        result = run_cli(sb.config(), timeout=RUN_TIMEOUT)
        alation_counts = ({s: len(sb.alation.data[k]) for s, k in ALATION_KINDS.items()}
                          if "alation" in sb.services else {})
    if result.returncode != 0:
        pytest.fail(f"direct tap run failed: {result.stderr[-2000:]}", pytrace=False)
    keys, bookmarks = {}, {}
    for msg in result.messages:
        if msg["type"] == "SCHEMA":
            keys[msg["stream"]] = list(msg.get("key_properties") or [])
            bookmarks[msg["stream"]] = list(msg.get("bookmark_properties") or [])
    return Expected(result, keys, bookmarks, alation_counts)


# --- comparing warehouse values with Singer values -----------------------------------

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def norm(value: t.Any) -> t.Any:
    """One comparable form for a value from a warehouse or from a Singer record."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat()
    if isinstance(value, str) and _ISO.match(value):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return norm(parsed)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        return round(float(value), 6)
    return value


def json_value(value: t.Any) -> t.Any:
    """A JSON/JSONB column as Python (DuckDB returns text, psycopg returns objects)."""
    return json.loads(value) if isinstance(value, str) else value


def date_time_properties(schema: dict) -> list[str]:
    return [name for name, prop in schema.get("properties", {}).items()
            if prop.get("format") == "date-time"]


def scalar_properties(schema: dict) -> list[str]:
    out = []
    for name, prop in schema.get("properties", {}).items():
        types = prop.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if (not ({"object", "array"} & set(types)) and "anyOf" not in prop
                and name not in PER_RUN_FIELDS):
            out.append(name)
    return out


#: Lineage fields that differ between two runs by design (Insights names each export file
#: by the time it was made), so they are not compared with the direct run's values.
PER_RUN_FIELDS = {"source_file"}


def samples(records: list[dict]) -> list[dict]:
    """First, middle and last record."""
    if not records:
        return []
    picks = {0, len(records) // 2, len(records) - 1}
    return [records[i] for i in sorted(picks)]


def check_warehouse(query: t.Callable[..., list[tuple]], ph: str, schema_name: str,
                    expected: Expected, *, empty_string_is_null: bool = False) -> None:
    """Every stream a table with exactly the emitted rows: counts, keys, sample values,
    date-times typed as timestamps. `query(sql, params)` runs SQL; `ph` is its placeholder.
    `empty_string_is_null`: target-duckdb 0.8.0 loads "" as NULL (CSV COPY; see README).
    """
    records = expected.result.records
    for stream in expected.streams:
        schema = expected.result.schemas[stream]
        keys = expected.key_properties[stream]
        rows = records.get(stream, [])
        columns = {name: typ for name, typ in query(
            "select column_name, data_type from information_schema.columns "
            f"where table_schema = {ph} and table_name = {ph}", [schema_name, stream])}
        assert columns, f"{stream}: no table in the warehouse"
        for prop in date_time_properties(schema):
            assert columns.get(prop, "").upper().startswith("TIMESTAMP"), (
                f"{stream}.{prop} is {columns.get(prop)!r}, not a timestamp")
        count = query(f'select count(*) from {schema_name}."{stream}"')[0][0]
        assert count == len(rows), f"{stream}: {count} rows loaded, tap emitted {len(rows)}"
        if keys:
            key_sql = ", ".join(f'"{k}"' for k in keys)
            loaded = {tuple(norm(v) for v in r) for r in query(
                f'select {key_sql} from {schema_name}."{stream}"')}
            emitted = {tuple(norm(r[k]) for k in keys) for r in rows}
            assert len(emitted) == len(rows), f"{stream}: the tap emitted a key twice"
            assert loaded == emitted, f"{stream}: keys differ"
        scalars = [p for p in scalar_properties(schema) if p in columns]
        nested = [p for p in schema["properties"]
                  if p not in scalars and p in columns and p not in PER_RUN_FIELDS]
        for record in samples(rows):
            where = " and ".join(f'"{k}" = {ph}' for k in keys) or "true"
            params = [record[k] for k in keys]
            cols = ", ".join(f'"{c}"' for c in scalars + nested)
            found = query(f'select {cols} from {schema_name}."{stream}" where {where}', params)
            assert len(found) == 1, f"{stream}: sample {params} found {len(found)} times"
            values = dict(zip(scalars + nested, found[0], strict=True))
            for prop in scalars:
                want = record.get(prop)
                if want == "" and empty_string_is_null:
                    want = None
                assert norm(values[prop]) == norm(want), (
                    f"{stream}.{prop}: {values[prop]!r} != {record.get(prop)!r}")
            for prop in nested:
                if record.get(prop) is not None:
                    assert json_value(values[prop]) == record[prop], f"{stream}.{prop}"


# --- PostgreSQL from Debian's binaries -----------------------------------------------

def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    database: str

    def connect(self) -> t.Any:
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user,
                               dbname=self.database, autocommit=True)

    def row_counts(self, schema: str) -> dict[str, int]:
        """Rows per table of `schema`."""
        with self.connect() as con:
            tables = [r[0] for r in con.execute(
                "select table_name from information_schema.tables where table_schema = %s",
                [schema]).fetchall()]
            return {name: con.execute(f'select count(*) from {schema}."{name}"').fetchone()[0]
                    for name in tables}

    def target_env(self) -> dict[str, str]:
        """meltanolabs-target-postgres's settings for this server, as Meltano env vars."""
        return {
            "TARGET_POSTGRES_HOST": self.host,
            "TARGET_POSTGRES_PORT": str(self.port),
            "TARGET_POSTGRES_USER": self.user,
            "TARGET_POSTGRES_PASSWORD": "unused-trust-auth",
            "TARGET_POSTGRES_DATABASE": self.database,
        }


def start_postgres() -> t.Iterator[Postgres]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
                    "`postgresql` package (./scripts/test and .ci/run do it as root)",
                    pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="tap-analytics-pg-"))
    os.chmod(base, 0o755)
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: use the postgres user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no `postgres` user to run the server "
                        "(Debian's postgresql package creates it)", pytrace=False)
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    port = free_port()
    run = lambda *cmd: subprocess.run(  # noqa: E731
        [*prefix, *cmd], capture_output=True, text=True, timeout=120, check=False,
        stdin=subprocess.DEVNULL, cwd=base)
    proc = run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
               "--no-sync")
    if proc.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed: {proc.stderr.strip()[-1000:]}", pytrace=False)
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} "
               "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    proc = run(pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60",
               "-o", options, "start")
    try:
        if proc.returncode != 0:
            log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
            pytest.fail(f"pg_ctl start failed: {proc.stderr.strip()} {log[-1000:]}",
                        pytrace=False)
        yield Postgres("127.0.0.1", port, "postgres", "postgres")
    finally:
        run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(base, ignore_errors=True)


def sandbox_env(sb: Sandbox) -> dict[str, str]:
    return meltano_env(sb.config())
