"""Istio: Helm values for base, CNI, istiod and the ingress gateway, and the mesh-wide security objects.

Every image comes from the in-region registry by digest (`stacks.artifacts`); the gateway gets its proxy
image through injection, so setting `global.proxy.image` covers sidecars and the gateway alike.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from stacks.artifacts import load_lock
from stacks.manifests import Manifest, metadata
from stacks.manifests.sticky import CALLER_HEADER, lua_source

NAMESPACE = "istio-system"
"""Istio's root namespace: policies here apply to the whole mesh."""
GATEWAY_NAME = "model-api"
GATEWAY_RELEASE = "istio-ingressgateway"
"""Release name of the gateway chart: also the name of its Deployment, Service and service account."""
GATEWAY_SELECTOR = {"istio": "ingressgateway"}
GATEWAY_PRINCIPAL = f"cluster.local/ns/{NAMESPACE}/sa/{GATEWAY_RELEASE}"
"""The gateway's mTLS identity: what pod-side ALLOW policies name as the only caller."""
GATEWAY_HTTPS_PORT = 443
"""Service port of the gateway's HTTPS listener (the NLB's TargetGroupBinding targets it)."""
GATEWAY_HTTPS_TARGET = GATEWAY_HTTPS_PORT
"""Container port behind it (the chart lets the gateway bind 443 through an unprivileged-port sysctl)."""
GATEWAY_STATUS_PORT = 15021
"""The gateway's readiness endpoint (`/healthz/ready`), for the NLB's target health check."""
ISTIOD_SELECTOR = {"app": "istiod"}
HCM = "envoy.filters.network.http_connection_manager"
LUA_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
ZONE = "topology.kubernetes.io/zone"


def _image(key: str, registry: str) -> str:
    return load_lock().image(key).ref(registry)


def _global(registry: str) -> dict[str, Any]:
    """hub/tag point in-region too, so anything that falls back to them never reaches the internet."""
    proxy = load_lock().image("istio-proxyv2")
    return {"hub": f"{registry}/{proxy.repository.rsplit('/', 1)[0]}", "tag": proxy.tag}


