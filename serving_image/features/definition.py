"""A feature service as the model sees it: its ordered columns, its version, and its input tensor.

Training (Feast's historical retrieval) and serving (Feast's online store) both end in
:func:`to_model_input`, so the columns a model was trained on and the ones it is served are built by
the same code, in the same order, with the same dtype.
"""

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

VERSION_HEX = 16


class FeatureGap(Exception):
    """A requested row lacks a feature value; the server answers 4xx naming them, never a zero."""

    def __init__(self, missing: Sequence[tuple[int, str]]) -> None:
        self.missing = list(missing)
        shown = ", ".join(f"row {row}: {name}" for row, name in self.missing[:10])
        more = f" and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
        super().__init__(f"missing feature values ({shown}{more})")


def ordered_features(store: Any, service: str) -> list[str]:
    """The service's feature names in the model's column order: projections, then each one's features."""
    definition = store.get_feature_service(service)
    return [
        feature.name for projection in definition.feature_view_projections for feature in projection.features
    ]


def service_version(store: Any, service: str) -> str:
    """A digest of what the service serves: each (view, feature, dtype) in order, and any transformation's
    source, so a model records exactly the definition it was trained from."""
    definition = store.get_feature_service(service)
    entries: list[Any] = []
    for projection in definition.feature_view_projections:
        view = projection.name
        entries.extend([view, feature.name, str(feature.dtype)] for feature in projection.features)
        entries.append(_transformation_source(store, view))
    canonical = json.dumps(entries, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()[:VERSION_HEX]


def _transformation_source(store: Any, view: str) -> str:
    """An on-demand view's transformation source (its UDF string); empty for a batch view."""
    for on_demand in store.list_on_demand_feature_views():
        if on_demand.name == view:
            udf = getattr(on_demand.feature_transformation, "udf_string", "")
            return str(udf)
    return ""


def to_model_input(columns: Mapping[str, Sequence[Any]], ordered: Sequence[str]) -> NDArray[np.float32]:
    """Rows of ``ordered`` features from column lists (Feast's ``to_dict()`` or a frame's columns) as the
    model's float32 input; any absent, None or NaN value raises :class:`FeatureGap` naming row and feature."""
    absent = [name for name in ordered if name not in columns]
    if absent:
        raise FeatureGap([(0, name) for name in absent])
    rows = len(columns[ordered[0]]) if ordered else 0
    missing = [
        (row, name)
        for name in ordered
        for row, value in enumerate(columns[name])
        if value is None or (isinstance(value, float) and math.isnan(value))
    ]
    if missing:
        raise FeatureGap(sorted(missing))
    out = np.empty((rows, len(ordered)), dtype=np.float32)
    for index, name in enumerate(ordered):
        out[:, index] = np.asarray(columns[name], dtype=np.float32)
    return out
