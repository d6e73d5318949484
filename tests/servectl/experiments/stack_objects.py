"""The stack's own objects for the controller's tests: eu-prod's model with a rollout block and the
VirtualService `serving.virtual_service` builds for it.

These replaced a recording stand-in for the API server: the controller's calls now go to a real
kube-apiserver (`tests/kube_api.py`, `test_kube_real.py`), which checks RBAC and the Istio schema as the
stand-in could not. The one case a real server cannot play, an API server that is down, needs no stand-in:
a closed loopback port (`test_kube.py`, `test_controller.py`).
"""

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from stacks.config import parse_config
from stacks.manifests.serving import ServingSpec, virtual_service
from stacks.settings import ModelConfig

ROOT = Path(__file__).resolve().parents[3]


def stack_model(**variants: Any) -> ModelConfig:
    """eu-prod's model with a rollout block, with `variants` replaced."""
    config = yaml.safe_load((ROOT / "Pulumi.eu-prod.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("model-serving:")}
    parsed = parse_config(
        values, stack="eu-prod", source="Pulumi.eu-prod.yaml", aws_region=config["aws:region"]
    )
    model = next(m for m in parsed.models if m.rollout is not None)
    return replace(model, variants=replace(model.variants, **variants))


def stack_virtual_service(weights: dict[str, int], **variants: Any) -> dict[str, Any]:
    """The VirtualService the stack builds for that model with these weights, as the API server returns it."""
    model = stack_model(weights=tuple(weights.items()), **variants)
    spec = ServingSpec(
        model=model, image="i", sync_image="s", region="eu-central-1", service_account=model.name,
        gateway="istio-system/model-api", api_host="api.models.example.eu",
    )  # fmt: skip
    built = virtual_service(spec)
    built["metadata"]["resourceVersion"] = "41"
    return built
