"""Manifests for one served model: a Deployment per version, Service, Istio routing, scaling and isolation.

The image contract: HTTP on 8080 (V2 REST and `/metrics`), gRPC on 8081, health on `/v2/health/{live,ready}`
and `/v2/models/<m>/versions/<v>/ready`, uid 10001, read-only root filesystem with a writable `/tmp`, models
under `SERVING_MODEL_REPOSITORY` as `<model>/<version>/model.onnx`. The sync image is the AWS CLI v2 (with a
POSIX shell and coreutils); `servectl publish` writes `SHA256SUMS` (`sha256sum` format, names relative to the
version directory) next to every version, and a pod does not start on files that do not match it.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from stacks.contract import job_prefix
from stacks.manifests import Manifest, metadata, namespace_peer, policy_ports, sticky
from stacks.settings import ASYNC_RESULT_TTL_SECONDS, ModelConfig

HTTP_PORT = 8080
GRPC_PORT = 8081
# Istio merges the app's /metrics into the sidecar's plaintext endpoint, so Prometheus can scrape pods whose
# application ports accept only mutual TLS.
MERGED_METRICS_PORT = 15020
MODEL_DIR = "/models"
TMP_DIR = "/tmp"  # noqa: S108 - the pod's own emptyDir; the image's root filesystem is read-only
RUN_AS_USER = 10001
FEATURE_REPO_DIR = "/etc/feast"
"""Where a model that reads features finds the in-cluster feature repository (`SERVING_FEATURE_REPO`)."""
FEATURE_CONFIG_NAME = "feature-store"
"""The ConfigMap in the tenant's namespace holding `feature_store.yaml` (stacks.manifests.features)."""
DRAIN_DELAY_SECONDS = 5
"""Seconds a terminating pod keeps serving while the mesh stops routing to it."""
GRACE_PERIOD_SECONDS = 40
"""The server's whole drain, from SIGTERM (it includes the delay)."""
TERMINATION_GRACE_SECONDS = GRACE_PERIOD_SECONDS + 5
"""The kubelet's wait before SIGKILL: the drain plus a margin."""
ROUTE_TIMEOUT = "30s"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SELECTOR = {"istio": "ingressgateway"}
GATEWAY_PRINCIPAL = f"cluster.local/ns/{GATEWAY_NAMESPACE}/sa/istio-ingressgateway"
"""The gateway's mesh identity: the gateway chart names its service account after the release."""
MODEL_FILE = "model.onnx"
CHECKSUMS_FILE = "SHA256SUMS"
BUCKET_KEY = "bucket"
"""Key of the model bucket's name in the model's store ConfigMap (`store_config_name`)."""
QUEUE_PORT = 6379
"""The job queue's port (Redis over TLS): the pods of a model with async requests reach it."""
QUEUE_URL_KEY = "redis-url"
"""Key of the `rediss://` URL, AUTH token included, in a model's queue Secret (`queue_secret_name`)."""
JOB_STORE_KEY = "async-object-store"
"""Key of the async model's object store URL (`s3://<result bucket>/jobs/<model>`) in its store ConfigMap."""
CALLBACK_KEY_FILE = "hmac-key"
"""Key of the callbacks' HMAC key in a model's callback Secret (`callback_secret_name`), and its file name."""
CALLBACK_DIR = "/var/run/secrets/serving/callback"
"""Where the callback Secret is mounted, read-only."""

# The sidecar's share of every pod, set explicitly so the tenant quota can count it (`pod_footprint`). The
# limits are well under Istio's defaults (2 CPU, 1Gi): a model pod's proxy carries only that pod's traffic.
SIDECAR_CPU = "100m"
SIDECAR_MEMORY = "128Mi"
SIDECAR_CPU_LIMIT = "500m"
SIDECAR_MEMORY_LIMIT = "256Mi"
SYNC_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
SYNC_LIMITS = {"cpu": "500m", "memory": "512Mi"}

