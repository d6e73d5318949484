"""Asynchronous inference through the shipped stacks' plans: the queue per region, its export, its workers."""

from typing import Any

import pytest

from stacks.contract import REGIONS_OUTPUT, ROLE_EXTERNAL_SECRETS
from stacks.infra import __main__ as infra
from stacks.preview.run import Plan
from tests.stacks.test_config import parse, raw

RG = "aws:elasticache/replicationGroup:ReplicationGroup"
SLR = "aws:iam/serviceLinkedRole:ServiceLinkedRole"
ASYNC_STACKS = {"eu-prod": ("eu-central-1", "eu-west-1"), "uae-prod": ("me-central-1",)}


def _exports(plans: dict[str, Plan], stack: str) -> dict[str, Any]:
    outputs = plans[f"{stack}.infra"].outputs or {}
    exported: dict[str, Any] = outputs[REGIONS_OUTPUT]
    return exported


def _kind(plan: Plan, kind: str) -> list[Any]:
    return [r for r in plan.registrations if r.type.startswith("kubernetes:") and r.type.endswith(f":{kind}")]


@pytest.mark.parametrize("stack", sorted(ASYNC_STACKS))
def test_every_region_exports_its_own_queue(plans: dict[str, Plan], stack: str) -> None:
    exported = _exports(plans, stack)
    assert sorted(exported) == sorted(ASYNC_STACKS[stack]), exported
    groups = [r for r in plans[f"{stack}.infra"].registrations if r.type == RG]
    assert len(groups) == len(ASYNC_STACKS[stack]), [g.name for g in groups]
    for region, out in exported.items():
        assert out["jobQueueEndpoint"].startswith("master.") and out["jobQueueEndpoint"].endswith(
            ".cache.amazonaws.com"
        ), out["jobQueueEndpoint"]
        assert out["jobQueueSecretArn"].startswith(f"arn:aws:secretsmanager:{region}:"), out[
            "jobQueueSecretArn"
        ]
        assert ROLE_EXTERNAL_SECRETS in out["roles"], f"{region}: no role for the secret syncer"


@pytest.mark.parametrize("stack", sorted(ASYNC_STACKS))
def test_elasticaches_role_is_made_once_and_every_group_waits_for_it(
    plans: dict[str, Plan], stack: str
) -> None:
    registrations = plans[f"{stack}.infra"].registrations
    roles = [
        r
        for r in registrations
        if r.type == SLR and r.inputs["awsServiceName"] == "elasticache.amazonaws.com"
    ]
    assert len(roles) == 1, f"{stack}: the role is one per account: {[r.name for r in roles]}"
    assert ASYNC_STACKS[stack][0] in roles[0].name, (
        f"{stack}: not made by the primary region: {roles[0].name}"
    )
    for group in (r for r in registrations if r.type == RG):
        assert roles[0].urn in group.dependencies, f"{group.name} may be created before the role"


def test_stacks_without_async_models_run_no_queue(plans: dict[str, Plan]) -> None:
    exported = _exports(plans, "us-prod")
    assert {(o["jobQueueEndpoint"], o["jobQueueSecretArn"]) for o in exported.values()} == {("", "")}, (
        exported
    )
    assert not [r for r in plans["us-prod.infra"].registrations if r.type.startswith("aws:elasticache")]
    assert all(ROLE_EXTERNAL_SECRETS not in o["roles"] for o in exported.values()), exported
    platform = plans["us-prod.platform"]
    assert not _kind(platform, "ScaledObject") and not _kind(platform, "ExternalSecret"), (
        "workers without a queue"
    )


@pytest.mark.parametrize("stack", sorted(ASYNC_STACKS))
def test_each_clusters_workers_use_their_regions_queue(plans: dict[str, Plan], stack: str) -> None:
    exported = _exports(plans, stack)
    platform = plans[f"{stack}.platform"]
    secrets = [s for s in _kind(platform, "ExternalSecret") if s.name.endswith("-queue-secret")]
    assert len(secrets) == len(exported), [s.name for s in secrets]
    for region, out in exported.items():
        (secret,) = [s for s in secrets if s.name.startswith(f"{region}-")]
        assert secret.inputs["spec"]["data"][0]["remoteRef"]["key"] == out["jobQueueSecretArn"], region
        (entry,) = [
            e
            for e in _kind(platform, "ServiceEntry")
            if e.name.startswith(f"{region}-async-") and e.name.endswith("-job-queue")
        ]
        assert entry.inputs["spec"]["hosts"] == [out["jobQueueEndpoint"]], region
        (scaler,) = [s for s in _kind(platform, "ScaledObject") if s.name.startswith(f"{region}-")]
        assert (
            scaler.inputs["spec"]["triggers"][0]["metadata"]["address"] == f"{out['jobQueueEndpoint']}:6379"
        )
    releases = [
        r.inputs["chart"].rsplit("/", 1)[1] for r in platform.registrations if r.type.endswith(":Release")
    ]
    assert releases.count("keda") == releases.count("external-secrets") == len(exported), releases


