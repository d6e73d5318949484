"""Both layers of every shipped stack, through the offline plans."""

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from stacks.contract import REGIONS_OUTPUT, infra_stack_reference
from stacks.jurisdictions import JURISDICTION_REGIONS
from stacks.preview.run import Plan
from tests.stacks.schemas import validate

CLUSTER_STACKS = ["uae-prod", "eu-prod", "us-prod"]
SMB_STACKS = ["smb-eu", "smb-ae"]
"""The smb stacks run no cluster: an infra layer only (tests/stacks/test_smb_stacks.py)."""
AWS_STACKS = [*CLUSTER_STACKS, *SMB_STACKS]
JURISDICTION = {
    "uae-prod": "AE",
    "eu-prod": "EU",
    "us-prod": "US",
    "smb-eu": "EU",
    "smb-ae": "AE",
    "onprem-ae": "AE",
}
PLATFORMS = [*CLUSTER_STACKS, "onprem-ae"]
EVERY_PLAN = [f"{s}.infra" for s in AWS_STACKS] + [f"{s}.platform" for s in PLATFORMS]
ACCOUNTS = {
    "uae-prod": "210987654321",
    "eu-prod": "345678901234",
    "us-prod": "456789012345",
    "smb-eu": "567890123456",
    "smb-ae": "678901234567",
}
"""The account each shipped stack file pins (one account per stack, as AWS recommends per environment)."""
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _states(plan: Plan) -> Iterator[dict[str, Any]]:
    for step in plan.document["steps"]:
        yield step["newState"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _region_of_k8s(state: dict[str, Any], providers: dict[str, str]) -> str:
    """The cluster a Kubernetes resource goes to: its provider is named after the region (or location)."""
    return providers[state["provider"].rsplit("::", 1)[0]]


def _k8s_providers(plan: Plan) -> dict[str, str]:
    return {
        s["urn"]: s["urn"].rsplit("::", 1)[1].removesuffix("-k8s")
        for s in _states(plan)
        if s["type"] == "pulumi:providers:kubernetes"
    }


def _registries(plans: dict[str, Plan], stack: str) -> dict[str, str]:
    """Where each cluster of a stack must pull from: the region's ECR as infra exported it, or on premises."""
    if stack.startswith("onprem-"):
        return {"ae-dc1": "registry.dc1.example.ae"}
    exported = plans[f"{stack}.infra"].outputs or {}
    return {region: out["registry"] for region, out in exported[REGIONS_OUTPUT].items()}


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_aws_resource_resolves_to_a_region_of_the_jurisdiction(
    plans: dict[str, Plan], stack: str
) -> None:
    steps = plans[f"{stack}.infra"].document["steps"]
    providers = {s["urn"]: s["newState"] for s in steps if s["newState"]["type"] == "pulumi:providers:aws"}
    allowed = JURISDICTION_REGIONS[JURISDICTION[stack]]
    aws_steps = [s for s in steps if s["newState"]["type"].startswith("aws:")]
    assert len(aws_steps) > 20, f"{stack}: only {len(aws_steps)} AWS resources; the scan misses some"
    for step in aws_steps:
        region = (
            providers.get(step.get("provider", "").rsplit("::", 1)[0], {}).get("inputs", {}).get("region")
        )
        assert region in allowed, (
            f"{stack}: {step['urn']} resolves to region {region!r}, outside {sorted(allowed)}"
        )


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_aws_provider_is_pinned_to_the_stack_account(plans: dict[str, Plan], stack: str) -> None:
    providers = [s for s in _states(plans[f"{stack}.infra"]) if s["type"] == "pulumi:providers:aws"]
    assert providers, f"{stack}: no AWS provider in the infra plan"
    for state in providers:
        # The engine passes a provider's list inputs JSON-encoded.
        assert json.loads(state["inputs"].get("allowedAccountIds", "null")) == [ACCOUNTS[stack]], (
            f"{stack}: {state['urn']} may touch any account: {state['inputs'].get('allowedAccountIds')}"
        )


@pytest.mark.parametrize("stack", PLATFORMS)
def test_platform_layer_creates_nothing_on_aws(plans: dict[str, Plan], stack: str) -> None:
    aws = [
        s["urn"]
        for s in _states(plans[f"{stack}.platform"])
        if s["type"].startswith(("aws:", "pulumi:providers:aws"))
    ]
    assert aws == [], f"{stack}: the platform layer touches AWS: {aws[:5]}"


@pytest.mark.parametrize("stack", CLUSTER_STACKS)
def test_platform_reads_infra_only_through_a_stack_reference(plans: dict[str, Plan], stack: str) -> None:
    refs = [s for s in _states(plans[f"{stack}.platform"]) if s["type"] == "pulumi:pulumi:StackReference"]
    assert [r["inputs"]["name"] for r in refs] == [infra_stack_reference(stack)], f"{stack}: {refs}"
    exported = (plans[f"{stack}.infra"].outputs or {})[REGIONS_OUTPUT]
    kubeconfigs = {
        s["urn"].rsplit("::", 1)[1].removesuffix("-k8s"): s["inputs"].get("kubeconfig")
        for s in _states(plans[f"{stack}.platform"])
        if s["type"] == "pulumi:providers:kubernetes"
    }
    assert kubeconfigs == {r: out["kubeconfig"] for r, out in exported.items()}, (
        f"{stack}: each cluster must be reached with the kubeconfig infra exported for its region"
    )


def test_onprem_platform_builds_from_a_kubeconfig_alone(plans: dict[str, Plan]) -> None:
    states = list(_states(plans["onprem-ae.platform"]))
    refs = [s["urn"] for s in states if s["type"] == "pulumi:pulumi:StackReference"]
    assert refs == [], f"an on-premises platform reads no infra stack: {refs}"
    providers = [s for s in states if s["type"].startswith("pulumi:providers:")]
    assert [p["type"] for p in providers] == ["pulumi:providers:kubernetes"], [p["urn"] for p in providers]


def _image_refs(value: Any, default_registry: str | None) -> Iterator[str]:
    """Every image a manifest or a chart's values name, as `host/repository@digest` where it can be assembled.

    Manifests name images whole; charts split them (`repository` + `tag: v@sha256:...`, or + `digest`/`sha`,
    under a `global.imageRegistry`), so a split image is put back together before its host is checked.
    """
    if isinstance(value, str):
        if "@sha256:" in value and "/" in value.split("@", 1)[0]:
            yield value
        return
    if isinstance(value, list):
        for item in value:
            yield from _image_refs(item, default_registry)
        return
    if not isinstance(value, dict):
        return
    registry = (
        value.get("global", {}).get("imageRegistry", default_registry)
        if "global" in value
        else default_registry
    )
    digest = value.get("digest") or value.get("sha") or ""
    tag = str(value.get("tag", ""))
    repository = value.get("repository")
    if isinstance(repository, str) and (digest or "@sha256:" in tag):
        digest = str(digest) if str(digest).startswith("sha256:") or not digest else f"sha256:{digest}"
        host_given = "." in repository.split("/", 1)[0]
        base = repository if host_given else f"{value.get('registry') or registry}/{repository}"
        yield f"{base}@{digest or tag.split('@', 1)[1]}"
    for key, item in value.items():
        if key not in {"repository", "tag", "digest", "sha"}:
            yield from _image_refs(item, registry)


@pytest.mark.parametrize("stack", PLATFORMS)
def test_every_image_comes_from_the_clusters_own_registry_by_digest(
    plans: dict[str, Plan], stack: str
) -> None:
    plan = plans[f"{stack}.platform"]
    providers, registries = _k8s_providers(plan), _registries(plans, stack)
    seen = 0
    for state in _states(plan):
        if not state["type"].startswith("kubernetes:") or "provider" not in state:
            continue
        registry = registries[_region_of_k8s(state, providers)]
        for ref in _image_refs(state.get("inputs", {}), None):
            seen += 1
            assert ref.startswith(f"{registry}/") and DIGEST.search(ref), (
                f"{stack}: {state['urn']} pulls {ref!r}, not from {registry} by digest"
            )
    assert seen > 20, f"{stack}: only {seen} image references found; the scan misses some"


@pytest.mark.parametrize("stack", PLATFORMS)
def test_every_chart_comes_from_the_clusters_own_registry(plans: dict[str, Plan], stack: str) -> None:
    plan = plans[f"{stack}.platform"]
    providers, registries = _k8s_providers(plan), _registries(plans, stack)
    releases = [s for s in _states(plan) if s["type"] == "kubernetes:helm.sh/v3:Release"]
    assert releases, f"{stack}: no Helm release"
    for state in releases:
        registry = registries[_region_of_k8s(state, providers)]
        chart = state["inputs"]["chart"]
        assert chart.startswith(f"oci://{registry}/mirror/charts/"), (
            f"{stack}: {state['urn']} chart {chart!r}"
        )
        assert "repositoryOpts" not in state["inputs"], f"{stack}: {state['urn']} names an outside repository"


@pytest.mark.parametrize("plan_id", EVERY_PLAN)
def test_every_custom_resource_names_an_explicit_provider(plans: dict[str, Plan], plan_id: str) -> None:
    steps = plans[plan_id].document["steps"]
    urns = {s["urn"] for s in steps}
    custom = [
        s
        for s in steps
        if s["newState"]["custom"]
        and not s["newState"]["type"].startswith(("pulumi:providers:", "pulumi:pulumi:"))
    ]
    assert len(custom) > 20, f"{plan_id}: only {len(custom)} custom resources; the scan misses some"
    for step in custom:
        ref = step.get("provider", "")
        assert ref.rsplit("::", 1)[0] in urns, (
            f"{plan_id}: {step['urn']} has provider {ref!r} not in the plan"
        )


# The AWS Load Balancer Controller publishes its CRD only in a Go module version the proxy does not serve;
# tests/stacks/manifests/test_addons.py checks the binding field by field instead.
UNPUBLISHED_SCHEMAS = {
    "kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding",
}


def _without_secrets(value: Any) -> Any:
    """The object minus values the plan shows only as `[secret]` (their content is not in the document)."""
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if v != "[secret]"}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