# Verifies the synced version against the SHA256SUMS published with it: every listed file must match, and the
# model file must be listed. Arguments: source URL, target directory (expanded by the kubelet from the env).
SYNC_SCRIPT = f"""\
set -eu
source="$1"; target="$2"
aws s3 sync --only-show-errors --no-progress --region "$AWS_REGION" "$source" "$target"
cd "$target"
if [ ! -s {CHECKSUMS_FILE} ]; then
  echo "model-sync: no {CHECKSUMS_FILE} in $source: publish the version with servectl publish" >&2
  exit 1
fi
listed=no
while read -r sum name || [ -n "$sum" ]; do
  name="${{name#\\*}}"; name="${{name#./}}"
  if [ "$name" = "{MODEL_FILE}" ]; then listed=yes; fi
done < {CHECKSUMS_FILE}
if [ "$listed" != yes ]; then
  echo "model-sync: {CHECKSUMS_FILE} in $source does not list {MODEL_FILE}" >&2
  exit 1
fi
if ! sha256sum --check --strict --quiet {CHECKSUMS_FILE}; then
  echo "model-sync: files under $source do not match their {CHECKSUMS_FILE}" >&2
  exit 1
fi
"""


@dataclass(frozen=True, kw_only=True)
class ServingSpec:
    """What the manifests of one model need beyond its config."""

    model: ModelConfig
    """The model."""
    image: str
    """Serving image, pinned by digest."""
    sync_image: str
    """Model-sync init container image (AWS CLI v2), pinned by digest."""
    region: str
    """The region of the model store (the S3 endpoint's region; any name an S3-compatible store accepts)."""
    service_account: str
    """Kubernetes service account name (IRSA-annotated on EKS)."""
    gateway: str
    """`namespace/name` of the Istio Gateway."""
    api_host: str
    """Public host name."""
    store_endpoint: str | None = None
    """Endpoint URL of an S3-compatible store (on-premises); None for the region's S3."""
    store_credentials_secret: str | None = None
    """Secret in the tenant namespace with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; None with IRSA."""
    callback_hosts: tuple[str, ...] = ()
    """Hosts (`host` or `host:port`) a job's callback may go to (models with async requests); empty: none."""
    features: bool = False
    """True for a model that reads features: its pods mount the namespace's feature repository."""


def subset(version: str) -> str:
    """Kubernetes subset name of a model version directory (`"2"` -> `"v2"`)."""
    return f"v{version}"


def labels(model: str, version: str | None = None) -> dict[str, str]:
    """Pod labels; `app` and `version` are the labels Istio's telemetry reads."""
    out = {"app": model, "app.kubernetes.io/name": model}
    if version is not None:
        out["version"] = subset(version)
    return out


def restricted_security_context() -> dict[str, Any]:
    """A container of the restricted Pod Security profile: the serving image's non-root user, read-only root,
    no privilege, no capabilities, the runtime's seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(model: ModelConfig) -> dict[str, Any]:
    amount = {"cpu": model.cpu, "memory": model.memory}
    return {"requests": dict(amount), "limits": dict(amount)}


def store_config_name(model: ModelConfig) -> str:
    """The ConfigMap that names the model bucket (the component creates it: the name is known at deploy)."""
    return f"{model.name}-store"


def sync_container(spec: ServingSpec, version: str) -> dict[str, Any]:
    """The init container that copies one version from the store and checks it against its SHA256SUMS."""
    # The bucket comes from the ConfigMap and reaches the arguments by the kubelet's $(VAR) expansion, so the
    # Deployment stays fully known in a preview while the bucket name is still an output of the infra layer.
    bucket = {"configMapKeyRef": {"name": store_config_name(spec.model), "key": BUCKET_KEY}}
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": TMP_DIR},
        {"name": "AWS_REGION", "value": spec.region},
        {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
        {"name": "MODEL_BUCKET", "valueFrom": bucket},
    ]
    if spec.store_endpoint is not None:
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.store_endpoint})
    container: dict[str, Any] = {
        "name": "model-sync",
        "image": spec.sync_image,
        "command": ["/bin/sh", "-c", SYNC_SCRIPT, "model-sync"],
        "args": [
            f"s3://$(MODEL_BUCKET)/models/{spec.model.name}/{version}",
            f"{MODEL_DIR}/{spec.model.name}/{version}",
        ],
        "env": env,
        "resources": {"requests": dict(SYNC_REQUESTS), "limits": dict(SYNC_LIMITS)},
        "securityContext": restricted_security_context(),
        "volumeMounts": [{"name": "models", "mountPath": MODEL_DIR}, {"name": "tmp", "mountPath": TMP_DIR}],
    }
    if spec.store_credentials_secret is not None:
        container["envFrom"] = [{"secretRef": {"name": spec.store_credentials_secret}}]
    return container


def queue_secret_name(model: ModelConfig) -> str:
    """The Secret (synced from Secrets Manager) with the job queue's URL, for a model with async requests."""
    return f"{model.name}-async-queue"


