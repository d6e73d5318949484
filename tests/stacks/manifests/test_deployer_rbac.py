"""The deployer's ClusterRole against the platform plans (offline, under mocks): every kind a plan creates is
granted, every grant is used by some plan, the plans' Roles grant nothing the deployer lacks, and what the
role cannot cover is a HOLD. The real API server's verdicts are in test_rbac_kube.py."""

import copy
from typing import Any

import pytest
import yaml

from stacks.manifests import deployer_rbac as rbac
from stacks.preview.run import Plan

ONPREM = "onprem-ae"
DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "*"}


@pytest.fixture(scope="module")
def platform_plans(plans: dict[str, Plan]) -> dict[str, Plan]:
    """The platform layer of every stack that has one (from the session's plans of every layer)."""
    return {key.removesuffix(".platform"): plan for key, plan in plans.items() if key.endswith(".platform")}


@pytest.fixture(scope="module")
def onprem(platform_plans: dict[str, Plan]) -> dict[str, Any]:
    return platform_plans[ONPREM].document


def _kinds(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(o.group, o.resource) for o in rbac.planned(document)}


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("kubernetes:core/v1:Namespace", ("", "namespaces")),
        ("kubernetes:networking.istio.io/v1:VirtualService", ("networking.istio.io", "virtualservices")),
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", ("networking.k8s.io", "networkpolicies")),
        ("kubernetes:storage.k8s.io/v1:StorageClass", ("storage.k8s.io", "storageclasses")),
        ("kubernetes:networking.istio.io/v1:Gateway", ("networking.istio.io", "gateways")),
        ("kubernetes:telemetry.istio.io/v1:Telemetry", ("telemetry.istio.io", "telemetries")),
        ("kubernetes:apps/v1:Deployment", ("apps", "deployments")),
    ],
)
def test_resource_of_maps_a_type_token_to_its_group_and_plural(token: str, expected: tuple[str, str]) -> None:
    assert rbac.resource_of(token) == expected


def test_every_object_the_onprem_plan_creates_may_be_created_and_changed_by_name(
    onprem: dict[str, Any],
) -> None:
    granted, objects = rbac.rules(onprem), rbac.planned(onprem)
    assert len(objects) > 50, f"the onprem-ae platform plan has its Kubernetes objects: {len(objects)}"
    refused = [
        f"{verb} {o.group}/{o.resource}/{o.name}"
        for o in objects
        for verb in ("create", "get", "patch", "delete")
        if not rbac.allows(granted, o.group, o.resource, verb, "" if verb == "create" else o.name)
    ]
    assert refused == [], f"the plan needs what the deployer role does not grant: {refused}"


@pytest.mark.parametrize("stack", ["eu-prod", "uae-prod", "us-prod", ONPREM])
def test_every_kind_of_every_platform_plan_is_granted(platform_plans: dict[str, Plan], stack: str) -> None:
    document = platform_plans[stack].document
    missing = [h for h in rbac.holds(document) if "kind not granted" in h]
    assert len(rbac.planned(document)) > 0, stack
    assert missing == [], f"{stack}: kinds the deployer role lacks (add them to MANAGED): {missing}"


def test_a_kind_the_stacks_add_without_a_grant_is_held(onprem: dict[str, Any]) -> None:
    document = copy.deepcopy(onprem)
    document["steps"].append(
        {"op": "create", "urn": "urn:x", "newState": {"type": "kubernetes:apps/v1:DaemonSet",
         "inputs": {"metadata": {"name": "agent", "namespace": "monitoring"}}}}
    )  # fmt: skip
    assert "apps/daemonsets agent: kind not granted (add it to MANAGED)" in rbac.holds(document)


def test_every_managed_grant_is_created_by_some_platform_plan(platform_plans: dict[str, Plan]) -> None:
    """Least privilege the other way: a grant no stack needs is one to remove."""
    created = set().union(*(_kinds(p.document) for p in platform_plans.values()))
    granted = {(group, resource) for group, resources in rbac.MANAGED for resource in resources}
    assert len(platform_plans) == 4, sorted(platform_plans)
    assert granted - created == set(), "granted but created by no platform plan"
    assert created - granted == {("", "namespaces"), ("", "secrets")}, "namespaces and Secrets have own rules"


