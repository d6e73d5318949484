import copy
from typing import Any

import pytest
import yaml

from stacks.config import ConfigError, parse_config
from stacks.preview.run import ROOT


def raw(stack: str = "eu-prod") -> tuple[dict[str, Any], str]:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("model-serving:")}
    return copy.deepcopy(values), config["aws:region"]


def parse(values: dict[str, Any], region: str, stack: str = "eu-prod") -> None:
    parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)


@pytest.mark.parametrize("stack", ["uae-prod", "eu-prod", "us-prod", "smb-dev"])
def test_shipped_stack_files_parse(stack: str) -> None:
    values, region = raw(stack)
    cfg = parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)
    assert cfg.regions[0].region == region, f"{stack}: primary region differs from aws:region"


def test_missing_key_names_file_and_key() -> None:
    values, region = raw()
    del values["gateway"]["jwksUri"]
    with pytest.raises(
        ConfigError, match=r"Pulumi\.eu-prod\.yaml: model-serving\.gateway\.jwksUri: is required"
    ):
        parse(values, region)


def test_weights_must_sum_to_100() -> None:
    values, region = raw()
    values["models"][0]["variants"]["weights"] = {"1": 90, "2": 5}
    with pytest.raises(ConfigError, match="must sum to 100, got 95"):
        parse(values, region)


def test_region_outside_jurisdiction_is_refused() -> None:
    values, region = raw()
    values["regions"][1]["region"] = "eu-west-2"
    with pytest.raises(ConfigError, match=r"regions\[1\]\.region: eu-west-2 is not in jurisdiction EU"):
        parse(values, region)


def test_smb_profile_has_one_region() -> None:
    values, region = raw("smb-dev")
    values["regions"].append({"region": "eu-central-1", "vpcCidr": "10.61.0.0/16"})
    with pytest.raises(ConfigError, match="exactly one region"):
        parse(values, region, "smb-dev")


def test_header_route_to_unknown_version_is_refused() -> None:
    values, region = raw()
    values["models"][0]["variants"]["routes"][0]["version"] = "3"
    with pytest.raises(ConfigError, match="version '3' has no entry in weights"):
        parse(values, region)


def test_image_digest_must_be_sha256() -> None:
    values, region = raw()
    values["image"]["digest"] = "latest"
    with pytest.raises(ConfigError, match=r"image\.digest: 'latest' does not match"):
        parse(values, region)


def test_public_endpoint_open_to_world_is_refused() -> None:
    values, region = raw()
    values["cluster"]["publicAccessCidrs"] = ["0.0.0.0/0"]
    with pytest.raises(ConfigError, match="open the API endpoint to the internet"):
        parse(values, region)


def test_aws_region_must_be_primary() -> None:
    values, _ = raw()
    with pytest.raises(ConfigError, match="aws:region: 'eu-west-1' must be the primary region eu-central-1"):
        parse(values, "eu-west-1")


@pytest.mark.parametrize("stack", ["uae-prod", "eu-prod", "us-prod", "smb-dev"])
def test_shipped_stacks_schedule_the_classifier_rollout(stack: str) -> None:
    values, region = raw(stack)
    cfg = parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)
    rollout = cfg.models[0].rollout
    assert rollout is not None and rollout.steps == (5, 25, 50, 100), f"{stack}: {rollout}"


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        ([5, 25, 50], "must increase and end at 100"),
        ([25, 5, 100], "must increase"),
        ([0, 100], "must list percents from 1 to 100"),
    ],
)
def test_rollout_steps_must_increase_to_100(steps: list[int], reason: str) -> None:
    values, region = raw()
    values["models"][0]["rollout"]["steps"] = steps
    with pytest.raises(ConfigError, match=rf"models\[0\]\.rollout\.steps: {reason}"):
        parse(values, region)


def test_shadow_and_faults_parse_in_the_servers_shape() -> None:
    values, region = raw()
    variants = values["models"][0]["variants"]
    variants["shadow"] = {"version": "2", "percent": 10}
    variants["faults"] = {"2": {"delay_ms": 50, "error_ratio": 0.2}}
    cfg = parse_config(values, stack="eu-prod", source="Pulumi.eu-prod.yaml", aws_region=region)
    parsed = cfg.models[0].variants
    assert parsed.shadow is not None and (parsed.shadow.version, parsed.shadow.percent) == ("2", 10), parsed
    assert [(v, f.delay_ms, f.error_ratio) for v, f in parsed.faults] == [("2", 50, 0.2)], parsed.faults


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("shadow", {"version": "7", "percent": 10}, r"shadow\.version: version '7' has no entry in weights"),
        ("shadow", {"version": "2", "percent": 0}, r"shadow\.percent: 0 is outside 1\.\.100"),
        ("faults", {"9": {"delay_ms": 5}}, r"faults\.9: version '9' has no entry in weights"),
        ("faults", {"2": {"error_ratio": 1.5}}, r"faults\.2\.error_ratio: must be a number from 0 to 1"),
    ],
)
def test_shadow_and_faults_are_validated(key: str, value: Any, reason: str) -> None:
    values, region = raw()
    values["models"][0]["variants"][key] = value
    with pytest.raises(ConfigError, match=reason):
        parse(values, region)
