"""Object-store references end to end: server processes on a directory store and a real redis-server.

A job may carry its request as an object in the store (the request parameter ``input_ref``), and a
result larger than ``async_inline_result_bytes`` is written to the store, the job naming it by
``response_ref``. The store server here allows requests of 4 KiB only and objects of 64 KiB, so a
referenced input larger than any request it would take still runs.
"""

import asyncio
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests

from serving_image.access_log import AccessLog
from serving_image.job_callback_dispatch import CallbackDispatch
from serving_image.job_callbacks import CallbackOutcome, CallbackPolicy, CallbackSender, parse_allowed_hosts
from serving_image.job_queue import Done, JobQueue, NewJob
from serving_image.proto import async_inference_pb2 as jobs_pb
from serving_image.proto import async_inference_pb2_grpc as jobs_grpc
from serving_image.proto import grpc_predict_v2_pb2 as pb
from serving_image.settings import Settings
from tests.serving_image.async_jobs import (
    TABULAR,
    access_events,
    async_body,
    finished,
    infer_body,
    rows,
    start_async_server,
    submit,
    submitted,
)
from tests.serving_image.conftest import ServerProcess, wait_until_async
from tests.serving_image.redis_fixture import RedisServer

INLINE_BYTES = 512
MAX_OBJECT_BYTES = 65536
MAX_REQUEST_BYTES = 4096


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    (root / "inputs").mkdir()
    return root


@pytest.fixture(scope="module")
def stream() -> str:
    return f"refs-{os.urandom(4).hex()}"


@pytest.fixture(scope="module")
def store_server(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path, redis_server: RedisServer, store: Path,
    stream: str,
) -> Iterator[ServerProcess]:  # fmt: skip
    """Takes and runs jobs, with the directory ``store`` as its object store."""
    process = start_async_server(
        test_repository, tmp_path_factory.mktemp("refs-server"), redis_server, stream, async_worker=True,
        async_visibility_timeout_s=5, async_object_store=f"file://{store}",
        async_inline_result_bytes=INLINE_BYTES, async_max_object_bytes=MAX_OBJECT_BYTES,
        max_request_bytes=MAX_REQUEST_BYTES,
    )  # fmt: skip
    yield process
    assert process.stop() == 0, f"the server did not drain cleanly: {process.stderr()}"


@pytest.fixture(scope="module")
def plain_server(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path, redis_server: RedisServer
) -> Iterator[ServerProcess]:
    """Async inference without an object store, and the default request limit (for live answers)."""
    process = start_async_server(
        test_repository, tmp_path_factory.mktemp("plain-server"), redis_server, f"plain-{os.urandom(4).hex()}"
    )
    yield process
    assert process.stop() == 0, f"the server did not drain cleanly: {process.stderr()}"


def put_input(store: Path, name: str, content: bytes | dict[str, Any]) -> str:
    """Write an object under the store's inputs/ and return its URL."""
    path = store / "inputs" / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return f"file://{store}/inputs/{name}"


def by_reference(url: object, **extra: Any) -> dict[str, Any]:
    return {"parameters": {"async": True, "input_ref": url}, **extra}


