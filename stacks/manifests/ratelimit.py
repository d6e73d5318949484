"""Global rate limiting: one limit per model and caller across every gateway replica.

Envoy's rate limit service answers the gateway's ratelimit filter over gRPC and keeps its counters in one
in-cluster Redis, so the limit holds however many gateway pods share the traffic (a local token bucket per
pod would multiply it by the replica count). Both run in the `ratelimit` namespace, in the mesh with mutual
TLS: the service admits only the gateway, Redis only the service (AuthorizationPolicy on the identity,
NetworkPolicy on the network).
"""

import hashlib
from collections.abc import Iterable
from typing import Any

import yaml

from stacks.artifacts import load_lock
from stacks.manifests import Manifest, metadata, monitoring
from stacks.manifests.mesh import GATEWAY_PRINCIPAL, GATEWAY_SELECTOR, HCM, NAMESPACE, zone_spread
from stacks.manifests.sticky import CALLER_HEADER

RATELIMIT_NAMESPACE = "ratelimit"
DOMAIN = "model-api"
SERVICE = "ratelimit"
REDIS = "redis"
GRPC_PORT = 8081
HTTP_PORT = 8080
REDIS_PORT = 6379
CONFIG_DIR = "/data/ratelimit/config"
RATELIMIT_UID = 65532
REDIS_UID = 999
"""The `redis` user of the Redis image."""
FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
CLUSTER = f"outbound|{GRPC_PORT}||{SERVICE}.{RATELIMIT_NAMESPACE}.svc.cluster.local"
"""The Envoy cluster istiod generates for the ratelimit Service, as the gateway sees it."""
TIMEOUT = "0.1s"
"""Longest a request waits for a verdict; a slower answer counts as a failure (and is let through)."""
MODEL_KEY = "model"
CALLER_KEY = "caller"

Limit = tuple[str, int]
"""(model name, requests per second per caller)."""


def labels(app: str) -> dict[str, str]:
    """Pod labels of the service or of Redis."""
    return {"app": app, "app.kubernetes.io/name": app}


def namespace() -> Manifest:
    """In the mesh, restricted pod security (the Istio CNI means no privileged init container)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": metadata(
            RATELIMIT_NAMESPACE,
            labels={"istio-injection": "enabled", "pod-security.kubernetes.io/enforce": "restricted"},
        ),
    }


def service_config(limits: Iterable[Limit]) -> dict[str, Any]:
    """The service's rules: for each model, every distinct caller gets the model's rate per second."""
    return {
        "domain": DOMAIN,
        "descriptors": [
            {
                "key": MODEL_KEY,
                "value": model,
                "descriptors": [
                    {"key": CALLER_KEY, "rate_limit": {"unit": "second", "requests_per_unit": rps}}
                ],
            }
            for model, rps in sorted(limits)
        ],
    }


def config_map(limits: Iterable[Limit]) -> Manifest:
    """The rules as the service reads them, a file under `RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config`."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(SERVICE, RATELIMIT_NAMESPACE, labels(SERVICE)),
        "data": {"config.yaml": yaml.safe_dump(service_config(limits), sort_keys=False)},
    }


