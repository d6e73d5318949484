"""SageMakerEndpoint: what the real service needs of each resource, each asserted so that a missing piece
fails (a mock answers whatever it is told, so the inputs themselves are checked)."""

import json
from typing import Any

import pytest

from stacks.components.sagemaker_endpoint import (
    SageMakerEndpoint,
    SageMakerEndpointArgs,
    alarm_names,
    execution_timeout,
    traffic_routing,
)
from stacks.preview.mocks import ACCOUNT_ID
from stacks.settings import Rollout
from stacks.settings_smb import EndpointAlarms, EndpointInstances, SageMakerHosting
from tests.stacks.conftest import TAGS, Built, build_component

REGION = "eu-west-1"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/0000abcd-12ab-34cd-56ef-1234567890ab"
BUCKET_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/1111abcd-12ab-34cd-56ef-1234567890ab"
REPOSITORY = f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/smb-eu/model-serving/server"
IMAGE = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/smb-eu/model-serving/server@sha256:{'a' * 64}"
BUCKET = "acme-smb-eu-models-eu-west-1"
ENDPOINT_NAME = "smb-eu-tabular-classifier"
HOSTING = SageMakerHosting(
    reason="steady traffic needs a warm instance",
    instances=EndpointInstances(
        instance_type="ml.c6i.large", min_instances=1, max_instances=3, invocations_per_instance=900
    ),
    capture_percent=10,
    alarms=EndpointAlarms(error_rate_percent=1.0, latency_p99_ms=250),
)
ROLLOUT = Rollout(steps=(5, 25, 50, 100), min_samples=500, interval_seconds=300, failed_checks=2)
MODEL = "aws:sagemaker/model:Model"
CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
LOGS = "aws:cloudwatch/logGroup:LogGroup"


def endpoint_args(**overrides: Any) -> SageMakerEndpointArgs:
    values: dict[str, Any] = {
        "model": "tabular-classifier",
        "endpoint": ENDPOINT_NAME,
        "region": REGION,
        "account_id": ACCOUNT_ID,
        "hosting": HOSTING,
        "weights": (("1", 90), ("2", 10)),
        "rollout": ROLLOUT,
        "image": IMAGE,
        "repository_arn": REPOSITORY,
        "bucket": BUCKET,
        "bucket_key_arn": BUCKET_KEY,
        "key_arn": KEY,
        "vpc_cidr": "10.60.0.0/16",
        "vpc_id": "vpc-0123456789abcdef0",
        "s3_prefix_list_id": "pl-6da54004",
        "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
        "log_retention_days": 90,
        "tags": TAGS,
    } | overrides
    return SageMakerEndpointArgs(**values)


@pytest.fixture(scope="module")
def built() -> Built:
    return build_component(lambda opts: SageMakerEndpoint("clf", endpoint_args(), opts), region=REGION)


def _policy(built: Built) -> dict[str, dict[str, Any]]:
    doc = json.loads(built.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    return {s["Sid"]: s for s in doc["Statement"]}


def test_role_trusts_sagemaker_for_this_account_only(built: Built) -> None:
    (statement,) = json.loads(built.one("aws:iam/role:Role").inputs["assumeRolePolicy"])["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}, statement
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}, statement


def test_role_reads_only_its_models_prefix_and_pulls_only_its_repository(built: Built) -> None:
    grants = _policy(built)
    assert grants["ReadModel"]["Resource"] == f"arn:aws:s3:::{BUCKET}/models/tabular-classifier/*", grants
    assert grants["ListModel"]["Condition"]["StringLike"]["s3:prefix"] == ["models/tabular-classifier/*"]
    assert grants["PullImage"]["Resource"] == REPOSITORY, grants["PullImage"]
    assert grants["WriteCapture"]["Resource"] == f"arn:aws:s3:::{BUCKET}/capture/tabular-classifier/*"


def test_role_uses_both_keys_through_s3_in_the_region_only(built: Built) -> None:
    keys = _policy(built)["UseKeysInRegion"]
    assert keys["Resource"] == sorted([KEY, BUCKET_KEY]), keys
    assert keys["Condition"] == {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}}, keys
    assert {"kms:GenerateDataKey", "kms:Decrypt"} <= set(keys["Action"]), keys


