"""The feature store in a cluster (docs/features.md, "In the stacks"): the in-cluster `feature_store.yaml`
as a ConfigMap in each namespace that reads features, mounted into the serving pods of the models that use it
(`SERVING_FEATURE_REPO`), and the `feature-materialize` CronJob: an init container applies the definitions the
image's package ships to the region's registry (`servectl features apply`, sources under the model bucket's
`features/`), then `servectl features materialize` runs. Applying first on every run is what seeds a fresh
region's registry on the job's first run, and it is idempotent (an unchanged view keeps its intervals).

Image: the retrain image (serving_image/Dockerfile's `retrain` target), which has `servectl` and Feast.
Identity: its own ServiceAccount, annotated with infra's IRSA role (write the region's tables, read the
offline data, read and write the registry); no Kubernetes permission is bound to it. No sidecar: it serves
nothing and its only peers are AWS APIs outside the mesh, and a proxy would outlive the Job's container.
"""

from dataclasses import dataclass
from typing import Any

from stacks import features
from stacks.manifests import Manifest, metadata, namespace_peer, policy_ports
from stacks.manifests.serving import (
    FEATURE_CONFIG_NAME,
    FEATURE_REPO_DIR,
    RUN_AS_USER,
    restricted_security_context,
)

NAME = "feature-materialize"
"""The CronJob, its ServiceAccount and NetworkPolicy."""
CONFIG_NAME = FEATURE_CONFIG_NAME
"""The ConfigMap holding `feature_store.yaml`, one per namespace that needs it."""
CONFIG_FILE = "feature_store.yaml"
REPO_DIR = FEATURE_REPO_DIR
"""Where the ConfigMap is mounted: the feature repository `SERVING_FEATURE_REPO` and `--repo` name."""
TMP_DIR = "/tmp"  # noqa: S108 - an emptyDir mounted there, the root filesystem being read-only
CPU = "500m"
MEMORY = "1Gi"
"""Requests and limits of the job's container (equal, so the tenant quota counts them exactly)."""
DEADLINE_SECONDS = 3600
"""A run that has not finished in an hour is stopped; the next schedule starts where Feast's registry says
the last successful run ended, so nothing is skipped."""


@dataclass(frozen=True, kw_only=True)
class FeatureJobSpec:
    """What the CronJob's objects are built from."""

    namespace: str
    """The tenant namespace it runs in."""
    image: str
    """The retrain image, by digest."""
    schedule: str
    """Five-field cron, UTC."""
    role_arn: str
    """Infra's IRSA role for materialization."""
    region: str
    """The cluster's region: the SDK's (S3 for the registry and offline data) and STS's, kept in it."""
    offline_root: str
    """The offline store's root, `s3://<region's model bucket>/features/` (`stacks.features.offline_url`)."""


def labels() -> dict[str, str]:
    """Pod labels, also the NetworkPolicy's selector."""
    return {"app": NAME, "app.kubernetes.io/name": NAME}


def config_map(namespace: str, stack: str, project: str, region: str, bucket: str) -> Manifest:
    """`feature_store.yaml` for the cluster's region and model bucket."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(CONFIG_NAME, namespace, {"app.kubernetes.io/name": CONFIG_NAME}),
        "data": {CONFIG_FILE: features.feature_store_yaml(stack, project, region, bucket)},
    }


def _repo_volume() -> dict[str, Any]:
    return {"name": "feature-repo", "configMap": {"name": CONFIG_NAME}}


def service_account(spec: FeatureJobSpec) -> Manifest:
    """The job's identity: the IRSA role, no Kubernetes permission."""
    meta = metadata(NAME, spec.namespace, labels())
    meta["annotations"] = {"eks.amazonaws.com/role-arn": spec.role_arn}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def apply_command(spec: FeatureJobSpec) -> list[str]:
    """The init container's: the package's definitions into the registry, sources under the offline root."""
    return ["servectl", "features", "apply", "--repo", REPO_DIR, "--offline-root", spec.offline_root]


def materialize_command() -> list[str]:
    """The job's container's."""
    return ["servectl", "features", "materialize", "--repo", REPO_DIR]


def _container(spec: FeatureJobSpec, name: str, command: list[str]) -> dict[str, Any]:
    """Both steps alike: same image, identity, environment, limits and mounts (an init container's limits
    equal to the container's leave the pod's quota charge unchanged)."""
    return {
        "name": name,
        "image": spec.image,
        "command": command,
        "env": [
            {"name": "HOME", "value": TMP_DIR},
            {"name": "TMPDIR", "value": TMP_DIR},
            {"name": "AWS_REGION", "value": spec.region},
            {"name": "AWS_DEFAULT_REGION", "value": spec.region},
            # IRSA's token exchange at the region's STS endpoint (reached through its interface endpoint).
            {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
        ],
        "resources": {"requests": {"cpu": CPU, "memory": MEMORY}, "limits": {"cpu": CPU, "memory": MEMORY}},
        "securityContext": restricted_security_context(),
        "volumeMounts": [
            {"name": "feature-repo", "mountPath": REPO_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
    }


def cron_job(spec: FeatureJobSpec) -> Manifest:
    """Forbid concurrency: two runs would both rewrite the S3 registry (read, change, write back) and one
    run's record of its interval would be lost. A missed start more than a schedule late is skipped rather
    than run late twice; a failed run is not retried within the Job, the next schedule is the retry."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(NAME, spec.namespace, labels()),
        "spec": {
            "schedule": spec.schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels()},
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": DEADLINE_SECONDS,
                    "ttlSecondsAfterFinished": 86_400,
                    "template": {
                        "metadata": {"labels": labels(), "annotations": {"sidecar.istio.io/inject": "false"}},
                        "spec": {
                            "serviceAccountName": NAME,
                            # IRSA mounts its own projected token; the Kubernetes API is never called.
                            "automountServiceAccountToken": False,
                            "restartPolicy": "Never",
                            "securityContext": {
                                "runAsNonRoot": True,
                                "fsGroup": RUN_AS_USER,
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            # One step each, so a failed apply stops the run before materializing
                            # and each step's log and exit code stand apart.
                            "initContainers": [_container(spec, "apply", apply_command(spec))],
                            "containers": [_container(spec, "materialize", materialize_command())],
                            "volumes": [_repo_volume(), {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                        },
                    },
                },
            },
        },
    }


def network_policy(namespace: str) -> Manifest:
    """On top of the tenant's default deny: nothing in; out, DNS and HTTPS only (DynamoDB and S3 through
    their gateway endpoints, STS through its interface endpoint: addresses outside the pod network, so
    by port)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(NAME, namespace, labels()),
        "spec": {
            "podSelector": {"matchLabels": labels()},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                {
                    "to": [namespace_peer("kube-system")],
                    "ports": policy_ports(53) + policy_ports(53, protocol="UDP"),
                },
                {"ports": policy_ports(443)},
            ],
        },
    }


def job_manifests(spec: FeatureJobSpec) -> list[Manifest]:
    """The job's objects, in creation order (the ConfigMap is created per namespace beforehand)."""
    return [service_account(spec), network_policy(spec.namespace), cron_job(spec)]
