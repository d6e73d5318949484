"""Properties of the variant router that must hold in every release: frozen user-to-version assignments,
weights honoured exactly over the whole draw space, and shadow sampling at exactly its rate."""

import random
from collections import Counter
from collections.abc import Iterator

import pytest

from serving_image.model_config import VariantsConfig
from serving_image.variants import VariantRouter, _bucket

# Frozen when issue 18 was worked on. A caller's bucket is a contract with the gateway (its Lua filter
# computes the same) and with every user already assigned: a change here moves users between versions
# mid-experiment, so it must never happen silently. The ids were picked to land on bucket boundaries.
GOLDEN_BUCKETS = [
    ("user-149", 0),
    ("user-62", 1),
    ("user-21", 9),
    ("user-119", 10),
    ("user-79", 49),
    ("user-506", 50),
    ("user-253", 79),
    ("user-98", 80),
    ("user-32", 89),
    ("user-107", 90),
    ("user-451", 98),
    ("user-7", 99),
    ("", 66),
    ("42", 15),
    ("alice@example.com", 31),
    ("é", 55),
    ("ユーザー", 80),
]

# user id -> version for fixed weights; bucket b goes to the version whose range [lo, hi) holds it.
GOLDEN_ASSIGNMENTS = [
    ({"1": 90, "2": 10}, "user-32", "1"),  # bucket 89, the last of v1
    ({"1": 90, "2": 10}, "user-107", "2"),  # bucket 90, the first of v2
    ({"1": 90, "2": 10}, "user-7", "2"),  # bucket 99
    ({"1": 90, "2": 10}, "user-149", "1"),  # bucket 0
    ({"1": 50, "2": 30, "3": 20}, "user-79", "1"),  # bucket 49
    ({"1": 50, "2": 30, "3": 20}, "user-506", "2"),  # bucket 50
    ({"1": 50, "2": 30, "3": 20}, "user-253", "2"),  # bucket 79
    ({"1": 50, "2": 30, "3": 20}, "user-98", "3"),  # bucket 80
    ({"1": 50, "2": 30, "3": 20}, "ユーザー", "3"),  # bucket 80, sent as UTF-8
    ({"10": 1, "9": 98, "2": 1}, "user-149", "2"),  # ranges by version number: 2 owns bucket 0
    ({"10": 1, "9": 98, "2": 1}, "user-62", "9"),  # bucket 1 is the first of 9
    ({"10": 1, "9": 98, "2": 1}, "user-451", "9"),  # bucket 98, the last of 9
    ({"10": 1, "9": 98, "2": 1}, "user-7", "10"),  # bucket 99 is 10's only one
]

# The first 40 sequential ids under 50/30/20, as one string: position n is user-n's version.
GOLDEN_SEQUENCE = "2111311312212211312231112322111133212122"


def sticky_router(weights: dict[str, int]) -> VariantRouter:
    config = VariantsConfig.model_validate({"weights": weights, "sticky": {"header": "X-User-Id"}})
    return VariantRouter(config, default_version="1")


def wire(user: str) -> str:
    """The header value as the REST transport hands it over: the UTF-8 bytes decoded as latin-1."""
    return user.encode().decode("latin-1")


@pytest.mark.parametrize(("user", "bucket"), GOLDEN_BUCKETS)
def test_a_users_bucket_never_changes(user: str, bucket: int) -> None:
    assert _bucket(user.encode()) == bucket, f"{user!r} moved from bucket {bucket}: every assignment moves"


@pytest.mark.parametrize(("weights", "user", "version"), GOLDEN_ASSIGNMENTS)
def test_a_users_version_never_changes_for_fixed_weights(
    weights: dict[str, int], user: str, version: str
) -> None:
    got = sticky_router(weights).choose({"x-user-id": wire(user)})
    assert got == version, f"{user!r} under {weights} must stay on v{version}, got v{got}"


def test_sequential_users_keep_their_frozen_versions() -> None:
    router = sticky_router({"1": 50, "2": 30, "3": 20})
    got = "".join(router.choose({"x-user-id": f"user-{n}"}) for n in range(len(GOLDEN_SEQUENCE)))
    assert got == GOLDEN_SEQUENCE, f"user-0..user-39 moved:\n  frozen {GOLDEN_SEQUENCE}\n  now    {got}"


