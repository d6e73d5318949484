"""Entity-keyed requests (issue 17, docs/features.md): a version's features from Feast's online store.

A model version whose ONNX ``metadata_props`` name a ``feature_service`` may be sent the join key
(``patient_id``, INT64, shape [N]) instead of its feature tensor. The rows come from the bounded cache
(serving_image/features/cache.py) or from Feast's ``get_online_features``, which blocks, so it runs on a
thread of its own and the request waits for it at most the budget; past it the lookup is abandoned (504).
Feast's answer becomes the model's input through ``to_model_input``, the transformation training uses
too. Feast is imported only when the server is given a feature repository.
"""

import asyncio
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

from serving_image.access_log import log_event
from serving_image.errors import (
    FeatureStoreUnavailable,
    FeatureTimeout,
    InvalidInput,
    MissingFeatureValue,
    UnknownEntity,
)
from serving_image.features.cache import FeatureCache, Row
from serving_image.features.definition import FeatureGap, ordered_features, service_version, to_model_input
from serving_image.features.reads import Fetched, StoreReads, read_rows
from serving_image.features.schema import JOIN_KEY, SERVICE_KEY, SERVICE_VERSION_KEY
from serving_image.metrics import Metrics
from serving_image.repository import failure_fields
from serving_image.runtime import OnnxModel, TensorSpec
from serving_image.tensors import InputTensor

JOIN_KEY_SPEC = TensorSpec(JOIN_KEY, "INT64", (-1,))
"""The alternative input of a version with a feature service: one entity id per row."""
_SHOWN = 20  # entity ids and features named in an error body at most


# Importing Feast (its feast.metrics) sets these to a directory of its own when they are unset, which
# would turn the server's /metrics into an empty multiprocess merge (serving_image/metrics.py).
_PROMETHEUS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def import_feast() -> Any:
    """The ``feast`` module, imported with the process's Prometheus variables left as they were."""
    before = {name: os.environ.get(name) for name in _PROMETHEUS_VARIABLES}
    try:
        import feast
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return feast


class NotServable(Exception):
    """A version names a feature service it cannot be served from; the message says why."""


@dataclass(frozen=True, slots=True)
class EntityInput:
    """How one model version is served from entity keys: its feature service, columns and input tensor."""

    service: str
    version: str
    ordered: tuple[str, ...]
    model_input: str
    definition: Any
    """Feast's FeatureService, as it was when the version was bound."""

    def parameters(self) -> dict[str, str]:
        """The model metadata's ``parameters`` that announce the join key as an alternative input."""
        return {
            SERVICE_KEY: self.service,
            SERVICE_VERSION_KEY: self.version,
            "entity_input": JOIN_KEY_SPEC.name,
            "entity_input_datatype": JOIN_KEY_SPEC.datatype,
            "entity_input_replaces": self.model_input,
        }


def entity_ids(tensors: Sequence[InputTensor], max_batch_size: int) -> list[int]:
    """The ids of a request that sends the join key alone: INT64, shape [N], 1 <= N <= the max batch,
    none negative; a 400 naming the input otherwise."""
    if len(tensors) != 1:
        others = sorted(tensor.name for tensor in tensors if tensor.name != JOIN_KEY)
        raise InvalidInput(
            f"input '{JOIN_KEY}' replaces the model's feature inputs: do not send {others} too"
        )
    tensor = tensors[0]
    if tensor.datatype != "INT64" or tensor.data.ndim != 1:
        raise InvalidInput(
            f"input '{JOIN_KEY}' must be INT64 of shape [N], got {tensor.datatype} {tensor.shape}"
        )
    count = tensor.data.shape[0]
    if count == 0:
        raise InvalidInput(f"input '{JOIN_KEY}' is empty: send at least one entity id")
    if max_batch_size and count > max_batch_size:
        raise InvalidInput(
            f"input '{JOIN_KEY}': {count} entities exceed the model's max_batch_size {max_batch_size}"
        )
    negative = tensor.data[tensor.data < 0]
    if negative.size:
        raise InvalidInput(
            f"input '{JOIN_KEY}': entity ids must be non-negative, got {negative[:_SHOWN].tolist()}"
        )
    ids: list[int] = tensor.data.tolist()
    return ids


