"""Bearer JWTs checked in the server: the verifier and key set alone, then REST and gRPC end to end.

Every token here is signed by the test itself (RSA, EC and Ed25519 keys made per run), and the
JWKS is served from a loopback HTTP server or written to a file, so no issuer is involved.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from joserfc.jwk import Key
from tritonclient.utils import InferenceServerException

from serving_image.auth import Forbidden, Gate, Principal, Unauthenticated, Verifier, build_verifier
from serving_image.jwks import KeySet, KeysUnavailable, acceptable_url, parse_jwks
from serving_image.settings import Settings
from tests.serving_image.auth_tokens import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    claims,
    ec_key,
    ed_key,
    hmac_with_public_key,
    jwks,
    rsa_key,
    sign,
    unsigned,
)
from tests.serving_image.conftest import ServerProcess, start_server, wait_until

RSA = rsa_key("rsa-1")
EC = ec_key("ec-1")
ED = ed_key("ed-1")
OTHER_RSA = rsa_key("rsa-1")  # same kid, different key: what a forger would try
ROTATED = rsa_key("rsa-2")


def verifier_for(*keys: Key, leeway: int = 30, refetch: float = 0.0) -> tuple[Verifier, KeySet]:
    """A verifier whose key set loads ``keys`` (rebound by tests that rotate) from memory."""
    current = {"document": jwks(*keys)}
    key_set = KeySet(lambda: json.dumps(current["document"]).encode(), "memory", 300, refetch)
    key_set.document = current  # type: ignore[attr-defined]
    algorithms = ("RS256", "PS256", "ES256", "Ed25519", "EdDSA")
    return Verifier(key_set, ISSUER, (AUDIENCE, "other-audience"), algorithms, leeway), key_set


def verify(verifier: Verifier, token: str) -> Principal:
    return asyncio.run(verifier.verify(token))


def refused(verifier: Verifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as raised:
        verify(verifier, token)
    return raised.value.message


@pytest.mark.parametrize(
    ("token", "alg"),
    [
        (lambda: sign(RSA, claims()), "RS256"),
        (lambda: sign(RSA, claims(), alg="PS256"), "PS256"),
        (lambda: sign(EC, claims(), alg="ES256"), "ES256"),
        (lambda: sign(ED, claims(), alg="Ed25519"), "Ed25519"),
        (lambda: sign(RSA, claims(aud=["someone-else", "other-audience"])), "a list audience"),
    ],
)
def test_valid_tokens_are_accepted(token: Callable[[], str], alg: str) -> None:
    verifier, _ = verifier_for(RSA, EC, ED)
    principal = verify(verifier, token())
    assert principal == Principal("alice", frozenset({"models:doubler:infer"})), alg


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: sign(RSA, claims(lifetime=-120)), "expired"),
        (lambda: sign(RSA, claims(nbf=int(time.time()) + 600)), "nbf"),
        (lambda: sign(RSA, claims(iat=int(time.time()) + 600)), "iat"),
        (lambda: sign(RSA, claims(aud="another-service")), "aud"),
        (lambda: sign(RSA, claims(iss="https://evil.test/")), "iss"),
        (lambda: sign(RSA, {k: v for k, v in claims().items() if k != "exp"}), "exp"),
        (lambda: sign(RSA, {k: v for k, v in claims().items() if k != "sub"}), "sub"),
        (lambda: sign(OTHER_RSA, claims()), "signature does not verify"),
        (lambda: unsigned(claims(), kid="rsa-1"), "algorithm 'none' is not accepted"),
        (lambda: hmac_with_public_key(RSA, claims()), "algorithm 'HS256' is not accepted"),
        (lambda: sign(EC, claims(), alg="ES256", kid="rsa-1"), "not a key for ES256"),
        (lambda: sign(RSA, claims(), kid="nobody"), "key id 'nobody' is not among"),
        (lambda: sign(RSA, claims(), alg="RS512"), "algorithm 'RS512' is not accepted"),
        (lambda: "not-a-token", "not a signed JWT"),
        (lambda: "x" * 9000, "longer than"),
    ],
)
def test_untrustworthy_tokens_are_refused(make: Callable[[], str], reason: str) -> None:
    verifier, _ = verifier_for(RSA, EC)
    message = refused(verifier, make())
    assert reason in message, message


def test_leeway_forgives_a_little_clock_skew() -> None:
    verifier, _ = verifier_for(RSA, leeway=30)
    assert verify(verifier, sign(RSA, claims(lifetime=-10))).subject == "alice"
    strict, _ = verifier_for(RSA, leeway=0)
    assert "expired" in refused(strict, sign(RSA, claims(lifetime=-10)))


def test_unknown_kid_reloads_the_keys_so_rotation_needs_no_restart() -> None:
    verifier, key_set = verifier_for(RSA)
    assert verify(verifier, sign(RSA, claims())).subject == "alice"
    key_set.document["document"] = jwks(RSA, ROTATED)  # type: ignore[attr-defined]
    assert verify(verifier, sign(ROTATED, claims(subject="bob"))).subject == "bob"


def test_unknown_kids_reload_at_most_once_per_interval() -> None:
    verifier, key_set = verifier_for(RSA, refetch=60)

    async def flood() -> list[BaseException | Principal]:
        await verifier.verify(sign(RSA, claims()))  # the first load
        tokens = [sign(RSA, claims(), kid=f"made-up-{n}") for n in range(20)]
        return await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)

    results = asyncio.run(flood())
    assert all(isinstance(result, Unauthenticated) for result in results)
    assert key_set.fetches == 1, "made-up key ids must not make the server hammer the issuer"


def test_a_verified_token_is_cached_but_not_past_its_expiry() -> None:
    verifier, key_set = verifier_for(RSA, leeway=0)
    token = sign(RSA, claims(lifetime=2))
    verify(verifier, token)
    verify(verifier, token)
    assert key_set.fetches == 1
    time.sleep(2.1)
    assert "expired" in refused(verifier, token)


def test_keys_that_cannot_be_loaded_are_a_503_not_a_pass() -> None:
    def broken() -> bytes:
        raise OSError("connection refused")

    verifier = Verifier(KeySet(broken, "nowhere", 300, 0), ISSUER, (AUDIENCE,), ("RS256",), 30)
    with pytest.raises(KeysUnavailable):
        verify(verifier, sign(RSA, claims()))


def test_symmetric_and_weak_keys_in_a_jwks_are_ignored() -> None:
    document = {
        "keys": [
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
            {**rsa_key("enc").as_dict(private=False), "use": "enc"},
            RSA.as_dict(private=False),
            {"kty": "RSA", "kid": "short", "n": "AQAB" * 10, "e": "AQAB"},
        ]
    }
    assert sorted(parse_jwks(json.dumps(document).encode())) == ["rsa-1"]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://issuer.example/jwks", True),
        ("http://127.0.0.1:8000/jwks", True),
        ("http://[::1]/jwks", True),
        ("http://localhost/jwks", True),
        ("http://issuer.example/jwks", False),
        ("file:///etc/passwd", False),
    ],
)
def test_jwks_urls_must_be_https_or_loopback(url: str, ok: bool) -> None:
    assert acceptable_url(url) is ok


def jwt_settings(**extra: Any) -> Settings:
    fields: dict[str, Any] = {
        "auth_mode": "jwt", "auth_issuer": ISSUER, "auth_audiences": AUDIENCE,
        "auth_jwks_url": "https://issuer.test/jwks", **extra,
    }  # fmt: skip
    return Settings(**fields)


def test_jwt_mode_needs_an_issuer_an_audience_and_one_key_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="auth_issuer and auth_audiences"):
        Settings(auth_mode="jwt", auth_jwks_url="https://issuer.test/jwks")
    with pytest.raises(ValueError, match="exactly one of"):
        jwt_settings(auth_jwks_file=tmp_path / "jwks.json")
    with pytest.raises(ValueError, match="must contain"):
        jwt_settings(auth_scope_format="serve:{model}")
    with pytest.raises(ValueError, match="not accepted"):
        build_verifier(jwt_settings(auth_algorithms="RS256,HS256"))
    with pytest.raises(ValueError, match="https"):
        build_verifier(jwt_settings(auth_jwks_url="http://issuer.test/jwks"))


def test_a_local_jwks_file_works_offline(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(EC)), encoding="utf-8")
    verifier = build_verifier(jwt_settings(auth_jwks_url="", auth_jwks_file=path))
    assert verifier is not None
    assert verify(verifier, sign(EC, claims(), alg="ES256")).subject == "alice"


@pytest.mark.parametrize(
    ("scopes", "model", "action", "allowed"),
    [
        ("models:doubler:infer", "doubler", "infer", True),
        ("models:*:infer", "doubler", "infer", True),
        ("models:doubler:infer", "doubler", "feedback", False),
        ("models:tabular-classifier:infer", "doubler", "infer", False),
        ("", "doubler", "infer", False),
    ],
)
def test_scopes_are_per_model_and_action(scopes: str, model: str, action: str, allowed: bool) -> None:
    gate = Gate(jwt_settings(), verifier=None)
    principal = Principal("alice", frozenset(scopes.split()))
    if allowed:
        gate.require(principal, model, action)
    else:
        with pytest.raises(Forbidden) as raised:
            gate.require(principal, model, action)
        assert raised.value.scope == f"models:{model}:{action}"


def test_the_scope_format_is_configurable() -> None:
    gate = Gate(jwt_settings(auth_scope_format="{action}:{model}"), verifier=None)
    gate.require(Principal("a", frozenset({"infer:doubler"})), "doubler", "infer")


def test_a_caller_header_is_believed_only_from_a_trusted_proxy() -> None:
    assert Gate(Settings(), verifier=None).caller({"x-caller": "mallory", "x-jwt-sub": "mallory"}) is None
    proxied = Gate(Settings(trusted_proxy_header="X-Caller"), verifier=None)
    assert proxied.caller({"x-caller": "alice"}) == "alice"


# End to end: a real server process with auth_mode=jwt, its JWKS on a loopback HTTP server.

BOTH = "models:doubler:infer models:doubler:feedback"


@pytest.fixture(scope="module")
def issuer() -> Iterator[JwksServer]:
    with JwksServer(jwks(RSA, EC)).running() as served:
        yield served


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path, issuer: JwksServer
) -> Iterator[ServerProcess]:
    env = {
        "SERVING_AUTH_MODE": "jwt",
        "SERVING_AUTH_JWKS_URL": issuer.url,
        "SERVING_AUTH_ISSUER": ISSUER,
        "SERVING_AUTH_AUDIENCES": f"{AUDIENCE},another",
        "SERVING_AUTH_JWKS_MIN_REFETCH_SECONDS": "0.2",
        "SERVING_FEEDBACK_BURST": "5",
        "SERVING_FEEDBACK_RATE_PER_SECOND": "0.5",
    }
    process = start_server(test_repository, tmp_path_factory.mktemp("secured-logs"), env=env)
    yield process
    assert process.stop() == 0, process.stderr()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def rest_infer(server: ServerProcess, headers: dict[str, str], model: str = "doubler") -> requests.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
    }
    return requests.post(f"{server.base}/v2/models/{model}/infer", json=body, headers=headers, timeout=10)


def doubler_inputs(module: Any) -> list[Any]:
    infer_input = module.InferInput("x", [1, 4], "FP32")
    infer_input.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
    return [infer_input]


def logged(server: ServerProcess, request_id: str) -> dict[str, Any]:
    """The access-log line of one request; it is written just after the response is sent."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in server.stdout().splitlines() if line.startswith("{")]
        found: list[dict[str, Any]] = [line for line in lines if line.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"{len(found)} lines for {request_id}"
            return found[0]
        time.sleep(0.05)


def test_tritonclient_http_and_grpc_pass_with_a_valid_token(secured: ServerProcess) -> None:
    token = sign(RSA, claims(subject="http-and-grpc"))
    http = httpclient.InferenceServerClient(secured.http_url)
    result = http.infer("doubler", doubler_inputs(httpclient), headers=bearer(token))
    assert result.as_numpy("y").tolist() == [[0, 2, 4, 6]]
    grpc = grpcclient.InferenceServerClient(secured.grpc_url)
    result = grpc.infer(
        "doubler", doubler_inputs(grpcclient), headers=bearer(sign(EC, claims(), alg="ES256"))
    )
    assert result.as_numpy("y").tolist() == [[0, 2, 4, 6]]


@pytest.mark.parametrize(
    ("headers", "status", "challenge"),
    [
        (lambda: {}, 401, 'Bearer realm="model-serving"'),
        (lambda: {"authorization": "Basic YWxpY2U6cHc="}, 401, 'error="invalid_request"'),
        (lambda: bearer(sign(RSA, claims(lifetime=-120))), 401, 'error="invalid_token"'),
        (lambda: bearer(sign(RSA, claims(nbf=int(time.time()) + 600))), 401, 'error="invalid_token"'),
        (lambda: bearer(sign(RSA, claims(aud="another-service"))), 401, 'error="invalid_token"'),
        (lambda: bearer(sign(RSA, claims(iss="https://evil.test/"))), 401, 'error="invalid_token"'),
        (lambda: bearer(sign(OTHER_RSA, claims())), 401, 'error="invalid_token"'),
        (lambda: bearer(unsigned(claims(), "rsa-1")), 401, 'error="invalid_token"'),
        (lambda: bearer(hmac_with_public_key(RSA, claims())), 401, 'error="invalid_token"'),
        (lambda: bearer(sign(RSA, claims(scope=""))), 403, 'scope="models:doubler:infer"'),
        (
            lambda: bearer(sign(RSA, claims(scope="models:tabular-classifier:infer"))),
            403,
            'error="insufficient_scope"',
        ),
    ],
)
def test_rest_refuses_with_401_or_403_a_challenge_and_a_json_error(
    secured: ServerProcess, headers: Callable[[], dict[str, str]], status: int, challenge: str
) -> None:
    answer = rest_infer(secured, headers())
    assert answer.status_code == status, answer.text
    assert challenge in answer.headers["www-authenticate"], answer.headers
    assert set(answer.json()) == {"error"}, answer.text


def test_tritonclient_sees_the_refusal(secured: ServerProcess) -> None:
    http = httpclient.InferenceServerClient(secured.http_url)
    with pytest.raises(InferenceServerException) as raised:
        http.infer("doubler", doubler_inputs(httpclient), headers=bearer(sign(RSA, claims(lifetime=-120))))
    assert raised.value.status() == "401" and "expired" in str(raised.value.message())


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (lambda: {}, "StatusCode.UNAUTHENTICATED"),
        (lambda: bearer(sign(RSA, claims(lifetime=-120))), "StatusCode.UNAUTHENTICATED"),
        (lambda: bearer(unsigned(claims(), "rsa-1")), "StatusCode.UNAUTHENTICATED"),
        (lambda: bearer(hmac_with_public_key(RSA, claims())), "StatusCode.UNAUTHENTICATED"),
        (lambda: bearer(sign(RSA, claims(scope="models:other:infer"))), "StatusCode.PERMISSION_DENIED"),
    ],
)
def test_grpc_refuses_with_unauthenticated_or_permission_denied(
    secured: ServerProcess, headers: Callable[[], dict[str, str]], code: str
) -> None:
    grpc = grpcclient.InferenceServerClient(secured.grpc_url)
    with pytest.raises(InferenceServerException) as raised:
        grpc.infer("doubler", doubler_inputs(grpcclient), headers=headers())
    assert raised.value.status() == code, raised.value.message()


