"""Cluster add-ons: the AWS Load Balancer Controller with the gateway's TargetGroupBinding, cert-manager with
the gateway's certificate chain, autoscaling (metrics-server; the Cluster Autoscaler on EKS), and what
asynchronous inference needs (KEDA and External Secrets).

Charts and images come from the in-region registry, whose host may be an Output: values are built inside
`apply`.
"""

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from stacks.artifacts import load_lock
from stacks.components import kube
from stacks.manifests import addons, async_inference, metadata


def release(
    parent: pulumi.Resource,
    name: str,
    chart_key: str,
    registry: pulumi.Input[str],
    namespace: str,
    values: pulumi.Input[dict[str, Any]],
    depends_on: list[pulumi.Resource] | None = None,
) -> k8s.helm.v3.Release:
    """A Helm release of a locked chart from the in-region OCI repository; atomic, so a failed install rolls
    back instead of leaving half a release."""
    chart = load_lock().chart(chart_key)
    return k8s.helm.v3.Release(
        name,
        name=chart.name,
        chart=pulumi.Output.from_input(registry).apply(chart.oci),
        version=chart.version,
        namespace=namespace,
        values=values,
        atomic=True,
        cleanup_on_fail=True,
        timeout=900,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on or []),
    )


@dataclass(frozen=True, kw_only=True)
class LoadBalancerControllerArgs:
    """Inputs of `LoadBalancerController`."""

    registry: pulumi.Input[str]
    """The region's registry host (charts and images)."""
    cluster_name: pulumi.Input[str]
    """EKS cluster name."""
    region: str
    """AWS region of the cluster (given, since pods cannot reach the instance metadata)."""
    vpc_id: pulumi.Input[str]
    """The cluster's VPC (given, for the same reason)."""
    role_arn: pulumi.Input[str]
    """IRSA role of the controller (created by infra)."""
    target_group_arn: pulumi.Input[str]
    """infra's NLB target group the gateway pods register in."""
    nlb_security_group_id: pulumi.Input[str]
    """Security group of the NLB, allowed to reach the gateway pods."""


