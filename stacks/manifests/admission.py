"""Admission in the cluster: ValidatingAdmissionPolicies (CEL, run by the API server itself) that refuse in
the tenants' namespaces what the workload rules of the policy gate deny (policies/workloads/pods.rego).

Why both: the gate judges what the platform layer plans; a tenant's deployer group may create Deployments
in its namespace directly (stacks.manifests.tenancy), which no plan ever shows. The API server refuses
those with the same rule ids as the gate, so a refusal points to the same rule and remediation.

What is judged: Pods (and a debug container added to one), and the pod templates of Deployments,
ReplicaSets, StatefulSets, DaemonSets, Jobs and CronJobs, on create and update. A template is judged before
the mesh injects its sidecar, a Pod after: the Istio proxy and its CNI validation container run as uid
1337, non-root, without privilege, from the proxy image in the cluster's registry by digest
(stacks.manifests.mesh.istiod_values), so they pass like the platform's own containers. Every container
counts: init containers (native sidecars included) and ephemeral ones as well as the main ones.

One policy per shape of object (a Pod's spec, a template's, a CronJob's job template's), so each
expression type-checks against the real schema of every kind it matches (the API server reports
mismatches in the policy's status). The approved registry is baked into each policy as a string literal
(built inside `Output.apply` on EKS, where it is an output of the infra layer), checked here first so the
literal cannot break the expression.
"""

import json
import re
from dataclasses import dataclass

from stacks.manifests import Manifest, metadata
from stacks.manifests.tenancy import TENANT_LABEL

API_VERSION = "admissionregistration.k8s.io/v1"
NAME = "model-serving-workloads"
"""Prefix of every policy's and binding's name."""
REASON = "Forbidden"
"""The status reason of a refusal (HTTP 403): a policy's refusal, not a malformed object (422)."""
_REGISTRY = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*")
_OPERATIONS = ["CREATE", "UPDATE"]


@dataclass(frozen=True)
class Shape:
    """A family of objects whose pod spec sits at one path."""

    name: str
    """Suffix of the policy's name."""
    rules: tuple[tuple[str, tuple[str, ...]], ...]
    """(API group, resources) matched."""
    pod_spec: str
    """CEL path from `object` to the pod spec."""


SHAPES = (
    Shape("pods", (("", ("pods", "pods/ephemeralcontainers")),), "object.spec"),
    Shape(
        "templates",
        (("apps", ("deployments", "replicasets", "statefulsets", "daemonsets")), ("batch", ("jobs",))),
        "object.spec.template.spec",
    ),
    Shape("cronjobs", (("batch", ("cronjobs",)),), "object.spec.jobTemplate.spec.template.spec"),
)

# The security context a container runs with: its own field, else the pod's (as in pods.rego `setting`).
_NON_ROOT = "c.?securityContext.?runAsNonRoot.orValue(variables.podNonRoot)"
_USER = "c.?securityContext.?runAsUser.orValue(variables.podUser)"
_VARIABLES = (
    ("containers", "{spec}.?initContainers.orValue([]) + {spec}.containers"),
    ("ephemeral", "{spec}.?ephemeralContainers.orValue([])"),
    ("podNonRoot", "{spec}.?securityContext.?runAsNonRoot.orValue(false)"),
    ("podUser", "{spec}.?securityContext.?runAsUser.orValue(-1)"),
    (
        "subject",
        "object.kind + ' ' + object.metadata.?name.orValue(object.metadata.?generateName.orValue(''))",
    ),
    (
        "hostNamespaces",
        "({spec}.?hostNetwork.orValue(false) ? ['hostNetwork'] : [])"
        " + ({spec}.?hostPID.orValue(false) ? ['hostPID'] : [])"
        " + ({spec}.?hostIPC.orValue(false) ? ['hostIPC'] : [])",
    ),
)


@dataclass(frozen=True)
class Rule:
    """One refusal: the gate's rule id, which containers break it (a CEL predicate on `c`), and why."""

    rule_id: str
    breaks: str
    what: str
    remediation: str


