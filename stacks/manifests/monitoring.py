"""kube-prometheus-stack values, the ServiceMonitor, the PrometheusRule and Alertmanager's configuration.

The dashboards are in `stacks.manifests.dashboards`.
"""

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stacks.artifacts import load_lock
from stacks.manifests import Manifest, metadata

CHART = "kube-prometheus-stack"
"""Key of the chart in the lock file; its version ships prometheus-operator v0.85.0, the release whose CRD
schemas the tests validate against."""
NAMESPACE = "monitoring"
STORAGE_CLASS = "encrypted-gp3"
ALERTMANAGER_SECRET = "alertmanager-config"  # noqa: S105 - a Secret's name
"""Secret holding `alertmanager.yaml`, referenced by the Alertmanager resource (`configSecret`)."""
NULL_RECEIVER = "null"
RETRAIN_RECEIVER = "retrain"
RETRAIN_ALERTS = ("ModelInputDriftCritical", "ModelQualityDrop")
"""The alerts that start a retrain (issue 15 point 4): critical input drift and a sustained quality drop."""
RULES_FILE = Path(__file__).resolve().parents[1] / "monitoring" / "rules" / "serving-rules.yaml"
EXPERIMENT_RULES_FILE = RULES_FILE.with_name("experiment-rules.yaml")
"""The rollout controllers' alerts (ExperimentRolledBack, ExperimentHalted), a PrometheusRule of their own."""


FEATURE_STALE_ALERT = "FeatureViewStale"
FEATURE_STALE_DEFAULT_SECONDS = 7200
"""The threshold the rules file ships with (what a local Prometheus uses)."""
_STALE_THRESHOLD = re.compile(rf"> {FEATURE_STALE_DEFAULT_SECONDS}$")


def with_feature_staleness(rules: dict[str, Any], seconds: int) -> dict[str, Any]:
    """The rules with `FeatureViewStale`'s threshold set to the stack's `staleAfterMinutes` (in seconds).

    The one rules file keeps the default, so a local Prometheus and `promtool` tests read it as it is; the
    stacks rewrite that one number. A rule that no longer ends in the default threshold fails here, not by
    alerting at a threshold nobody chose."""
    copied = copy.deepcopy(rules)
    found = [r for g in copied["groups"] for r in g["rules"] if r.get("alert") == FEATURE_STALE_ALERT]
    if len(found) != 1 or not _STALE_THRESHOLD.search(found[0]["expr"].strip()):
        raise ValueError(
            f"{FEATURE_STALE_ALERT} must appear once and end in '> {FEATURE_STALE_DEFAULT_SECONDS}'"
        )
    found[0]["expr"] = _STALE_THRESHOLD.sub(f"> {seconds}", found[0]["expr"].strip())
    return copied


def load_rules(path: Path = RULES_FILE) -> dict[str, Any]:
    """The rule file's content: `{"groups": [...]}`."""
    rules: dict[str, Any] = yaml.safe_load(path.read_text())
    return rules


def storage_class(key_arn: str, name: str = STORAGE_CLASS) -> Manifest:
    """gp3 volumes encrypted with the region's own key; bound where the pod lands, so in the pod's AZ."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": metadata(name),
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"type": "gp3", "encrypted": "true", "kmsKeyId": key_arn},
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
    }


def _image(key: str, field: str = "sha", prefixed: bool = False) -> dict[str, str]:
    """A chart image split as the chart wants it; the registry comes from `global.imageRegistry`. Most of
    these charts append `@sha256:` to a hex `sha`; kube-state-metrics (`sha`) and node-exporter (`digest`)
    take the whole digest."""
    image = load_lock().image(key)
    digest = image.digest if prefixed else image.digest.removeprefix("sha256:")
    return {"repository": image.repository, "tag": image.tag, field: digest}


def chart_values(
    registry: str, retention_days: int, storage_gib: int, storage_class: str = STORAGE_CLASS
) -> dict[str, Any]:
    """Prometheus keeps its data on encrypted in-region volumes and selects every ServiceMonitor and rule;
    every image comes from the in-region registry; Alertmanager reads its config from
    `ALERTMANAGER_SECRET`."""
    volume = {
        "volumeClaimTemplate": {
            "spec": {
                "storageClassName": storage_class,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": f"{storage_gib}Gi"}},
            }
        }
    }
    return {
        "global": {"imageRegistry": registry},
        "prometheusOperator": {
            "image": _image("prometheus-operator"),
            "prometheusConfigReloader": {"image": _image("prometheus-config-reloader")},
            # The admission webhook's certificate job pulls one more image; the rules it would check are
            # checked by promtool before they ship. Without it the operator serves no TLS either.
            "admissionWebhooks": {"enabled": False},
            "tls": {"enabled": False},
        },
        "prometheus": {
            "prometheusSpec": {
                "image": _image("prometheus"),
                "retention": f"{retention_days}d",
                "storageSpec": volume,
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
            }
        },
        "alertmanager": {
            "alertmanagerSpec": {
                "image": _image("alertmanager"),
                "storage": volume,
                "useExistingSecret": True,
                "configSecret": ALERTMANAGER_SECRET,
            }
        },
        "kube-state-metrics": {"image": _image("kube-state-metrics", "sha", prefixed=True)},
        "prometheus-node-exporter": {"image": _image("node-exporter", "digest", prefixed=True)},
        "grafana": {
            "image": _image("grafana"),
            "sidecar": {
                "image": _image("grafana-sidecar"),
                "dashboards": {"enabled": True, "label": "grafana_dashboard", "searchNamespace": "ALL"},
            },
            # Both would pull images that are not mirrored: the volume's group is set by fsGroup instead.
            "initChownData": {"enabled": False},
            "testFramework": {"enabled": False},
            "persistence": {"enabled": True, "storageClassName": storage_class, "size": "10Gi"},
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


def prometheus_rule(rules: dict[str, Any], name: str = "model-serving") -> Manifest:
    """The rule file's groups, unchanged, as a PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(name, NAMESPACE),
        "spec": {"groups": rules["groups"]},
    }


