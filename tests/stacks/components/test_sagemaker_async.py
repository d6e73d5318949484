"""SageMakerAsync: one model's asynchronous endpoint, in-region, under the region's async key, with a role
granted exactly what the endpoint does and a scaler on its backlog."""

import json
import re
from typing import Any

import pulumi
import pytest

from serving_image.settings import Settings
from stacks.components.sagemaker_async import (
    ECR_PULL,
    KEY_ACTIONS,
    LOG_ACTIONS,
    VPC_ACTIONS,
    SageMakerAsync,
    SageMakerAsyncArgs,
)
from stacks.preview.mocks import ACCOUNT_ID
from stacks.preview.monitor import Registration
from stacks.settings import SageMakerAsyncConfig
from tests.stacks.conftest import TAGS, Built, build_component

REGION = "eu-west-1"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/0000abcd-12ab-34cd-56ef-1234567890ab"
MODEL_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/1111abcd-12ab-34cd-56ef-1234567890ab"
REPOSITORY = f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/smb-eu/model-serving/server"
DIGEST = "sha256:" + "a" * 64
IMAGE = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/smb-eu/model-serving/server@{DIGEST}"
CONFIG = SageMakerAsyncConfig(
    instance_type="ml.m5.large",
    instance_count=1,
    max_concurrent_invocations=4,
    min_instances=0,
    max_instances=3,
    backlog_per_instance=6,
)
WEIGHTS = (("1", 90), ("2", 10))
MODEL = "aws:sagemaker/model:Model"
CONFIG_TYPE = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
TOPIC = "aws:sns/topic:Topic"
TARGET = "aws:appautoscaling/target:Target"
POLICY = "aws:appautoscaling/policy:Policy"
SLR = "aws:iam/serviceLinkedRole:ServiceLinkedRole"


def endpoint_args(**overrides: Any) -> SageMakerAsyncArgs:
    values: dict[str, Any] = {
        "model": "tabular-classifier",
        "region": REGION,
        "account_id": ACCOUNT_ID,
        "config": CONFIG,
        "weights": WEIGHTS,
        "image": IMAGE,
        "repository_arn": REPOSITORY,
        "model_bucket": "acme-smb-models-eu-west-1",
        "model_key_arn": MODEL_KEY,
        "job_bucket": "acme-smb-async-eu-west-1",
        "key_arn": KEY,
        "vpc_cidr": "10.60.0.0/16",
        "vpc_id": "vpc-0123456789abcdef0",
        "s3_prefix_list_id": "pl-6da54004",
        "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
        "create_scaling_role": True,
        "tags": TAGS,
    } | overrides
    return SageMakerAsyncArgs(**values)


@pytest.fixture(scope="module")
def built() -> Built:
    return build_component(lambda opts: SageMakerAsync("clf", endpoint_args(), opts), region=REGION)


def _topic_arn(kind: str) -> re.Pattern[str]:
    """The mocks name a topic `<logical name>-<digest>`; SNS ARNs end in the topic's name."""
    return re.compile(rf"^arn:aws:sns:{REGION}:{ACCOUNT_ID}:clf-{kind}-[0-9a-f]{{7}}$")


def _fed_by(consumer: Registration, field: str, producers: list[Registration]) -> bool:
    """True when the consumer's `field` is computed from exactly these producers."""
    return set(consumer.property_dependencies.get(field, ())) == {p.urn for p in producers}


def _statements(built: Built) -> dict[str, dict[str, Any]]:
    policy = built.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"]
    return {s["Sid"]: s for s in json.loads(policy)["Statement"]}


def test_every_resource_is_in_the_stacks_region(built: Built) -> None:
    located = {r.name: built.regions.get(r.urn) for r in built.registrations if r.custom}
    outside = {n: region for n, region in located.items() if region != REGION and not n.startswith("test-")}
    assert not outside, f"not in {REGION}: {outside}"


def test_topics_results_and_the_config_are_encrypted_with_the_region_key(built: Built) -> None:
    topics = built.of_type(TOPIC)
    assert sorted(t.name for t in topics) == ["clf-error", "clf-success"], [t.name for t in topics]
    assert all(t.inputs.get("kmsMasterKeyId") == KEY for t in topics), [t.inputs for t in topics]
    config = built.one(CONFIG_TYPE).inputs
    assert config["kmsKeyArn"] == KEY, "the endpoint's storage volumes must use the region key"
    assert config["asyncInferenceConfig"]["outputConfig"]["kmsKeyId"] == KEY, config["asyncInferenceConfig"]


def test_results_and_failures_go_under_the_models_part_of_the_job_bucket(built: Built) -> None:
    output = built.one(CONFIG_TYPE).inputs["asyncInferenceConfig"]["outputConfig"]
    base = "s3://acme-smb-async-eu-west-1/jobs/tabular-classifier/results/"
    assert (output["s3OutputPath"], output["s3FailurePath"]) == (base, f"{base}failures/"), output


