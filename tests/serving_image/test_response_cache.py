"""The response cache: its key and bounds alone, then through a real server on REST and gRPC."""

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from onnx import GraphProto, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from serving_image.proto import grpc_predict_v2_pb2 as pb
from serving_image.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from serving_image.response_cache import ENTRY_OVERHEAD_BYTES, CacheLimits, ResponseCache, cache_key
from serving_image.tensors import InputTensor
from tests.serving_image.conftest import ServerProcess, doubler_graph, save_model, start_server, write_config


def _tensor(name: str, data: np.ndarray, datatype: str = "FP32") -> InputTensor:
    return InputTensor(name, datatype, tuple(data.shape), data)


X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.mark.parametrize(
    ("other", "why"),
    [
        ([_tensor("x", X + 1)], "different values"),
        ([_tensor("x", X.reshape(4, 2))], "different shape, same bytes"),
        ([_tensor("x", X.view(np.int32), "INT32")], "different datatype, same bytes"),
        ([_tensor("z", X)], "different input name"),
    ],
)
def test_key_changes_with_what_changes_the_result(other: list[InputTensor], why: str) -> None:
    assert cache_key([_tensor("x", X)], ["y"]) != cache_key(other, ["y"]), why


def test_key_covers_requested_outputs_and_ignores_input_order() -> None:
    a, b = _tensor("a", X), _tensor("b", X + 1)
    assert cache_key([a, b], ["y"]) == cache_key([b, a], ["y"]), "input order must not matter"
    assert cache_key([a], ["y"]) != cache_key([a], ["y", "z"]), "requested outputs are part of the key"
    assert cache_key([a], ["y", "z"]) != cache_key([a], ["z", "y"]), "output order shapes the response"


def test_key_of_bytes_tensors_is_their_content_not_object_pointers() -> None:
    first = np.array(["ab", "c"], dtype=object)
    same = np.array(["ab", "c"], dtype=object)
    split = np.array(["a", "bc"], dtype=object)
    assert cache_key([_tensor("s", first, "BYTES")], []) == cache_key([_tensor("s", same, "BYTES")], [])
    assert cache_key([_tensor("s", first, "BYTES")], []) != cache_key([_tensor("s", split, "BYTES")], [])


def _outputs(nbytes: int) -> list[np.ndarray]:
    return [np.zeros(nbytes, dtype=np.uint8)]


def test_lru_evicts_the_least_recently_used_within_the_entry_bound() -> None:
    cache = ResponseCache(CacheLimits(max_bytes=1 << 20, max_entries=2))
    cache.put(b"a", _outputs(10))
    cache.put(b"b", _outputs(10))
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"c", _outputs(10))
    assert (cache.get(b"a") is not None, cache.get(b"b"), cache.get(b"c") is not None) == (True, None, True)
    assert len(cache) == 2


def test_byte_bound_holds_and_an_oversized_entry_is_not_stored() -> None:
    entry = ENTRY_OVERHEAD_BYTES + 1000
    cache = ResponseCache(CacheLimits(max_bytes=2 * entry + 10, max_entries=100))
    for key in (b"a", b"b", b"c"):
        assert cache.put(key, _outputs(1000))
        assert cache.bytes <= cache.limits.max_bytes, f"over the byte bound after {key!r}"
    assert cache.get(b"a") is None, "the oldest entry makes room"
    assert not cache.put(b"big", _outputs(3 * entry)), "an entry larger than the budget is refused"
    assert len(cache) == 2 and cache.bytes == 2 * entry


def test_stored_arrays_are_private_read_only_copies() -> None:
    batch = np.arange(16, dtype=np.float32).reshape(4, 4)
    cache = ResponseCache(CacheLimits(max_bytes=1 << 20))
    cache.put(b"k", [batch[1:2]])  # a request's rows are a view of the whole batch
    stored = cache.get(b"k")
    assert stored is not None
    assert not np.shares_memory(stored[0], batch), "must not keep the batch alive or see it change"
    assert not stored[0].flags.writeable
    np.testing.assert_array_equal(stored[0], batch[1:2])


def test_limits_are_off_by_default() -> None:
    assert not CacheLimits().enabled
    assert CacheLimits(max_bytes=1).enabled


# Through a real server: model "scaled" has version 1 (y = 2x) and 2 (y = 3x), both opted in;
# "doubler" is not opted in.


