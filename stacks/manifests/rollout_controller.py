"""The rollout controller of one model: `servectl experiment controller` as a one-replica Deployment in the
model's namespace, stepping the model's VirtualService on the rollout's interval (issue 14 point 8).

Image: the retrain image (serving_image/Dockerfile's `retrain` target). It is the one that has `servectl`
with everything the experiments code imports (scipy through the training extras, the Pulumi SDK for
`stacks.config`); the serving image carries the server's dependencies only.

Identity: a ServiceAccount bound to a Role that allows `get` and `patch` on the model's VirtualService
(by resourceNames) and `create` on Events, nothing else. It needs no AWS identity: Prometheus is the
cluster's own (kube-prometheus-stack in `monitoring`), reached over the network the NetworkPolicy opens,
and the experiment log is on a volume.

The experiment log is on a PersistentVolumeClaim per model (`<model>-rollout-log`, Retain reclaim policy
through the encrypted StorageClass): it survives pod restarts and rescheduling, stays in the cluster's
region, and needs no widening of any IAM role (the model's IRSA role reads its prefix only, by design).
A compliance reviewer reads it with `kubectl exec deploy/<model>-rollout-controller -- cat` or `kubectl cp`,
under the tenant's viewer and deployer roles; the Events and `serving_experiment_decisions_total` carry
each decision too, but expire or aggregate, so the file is the record. A ConfigMap was rejected: 1 MiB
holds a few hundred analyses, and writing it would need RBAC beyond the one VirtualService.

No sidecar: the pod serves no mesh traffic and its peers (the API server, Prometheus) are outside the mesh,
so `sidecar.istio.io/inject: "false"` keeps the pod's start and its API calls free of proxy ordering.
"""

from dataclasses import dataclass
from typing import Any

from stacks.manifests import Manifest, metadata, namespace_peer, policy_ports
from stacks.manifests.monitoring import NAMESPACE as MONITORING_NAMESPACE
from stacks.manifests.serving import RUN_AS_USER, restricted_security_context
from stacks.settings import ModelConfig

CONTROLLER_OWNS = ("spec.http",)
"""The VirtualService fields Pulumi sets at creation and then leaves to the controller (`ignore_changes`):
the routes, because a step changes the weighted split and, for a sticky model, the bucket routes (their
number too), which no index-based path into the list can follow. Pulumi then never resets a rollout; a
change to the model's routes (a new version, a header route) is made by removing the model's rollout block
(the controller goes, Pulumi writes the stack file's routes and weights), then adding it back."""
METRICS_PORT = 9102
PROMETHEUS_URL = f"http://kube-prometheus-stack-prometheus.{MONITORING_NAMESPACE}.svc:9090"
"""The kube-prometheus-stack release's Prometheus Service (the release is named after the chart)."""
PROMETHEUS_PORT = 9090
LOG_DIR = "/var/lib/experiments"
TMP_DIR = "/tmp"  # noqa: S108 - an emptyDir mounted there, the root filesystem being read-only
CPU = "250m"
MEMORY = "512Mi"
"""Requests and limits (equal, so the tenant quota counts them exactly, see `stacks.config`)."""


@dataclass(frozen=True, kw_only=True)
class ControllerSpec:
    """What one model's controller objects are built from."""

    model: ModelConfig
    """The model; it must have a rollout block."""
    image: str
    """The retrain image, by digest."""
    storage_class: str
    """StorageClass of the log volume."""


def name(model: ModelConfig) -> str:
    """The objects' name."""
    return f"{model.name}-rollout-controller"


def labels(model: ModelConfig) -> dict[str, str]:
    """Pod labels, distinct from the serving pods' (their selectors must not pick the controller up)."""
    return {"app": name(model), "app.kubernetes.io/name": name(model), "model": model.name}


def service_account(model: ModelConfig) -> Manifest:
    """Its identity; the Role below is its only permission."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(name(model), model.tenant, labels(model)),
    }


def role(model: ModelConfig) -> Manifest:
    """Read and patch the model's VirtualService, by name; create Events. Nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(name(model), model.tenant, labels(model)),
        "rules": [
            {
                "apiGroups": ["networking.istio.io"],
                "resources": ["virtualservices"],
                "resourceNames": [model.name],
                "verbs": ["get", "patch"],
            },
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        ],
    }