@pytest.mark.parametrize("stack", PLATFORMS)
def test_every_kubernetes_object_validates(plans: dict[str, Plan], stack: str) -> None:
    checked = 0
    for state in _states(plans[f"{stack}.platform"]):
        kind = state["type"]
        if not kind.startswith("kubernetes:") or "helm.sh" in kind or kind in UNPUBLISHED_SCHEMAS:
            continue
        try:
            validate(_without_secrets(state["inputs"]))
        except Exception as exc:
            pytest.fail(f"{stack}: {state['urn']} does not validate: {str(exc)[:400]}")
        checked += 1
    assert checked > 30, f"{stack}: only {checked} objects validated"


@pytest.mark.parametrize("plan_id", EVERY_PLAN)
def test_document_has_preview_shape(plans: dict[str, Plan], plan_id: str) -> None:
    doc = plans[plan_id].document
    assert set(doc) >= {"steps", "changeSummary", "config"}, f"top-level keys: {set(doc)}"
    assert doc["steps"][0]["newState"]["type"] == "pulumi:pulumi:Stack", (
        f"{plan_id}: the stack resource comes first"
    )
    for step in doc["steps"]:
        assert set(step["newState"]) >= {"urn", "type", "custom"}, step["urn"]
        assert step["op"] in {"create", "read"}, step["op"]


