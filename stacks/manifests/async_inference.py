"""Manifests of a model's asynchronous inference: its workers, their scaling on the stream's backlog, the
queue's credentials and the one outside host the mesh lets them reach.

The workers run the serving image with `SERVING_ASYNC_WORKER=true`: the same dataplane, fed from the model's
Redis stream instead of the network. Unlike a serving Deployment, which holds one version, a worker holds
every version and the model's variants (`config.yaml`), since an async request may name a version or leave the
choice to the weights, and its result records the version that served it.

KEDA scales the workers on the consumer group's lag (entries not yet delivered to any worker, Redis 7's
`XINFO GROUPS`): the backlog itself. The pending-entries count would only see what workers already hold (at
most a batch each) and never grow with the queue.
"""

from typing import Any

import yaml

from stacks.manifests import Manifest, metadata, namespace_peer, policy_ports, serving
from stacks.settings import ModelConfig

CONSUMER_GROUP = "workers"
"""The stream's consumer group the workers read as (the serving image's)."""
QUEUE_STORE = "job-queue"
"""The ClusterSecretStore (Secrets Manager of the region) the queue's Secret is synced from."""
QUEUE_PASSWORD_KEY = "password"  # noqa: S105 - a Secret's key name
"""Key of the bare AUTH token in the queue Secret (KEDA's scaler takes it apart from the URL)."""
VARIANTS_FILE = "config.yaml"
POLLING_SECONDS = 15
COOLDOWN_SECONDS = 300
WAIT_FOR_READY = {"pulumi.com/waitFor": "condition=Ready"}
CALLBACK_DEFAULT_PORT = 443
"""A callback host given without a port is reached on HTTPS's."""


def _workers(model: ModelConfig) -> Any:
    if model.async_workers is None:
        raise ValueError(f"model {model.name} takes no async requests")
    return model.async_workers


def worker_name(model: ModelConfig) -> str:
    """The workers' Deployment (and everything of theirs)."""
    return f"{model.name}-async"


def worker_labels(model: ModelConfig) -> dict[str, str]:
    """The workers' pod labels: not the model's `app`, so its Service, DestinationRule and NetworkPolicy,
    which select the serving pods, never take a worker."""
    return {
        "app": worker_name(model),
        "app.kubernetes.io/name": model.name,
        "app.kubernetes.io/component": "async",
    }


def queue_address(host: str) -> str:
    """`host:port` of the queue's primary."""
    return f"{host}:{serving.QUEUE_PORT}"


def external_secret(model: ModelConfig, host: str, secret_arn: str) -> Manifest:
    """The queue Secret of a model, synced from the AUTH token's Secrets Manager secret: the `rediss://` URL
    the pods read and the bare token KEDA's scaler takes. Pulumi waits until it is synced, so the pods that
    read it start with it."""
    url = f"rediss://:{{{{ .token }}}}@{queue_address(host)}/0"
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": metadata(serving.queue_secret_name(model), model.tenant, worker_labels(model))
        | {"annotations": WAIT_FOR_READY},
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": QUEUE_STORE},
            "target": {
                "name": serving.queue_secret_name(model),
                "creationPolicy": "Owner",
                "template": {
                    "engineVersion": "v2",
                    "data": {serving.QUEUE_URL_KEY: url, QUEUE_PASSWORD_KEY: "{{ .token }}"},
                },
            },
            "data": [{"secretKey": "token", "remoteRef": {"key": secret_arn}}],
        },
    }


def callback_external_secret(model: ModelConfig, secret_arn: str) -> Manifest:
    """The callback Secret of a model, synced from the HMAC key's Secrets Manager secret (the same store as
    the queue's token): one key, mounted read-only as the file the pods sign callbacks with."""
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": metadata(serving.callback_secret_name(model), model.tenant, worker_labels(model))
        | {"annotations": WAIT_FOR_READY},
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": QUEUE_STORE},
            "target": {"name": serving.callback_secret_name(model), "creationPolicy": "Owner"},
            "data": [{"secretKey": serving.CALLBACK_KEY_FILE, "remoteRef": {"key": secret_arn}}],
        },
    }


