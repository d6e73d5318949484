"""Monitoring and observability built alone: order of creation, secrets, in-region charts, EKS-only parts."""

from typing import Any

import pytest

from stacks.artifacts import load_lock
from stacks.components.monitoring import (
    CloudWatchLogs,
    Monitoring,
    MonitoringArgs,
    Observability,
    ObservabilityArgs,
)
from stacks.manifests.monitoring import EXPERIMENT_RULES_FILE, load_rules
from stacks.preview.monitor import Registration
from tests.stacks.conftest import Built, build_component

REGISTRY = "123456789012.dkr.ecr.eu-central-1.amazonaws.com"
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _monitoring(**overrides: Any) -> Built:
    fields: dict[str, Any] = {
        "registry": REGISTRY,
        "key_arn": "arn:aws:kms:eu-central-1:123456789012:key/k",
        "retention_days": 15,
        "storage_gib": 100,
        "webhook_urls": ("https://hooks.example.eu/T0/secret",),
    } | overrides
    args = MonitoringArgs(**fields)
    return build_component(lambda opts: Monitoring("mon", args, opts))


@pytest.fixture(scope="module")
def monitoring() -> Built:
    return _monitoring()


def _depends(built: Built, reg: Registration) -> set[str]:
    return {u.split("::")[-1] for u in reg.dependencies}


def test_chart_from_the_regions_oci_mirror_pinned(monitoring: Built) -> None:
    release = monitoring.one("kubernetes:helm.sh/v3:Release").inputs
    chart = load_lock().chart("kube-prometheus-stack")
    assert release["chart"] == f"oci://{REGISTRY}/mirror/charts/kube-prometheus-stack", release["chart"]
    assert release["version"] == chart.version, "chart not pinned to the lock"
    assert "repositoryOpts" not in release, "chart fetched from an upstream repository"
    assert release["values"]["global"]["imageRegistry"] == REGISTRY, "images pulled from upstream registries"


def test_chart_retention_and_encrypted_storage(monitoring: Built) -> None:
    spec = monitoring.one("kubernetes:helm.sh/v3:Release").inputs["values"]["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "15d", f"retention: {spec['retention']}"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "encrypted-gp3", f"storage class: {claim}"


def test_storage_class_encrypts_with_regional_key(monitoring: Built) -> None:
    (sc,) = monitoring.kinds("StorageClass")
    assert sc["parameters"]["encrypted"] == "true", "volumes unencrypted"
    assert sc["parameters"]["kmsKeyId"].startswith("arn:aws:kms:eu-central-1:"), "key outside region"


def test_release_waits_for_storage_class_and_alertmanager_config(monitoring: Built) -> None:
    release = monitoring.one("kubernetes:helm.sh/v3:Release")
    assert {"mon-storage", "mon-alertmanager-config", "mon-ns"} <= _depends(monitoring, release), (
        f"volumes or Alertmanager would start without their class or config: {release.dependencies}"
    )


def test_existing_storage_class_used_without_a_key() -> None:
    built = _monitoring(key_arn=None, storage_class="ceph-rbd")
    assert built.kinds("StorageClass") == [], "no EBS off AWS"
    spec = built.one("kubernetes:helm.sh/v3:Release").inputs["values"]["prometheus"]["prometheusSpec"]
    assert spec["storageSpec"]["volumeClaimTemplate"]["spec"]["storageClassName"] == "ceph-rbd", spec


def test_alertmanager_config_is_a_secret_output(monitoring: Built) -> None:
    secret = monitoring.one("kubernetes:core/v1:Secret").inputs
    assert SECRET_SIG in secret["stringData"], "webhook URLs would be stored in plain text in the state"
    assert "hooks.example.eu" in secret["stringData"]["value"]["alertmanager.yaml"], "receiver missing"
    values = str(monitoring.one("kubernetes:helm.sh/v3:Release").inputs["values"])
    assert "hooks.example.eu" not in values, "webhook URL leaked into the Helm values"


def test_no_receiver_fails_the_plan() -> None:
    with pytest.raises(Exception, match="at least one"):
        _monitoring(webhook_urls=())


def test_rules_and_dashboards_after_the_chart(monitoring: Built) -> None:
    rules = {r["metadata"]["name"]: r for r in monitoring.kinds("PrometheusRule")}
    assert rules["model-serving"]["spec"]["groups"] == load_rules()["groups"], "drifted from the rules file"
    experiments = rules["model-serving-experiments"]["spec"]["groups"]
    assert experiments == load_rules(EXPERIMENT_RULES_FILE)["groups"], "drifted from experiment-rules.yaml"
    maps = monitoring.of_type("kubernetes:core/v1:ConfigMap")
    assert len(maps) == 3, [m.name for m in maps]
    for reg in maps + monitoring.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule"):
        assert "mon-kube-prometheus-stack" in _depends(monitoring, reg), f"{reg.name} before the CRDs/sidecar"
        if reg.type.endswith("ConfigMap"):
            assert reg.inputs["metadata"]["labels"]["grafana_dashboard"] == "1", reg.name


def _observability(**overrides: Any) -> Built:
    fields: dict[str, Any] = {
        "registry": REGISTRY,
        "logs": CloudWatchLogs(
            region="eu-central-1",
            log_group="/model-serving/eu-prod",
            role_arn="arn:aws:iam::123456789012:role/fluent-bit",
        ),
        "xray_region": "eu-central-1",
        "collector_role_arn": "arn:aws:iam::123456789012:role/otel",
        "sampling_percentage": 10.0,
    } | overrides
    args = ObservabilityArgs(**fields)
    return build_component(lambda opts: Observability("obs", args, opts))


def _releases(built: Built) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in built.of_type("kubernetes:helm.sh/v3:Release")}


