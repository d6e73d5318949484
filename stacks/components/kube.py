"""Turns a manifest dict into the typed pulumi-kubernetes resource of its kind.

Manifests come from the pure builders in `stacks.manifests`; this is the one place that maps a kind to a
class, so
a kind without a mapping fails loudly instead of silently becoming an untyped resource.
"""

from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from stacks.manifests import Manifest

_Factory = Callable[[str, Manifest, pulumi.ResourceOptions], pulumi.CustomResource]

_BUILTIN: dict[str, _Factory] = {
    "v1/Namespace": lambda n, m, o: k8s.core.v1.Namespace(n, metadata=m["metadata"], opts=o),
    "v1/ServiceAccount": lambda n, m, o: k8s.core.v1.ServiceAccount(n, metadata=m["metadata"], opts=o),
    "v1/Service": lambda n, m, o: k8s.core.v1.Service(n, metadata=m["metadata"], spec=m["spec"], opts=o),
    "v1/PersistentVolumeClaim": lambda n, m, o: k8s.core.v1.PersistentVolumeClaim(
        n, metadata=m["metadata"], spec=m["spec"], opts=o
    ),
    "v1/ConfigMap": lambda n, m, o: k8s.core.v1.ConfigMap(n, metadata=m["metadata"], data=m["data"], opts=o),
    "v1/ResourceQuota": lambda n, m, o: k8s.core.v1.ResourceQuota(
        n, metadata=m["metadata"], spec=m["spec"], opts=o
    ),
    "v1/LimitRange": lambda n, m, o: k8s.core.v1.LimitRange(
        n, metadata=m["metadata"], spec=m["spec"], opts=o
    ),
    "apps/v1/Deployment": lambda n, m, o: k8s.apps.v1.Deployment(
        n, metadata=m["metadata"], spec=m["spec"], opts=o
    ),
    "batch/v1/CronJob": lambda n, m, o: k8s.batch.v1.CronJob(
        n, metadata=m["metadata"], spec=m["spec"], opts=o
    ),
    "autoscaling/v2/HorizontalPodAutoscaler": lambda n, m, o: k8s.autoscaling.v2.HorizontalPodAutoscaler(
        n, metadata=m["metadata"], spec=m["spec"], opts=o
    ),
    "policy/v1/PodDisruptionBudget": lambda n, m, o: k8s.policy.v1.PodDisruptionBudget(
        n, metadata=m["metadata"], spec=m["spec"], opts=o
    ),
    "networking.k8s.io/v1/NetworkPolicy": lambda n, m, o: k8s.networking.v1.NetworkPolicy(
        n, metadata=m["metadata"], spec=m["spec"], opts=o
    ),
    "rbac.authorization.k8s.io/v1/Role": lambda n, m, o: k8s.rbac.v1.Role(
        n, metadata=m["metadata"], rules=m["rules"], opts=o
    ),
    "rbac.authorization.k8s.io/v1/RoleBinding": lambda n, m, o: k8s.rbac.v1.RoleBinding(
        n, metadata=m["metadata"], role_ref=m["roleRef"], subjects=m["subjects"], opts=o
    ),
    "rbac.authorization.k8s.io/v1/ClusterRole": lambda n, m, o: k8s.rbac.v1.ClusterRole(
        n, metadata=m["metadata"], rules=m["rules"], opts=o
    ),
    "rbac.authorization.k8s.io/v1/ClusterRoleBinding": lambda n, m, o: k8s.rbac.v1.ClusterRoleBinding(
        n, metadata=m["metadata"], role_ref=m["roleRef"], subjects=m["subjects"], opts=o
    ),
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy": lambda n, m, o: (
        k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
            n, metadata=m["metadata"], spec=m["spec"], opts=o
        )
    ),
    "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding": lambda n, m, o: (
        k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
            n, metadata=m["metadata"], spec=m["spec"], opts=o
        )
    ),
    "v1/Secret": lambda n, m, o: k8s.core.v1.Secret(
        n, metadata=m["metadata"], type=m.get("type"), string_data=m.get("stringData"), opts=o
    ),
    "storage.k8s.io/v1/StorageClass": lambda n, m, o: k8s.storage.v1.StorageClass(
        n,
        metadata=m["metadata"],
        provisioner=m["provisioner"],
        parameters=m["parameters"],
        reclaim_policy=m["reclaimPolicy"],
        volume_binding_mode=m["volumeBindingMode"],
        allow_volume_expansion=m["allowVolumeExpansion"],
        opts=o,
    ),
}
_CUSTOM_GROUPS = (
    "networking.istio.io/",
    "security.istio.io/",
    "telemetry.istio.io/",
    "monitoring.coreos.com/",
    "cert-manager.io/",
    "elbv2.k8s.aws/",
    "keda.sh/",
    "external-secrets.io/",
)


def create(name: str, manifest: Manifest, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """Create the resource for `manifest` under the logical name `name`."""
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    factory = _BUILTIN.get(f"{api_version}/{kind}")
    if factory is not None:
        return factory(name, manifest, opts)
    if api_version.startswith(_CUSTOM_GROUPS):
        extra: dict[str, Any] = {
            k: v for k, v in manifest.items() if k not in {"apiVersion", "kind", "metadata"}
        }
        return k8s.apiextensions.CustomResource(
            name, api_version=api_version, kind=kind, metadata=manifest["metadata"], opts=opts, **extra
        )
    raise ValueError(f"no resource class for {api_version} {kind}; add it to stacks.components.kube")
