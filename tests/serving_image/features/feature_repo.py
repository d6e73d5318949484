"""A small Feast repository built for a test: the project's definitions over a few real patients.

The repository's own data is built by the set-up (slice A of issue 17); these tests build their own
in ``tmp_path`` from the same ``definitions.py`` so they do not depend on it: a parquet file of the first
scikit-learn breast-cancer rows as patients 0..N-1 (one of them with a null), ``feast apply`` through the
Python API, and a materialization into the SQLite online store.
"""

import importlib.util
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd  # type: ignore[import-untyped]
from sklearn.datasets import load_breast_cancer

from serving_image.features.definition import service_version
from serving_image.features.online import import_feast
from serving_image.features.schema import (
    FEATURE_NAMES,
    FEATURE_VIEW,
    JOIN_KEY,
    SERVICE_KEY,
    SERVICE_VERSION_KEY,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFINITIONS = REPO_ROOT / "serving_image" / "feature_repo"
PATIENTS = 12
GAP_PATIENT = 5
"""This patient's row has no ``mean_texture``: a missing feature value, never a zero."""
GAP_FEATURE = "mean_texture"
# Feast is imported the server's way, so it leaves this process's Prometheus variables alone.
FEAST = import_feast()
EVENT_TIME = datetime(2026, 1, 1, tzinfo=UTC)
MATERIALIZED_END = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FeatureRepo:
    """A built repository: its directory, and each patient's features as the model takes them."""

    path: Path
    features: np.ndarray
    """float32 [PATIENTS, 30]: row i is patient i (the gap patient's missing value is NaN)."""

    @property
    def online_store(self) -> Path:
        return self.path / "data" / "online_store.db"

    def store(self) -> Any:
        return FEAST.FeatureStore(repo_path=str(self.path))


def build_feature_repo(root: Path) -> FeatureRepo:
    """Copy the project's definitions to ``root``, write the patients, apply and materialize them."""
    shutil.copytree(DEFINITIONS, root, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (root / "data").mkdir()
    features = load_breast_cancer().data[:PATIENTS].astype(np.float32)
    features[GAP_PATIENT, FEATURE_NAMES.index(GAP_FEATURE)] = np.nan
    frame = pd.DataFrame(features, columns=list(FEATURE_NAMES))
    frame[JOIN_KEY] = np.arange(PATIENTS, dtype=np.int64)
    frame["event_timestamp"] = pd.Timestamp(EVENT_TIME)
    frame.to_parquet(root / "data" / f"{FEATURE_VIEW}.parquet")
    store = FEAST.FeatureStore(repo_path=str(root))
    store.apply(_definitions(root / "definitions.py"))
    store.materialize(datetime(2025, 1, 1, tzinfo=UTC), MATERIALIZED_END)
    return FeatureRepo(root, features)


def _definitions(path: Path) -> list[Any]:
    """The Feast objects ``definitions.py`` declares, as ``feast apply`` would collect them."""
    spec = importlib.util.spec_from_file_location("feature_repo_definitions", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kinds = (FEAST.Entity, FEAST.FeatureView, FEAST.FeatureService)
    return [value for value in vars(module).values() if isinstance(value, kinds)]


def with_feature_service(source: Path, target: Path, service: str | None, version: str | None) -> None:
    """Copy a version directory, naming ``service`` (and ``version`` if given) in the ONNX metadata; with
    ``service`` None, naming none (the bundled versions name theirs, since they are trained through Feast)."""
    shutil.copytree(source, target)
    model = onnx.load(str(target / "model.onnx"))
    props = {prop.key: prop.value for prop in model.metadata_props}
    props.pop(SERVICE_KEY, None)
    props.pop(SERVICE_VERSION_KEY, None)
    if service is not None:
        props[SERVICE_KEY] = service
    if version is not None:
        props[SERVICE_VERSION_KEY] = version
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(target / "model.onnx"))


def entity_model_repository(root: Path, bundled: Path, repo: FeatureRepo) -> Path:
    """Models for entity-keyed requests, from the bundled classifier's version 1:

    ``entity-classifier`` 1 names ``tabular_classifier_v1`` at its current version; 2 names it at a
    version it no longer has (served from features only); ``plain-classifier`` 1 names no service.
    """
    current = service_version(repo.store(), "tabular_classifier_v1")
    source = bundled / "tabular-classifier" / "1"
    with_feature_service(source, root / "entity-classifier" / "1", "tabular_classifier_v1", current)
    with_feature_service(source, root / "entity-classifier" / "2", "tabular_classifier_v1", "0" * 16)
    with_feature_service(source, root / "plain-classifier" / "1", None, None)
    for model in ("entity-classifier", "plain-classifier"):
        config = "max_batch_size: 8\nmax_queue_delay_ms: 0\n"
        (root / model / "config.yaml").write_text(config, encoding="utf-8")
    return root
