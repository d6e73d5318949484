"""Pure builders of Kubernetes manifests and Helm values: plain dicts, testable without Pulumi."""

from typing import Any

Manifest = dict[str, Any]
"""A Kubernetes object as `kubectl apply` takes it (camelCase keys)."""


def metadata(name: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Object metadata with the labels every object of the project carries."""
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/part-of": "model-serving", "app.kubernetes.io/managed-by": "pulumi"}
        | (labels or {}),
    }
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def namespace_peer(namespace: str) -> dict[str, Any]:
    """A NetworkPolicy peer: every pod of one namespace (by the label Kubernetes sets on namespaces)."""
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def policy_ports(*numbers: int, protocol: str = "TCP") -> list[dict[str, Any]]:
    """NetworkPolicy ports: each number on one protocol."""
    return [{"protocol": protocol, "port": n} for n in numbers]