def test_notifications_go_to_the_components_own_topics(built: Built) -> None:
    notify = built.one(CONFIG_TYPE).inputs["asyncInferenceConfig"]["outputConfig"]["notificationConfig"]
    assert _topic_arn("success").match(notify["successTopic"]), notify
    assert _topic_arn("error").match(notify["errorTopic"]), notify


def test_one_variant_per_version_with_the_configs_weights_and_instances(built: Built) -> None:
    config = built.one(CONFIG_TYPE).inputs
    variants = {v["variantName"]: v for v in config["productionVariants"]}
    assert {name: v["initialVariantWeight"] for name, v in variants.items()} == {"v1": 90, "v2": 10}, variants
    for name, v in variants.items():
        assert (v["instanceType"], v["initialInstanceCount"]) == ("ml.m5.large", 1), v
        assert "serverlessConfig" not in v, "asynchronous inference runs on instances, never serverless"
        assert re.match(rf"^clf-{name}-[0-9a-f]{{7}}$", v["modelName"]), (
            "each variant runs its version's model"
        )
    client = config["asyncInferenceConfig"]["clientConfig"]
    assert client == {"maxConcurrentInvocationsPerInstance": 4}, client


def test_each_version_has_a_model_serving_the_image_by_digest_from_its_own_prefix(built: Built) -> None:
    models = {m.name: m.inputs for m in built.of_type(MODEL)}
    assert sorted(models) == ["clf-v1", "clf-v2"], sorted(models)
    for version in ("1", "2"):
        model = models[f"clf-v{version}"]
        container = model["primaryContainer"]
        assert (container["image"], container["mode"]) == (IMAGE, "SingleModel"), container
        # Uncompressed data under one version's prefix lands as /opt/ml/model/model.onnx: the container is
        # told which model and version that is, so its router has one choice and SageMaker's weights decide.
        assert container["modelDataSource"]["s3DataSources"] == [
            {
                "compressionType": "None",
                "s3DataType": "S3Prefix",
                "s3Uri": f"s3://acme-smb-models-eu-west-1/models/tabular-classifier/{version}/",
            }
        ], container["modelDataSource"]
        assert container["environment"] == {
            "SERVING_MODEL_NAME": "tabular-classifier",
            "SERVING_MODEL_VERSION": version,
        }, container
        assert model["enableNetworkIsolation"] is True, "the container reads /opt/ml/model, needs no network"


def test_the_containers_environment_is_settings_the_serving_image_accepts(built: Built) -> None:
    models = built.of_type(MODEL)
    assert len(models) == len(WEIGHTS), [m.name for m in models]
    for model in models:
        environment = model.inputs["primaryContainer"]["environment"]
        settings = Settings(**{name.removeprefix("SERVING_").lower(): v for name, v in environment.items()})
        assert (settings.model_name, settings.model_version) == (
            environment["SERVING_MODEL_NAME"],
            environment["SERVING_MODEL_VERSION"],
        ), environment


def test_the_models_run_in_the_private_subnets_reaching_only_the_vpc_and_s3(built: Built) -> None:
    group = built.one("aws:ec2/securityGroup:SecurityGroup")
    models = built.of_type(MODEL)
    assert len(models) == len(WEIGHTS), [m.name for m in models]
    for model in models:
        vpc = model.inputs["vpcConfig"]
        assert vpc["subnets"] == ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"], vpc
        assert len(vpc["securityGroupIds"]) == 1, vpc
        assert _fed_by(model, "vpcConfig", [group]), "the model's interfaces use the component's group"
    assert not group.inputs.get("ingress"), group.inputs
    egress = group.inputs["egress"]
    found = [(e["fromPort"], e["toPort"], e.get("cidrBlocks"), e.get("prefixListIds")) for e in egress]
    assert found == [(443, 443, ["10.60.0.0/16"], None), (443, 443, None, ["pl-6da54004"])], egress


def test_only_sagemaker_for_this_account_assumes_the_role(built: Built) -> None:
    (statement,) = json.loads(built.one("aws:iam/role:Role").inputs["assumeRolePolicy"])["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}, statement
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}, statement


