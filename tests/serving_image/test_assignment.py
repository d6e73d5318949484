"""How a request came to its version: the router's four assignments, the mesh's trusted header, and the
bounded count of sticky users."""

import random

import pytest

from serving_image.assignment import EXPLICIT, HEADER, STICKY, WEIGHTED, StickyUsers, from_mesh
from serving_image.model_config import VariantsConfig
from serving_image.variants import VariantRouter

CONFIG = VariantsConfig.model_validate(
    {
        "weights": {"1": 90, "2": 10},
        "sticky": {"header": "X-User-Id"},
        "routes": [{"header": "x-segment", "value": "enterprise", "version": "2"}],
    }
)


@pytest.mark.parametrize(
    ("headers", "assignment", "user"),
    [
        ({"x-segment": "enterprise", "x-user-id": "u1"}, HEADER, None),
        ({"x-user-id": "u1"}, STICKY, "u1"),
        ({}, WEIGHTED, None),
        ({"x-segment": "other"}, WEIGHTED, None),
    ],
)
def test_the_router_says_how_it_chose(headers: dict[str, str], assignment: str, user: str | None) -> None:
    random.seed(7)  # a weighted choice draws from `random`: the same draw for both calls
    version, how, key = VariantRouter(CONFIG, default_version="2").assign(headers)
    assert (how, key) == (assignment, user), f"{headers} -> {version} {how} {key}"
    random.seed(7)
    assert version == VariantRouter(CONFIG, default_version="2").choose(headers), "assign and choose agree"


def test_a_model_without_variants_is_weighted_to_its_one_version() -> None:
    assert VariantRouter(None, default_version="3").assign({"x-user-id": "u"}) == ("3", WEIGHTED, None)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-variant-assignment": "header"}, (HEADER, None)),
        ({"x-variant-assignment": "sticky", "x-variant-user": "u9"}, (STICKY, "u9")),
        ({"x-variant-assignment": "weighted", "x-variant-user": "u9"}, (WEIGHTED, None)),
        ({"x-variant-assignment": "explicit"}, (EXPLICIT, None)),
        ({"x-variant-assignment": "anything-else"}, (WEIGHTED, None)),  # ignored: labels stay bounded
        ({}, (WEIGHTED, None)),
    ],
)
def test_the_mesh_header_overrides_only_with_one_of_the_four(
    headers: dict[str, str], expected: tuple[str, str | None]
) -> None:
    assert from_mesh(headers, WEIGHTED, None) == expected


def test_sticky_users_are_counted_once_per_version_and_forgotten_beyond_capacity() -> None:
    users = StickyUsers(capacity=3)
    assert [users.first("m", "1", u) for u in ("a", "b", "a", "c")] == [True, True, False, True]
    assert users.first("m", "2", "a"), "the same user under another version is a new assignment"
    # capacity 3: ("m","1","b") was the least recently seen of the four remembered, and is forgotten
    assert users.first("m", "1", "b"), "a forgotten user counts again (an over-count, stated)"
    assert not users.first("m", "2", "a")
