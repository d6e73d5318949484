"""The cluster add-ons of a platform stack, and who deploys what.

A platform stack's Helm releases (Istio, kube-prometheus-stack, cert-manager, the autoscalers, KEDA,
External Secrets, the log and trace collectors) bring ClusterRoles, CRDs and webhooks, and Helm keeps its
release records as Secrets it lists: what the platform deployer's role (stacks/manifests/deployer_rbac.py)
does not and should not hold. So the add-ons are a cluster admin's, deployed with
`servectl deploy --addons` once and again when a chart or its values change; everything else (the first
install of the rest, every update, the destroy of the rest) runs as the deployer.

The add-ons are the releases with everything they need, as the engine sees it: each release's
dependencies, its parents up to the stack, and its provider, transitively (`closure`). One state holds
both parts: the admin's run targets the add-ons (`pulumi up --target`), the deployer's destroy everything
but them. A deployer's run whose preview would change an add-on stops before it changes anything
(`changed_addons`), naming the releases, rather than failing half-way on a refused ClusterRole.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from stacks.manifests import deployer_rbac
from stacks.manifests.deployer_rbac import HELM_RELEASE

UNCHANGED = ("same", "read", "refresh")
"""Preview step operations that change nothing."""


def provider_urn(reference: str) -> str:
    """The URN of a provider reference (`URN::ID`)."""
    return reference.rsplit("::", 1)[0]


def closure(resources: Iterable[dict[str, Any]]) -> set[str]:
    """The URNs of the Helm releases among `resources` (states from a preview's steps or a stack export)
    and of everything they need: dependencies, parents and providers, transitively."""
    by_urn = {r["urn"]: r for r in resources}
    todo = [urn for urn, r in by_urn.items() if r.get("type") == HELM_RELEASE]
    found: set[str] = set()
    while todo:
        urn = todo.pop()
        if urn in found or urn not in by_urn:
            continue
        found.add(urn)
        state = by_urn[urn]
        todo.extend(state.get("dependencies") or [])
        if state.get("parent"):
            todo.append(state["parent"])
        if state.get("provider"):
            todo.append(provider_urn(state["provider"]))
    return found


def planned_states(preview: dict[str, Any]) -> list[dict[str, Any]]:
    """The state each step of a preview document leads to (a delete's: the state it removes)."""
    return [s.get("newState") or s.get("oldState") or {"urn": s["urn"]} for s in preview.get("steps", [])]


def changed_addons(preview: dict[str, Any]) -> list[str]:
    """`op name` of every Helm release the preview would change; empty when the add-ons are as the stack
    says."""
    changed = []
    for step in preview.get("steps", []):
        state = step.get("newState") or step.get("oldState") or {}
        if state.get("type") == HELM_RELEASE and step.get("op") not in UNCHANGED:
            changed.append(f"{step['op']} {step['urn'].rsplit('::', 1)[-1]}")
    return changed


def deployer_part(exported: Mapping[str, Any]) -> list[str]:
    """The URNs of a stack export (`deployment`) the deployer destroys: all but the add-ons, the stack and
    the providers (which the add-ons left behind still need)."""
    resources = exported.get("resources") or []
    keep = closure(resources)
    return [
        r["urn"]
        for r in resources
        if r["urn"] not in keep
        and not str(r.get("type", "")).startswith(("pulumi:pulumi:", "pulumi:providers:"))
    ]


def deployer_rbac_yaml(preview: dict[str, Any]) -> str:
    """The deployer's ClusterRole for the previewed plan and its binding, as YAML for the admin to apply."""
    documents = [deployer_rbac.cluster_role(preview), deployer_rbac.cluster_role_binding()]
    return yaml.safe_dump_all(documents, sort_keys=False)
