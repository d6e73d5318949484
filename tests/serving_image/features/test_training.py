"""Training rows through Feast: point-in-time correct, in the caller's order, errors naming the cause."""

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest

from serving_image.features import offline, repository, training
from serving_image.features.definition import FeatureGap, service_version
from serving_image.features.schema import JOIN_KEY

SERVICE = "tabular_classifier_v1"


def entities(patients: list[int], delay: timedelta | list[timedelta]) -> pd.DataFrame:
    """Entity rows for ``patients``, each at its first measurement plus ``delay`` (one, or one each)."""
    delays = delay if isinstance(delay, list) else [delay] * len(patients)
    measured = offline.measured_at(np.asarray(patients))
    times = [when + after for when, after in zip(measured, delays, strict=True)]
    return pd.DataFrame({JOIN_KEY: patients, offline.TIMESTAMP: times})


@pytest.fixture(scope="module")
def corrected() -> list[int]:
    x, _ = offline.source_rows()
    return [int(patient) for patient in offline.corrected_patients(len(x))[:5]]


def test_at_the_labels_time_a_later_correction_is_not_seen(built_repo: Path, corrected: list[int]) -> None:
    store = repository.open_store(built_repo)
    rows = training.historical_rows(store, SERVICE, entities(corrected, offline.LABEL_DELAY))
    x, _ = offline.source_rows()
    assert np.array_equal(rows.x, x[corrected]), "training at the label's time saw the later correction"


def test_after_the_correction_it_is_seen(built_repo: Path, corrected: list[int]) -> None:
    store = repository.open_store(built_repo)
    later = offline.LABEL_DELAY + offline.CORRECTION_DELAY
    rows = training.historical_rows(store, SERVICE, entities(corrected, later))
    x, _ = offline.source_rows()
    fixed = offline.corrected_patients(len(x))
    expected = offline.corrections(x, fixed)[np.searchsorted(fixed, corrected)]
    assert np.array_equal(rows.x, expected), "a retrieval after the correction did not return it"


def test_rows_come_back_in_the_callers_order(built_repo: Path) -> None:
    store = repository.open_store(built_repo)
    patients = [400, 3, 250, 17, 99]
    rows = training.historical_rows(store, SERVICE, entities(patients, offline.LABEL_DELAY))
    x, _ = offline.source_rows()
    assert rows.ids.tolist() == patients, f"ids came back as {rows.ids.tolist()}"
    assert np.array_equal(rows.x, x[patients]), "rows are not in the entity rows' order"
    assert rows.version == service_version(store, SERVICE), "the service version is not recorded"


def test_an_entity_before_its_first_measurement_is_a_gap_not_a_zero(built_repo: Path) -> None:
    store = repository.open_store(built_repo)
    with pytest.raises(FeatureGap) as gap:
        training.historical_rows(store, SERVICE, entities([4, 5], [timedelta(0), -timedelta(hours=1)]))
    assert {row for row, _ in gap.value.missing} == {1}, f"gaps named {gap.value.missing[:3]}"
    assert len(gap.value.missing) == 30, f"{len(gap.value.missing)} missing values named, not all 30"


def test_an_unknown_service_is_named(built_repo: Path) -> None:
    store = repository.open_store(built_repo)
    with pytest.raises(repository.FeatureRepoError, match="feature service 'no_such_service'"):
        training.historical_rows(store, "no_such_service", entities([1], offline.LABEL_DELAY))


def test_labels_read_from_the_built_parquet(built_repo: Path) -> None:
    frame = training.read_labels(built_repo / "data" / repository.LABELS_FILE)
    assert list(frame.columns) == [JOIN_KEY, offline.TIMESTAMP, offline.LABEL], list(frame.columns)
    assert len(frame) == 569, f"{len(frame)} labels"


def test_labels_without_a_column_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    pd.DataFrame({JOIN_KEY: [1], offline.TIMESTAMP: [offline.MEASURED_FROM]}).to_parquet(path)
    with pytest.raises(repository.FeatureRepoError, match=r"labels\.parquet: column 'label' missing"):
        training.read_labels(path)


def test_an_unreadable_labels_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(repository.FeatureRepoError, match=r"labels\.parquet: "):
        training.read_labels(path)
