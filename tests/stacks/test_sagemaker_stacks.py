"""SageMaker Asynchronous Inference of the smb profile: its stack file keys, and the shipped smb-eu plan (its
real-time endpoints: tests/stacks/test_smb_stacks.py)."""

import json
from typing import Any

import pytest

from stacks.preview.monitor import Registration
from stacks.preview.run import Plan
from stacks.settings import SageMakerAsyncConfig
from tests.stacks.test_config_async import fails, parse, raw

SIZES = {
    "instanceType": "ml.m5.large",
    "instanceCount": 1,
    "maxConcurrentInvocations": 4,
    "minInstances": 0,
    "maxInstances": 2,
}
TOPIC = "aws:sns/topic:Topic"
CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"


def smb(**sizes: Any) -> tuple[dict[str, Any], str | None]:
    values, region = raw("smb-eu")
    values["sagemakerAsync"] = SIZES | sizes
    return values, region


def test_the_shipped_smb_stack_serves_its_classifier_asynchronously_from_sagemaker() -> None:
    cfg = parse(*raw("smb-eu"), "smb-eu")
    assert [m.name for m in cfg.sagemaker_async_models] == ["tabular-classifier"], cfg.models
    assert cfg.async_models == (), "smb models get no queue workers on the cluster"
    assert cfg.job_queue is None, "smb stacks run no ElastiCache queue"


def test_every_sagemaker_key_lands_in_its_field() -> None:
    values, region = smb(backlogPerInstance=9, inputRetentionDays=3, createAutoscalingServiceLinkedRole=False)
    assert parse(values, region, "smb-eu").sagemaker_async == SageMakerAsyncConfig(
        instance_type="ml.m5.large",
        instance_count=1,
        max_concurrent_invocations=4,
        min_instances=0,
        max_instances=2,
        backlog_per_instance=9,
        input_retention_days=3,
        create_autoscaling_service_linked_role=False,
    )


@pytest.mark.parametrize(
    ("sizes", "key", "reason"),
    [
        ({"instanceType": "m5.large"}, "instanceType", "does not match"),
        *(
            ({"instanceType": kind}, "instanceType", f"{kind} keeps its volumes on local NVMe disks")
            for kind in (
                "ml.m5d.large",
                "ml.g4dn.xlarge",
                "ml.c6id.2xlarge",
                "ml.p4d.24xlarge",
                "ml.g5.xlarge",
            )
        ),
        ({"instanceCount": 0}, "instanceCount", "0 is outside 1..100"),
        (
            {"instanceCount": 3},
            "instanceCount",
            "needs minInstances <= instanceCount <= maxInstances, got 0, 3, 2",
        ),
        ({"maxInstances": 0}, "maxInstances", "0 is outside 1..100"),
        ({"minInstances": -1}, "minInstances", "-1 is outside 0..100"),
        ({"maxConcurrentInvocations": 0}, "maxConcurrentInvocations", "0 is outside 1..1000"),
        (
            {"createAutoscalingServiceLinkedRole": "yes"},
            "createAutoscalingServiceLinkedRole",
            "must be true or false",
        ),
    ],
)
def test_bad_sizes_are_refused(sizes: dict[str, Any], key: str, reason: str) -> None:
    error = fails(*smb(**sizes), "smb-eu")
    assert error.key == f"model-serving.sagemakerAsync.{key}", error
    assert reason in error.reason, error.reason


@pytest.mark.parametrize(
    "kind", ["ml.m5.large", "ml.c5.xlarge", "ml.inf1.xlarge", "ml.c7g.large", "ml.r5.large"]
)
def test_ebs_backed_instance_types_are_accepted(kind: str) -> None:
    config = parse(*smb(instanceType=kind), "smb-eu").sagemaker_async
    assert config is not None and config.instance_type == kind, config


def test_an_smb_models_async_block_takes_no_worker_keys() -> None:
    values, region = smb()
    values["models"][0]["async"] = {"minWorkers": 1}
    error = fails(values, region, "smb-eu")
    assert error.key == "model-serving.models[0].async", error
    assert error.reason.startswith("must be {} in an smb stack"), error.reason