def service_account(app: str) -> Manifest:
    """The pods' mesh identity; neither talks to the Kubernetes API, so no token is mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(app, RATELIMIT_NAMESPACE, labels(app)),
        "automountServiceAccountToken": False,
    }


def _security_context(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod(app: str, uid: int, container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "serviceAccountName": app,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container | {"securityContext": _security_context(uid)}],
        "volumes": volumes,
        "topologySpreadConstraints": zone_spread(labels(app)),
    }


def _deployment(app: str, replicas: int, pod: dict[str, Any], annotations: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(app, RATELIMIT_NAMESPACE, labels(app)),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels(app)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(app), "annotations": annotations}, "spec": pod},
        },
    }


def _env(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def service_deployment(registry: str, limits: Iterable[Limit]) -> Manifest:
    """Two replicas of the service across zones; a change of the rules rolls them (the checksum)."""
    config = config_map(limits)["data"]["config.yaml"]
    container = {
        "name": SERVICE,
        "image": load_lock().image("ratelimit").ref(registry),
        "command": ["/bin/ratelimit"],
        "env": _env(
            {
                "GRPC_PORT": str(GRPC_PORT),
                "PORT": str(HTTP_PORT),
                "REDIS_SOCKET_TYPE": "tcp",
                "REDIS_URL": f"{REDIS}.{RATELIMIT_NAMESPACE}.svc.cluster.local:{REDIS_PORT}",
                "RUNTIME_ROOT": "/data",
                "RUNTIME_SUBDIRECTORY": "ratelimit",
                # The ConfigMap volume swaps a `..data` symlink on update: watch the subdirectory, not the
                # root, and skip the dot entries.
                "RUNTIME_WATCH_ROOT": "false",
                "RUNTIME_IGNOREDOTFILES": "true",
                # No statsd sink in the cluster; the default would log a failed send on every flush.
                "USE_STATSD": "false",
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "info",
            }
        ),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthcheck", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthcheck", "port": "http"}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    volumes = [{"name": "config", "configMap": {"name": SERVICE}}]
    checksum = {"checksum/config": hashlib.sha256(config.encode()).hexdigest()}
    return _deployment(SERVICE, 2, _pod(SERVICE, RATELIMIT_UID, container, volumes), checksum)


_REDIS_FLAGS = {
    "port": str(REDIS_PORT),
    "save": "",
    "appendonly": "no",
    # No password: only the service's pods can connect (NetworkPolicy and the mesh's mTLS identity); protected
    # mode would otherwise refuse every connection that is not from localhost.
    "protected-mode": "no",
    "maxmemory": "192mb",
    "maxmemory-policy": "volatile-ttl",
}
"""In memory only, bounded below the container's limit; every key has a TTL, the nearest expiry goes first."""


def redis_deployment(registry: str) -> Manifest:
    """One Redis holding the counters, in memory only: they live for a second, so losing them on a restart
    costs nothing. A single replica on purpose: two independent Redis pods behind one Service would each
    count part of a caller's requests, and the limit would silently double. While it restarts the gateway
    lets requests through (`failure_mode_deny: false`)."""
    container = {
        "name": REDIS,
        "image": load_lock().image("redis").ref(registry),
        "command": ["redis-server"],
        "args": [arg for flag, value in _REDIS_FLAGS.items() for arg in (f"--{flag}", value)],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
        "livenessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    volumes = [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}]
    return _deployment(REDIS, 1, _pod(REDIS, REDIS_UID, container, volumes), {})


def services() -> list[Manifest]:
    """The service's gRPC port and Redis's TCP port (named `tcp-` so Istio treats it as plain TCP)."""

    def service(app: str, name: str, port: int, protocol: str) -> Manifest:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(app, RATELIMIT_NAMESPACE, labels(app)),
            "spec": {
                "type": "ClusterIP",
                "selector": labels(app),
                "ports": [{"name": name, "port": port, "targetPort": port, "appProtocol": protocol}],
            },
        }

    return [service(SERVICE, "grpc", GRPC_PORT, "grpc"), service(REDIS, "tcp-redis", REDIS_PORT, "tcp")]


