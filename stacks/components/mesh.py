"""Mesh: Istio from the in-region chart repository, deny-by-default authorization and STRICT mTLS, the
gateway's token checks, caller header and sticky bucket, and global rate limiting."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from stacks.artifacts import load_lock
from stacks.components import kube
from stacks.manifests import Manifest, mesh, metadata, ratelimit, serving, sticky
from stacks.settings import GatewayConfig, ModelConfig


@dataclass(frozen=True, kw_only=True)
class MeshArgs:
    """Inputs of `Mesh`."""

    gateway: GatewayConfig
    """Host, certificate secret and token issuer of the public API."""
    registry: pulumi.Input[str]
    """The in-region registry host every chart and image is pulled from."""
    models: tuple[ModelConfig, ...]
    """The served models: their rate limits, routes, sticky headers and health paths."""
    region: str | None
    """AWS region whose S3 and STS endpoints pods may reach; None on premises (no AWS endpoints)."""
    health_hosts: tuple[str, ...] = ()
    """Host names Route53's health checks send; empty means the API host alone."""
    dynamodb: bool = False
    """Let pods reach the region's DynamoDB endpoint (a stack with a feature store)."""
    egress_hosts: tuple[str, ...] = ()
    """Further HTTPS hosts outside the cluster that pods may reach (an on-premises object store)."""
    istiod_values: Mapping[str, Any] = field(default_factory=dict)
    """Values merged into istiod's (e.g. the tracing extension provider)."""


def _on_registry(registry: pulumi.Output[str], build: Callable[[str], Manifest]) -> Manifest:
    """A Deployment whose images wait for the registry host (an Output at run time)."""
    built = registry.apply(build)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": built.apply(lambda m: m["metadata"]),
        "spec": built.apply(lambda m: m["spec"]),
    }


class Mesh(pulumi.ComponentResource):
    """Istio base, CNI, istiod and the ingress gateway, with the objects that make the mesh secure by
    default, and the rate limit service the gateway consults."""

    gateway_ref: str
    """`namespace/name` of the Istio Gateway the VirtualServices bind to."""
    gateway_service: str
    """`namespace/name` of the gateway's ClusterIP Service (the TargetGroupBinding's `serviceRef`)."""

    def __init__(self, name: str, args: MeshArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:mesh:Mesh", name, None, opts)
        registry = pulumi.Output.from_input(args.registry)
        namespace = kube.create(
            f"{name}-ns",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(mesh.NAMESPACE)},
            pulumi.ResourceOptions(parent=self),
        )
        base = self._chart(name, "base", registry, {"defaultRevision": "default"}, [namespace])
        cni = self._chart(name, "cni", registry, registry.apply(mesh.cni_values), [base])
        istiod_values = registry.apply(lambda r: mesh.merge(mesh.istiod_values(r), args.istiod_values))
        istiod = self._chart(name, "istiod", registry, istiod_values, [base, cni])
        self._chart(name, "gateway", registry, mesh.gateway_values(), [istiod], release=mesh.GATEWAY_RELEASE)
        after = pulumi.ResourceOptions(parent=self, depends_on=[istiod])
        for suffix, manifest in self._objects(args).items():
            kube.create(f"{name}-{suffix}", manifest, after)
        self._rate_limit_service(name, args, registry, istiod)
        self.gateway_ref = f"{mesh.NAMESPACE}/{mesh.GATEWAY_NAME}"
        self.gateway_service = f"{mesh.NAMESPACE}/{mesh.GATEWAY_RELEASE}"
        self.register_outputs({"gateway_ref": self.gateway_ref, "gateway_service": self.gateway_service})

    @staticmethod
    def _objects(args: MeshArgs) -> dict[str, Manifest]:
        models = [m.name for m in args.models]
        headers = sticky.sticky_headers((m.name, m.variants.sticky_header) for m in args.models)
        gateway = args.gateway
        objects = {
            "peer-authentication": mesh.peer_authentication(),
            "deny-all": mesh.deny_all(),
            "api-gateway": mesh.gateway(gateway.tls_credential_name),
            "request-authentication": mesh.request_authentication(
                gateway.jwt_issuer, gateway.jwks_uri, gateway.audiences
            ),
            "deny-without-token": mesh.deny_without_token(models),
            "caller-and-bucket": mesh.caller_filter(headers),
            "global-ratelimit": ratelimit.gateway_filter(
                (m.name, serving.route_names(m)) for m in args.models
            ),
        }
        if models:
            objects["allow-health-checks"] = mesh.health_allow(
                args.health_hosts or (gateway.api_host,), models
            )
        entries = mesh.aws_service_entries(args.region, args.dynamodb) if args.region else []
        entries += mesh.egress_entries(args.egress_hosts)
        return objects | {f"se-{e['metadata']['name']}": e for e in entries}

    def _rate_limit_service(
        self, name: str, args: MeshArgs, registry: pulumi.Output[str], istiod: pulumi.Resource
    ) -> None:
        """The ratelimit namespace; its pods come after istiod so the injector gives them their sidecars."""
        limits = [(m.name, m.rate_limit.requests_per_second) for m in args.models]
        namespace = kube.create(f"{name}-rl-ns", ratelimit.namespace(), pulumi.ResourceOptions(parent=self))
        after = pulumi.ResourceOptions(parent=self, depends_on=[namespace, istiod])
        for manifest in ratelimit.static_manifests(limits):
            kube.create(
                f"{name}-rl-{manifest['kind'].lower()}-{manifest['metadata']['name']}", manifest, after
            )
        redis = kube.create(f"{name}-rl-redis", _on_registry(registry, ratelimit.redis_deployment), after)
        kube.create(
            f"{name}-rl-service",
            _on_registry(registry, lambda r: ratelimit.service_deployment(r, limits)),
            pulumi.ResourceOptions(parent=self, depends_on=[namespace, istiod, redis]),
        )

    def _chart(
        self,
        name: str,
        key: str,
        registry: pulumi.Output[str],
        values: pulumi.Input[Mapping[str, Any]],
        depends_on: list[pulumi.Resource],
        release: str | None = None,
    ) -> k8s.helm.v3.Release:
        chart = load_lock().chart(f"istio-{key}")
        return k8s.helm.v3.Release(
            f"{name}-{key}",
            name=release or f"istio-{key}",
            chart=registry.apply(chart.oci),
            version=chart.version,
            namespace=mesh.NAMESPACE,
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