def test_an_async_model_needs_the_endpoints_sizes() -> None:
    values, region = raw("smb-eu")
    values.pop("sagemakerAsync")
    error = fails(values, region, "smb-eu")
    assert (error.key, error.reason) == (
        "model-serving.models[0].async",
        "needs model-serving:sagemakerAsync, its endpoint's sizes",
    )


def test_sizes_without_an_async_model_are_refused() -> None:
    values, region = raw("smb-eu")
    values["models"][0].pop("async")
    error = fails(values, region, "smb-eu")
    assert (error.key, error.reason) == (
        "model-serving.sagemakerAsync",
        "no model sets async: there is no endpoint to size",
    )


def test_sagemaker_belongs_to_the_smb_profile() -> None:
    values, region = raw("us-prod")
    values["sagemakerAsync"] = dict(SIZES)
    error = fails(values, region, "us-prod")
    assert error.key == "model-serving.sagemakerAsync", error
    assert error.reason.startswith("has no meaning for profile standard"), error.reason


def _of(plan: Plan, typ: str) -> list[Registration]:
    return [r for r in plan.registrations if r.type == typ]


def _key_policy_of(plan: Plan, consumer: Registration, field: str) -> dict[str, Any]:
    """The policy of the KMS key whose ARN feeds `field` of `consumer`."""
    (urn,) = consumer.property_dependencies[field]
    by_urn = {r.urn: r for r in plan.registrations}
    key = by_urn[urn]
    if key.type != "aws:kms/key:Key":
        # The component's output: its one child key.
        (key,) = [r for r in plan.registrations if r.type == "aws:kms/key:Key" and r.parent == urn]
    policy: dict[str, Any] = json.loads(key.inputs["policy"])
    return policy


def test_the_topics_key_lets_sns_and_sagemaker_use_it_for_this_account_only(plans: dict[str, Plan]) -> None:
    plan, account = plans["smb-eu.infra"], raw("smb-eu")[0]["accountId"]
    topics = _of(plan, TOPIC)
    assert len(topics) == 2, [t.name for t in topics]
    for topic in topics:
        statements = {s.get("Sid"): s for s in _key_policy_of(plan, topic, "kmsMasterKeyId")["Statement"]}
        services = statements.get("ServicesUseKey")
        assert services is not None, f"{topic.name}: SNS and SageMaker cannot use the topic's key"
        assert services["Principal"] == {"Service": ["sagemaker.amazonaws.com", "sns.amazonaws.com"]}, (
            services
        )
        assert services["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"], services
        assert services["Condition"] == {"StringEquals": {"aws:SourceAccount": account}}, services


def test_results_the_config_and_the_topics_share_the_region_key(plans: dict[str, Plan]) -> None:
    plan = plans["smb-eu.infra"]
    (config,) = [c for c in _of(plan, CONFIG) if "asyncInferenceConfig" in c.inputs]
    keys = {config.inputs["kmsKeyArn"], config.inputs["asyncInferenceConfig"]["outputConfig"]["kmsKeyId"]}
    keys |= {t.inputs["kmsMasterKeyId"] for t in _of(plan, TOPIC)}
    assert len(keys) == 1 and next(iter(keys)).startswith("arn:aws:kms:eu-west-1:"), keys


def test_every_sagemaker_resource_is_in_the_stacks_region(plans: dict[str, Plan]) -> None:
    plan = plans["smb-eu.infra"]
    mine = [
        r
        for r in plan.registrations
        if r.custom and r.type.split(":")[1].split("/")[0] in {"sagemaker", "sns", "appautoscaling"}
    ]
    assert len(mine) >= 7, [r.name for r in mine]
    assert {plan.regions.get(r.urn) for r in mine} == {"eu-west-1"}, {
        r.name: plan.regions.get(r.urn) for r in mine
    }


def test_the_standard_stacks_have_no_sagemaker_endpoint(plans: dict[str, Plan]) -> None:
    for stack in ("eu-prod", "uae-prod", "us-prod"):
        plan = plans[f"{stack}.infra"]
        assert not [r.name for r in plan.registrations if r.type.startswith("aws:sagemaker/")], stack