def test_the_roles_every_plan_creates_grant_nothing_the_deployer_lacks(
    platform_plans: dict[str, Plan],
) -> None:
    """Without `escalate`, the API server refuses a Role granting more than its creator holds."""
    roles = [
        (stack, o)
        for stack, plan in platform_plans.items()
        for o in rbac.planned(plan.document)
        if o.resource == "roles"
    ]
    assert len(roles) >= 3 * len(platform_plans), "each plan's tenant roles and rollout controller Role"
    beyond = {f"{s} {o.name}": rbac.uncovered(rbac.rules(platform_plans[s].document), o.inputs["rules"])
              for s, o in roles}  # fmt: skip
    assert {k: v for k, v in beyond.items() if v} == {}


def test_a_role_granting_more_than_the_deployer_holds_is_held(onprem: dict[str, Any]) -> None:
    document = copy.deepcopy(onprem)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "reader", "namespace": "banking"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]}  # fmt: skip
    document["steps"].append(
        {"op": "create", "urn": "urn:y", "newState": {"type": "kubernetes:rbac.authorization.k8s.io/v1:Role",
                                                      "inputs": role}}
    )  # fmt: skip
    assert "roles reader grants what the deployer does not hold: list core/secrets" in rbac.holds(document)


def test_the_onprem_plan_is_held_only_for_its_helm_releases(onprem: dict[str, Any]) -> None:
    charts = rbac.helm_charts(onprem)
    assert sorted(charts) == [
        "base", "cert-manager", "cni", "gateway", "istiod", "kube-prometheus-stack", "metrics-server",
        "opentelemetry-collector",
    ]  # fmt: skip
    held = rbac.holds(onprem)
    assert len(held) == len(charts), held
    assert all(h.startswith("Helm release of chart ") for h in held), held


def test_the_role_never_escalates_binds_impersonates_or_touches_cluster_roles(onprem: dict[str, Any]) -> None:
    granted = rbac.rules(onprem)
    verbs = {v for rule in granted for v in rule["verbs"]}
    resources = {r for rule in granted for r in rule["resources"]}
    assert verbs & DANGEROUS_VERBS == set(), verbs
    assert resources & {"clusterroles", "clusterrolebindings", "*"} == set(), resources
    assert not rbac.allows(granted, "rbac.authorization.k8s.io", "clusterroles", "create")


def test_secrets_and_namespaces_are_changed_only_by_the_plans_names(onprem: dict[str, Any]) -> None:
    granted = rbac.rules(onprem)
    assert rbac.allows(granted, "", "secrets", "get", "alertmanager-config"), "the plan's own Secret"
    assert not rbac.allows(granted, "", "secrets", "list"), "no listing Secrets"
    assert not rbac.allows(granted, "", "secrets", "get", "model-store-credentials"), "not the plan's"
    assert rbac.allows(granted, "", "secrets", "create"), "create reveals nothing and cannot be named"
    assert rbac.allows(granted, "", "namespaces", "delete", "banking")
    assert not rbac.allows(granted, "", "namespaces", "delete", "kube-system")


def test_a_named_rule_never_matches_a_request_without_a_name() -> None:
    named = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get", "list"]}]
    assert rbac.allows(named, "", "secrets", "get", "a")
    assert not rbac.allows(named, "", "secrets", "list")
    assert not rbac.allows(named, "", "secrets", "get", "b")


def test_the_binding_names_the_role_and_the_group() -> None:
    binding = rbac.cluster_role_binding("ops:deployers")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": rbac.NAME,
    }
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ops:deployers"}
    ]


def test_the_command_prints_the_role_and_binding_and_the_holds(capsys: pytest.CaptureFixture[str]) -> None:
    assert rbac.main(["--stack", ONPREM]) == 0
    out, err = capsys.readouterr()
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert kinds == ["ClusterRole", "ClusterRoleBinding"], out[:500]
    assert err.count("HOLD: Helm release of chart ") == 8, err


def test_the_command_refuses_an_unknown_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert rbac.main(["--stack", "nowhere"]) == 1
    assert "deployer_rbac: no stack file Pulumi.nowhere.yaml; stacks: " in capsys.readouterr().err


def test_the_command_refuses_a_stack_without_a_platform_layer(capsys: pytest.CaptureFixture[str]) -> None:
    assert rbac.main(["--stack", "smb-eu"]) == 1
    assert "deployer_rbac: stack smb-eu has no platform layer" in capsys.readouterr().err
