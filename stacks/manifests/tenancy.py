"""A tenant's namespace: quota, default limits, default-deny networking and two roles bound to IdP groups."""

from typing import Any

from stacks.manifests import Manifest, metadata
from stacks.settings import TenantConfig

DEPLOYER_ROLE = "model-deployer"
VIEWER_ROLE = "viewer"
# What a deployer manages in its namespace: the serving objects, nothing cluster-wide, no secrets or RBAC.
SERVING_RESOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("apps", ("deployments",)),
    ("", ("services", "configmaps", "serviceaccounts")),
    ("autoscaling", ("horizontalpodautoscalers",)),
    ("policy", ("poddisruptionbudgets",)),
    ("networking.istio.io", ("virtualservices", "destinationrules")),
)
TENANT_LABEL = "tenant"
"""The namespace label naming the tenant: the cluster's admission policies judge every namespace with it."""
READ_VERBS = ["get", "list", "watch"]
WRITE_VERBS = ["create", "update", "patch", "delete"]


def namespace(tenant: TenantConfig) -> Manifest:
    """The namespace, in the mesh; baseline pod security enforced (Istio CNI means no NET_ADMIN init),
    restricted
    warned, which the serving pods already meet."""
    labels = {
        TENANT_LABEL: tenant.name,
        "istio-injection": "enabled",
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(tenant.name, labels=labels)}


def resource_quota(tenant: TenantConfig) -> Manifest:
    """The tenant's share of the cluster."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata("tenant-quota", tenant.name),
        "spec": {
            "hard": {
                "requests.cpu": tenant.cpu,
                "limits.cpu": tenant.cpu,
                "requests.memory": tenant.memory,
                "limits.memory": tenant.memory,
                "pods": str(tenant.pods),
                "services.loadbalancers": "0",
                "services.nodeports": "0",
            }
        },
    }


def limit_range(tenant: TenantConfig) -> Manifest:
    """Defaults for containers that name no resources, so the quota can always be enforced."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata("tenant-defaults", tenant.name),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "500m", "memory": "512Mi"},
                    "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                    "max": {"cpu": "8", "memory": "32Gi"},
                }
            ]
        },
    }


def default_deny(tenant: TenantConfig) -> Manifest:
    """No traffic in or out of any pod unless another policy opens it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata("default-deny", tenant.name),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def _rules(verbs: list[str]) -> list[dict[str, Any]]:
    return [
        {"apiGroups": [group], "resources": list(res), "verbs": verbs} for group, res in SERVING_RESOURCES
    ]


def roles(tenant: TenantConfig) -> list[Manifest]:
    """`model-deployer` manages the serving objects; `viewer` reads them and the pods' logs."""
    pods = {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": READ_VERBS}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(DEPLOYER_ROLE, tenant.name),
            "rules": [*_rules(READ_VERBS + WRITE_VERBS), pods],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(VIEWER_ROLE, tenant.name),
            "rules": [*_rules(READ_VERBS), pods],
        },
    ]


def role_bindings(tenant: TenantConfig, group_prefix: str) -> list[Manifest]:
    """Bind each role to the tenant's identity-provider groups (as EKS names them, with its prefix)."""
    out = []
    for role, groups in ((DEPLOYER_ROLE, tenant.deployer_groups), (VIEWER_ROLE, tenant.viewer_groups)):
        if not groups:
            continue
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": metadata(role, tenant.name),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": f"{group_prefix}{g}"}
                    for g in groups
                ],
            }
        )
    return out
