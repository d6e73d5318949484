"""Monitoring and observability: kube-prometheus-stack on encrypted volumes with its alert receivers,
the serving scrape, rules and dashboards; logs to CloudWatch and traces to an in-region OpenTelemetry
collector."""

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from stacks.components import kube
from stacks.components.addons import release
from stacks.manifests import addons, dashboards, metadata, observability
from stacks.manifests import monitoring as mon


@dataclass(frozen=True, kw_only=True)
class MonitoringArgs:
    """Inputs of `Monitoring`."""

    registry: pulumi.Input[str]
    """The region's registry host (chart and images)."""
    key_arn: pulumi.Input[str] | None
    """Regional KMS key of the encrypted gp3 StorageClass created here; None on a cluster without EBS, which
    must then have a StorageClass named `storage_class`."""
    retention_days: int
    """Prometheus retention."""
    storage_gib: int
    """Prometheus volume size."""
    webhook_urls: tuple[pulumi.Input[str], ...] = ()
    """Alert webhook endpoints (may be secrets)."""
    alert_emails: tuple[str, ...] = ()
    """Alert e-mail addresses."""
    smtp_smarthost: str = ""
    """`host:port` of the SMTP relay (required with e-mail receivers)."""
    smtp_from: str = ""
    """Sender of alert e-mails (required with e-mail receivers)."""
    storage_class: str = mon.STORAGE_CLASS
    """StorageClass of the Prometheus, Alertmanager and Grafana volumes."""
    retrain_webhook: str | None = None
    """The retrain receiver's webhook URL: the retraining alerts are also routed there (None: not)."""
    feature_stale_after_seconds: int | None = None
    """`FeatureViewStale`'s threshold, from the stack's features block (None: the rules file's default)."""


def _string_data(manifest: dict[str, Any]) -> dict[str, str]:
    data: dict[str, str] = manifest["stringData"]
    return data


def _receivers(args: MonitoringArgs, webhook_urls: tuple[str, ...]) -> mon.Receivers:
    return mon.Receivers(
        webhook_urls=webhook_urls,
        emails=args.alert_emails,
        smtp_smarthost=args.smtp_smarthost,
        smtp_from=args.smtp_from,
    )


class Monitoring(pulumi.ComponentResource):
    """Prometheus, Alertmanager and Grafana, scraping the serving pods and alerting on their SLOs."""

    namespace: str

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:monitoring:Monitoring", name, None, opts)
        # Fail at plan time, not when the first alert has nowhere to go (the URLs may not be known yet).
        _receivers(args, tuple(f"webhook-{i}" for i, _ in enumerate(args.webhook_urls)))
        child = pulumi.ResourceOptions(parent=self)
        namespace = kube.create(
            f"{name}-ns",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(mon.NAMESPACE)},
            child,
        )
        before: list[pulumi.Resource] = [namespace, self._alertmanager_secret(name, args, namespace)]
        if args.key_arn is not None:
            before.append(self._storage_class(name, args.key_arn, args.storage_class))
        values = pulumi.Output.from_input(args.registry).apply(
            lambda r: mon.chart_values(r, args.retention_days, args.storage_gib, args.storage_class)
        )
        stack = release(
            self, f"{name}-kube-prometheus-stack", mon.CHART, args.registry, mon.NAMESPACE, values, before
        )
        after = pulumi.ResourceOptions(parent=self, depends_on=[stack])
        kube.create(f"{name}-service-monitor", mon.service_monitor(), after)
        rules = mon.load_rules()
        if args.feature_stale_after_seconds is not None:
            rules = mon.with_feature_staleness(rules, args.feature_stale_after_seconds)
        kube.create(f"{name}-rules", mon.prometheus_rule(rules), after)
        experiments = mon.prometheus_rule(
            mon.load_rules(mon.EXPERIMENT_RULES_FILE), "model-serving-experiments"
        )
        kube.create(f"{name}-experiment-rules", experiments, after)
        for manifest in dashboards.config_maps():
            kube.create(f"{name}-{manifest['metadata']['name']}", manifest, after)
        self.namespace = mon.NAMESPACE
        self.register_outputs({"namespace": self.namespace})

    def _alertmanager_secret(
        self, name: str, args: MonitoringArgs, namespace: pulumi.Resource
    ) -> k8s.core.v1.Secret:
        """The config is a Secret, not chart values: webhook URLs carry tokens, and a Secret built from a
        secret Output stays encrypted in the state and out of the Helm release's stored values."""
        manifest = pulumi.Output.all(*(pulumi.Output.secret(u) for u in args.webhook_urls)).apply(
            lambda urls: mon.alertmanager_secret(_receivers(args, tuple(urls)), args.retrain_webhook)
        )
        meta = metadata(mon.ALERTMANAGER_SECRET, mon.NAMESPACE)
        string_data: pulumi.Output[dict[str, str]] = manifest.apply(_string_data)
        return k8s.core.v1.Secret(
            f"{name}-alertmanager-config",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=meta["name"], namespace=meta["namespace"], labels=meta["labels"]
            ),
            type="Opaque",
            string_data=string_data,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
        )

    def _storage_class(self, name: str, key_arn: pulumi.Input[str], class_name: str) -> pulumi.Resource:
        manifest = pulumi.Output.from_input(key_arn).apply(lambda arn: mon.storage_class(arn, class_name))
        return k8s.storage.v1.StorageClass(
            f"{name}-storage",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=class_name, labels=metadata(class_name)["labels"]),
            provisioner="ebs.csi.aws.com",
            parameters=manifest.apply(lambda m: m["parameters"]),
            reclaim_policy="Retain",
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            opts=pulumi.ResourceOptions(parent=self),
        )


