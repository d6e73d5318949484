"""The VirtualService carries the variant block's shadow (Istio mirror) and faults (Istio fault injection)."""

from dataclasses import replace
from typing import Any

from stacks.manifests.serving import ServingSpec, virtual_service
from stacks.settings import Fault, ModelConfig, Shadow, StackConfig
from tests.stacks.schemas import validate


def _service(eu_config: StackConfig, **variants: Any) -> dict[str, Any]:
    model: ModelConfig = eu_config.models[0]
    model = replace(model, variants=replace(model.variants, **variants))
    spec = ServingSpec(
        model=model, image="i", sync_image="s", bucket="b", region="eu-central-1", service_account=model.name,
        gateway="istio-system/model-api", api_host="api.models.example.eu",
    )  # fmt: skip
    return virtual_service(spec)


def _routes(eu_config: StackConfig, **variants: Any) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in _service(eu_config, **variants)["spec"]["http"]}


def test_shadow_mirrors_live_routes(eu_config: StackConfig) -> None:
    routes = _routes(eu_config, weights=(("1", 100), ("2", 0)), shadow=Shadow(version="2", percent=10))
    weighted = routes["tabular-classifier-weighted"]
    assert weighted["mirror"]["subset"] == "v2", weighted
    assert weighted["mirrorPercentage"] == {"value": 10.0}, weighted
    assert "mirror" not in routes["tabular-classifier-v1"], "an explicit version path is not live traffic"
    assert "mirror" not in routes["tabular-classifier-header-0"], "the header route already sends to v2"


def test_fault_on_the_routes_that_send_only_to_the_version(eu_config: StackConfig) -> None:
    routes = _routes(eu_config, faults=(("2", Fault(delay_ms=50, error_ratio=0.2)),))
    fault = routes["tabular-classifier-v2"]["fault"]
    assert fault == {
        "delay": {"percentage": {"value": 100.0}, "fixedDelay": "50ms"},
        "abort": {"percentage": {"value": 20.0}, "httpStatus": 500},
    }, fault
    assert routes["tabular-classifier-header-0"]["fault"] == fault, "the header route sends only to v2"
    assert "fault" not in routes["tabular-classifier-v1"], "v1 is not degraded"
    assert "fault" not in routes["tabular-classifier-weighted"], (
        "Istio cannot fault one destination of a split"
    )


def test_no_shadow_no_faults_no_extra_keys(eu_config: StackConfig) -> None:
    for route in _routes(eu_config).values():
        assert not {"mirror", "mirrorPercentage", "fault"} & set(route), route


def test_mirror_and_fault_validate_against_istios_crd_schema(eu_config: StackConfig) -> None:
    validate(
        _service(
            eu_config,
            weights=(("1", 90), ("2", 10)),
            shadow=Shadow(version="2", percent=10),
            faults=(("2", Fault(delay_ms=50, error_ratio=0.2)),),
        )
    )
