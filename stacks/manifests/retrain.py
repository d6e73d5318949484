"""The retraining trigger in the cluster: `servectl retrain-receiver` as a Deployment and Service in the
monitoring namespace, the Alertmanager webhook's target (issue 15 point 4).

The receiver runs `servectl retrain` as a process in its own pod rather than starting Jobs: it then needs
no Kubernetes API permission at all (a pod reachable by Alertmanager that may create Jobs could run any
pod in its namespace), the one-retrain-per-model rule and the handled trigger keys live in one process
and on one volume, and the bundled models train in seconds within the pod's limits.
"""

from dataclasses import dataclass
from typing import Any

import yaml

from stacks.manifests import Manifest, metadata
from stacks.manifests.monitoring import NAMESPACE
from stacks.manifests.serving import RUN_AS_USER, restricted_security_context

NAME = "retrain-receiver"
PORT = 9095
CONFIG_DIR = "/etc/retrain"
STATE_DIR = "/var/lib/retrain"
"""The retrain command's `--state` (handled trigger keys, last run time): on a volume, so idempotency
and the rate limit survive a restart of the pod."""
MODELS_ROOT = "models"
"""Where versions sit in a model bucket: `models/<model>/<version>/`."""
TMP_DIR = "/tmp"  # noqa: S108 - an emptyDir mounted there, the root filesystem being read-only


@dataclass(frozen=True, kw_only=True)
class RetrainSpec:
    """What the receiver's objects are built from."""

    image: str
    """The retrain image (serving_image/Dockerfile's `retrain` target: servectl with the training extras),
    by digest."""
    datasets: dict[str, str]
    """Model name to its labelled dataset's URI (`--data`)."""
    storage_class: str
    """StorageClass of the state volume."""
    role_arn: str | None = None
    """IRSA role to read the datasets and publish versions; None where there is no IRSA."""
    model_buckets: tuple[str, ...] = ()
    """Every region's model bucket, the primary's first: the retrain reads the serving version from the
    first and publishes the new one to each (`--publish-bucket`), where the serving pods sync from."""
    store_endpoint: str | None = None
    """On premises: the S3-compatible store's URL (boto3 reads `AWS_ENDPOINT_URL_S3`)."""
    store_credentials_secret: str | None = None
    """On premises: the Secret with the store's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, which the
    operator creates in the monitoring namespace as in each tenant's."""


def dataset_uri(bucket: str, model: str) -> str:
    """Where a model's labelled dataset is expected: beside its versions in the model bucket."""
    return f"s3://{bucket}/training/{model}/labelled.csv"


def labels() -> dict[str, str]:
    """Pod labels, also the Service's selector."""
    return {"app": NAME, "app.kubernetes.io/name": NAME}


def webhook_url(namespace: str = NAMESPACE) -> str:
    """Alertmanager's webhook target: the Service's `/alerts`."""
    return f"http://{NAME}.{namespace}.svc:{PORT}/alerts"


def publish_args(buckets: tuple[str, ...]) -> list[str]:
    """`--publish-bucket s3://BUCKET/models` per model bucket: the layout `servectl publish` writes."""
    return [
        arg for bucket in buckets if bucket for arg in ("--publish-bucket", f"s3://{bucket}/{MODELS_ROOT}")
    ]


def receiver_config(spec: RetrainSpec) -> dict[str, Any]:
    """The receiver's config file (servectl.retrain_receiver.config): the default command, the state dir
    and the model buckets to read the serving version from and publish to."""
    return {
        "command": ["servectl", "retrain"],
        "args": ["--state", f"{STATE_DIR}/state", *publish_args(spec.model_buckets)],
        "timeout_seconds": 3600,
        "models": {model: {"data": uri} for model, uri in sorted(spec.datasets.items())},
    }


def config_map(spec: RetrainSpec) -> Manifest:
    """The config file as a ConfigMap."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(NAME, NAMESPACE, labels()),
        "data": {"receiver.yaml": yaml.safe_dump(receiver_config(spec), sort_keys=False)},
    }


def service_account(spec: RetrainSpec) -> Manifest:
    """Its identity: no Kubernetes permission is bound to it; on EKS, the IRSA role for the buckets."""
    meta = metadata(NAME, NAMESPACE, labels())
    if spec.role_arn:
        meta["annotations"] = {"eks.amazonaws.com/role-arn": spec.role_arn}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def state_volume(spec: RetrainSpec) -> Manifest:
    """The state directory's claim (small: trigger keys and timestamps)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(f"{NAME}-state", NAMESPACE, labels()),
        "spec": {
            "storageClassName": spec.storage_class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/healthz", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(spec: RetrainSpec) -> dict[str, Any]:
    env = [{"name": "HOME", "value": TMP_DIR}, {"name": "TMPDIR", "value": TMP_DIR}]
    if spec.store_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": spec.store_endpoint})
    container: dict[str, Any] = {
        "name": "receiver",
        "image": spec.image,
        "command": [
            "servectl",
            "retrain-receiver",
            "--listen",
            f"0.0.0.0:{PORT}",
            "--config",
            f"{CONFIG_DIR}/receiver.yaml",
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        # Sized for a retrain of the bundled models, which runs inside this container.
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "4Gi"},
        },
        "readinessProbe": _probe(10, 3),
        "livenessProbe": _probe(20, 3),
        "securityContext": restricted_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
    }
    if spec.store_credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.store_credentials_secret}}]
    return container


def deployment(spec: RetrainSpec) -> Manifest:
    """One replica, replaced not rolled: two would each run a model's retrain, and the state volume is
    ReadWriteOnce."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(NAME, NAMESPACE, labels()),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels()},
            "template": {
                "metadata": {"labels": metadata(NAME, labels=labels())["labels"]},
                "spec": {
                    "serviceAccountName": NAME,
                    # It calls no Kubernetes API; IRSA mounts its own token.
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_container(spec)],
                    "volumes": [
                        {"name": "config", "configMap": {"name": NAME}},
                        {"name": "state", "persistentVolumeClaim": {"claimName": f"{NAME}-state"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
                    ],
                },
            },
        },
    }


def service() -> Manifest:
    """Alertmanager's way in."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(NAME, NAMESPACE, labels()),
        "spec": {
            "selector": labels(),
            "ports": [{"name": "http-webhook", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def network_policy() -> Manifest:
    """Only Alertmanager's pods reach the receiver."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(NAME, NAMESPACE, labels()),
        "spec": {
            "podSelector": {"matchLabels": labels()},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "alertmanager"}}}],
                    "ports": [{"port": PORT, "protocol": "TCP"}],
                }
            ],
        },
    }


def manifests(spec: RetrainSpec) -> list[Manifest]:
    """Every object, in creation order."""
    return [service_account(spec), config_map(spec), state_volume(spec), deployment(spec), service(),
            network_policy()]  # fmt: skip