def job_stream(model: ModelConfig) -> str:
    """The Redis stream of a model's jobs: one per model, so a model's workers read only its own jobs."""
    return f"inference-jobs:{model.name}"


def callback_secret_name(model: ModelConfig) -> str:
    """The Secret (synced from Secrets Manager) with the job callbacks' HMAC key, where callbacks are on."""
    return f"{model.name}-async-callback"


def callbacks_on(spec: ServingSpec) -> bool:
    """A model with async requests in a stack that allows callback hosts."""
    return spec.model.async_workers is not None and bool(spec.callback_hosts)


def segment_env(spec: ServingSpec) -> list[dict[str, Any]]:
    """The rollout's key segments, which the server counts apart (the `segment` label of its request
    counter). The mesh passes the header through untouched: no route sets or strips it."""
    rollout = spec.model.rollout
    if rollout is None or not rollout.segment_values:
        return []
    return [
        {"name": "SERVING_SEGMENT_HEADER", "value": rollout.segment_header},
        {"name": "SERVING_SEGMENT_VALUES", "value": ",".join(rollout.segment_values)},
    ]


def queue_env(spec: ServingSpec) -> list[dict[str, Any]]:
    """What a model's pods need to take async requests (and its workers to consume them): the queue's URL from
    its Secret, never in the manifest, the model's stream and its bound, where large inputs and results go
    (from the store ConfigMap, known at deploy), how long results are kept, and with callbacks their hosts
    and the key file. Nothing for a model without async."""
    model = spec.model
    workers = model.async_workers
    if workers is None:
        return []
    url = {"secretKeyRef": {"name": queue_secret_name(model), "key": QUEUE_URL_KEY}}
    store = {"configMapKeyRef": {"name": store_config_name(model), "key": JOB_STORE_KEY}}
    env: list[dict[str, Any]] = [
        {"name": "SERVING_ASYNC_REDIS_URL", "valueFrom": url},
        {"name": "SERVING_ASYNC_STREAM", "value": job_stream(model)},
        {"name": "SERVING_ASYNC_MAX_QUEUED", "value": str(workers.max_queued)},
        {"name": "SERVING_ASYNC_OBJECT_STORE", "valueFrom": store},
        # The result bucket's expiry of `results/` is derived from the same figure.
        {"name": "SERVING_ASYNC_RESULT_TTL_S", "value": str(ASYNC_RESULT_TTL_SECONDS)},
    ]
    if callbacks_on(spec):
        env += [
            {"name": "SERVING_ASYNC_CALLBACK_HOSTS", "value": ",".join(spec.callback_hosts)},
            {"name": "SERVING_ASYNC_CALLBACK_SECRET_FILE", "value": f"{CALLBACK_DIR}/{CALLBACK_KEY_FILE}"},
        ]
    return env


def callback_mounts(spec: ServingSpec) -> list[dict[str, Any]]:
    """The callback Secret, read-only, where `SERVING_ASYNC_CALLBACK_SECRET_FILE` points; none without."""
    return (
        [{"name": "callback-key", "mountPath": CALLBACK_DIR, "readOnly": True}] if callbacks_on(spec) else []
    )


def callback_volumes(spec: ServingSpec) -> list[dict[str, Any]]:
    """The callback Secret's volume: its one key as a file only the pod's user and group may read."""
    if not callbacks_on(spec):
        return []
    secret = {
        "secretName": callback_secret_name(spec.model),
        "items": [{"key": CALLBACK_KEY_FILE, "path": CALLBACK_KEY_FILE}],
        "defaultMode": 0o440,
    }
    return [{"name": "callback-key", "secret": secret}]


def feature_env(spec: ServingSpec) -> list[dict[str, Any]]:
    """`SERVING_FEATURE_REPO` for a model that reads features; nothing otherwise (served as before)."""
    return [{"name": "SERVING_FEATURE_REPO", "value": FEATURE_REPO_DIR}] if spec.features else []


def feature_mounts(spec: ServingSpec) -> list[dict[str, Any]]:
    """The feature repository, read-only, where `SERVING_FEATURE_REPO` points."""
    return (
        [{"name": "feature-repo", "mountPath": FEATURE_REPO_DIR, "readOnly": True}] if spec.features else []
    )


