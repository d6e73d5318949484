"""Asynchronous inference over gRPC (``inference.jobs.AsyncInferenceService``), against server processes.

The client is grpcio with stubs generated from the same .proto (serving_image/proto/
async_inference_pb2_grpc.py); the server is ours, on the same port as the protocol's service. A job
submitted with ``SubmitInfer`` runs to the answer ``ModelInfer`` gives, and every refusal is the
status REST's would map to: RESOURCE_EXHAUSTED for a full queue, NOT_FOUND, UNIMPLEMENTED when
async inference (or callbacks) is not configured, UNAVAILABLE when Redis is down, INVALID_ARGUMENT
for bad input, UNAUTHENTICATED and PERMISSION_DENIED from the same auth gate as REST.
"""

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from serving_image.grpc_jobs import job_body, response_message
from serving_image.proto import async_inference_pb2 as jobs
from serving_image.proto import async_inference_pb2_grpc as jobs_grpc
from serving_image.proto import grpc_predict_v2_pb2 as pb
from serving_image.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from serving_image.rest_codec import decode_infer_request
from serving_image.tensors import InferRequest, InputTensor, RequestedOutput
from tests.serving_image.async_jobs import TABULAR, access_events, rows, start_async_server
from tests.serving_image.auth_tokens import AUDIENCE, ISSUER, JwksServer, claims, jwks, rsa_key, sign
from tests.serving_image.callback_receiver import ReceiverThread, independent_signature
from tests.serving_image.conftest import ServerProcess, free_port, start_server, wait_until
from tests.serving_image.redis_fixture import RedisServer

KEY = b"grpc-callback-key-" + b"0123456789" * 4
ALICE = (("x-caller", "alice"),)
BOB = (("x-caller", "bob"),)
RSA = rsa_key("jobs-rsa")
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def receiver() -> Iterator[ReceiverThread]:
    with ReceiverThread() as running:
        yield running


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("grpc-callback-key") / "hmac.key"
    path.write_bytes(KEY)
    return path


@pytest.fixture(scope="module")
def jobs_server(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path, redis_server: RedisServer,
    receiver: ReceiverThread, key_file: Path,
) -> Iterator[ServerProcess]:  # fmt: skip
    """A server that takes and runs jobs, believing a proxy's caller header, with callbacks allowed."""
    process = start_async_server(
        test_repository, tmp_path_factory.mktemp("grpc-jobs"), redis_server, f"grpc-{time.monotonic_ns()}",
        async_worker=True, trusted_proxy_header="x-caller", async_callback_hosts=receiver.origin,
        async_callback_secret_file=key_file,
    )  # fmt: skip
    yield process
    assert process.stop() == 0, f"the server did not drain cleanly: {process.stderr()}"


def tabular(data: np.ndarray, version: str = "1", request_id: str = "", raw: bool = True) -> Any:
    """A ModelInferRequest for the tabular classifier: raw little-endian contents, or typed ones."""
    request = pb.ModelInferRequest(model_name=TABULAR, model_version=version, id=request_id)
    tensor = request.inputs.add(name="features", datatype="FP32", shape=list(data.shape))
    if raw:
        request.raw_input_contents.append(data.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(data.ravel().tolist())
    return request


def doubler(values: list[float] | None = None, **parameters: Any) -> Any:
    request = pb.ModelInferRequest(model_name="doubler")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
        values or [1.0, 2.0, 3.0, 4.0]
    )
    for name, value in parameters.items():
        request.parameters[name].CopyFrom(value)
    return request


def call(server: ServerProcess, rpc: Callable[[Any], Any]) -> Any:
    with grpc.insecure_channel(server.grpc_url) as channel:
        return rpc(channel)


def submit_job(server: ServerProcess, request: Any, metadata: Metadata = ALICE) -> tuple[Any, dict[str, str]]:
    """The JobTicket and the trailing metadata."""

    def rpc(channel: grpc.Channel) -> tuple[Any, dict[str, str]]:
        ticket, state = jobs_grpc.AsyncInferenceServiceStub(channel).SubmitInfer.with_call(
            request, metadata=metadata, timeout=10
        )
        return ticket, dict(state.trailing_metadata())

    result: tuple[Any, dict[str, str]] = call(server, rpc)
    return result


