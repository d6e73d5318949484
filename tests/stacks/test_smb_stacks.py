"""The shipped smb stacks (smb-eu, smb-ae): no cluster, everything in the stack's region, and what the real
services need of the plan that mocks would not refuse: key policies, VPC endpoints, ordering, outputs."""

import json
from collections import Counter
from typing import Any

import pytest

from stacks.components.sagemaker_endpoint import alarm_names
from stacks.contract import REGIONS_OUTPUT, ModelBucketOutputs, from_export, model_buckets
from stacks.preview.run import Plan, layers_of, plan_stack

SMB = {"smb-eu": "eu-west-1", "smb-ae": "me-central-1"}
CLUSTER_TYPES = ("aws:eks/", "kubernetes:", "aws:codebuild/", "aws:elasticache/")
MODEL = "tabular-classifier"


def resources(plan: Plan) -> list[Any]:
    return [r for r in plan.registrations if r.custom and not r.type.startswith("pulumi:providers:")]


def of_type(plan: Plan, typ: str) -> list[Any]:
    return [r for r in resources(plan) if r.type == typ]


def outputs(plan: Plan) -> dict[str, Any]:
    return plan.outputs or {}


def counts(plan: Plan) -> Counter[str]:
    return Counter(r.type for r in resources(plan))


@pytest.mark.parametrize("stack", SMB)
def test_no_cluster_and_no_platform_layer(plans: dict[str, Plan], stack: str) -> None:
    assert layers_of(stack) == ("infra",), layers_of(stack)
    clustered = sorted(
        {r.type for r in resources(plans[f"{stack}.infra"]) if r.type.startswith(CLUSTER_TYPES)}
    )
    assert clustered == [], f"{stack} runs cluster resources: {clustered}"
    with pytest.raises(ValueError, match="no platform layer"):
        plan_stack(stack, layer="platform")


@pytest.mark.parametrize("stack", SMB)
def test_every_resource_is_in_the_stacks_region(plans: dict[str, Plan], stack: str) -> None:
    plan = plans[f"{stack}.infra"]
    elsewhere = {
        r.urn: plan.regions.get(r.urn) for r in resources(plan) if plan.regions.get(r.urn) != SMB[stack]
    }
    assert not elsewhere, f"{stack}: resources outside {SMB[stack]}: {elsewhere}"


@pytest.mark.parametrize("stack", SMB)
def test_an_endpoint_per_model_with_a_variant_per_version(plans: dict[str, Plan], stack: str) -> None:
    plan = plans[f"{stack}.infra"]
    endpoints = outputs(plan)["endpoints"]
    assert endpoints == {
        MODEL: {"endpoint": f"{stack}-{MODEL}", "region": SMB[stack], "variants": ["v1", "v2"]}
    }
    (config,) = [
        r.inputs
        for r in of_type(plan, "aws:sagemaker/endpointConfiguration:EndpointConfiguration")
        if "asyncInferenceConfig" not in r.inputs
    ]
    weights = {v["variantName"]: v["initialVariantWeight"] for v in config["productionVariants"]}
    assert weights == {"v1": 90, "v2": 10}, weights


@pytest.mark.parametrize("stack", SMB)
def test_endpoint_keys_let_sagemaker_and_the_regions_logs_use_them(
    plans: dict[str, Plan], stack: str
) -> None:
    """CloudWatch Logs encrypts a group only if the key policy lets the regional service in, for this
    account's log groups (the encryption context names the group ARN); SageMaker for this account only."""
    plan, region = plans[f"{stack}.infra"], SMB[stack]
    keys = {r.name: r for r in of_type(plan, "aws:kms/key:Key")}
    endpoint_key, api_key = keys[f"{stack}-{region}-{MODEL}-key-key"], keys[f"{stack}-{region}-api-key-key"]
    for key in (endpoint_key, api_key):
        statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
        logs = statements["RegionalLogsEncrypt"]
        assert logs["Principal"] == {"Service": f"logs.{region}.amazonaws.com"}, (key.name, logs)
        context = json.dumps(logs["Condition"])
        assert f"arn:aws:logs:{region}:" in context and "kms:EncryptionContext:aws:logs:arn" in context, (
            context
        )
    statements = {s["Sid"]: s for s in json.loads(endpoint_key.inputs["policy"])["Statement"]}
    assert "sagemaker.amazonaws.com" in statements["ServicesUseKey"]["Principal"]["Service"], statements


@pytest.mark.parametrize("stack", SMB)
def test_scaling_targets_wait_for_the_accounts_scaling_role(plans: dict[str, Plan], stack: str) -> None:
    """Application Auto Scaling refuses a SageMaker target until its service-linked role exists."""
    plan = plans[f"{stack}.infra"]
    (role,) = of_type(plan, "aws:iam/serviceLinkedRole:ServiceLinkedRole")
    targets = of_type(plan, "aws:appautoscaling/target:Target")
    assert targets and all(role.urn in t.dependencies for t in targets), [t.name for t in targets]