def feature_volumes(spec: ServingSpec) -> list[dict[str, Any]]:
    """The namespace's `feature-store` ConfigMap as the feature repository's volume."""
    return [{"name": "feature-repo", "configMap": {"name": FEATURE_CONFIG_NAME}}] if spec.features else []


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _server_container(spec: ServingSpec, version: str) -> dict[str, Any]:
    # Ready only once the version this Deployment serves is loaded, not merely once the server is up.
    loaded = f"/v2/models/{spec.model.name}/versions/{version}/ready"
    return {
        "name": "server",
        "image": spec.image,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": [
            {"name": "SERVING_MODEL_REPOSITORY", "value": MODEL_DIR},
            {"name": "SERVING_WORKERS", "value": str(spec.model.workers)},
            # The gateway is the trusted proxy: it writes this header from the validated token and strips
            # any client-sent copy, so the audit log's caller is the token's subject, never a client's claim.
            {"name": "SERVING_TRUSTED_PROXY_HEADER", "value": sticky.CALLER_HEADER},
            # Likewise every route sets how it chose the version (sticky.ASSIGNMENT_HEADER), replacing any
            # client's value: the pods label their request counters with it (serving_image/assignment.py).
            {"name": "SERVING_TRUST_ASSIGNMENT_HEADER", "value": "true"},
            # On SIGTERM the server stays routable for the drain delay (readiness already false), then
            # finishes in-flight requests; the kubelet waits a little longer than that before killing it.
            {"name": "SERVING_DRAIN_DELAY_SECONDS", "value": str(DRAIN_DELAY_SECONDS)},
            {"name": "SERVING_GRACE_PERIOD_SECONDS", "value": str(GRACE_PERIOD_SECONDS)},
            *queue_env(spec),
            *segment_env(spec),
            *feature_env(spec),
        ],
        "startupProbe": _probe(loaded, 5, 60),
        "readinessProbe": _probe(loaded, 5, 3),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "resources": _resources(spec.model),
        "securityContext": restricted_security_context(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODEL_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_DIR},
            *callback_mounts(spec),
            *feature_mounts(spec),
        ],
    }


def deployment(spec: ServingSpec, version: str) -> Manifest:
    """The Deployment of one model version; replicas are left to the HPA."""
    model = spec.model
    pod_labels = labels(model.name, version)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(f"{model.name}-{subset(version)}", model.tenant, pod_labels),
        "spec": {
            "selector": {"matchLabels": pod_labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HTTP_PORT),
                        "prometheus.io/path": "/metrics",
                        "sidecar.istio.io/proxyCPU": SIDECAR_CPU,
                        "sidecar.istio.io/proxyMemory": SIDECAR_MEMORY,
                        "sidecar.istio.io/proxyCPULimit": SIDECAR_CPU_LIMIT,
                        "sidecar.istio.io/proxyMemoryLimit": SIDECAR_MEMORY_LIMIT,
                        # The sidecar must outlive the server's drain, or it cuts requests still in flight.
                        "proxy.istio.io/config": json.dumps(
                            {"terminationDrainDuration": f"{GRACE_PERIOD_SECONDS}s"}
                        ),
                    },
                },
                "spec": {
                    "serviceAccountName": spec.service_account,
                    "automountServiceAccountToken": True,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "initContainers": [sync_container(spec, version)],
                    "containers": [_server_container(spec, version)],
                    "volumes": [
                        {"name": "models", "emptyDir": {"sizeLimit": "4Gi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}},
                        *callback_volumes(spec),
                        *feature_volumes(spec),
                    ],
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": pod_labels},
                        }
                    ],
                },
            },
        },
    }


def service(model: ModelConfig) -> Manifest:
    """One Service over every version; the DestinationRule splits it into subsets."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(model.name, model.tenant, labels(model.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(model.name),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "appProtocol": "http"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"},
                {"name": "http-monitoring", "port": MERGED_METRICS_PORT, "targetPort": MERGED_METRICS_PORT},
            ],
        },
    }


def service_account(model: ModelConfig, role_arn: str | None) -> Manifest:
    """The pods' identity; on EKS, IRSA maps it to the role infra made, which reads only the model's prefix.

    Without a role (a cluster without IRSA) the account carries no annotation and the sync reads the store
    with the credentials Secret the spec names.
    """
    meta = metadata(model.name, model.tenant, labels(model.name))
    if role_arn is not None:
        meta["annotations"] = {"eks.amazonaws.com/role-arn": role_arn}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def job_store_url(bucket: str, model: ModelConfig) -> str:
    """`SERVING_ASYNC_OBJECT_STORE` of an async model: its part of the region's result bucket."""
    return f"s3://{bucket}/{job_prefix(model.name)}"


