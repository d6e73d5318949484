"""The V2 gRPC service, exercised with the official tritonclient gRPC client."""

import asyncio

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.utils import InferenceServerException

from serving_image.errors import InvalidInput, ModelNotFound, ModelNotReady, ServingError
from serving_image.grpc_service import CallEnd, rpc_errors
from serving_image.grpc_wire import Call, RpcError
from serving_image.proto import grpc_predict_v2_pb2 as ours
from tests.serving_image.conftest import ServerProcess


@pytest.fixture
def client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


def tensor(data: np.ndarray, name: str = "features", datatype: str = "FP32") -> grpcclient.InferInput:
    infer_input = grpcclient.InferInput(name, list(data.shape), datatype)
    infer_input.set_data_from_numpy(data)
    return infer_input


def features(count: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((count, 30)).astype(np.float32)


@pytest.mark.parametrize(
    "message",
    [
        "ModelInferRequest",
        "ModelInferResponse",
        "ModelMetadataResponse",
        "InferParameter",
        "InferTensorContents",
    ],
)
def test_our_proto_matches_tritonclients_field_numbers(message: str) -> None:
    def fields(descriptor: object) -> dict[str, tuple[int, int]]:
        found = {}
        for field in descriptor.fields:  # type: ignore[attr-defined]
            found[field.full_name.removeprefix("inference.")] = (field.number, field.type)
            if field.message_type is not None and field.message_type.containing_type is descriptor:
                found.update(fields(field.message_type))
        return found

    ours_fields = fields(getattr(ours, message).DESCRIPTOR)
    assert ours_fields, f"{message} has no fields to compare"
    theirs = fields(getattr(triton_pb2, message).DESCRIPTOR)
    for name, number in ours_fields.items():
        assert theirs.get(name) == number, f"{name}: ours {number}, tritonclient {theirs.get(name)}"


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tabular-classifier")
    assert client.get_server_metadata().name == "model-serving"
    metadata = client.get_model_metadata("tabular-classifier", as_json=True)
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "30"]}], metadata


def test_infer_raw_contents(client: grpcclient.InferenceServerClient, bundled_models: object) -> None:
    import onnxruntime as ort

    data = features(4)
    result = client.infer("tabular-classifier", [tensor(data)], model_version="2")
    session = ort.InferenceSession(f"{bundled_models}/tabular-classifier/2/model.onnx")
    expected_labels, expected_probabilities = session.run(["label", "probabilities"], {"features": data})
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected_probabilities, rtol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("label"), expected_labels)
    assert result.get_response().model_version == "2"


def test_infer_typed_contents(server: ServerProcess) -> None:
    from serving_image.proto import grpc_predict_v2_pb2_grpc as ours_grpc

    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = ours_grpc.GRPCInferenceServiceStub(channel)
        request = ours.ModelInferRequest(model_name="doubler")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
            [1, 2, 3, 4]
        )
        response, call = stub.ModelInfer.with_call(request)
    values = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    assert values.tolist() == [2, 4, 6, 8]
    assert response.model_version == "1"
    assert dict(call.trailing_metadata())["x-model-version"] == "1", "the serving version is in the metadata"


def test_header_route_and_version_metadata(client: grpcclient.InferenceServerClient) -> None:
    result = client.infer("tabular-classifier", [tensor(features(1))], headers={"x-segment": "enterprise"})
    assert result.get_response().model_version == "2"


@pytest.mark.parametrize(
    ("model", "data", "name", "datatype", "code", "message"),
    [
        (
            "nope",
            np.zeros((1, 30), np.float32),
            "features",
            "FP32",
            grpc.StatusCode.NOT_FOUND,
            "unknown model",
        ),
        (
            "doubler",
            np.zeros((1, 4), np.float32),
            "nope",
            "FP32",
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown input",
        ),
        (
            "doubler",
            np.zeros((1, 4), np.int64),
            "x",
            "INT64",
            grpc.StatusCode.INVALID_ARGUMENT,
            "datatype INT64",
        ),
        (
            "doubler",
            np.zeros((1, 5), np.float32),
            "x",
            "FP32",
            grpc.StatusCode.INVALID_ARGUMENT,
            "dimension 1",
        ),
    ],
    ids=["unknown-model", "unknown-input", "wrong-datatype", "wrong-dimension"],
)
def test_errors_map_to_grpc_codes(
    client: grpcclient.InferenceServerClient,
    model: str,
    data: np.ndarray,
    name: str,
    datatype: str,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [tensor(data, name, datatype)])
    assert raised.value.status() == f"StatusCode.{code.name}", raised.value
    assert message in raised.value.message(), raised.value