def zone_spread(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """Spread pods across zones. ScheduleAnyway: a zone without room (or a zone outage) must not block
    scale-out or rescheduling in the others; the PodDisruptionBudget keeps one pod through drains."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": ZONE,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(labels)},
        }
    ]


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, mappings key by key (as Helm merges values); other values replaced."""
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = merge(current, value)
        else:
            out[key] = value
    return out


def istiod_values(registry: str) -> dict[str, Any]:
    """istiod: two replicas across zones with a PDB, JSON access log, no outbound traffic to unknown hosts."""
    proxy = _image("istio-proxyv2", registry)
    return {
        "pilot": {
            "image": _image("istio-pilot", registry),
            "autoscaleMin": 2,
            "replicaCount": 2,
            "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}},
            # Pods are redirected into the mesh by the CNI node agent, so they need no privileged init
            # container.
            "cni": {"enabled": True},
            # The proxy runs as a native sidecar (an init container that keeps running), so the model-sync
            # init container after it reaches S3 through the mesh instead of around it.
            # Gateways keep every Service's cluster (the default, pinned): the ratelimit service is called by
            # a filter, not a route, so trimming gateways to routed clusters would drop it.
            "env": {"ENABLE_NATIVE_SIDECARS": "true", "PILOT_FILTER_GATEWAY_CLUSTER_CONFIG": "false"},
            "topologySpreadConstraints": zone_spread(ISTIOD_SELECTOR),
        },
        "meshConfig": {
            "accessLogFile": "/dev/stdout",
            "accessLogEncoding": "JSON",
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            "enablePrometheusMerge": True,
        },
        "global": _global(registry)
        | {
            "proxy": {"image": proxy, "holdApplicationUntilProxyStarts": True},
            # The CNI validation init container uses this image.
            "proxy_init": {"image": proxy},
            "defaultPodDisruptionBudget": {"enabled": True},
        },
    }


def cni_values(registry: str) -> dict[str, Any]:
    """The Istio CNI node agent."""
    return {
        "profile": "default",
        "global": _global(registry),
        "cni": {"image": _image("istio-install-cni", registry), "excludeNamespaces": ["kube-system"]},
    }


def gateway_values() -> dict[str, Any]:
    """The ingress gateway: a ClusterIP Service, since the NLB lives in the infra layer and registers the
    pods' IPs through a TargetGroupBinding. Its image is injected (`global.proxy.image`)."""
    return {
        "labels": GATEWAY_SELECTOR,
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 10},
        "resources": {
            "requests": {"cpu": "500m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "service": {
            "type": "ClusterIP",
            "ports": [
                {
                    "name": "status-port",
                    "port": GATEWAY_STATUS_PORT,
                    "targetPort": GATEWAY_STATUS_PORT,
                    "protocol": "TCP",
                },
                {
                    "name": "https",
                    "port": GATEWAY_HTTPS_PORT,
                    "targetPort": GATEWAY_HTTPS_TARGET,
                    "protocol": "TCP",
                },
            ],
        },
        "podDisruptionBudget": {"minAvailable": 1},
        "topologySpreadConstraints": zone_spread(GATEWAY_SELECTOR),
    }


def peer_authentication() -> Manifest:
    """Mesh-wide mutual TLS, STRICT: set in the root namespace, it applies to every workload."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": metadata("default", NAMESPACE),
        "spec": {"mtls": {"mode": "STRICT"}},
    }


def deny_all() -> Manifest:
    """Mesh-wide deny by default: an ALLOW policy with no rules in the root namespace matches nothing, so
    every workload refuses every request that no ALLOW policy of its own admits."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata("deny-all", NAMESPACE),
        "spec": {},
    }


def gateway(credential_name: str) -> Manifest:
    """HTTPS only (the NLB listens on 443 alone): the 443 server terminates the NLB's inner TLS hop.

    Hosts are `*` because the NLB opens its TLS connection to a target without SNI, so a server bound to
    the API host would never match; the VirtualServices still route on the Host header.
    """
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": metadata(GATEWAY_NAME, NAMESPACE),
        "spec": {
            "selector": GATEWAY_SELECTOR,
            "servers": [
                {
                    "port": {"number": GATEWAY_HTTPS_PORT, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["*"],
                    "tls": {
                        "mode": "SIMPLE",
                        "credentialName": credential_name,
                        "minProtocolVersion": "TLSV1_2",
                    },
                }
            ],
        },
    }


def request_authentication(issuer: str, jwks_uri: str, audiences: tuple[str, ...]) -> Manifest:
    """Validates bearer tokens at the gateway and writes the token's subject to the caller header (an
    invalid token is refused, a missing one left to authorization)."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": metadata("model-api-jwt", NAMESPACE),
        "spec": {
            "selector": {"matchLabels": GATEWAY_SELECTOR},
            "jwtRules": [
                {
                    "issuer": issuer,
                    "jwksUri": jwks_uri,
                    "audiences": list(audiences),
                    "forwardOriginalToken": False,
                    "outputClaimToHeaders": [{"header": CALLER_HEADER, "claim": "sub"}],
                }
            ],
        },
    }


def health_paths(models: Iterable[str]) -> list[str]:
    """The V2 model-ready paths Route53's health checks probe, one per model."""
    return [f"/v2/models/{model}/ready" for model in sorted(models)]