def store_config(model: ModelConfig) -> Manifest:
    """The ConfigMap naming the model bucket, without data: the component adds `BUCKET_KEY` at deploy."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(store_config_name(model), model.tenant, labels(model.name)),
    }


def destination_rule(model: ModelConfig) -> Manifest:
    """A subset per version; mutual TLS from the mesh; consistent hashing on the sticky header if any."""
    policy: dict[str, Any] = {"tls": {"mode": "ISTIO_MUTUAL"}}
    if model.variants.sticky_header is not None:
        policy["loadBalancer"] = {"consistentHash": {"httpHeaderName": model.variants.sticky_header}}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": metadata(model.name, model.tenant, labels(model.name)),
        "spec": {
            "host": f"{model.name}.{model.tenant}.svc.cluster.local",
            "trafficPolicy": policy,
            "subsets": [
                {"name": subset(v), "labels": {"version": subset(v)}} for v in model.variants.versions
            ],
        },
    }


def _destination(model: ModelConfig, version: str, weight: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "destination": {
            "host": f"{model.name}.{model.tenant}.svc.cluster.local",
            "subset": subset(version),
            "port": {"number": HTTP_PORT},
        }
    }
    if weight is not None:
        out["weight"] = weight
    return out


def _matches(path: str, headers: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    # The exact path and everything under it, but not `/v2/models/a` matching `/v2/models/ab`.
    extra = {"headers": headers} if headers else {}
    return [{"uri": {"exact": path}} | extra, {"uri": {"prefix": f"{path}/"}} | extra]


def _route(
    name: str, matches: list[dict[str, Any]], destinations: list[dict[str, Any]], assignment: dict[str, str]
) -> dict[str, Any]:
    """A route that tells the pods how it chose their version (`assignment`: the headers it sets)."""
    return {
        "name": name,
        "match": matches,
        "route": destinations,
        "headers": {"request": {"set": assignment}},
        "timeout": ROUTE_TIMEOUT,
        "retries": {
            "attempts": 2,
            "perTryTimeout": "15s",
            "retryOn": "connect-failure,refused-stream,unavailable",
        },
    }


def _assigned(how: str, user_header: str | None = None) -> dict[str, str]:
    """The headers a route sets for the server's `assignment` label; a sticky route passes the user key on."""
    out = {sticky.ASSIGNMENT_HEADER: how}
    if user_header is not None:
        out[sticky.USER_HEADER] = f"%REQ({user_header.lower()})%"
    return out


def _sticky_ranges(model: ModelConfig) -> list[tuple[str, int, int]]:
    """The bucket range of each version with weight, if the model assigns versions by a sticky header."""
    if model.variants.sticky_header is None:
        return []
    return sticky.bucket_ranges(model.variants.weights)


def route_names(model: ModelConfig) -> list[str]:
    """The names of the model's HTTP routes, in order (the rate limit attaches to them)."""
    pinned = [f"{model.name}-{subset(v)}" for v in model.variants.versions]
    headers = [f"{model.name}-header-{i}" for i in range(len(model.variants.routes))]
    buckets = [f"{model.name}-sticky-{subset(v)}" for v, _, _ in _sticky_ranges(model)]
    return [*pinned, *headers, *buckets, f"{model.name}-weighted"]


def _fault(model: ModelConfig, version: str) -> dict[str, Any] | None:
    """Istio's fault block for a version that has one (delay for every request, aborts for a share)."""
    fault = dict(model.variants.faults).get(version)
    if fault is None:
        return None
    out: dict[str, Any] = {}
    if fault.delay_ms:
        out["delay"] = {"percentage": {"value": 100.0}, "fixedDelay": f"{fault.delay_ms}ms"}
    if fault.error_ratio:
        out["abort"] = {"percentage": {"value": round(fault.error_ratio * 100, 4)}, "httpStatus": 500}
    return out or None


def _to_version(model: ModelConfig, route: dict[str, Any], version: str) -> dict[str, Any]:
    """A route with one destination: it carries the version's fault, if any."""
    fault = _fault(model, version)
    return route | {"fault": fault} if fault else route


