"""Grafana dashboards, provisioned as ConfigMaps that Grafana's sidecar loads (label `grafana_dashboard`).

Three dashboards: the model API (traffic, errors, latency per model and version), the experiments (each
version's share of traffic and the analysis' metrics, from the recording rules in serving-rules.yaml) and the
platform (nodes, pods, gateway, rate limiting).
"""

import json
from typing import Any

from stacks.manifests import Manifest, metadata

NAMESPACE = "monitoring"
SEL = '{model=~"$model"}'
"""Every serving query filters on the dashboard's `model` variable."""
GATEWAY = 'source_workload="istio-ingressgateway",reporter="source"'
VERSION_LEGEND = "{{model}} v{{version}}"

Panel = tuple[str, str, str, str]
"""(title, PromQL, unit, legend)."""


def _panel(panel_id: int, spec: Panel) -> dict[str, Any]:
    title, expr, unit, legend = spec
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": ((panel_id - 1) % 2) * 12, "y": ((panel_id - 1) // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
    }


def _dashboard(uid: str, title: str, panels: list[Panel], model_variable: bool) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [{"name": "datasource", "type": "datasource", "query": "prometheus"}]
    if model_variable:
        variables.append(
            {
                "name": "model",
                "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": "label_values(serving_model_ready, model)",
                "includeAll": True,
                "multi": True,
            }
        )
    return {
        "uid": uid,
        "title": title,
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": variables},
        "panels": [_panel(i + 1, spec) for i, spec in enumerate(panels)],
    }


def model_api() -> dict[str, Any]:
    """The model API: traffic, errors, latency, queueing, batching and readiness per model version."""
    return _dashboard(
        "model-serving",
        "Model API",
        [
            ("Requests per second", f"model_version:serving_requests:rate5m{SEL}", "reqps", VERSION_LEGEND),
            (
                "Error ratio",
                f"model_version:serving_request_error_ratio:rate5m{SEL}",
                "percentunit",
                VERSION_LEGEND,
            ),
            (
                "p99 latency",
                f"model_version:serving_request_duration_seconds:p99_5m{SEL}",
                "s",
                VERSION_LEGEND,
            ),
            (
                "p50 latency",
                f"model_version:serving_request_duration_seconds:p50_5m{SEL}",
                "s",
                VERSION_LEGEND,
            ),
            ("Queue depth", f"sum by (model, version) (serving_queue_depth{SEL})", "short", VERSION_LEGEND),
            (
                "Mean batch size",
                f"sum by (model, version) (rate(serving_batch_size_sum{SEL}[5m]))"
                f" / sum by (model, version) (rate(serving_batch_size_count{SEL}[5m]))",
                "short",
                VERSION_LEGEND,
            ),
            (
                "p99 queue wait",
                "histogram_quantile(0.99, sum by (model, version, le)"
                f" (rate(serving_queue_duration_seconds_bucket{SEL}[5m])))",
                "s",
                VERSION_LEGEND,
            ),
            ("Models ready", f"min by (model, version) (serving_model_ready{SEL})", "bool", VERSION_LEGEND),
        ],
        model_variable=True,
    )


def experiments() -> dict[str, Any]:
    """The experiments: each version's share of its model's traffic, and the series the analysis compares."""
    return _dashboard(
        "model-serving-experiments",
        "Model experiments",
        [
            (
                "Traffic share per version",
                f"model_version:serving_requests:rate5m{SEL} / ignoring (version) group_left"
                f" sum by (model) (model_version:serving_requests:rate5m{SEL})",
                "percentunit",
                VERSION_LEGEND,
            ),
            (
                # The split the sample-ratio test compares with the weights: header routes and named
                # versions left out (docs/experiments.md).
                "Randomised traffic share per version",
                f"model_version:serving_requests_weighted:rate5m{SEL} / ignoring (version) group_left"
                f" sum by (model) (model_version:serving_requests_weighted:rate5m{SEL})",
                "percentunit",
                VERSION_LEGEND,
            ),
            (
                "Sticky users per second (first requests)",
                f"model_version:serving_sticky_users:rate5m{SEL}",
                "short",
                VERSION_LEGEND,
            ),
            (
                "Error ratio per version",
                f"model_version:serving_request_error_ratio:rate5m{SEL}",
                "percentunit",
                VERSION_LEGEND,
            ),
            (
                "p95 latency",
                f"model_version:serving_request_duration_seconds:p95_5m{SEL}",
                "s",
                VERSION_LEGEND,
            ),
            (
                "Conversion ratio (1h)",
                f"model_version:serving_feedback_conversion_ratio:rate1h{SEL}",
                "percentunit",
                VERSION_LEGEND,
            ),
            (
                "SLO errors (1h)",
                f"model_version:slo_errors:ratio_rate1h{SEL}",
                "percentunit",
                VERSION_LEGEND,
            ),
            (
                "SLO slow requests (1h)",
                f"model_version:slo_slow_requests:ratio_rate1h{SEL}",
                "percentunit",
                VERSION_LEGEND,
            ),
        ],
        model_variable=True,
    )


def platform() -> dict[str, Any]:
    """The platform: nodes, pods, the gateway and global rate limiting."""
    return _dashboard(
        "model-serving-platform",
        "Serving platform",
        [
            (
                "Ready nodes",
                'sum(kube_node_status_condition{condition="Ready",status="true"})',
                "short",
                "ready",
            ),
            (
                "Node CPU busy",
                'avg by (instance) (1 - rate(node_cpu_seconds_total{mode="idle"}[5m]))',
                "percentunit",
                "{{instance}}",
            ),
            (
                "Node memory used",
                "1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
                "percentunit",
                "{{instance}}",
            ),
            (
                "Pods not ready",
                'sum by (namespace) (kube_pod_status_ready{condition="false"})',
                "short",
                "{{namespace}}",
            ),
            (
                "Container restarts (1h)",
                "sum by (namespace) (increase(kube_pod_container_status_restarts_total[1h]))",
                "short",
                "{{namespace}}",
            ),
            (
                "Gateway requests by code",
                f"sum by (response_code) (rate(istio_requests_total{{{GATEWAY}}}[5m]))",
                "reqps",
                "{{response_code}}",
            ),
            (
                "Gateway p99 latency",
                "histogram_quantile(0.99, sum by (le)"
                f" (rate(istio_request_duration_milliseconds_bucket{{{GATEWAY}}}[5m])))",
                "ms",
                "p99",
            ),
            (
                "Rate-limited requests",
                'sum(rate(istio_requests_total{source_workload="istio-ingressgateway",response_code="429"}[5m]))',
                "reqps",
                "429",
            ),
        ],
        model_variable=False,
    )


DASHBOARDS = {"model-api": model_api, "experiments": experiments, "platform": platform}


def queries() -> dict[str, str]:
    """`<dashboard>/<panel title>` -> PromQL of every panel."""
    return {
        f"{key}/{panel['title']}": target["expr"]
        for key, build in DASHBOARDS.items()
        for panel in build()["panels"]
        for target in panel["targets"]
    }


def config_maps() -> list[Manifest]:
    """One ConfigMap per dashboard, labelled for Grafana's sidecar."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(f"{key}-dashboard", NAMESPACE, {"grafana_dashboard": "1"}),
            "data": {f"{key}.json": json.dumps(build(), indent=2, sort_keys=True)},
        }
        for key, build in DASHBOARDS.items()
    ]