def deny_without_token(models: Iterable[str]) -> Manifest:
    """At the gateway, a request without a valid token is refused unless it is a GET of a model's ready
    path (Route53's health checkers carry no token); `health_allow` then admits only those."""
    paths = health_paths(models)
    rule: dict[str, Any] = {"from": [{"source": {"notRequestPrincipals": ["*"]}}]}
    if paths:
        rule["to"] = [{"operation": {"notPaths": paths}}, {"operation": {"notMethods": ["GET"]}}]
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata("deny-without-token", NAMESPACE),
        "spec": {
            "selector": {"matchLabels": GATEWAY_SELECTOR},
            "action": "DENY",
            "rules": [rule],
        },
    }


def health_allow(api_hosts: Iterable[str], models: Iterable[str]) -> Manifest:
    """Admits Route53's health checks at the gateway: GET of exactly `/v2/models/<model>/ready` on the API
    hosts, without a token. The request still goes to a serving pod, so a check passes only when the model
    is loaded and its route works."""
    paths = health_paths(models)
    if not paths:
        # An operation without paths would admit every tokenless GET on the hosts.
        raise ValueError("health_allow needs at least one model")
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata("allow-health-checks", NAMESPACE),
        "spec": {
            "selector": {"matchLabels": GATEWAY_SELECTOR},
            "action": "ALLOW",
            "rules": [
                {
                    "to": [
                        {
                            "operation": {
                                "hosts": sorted(set(api_hosts)),
                                "methods": ["GET"],
                                "paths": paths,
                            }
                        }
                    ]
                }
            ],
        },
    }


def caller_filter(sticky_headers: Mapping[str, str]) -> Manifest:
    """Runs the Lua filter first in the gateway's HTTP chain, before jwt_authn: it strips client-sent caller
    and bucket headers before jwt_authn writes the caller from the validated token, then sets the bucket."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("caller-and-bucket", NAMESPACE),
        "spec": {
            "workloadSelector": {"labels": GATEWAY_SELECTOR},
            "configPatches": [
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {"name": HCM}}}},
                    "patch": {
                        # First, not "before jwt_authn": INSERT_BEFORE a filter that is absent (no
                        # RequestAuthentication yet) silently inserts nothing.
                        "operation": "INSERT_FIRST",
                        "value": {
                            "name": "envoy.filters.http.lua",
                            "typed_config": {
                                "@type": LUA_TYPE,
                                "default_source_code": {"inline_string": lua_source(sticky_headers)},
                            },
                        },
                    },
                }
            ],
        },
    }


def _service_entry(name: str, hosts: list[str], resolution: str) -> Manifest:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": metadata(name, NAMESPACE),
        "spec": {
            "hosts": hosts,
            "location": "MESH_EXTERNAL",
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
            "resolution": resolution,
        },
    }


def aws_service_entries(region: str, dynamodb: bool = False) -> list[Manifest]:
    """The region's S3 and STS endpoints, the only AWS APIs pods call (model sync with IRSA); with
    REGISTRY_ONLY, every other outside host stays unreachable. TLS passes through the sidecar by SNI.

    Bucket hosts (`<bucket>.s3.<region>...`, the SDK's virtual-hosted style) are a wildcard, which Istio
    accepts only with resolution NONE: the sidecar forwards to the address the client resolved.

    With `dynamodb` (a stack with a feature store) the region's DynamoDB endpoint too, where serving pods read
    features (through the VPC's gateway endpoint, which the route tables reach by the endpoint's prefix list).
    """
    hosts = [f"s3.{region}.amazonaws.com", f"sts.{region}.amazonaws.com"]
    if dynamodb:
        hosts.append(f"dynamodb.{region}.amazonaws.com")
    return [
        _service_entry("aws-apis", hosts, "DNS"),
        _service_entry("aws-s3-buckets", [f"*.s3.{region}.amazonaws.com"], "NONE"),
    ]


def egress_entries(hosts: Iterable[str]) -> list[Manifest]:
    """Further HTTPS hosts outside the mesh (an on-premises object store), one ServiceEntry each."""
    return [_service_entry(f"egress-{i}", [host], "DNS") for i, host in enumerate(sorted(set(hosts)))]