RULES = (
    Rule(
        "WL-001",
        f"!({_NON_ROOT} == true && {_USER} != 0)",
        "may run as root",
        "set securityContext.runAsNonRoot true and runAsUser to the image's non-zero user",
    ),
    Rule(
        "WL-003",
        "c.?securityContext.?allowPrivilegeEscalation.orValue(true) != false"
        " || c.?securityContext.?privileged.orValue(false) == true",
        "may escalate privileges (allowPrivilegeEscalation not false, or privileged)",
        "set securityContext.allowPrivilegeEscalation false and drop privileged",
    ),
    Rule(
        "WL-007",
        "!c.?image.orValue('').matches('@sha256:[a-f0-9]{64}$')",
        "use an image not pinned by digest",
        "pin the image by its digest (name@sha256:<digest>)",
    ),
    Rule(
        "WL-008",
        "!c.?image.orValue('').startsWith(variables.registry + '/')",
        "use an image from outside the approved registry {registry}",
        "push the image to {registry} and reference it there",
    ),
)
HOST_NAMESPACES_ID = "WL-009"
"""The gate's rule for host namespaces (pods.rego): judged on the pod, not on a container."""


def check_registry(registry: str) -> str:
    """The registry location (a host, or a host and a path prefix), or ValueError naming what is wrong."""
    if not _REGISTRY.fullmatch(registry):
        raise ValueError(
            f"admission: registry {registry!r} is not a registry location (host[:port][/path], lower case); "
            "set the stack's registry"
        )
    return registry


def _cel(text: str) -> str:
    """A CEL string literal: JSON's escapes (quotes, backslashes, \\uXXXX) are a subset of CEL's."""
    return json.dumps(text)


def _breaking(rule: Rule) -> str:
    """CEL: the names of the containers (main, init and ephemeral) that break `rule`."""
    return " + ".join(
        f"variables.{group}.filter(c, {rule.breaks}).map(c, c.name)" for group in ("containers", "ephemeral")
    )


def _validation(rule: Rule, registry: str) -> Manifest:
    variable = f"variables.{rule.rule_id.replace('-', '')}"
    tail = f" {rule.what}; {rule.remediation}".format(registry=registry)
    return {
        "expression": f"size({variable}) == 0",
        "messageExpression": f"{_cel(rule.rule_id + ': ')} + variables.subject + ': container(s) '"
        f" + {variable}.join(', ') + {_cel(tail)}",
        "message": f"{rule.rule_id}: a container{tail}",
        "reason": REASON,
    }


def _host_validation() -> Manifest:
    remedy = "remove hostNetwork, hostPID and hostIPC from the pod spec"
    return {
        "expression": "size(variables.hostNamespaces) == 0",
        "messageExpression": f"{_cel(HOST_NAMESPACES_ID + ': ')} + variables.subject"
        f" + ' shares the host namespaces ' + variables.hostNamespaces.join(', ') + {_cel('; ' + remedy)}",
        "message": f"{HOST_NAMESPACES_ID}: the pod shares a host namespace; {remedy}",
        "reason": REASON,
    }


def policy_metadata(shape: Shape) -> Manifest:
    """A policy's metadata, which does not depend on the registry (known in a preview on EKS too)."""
    return metadata(f"{NAME}-{shape.name}")


def policy(shape: Shape, registry: str) -> Manifest:
    """The ValidatingAdmissionPolicy for one shape of object, with `registry` as the approved location."""
    check_registry(registry)
    variables = [{"name": "registry", "expression": _cel(registry)}]
    variables += [{"name": n, "expression": e.format(spec=shape.pod_spec)} for n, e in _VARIABLES]
    variables += [{"name": r.rule_id.replace("-", ""), "expression": _breaking(r)} for r in RULES]
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": policy_metadata(shape),
        "spec": {
            # An expression that cannot be evaluated refuses the object: fail closed, like the gate.
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": ["v1"],
                        "operations": list(_OPERATIONS),
                        "resources": list(resources),
                    }
                    for group, resources in shape.rules
                ]
            },
            "variables": variables,
            "validations": [*(_validation(r, registry) for r in RULES), _host_validation()],
        },
    }


def binding(shape: Shape) -> Manifest:
    """Binds a shape's policy, refusing, to every tenant namespace (by the label Tenancy sets)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": metadata(f"{NAME}-{shape.name}"),
        "spec": {
            "policyName": f"{NAME}-{shape.name}",
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchExpressions": [{"key": TENANT_LABEL, "operator": "Exists"}]}
            },
        },
    }


def rule_ids() -> list[str]:
    """Every rule id a policy may refuse with, in the order of its validations."""
    return [*(r.rule_id for r in RULES), HOST_NAMESPACES_ID]
