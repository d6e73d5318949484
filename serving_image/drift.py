"""Live input drift counters: a sample of each version's request rows counted into its profile's bins.

At start-up each loaded version's ``profile.json`` (serving_image/drift_profile.py) is read and checked
against the hash in its graph's metadata; a version without a usable profile serves as before, with
``serving_drift_monitored`` 0 and the reason in a ``drift_not_monitored`` log event. In the request path,
after the inputs were validated, a share of requests (``SERVING_DRIFT_SAMPLE_RATE``, drawn per request
from a per-process RNG) have their rows kept; once 1024 rows wait, or at a flush, numpy bins them all at
once (one comparison of every value with its feature's edges, one ``bincount`` for every bin). The counts
add up in the process and reach the Prometheus counters, one increment per bin, once a second and before
every scrape this process answers: per numpy call and per increment, a few rows cost as much as many.
The scores (PSI) come from Prometheus recording rules over these counters (serving-rules.yaml).
"""

import asyncio
import os
import random
import threading
import time
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
from serving_image.repository import MESSAGE_CHARS, ModelVersion, failure_fields

DEFAULT_SAMPLE_RATE = 0.1
# How long counted rows may wait in the process before they reach the counters. Scrapes this process
# answers see them at once; another worker's scrape (several workers share the metrics) at most this late.
FLUSH_SECONDS = 1.0
# Sampled rows (their profiled columns) are kept and binned together once this many wait, or at a flush:
# numpy's cost per call dominates a small batch, so binning a thousand rows costs little more than one.
BIN_ROWS = 1024
_NO_COLUMNS = np.empty((0, 0))  # the categorical part of a profile without categorical features


def numeric_bins(values: NDArray[Any], edges: NDArray[np.float64]) -> NDArray[np.intp]:
    """Each value's bin, ``bisect_right`` of its feature's edges; NaN gets ``-1``.

    ``values`` is [rows, features]; ``edges`` is [most edges, features], each column ascending and padded
    with NaN (never counted). Counting the edges at or below a value is ``bisect_right`` for ascending
    edges, and for the profile's ten bins one broadcast comparison over the whole batch costs less than
    a ``searchsorted`` call per feature (docs/drift.md gives the figures). Values are compared as float64,
    the type the edges were written from, so an FP32 input lands in the bin ``bisect`` would give it.
    """
    as_float = np.asarray(values, dtype=np.float64)
    # Edges on the outer axis: each comparison and the sum run over a whole [rows, features] plane.
    below = as_float[None, :, :] >= edges[:, None, :]
    bins: NDArray[np.intp] = below.sum(axis=0, dtype=np.uint8).astype(np.intp)  # MAX_BINS < 256
    bins[np.isnan(as_float)] = -1
    return bins


def category_text(value: object) -> str:
    """The category a tensor element stands for: BYTES as UTF-8 text, a number as Python prints it."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value.item() if isinstance(value, np.generic) else value)


@dataclass(frozen=True, slots=True)
class _Categorical:
    """A categorical feature's place in the version's flat counter list, and its categories' positions."""

    index: int
    offset: int
    positions: dict[str, int]