class LoadBalancerController(pulumi.ComponentResource):
    """The AWS Load Balancer Controller, and the binding of infra's NLB target group to the gateway."""

    binding_name: str

    def __init__(
        self, name: str, args: LoadBalancerControllerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:addons:LoadBalancerController", name, None, opts)
        values = pulumi.Output.all(
            registry=args.registry, cluster=args.cluster_name, vpc=args.vpc_id, role=args.role_arn
        ).apply(
            lambda v: addons.lb_controller_values(
                v["registry"], v["cluster"], args.region, v["vpc"], v["role"]
            )
        )
        controller = release(
            self,
            f"{name}-release",
            "aws-load-balancer-controller",
            args.registry,
            addons.SYSTEM_NAMESPACE,
            values,
        )
        binding = pulumi.Output.all(arn=args.target_group_arn, sg=args.nlb_security_group_id).apply(
            lambda v: addons.target_group_binding(v["arn"], v["sg"])
        )
        # The binding's webhook and CRD come with the controller: created before it, it would be refused.
        k8s.apiextensions.CustomResource(
            f"{name}-binding",
            api_version="elbv2.k8s.aws/v1beta1",
            kind="TargetGroupBinding",
            metadata=binding.apply(lambda b: b["metadata"]),
            spec=binding.apply(lambda b: b["spec"]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[controller]),
        )
        self.binding_name = "model-api"
        self.register_outputs({"binding_name": self.binding_name})


@dataclass(frozen=True, kw_only=True)
class CertManagerArgs:
    """Inputs of `CertManager`."""

    registry: pulumi.Input[str]
    """The region's registry host (charts and images)."""
    api_host: str
    """Host name on the gateway's certificate."""
    gateway_credential_name: str
    """Secret (in istio-system) the gateway's TLS server reads: the certificate's `secretName`."""


class CertManager(pulumi.ComponentResource):
    """cert-manager and an in-cluster CA (self-signed root -> CA issuer) issuing the gateway's certificate."""

    ca_issuer: str

    def __init__(self, name: str, args: CertManagerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:addons:CertManager", name, None, opts)
        namespace = kube.create(
            f"{name}-ns",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(addons.CERT_MANAGER_NAMESPACE)},
            pulumi.ResourceOptions(parent=self),
        )
        values = pulumi.Output.from_input(args.registry).apply(addons.cert_manager_values)
        previous: pulumi.Resource = release(
            self,
            f"{name}-release",
            "cert-manager",
            args.registry,
            addons.CERT_MANAGER_NAMESPACE,
            values,
            [namespace],
        )
        # Each link of the chain needs the one before it issued (the CA's secret, then the CA issuer).
        chain = {
            "selfsigned-issuer": addons.self_signed_issuer(),
            "ca-certificate": addons.ca_certificate(),
            "ca-issuer": addons.ca_issuer(),
            "gateway-certificate": addons.gateway_certificate(args.api_host, args.gateway_credential_name),
        }
        for suffix, manifest in chain.items():
            previous = kube.create(
                f"{name}-{suffix}", manifest, pulumi.ResourceOptions(parent=self, depends_on=[previous])
            )
        self.ca_issuer = addons.CA_ISSUER
        self.register_outputs({"ca_issuer": self.ca_issuer})


@dataclass(frozen=True, kw_only=True)
class ClusterAutoscalerSettings:
    """What the Cluster Autoscaler needs of an EKS cluster."""

    cluster_name: pulumi.Input[str]
    """EKS cluster name (its node groups carry the auto-discovery tags)."""
    region: str
    """AWS region of the cluster."""
    role_arn: pulumi.Input[str]
    """IRSA role of the autoscaler (created by infra)."""


@dataclass(frozen=True, kw_only=True)
class AutoscalingArgs:
    """Inputs of `Autoscaling`."""

    registry: pulumi.Input[str]
    """The region's registry host (charts and images)."""
    cluster_autoscaler: ClusterAutoscalerSettings | None
    """Set on EKS; None on an on-premises cluster, whose nodes no AWS autoscaler can add."""


class Autoscaling(pulumi.ComponentResource):
    """metrics-server (the HPAs' source), and the Cluster Autoscaler where the cluster is EKS."""

    node_autoscaling: bool

    def __init__(self, name: str, args: AutoscalingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:addons:Autoscaling", name, None, opts)
        metrics = pulumi.Output.from_input(args.registry).apply(addons.metrics_server_values)
        release(
            self, f"{name}-metrics-server", "metrics-server", args.registry, addons.SYSTEM_NAMESPACE, metrics
        )
        settings = args.cluster_autoscaler
        if settings is not None:
            values = pulumi.Output.all(
                registry=args.registry, cluster=settings.cluster_name, role=settings.role_arn
            ).apply(
                lambda v: addons.cluster_autoscaler_values(
                    v["registry"], v["cluster"], settings.region, v["role"]
                )
            )
            release(
                self,
                f"{name}-cluster-autoscaler",
                "cluster-autoscaler",
                args.registry,
                addons.SYSTEM_NAMESPACE,
                values,
            )
        self.node_autoscaling = settings is not None
        self.register_outputs({"node_autoscaling": self.node_autoscaling})


@dataclass(frozen=True, kw_only=True)
class AsyncInferenceAddonsArgs:
    """Inputs of `AsyncInferenceAddons`."""

    registry: pulumi.Input[str]
    """The region's registry host (charts and images)."""
    region: str
    """AWS region of the cluster and of the queue token's secret."""
    secrets_role_arn: pulumi.Input[str]
    """IRSA role of the secret syncer (created by infra where the region runs a job queue)."""
    namespaces: tuple[str, ...]
    """Tenant namespaces of the models with async requests: the only ones the secret store serves."""


class AsyncInferenceAddons(pulumi.ComponentResource):
    """What asynchronous inference needs in a cluster: KEDA, which scales the workers on their stream's
    backlog, and External Secrets, which syncs the job queue's AUTH token from Secrets Manager into the
    models' namespaces (the token never passes through the platform's program or state)."""

    ready: list[pulumi.Resource]
    """What a model's workers wait for: KEDA's CRDs and the secret store."""

    def __init__(
        self, name: str, args: AsyncInferenceAddonsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:addons:AsyncInferenceAddons", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        keda_ns = kube.create(
            f"{name}-keda-ns",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(addons.KEDA_NAMESPACE)},
            child,
        )
        keda = release(
            self,
            f"{name}-keda",
            "keda",
            args.registry,
            addons.KEDA_NAMESPACE,
            pulumi.Output.from_input(args.registry).apply(addons.keda_values),
            [keda_ns],
        )
        secrets_ns = kube.create(
            f"{name}-external-secrets-ns",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": metadata(addons.EXTERNAL_SECRETS_NAMESPACE),
            },
            child,
        )
        values = pulumi.Output.all(registry=args.registry, role=args.secrets_role_arn).apply(
            lambda v: addons.external_secrets_values(v["registry"], v["role"])
        )
        syncer = release(
            self,
            f"{name}-external-secrets",
            "external-secrets",
            args.registry,
            addons.EXTERNAL_SECRETS_NAMESPACE,
            values,
            [secrets_ns],
        )
        # The store's CRD and webhook come with the chart: created before it, the store would be refused.
        store = kube.create(
            f"{name}-job-queue-store",
            addons.job_queue_store(async_inference.QUEUE_STORE, args.region, list(args.namespaces)),
            pulumi.ResourceOptions(parent=self, depends_on=[syncer]),
        )
        self.ready = [keda, store]
        self.register_outputs({})
