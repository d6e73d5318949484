"""Profiles: the bundled ones are valid and bounded; errors name the file and the key."""

from pathlib import Path

import pytest

from loadtests.config import ConfigError, load_yaml
from loadtests.profiles import BUNDLED_PROFILES, load_profile, parse_profiles
from loadtests.shapes import total_duration


def test_bundled_profiles_are_valid_and_bounded() -> None:
    profiles = parse_profiles(load_yaml(BUNDLED_PROFILES), "profiles.yaml")
    assert {"smoke", "step", "ramp", "spike", "soak"} <= profiles.keys(), profiles.keys()
    for profile in profiles.values():
        assert 0 < total_duration(profile.stages) <= 3600, f"{profile.name} must be bounded"
        assert profile.traffic.models, f"{profile.name} names no models"


def test_smoke_is_about_ten_seconds_over_both_protocols() -> None:
    smoke = load_profile("smoke")
    assert 5 <= total_duration(smoke.stages) <= 15, smoke.stages
    assert smoke.traffic.protocols.keys() == {"rest", "grpc"}, smoke.traffic.protocols


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ({}, "p.traffic.models: missing"),
        ({"models": {"m": 1}, "protocols": {"soap": 1}}, "p.traffic.protocols.soap: unknown key"),
        ({"models": {"m": 0}}, "p.traffic.models: at least one weight must be above 0"),
        ({"models": {"m": 1}, "enterprise_share": 1.5}, "p.traffic.enterprise_share: must be at most 1"),
        ({"models": {"m": 1}, "think_ms": [10]}, r"p.traffic.think_ms: expected \[min, max\]"),
        ({"models": {"m": 1}, "think_ms": [10, 5]}, "p.traffic.think_ms: min 10 is above max 5"),
        ({"models": {"m": 1}, "rows": 0}, "p.traffic.rows: must be at least 1"),
        ({"models": {"m": 1}, "batch": 4}, "p.traffic.batch: unknown key"),
    ],
)
def test_bad_traffic_names_the_key(traffic: dict[str, object], message: str) -> None:
    document = {"p": {"shape": {"kind": "constant", "users": 1, "duration_s": 1}, "traffic": traffic}}
    with pytest.raises(ConfigError, match=f"f: {message}"):
        parse_profiles(document, "f")


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no profile 'smok'; the file has .*smoke"):
        load_profile("smok")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile("smoke", tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_profile("smoke", tmp_path / "list.yaml")
