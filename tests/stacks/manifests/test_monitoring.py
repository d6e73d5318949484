import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.manifests import monitoring as mon
from stacks.manifests.monitoring import RULES_FILE, load_rules
from tests.stacks.manifests.test_addons import REGISTRY, assert_mirrored
from tests.stacks.schemas import validate


def test_rules_file_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make setup` installs Debian's prometheus package"
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_promtool_unit_tests() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make setup` installs Debian's prometheus package"
    tests = RULES_FILE.with_name("serving-rules_test.yaml")
    result = subprocess.run(
        [promtool, "test", "rules", tests.name], cwd=tests.parent, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_cover_burn_rates_readiness_input_drift_quality_and_feature_freshness() -> None:
    alerts = {r["alert"] for g in load_rules()["groups"] for r in g["rules"] if "alert" in r}
    expected = {
        "ModelServingAvailabilityBurnRateFast",
        "ModelServingAvailabilityBurnRateSlow",
        "ModelServingLatencyBurnRateFast",
        "ModelServingLatencyBurnRateSlow",
        "ModelServingModelNotReady",
        "ModelInputDriftWarning",
        "ModelInputDriftCritical",
        "ModelQualityDrop",
        "FeatureViewStale",
    }
    assert alerts == expected, f"alerts: {alerts}"


def _stale_rule(rules: dict[str, Any]) -> dict[str, Any]:
    return next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "FeatureViewStale")


def test_the_stacks_write_their_staleness_threshold_into_the_one_rule() -> None:
    shipped = load_rules()
    rules = mon.with_feature_staleness(shipped, 5400)
    expr = _stale_rule(rules)["expr"]
    assert expr.endswith("> 5400") and "7200" not in expr, expr
    assert _stale_rule(shipped)["expr"].strip().endswith("> 7200"), "the file itself keeps its default"
    others = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") != "FeatureViewStale"]
    assert others == [
        r for g in shipped["groups"] for r in g["rules"] if r.get("alert") != "FeatureViewStale"
    ]


def test_a_stale_rule_without_the_default_threshold_is_refused() -> None:
    rules = load_rules()
    _stale_rule(rules)["expr"] = "time() - max by (feature_view) (x) > 3600"
    with pytest.raises(ValueError, match="FeatureViewStale must appear once"):
        mon.with_feature_staleness(rules, 5400)


def test_the_stale_alert_waits_before_firing() -> None:
    rule = _stale_rule(load_rules())
    assert rule["for"] == "15m" and rule["labels"]["severity"] == "warning", rule
    assert "serving_feature_view_materialized_timestamp_seconds" in rule["expr"], rule["expr"]


def test_burn_rate_alerts_need_a_long_and_a_short_window() -> None:
    burn_rate = [r for g in load_rules()["groups"] for r in g["rules"] if "BurnRate" in r.get("alert", "")]
    assert len(burn_rate) >= 4, f"burn-rate alerts: {[r['alert'] for r in burn_rate]}"
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            if "BurnRate" in rule.get("alert", ""):
                windows = {
                    w for w in ("5m", "30m", "1h", "2h", "6h", "1d") if f"ratio_rate{w} " in rule["expr"]
                }
                assert len(windows) >= 2, f"{rule['alert']} uses windows {windows}"


def _amtool_check(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    amtool = shutil.which("amtool")
    assert amtool, "amtool missing: `make setup` installs Debian's prometheus-alertmanager package"
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, check=False)


RECEIVERS = mon.Receivers(
    webhook_urls=("https://hooks.example.eu/T0/B0/secret",),
    emails=("oncall@example.eu",),
    smtp_smarthost="smtp.example.eu:587",
    smtp_from="alerts@example.eu",
)