def test_raw_size_mismatch_is_invalid_argument(server: ServerProcess) -> None:
    from serving_image.proto import grpc_predict_v2_pb2_grpc as ours_grpc

    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = ours_grpc.GRPCInferenceServiceStub(channel)
        request = ours.ModelInferRequest(model_name="doubler")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(b"\0" * 12)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 16 bytes, got 12" in (raised.value.details() or "")


def test_message_over_the_limit_is_resource_exhausted(client: grpcclient.InferenceServerClient) -> None:
    big = np.zeros((1, 100_000), np.float32)  # 400 kB, over the 200 kB limit of the test server
    with pytest.raises(InferenceServerException) as raised:
        client.infer("doubler", [tensor(big, "x")])
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED", raised.value


# --- rpc_errors: the one mapping of a tracked RPC's failures (ModelInfer and SubmitInfer) -------------------


def _raised_through_rpc_errors(
    error: BaseException, expected: type[BaseException], timed_out: bool = False
) -> tuple[BaseException, CallEnd]:
    ended = CallEnd("success")
    call = Call("/inference.GRPCInferenceService/ModelInfer", {}, timed_out=timed_out)
    with pytest.raises(expected) as raised, rpc_errors(call, ended):
        raise error
    return raised.value, ended


@pytest.mark.parametrize(
    ("error", "code", "outcome"),
    [
        (InvalidInput("input 'x': bad"), "INVALID_ARGUMENT", "client_error"),
        (ModelNotFound("unknown model 'm'"), "NOT_FOUND", "not_found"),
        (ModelNotReady("model 'm' is not ready"), "UNAVAILABLE", "unavailable"),
    ],
)
def test_a_serving_error_answers_its_status_and_message(error: ServingError, code: str, outcome: str) -> None:
    raised, ended = _raised_through_rpc_errors(error, RpcError)
    assert isinstance(raised, RpcError) and (raised.code, raised.message) == (code, error.message), raised
    assert (ended.status, ended.outcome, ended.error_name) == (code, outcome, type(error).__name__), ended


@pytest.mark.parametrize(("timed_out", "status"), [(False, "CANCELLED"), (True, "DEADLINE_EXCEEDED")])
def test_a_cancelled_call_is_re_raised_and_recorded(timed_out: bool, status: str) -> None:
    raised, ended = _raised_through_rpc_errors(asyncio.CancelledError(), asyncio.CancelledError, timed_out)
    assert isinstance(raised, asyncio.CancelledError), "nothing is answered: the cancel goes on up"
    assert (ended.status, ended.outcome, ended.error_name) == (status, "client_error", "Cancelled"), ended


def test_a_bug_is_internal_for_the_client_and_traced_for_the_operator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    raised, ended = _raised_through_rpc_errors(KeyError("secret-internal-detail"), RpcError)
    assert isinstance(raised, RpcError), raised
    assert (raised.code, raised.message) == ("INTERNAL", "internal server error"), "no detail leaks"
    assert (ended.status, ended.outcome, ended.error_name) == ("INTERNAL", "server_error", "InternalError")
    assert "KeyError: 'secret-internal-detail'" in capsys.readouterr().err, "the operator gets the traceback"


def test_a_call_that_returns_keeps_its_outcome() -> None:
    ended = CallEnd("accepted")
    with rpc_errors(Call("/m", {}), ended):
        pass
    assert (ended.status, ended.outcome, ended.error_name) == ("OK", "accepted", None), ended
