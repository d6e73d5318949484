"""No training-serving skew: the model input built at training time is the one built from the online store.

For 100 sampled patients (fixed seed) and every bundled model version's feature service, the training path
(Feast's historical retrieval, at a time after the store's latest row) and the serving path (the online store
after materialization) give the same tensor: same values, column order and dtype. The build's own training
rows for those patients are the historical retrieval at their labels' times, so a corrected measurement
(later than the label) is served online but was never trained on. A throw-away repository with an on-demand
feature shows both paths agree through Feast and that a serving-side transformation that differs is caught.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from numpy.typing import NDArray

from serving_image import build_models, model_zoo
from serving_image.features import offline, repository
from serving_image.features.definition import ordered_features, to_model_input
from serving_image.features.schema import JOIN_KEY, service_name
from serving_image.features.skew import differences
from serving_image.features.training import historical_rows
from tests.feature_repo import copy_repo

SAMPLE, SEED = 100, 17
SERVICES = [
    service_name("tabular-classifier", "1"),
    service_name("tabular-classifier", "2"),
    service_name("tabular-classifier-int8", "1"),
]
BUNDLED_PROFILE = Path(__file__).resolve().parents[3] / "serving_image" / "models" / "tabular-classifier"


def online_input(store: Any, service: str, patients: NDArray[np.int64]) -> NDArray[np.float32]:
    """The serving path: the online store's answer for ``patients`` through the shared transformation."""
    answer = store.get_online_features(
        features=store.get_feature_service(service),
        entity_rows=[{JOIN_KEY: int(patient)} for patient in patients],
    ).to_dict()
    return to_model_input(answer, ordered_features(store, service))


def training_input(store: Any, service: str, patients: NDArray[np.int64], when: Any) -> NDArray[np.float32]:
    """The training path: Feast's point-in-time retrieval for ``patients`` as of ``when``."""
    entities = pd.DataFrame({JOIN_KEY: patients, offline.TIMESTAMP: [when] * len(patients)})
    return historical_rows(store, service, entities).x


@pytest.fixture(scope="module")
def sample(built_repo: Path) -> NDArray[np.int64]:
    """100 patients of the build's training rows, drawn with a fixed seed."""
    data = model_zoo.load_dataset(built_repo, SERVICES[0])
    chosen = np.random.default_rng(SEED).choice(data.ids_train, size=SAMPLE, replace=False)
    return np.asarray(chosen, dtype=np.int64)


@pytest.mark.parametrize("service", SERVICES)
def test_training_and_serving_inputs_are_identical(built_repo: Path, sample: Any, service: str) -> None:
    store = repository.open_store(built_repo)
    after_latest = offline.latest_time() + timedelta(days=1)
    trained = training_input(store, service, sample, after_latest)
    served = online_input(store, service, sample)
    columns = ordered_features(store, service)
    assert trained.shape == (SAMPLE, model_zoo.N_FEATURES), f"{service}: training input {trained.shape}"
    assert differences(trained, served, columns, columns) == [], f"{service}: skew between the two paths"
    assert trained.dtype == served.dtype == np.float32, f"{service}: dtypes {trained.dtype}, {served.dtype}"
    assert columns == model_zoo.feature_names(), f"{service}: columns are not the models' input order"


@pytest.mark.parametrize("service", SERVICES)
def test_the_builds_training_rows_are_the_point_in_time_retrieval(
    built_repo: Path, sample: Any, service: str
) -> None:
    store = repository.open_store(built_repo)
    data = model_zoo.load_dataset(built_repo, service)
    position = {int(patient): row for row, patient in enumerate(data.ids_train)}
    built = data.x_train[[position[int(patient)] for patient in sample]]
    labelled_at = [when + offline.LABEL_DELAY for when in offline.measured_at(sample)]
    entities = pd.DataFrame({JOIN_KEY: sample, offline.TIMESTAMP: labelled_at})
    retrieved = historical_rows(store, service, entities).x
    assert differences(built, retrieved) == [], f"{service}: the build's rows are not the retrieval's"
    x, _ = offline.source_rows()
    assert differences(built, x[sample]) == [], f"{service}: the build's rows are not the source data"


def test_served_rows_match_the_build_except_later_corrections(built_repo: Path, sample: Any) -> None:
    store = repository.open_store(built_repo)
    data = model_zoo.load_dataset(built_repo, SERVICES[0])
    position = {int(patient): row for row, patient in enumerate(data.ids_train)}
    built = data.x_train[[position[int(patient)] for patient in sample]]
    served = online_input(store, SERVICES[0], sample)
    x, _ = offline.source_rows()
    corrected = np.isin(sample, offline.corrected_patients(len(x)))
    assert 0 < corrected.sum() < SAMPLE, f"the sample holds {corrected.sum()} corrected patients"
    assert differences(built[~corrected], served[~corrected]) == [], (
        "uncorrected patients are served other rows"
    )
    changed = (built[corrected] != served[corrected]).any(axis=1)
    assert changed.all(), "a corrected patient is served the row the build trained on, not the correction"


