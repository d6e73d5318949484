"""Who is calling, and may they: OAuth2 bearer JWTs checked in the server itself.

Off by default (``auth_mode=off``), for a server behind a mesh whose gateway checks tokens;
``auth_mode=jwt`` for standalone and SMB use, where nothing else stands in front. A token is
accepted only if it is signed with an algorithm on the allowlist (never ``none``, never HMAC:
a public key must never double as a shared secret), by a key of the type that algorithm needs,
taken from the issuer's JWKS; if its issuer and audience are the configured ones; and if it is
within its validity period (a small leeway for clock skew). Its scopes then decide what it may
do: ``models:<name>:<action>`` by default, with ``*`` for every model.

The caller written to the access log is a verified token's subject; without a token, only the
header a trusted proxy sets (``trusted_proxy_header``), and never a header a client chose.
"""

import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from joserfc import jws
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import Key
from joserfc.jwt import JWTClaimsRegistry

from serving_image.errors import ServingError
from serving_image.jwks import KeySet, acceptable_url, fetch_url, read_file
from serving_image.settings import Settings

ACTIONS = ("infer", "feedback", "admin")
MAX_TOKEN_LENGTH = 8192
MAX_CALLER_LENGTH = 256
# Verified tokens are remembered for at most this long, so a key withdrawn from the JWKS stops
# being honoured soon even for tokens that were checked with it before.
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 10_000
# Which key type (and curve) each asymmetric algorithm needs; anything else is refused.
KEY_TYPES: dict[str, tuple[str, frozenset[str]]] = {
    **{f"RS{bits}": ("RSA", frozenset()) for bits in (256, 384, 512)},
    **{f"PS{bits}": ("RSA", frozenset()) for bits in (256, 384, 512)},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "Ed25519": ("OKP", frozenset({"Ed25519"})),
    "Ed448": ("OKP", frozenset({"Ed448"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),  # RFC 9864 deprecates it; issuers still send it
}
REALM = "model-serving"


class Unauthenticated(ServingError):
    """No token, or one that cannot be trusted: 401 with a ``WWW-Authenticate: Bearer`` challenge."""

    status = 401
    grpc_code = "UNAUTHENTICATED"
    outcome = "unauthenticated"

    def __init__(self, message: str, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.error = error

    def challenge(self) -> str:
        """The challenge; RFC 6750 3.1: no error code when the request carried no token at all."""
        if self.error is None:
            return f'Bearer realm="{REALM}"'
        description = self.message.replace('"', "'")
        return f'Bearer realm="{REALM}", error="{self.error}", error_description="{description}"'


class Forbidden(ServingError):
    """A valid token without the scope the action needs: 403, naming the scope."""

    status = 403
    grpc_code = "PERMISSION_DENIED"
    outcome = "forbidden"

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message)
        self.scope = scope

    def challenge(self) -> str:
        """RFC 6750 3.1's insufficient_scope, with the scope that would do."""
        return f'Bearer realm="{REALM}", error="insufficient_scope", scope="{self.scope}"'


def challenge(error: ServingError) -> list[tuple[bytes, bytes]]:
    """The ``WWW-Authenticate`` header an error's REST response carries, if any."""
    if isinstance(error, Unauthenticated | Forbidden):
        return [(b"www-authenticate", error.challenge().encode("latin-1", "replace"))]
    return []


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: the token's subject and the scopes it was granted."""

    subject: str
    scopes: frozenset[str]


class Verifier:
    """Checks bearer tokens against the issuer's keys and the configured claims."""

    def __init__(
        self,
        keys: KeySet,
        issuer: str,
        audiences: tuple[str, ...],
        algorithms: tuple[str, ...],
        leeway_seconds: int,
    ) -> None:
        unsafe = sorted(set(algorithms) - set(KEY_TYPES))
        if unsafe:
            raise ValueError(f"algorithm(s) {unsafe} are not accepted; choose from {sorted(KEY_TYPES)}")
        self._keys = keys
        self._algorithms = frozenset(algorithms)
        self._leeway = leeway_seconds
        self._claims = JWTClaimsRegistry(
            leeway=leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "values": list(audiences)},
            exp={"essential": True},
            sub={"essential": True},
        )
        self._cache: OrderedDict[str, tuple[Principal, float, float]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        """The token's principal, or ``Unauthenticated`` saying what is wrong with it."""
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None and cached[1] <= now < cached[2]:
            return cached[0]
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
        try:
            signed = jws.extract_compact(token.encode("ascii"))
            header = signed.headers()
        except (JoseError, ValueError, UnicodeError):
            raise Unauthenticated("the token is not a signed JWT (JWS compact serialization)") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise Unauthenticated(f"the token's algorithm {alg!r} is not accepted")
        key = await self._key(header.get("kid"), alg)
        try:
            valid = jws.validate_compact(signed, key, algorithms=[alg])
        except JoseError:
            valid = False
        if not valid:
            raise Unauthenticated("the token's signature does not verify")
        claims = self._check_claims(signed.payload)
        principal = Principal(str(claims["sub"]), _scopes(claims))
        self._remember(token, principal, claims, now)
        return principal

    async def _key(self, kid: object, alg: str) -> Key:
        kty, curves = KEY_TYPES[alg]
        if isinstance(kid, str) and kid:
            key = await self._keys.find(kid)
            if key is None:
                raise Unauthenticated(f"the token's key id {kid!r} is not among the issuer's keys")
            candidates = [key]
        else:  # no kid: acceptable only when exactly one key could have signed it
            candidates = [key for key in self._keys.candidates() if _fits(key, alg, kty, curves)]
            if len(candidates) != 1:
                raise Unauthenticated("the token names no key id (kid) and the issuer has several keys")
        if not _fits(candidates[0], alg, kty, curves):
            raise Unauthenticated(f"the token's key is not a key for {alg}")
        return candidates[0]

    def _check_claims(self, payload: bytes | None) -> dict[str, Any]:
        try:
            claims = json.loads(payload or b"")
        except ValueError:
            raise Unauthenticated("the token's payload is not JSON") from None
        if not isinstance(claims, dict):
            raise Unauthenticated("the token's payload is not a JSON object")
        try:
            self._claims.validate(claims)
        except ExpiredTokenError:
            raise Unauthenticated("the token has expired") from None
        except MissingClaimError as error:
            raise Unauthenticated(f"the token lacks the claim(s) '{error.claim}'") from None
        except InvalidClaimError as error:
            raise Unauthenticated(
                f"the token's '{error.claim}' claim is not accepted ({error.description})"
            ) from None
        return claims

    def _remember(self, token: str, principal: Principal, claims: dict[str, Any], now: float) -> None:
        not_before = float(claims.get("nbf", now)) - self._leeway
        until = min(float(claims["exp"]) + self._leeway, now + CACHE_SECONDS)
        self._cache[token] = (principal, not_before, until)
        if len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)


def _fits(key: Key, alg: str, kty: str, curves: frozenset[str]) -> bool:
    """Whether ``key`` may verify ``alg``: its type and curve, and its own ``alg`` if it names one."""
    if key.key_type != kty:
        return False
    if curves and getattr(key, "curve_name", None) not in curves:
        return False
    named = key.get("alg")
    return named is None or named == alg


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """RFC 8693/9068's space-separated ``scope``, or the ``scp`` list some issuers send instead."""
    granted: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(item for item in value if isinstance(item, str))
    return frozenset(granted)


class Gate:
    """The transports' one entry point: the caller to log, and whether a request may go on."""

    enabled: bool
    _shared: ClassVar[dict[tuple[object, ...], "Gate"]] = {}

    def __init__(self, settings: Settings, verifier: Verifier | None) -> None:
        self.enabled = verifier is not None
        self._verifier = verifier
        self._format = settings.auth_scope_format
        self._proxy_header = settings.trusted_proxy_header.lower() or None

    @classmethod
    def for_settings(cls, settings: Settings) -> "Gate":
        """One gate per process and configuration, so REST and gRPC share one key cache."""
        key = tuple(getattr(settings, name) for name in sorted(Settings.model_fields) if _is_auth(name))
        gate = cls._shared.get(key)
        if gate is None:
            gate = cls._shared[key] = cls(settings, build_verifier(settings))
        return gate

    def caller(self, headers: Mapping[str, str]) -> str | None:
        """The caller before any token is checked: the trusted proxy's header, if the server has one."""
        if self._proxy_header is None:
            return None
        value = headers.get(self._proxy_header)
        return value[:MAX_CALLER_LENGTH] if value else None

    def scope(self, model: str, action: str) -> str:
        """The scope that allows ``action`` on ``model``."""
        return self._format.format(model=model, action=action)

    async def authorize(self, headers: Mapping[str, str], model: str, action: str) -> Principal:
        """The verified caller, if its token allows ``action`` on ``model``; else 401 or 403."""
        assert self._verifier is not None, "authorize is called only when the gate is enabled"
        principal = await self._verifier.verify(_bearer(headers.get("authorization")))
        self.require(principal, model, action)
        return principal

    def require(self, principal: Principal, model: str, action: str) -> None:
        """403 unless the principal holds the scope for ``action`` on ``model`` (or on every model)."""
        needed = self.scope(model, action)
        if needed not in principal.scopes and self.scope("*", action) not in principal.scopes:
            raise Forbidden(f"the token lacks the scope '{needed}'", needed)


def _bearer(value: str | None) -> str:
    if not value:
        raise Unauthenticated("a bearer token is required (Authorization: Bearer <token>)", error=None)
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("only Bearer authorization is accepted", error="invalid_request")
    return token.strip()


def _is_auth(name: str) -> bool:
    return name.startswith("auth_") or name == "trusted_proxy_header"


def build_verifier(settings: Settings) -> Verifier | None:
    """The verifier ``auth_mode`` asks for (None when off); a file JWKS is read now, a URL on first use."""
    if settings.auth_mode == "off":
        return None
    refresh, refetch = settings.auth_jwks_refresh_seconds, settings.auth_jwks_min_refetch_seconds
    if settings.auth_jwks_file is not None:
        keys = KeySet(read_file(settings.auth_jwks_file), str(settings.auth_jwks_file), refresh, refetch)
        keys.load_now()
    else:
        if not acceptable_url(settings.auth_jwks_url):
            raise ValueError(f"the JWKS URL must be https (or http to loopback): {settings.auth_jwks_url}")
        keys = KeySet(fetch_url(settings.auth_jwks_url), settings.auth_jwks_url, refresh, refetch)
    return Verifier(
        keys,
        settings.auth_issuer,
        _split(settings.auth_audiences),
        _split(settings.auth_algorithms),
        settings.auth_leeway_seconds,
    )


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
