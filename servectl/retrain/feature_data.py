"""A retrain's labelled data from the feature store: the labels' entity rows joined point-in-time by Feast.

The labels table (parquet: ``patient_id``, ``event_timestamp``, ``label``) says who was labelled when; the
feature service's values as of each label's time come from the offline store through
:func:`serving_image.features.training.historical_rows`, the same path ``build_models`` trains through. The
rows are returned as a :class:`~servectl.retrain.data.Labelled` in time order, so the retrain's split and
gate are the CSV path's; they also carry the service's name and version for the new version's metadata.
"""

import hashlib
from pathlib import Path

import numpy as np

from servectl.retrain.data import MIN_ROWS, InputError, Labelled
from serving_image import model_zoo
from serving_image.features.definition import FeatureGap
from serving_image.features.offline import TIMESTAMP
from serving_image.features.repository import FeatureRepoError, open_store
from serving_image.features.training import historical_rows, read_labels


def from_feature_store(repo: Path, service: str, labels: Path, features: list[str]) -> Labelled:
    """The labelled rows of ``labels`` with ``service``'s features; its columns must be ``features``."""
    try:
        store = open_store(repo)
        entities = read_labels(labels)
        if len(entities) < MIN_ROWS:
            raise InputError(f"{labels}: {len(entities)} rows; a retrain needs at least {MIN_ROWS}")
        rows = historical_rows(store, service, entities.sort_values(TIMESTAMP, kind="stable"))
    except FeatureRepoError as error:
        raise InputError(str(error)) from None
    except FeatureGap as gap:
        raise InputError(
            f"{labels}: feature service '{service}' has no value as of the label's time: {gap}"
        ) from None
    _check_columns(service, rows.columns, features)
    if len(set(rows.y.tolist())) < model_zoo.N_CLASSES:
        raise InputError(f"{labels}: column 'label': every row has the same class; training needs both")
    digest = hashlib.sha256()
    for array in (rows.ids, rows.x, rows.y):
        digest.update(np.ascontiguousarray(array).tobytes())
    return Labelled(
        x=rows.x,
        y=rows.y,
        sha256=digest.hexdigest(),
        ordered_by=TIMESTAMP,
        feature_service=rows.service,
        feature_service_version=rows.version,
    )


def _check_columns(service: str, found: list[str], expected: list[str]) -> None:
    """The service must serve the serving version's columns in its order: the new version replaces it."""
    if found == expected:
        return
    for position, (have, want) in enumerate(zip(found, expected, strict=False)):
        if have != want:
            raise InputError(
                f"feature service '{service}': feature {position} is '{have}', the serving version's profile "
                f"has '{want}'; the service must serve the model's columns in order"
            )
    raise InputError(
        f"feature service '{service}': {len(found)} features, "
        f"the serving version's profile has {len(expected)}"
    )
