"""The token issuer's signing keys (a JWKS), from its URL or a local file, cached and rotated.

Keys are refetched when they are older than the refresh interval, and when a token names a
key id (``kid``) that is not in the set, which is how issuers rotate: the new key is
published before tokens signed with it appear. That refetch happens at most once per
``min_refetch_seconds``, so tokens with made-up key ids cannot turn the server into a
flood of requests to the issuer. A failed fetch keeps the keys already held.
"""

import asyncio
import ipaddress
import math
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from joserfc import jwk
from joserfc.errors import JoseError

from serving_image.access_log import log_event
from serving_image.errors import ServingError

MAX_JWKS_BYTES = 1024 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
MIN_RSA_BITS = 2048
# Only asymmetric keys verify tokens: a symmetric ("oct") key in a published set would let anyone
# who read the set sign tokens, so such keys are dropped rather than trusted.
ASYMMETRIC = frozenset({"RSA", "EC", "OKP"})


class KeysUnavailable(ServingError):
    """The issuer's keys could not be had (never fetched, or unreadable): tokens cannot be checked."""

    status = 503
    grpc_code = "UNAVAILABLE"
    outcome = "unavailable"


def parse_jwks(document: bytes) -> dict[str, jwk.Key]:
    """A JWKS document's signing keys by key id; unusable keys are skipped (and logged)."""
    try:
        parsed = orjson.loads(document)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"the JWKS is not JSON: {error}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("keys"), list):
        raise ValueError('the JWKS is not an object with a "keys" list')
    keys: dict[str, jwk.Key] = {}
    for entry in parsed["keys"]:
        reason = _unusable(entry)
        if reason is None:
            try:
                keys[entry["kid"]] = jwk.import_key(entry)
            except (JoseError, ValueError, TypeError) as error:
                reason = f"cannot import: {error}"
        if reason is not None:
            kid = entry.get("kid") if isinstance(entry, dict) else None
            log_event("jwks_key_skipped", kid=kid, reason=reason)
    return keys


def _unusable(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    if entry.get("kty") not in ASYMMETRIC:
        return f"key type {entry.get('kty')!r} is not an asymmetric signing key"
    if entry.get("use", "sig") != "sig":
        return f"use {entry.get('use')!r} is not 'sig'"
    if not isinstance(entry.get("kid"), str) or not entry["kid"]:
        return "no kid"
    if entry["kty"] == "RSA" and isinstance(entry.get("n"), str) and len(entry["n"]) * 6 < MIN_RSA_BITS - 8:
        return f"RSA modulus shorter than {MIN_RSA_BITS} bits"
    return None


def fetch_url(url: str) -> Callable[[], bytes]:
    """A loader for a JWKS URL: bounded in time and size."""

    def load() -> bytes:
        request = urllib.request.Request(url, headers={"accept": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310
            body: bytes = response.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS exceeds {MAX_JWKS_BYTES} bytes")
        return body

    return load


def read_file(path: Path) -> Callable[[], bytes]:
    """A loader for a local JWKS file (offline use; a mounted secret can be rotated in place)."""

    def load() -> bytes:
        with path.open("rb") as handle:
            body = handle.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS exceeds {MAX_JWKS_BYTES} bytes")
        return body

    return load


def acceptable_url(url: str) -> bool:
    """HTTPS, or plain HTTP to a loopback address only (a sidecar or a test): keys must not be spoofable."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


class KeySet:
    """The current keys, reloaded through ``load`` when stale or when a token names an unknown kid."""

    def __init__(
        self,
        load: Callable[[], bytes],
        source: str,
        refresh_seconds: float,
        min_refetch_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._source = source
        self._refresh = refresh_seconds
        self._min_refetch = min_refetch_seconds
        self._clock = clock
        self._keys: dict[str, jwk.Key] = {}
        self._loaded_at = -math.inf
        self._tried_at = -math.inf
        self._lock: asyncio.Lock | None = None
        self.fetches = 0

    def load_now(self) -> None:
        """Load synchronously (at start-up, for a file): a broken source fails loudly and early."""
        self._store(parse_jwks(self._load()))

    async def find(self, kid: str) -> jwk.Key | None:
        """The key with this id, reloading the set if it is stale or lacks the id (rate-bounded)."""
        now = self._clock()
        if now - self._loaded_at >= self._refresh and now - self._tried_at >= self._min_refetch:
            await self._reload()
        key = self._keys.get(kid)
        if key is None and self._clock() - self._tried_at >= self._min_refetch:
            await self._reload()
            key = self._keys.get(kid)
        if key is None and not self._keys:
            raise KeysUnavailable(f"the token issuer's keys could not be loaded from {self._source}")
        return key

    def candidates(self) -> list[jwk.Key]:
        """Every key held, for a token without a kid."""
        return list(self._keys.values())

    async def _reload(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        tried = self._tried_at
        async with self._lock:
            if self._tried_at != tried:  # another request reloaded while this one waited
                return
            self._tried_at = self._clock()
            self.fetches += 1
            try:
                keys = parse_jwks(await asyncio.to_thread(self._load))
            except (OSError, ValueError) as error:
                log_event(
                    "jwks_load_failed", source=self._source, reason=str(error), keys_kept=len(self._keys)
                )
                return
            self._store(keys)

    def _store(self, keys: dict[str, jwk.Key]) -> None:
        if sorted(keys) != sorted(self._keys):
            log_event("jwks_loaded", source=self._source, kids=sorted(keys))
        self._keys = keys
        self._loaded_at = self._tried_at = self._clock()
