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
