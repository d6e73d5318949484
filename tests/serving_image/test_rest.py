"""The V2 REST endpoints, exercised with the official tritonclient HTTP client and raw HTTP."""

import gzip
import json
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.serving_image.conftest import ServerProcess

FEATURES = 30


def rows(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, FEATURES)).astype(np.float32)


@pytest.fixture
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


def infer_input(data: np.ndarray, binary: bool = True, name: str = "features") -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live(), "live must be true while the process runs"
    assert client.is_server_ready(), "every model in the test repository loads, so the server is ready"
    metadata = client.get_server_metadata()
    assert metadata["name"] == "model-serving"
    assert "binary_tensor_data" in metadata["extensions"], metadata


def test_model_metadata_comes_from_the_onnx_graph(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("tabular-classifier")
    assert metadata["versions"] == ["1", "2"], metadata
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, FEATURES]}]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        "label": "INT64",
        "probabilities": "FP32",
    }
    version = client.get_model_metadata("tabular-classifier", model_version="1")
    assert version["inputs"] == metadata["inputs"], "a version's metadata matches the graph too"


def test_model_and_version_readiness(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("tabular-classifier")
    assert client.is_model_ready("tabular-classifier", model_version="2")
    assert not client.is_model_ready("no-such-model"), "an unknown model is not ready"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_onnxruntime_in_process(
    client: httpclient.InferenceServerClient, bundled_models: object, binary: bool
) -> None:
    import onnxruntime as ort

    data = rows(3)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer(
        "tabular-classifier", [infer_input(data, binary)], model_version="1", outputs=outputs
    )
    session = ort.InferenceSession(f"{bundled_models}/tabular-classifier/1/model.onnx")
    expected = session.run(["probabilities"], {"features": data})[0]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5)
    assert result.get_response()["model_version"] == "1"


def test_request_without_content_type_is_accepted(server: ServerProcess) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    response = requests.post(f"{server.base}/v2/models/doubler/infer", data=body.encode(), timeout=10)
    assert "content-type" not in response.request.headers, "the test must really send no Content-Type"
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [2, 4, 6, 8]


def test_gzip_compressed_request(client: httpclient.InferenceServerClient) -> None:
    result = client.infer(
        "tabular-classifier", [infer_input(rows(2))], model_version="2", request_compression_algorithm="gzip"
    )
    assert result.as_numpy("probabilities").shape == (2, 2)