def test_eks_ships_logs_and_traces_in_region() -> None:
    releases = _releases(_observability())
    assert set(releases) == {"obs-fluent-bit", "obs-collector"}, set(releases)
    assert releases["obs-fluent-bit"]["values"]["cloudWatchLogs"]["region"] == "eu-central-1"
    exporters = releases["obs-collector"]["values"]["config"]["exporters"]
    assert exporters == {"awsxray": {"region": "eu-central-1"}}, exporters
    for inputs in releases.values():
        assert inputs["chart"].startswith(f"oci://{REGISTRY}/mirror/charts/"), inputs["chart"]


def test_onprem_sends_traces_to_otlp_and_ships_no_cloudwatch_logs() -> None:
    built = _observability(
        logs=None, xray_region=None, otlp_endpoint="otel.dc1.example:4317", collector_role_arn=None
    )
    releases = _releases(built)
    assert set(releases) == {"obs-collector"}, f"AWS-only releases on-premises: {set(releases)}"
    assert "awsxray" not in releases["obs-collector"]["values"]["config"]["exporters"], "X-Ray off AWS"


def test_mesh_tracing_enabled_after_the_collector() -> None:
    built = _observability()
    (telemetry,) = built.of_type("kubernetes:telemetry.istio.io/v1:Telemetry")
    assert telemetry.inputs["spec"]["tracing"][0]["randomSamplingPercentage"] == 10.0, telemetry.inputs
    assert "obs-collector" in _depends(built, telemetry), "spans sent before the collector exists"


def test_a_stack_with_a_feature_store_alerts_at_its_own_staleness() -> None:
    built = _monitoring(feature_stale_after_seconds=5400)
    (rules,) = [r for r in built.kinds("PrometheusRule") if r["metadata"]["name"] == "model-serving"]
    stale = [r for g in rules["spec"]["groups"] for r in g["rules"] if r.get("alert") == "FeatureViewStale"]
    assert [r["expr"].rsplit(">", 1)[1].strip() for r in stale] == ["5400"], stale