def _mirrored(model: ModelConfig, route: dict[str, Any], versions: set[str]) -> dict[str, Any]:
    """A live route mirrors to the shadow version unless it sends only there."""
    shadow = model.variants.shadow
    if shadow is None or versions == {shadow.version}:
        return route
    return route | {
        "mirror": _destination(model, shadow.version)["destination"],
        "mirrorPercentage": {"value": float(shadow.percent)},
    }


def virtual_service(spec: ServingSpec) -> Manifest:
    """Routes in the server's order: an explicit version, header matches, sticky buckets, then the weights.

    A model with a sticky header gets one route per version with weight, matching the bucket the gateway's
    Lua filter computed from that header (`sticky.BUCKET_HEADER`) against the version's range, so a user keeps
    one version while the weights stand, as with the standalone server; requests without the header take the
    weighted (random) split. Live routes (header, sticky and weighted) mirror to the shadow version, if any.
    Istio attaches a fault to a route, not to one destination of a split, so a version's fault is set on the
    routes that send only to it (its explicit path, header and sticky routes); the standalone server also
    applies faults inside its own weighted split.
    """
    model = spec.model
    prefix = f"/v2/models/{model.name}"
    names = iter(route_names(model))
    routes = [
        _to_version(
            model,
            _route(
                next(names),
                _matches(f"{prefix}/versions/{v}"),
                [_destination(model, v)],
                _assigned("explicit"),
            ),
            v,
        )
        for v in model.variants.versions
    ]
    routes += [
        _mirrored(
            model,
            _to_version(
                model,
                _route(
                    next(names),
                    _matches(prefix, {r.header: {"exact": r.value}}),
                    [_destination(model, r.version)],
                    _assigned("header"),
                ),
                r.version,
            ),
            {r.version},
        )
        for r in model.variants.routes
    ]
    routes += [
        _mirrored(
            model,
            _to_version(
                model,
                _route(
                    next(names),
                    _matches(prefix, {sticky.BUCKET_HEADER: {"regex": sticky.bucket_regex(first, end)}}),
                    [_destination(model, version)],
                    _assigned("sticky", model.variants.sticky_header),
                ),
                version,
            ),
            {version},
        )
        for version, first, end in _sticky_ranges(model)
    ]
    split = [(v, w) for v, w in model.variants.weights if w > 0]
    weighted = _route(
        next(names), _matches(prefix), [_destination(model, v, w) for v, w in split], _assigned("weighted")
    )
    routes.append(_mirrored(model, weighted, {v for v, _ in split}))
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(model.name, model.tenant, labels(model.name)),
        "spec": {"hosts": [spec.api_host], "gateways": [spec.gateway], "http": routes},
    }


def assignment_telemetry(model: ModelConfig) -> Manifest:
    """Istio's request count on the model's pods gets an `assignment` tag from the header the route set
    (`sticky.ASSIGNMENT_HEADER`), so the mesh's telemetry tells randomised traffic from header routes and
    named versions as the server's counters do. Only on these pods (a selector in the tenant's namespace),
    whose one caller is the gateway that sets the header: elsewhere a client could make up values."""
    header = sticky.ASSIGNMENT_HEADER
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": metadata(f"{model.name}-assignment", model.tenant, labels(model.name)),
        "spec": {
            "selector": {"matchLabels": labels(model.name)},
            "metrics": [
                {
                    "providers": [{"name": "prometheus"}],
                    "overrides": [
                        {
                            "match": {"metric": "REQUEST_COUNT", "mode": "SERVER"},
                            "tagOverrides": {"assignment": {"value": f"request.headers['{header}']"}},
                        }
                    ],
                }
            ],
        },
    }


def autoscaler(model: ModelConfig, version: str) -> Manifest:
    """CPU-based autoscaling of one version's Deployment."""
    name = f"{model.name}-{subset(version)}"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(name, model.tenant, labels(model.name, version)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": model.min_replicas,
            "maxReplicas": model.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }


def disruption_budget(model: ModelConfig, version: str) -> Manifest:
    """Keep at least one pod of each version through voluntary disruptions."""
    name = f"{model.name}-{subset(version)}"
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name, model.tenant, labels(model.name, version)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(model.name, version)}},
    }


