"""The mesh's confirmation (issue 14 point 2): the VirtualService the stack builds, with the status Istio
writes when config status is on, every document checked against Istio's own CRD schema. Istio cannot
run here, so the status is written by the test in the shape the schema and Istio's docs give."""

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from servectl.experiments.mesh_status import in_effect, route_weights
from stacks.config import parse_config
from stacks.manifests.serving import ServingSpec, virtual_service
from stacks.preview.run import ROOT
from tests.stacks.schemas import validate

MODEL = "tabular-classifier"
PATCHED = datetime(2026, 11, 30, 15, 0, tzinfo=UTC).timestamp()


def _service(weights: tuple[tuple[str, int], ...], status: dict[str, Any] | None, generation: int = 4) -> Any:
    config = yaml.safe_load((ROOT / "Pulumi.eu-prod.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("model-serving:")}
    parsed = parse_config(
        values, stack="eu-prod", source="Pulumi.eu-prod.yaml", aws_region=config["aws:region"]
    )
    model = parsed.models[0]
    model = replace(model, variants=replace(model.variants, weights=weights))
    spec = ServingSpec(model=model, image="i", sync_image="s", region="eu-central-1",
                       service_account=model.name, gateway="istio-system/model-api",
                       api_host="api.models.example.eu")  # fmt: skip
    document = virtual_service(spec)
    document["metadata"]["generation"] = generation
    if status is not None:
        document["status"] = status
    validate(document)
    return document


def _reconciled(state: str, generation: int, at: str, message: str = "") -> dict[str, Any]:
    condition = {"type": "Reconciled", "status": state, "observedGeneration": generation,
                 "lastTransitionTime": at, "message": message}  # fmt: skip
    return {"conditions": [condition], "observedGeneration": generation}


NEW = {"1": 75, "2": 25}


def test_the_weighted_route_is_read_from_the_stacks_own_virtual_service() -> None:
    assert route_weights(_service((("1", 75), ("2", 25)), None), MODEL) == NEW


@pytest.mark.parametrize(
    ("weights", "status", "reason"),
    [
        ((("1", 95), ("2", 5)), _reconciled("True", 4, "2026-11-30T15:00:05Z"),
         "the VirtualService routes v1 95 / v2 5, not v1 75 / v2 25"),
        ((("1", 75), ("2", 25)), None, "has no Reconciled condition: turn on Istio's config status"),
        ((("1", 75), ("2", 25)), _reconciled("True", 3, "2026-11-30T14:00:00Z"),
         "Istio has reconciled generation 3, not 4, which holds these weights"),
        ((("1", 75), ("2", 25)), _reconciled("False", 4, "2026-11-30T15:00:01Z", "61/122 complete"),
         "the mesh is still applying the weights: 61/122 complete"),
    ],
)  # fmt: skip
def test_the_mesh_is_not_confirmed_until_istio_reports_the_generation_reconciled(
    weights: tuple[tuple[str, int], ...], status: dict[str, Any] | None, reason: str
) -> None:
    confirmation = in_effect(_service(weights, status), MODEL, NEW, PATCHED)
    assert confirmation.confirmed_at is None and reason in str(confirmation.reason), confirmation


def test_the_mesh_is_confirmed_from_when_the_generation_was_reconciled() -> None:
    done = in_effect(_service((("1", 75), ("2", 25)), _reconciled("True", 4, "2026-11-30T15:00:05Z")),
                     MODEL, NEW, PATCHED)  # fmt: skip
    assert (done.confirmed_at, done.reason) == (PATCHED + 5, None), done
    stayed = in_effect(_service((("1", 75), ("2", 25)), _reconciled("True", 4, "2026-11-30T14:00:00Z")),
                       MODEL, NEW, PATCHED)  # fmt: skip
    assert stayed.confirmed_at == PATCHED, "a condition true since before the patch confirms from the patch"
