"""The project files a user meets first stay true to the tap: meltano.yml, README.md,
catalog.json, and the scripts behind the README's two commands.

When one of these fails after a settings or stream change: run `scripts/update-generated`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TAP_EXE, check_setting_flags

from tap_analytics.sandbox import SERVICES, Sandbox

sys.path.insert(0, str(ROOT / "scripts"))
import meltano_sandbox

REQUIRED_CAPABILITIES = {"catalog", "discover", "state", "about", "stream-maps",
                         "schema-flattening", "batch"}


def _tap(*args: str) -> str:
    proc = subprocess.run([TAP_EXE, *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def about() -> dict:
    return json.loads(_tap("--about", "--format=json"))


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load((ROOT / "meltano.yml").read_text())


def _plugin(project: dict, kind: str, name: str) -> dict:
    matches = [p for p in project["plugins"][kind] if p["name"] == name]
    assert len(matches) == 1, f"meltano.yml: {kind} {name} defined {len(matches)} times"
    return matches[0]


def _expected_settings(schema: dict, prefix: str = "") -> dict[str, dict]:
    """Dotted setting name -> property, for every leaf Meltano must declare.

    An object with declared keys is entered (dot notation); a free-form one (no keys, or
    keys like `__else__` as in stream_maps) is one setting.
    """
    out: dict[str, dict] = {}
    for name, prop in schema.get("properties", {}).items():
        keys = list(prop.get("properties") or {})
        types = prop.get("type") if isinstance(prop.get("type"), list) else [prop.get("type")]
        if "object" in types and keys and not any(k.startswith("__") for k in keys):
            out.update(_expected_settings(prop, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = prop
    return out


def test_meltano_settings_match_the_tap(about: dict, project: dict) -> None:
    tap = _plugin(project, "extractors", "tap-analytics")
    declared = {s["name"]: s for s in tap["settings"]}
    expected = _expected_settings(about["settings"])
    assert sorted(declared) == sorted(expected), "meltano.yml settings drifted from --about"
    for name, prop in expected.items():
        setting = declared[name]
        check_setting_flags(name, setting, prop)
        assert "value" not in setting, f"{name}: a default in meltano.yml would make the " \
            "source block present (the tap has its own defaults)"
        types = prop.get("type") if isinstance(prop.get("type"), list) else [prop.get("type")]
        types = [x for x in types if x and x != "null"]
        if types == ["string"] and prop.get("format") == "date-time":
            assert setting.get("kind") == "date_iso8601", name
        elif types == ["integer"]:
            assert setting.get("kind") == "integer", name
        elif types == ["number"]:
            assert setting.get("kind") == "decimal", name
        elif types == ["boolean"]:
            assert setting.get("kind") == "boolean", name
        elif types == ["array"]:
            assert setting.get("kind") == "array", name
    # The three sources and the nested SFTP block, in dot notation as users set them.
    for name in ("alation.api_token", "scuba.api_token", "insights.api_token",
                 "insights.sftp.password"):
        assert declared[name].get("sensitive") is True, name


def test_meltano_capabilities_are_complete(about: dict, project: dict) -> None:
    tap = _plugin(project, "extractors", "tap-analytics")
    assert set(tap["capabilities"]) == set(about["capabilities"]) == REQUIRED_CAPABILITIES


def test_every_plugin_is_defined_in_full(project: dict) -> None:
    """Meltano Hub is not reachable: no plugin may depend on it."""
    names = {p["name"] for kind in ("extractors", "loaders") for p in project["plugins"][kind]}
    assert {"tap-analytics", "target-duckdb", "target-jsonl", "target-postgres"} <= names
    for kind in ("extractors", "loaders"):
        full = {p["name"] for p in project["plugins"][kind] if "inherit_from" not in p}
        for plugin in project["plugins"][kind]:
            assert "variant" not in plugin, plugin["name"]
            if "inherit_from" in plugin:  # inherits a plugin defined here, never a Hub one
                assert plugin["inherit_from"] in full, plugin["name"]
                assert not {"pip_url", "namespace", "settings"} & set(plugin), plugin["name"]
                continue
            for field in ("namespace", "pip_url", "executable", "settings"):
                assert plugin.get(field), f"{plugin['name']}: no {field}"
    duckdb = _plugin(project, "loaders", "target-duckdb")["pip_url"].split()
    # target-duckdb 0.8.0 drops rows with duckdb >= 1.3 (SDK-NOTES): the pin must stay.
    assert "target-duckdb==0.8.0" in duckdb and "duckdb==1.2.2" in duckdb
    postgres = _plugin(project, "loaders", "target-postgres")
    assert postgres["pip_url"].startswith("meltanolabs-target-postgres==")
    sensitive = {s["name"] for s in postgres["settings"] if s.get("sensitive")}
    assert {"password", "sqlalchemy_url"} <= sensitive


FAMILIES = ("alation", "scuba", "insights")


def test_one_job_per_source_family_with_its_own_state(project: dict) -> None:
    """`meltano run alation` etc.: each job's extractor selects one family, and the
    extractors' names differ, so Meltano's state IDs (<env>:<extractor>-to-<loader>) do."""
    extractors = {p["name"]: p for p in project["plugins"]["extractors"]}
    loaders = {p["name"] for p in project["plugins"]["loaders"]}
    jobs = {j["name"]: j["tasks"] for j in project["jobs"]}
    assert set(jobs) == set(FAMILIES)
    state_ids = set()
    for family in FAMILIES:
        assert len(jobs[family]) == 1, family
        extractor, loader = jobs[family][0].split()
        assert extractor == f"tap-analytics--{family}", family
        assert loader in loaders, family
        plugin = extractors[extractor]
        assert plugin["inherit_from"] == "tap-analytics"
        assert plugin["select"] == [f"{family}_*.*"], family
        state_ids.add(f"{extractor}-to-{loader}")
    assert len(state_ids) == len(FAMILIES)
    schedules = project.get("schedules") or []
    assert schedules, "no example schedule"
    for schedule in schedules:
        assert schedule["job"] in jobs and schedule.get("interval"), schedule["name"]


def _config_blocks(project: dict) -> t.Iterator[tuple[str, dict]]:
    for _kind, plugins in project["plugins"].items():
        for plugin in plugins:
            yield plugin["name"], plugin.get("config") or {}
    for env in project.get("environments") or []:
        for plugins in ((env.get("config") or {}).get("plugins") or {}).values():
            for plugin in plugins:
                yield plugin["name"], plugin.get("config") or {}


def test_no_secret_is_written_in_meltano_yml(project: dict) -> None:
    text = (ROOT / "meltano.yml").read_text()
    from tap_analytics import sandbox as sb_module

    for secret in (sb_module.ALATION_TOKEN, sb_module.SCUBA_TOKEN, sb_module.INSIGHTS_TOKEN,
                   sb_module.SFTP_PASSWORD):
        assert secret not in text
    sensitive = {(p["name"], s["name"]) for kind in project["plugins"].values() for p in kind
                 for s in p.get("settings") or [] if s.get("sensitive")}

    def leaves(node: dict, prefix: str = "") -> t.Iterator[str]:
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            yield f"{prefix}{key}"

    for plugin, config in _config_blocks(project):
        for name in leaves(config):
            assert (plugin, name) not in sensitive, f"{plugin}: {name} is a secret in meltano.yml"


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh|shell)?\n(.*?)```", text, re.S)
    assert first_block, "README.md has no command block"
    before = text[: first_block.start()]
    assert "## " not in before.split("\n", 1)[-1], "the commands must come before any section"
    commands = [line for line in first_block.group(1).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-2:] == ["./scripts/demo", "./scripts/test"], commands
    for script in ("scripts/demo", "scripts/test", ".ci/run"):
        assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"


def test_readme_settings_table_is_current() -> None:
    markdown = _tap("--about", "--format=markdown")
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table) > 10
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- BEGIN settings.*?-->\n(.*?)<!-- END settings -->", readme, re.S)
    assert block, "README.md: settings markers missing"
    current = [line for line in block.group(1).splitlines() if line.strip()]
    assert current == table, "README settings table is stale: run scripts/update-generated"


def _sandbox_config() -> dict:
    import importlib.util

    present = [n for n, (mod, _) in SERVICES.items() if importlib.util.find_spec(mod)]
    with Sandbox(seed=7, services=present) as sb:
        return sb.config()


@pytest.fixture(scope="module")
def sandbox_config() -> dict:
    return _sandbox_config()


def test_catalog_json_is_current_and_discovery_needs_no_server(sandbox_config: dict) -> None:
    # The sandbox is stopped: discovery must not spend a query (Scuba's daily quota).
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.json")
        path.write_text(json.dumps(sandbox_config))
        discovered = json.loads(_tap("--config", str(path), "--discover"))
    stored = json.loads((ROOT / "catalog.json").read_text())
    assert stored == discovered, "catalog.json is stale: run scripts/update-catalog"
    names = {s["tap_stream_id"] for s in stored["streams"]}
    if "alation" in sandbox_config:
        assert {"alation_queries", "alation_execution_sessions", "alation_execution_batches",
                "alation_execution_events", "alation_scheduled_runs",
                "alation_query_results"} <= names
    if "scuba" in sandbox_config:
        assert {f"scuba_{q['name']}" for q in sandbox_config["scuba"]["queries"]} <= names
    if "insights" in sandbox_config:
        assert {f"insights_{r['name']}" for r in sandbox_config["insights"]["reports"]} <= names


def test_sandbox_config_maps_onto_meltano_settings(sandbox_config: dict) -> None:
    env = meltano_sandbox.meltano_env(sandbox_config)
    declared = set(meltano_sandbox.tap_settings())
    names = {meltano_sandbox.env_name(n): n for n in declared}
    assert env, "no variable for the sandbox config"
    for var, value in env.items():
        assert var in names, f"{var} matches no meltano.yml setting"
        assert value != "None"
    if "alation" in sandbox_config:
        assert env["TAP_ANALYTICS_ALATION_API_TOKEN"] == sandbox_config["alation"]["api_token"]
        assert json.loads(env["TAP_ANALYTICS_ALATION_RESULT_QUERY_IDS"]) == \
            sandbox_config["alation"]["result_query_ids"]


def test_meltano_env_refuses_an_undeclared_setting() -> None:
    with pytest.raises(SystemExit, match="not_a_setting"):
        meltano_sandbox.meltano_env({"alation": {"not_a_setting": 1}})


def test_scripts_test_fails_when_pytest_collects_nothing(tmp_path: Path) -> None:
    (tmp_path / "test_nothing_here.py").write_text("# no test\n")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "test"), str(tmp_path), "-p", "no:cacheprovider", "-q"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "SKIP_BOOTSTRAP": "1"}, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "collected no tests" in proc.stderr