def test_a_rotated_key_is_picked_up_without_a_restart(secured: ServerProcess, issuer: JwksServer) -> None:
    assert rest_infer(secured, bearer(sign(RSA, claims()))).ok
    token = sign(ROTATED, claims(subject="after-rotation"))
    assert rest_infer(secured, bearer(token)).status_code == 401, "not published yet"
    issuer.document = jwks(EC, ROTATED)
    # The server refetches for an unknown key id at most every 0.2 s: it is picked up at a later try.
    wait_until(lambda: rest_infer(secured, bearer(token)).ok, 5, "the rotated key was never picked up")


def test_the_logged_caller_is_the_tokens_subject_never_a_client_header(secured: ServerProcess) -> None:
    headers = {**bearer(sign(EC, claims(subject="verified-alice"), alg="ES256")), "x-caller": "mallory"}
    answer = rest_infer(secured, {**headers, "x-jwt-sub": "mallory"})
    assert answer.ok, answer.text
    line = logged(secured, answer.headers["x-request-id"])
    assert line["caller"] == "verified-alice", line
    refused_answer = rest_infer(secured, {"x-caller": "mallory", "x-jwt-sub": "mallory"})
    line = logged(secured, refused_answer.headers["x-request-id"])
    assert line["caller"] is None and line["status"] == 401 and line["model"] == "_unknown", line


def test_without_auth_a_client_sent_caller_header_is_not_logged(server: ServerProcess) -> None:
    answer = rest_infer(server, {"x-jwt-sub": "mallory", "x-caller": "mallory"})
    assert answer.ok, answer.text
    line = logged(server, answer.headers["x-request-id"])
    assert line["caller"] is None, line


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"SERVING_AUTH_ALGORITHMS": "HS256"}, "are not accepted"),
        ({"SERVING_AUTH_JWKS_URL": "http://idp.example.com/jwks"}, "must be https"),
    ],
)
def test_bad_auth_settings_exit_2_naming_the_problem(env: dict[str, str], reason: str) -> None:
    base = {
        "SERVING_AUTH_MODE": "jwt",
        "SERVING_AUTH_ISSUER": "https://idp.example.com",
        "SERVING_AUTH_AUDIENCES": "model-api",
        "SERVING_AUTH_JWKS_URL": "https://idp.example.com/jwks",
    }
    result = subprocess.run(
        [sys.executable, "-c", "from serving_image.settings import load_settings; load_settings([])"],
        env={**os.environ, **base, **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "invalid setting: auth:" in result.stderr and reason in result.stderr, result.stderr
