"""kube-prometheus-stack values, the ServiceMonitor, the PrometheusRule and the Grafana dashboard."""

import json
from pathlib import Path
from typing import Any

import yaml

from stacks.manifests import Manifest, metadata

KUBE_PROMETHEUS_STACK_VERSION = "77.0.0"
"""Chart version; it ships prometheus-operator v0.85.0, the release whose CRD schemas the tests validate
against."""
PROMETHEUS_CHARTS = "https://prometheus-community.github.io/helm-charts"
NAMESPACE = "monitoring"
STORAGE_CLASS = "encrypted-gp3"
RULES_FILE = Path(__file__).resolve().parents[1] / "monitoring" / "rules" / "serving-rules.yaml"


def load_rules(path: Path = RULES_FILE) -> dict[str, Any]:
    """The rule file's content: `{"groups": [...]}`."""
    rules: dict[str, Any] = yaml.safe_load(path.read_text())
    return rules


def storage_class(key_arn: str) -> Manifest:
    """gp3 volumes encrypted with the region's own key; bound where the pod lands, so in the pod's AZ."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": metadata(STORAGE_CLASS),
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"type": "gp3", "encrypted": "true", "kmsKeyId": key_arn},
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
    }


def chart_values(retention_days: int, storage_gib: int) -> dict[str, Any]:
    """Prometheus keeps its data on encrypted in-region volumes; it selects every ServiceMonitor and rule."""
    volume = {
        "volumeClaimTemplate": {
            "spec": {
                "storageClassName": STORAGE_CLASS,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": f"{storage_gib}Gi"}},
            }
        }
    }
    return {
        "prometheus": {
            "prometheusSpec": {
                "retention": f"{retention_days}d",
                "storageSpec": volume,
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
            }
        },
        "alertmanager": {"alertmanagerSpec": {"storage": volume}},
        "grafana": {
            "sidecar": {
                "dashboards": {"enabled": True, "label": "grafana_dashboard", "searchNamespace": "ALL"}
            },
            "persistence": {"enabled": True, "storageClassName": STORAGE_CLASS, "size": "10Gi"},
        },
    }


def service_monitor() -> Manifest:
    """Scrapes every serving pod through the sidecar's merged metrics endpoint (app and proxy metrics)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata("model-serving", NAMESPACE),
        "spec": {
            "namespaceSelector": {"any": True},
            "selector": {"matchLabels": {"app.kubernetes.io/part-of": "model-serving"}},
            "endpoints": [{"port": "http-monitoring", "path": "/stats/prometheus", "interval": "15s"}],
        },
    }


def prometheus_rule(rules: dict[str, Any]) -> Manifest:
    """The rule file's groups, unchanged, as a PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata("model-serving", NAMESPACE),
        "spec": {"groups": rules["groups"]},
    }


def _panel(panel_id: int, title: str, expr: str, unit: str, y: int, x: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": "{{model}} v{{version}}"}],
    }


def dashboard() -> dict[str, Any]:
    """The serving dashboard: traffic, errors, latency, queueing, batching and readiness per model version."""
    sel = '{model=~"$model"}'
    panels = [
        ("Requests per second", f"model_version:serving_requests:rate5m{sel}", "reqps"),
        ("Error ratio", f"model_version:serving_request_error_ratio:rate5m{sel}", "percentunit"),
        ("p99 latency", f"model_version:serving_request_duration_seconds:p99_5m{sel}", "s"),
        ("p50 latency", f"model_version:serving_request_duration_seconds:p50_5m{sel}", "s"),
        ("Queue depth", f"sum by (model, version) (serving_queue_depth{sel})", "short"),
        (
            "Mean batch size",
            f"sum by (model, version) (rate(serving_batch_size_sum{sel}[5m]))"
            f" / sum by (model, version) (rate(serving_batch_size_count{sel}[5m]))",
            "short",
        ),
        (
            "p99 queue wait",
            "histogram_quantile(0.99, sum by (model, version, le)"
            f" (rate(serving_queue_duration_seconds_bucket{sel}[5m])))",
            "s",
        ),
        ("Models ready", f"min by (model, version) (serving_model_ready{sel})", "bool"),
    ]
    return {
        "uid": "model-serving",
        "title": "Model serving",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "model",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(serving_model_ready, model)",
                    "includeAll": True,
                    "multi": True,
                },
            ]
        },
        "panels": [
            _panel(i + 1, title, expr, unit, y=(i // 2) * 8, x=(i % 2) * 12)
            for i, (title, expr, unit) in enumerate(panels)
        ],
    }


def dashboard_config_map() -> Manifest:
    """The dashboard as a ConfigMap that Grafana's sidecar picks up."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata("model-serving-dashboard", NAMESPACE, {"grafana_dashboard": "1"}),
        "data": {"model-serving.json": json.dumps(dashboard(), indent=2, sort_keys=True)},
    }
