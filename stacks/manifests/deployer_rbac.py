"""The platform layer's deployer identity: a least-privilege ClusterRole and its binding to one group.

Why a role of its own: on EKS the deploy role is a cluster admin through an access entry, and on premises
whoever the kubeconfig names deploys, usually an admin too. The platform layer needs far less: the kinds of
its plan, each with the verbs the Kubernetes provider uses, and nothing it does not create. So:

- Every kind the platform plans create is granted cluster-wide (`MANAGED`); a new kind in a stack fails the
  test that derives the kinds from the plans (tests/stacks/manifests/test_deployer_rbac.py).
- Namespaces: created and read freely, but changed or deleted only by name (the plan's own), so the deployer
  cannot delete `kube-system` or a namespace another team owns.
- Secrets: `create` (which reveals nothing and cannot be limited by name) and every other verb only on the
  names of the Secrets the plan creates: no Secret can be listed or read cluster-wide.
- No `escalate`, `bind` or `impersonate`, and no ClusterRoles: the Roles the plan creates may only grant what
  the deployer holds itself (`FOR_ROLES`), which the API server checks on every Role it is asked to store.

What the role does not cover is a HOLD (`holds`): the Helm releases (their charts' ClusterRoles, CRDs and
webhooks are not in this tree to derive grants from, and Helm keeps its release records as Secrets it lists),
which are the add-ons a cluster admin deploys (`servectl deploy --addons`, servectl/deploy/addons.py), and
any Role of the plan granting more than the deployer holds.
"""

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import yaml

from stacks.manifests import Manifest, metadata

NAME = "model-serving:platform-deployer"
"""The ClusterRole's and ClusterRoleBinding's name."""
GROUP = "model-serving:platform-deployer"
"""The group the deployer identity is in (EKS: the access entry's Kubernetes group; on premises: the
certificate's organisation or the identity provider's group)."""
RBAC = "rbac.authorization.k8s.io"
READ = ("get", "list", "watch")
CHANGE = ("update", "patch", "delete")
MANAGE = ("create", *READ, *CHANGE)
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"

MANAGED: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "",
        (
            "configmaps",
            "limitranges",
            "persistentvolumeclaims",
            "resourcequotas",
            "serviceaccounts",
            "services",
        ),
    ),
    ("apps", ("deployments",)),
    ("autoscaling", ("horizontalpodautoscalers",)),
    ("batch", ("cronjobs",)),
    ("policy", ("poddisruptionbudgets",)),
    ("networking.k8s.io", ("networkpolicies",)),
    ("storage.k8s.io", ("storageclasses",)),
    ("admissionregistration.k8s.io", ("validatingadmissionpolicies", "validatingadmissionpolicybindings")),
    (RBAC, ("roles", "rolebindings")),
    ("cert-manager.io", ("certificates", "clusterissuers")),
    ("monitoring.coreos.com", ("podmonitors", "prometheusrules", "servicemonitors")),
    (
        "networking.istio.io",
        ("destinationrules", "envoyfilters", "gateways", "serviceentries", "virtualservices"),
    ),
    ("security.istio.io", ("authorizationpolicies", "peerauthentications", "requestauthentications")),
    ("telemetry.istio.io", ("telemetries",)),
    ("elbv2.k8s.aws", ("targetgroupbindings",)),
    ("external-secrets.io", ("clustersecretstores", "externalsecrets")),
    ("keda.sh", ("scaledobjects", "triggerauthentications")),
)
"""(API group, resources) of every kind the platform plans create, besides namespaces and Secrets."""

FOR_ROLES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": list(READ)},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
)
"""What the plan's Roles grant beyond `MANAGED` (the tenant roles read pods and logs; the rollout controller
records events): without `escalate`, the API server stores a Role only if its creator holds all it grants."""

AWAIT_READS: tuple[dict[str, Any], ...] = (
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": list(READ)},
    {"apiGroups": [""], "resources": ["endpoints"], "verbs": list(READ)},
)
"""What the Kubernetes provider watches while it waits for a Deployment (its ReplicaSets and Pods) or a
Service (its Endpoints) to be ready."""


@dataclass(frozen=True)
class Planned:
    """One Kubernetes object of a plan: its API group, resource (plural), name and namespace."""

    group: str
    resource: str
    name: str
    namespace: str | None
    inputs: dict[str, Any]


def resource_of(type_token: str) -> tuple[str, str]:
    """The API group and plural resource of a Pulumi Kubernetes type token
    (`kubernetes:networking.istio.io/v1:VirtualService` -> `networking.istio.io`, `virtualservices`)."""
    _, api_version, kind = type_token.split(":")
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        plural = lower[:-1] + "ies"
    elif lower.endswith("s"):
        plural = lower + "es"
    else:
        plural = lower + "s"
    return ("" if group == "core" else group), plural


def planned(document: dict[str, Any]) -> list[Planned]:
    """The Kubernetes objects a preview document creates, Helm releases and providers aside."""
    out = []
    for step in document["steps"]:
        state = step["newState"]
        token, inputs = state["type"], state.get("inputs") or {}
        if not token.startswith("kubernetes:") or token == HELM_RELEASE:
            continue
        meta = inputs.get("metadata") or {}
        group, resource = resource_of(token)
        out.append(Planned(group, resource, str(meta.get("name", "")), meta.get("namespace"), inputs))
    return out