@pytest.mark.parametrize("stack", SMB_STACKS)
def test_smb_has_one_region_no_internet_path_and_no_cluster(plans: dict[str, Plan], stack: str) -> None:
    types = [s["type"] for s in _states(plans[f"{stack}.infra"])]
    for kind in ("ec2/natGateway:NatGateway", "ec2/internetGateway:InternetGateway", "networkfirewall/"):
        assert not [t for t in types if kind in t], f"{stack}: an smb VPC has no way out, found {kind}"
    assert types.count("pulumi:providers:aws") == 1, "SMB runs one region"
    assert types.count("aws:eks/cluster:Cluster") == 0, "SMB runs no cluster"


def test_eu_prod_spans_two_eu_regions(plans: dict[str, Plan]) -> None:
    regions = {
        s["inputs"]["region"] for s in _states(plans["eu-prod.infra"]) if s["type"] == "pulumi:providers:aws"
    }
    assert regions == {"eu-central-1", "eu-west-1"}, f"providers: {regions}"


def test_infra_exports_every_region_the_platform_needs(plans: dict[str, Plan]) -> None:
    exported = (plans["eu-prod.infra"].outputs or {})[REGIONS_OUTPUT]
    assert sorted(exported) == ["eu-central-1", "eu-west-1"], sorted(exported)
    for region, out in exported.items():
        assert out["registry"] == f"{ACCOUNTS['eu-prod']}.dkr.ecr.{region}.amazonaws.com/eu-prod", out[
            "registry"
        ]
        assert "--role-arn" in out["kubeconfig"], f"{region}: the kubeconfig must assume the deploy role"