JOB_MODELS = {"eu-prod": "ticket-router", "uae-prod": "tabular-classifier"}
CALLBACK_HOSTS = {"eu-prod": ["hooks.example.eu"], "uae-prod": []}


@pytest.mark.parametrize("stack", sorted(ASYNC_STACKS))
def test_every_region_exports_its_own_result_bucket(plans: dict[str, Plan], stack: str) -> None:
    exported = _exports(plans, stack)
    buckets = {
        r.inputs["bucket"]
        for r in plans[f"{stack}.infra"].registrations
        if r.type == "aws:s3/bucket:Bucket" and "-async-" in r.inputs["bucket"]
    }
    assert buckets == {out["jobBucket"] for out in exported.values()}, (buckets, exported)
    for region, out in exported.items():
        assert out["jobBucket"].endswith(f"-async-{region}"), out["jobBucket"]


@pytest.mark.parametrize("stack", sorted(ASYNC_STACKS))
def test_each_clusters_pods_get_their_regions_result_bucket(plans: dict[str, Plan], stack: str) -> None:
    exported, platform, model = _exports(plans, stack), plans[f"{stack}.platform"], JOB_MODELS[stack]
    assert sorted(exported) == sorted(ASYNC_STACKS[stack]), exported
    for region, out in exported.items():
        (store,) = [c for c in _kind(platform, "ConfigMap") if c.name == f"{region}-model-{model}-store"]
        assert store.inputs["data"]["async-object-store"] == f"s3://{out['jobBucket']}/jobs/{model}", region


@pytest.mark.parametrize("stack", sorted(ASYNC_STACKS))
def test_callbacks_reach_the_pods_mesh_and_firewall_only_where_allowed(
    plans: dict[str, Plan], stack: str
) -> None:
    exported, platform, hosts = _exports(plans, stack), plans[f"{stack}.platform"], CALLBACK_HOSTS[stack]
    keys = [s for s in _kind(platform, "ExternalSecret") if s.name.endswith("-callback-secret")]
    entries = [e for e in _kind(platform, "ServiceEntry") if "-callback-" in e.inputs["metadata"]["name"]]
    lists = [
        r.inputs["ruleGroup"]["rulesSource"]["rulesSourceList"]["targets"]
        for r in plans[f"{stack}.infra"].registrations
        if r.type == "aws:networkfirewall/ruleGroup:RuleGroup"
        and "rulesSourceList" in r.inputs.get("ruleGroup", {}).get("rulesSource", {})
    ]
    assert len(lists) == len(exported), lists
    for region, out in exported.items():
        mine = [k for k in keys if k.name.startswith(f"{region}-")]
        assert [k.inputs["spec"]["data"][0]["remoteRef"]["key"] for k in mine] == (
            [out["jobCallbackSecretArn"]] if hosts else []
        ), (region, out["jobCallbackSecretArn"])
        assert (
            sorted(e.inputs["spec"]["hosts"][0] for e in entries if e.name.startswith(f"{region}-")) == hosts
        )
    for targets in lists:
        assert set(hosts) <= set(targets), f"a callback host the firewall drops: {targets}"


@pytest.mark.parametrize("primary", [True, False])
def test_the_firewall_admits_each_callback_host_by_name_in_every_region(primary: bool) -> None:
    values, region = raw("eu-prod")
    values["asyncInference"]["callbacks"] = {
        "allowedHosts": ["hooks.example.eu", "cb.partner.example.eu:8443"]
    }
    cfg = parse(values, region)
    domains = infra._egress_domains(cfg, cfg.regions[0 if primary else 1])
    assert {"hooks.example.eu", "cb.partner.example.eu"} <= set(domains), domains
    assert not [d for d in domains if ":" in d], f"the firewall matches names, never ports: {domains}"


@pytest.mark.parametrize("stack", sorted(ASYNC_STACKS))
def test_the_secrets_the_serving_pods_read_do_not_wait_for_those_pods(
    plans: dict[str, Plan], stack: str
) -> None:
    # Pulumi waits for a Deployment's pods to be ready; pods reading a Secret that is made only after their
    # Deployment would keep that wait going until it times out on the first deploy.
    platform = plans[f"{stack}.platform"]
    serving = {
        r.urn
        for r in platform.registrations
        if r.type in {"model-serving:serving:ModelServing", "kubernetes:apps/v1:Deployment"}
        and "-model-" in r.name
    }
    assert serving, "no serving objects in the plan"
    for secret in _kind(platform, "ExternalSecret"):
        assert not serving & set(secret.dependencies), (
            f"{secret.name} waits for {serving & set(secret.dependencies)}"
        )