@dataclass(frozen=True, kw_only=True)
class CloudWatchLogs:
    """Where container logs go on EKS."""

    region: str
    """Region of the log group (the cluster's)."""
    log_group: pulumi.Input[str]
    """CloudWatch log group created by infra."""
    role_arn: pulumi.Input[str]
    """IRSA role of the log shipper, allowed to write to that group only."""


@dataclass(frozen=True, kw_only=True)
class ObservabilityArgs:
    """Inputs of `Observability`."""

    registry: pulumi.Input[str]
    """The region's registry host (charts and images)."""
    logs: CloudWatchLogs | None
    """Set on EKS; None on an on-premises cluster (no CloudWatch there)."""
    xray_region: str | None = None
    """On EKS: export traces to X-Ray in this region (the cluster's)."""
    otlp_endpoint: str | None = None
    """Elsewhere: export traces to this in-jurisdiction OTLP endpoint (`host:port`)."""
    collector_role_arn: pulumi.Input[str] | None = None
    """IRSA role of the collector (X-Ray writes); None where there is no IRSA."""
    sampling_percentage: float = 1.0
    """Share of requests the mesh traces, 0 to 100."""


class Observability(pulumi.ComponentResource):
    """Logs to in-region CloudWatch, traces through an in-region collector, the mesh's tracing turned on."""

    collector_service: str

    def __init__(
        self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:monitoring:Observability", name, None, opts)
        exporter = observability.trace_exporter(args.xray_region, args.otlp_endpoint)
        telemetry = observability.tracing_telemetry(args.sampling_percentage)
        namespace = kube.create(
            f"{name}-ns",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(addons.OBSERVABILITY_NAMESPACE)},
            pulumi.ResourceOptions(parent=self),
        )
        if args.logs is not None:
            logs = args.logs
            values = pulumi.Output.all(
                registry=args.registry, group=logs.log_group, role=logs.role_arn
            ).apply(
                lambda v: observability.fluent_bit_values(v["registry"], logs.region, v["group"], v["role"])
            )
            release(
                self,
                f"{name}-fluent-bit",
                "aws-for-fluent-bit",
                args.registry,
                addons.OBSERVABILITY_NAMESPACE,
                values,
                [namespace],
            )
        collector_values = pulumi.Output.all(registry=args.registry, role=args.collector_role_arn).apply(
            lambda v: observability.collector_values(v["registry"], exporter, v["role"])
        )
        collector = release(
            self,
            f"{name}-collector",
            "opentelemetry-collector",
            args.registry,
            addons.OBSERVABILITY_NAMESPACE,
            collector_values,
            [namespace],
        )
        kube.create(f"{name}-tracing", telemetry, pulumi.ResourceOptions(parent=self, depends_on=[collector]))
        self.collector_service = observability.COLLECTOR_SERVICE
        self.register_outputs({"collector_service": self.collector_service})
