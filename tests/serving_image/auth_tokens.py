"""Keys, tokens and a JWKS endpoint the auth tests make themselves: no issuer is needed."""

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

ISSUER = "https://issuer.test/"
AUDIENCE = "model-serving"


def rsa_key(kid: str) -> RSAKey:
    """A fresh 2048-bit RSA signing key."""
    return RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)


def ec_key(kid: str, curve: str = "P-256") -> ECKey:
    """A fresh EC signing key."""
    return ECKey.generate_key(curve, parameters={"kid": kid}, private=True)


def ed_key(kid: str) -> OKPKey:
    """A fresh Ed25519 signing key."""
    return OKPKey.generate_key("Ed25519", parameters={"kid": kid}, private=True)


def jwks(*keys: Key) -> dict[str, Any]:
    """The public JWKS document for ``keys``."""
    return {"keys": [key.as_dict(private=False) for key in keys]}


def claims(
    subject: str = "alice", scope: str = "models:doubler:infer", lifetime: float = 300, **extra: Any
) -> dict[str, Any]:
    """Valid claims for the test issuer and audience; ``extra`` overrides any."""
    now = int(time.time())
    return {
        "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "scope": scope,
        "iat": now, "exp": now + int(lifetime), **extra,
    }  # fmt: skip


def sign(key: Key, payload: dict[str, Any], alg: str = "RS256", kid: str | None = None) -> str:
    """A compact JWT signed with ``key`` (the header's kid is the key's unless given)."""
    header = {"alg": alg, "kid": kid if kid is not None else key.kid}
    return jwt.encode(header, payload, key, algorithms=[alg])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(payload: dict[str, Any], kid: str) -> str:
    """An ``alg: none`` token: no signature at all."""
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}."


def hmac_with_public_key(key: RSAKey, payload: dict[str, Any]) -> str:
    """The HS/RS confusion attack: HS256 keyed with the RSA public key's PEM, which anyone can read."""
    secret = key.as_pem(private=False)
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


class JwksServer:
    """A loopback HTTP server answering the current JWKS, counting how often it is asked."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    @contextmanager
    def running(self) -> Iterator["JwksServer"]:
        """Serve in a thread for the duration of the block."""
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
