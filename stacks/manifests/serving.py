"""Manifests for one served model: a Deployment per version, Service, Istio routing, scaling and isolation.

The image contract: HTTP on 8080 (V2 REST and `/metrics`), gRPC on 8081, health on `/v2/health/{live,ready}`,
uid 10001, read-only root filesystem with a writable `/tmp`, models under `SERVING_MODEL_REPOSITORY`.
"""

from dataclasses import dataclass
from typing import Any

from stacks.manifests import Manifest, metadata
from stacks.settings import ModelConfig

HTTP_PORT = 8080
GRPC_PORT = 8081
# Istio merges the app's /metrics into the sidecar's plaintext endpoint, so Prometheus can scrape pods whose
# application ports accept only mutual TLS.
MERGED_METRICS_PORT = 15020
MODEL_DIR = "/models"
TMP_DIR = "/tmp"  # noqa: S108 - the pod's own emptyDir; the image's root filesystem is read-only
RUN_AS_USER = 10001
ROUTE_TIMEOUT = "30s"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SELECTOR = {"istio": "ingressgateway"}


@dataclass(frozen=True, kw_only=True)
class ServingSpec:
    """What the manifests of one model need beyond its config."""

    model: ModelConfig
    """The model."""
    image: str
    """Serving image, pinned by digest."""
    sync_image: str
    """Model-sync init container image, pinned by digest."""
    bucket: str
    """Model bucket name."""
    region: str
    """The region the pods run in (for the S3 endpoint)."""
    service_account: str
    """Kubernetes service account name (IRSA-annotated)."""
    gateway: str
    """`namespace/name` of the Istio Gateway."""
    api_host: str
    """Public host name."""


def subset(version: str) -> str:
    """Kubernetes subset name of a model version directory (`"2"` -> `"v2"`)."""
    return f"v{version}"


def labels(model: str, version: str | None = None) -> dict[str, str]:
    """Pod labels; `app` and `version` are the labels Istio's telemetry reads."""
    out = {"app": model, "app.kubernetes.io/name": model}
    if version is not None:
        out["version"] = subset(version)
    return out


def _security_context() -> dict[str, Any]:
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