@dataclass(frozen=True, kw_only=True)
class Receivers:
    """Where alerts go: at least one webhook or e-mail address."""

    webhook_urls: tuple[str, ...] = ()
    """Webhook endpoints (chat, paging or ticketing); they may carry tokens, so the config is a Secret."""
    emails: tuple[str, ...] = ()
    """E-mail addresses; they need `smtp_smarthost` and `smtp_from`."""
    smtp_smarthost: str = ""
    """`host:port` of the SMTP relay."""
    smtp_from: str = ""
    """Sender address of alert e-mails."""

    def __post_init__(self) -> None:
        if not self.webhook_urls and not self.emails:
            raise ValueError(
                "alerting: give at least one webhook URL or e-mail address, or alerts go nowhere"
            )
        if self.emails and not (self.smtp_smarthost and self.smtp_from):
            raise ValueError("alerting: e-mail receivers need smtp_smarthost and smtp_from")


def retrain_route(webhook_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The route and receiver that send the retraining alerts to the retrain receiver's webhook.

    The route `continue`s, so people are still told by the default receivers. Resolved notifications are
    not sent: the receiver acts on firing alerts only. Repeats are (each 4 h, the tree's default) and are
    harmless: the retrain command skips a trigger key it has handled."""
    route = {
        "receiver": RETRAIN_RECEIVER,
        "matchers": [f'alertname=~"{"|".join(RETRAIN_ALERTS)}"'],
        "group_by": ["alertname", "model", "version"],
        "group_wait": "10s",
        "continue": True,
    }
    receiver = {"name": RETRAIN_RECEIVER, "webhook_configs": [{"url": webhook_url, "send_resolved": False}]}
    return route, receiver


def alertmanager_config(receivers: Receivers, retrain_webhook: str | None = None) -> dict[str, Any]:
    """Every alert goes to the configured receivers, grouped per model version; only the always-firing
    Watchdog and InfoInhibitor (liveness signals of the pipeline itself) are routed to a null receiver.
    With `retrain_webhook`, the retraining alerts also go to that receiver (`retrain_route`)."""
    default: dict[str, Any] = {"name": "default"}
    if receivers.webhook_urls:
        default["webhook_configs"] = [{"url": url, "send_resolved": True} for url in receivers.webhook_urls]
    if receivers.emails:
        default["email_configs"] = [{"to": to, "send_resolved": True} for to in receivers.emails]
    config: dict[str, Any] = {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "model", "version"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [{"receiver": NULL_RECEIVER, "matchers": ['alertname=~"Watchdog|InfoInhibitor"']}],
        },
        "receivers": [default, {"name": NULL_RECEIVER}],
        "inhibit_rules": [
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["model", "version"],
            }
        ],
    }
    if retrain_webhook is not None:
        route, receiver = retrain_route(retrain_webhook)
        config["route"]["routes"].insert(0, route)
        config["receivers"].append(receiver)
    if receivers.emails:
        config["global"] = {
            "smtp_smarthost": receivers.smtp_smarthost,
            "smtp_from": receivers.smtp_from,
            "smtp_require_tls": True,
        }
    return config


def alertmanager_secret(receivers: Receivers, retrain_webhook: str | None = None) -> Manifest:
    """The config as the Secret the Alertmanager resource reads."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(ALERTMANAGER_SECRET, NAMESPACE),
        "type": "Opaque",
        "stringData": {
            "alertmanager.yaml": yaml.safe_dump(
                alertmanager_config(receivers, retrain_webhook), sort_keys=False
            )
        },
    }