def test_role_logs_only_to_its_endpoints_group(built: Built) -> None:
    logs = _policy(built)["Logs"]
    group = f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/{ENDPOINT_NAME}"
    assert logs["Resource"] == [group, f"{group}:log-stream:*"], logs


def test_wildcards_only_where_the_action_has_no_resource(built: Built) -> None:
    starred = {sid for sid, s in _policy(built).items() if s["Resource"] == "*"}
    assert starred == {"PullImageToken", "PlaceInterfaces"}, starred


def test_a_model_per_version_isolated_in_the_private_subnets(built: Built) -> None:
    models = {m.name: m.inputs for m in built.of_type(MODEL)}
    assert set(models) == {"clf-v1", "clf-v2"}, models
    for version in ("1", "2"):
        model = models[f"clf-v{version}"]
        container = model["primaryContainer"]
        assert container["image"] == IMAGE, container
        source = container["modelDataSource"]["s3DataSources"][0]
        assert source["s3Uri"] == f"s3://{BUCKET}/models/tabular-classifier/{version}/", source
        assert container["environment"] == {
            "SERVING_MODEL_NAME": "tabular-classifier",
            "SERVING_MODEL_VERSION": version,
        }
        assert model["enableNetworkIsolation"] is True, model
        assert model["vpcConfig"]["subnets"] == ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"], (
            model
        )


def test_models_wait_for_the_roles_grants(built: Built) -> None:
    grants = built.one("aws:iam/rolePolicy:RolePolicy").urn
    models = built.of_type(MODEL)
    assert len(models) == 2, [model.name for model in models]
    for model in models:
        assert grants in model.dependencies, f"{model.name} may be created before its role can read the data"


def test_config_has_a_variant_per_version_with_the_weights_and_the_key(built: Built) -> None:
    config = built.one(CONFIG).inputs
    variants = {v["variantName"]: v for v in config["productionVariants"]}
    assert {n: v["initialVariantWeight"] for n, v in variants.items()} == {"v1": 90, "v2": 10}, variants
    assert all(
        v["instanceType"] == "ml.c6i.large" and v["initialInstanceCount"] == 1 for v in variants.values()
    )
    assert all("serverlessConfig" not in v for v in variants.values()), variants
    assert config["kmsKeyArn"] == KEY, config


def test_data_capture_goes_to_the_models_capture_prefix_under_the_key(built: Built) -> None:
    capture = built.one(CONFIG).inputs["dataCaptureConfig"]
    assert capture["enableCapture"] is True and capture["initialSamplingPercentage"] == 10, capture
    assert capture["destinationS3Uri"] == f"s3://{BUCKET}/capture/tabular-classifier/", capture
    assert capture["kmsKeyId"] == KEY, capture
    assert {o["captureMode"] for o in capture["captureOptions"]} == {"Input", "Output"}, capture


def test_log_group_is_the_endpoints_with_retention_and_key(built: Built) -> None:
    logs = built.one(LOGS).inputs
    assert logs["name"] == f"/aws/sagemaker/Endpoints/{ENDPOINT_NAME}", logs
    assert logs["retentionInDays"] == 90 and logs["kmsKeyId"] == KEY, logs


def test_alarms_per_variant_match_the_rollback_configuration(built: Built) -> None:
    named = {a.inputs["name"] for a in built.of_type(ALARM)}
    expected = {n for v in ("1", "2") for n in alarm_names(ENDPOINT_NAME, v)}
    assert named == expected, named
    endpoint = built.one(ENDPOINT).inputs
    rollback = {a["alarmName"] for a in endpoint["deploymentConfig"]["autoRollbackConfiguration"]["alarms"]}
    assert rollback == expected, rollback


