"""Profiles: the bundled ones are valid and bounded; errors name the file and the key."""

from pathlib import Path

import pytest
import yaml

from loadtests.config import ConfigError, load_yaml
from loadtests.profiles import (
    BUNDLED_PROFILES,
    load_profile,
    loaded_models,
    parse_models,
    parse_profiles,
    restrict,
)
from loadtests.shapes import total_duration


def test_bundled_profiles_are_valid_and_bounded() -> None:
    profiles = parse_profiles(load_yaml(BUNDLED_PROFILES), str(BUNDLED_PROFILES))
    assert {"smoke", "step", "ramp", "spike", "soak"} <= profiles.keys(), profiles.keys()
    for profile in profiles.values():
        assert 0 < total_duration(profile.stages) <= 3600, f"{profile.name} must be bounded"
        assert profile.traffic.models, f"{profile.name} names no models"


def test_smoke_is_about_ten_seconds_over_both_protocols() -> None:
    smoke = load_profile("smoke")
    assert 5 <= total_duration(smoke.stages) <= 15, smoke.stages
    assert smoke.traffic.protocols.keys() == {"rest", "grpc"}, smoke.traffic.protocols


def test_deploy_smoke_stays_under_the_smallest_per_caller_rate_limit() -> None:
    profile = load_profile("deploy-smoke")
    users = max(stage.users for stage in profile.stages)
    most_rps = users / (profile.traffic.think_ms[0] / 1000)  # even if the gateway answered in no time
    assert most_rps < 50, f"{most_rps:.0f} req/s would meet smb-eu's limit of 50 req/s per model and caller"
    assert profile.traffic.protocols == {"rest": 1.0}, "the gateway routes only the models' REST paths"
    assert loaded_models(profile) == ["tabular-classifier"], "the model every stack serves"


def test_restrict_keeps_the_weights_of_the_models_named() -> None:
    smoke = load_profile("smoke")
    restricted = restrict(smoke, parse_models(" tabular-classifier "))
    assert restricted.traffic.models == {"tabular-classifier": 3.0}, restricted.traffic.models
    assert restricted.stages == smoke.stages and restrict(smoke, ()) is smoke, "only the models change"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("tabular-clasifier", r"--models: 'tabular-clasifier' is not in profile smoke's traffic.models"),
        ("tabular-classifier,", "--models: an empty name; expected model names separated by commas"),
        ("", "--models: an empty name"),
    ],
)
def test_restrict_refuses_models_the_profile_does_not_load(models: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        restrict(load_profile("smoke"), parse_models(models))


def test_restrict_refuses_a_selection_without_weight() -> None:
    document = {"p": {"shape": {"kind": "constant", "users": 1, "duration_s": 1},
                      "traffic": {"models": {"a": 1, "b": 0}}}}  # fmt: skip
    profile = parse_profiles(document, "f")["p"]
    assert loaded_models(profile) == ["a"], "a model of weight 0 is not loaded"
    with pytest.raises(ConfigError, match="--models: every model named has weight 0 in profile p"):
        restrict(profile, ("b",))


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
        ({"models": {"m": 1}, "user_ids": -1}, "p.traffic.user_ids: must be at least 0"),
        ({"models": {"m": 1}, "metadata": ""}, "p.traffic.metadata: expected a directory"),
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


def test_smb_smoke_fits_the_smb_api() -> None:
    """The smb API routes only inference (no metadata route) and SageMaker splits each request by weight (no
    sticky users): the profile reads shipped metadata and sends no end-user ids, under the route throttle."""
    profile = load_profile("smb-smoke")
    assert profile.traffic.metadata == BUNDLED_PROFILES.parent / "metadata", profile.traffic.metadata
    assert profile.traffic.user_ids == 0 and profile.traffic.enterprise_share == 0, profile.traffic
    users = max(stage.users for stage in profile.stages)
    most_rps = users / (profile.traffic.think_ms[0] / 1000)
    assert most_rps < 50, f"{most_rps:.0f} req/s would meet the smb stacks' route throttle of 50 req/s"
    assert profile.traffic.protocols == {"rest": 1.0} and loaded_models(profile) == ["tabular-classifier"]


def test_metadata_is_relative_to_the_profiles_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "m.json").write_text("{}")
    document = {"p": {"shape": {"kind": "constant", "users": 1, "duration_s": 1},
                      "traffic": {"models": {"m": 1}, "metadata": "docs"}}}  # fmt: skip
    profile = parse_profiles(document, str(tmp_path / "profiles.yaml"))["p"]
    assert profile.traffic.metadata == tmp_path / "docs", profile.traffic.metadata


def test_a_chosen_profile_needs_its_metadata_documents(tmp_path: Path) -> None:
    """Checked when chosen, not when parsed: another profile of the same file still loads without them."""
    shape = {"kind": "constant", "users": 1, "duration_s": 1}
    document = {"reads": {"shape": shape, "traffic": {"models": {"m": 1, "n": 1}, "metadata": "docs"}},
                "asks": {"shape": shape, "traffic": {"models": {"m": 1}}}}  # fmt: skip
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(document))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "m.json").write_text("{}")
    assert load_profile("asks", path).traffic.metadata is None
    with pytest.raises(ConfigError, match=r"reads.traffic.metadata: .*docs has no n \(<model>.json\)"):
        load_profile("reads", path)
    (tmp_path / "docs" / "n.json").write_text("{}")
    assert load_profile("reads", path).traffic.metadata == tmp_path / "docs"
