"""The TLS and JWT set-ups of the serving benchmark: their material, wrk scripts and the cost ratios."""

import asyncio
import ssl
from pathlib import Path

import pytest

from benchmarks.measures import LoadResult
from benchmarks.report import ModelRun, Row, security_costs
from benchmarks.security import JWT, JWT_FRESH, TLS, VARIANTS, Variant, build_variants
from benchmarks.wrk_runner import lua_script
from serving_image.auth import build_verifier
from serving_image.settings import Settings


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Variant]:
    return {variant.name: variant for variant in build_variants(tmp_path_factory.mktemp("security"), 4)}


def test_every_variant_is_built_once(variants: dict[str, Variant]) -> None:
    assert tuple(variants) == VARIANTS


def test_the_tls_material_makes_a_server_context_a_client_trusts(variants: dict[str, Variant]) -> None:
    tls = variants[TLS]
    flags = dict(zip(tls.flags[::2], tls.flags[1::2], strict=True))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(flags["--tls-cert"], flags["--tls-key"])
    assert tls.client_context() is not None, "the readiness check trusts the bench CA"


@pytest.mark.parametrize("name", [JWT, JWT_FRESH])
def test_the_tokens_are_accepted_by_the_servers_verifier(variants: dict[str, Variant], name: str) -> None:
    variant = variants[name]
    env = variant.env
    settings = Settings(
        auth_mode="jwt", auth_jwks_file=Path(env["SERVING_AUTH_JWKS_FILE"]),
        auth_issuer=env["SERVING_AUTH_ISSUER"], auth_audiences=env["SERVING_AUTH_AUDIENCES"],
    )  # fmt: skip
    verifier = build_verifier(settings)
    assert verifier is not None
    tokens = [variant.headers["Authorization"].removeprefix("Bearer ")]
    if variant.tokens_file is not None:
        tokens += variant.tokens_file.read_text(encoding="ascii").split()
        assert len(set(tokens[1:])) == 4, "every cycled token is distinct"
    for token in tokens:
        principal = asyncio.run(verifier.verify(token))
        assert "models:*:infer" in principal.scopes, principal


def test_the_lua_script_sends_headers_and_cycles_tokens(tmp_path: Path) -> None:
    script = lua_script("{}", {"Authorization": "Bearer abc"}, tmp_path / "tokens.txt")
    assert 'wrk.headers["Authorization"] = "Bearer abc"' in script, script
    assert f'io.lines("{tmp_path / "tokens.txt"}")' in script, script
    assert "function request()" in script and "index = index + 2" in script, script
    assert "function request()" not in lua_script("{}"), "a plain script keeps wrk's prepared request"


def _result(rps: float, p99: float) -> LoadResult:
    return LoadResult(requests_per_s=rps, p50_ms=p99 / 2, p99_ms=p99, requests=int(rps * 10))


def test_security_costs_compare_each_variant_with_plain_http() -> None:
    run = ModelRun("m", "d", [
        Row("ours", "http", 8, _result(1000, 2.0)),
        Row(TLS, "http", 8, _result(800, 3.0)),
        Row(JWT, "http", 8, None, "failed"),
    ])  # fmt: skip
    costs = security_costs(run, VARIANTS, (8, 64))
    assert costs == {
        f"{TLS}/ours req/s c=8": 0.8, f"{TLS}/ours p99 c=8": 1.5,
    }, "only what was measured, against plain HTTP at the same concurrency"  # fmt: skip