def test_alarms_watch_the_variants_5xx_share_and_p99_latency(built: Built) -> None:
    alarms = {a.inputs["name"]: a.inputs for a in built.of_type(ALARM)}
    rate, latency = (alarms[n] for n in alarm_names(ENDPOINT_NAME, "2"))
    metrics = {q["metric"]["metricName"]: q["metric"] for q in rate["metricQueries"] if "metric" in q}
    assert set(metrics) == {"Invocation5XXErrors", "Invocations"}, metrics
    assert all(
        m["dimensions"] == {"EndpointName": ENDPOINT_NAME, "VariantName": "v2"} for m in metrics.values()
    )
    assert rate["threshold"] == 1.0, rate
    assert latency["metricName"] == "ModelLatency" and latency["extendedStatistic"] == "p99", latency
    assert latency["threshold"] == 250_000, "ModelLatency is in microseconds"
    assert latency["dimensions"] == {"EndpointName": ENDPOINT_NAME, "VariantName": "v2"}, latency


def test_endpoint_is_named_and_waits_for_its_log_group_and_alarms(built: Built) -> None:
    endpoint = built.one(ENDPOINT)
    assert endpoint.inputs["name"] == ENDPOINT_NAME, endpoint.inputs
    needed = {built.one(LOGS).urn, *(a.urn for a in built.of_type(ALARM))}
    assert needed <= set(endpoint.dependencies), needed - set(endpoint.dependencies)


def test_endpoint_updates_shift_traffic_blue_green_with_the_rollouts_canary(built: Built) -> None:
    policy = built.one(ENDPOINT).inputs["deploymentConfig"]["blueGreenUpdatePolicy"]
    routing = policy["trafficRoutingConfiguration"]
    assert routing["type"] == "CANARY" and routing["canarySize"] == {"type": "CAPACITY_PERCENT", "value": 5}
    assert routing["waitIntervalInSeconds"] == 300 and policy["terminationWaitInSeconds"] == 300, policy
    assert 600 <= policy["maximumExecutionTimeoutInSeconds"] <= 14_400, policy


def test_each_variant_scales_on_invocations_per_instance(built: Built) -> None:
    targets = {t.inputs["resourceId"]: t.inputs for t in built.of_type("aws:appautoscaling/target:Target")}
    assert set(targets) == {f"endpoint/{ENDPOINT_NAME}/variant/v1", f"endpoint/{ENDPOINT_NAME}/variant/v2"}
    assert all(t["minCapacity"] == 1 and t["maxCapacity"] == 3 for t in targets.values()), targets
    for policy in built.of_type("aws:appautoscaling/policy:Policy"):
        tracking = policy.inputs["targetTrackingScalingPolicyConfiguration"]
        assert tracking["targetValue"] == 900, tracking
        assert (
            tracking["predefinedMetricSpecification"]["predefinedMetricType"]
            == "SageMakerVariantInvocationsPerInstance"
        )


@pytest.mark.parametrize(
    ("steps", "kind", "size", "wait"),
    [
        ((25, 50, 75, 100), "LINEAR", 25, 2760),
        ((5, 25, 50, 100), "CANARY", 5, 3600),
        ((10, 100), "CANARY", 10, 3600),
        ((50, 100), "LINEAR", 50, 3600),
    ],
)
def test_traffic_routing_from_rollout_steps(steps: tuple[int, ...], kind: str, size: int, wait: int) -> None:
    """Two-hour intervals: each step waits at most an hour, less where the shifts and the bake would not fit
    SageMaker's four-hour update."""
    routing = traffic_routing(Rollout(steps=steps, min_samples=1, interval_seconds=7200, failed_checks=1))
    assert routing["type"] == kind, routing
    assert routing["linear_step_size" if kind == "LINEAR" else "canary_size"]["value"] == size, routing
    assert routing["wait_interval_in_seconds"] == wait, routing
    shifts = len(steps) if kind == "LINEAR" else 2
    assert (shifts + 1) * wait + 600 <= execution_timeout(routing) <= 14_400, execution_timeout(routing)


def test_no_rollout_block_shifts_all_at_once() -> None:
    assert traffic_routing(None)["type"] == "ALL_AT_ONCE"


@pytest.mark.parametrize(
    ("weights", "words"),
    [
        ((("1", 90), ("2", 5)), "sum to 100"),
        (tuple((str(v), 100 if v == 1 else 0) for v in range(1, 7)), "at most 5"),
    ],
)
def test_bad_weights_are_refused(weights: tuple[tuple[str, int], ...], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        endpoint_args(weights=weights)
