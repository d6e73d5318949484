"""Signals that leave the node: container logs to in-region CloudWatch (aws-for-fluent-bit), traces to an
in-region OpenTelemetry collector (exported to X-Ray in the region on EKS, to an OTLP endpoint elsewhere), and
the mesh's tracing pointed at that collector.
"""

from typing import Any

from stacks.artifacts import load_lock
from stacks.manifests import Manifest, mesh, metadata
from stacks.manifests.addons import (
    FLUENT_BIT_SA,
    OBSERVABILITY_NAMESPACE,
    OTEL_COLLECTOR_SA,
    irsa_annotations,
    tagged_image,
    zone_spread,
)

COLLECTOR_NAME = "otel-collector"
COLLECTOR_SERVICE = f"{COLLECTOR_NAME}.{OBSERVABILITY_NAMESPACE}.svc.cluster.local"
"""The collector's Service (the chart's fullname is overridden to `COLLECTOR_NAME`)."""
OTLP_GRPC_PORT = 4317
TRACING_PROVIDER = "otel-tracing"
"""Name of the mesh's extension provider that sends spans to the collector."""


def fluent_bit_values(registry: str, region: str, log_group: str, role_arn: str) -> dict[str, Any]:
    """Every container's log to one in-region log group; every other output of the chart is off, so no log
    line goes anywhere else."""
    return {
        "image": tagged_image("fluent-bit", registry),
        "serviceAccount": {"create": True, "name": FLUENT_BIT_SA, "annotations": irsa_annotations(role_arn)},
        "cloudWatch": {"enabled": False},
        "cloudWatchLogs": {
            "enabled": True,
            "region": region,
            "logGroupName": log_group,
            "logStreamPrefix": "fluent-bit-",
            # infra creates the group with its retention and KMS key; the shipper must not make another.
            "autoCreateGroup": False,
        },
        "firehose": {"enabled": False},
        "kinesis": {"enabled": False},
        "elasticsearch": {"enabled": False},
        "opensearch": {"enabled": False},
    }


def trace_exporter(xray_region: str | None, otlp_endpoint: str | None) -> tuple[str, dict[str, Any]]:
    """(name, config) of the collector's one trace exporter: X-Ray in the region, or an OTLP endpoint."""
    if (xray_region is None) == (otlp_endpoint is None):
        raise ValueError("traces: give exactly one of xray_region (EKS) and otlp_endpoint (elsewhere)")
    if xray_region is not None:
        return "awsxray", {"region": xray_region}
    return "otlp", {"endpoint": otlp_endpoint}


def collector_values(
    registry: str, exporter: tuple[str, dict[str, Any]], role_arn: str | None
) -> dict[str, Any]:
    """A two-replica collector Deployment receiving OTLP and exporting traces only where `exporter` says; the
    chart's other receivers and pipelines (jaeger, zipkin, prometheus) are removed."""
    image = load_lock().image("otel-collector")
    name, config = exporter
    account: dict[str, Any] = {"create": True, "name": OTEL_COLLECTOR_SA}
    if role_arn is not None:
        account["annotations"] = irsa_annotations(role_arn)
    return {
        "mode": "deployment",
        "fullnameOverride": COLLECTOR_NAME,
        "replicaCount": 2,
        "image": {"repository": f"{registry}/{image.repository}", "tag": image.tag, "digest": image.digest},
        "command": {"name": "otelcol-contrib"},
        "serviceAccount": account,
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
        "topologySpreadConstraints": zone_spread({"app.kubernetes.io/name": "opentelemetry-collector"}),
        "ports": {
            p: {"enabled": False} for p in ("jaeger-compact", "jaeger-thrift", "jaeger-grpc", "zipkin")
        },
        "config": {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": "${env:MY_POD_IP}:4317"},
                        "http": {"endpoint": "${env:MY_POD_IP}:4318"},
                    }
                },
                "jaeger": None,
                "zipkin": None,
                "prometheus": None,
            },
            "exporters": {name: config},
            "service": {
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["memory_limiter", "batch"],
                        "exporters": [name],
                    },
                    "metrics": None,
                    "logs": None,
                }
            },
        },
    }


def mesh_tracing_values(collector_service: str = COLLECTOR_SERVICE) -> dict[str, Any]:
    """istiod values (merged into the mesh's) that declare the collector as an OpenTelemetry provider."""
    return {
        "meshConfig": {
            "extensionProviders": [
                {
                    "name": TRACING_PROVIDER,
                    "opentelemetry": {"service": collector_service, "port": OTLP_GRPC_PORT},
                }
            ]
        }
    }


def tracing_telemetry(sampling_percentage: float) -> Manifest:
    """Mesh-wide tracing (root namespace) through the collector, sampling a share of requests."""
    if not 0 <= sampling_percentage <= 100:
        raise ValueError(f"tracing sampling percentage {sampling_percentage} is not within 0..100")
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": metadata("mesh-tracing", mesh.NAMESPACE),
        "spec": {
            "tracing": [
                {"providers": [{"name": TRACING_PROVIDER}], "randomSamplingPercentage": sampling_percentage}
            ]
        },
    }
