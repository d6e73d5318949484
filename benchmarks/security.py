"""What TLS and JWT verification cost: the server set-ups the benchmark compares with plain HTTP.

Each set-up makes its own material in the run's temporary folder: a CA and a server
certificate (ECDSA P-256) for TLS, an RSA-2048 issuer key, its JWKS file and RS256 tokens for
JWT. The server verifies tokens with ``serving_image.auth`` and remembers a verified token for
up to a minute, so two JWT figures are measured: every request carrying the same token (what a
client that reuses its token costs) and every request carrying a token the server has not seen
(a full signature check each time: the worst case).
"""

import datetime
import ipaddress
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import RSAKey

ISSUER = "https://issuer.bench.invalid/"
AUDIENCE = "model-serving"
# More distinct tokens than the server's verified-token cache holds (serving_image.auth,
# 10,000), so cycling through them misses the cache on every request.
FRESH_TOKENS = 16_384
TLS, JWT, JWT_FRESH = "ours+tls", "ours+jwt", "ours+jwt-new"
VARIANTS = (TLS, JWT, JWT_FRESH)


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of running our server, and how the load generator must talk to it."""

    name: str
    flags: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    scheme: str = "http"
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers every request carries (the bearer token)."""
    tokens_file: Path | None = None
    """One token per line; each request takes the next one (wrk's two threads take alternate ones)."""
    ca_file: Path | None = None
    note: str = ""

    def client_context(self) -> ssl.SSLContext | None:
        """A TLS context trusting the variant's CA, for the readiness and smoke checks."""
        return None if self.ca_file is None else ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("bench CA")).issuer_name(_name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(_name("bench CA"))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    return paths


@dataclass(frozen=True, slots=True)
class Issuer:
    """An RS256 token issuer whose public key is in a JWKS file the server reads."""

    key: RSAKey
    jwks_file: Path

    @classmethod
    def create(cls, directory: Path) -> "Issuer":
        """A fresh RSA-2048 key and its JWKS file in ``directory``."""
        key = RSAKey.generate_key(2048, parameters={"kid": "bench-1"}, private=True)
        directory.mkdir(parents=True, exist_ok=True)
        jwks_file = directory / "jwks.json"
        jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=False)]}), encoding="utf-8")
        return cls(key, jwks_file)

    def token(self, subject: str = "bench") -> str:
        """A token valid for an hour, allowed to infer on every model."""
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "scope": "models:*:infer",
                  "iat": now, "exp": now + 3600}  # fmt: skip
        return jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key, algorithms=["RS256"])

    def server_env(self) -> dict[str, str]:
        """The ``SERVING_*`` variables that turn JWT verification on against this issuer."""
        return {
            "SERVING_AUTH_MODE": "jwt",
            "SERVING_AUTH_JWKS_FILE": str(self.jwks_file),
            "SERVING_AUTH_ISSUER": ISSUER,
            "SERVING_AUTH_AUDIENCES": AUDIENCE,
        }


def build_variants(directory: Path, fresh_tokens: int = FRESH_TOKENS) -> list[Variant]:
    """TLS alone, JWT with one reused token, JWT with a new token per request: each alone, the rest off."""
    ca, cert, key = write_tls_files(directory / "tls")
    issuer = Issuer.create(directory / "jwt")
    tokens_file = directory / "jwt" / "tokens.txt"
    # Distinct subjects make distinct tokens even when two are signed within the same second.
    tokens_file.write_text(
        "\n".join(issuer.token(f"bench-{n}") for n in range(fresh_tokens)) + "\n", encoding="ascii"
    )
    bearer = {"Authorization": f"Bearer {issuer.token()}"}
    return [
        Variant(TLS, ("--tls-cert", str(cert), "--tls-key", str(key)), scheme="https", ca_file=ca,
                note="TLS 1.3, ECDSA P-256, keep-alive (one handshake per connection)"),
        Variant(JWT, env=issuer.server_env(), headers=bearer,
                note="RS256, one token reused (verified once, then cached)"),
        Variant(JWT_FRESH, env=issuer.server_env(), headers=bearer, tokens_file=tokens_file,
                note=f"RS256, a token not seen before on every request ({fresh_tokens} cycled)"),
    ]  # fmt: skip
