"""Monitoring: kube-prometheus-stack on encrypted in-region volumes, the serving scrape, rules and
dashboard."""

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from stacks.components import kube
from stacks.manifests import metadata
from stacks.manifests import monitoring as mon


@dataclass(frozen=True, kw_only=True)
class MonitoringArgs:
    """Inputs of `Monitoring`."""

    key_arn: pulumi.Input[str]
    """Regional KMS key for the Prometheus, Alertmanager and Grafana volumes."""
    retention_days: int
    """Prometheus retention."""
    storage_gib: int
    """Prometheus volume size."""


class Monitoring(pulumi.ComponentResource):
    """Prometheus, Alertmanager and Grafana, scraping the serving pods and alerting on their SLOs."""

    namespace: str

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:monitoring:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace = kube.create(
            f"{name}-ns",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(mon.NAMESPACE)},
            child,
        )
        storage = k8s.storage.v1.StorageClass(
            f"{name}-storage",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=mon.STORAGE_CLASS, labels=metadata(mon.STORAGE_CLASS)["labels"]
            ),
            provisioner="ebs.csi.aws.com",
            parameters=pulumi.Output.from_input(args.key_arn).apply(
                lambda arn: mon.storage_class(arn)["parameters"]
            ),
            reclaim_policy="Retain",
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            opts=child,
        )
        stack = k8s.helm.v3.Release(
            f"{name}-kube-prometheus-stack",
            name="kube-prometheus-stack",
            chart="kube-prometheus-stack",
            version=mon.KUBE_PROMETHEUS_STACK_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=mon.PROMETHEUS_CHARTS),
            namespace=mon.NAMESPACE,
            values=mon.chart_values(args.retention_days, args.storage_gib),
            atomic=True,
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, storage]),
        )
        after = pulumi.ResourceOptions(parent=self, depends_on=[stack])
        kube.create(f"{name}-service-monitor", mon.service_monitor(), after)
        kube.create(f"{name}-rules", mon.prometheus_rule(mon.load_rules()), after)
        kube.create(f"{name}-dashboard", mon.dashboard_config_map(), after)
        self.namespace = mon.NAMESPACE
        self.register_outputs({"namespace": self.namespace})