class VersionCounters:
    """A monitored version: its profile and the counters of every (feature, bin), label values bound."""

    def __init__(self, metrics: Metrics, model: str, version: str, profile: Profile) -> None:
        self.input = profile.input
        self._rows = metrics.drift_rows.labels(model, version)
        self._counters: list[Any] = []
        numeric: list[tuple[NumericFeature, int]] = []
        self._categorical: list[_Categorical] = []
        for feature in profile.features:
            labels = _bin_labels(feature)
            if isinstance(feature, NumericFeature):
                numeric.append((feature, len(self._counters)))
            else:
                positions = {category: i for i, category in enumerate(feature.categories)}
                self._categorical.append(_Categorical(feature.index, len(self._counters), positions))
            self._counters.extend(metrics.drift_input.labels(model, version, feature.name, b) for b in labels)
            for label, share in zip(labels, feature.expected, strict=False):  # the NaN slot has no share
                metrics.drift_expected_share.labels(model, version, feature.name, label).set(share)
        # The numeric features as arrays, so a batch is binned in a few numpy calls whatever their number.
        widest = max((len(f.edges) for f, _ in numeric), default=0)
        self._columns = np.array([f.index for f, _ in numeric], dtype=np.intp)
        self._edges = np.full((widest, len(numeric)), np.nan)
        for column, (feature, _) in enumerate(numeric):
            self._edges[: len(feature.edges), column] = feature.edges
        self._offsets = np.array([offset for _, offset in numeric], dtype=np.intp)
        self._nan_slots = np.array([offset + len(f.edges) + 1 for f, offset in numeric], dtype=np.intp)
        self._width = 1 + max(feature.index for feature in profile.features)
        self._category_columns = np.array([c.index for c in self._categorical], dtype=np.intp)
        self._waiting: list[tuple[NDArray[Any], NDArray[Any]]] = []
        self._waiting_rows = 0
        self._pending = np.zeros(len(self._counters), dtype=np.int64)
        self._pending_rows = 0

    def count(self, tensor: NDArray[Any]) -> None:
        """Count every row of the input tensor (its last axis holds the features) into the bins.

        The profiled columns are copied out (a wide input is not kept alive) and binned with other rows
        once :data:`BIN_ROWS` wait or at :meth:`flush`, which the monitor calls.
        """
        rows = tensor.reshape(-1, tensor.shape[-1]) if tensor.ndim > 1 else tensor.reshape(1, -1)
        if rows.shape[1] < self._width:
            raise ValueError(f"rows of {rows.shape[1]} columns; the profile reads column {self._width - 1}")
        categorical = rows[:, self._category_columns] if self._categorical else _NO_COLUMNS
        self._waiting.append((rows[:, self._columns], categorical))
        self._waiting_rows += len(rows)
        if self._waiting_rows >= BIN_ROWS:
            self.bin_waiting()

    def bin_waiting(self) -> None:
        """Bin the rows kept since the last time, all at once."""
        if not self._waiting:
            return
        waiting, self._waiting, self._waiting_rows = self._waiting, [], 0  # a batch that fails is dropped
        if len(waiting) == 1:
            numeric, categorical = waiting[0]
        else:
            numeric = np.concatenate([part for part, _ in waiting])
            categorical = np.concatenate([part for _, part in waiting]) if self._categorical else _NO_COLUMNS
        self._pending += self._bin(numeric, categorical)
        self._pending_rows += len(numeric)

    def flush(self) -> None:
        """Bin what waits, then add the counts to the Prometheus counters: one increment per bin."""
        self.bin_waiting()
        self.write()

    def write(self) -> None:
        """Add the binned counts to the Prometheus counters: one increment per bin that got rows."""
        if not self._pending_rows:
            return
        pending, self._pending = self._pending, np.zeros_like(self._pending)
        rows, self._pending_rows = self._pending_rows, 0
        for slot in np.flatnonzero(pending):
            self._counters[slot].inc(int(pending[slot]))
        self._rows.inc(rows)

    def _bin(self, numeric: NDArray[Any], categorical: NDArray[Any]) -> NDArray[np.int64]:
        """Rows per counter slot (every feature's bins, in profile order, NaN last for numeric features)."""
        bins = numeric_bins(numeric, self._edges)
        slots = np.where(bins < 0, self._nan_slots, bins + self._offsets)
        counts: NDArray[np.int64] = np.bincount(slots.ravel(), minlength=len(self._counters))
        for column, slot in enumerate(self._categorical):
            values, inverse = np.unique(categorical[:, column], return_inverse=True)
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
        # Requests are counted on the event loop; a scrape may flush from another thread.
        self._lock = threading.Lock()
        self._next_flush = time.monotonic() + FLUSH_SECONDS
        metrics.before_collect.append(self.flush)

    def register(self, model: str, version: ModelVersion) -> str | None:
        """Load a version's profile, publish ``serving_drift_monitored``; why it is not monitored, or None."""
        try:
            counters = self._counters_for(model, version)
        except ProfileError as error:
            reason = str(error)
            self._metrics.drift_monitored.labels(model, version.version).set(0)
            log_event("drift_not_monitored", model=model, version=version.version, reason=reason)
            return reason
        with self._lock:  # a version loaded on SIGHUP registers from a thread while a scrape may flush
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
        try:
            with self._lock:
                counters.count(feeds[counters.input])
        except Exception as error:  # counting must never fail a request: the version stops being monitored
            self._stop_monitoring(model, version, error)
            return
        if time.monotonic() >= self._next_flush:
            self.flush()

    def _stop_monitoring(self, model: str, version: str, error: Exception) -> None:
        with self._lock:
            counters = self._versions.pop((model, version), None)
            if counters is not None:
                try:  # what was counted before the failure is still right
                    counters.flush()
                except Exception:  # the rows that failed to bin are dropped; the rest is written
                    counters.write()
        self._metrics.drift_monitored.labels(model, version).set(0)
        reason = f"counting failed: {type(error).__name__}: {error}"
        log_event("drift_not_monitored", model=model, version=version, reason=reason[:MESSAGE_CHARS],
                  **failure_fields(error))  # fmt: skip

    async def flush_periodically(self) -> None:
        """Flush once a second until cancelled, so an idle worker's last counts are not held back."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        """Write every version's waiting counts to the counters (before a scrape, once a second, at stop)."""
        failed: list[tuple[tuple[str, str], Exception]] = []
        with self._lock:
            self._next_flush = time.monotonic() + FLUSH_SECONDS
            for key, counters in self._versions.items():
                try:
                    counters.flush()
                except Exception as error:  # as in observe: never fail a scrape or a request
                    failed.append((key, error))
        for (model, version), failure in failed:
            self._stop_monitoring(model, version, failure)
