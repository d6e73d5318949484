"""Variant routing: header routes, weights, and sticky assignment."""

from collections import Counter

import pytest

from serving_image.model_config import VariantsConfig
from serving_image.variants import VariantRouter

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