def _allowlist(plan: Plan, region: str) -> set[str]:
    """The egress firewall's allowed domains in one region."""
    groups = [
        s
        for s in _states(plan)
        if s["type"] == "aws:networkfirewall/ruleGroup:RuleGroup" and plan.regions.get(s["urn"]) == region
    ]
    targets = set()
    for group in groups:
        source = group["inputs"]["ruleGroup"]["rulesSource"].get("rulesSourceList") or {}
        targets |= set(source.get("targets", []))
    return targets


def test_only_the_primary_region_lets_the_runner_reach_github(plans: dict[str, Plan]) -> None:
    plan = plans["eu-prod.infra"]
    primary, secondary = _allowlist(plan, "eu-central-1"), _allowlist(plan, "eu-west-1")
    assert {"github.com", ".actions.githubusercontent.com", "sts.eu-west-1.amazonaws.com"} <= primary, primary
    assert "idp.example.eu" in primary and "idp.example.eu" in secondary, "istiod fetches the JWKS everywhere"
    assert "github.com" not in secondary, f"no runner in eu-west-1, yet it may reach GitHub: {secondary}"


def test_one_runner_per_stack_and_secondary_clusters_are_peered(plans: dict[str, Plan]) -> None:
    plan = plans["eu-prod.infra"]
    projects = [s for s in _states(plan) if s["type"] == "aws:codebuild/project:Project"]
    assert [p["inputs"]["name"] for p in projects] == ["eu-prod-eu-central-1-deploy-runner"], projects
    peerings = [s for s in _states(plan) if s["type"] == "aws:ec2/vpcPeeringConnection:VpcPeeringConnection"]
    assert [p["inputs"].get("peerRegion") for p in peerings] == ["eu-west-1"], peerings
    entries = [s for s in _states(plan) if s["type"] == "aws:eks/accessEntry:AccessEntry"]
    deploy = {e["inputs"]["principalArn"] for e in entries if e["urn"].endswith("-deploy")}
    assert len(deploy) == 1, (
        f"each cluster must admit the one deploy role the runner's kubeconfig assumes: {deploy}"
    )
    assert sum(e["urn"].endswith("-deploy") for e in entries) == 2, "both regions' clusters need the entry"


# Inputs that set a resource's physical name, by type; the other types are auto-named by Pulumi (a random
# suffix) or named by AWS. Two stacks of one account in one region must never ask for the same name.
NAME_INPUTS = (
    "name",
    "bucket",
    "alias",
    "awsServiceName",
    "clusterName",
    "roleName",
    "repositoryName",
    "ecrRepositoryPrefix",
    "prefix",
)
UNNAMED_BY_INPUT = ("aws:eks/", "aws:ec2/launchTemplate", "aws:cloudwatch/logGroup")
GLOBAL_NAMESPACES = ("aws:iam/", "aws:s3/bucket:", "aws:route53/")


