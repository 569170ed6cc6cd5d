"""Glue between the sandbox, Meltano and the warehouse (used by scripts/demo and the e2e tests).

    python scripts/meltano_sandbox.py env CONFIG.json     # `export TAP_ANALYTICS_...=...` lines
    python scripts/meltano_sandbox.py counts WAREHOUSE.duckdb

`env` turns a tap config into the environment variables Meltano reads for the settings
meltano.yml declares (`alation.api_token` -> TAP_ANALYTICS_ALATION_API_TOKEN): secrets stay
in the process environment, never in meltano.yml.
"""

from __future__ import annotations

import json
import shlex
import sys
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "TAP_ANALYTICS"


def _project(meltano_yml: Path = ROOT / "meltano.yml") -> dict:
    import yaml

    return yaml.safe_load(meltano_yml.read_text())


def _tap_plugin(plugins: list[dict] | None) -> dict:
    for plugin in plugins or []:
        if plugin["name"] == "tap-analytics":
            return plugin
    return {}


def tap_settings(meltano_yml: Path = ROOT / "meltano.yml") -> dict[str, str | None]:
    """Setting name -> Meltano kind, as meltano.yml declares them."""
    plugin = _tap_plugin(_project(meltano_yml)["plugins"]["extractors"])
    if not plugin:
        raise SystemExit("meltano.yml: no tap-analytics extractor")
    return {s["name"]: s.get("kind") for s in plugin.get("settings") or []}


def environment_config(environment: str = "sandbox",
                       meltano_yml: Path = ROOT / "meltano.yml") -> dict:
    """The tap's config in one environment of meltano.yml (nested dict)."""
    for env in _project(meltano_yml).get("environments") or []:
        if env["name"] == environment:
            plugins = (env.get("config") or {}).get("plugins") or {}
            return _tap_plugin(plugins.get("extractors")).get("config") or {}
    return {}


def env_name(setting: str) -> str:
    return f"{PREFIX}_{setting.replace('.', '_').replace('-', '_').upper()}"


def _text(value: t.Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _lookup(config: t.Mapping[str, t.Any], dotted: str) -> t.Any:
    node: t.Any = config
    for part in dotted.split("."):
        if not isinstance(node, t.Mapping) or part not in node:
            return None
        node = node[part]
    return node


def meltano_env(config: t.Mapping[str, t.Any], *, environment: str = "sandbox",
                meltano_yml: Path = ROOT / "meltano.yml") -> dict[str, str]:
    """The TAP_ANALYTICS_* variables that give Meltano this tap config.

    `decimal` settings cannot travel as environment variables (Meltano 4.4 crashes on
    them): they must already be in the environment's config in meltano.yml.
    """
    kinds = tap_settings(meltano_yml)
    in_yml = environment_config(environment, meltano_yml)
    env: dict[str, str] = {}

    def walk(node: t.Mapping[str, t.Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted in kinds and kinds[dotted] == "decimal":
                if _lookup(in_yml, dotted) != value:
                    raise SystemExit(
                        f"setting '{dotted}': the sandbox uses {value!r} but the '{environment}' "
                        "environment in meltano.yml does not (run scripts/update-generated)")
            elif dotted in kinds:
                env[env_name(dotted)] = _text(value)
            elif isinstance(value, t.Mapping):
                walk(value, f"{dotted}.")
            else:
                raise SystemExit(f"setting '{dotted}' is not declared in meltano.yml "
                                 "(run scripts/update-generated)")

    walk(config, "")
    return env


def table_counts(warehouse: Path) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema not in ('information_schema', 'pg_catalog') "
            "order by 1, 2").fetchall()
        return {f"{s}.{n}": con.execute(f'select count(*) from "{s}"."{n}"').fetchone()[0]
                for s, n in tables}
    finally:
        con.close()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "env":
        config = json.loads(Path(argv[1]).read_text())
        for name, value in sorted(meltano_env(config).items()):
            print(f"export {name}={shlex.quote(value)}")
        return 0
    if len(argv) == 2 and argv[0] == "counts":
        counts = table_counts(Path(argv[1]))
        if not counts:
            print("  (no tables)")
        width = max((len(n) for n in counts), default=0)
        for name, count in counts.items():
            print(f"  {name:<{width}}  {count:>8} rows")
        print(f"  {'total':<{width}}  {sum(counts.values()):>8} rows")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
