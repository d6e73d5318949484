"""Hostile input over REST (raw sockets, tritonclient) and gRPC (tritonclient's stubs).

Every case states the status it must get and words its JSON error (or gRPC details) must
contain: a rejection is always a 4xx naming the problem, never a 5xx, a plain-text body or a
stalled server. The limits are the defaults except those the server fixture sets.
"""

import gzip
import http.client
import json
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.serving_image.conftest import (
    ServerProcess,
    doubler_graph,
    save_model,
    start_server,
    wait_until,
    write_config,
)

LIMIT_BYTES = 200_000
TIMEOUT_SECONDS = 1


def identity_graph(datatype: int, width: int) -> Any:
    """y = x for x of shape [batch, width]: a model whose input has the given element type."""
    return helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", datatype, ["batch", width])],
        [helper.make_tensor_value_info("y", datatype, ["batch", width])],
    )


@pytest.fixture(scope="module")
def hostile_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-repository")
    save_model(doubler_graph(), root / "doubler" / "1" / "model.onnx")
    write_config(root / "doubler", "max_batch_size: 8\n")
    save_model(identity_graph(TensorProto.INT8, 2), root / "ints" / "1" / "model.onnx")
    save_model(identity_graph(TensorProto.BOOL, 2), root / "flags" / "1" / "model.onnx")
    save_model(identity_graph(TensorProto.STRING, 2), root / "texts" / "1" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def hostile(hostile_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        hostile_repository, tmp_path_factory.mktemp("hostile-logs"),
        "--max-request-bytes", str(LIMIT_BYTES), "--header-timeout-seconds", str(TIMEOUT_SECONDS),
        "--body-timeout-seconds", str(TIMEOUT_SECONDS),
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.stderr()


# -- raw HTTP ---------------------------------------------------------------------------------------


def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read one response: status, headers (lower-case) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def infer(document: object, model: str = "doubler", **headers: str) -> bytes:
    return request("POST", f"/v2/models/{model}/infer", json.dumps(document).encode(), **headers)


def tensor(data: object, shape: object = (1, 4), datatype: str = "FP32", name: str = "x") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


GOOD = tensor([1.0, 2.0, 3.0, 4.0])
HEADER_JSON = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
).encode()


def binary(header: bytes, payload: bytes, declared: int | str | None = None) -> bytes:
    length = str(len(header) if declared is None else declared)
    return request(
        "POST", "/v2/models/doubler/infer", header + payload, **{"Inference-Header-Content-Length": length}
    )


def compressed(body: bytes, encoding: str) -> bytes:
    return request("POST", "/v2/models/doubler/infer", body, **{"Content-Encoding": encoding})


GOOD_BODY = json.dumps(GOOD).encode()

# (case, raw request, status, words in the JSON error)
PARSER_CASES: list[tuple[str, bytes, int, str]] = [
    ("garbage", b"GARBAGE\r\n\r\n", 400, "malformed HTTP request"),
    ("binary-noise", bytes(range(256)) * 4, 400, "malformed HTTP request"),
    ("bad-version", b"GET /v2 HTTP/9.9\r\nHost: t\r\n\r\n", 400, "malformed HTTP request"),
    ("header-no-colon", b"GET /v2 HTTP/1.1\r\nHost t\r\n\r\n", 400, "malformed HTTP request"),
    ("space-before-colon", b"GET /v2 HTTP/1.1\r\nHost : t\r\n\r\n", 400, "malformed HTTP request"),
    ("nul-in-header", b"GET /v2 HTTP/1.1\r\nHost: t\x00x\r\n\r\n", 400, "malformed HTTP request"),
    ("bare-cr", b"GET /v2 HTTP/1.1\rHost: t\r\n\r\n", 400, "malformed HTTP request"),
    ("cl-not-number", b"POST /v2 HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400, "malformed HTTP request"),
    ("cl-negative", b"POST /v2 HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "malformed HTTP request"),
    (
        "cl-twice",
        b"POST /v2 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
        "malformed HTTP request",
    ),
    (
        "cl-and-chunked",
        b"POST /v2 HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "malformed HTTP request",
    ),
    (
        "bad-chunk-size",
        b"POST /v2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        400,
        "malformed HTTP request",
    ),
    (
        "chunk-size-overflow",
        b"POST /v2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        400,
        "malformed HTTP request",
    ),
    ("url-too-long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "request target exceeds 8192 bytes"),
    (
        "header-too-big",
        b"GET /v2 HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        431,
        "request headers exceed",
    ),
    (
        "header-megabyte-no-end",
        b"GET /v2 HTTP/1.1\r\nX-Big: " + b"a" * 1_000_000,
        431,
        "request headers exceed",
    ),
    (
        "headers-too-many",
        b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(101)) + b"\r\n",
        431,
        "more than 100 request header fields",
    ),
    (
        "headers-sum-too-big",
        b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"v" * 400) for n in range(50)) + b"\r\n",
        431,
        "request headers exceed 16384 bytes",
    ),
    (
        "body-over-limit-declared",
        b"POST /v2/models/doubler/infer HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
        413,
        "exceeds the limit of 200000 bytes",
    ),
    (
        "body-over-limit-chunked",
        b"POST /v2/models/doubler/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"8000\r\n" + b" " * 0x8000 + b"\r\n" for _ in range(8))
        + b"0\r\n\r\n",
        413,
        "exceeds the limit of 200000 bytes",
    ),
]

ROUTING_CASES: list[tuple[str, bytes, int, str]] = [
    ("unknown-path", request("GET", "/v3"), 404, "no endpoint at /v3"),
    ("unknown-model", infer(GOOD, model="nope"), 404, "unknown model 'nope'"),
    ("encoded-slash-model", infer(GOOD, model="doubler%2F..%2Fx"), 404, "unknown model 'doubler/../x'"),
    (
        "encoded-slash-ready",
        request("GET", "/v2/models/doubler%2Fready"),
        404,
        "unknown model 'doubler/ready'",
    ),
    ("encoded-slash-version", request("GET", "/v2/models/doubler/versions/1%2F2"), 404, "no version '1/2'"),
    (
        "unknown-version",
        request("POST", "/v2/models/doubler/versions/9/infer", GOOD_BODY),
        404,
        "no version '9'",
    ),
    ("bad-infer-path", request("POST", "/v2/models/doubler/x/1/infer", GOOD_BODY), 404, "no endpoint"),
    ("delete-model", request("DELETE", "/v2/models/doubler"), 405, "method DELETE not allowed"),
    ("put-infer", request("PUT", "/v2/models/doubler/infer", GOOD_BODY), 405, "method PUT not allowed"),
    (
        "feedback-unknown-model",
        request("POST", "/v2/models/nope/feedback", b'{"version":"1","value":1}'),
        404,
        "unknown model 'nope'",
    ),
    ("feedback-malformed", request("POST", "/v2/models/doubler/feedback", b"{"), 400, "malformed JSON"),
    (
        "feedback-extra-field",
        request("POST", "/v2/models/doubler/feedback", b'{"version":"1","value":1,"x":1}'),
        400,
        "unknown feedback field",
    ),
    (
        "feedback-client-id",
        request("POST", "/v2/models/doubler/feedback", b'{"request_id":"mine","value":1}'),
        404,
        "no request 'mine'",
    ),
]

RANK_17 = [1] * 17
BODY_CASES: list[tuple[str, object, int, str]] = [
    ("not-object", [1, 2], 400, "must be a JSON object"),
    ("no-inputs", {}, 400, "'inputs' must be a non-empty list"),
    ("inputs-empty", {"inputs": []}, 400, "'inputs' must be a non-empty list"),
    ("inputs-object", {"inputs": {"x": 1}}, 400, "'inputs' must be a non-empty list"),
    ("input-not-object", {"inputs": [1]}, 400, "each input must be a JSON object"),
    (
        "input-no-name",
        {"inputs": [{"shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        400,
        "no 'name'",
    ),
    (
        "input-name-number",
        {"inputs": [{"name": 1, "shape": [1], "datatype": "FP32", "data": [1]}]},
        400,
        "no 'name'",
    ),
    (
        "no-datatype",
        {"inputs": [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
        400,
        "missing 'datatype'",
    ),
    ("datatype-number", tensor([1, 2, 3, 4], datatype=5), 400, "missing 'datatype'"),  # type: ignore[arg-type]
    ("unknown-datatype", tensor([1, 2, 3, 4], datatype="FP128"), 400, "unknown datatype 'FP128'"),
    ("wrong-datatype", tensor([1, 2, 3, 4], datatype="INT64"), 400, "does not match the model's FP32"),
    (
        "shape-missing",
        {"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]},
        400,
        "shape must be a list",
    ),
    ("shape-string", tensor([1, 2, 3, 4], shape="1,4"), 400, "shape must be a list"),
    ("shape-negative", tensor([1, 2, 3, 4], shape=[1, -4]), 400, "non-negative integers"),
    ("shape-float", tensor([1, 2, 3, 4], shape=[1, 4.0]), 400, "non-negative integers"),
    ("shape-bool", tensor([1, 2, 3, 4], shape=[True, 4]), 400, "non-negative integers"),
    ("shape-null", tensor([1, 2, 3, 4], shape=[None, 4]), 400, "non-negative integers"),
    ("rank-17", tensor([1], shape=RANK_17), 400, "17 dimensions, the limit is 16"),
    ("rank-65", tensor([1], shape=[1] * 65), 400, "65 dimensions, the limit is 16"),
    ("rank-20000", tensor([1], shape=[1] * 20_000), 400, "20000 dimensions, the limit is 16"),
    ("huge-dims", tensor([1], shape=[10**9] * 16), 413, "exceeds the limit of 4194304 elements"),
    ("dim-beyond-int64", tensor([1], shape=[1, 2**64]), 400, "non-negative integers"),
    ("number-beyond-double", tensor([1], shape=[1, 10**400]), 400, "malformed JSON: number is infinity"),
    ("elements-over-limit", tensor([], shape=[4, 2**21]), 413, "exceeds the limit of 4194304 elements"),
    ("wrong-rank", tensor([1, 2, 3, 4], shape=[4]), 400, "has rank 1, the model expects rank 2"),
    ("wrong-dimension", tensor([1, 2, 3, 4, 5], shape=[1, 5]), 400, "dimension 1 is 5, the model expects 4"),
    ("unknown-input", tensor([1, 2, 3, 4], name="y"), 400, "unknown input 'y'"),
    ("duplicate-input", {"inputs": GOOD["inputs"] * 2}, 400, "given more than once"),
    ("batch-zero", tensor([], shape=[0, 4]), 400, "the batch dimension is 0"),
    ("batch-over-max", tensor([0.0] * 36, shape=[9, 4]), 400, "exceeds the model's max_batch_size 8"),
    ("count-short", tensor([1, 2, 3]), 400, "needs 4 elements, data has 3"),
    ("count-long", tensor([1, 2, 3, 4, 5]), 400, "needs 4 elements, data has 5"),
    ("data-missing", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]}, 400, "neither 'data'"),
    ("data-object", tensor({"a": 1}), 400, "'data' must be a list"),
    ("data-string", tensor("1,2,3,4"), 400, "'data' must be a list"),
    ("fp32-strings", tensor(["1", "2", "3", "4"]), 400, "FP32 data must be numbers, got str '1'"),
    ("fp32-null", tensor([1, None, 3, 4]), 400, "FP32 data must be numbers, got NoneType None"),
    ("fp32-booleans", tensor([True, False, True, False]), 400, "FP32 data must be numbers, got bool True"),
    ("fp32-object", tensor([1, 2, 3, {}]), 400, "FP32 data must be numbers, got dict"),
    ("fp32-overflow", tensor([1e39, 2, 3, 4]), 400, "value 1e+39 is out of range for FP32"),
    ("fp32-nested-too-deep", tensor([[[[1, 2, 3, 4]]]]), 400, "nested deeper than the shape's rank 2"),
    ("fp32-mixed-nesting", tensor([[1, 2], 3, 4]), 400, "mixes lists and values"),
    ("fp32-ragged", tensor([[1, 2, 3], [4, 5]]), 400, "needs 4 elements, data has 5"),
    (
        "int8-float",
        tensor([1.5, 2], shape=[1, 2], datatype="INT8"),
        400,
        "INT8 data must be integers, got float",
    ),
    ("int8-overflow", tensor([300, 2], shape=[1, 2], datatype="INT8"), 400, "out of bounds for int8"),
    (
        "int8-negative-overflow",
        tensor([-129, 2], shape=[1, 2], datatype="INT8"),
        400,
        "out of bounds for int8",
    ),
    (
        "int8-bool",
        tensor([True, 2], shape=[1, 2], datatype="INT8"),
        400,
        "INT8 data must be integers, got bool",
    ),
    (
        "int8-string",
        tensor(["1", 2], shape=[1, 2], datatype="INT8"),
        400,
        "INT8 data must be integers, got str",
    ),
    (
        "int8-bigint",
        tensor([2**70, 1], shape=[1, 2], datatype="INT8"),
        400,
        "INT8 data must be integers, got float",
    ),
    ("bool-ints", tensor([1, 0], shape=[1, 2], datatype="BOOL"), 400, "BOOL data must be true or false"),
    ("bool-strings", tensor(["true", "false"], shape=[1, 2], datatype="BOOL"), 400, "must be true or false"),
    (
        "bytes-numbers",
        tensor([1, 2], shape=[1, 2], datatype="BYTES"),
        400,
        "BYTES data must be strings, got int",
    ),
    ("bytes-null", tensor(["a", None], shape=[1, 2], datatype="BYTES"), 400, "BYTES data must be strings"),
    ("id-number", {**GOOD, "id": 7}, 400, "'id' must be a string"),
    ("parameters-list", {**GOOD, "parameters": []}, 400, "'parameters' must be an object"),
    ("outputs-object", {**GOOD, "outputs": {"name": "y"}}, 400, "'outputs' must be a list"),
    ("output-no-name", {**GOOD, "outputs": [{}]}, 400, "each requested output must be an object"),
    ("output-unknown", {**GOOD, "outputs": [{"name": "z"}]}, 400, "unknown output 'z'"),
    (
        "output-classification",
        {**GOOD, "outputs": [{"name": "y", "parameters": {"classification": 2}}]},
        400,
        "classification extension is not supported",
    ),
]
MODELS = {"int8": "ints", "bool": "flags", "bytes": "texts"}


def _model_for(case: str) -> str:
    return next((model for prefix, model in MODELS.items() if case.startswith(prefix)), "doubler")


ENCODING_CASES: list[tuple[str, bytes, int, str]] = [
    (
        "nan-token",
        request("POST", "/v2/models/doubler/infer", GOOD_BODY.replace(b"1.0", b"NaN")),
        400,
        "malformed JSON",
    ),
    (
        "infinity-token",
        request("POST", "/v2/models/doubler/infer", GOOD_BODY.replace(b"1.0", b"Infinity")),
        400,
        "malformed JSON",
    ),
    ("json-trailing", request("POST", "/v2/models/doubler/infer", GOOD_BODY + b"{}"), 400, "malformed JSON"),
    ("json-bad-utf8", request("POST", "/v2/models/doubler/infer", b'{"id":"\xff"}'), 400, "malformed JSON"),
    (
        "json-deep",
        request("POST", "/v2/models/doubler/infer", b"[" * 5000 + b"]" * 5000),
        400,
        "malformed JSON",
    ),
    (
        "gzip-trailing-garbage",
        compressed(gzip.compress(GOOD_BODY) + b"garbage", "gzip"),
        400,
        "7 bytes follow the end of the gzip data",
    ),
    (
        "gzip-two-members",
        compressed(gzip.compress(GOOD_BODY) * 2, "gzip"),
        400,
        "follow the end of the gzip data",
    ),
    ("gzip-truncated", compressed(gzip.compress(GOOD_BODY)[:-6], "gzip"), 400, "truncated gzip data"),
    ("gzip-not-gzip", compressed(GOOD_BODY, "gzip"), 400, "not valid gzip data"),
    ("deflate-trailing", compressed(zlib.compress(GOOD_BODY) + b"x", "deflate"), 400, "1 bytes follow"),
    (
        "gzip-bomb",
        compressed(gzip.compress(b" " * (LIMIT_BYTES * 50)), "gzip"),
        413,
        "decompressed request body",
    ),
    ("brotli", compressed(GOOD_BODY, "br"), 400, "unsupported Content-Encoding 'br'"),
    ("header-length-word", binary(HEADER_JSON, bytes(16), "ten"), 400, "must be an integer"),
    ("header-length-negative", binary(HEADER_JSON, bytes(16), -1), 400, "outside the body"),
    ("header-length-beyond", binary(HEADER_JSON, bytes(16), 10_000), 400, "outside the body"),
    ("binary-short", binary(HEADER_JSON, bytes(8)), 400, "binary_data_size 16 exceeds the binary data"),
    ("binary-unclaimed", binary(HEADER_JSON, bytes(20)), 400, "4 bytes of binary data are not claimed"),
    (
        "binary-size-negative",
        binary(HEADER_JSON.replace(b"16", b"-1"), bytes(16)),
        400,
        "binary_data_size -1",
    ),
    (
        "binary-size-bool",
        binary(HEADER_JSON.replace(b"16", b"true"), bytes(16)),
        400,
        "binary_data_size True",
    ),
    (
        "binary-size-string",
        binary(HEADER_JSON.replace(b"16", b'"16"'), bytes(16)),
        400,
        "binary_data_size '16'",
    ),
    (
        "binary-rank-70",
        binary(HEADER_JSON.replace(b"[1, 4]", b"[" + b"1, " * 69 + b"4]"), bytes(16)),
        400,
        "70 dimensions, the limit is 16",
    ),
]


def check(response: tuple[int, dict[str, str], bytes], status: int, words: str, case: str) -> None:
    got, headers, body = response
    assert got == status, f"{case}: expected {status}, got {got} {body[:300]!r}"
    assert headers.get("content-type") == "application/json", f"{case}: not JSON: {headers} {body[:200]!r}"
    error = json.loads(body)["error"]
    assert words in error, f"{case}: {error!r} does not name the problem ({words!r})"


@pytest.mark.parametrize(("case", "raw", "status", "words"), PARSER_CASES, ids=[c[0] for c in PARSER_CASES])
def test_what_the_http_parser_refuses_is_a_json_4xx(
    hostile: ServerProcess, case: str, raw: bytes, status: int, words: str
) -> None:
    check(exchange(hostile.http_port, raw), status, words, case)


@pytest.mark.parametrize(("case", "raw", "status", "words"), ROUTING_CASES, ids=[c[0] for c in ROUTING_CASES])
def test_routing_refusals(hostile: ServerProcess, case: str, raw: bytes, status: int, words: str) -> None:
    check(exchange(hostile.http_port, raw), status, words, case)


@pytest.mark.parametrize(("case", "document", "status", "words"), BODY_CASES, ids=[c[0] for c in BODY_CASES])
def test_bad_bodies_are_refused_naming_the_problem(
    hostile: ServerProcess, case: str, document: object, status: int, words: str
) -> None:
    check(exchange(hostile.http_port, infer(document, model=_model_for(case))), status, words, case)


@pytest.mark.parametrize(
    ("case", "raw", "status", "words"), ENCODING_CASES, ids=[c[0] for c in ENCODING_CASES]
)
def test_bad_encodings_are_refused(
    hostile: ServerProcess, case: str, raw: bytes, status: int, words: str
) -> None:
    check(exchange(hostile.http_port, raw), status, words, case)


def test_the_good_request_of_the_tables_is_served(hostile: ServerProcess) -> None:
    """The control: the cases differ from a request that is served by the one thing they break."""
    status, _, body = exchange(hostile.http_port, infer(GOOD))
    assert status == 200, body
    status, _, body = exchange(hostile.http_port, binary(HEADER_JSON, np.ones(4, "<f4").tobytes()))
    assert status == 200, body
    status, _, body = exchange(hostile.http_port, compressed(gzip.compress(GOOD_BODY), "gzip"))
    assert status == 200, body


def test_slow_headers_and_slow_bodies_get_408(hostile: ServerProcess) -> None:
    started = time.monotonic()
    check(
        exchange(hostile.http_port, b"GET /v2 HTTP/1.1\r\nHost: t\r\n"),
        408,
        "request headers not received",
        "head",
    )
    partial = request("POST", "/v2/models/doubler/infer", GOOD_BODY)[:-10]
    check(exchange(hostile.http_port, partial), 408, "request body not received within 1 s", "body")
    assert time.monotonic() - started < 4 * TIMEOUT_SECONDS + 2, "each timeout fires on time"
    wait_until(lambda: '"status":408' in hostile.stdout(), 5, "the slow body is logged as the 408 it got")


@pytest.mark.parametrize(
    ("request_id", "kept"),
    [
        ("abc-1", True),
        ("A.b:c_d-9", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("x" * 10_000, False),
        ("has space", False),
        ("semi;colon", False),
        ('quote"d', False),
        ("ünïcode", False),
        ("<script>", False),
    ],
)
def test_request_ids_that_are_long_or_odd_are_replaced(
    hostile: ServerProcess, request_id: str, kept: bool
) -> None:
    raw = infer(GOOD).replace(b"Host: test", b"Host: test\r\nx-request-id: " + request_id.encode("utf-8"), 1)
    status, headers, body = exchange(hostile.http_port, raw)
    assert status == 200, body
    answered = headers["x-request-id"]
    assert (answered == request_id) is kept, f"{request_id[:40]!r} -> {answered!r}"
    assert len(answered) <= 128 and answered.isascii()


def test_an_odd_id_in_the_body_is_replaced_too(hostile: ServerProcess) -> None:
    status, headers, body = exchange(hostile.http_port, infer({**GOOD, "id": "x\r\nset-cookie: a=1"}))
    assert status == 200 and "set-cookie" not in headers, body
    assert headers["x-request-id"] != "x\r\nset-cookie: a=1"


def test_tritonclient_gets_the_servers_message(hostile: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(hostile.http_url)
    bad = httpclient.InferInput("x", [1, 4], "FP32")
    bad.set_data_from_numpy(np.ones((1, 4), np.float32), binary_data=True)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [bad])
    oversized = httpclient.InferInput("x", [9, 4], "FP32")
    oversized.set_data_from_numpy(np.ones((9, 4), np.float32), binary_data=True)
    with pytest.raises(InferenceServerException, match="exceeds the model's max_batch_size 8"):
        client.infer("doubler", [oversized])


# -- the original report's cases -------------------------------------------------------------------


def test_a_long_shape_is_refused_at_once_and_never_stalls_the_server(hostile: ServerProcess) -> None:
    """The report: a very long shape froze the process for 7 s and then answered 500."""
    shape = [10**9] * 15_000  # as much shape as the 200 kB body limit of this server admits
    started = time.monotonic()
    check(exchange(hostile.http_port, infer(tensor([1], shape=shape))), 400, "the limit is 16", "rest")
    binary_shape = HEADER_JSON.replace(b"[1, 4]", json.dumps(shape).encode())
    check(exchange(hostile.http_port, binary(binary_shape, bytes(16))), 400, "the limit is 16", "binary")
    assert time.monotonic() - started < 3, "refused by integer checks, not after 7 s of arithmetic"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_huge_headers_and_request_ids_leave_memory_flat(hostile: ServerProcess) -> None:
    """The report: huge headers and request ids grew the RSS from 218 to 502 MB."""
    before = _rss_kib(hostile.process.pid)
    huge = b"GET /v2 HTTP/1.1\r\nX-Request-Id: " + b"i" * 4_000_000 + b"\r\n\r\n"
    for _ in range(20):
        check(exchange(hostile.http_port, huge), 431, "request headers exceed", "huge id")
    many = infer(GOOD).replace(b"Host: test", b"Host: test\r\nx-request-id: " + b"r" * 10_000, 1)
    for _ in range(200):
        status, headers, _ = exchange(hostile.http_port, many)
        assert status == 200 and len(headers["x-request-id"]) < 64
    grown = (_rss_kib(hostile.process.pid) - before) / 1024
    assert grown < 40, f"RSS grew by {grown:.0f} MiB"


# -- gRPC -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub(hostile: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(hostile.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_request(
    shape: list[int] | None = None,
    datatype: str = "FP32",
    model: str = "doubler",
    raw: list[bytes] | None = None,
    name: str = "x",
    **contents: list[Any],
) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model)
    tensor = message.inputs.add(name=name, datatype=datatype, shape=[1, 4] if shape is None else shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    if raw is not None:
        message.raw_input_contents.extend(raw)
    return message


FOUR = np.ones(4, "<f4").tobytes()
GRPC_CASES: list[tuple[str, pb.ModelInferRequest, grpc.StatusCode, str]] = [
    (
        "unknown-model",
        grpc_request(model="nope", raw=[FOUR]),
        grpc.StatusCode.NOT_FOUND,
        "unknown model 'nope'",
    ),
    (
        "unknown-version",
        pb.ModelInferRequest(model_name="doubler", model_version="9"),
        grpc.StatusCode.NOT_FOUND,
        "no version '9'",
    ),
    (
        "contents-and-raw",
        grpc_request(raw=[FOUR], fp32_contents=[1, 2, 3, 4]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not both",
    ),
    (
        "raw-count",
        grpc_request(raw=[FOUR, FOUR]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "2 raw_input_contents for 1",
    ),
    ("raw-short", grpc_request(raw=[FOUR[:8]]), grpc.StatusCode.INVALID_ARGUMENT, "needs 16 bytes, got 8"),
    (
        "rank-17",
        grpc_request(shape=[1] * 17, raw=[FOUR]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the limit is 16",
    ),
    (
        "rank-20000",
        grpc_request(shape=[10**9] * 20_000, raw=[FOUR]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "20000 dimensions",
    ),
    (
        "huge-dims",
        grpc_request(shape=[2**40, 2**40], raw=[FOUR]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "exceeds the limit of 4194304 elements",
    ),
    (
        "unknown-datatype",
        grpc_request(datatype="FP128", raw=[FOUR]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown datatype 'FP128'",
    ),
    (
        "wrong-datatype",
        grpc_request(datatype="INT32", int_contents=[1, 2, 3, 4]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "does not match the model's FP32",
    ),
    ("wrong-rank", grpc_request(shape=[4], raw=[FOUR]), grpc.StatusCode.INVALID_ARGUMENT, "has rank 1"),
    (
        "wrong-dimension",
        grpc_request(shape=[2, 2], raw=[FOUR]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "dimension 1 is 2",
    ),
    (
        "unknown-input",
        grpc_request(name="y", raw=[FOUR]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown input 'y'",
    ),
    ("contents-short", grpc_request(fp32_contents=[1, 2]), grpc.StatusCode.INVALID_ARGUMENT, "data has 2"),
    (
        "contents-wrong-field",
        grpc_request(int_contents=[1, 2, 3, 4]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "data has 0",
    ),
    (
        "batch-zero",
        grpc_request(shape=[0, 4], raw=[b""]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "batch dimension is 0",
    ),
    (
        "batch-over-max",
        grpc_request(shape=[9, 4], raw=[bytes(144)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_batch_size 8",
    ),
    (
        "int8-overflow",
        grpc_request(shape=[1, 2], datatype="INT8", model="ints", int_contents=[300, 1]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "out of bounds for int8",
    ),
    (
        "bytes-truncated",
        grpc_request(shape=[1, 2], datatype="BYTES", model="texts", raw=[b"\x05\x00\x00\x00ab"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "BYTES",
    ),
    (
        "bool-from-int-contents",
        grpc_request(shape=[1, 2], datatype="BOOL", model="flags", int_contents=[1, 0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "data has 0",
    ),
    (
        "bytes-overrun",
        grpc_request(shape=[1, 2], datatype="BYTES", model="texts", raw=[b"\xff\xff\xff\x7f" * 2]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "BYTES element overruns",
    ),
]


@pytest.mark.parametrize(("case", "message", "code", "words"), GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_grpc_refusals(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    case: str,
    message: pb.ModelInferRequest,
    code: grpc.StatusCode,
    words: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(message, timeout=10)
    error: Any = raised.value
    assert error.code() == code, f"{case}: {error.code()} {error.details()}"
    assert words in error.details(), f"{case}: {error.details()!r} does not name the problem ({words!r})"


def test_grpc_good_request_is_served(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    answer = stub.ModelInfer(grpc_request(raw=[FOUR]), timeout=10)
    assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [2.0] * 4


def test_grpc_oversized_metadata_and_message_are_refused(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(grpc_request(raw=[FOUR]), metadata=(("x-big", "v" * 20_000),), timeout=10)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(grpc_request(shape=[1, 4], raw=[bytes(LIMIT_BYTES + 1)]), timeout=10)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()


def test_grpc_odd_request_ids_are_not_kept_for_feedback(
    hostile: ServerProcess, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    stub.ModelInfer(grpc_request(raw=[FOUR]), metadata=(("x-request-id", "grpc-client-id"),), timeout=10)
    status, _, body = exchange(
        hostile.http_port,
        request("POST", "/v2/models/doubler/feedback", b'{"request_id":"grpc-client-id","converted":true}'),
    )
    assert status == 404, body


def test_the_suite_has_at_least_100_cases() -> None:
    count = len(PARSER_CASES) + len(ROUTING_CASES) + len(BODY_CASES) + len(ENCODING_CASES) + len(GRPC_CASES)
    assert count >= 100, count