def draws(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    """Make `random.random()` return exactly these values, in order, and fail loudly past the end."""
    stream: Iterator[float] = iter(values)
    monkeypatch.setattr(random, "random", lambda: next(stream))


def midpoints(n: int) -> list[float]:
    # Midpoints of n equal cells of [0, 1): no draw lands within float error of a percent boundary.
    return [(i + 0.5) / n for i in range(n)]


@pytest.mark.parametrize(
    "weights",
    [{"1": 90, "2": 10}, {"1": 50, "2": 30, "3": 20}, {"1": 1, "2": 99}, {"1": 99, "2": 1}, {"7": 100}],
)
def test_random_traffic_honours_the_weights_exactly_over_the_whole_draw_space(
    monkeypatch: pytest.MonkeyPatch, weights: dict[str, int]
) -> None:
    n = 10_000
    draws(monkeypatch, midpoints(n))
    router = VariantRouter(VariantsConfig.model_validate({"weights": weights}), default_version="1")
    counts = Counter(router.choose({}) for _ in range(n))
    expected = {version: weight * n // 100 for version, weight in weights.items()}
    assert counts == expected, (
        f"draws spread evenly over [0, 1) must split exactly as {weights}: {dict(counts)}"
    )


@pytest.mark.parametrize(
    ("draw", "version"),
    [
        (0.0, "1"),
        (0.49999999999999994, "1"),  # the largest double below 0.5: point just under the 50 bound
        (0.5, "2"),  # exactly on a bound: the next version's range starts there
        (0.75, "2"),
        (0.8, "3"),
        (1 - 2**-53, "3"),  # the largest draw random() can return still lands on the last version
    ],
)
def test_random_draw_edges_land_in_the_right_range(
    monkeypatch: pytest.MonkeyPatch, draw: float, version: str
) -> None:
    draws(monkeypatch, [draw])
    router = VariantRouter(VariantsConfig.model_validate({"weights": {"1": 50, "2": 30, "3": 20}}), "1")
    assert router.choose({}) == version, f"draw {draw!r} (point {draw * 100!r}) under 50/30/20"


def test_random_traffic_ignores_the_sticky_header_when_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 1_000
    draws(monkeypatch, midpoints(n))
    router = sticky_router({"1": 90, "2": 10})
    counts = Counter(router.choose({"x-other": "user-7"}) for _ in range(n))
    assert counts == {"1": 900, "2": 100}, f"no sticky header: random draws by weight, got {dict(counts)}"


def shadow_router(percent: float, weights: dict[str, int] | None = None) -> VariantRouter:
    config = VariantsConfig.model_validate(
        {"weights": weights or {"1": 100}, "shadow": {"version": "2", "percent": percent}}
    )
    return VariantRouter(config, default_version="1")


# Dyadic draws i / 128 times 100 are exact, so the comparison with the percent is exact too.
DYADIC = [i / 128 for i in range(128)]


@pytest.mark.parametrize(
    ("percent", "mirrored"),
    [(25, 32), (50, 64), (100, 128), (0.78125, 1), (12.5, 16), (99.21875, 127), (30, 39)],
)
def test_shadow_mirrors_exactly_its_percent_of_requests(
    monkeypatch: pytest.MonkeyPatch, percent: float, mirrored: int
) -> None:
    # A draw d is mirrored when d * 100 < percent: for 25% that is i < 32, so i = 32 (d * 100 == 25) is not.
    draws(monkeypatch, DYADIC)
    router = shadow_router(percent)
    shadows = [router.shadow("1") for _ in DYADIC]
    assert shadows.count("2") == mirrored, f"{percent}% of 128 evenly spread draws, got {shadows.count('2')}"
    assert set(shadows) <= {"2", None}, f"only the shadow version or nothing: {set(shadows)}"
    assert shadows == ["2"] * mirrored + [None] * (128 - mirrored), "the lowest draws are the mirrored ones"


def test_shadow_never_mirrors_to_the_version_that_served(monkeypatch: pytest.MonkeyPatch) -> None:
    draws(monkeypatch, [0.0] * 10)
    router = shadow_router(100, weights={"1": 50, "2": 50})
    assert router.shadow("2") is None, "a request v2 served is never mirrored to v2, even at 100%"
    assert router.shadow("1") == "2", "a request v1 served is mirrored at 100%"


def test_no_shadow_configured_mirrors_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    draws(monkeypatch, [0.0] * 10)
    assert VariantRouter(VariantsConfig.model_validate({"weights": {"1": 100}}), "1").shadow("1") is None
    assert VariantRouter(None, "1").shadow("1") is None, "no config, no shadow"


def test_versions_lists_only_what_can_receive_traffic() -> None:
    config = VariantsConfig.model_validate(
        {
            "weights": {"1": 0, "2": 100, "3": 0},
            "routes": [{"header": "x-beta", "value": "yes", "version": "3"}],
        }
    )
    assert VariantRouter(config, "2").versions == ("2", "3"), "a zero weight without a route gets no traffic"


def test_names_that_are_not_numbers_are_laid_out_before_every_numbered_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The repository only routes numbered version directories; a router built directly with another name
    # still routes by weight rather than failing, and puts that name's range first.
    draws(monkeypatch, [0.25, 0.75])
    router = VariantRouter(VariantsConfig.model_validate({"weights": {"0": 50, "canary": 50}}), "0")
    assert [router.choose({}), router.choose({})] == ["canary", "0"], "canary owns [0, 50), 0 owns [50, 100)"


def test_the_router_carries_the_configured_faults() -> None:
    config = VariantsConfig.model_validate(
        {"weights": {"1": 100}, "faults": {"1": {"delay_ms": 5, "error_ratio": 0.5}}}
    )
    router = VariantRouter(config, "1")
    assert router.faults == config.faults, f"faults {router.faults}"
    assert VariantRouter(VariantsConfig.model_validate({"weights": {"1": 100}}), "1").faults == {}
    assert VariantRouter(None, "1").faults == {}, "no config, no faults"