def callback_port(host: str) -> int:
    """The port of an allowed callback host (`host:port`, or 443 for HTTPS)."""
    return int(host.rsplit(":", 1)[1]) if ":" in host else CALLBACK_DEFAULT_PORT


def callback_service_entries(model: ModelConfig, hosts: tuple[str, ...]) -> list[Manifest]:
    """One ServiceEntry per allowed callback host, in the model's namespace only: the mesh runs
    REGISTRY_ONLY, so a callback to any other host is dropped by the sidecar (and the egress firewall lets
    only these hosts out of the VPC). TLS passes through by SNI; the host is resolved by DNS."""
    entries = []
    for host in hosts:
        name, port = host.split(":", 1)[0], callback_port(host)
        entries.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "ServiceEntry",
                "metadata": metadata(
                    f"{model.name}-callback-{name.replace('.', '-')}-{port}"[:63].rstrip("-"),
                    model.tenant,
                    worker_labels(model),
                ),
                "spec": {
                    "hosts": [name],
                    "exportTo": ["."],
                    "location": "MESH_EXTERNAL",
                    "ports": [{"number": port, "name": f"tls-{port}", "protocol": "TLS"}],
                    "resolution": "DNS",
                },
            }
        )
    return entries


def trigger_authentication(model: ModelConfig) -> Manifest:
    """KEDA's credentials for the queue: the token from the model's queue Secret."""
    name = serving.queue_secret_name(model)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": metadata(name, model.tenant, worker_labels(model)),
        "spec": {"secretTargetRef": [{"parameter": "password", "name": name, "key": QUEUE_PASSWORD_KEY}]},
    }


def scaled_object(model: ModelConfig, host: str) -> Manifest:
    """Workers scaled on the backlog: one per `backlog_per_worker` undelivered jobs, between the floor and
    the ceiling; scale-down waits five minutes of a smaller backlog, so a burst's tail is not starved."""
    workers = _workers(model)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(worker_name(model), model.tenant, worker_labels(model)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": worker_name(model)},
            "minReplicaCount": workers.min_workers,
            "maxReplicaCount": workers.max_workers,
            "pollingInterval": POLLING_SECONDS,
            "cooldownPeriod": COOLDOWN_SECONDS,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": COOLDOWN_SECONDS}}
                }
            },
            "triggers": [
                {
                    "type": "redis-streams",
                    "metadata": {
                        "address": queue_address(host),
                        "stream": serving.job_stream(model),
                        "consumerGroup": CONSUMER_GROUP,
                        "lagCount": str(workers.backlog_per_worker),
                        "enableTLS": "true",
                    },
                    "authenticationRef": {"name": serving.queue_secret_name(model)},
                }
            ],
        },
    }


def variants_name(model: ModelConfig) -> str:
    """The ConfigMap with the model's `config.yaml` for the workers."""
    return f"{worker_name(model)}-variants"


def variants_config(model: ModelConfig) -> Manifest:
    """The model's variants in the serving image's `config.yaml` shape (the stack file's own): the workers
    apply the weights, header routes and faults to async requests as Istio does to synchronous ones."""
    variants = model.variants
    block: dict[str, Any] = {"weights": dict(variants.weights)}
    if variants.sticky_header is not None:
        block["sticky"] = {"header": variants.sticky_header}
    if variants.routes:
        block["routes"] = [
            {"header": r.header, "value": r.value, "version": r.version} for r in variants.routes
        ]
    if variants.shadow is not None:
        block["shadow"] = {"version": variants.shadow.version, "percent": variants.shadow.percent}
    if variants.faults:
        block["faults"] = {
            v: {"delay_ms": f.delay_ms, "error_ratio": f.error_ratio} for v, f in variants.faults
        }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(variants_name(model), model.tenant, worker_labels(model)),
        "data": {VARIANTS_FILE: yaml.safe_dump({"variants": block}, sort_keys=True)},
    }


