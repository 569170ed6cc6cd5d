"""The README's Meltano instructions for real accounts work as written (Meltano 4.4):
every `meltano config set tap-analytics ...` line of its block, run in a temporary project,
gives a nested config that the tap accepts; secrets land in .env, never in meltano.yml.
Discovery needs no server, so no account is needed for this check.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from e2e_support import MeltanoProject, make_meltano_project
from helpers import ROOT

pytestmark = pytest.mark.e2e

SECRETS = {"$ALATION_TOKEN": "alation-secret-1234", "$SCUBA_TOKEN": "scuba-secret-5678",
           "$INSIGHTS_TOKEN": "insights-secret-9012", "$SFTP_PASSWORD": "sftp-secret-3456"}


@pytest.fixture(scope="session")
def readme_project(tmp_path_factory: pytest.TempPathFactory) -> MeltanoProject:
    return make_meltano_project(tmp_path_factory.mktemp("meltano-readme"))


def _readme_config_lines() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"### With Meltano.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md: no Meltano block"
    commands = []
    for line in block.group(1).splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.startswith("meltano config set tap-analytics ") and "--interactive" not in line:
            for var, value in SECRETS.items():
                line = line.replace(f'"{var}"', value)
            commands.append(shlex.split(line)[1:])
    return commands


def test_readme_meltano_instructions_give_a_working_config(
    readme_project: MeltanoProject, tmp_path: Path,
) -> None:
    commands = _readme_config_lines()
    assert len(commands) >= 10, commands
    db = tmp_path / "meltano.db"
    for args in commands:
        result = readme_project.run(*args, database=db)
        assert result.returncode == 0, f"{args}: {result.tail()}"

    yml = (readme_project.root / "meltano.yml").read_text()
    dotenv = (readme_project.root / ".env").read_text()
    for secret in SECRETS.values():
        assert secret not in yml, "a secret was written into meltano.yml"
        assert secret in dotenv

    printed = readme_project.run("config", "--unsafe", "print", "tap-analytics",
                                 "--format=json", database=db)
    assert printed.returncode == 0, printed.tail()
    config = json.loads(printed.stdout[printed.stdout.index("{"):])
    assert config["alation"]["api_token"] == SECRETS["$ALATION_TOKEN"]
    assert config["alation"]["result_query_ids"] == [15, 16]
    assert config["insights"]["sftp"]["password"] == SECRETS["$SFTP_PASSWORD"]
    assert config["scuba"]["queries"][0]["query_response_id"] == "r9372"

    catalog = readme_project.run("invoke", "--dump=catalog", "tap-analytics", database=db)
    assert catalog.returncode == 0, catalog.tail()
    streams = {s["tap_stream_id"] for s in json.loads(catalog.stdout)["streams"]}
    assert {"alation_queries", "alation_query_results", "scuba_top_artists",
            "insights_application_exits"} <= streams
