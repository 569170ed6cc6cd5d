"""meltano-hub/tap-analytics.yml, the plugin definition users `meltano add --from-ref`,
stays true to the tap: generated from `--about`, every setting there with its kind and
`sensitive` flag, and every key of it kept by Meltano's own parser.

When one of these fails after a settings change: run `scripts/update-generated`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT, TAP_EXE, check_setting_flags

sys.path.insert(0, str(ROOT / "scripts"))
import generated

MELTANO_PYTHON = ROOT / ".venv-meltano" / "bin" / "python"
HUB_FILE = ROOT / "meltano-hub" / "tap-analytics.yml"
SECRETS = {"alation.api_token", "scuba.api_token", "insights.api_token",
           "insights.sftp.password", "insights.sftp.private_key",
           "insights.sftp.private_key_passphrase"}


@pytest.fixture(scope="module")
def about() -> dict:
    proc = subprocess.run([TAP_EXE, "--about", "--format=json"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def definition() -> dict:
    assert HUB_FILE.exists(), "meltano-hub/tap-analytics.yml is missing: run " \
        "scripts/update-generated"
    return yaml.safe_load(HUB_FILE.read_text())


def test_hub_definition_is_current(about: dict) -> None:
    assert HUB_FILE.read_text() == generated.hub_text(about), \
        "meltano-hub/tap-analytics.yml is stale: run scripts/update-generated"


def test_hub_definition_mirrors_the_tap(about: dict, definition: dict) -> None:
    assert definition["name"] == "tap-analytics"
    assert definition["namespace"] == "tap_analytics"
    assert definition["executable"] == "tap-analytics"
    assert definition["pip_url"] == "tap-analytics[batch]"  # pyarrow: BATCH, the Arrow row path
    assert set(definition["capabilities"]) == set(about["capabilities"])
    assert {"state", "catalog", "discover"} <= set(definition["capabilities"])
    declared = {s["name"]: s for s in definition["settings"]}
    expected = dict(generated.setting_leaves(about["settings"]))
    assert list(declared) == list(expected), "settings differ from --about (dot notation)"
    for name, prop in expected.items():
        setting = declared[name]
        check_setting_flags(name, setting, prop)
        assert setting.get("label"), name
        if "." in name:  # a value would make Meltano pass the block: it must be complete then
            assert "value" not in setting, f"{name}: a default would make its block present"
        if prop.get("default") is not None:
            assert "default" in setting["description"].lower(), f"{name}: default not said"
    assert {n for n, s in declared.items() if s.get("sensitive")} == SECRETS
    assert declared["alation.page_size"]["kind"] == "integer"
    assert declared["alation.page_size"]["description"].endswith("Default: 500.")
    assert declared["scuba.window_days"]["kind"] == "decimal"
    assert declared["scuba.queries"]["kind"] == "array"
    assert declared["start_date"]["kind"] == "date_iso8601"
    fmt = declared["batch_config.encoding.format"]
    assert fmt["kind"] == "options"
    assert {o["value"] for o in fmt["options"]} == {"jsonl", "parquet"}


def test_meltano_keeps_every_key_of_the_definition(definition: dict) -> None:
    """Meltano drops keys it does not know, silently: none of ours may be dropped.

    The same steps as `meltano add --from-ref` (meltano/cli/utils.py, add_plugin, 4.4.1).
    """
    if not os.access(MELTANO_PYTHON, os.X_OK):
        pytest.fail("Meltano not found in .venv-meltano: run ./scripts/bootstrap",
                    pytrace=False)
    script = (
        "import json, sys, yaml\n"
        "from meltano.core.plugin.base import PluginDefinition, PluginType\n"
        "data = yaml.safe_load(open(sys.argv[1]))\n"
        "plugin = PluginDefinition.parse({'plugin_type': PluginType.EXTRACTORS, **data})\n"
        "plugin.extras.clear()\n"
        "print(json.dumps(plugin.canonical(), default=str))\n"
    )
    proc = subprocess.run([str(MELTANO_PYTHON), "-c", script, str(HUB_FILE)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = json.loads(proc.stdout)
    assert set(kept) == set(definition), "Meltano dropped or added top-level keys"
    for key, value in definition.items():
        if key != "settings":
            assert kept[key] == value, key
    assert [s["name"] for s in kept["settings"]] == [s["name"] for s in definition["settings"]]
    for ours, theirs in zip(definition["settings"], kept["settings"], strict=True):
        assert theirs == ours, f"{ours['name']}: Meltano kept {theirs}"
