"""The offline store's data for the bundled models, built the same on every run (docs/features.md).

Each breast-cancer row of scikit-learn is one patient (``patient_id`` = row index) measured at a fixed
time; the patient's label is known a week later. A seeded tenth of the patients get a *corrected*
measurement a month after their label: the online store (latest row) serves it, while training (a
point-in-time join on the label's time) must not see it. That difference is what the tests use to show
the join is point-in-time correct.
"""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer

from serving_image.features.schema import FEATURE_NAMES, JOIN_KEY

TIMESTAMP = "event_timestamp"
LABEL = "label"
MEASURED_FROM = datetime(2025, 1, 6, tzinfo=UTC)
"""Patient ``i`` is measured at ``MEASURED_FROM + i`` hours."""
LABEL_DELAY = timedelta(days=7)
CORRECTION_DELAY = timedelta(days=30)
"""A correction arrives this long after the label, so no training join at the label's time sees it."""
CORRECTED_SHARE = 0.1
CORRECTION_SEED = 20261130
CORRECTION_SCALE = 0.05
"""A corrected value is the original times ``1 + N(0, 0.05)``: a re-measurement, not a new patient."""


def source_rows() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """scikit-learn's breast-cancer features as float32 (the wire dtype) and its labels."""
    bunch = load_breast_cancer()
    return np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)


def measured_at(patients: NDArray[np.int64]) -> list[datetime]:
    """When each patient's first measurement was taken."""
    return [MEASURED_FROM + timedelta(hours=int(patient)) for patient in patients]


def corrected_patients(count: int) -> NDArray[np.int64]:
    """The patients (sorted) who get a later corrected measurement; the same ones on every call."""
    rng = np.random.default_rng(CORRECTION_SEED)
    chosen = rng.choice(count, size=round(count * CORRECTED_SHARE), replace=False)
    return np.sort(chosen).astype(np.int64)


def corrections(x: NDArray[np.float32], patients: NDArray[np.int64]) -> NDArray[np.float32]:
    """The corrected rows of ``patients``: every feature rescaled by a seeded factor near 1."""
    rng = np.random.default_rng(CORRECTION_SEED + 1)
    factors = 1 + CORRECTION_SCALE * rng.standard_normal(size=(len(patients), x.shape[1]))
    return (x[patients].astype(np.float64) * np.abs(factors)).astype(np.float32)


def measurements() -> pa.Table:
    """The ``tumour_measurements`` source: one row per patient, then the corrections, by time."""
    x, _ = source_rows()
    patients = np.arange(len(x), dtype=np.int64)
    fixed = corrected_patients(len(x))
    times = measured_at(patients) + [when + LABEL_DELAY + CORRECTION_DELAY for when in measured_at(fixed)]
    ids = np.concatenate([patients, fixed])
    values = np.concatenate([x, corrections(x, fixed)])
    columns: dict[str, pa.Array] = {
        JOIN_KEY: pa.array(ids, pa.int64()),
        TIMESTAMP: pa.array(times, pa.timestamp("us", tz="UTC")),
    }
    for index, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array(values[:, index], pa.float32())
    return pa.table(columns)


def labels() -> pa.Table:
    """The entity rows training joins on: each patient, the time their label was known, and the label."""
    x, y = source_rows()
    patients = np.arange(len(x), dtype=np.int64)
    return pa.table(
        {
            JOIN_KEY: pa.array(patients, pa.int64()),
            TIMESTAMP: pa.array(
                [when + LABEL_DELAY for when in measured_at(patients)], pa.timestamp("us", tz="UTC")
            ),
            LABEL: pa.array(y, pa.int64()),
        }
    )


def latest_time() -> datetime:
    """The newest event in the offline store: a retrieval at or after it sees every correction."""
    x, _ = source_rows()
    return max(measured_at(corrected_patients(len(x)))) + LABEL_DELAY + CORRECTION_DELAY
