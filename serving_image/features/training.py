"""Training rows from the offline store: Feast's point-in-time join, then the shared transformation.

Each labelled entity row (``patient_id``, ``event_timestamp``, ``label``) gets the feature values that
were current at its timestamp, never a later one; :func:`serving_image.features.definition.to_model_input`
turns them into the model's input, the same function the server applies to the online store's answer.
"""

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from numpy.typing import NDArray

from serving_image.features.definition import ordered_features, service_version, to_model_input
from serving_image.features.offline import LABEL, TIMESTAMP
from serving_image.features.repository import FeatureRepoError, one_line
from serving_image.features.schema import JOIN_KEY


@dataclass(frozen=True, kw_only=True)
class TrainingRows:
    """One feature service's rows for a set of entity rows, in the entity rows' order."""

    service: str
    version: str
    """:func:`serving_image.features.definition.service_version` of the service."""
    columns: list[str]
    ids: NDArray[np.int64]
    times: NDArray[np.datetime64]
    x: NDArray[np.float32]
    y: NDArray[np.int64]


def read_labels(path: Path) -> pd.DataFrame:
    """A labels parquet (``patient_id``, ``event_timestamp``, ``label``); errors name the file and column."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise FeatureRepoError(f"{path}: {one_line(error)}") from None
    for column in (JOIN_KEY, TIMESTAMP, LABEL):
        if column not in frame.columns:
            raise FeatureRepoError(f"{path}: column '{column}' missing (found {list(frame.columns)})")
    if frame[LABEL].isna().any():
        raise FeatureRepoError(f"{path}: column '{LABEL}': {int(frame[LABEL].isna().sum())} empty values")
    return frame[[JOIN_KEY, TIMESTAMP, LABEL]]


def historical_rows(store: Any, service: str, entities: pd.DataFrame) -> TrainingRows:
    """The service's features for each entity row as of its timestamp, as the model's float32 input."""
    try:
        definition = store.get_feature_service(service)
    except Exception as error:  # Feast's FeatureServiceNotFoundException and registry errors
        raise FeatureRepoError(f"feature service '{service}': {one_line(error)}") from None
    ordered = ordered_features(store, service)
    # Feast's file store may return rows in another order; the position column restores the caller's.
    keyed = entities.reset_index(drop=True).assign(_row=np.arange(len(entities)))
    with contextlib.redirect_stdout(io.StringIO()):
        frame = store.get_historical_features(entity_df=keyed, features=definition).to_df()
    # The file store drops an entity row with no value as of its time: put it back empty, so the shared
    # transformation names it as a gap rather than training silently on fewer rows.
    frame = frame.set_index("_row").reindex(range(len(keyed))).reset_index(drop=True)
    x = to_model_input({name: frame[name].tolist() for name in ordered}, ordered)
    return TrainingRows(
        service=service,
        version=service_version(store, service),
        columns=ordered,
        ids=frame[JOIN_KEY].to_numpy(dtype=np.int64),
        times=frame[TIMESTAMP].to_numpy(),
        x=x,
        y=frame[LABEL].to_numpy(dtype=np.int64) if LABEL in frame else np.empty(0, np.int64),
    )