def network_policy(model: ModelConfig) -> Manifest:
    """Opens, on top of the tenant's default deny, only what the serving pods need."""

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(model.name, model.tenant, labels(model.name)),
        "spec": {
            "podSelector": {"matchLabels": labels(model.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [namespace_peer(GATEWAY_NAMESPACE)], "ports": policy_ports(HTTP_PORT, GRPC_PORT)},
                {"from": [namespace_peer("monitoring")], "ports": policy_ports(MERGED_METRICS_PORT)},
            ],
            "egress": [
                {
                    "to": [namespace_peer("kube-system")],
                    "ports": policy_ports(53) + policy_ports(53, protocol="UDP"),
                },
                {"to": [namespace_peer(GATEWAY_NAMESPACE)], "ports": policy_ports(15012, 15017)},
                # The model store (S3 through its gateway endpoint, STS through its interface endpoint, or the
                # on-premises store) for the model sync, HTTPS only; the mesh's ServiceEntries name the hosts.
                {"ports": policy_ports(443)},
                # The job queue (ElastiCache, TLS), for a model that takes async requests; the mesh's
                # ServiceEntry in the tenant's namespace names its one host.
                *([{"ports": policy_ports(QUEUE_PORT)}] if model.async_workers else []),
            ],
        },
    }


def authorization(spec: ServingSpec, issuer: str) -> Manifest:
    """Allows the model's paths only with a valid token from the issuer that carries the model's scope."""
    model = spec.model
    prefix = f"/v2/models/{model.name}"
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata(f"allow-{model.name}", GATEWAY_NAMESPACE, labels(model.name)),
        "spec": {
            "selector": {"matchLabels": GATEWAY_SELECTOR},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"requestPrincipals": [f"{issuer}/*"]}}],
                    "to": [{"operation": {"hosts": [spec.api_host], "paths": [prefix, f"{prefix}/*"]}}],
                    "when": [{"key": "request.auth.claims[scope]", "values": [model.scope]}],
                }
            ],
        },
    }


def pod_authorization(model: ModelConfig) -> Manifest:
    """On the model's pods: only the ingress gateway's mesh identity may call the serving ports.

    An ALLOW policy: with the mesh-wide deny-by-default, nothing else in the mesh reaches the model, even from
    a namespace the NetworkPolicy lets through.
    """
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata(f"{model.name}-from-gateway", model.tenant, labels(model.name)),
        "spec": {
            "selector": {"matchLabels": labels(model.name)},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"principals": [GATEWAY_PRINCIPAL]}}],
                    "to": [{"operation": {"ports": [str(HTTP_PORT), str(GRPC_PORT)]}}],
                }
            ],
        },
    }


_CPU = re.compile(r"(\d+(?:\.\d+)?)(m?)")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?")
_MEMORY_UNITS = {
    None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def cpu_millicores(quantity: str) -> int:
    """A Kubernetes CPU quantity (`"2"`, `"1.5"`, `"500m"`) in millicores, rounded up as Kubernetes does."""
    match = _CPU.fullmatch(quantity)
    if match is None:
        raise ValueError(f"not a CPU quantity: {quantity!r} (expected e.g. 2, 1.5 or 500m)")
    number, milli = match.groups()
    return -int(-float(number) // 1) if milli else -int(-float(number) * 1000 // 1)


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (`"2Gi"`, `"512Mi"`, `"1G"`, `"1048576"`) in bytes."""
    match = _MEMORY.fullmatch(quantity)
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r} (expected e.g. 2Gi or 512Mi)")
    number, unit = match.groups()
    return -int(-float(number) * _MEMORY_UNITS[unit] // 1)


def pod_footprint(model: ModelConfig) -> tuple[int, int]:
    """(CPU millicores, memory bytes) one pod of the model takes from its tenant's quota, sidecar included.

    The limits, which are at least the requests, since the tenant quota caps both to the same amount. With
    Istio's native sidecar (an init container that keeps running) the proxy runs beside the model sync and the
    server alike, so a pod counts the sidecar plus the larger of the two; without native sidecars the figure
    is the same or larger than the scheduler's, never smaller.
    """
    sidecar = (cpu_millicores(SIDECAR_CPU_LIMIT), memory_bytes(SIDECAR_MEMORY_LIMIT))
    server = (cpu_millicores(model.cpu), memory_bytes(model.memory))
    sync = (cpu_millicores(SYNC_LIMITS["cpu"]), memory_bytes(SYNC_LIMITS["memory"]))
    return sidecar[0] + max(server[0], sync[0]), sidecar[1] + max(server[1], sync[1])