def _sync_container(spec: ServingSpec, version: str) -> dict[str, Any]:
    source = f"s3://{spec.bucket}/models/{spec.model.name}/{version}"
    target = f"{MODEL_DIR}/{spec.model.name}/{version}"
    return {
        "name": "model-sync",
        "image": spec.sync_image,
        "args": ["s3", "sync", "--only-show-errors", "--region", spec.region, source, target],
        "env": [{"name": "HOME", "value": TMP_DIR}, {"name": "AWS_REGION", "value": spec.region}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": _security_context(),
        "volumeMounts": [{"name": "models", "mountPath": MODEL_DIR}, {"name": "tmp", "mountPath": TMP_DIR}],
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _server_container(spec: ServingSpec) -> dict[str, Any]:
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
        ],
        "startupProbe": _probe("/v2/health/ready", 5, 60),
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "resources": _resources(spec.model),
        "securityContext": _security_context(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODEL_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_DIR},
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
                        # The init container reaches S3 before the sidecar runs, so HTTPS bypasses the proxy.
                        "traffic.sidecar.istio.io/excludeOutboundPorts": "443",
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
                    "terminationGracePeriodSeconds": 45,
                    "initContainers": [_sync_container(spec, version)],
                    "containers": [_server_container(spec)],
                    "volumes": [
                        {"name": "models", "emptyDir": {"sizeLimit": "4Gi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}},
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


def service_account(model: ModelConfig, role_arn: str) -> Manifest:
    """The pods' identity; IRSA maps it to a role that can only read the model bucket."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(model.name, model.tenant, labels(model.name))
        | {"annotations": {"eks.amazonaws.com/role-arn": role_arn}},
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


def _route(name: str, matches: list[dict[str, Any]], destinations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "match": matches,
        "route": destinations,
        "timeout": ROUTE_TIMEOUT,
        "retries": {
            "attempts": 2,
            "perTryTimeout": "15s",
            "retryOn": "connect-failure,refused-stream,unavailable",
        },
    }


def route_names(model: ModelConfig) -> list[str]:
    """The names of the model's HTTP routes, in order (the rate limit attaches to them)."""
    pinned = [f"{model.name}-{subset(v)}" for v in model.variants.versions]
    headers = [f"{model.name}-header-{i}" for i in range(len(model.variants.routes))]
    return [*pinned, *headers, f"{model.name}-weighted"]


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
    """Routes in the order the server applies them: an explicit version, then header matches, then weights.

    Live routes (header matches and the weights) mirror to the shadow version, if any. Istio attaches a
    fault to a route, not to one destination of a split, so a version's fault is set on the routes that
    send only to it (its explicit path and header routes): in the mesh a degraded candidate is staged through
    those; the standalone server also applies faults inside its own weighted split.
    """
    model = spec.model
    prefix = f"/v2/models/{model.name}"
    names = iter(route_names(model))
    routes = [
        _to_version(
            model, _route(next(names), _matches(f"{prefix}/versions/{v}"), [_destination(model, v)]), v
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
                ),
                r.version,
            ),
            {r.version},
        )
        for r in model.variants.routes
    ]
    split = [(v, w) for v, w in model.variants.weights if w > 0]
    weighted = _route(next(names), _matches(prefix), [_destination(model, v, w) for v, w in split])
    routes.append(_mirrored(model, weighted, {v for v, _ in split}))
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(model.name, model.tenant, labels(model.name)),
        "spec": {"hosts": [spec.api_host], "gateways": [spec.gateway], "http": routes},
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

    def peer(namespace: str) -> dict[str, Any]:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}

    def ports(*numbers: int, protocol: str = "TCP") -> list[dict[str, Any]]:
        return [{"protocol": protocol, "port": n} for n in numbers]

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(model.name, model.tenant, labels(model.name)),
        "spec": {
            "podSelector": {"matchLabels": labels(model.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [peer(GATEWAY_NAMESPACE)], "ports": ports(HTTP_PORT, GRPC_PORT)},
                {"from": [peer("monitoring")], "ports": ports(MERGED_METRICS_PORT)},
            ],
            "egress": [
                {"to": [peer("kube-system")], "ports": ports(53) + ports(53, protocol="UDP")},
                {"to": [peer(GATEWAY_NAMESPACE)], "ports": ports(15012, 15017)},
                # S3 (gateway endpoint) and STS (interface endpoint) for the model sync, HTTPS only.
                {"ports": ports(443)},
            ],
        },
    }


def rate_limit(spec: ServingSpec) -> Manifest:
    """Token buckets on the model's routes at the ingress gateway (Envoy local rate limit)."""
    model = spec.model
    bucket = {
        "max_tokens": model.rate_limit.burst,
        "tokens_per_fill": model.rate_limit.requests_per_second,
        "fill_interval": "1s",
    }
    per_route = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": f"model_{model.name.replace('-', '_')}",
        "token_bucket": bucket,
        "filter_enabled": {"runtime_key": "local_rate_limit_enabled", "default_value": {"numerator": 100}},
        "filter_enforced": {"runtime_key": "local_rate_limit_enforced", "default_value": {"numerator": 100}},
        "response_headers_to_add": [
            {
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                "header": {"key": "x-rate-limited", "value": "gateway"},
            }
        ],
    }
    patches = [
        {
            "applyTo": "HTTP_ROUTE",
            "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {"route": {"name": name}}}},
            "patch": {
                "operation": "MERGE",
                "value": {"typed_per_filter_config": {"envoy.filters.http.local_ratelimit": per_route}},
            },
        }
        for name in route_names(model)
    ]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata(f"ratelimit-{model.name}", GATEWAY_NAMESPACE, labels(model.name)),
        "spec": {"workloadSelector": {"labels": GATEWAY_SELECTOR}, "priority": 10, "configPatches": patches},
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