def test_the_bundled_models_were_trained_on_these_rows(built_repo: Path) -> None:
    """The profile of the rows read here is byte for byte the bundled versions' (make setup built them)."""
    profile = build_models.training_profile(model_zoo.load_dataset(built_repo, SERVICES[0]))
    for version in ("1", "2"):
        bundled = (BUNDLED_PROFILE / version / build_models.PROFILE_FILE).read_bytes()
        assert profile == bundled, f"bundled version {version} was trained on other rows"


DERIVED = """
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float32

from serving_image.features.schema import ENTITY, FEATURE_NAMES, FEATURE_VIEW, JOIN_KEY

patient = Entity(name=ENTITY, join_keys=[JOIN_KEY], value_type=ValueType.INT64)
source = FileSource(
    name="measurements", path=f"data/{FEATURE_VIEW}.parquet", timestamp_field="event_timestamp"
)
measurements = FeatureView(
    name=FEATURE_VIEW, entities=[patient], ttl=timedelta(days=3650), source=source, online=True,
    schema=[Field(name=name, dtype=Float32) for name in FEATURE_NAMES],
)


@on_demand_feature_view(
    sources=[measurements], schema=[Field(name="radius_to_area", dtype=Float32)], mode="pandas"
)
def tumour_ratios(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["radius_to_area"] = (inputs["mean_radius"] / inputs["mean_area"]).astype("float32")
    return out


ratio_service = FeatureService(
    name="ratio_service", features=[measurements[["mean_radius", "mean_area"]], tumour_ratios]
)
"""


@pytest.fixture(scope="module")
def derived_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away repository whose service adds an on-demand feature (a ratio of two measurements)."""
    repo = copy_repo(tmp_path_factory.mktemp("derived"))
    (repo / "definitions.py").write_text(DERIVED, encoding="utf-8")
    repository.build(repo)
    return repo


@pytest.fixture(scope="module")
def derived_inputs(derived_repo: Path, sample: Any) -> dict[str, Any]:
    """Both paths' inputs of the ratio service for the sample, and the online store's raw answer."""
    store = repository.open_store(derived_repo)
    after_latest = offline.latest_time() + timedelta(days=1)
    raw = store.get_online_features(
        features=["tumour_measurements:mean_radius", "tumour_measurements:mean_area"],
        entity_rows=[{JOIN_KEY: int(patient)} for patient in sample],
    ).to_dict()
    return {
        "columns": ordered_features(store, "ratio_service"),
        "training": training_input(store, "ratio_service", sample, after_latest),
        "serving": online_input(store, "ratio_service", sample),
        "radius": np.asarray(raw["mean_radius"], dtype=np.float32),
        "area": np.asarray(raw["mean_area"], dtype=np.float32),
    }


def test_an_on_demand_feature_agrees_through_feast(derived_inputs: dict[str, Any]) -> None:
    columns = derived_inputs["columns"]
    assert columns == ["mean_radius", "mean_area", "radius_to_area"], f"service columns {columns}"
    training, serving = derived_inputs["training"], derived_inputs["serving"]
    assert differences(training, serving, columns, columns) == [], "the on-demand feature differs by path"
    ratio = derived_inputs["radius"] / derived_inputs["area"]
    assert np.array_equal(training[:, 2], ratio), "the derived column is not the ratio of the measurements"


def _reordered(inputs: dict[str, Any]) -> tuple[NDArray[Any], list[str]]:
    order = [2, 0, 1]
    return inputs["serving"][:, order], [inputs["columns"][i] for i in order]


def _float64_ratio(inputs: dict[str, Any]) -> tuple[NDArray[Any], list[str]]:
    radius, area = inputs["radius"].astype(np.float64), inputs["area"].astype(np.float64)
    return np.column_stack([radius, area, radius / area]), inputs["columns"]


def _smoothed_ratio(inputs: dict[str, Any]) -> tuple[NDArray[Any], list[str]]:
    radius, area = inputs["radius"], inputs["area"]
    return np.column_stack([radius, area, radius / (area + np.float32(1))]), inputs["columns"]


def _same_ratio_in_float32(inputs: dict[str, Any]) -> tuple[NDArray[Any], list[str]]:
    radius, area = inputs["radius"], inputs["area"]
    return np.column_stack([radius, area, radius / area]), inputs["columns"]


@pytest.mark.parametrize(
    ("transformation", "caught"),
    [
        (_reordered, ["column order", "values"]),
        (_float64_ratio, ["dtype", "values"]),
        (_smoothed_ratio, ["values"]),
        (_same_ratio_in_float32, []),
    ],
    ids=["columns-reordered", "float64-ratio", "ratio-plus-one", "same-ratio-float32"],
)
def test_a_differing_serving_transformation_is_caught(
    derived_inputs: dict[str, Any], transformation: Any, caught: list[str]
) -> None:
    serving, columns = transformation(derived_inputs)
    found = differences(derived_inputs["training"], serving, derived_inputs["columns"], columns)
    kinds = [reason.split(":")[0] for reason in found]
    assert kinds == caught, f"{transformation.__name__}: expected {caught}, found {found}"
