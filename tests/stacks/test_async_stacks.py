"""Asynchronous inference through the shipped stacks' plans: the queue per region, its export, its workers."""

from typing import Any

import pytest

from stacks.contract import REGIONS_OUTPUT, ROLE_EXTERNAL_SECRETS
from stacks.preview.run import Plan

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
    secrets = _kind(platform, "ExternalSecret")
    assert len(secrets) == len(exported), [s.name for s in secrets]
    for region, out in exported.items():
        (secret,) = [s for s in secrets if s.name.startswith(f"{region}-")]
        assert secret.inputs["spec"]["data"][0]["remoteRef"]["key"] == out["jobQueueSecretArn"], region
        (entry,) = [e for e in _kind(platform, "ServiceEntry") if e.name.startswith(f"{region}-async-")]
        assert entry.inputs["spec"]["hosts"] == [out["jobQueueEndpoint"]], region
        (scaler,) = [s for s in _kind(platform, "ScaledObject") if s.name.startswith(f"{region}-")]
        assert (
            scaler.inputs["spec"]["triggers"][0]["metadata"]["address"] == f"{out['jobQueueEndpoint']}:6379"
        )
    releases = [
        r.inputs["chart"].rsplit("/", 1)[1] for r in platform.registrations if r.type.endswith(":Release")
    ]
    assert releases.count("keda") == releases.count("external-secrets") == len(exported), releases
