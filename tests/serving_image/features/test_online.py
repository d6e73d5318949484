"""Entity lookups against a real Feast SQLite online store, in process: the cache, the budget, the
outcomes counted, the refusals, and which versions can be served from entity keys at all."""

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from serving_image.errors import (
    FeatureStoreUnavailable,
    FeatureTimeout,
    InvalidInput,
    MissingFeatureValue,
    UnknownEntity,
)
from serving_image.features.cache import FeatureCache
from serving_image.features.online import EntityInput, NotServable, OnlineFeatures, entity_ids
from serving_image.features.schema import JOIN_KEY
from serving_image.metrics import Metrics
from serving_image.runtime import OnnxModel
from serving_image.tensors import InputTensor
from tests.serving_image.conftest import doubler_graph, save_model, wait_until_async
from tests.serving_image.features.conftest import locked
from tests.serving_image.features.feature_repo import (
    FEAST,
    GAP_FEATURE,
    GAP_PATIENT,
    MATERIALIZED_END,
    FeatureRepo,
    with_feature_service,
)

MODEL, VERSION = "entity-classifier", "1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def online(repo: FeatureRepo, cache: FeatureCache, timeout_ms: int = 50) -> tuple[OnlineFeatures, Metrics]:
    metrics = Metrics()
    store = FEAST.FeatureStore(repo_path=str(repo.path))
    return OnlineFeatures(store, metrics, timeout_ms / 1000, cache), metrics


def runtime(models: Path, version: str = VERSION) -> OnnxModel:
    return OnnxModel(models / MODEL / version / "model.onnx", 1)


def count(metrics: Metrics, outcome: str) -> float:
    labels = {"model": MODEL, "version": VERSION, "outcome": outcome}
    return metrics.registry.get_sample_value("serving_feature_lookups_total", labels) or 0.0


def fetch(features: OnlineFeatures, entity: EntityInput, ids: list[int]) -> np.ndarray:
    return asyncio.run(features.fetch(entity, MODEL, VERSION, ids))


def test_rows_come_back_in_the_models_column_order(feature_repo: FeatureRepo, entity_models: Path) -> None:
    features, _ = online(feature_repo, FeatureCache(100, 60))
    entity = features.bind(runtime(entity_models))
    assert entity is not None
    got = fetch(features, entity, [3, 0, 3])
    assert got.dtype == np.float32 and got.shape == (3, 30)
    np.testing.assert_array_equal(got, feature_repo.features[[3, 0, 3]], "rows as stored, in request order")


def test_a_cached_row_is_served_while_the_store_is_locked(
    feature_repo: FeatureRepo, entity_models: Path
) -> None:
    features, metrics = online(feature_repo, FeatureCache(100, 60))
    entity = features.bind(runtime(entity_models))
    assert entity is not None
    fetch(features, entity, [1])
    with locked(feature_repo.online_store):
        np.testing.assert_array_equal(fetch(features, entity, [1]), feature_repo.features[[1]])
        with pytest.raises(FeatureTimeout):  # the store really is unreadable: an uncached row times out
            fetch(features, entity, [2])
    assert (count(metrics, "miss"), count(metrics, "hit"), count(metrics, "timeout")) == (1, 1, 1)


def test_an_expired_row_goes_back_to_the_store(feature_repo: FeatureRepo, entity_models: Path) -> None:
    clock = Clock()
    features, metrics = online(feature_repo, FeatureCache(100, 60, clock=clock))
    entity = features.bind(runtime(entity_models))
    assert entity is not None
    fetch(features, entity, [1])
    clock.now += 60
    with locked(feature_repo.online_store), pytest.raises(FeatureTimeout):
        fetch(features, entity, [1])
    assert count(metrics, "hit") == 0, "a row past its TTL is never a hit"


def test_the_cache_holds_at_most_its_entries(feature_repo: FeatureRepo, entity_models: Path) -> None:
    cache = FeatureCache(2, 60)
    features, metrics = online(feature_repo, cache)
    entity = features.bind(runtime(entity_models))
    assert entity is not None
    fetch(features, entity, [0, 1, 2, 3])
    assert len(cache) == 2, "four rows fetched, two kept"
    fetch(features, entity, [3])
    assert count(metrics, "hit") == 1, "the most recent rows are the ones kept"