def test_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    result = _amtool_check(mon.alertmanager_config(RECEIVERS), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_rejects_a_route_to_an_unknown_receiver(tmp_path: Path) -> None:
    config = mon.alertmanager_config(RECEIVERS)
    config["route"]["receiver"] = "nowhere"
    assert _amtool_check(config, tmp_path).returncode != 0, "amtool accepted a dangling receiver"


@pytest.mark.parametrize(
    "receivers",
    [
        mon.Receivers(webhook_urls=("https://hooks.example.eu/x",)),
        mon.Receivers(
            emails=("a@example.eu",), smtp_smarthost="smtp.example.eu:587", smtp_from="b@example.eu"
        ),
    ],
)
def test_default_route_reaches_a_real_receiver(receivers: mon.Receivers) -> None:
    config = mon.alertmanager_config(receivers)
    by_name = {r["name"]: r for r in config["receivers"]}
    default = by_name[config["route"]["receiver"]]
    assert default["name"] != mon.NULL_RECEIVER, "alerts fire into the void"
    assert default.get("webhook_configs") or default.get("email_configs"), (
        f"default receiver is empty: {default}"
    )
    for route in config["route"]["routes"]:
        if route["receiver"] == mon.NULL_RECEIVER:
            assert route["matchers"] == ['alertname=~"Watchdog|InfoInhibitor"'], (
                f"real alerts silenced: {route}"
            )


WEBHOOK = "http://retrain-receiver.monitoring.svc:9095/alerts"


def test_alertmanager_config_with_the_retrain_route_passes_amtool(tmp_path: Path) -> None:
    result = _amtool_check(mon.alertmanager_config(RECEIVERS, WEBHOOK), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_retraining_alerts_reach_the_receiver_and_still_the_people() -> None:
    config = mon.alertmanager_config(RECEIVERS, WEBHOOK)
    first = config["route"]["routes"][0]
    assert first["matchers"] == ['alertname=~"ModelInputDriftCritical|ModelQualityDrop"'], first
    assert first["continue"] is True, "retraining alerts would no longer reach the default receivers"
    by_name = {r["name"]: r for r in config["receivers"]}
    assert by_name[first["receiver"]]["webhook_configs"] == [{"url": WEBHOOK, "send_resolved": False}], (
        by_name
    )


def test_without_a_retrain_webhook_the_config_is_unchanged() -> None:
    config = mon.alertmanager_config(RECEIVERS)
    assert mon.RETRAIN_RECEIVER not in {r["name"] for r in config["receivers"]}, config["receivers"]


def test_receivers_required() -> None:
    with pytest.raises(ValueError, match="at least one"):
        mon.Receivers()


def test_email_receivers_need_a_relay() -> None:
    with pytest.raises(ValueError, match="smtp_smarthost"):
        mon.Receivers(emails=("a@example.eu",))


def test_alertmanager_secret_holds_the_config() -> None:
    secret = mon.alertmanager_secret(RECEIVERS)
    validate(secret)
    assert secret["metadata"]["name"] == mon.ALERTMANAGER_SECRET, secret["metadata"]
    assert yaml.safe_load(secret["stringData"]["alertmanager.yaml"]) == mon.alertmanager_config(RECEIVERS)


def test_chart_reads_alertmanager_config_from_the_secret() -> None:
    spec = mon.chart_values(REGISTRY, 15, 100)["alertmanager"]["alertmanagerSpec"]
    assert spec["useExistingSecret"] is True and spec["configSecret"] == mon.ALERTMANAGER_SECRET, spec


def test_every_chart_image_is_mirrored_and_pinned() -> None:
    values = mon.chart_values(REGISTRY, 15, 100)
    assert values["global"]["imageRegistry"] == REGISTRY, values["global"]
    # prometheus, alertmanager, operator, config reloader, kube-state-metrics, node-exporter, grafana, sidecar
    assert_mirrored(values, 8)


def test_digest_fields_match_each_charts_template() -> None:
    values = mon.chart_values(REGISTRY, 15, 100)
    hex_sha = values["prometheus"]["prometheusSpec"]["image"]["sha"]
    assert not hex_sha.startswith("sha256:"), "the chart prepends @sha256: itself"
    assert values["kube-state-metrics"]["image"]["sha"].startswith("sha256:"), "KSM prints the sha as is"
    assert values["prometheus-node-exporter"]["image"]["digest"].startswith("sha256:"), (
        "node-exporter: digest"
    )


def test_charts_that_pull_unmirrored_images_are_off() -> None:
    values = mon.chart_values(REGISTRY, 15, 100)
    assert values["prometheusOperator"]["admissionWebhooks"]["enabled"] is False, "webhook cert job image"
    assert values["prometheusOperator"]["tls"]["enabled"] is False, "TLS secret would never be created"
    assert values["grafana"]["initChownData"]["enabled"] is False, "busybox init container"
    assert values["grafana"]["testFramework"]["enabled"] is False, "bats test image"