def assert_same_response(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Two V2 responses of the same rows: equal but for float rounding (batches may differ)."""
    assert {k: v for k, v in got.items() if k != "outputs"} == {
        k: v for k, v in want.items() if k != "outputs"
    }, (got, want)
    by_name = {output["name"]: output for output in want["outputs"]}
    for output in got["outputs"]:
        expected = by_name.pop(output["name"])
        assert {k: v for k, v in output.items() if k != "data"} == {
            k: v for k, v in expected.items() if k != "data"
        }, output["name"]
        np.testing.assert_allclose(output["data"], expected["data"], rtol=1e-6, err_msg=output["name"])
    assert not by_name, f"outputs missing: {sorted(by_name)}"


def test_a_job_by_reference_completes_with_the_result_of_the_same_job_inline(
    store_server: ServerProcess, store: Path
) -> None:
    data = rows(3, seed=11)
    url = put_input(store, "three.json", infer_body(data, id="three"))
    by_ref = submitted(submit(store_server, TABULAR, by_reference(url, id="submit-1"), version="1"))
    inline = submitted(submit(store_server, TABULAR, async_body(data, id="three"), version="1"))
    preferred = submit(
        store_server, TABULAR, {"parameters": {"input_ref": url}}, "1", {"prefer": "respond-async"}
    )
    documents = [finished(store_server, job_id) for job_id in (by_ref, inline, submitted(preferred))]
    for document in documents:
        assert document["status"] == "done" and document["attempts"] == 1, document
        assert "response_ref" not in document, "a small result stays inline"
    referenced, in_line, by_header = documents
    assert referenced["input_ref"] == url == by_header["input_ref"], referenced
    assert "input_ref" not in in_line, in_line
    assert referenced["response"]["id"] == "three", "the response is the referenced request's"
    assert_same_response(referenced["response"], in_line["response"])
    assert_same_response(by_header["response"], in_line["response"])
    submitted_lines = {line["job_id"]: line for line in access_events(store_server, "job_submitted")}
    assert submitted_lines[by_ref]["request_id"] == "submit-1", "the submit's id is its request id"


def test_a_large_input_by_reference_runs_and_its_large_result_lands_in_the_store(
    store_server: ServerProcess, plain_server: ServerProcess, store: Path, redis_server: RedisServer
) -> None:
    data = rows(60, seed=12)
    body = infer_body(data, id="sixty")
    url = put_input(store, "sixty.json", body)
    assert MAX_REQUEST_BYTES < (store / "inputs" / "sixty.json").stat().st_size <= MAX_OBJECT_BYTES
    too_large = submit(store_server, TABULAR, async_body(data, id="sixty"), version="1")
    assert too_large.status_code == 413, "inline, the same input is over the request limit"
    job_id = submitted(submit(store_server, TABULAR, by_reference(url), version="1"))
    document = finished(store_server, job_id)
    assert document["status"] == "done", document
    result = store / "results" / f"{job_id}.json"
    assert document["response_ref"] == f"file://{result}", document
    assert "response" not in document, "a large result is named, not inlined"
    content = result.read_bytes()
    assert len(content) > INLINE_BYTES, len(content)
    live = requests.post(f"{plain_server.base}/v2/models/{TABULAR}/versions/1/infer", json=body, timeout=10)
    assert live.status_code == 200, live.text
    assert_same_response(json.loads(content), live.json())
    stored = redis_server.client().hgetall(f"job:{job_id}")
    assert b"result" not in stored and stored[b"response_ref"] == f"file://{result}".encode(), stored


def grpc_submit(server: ServerProcess, request: Any) -> Any:
    with grpc.insecure_channel(server.grpc_url) as channel:
        return jobs_grpc.AsyncInferenceServiceStub(channel).SubmitInfer(request, timeout=10)


def grpc_job(server: ServerProcess, job_id: str) -> tuple[Any, dict[str, str]]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        job, call = jobs_grpc.AsyncInferenceServiceStub(channel).GetJob.with_call(
            jobs_pb.GetJobRequest(id=job_id), timeout=10
        )
    return job, dict(call.trailing_metadata())


def grpc_reference(url: str) -> Any:
    request = pb.ModelInferRequest(model_name=TABULAR, model_version="1", id="grpc-ref")
    request.parameters["input_ref"].string_param = url
    return request


def test_a_job_by_reference_over_grpc_names_its_large_result_in_response_ref(
    store_server: ServerProcess, store: Path
) -> None:
    url = put_input(store, "sixty-grpc.json", infer_body(rows(60, seed=13), id="sixty"))
    ticket = grpc_submit(store_server, grpc_reference(url))
    document = finished(store_server, ticket.id)
    assert document["status"] == "done" and document["input_ref"] == url, document
    job, _ = grpc_job(store_server, ticket.id)
    assert job.status == "done" and not job.HasField("response"), job
    assert job.response_ref == document["response_ref"], job
    assert json.loads((store / "results" / f"{ticket.id}.json").read_bytes())["id"] == "sixty"


OUTSIDE = [
    ("file:///elsewhere/inputs/x.json", "is outside the object store's inputs (file://{store}/inputs/)"),
    ("file://{store}/results/x.json", "is outside the object store's inputs (file://{store}/inputs/)"),
    (
        "s3://jobs-bucket/inputs/x.json",
        "must be a file:// URL inside the object store file://{store} (its scheme is s3)",
    ),
    ("file://{store}/inputs/../results/x.json", "its key has an empty, '.' or '..' path segment"),
]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        *(
            (by_reference(url), f"input_ref '{url}' {reason}".replace("' its", "': its"))
            for url, reason in OUTSIDE
        ),
        (by_reference(42), "request parameter 'input_ref' must be a string (a URL)"),
        (
            by_reference("file://{store}/inputs/three.json", inputs=[]),
            "a request with 'input_ref' has no 'inputs': the object it names holds them",
        ),
        (
            {"parameters": {"input_ref": "file://{store}/inputs/three.json"}},
            "request parameter 'input_ref' is for asynchronous jobs: add \"async\": true or the header "
            "Prefer: respond-async",
        ),
    ],
)
def test_a_bad_reference_is_refused_at_submit_naming_the_problem_and_nothing_is_queued(
    store_server: ServerProcess, store: Path, redis_server: RedisServer, stream: str, body: dict[str, Any],
    reason: str,
) -> None:  # fmt: skip
    filled = json.loads(json.dumps(body).replace("{store}", str(store)))
    before = redis_server.client().xlen(stream)
    answer = submit(store_server, TABULAR, filled, version="1")
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": reason.replace("{store}", str(store))}, answer.json()
    assert redis_server.client().xlen(stream) == before, "a refused job is not queued"


def test_a_reference_to_a_server_without_a_store_is_refused_over_rest_and_grpc(
    plain_server: ServerProcess, store: Path
) -> None:
    url = f"file://{store}/inputs/three.json"
    answer = submit(plain_server, TABULAR, by_reference(url), version="1")
    assert (answer.status_code, answer.json()) == (
        400,
        {"error": "object-store references are not configured"},
    ), answer.text
    with pytest.raises(grpc.RpcError) as raised:
        grpc_submit(plain_server, grpc_reference(url))
    error: Any = raised.value
    code, details = error.code(), error.details()
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "object-store references are not configured")


def test_a_bad_reference_over_grpc_is_invalid_argument_naming_the_problem(
    store_server: ServerProcess, store: Path
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        grpc_submit(store_server, grpc_reference("s3://jobs-bucket/inputs/x.json"))
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.details() == (
        f"input_ref 's3://jobs-bucket/inputs/x.json' must be a file:// URL inside the object store "
        f"file://{store} (its scheme is s3)"
    ), error.details()
    request = grpc_reference(f"file://{store}/inputs/three.json")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 30])
    with pytest.raises(grpc.RpcError) as raised:
        grpc_submit(store_server, request)
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.details() == "a request with 'input_ref' has no inputs: the object it names holds them"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("absent.json", None, "input_ref: no object at {url}"),
        (
            "huge.json",
            b" " * MAX_OBJECT_BYTES + b"{}",
            f"input_ref: the object at {{url}} is {MAX_OBJECT_BYTES + 2} bytes, over the limit of "
            f"{MAX_OBJECT_BYTES} bytes",
        ),
        ("garbled.json", b"{not json", "input_ref {url}: malformed JSON: "),
        (
            "wrong-input.json",
            json.dumps(infer_body(rows(1), name="nope")).encode(),
            "input_ref {url}: unknown input 'nope'",
        ),
    ],
)
def test_an_unusable_referenced_input_fails_the_job_at_once_with_the_reason(
    store_server: ServerProcess, store: Path, redis_server: RedisServer, stream: str, name: str,
    content: bytes | None, reason: str,
) -> None:  # fmt: skip
    url = f"file://{store}/inputs/{name}"
    if content is not None:
        put_input(store, name, content)
    job_id = submitted(submit(store_server, TABULAR, by_reference(url), version="1"))
    document = finished(store_server, job_id)
    assert document["status"] == "failed", document
    assert document["error"].startswith(reason.format(url=url)), document["error"]
    assert document["attempts"] == 1, "the client's object is not tried again"
    entries: Any = redis_server.client().xrange(f"{stream}:dead")
    dead = [fields for _, fields in entries if fields[b"id"] == job_id.encode()]
    assert len(dead) == 1 and dead[0][b"input_ref"] == url.encode(), dead
    runs = [line for line in access_events(store_server, "request") if line.get("request_id") == job_id]
    assert runs and runs[-1]["status"] in (400, 404, 413), runs


class RecordingSender(CallbackSender):
    """A sender that keeps the documents it is given and reports each delivered."""

    def __init__(self) -> None:
        super().__init__(CallbackPolicy(parse_allowed_hosts("hooks.example.com"), b"k" * 32))
        self.documents: list[bytes] = []

    async def send(self, url: str, document: bytes, on_attempt: Callable[[int], None] | None = None) -> Any:
        self.documents.append(document)
        return CallbackOutcome(True, 1, 204, "HTTP 204")


def test_a_callback_names_a_result_in_the_store_as_get_does(
    redis_server: RedisServer, job_stream: str
) -> None:
    url = "file:///srv/store/results/x.json"

    async def test() -> list[bytes]:
        queue = JobQueue.connect(Settings(async_redis_url=redis_server.url, async_stream=job_stream))
        try:
            await queue.ensure_group()
            for _ in range(2):
                await queue.submit(
                    NewJob("doubler", "1", None, b"{}", None, None, "r1", "https://hooks.example.com/")
                )
            by_ref, inline = await queue.read("c1", 2, 1000)
            await queue.begin([by_ref, inline], "c1")
            await queue.complete([
                (by_ref, Done(b"", "1", response_ref=url)), (inline, Done(b'{"outputs": []}', "1")),
            ])  # fmt: skip
            sender = RecordingSender()
            dispatch = CallbackDispatch(queue, None, AccessLog(io.BytesIO()), sender=sender)
            dispatch.start("c1")
            await wait_until_async(lambda: dispatch.counts["delivered"] == 2, 10, "both callbacks sent")
            assert await dispatch.stop(10) == 0, "both sent"
            return sender.documents
        finally:
            await queue.close()

    documents = {json.loads(document)["id"]: json.loads(document) for document in asyncio.run(test())}
    assert len(documents) == 2, documents
    by_ref, inline = sorted(documents.values(), key=lambda document: "response" in document)
    assert by_ref["response_ref"] == url and "response" not in by_ref, by_ref
    assert inline["response"] == {"outputs": []} and "response_ref" not in inline, inline
