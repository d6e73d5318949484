"""Istio: Helm values for base, istiod and the ingress gateway, and the mesh-wide security objects."""

from typing import Any

from stacks.manifests import Manifest, metadata

ISTIO_VERSION = "1.30.8"
"""Istio release of the Helm charts; the CRD schemas the tests validate against come from the same release."""
ISTIO_CHARTS = "https://istio-release.storage.googleapis.com/charts"
NAMESPACE = "istio-system"
GATEWAY_NAME = "model-api"
LOCAL_RATE_LIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
GATEWAY_SELECTOR = {"istio": "ingressgateway"}
# Container ports of the gateway chart's Service ports 80 and 443.
GATEWAY_HTTP_TARGET = 80
GATEWAY_HTTPS_TARGET = 443


def istiod_values() -> dict[str, Any]:
    """istiod: highly available, access log as JSON, no outbound traffic to unknown hosts."""
    return {
        "pilot": {
            "autoscaleMin": 2,
            "replicaCount": 2,
            "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}},
            # Pods are redirected into the mesh by the CNI node agent, so they need no privileged init
            # container.
            "cni": {"enabled": True},
        },
        "meshConfig": {
            "accessLogFile": "/dev/stdout",
            "accessLogEncoding": "JSON",
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            "enablePrometheusMerge": True,
        },
        "global": {"proxy": {"holdApplicationUntilProxyStarts": True}},
    }


def cni_values() -> dict[str, Any]:
    """The Istio CNI node agent."""
    return {"profile": "default", "cni": {"excludeNamespaces": ["kube-system"]}}


def gateway_values() -> dict[str, Any]:
    """The ingress gateway behind an internet-facing NLB that keeps client IPs."""
    return {
        "labels": GATEWAY_SELECTOR,
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 10},
        "service": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "annotations": {
                "service.beta.kubernetes.io/aws-load-balancer-type": "external",
                "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
                "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled": "true",
            },
            "ports": [
                {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
                {"name": "http2", "port": 80, "targetPort": GATEWAY_HTTP_TARGET, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": GATEWAY_HTTPS_TARGET, "protocol": "TCP"},
            ],
        },
        "podDisruptionBudget": {"minAvailable": 1},
    }


def peer_authentication() -> Manifest:
    """Mesh-wide mutual TLS, STRICT: set in the root namespace, it applies to every workload."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": metadata("default", NAMESPACE),
        "spec": {"mtls": {"mode": "STRICT"}},
    }


def gateway(api_host: str, credential_name: str) -> Manifest:
    """TLS 1.2+ on 443 with the certificate from config; port 80 only redirects to HTTPS."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": metadata(GATEWAY_NAME, NAMESPACE),
        "spec": {
            "selector": GATEWAY_SELECTOR,
            "servers": [
                {
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": [api_host],
                    "tls": {
                        "mode": "SIMPLE",
                        "credentialName": credential_name,
                        "minProtocolVersion": "TLSV1_2",
                    },
                },
                {
                    "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                    "hosts": [api_host],
                    "tls": {"httpsRedirect": True},
                },
            ],
        },
    }


def request_authentication(issuer: str, jwks_uri: str, audiences: tuple[str, ...]) -> Manifest:
    """Validates bearer tokens at the gateway; an invalid token is refused, a missing one left to
    authorization."""
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
                }
            ],
        },
    }


def deny_without_token() -> Manifest:
    """Deny-by-default at the gateway: HTTPS requests without a valid token never reach a route.

    Per-model ALLOW policies (scoped to the model's paths and scope) then decide; a request that matches
    none of
    them is denied too, because any ALLOW policy on a workload turns its default into deny.
    """
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata("deny-without-token", NAMESPACE),
        "spec": {
            "selector": {"matchLabels": GATEWAY_SELECTOR},
            "action": "DENY",
            "rules": [
                {
                    "from": [{"source": {"notRequestPrincipals": ["*"]}}],
                    "to": [{"operation": {"ports": [str(GATEWAY_HTTPS_TARGET)]}}],
                }
            ],
        },
    }


def allow_https_redirect() -> Manifest:
    """The plain-HTTP listener only answers with a redirect to HTTPS, so it is allowed without a token."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata("allow-https-redirect", NAMESPACE),
        "spec": {
            "selector": {"matchLabels": GATEWAY_SELECTOR},
            "action": "ALLOW",
            "rules": [{"to": [{"operation": {"ports": [str(GATEWAY_HTTP_TARGET)]}}]}],
        },
    }


def rate_limit_filter() -> Manifest:
    """Adds Envoy's local rate limit filter to the gateway; it acts only on routes that configure a bucket."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata("local-ratelimit", NAMESPACE),
        "spec": {
            "workloadSelector": {"labels": GATEWAY_SELECTOR},
            "configPatches": [
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {
                        "context": "GATEWAY",
                        "listener": {
                            "filterChain": {
                                "filter": {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "subFilter": {"name": "envoy.filters.http.router"},
                                }
                            }
                        },
                    },
                    "patch": {
                        "operation": "INSERT_BEFORE",
                        "value": {
                            "name": "envoy.filters.http.local_ratelimit",
                            "typed_config": {
                                "@type": LOCAL_RATE_LIMIT_TYPE,
                                "stat_prefix": "http_local_rate_limiter",
                            },
                        },
                    },
                }
            ],
        },
    }
