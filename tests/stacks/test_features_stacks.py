"""The feature store through both layers of eu-prod (two regions), planned under the mocks: each region's
tables, endpoint and roles in infra; each cluster's ConfigMap naming its own region and bucket as infra
exported them, its CronJob with its region's role, the readers' pods mounting it and no one else's, the
DynamoDB ServiceEntry, and the stack's staleness threshold in the alert. A stack without the block has
none."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from stacks.contract import REGIONS_OUTPUT, ROLE_FEATURES
from stacks.preview.run import Plan, plan_stack

REGIONS = ("eu-central-1", "eu-west-1")


@pytest.fixture(scope="module")
def eu() -> dict[str, Plan]:
    return {layer: plan_stack("eu-prod", layer=layer) for layer in ("infra", "platform")}


def _states(plan: Plan, type_: str) -> Iterator[dict[str, Any]]:
    for step in plan.document["steps"]:
        if step["newState"]["type"] == type_:
            yield step["newState"]


def _cluster(state: dict[str, Any]) -> str:
    """The region a platform object goes to: its provider is named `<region>-k8s`."""
    return str(state["provider"].rsplit("::", 2)[1].removesuffix("-k8s"))


def test_each_region_has_its_own_table_and_endpoint(eu: dict[str, Plan]) -> None:
    tables = sorted(s["urn"].rsplit("::", 1)[1] for s in _states(eu["infra"], "aws:dynamodb/table:Table"))
    assert tables == [f"eu-prod-{r}-features-tumour-measurements" for r in REGIONS], tables
    endpoints = sorted(
        s["inputs"]["serviceName"]
        for s in _states(eu["infra"], "aws:ec2/vpcEndpoint:VpcEndpoint")
        if s["inputs"]["serviceName"].endswith(".dynamodb")
    )
    assert endpoints == [f"com.amazonaws.{r}.dynamodb" for r in REGIONS], endpoints


def test_infra_exports_each_regions_materialization_role(eu: dict[str, Plan]) -> None:
    exported = (eu["infra"].outputs or {})[REGIONS_OUTPUT]
    for region in REGIONS:
        role = exported[region]["roles"][ROLE_FEATURES]
        assert role.endswith(f":role/eu-prod-{region}-feature-materialize"), role


def test_the_serving_roles_read_policy_names_its_regions_table(eu: dict[str, Plan]) -> None:
    policies = [
        state
        for state in _states(eu["infra"], "aws:iam/rolePolicy:RolePolicy")
        if state["urn"].endswith("-model-tabular-classifier-features")
    ]
    assert len(policies) == len(REGIONS), [state["urn"] for state in policies]
    for state in policies:
        region = next(r for r in REGIONS if f"-{r}-" in state["urn"])
        (read, *_) = json.loads(state["inputs"]["policy"])["Statement"]
        assert read["Resource"] == [
            f"arn:aws:dynamodb:{region}:345678901234:table/eu-prod.model_serving.tumour_measurements"
        ], read


def test_each_cluster_reads_its_own_regions_store(eu: dict[str, Plan]) -> None:
    buckets = {r: out["modelBucket"] for r, out in (eu["infra"].outputs or {})[REGIONS_OUTPUT].items()}
    maps = [
        s for s in _states(eu["platform"], "kubernetes:core/v1:ConfigMap") if "-features-config-" in s["urn"]
    ]
    assert sorted((_cluster(s), s["inputs"]["metadata"]["namespace"]) for s in maps) == [
        (r, "payments") for r in REGIONS
    ]
    for state in maps:
        region = _cluster(state)
        config = yaml.safe_load(state["inputs"]["data"]["feature_store.yaml"])
        assert config["online_store"]["region"] == region, f"{region} reads another region's tables"
        assert config["registry"]["path"] == f"s3://{buckets[region]}/feast/registry.db", config["registry"]


def test_one_materialization_job_per_cluster_with_its_regions_role(eu: dict[str, Plan]) -> None:
    jobs = sorted(_cluster(s) for s in _states(eu["platform"], "kubernetes:batch/v1:CronJob"))
    assert jobs == sorted(REGIONS), jobs
    roles = (eu["infra"].outputs or {})[REGIONS_OUTPUT]
    for account in _states(eu["platform"], "kubernetes:core/v1:ServiceAccount"):
        if account["inputs"]["metadata"]["name"] == "feature-materialize":
            region = _cluster(account)
            annotation = account["inputs"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            assert annotation == roles[region]["roles"][ROLE_FEATURES], region


def test_only_the_readers_pods_mount_the_feature_repository(eu: dict[str, Plan]) -> None:
    mounting = set()
    for state in _states(eu["platform"], "kubernetes:apps/v1:Deployment"):
        spec = state["inputs"]["spec"]["template"]["spec"]
        env = {e["name"] for c in spec["containers"] for e in c.get("env", [])}
        if "SERVING_FEATURE_REPO" in env:
            mounting.add(state["inputs"]["metadata"]["name"])
    assert mounting == {"tabular-classifier-v1", "tabular-classifier-v2"}, mounting


def test_pods_may_reach_dynamodb_through_the_mesh(eu: dict[str, Plan]) -> None:
    hosts = {
        (_cluster(s), h)
        for s in _states(eu["platform"], "kubernetes:networking.istio.io/v1:ServiceEntry")
        for h in s["inputs"]["spec"]["hosts"]
    }
    assert {(r, f"dynamodb.{r}.amazonaws.com") for r in REGIONS} <= hosts, sorted(hosts)


def test_the_alert_uses_the_stacks_threshold(eu: dict[str, Plan]) -> None:
    found = [
        (_cluster(state), rule["expr"].rsplit(">", 1)[1].strip())
        for state in _states(eu["platform"], "kubernetes:monitoring.coreos.com/v1:PrometheusRule")
        for group in state["inputs"]["spec"]["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "FeatureViewStale"
    ]
    assert sorted(found) == [(r, "5400") for r in REGIONS], "eu-prod's staleAfterMinutes is 90"


def test_a_stack_without_the_block_has_no_feature_store() -> None:
    infra, platform = plan_stack("uae-prod", layer="infra"), plan_stack("uae-prod", layer="platform")
    assert not list(_states(infra, "aws:dynamodb/table:Table"))
    assert not list(_states(platform, "kubernetes:batch/v1:CronJob"))
    hosts = {
        h
        for s in _states(platform, "kubernetes:networking.istio.io/v1:ServiceEntry")
        for h in s["inputs"]["spec"]["hosts"]
    }
    assert not [h for h in hosts if h.startswith("dynamodb.")], hosts
