import copy
import re
from typing import Any

import pytest
import yaml

from stacks.config import ConfigError, parse_config
from stacks.preview.run import ROOT
from stacks.settings import StackConfig


def raw(stack: str = "eu-prod") -> tuple[dict[str, Any], str | None]:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("model-serving:")}
    return copy.deepcopy(values), config.get("aws:region")


def parse(values: dict[str, Any], region: str | None, stack: str = "eu-prod") -> StackConfig:
    return parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)


@pytest.mark.parametrize("stack", ["uae-prod", "eu-prod", "us-prod", "smb-eu"])
def test_shipped_stack_files_parse(stack: str) -> None:
    values, region = raw(stack)
    cfg = parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)
    assert cfg.regions[0].region == region, f"{stack}: primary region differs from aws:region"


def test_onprem_stack_parses_without_aws() -> None:
    values, region = raw("onprem-ae")
    cfg = parse(values, region, "onprem-ae")
    assert region is None and cfg.onprem is not None and cfg.regions == (), cfg
    assert cfg.account_id is None and cfg.cluster is None, "an on-premises stack names no AWS account or EKS"


def test_onprem_stack_refuses_aws_keys() -> None:
    values, _ = raw("onprem-ae")
    values["regions"] = [{"region": "me-central-1", "vpcCidr": "10.30.0.0/16"}]
    with pytest.raises(ConfigError, match=r"model-serving\.regions: has no meaning for an on-premises stack"):
        parse(values, None, "onprem-ae")


def test_only_onprem_stacks_use_the_onprem_profile() -> None:
    values, region = raw()
    values["profile"] = "onprem"
    with pytest.raises(ConfigError, match="onprem-\\* stacks and only they use profile onprem"):
        parse(values, region)


@pytest.mark.parametrize(
    ("key", "url", "reason"),
    [
        ("backend", "s3://acme-eu-state?region=us-east-1", "region 'us-east-1' is outside jurisdiction EU"),
        ("backend", "https://app.example.com", "must be s3://...\\?region=<region>"),
        ("backend", "s3://acme-eu-state", "must be s3://...\\?region=<region>"),
        ("secretsProvider", "awskms://alias/x?region=me-central-1", "region 'me-central-1' is outside"),
        ("secretsProvider", "passphrase", "must be awskms://...\\?region=<region>"),
    ],
)
def test_state_stays_in_the_jurisdiction(key: str, url: str, reason: str) -> None:
    values, region = raw()
    values["state"][key] = url
    with pytest.raises(ConfigError, match=rf"model-serving\.state\.{key}: .*{reason}"):
        parse(values, region)


def test_shipped_state_backends_are_regional() -> None:
    for stack in ("uae-prod", "eu-prod", "us-prod", "smb-eu"):
        values, region = raw(stack)
        cfg = parse(values, region, stack)
        assert cfg.state.region == region, f"{stack}: state in {cfg.state.region}, stack in {region}"


@pytest.mark.parametrize("version", ["1.33", "1.34", "1.99"])
def test_kubernetes_version_must_be_in_standard_support(version: str) -> None:
    values, region = raw()
    values["cluster"]["kubernetesVersion"] = version
    with pytest.raises(ConfigError, match=f"{version} is not in EKS standard support"):
        parse(values, region)


def test_alerts_need_a_receiver() -> None:
    values, region = raw()
    values["observability"]["alerting"]["receivers"] = []
    with pytest.raises(ConfigError, match="needs at least one receiver"):
        parse(values, region)


def test_receiver_is_webhook_or_email() -> None:
    values, region = raw()
    values["observability"]["alerting"]["receivers"] = [
        {"name": "x", "email": "a@b.eu", "webhookUrl": "https://x"}
    ]
    with pytest.raises(ConfigError, match="needs exactly one of webhookUrl or email"):
        parse(values, region)


def test_account_id_is_required_on_aws() -> None:
    values, region = raw()
    del values["accountId"]
    with pytest.raises(ConfigError, match=r"model-serving\.accountId: is required"):
        parse(values, region)


