import pytest

from stacks.components.monitoring import Monitoring, MonitoringArgs
from stacks.manifests.monitoring import KUBE_PROMETHEUS_STACK_VERSION, load_rules
from tests.stacks.conftest import Built, build_component


@pytest.fixture(scope="module")
def monitoring() -> Built:
    args = MonitoringArgs(
        key_arn="arn:aws:kms:eu-central-1:123456789012:key/k", retention_days=15, storage_gib=100
    )
    return build_component(lambda opts: Monitoring("mon", args, opts))


def test_chart_pinned_with_retention_and_encrypted_storage(monitoring: Built) -> None:
    release = monitoring.one("kubernetes:helm.sh/v3:Release").inputs
    assert release["version"] == KUBE_PROMETHEUS_STACK_VERSION, "chart not pinned"
    spec = release["values"]["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "15d", f"retention: {spec['retention']}"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "encrypted-gp3", f"storage class: {claim}"


def test_storage_class_encrypts_with_regional_key(monitoring: Built) -> None:
    (sc,) = monitoring.kinds("StorageClass")
    assert sc["parameters"]["encrypted"] == "true", "volumes unencrypted"
    assert sc["parameters"]["kmsKeyId"].startswith("arn:aws:kms:eu-central-1:"), "key outside region"


def test_prometheus_rule_is_the_rules_file(monitoring: Built) -> None:
    (rule,) = monitoring.kinds("PrometheusRule")
    assert rule["spec"]["groups"] == load_rules()["groups"], "PrometheusRule drifted from the rules file"


def test_dashboard_config_map_labelled_for_grafana(monitoring: Built) -> None:
    (cm,) = monitoring.kinds("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", "Grafana's sidecar will not find it"
