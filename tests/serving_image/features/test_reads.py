"""The store's reads, against a real Feast SQLite online store: concurrent lookups coalesce into one
call, and a lookup whose request stopped waiting is never read."""

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from serving_image.features.cache import FeatureCache
from serving_image.features.online import EntityInput, OnlineFeatures
from serving_image.features.reads import StoreReads, read_rows
from serving_image.metrics import Metrics
from serving_image.runtime import OnnxModel
from tests.serving_image.features.conftest import locked
from tests.serving_image.features.feature_repo import FEAST, GAP_FEATURE, GAP_PATIENT, FeatureRepo


@pytest.fixture
def entity(feature_repo: FeatureRepo, entity_models: Path) -> EntityInput:
    features = OnlineFeatures(feature_repo.store(), Metrics(), 1.0, FeatureCache(0, 0))
    bound = features.bind(OnnxModel(entity_models / "entity-classifier" / "1" / "model.onnx", 1))
    assert bound is not None
    return bound


def test_lookups_that_arrive_during_a_read_share_the_next_call(
    feature_repo: FeatureRepo, entity: EntityInput
) -> None:
    reads = StoreReads(FEAST.FeatureStore(repo_path=str(feature_repo.path)))

    async def eight() -> list[dict[int, tuple[float | None, ...] | None]]:
        futures = [reads.read(entity.definition, entity.ordered, [index, 11]) for index in range(8)]
        return list(await asyncio.gather(*futures))

    answers = asyncio.run(eight())
    reads.close()
    assert reads.calls == 2, "the first lookup's call, then one for the seven that waited for it"
    for index, answer in enumerate(answers):
        assert list(answer) == [index, 11], "each lookup gets its own ids, in its order"
        np.testing.assert_array_equal(np.asarray(answer[index], np.float32), feature_repo.features[index])


def test_a_lookup_given_up_while_the_store_was_blocked_is_never_read(
    feature_repo: FeatureRepo, entity: EntityInput
) -> None:
    reads = StoreReads(FEAST.FeatureStore(repo_path=str(feature_repo.path)))

    async def scenario(release: threading.Event) -> None:
        blocked = reads.read(entity.definition, entity.ordered, [1])
        for index in (2, 3):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reads.read(entity.definition, entity.ordered, [index]), 0.05)
        release.set()
        assert (await blocked)[1] is not None, "the blocked read finishes once the lock is gone"
        await reads.read(entity.definition, entity.ordered, [4])

    release = threading.Event()
    with locked(feature_repo.online_store):
        waiter = threading.Thread(target=lambda: asyncio.run(scenario(release)))
        waiter.start()
        assert release.wait(timeout=10), "the two lookups did not time out"
    waiter.join(timeout=10)
    reads.close()
    assert reads.calls == 2, (
        f"the blocked read and the one after it; the two given up cost nothing ({reads.calls})"
    )


def test_an_entity_the_store_has_no_row_for_is_none_and_a_null_value_is_none_in_its_row(
    feature_repo: FeatureRepo, entity: EntityInput
) -> None:
    rows = read_rows(feature_repo.store(), entity.definition, entity.ordered, [404, GAP_PATIENT])
    assert rows[404] is None, "no row at all: an unknown entity"
    gap = rows[GAP_PATIENT]
    assert gap is not None, "a row with a null is a known entity"
    missing = [name for name, value in zip(entity.ordered, gap, strict=True) if value is None]
    assert missing == [GAP_FEATURE], missing