def helm_charts(document: dict[str, Any]) -> list[str]:
    """The chart (last path part of its OCI reference) of each Helm release a preview document creates."""
    return [
        str(step["newState"]["inputs"]["chart"]).rsplit("/", 1)[-1]
        for step in document["steps"]
        if step["newState"]["type"] == HELM_RELEASE
    ]


def _names(objects: Iterable[Planned], resource: str) -> list[str]:
    return sorted({o.name for o in objects if o.group == "" and o.resource == resource})


def rules(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The deployer's rules for one plan: `MANAGED`, namespaces and Secrets by the plan's names, and what
    the plan's Roles and the provider's waits need."""
    objects = planned(document)
    namespaces, secrets = _names(objects, "namespaces"), _names(objects, "secrets")
    out: list[dict[str, Any]] = [
        {"apiGroups": [group], "resources": list(resources), "verbs": list(MANAGE)}
        for group, resources in MANAGED
    ]
    out.append({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create", *READ]})
    if namespaces:
        out.append({"apiGroups": [""], "resources": ["namespaces"], "resourceNames": namespaces,
                    "verbs": list(CHANGE)})  # fmt: skip
    out.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]})
    if secrets:
        out.append({"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets,
                    "verbs": [*READ, *CHANGE]})  # fmt: skip
    return [*out, *FOR_ROLES, *AWAIT_READS]


def cluster_role(document: dict[str, Any]) -> Manifest:
    """The deployer's ClusterRole for one plan."""
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": metadata(NAME),
        "rules": rules(document),
    }


def cluster_role_binding(group: str = GROUP) -> Manifest:
    """Binds the ClusterRole to the deployer's group."""
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": metadata(NAME),
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": NAME},
        "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": group}],
    }


def allows(granted: Sequence[dict[str, Any]], group: str, resource: str, verb: str, name: str = "") -> bool:
    """Whether `granted` allows one request, matched as RBAC matches it (`*` included; a rule with
    resourceNames never matches a request without a name)."""

    def hit(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    for rule in granted:
        names = rule.get("resourceNames") or []
        if (
            hit(rule.get("apiGroups", []), group)
            and hit(rule.get("resources", []), resource)
            and hit(rule.get("verbs", []), verb)
            and (not names or name in names)
        ):
            return True
    return False


def uncovered(granted: Sequence[dict[str, Any]], role_rules: Sequence[dict[str, Any]]) -> list[str]:
    """What `role_rules` grant that `granted` does not, as `verb group/resource[/name]` (RBAC's escalation
    check: a creator without `escalate` must hold every one)."""
    missing = []
    for rule in role_rules:
        requests = product(
            rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", []),
            rule.get("resourceNames") or [""],
        )  # fmt: skip
        for group, resource, verb, name in requests:
            if not allows(granted, group, resource, verb, name):
                missing.append(f"{verb} {group or 'core'}/{resource}" + (f"/{name}" if name else ""))
    return missing


def holds(document: dict[str, Any]) -> list[str]:
    """Why the deployer role alone cannot deploy this plan, one reason a line (empty: it can)."""
    granted, out = rules(document), []
    for chart in helm_charts(document):
        out.append(
            f"Helm release of chart {chart}: its ClusterRoles, CRDs and webhooks are not in this tree to "
            "derive grants from, and Helm lists its release Secrets; an add-on, which a cluster admin "
            "deploys (servectl deploy --addons)"
        )
    for obj in planned(document):
        if not allows(granted, obj.group, obj.resource, "create"):
            out.append(
                f"{obj.group or 'core'}/{obj.resource} {obj.name}: kind not granted (add it to MANAGED)"
            )
        if obj.group == RBAC and obj.resource in ("roles", "clusterroles"):
            missing = uncovered(granted, obj.inputs.get("rules") or [])
            if missing:
                out.append(
                    f"{obj.resource} {obj.name} grants what the deployer does not hold: {', '.join(missing)}"
                )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m stacks.manifests.deployer_rbac --stack S`: the ClusterRole and binding for S's platform
    plan as YAML on stdout, for a cluster admin to apply before the first deploy; HOLDs on stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m stacks.manifests.deployer_rbac", description=main.__doc__
    )
    parser.add_argument("--stack", required=True, help="a stack with a platform layer (Pulumi.S.yaml)")
    parser.add_argument("--group", default=GROUP, help=f"the deployer's group (default {GROUP})")
    args = parser.parse_args(argv)
    from stacks.preview.run import plan_stack, stack_names  # the offline planner, only for the command

    if args.stack not in stack_names():
        print(f"deployer_rbac: no stack file Pulumi.{args.stack}.yaml; stacks: {', '.join(stack_names())}",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        document = plan_stack(args.stack, layer="platform").document
    except (FileNotFoundError, ValueError) as exc:
        print(f"deployer_rbac: {exc}", file=sys.stderr)
        return 1
    print(
        yaml.safe_dump_all([cluster_role(document), cluster_role_binding(args.group)], sort_keys=False),
        end="",
    )
    for reason in holds(document):
        print(f"HOLD: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