class OnlineFeatures:
    """The feature repository's online store, as the data plane reads it for entity-keyed requests."""

    def __init__(
        self, store: Any, metrics: Metrics, timeout_seconds: float, cache: FeatureCache,
        refresh_seconds: float = 60.0,
    ) -> None:  # fmt: skip
        self._store = store
        self.reads = StoreReads(store)
        self._metrics = metrics
        self.timeout_seconds = timeout_seconds
        self.cache = cache
        self._refresh_seconds = refresh_seconds

    @property
    def store(self) -> Any:
        """Feast's FeatureStore the lookups read (for tools that read the same repository once)."""
        return self._store

    @classmethod
    def open(
        cls, repo: Path, metrics: Metrics, timeout_ms: int, cache: FeatureCache, refresh_seconds: float
    ) -> "OnlineFeatures":
        """The repository at ``repo`` (a directory holding ``feature_store.yaml``); Feast imported here."""
        feature_store = import_feast().FeatureStore
        return cls(feature_store(repo_path=str(repo)), metrics, timeout_ms / 1000, cache, refresh_seconds)

    def close(self) -> None:
        """Release the lookup thread; a lookup still blocked in the store is not waited for."""
        self.reads.close()

    def bind(self, runtime: OnnxModel) -> EntityInput | None:
        """How a loaded version is served from entity keys; None without a ``feature_service`` in its
        metadata; ``NotServable`` when the service is unknown, has changed since training (another
        ``feature_service_version``: serving it would be training-serving skew) or does not fit the input."""
        service = runtime.metadata.get(SERVICE_KEY)
        if not service:
            return None
        try:
            ordered = tuple(ordered_features(self._store, service))
            current = service_version(self._store, service)
            definition = self._store.get_feature_service(service)
        except Exception as error:  # Feast raises its own not-found types, and registry errors
            raise NotServable(f"feature service '{service}' cannot be read: {error}") from error
        trained = runtime.metadata.get(SERVICE_VERSION_KEY)
        if trained != current:
            raise NotServable(
                f"feature service '{service}' is at version {current}, the model was trained from "
                f"{trained or 'an unrecorded version'}"
            )
        inputs = runtime.inputs
        if len(inputs) != 1 or inputs[0].datatype != "FP32" or inputs[0].shape != (-1, len(ordered)):
            shown = [(spec.name, spec.datatype, list(spec.shape)) for spec in inputs]
            raise NotServable(f"the model's inputs {shown} are not one FP32 [-1, {len(ordered)}] tensor")
        entity = EntityInput(service, current, ordered, inputs[0].name, definition)
        # Feast sets up its provider and store connection on the first read: done here, before serving,
        # so that the first request does not spend its budget on it (as a model is warmed up).
        try:
            read_rows(self._store, entity.definition, entity.ordered, [0])
        except Exception as error:
            raise NotServable(f"the online store cannot be read: {error}") from error
        return entity

    async def fetch(
        self, entity: EntityInput, model: str, version: str, ids: list[int]
    ) -> NDArray[np.float32]:
        """The model input for ``ids``, rows from the cache or the store; 404, 422, 503 or 504 naming them."""
        started = time.perf_counter()
        try:
            rows, fetched = self._cached(entity, ids)
            if fetched:
                rows.update(await self._lookup(entity, model, version, fetched))
            return self._model_input(entity, model, version, ids, rows, fetched)
        finally:
            self._metrics.feature_lookup_seconds.labels(model).observe(time.perf_counter() - started)

    def _cached(self, entity: EntityInput, ids: list[int]) -> tuple[dict[int, Fetched | None], list[int]]:
        """The rows the cache holds, counted as hits, and the distinct ids left to fetch."""
        rows: dict[int, Fetched | None] = {}
        for entity_id in dict.fromkeys(ids):
            row = self.cache.get(entity.service, entity_id)
            if row is not None:
                rows[entity_id] = row
        fetched = [entity_id for entity_id in dict.fromkeys(ids) if entity_id not in rows]
        return rows, fetched

    async def _lookup(
        self, entity: EntityInput, model: str, version: str, ids: list[int]
    ) -> dict[int, Fetched | None]:
        """Feast's rows for ``ids`` within the budget; the blocking call runs on the lookup thread."""
        counter = self._metrics.feature_lookups
        try:
            return await asyncio.wait_for(
                self.reads.read(entity.definition, entity.ordered, ids), self.timeout_seconds
            )
        except TimeoutError:
            counter.labels(model, version, "timeout").inc(len(ids))
            budget_ms = round(self.timeout_seconds * 1000)
            raise FeatureTimeout(
                f"the feature lookup of {len(ids)} entities exceeded its budget of {budget_ms} ms",
                {"budget_ms": budget_ms, "entity_ids": ids[:_SHOWN], "feature_service": entity.service},
            ) from None
        except Exception as error:  # a store that fails is the operator's to fix, the client's to retry
            counter.labels(model, version, "error").inc(len(ids))
            log_event("feature_lookup_failed", model=model, version=version, service=entity.service,
                      **failure_fields(error))  # fmt: skip
            raise FeatureStoreUnavailable(
                f"the online store failed: {type(error).__name__}",
                {"entity_ids": ids[:_SHOWN], "feature_service": entity.service},
            ) from None

    def _model_input(
        self, entity: EntityInput, model: str, version: str, ids: list[int], rows: dict[int, Fetched | None],
        fetched: list[int],
    ) -> NDArray[np.float32]:  # fmt: skip
        """Count each distinct entity's outcome, keep complete fetched rows, build the tensor or refuse."""
        found = {entity_id: row for entity_id, row in rows.items() if row is not None}
        unknown = [entity_id for entity_id in fetched if entity_id not in found]
        complete = {key: row for key in fetched if key in found and _complete(row := found[key])}
        self.cache.put_many(entity.service, complete.items())
        counter = self._metrics.feature_lookups
        for outcome, count in (
            ("hit", len(rows) - len(fetched)), ("miss", len(complete)), ("unknown_entity", len(unknown)),
            ("missing_feature", len(fetched) - len(unknown) - len(complete)),
        ):  # fmt: skip
            if count:
                counter.labels(model, version, outcome).inc(count)
        if unknown:
            raise UnknownEntity(
                f"unknown {JOIN_KEY} {unknown[:_SHOWN]}: the online store has no features for them",
                {"entity_ids": unknown[:_SHOWN], "feature_service": entity.service},
            )
        columns = {name: [found[key][index] for key in ids] for index, name in enumerate(entity.ordered)}
        try:
            return to_model_input(columns, entity.ordered)
        except FeatureGap as gap:
            missing = [{JOIN_KEY: ids[row], "feature": name} for row, name in gap.missing]
            named = sorted({ids[row] for row, _ in gap.missing})
            raise MissingFeatureValue(
                f"{JOIN_KEY} {named[:_SHOWN]} lack feature values: {missing[:_SHOWN]}",
                {
                    "entity_ids": named[:_SHOWN],
                    "missing": missing[:_SHOWN],
                    "feature_service": entity.service,
                },
            ) from None

    async def refresh_periodically(self) -> None:
        """Refresh the registry and the materialization gauge now, then every ``refresh_seconds``."""
        while True:
            await self.refresh()
            await asyncio.sleep(self._refresh_seconds)

    async def refresh(self) -> None:
        """Re-read the registry (on the lookup thread: lookups never refresh it inline) and publish each
        feature view's latest materialized time; 0 for a view never materialized (stale since forever)."""
        try:
            ends = await self.reads.run(_materialized, self._store)
        except Exception as error:  # the gauge keeps its last value and ages, which is what alerts
            log_event("feature_registry_refresh_failed", **failure_fields(error))
            return
        for view, end in ends.items():
            self._metrics.feature_view_materialized.labels(view).set(end)


def _complete(row: Fetched) -> TypeGuard[Row]:
    """Every value present and a number (NaN != NaN): only such a row may be cached."""
    return all(value is not None and not math.isnan(value) for value in row)


def _materialized(store: Any) -> dict[str, float]:
    """Each feature view's latest materialization end (unix seconds) as the registry records it; blocking."""
    store.refresh_registry()
    return {
        view.name: max((end.timestamp() for _, end in view.materialization_intervals), default=0.0)
        for view in store.list_feature_views(allow_cache=True)
    }
