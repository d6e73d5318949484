"""Entity-keyed requests end to end (serving_image/features/entities.py and the transports): a real server
process reading a real Feast repository, sent ``patient_id`` by the official tritonclient HTTP (JSON and
binary) and gRPC clients.

What this proves beyond test_online.py: the transports decode the join key against the version's
alternative input, map each refusal to its status and JSON body (REST) or gRPC code, the response equals
the one for the same features sent directly, the metadata announces the join key, the metrics are
exported, and a locked store costs a request its budget (504), not the server its event loop.
"""

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.serving_image.conftest import ServerProcess, start_server, wait_until
from tests.serving_image.features.conftest import locked
from tests.serving_image.features.feature_repo import (
    GAP_FEATURE,
    GAP_PATIENT,
    MATERIALIZED_END,
    FeatureRepo,
)

MODEL = "entity-classifier"
OUTPUTS = ("label", "probabilities")
# Patients only the timeout test asks for, so that no other test has cached their rows.
TIMEOUT_PATIENTS = (10, 11)


def http_ids(ids: list[int], binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("patient_id", [len(ids)], "INT64")
    tensor.set_data_from_numpy(np.asarray(ids, dtype=np.int64), binary_data=binary)
    return tensor


def grpc_ids(ids: list[int]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("patient_id", [len(ids)], "INT64")
    tensor.set_data_from_numpy(np.asarray(ids, dtype=np.int64))
    return tensor


def infer_http(server: ServerProcess, inputs: list[Any], version: str = "1", binary: bool = True) -> Any:
    client = httpclient.InferenceServerClient(server.http_url)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]
    return client.infer(MODEL, inputs, model_version=version, outputs=outputs)


def infer_grpc(server: ServerProcess, inputs: list[Any], version: str = "1") -> Any:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    return client.infer(MODEL, inputs, model_version=version)


def post_json(
    server: ServerProcess, ids: object, model: str = MODEL, version: str = "1"
) -> requests.Response:
    shape = [len(ids)] if isinstance(ids, list) else [1]
    tensor = {"name": "patient_id", "datatype": "INT64", "shape": shape, "data": ids}
    body = json.dumps({"inputs": [tensor]})
    return requests.post(f"{server.base}/v2/models/{model}/versions/{version}/infer", data=body, timeout=10)


@pytest.mark.parametrize("transport", ["http-binary", "http-json", "grpc"])
def test_entity_keys_answer_exactly_as_their_features_do(
    feature_server: ServerProcess, feature_repo: FeatureRepo, transport: str
) -> None:
    ids = [0, 3, 1, 3]
    features = feature_repo.features[ids]
    if transport == "grpc":
        direct = grpcclient.InferInput("features", list(features.shape), "FP32")
        direct.set_data_from_numpy(features)
        keyed, sent = infer_grpc(feature_server, [grpc_ids(ids)]), infer_grpc(feature_server, [direct])
    else:
        binary = transport == "http-binary"
        direct = httpclient.InferInput("features", list(features.shape), "FP32")
        direct.set_data_from_numpy(features, binary_data=binary)
        keyed = infer_http(feature_server, [http_ids(ids, binary)], binary=binary)
        sent = infer_http(feature_server, [direct], binary=binary)
    for name in OUTPUTS:
        np.testing.assert_array_equal(
            keyed.as_numpy(name), sent.as_numpy(name), f"{transport}: {name} differs"
        )
    assert keyed.as_numpy("probabilities").shape == (4, 2)


def test_metadata_announces_the_join_key_only_where_it_is_served(feature_server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(feature_server.http_url)
    served = client.get_model_metadata(MODEL, model_version="1")
    assert served["parameters"]["entity_input"] == "patient_id", served
    assert served["parameters"]["entity_input_datatype"] == "INT64"
    assert served["parameters"]["entity_input_replaces"] == "features"
    assert served["parameters"]["feature_service"] == "tabular_classifier_v1"
    assert served["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 30]}], (
        "inputs unchanged"
    )
    for model, version in ((MODEL, "2"), ("plain-classifier", "1")):
        assert "parameters" not in client.get_model_metadata(model, model_version=version), (model, version)


def test_an_unknown_entity_is_404_naming_it(feature_server: ServerProcess) -> None:
    answer = post_json(feature_server, [1, 404])
    assert answer.status_code == 404, answer.text
    assert answer.json()["entity_ids"] == [404], answer.json()
    with pytest.raises(InferenceServerException, match=r"unknown patient_id \[404\]") as raised:
        infer_http(feature_server, [http_ids([404], True)])
    assert raised.value.status() == "404"
    with pytest.raises(InferenceServerException, match=r"unknown patient_id \[404\]") as grpc_raised:
        infer_grpc(feature_server, [grpc_ids([404])])
    assert grpc_raised.value.status() == "StatusCode.NOT_FOUND"


def test_a_missing_feature_value_is_422_naming_entity_and_feature(feature_server: ServerProcess) -> None:
    answer = post_json(feature_server, [0, GAP_PATIENT])
    assert answer.status_code == 422, answer.text
    assert answer.json()["missing"] == [{"patient_id": GAP_PATIENT, "feature": GAP_FEATURE}], answer.json()
    with pytest.raises(InferenceServerException, match=GAP_FEATURE) as raised:
        infer_grpc(feature_server, [grpc_ids([GAP_PATIENT])])
    assert raised.value.status() == "StatusCode.FAILED_PRECONDITION"


@pytest.mark.parametrize(
    ("ids", "message"),
    [([1, -1], "must be non-negative"), ([1.5], "INT64 data must be integers"),
     (list(range(9)), "9 entities exceed the model's max_batch_size 8"), ("7", "must be a list")],
    ids=["negative", "non-integer", "too-many", "not-a-list"],
)  # fmt: skip
def test_bad_entity_ids_are_400_naming_the_input(
    feature_server: ServerProcess, ids: object, message: str
) -> None:
    answer = post_json(feature_server, ids)
    assert answer.status_code == 400, answer.text
    assert "'patient_id'" in answer.json()["error"] and message in answer.json()["error"], answer.json()


def test_ids_sent_as_floats_are_400(feature_server: ServerProcess) -> None:
    tensor = grpcclient.InferInput("patient_id", [1], "FP32")
    tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    with pytest.raises(
        InferenceServerException, match="datatype FP32 does not match the model's INT64"
    ) as raised:
        infer_grpc(feature_server, [tensor])
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_versions_without_a_usable_service_refuse_the_join_key(feature_server: ServerProcess) -> None:
    stale = post_json(feature_server, [1], version="2")
    assert stale.status_code == 400 and "trained from 0000000000000000" in stale.json()["error"], stale.text
    plain = post_json(feature_server, [1], model="plain-classifier")
    assert plain.status_code == 400, plain.text
    assert "unknown input 'patient_id'; the model's inputs are ['features']" in plain.json()["error"]


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory, entity_models: Any) -> Iterator[ServerProcess]:
    """The same models on a server without SERVING_FEATURE_REPO."""
    process = start_server(entity_models, tmp_path_factory.mktemp("plain-server"))
    yield process
    assert process.stop() == 0, process.stderr()


def test_a_server_without_the_setting_refuses_the_join_key(plain_server: ServerProcess) -> None:
    answer = post_json(plain_server, [1])
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "unknown input 'patient_id'; the model's inputs are ['features']"}
    metadata = requests.get(f"{plain_server.base}/v2/models/{MODEL}/versions/1", timeout=10).json()
    assert "parameters" not in metadata, metadata