def test_response_names_the_version_in_body_and_header(server: ServerProcess) -> None:
    body: dict[str, Any] = {
        "inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": [0.1] * 30}]
    }
    response = requests.post(
        f"{server.base}/v2/models/tabular-classifier/infer",
        json=body,
        headers={"x-segment": "enterprise"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "2", "x-segment: enterprise routes to version 2"
    assert response.headers["x-model-version"] == "2"


def test_sticky_users_keep_their_version_and_weights_hold(client: httpclient.InferenceServerClient) -> None:
    seen: dict[str, set[str]] = {}
    for user in range(200):
        for _ in range(2):
            result = client.infer(
                "tabular-classifier", [infer_input(rows(1))], headers={"x-user-id": f"u{user}"}
            )
            seen.setdefault(f"u{user}", set()).add(result.get_response()["model_version"])
    assert all(len(versions) == 1 for versions in seen.values()), "a user must always get the same version"
    share_v2 = sum(versions == {"2"} for versions in seen.values()) / len(seen)
    assert 0.02 <= share_v2 <= 0.25, f"about 10% of users should get version 2, got {share_v2:.0%}"


def test_explicit_version_bypasses_routing(client: httpclient.InferenceServerClient) -> None:
    result = client.infer(
        "tabular-classifier", [infer_input(rows(1))], model_version="1", headers={"x-segment": "enterprise"}
    )
    assert result.get_response()["model_version"] == "1"


def post(server: ServerProcess, path: str, body: bytes | str, **headers: str) -> requests.Response:
    data = body.encode() if isinstance(body, str) else body
    return requests.post(server.base + path, data=data, headers=headers, timeout=10)


BAD_REQUESTS = [
    ("malformed", "{not json", 400, "malformed JSON"),
    ("not-object", "[1, 2]", 400, "must be a JSON object"),
    ("no-inputs", "{}", 400, "'inputs' must be a non-empty list"),
    (
        "unknown-input",
        '{"inputs":[{"name":"nope","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
        400,
        "unknown input 'nope'",
    ),
    (
        "wrong-datatype",
        '{"inputs":[{"name":"x","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}',
        400,
        "datatype INT64 does not match the model's FP32",
    ),
    (
        "count-mismatch",
        '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}',
        400,
        "needs 4 elements, data has 3",
    ),
    (
        "wrong-rank",
        '{"inputs":[{"name":"x","shape":[4],"datatype":"FP32","data":[1,2,3,4]}]}',
        400,
        "has rank 1, the model expects rank 2",
    ),
    (
        "wrong-dimension",
        '{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}',
        400,
        "dimension 1 is 5, the model expects 4",
    ),
    (
        "not-numbers",
        '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":["a","b","c","d"]}]}',
        400,
        "FP32 data must be numbers, got str 'a'",
    ),
    (
        "unknown-datatype",
        '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP128","data":[1,2,3,4]}]}',
        400,
        "unknown datatype 'FP128'",
    ),
    (
        "negative-shape",
        '{"inputs":[{"name":"x","shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
        400,
        "non-negative integers",
    ),
    (
        "too-many-rows",
        '{"inputs":[{"name":"x","shape":[9,4],"datatype":"FP32","data":' + json.dumps([0.0] * 36) + "}]}",
        400,
        "exceeds the model's max_batch_size 8",
    ),
    (
        "unknown-output",
        '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"z"}]}',
        400,
        "unknown output 'z'",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_input_gets_a_4xx_naming_the_problem(
    server: ServerProcess, case: str, body: str, status: int, message: str
) -> None:
    response = post(server, "/v2/models/doubler/infer", body, **{"content-type": "application/json"})
    assert response.status_code == status, f"{case}: {response.status_code} {response.text}"
    assert message in response.json()["error"], f"{case}: {response.json()}"


def test_binary_size_mismatch_is_400(server: ServerProcess) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
            ]
        }
    ).encode()
    response = post(
        server,
        "/v2/models/doubler/infer",
        header + b"\0" * 12,
        **{"inference-header-content-length": str(len(header))},
    )
    assert response.status_code == 400, response.text
    assert "exceeds the binary data" in response.json()["error"]


def test_payload_over_the_limit_is_413(server: ServerProcess) -> None:
    response = post(server, "/v2/models/doubler/infer", b"x" * 300_000)
    assert response.status_code == 413, response.text
    assert "exceeds the limit of 200000 bytes" in response.json()["error"]


def test_gzip_bomb_is_413(server: ServerProcess) -> None:
    bomb = gzip.compress(b" " * 5_000_000)
    response = post(server, "/v2/models/doubler/infer", bomb, **{"content-encoding": "gzip"})
    assert response.status_code == 413, response.text


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/models/nope/infer", "unknown model 'nope'"),
        ("/v2/models/doubler/versions/7/infer", "has no version '7'"),
    ],
)
def test_unknown_model_or_version_is_404(server: ServerProcess, path: str, message: str) -> None:
    response = post(server, path, "{}")
    assert response.status_code == 404, response.text
    assert message in response.json()["error"]


def test_tritonclient_raises_with_the_server_message(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown input 'wrong'"):
        client.infer("tabular-classifier", [infer_input(rows(1), name="wrong")])


def test_unknown_path_and_method(server: ServerProcess) -> None:
    assert requests.get(server.base + "/v3", timeout=5).status_code == 404
    assert requests.delete(server.base + "/v2/models/doubler", timeout=5).status_code == 405


def test_random_bodies_never_get_a_5xx(server: ServerProcess) -> None:
    rng = np.random.default_rng(7)
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}]}).encode()  # fmt: skip
    with requests.Session() as session:
        for n in range(60):
            body = rng.bytes(int(rng.integers(0, 400)))
            headers = {"inference-header-content-length": str(int(rng.integers(-5, 500)))} if n % 2 else {}
            if n % 3 == 0:
                body, headers = header + body, {"inference-header-content-length": str(len(header))}
            response = session.post(
                f"{server.base}/v2/models/doubler/infer", data=body, headers=headers, timeout=5
            )
            assert 400 <= response.status_code < 500, f"body {n}: {response.status_code} {response.text}"
            assert "error" in response.json()


def test_request_id_from_the_body_never_reaches_headers_unsanitised(server: ServerProcess) -> None:
    inputs: list[Any] = [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
    clean = requests.post(
        f"{server.base}/v2/models/doubler/infer", json={"id": "abc-1", "inputs": inputs}, timeout=5
    )
    assert clean.headers["x-request-id"] == "abc-1" and clean.json()["id"] == "abc-1"
    evil = "x\r\nset-cookie: stolen=1"
    response = requests.post(
        f"{server.base}/v2/models/doubler/infer", json={"id": evil, "inputs": inputs}, timeout=5
    )
    assert response.status_code == 200, response.text
    assert "set-cookie" not in response.headers, "a request id must not inject headers"
    assert response.headers["x-request-id"] != evil and response.json()["id"] == evil, (
        "the body still echoes it"
    )
