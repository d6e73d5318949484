"""The gateway's sticky Lua filter, under the real LuaJIT, against the standalone server's hash and router.

What the mocks cannot show: that the Lua arithmetic (doubles, 32-bit `bit` ops) gives exactly the server's
bucket for every id, and what the filter does to a request's headers. Envoy embeds LuaJIT, so LuaJIT runs it.
"""

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from serving_image.model_config import VariantsConfig
from serving_image.variants import VariantRouter, _bucket, _fmix32
from stacks.manifests.sticky import (
    BUCKET_HEADER,
    BUCKETS,
    CALLER_HEADER,
    bucket_ranges,
    bucket_regex,
    lua_source,
    sticky_headers,
)

MODEL = "tabular-classifier"
SOURCE = lua_source({MODEL: "X-User-Id", "other-model": "x-session"})


@pytest.fixture(scope="module")
def luajit() -> str:
    found = shutil.which("luajit")
    assert found, "luajit is not installed: `make setup` installs it (apt package luajit)"
    return found


def _run(luajit: str, tmp_path: Path, driver: str, source: str = SOURCE) -> list[str]:
    # The driver is appended to the filter's chunk, so it sees the chunk's local functions.
    script = tmp_path / "filter.lua"
    script.write_text(f"{source}\n{driver}\n", encoding="utf-8")
    done = subprocess.run([luajit, str(script)], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, f"luajit failed: {done.stderr}"
    return done.stdout.splitlines()


def _lua_string(value: str) -> str:
    """A Lua literal of the value's UTF-8 bytes, each as a decimal escape (nothing to quote wrongly)."""
    return '"' + "".join(f"\\{byte}" for byte in value.encode()) + '"'


def _ids() -> list[str]:
    """10,000 distinct ids: sequential and random ASCII, random UTF-8 (Latin, Arabic, CJK, emoji), edges."""
    rng = random.Random(9)
    printable = [chr(c) for c in range(0x21, 0x7F)]
    alphabets = [range(0xC0, 0x250), range(0x600, 0x6FF), range(0x4E00, 0x9FFF), range(0x1F300, 0x1F5FF)]
    ids = dict.fromkeys(["x" * 4_096, "é" * 1_000, "", " ", "user 1", "user-1\t", "0", "00"])
    ids |= dict.fromkeys(f"user-{n}" for n in range(2_000))
    while len(ids) < 5_000:
        ids[f"{''.join(rng.choices(printable, k=rng.randint(1, 64)))}"] = None
    while len(ids) < 10_000:
        ids["".join(chr(rng.choice(rng.choice(alphabets))) for _ in range(rng.randint(1, 40)))] = None
    return list(ids)


def test_lua_bucket_equals_the_servers_for_10000_ids(luajit: str, tmp_path: Path) -> None:
    ids = _ids()
    assert len(ids) == 10_000 and sum(not i.isascii() for i in ids) >= 5_000, "10,000 ids, half of them UTF-8"
    (tmp_path / "ids.txt").write_bytes(b"".join(i.encode() + b"\n" for i in ids))
    out = _run(
        luajit, tmp_path, f'for line in io.lines("{tmp_path / "ids.txt"}") do print(sticky_bucket(line)) end'
    )
    assert len(out) == len(ids), f"luajit printed {len(out)} buckets for {len(ids)} ids"
    wrong = [
        (i, lua, _bucket(i.encode()))
        for i, lua in zip(ids, out, strict=True)
        if lua != str(_bucket(i.encode()))
    ]
    assert not wrong, f"{len(wrong)} ids differ (id, lua, python), e.g. {wrong[:5]}"


def test_lua_fnv_matches_the_published_test_vectors(luajit: str, tmp_path: Path) -> None:
    # FNV-1a 32-bit reference values (the FNV authors' test suite).
    vectors = {"": 0x811C9DC5, "a": 0xE40C292C, "foobar": 0xBF9CF968}
    out = _run(luajit, tmp_path, "\n".join(f'print(string.format("%d", fnv1a32("{k}")))' for k in vectors))
    assert out == [str(v) for v in vectors.values()], f"luajit FNV-1a: {out}"


def test_lua_mix_and_multiply_are_exact_at_the_32_bit_edges(luajit: str, tmp_path: Path) -> None:
    values = [
        0,
        1,
        2**16 - 1,
        2**16,
        2**31 - 1,
        2**31,
        2**32 - 1,
        *random.Random(3).sample(range(2**32), 200),
    ]
    out = _run(luajit, tmp_path, "\n".join(f'print(string.format("%d", fmix32({v})))' for v in values))
    assert out == [str(_fmix32(v)) for v in values], "fmix32 differs between LuaJIT and Python"


@pytest.mark.parametrize(
    "weights",
    [
        {"1": 90, "2": 10},
        {"1": 50, "2": 50},
        {"1": 0, "2": 100},
        {"3": 20, "1": 33, "2": 47},
        {"9": 1, "10": 99},
    ],
)
def test_gateway_ranges_send_each_user_where_the_server_does(weights: dict[str, int]) -> None:
    router = VariantRouter(
        VariantsConfig.model_validate({"weights": weights, "sticky": {"header": "x-user-id"}}),
        default_version="1",
    )
    ranges = bucket_ranges(tuple(weights.items()))
    users = _ids()[::7]
    assert len(users) >= 100, f"{len(users)} users sampled"
    for user in users:
        bucket = _bucket(user.encode())
        (mesh,) = [v for v, first, end in ranges if first <= bucket < end]
        # The REST transport hands the router header bytes decoded as latin-1.
        served = router.choose({"x-user-id": user.encode().decode("latin-1")})
        assert served == mesh, (
            f"user {user!r} (bucket {bucket}): server {served}, mesh {mesh}, weights {weights}"
        )


def _filter(luajit: str, tmp_path: Path, request: dict[str, str], source: str = SOURCE) -> dict[str, str]:
    """Run envoy_on_request on a stub handle with these request headers; the headers it leaves."""
    initial = ", ".join(f"[{_lua_string(k.lower())}] = {_lua_string(v)}" for k, v in request.items())
    driver = f"""
local h = {{{initial}}}
local headers = {{}}
function headers:get(k) return h[string.lower(k)] end
function headers:remove(k) h[string.lower(k)] = nil end
function headers:replace(k, v) h[string.lower(k)] = v end
envoy_on_request({{headers = function(self) return headers end}})
local keys = {{}}
for k in pairs(h) do keys[#keys + 1] = k end
table.sort(keys)
for _, k in ipairs(keys) do print(k .. "=" .. h[k]) end
"""
    return dict(line.split("=", 1) for line in _run(luajit, tmp_path, driver, source))


def test_filter_replaces_client_bucket_and_drops_client_caller(luajit: str, tmp_path: Path) -> None:
    path = f"/v2/models/{MODEL}/infer"
    out = _filter(
        luajit, tmp_path, {":path": path, "X-User-Id": "u-42", BUCKET_HEADER: "7", CALLER_HEADER: "admin"}
    )
    assert CALLER_HEADER not in out, f"a client-sent caller header must not reach jwt_authn's output: {out}"
    assert out[BUCKET_HEADER] == str(_bucket(b"u-42")), (
        f"bucket from the sticky header, not the client's: {out}"
    )
    assert out["x-user-id"] == "u-42", "the sticky header itself is left alone"


@pytest.mark.parametrize(
    ("path", "headers", "why"),
    [
        ("/v2/models/unlisted/infer", {"x-user-id": "u"}, "a model without a sticky header gets no bucket"),
        (f"/v2/models/{MODEL}/infer", {}, "no sticky header: the weighted route decides"),
        (f"/v2/models/{MODEL}/infer", {"x-session": "s"}, "another model's sticky header does not count"),
        (f"/v2/models/{MODEL}-canary/infer", {"x-user-id": "u"}, "a model whose name only starts the same"),
        ("/v2/health/ready", {"x-user-id": "u"}, "not a model path"),
    ],
)
def test_filter_sets_no_bucket(
    luajit: str, tmp_path: Path, path: str, headers: dict[str, str], why: str
) -> None:
    out = _filter(luajit, tmp_path, {":path": path, BUCKET_HEADER: "3", CALLER_HEADER: "x", **headers})
    assert BUCKET_HEADER not in out and CALLER_HEADER not in out, f"{why}: {out}"


def test_filter_hashes_the_calling_models_own_header(luajit: str, tmp_path: Path) -> None:
    out = _filter(luajit, tmp_path, {":path": "/v2/models/other-model/versions/2/infer", "x-session": "s-1"})
    assert out[BUCKET_HEADER] == str(_bucket(b"s-1")), f"other-model is sticky on x-session: {out}"


def test_filter_without_sticky_models_only_strips(luajit: str, tmp_path: Path) -> None:
    request = {":path": f"/v2/models/{MODEL}/infer", "x-user-id": "u", BUCKET_HEADER: "1", CALLER_HEADER: "c"}
    out = _filter(luajit, tmp_path, request, source=lua_source())
    assert out == {":path": request[":path"], "x-user-id": "u"}, out


@pytest.mark.parametrize(
    ("model", "header"), [('a"]=1--', "x-user-id"), ("m", 'x"); os.exit(1) --'), ("M", "h")]
)
def test_names_that_could_break_out_of_the_lua_table_are_refused(model: str, header: str) -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        lua_source({model: header})


def test_sticky_headers_keeps_models_that_have_one() -> None:
    assert sticky_headers([("a", "X-User-Id"), ("b", None)]) == {"a": "x-user-id"}


def test_bucket_regex_matches_exactly_its_range_for_every_range() -> None:
    others = ["", "00", "01", "09", "100", "-1", "1 ", " 1", "1\n", "a", "1a", "999"]
    for first in range(BUCKETS):
        for end in range(first + 1, BUCKETS + 1):
            pattern = bucket_regex(first, end)
            assert re.fullmatch(r"[\^$()?:|\[\]0-9-]+", pattern), f"only RE2-safe syntax: {pattern}"
            compiled = re.compile(pattern)
            matched = {n for n in range(BUCKETS) if compiled.fullmatch(str(n))}
            assert matched == set(range(first, end)), f"{first}..{end}: {pattern} matches {sorted(matched)}"
            assert matched == {n for n in range(BUCKETS) if compiled.search(str(n))}, (
                f"{pattern}: search differs"
            )
            assert not [o for o in others if compiled.fullmatch(o)], f"{pattern} matches a non-bucket"


@pytest.mark.parametrize(("first", "end"), [(0, 0), (5, 3), (-1, 10), (0, 101)])
def test_bucket_regex_refuses_empty_or_out_of_range(first: int, end: int) -> None:
    with pytest.raises(ValueError, match="not within"):
        bucket_regex(first, end)


def test_bucket_ranges_are_contiguous_in_version_order() -> None:
    ranges = bucket_ranges((("10", 30), ("9", 50), ("2", 0), ("1", 20)))
    assert ranges == [("1", 0, 20), ("9", 20, 70), ("10", 70, 100)], ranges


def test_bucket_ranges_refuse_weights_not_summing_to_100() -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        bucket_ranges((("1", 90), ("2", 5)))


def test_raising_a_weight_moves_only_the_buckets_it_gains() -> None:
    def owner(weights: tuple[tuple[str, int], ...]) -> list[str]:
        return [next(v for v, a, b in bucket_ranges(weights) if a <= n < b) for n in range(BUCKETS)]

    before, after = owner((("1", 90), ("2", 10))), owner((("1", 80), ("2", 20)))
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert moved == [("1", "2")] * 10, f"only ten buckets move, all from v1 to v2: {moved}"