def _scaled_graph(factor: float) -> GraphProto:
    graph = doubler_graph()
    graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(factor, dtype=np.float32), "two"))
    return graph


@pytest.fixture(scope="module")
def cache_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("cache-repository")
    save_model(_scaled_graph(2.0), root / "scaled" / "1" / "model.onnx")
    save_model(_scaled_graph(3.0), root / "scaled" / "2" / "model.onnx")
    write_config(root / "scaled", "max_batch_size: 8\nresponse_cache: true\n")
    save_model(doubler_graph(), root / "doubler" / "1" / "model.onnx")
    server = start_server(
        root, tmp_path_factory.mktemp("cache-logs"), env={"SERVING_RESPONSE_CACHE_BYTES": str(1 << 20)}
    )
    yield server
    assert server.stop() == 0, server.stderr()


def _counter(server: ServerProcess, name: str, model: str, version: str) -> float:
    text = requests.get(server.base + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_total" and sample.labels == {"model": model, "version": version}:
                return float(sample.value)
    return 0.0


def _rest(server: ServerProcess, path: str, document: Any) -> requests.Response:
    response = requests.post(
        server.base + path, json=document, headers={"x-request-id": "same-id"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-output"])
def test_rest_cached_response_is_byte_identical(cache_server: ServerProcess, binary: bool) -> None:
    data = [0.5, 1.5, 2.5, 3.5] if binary else [1.0, 2.0, 3.0, 4.0]
    document: Any = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": data}],
        "outputs": [{"name": "y", "parameters": {"binary_data": binary}}],
    }
    hits = _counter(cache_server, "serving_response_cache_hits", "scaled", "1")
    misses = _counter(cache_server, "serving_response_cache_misses", "scaled", "1")
    computed = _rest(cache_server, "/v2/models/scaled/versions/1/infer", document)
    cached = _rest(cache_server, "/v2/models/scaled/versions/1/infer", document)
    assert cached.content == computed.content, "a cached response must be byte-identical to the computed one"
    assert _counter(cache_server, "serving_response_cache_misses", "scaled", "1") == misses + 1
    assert _counter(cache_server, "serving_response_cache_hits", "scaled", "1") == hits + 1


def test_cache_is_never_shared_across_versions(cache_server: ServerProcess) -> None:
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [7.0, 7.0, 7.0, 7.0]}]}
    one = _rest(cache_server, "/v2/models/scaled/versions/1/infer", document).json()
    two_misses = _counter(cache_server, "serving_response_cache_misses", "scaled", "2")
    two = _rest(cache_server, "/v2/models/scaled/versions/2/infer", document).json()
    assert one["outputs"][0]["data"] == [14.0] * 4
    assert two["outputs"][0]["data"] == [21.0] * 4, "version 2 answered with version 1's cached outputs"
    assert _counter(cache_server, "serving_response_cache_misses", "scaled", "2") == two_misses + 1


def test_grpc_cached_response_is_byte_identical(cache_server: ServerProcess) -> None:
    request = pb.ModelInferRequest(model_name="scaled", model_version="2", id="grpc-same")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(np.full((2, 4), 1.25, dtype=np.float32).tobytes())
    hits = _counter(cache_server, "serving_response_cache_hits", "scaled", "2")
    with grpc.insecure_channel(cache_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        computed = stub.ModelInfer(request, timeout=10)
        cached = stub.ModelInfer(request, timeout=10)
    assert cached.SerializeToString(deterministic=True) == computed.SerializeToString(deterministic=True)
    assert np.frombuffer(cached.raw_output_contents[0], dtype=np.float32).tolist() == [3.75] * 8
    assert _counter(cache_server, "serving_response_cache_hits", "scaled", "2") == hits + 1


def test_models_that_did_not_opt_in_are_not_cached(cache_server: ServerProcess) -> None:
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 1.0, 1.0, 1.0]}]}
    for _ in range(2):
        _rest(cache_server, "/v2/models/doubler/infer", document)
    assert _counter(cache_server, "serving_response_cache_hits", "doubler", "1") == 0
    assert _counter(cache_server, "serving_response_cache_misses", "doubler", "1") == 0


def test_cache_is_off_without_a_byte_budget(server: ServerProcess) -> None:
    """The shared server has no SERVING_RESPONSE_CACHE_BYTES: nothing is counted at all."""
    text = requests.get(server.base + "/metrics", timeout=5).text
    assert "serving_response_cache_hits_total{" not in text
    assert "serving_response_cache_misses_total{" not in text
