"""The control plane's credentials: a self-signed serving certificate for 127.0.0.1, the service-account
signing key, and the static token file that names every user.

Made with the `cryptography` package rather than by calling openssl, so nothing here depends on a tool's
command-line flags. Keys are written owner-readable only: the token file and keys grant cluster admin.
"""

import ipaddress
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CERT_DAYS = 30
"""Long enough for a development cluster left running; `up` again makes a new one."""
ADMIN_USER = "admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
"""The identity the API server's bootstrap RBAC policy grants the controller-manager's own rights to."""


@dataclass(frozen=True)
class User:
    """A token-file user: its token, name and groups."""

    token: str
    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pki:
    """Where the credentials are, under the state directory's `pki/`."""

    root: Path

    @property
    def serving_cert(self) -> Path:
        """The serving certificate, also the CA clients trust (it is self-signed)."""
        return self.root / "serving.crt"

    @property
    def serving_key(self) -> Path:
        """The serving certificate's private key."""
        return self.root / "serving.key"

    @property
    def service_account_key(self) -> Path:
        """The key that signs (private) and verifies (its public half) service-account tokens."""
        return self.root / "sa.key"

    @property
    def tokens(self) -> Path:
        """The API server's static token file."""
        return self.root / "tokens.csv"


def new_token() -> str:
    """A bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only, before any secret is in it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # O_CREAT's mode does not apply to a file that already existed
        out.write(data)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def serving_certificate(key: rsa.RSAPrivateKey, now: datetime) -> x509.Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, valid from `now` for `CERT_DAYS` days.

    It is its own CA (basic constraints CA=true), so clients trust it by naming the file as their CA."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    alt = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERT_DAYS))
        .add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def write_pki(pki: Pki) -> None:
    """The serving certificate and key, and the service-account key, in `pki.root` (created)."""
    pki.root.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = serving_certificate(key, datetime.now(UTC))
    _write_private(pki.serving_key, _key_pem(key))
    pki.serving_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(pki.service_account_key, _key_pem(sa_key))


def token_lines(users: list[User]) -> str:
    """The token file's text: `token,user,uid,"group1,group2"` per user (the API server's format)."""
    names = [user.name for user in users]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"token file: user {duplicates[0]!r} is listed twice")
    for user in users:
        if any(c in user.token for c in ',"\n') or not user.token:
            raise ValueError(f'token file: user {user.name!r} has an empty token or one with , " or newline')
    return "".join(f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in users)


def write_tokens(pki: Pki, users: list[User]) -> None:
    """The API server's static token file for `users`, owner-readable only."""
    _write_private(pki.tokens, token_lines(users).encode())
