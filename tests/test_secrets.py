"""Secrets never appear in anything the tap prints: logs (at DEBUG), errors, `--about`,
`--discover`, records or state. The real executable is run through its error paths (bad
tokens, 400, 5xx exhausted, bodies that echo the token, bad config values, malformed bodies,
SFTP auth failure) and everything it printed (stdout + stderr) is searched for each secret.
"""

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

from tap_analytics.sandbox import (
    ALATION_TOKEN,
    INSIGHTS_TOKEN,
    SCUBA_TOKEN,
    SFTP_PASSWORD,
    Sandbox,
)
from tap_analytics.sandbox.core import Faults, Request, Response, json_response

WRONG = {
    "alation": "wrong-alation-token-Q7v9kx",
    "scuba": "wrong-scuba-token-Zp3m8w",
    "insights": "wrong-insights-token-Lr5n2c",
    "sftp": "wrong-sftp-password-3kd9qz",
}
PASSPHRASE = "key-passphrase-Wq8r4t"


def key_fragments(key_text: str) -> list[str]:
    """Distinctive pieces of a private key (its base64 lines), to search for."""
    return [line for line in key_text.splitlines()
            if line and not line.startswith("-----") and len(line) >= 16]


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(seed=3, scale=0.05) as sandbox:
        yield sandbox


def all_secrets(sandbox: Sandbox) -> list[str]:
    return [ALATION_TOKEN, SCUBA_TOKEN, INSIGHTS_TOKEN, SFTP_PASSWORD, PASSPHRASE,
            *WRONG.values(), *key_fragments(sandbox.insights.client_key_text)]


