"""Alertmanager webhook payloads (version 4) to retrain requests: pure, no I/O.

A payload is validated as far as the receiver reads it; anything else in it is ignored. Each alert is
either a `Trigger` (a firing retraining alert of a configured model) or an `Ignored` with the reason.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

TRIGGER_ALERTS = frozenset({"ModelInputDriftCritical", "ModelQualityDrop"})
"""The alerts that start a retrain (the drift and retrain contracts)."""
WEBHOOK_VERSION = "4"


class PayloadError(ValueError):
    """The body is not an Alertmanager webhook payload of version 4; the message says which field."""


@dataclass(frozen=True)
class Trigger:
    """One firing alert that asks for a retrain of `model`."""

    alertname: str
    model: str
    version: str
    starts_at: str

    @property
    def key(self) -> str:
        """The idempotency key passed as `--trigger`: one per alert instance (a re-fire has a new start)."""
        return f"{self.alertname}:{self.model}:{self.version}:{self.starts_at}"


@dataclass(frozen=True)
class Ignored:
    """An alert the receiver does not act on, and why."""

    alertname: str
    status: str
    labels: Mapping[str, str]
    reason: str


def _field(obj: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise PayloadError(f"{where}.{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _labels(alert: Mapping[str, Any], where: str) -> dict[str, str]:
    labels = _field(alert, "labels", dict, where)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise PayloadError(f"{where}.labels: every label name and value must be a string")
    return dict(labels)


def parse(payload: Any, models: Collection[str]) -> list[Trigger | Ignored]:
    """Every alert of `payload`, in order, as a Trigger or an Ignored; raise PayloadError when the
    payload is not a version 4 webhook body (an object with `version` "4" and a list of `alerts`,
    each with string `status`, `labels` and `startsAt`)."""
    if not isinstance(payload, dict):
        raise PayloadError(f"payload: expected a JSON object, got {type(payload).__name__}")
    version = payload.get("version")
    if version != WEBHOOK_VERSION:
        raise PayloadError(f"payload.version: expected {WEBHOOK_VERSION!r}, got {version!r}")
    alerts = _field(payload, "alerts", list, "payload")
    out: list[Trigger | Ignored] = []
    for i, alert in enumerate(alerts):
        where = f"payload.alerts[{i}]"
        if not isinstance(alert, dict):
            raise PayloadError(f"{where}: expected an object, got {type(alert).__name__}")
        status = _field(alert, "status", str, where)
        labels = _labels(alert, where)
        starts_at = _field(alert, "startsAt", str, where)
        out.append(_classify(status, labels, starts_at, models))
    return out


def _classify(
    status: str, labels: dict[str, str], starts_at: str, models: Collection[str]
) -> Trigger | Ignored:
    name = labels.get("alertname", "")
    model, version = labels.get("model", ""), labels.get("version", "")

    def ignored(reason: str) -> Ignored:
        return Ignored(alertname=name, status=status, labels=labels, reason=reason)

    if name not in TRIGGER_ALERTS:
        return ignored(f"alert {name or '(unnamed)'} does not trigger retraining")
    if status != "firing":
        return ignored(f"alert is {status}, not firing")
    if not model or not version:
        return ignored("alert has no model or version label")
    if model not in models:
        return ignored(f"model {model} is not in the receiver's config")
    if not starts_at:
        return ignored("alert has no startsAt")
    return Trigger(alertname=name, model=model, version=version, starts_at=starts_at)