def test_with_the_cache_off_every_row_is_fetched(feature_repo: FeatureRepo, entity_models: Path) -> None:
    features, metrics = online(feature_repo, FeatureCache(0, 60))
    entity = features.bind(runtime(entity_models))
    assert entity is not None
    fetch(features, entity, [1])
    fetch(features, entity, [1])
    assert (count(metrics, "miss"), count(metrics, "hit")) == (2, 0)


def test_an_unknown_entity_is_refused_and_never_cached(
    feature_repo: FeatureRepo, entity_models: Path
) -> None:
    cache = FeatureCache(100, 60)
    features, metrics = online(feature_repo, cache)
    entity = features.bind(runtime(entity_models))
    assert entity is not None
    for _ in range(2):
        with pytest.raises(UnknownEntity) as refused:
            fetch(features, entity, [0, 999])
        assert refused.value.details["entity_ids"] == [999], refused.value.document()
    assert count(metrics, "unknown_entity") == 2, "the second request asked the store again"
    assert len(cache) == 1, "patient 0 is cached, the unknown one is not"


def test_a_missing_value_is_refused_naming_it_and_never_cached(
    feature_repo: FeatureRepo, entity_models: Path
) -> None:
    cache = FeatureCache(100, 60)
    features, metrics = online(feature_repo, cache)
    entity = features.bind(runtime(entity_models))
    assert entity is not None
    with pytest.raises(MissingFeatureValue) as refused:
        fetch(features, entity, [0, GAP_PATIENT])
    assert refused.value.details["missing"] == [{JOIN_KEY: GAP_PATIENT, "feature": GAP_FEATURE}]
    assert refused.value.status == 422
    assert len(cache) == 1 and count(metrics, "missing_feature") == 1


def test_a_blocked_lookup_leaves_the_event_loop_free(feature_repo: FeatureRepo, entity_models: Path) -> None:
    features, _ = online(feature_repo, FeatureCache(0, 60), timeout_ms=300)
    entity = features.bind(runtime(entity_models))
    assert entity is not None

    async def scenario() -> tuple[int, float]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = time.perf_counter()
        with pytest.raises(FeatureTimeout) as refused:
            await features.fetch(entity, MODEL, VERSION, [4])
        ticker.cancel()
        assert refused.value.details["budget_ms"] == 300, refused.value.document()
        return ticks, time.perf_counter() - started

    with locked(feature_repo.online_store):
        ticks, elapsed = asyncio.run(scenario())
    assert 0.3 <= elapsed < 1.0, f"the request waits the budget, not the store's 5 s busy timeout: {elapsed}"
    assert ticks >= 20, f"the loop ran other work while the lookup was blocked ({ticks} ticks of 5 ms)"


def test_refresh_publishes_the_registry_materialization_end(
    feature_repo: FeatureRepo, entity_models: Path
) -> None:
    features, metrics = online(feature_repo, FeatureCache(0, 60))
    asyncio.run(features.refresh())
    value = metrics.registry.get_sample_value(
        "serving_feature_view_materialized_timestamp_seconds", {"feature_view": "tumour_measurements"}
    )
    assert value == MATERIALIZED_END.timestamp()


def test_a_version_without_a_feature_service_takes_no_entity_keys(
    feature_repo: FeatureRepo, entity_models: Path
) -> None:
    features, _ = online(feature_repo, FeatureCache(0, 60))
    assert features.bind(OnnxModel(entity_models / "plain-classifier" / "1" / "model.onnx", 1)) is None


def stale(models: Path, _: Path) -> OnnxModel:
    return runtime(models, "2")


def unknown_service(models: Path, tmp: Path) -> OnnxModel:
    with_feature_service(models / MODEL / "1", tmp / "v", "no_such_service", None)
    return OnnxModel(tmp / "v" / "model.onnx", 1)