@pytest.mark.parametrize("stack", SMB)
def test_vpc_endpoints_sagemaker_and_the_proxy_need(plans: dict[str, Plan], stack: str) -> None:
    """Network-isolated endpoints in private subnets pull the image and write logs through the VPC; the proxy
    calls the runtime through it. No EKS or EC2 endpoint: nothing here runs nodes."""
    region = SMB[stack]
    services = {
        r.inputs["serviceName"]: r.inputs["vpcEndpointType"]
        for r in of_type(plans[f"{stack}.infra"], "aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    needed = {
        "s3": "Gateway",
        "ecr.api": "Interface",
        "ecr.dkr": "Interface",
        "logs": "Interface",
        "sagemaker.runtime": "Interface",
    }
    for service, kind in needed.items():
        assert services.get(f"com.amazonaws.{region}.{service}") == kind, (
            f"{stack}: {service} endpoint missing"
        )
    assert f"com.amazonaws.{region}.eks" not in services, services


@pytest.mark.parametrize("stack", SMB)
def test_endpoint_waits_for_its_alarms_and_log_group(plans: dict[str, Plan], stack: str) -> None:
    plan = plans[f"{stack}.infra"]
    (endpoint,) = [
        r
        for r in of_type(plan, "aws:sagemaker/endpoint:Endpoint")
        if r.inputs.get("name") == f"{stack}-{MODEL}"
    ]
    alarms = {r.inputs.get("name"): r.urn for r in of_type(plan, "aws:cloudwatch/metricAlarm:MetricAlarm")}
    rollback = [
        a["alarmName"] for a in endpoint.inputs["deploymentConfig"]["autoRollbackConfiguration"]["alarms"]
    ]
    assert sorted(rollback) == sorted(n for v in ("1", "2") for n in alarm_names(f"{stack}-{MODEL}", v)), (
        rollback
    )
    assert all(alarms[n] in endpoint.dependencies for n in rollback), (
        "the endpoint names alarms that must exist"
    )
    groups = {r.inputs["name"]: r.urn for r in of_type(plan, "aws:cloudwatch/logGroup:LogGroup")}
    assert groups[f"/aws/sagemaker/Endpoints/{stack}-{MODEL}"] in endpoint.dependencies


def test_canary_in_the_eu_and_linear_in_the_uae(plans: dict[str, Plan]) -> None:
    kinds = {}
    for stack in SMB:
        (endpoint,) = [
            r
            for r in of_type(plans[f"{stack}.infra"], "aws:sagemaker/endpoint:Endpoint")
            if "deploymentConfig" in r.inputs
        ]
        kinds[stack] = endpoint.inputs["deploymentConfig"]["blueGreenUpdatePolicy"][
            "trafficRoutingConfiguration"
        ]["type"]
    assert kinds == {"smb-eu": "CANARY", "smb-ae": "LINEAR"}, kinds


def test_custom_domain_only_where_the_stack_asks(plans: dict[str, Plan]) -> None:
    assert of_type(plans["smb-eu.infra"], "aws:apigatewayv2/domainName:DomainName"), "smb-eu names a domain"
    assert not of_type(plans["smb-ae.infra"], "aws:apigatewayv2/domainName:DomainName"), "smb-ae names none"
    assert outputs(plans["smb-eu.infra"])["api_url"] == "https://api.smb.models.example.eu"


def test_async_endpoints_stay_where_models_set_async(plans: dict[str, Plan]) -> None:
    assert list(outputs(plans["smb-eu.infra"])["async_endpoints"]) == [MODEL], "smb-eu serves async requests"
    assert outputs(plans["smb-ae.infra"])["async_endpoints"] == {}, "smb-ae has no async model"


@pytest.mark.parametrize(("stack", "total"), [("smb-eu", 106), ("smb-ae", 76)])
def test_resource_count(plans: dict[str, Plan], stack: str, total: int) -> None:
    """The count the docs quote (docs/smb.md): a change that adds or drops resources updates both."""
    found = counts(plans[f"{stack}.infra"])
    assert sum(found.values()) == total, sorted(found.items())


def test_the_platform_program_refuses_an_smb_stack_with_what_to_do() -> None:
    """Run as `cd stacks/platform && pulumi up -s smb-eu` would: the program itself says there is nothing."""
    from stacks.preview.run import _program, project_name, run_under_mocks, stack_config

    with pytest.raises(Exception, match=r"smb-eu is an smb stack: it has no platform layer") as raised:
        run_under_mocks(
            _program("platform"),
            stack="smb-eu",
            project=project_name(layer="platform"),
            config=stack_config("smb-eu"),
        )
    assert "docs/smb.md" in str(raised.value), raised.value


@pytest.mark.parametrize("stack", SMB)
def test_regions_output_names_the_bucket_and_key_every_model_reads(
    plans: dict[str, Plan], stack: str
) -> None:
    """`servectl publish` reads `regions` (the cluster stacks' shape): it must name the bucket each Model's
    data URL points into, and the key the bucket encrypts with, so what publish writes is what SageMaker
    copies."""
    plan = plans[f"{stack}.infra"]
    raw = outputs(plan)[REGIONS_OUTPUT]
    (sse,) = [
        r.inputs
        for r in of_type(
            plan, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        )
        if r.inputs["bucket"] == raw[SMB[stack]]["modelBucket"]
    ]
    key = sse["rules"][0]["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"]
    found = model_buckets(raw)
    assert found == {
        SMB[stack]: ModelBucketOutputs(
            region=SMB[stack], model_bucket=f"acme-{stack}-models-{SMB[stack]}", model_key_arn=key
        )
    }, found
    urls = {
        r.inputs["primaryContainer"]["modelDataSource"]["s3DataSources"][0]["s3Uri"]
        for r in of_type(plan, "aws:sagemaker/model:Model")
    }
    bucket = found[SMB[stack]].model_bucket
    assert urls == {f"s3://{bucket}/models/{MODEL}/1/", f"s3://{bucket}/models/{MODEL}/2/"}, urls
    with pytest.raises(ValueError, match="lacks clusterName"):
        from_export(raw, SMB[stack])  # the platform's reader refuses it: an smb stack has no cluster
