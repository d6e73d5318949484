"""Mesh: Istio from pinned Helm charts, mesh-wide STRICT mTLS, the TLS gateway and its token checks."""

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from stacks.components import kube
from stacks.manifests import mesh, metadata
from stacks.settings import GatewayConfig


@dataclass(frozen=True, kw_only=True)
class MeshArgs:
    """Inputs of `Mesh`."""

    gateway: GatewayConfig
    """Host, certificate and token issuer of the public API."""


class Mesh(pulumi.ComponentResource):
    """Istio base, istiod and the ingress gateway, with the objects that make the mesh secure by default."""

    gateway_ref: str
    gateway_hostname: pulumi.Output[str]

    def __init__(self, name: str, args: MeshArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:mesh:Mesh", name, None, opts)
        namespace = kube.create(
            f"{name}-ns",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(mesh.NAMESPACE)},
            pulumi.ResourceOptions(parent=self),
        )
        base = self._chart(f"{name}-base", "base", {"defaultRevision": "default"}, [namespace])
        cni = self._chart(f"{name}-cni", "cni", mesh.cni_values(), [base])
        istiod = self._chart(f"{name}-istiod", "istiod", mesh.istiod_values(), [base, cni])
        gateway = self._chart(
            f"{name}-gateway", "gateway", mesh.gateway_values(), [istiod], release="istio-ingressgateway"
        )
        after = pulumi.ResourceOptions(parent=self, depends_on=[istiod])
        objects = {
            "peer-authentication": mesh.peer_authentication(),
            "gateway": mesh.gateway(args.gateway.api_host, args.gateway.tls_credential_name),
            "request-authentication": mesh.request_authentication(
                args.gateway.jwt_issuer, args.gateway.jwks_uri, args.gateway.audiences
            ),
            "deny-without-token": mesh.deny_without_token(),
            "allow-https-redirect": mesh.allow_https_redirect(),
            "local-ratelimit": mesh.rate_limit_filter(),
        }
        for suffix, manifest in objects.items():
            kube.create(f"{name}-{suffix}", manifest, after)
        service = k8s.core.v1.Service.get(
            f"{name}-gateway-service",
            f"{mesh.NAMESPACE}/istio-ingressgateway",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
        )
        self.gateway_ref = f"{mesh.NAMESPACE}/{mesh.GATEWAY_NAME}"
        self.gateway_hostname = service.status.apply(
            lambda s: (
                s.load_balancer.ingress[0].hostname
                if s and s.load_balancer and s.load_balancer.ingress
                else ""
            )
        ).apply(lambda h: h or "")
        self.register_outputs({"gateway_ref": self.gateway_ref, "gateway_hostname": self.gateway_hostname})

    def _chart(
        self,
        name: str,
        chart: str,
        values: dict[str, object],
        depends_on: list[pulumi.Resource],
        release: str | None = None,
    ) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            name,
            name=release or f"istio-{chart}",
            chart=chart,
            version=mesh.ISTIO_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=mesh.ISTIO_CHARTS),
            namespace=mesh.NAMESPACE,
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
