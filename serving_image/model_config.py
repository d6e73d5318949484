"""A model's optional ``config.yaml``: dynamic batching limits, A/B variants and the quality margin.

The ``variants`` block has the same shape as a model's variants in the stack config, so
the standalone server and Istio split traffic from one description.
"""

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_FILE = "config.yaml"


class ConfigError(Exception):
    """A model's config.yaml is unreadable or invalid; the message names the file, key and reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StickyConfig(_Strict):
    """Assign a version by hashing this header, so one caller keeps one version."""

    header: Annotated[str, Field(min_length=1)]


class HeaderRoute(_Strict):
    """Requests whose ``header`` equals ``value`` go to ``version``, before the weights apply."""

    header: Annotated[str, Field(min_length=1)]
    value: str
    version: str


class ShadowConfig(_Strict):
    """Mirror ``percent`` of live requests to ``version``; its answers are discarded, its metrics kept."""

    version: str
    percent: Annotated[float, Field(gt=0, le=100)]


class FaultConfig(_Strict):
    """A staged degradation of one version, as Istio's fault injection offers."""

    delay_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    error_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0


class VariantsConfig(_Strict):
    """How one model name spreads over its versions."""

    weights: dict[str, Annotated[int, Field(ge=0, le=100)]]
    sticky: StickyConfig | None = None
    routes: tuple[HeaderRoute, ...] = ()
    shadow: ShadowConfig | None = None
    faults: dict[str, FaultConfig] = Field(default_factory=dict)

    def versions(self) -> set[str]:
        """Every version the variants name: weights, routes, shadow and faults."""
        named = set(self.weights) | {route.version for route in self.routes} | set(self.faults)
        return named | ({self.shadow.version} if self.shadow else set())

    @field_validator("weights", "faults", mode="before")
    @classmethod
    def _versions_are_strings(cls, value: object) -> object:
        # YAML reads `1: 90` as an int key; versions are directory names, so accept both.
        if isinstance(value, dict):
            return {str(key): weight for key, weight in value.items()}
        return value

    @model_validator(mode="after")
    def _weights_sum_to_100(self) -> "VariantsConfig":
        total = sum(self.weights.values())
        if not self.weights or total != 100:
            raise ValueError(f"weights must sum to 100, got {total}")
        return self


class QualityConfig(_Strict):
    """Model quality from labelled feedback (serving_image/quality.py): how far below its reference
    accuracy a version may fall before ``ModelQualityDrop`` fires."""

    accuracy_margin: Annotated[float, Field(ge=0, le=1)] = 0.05


class ModelConfig(_Strict):
    """Per-model settings; every field has a default so the file is optional."""

    max_batch_size: Annotated[int, Field(ge=0, le=4096)] = 32
    max_queue_delay_ms: Annotated[float, Field(ge=0, le=1000)] = 0.0
    max_queue_size: Annotated[int, Field(ge=1, le=100_000)] = 256
    # Opt-in for serving_image/response_cache.py: only for models whose outputs depend on their inputs alone.
    response_cache: bool = False
    variants: VariantsConfig | None = None
    quality: QualityConfig = Field(default_factory=QualityConfig)


def load_model_config(model_dir: Path) -> ModelConfig:
    """The model's config.yaml, or the defaults when there is none."""
    path = model_dir / CONFIG_FILE
    if not path.exists():
        return ModelConfig()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    if raw is None:
        return ModelConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: key '{key}': {first['msg']}") from error


def reload_model_config(model_dir: Path, current: ModelConfig) -> ModelConfig:
    """The model's config.yaml read again on SIGHUP; a file that would silently drop ``current`` is an error.

    At start-up a missing or empty file means the defaults. On a reload it more likely means a
    half-written file or a ConfigMap being swapped, and applying the defaults would move all of
    a model's traffic to its newest version, so it raises and the caller keeps ``current``. A
    model that never had a config (``current`` is the defaults) may still have no file.
    """
    path = model_dir / CONFIG_FILE
    if not path.exists():
        if current == ModelConfig():
            return current
        raise ConfigError(f"{path}: missing; keeping the current config (restore the file and reload)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    if not text.strip() or all(line.lstrip().startswith("#") for line in text.splitlines() if line.strip()):
        raise ConfigError(f"{path}: empty; keeping the current config (write the whole file, then reload)")
    return load_model_config(model_dir)