def _physical_names(plan: Plan) -> Iterator[tuple[str, str, str]]:
    """(namespace, type, name) for every explicitly named resource; IAM and S3 names are account- or
    world-wide, the rest regional."""
    for state in _states(plan):
        kind = state["type"]
        if not kind.startswith("aws:") or kind.startswith(("aws:eks/accessEntry", "aws:eks/accessPolicy")):
            continue
        inputs = state.get("inputs", {})
        for key in NAME_INPUTS:
            value = inputs.get(key)
            if isinstance(value, str) and not (key == "clusterName" and kind != "aws:eks/cluster:Cluster"):
                scope = (
                    "global" if kind.startswith(GLOBAL_NAMESPACES) else plan.regions.get(state["urn"], "?")
                )
                yield scope, kind, value
                break


def test_stacks_sharing_an_account_never_ask_for_the_same_name(plans: dict[str, Plan]) -> None:
    owners: dict[tuple[str, str, str, str], str] = {}
    clashes = []
    for stack in AWS_STACKS:
        for scope, kind, name in set(_physical_names(plans[f"{stack}.infra"])):
            key = (ACCOUNTS[stack], scope, kind, name)
            if key in owners and owners[key] != stack:
                clashes.append((owners[key], stack, key))
            owners.setdefault(key, stack)
    assert clashes == [], f"names two stacks of one account would both create: {clashes[:8]}"


# Names not chosen per stack: the account's one service-linked role (created only where the stack file says
# so), the buckets (their globally unique prefix is the stack file's) and DNS records (the API host is); an
# HTTP API's `$default` stage is named within its API, never per account.
ACCOUNT_SINGLETONS = ("aws:iam/serviceLinkedRole:", "aws:s3/", "aws:route53/", "aws:apigatewayv2/stage:")


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_name_the_stack_chooses_carries_the_stack(plans: dict[str, Plan], stack: str) -> None:
    """Two stacks in one account and region (e.g. a dev and a prod stack) then never collide."""
    bare = sorted(
        (kind, name)
        for _, kind, name in _physical_names(plans[f"{stack}.infra"])
        if stack not in name and not kind.startswith(ACCOUNT_SINGLETONS)
    )
    assert bare == [], f"{stack}: physical names without the stack: {bare[:10]}"


@pytest.mark.parametrize("stack", PLATFORMS)
def test_one_retrain_receiver_per_stack_in_its_primary_cluster(plans: dict[str, Plan], stack: str) -> None:
    """A retrain publishes version N+1 to every region's bucket: two receivers would race to it. (Which
    Alertmanager routes to it is the Monitoring component's test: the plan masks the Secret.)"""
    plan = plans[f"{stack}.platform"]
    providers = _k8s_providers(plan)
    receivers = [
        _region_of_k8s(s, providers)
        for s in _states(plan)
        if s["type"] == "kubernetes:apps/v1:Deployment"
        and s["inputs"]["metadata"]["name"] == "retrain-receiver"
    ]
    primary = next(iter(providers.values()))
    assert receivers == [primary], f"{stack}: retrain receivers in {receivers}, expected one in {primary}"


@pytest.mark.parametrize("stack", PLATFORMS)
def test_every_cluster_runs_a_rollout_controller_per_model_with_a_rollout_block(
    plans: dict[str, Plan], stack: str
) -> None:
    """Each region's VirtualService and Prometheus are its own, so each cluster steps its own rollout."""
    plan = plans[f"{stack}.platform"]
    providers = _k8s_providers(plan)
    controllers = sorted(
        (_region_of_k8s(s, providers), s["inputs"]["metadata"]["name"])
        for s in _states(plan)
        if s["type"] == "kubernetes:apps/v1:Deployment"
        and s["inputs"]["metadata"]["name"].endswith("-rollout-controller")
    )
    expected = sorted((region, "tabular-classifier-rollout-controller") for region in providers.values())
    assert controllers == expected, f"{stack}: {controllers}"
