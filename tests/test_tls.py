"""Transport security: TLS is verified by default; `ca_bundle` adds trust; nothing turns
verification off. A local HTTPS sandbox (127.0.0.1) with a certificate from a private CA
generated here with `cryptography`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import run_cli
from test_faults_sync import alation_expected

from tap_analytics.sandbox import ALATION_TOKEN, INSIGHTS_TOKEN, SCUBA_TOKEN
from tap_analytics.sandbox.alation import AlationService
from tap_analytics.sandbox.core import Service, ServiceServer
from tap_analytics.sandbox.insights import InsightsService
from tap_analytics.sandbox.scuba import ScubaService
from tap_analytics.tap import TapAnalytics

SECRET = ALATION_TOKEN  # the sandbox's token: it must never be printed


@dataclass
class Pki:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path
    other_ca_pem: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("tap-analytics test CA")
    _, other_ca = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = Pki(root / "ca.pem", root / "cert.pem", root / "key.pem", root / "other-ca.pem")
    paths.ca_pem.write_bytes(ca_cert.public_bytes(pem))
    paths.other_ca_pem.write_bytes(other_ca.public_bytes(pem))
    paths.cert_pem.write_bytes(cert.public_bytes(pem))
    paths.key_pem.write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def https_alation(pki: Pki) -> t.Iterator[tuple[AlationService, str]]:
    service = AlationService(seed=5, scale=0.05)
    server = ServiceServer(service)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_pem, pki.key_pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.start()
    host, port = server.server_address[:2]
    try:
        yield service, f"https://{host}:{port}"
    finally:
        server.stop()


def config_for(service: AlationService, url: str, **top: t.Any) -> dict:
    block = {**service.config_block(), "base_url": url, "max_tries": 5}
    return {"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-01-08T00:00:00Z",
            "alation": block, **top}


def error_lines(output: str) -> list[str]:
    return [x for x in output.splitlines() if x.startswith("tap-analytics: error:")]


def assert_tls_failure(result: t.Any, url: str) -> str:
    output = result.stderr
    assert result.returncode == 1, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    lines = error_lines(output)
    assert len(lines) == 1, output[-2000:]
    line = lines[0]
    assert "certificate" in line.lower() or "tls" in line.lower(), line
    port = url.rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}" in line, f"the server is not named: {line}"
    assert "ca_bundle" in line, f"the fix (setting ca_bundle) is not named: {line}"
    assert SECRET not in output
    assert not result.records, "no record may come through an unverified connection"
    return line


def test_verification_is_on_by_default(https_alation: tuple[AlationService, str]) -> None:
    service, url = https_alation
    result = run_cli(config_for(service, url))
    assert_tls_failure(result, url)


def test_a_tls_failure_is_not_retried(https_alation: tuple[AlationService, str]) -> None:
    # A certificate does not get valid by waiting: no "retrying" lines, one error.
    service, url = https_alation
    result = run_cli(config_for(service, url))
    assert_tls_failure(result, url)
    assert "retrying" not in result.stderr, result.stderr[-2000:]


def test_ca_bundle_makes_the_sync_succeed(
    https_alation: tuple[AlationService, str], pki: Pki
) -> None:
    service, url = https_alation
    result = run_cli(config_for(service, url, ca_bundle=str(pki.ca_pem)))
    assert result.returncode == 0, result.stderr[-2000:]
    expected = alation_expected(service)
    for stream, rows in expected.items():
        assert len(result.records.get(stream, [])) == len(rows), stream


def test_ca_bundle_holds_for_pages_fetched_ahead(
    https_alation: tuple[AlationService, str], pki: Pki
) -> None:
    # Small pages, 4 in flight: most pages go out on worker threads' own sessions, which
    # must trust the same CA bundle (and still verify: see the tests around this one).
    service, url = https_alation
    config = config_for(service, url, ca_bundle=str(pki.ca_pem))
    config["alation"].update(page_size=3, max_concurrent_requests=4)
    result = run_cli(config)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "requests in flight" in result.stderr
    expected = alation_expected(service)
    for stream, rows in expected.items():
        assert len(result.records.get(stream, [])) == len(rows), stream


def test_a_ca_bundle_of_another_ca_fails(
    https_alation: tuple[AlationService, str], pki: Pki
) -> None:
    service, url = https_alation
    result = run_cli(config_for(service, url, ca_bundle=str(pki.other_ca_pem)))
    assert_tls_failure(result, url)


@pytest.mark.parametrize("env", [
    {"CURL_CA_BUNDLE": ""},
    {"REQUESTS_CA_BUNDLE": ""},
    {"PYTHONHTTPSVERIFY": "0"},
])
def test_environment_variables_cannot_switch_verification_off(
    https_alation: tuple[AlationService, str], env: dict[str, str]
) -> None:
    service, url = https_alation
    result = run_cli(config_for(service, url), env=env)
    assert_tls_failure(result, url)


def test_no_setting_can_switch_verification_off() -> None:
    suspicious = ("verify", "insecure", "ssl", "tls", "skip_cert", "no_check", "check_cert")
    found = []

    def walk(schema: t.Any, path: str) -> None:
        if isinstance(schema, dict):
            for name, sub in (schema.get("properties") or {}).items():
                full = f"{path}.{name}" if path else name
                if any(word in name.lower() for word in suspicious):
                    found.append(full)
                walk(sub, full)
            walk(schema.get("items"), f"{path}[]")
            for key in ("anyOf", "oneOf", "allOf"):
                for sub in schema.get(key) or []:
                    walk(sub, path)

    walk(TapAnalytics.config_jsonschema, "")
    assert "ca_bundle" in TapAnalytics.config_jsonschema["properties"]
    assert not found, f"settings that look like a way to turn TLS verification off: {found}"


# -- the other families: the same TLS rules over their own clients ---------------------


@pytest.fixture(scope="module", params=["scuba", "insights"])
def https_family(request: pytest.FixtureRequest, pki: Pki) -> t.Iterator[tuple[str, dict]]:
    family = request.param
    service: Service = (ScubaService if family == "scuba" else InsightsService)(
        seed=5, scale=0.05)
    server = ServiceServer(service)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_pem, pki.key_pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.start()
    starter = getattr(service, "start_extra", None)
    if starter:
        starter()
    try:
        block = service.config_block()  # type: ignore[attr-defined]
        block["base_url"] = block["base_url"].replace("http://", "https://", 1)
        if family == "scuba":
            service.per_second = False  # type: ignore[attr-defined]
            block["min_seconds_between_queries"] = 0
        block["max_tries"] = 3
        yield family, {"start_date": "2024-01-01T00:00:00Z",
                       "end_date": "2024-01-03T00:00:00Z", family: block}
    finally:
        stopper = getattr(service, "stop_extra", None)
        if stopper:
            stopper()
        server.stop()


def test_other_families_verify_by_default(https_family: tuple[str, dict]) -> None:
    family, config = https_family
    result = run_cli(config)
    url = config[family]["base_url"]
    line = assert_tls_failure(result, url.split("/_rest")[0])
    assert "retrying" not in result.stderr, f"{family}: a TLS failure was retried"
    assert family in line.lower()
    for secret in (SCUBA_TOKEN, INSIGHTS_TOKEN):
        assert secret not in result.stderr


def test_other_families_succeed_with_ca_bundle(https_family: tuple[str, dict], pki: Pki) -> None:
    family, config = https_family
    result = run_cli({**config, "ca_bundle": str(pki.ca_pem)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(result.records.get(s) for s in result.records if s.startswith(family))
