"""The admission policies in every shipped platform plan: one set per cluster, each with that cluster's own
registry, and every tenant namespace (and so every workload in it) created after the cluster's bindings."""

import json
from typing import Any

import pytest

from stacks.contract import REGIONS_OUTPUT
from stacks.manifests import admission
from stacks.manifests.tenancy import TENANT_LABEL
from stacks.preview.run import Plan

PLATFORMS = ["uae-prod", "eu-prod", "us-prod", "onprem-ae"]
POLICY = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"
BINDING = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding"
NAMESPACE = "kubernetes:core/v1:Namespace"


def _states(plan: Plan, typ: str) -> list[dict[str, Any]]:
    return [s["newState"] for s in plan.document["steps"] if s["newState"]["type"] == typ]


def _cluster(state: dict[str, Any]) -> str:
    """The cluster a Kubernetes object goes to: its provider is named `<region or location>-k8s`."""
    return str(state["provider"].rsplit("::", 1)[0].rsplit("::", 1)[1].removesuffix("-k8s"))


def _registries(plans: dict[str, Plan], stack: str) -> dict[str, str]:
    if stack == "onprem-ae":
        return {"ae-dc1": "registry.dc1.example.ae"}
    exported = plans[f"{stack}.infra"].outputs or {}
    return {region: out["registry"] for region, out in exported[REGIONS_OUTPUT].items()}


@pytest.mark.parametrize("stack", PLATFORMS)
def test_every_cluster_gets_the_policies_with_its_own_registry(plans: dict[str, Plan], stack: str) -> None:
    registries = _registries(plans, stack)
    policies = _states(plans[f"{stack}.platform"], POLICY)
    assert len(policies) == len(admission.SHAPES) * len(registries), [p["urn"] for p in policies]
    for policy in policies:
        variables = {v["name"]: v["expression"] for v in policy["inputs"]["spec"]["variables"]}
        expected = json.dumps(registries[_cluster(policy)])
        assert variables["registry"] == expected, f"{stack}: {policy['urn']}: {variables['registry']}"
    bindings = _states(plans[f"{stack}.platform"], BINDING)
    assert len(bindings) == len(policies), f"{stack}: a binding per policy: {[b['urn'] for b in bindings]}"


@pytest.mark.parametrize("stack", PLATFORMS)
def test_every_tenant_namespace_waits_for_its_clusters_bindings(plans: dict[str, Plan], stack: str) -> None:
    plan = plans[f"{stack}.platform"]
    bindings: dict[str, set[str]] = {}
    for binding in _states(plan, BINDING):
        bindings.setdefault(_cluster(binding), set()).add(binding["urn"])
    tenants = [
        n for n in _states(plan, NAMESPACE) if TENANT_LABEL in n["inputs"]["metadata"].get("labels", {})
    ]
    assert len(tenants) >= len(bindings), f"{stack}: tenant namespaces: {[n['urn'] for n in tenants]}"
    for namespace in tenants:
        missing = bindings[_cluster(namespace)] - set(namespace.get("dependencies") or ())
        assert not missing, f"{stack}: {namespace['urn']} may exist before {missing}"


@pytest.mark.parametrize("stack", PLATFORMS)
def test_only_the_tenant_namespaces_are_judged(plans: dict[str, Plan], stack: str) -> None:
    """The platform's own namespaces (mesh, monitoring, add-ons) run third-party pods the policies were not
    written for; they carry no tenant label, so no binding selects them."""
    namespaces = _states(plans[f"{stack}.platform"], NAMESPACE)
    labelled = {n["urn"] for n in namespaces if TENANT_LABEL in n["inputs"]["metadata"].get("labels", {})}
    tenancies = {n["urn"] for n in namespaces if "model-serving:tenancy:Tenancy$" in n["urn"]}
    assert tenancies, f"{stack}: no Tenancy namespace"
    assert labelled == tenancies, f"{stack}: labelled {sorted(labelled)} vs Tenancy's {sorted(tenancies)}"
