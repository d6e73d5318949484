"""SageMaker's inference container contract, against real server processes started as SageMaker starts them.

SageMaker runs the image with the argument ``serve`` and the port in ``SAGEMAKER_BIND_TO_PORT``, checks
``GET /ping`` and sends ``POST /invocations``; what /invocations answers must be what the model's V2
infer endpoint answers, for JSON and for binary requests.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper

from serving_image.errors import InvalidInput, ModelNotFound, ServingError
from serving_image.rest import invocation_path
from tests.serving_image.conftest import REPO_ROOT, free_port, logged_events, save_model, wait_until

CLASSIFIER = "tabular-classifier-int8"  # one version, no variants: its answers are deterministic
SCALER = "scaler"  # version 1 doubles, version 2 triples
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def scaler_graph(factor: float, width: int = 4) -> onnx.GraphProto:
    """y = factor * x for x of shape [batch, width]."""
    constant = numpy_helper.from_array(np.array(factor, dtype=np.float32), "factor")
    return helper.make_graph(
        [helper.make_node("Mul", ["x", "factor"], ["y"])],
        "scaler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [constant],
    )


class SageMakerServer:
    """``python -m serving_image serve`` as SageMaker starts it: the port from SAGEMAKER_BIND_TO_PORT."""

    def __init__(self, repository: Path, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / "stderr.log"
        env = {
            **os.environ,
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
            "SERVING_HOST": "127.0.0.1",  # serve mode listens on all interfaces; tests stay on loopback
            "SERVING_MODEL_REPOSITORY": str(repository),  # stands for /opt/ml/model
            "SERVING_GRPC_PORT": str(free_port()),
            "SERVING_DRAIN_DELAY_SECONDS": "0",
            **(extra_env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving_image", "serve"], cwd=REPO_ROOT, env=env,
            stdout=(log_dir / "stdout.log").open("wb"), stderr=self.stderr_path.open("wb"),
        )  # fmt: skip
        wait_until(self._answers_ping, 60, lambda: f"the server never answered /ping: {self.stderr()}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")

    def _answers_ping(self) -> bool:
        assert self.process.poll() is None, (
            f"the server exited with {self.process.returncode}: {self.stderr()}"
        )
        try:
            return requests.get(self.base + "/ping", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(30)


def start(
    repository: Path, log_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[SageMakerServer]:
    server = SageMakerServer(repository, log_dir, extra_env)
    yield server
    assert server.stop() == 0, f"SIGTERM must drain and exit 0: {server.stderr()}"


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, bundled_models: Path) -> Iterator[SageMakerServer]:
    """A single-model endpoint: /opt/ml/model holds one model, copied there as SageMaker would."""
    root = tmp_path_factory.mktemp("opt-ml-model")
    shutil.copytree(bundled_models / CLASSIFIER, root / CLASSIFIER)
    yield from start(root, tmp_path_factory.mktemp("single-logs"))


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory, bundled_models: Path) -> Iterator[SageMakerServer]:
    """A multi-model endpoint: the classifier and a two-version scaler."""
    root = tmp_path_factory.mktemp("opt-ml-models")
    shutil.copytree(bundled_models / CLASSIFIER, root / CLASSIFIER)
    for version, factor in (("1", 2.0), ("2", 3.0)):
        save_model(scaler_graph(factor), root / SCALER / version / "model.onnx")
    (root / SCALER / "config.yaml").write_text("max_batch_size: 8\nmax_queue_delay_ms: 0\n", encoding="utf-8")
    yield from start(root, tmp_path_factory.mktemp("multi-logs"))


ONE_VERSION_MODEL, ONE_VERSION = "tabular-classifier", "2"


@pytest.fixture(scope="module")
def one_version(tmp_path_factory: pytest.TempPathFactory, bundled_models: Path) -> Iterator[SageMakerServer]:
    """One production variant's Model: SageMaker copied one version's prefix, so model.onnx is at the top."""
    root = tmp_path_factory.mktemp("opt-ml-model-one-version")
    shutil.copy(bundled_models / ONE_VERSION_MODEL / ONE_VERSION / "model.onnx", root / "model.onnx")
    env = {"SERVING_MODEL_NAME": ONE_VERSION_MODEL, "SERVING_MODEL_VERSION": ONE_VERSION}
    yield from start(root, tmp_path_factory.mktemp("one-version-logs"), env)


def classifier_request(server: SageMakerServer, model: str = CLASSIFIER) -> dict[str, Any]:
    """A two-row JSON request that fits the classifier's input, as its metadata states it."""
    metadata = requests.get(f"{server.base}/v2/models/{model}", timeout=10).json()
    (spec,) = metadata["inputs"]
    width = spec["shape"][-1]
    data = np.linspace(-1.0, 1.0, 2 * width, dtype=np.float32).tolist()
    return {"inputs": [{"name": spec["name"], "shape": [2, width], "datatype": "FP32", "data": data}]}