def test_break_glass_role_must_be_a_role_arn() -> None:
    values, region = raw()
    values["cluster"]["breakGlassRoleArn"] = "arn:aws:iam::123456789012:user/root"
    with pytest.raises(ConfigError, match="breakGlassRoleArn"):
        parse(values, region)


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
    values, region = raw("smb-eu")
    values["regions"].append({"region": "eu-central-1", "vpcCidr": "10.61.0.0/16"})
    with pytest.raises(ConfigError, match="exactly one region"):
        parse(values, region, "smb-eu")


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


@pytest.mark.parametrize("stack", ["uae-prod", "eu-prod", "us-prod", "smb-eu"])
def test_shipped_stacks_schedule_the_classifier_rollout(stack: str) -> None:
    values, region = raw(stack)
    cfg = parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)
    rollout = cfg.models[0].rollout
    assert rollout is not None and rollout.steps == (5, 25, 50, 100), f"{stack}: {rollout}"


def test_rollout_settle_defaults_to_one_scrape_interval_plus_15_seconds() -> None:
    values, region = raw()
    values["models"][0]["rollout"].pop("settleSeconds", None)
    rollout = parse(values, region).models[0].rollout
    assert rollout is not None and rollout.settle_seconds == 30, rollout
    values["models"][0]["rollout"]["settleSeconds"] = 0
    set_to_zero = parse(values, region).models[0].rollout
    assert set_to_zero is not None and set_to_zero.settle_seconds == 0, "0 is a value, not a missing key"


def test_rollout_optional_metrics_and_the_guard_are_read_when_given() -> None:
    values, region = raw()
    block = values["models"][0]["rollout"]
    block.update(optionalMetrics=["value", "accuracy", "value"], holdbackPercent=5, guardSeconds=1800)
    rollout = parse(values, region).models[0].rollout
    assert rollout is not None, values
    assert (rollout.optional_metrics, rollout.holdback_percent, rollout.guard_seconds) == (
        ("accuracy", "value"),
        5,
        1800,
    ), rollout
    for key in ("optionalMetrics", "holdbackPercent", "guardSeconds"):
        block.pop(key)
    plain = parse(values, region).models[0].rollout
    assert plain is not None and (plain.optional_metrics, plain.holdback_percent) == ((), 0), plain


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"optionalMetrics": ["latency"]}, "['latency'] are not among ['conversion', 'value', 'accuracy']"),
        ({"guardSeconds": 600}, "needs holdbackPercent"),
        ({"holdbackPercent": 60}, "60 is outside 1..50"),
        ({"holdbackPercent": 50}, "the guard step 50% must be above every step but the last"),
    ],
)
def test_a_rollout_guard_or_optional_metric_that_cannot_work_is_refused(
    change: dict[str, object], reason: str
) -> None:
    values, region = raw()
    values["models"][0]["rollout"].update(change)
    with pytest.raises(ConfigError, match=re.escape(reason)):
        parse(values, region)


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


def test_quota_must_hold_the_models_at_max_replicas_with_their_sidecars() -> None:
    values, region = raw("uae-prod")
    model = values["models"][0]
    # 2 versions x (15 + 1 surge) pods x (2 CPUs + the sidecar's 0.5) = 80 CPUs, and the rollout controller's
    # 0.25; 72 would hold the servers alone (2 x 16 x 2 = 64) but not their sidecars.
    model["replicas"]["max"] = 15
    # Without its async workers, which take their own share (tests/stacks/test_config_async.py).
    model.pop("async", None)
    values.pop("asyncInference", None)
    values["tenants"][0]["quota"]["cpu"] = "72"
    with pytest.raises(
        ConfigError, match=r"tenants\[0\]\.quota\.cpu: 72 is below .*sidecars included \(80.25 CPUs\)"
    ):
        parse(values, region, "uae-prod")
    values["tenants"][0]["quota"]["cpu"] = "80250m"
    parse(values, region, "uae-prod")
