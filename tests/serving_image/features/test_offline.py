"""The offline store's data: scikit-learn's rows per patient, fixed times, corrections after the labels."""

from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from serving_image.features import offline, repository
from serving_image.features.schema import FEATURE_NAMES, JOIN_KEY


def test_one_row_per_patient_is_the_source_data_then_the_corrections() -> None:
    table = offline.measurements()
    x, _ = offline.source_rows()
    fixed = offline.corrected_patients(len(x))
    assert table.num_rows == len(x) + len(fixed), f"{table.num_rows} rows"
    ids = table.column(JOIN_KEY).to_numpy()
    assert np.array_equal(ids[: len(x)], np.arange(len(x))), "the first rows are not patients 0..n-1 in order"
    assert np.array_equal(ids[len(x) :], fixed), "the later rows are not the corrected patients"
    first = np.column_stack([table.column(name).to_numpy()[: len(x)] for name in FEATURE_NAMES])
    assert np.array_equal(first, x), "the first measurements are not scikit-learn's rows"


def test_columns_are_the_contracts_names_and_types() -> None:
    schema = offline.measurements().schema
    assert schema.names == [JOIN_KEY, offline.TIMESTAMP, *FEATURE_NAMES], f"columns {schema.names}"
    assert schema.field(JOIN_KEY).type == pa.int64(), f"{JOIN_KEY} is {schema.field(JOIN_KEY).type}"
    floats = {str(schema.field(name).type) for name in FEATURE_NAMES}
    assert floats == {"float"}, f"feature columns are {floats}, not float32"


def test_every_correction_postdates_the_patients_label() -> None:
    table, labels = offline.measurements(), offline.labels()
    x, _ = offline.source_rows()
    label_time = dict(
        zip(labels.column(JOIN_KEY).to_pylist(), labels.column(offline.TIMESTAMP).to_pylist(), strict=True)
    )
    rows = list(
        zip(table.column(JOIN_KEY).to_pylist(), table.column(offline.TIMESTAMP).to_pylist(), strict=True)
    )
    first, corrections = rows[: len(x)], rows[len(x) :]
    assert all(when < label_time[patient] for patient, when in first), "a first measurement after its label"
    assert all(when > label_time[patient] for patient, when in corrections), "a correction before the label"
    assert max(when for _, when in rows) == offline.latest_time(), "latest_time is not the newest event"


def test_corrections_change_every_corrected_row() -> None:
    x, _ = offline.source_rows()
    fixed = offline.corrected_patients(len(x))
    changed = (offline.corrections(x, fixed) != x[fixed]).any(axis=1)
    assert len(fixed) == round(len(x) * offline.CORRECTED_SHARE), f"{len(fixed)} corrected patients"
    assert changed.all(), "a correction equal to the original row shows nothing"


def test_labels_are_the_source_labels() -> None:
    labels = offline.labels()
    _, y = offline.source_rows()
    assert labels.schema.names == [JOIN_KEY, offline.TIMESTAMP, offline.LABEL], labels.schema.names
    assert np.array_equal(labels.column(offline.LABEL).to_numpy(), y), "labels differ from scikit-learn's"


def test_parquet_bytes_are_the_same_on_every_build(tmp_path: Path) -> None:
    repository.write_data(tmp_path / "a")
    repository.write_data(tmp_path / "b")
    for name in (repository.MEASUREMENTS_FILE, repository.LABELS_FILE):
        first, second = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        assert first == second, f"{name} differs between two builds"