def _health(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _worker_container(server: dict[str, Any], model: ModelConfig) -> dict[str, Any]:
    """The serving container as a worker: it consumes the stream, holds every version (ready once all are
    loaded) and reads the variants mounted beside them."""
    variants = {
        "name": "variants",
        "mountPath": f"{serving.MODEL_DIR}/{model.name}/{VARIANTS_FILE}",
        "subPath": VARIANTS_FILE,
        "readOnly": True,
    }
    # A shallow copy: the image may be an Output, which cannot be deep-copied.
    return server | {
        "env": [*server["env"], {"name": "SERVING_ASYNC_WORKER", "value": "true"}],
        "startupProbe": _health("/v2/health/ready", 5, 60),
        "readinessProbe": _health("/v2/health/ready", 5, 3),
        "volumeMounts": [*server["volumeMounts"], variants],
    }


def worker_deployment(spec: serving.ServingSpec) -> Manifest:
    """The workers' Deployment: a serving pod's image, identity, store and hardening, with one model-sync
    init container per version and no replicas (KEDA owns them)."""
    model = spec.model
    versions = model.variants.versions
    base = serving.deployment(spec, versions[0])
    pod = base["spec"]["template"]
    labels = worker_labels(model)
    pod["metadata"]["labels"] = labels
    pod["spec"]["initContainers"] = [
        serving.sync_container(spec, version) | {"name": f"model-sync-{serving.subset(version)}"}
        for version in versions
    ]
    pod["spec"]["containers"] = [_worker_container(pod["spec"]["containers"][0], model)]
    pod["spec"]["volumes"].append({"name": "variants", "configMap": {"name": variants_name(model)}})
    pod["spec"]["topologySpreadConstraints"][0]["labelSelector"] = {"matchLabels": labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(worker_name(model), model.tenant, labels),
        "spec": {"selector": {"matchLabels": labels}, "strategy": base["spec"]["strategy"], "template": pod},
    }


def disruption_budget(model: ModelConfig) -> Manifest:
    """At most one worker drained at a time: a drained worker's unfinished jobs wait for redelivery."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(worker_name(model), model.tenant, worker_labels(model)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": worker_labels(model)}},
    }


def network_policy(model: ModelConfig, callback_hosts: tuple[str, ...] = ()) -> Manifest:
    """On top of the tenant's default deny: the workers take no requests (Prometheus' scrape of the merged
    metrics port aside) and reach DNS, istiod, the model store and result bucket (HTTPS), the queue, and the
    callback hosts' ports other than 443."""

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(worker_name(model), model.tenant, worker_labels(model)),
        "spec": {
            "podSelector": {"matchLabels": worker_labels(model)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [namespace_peer("monitoring")], "ports": policy_ports(serving.MERGED_METRICS_PORT)}
            ],
            "egress": [
                {
                    "to": [namespace_peer("kube-system")],
                    "ports": policy_ports(53) + policy_ports(53, protocol="UDP"),
                },
                {"to": [namespace_peer(serving.GATEWAY_NAMESPACE)], "ports": policy_ports(15012, 15017)},
                {"ports": policy_ports(443)},
                {"ports": policy_ports(serving.QUEUE_PORT)},
                *(
                    {"ports": policy_ports(p)}
                    for p in sorted({callback_port(h) for h in callback_hosts} - {443})
                ),
            ],
        },
    }


def queue_service_entry(model: ModelConfig, host: str) -> Manifest:
    """The queue's primary as the one outside host the tenant's sidecars may reach on its port (the mesh
    allows only registered hosts), visible to that namespace alone. TLS passes through by SNI; resolution
    NONE keeps the address the client resolved, which follows the primary across a failover at once."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": metadata(f"{model.name}-job-queue", model.tenant, worker_labels(model)),
        "spec": {
            "hosts": [host],
            "exportTo": ["."],
            "location": "MESH_EXTERNAL",
            "ports": [{"number": serving.QUEUE_PORT, "name": "tls-redis", "protocol": "TLS"}],
            "resolution": "NONE",
        },
    }
