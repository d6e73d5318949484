"""Live input drift counters: a sample of each version's request rows counted into its profile's bins.

At start-up each loaded version's ``profile.json`` (serving_image/drift_profile.py) is read and checked
against the hash in its graph's metadata; a version without a usable profile serves as before, with
``serving_drift_monitored`` 0 and the reason in a ``drift_not_monitored`` log event. In the request path,
after the inputs were validated, a share of requests (``SERVING_DRIFT_SAMPLE_RATE``, drawn per request
from a per-process RNG) have their rows counted: numpy bins the whole batch (one ``searchsorted`` per
feature, one ``bincount`` for all), then one counter increment per bin that got rows. The scores (PSI)
come from Prometheus recording rules over these counters (stacks/monitoring/rules/serving-rules.yaml).
"""

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving_image.access_log import log_event
from serving_image.drift_profile import (
    NAN_BIN,
    OTHER,
    CategoricalFeature,
    NumericFeature,
    Profile,
    ProfileError,
    load_profile,
)
from serving_image.metrics import Metrics
from serving_image.repository import ModelVersion

DEFAULT_SAMPLE_RATE = 0.1


def numeric_bins(column: NDArray[Any], edges: NDArray[np.float64]) -> NDArray[np.intp]:
    """Each value's bin, ``bisect_right(edges, x)``; NaN gets ``len(edges) + 1``, the slot after the last bin.

    Values are compared as float64, the type the profile's edges were written from, so an FP32 input
    lands in the bin Python's ``bisect`` would give it.
    """
    values = np.asarray(column, dtype=np.float64)
    bins = np.searchsorted(edges, values, side="right")
    bins[np.isnan(values)] = len(edges) + 1
    return bins


def category_text(value: object) -> str:
    """The category a tensor element stands for: BYTES as UTF-8 text, a number as Python prints it."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value.item() if isinstance(value, np.generic) else value)


@dataclass(frozen=True, slots=True)
class _Slots:
    """One feature's share of the version's flat counter list: where it starts, and how it bins."""

    feature: NumericFeature | CategoricalFeature
    offset: int
    edges: NDArray[np.float64]
    positions: dict[str, int]


class VersionCounters:
    """A monitored version: its profile and the counters of every (feature, bin), label values bound."""

    def __init__(self, metrics: Metrics, model: str, version: str, profile: Profile) -> None:
        self.input = profile.input
        self._rows = metrics.drift_rows.labels(model, version)
        self._slots: list[_Slots] = []
        self._counters: list[Any] = []
        for feature in profile.features:
            labels = _bin_labels(feature)
            positions = (
                {c: i for i, c in enumerate(feature.categories)}
                if isinstance(feature, CategoricalFeature) else {}
            )  # fmt: skip
            edges = np.asarray(feature.edges if isinstance(feature, NumericFeature) else (), dtype=np.float64)
            self._slots.append(_Slots(feature, len(self._counters), edges, positions))
            self._counters.extend(metrics.drift_input.labels(model, version, feature.name, b) for b in labels)
            for label, share in zip(labels, feature.expected, strict=False):  # the NaN slot has no share
                metrics.drift_expected_share.labels(model, version, feature.name, label).set(share)
        self._numeric = [s for s in self._slots if isinstance(s.feature, NumericFeature)]
        self._categorical = [s for s in self._slots if isinstance(s.feature, CategoricalFeature)]

    def count(self, tensor: NDArray[Any]) -> None:
        """Count every row of the input tensor (its last axis holds the features) into the bins."""
        rows = tensor.reshape(-1, tensor.shape[-1]) if tensor.ndim > 1 else tensor.reshape(1, -1)
        counts = self.bin_counts(rows)
        for slot in np.flatnonzero(counts):
            self._counters[slot].inc(int(counts[slot]))
        self._rows.inc(len(rows))

    def bin_counts(self, rows: NDArray[Any]) -> NDArray[np.int64]:
        """Rows per counter slot (every feature's bins, in profile order, NaN last for numeric features)."""
        parts = [numeric_bins(rows[:, s.feature.index], s.edges) + s.offset for s in self._numeric]
        counts: NDArray[np.int64] = np.bincount(
            np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp), minlength=len(self._counters)
        )
        for slot in self._categorical:
            values, inverse = np.unique(rows[:, slot.feature.index], return_inverse=True)
            other = len(slot.positions)
            per_value = np.bincount(inverse.reshape(-1), minlength=len(values))
            for value, seen in zip(values, per_value, strict=True):
                counts[slot.offset + slot.positions.get(category_text(value), other)] += seen
        return counts


def _bin_labels(feature: NumericFeature | CategoricalFeature) -> list[str]:
    if isinstance(feature, NumericFeature):
        return [*(str(b) for b in range(len(feature.edges) + 1)), NAN_BIN]
    return [*feature.categories, OTHER]


class DriftMonitor:
    """Every version's counters, and the per-request sampling decision."""

    def __init__(self, metrics: Metrics, sample_rate: float, seed: int | None = None) -> None:
        self._metrics = metrics
        self.sample_rate = sample_rate
        # Per process: workers sharing a seed would sample the same request ordinals.
        self._rng = random.Random(os.getpid() if seed is None else seed)
        self._versions: dict[tuple[str, str], VersionCounters] = {}

    def register(self, model: str, version: ModelVersion) -> str | None:
        """Load a version's profile, publish ``serving_drift_monitored``; why it is not monitored, or None."""
        try:
            counters = self._counters_for(model, version)
        except ProfileError as error:
            reason = str(error)
            self._metrics.drift_monitored.labels(model, version.version).set(0)
            log_event("drift_not_monitored", model=model, version=version.version, reason=reason)
            return reason
        self._versions[(model, version.version)] = counters
        self._metrics.drift_monitored.labels(model, version.version).set(1)
        return None

    def _counters_for(self, model: str, version: ModelVersion) -> VersionCounters:
        runtime = version.runtime
        if runtime is None:
            raise ProfileError(f"the version did not load: {version.error}")
        profile = load_profile(version.path, runtime.metadata)
        specs = {spec.name: spec for spec in runtime.inputs}
        spec = specs.get(profile.input)
        if spec is None:
            raise ProfileError(f"the profile's input '{profile.input}' is not one of {sorted(specs)}")
        width = spec.shape[-1] if spec.shape else 1
        for feature in profile.features:
            if width >= 0 and feature.index >= width:
                raise ProfileError(f"feature '{feature.name}': index {feature.index} is past the {width} "
                                   f"columns of input '{spec.name}'")  # fmt: skip
            if isinstance(feature, NumericFeature) and spec.datatype in ("BYTES", "BOOL"):
                raise ProfileError(f"numeric feature '{feature.name}' on {spec.datatype} input '{spec.name}'")
        return VersionCounters(self._metrics, model, version.version, profile)

    def monitored(self, model: str, version: str) -> bool:
        """Whether a version's inputs are counted."""
        return (model, version) in self._versions

    def observe(self, model: str, version: str, feeds: Mapping[str, NDArray[Any]]) -> None:
        """Count one validated request's rows, if its version is monitored and the request is sampled."""
        counters = self._versions.get((model, version))
        if counters is None or self._rng.random() >= self.sample_rate:
            return
        counters.count(feeds[counters.input])