def test_the_role_is_granted_exactly_what_the_endpoint_does(built: Built) -> None:
    grants = {sid: (s["Action"], s["Resource"]) for sid, s in _statements(built).items()}
    models, jobs = "arn:aws:s3:::acme-smb-models-eu-west-1", "arn:aws:s3:::acme-smb-async-eu-west-1"
    action, topics = grants.pop("Notify")
    assert action == "sns:Publish", action
    assert [bool(_topic_arn(k).match(t)) for k, t in zip(("error", "success"), topics, strict=True)] == [
        True,
        True,
    ], topics
    assert grants == {
        "ReadModel": ("s3:GetObject", f"{models}/models/tabular-classifier/*"),
        "ListModel": ("s3:ListBucket", models),
        "PullImageToken": ("ecr:GetAuthorizationToken", "*"),
        "PullImage": (list(ECR_PULL), REPOSITORY),
        "ReadInputs": ("s3:GetObject", f"{jobs}/jobs/tabular-classifier/inputs/*"),
        "WriteResults": ("s3:PutObject", f"{jobs}/jobs/tabular-classifier/results/*"),
        "UseKeysInRegion": (list(KEY_ACTIONS), sorted({KEY, MODEL_KEY})),
        "PlaceInterfaces": (list(VPC_ACTIONS), "*"),
        "Logs": (
            list(LOG_ACTIONS),
            f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/*",
        ),
    }, grants


def test_keys_and_listing_are_scoped_to_the_region_and_the_models_prefix(built: Built) -> None:
    statements = _statements(built)
    via = statements["UseKeysInRegion"]["Condition"]
    assert via == {
        "StringEquals": {"kms:ViaService": [f"s3.{REGION}.amazonaws.com", f"sns.{REGION}.amazonaws.com"]}
    }, via
    listing = statements["ListModel"]["Condition"]
    assert listing == {"StringLike": {"s3:prefix": ["models/tabular-classifier/*"]}}, listing


def test_every_variant_scales_between_the_configs_bounds_on_its_backlog(built: Built) -> None:
    targets = {t.inputs["resourceId"]: t.inputs for t in built.of_type(TARGET)}
    names = {re.sub(r"^endpoint/(.+)/variant/v[0-9]+$", r"\1", t) for t in targets}
    assert len(names) == 1, targets
    endpoint = names.pop()
    assert re.match(r"^clf-endpoint-[0-9a-f]{7}$", endpoint), endpoint
    assert sorted(targets) == [f"endpoint/{endpoint}/variant/v1", f"endpoint/{endpoint}/variant/v2"], targets
    for target in targets.values():
        assert (target["minCapacity"], target["maxCapacity"]) == (0, 3), target
        assert target["scalableDimension"] == "sagemaker:variant:DesiredInstanceCount", target
    tracking = [p.inputs for p in built.of_type(POLICY) if p.inputs["policyType"] == "TargetTrackingScaling"]
    assert len(tracking) == 2, tracking
    for policy in tracking:
        spec = policy["targetTrackingScalingPolicyConfiguration"]
        metric = spec["customizedMetricSpecification"]
        assert spec["targetValue"] == 6.0, spec
        assert (metric["namespace"], metric["metricName"]) == (
            "AWS/SageMaker",
            "ApproximateBacklogSizePerInstance",
        )
        assert metric["dimensions"] == [{"name": "EndpointName", "value": endpoint}], metric


def test_a_floor_of_zero_wakes_on_backlog_without_capacity(built: Built) -> None:
    steps = [p for p in built.of_type(POLICY) if p.inputs["policyType"] == "StepScaling"]
    assert len(steps) == 2, [p.name for p in steps]
    alarm = built.one("aws:cloudwatch/metricAlarm:MetricAlarm").inputs
    assert alarm["metricName"] == "HasBacklogWithoutCapacity", alarm
    assert len(alarm["alarmActions"]) == 2, alarm
    alarms = built.one("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert _fed_by(alarms, "alarmActions", steps), "the alarm must start the variants' step policies"


def test_a_floor_above_zero_needs_no_wake_up() -> None:
    floor = SageMakerAsyncConfig(**{**CONFIG.__dict__, "min_instances": 1})
    built = build_component(
        lambda opts: SageMakerAsync("clf", endpoint_args(config=floor), opts), region=REGION
    )
    assert built.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") == [], "target tracking suffices"
    assert all(p.inputs["policyType"] == "TargetTrackingScaling" for p in built.of_type(POLICY))


def test_things_are_created_in_order(built: Built) -> None:
    models, config, endpoint = built.of_type(MODEL), built.one(CONFIG_TYPE), built.one(ENDPOINT)
    grants = built.one("aws:iam/rolePolicy:RolePolicy")
    assert len(models) == 2, [m.name for m in models]
    for model in models:
        assert grants.urn in model.dependencies, "SageMaker checks the role's access when it creates a model"
        assert model.urn in config.dependencies, "the endpoint config must follow its models"
    assert config.urn in endpoint.dependencies, "the endpoint must follow its config"
    assert all(endpoint.urn in t.dependencies for t in built.of_type(TARGET)), "targets need the endpoint"


def test_the_scaling_role_is_made_once_and_every_target_waits_for_it(built: Built) -> None:
    role = built.one(SLR)
    assert role.inputs["awsServiceName"] == "sagemaker.application-autoscaling.amazonaws.com", role.inputs
    assert all(role.urn in t.dependencies for t in built.of_type(TARGET)), "a target may precede its role"


def test_an_existing_scaling_role_is_not_made_again() -> None:
    built = build_component(
        lambda opts: SageMakerAsync("clf", endpoint_args(create_scaling_role=False), opts), region=REGION
    )
    assert built.of_type(SLR) == [], "the role is one per account"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"weights": (("1", 90), ("2", 5))}, "variant weights must sum to 100"),
        ({"scaling_role": pulumi.CustomResource}, "the role is one per account"),
    ],
)
def test_inconsistent_args_are_refused(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        SageMakerAsync("clf", endpoint_args(**overrides))
