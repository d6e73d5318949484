from typing import Any

import pytest

from servectl.retrain_receiver.alerts import Ignored, PayloadError, Trigger, parse

MODELS = {"tabular-classifier"}
STARTS = "2026-11-30T10:00:00Z"


def alert(name: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    base = {"alertname": name, "model": "tabular-classifier", "version": "1"}
    return {"status": status, "labels": base | labels, "annotations": {}, "startsAt": STARTS,
            "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "abc"}  # fmt: skip


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "retrain",
        "groupKey": "{}",
        "alerts": list(alerts),
    }


@pytest.mark.parametrize("name", ["ModelInputDriftCritical", "ModelQualityDrop"])
def test_a_firing_retraining_alert_is_a_trigger_keyed_by_name_model_version_and_start(name: str) -> None:
    [result] = parse(payload(alert(name, feature="mean_radius")), MODELS)
    assert result == Trigger(alertname=name, model="tabular-classifier", version="1", starts_at=STARTS), (
        result
    )
    assert isinstance(result, Trigger)
    assert result.key == f"{name}:tabular-classifier:1:{STARTS}", result.key


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (alert("ModelInputDriftWarning"), "does not trigger retraining"),
        (alert("ModelInputDriftCritical", status="resolved"), "resolved, not firing"),
        (alert("ModelQualityDrop", model="other-model"), "not in the receiver's config"),
        (alert("ModelQualityDrop", version=""), "no model or version label"),
        (alert("ModelQualityDrop") | {"startsAt": ""}, "no startsAt"),
    ],
)
def test_other_alerts_are_ignored_with_the_reason(item: dict[str, Any], reason: str) -> None:
    [result] = parse(payload(item), MODELS)
    assert isinstance(result, Ignored) and reason in result.reason, result


def test_every_alert_of_a_group_is_classified_in_order() -> None:
    results = parse(payload(alert("ModelInputDriftWarning"), alert("ModelQualityDrop")), MODELS)
    assert [type(r) for r in results] == [Ignored, Trigger], results


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "payload: expected a JSON object"),
        ({"alerts": []}, "payload.version"),
        ({"version": "3", "alerts": []}, "payload.version"),
        ({"version": "4"}, "payload.alerts"),
        ({"version": "4", "alerts": {}}, "payload.alerts"),
        ({"version": "4", "alerts": ["x"]}, "payload.alerts[0]: expected an object"),
        ({"version": "4", "alerts": [{"labels": {}, "startsAt": STARTS}]}, "payload.alerts[0].status"),
        ({"version": "4", "alerts": [{"status": "firing", "startsAt": STARTS}]}, "payload.alerts[0].labels"),
        (
            {"version": "4", "alerts": [{"status": "firing", "labels": {"a": 1}, "startsAt": STARTS}]},
            "labels",
        ),
        ({"version": "4", "alerts": [{"status": "firing", "labels": {}}]}, "payload.alerts[0].startsAt"),
    ],
)
def test_a_malformed_payload_is_refused_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(PayloadError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse(body, MODELS)
