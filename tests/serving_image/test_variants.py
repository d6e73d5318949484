"""Variant routing: header routes, weights, and sticky assignment."""

from collections import Counter

import pytest

from serving_image.model_config import VariantsConfig
from serving_image.variants import STICKY_BUCKETS, VariantRouter, _bucket, _fmix32, _fnv1a32

CONFIG = VariantsConfig.model_validate(
    {
        "weights": {"1": 90, "2": 10},
        "sticky": {"header": "X-User-Id"},
        "routes": [{"header": "x-segment", "value": "enterprise", "version": "2"}],
    }
)


def test_header_route_wins_over_weights() -> None:
    router = VariantRouter(CONFIG, default_version="2")
    assert {router.choose({"x-segment": "enterprise", "x-user-id": str(n)}) for n in range(100)} == {"2"}


def test_sticky_header_always_gives_one_user_the_same_version() -> None:
    router = VariantRouter(CONFIG, default_version="2")
    for user in range(300):
        assert len({router.choose({"x-user-id": f"user-{user}"}) for _ in range(5)}) == 1, user


def test_sticky_split_follows_the_weights() -> None:
    router = VariantRouter(CONFIG, default_version="2")
    counts = Counter(router.choose({"x-user-id": f"user-{n}"}) for n in range(20_000))
    assert 0.085 < counts["2"] / 20_000 < 0.115, counts


def test_random_split_follows_the_weights() -> None:
    router = VariantRouter(CONFIG, default_version="2")
    counts = Counter(router.choose({}) for _ in range(20_000))
    assert 0.085 < counts["2"] / 20_000 < 0.115, counts


def test_raising_a_weight_only_moves_users_towards_the_grown_version() -> None:
    before = VariantRouter(CONFIG, default_version="2")
    grown = CONFIG.model_copy(update={"weights": {"1": 50, "2": 50}})
    after = VariantRouter(grown, default_version="2")
    for n in range(2_000):
        headers = {"x-user-id": f"user-{n}"}
        if before.choose(headers) == "2":
            assert after.choose(headers) == "2", "a user on the candidate must stay there when it grows"


def test_raising_the_candidate_from_10_to_20_moves_only_users_from_v1_to_v2() -> None:
    before = VariantRouter(CONFIG, default_version="2")
    after = VariantRouter(CONFIG.model_copy(update={"weights": {"1": 80, "2": 20}}), default_version="2")
    users = [{"x-user-id": f"user-{n}"} for n in range(20_000)]
    moved = Counter((before.choose(u), after.choose(u)) for u in users if before.choose(u) != after.choose(u))
    assert set(moved) == {("1", "2")}, f"moves: {moved}"
    assert 0.085 < moved[("1", "2")] / len(users) < 0.115, f"about a tenth of users move: {moved}"


@pytest.mark.parametrize(("key", "digest"), [(b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)])
def test_fnv1a32_matches_the_published_test_vectors(key: bytes, digest: int) -> None:
    assert _fnv1a32(key) == digest, f"FNV-1a 32 of {key!r}"


def test_bucket_is_the_mixed_hash_scaled_by_its_high_bits() -> None:
    # fmix32 is a bijection that keeps 0 at 0 and moves everything else.
    assert _fmix32(0) == 0 and len({_fmix32(n) for n in range(1, 10_000)}) == 9_999, "a permutation"
    for key in (b"", b"a", b"user-1", "é".encode()):
        assert _bucket(key) == (_fmix32(_fnv1a32(key)) * STICKY_BUCKETS) >> 32, f"bucket of {key!r}"


@pytest.mark.parametrize("template", ["user-{}", "{}", "u{}@example.com"])
def test_buckets_spread_evenly_even_for_sequential_ids(template: str) -> None:
    counts = Counter(_bucket(template.format(n).encode()) for n in range(100_000))
    chi_square = sum((counts[b] - 1_000) ** 2 / 1_000 for b in range(STICKY_BUCKETS))
    # 148.2 is the 99.9% quantile of chi-square with 99 degrees of freedom; FNV-1a alone gives 195 on user-{}.
    assert chi_square < 148.2, f"{template}: chi-square {chi_square:.1f} over {STICKY_BUCKETS} buckets"


def test_sticky_key_is_hashed_as_the_bytes_the_client_sent() -> None:
    # REST hands the router header values decoded as latin-1; the gateway hashes the raw (UTF-8) bytes.
    router = VariantRouter(CONFIG.model_copy(update={"weights": {"1": 50, "2": 50}}), default_version="2")
    users = ["é", "ユーザー", "مستخدم-7", "👤-1", "Zoë"]
    for user in users:
        expected = "1" if _bucket(user.encode()) < 50 else "2"
        assert router.choose({"x-user-id": user.encode().decode("latin-1")}) == expected, user


def test_bucket_ranges_follow_version_numbers_not_file_order() -> None:
    ordered = VariantRouter(CONFIG, default_version="2")
    shuffled = VariantRouter(CONFIG.model_copy(update={"weights": {"2": 10, "1": 90}}), default_version="2")
    for n in range(2_000):
        headers = {"x-user-id": f"user-{n}"}
        assert ordered.choose(headers) == shuffled.choose(headers), "the gateway lays ranges out by version"


def test_no_config_routes_to_the_default_version() -> None:
    router = VariantRouter(None, default_version="3")
    assert router.choose({"x-user-id": "a"}) == "3"
    assert router.versions == ("3",)


@pytest.mark.parametrize("zero", ["1", "2"])
def test_zero_weight_version_gets_no_traffic(zero: str) -> None:
    weights = {"1": 0, "2": 100} if zero == "1" else {"1": 100, "2": 0}
    router = VariantRouter(VariantsConfig.model_validate({"weights": weights}), default_version="2")
    assert zero not in {router.choose({}) for _ in range(1_000)}


def test_versions_sort_as_numbers() -> None:
    config = VariantsConfig.model_validate({"weights": {"9": 50, "10": 50}})
    assert VariantRouter(config, default_version="10").versions == ("9", "10")