def test_a_locked_store_costs_the_request_its_budget_not_the_server(
    feature_server: ServerProcess, feature_repo: FeatureRepo
) -> None:
    rest_patient, grpc_patient = TIMEOUT_PATIENTS
    live: list[float] = []
    with locked(feature_repo.online_store):
        started = time.perf_counter()
        answer = post_json(feature_server, [rest_patient])
        elapsed = time.perf_counter() - started
        probe = threading.Thread(target=lambda: live.append(_live_seconds(feature_server)))
        probe.start()
        with pytest.raises(InferenceServerException) as raised:
            infer_grpc(feature_server, [grpc_ids([grpc_patient])])
        probe.join(timeout=10)
    assert answer.status_code == 504, answer.text
    assert answer.json()["budget_ms"] == 50 and answer.json()["entity_ids"] == [rest_patient], answer.json()
    assert elapsed < 1.0, f"the request waited {elapsed:.2f} s, not the 50 ms budget"
    assert raised.value.status() == "StatusCode.DEADLINE_EXCEEDED", raised.value
    assert live and live[0] < 1.0, f"liveness answered in {live} s while a lookup was blocked"
    assert post_json(feature_server, [rest_patient]).status_code == 200, "served again once the lock is gone"


def _live_seconds(server: ServerProcess) -> float:
    started = time.perf_counter()
    requests.get(f"{server.base}/v2/health/live", timeout=5).raise_for_status()
    return time.perf_counter() - started


def _scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{server.base}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _lookups(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], outcome: str) -> float:
    labels = (("model", MODEL), ("outcome", outcome), ("version", "1"))
    return samples.get(("serving_feature_lookups_total", labels), 0.0)


def test_lookups_and_freshness_are_exported(feature_server: ServerProcess) -> None:
    before = _scrape(feature_server)
    assert post_json(feature_server, [8]).status_code == 200
    assert post_json(feature_server, [8, 9]).status_code == 200
    assert post_json(feature_server, [777]).status_code == 404
    after = _scrape(feature_server)
    moved = {o: _lookups(after, o) - _lookups(before, o) for o in ("hit", "miss", "unknown_entity")}
    assert moved == {"hit": 1, "miss": 2, "unknown_entity": 1}, moved
    count = ("serving_feature_lookup_seconds_count", (("model", MODEL),))
    assert after[count] - before.get(count, 0) == 3, "each entity-keyed request's lookup is timed"
    gauge = (
        "serving_feature_view_materialized_timestamp_seconds",
        (("feature_view", "tumour_measurements"),),
    )
    assert after[gauge] == MATERIALIZED_END.timestamp(), "the registry's materialization end"


def test_a_version_loaded_on_sighup_takes_entity_keys(
    tmp_path: Path, entity_models: Path, feature_repo: FeatureRepo
) -> None:
    models = tmp_path / "models"
    shutil.copytree(entity_models, models)
    env = {"SERVING_FEATURE_REPO": str(feature_repo.path)}
    server = start_server(models, tmp_path / "logs", env=env)
    try:
        shutil.copytree(models / MODEL / "1", models / MODEL / "3")
        server.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: requests.get(f"{server.base}/v2/models/{MODEL}/versions/3/ready", timeout=5).ok,
            30,
            lambda: f"version 3 was not loaded on SIGHUP: {server.stderr()[-2000:]}",
        )
        answer = post_json(server, [2, 4], version="3")
        assert answer.status_code == 200, answer.text
        keyed = infer_http(server, [http_ids([2, 4], True)], version="3").as_numpy("probabilities")
        direct = httpclient.InferInput("features", [2, 30], "FP32")
        direct.set_data_from_numpy(feature_repo.features[[2, 4]])
        np.testing.assert_array_equal(
            keyed, infer_http(server, [direct], version="3").as_numpy("probabilities")
        )
    finally:
        assert server.stop() == 0, server.stderr()