def other_input(models: Path, tmp: Path) -> OnnxModel:
    save_model(doubler_graph(4), tmp / "d" / "model.onnx")
    with_feature_service(
        tmp / "d", tmp / "v", "tabular_classifier_v1", runtime(models).metadata["feature_service_version"]
    )
    return OnnxModel(tmp / "v" / "model.onnx", 1)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (stale, "the model was trained from 0000000000000000"),
        (unknown_service, "'no_such_service' cannot be read"),
        (other_input, "are not one FP32 [-1, 30] tensor"),
    ],
    ids=["stale-version", "unknown-service", "input-does-not-fit"],
)  # fmt: skip
def test_a_version_that_cannot_be_served_from_its_service_says_why(
    feature_repo: FeatureRepo, entity_models: Path, tmp_path: Path, make: Callable[[Path, Path], OnnxModel],
    reason: str,
) -> None:  # fmt: skip
    features, _ = online(feature_repo, FeatureCache(0, 60))
    with pytest.raises(NotServable, match=reason.replace("[", r"\[").replace("]", r"\]")):
        features.bind(make(entity_models, tmp_path))


def ids_tensor(values: object, datatype: str = "INT64") -> InputTensor:
    data = np.asarray(values, dtype=np.int64 if datatype == "INT64" else np.float32)
    return InputTensor(JOIN_KEY, datatype, data.shape, data)


def test_entity_ids_accepts_a_batch_up_to_the_max() -> None:
    assert entity_ids([ids_tensor([3, 0, 3])], max_batch_size=3) == [3, 0, 3]


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([ids_tensor([1, -2])], "must be non-negative, got \\[-2\\]"),
        ([ids_tensor([1, 2, 3, 4])], "4 entities exceed the model's max_batch_size 3"),
        ([ids_tensor([[1], [2]])], "must be INT64 of shape \\[N\\]"),
        ([ids_tensor([1.0], "FP32")], "must be INT64 of shape \\[N\\]"),
        ([ids_tensor([])], "is empty"),
        ([ids_tensor([1]), InputTensor("features", "FP32", (1, 30), np.zeros((1, 30), np.float32))],
         "replaces the model's feature inputs: do not send \\['features'\\] too"),
    ],
    ids=["negative", "too-many", "rank-2", "float", "empty", "with-features"],
)  # fmt: skip
def test_entity_ids_refuses_naming_the_input(tensors: list[InputTensor], message: str) -> None:
    with pytest.raises(InvalidInput, match=f"input '{JOIN_KEY}'.*{message}"):
        entity_ids(tensors, max_batch_size=3)


def test_a_store_that_fails_is_503_naming_the_entities(
    feature_repo: FeatureRepo, entity_models: Path, tmp_path: Path
) -> None:
    copy = FeatureRepo(tmp_path / "repo", feature_repo.features)
    shutil.copytree(feature_repo.path, copy.path)
    features, metrics = online(copy, FeatureCache(0, 60))
    entity = features.bind(runtime(entity_models))
    assert entity is not None
    with sqlite3.connect(copy.online_store) as connection:  # a store that errors, not one that is slow
        connection.execute("DROP TABLE model_serving_tumour_measurements")
    with pytest.raises(FeatureStoreUnavailable) as failed:
        fetch(features, entity, [1, 2])
    assert (failed.value.status, failed.value.details["entity_ids"]) == (503, [1, 2]), failed.value.document()
    assert count(metrics, "error") == 2


def test_the_gauge_follows_a_new_materialization_on_its_period(
    feature_repo: FeatureRepo, tmp_path: Path
) -> None:
    copy = FeatureRepo(tmp_path / "repo", feature_repo.features)
    shutil.copytree(feature_repo.path, copy.path)
    metrics = Metrics()
    features = OnlineFeatures(copy.store(), metrics, 1.0, FeatureCache(0, 0), refresh_seconds=0.1)
    labels = {"feature_view": "tumour_measurements"}
    later = datetime(2026, 9, 1, tzinfo=UTC)

    def published() -> float | None:
        return metrics.registry.get_sample_value(
            "serving_feature_view_materialized_timestamp_seconds", labels
        )

    async def scenario() -> None:
        refresher = asyncio.create_task(features.refresh_periodically())
        await wait_until_async(lambda: published() == MATERIALIZED_END.timestamp(), 10, "first refresh")
        # Another process (servectl features materialize, the CronJob) materializes up to a later time.
        await asyncio.to_thread(copy.store().materialize_incremental, later)
        await wait_until_async(
            lambda: published() == later.timestamp(), 10, lambda: f"gauge at {published()}"
        )
        refresher.cancel()

    asyncio.run(scenario())
    features.close()