def disruption_budget() -> Manifest:
    """Keep one service pod through drains. Redis has none: a budget on a single pod blocks every drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(SERVICE, RATELIMIT_NAMESPACE, labels(SERVICE)),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels(SERVICE)}},
    }


def _peer(namespace: str, pods: dict[str, str] | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    if pods is not None:
        peer["podSelector"] = {"matchLabels": pods}
    return peer


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


# Every pod needs DNS and its sidecar needs istiod (xDS and certificates on 15012).
_BASE_EGRESS = [
    {
        "to": [_peer("kube-system", {"k8s-app": "kube-dns"})],
        "ports": [*_tcp(53), {"protocol": "UDP", "port": 53}],
    },
    {"to": [_peer(NAMESPACE, {"app": "istiod"})], "ports": _tcp(15012)},
]
# Prometheus scrapes the sidecars' merged metrics.
_METRICS_INGRESS = {"from": [_peer(monitoring.NAMESPACE)], "ports": _tcp(15020)}


def network_policies() -> list[Manifest]:
    """Default deny in the namespace; the gateway may reach the service, the service Redis, nothing else."""

    def policy(name: str, pods: dict[str, Any], ingress: list[Any], egress: list[Any]) -> Manifest:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(name, RATELIMIT_NAMESPACE),
            "spec": {"podSelector": pods, "policyTypes": ["Ingress", "Egress"], "ingress": ingress,
                     "egress": egress},
        }  # fmt: skip

    service, redis = {"matchLabels": labels(SERVICE)}, {"matchLabels": labels(REDIS)}
    return [
        policy("default-deny", {}, [], []),
        policy(
            SERVICE,
            service,
            [{"from": [_peer(NAMESPACE, GATEWAY_SELECTOR)], "ports": _tcp(GRPC_PORT)}, _METRICS_INGRESS],
            [*_BASE_EGRESS, {"to": [{"podSelector": redis}], "ports": _tcp(REDIS_PORT)}],
        ),
        policy(
            REDIS,
            redis,
            [{"from": [{"podSelector": service}], "ports": _tcp(REDIS_PORT)}, _METRICS_INGRESS],
            _BASE_EGRESS,
        ),
    ]


def principal(service_account: str, namespace: str = RATELIMIT_NAMESPACE) -> str:
    """The mesh identity of a service account."""
    return f"cluster.local/ns/{namespace}/sa/{service_account}"


def authorization_policies() -> list[Manifest]:
    """The mesh denies by default: the service admits the gateway's identity, Redis the service's."""

    def allow(app: str, source: str, port: int) -> Manifest:
        return {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": metadata(f"allow-{app}", RATELIMIT_NAMESPACE, labels(app)),
            "spec": {
                "selector": {"matchLabels": labels(app)},
                "action": "ALLOW",
                "rules": [
                    {
                        "from": [{"source": {"principals": [source]}}],
                        "to": [{"operation": {"ports": [str(port)]}}],
                    }
                ],
            },
        }

    return [allow(SERVICE, GATEWAY_PRINCIPAL, GRPC_PORT), allow(REDIS, principal(SERVICE), REDIS_PORT)]


def _filter_patch() -> dict[str, Any]:
    return {
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": "GATEWAY",
            "listener": {
                "filterChain": {"filter": {"name": HCM, "subFilter": {"name": "envoy.filters.http.router"}}}
            },
        },
        "patch": {
            # Right before the router, which is always last: after jwt_authn (the caller header is written)
            # and after authorization, so a refused request never spends a caller's quota.
            "operation": "INSERT_BEFORE",
            "value": {
                "name": "envoy.filters.http.ratelimit",
                "typed_config": {
                    "@type": FILTER_TYPE,
                    "domain": DOMAIN,
                    # Fail open: when the limiter is down or slow, callers keep being served (authorization
                    # still applies); the limit guards fairness and cost, not access, so an outage of it
                    # must not become an outage of the API.
                    "failure_mode_deny": False,
                    "timeout": TIMEOUT,
                    "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                    "rate_limit_service": {
                        "grpc_service": {"envoy_grpc": {"cluster_name": CLUSTER}, "timeout": TIMEOUT},
                        "transport_api_version": "V3",
                    },
                },
            },
        },
    }


def route_actions(model: str) -> list[dict[str, Any]]:
    """The descriptor a model's route sends: (model, its name) then (caller, the validated token's subject).
    A request without the caller header sends none and is not limited; only the unauthenticated health
    checks lack it."""
    return [
        {
            "actions": [
                {"generic_key": {"descriptor_key": MODEL_KEY, "descriptor_value": model}},
                {"request_headers": {"header_name": CALLER_HEADER, "descriptor_key": CALLER_KEY}},
            ]
        }
    ]


def gateway_filter(model_routes: Iterable[tuple[str, Iterable[str]]]) -> Manifest:
    """The gateway's ratelimit filter and, on each model's routes (by name), the actions that describe a
    request to the service."""
    routes = [
        {
            "applyTo": "HTTP_ROUTE",
            "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {"route": {"name": route}}}},
            "patch": {"operation": "MERGE", "value": {"route": {"rate_limits": route_actions(model)}}},
        }
        for model, names in model_routes
        for route in names
    ]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("global-ratelimit", NAMESPACE),
        "spec": {
            "workloadSelector": {"labels": GATEWAY_SELECTOR},
            "configPatches": [_filter_patch(), *routes],
        },
    }


def static_manifests(limits: Iterable[Limit]) -> list[Manifest]:
    """Everything in the ratelimit namespace but the namespace and the two Deployments, in creation order."""
    return [
        config_map(limits),
        service_account(SERVICE),
        service_account(REDIS),
        *services(),
        *network_policies(),
        *authorization_policies(),
        disruption_budget(),
    ]