def get_job(server: ServerProcess, job_id: str, metadata: Metadata = ALICE) -> Any:
    request = jobs.GetJobRequest(id=job_id)
    return call(
        server,
        lambda c: jobs_grpc.AsyncInferenceServiceStub(c).GetJob(request, metadata=metadata, timeout=10),
    )


def finished_job(server: ServerProcess, job_id: str, metadata: Metadata = ALICE, timeout: float = 30) -> Any:
    """The Job once done or failed (polled with GetJob; never a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        found = get_job(server, job_id, metadata)
        if found.status in ("done", "failed"):
            return found
        assert time.monotonic() < deadline, f"job {job_id} did not finish in {timeout} s: {found}"
        time.sleep(0.02)


def model_infer(server: ServerProcess, request: Any) -> Any:
    return call(server, lambda c: pb_grpc.GRPCInferenceServiceStub(c).ModelInfer(request, timeout=10))


def refusal(rpc: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        rpc()
    error: Any = raised.value
    return error.code(), error.details()


def job_keys(redis_server: RedisServer) -> int:
    return sum(1 for _ in redis_server.client().scan_iter("job:*"))


def string_param(value: str) -> Any:
    return pb.InferParameter(string_param=value)


# --- a job's life -------------------------------------------------------------------------------------------


def test_a_submitted_job_runs_to_the_answer_model_infer_gives(jobs_server: ServerProcess) -> None:
    request = tabular(rows(3, seed=16), request_id="grpc-job-1")
    ticket, trailing = submit_job(jobs_server, request)
    assert len(ticket.id) == 32 and all(c in "0123456789abcdef" for c in ticket.id), ticket
    assert (ticket.status, ticket.model_version) == ("pending", "1"), ticket
    assert trailing["x-model-version"] == "1", trailing
    job = finished_job(jobs_server, ticket.id)
    expected = model_infer(jobs_server, request)
    assert job.status == "done" and job.error == "", job
    assert job.response == expected, (
        f"the job's response must equal ModelInfer's:\n{job.response}\n{expected}"
    )
    assert job.response.id == "grpc-job-1" and len(job.response.raw_output_contents) == 2, job.response
    assert (job.id, job.model_name, job.model_version, job.version_requested, job.attempts) == (
        ticket.id, TABULAR, "1", "1", 1,
    ), job  # fmt: skip
    assert job.created and job.created <= job.started <= job.finished, job
    assert not job.HasField("callback"), "no callback was asked for"


def test_typed_contents_requested_outputs_and_the_variant_router(jobs_server: ServerProcess) -> None:
    request = tabular(rows(2, seed=3), version="", raw=False)
    request.outputs.add(name="probabilities")
    ticket, trailing = submit_job(jobs_server, request, (*ALICE, ("x-segment", "enterprise")))
    assert ticket.model_version == "2" == trailing["x-model-version"], "the header route chose version 2"
    job = finished_job(jobs_server, ticket.id)
    request.model_version = "2"
    expected = model_infer(jobs_server, request)
    assert [output.name for output in job.response.outputs] == ["probabilities"], job.response
    assert job.response.raw_output_contents == expected.raw_output_contents, "the same bytes as ModelInfer's"
    assert (job.model_version, job.version_requested) == ("2", ""), job


def test_a_grpc_job_is_the_same_job_over_rest(jobs_server: ServerProcess) -> None:
    import requests

    ticket, _ = submit_job(jobs_server, tabular(rows(1, seed=7)))
    job = finished_job(jobs_server, ticket.id)
    document = requests.get(f"{jobs_server.base}/v2/jobs/{ticket.id}", headers=dict(ALICE), timeout=10).json()
    assert (document["status"], document["created"], document["finished"]) == (
        "done",
        job.created,
        job.finished,
    )
    probabilities = np.frombuffer(job.response.raw_output_contents[1], dtype="<f4")
    by_name = {output["name"]: output for output in document["response"]["outputs"]}
    assert by_name["probabilities"]["data"] == probabilities.tolist(), "REST shows the same result"


def test_a_callback_named_in_the_metadata_arrives_signed(
    jobs_server: ServerProcess, receiver: ReceiverThread
) -> None:
    hook = f"{receiver.origin}/grpc-hook"
    ticket, _ = submit_job(jobs_server, doubler(), (*ALICE, ("x-callback-url", hook)))
    wait_until(lambda: receiver.to("/grpc-hook"), 30, "the callback did not arrive")
    [request] = receiver.to("/grpc-hook")
    timestamp = request.headers["x-signature-timestamp"]
    assert request.headers["x-signature"] == independent_signature(KEY, timestamp, request.body), "signed"
    document = json.loads(request.body)
    assert (document["id"], document["status"], document["response"]["outputs"][0]["data"]) == (
        ticket.id, "done", [2.0, 4.0, 6.0, 8.0],
    ), document  # fmt: skip
    wait_until(lambda: get_job(jobs_server, ticket.id).callback.status == "delivered", 30, "not recorded")
    callback = get_job(jobs_server, ticket.id).callback
    assert (callback.url, callback.attempts, callback.detail) == (
        hook,
        1,
        "delivered on attempt 1 (HTTP 204)",
    )


def test_a_submit_is_logged_as_an_accepted_grpc_request(jobs_server: ServerProcess) -> None:
    ticket, _ = submit_job(jobs_server, doubler(), (*ALICE, ("x-request-id", "grpc-submit-17")))

    def lines() -> list[dict[str, Any]]:
        return [e for e in access_events(jobs_server, "request") if e["request_id"] == "grpc-submit-17"]

    wait_until(lines, 10, "no access-log line for the submit")
    [line] = lines()
    assert (line["protocol"], line["status"], line["outcome"], line["model"], line["caller"]) == (
        "grpc", "OK", "accepted", "doubler", "alice",
    ), line  # fmt: skip
    [submitted] = [e for e in access_events(jobs_server, "job_submitted") if e["job_id"] == ticket.id]
    assert (submitted["request_id"], submitted["callback"]) == ("grpc-submit-17", False), submitted


# --- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "metadata", "code", "message"),
    [
        (pb.ModelInferRequest(model_name="nope"), ALICE, grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
        (
            pb.ModelInferRequest(model_name="doubler", model_version="9"), ALICE, grpc.StatusCode.NOT_FOUND,
            "version '9'",
        ),
        (doubler([1.0, 2.0]), ALICE, grpc.StatusCode.INVALID_ARGUMENT, "needs 4 elements"),
        (pb.ModelInferRequest(model_name="doubler"), ALICE, grpc.StatusCode.INVALID_ARGUMENT, "input"),
        (
            doubler(callback_url=string_param("https://evil.example.com/")), ALICE,
            grpc.StatusCode.INVALID_ARGUMENT, "'evil.example.com' is not an allowed callback host",
        ),
        (
            doubler(callback_url=pb.InferParameter(int64_param=1)), ALICE, grpc.StatusCode.INVALID_ARGUMENT,
            "request parameter 'callback_url' must be a string_param (a URL)",
        ),
        (
            doubler(callback_url=string_param("http://127.0.0.1:1/a")),
            (*ALICE, ("x-callback-url", "http://127.0.0.1:1/b")), grpc.StatusCode.INVALID_ARGUMENT,
            "the callback URL is given twice, differently",
        ),
    ],
)  # fmt: skip
def test_a_bad_submit_is_refused_with_its_status_and_nothing_is_queued(
    jobs_server: ServerProcess, redis_server: RedisServer, request_: Any, metadata: Metadata,
    code: grpc.StatusCode, message: str,
) -> None:  # fmt: skip
    keys = job_keys(redis_server)
    got, details = refusal(lambda: submit_job(jobs_server, request_, metadata))
    assert (got, message in details) == (code, True), f"{got}: {details!r}, wanted {code}: {message!r}"
    assert job_keys(redis_server) == keys, "a refused job leaves no record"


@pytest.mark.parametrize("job_id", ["0" * 32, "not-an-id", ""])
def test_an_unknown_job_is_not_found(jobs_server: ServerProcess, job_id: str) -> None:
    code, details = refusal(lambda: get_job(jobs_server, job_id))
    assert (code, details) == (
        grpc.StatusCode.NOT_FOUND, "no job with this id: unknown, or finished and expired",
    ), details  # fmt: skip


def test_another_callers_job_is_not_found(jobs_server: ServerProcess) -> None:
    ticket, _ = submit_job(jobs_server, doubler(), ALICE)
    code, details = refusal(lambda: get_job(jobs_server, ticket.id, BOB))
    assert code == grpc.StatusCode.NOT_FOUND, f"another caller's job is not revealed: {code} {details}"
    assert get_job(jobs_server, ticket.id, ALICE).id == ticket.id, "its own caller sees it"


def test_a_full_queue_is_resource_exhausted_and_callbacks_not_configured_unimplemented(
    tmp_path: Path, test_repository: Path, redis_server: RedisServer
) -> None:
    server = start_async_server(test_repository, tmp_path, redis_server, f"full-{time.monotonic_ns()}",
                                async_max_queued=1)  # fmt: skip
    try:
        submit_job(server, doubler(), ())
        code, details = refusal(lambda: submit_job(server, doubler(), ()))
        full = "the job queue is full (1 jobs waiting or running); retry later"
        assert (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, full), details
        with_callback = doubler(callback_url=string_param("https://hooks.example.com/"))
        code, details = refusal(lambda: submit_job(server, with_callback, ()))
        assert (code, details) == (
            grpc.StatusCode.UNIMPLEMENTED,
            "callbacks are not configured on this server",
        )
    finally:
        assert server.stop() == 0, server.stderr()


def test_without_a_queue_both_rpcs_are_unimplemented(server: ServerProcess) -> None:
    not_configured = (grpc.StatusCode.UNIMPLEMENTED, "asynchronous inference is not configured")
    assert refusal(lambda: submit_job(server, doubler(), ())) == not_configured
    assert refusal(lambda: get_job(server, "0" * 32, ())) == not_configured


def test_with_redis_down_both_rpcs_are_unavailable(tmp_path: Path, test_repository: Path) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    server = start_server(test_repository, tmp_path, env={"SERVING_ASYNC_REDIS_URL": down})
    try:
        for rpc in (lambda: submit_job(server, doubler(), ()), lambda: get_job(server, "0" * 32, ())):
            code, details = refusal(rpc)
            assert code == grpc.StatusCode.UNAVAILABLE, details
            assert details.startswith("the job queue is unavailable (") and details.endswith("retry later"), (
                details
            )
        assert model_infer(server, doubler()).model_name == "doubler", "live inference goes on"
    finally:
        assert server.stop() == 0, server.stderr()


# --- the auth gate ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path, redis_server: RedisServer
) -> Iterator[ServerProcess]:
    with JwksServer(jwks(RSA)).running() as issuer:
        process = start_async_server(
            test_repository, tmp_path_factory.mktemp("grpc-jobs-secured"), redis_server,
            f"secured-{time.monotonic_ns()}", async_worker=True, auth_mode="jwt", auth_jwks_url=issuer.url,
            auth_issuer=ISSUER, auth_audiences=AUDIENCE,
        )  # fmt: skip
        yield process
        assert process.stop() == 0, process.stderr()


def bearer(subject: str, scope: str = "models:doubler:infer") -> Metadata:
    return (("authorization", f"Bearer {sign(RSA, claims(subject=subject, scope=scope))}"),)


def test_the_auth_gate_guards_submit_and_get_as_it_guards_rest(secured: ServerProcess) -> None:
    code, _ = refusal(lambda: submit_job(secured, doubler(), ()))
    assert code == grpc.StatusCode.UNAUTHENTICATED, "no token"
    code, details = refusal(lambda: submit_job(secured, doubler(), bearer("alice", "models:other:infer")))
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    ticket, _ = submit_job(secured, doubler(), bearer("alice"))
    assert finished_job(secured, ticket.id, bearer("alice")).status == "done"
    code, _ = refusal(lambda: get_job(secured, ticket.id, ()))
    assert code == grpc.StatusCode.UNAUTHENTICATED, "reading a job needs a token too"
    code, _ = refusal(lambda: get_job(secured, ticket.id, bearer("alice", "models:other:infer")))
    assert code == grpc.StatusCode.PERMISSION_DENIED, "and the model's infer scope"
    code, _ = refusal(lambda: get_job(secured, ticket.id, bearer("bob")))
    assert code == grpc.StatusCode.NOT_FOUND, "another subject's job is not revealed"


def test_the_generated_client_and_the_server_agree_on_the_service(jobs_server: ServerProcess) -> None:
    """The method paths the server registers are the ones the generated stub calls."""
    from serving_image.grpc_jobs import SERVICE

    service = jobs.DESCRIPTOR.services_by_name["AsyncInferenceService"]
    assert f"/{service.full_name}/" == SERVICE, SERVICE
    assert [method.name for method in service.methods] == ["SubmitInfer", "GetJob"], service.methods
    assert service.methods_by_name["SubmitInfer"].input_type.full_name == "inference.ModelInferRequest"
    response: Any = service.methods_by_name["GetJob"].output_type.fields_by_name["response"]
    assert response.message_type.full_name == "inference.ModelInferResponse", response.message_type


# --- the conversions, in-process ----------------------------------------------------------------------------


def test_a_stored_response_becomes_raw_contents_as_model_infer_sends_them() -> None:
    stored = json.dumps({
        "model_name": "m", "model_version": "3", "id": "r1", "outputs": [
            {"name": "p", "datatype": "FP32", "shape": [1, 3], "data": [0.5, None, -1.25]},
            {"name": "n", "datatype": "INT64", "shape": [3], "data": [1, -2, 2**62]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "été"]},
            {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ],
    }).encode()  # fmt: skip
    message = response_message(stored)
    assert (message.model_name, message.model_version, message.id) == ("m", "3", "r1"), message
    shapes = [(output.name, output.datatype, list(output.shape)) for output in message.outputs]
    assert shapes == [("p", "FP32", [1, 3]), ("n", "INT64", [3]), ("s", "BYTES", [2]), ("b", "BOOL", [2])]
    p, n, s, b = message.raw_output_contents
    floats = np.frombuffer(p, dtype="<f4")
    assert floats[0] == 0.5 and np.isnan(floats[1]) and floats[2] == -1.25, f"JSON's null is NaN: {floats}"
    assert np.frombuffer(n, dtype="<i8").tolist() == [1, -2, 2**62], n
    assert s == b"\x01\x00\x00\x00a" + b"\x05\x00\x00\x00" + "été".encode(), s
    assert b == b"\x01\x00", b


def test_a_job_body_decodes_to_the_request_it_was_made_from() -> None:
    request = InferRequest(
        model="m", version=None, id="req-7", outputs=[RequestedOutput("y")],
        inputs=[
            InputTensor("x", "FP32", (2, 2), np.array([[1.5, -2], [3, 4e-7]], dtype=np.float32)),
            InputTensor("t", "BYTES", (2,), np.array(["a", "été"], dtype=object)),
        ],
    )  # fmt: skip
    body, header_length = job_body(request)
    decoded = decode_infer_request("m", None, body, header_length)
    assert (decoded.id, [output.name for output in decoded.outputs or []]) == ("req-7", ["y"]), decoded
    x, t = decoded.inputs
    assert (x.name, x.datatype, x.shape) == ("x", "FP32", (2, 2)), x
    assert x.data.tobytes() == request.inputs[0].data.tobytes(), "the floats' bytes are kept exactly"
    assert (t.name, t.datatype, t.shape) == ("t", "BYTES", (2,)), t
    assert [item.decode() if isinstance(item, bytes) else item for item in t.data.tolist()] == ["a", "été"]
