"""Entity keys in asynchronous jobs (serving_image/features/entities.py ``check`` at submit, ``resolve``
when the job runs), on a real server process, a real redis-server and a real Feast repository."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving_image.async_jobs import finished, start_async_server, submit, submitted
from tests.serving_image.conftest import ServerProcess
from tests.serving_image.features.feature_repo import GAP_FEATURE, GAP_PATIENT, FeatureRepo
from tests.serving_image.redis_fixture import RedisServer

MODEL = "entity-classifier"


@pytest.fixture(scope="module")
def job_server(
    tmp_path_factory: pytest.TempPathFactory, entity_models: Path, feature_repo: FeatureRepo,
    redis_server: RedisServer,
) -> Iterator[ServerProcess]:  # fmt: skip
    process = start_async_server(
        entity_models, tmp_path_factory.mktemp("entity-jobs"), redis_server, f"entity-{os.urandom(4).hex()}",
        async_worker=True, feature_repo=feature_repo.path, async_max_attempts=1,
    )  # fmt: skip
    yield process
    assert process.stop() == 0, process.stderr()


def keyed(ids: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "patient_id", "datatype": "INT64", "shape": [len(ids)], "data": ids}],
        **extra,
    }


def test_a_job_sent_entity_keys_answers_as_the_features_do(
    job_server: ServerProcess, feature_repo: FeatureRepo
) -> None:
    job_id = submitted(submit(job_server, MODEL, keyed([2, 7], parameters={"async": True}), version="1"))
    document = finished(job_server, job_id)
    assert document["status"] == "done", document
    features = feature_repo.features[[2, 7]]
    sent = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [2, 30], "data": features.ravel().tolist()}
        ]
    }
    expected = submit(job_server, MODEL, sent, version="1").json()["outputs"]
    assert document["response"]["outputs"] == expected, (document["response"], expected)


def test_bad_keys_are_refused_at_submit_and_missing_values_fail_the_job(job_server: ServerProcess) -> None:
    # A ServingError in a run is retried up to async_max_attempts (the row may be materialized meanwhile);
    # with one attempt the job fails at once, naming the missing value.
    refused = submit(job_server, MODEL, keyed([-3], parameters={"async": True}), version="1")
    assert refused.status_code == 400 and "must be non-negative" in refused.json()["error"], refused.text
    job_id = submitted(
        submit(job_server, MODEL, keyed([GAP_PATIENT], parameters={"async": True}), version="1")
    )
    document = finished(job_server, job_id)
    assert document["status"] == "failed" and GAP_FEATURE in str(document), document