def run(config: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real executable, at DEBUG log level, in an empty working directory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.json")
        path.write_text(json.dumps(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_ANALYTICS_")}
        env["LOGLEVEL"] = "DEBUG"
        return subprocess.run([TAP_EXE, "--config", str(path), *args], capture_output=True,
                              text=True, timeout=timeout, env=env, check=False, cwd=tmp)


def assert_no_secret(proc: subprocess.CompletedProcess, secrets: list[str]) -> None:
    everything = proc.stdout + "\n" + proc.stderr
    for secret in secrets:
        assert secret not in everything, (
            f"secret {secret[:6]}... printed; context: "
            f"{everything[max(0, everything.find(secret) - 200):everything.find(secret) + 50]!r}"
        )


def assert_one_error(proc: subprocess.CompletedProcess, *must: str) -> str:
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [x for x in proc.stderr.splitlines() if x.startswith("tap-analytics: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for word in must:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def with_key(sandbox: Sandbox) -> dict:
    """Full config, the SFTP login by private key + password both configured."""
    config = sandbox.config()
    config["insights"]["sftp"]["private_key"] = sandbox.insights.client_key_text
    return config


def echo_token(token: str, status: int) -> t.Callable[[Request], Response | None]:
    """A server that echoes the caller's token in its error body (some do)."""
    def answer(request: Request) -> Response | None:
        return json_response({"error": f"token {token} is not allowed here",
                              "detail": f"Authorization received: {token}"}, status)
    return answer


# -- runs that succeed ----------------------------------------------------------------


@pytest.mark.parametrize("args", [("--about",), ("--about", "--format=json"),
                                  ("--about", "--format=markdown"), ("--discover",)])
def test_about_and_discover_print_no_secret(sb: Sandbox, args: tuple[str, ...]) -> None:
    proc = run(with_key(sb), *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()
    assert_no_secret(proc, all_secrets(sb))


def test_about_marks_every_secret_setting(sb: Sandbox) -> None:
    proc = run(with_key(sb), "--about", "--format=json")
    about = json.loads(proc.stdout)
    schema = about["settings"]

    secret_settings = []

    def walk(node: dict, path: str) -> None:
        for name, sub in (node.get("properties") or {}).items():
            full = f"{path}.{name}" if path else name
            if any(w in name for w in ("token", "password", "private_key", "passphrase")):
                secret_settings.append((full, sub))
            walk(sub, full)
            if isinstance(sub.get("items"), dict):
                walk(sub["items"], f"{full}[]")

    walk(schema, "")
    names = {n for n, _ in secret_settings}
    assert {"alation.api_token", "scuba.api_token", "insights.api_token",
            "insights.sftp.password", "insights.sftp.private_key",
            "insights.sftp.private_key_passphrase"} <= names
    for name, sub in secret_settings:
        assert sub.get("secret") is True or sub.get("writeOnly") is True, name


def test_a_full_sync_at_debug_level_prints_no_secret(sb: Sandbox) -> None:
    proc = run(with_key(sb))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"type":"RECORD"' in proc.stdout.replace(" ", "")
    assert_no_secret(proc, all_secrets(sb))


# -- error paths ---------------------------------------------------------------------

FAMILIES = ("alation", "scuba", "insights")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_refused_token_is_one_line_without_the_token(sb: Sandbox, family: str) -> None:
    config = {k: v for k, v in with_key(sb).items() if k not in FAMILIES or k == family}
    config[family]["api_token"] = WRONG[family]
    proc = run(config)
    line = assert_one_error(proc)
    assert any(code in line for code in ("401", "403")), line
    assert "api_token" in line, f"the setting to fix is not named: {line}"
    assert_no_secret(proc, all_secrets(sb))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("status", [400, 500])
def test_an_error_body_echoing_the_token_is_redacted(
    sb: Sandbox, family: str, status: int
) -> None:
    config = {k: v for k, v in with_key(sb).items() if k not in FAMILIES or k == family}
    config[family]["max_tries"] = 2
    token = config[family]["api_token"]
    service = sb.services[family]
    service.faults = Faults(override=echo_token(token, status))
    try:
        proc = run(config)
    finally:
        service.faults = Faults()
    assert_one_error(proc, str(status))
    assert_no_secret(proc, all_secrets(sb))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_malformed_body_echoing_the_token_is_redacted(sb: Sandbox, family: str) -> None:
    config = {k: v for k, v in with_key(sb).items() if k not in FAMILIES or k == family}
    token = config[family]["api_token"]
    service = sb.services[family]
    body = f"<html><body>Session for {token} expired; password={SFTP_PASSWORD}</body></html>"

    def answer(request: Request) -> Response | None:
        return Response(status=200 if request.method == "GET" else 201, body=body.encode(),
                        content_type="text/html")

    service.faults = Faults(override=answer)
    try:
        proc = run(config)
    finally:
        service.faults = Faults()
    assert_one_error(proc)
    assert_no_secret(proc, all_secrets(sb))


def test_network_errors_exhausted_print_no_secret(sb: Sandbox) -> None:
    config = with_key(sb)
    for family in FAMILIES:
        config[family]["max_tries"] = 2
    config["alation"]["base_url"] = "http://127.0.0.1:9"
    proc = run(config)
    assert_one_error(proc, "127.0.0.1:9")
    assert_no_secret(proc, all_secrets(sb))


def test_sftp_password_refused_is_one_line_without_the_password(sb: Sandbox) -> None:
    config = {k: v for k, v in sb.config().items() if k not in FAMILIES or k == "insights"}
    config["insights"]["sftp"]["password"] = WRONG["sftp"]
    config["insights"]["max_tries"] = 2
    proc = run(config)
    line = assert_one_error(proc)
    assert "sftp" in line.lower(), line
    assert_no_secret(proc, all_secrets(sb))


def test_sftp_key_with_a_wrong_passphrase_is_one_line_without_secrets(sb: Sandbox) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key_text = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    ).decode()
    config = {k: v for k, v in sb.config().items() if k not in FAMILIES or k == "insights"}
    sftp = config["insights"]["sftp"]
    sftp.pop("password")
    sftp["private_key"] = key_text
    sftp["private_key_passphrase"] = "not-the-passphrase-8hj3"
    proc = run(config)
    line = assert_one_error(proc, "insights.sftp")
    assert_no_secret(proc, [*all_secrets(sb), "not-the-passphrase-8hj3",
                            *key_fragments(key_text)])
    assert "private_key" in line, line


BAD_VALUES: list[tuple[str, t.Callable[[dict], None]]] = [
    # A secret pasted into the wrong setting must not be echoed back.
    ("token_in_page_size", lambda c: c["alation"].update(page_size=ALATION_TOKEN)),
    ("token_in_base_url", lambda c: c["scuba"].update(base_url=SCUBA_TOKEN)),
    ("token_as_number", lambda c: c["insights"].update(api_token=80417793)),
    ("password_in_port", lambda c: c["insights"]["sftp"].update(port=SFTP_PASSWORD)),
    ("password_as_list", lambda c: c["insights"]["sftp"].update(password=[SFTP_PASSWORD])),
    ("token_in_result_format",
     lambda c: c["scuba"]["queries"][0].update(result_format=SCUBA_TOKEN)),
    ("key_text_in_host_key",
     lambda c: c["insights"]["sftp"].update(host_key=c["insights"]["sftp"]["private_key"])),
    ("token_in_start_date", lambda c: c.update(start_date=INSIGHTS_TOKEN)),
]


@pytest.mark.parametrize("change", [b[1] for b in BAD_VALUES], ids=[b[0] for b in BAD_VALUES])
def test_bad_config_values_are_not_echoed(sb: Sandbox, change: t.Callable[[dict], None]) -> None:
    config = copy.deepcopy(with_key(sb))
    change(config)
    proc = run(config)
    assert_one_error(proc, "setting '")
    assert_no_secret(proc, [*all_secrets(sb), "80417793"])
