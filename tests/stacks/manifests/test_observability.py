"""Logs and traces leave the node only for in-region services."""

import pytest

from stacks.manifests import observability as obs
from tests.stacks.manifests.test_addons import REGISTRY, ROLE, assert_mirrored
from tests.stacks.schemas import validate


def test_logs_go_to_the_regions_log_group_only() -> None:
    values = obs.fluent_bit_values(REGISTRY, "eu-central-1", "/model-serving/eu-prod", ROLE)
    logs = values["cloudWatchLogs"]
    assert logs["enabled"] and logs["region"] == "eu-central-1", logs
    assert logs["logGroupName"] == "/model-serving/eu-prod", logs
    enabled = [
        k for k, v in values.items() if isinstance(v, dict) and v.get("enabled") and k != "cloudWatchLogs"
    ]
    assert enabled == [], f"other log outputs enabled: {enabled}"
    assert values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"] == ROLE
    assert_mirrored(values, 1)


def test_traces_exported_to_xray_in_the_region() -> None:
    exporter = obs.trace_exporter("eu-central-1", None)
    values = obs.collector_values(REGISTRY, exporter, ROLE)
    config = values["config"]
    assert config["exporters"] == {"awsxray": {"region": "eu-central-1"}}, config["exporters"]
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["awsxray"], config["service"]
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}, config["receivers"]
    assert values["mode"] == "deployment" and values["serviceAccount"]["annotations"], values
    assert_mirrored(values, 1)


def test_traces_exported_to_otlp_elsewhere_without_irsa() -> None:
    values = obs.collector_values(REGISTRY, obs.trace_exporter(None, "collector.dc1.example:4317"), None)
    assert values["config"]["exporters"] == {"otlp": {"endpoint": "collector.dc1.example:4317"}}, values
    assert "annotations" not in values["serviceAccount"], "no IRSA off EKS"


@pytest.mark.parametrize(("xray", "otlp"), [(None, None), ("eu-central-1", "c:4317")])
def test_exactly_one_trace_destination(xray: str | None, otlp: str | None) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        obs.trace_exporter(xray, otlp)


def test_unused_receivers_and_pipelines_removed() -> None:
    config = obs.collector_values(REGISTRY, obs.trace_exporter("eu-central-1", None), ROLE)["config"]
    removed = {k for k, v in config["receivers"].items() if v is None}
    assert removed == {"jaeger", "zipkin", "prometheus"}, removed
    pipelines = config["service"]["pipelines"]
    assert pipelines["metrics"] is None and pipelines["logs"] is None, (
        "default pipelines reference removed parts"
    )


def test_mesh_tracing_points_at_the_collector() -> None:
    (provider,) = obs.mesh_tracing_values()["meshConfig"]["extensionProviders"]
    assert provider["opentelemetry"] == {"service": obs.COLLECTOR_SERVICE, "port": 4317}, provider
    telemetry = obs.tracing_telemetry(5.0)
    validate(telemetry)
    (tracing,) = telemetry["spec"]["tracing"]
    assert tracing["providers"] == [{"name": provider["name"]}], "Telemetry names another provider"
    assert tracing["randomSamplingPercentage"] == 5.0, tracing
    assert telemetry["metadata"]["namespace"] == "istio-system", "mesh-wide only from the root namespace"


def test_sampling_percentage_bounded() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        obs.tracing_telemetry(150)
