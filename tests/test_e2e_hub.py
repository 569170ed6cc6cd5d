"""A user's own Meltano project: `meltano init`, then the tap added from its plugin
definition (meltano-hub/tap-analytics.yml, no Meltano Hub), installed from this checkout,
configured for the sandbox with `meltano config set`, and `meltano run` into target-jsonl
loads every row the tap emits. `meltano config list` shows the secrets redacted.

Meltano 4.4.1 reads `meltano add extractor NAME` as two plugins, a utility "extractor" and
NAME (with --from-ref: the same definition added twice, once as a utility), so the type is
given with --plugin-type, as the README says.
"""

from __future__ import annotations

import json
import re
import typing as t
from pathlib import Path

import pytest
import yaml
from e2e_support import Expected, MeltanoProject, MeltanoRun
from e2e_support import available_services as services
from helpers import ROOT

pytestmark = pytest.mark.e2e

HUB_FILE = ROOT / "meltano-hub" / "tap-analytics.yml"
class UserProject:
    """`meltano ...` in the user's project (`root`), with the sandbox's settings in `env`;
    asserts success unless `ok=False`."""

    def __init__(self, root: Path, database: Path) -> None:
        self.meltano = MeltanoProject(root)
        self.database = database
        self.env: dict[str, str] = {}

    def __call__(self, *args: str, ok: bool = True) -> MeltanoRun:
        result = self.meltano.run(*args, database=self.database, env=self.env)
        if ok:
            assert result.returncode == 0, f"meltano {' '.join(args)}:\n{result.tail()}"
        return result


def _loader_definition(name: str) -> dict:
    """A loader of this repository's meltano.yml as a plugin definition (same pins)."""
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    plugin = next(p for p in project["plugins"]["loaders"] if p["name"] == name)
    return {k: plugin[k] for k in ("name", "namespace", "pip_url", "executable", "settings")}


def _leaves(node: t.Mapping[str, t.Any], prefix: str = "") -> t.Iterator[tuple[str, t.Any]]:
    for key, value in node.items():
        if isinstance(value, t.Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _text(value: t.Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _jsonl_rows(folder: Path) -> dict[str, list[dict]]:
    return {path.stem: [json.loads(line) for line in path.read_text().splitlines() if line]
            for path in sorted(folder.glob("*.jsonl"))}


def test_meltano_add_from_ref_into_a_new_project_then_run(
    expected: Expected, fresh_sandbox: t.Callable, tmp_path: Path,
) -> None:
    assert expected.streams, "the tap discovered no stream for the sandbox"
    meltano = UserProject(tmp_path, tmp_path / "meltano.db")
    meltano("init", "project", "--no-usage-stats")
    meltano.meltano.root = project = tmp_path / "project"

    # 1. The tap, from the definition file; then pip_url pointed at this checkout (the
    #    published name would be looked up on PyPI), then installed.
    meltano("add", "--plugin-type", "extractor", "tap-analytics", "--from-ref", str(HUB_FILE),
            "--no-install")
    yml = project / "meltano.yml"
    text, n = re.subn(r"(?m)^(\s*pip_url:\s*)tap-analytics\[batch\]\s*$",
                      rf"\1-e {ROOT}[batch]", yml.read_text())
    assert n == 1, "the added plugin has no `pip_url: tap-analytics[batch]` line"
    yml.write_text(text)
    loader = tmp_path / "target-jsonl.yml"
    loader.write_text(yaml.safe_dump(_loader_definition("target-jsonl"), sort_keys=False))
    meltano("add", "--plugin-type", "loader", "target-jsonl", "--from-ref", str(loader),
            "--no-install")
    meltano("install")

    plugins = yaml.safe_load(yml.read_text())["plugins"]
    assert set(plugins) == {"extractors", "loaders"}, f"unexpected plugins: {set(plugins)}"
    [tap] = plugins["extractors"]
    definition = yaml.safe_load(HUB_FILE.read_text())
    assert tap["name"] == "tap-analytics" and tap["pip_url"] == f"-e {ROOT}[batch]"
    assert tap["capabilities"] == definition["capabilities"]
    assert [s["name"] for s in tap["settings"]] == [s["name"] for s in definition["settings"]]

    # 2. The sandbox's config: secrets and numbers by `meltano config set` (secrets go to
    #    .env; numbers cannot come from environment variables in Meltano 4.4), the rest as
    #    TAP_ANALYTICS_* variables, as the demo does.
    kinds = {s["name"]: s.get("kind") for s in definition["settings"]}
    secret = {s["name"] for s in definition["settings"] if s.get("sensitive")}
    sb = fresh_sandbox(seed=7, services=services())
    config = dict(_leaves(sb.config()))
    secrets_set = {name: value for name, value in config.items() if name in secret}
    assert secrets_set, "the sandbox config has no secret"
    for name, value in config.items():
        assert name in kinds, f"{name}: not a setting of the plugin definition"
        if name in secret or kinds[name] == "decimal":
            meltano("config", "set", "tap-analytics", name, _text(value))
        else:
            meltano.env[f"TAP_ANALYTICS_{name.replace('.', '_').upper()}"] = _text(value)
    out = tmp_path / "jsonl"
    meltano("config", "set", "target-jsonl", "destination_path", str(out))
    meltano("config", "set", "target-jsonl", "do_timestamp_file", "false")
    dotenv = (project / ".env").read_text()
    for value in secrets_set.values():
        assert value not in yml.read_text() and value in dotenv

    # 3. `meltano config list` shows every secret that is set as redacted, never its value.
    listed = meltano("config", "list", "tap-analytics")
    shown = listed.stdout + listed.stderr
    for name, value in secrets_set.items():
        assert value not in shown, f"{name}: value shown by `meltano config list`"
        line = next((ln for ln in shown.splitlines() if ln.startswith(f"{name} ")), "")
        assert "(redacted)" in line, f"{name}: not redacted: {line!r}"

    # 4. `meltano run` loads every row the tap emits, every key once; the state is kept.
    run = meltano("run", "tap-analytics", "target-jsonl")
    loaded = _jsonl_rows(out)
    assert set(loaded) == set(expected.streams)
    for stream in expected.streams:
        rows, emitted = loaded[stream], expected.result.records.get(stream, [])
        assert len(rows) == len(emitted), f"{stream}: {len(rows)} rows, tap emitted {len(emitted)}"
        keys = expected.key_properties[stream]
        assert {tuple(r[k] for k in keys) for r in rows} == \
            {tuple(r[k] for k in keys) for r in emitted}, f"{stream}: keys differ"
    assert sum(run.record_counts().values()) == sum(len(r) for r in loaded.values())
    states = meltano("state", "list")
    assert "dev:tap-analytics-to-target-jsonl" in states.stdout, states.tail()
