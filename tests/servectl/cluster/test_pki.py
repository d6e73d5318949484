"""The serving certificate clients trust, the key files' permissions, and the token file's format."""

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from servectl.cluster.pki import (
    CERT_DAYS,
    Pki,
    User,
    serving_certificate,
    token_lines,
    write_pki,
    write_tokens,
)


def test_the_serving_certificate_names_loopback_and_is_its_own_ca() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cert = serving_certificate(key, now)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca, "clients trust it as a CA"
    assert cert.issuer == cert.subject, "self-signed"
    assert cert.not_valid_after_utc - now == timedelta(days=CERT_DAYS)


def test_written_pki_loads_as_a_trust_root_and_keys_are_private(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    write_pki(pki)
    ssl.create_default_context(cafile=str(pki.serving_cert))  # raises if the PEM is not a certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.serving_cert, pki.serving_key)  # raises if the key does not match
    for secret in (pki.serving_key, pki.service_account_key):
        assert secret.stat().st_mode & 0o777 == 0o600, f"{secret.name} is readable by others"


def test_token_lines_follow_the_api_servers_format() -> None:
    users = [User("t1", "admin", ("system:masters",)), User("t2", "ci", ("a", "b")), User("t3", "bare")]
    assert token_lines(users) == 't1,admin,admin,"system:masters"\nt2,ci,ci,"a,b"\nt3,bare,bare,""\n'


@pytest.mark.parametrize(
    ("users", "reason"),
    [
        ([User("t1", "admin"), User("t2", "admin")], "'admin' is listed twice"),
        ([User("", "admin")], "empty token"),
        ([User("a,b", "admin")], "empty token or one with ,"),
    ],
)
def test_token_lines_refuse_what_would_corrupt_the_file(users: list[User], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        token_lines(users)


def test_the_token_file_is_private(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pki.tokens.write_text("old")
    pki.tokens.chmod(0o644)
    write_tokens(pki, [User("t", "admin")])
    assert pki.tokens.stat().st_mode & 0o777 == 0o600, "an existing file keeps loose permissions"
    assert pki.tokens.read_text() == 't,admin,admin,""\n'
