"""Every misconfiguration -> exit 1 and ONE line naming the setting (dotted name), without
a secret and without a traceback. Table-driven, through the real executable."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
import typing as t
from pathlib import Path

import pytest
from helpers import TAP_EXE

SECRETS = {
    "alation": "SECRET-alation-tok-1111",
    "scuba": "SECRET-scuba-tok-2222",
    "insights": "SECRET-insights-tok-3333",
    "sftp": "SECRET-sftp-pw-4444",
}
CLOSED = "http://127.0.0.1:9"  # nothing listens: a config that passes must not get far


def base_config() -> dict[str, t.Any]:
    return {
        "start_date": "2024-01-01T00:00:00Z",
        "end_date": "2024-01-08T00:00:00Z",
        "alation": {"base_url": CLOSED, "api_token": SECRETS["alation"], "page_size": 50,
                    "max_tries": 1},
        "scuba": {
            "base_url": CLOSED, "api_token": SECRETS["scuba"], "max_tries": 1,
            "queries": [
                {"name": "top", "query_response_id": "r9372"},
                {"name": "counts", "bql": "select count(*) from foreverMusic"},
                {"name": "users", "query": {
                    "dataset": "Music",
                    "queries": [{"type": "time_series", "measure": {"aggregator": "count_star"}}],
                    "group_by": ["artist"]}},
            ],
        },
        "insights": {
            "base_url": f"{CLOSED}/_rest/v4", "api_token": SECRETS["insights"], "max_tries": 1,
            "reports": [{
                "name": "exits",
                "data": {"ApplicationExitEvent": {"fields": ["FlowId", "TimeStamp", "ExitReason"]}},
                "filters": {"ApplicationExitEvent": {"FlowId": {"$eq": "5dcf48b453e0ab04386da7d1"}}},
            }],
            "sftp": {"host": "127.0.0.1", "port": 9, "username": "me",
                     "password": SECRETS["sftp"]},
        },
    }


def run(config: t.Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.json")
        path.write_text(json.dumps(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_ANALYTICS_")}
        return subprocess.run([TAP_EXE, "--config", str(path), *args], capture_output=True,
                              text=True, timeout=timeout, env=env, check=False, cwd=tmp)


def setter(path: str, value: t.Any) -> t.Callable[[dict], None]:
    """Set (or, with value DELETE, remove) a dotted path; list items as `name[i]`."""

    def apply(config: dict) -> None:
        node: t.Any = config
        parts = path.split(".")
        for part in parts[:-1]:
            node = descend(node, part)
        last = parts[-1]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value

    return apply


def descend(node: t.Any, part: str) -> t.Any:
    if part.endswith("]"):
        name, index = part[:-1].split("[")
        return node[name][int(index)]
    return node[part]


DELETE = object()

# (id, change, the setting's dotted name that the error line must contain; a tuple: all
# of these parts, e.g. when the message adds the entry's name: "scuba.queries[1] (top)")
CASES: list[tuple[str, t.Callable[[dict], None], str | tuple[str, ...]]] = [
    # top level
    ("start_date_not_a_date", setter("start_date", "yesterday"), "start_date"),
    ("start_date_wrong_type", setter("start_date", 20240101), "start_date"),
    ("end_date_not_a_date", setter("end_date", "2024-13-45"), "end_date"),
    ("end_date_before_start_date", setter("end_date", "2023-12-01T00:00:00Z"), "end_date"),
    ("ca_bundle_missing_file", setter("ca_bundle", "/nonexistent/ca.pem"), "ca_bundle"),
    ("alation_not_an_object", setter("alation", "https://alation.example.com"), "alation"),
    # alation
    ("alation_token_missing", setter("alation.api_token", DELETE), "alation.api_token"),
    ("alation_token_empty", setter("alation.api_token", ""), "alation.api_token"),
    ("alation_base_url_missing", setter("alation.base_url", DELETE), "alation.base_url"),
    ("alation_base_url_no_scheme", setter("alation.base_url", "alation.example.com"),
     "alation.base_url"),
    ("alation_base_url_ftp", setter("alation.base_url", "ftp://alation.example.com"),
     "alation.base_url"),
    ("alation_page_size_0", setter("alation.page_size", 0), "alation.page_size"),
    ("alation_page_size_string", setter("alation.page_size", "100"), "alation.page_size"),
    ("alation_page_size_negative", setter("alation.page_size", -5), "alation.page_size"),
    ("alation_result_query_ids_strings", setter("alation.result_query_ids", ["a", "b"]),
     "alation.result_query_ids"),
    ("alation_token_wrong_type", setter("alation.api_token", 12345678), "alation.api_token"),
    ("alation_max_concurrent_requests_0", setter("alation.max_concurrent_requests", 0),
     "alation.max_concurrent_requests"),
    ("alation_max_concurrent_requests_17", setter("alation.max_concurrent_requests", 17),
     "alation.max_concurrent_requests"),
    ("alation_max_concurrent_requests_string", setter("alation.max_concurrent_requests", "4"),
     "alation.max_concurrent_requests"),
    ("alation_max_tries_0", setter("alation.max_tries", 0), "alation.max_tries"),
    # scuba
    ("scuba_token_missing", setter("scuba.api_token", DELETE), "scuba.api_token"),
    ("scuba_base_url_bad", setter("scuba.base_url", "my_cluster.scuba.io"), "scuba.base_url"),
    ("scuba_queries_missing", setter("scuba.queries", DELETE), "scuba.queries"),
    ("scuba_entry_two_kinds", setter("scuba.queries[0].bql", "select 1"), "scuba.queries[0]"),
    ("scuba_entry_no_kind", setter("scuba.queries[0].query_response_id", DELETE),
     "scuba.queries[0]"),
    ("scuba_entry_no_name", setter("scuba.queries[1].name", DELETE), "scuba.queries[1].name"),
    ("scuba_duplicate_names", setter("scuba.queries[1].name", "top"),
     ("scuba.queries[1]", "name")),
    ("scuba_unknown_result_format", setter("scuba.queries[0].result_format", "XML"),
     "scuba.queries[0].result_format"),
    ("scuba_query_not_an_object", setter("scuba.queries[2].query", "select 1"),
     "scuba.queries[2].query"),
    ("scuba_window_days_0", setter("scuba.window_days", 0), "scuba.window_days"),
    # insights
    ("insights_token_empty", setter("insights.api_token", ""), "insights.api_token"),
    ("insights_base_url_bad", setter("insights.base_url", "api.intelepeer.com"),
     "insights.base_url"),
    ("insights_report_bad_operator",
     setter("insights.reports[0].filters", {"ApplicationExitEvent": {"FlowId": {"$like": "x"}}}),
     ("insights.reports[0]", "filters", "$like")),
    ("insights_report_no_data", setter("insights.reports[0].data", DELETE),
     "insights.reports[0].data"),
    ("insights_report_no_fields", setter("insights.reports[0].data", {"ApplicationExitEvent": {}}),
     ("insights.reports[0]", "data")),
    ("insights_max_concurrent_3", setter("insights.max_concurrent_queries", 3),
     "insights.max_concurrent_queries"),
    ("insights_poll_interval_0", setter("insights.poll_interval_seconds", 0),
     "insights.poll_interval_seconds"),
    ("insights_sftp_no_password_or_key", setter("insights.sftp.password", DELETE),
     "insights.sftp"),
    ("insights_sftp_no_host", setter("insights.sftp.host", DELETE), "insights.sftp.host"),
    ("insights_sftp_port_string", setter("insights.sftp.port", "twenty-two"), "insights.sftp.port"),
    ("insights_sftp_bad_private_key", setter("insights.sftp.private_key", "not a key at all"),
     "insights.sftp.private_key"),
    ("insights_sftp_bad_host_key", setter("insights.sftp.host_key", "ssh-ed25519 !!!"),
     "insights.sftp.host_key"),
]


def check_one_line(proc: subprocess.CompletedProcess, setting: str | tuple[str, ...]) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"exit {proc.returncode}: {output[-1500:]}"
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("tap-analytics: error:")]
    assert len(lines) == 1, f"expected one error line, got {lines!r}\n{output[-1500:]}"
    line = lines[0]
    for part in (setting,) if isinstance(setting, str) else setting:
        assert part in line, f"{part!r} not named in {line!r}"
    for secret in SECRETS.values():
        assert secret not in output, f"secret leaked in: {output[-1500:]}"
    return line


def test_the_base_config_is_valid() -> None:
    # The baseline passes validation (discovery needs no network): each case below fails
    # because of its one change, not because of the rest.
    proc = run(base_config(), "--discover")
    assert proc.returncode == 0, proc.stderr[-1500:]
    streams = {s["tap_stream_id"] for s in json.loads(proc.stdout)["streams"]}
    assert {"alation_queries", "scuba_top", "scuba_counts", "scuba_users",
            "insights_exits"} <= streams


def test_fractional_numbers_are_accepted() -> None:
    # The SDK reads a config file's JSON floats as Decimal (`meltano config set` writes
    # `window_days: !!float '2'`, passed on as 2.0): a number setting must take them.
    config = base_config()
    config["scuba"].update(window_days=2.0, min_seconds_between_queries=1.5)
    config["insights"].update(window_hours=12.5, poll_interval_seconds=0.2,
                              max_poll_interval_seconds=30.0, query_timeout_seconds=600.0)
    proc = run(config, "--discover")
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "scuba_top" in {s["tap_stream_id"] for s in json.loads(proc.stdout)["streams"]}


@pytest.mark.parametrize(("change", "setting"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_misconfiguration_is_one_line_naming_the_setting(
    change: t.Callable[[dict], None], setting: str
) -> None:
    config = copy.deepcopy(base_config())
    change(config)
    proc = run(config)
    check_one_line(proc, setting)


@pytest.mark.parametrize(("change", "setting"), [c[1:] for c in CASES[:12]],
                         ids=[c[0] for c in CASES[:12]])
def test_discover_names_the_same_misconfiguration(
    change: t.Callable[[dict], None], setting: str | tuple[str, ...]
) -> None:
    # The SDK only warns about schema violations at discovery (a catalog can be made from
    # an incomplete config); either way the setting is named, once, without a secret.
    config = copy.deepcopy(base_config())
    change(config)
    proc = run(config, "--discover")
    if proc.returncode != 0:
        check_one_line(proc, setting)
        return
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    warnings = [x for x in proc.stderr.splitlines() if "Config: setting" in x]
    assert len(warnings) == 1, proc.stderr[-1500:]
    for part in (setting,) if isinstance(setting, str) else setting:
        assert part in warnings[0]
    for secret in SECRETS.values():
        assert secret not in output


def test_config_that_is_not_json_is_one_line() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.json")
        path.write_text('{"alation": {"api_token": "SECRET-alation-tok-1111",')
        proc = subprocess.run([TAP_EXE, "--config", str(path)], capture_output=True,
                              text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "Traceback" not in output
    lines = [x for x in output.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(lines) == 1, output[-1500:]
    assert "config" in lines[0]
    assert SECRETS["alation"] not in output


def test_missing_config_file_is_one_line() -> None:
    proc = subprocess.run([TAP_EXE, "--config", "/nonexistent/config.json"],
                          capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in output
    assert "/nonexistent/config.json" in output