def role_binding(model: ModelConfig) -> Manifest:
    """The Role, to the controller's ServiceAccount only."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(name(model), model.tenant, labels(model)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name(model)},
        "subjects": [{"kind": "ServiceAccount", "name": name(model), "namespace": model.tenant}],
    }


def log_volume(spec: ControllerSpec) -> Manifest:
    """The experiment log's claim: JSON lines, a few kB per analysis."""
    model = spec.model
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(f"{model.name}-rollout-log", model.tenant, labels(model)),
        "spec": {
            "storageClassName": spec.storage_class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def command(model: ModelConfig) -> list[str]:
    """`servectl experiment controller` with the stack's rollout block as its schedule."""
    rollout = model.rollout
    if rollout is None:
        raise ValueError(f"model {model.name} has no rollout block: it gets no controller")
    return [
        "servectl", "experiment", "controller",
        "--model", model.name,
        "--prometheus", PROMETHEUS_URL,
        "--virtual-service", f"{model.tenant}/{model.name}",
        "--log", f"{LOG_DIR}/{model.name}.jsonl",
        "--steps", ",".join(str(s) for s in rollout.steps),
        "--min-samples", str(rollout.min_samples),
        "--failed-checks", str(rollout.failed_checks),
        "--interval", str(rollout.interval_seconds),
        "--settle-seconds", str(rollout.settle_seconds),
        "--holdback-percent", str(rollout.holdback_percent),
        "--guard-seconds", str(rollout.guard_seconds),
        *(arg for metric in rollout.optional_metrics for arg in ("--optional-metric", metric)),
        "--metrics-host", "0.0.0.0",  # noqa: S104 - the pod's own address; the NetworkPolicy admits Prometheus only
        "--metrics-port", str(METRICS_PORT),
    ]  # fmt: skip


def _container(spec: ControllerSpec) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 20, "failureThreshold": 3}
    return {
        "name": "controller",
        "image": spec.image,
        "command": command(spec.model),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "HOME", "value": TMP_DIR},
            {"name": "TMPDIR", "value": TMP_DIR},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "resources": {"requests": {"cpu": CPU, "memory": MEMORY}, "limits": {"cpu": CPU, "memory": MEMORY}},
        "livenessProbe": probe,
        "readinessProbe": probe,
        "securityContext": restricted_security_context(),
        "volumeMounts": [{"name": "log", "mountPath": LOG_DIR}, {"name": "tmp", "mountPath": TMP_DIR}],
    }


def deployment(spec: ControllerSpec) -> Manifest:
    """One replica, replaced not rolled: two controllers would both step the rollout, and the log volume
    is ReadWriteOnce."""
    model = spec.model
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name(model), model.tenant, labels(model)),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels(model)},
            "template": {
                "metadata": {"labels": labels(model), "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": {
                    "serviceAccountName": name(model),
                    # It calls the API server with this token (the Role above is all it grants).
                    "automountServiceAccountToken": True,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_container(spec)],
                    "volumes": [
                        {"name": "log", "persistentVolumeClaim": {"claimName": f"{model.name}-rollout-log"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    ],
                },
            },
        },
    }


def pod_monitor(model: ModelConfig) -> Manifest:
    """Prometheus scrapes the controller's /metrics (decisions, weight, errors) like the serving pods'."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata(name(model), model.tenant, labels(model)),
        "spec": {
            "selector": {"matchLabels": labels(model)},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        },
    }


def network_policy(model: ModelConfig) -> Manifest:
    """On top of the tenant's default deny: Prometheus scrapes it; it reaches DNS, Prometheus and the API
    server (outside the pod network on EKS, so by port: 443, and 6443 where a cluster serves there)."""

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name(model), model.tenant, labels(model)),
        "spec": {
            "podSelector": {"matchLabels": labels(model)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [namespace_peer(MONITORING_NAMESPACE)], "ports": policy_ports(METRICS_PORT)}
            ],
            "egress": [
                {
                    "to": [namespace_peer("kube-system")],
                    "ports": policy_ports(53) + policy_ports(53, protocol="UDP"),
                },
                {"to": [namespace_peer(MONITORING_NAMESPACE)], "ports": policy_ports(PROMETHEUS_PORT)},
                {"ports": policy_ports(443, 6443)},
            ],
        },
    }


def manifests(spec: ControllerSpec) -> list[Manifest]:
    """Every object, in creation order."""
    model = spec.model
    return [service_account(model), role(model), role_binding(model), log_volume(spec), deployment(spec),
            pod_monitor(model), network_policy(model)]  # fmt: skip