def scaler_request(rows: list[list[float]]) -> dict[str, Any]:
    flat = [value for row in rows for value in row]
    return {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP32", "data": flat}]}


def invoke(server: SageMakerServer, document: object, **headers: str) -> requests.Response:
    """POST /invocations as SageMaker does: the body as the client sent it, with its content type."""
    return requests.post(
        server.base + "/invocations",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )


def outputs(response: requests.Response) -> dict[str, Any]:
    """The outputs of a JSON V2 response, by name (the request id aside, which each request mints)."""
    assert response.status_code == 200, response.text
    return {output["name"]: output for output in response.json()["outputs"]}


# --- the single-model endpoint ------------------------------------------------------------------------------


def test_ping_is_200_once_the_models_are_ready(single: SageMakerServer) -> None:
    response = requests.get(single.base + "/ping", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"ready": True}, response.text
    assert requests.get(single.base + "/v2/health/ready", timeout=10).status_code == 200, "V2 health kept"


def test_serve_mode_listens_on_the_sagemaker_port(single: SageMakerServer) -> None:
    wait_until(lambda: logged_events(single.stderr(), "server_started"), 10, "no server_started event")
    (started,) = logged_events(single.stderr(), "server_started")
    assert started["http_port"] == single.port, started
    assert started["models"] == {CLASSIFIER: True}, started


def test_invocations_answer_as_the_models_infer_endpoint(single: SageMakerServer) -> None:
    request = classifier_request(single)
    invoked = invoke(single, request)
    direct = requests.post(f"{single.base}/v2/models/{CLASSIFIER}/infer", json=request, timeout=10)
    assert outputs(invoked) == outputs(direct), "/invocations must answer what the V2 infer endpoint does"
    assert invoked.json()["model_name"] == CLASSIFIER, invoked.json()
    assert invoked.headers["x-model-version"] == "1", invoked.headers


def test_binary_invocations_answer_as_the_models_infer_endpoint(single: SageMakerServer) -> None:
    request = classifier_request(single)
    (tensor,) = request["inputs"]
    data = np.asarray(tensor.pop("data"), dtype=np.float32).tobytes()
    tensor["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps(request).encode()
    binary_headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    invoked = requests.post(
        single.base + "/invocations", data=header + data, headers=binary_headers, timeout=10
    )
    direct = requests.post(
        f"{single.base}/v2/models/{CLASSIFIER}/infer", data=header + data, headers=binary_headers, timeout=10
    )
    assert outputs(invoked) == outputs(direct), "binary /invocations must answer what the V2 endpoint does"


def test_a_bad_invocation_is_a_json_4xx(single: SageMakerServer) -> None:
    response = invoke(single, {"inputs": [{"name": "nope", "shape": [1], "datatype": "FP32", "data": [1]}]})
    assert response.status_code == 400, response.text
    assert "error" in response.json(), response.text


def test_an_unknown_target_model_is_404(single: SageMakerServer) -> None:
    response = invoke(single, classifier_request(single), **{TARGET_MODEL: "absent"})
    assert response.status_code == 404, response.text
    assert "absent" in response.json()["error"], response.text


def test_invocations_are_logged_and_counted(single: SageMakerServer) -> None:
    invoke(single, classifier_request(single), **{"x-request-id": "sagemaker-logged-1"})
    metrics = requests.get(single.base + "/metrics", timeout=10).text
    assert f'model="{CLASSIFIER}"' in metrics, "the invocations are counted under their model"

    def logged() -> bool:
        stdout = (single.stderr_path.parent / "stdout.log").read_text(encoding="utf-8")
        return "sagemaker-logged-1" in stdout

    wait_until(logged, 10, "the invocation is in the access log")


# --- one version's directory, as each production variant's Model has it -------------------------------------


def test_one_versions_directory_serves_as_the_named_model_and_version(one_version: SageMakerServer) -> None:
    # The port answers a moment before the line saying so is written: wait for the line, bounded.
    wait_until(lambda: logged_events(one_version.stderr(), "server_started"), 10, "no server_started event")
    (started,) = logged_events(one_version.stderr(), "server_started")
    assert started["models"] == {ONE_VERSION_MODEL: True}, started
    request = classifier_request(one_version, ONE_VERSION_MODEL)
    invoked = invoke(one_version, request)
    assert invoked.json()["model_name"] == ONE_VERSION_MODEL, invoked.text
    assert invoked.headers["x-model-version"] == ONE_VERSION, invoked.headers
    ready = f"{one_version.base}/v2/models/{ONE_VERSION_MODEL}/versions/{ONE_VERSION}/ready"
    assert requests.get(ready, timeout=10).status_code == 200


def test_one_versions_directory_answers_what_that_version_computes(
    one_version: SageMakerServer, bundled_models: Path
) -> None:
    request = classifier_request(one_version, ONE_VERSION_MODEL)
    (tensor,) = request["inputs"]
    # Moderate values, where the two versions' probabilities differ (far out both saturate to 0 and 1).
    rows = np.random.default_rng(7).normal(0.0, 0.5, size=(8, tensor["shape"][-1])).astype(np.float32)
    tensor.update(shape=list(rows.shape), data=rows.ravel().tolist())
    answered = outputs(invoke(one_version, request))
    for version in ("1", ONE_VERSION):
        session = ort.InferenceSession(str(bundled_models / ONE_VERSION_MODEL / version / "model.onnx"))
        expected = dict(
            zip(
                (o.name for o in session.get_outputs()),
                session.run(None, {tensor["name"]: rows}),
                strict=True,
            )
        )
        same = all(np.allclose(answered[name]["data"], np.ravel(value)) for name, value in expected.items())
        assert same == (version == ONE_VERSION), f"version {version}: {answered} against {expected}"


def test_one_versions_directory_has_no_other_version(one_version: SageMakerServer) -> None:
    request = classifier_request(one_version, ONE_VERSION_MODEL)
    response = invoke(one_version, request, **{CUSTOM_ATTRIBUTES: "version=1"})
    assert response.status_code == 404, response.text
    assert "no version '1'" in response.json()["error"], response.text


# --- the multi-model endpoint -------------------------------------------------------------------------------


def test_the_target_model_header_routes_the_invocation(multi: SageMakerServer) -> None:
    request = scaler_request([[1, 2, 3, 4]])
    invoked = invoke(multi, request, **{TARGET_MODEL: SCALER})
    direct = requests.post(f"{multi.base}/v2/models/{SCALER}/infer", json=request, timeout=10)
    assert outputs(invoked) == outputs(direct), "the header names the model /invocations runs"
    assert outputs(invoked)["y"]["data"] == [3, 6, 9, 12], "without a version, the latest serves"
    classified = invoke(multi, classifier_request(multi), **{TARGET_MODEL: CLASSIFIER})
    assert classified.json()["model_name"] == CLASSIFIER, classified.text


def test_without_the_header_a_multi_model_endpoint_says_to_name_one(multi: SageMakerServer) -> None:
    response = invoke(multi, scaler_request([[1, 2, 3, 4]]))
    assert response.status_code == 400, response.text
    assert TARGET_MODEL in response.json()["error"], response.text


def test_an_unknown_target_model_on_a_multi_model_endpoint_is_404(multi: SageMakerServer) -> None:
    response = invoke(multi, scaler_request([[1, 2, 3, 4]]), **{TARGET_MODEL: "absent"})
    assert response.status_code == 404, response.text
    assert "absent" in response.json()["error"], response.text


@pytest.mark.parametrize(
    ("attributes", "version", "expected"),
    [
        ("version=1", "1", [2, 4, 6, 8]),
        ("version=2", "2", [3, 6, 9, 12]),
        ("trace=abc; version=1", "1", [2, 4, 6, 8]),
        ("trace=abc", "2", [3, 6, 9, 12]),  # no version: the router's (the latest)
    ],
)
def test_custom_attributes_choose_the_version(
    multi: SageMakerServer, attributes: str, version: str, expected: list[float]
) -> None:
    request = scaler_request([[1, 2, 3, 4]])
    invoked = invoke(multi, request, **{TARGET_MODEL: SCALER, CUSTOM_ATTRIBUTES: attributes})
    assert invoked.headers["x-model-version"] == version, invoked.headers
    assert outputs(invoked)["y"]["data"] == expected, invoked.text
    direct = requests.post(
        f"{multi.base}/v2/models/{SCALER}/versions/{version}/infer", json=request, timeout=10
    )
    assert outputs(invoked) == outputs(direct), "the same answer as the version's V2 endpoint"


@pytest.mark.parametrize(
    ("attributes", "status", "message"),
    [("version=9", 404, "no version '9'"), ("version=", 400, "names no version")],
)
def test_a_bad_version_is_a_4xx_naming_it(
    multi: SageMakerServer, attributes: str, status: int, message: str
) -> None:
    response = invoke(
        multi, scaler_request([[1, 2, 3, 4]]), **{TARGET_MODEL: SCALER, CUSTOM_ATTRIBUTES: attributes}
    )
    assert response.status_code == status, response.text
    assert message in response.json()["error"], response.text


# --- the model and version an invocation stands for ---------------------------------------------------------

PATHS = [
    (["m"], {}, ["v2", "models", "m", "infer"]),
    (["a", "b"], {"x-amzn-sagemaker-target-model": "b"}, ["v2", "models", "b", "infer"]),
    (
        ["m"],
        {"x-amzn-sagemaker-target-model": "other"},
        ["v2", "models", "other", "infer"],
    ),  # 404 when routed
    (
        ["m"],
        {"x-amzn-sagemaker-custom-attributes": "version=3"},
        ["v2", "models", "m", "versions", "3", "infer"],
    ),
    (
        ["m"],
        {"x-amzn-sagemaker-custom-attributes": "a=1, version = 2"},
        ["v2", "models", "m", "versions", "2", "infer"],
    ),
    (["m"], {"x-amzn-sagemaker-custom-attributes": "opaque-value"}, ["v2", "models", "m", "infer"]),
]


@pytest.mark.parametrize(("models", "headers", "path"), PATHS)
def test_an_invocation_stands_for_a_models_infer_path(
    models: list[str], headers: dict[str, str], path: list[str]
) -> None:
    assert invocation_path(models, headers) == path, (models, headers)


REFUSED = [
    ([], {}, ModelNotFound, "has no model"),
    (["a", "b"], {}, InvalidInput, "serves 2 models: name one with the header X-Amzn-SageMaker-Target-Model"),
    (["m"], {"x-amzn-sagemaker-target-model": ""}, InvalidInput, "is empty"),
    (["m"], {"x-amzn-sagemaker-custom-attributes": "version="}, InvalidInput, "names no version"),
]


@pytest.mark.parametrize(("models", "headers", "error", "message"), REFUSED)
def test_an_invocation_without_one_model_is_refused_naming_the_problem(
    models: list[str], headers: dict[str, str], error: type[ServingError], message: str
) -> None:
    with pytest.raises(error) as raised:
        invocation_path(models, headers)
    assert message in raised.value.message, raised.value.message
