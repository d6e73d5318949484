"""The V2 REST codec, called in-process: request bodies as the official tritonclient builds them (JSON
and the binary tensor data extension) decode to the tensors it was given, responses decode back with
tritonclient's own parser, and every malformed body is a 400 whose message names the input and the
problem (the server sends it back as ``{"error": ...}``, so messages are compared whole).
"""

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor, triton_to_np_dtype

from serving_image.datatypes import V2_TO_NUMPY
from serving_image.errors import InvalidInput, PayloadTooLarge, ServingError
from serving_image.rest_codec import (
    array_from_bytes,
    async_parameter,
    callback_parameter,
    decode_infer_request,
    encode_infer_response,
    parse_json,
    serialize_tensor,
)
from serving_image.runtime import TensorSpec
from serving_image.tensors import InferRequest, InferResponse, OutputTensor, RequestedOutput, TensorLimits


def bad_request(call: Any, *args: object) -> str:
    """The message of the 400 that ``call(*args)`` raises; fails the test when it returns."""
    with pytest.raises(ServingError) as caught:
        call(*args)
    error = caught.value
    assert type(error) is InvalidInput, f"expected a 400, got {type(error).__name__}: {error.message}"
    return error.message


def body_of(document: object, binary: bytes = b"") -> tuple[bytes, int | None]:
    """A request body and its Inference-Header-Content-Length (None when there is no binary part)."""
    header = json.dumps(document).encode()
    return header + binary, (len(header) if binary else None)


def decode(
    document: object, binary: bytes = b"", specs: Mapping[str, TensorSpec] | None = None
) -> InferRequest:
    body, length = body_of(document, binary)
    return decode_infer_request("m", "1", body, length, specs)


def refused(document: object, binary: bytes = b"", specs: Mapping[str, TensorSpec] | None = None) -> str:
    """The message of the 400 the document (and binary part) is refused with."""
    body, length = body_of(document, binary)
    return bad_request(decode_infer_request, "m", "1", body, length, specs)


def tensor(
    name: str = "x", datatype: str = "FP32", shape: tuple[int, ...] = (2,), **fields: Any
) -> dict[str, Any]:
    """One input of a request document; ``data`` defaults to as many ones as the shape needs."""
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(shape)}
    entry.update(fields)
    if "data" not in fields and "parameters" not in fields:
        entry["data"] = [1.0] * math.prod(shape)
    return entry


# ---------------------------------------------------------------------------------------------------
# Sample tensors of every datatype, with the values at the edges of each.


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        values = [b"", b"a", "é".encode(), b"\x00\x01", b"x" * 300, "日本".encode()]
        return np.array((values * count)[:count], dtype=object).reshape(shape)
    dtype = np.dtype(triton_to_np_dtype(datatype))
    if dtype.kind == "b":
        edges: list[Any] = [True, False]
    elif dtype.kind in "iu":
        info = np.iinfo(triton_to_np_dtype(datatype))
        edges = [int(info.min), int(info.max), 0, 1, int(info.max) - 1, int(info.min) + 1]
    else:
        finfo = np.finfo(triton_to_np_dtype(datatype))
        edges = [float(finfo.max), float(finfo.min), float(finfo.tiny), -0.0, 1.5, -2.25]
    return np.array((edges * count)[:count], dtype=dtype).reshape(shape)


DATATYPES = sorted(V2_TO_NUMPY)


def same_tensor(got: np.ndarray, sent: np.ndarray) -> None:
    assert got.shape == sent.shape, f"shape {got.shape} != {sent.shape}"
    if sent.dtype == object:
        assert got.dtype == object, got.dtype
        assert got.ravel().tolist() == [item.decode() for item in sent.ravel()], got
    else:
        assert got.dtype == sent.dtype, f"dtype {got.dtype} != {sent.dtype}"
        assert got.tobytes() == sent.tobytes(), f"{got} != {sent}"  # bit for bit: -0.0, tiny, max


# ---------------------------------------------------------------------------------------------------
# parse_json


def test_parse_json_returns_the_object() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}


@pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b"[1,", b"\xff"])
def test_malformed_json_is_a_400_with_the_parser_s_reason(body: bytes) -> None:
    message = bad_request(parse_json, body)
    assert message.startswith("malformed JSON: ") and len(message) > len("malformed JSON: "), message


@pytest.mark.parametrize(
    ("body", "got"),
    [(b"[]", "list"), (b"3", "int"), (b"null", "NoneType"), (b'"x"', "str"), (b"true", "bool")],
)
def test_a_body_that_is_not_an_object_is_named(body: bytes, got: str) -> None:
    assert bad_request(parse_json, body) == f"request body must be a JSON object, got {got}"


# ---------------------------------------------------------------------------------------------------
# Requests as tritonclient builds them decode to the tensors it was given.


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_sent_by_tritonclient_decodes_to_what_it_sent(datatype: str, binary: bool) -> None:
    sent = sample(datatype)
    if datatype == "FP16" and not binary:
        sent = sample(datatype).astype(np.float32).astype(np.float16)  # exact as JSON floats
    assert sent.dtype == np.dtype(triton_to_np_dtype(datatype)), "the sample has tritonclient's dtype"
    entry = triton.InferInput("x", list(sent.shape), datatype)
    entry.set_data_from_numpy(sent, binary_data=binary)
    body, length = triton.InferenceServerClient.generate_request_body([entry], request_id="r-1")
    assert (length is not None) == binary, "tritonclient sends a header length only with binary data"
    request = decode_infer_request("m", "2", body, length)
    assert (request.model, request.version, request.id) == ("m", "2", "r-1"), request
    (got,) = request.inputs
    assert (got.name, got.datatype, got.shape) == ("x", datatype, (2, 3)), got
    same_tensor(got.data, sent)


def test_json_and_binary_inputs_mixed_in_one_request_each_take_their_own_bytes() -> None:
    sent = {
        "a": sample("INT16", (2,)),
        "b": sample("FP32", (3,)),
        "c": sample("BYTES", (4,)),
        "d": sample("BOOL"),
    }
    entries = []
    for index, (name, array) in enumerate(sent.items()):
        entry = triton.InferInput(
            name, list(array.shape), {"a": "INT16", "b": "FP32", "c": "BYTES", "d": "BOOL"}[name]
        )
        entry.set_data_from_numpy(array, binary_data=index % 2 == 0)
        entries.append(entry)
    outputs = [
        triton.InferRequestedOutput("y", binary_data=True),
        triton.InferRequestedOutput("z", binary_data=False),
    ]
    body, length = triton.InferenceServerClient.generate_request_body(entries, outputs)
    request = decode_infer_request("m", None, body, length)
    assert [item.name for item in request.inputs] == ["a", "b", "c", "d"], request.inputs
    for item in request.inputs:
        same_tensor(item.data, sent[item.name])
    assert request.outputs == [RequestedOutput("y", binary=True), RequestedOutput("z", binary=False)]
    assert request.version is None and request.id is None, request


def test_two_binary_inputs_are_read_in_order_from_their_offsets() -> None:
    document = {
        "inputs": [
            tensor("a", "UINT8", (3,), parameters={"binary_data_size": 3}),
            tensor("b", "UINT8", (2,), parameters={"binary_data_size": 2}),
        ]
    }
    request = decode(document, b"\x01\x02\x03\x04\x05")
    assert [item.data.tolist() for item in request.inputs] == [[1, 2, 3], [4, 5]], request.inputs


def test_binary_data_size_wins_over_a_data_field() -> None:
    document = {"inputs": [tensor("a", "UINT8", (1,), data=[9], parameters={"binary_data_size": 1})]}
    assert decode(document, b"\x07").inputs[0].data.tolist() == [7]


def test_an_empty_binary_tensor_takes_no_bytes() -> None:
    document = {
        "inputs": [
            tensor("a", "FP32", (0, 4), parameters={"binary_data_size": 0}),
            tensor("b", "UINT8", (1,), parameters={"binary_data_size": 1}),
        ]
    }
    request = decode(document, b"\x05")
    assert request.inputs[0].data.shape == (0, 4) and request.inputs[1].data.tolist() == [5], request


def test_binary_data_is_little_endian() -> None:
    document = {
        "inputs": [
            tensor("i", "INT16", (2,), parameters={"binary_data_size": 4}),
            tensor("f", "FP32", (1,), parameters={"binary_data_size": 4}),
        ]
    }
    request = decode(document, b"\x01\x00\xfe\xff" + b"\x00\x00\x80\x3f")
    assert request.inputs[0].data.tolist() == [1, -2] and request.inputs[1].data.tolist() == [1.0], request


def test_infinities_and_nan_travel_bit_for_bit_in_binary() -> None:
    sent = np.array([np.inf, -np.inf, np.nan, -0.0], dtype=np.float32)
    document = {"inputs": [tensor("x", "FP32", (4,), parameters={"binary_data_size": 16})]}
    same_tensor(decode(document, sent.tobytes()).inputs[0].data, sent)


# ---------------------------------------------------------------------------------------------------
# Request-level fields


@pytest.mark.parametrize(
    ("parameters", "binary_outputs"),
    [
        ({"binary_data_output": True}, True),
        ({"binary_data_output": 1}, False),
        ({"binary_data_output": "true"}, False),
        ({}, False),
    ],
)
def test_binary_outputs_only_when_binary_data_output_is_true(
    parameters: dict[str, Any], binary_outputs: bool
) -> None:
    request = decode({"inputs": [tensor()], "parameters": parameters})
    assert request.binary_outputs is binary_outputs, (parameters, request.binary_outputs)


def test_without_parameters_or_outputs_nothing_is_asked_for() -> None:
    request = decode({"inputs": [tensor()]})
    assert (request.binary_outputs, request.outputs, request.id) == (False, None, None), request


def test_an_empty_id_is_kept() -> None:
    assert decode({"inputs": [tensor()], "id": ""}).id == ""


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({}, "'inputs' must be a non-empty list of tensors"),
        ({"inputs": []}, "'inputs' must be a non-empty list of tensors"),
        ({"inputs": {"name": "x"}}, "'inputs' must be a non-empty list of tensors"),
        ({"inputs": "x"}, "'inputs' must be a non-empty list of tensors"),
        ({"inputs": [tensor()], "parameters": []}, "request 'parameters' must be an object"),
        (
            {"inputs": [tensor()], "parameters": "binary_data_output"},
            "request 'parameters' must be an object",
        ),
        ({"inputs": [tensor()], "id": 5}, "'id' must be a string"),
        ({"inputs": [tensor()], "id": ["a"]}, "'id' must be a string"),
    ],
)
def test_a_malformed_request_is_named(document: dict[str, Any], expected: str) -> None:
    assert refused(document) == expected


# ---------------------------------------------------------------------------------------------------
# Inference-Header-Content-Length


def test_a_header_length_of_the_whole_body_is_a_json_only_request() -> None:
    body = json.dumps({"inputs": [tensor()]}).encode()
    assert decode_infer_request("m", None, body, len(body)).inputs[0].data.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("offset", [-1, 1, 100])
def test_a_header_length_outside_the_body_is_refused(offset: int) -> None:
    body = json.dumps({"inputs": [tensor()]}).encode()
    length = -1 if offset == -1 else len(body) + offset
    message = bad_request(decode_infer_request, "m", None, body, length)
    assert message == f"Inference-Header-Content-Length {length} is outside the body of {len(body)} bytes"


def test_a_header_length_of_zero_leaves_an_empty_json_header() -> None:
    message = bad_request(decode_infer_request, "m", None, b'{"inputs": []}', 0)
    assert message.startswith("malformed JSON: "), message


def test_a_header_length_cuts_the_json_where_it_says() -> None:
    body = json.dumps({"inputs": [tensor()]}).encode()
    message = bad_request(decode_infer_request, "m", None, body, len(body) - 1)
    assert message.startswith("malformed JSON: "), message


@pytest.mark.parametrize(("sizes", "extra"), [((), 1), ((), 3), ((4,), 1), ((4, 8), 2)])
def test_binary_data_no_input_claims_is_refused_with_its_length(sizes: tuple[int, ...], extra: int) -> None:
    inputs = [
        tensor(f"i{n}", "UINT8", (size,), parameters={"binary_data_size": size})
        for n, size in enumerate(sizes)
    ]
    inputs.append(tensor("j", "FP32", (1,)))
    message = refused({"inputs": inputs}, bytes(sum(sizes) + extra))
    assert message == f"{extra} bytes of binary data are not claimed by any input", message


# ---------------------------------------------------------------------------------------------------
# One input


NOT_A_SHAPE = "shape must be a list of non-negative integers"
NO_DATA = "has neither 'data' nor a binary_data_size parameter"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("x", "each input must be a JSON object with name, shape, datatype and data"),
        ([tensor()], "each input must be a JSON object with name, shape, datatype and data"),
        ({"datatype": "FP32", "shape": [1], "data": [1]}, "an input has no 'name'"),
        ({"name": "", "datatype": "FP32", "shape": [1], "data": [1]}, "an input has no 'name'"),
        ({"name": 3, "datatype": "FP32", "shape": [1], "data": [1]}, "an input has no 'name'"),
        ({"name": "x", "shape": [1], "data": [1]}, "input 'x': missing 'datatype'"),
        ({"name": "x", "datatype": 5, "shape": [1], "data": [1]}, "input 'x': missing 'datatype'"),
        ({"name": "x", "datatype": "FP32", "data": [1]}, f"input 'x': {NOT_A_SHAPE}, got None"),
        (tensor("x", shape=(1,), parameters=[]), "input 'x' 'parameters' must be an object"),
        ({"name": "x", "datatype": "FP32", "shape": [1]}, f"input 'x': {NO_DATA}"),
        (tensor("x", parameters={}), f"input 'x': {NO_DATA}"),
        (tensor("x", data=[1.0]), "input 'x': shape [2] needs 2 elements, data has 1"),
        (tensor("x", "FP99"), "unknown datatype 'FP99'"),
    ],
)
def test_a_malformed_input_is_named(raw: object, expected: str) -> None:
    assert refused({"inputs": [tensor("ok"), raw]}) == expected


@pytest.mark.parametrize(
    ("size", "available"),
    [(9, 8), (1, 0), (-1, 8), (True, 8), (8.0, 8), ("8", 8), (None, 8), ([8], 8)],
)
def test_a_binary_data_size_not_within_the_data_is_refused(size: object, available: int) -> None:
    document = {"inputs": [tensor("x", "UINT8", (8,), parameters={"binary_data_size": size})]}
    if size is None:  # a null size is no size: the input has no data at all
        assert refused(document, bytes(available)) == f"input 'x': {NO_DATA}"
        return
    message = refused(document, bytes(available))
    assert message == f"input 'x': binary_data_size {size!r} exceeds the binary data sent", message


def test_binary_data_of_the_wrong_size_for_its_shape_is_named_by_input() -> None:
    document = {
        "inputs": [
            tensor("a", "UINT8", (1,), parameters={"binary_data_size": 1}),
            tensor("b", "FP32", (2,), parameters={"binary_data_size": 7}),
        ]
    }
    assert refused(document, bytes(8)) == "input 'b': shape [2] of FP32 needs 8 bytes, got 7"


def test_a_second_binary_input_may_not_read_past_the_end() -> None:
    document = {
        "inputs": [
            tensor("a", "UINT8", (8,), parameters={"binary_data_size": 8}),
            tensor("b", "UINT8", (8,), parameters={"binary_data_size": 8}),
        ]
    }
    assert refused(document, bytes(15)) == "input 'b': binary_data_size 8 exceeds the binary data sent"
    assert [item.data.size for item in decode(document, bytes(16)).inputs] == [8, 8]


def test_the_limits_are_applied_to_every_input() -> None:
    document = {"inputs": [tensor("x", "FP32", (1, 1), data=[1.0])]}
    body, _ = body_of(document)
    limits = TensorLimits(max_rank=1, max_elements=10)
    message = bad_request(decode_infer_request, "m", None, body, None, None, limits)
    assert message == "input 'x': shape has 2 dimensions, the limit is 1", message


def test_the_default_limits_apply_without_any_given() -> None:
    body, _ = body_of({"inputs": [tensor("x", "FP32", (4 * 1024 * 1024 + 1,), data=[])]})
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 4194304 elements"):
        decode_infer_request("m", None, body, None)


SPECS = {"x": TensorSpec("x", "FP32", (-1, 2)), "a": TensorSpec("a", "INT8", (3,))}


def test_inputs_matching_the_specs_decode() -> None:
    inputs = [tensor("x", "FP32", (2, 2)), tensor("a", "INT8", (3,), data=[1, 2, 3])]
    request = decode({"inputs": inputs}, specs=SPECS)
    assert [item.data.shape for item in request.inputs] == [(2, 2), (3,)], request.inputs


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (tensor("z", "FP32", (2, 2)), "unknown input 'z'; the model's inputs are ['a', 'x']"),
        (
            tensor("x", "FP64", (2, 2), data="not checked yet"),
            "input 'x': datatype FP64 does not match the model's FP32",
        ),
        (
            tensor("x", "FP32", (2, 3), data="not checked yet"),
            "input 'x': dimension 1 is 3, the model expects 2 (shape [-1, 2])",
        ),
        (
            tensor("x", "FP32", (4,), parameters={"binary_data_size": 99}),
            "input 'x': shape [4] has rank 1, the model expects rank 2 [-1, 2]",
        ),
    ],
)
def test_inputs_are_checked_against_the_specs_before_their_data(raw: dict[str, Any], expected: str) -> None:
    assert refused({"inputs": [raw]}, specs=SPECS) == expected


# ---------------------------------------------------------------------------------------------------
# Requested outputs


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ([], []),
        ([{"name": "y"}], [RequestedOutput("y")]),
        ([{"name": "y", "parameters": {"binary_data": True}}], [RequestedOutput("y", binary=True)]),
        ([{"name": "y", "parameters": {"binary_data": 1}}], [RequestedOutput("y")]),
        ([{"name": "y", "parameters": {"classification": 0}}], [RequestedOutput("y")]),
        (
            [{"name": "b", "parameters": {"binary_data": True}}, {"name": "a"}],
            [RequestedOutput("b", binary=True), RequestedOutput("a")],
        ),
    ],
)
def test_requested_outputs_are_decoded_in_order(outputs: list[Any], expected: list[RequestedOutput]) -> None:
    assert decode({"inputs": [tensor()], "outputs": outputs}).outputs == expected


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({"name": "y"}, "'outputs' must be a list"),
        ("y", "'outputs' must be a list"),
        (["y"], "each requested output must be an object with a 'name'"),
        ([{"name": 1}], "each requested output must be an object with a 'name'"),
        ([{"binary_data": True}], "each requested output must be an object with a 'name'"),
        ([{"name": "y"}, {"name": "z", "parameters": 1}], "output 'z' 'parameters' must be an object"),
        (
            [{"name": "y", "parameters": {"classification": 3}}],
            "output 'y': the classification extension is not supported",
        ),
    ],
)
def test_malformed_requested_outputs_are_named(outputs: object, expected: str) -> None:
    assert refused({"inputs": [tensor()], "outputs": outputs}) == expected


# ---------------------------------------------------------------------------------------------------
# array_from_bytes


@pytest.mark.parametrize("datatype", [name for name in DATATYPES if name != "BYTES"])
@pytest.mark.parametrize("shape", [(2, 3), (6,), (1, 1, 6), ()])
def test_raw_bytes_of_every_fixed_size_datatype_decode_exactly(datatype: str, shape: tuple[int, ...]) -> None:
    sent = sample(datatype, shape)
    same_tensor(array_from_bytes("x", datatype, shape, sent.tobytes()), sent)


@pytest.mark.parametrize("datatype", [name for name in DATATYPES if name != "BYTES"])
@pytest.mark.parametrize("delta", [-1, 1])
def test_one_byte_too_few_or_too_many_is_refused_naming_both_sizes(datatype: str, delta: int) -> None:
    size = 3 * V2_TO_NUMPY[datatype].itemsize
    message = bad_request(array_from_bytes, "in", datatype, (3,), bytes(size + delta))
    assert message == f"input 'in': shape [3] of {datatype} needs {size} bytes, got {size + delta}", message


def test_an_unknown_datatype_in_binary_is_named() -> None:
    assert bad_request(array_from_bytes, "x", "FP8", (1,), b"\x00") == "unknown datatype 'FP8'"


def test_numpy_s_rank_limit_is_a_400_before_numpy_sees_the_shape() -> None:
    assert array_from_bytes("x", "FP32", (1,) * 64, bytes(4)).ndim == 64, "64 dimensions are numpy's limit"
    for datatype in ("FP32", "BYTES"):
        message = bad_request(array_from_bytes, "x", datatype, (1,) * 65, bytes(4))
        assert message == "input 'x': shape has 65 dimensions, numpy allows 64", message


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


@pytest.mark.parametrize(
    "items",
    [[b"a", b"bc"], [b"", b"", b""], [b"", b"abcde"], ["é".encode(), b"\x00"], [b"x" * 70000], []],
)
def test_bytes_elements_as_tritonclient_serializes_them_decode_to_text(items: list[bytes]) -> None:
    chunk = serialize_byte_tensor(np.array(items, dtype=object)).item() if items else b""
    assert chunk == length_prefixed(*items), "the wire format is a 4-byte little-endian length per element"
    array = array_from_bytes("s", "BYTES", (len(items),), chunk)
    assert array.dtype == object and array.tolist() == [item.decode() for item in items], array


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_a_shape_numpy_cannot_build_is_a_400_naming_the_input(datatype: str) -> None:
    shape = (0, 2**62, 2**62)  # no elements, so no bytes; but numpy refuses dimensions this large
    message = bad_request(array_from_bytes, "in", datatype, shape, b"")
    assert message.startswith(f"input 'in': cannot take shape {list(shape)}: "), message


def test_bytes_elements_take_the_shape() -> None:
    array = array_from_bytes("s", "BYTES", (2, 1), length_prefixed(b"a", b"b"))
    assert array.shape == (2, 1) and array.tolist() == [["a"], ["b"]], array


def test_invalid_utf8_in_a_bytes_element_is_replaced_not_refused() -> None:
    array = array_from_bytes("s", "BYTES", (1,), length_prefixed(b"a\xffb"))
    assert array.tolist() == ["a\ufffdb"], array


@pytest.mark.parametrize(
    ("shape", "chunk", "expected"),
    [
        ((3,), bytes(11), "shape needs 3 BYTES elements, 11 bytes cannot hold them"),
        ((2,), length_prefixed(b"abc"), "shape needs 2 BYTES elements, 7 bytes cannot hold them"),
        ((1,), length_prefixed(b"") + b"\x00\x00", "truncated BYTES element length"),
        ((1,), length_prefixed(b"") + b"\x00\x00\x00", "truncated BYTES element length"),
        ((1,), length_prefixed(b"abc")[:-1], "BYTES element overruns the binary data"),
        ((1,), struct.pack("<I", 2**31) + b"abcd", "BYTES element overruns the binary data"),  # unsigned
        ((1,), b"\xff\xff\xff\xff" + b"abcd", "BYTES element overruns the binary data"),
        ((2,), length_prefixed(b"a") + struct.pack("<I", 2) + b"b", "BYTES element overruns the binary data"),
        ((1,), length_prefixed(b"", b""), "shape needs 1 BYTES elements, data has 2"),
        ((2,), length_prefixed(b"abcd"), "shape needs 2 BYTES elements, data has 1"),  # 8 bytes may hold 2
        ((0,), length_prefixed(b""), "shape needs 0 BYTES elements, data has 1"),
    ],
)
def test_malformed_bytes_elements_are_named(shape: tuple[int, ...], chunk: bytes, expected: str) -> None:
    assert bad_request(array_from_bytes, "s", "BYTES", shape, chunk) == f"input 's': {expected}"


def test_bytes_elements_exactly_filling_the_data_decode() -> None:
    chunk = length_prefixed(b"", b"abc")
    assert array_from_bytes("s", "BYTES", (2,), chunk).tolist() == ["", "abc"]
    assert array_from_bytes("s", "BYTES", (0,), b"").shape == (0,)


# ---------------------------------------------------------------------------------------------------
# Responses decode back with tritonclient's parser.


def response_of(*outputs: OutputTensor, **fields: Any) -> InferResponse:
    return InferResponse(model="m", version="3", outputs=list(outputs), **fields)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_of_a_response_decodes_with_tritonclient(datatype: str, binary: bool) -> None:
    sent = sample(datatype)
    body, length = encode_infer_response(response_of(OutputTensor("y", datatype, sent, binary=binary)))
    assert (length is not None) == binary, "a header length only when binary data follows"
    result = triton.InferenceServerClient.parse_response_body(body, header_length=length)
    got = result.as_numpy("y")
    assert got is not None and got.shape == (2, 3), got
    if datatype == "BYTES":
        expected = [item.decode() for item in sent.ravel()]
        assert [item.decode() if binary else item for item in got.ravel()] == expected, got
    else:
        assert got.dtype == sent.dtype and got.tobytes() == sent.tobytes(), f"{got} != {sent}"
    output = result.get_output("y")
    assert output["datatype"] == datatype and output["shape"] == [2, 3], output


def test_a_json_response_is_the_v2_document() -> None:
    response = response_of(
        OutputTensor("y", "FP32", np.array([[1.5, 2.0]], np.float32)),
        OutputTensor("s", "BYTES", np.array([b"a\xff", "é", 7], dtype=object)),
        id="req-9",
        parameters={"cached": True},
    )
    body, length = encode_infer_response(response)
    assert length is None, "no binary outputs, no header length"
    assert orjson.loads(body) == {
        "model_name": "m",
        "model_version": "3",
        "id": "req-9",
        "parameters": {"cached": True},
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]},
            {"name": "s", "datatype": "BYTES", "shape": [3], "data": ["a\ufffd", "é", "7"]},
        ],
    }


@pytest.mark.parametrize(
    ("fields", "keys"),
    [({}, set()), ({"id": ""}, {"id"}), ({"parameters": {"a": 1}}, {"parameters"})],
)
def test_id_and_parameters_appear_only_when_set(fields: dict[str, Any], keys: set[str]) -> None:
    body, _ = encode_infer_response(response_of(OutputTensor("y", "INT8", np.zeros(1, np.int8)), **fields))
    assert set(orjson.loads(body)) == {"model_name", "model_version", "outputs"} | keys, body


def test_a_transposed_output_is_sent_in_row_major_order() -> None:
    array = np.arange(6, dtype=np.int32).reshape(2, 3).T  # not C-contiguous
    for binary in (False, True):
        body, length = encode_infer_response(response_of(OutputTensor("y", "INT32", array, binary=binary)))
        got = triton.InferenceServerClient.parse_response_body(body, header_length=length).as_numpy("y")
        assert got is not None and got.tolist() == [[0, 3], [1, 4], [2, 5]], (binary, got)


def test_binary_outputs_follow_the_header_in_order_each_with_its_size() -> None:
    first = np.array([1, 2], dtype=np.int16)
    second = np.array([b"ab", b""], dtype=object)
    response = response_of(
        OutputTensor("a", "INT16", first, binary=True),
        OutputTensor("j", "FP64", np.array([0.5])),
        OutputTensor("b", "BYTES", second, binary=True),
    )
    body, length = encode_infer_response(response)
    assert length is not None
    header = orjson.loads(body[:length])
    assert [entry.get("parameters") for entry in header["outputs"]] == [
        {"binary_data_size": 4},
        None,
        {"binary_data_size": 10},
    ], header
    assert header["outputs"][1]["data"] == [0.5], header
    assert body[length:] == b"\x01\x00\x02\x00" + length_prefixed(b"ab", b""), body[length:]


# ---------------------------------------------------------------------------------------------------
# serialize_tensor


@pytest.mark.parametrize(
    "array",
    [
        np.array([b"a", "é".encode(), b""], dtype=object),
        np.array(["a", "é", ""], dtype=object),
        np.array(["a", "é", ""]),  # numpy unicode
        np.array([b"a", b"bc"]),  # numpy bytes
        np.array([[b"a"], [b"b"]], dtype=object),
        np.array([], dtype=object),
    ],
    ids=["object-bytes", "object-str", "unicode", "bytes", "2d", "empty"],
)
def test_text_tensors_serialize_as_tritonclient_does(array: np.ndarray) -> None:
    reference = serialize_byte_tensor(array.astype(object))  # tritonclient takes object arrays only
    expected = reference.item() if reference.size else b""
    got = serialize_tensor(array)
    assert got == expected, f"{got!r} != tritonclient's {expected!r}"
    if array.size:
        assert deserialize_bytes_tensor(got).tolist() == [
            item if isinstance(item, bytes) else item.encode() for item in array.ravel().tolist()
        ]


def test_other_objects_in_a_text_tensor_serialize_as_their_text() -> None:
    assert serialize_tensor(np.array([7, None], dtype=object)) == length_prefixed(b"7", b"None")


@pytest.mark.parametrize("datatype", [name for name in DATATYPES if name != "BYTES"])
def test_numeric_tensors_serialize_as_their_little_endian_bytes(datatype: str) -> None:
    array = sample(datatype)
    assert serialize_tensor(array) == array.astype(array.dtype.newbyteorder("<")).tobytes()
    assert serialize_tensor(array.T) == np.ascontiguousarray(array.T).tobytes(), "row-major order"


ONE_INPUT = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


@pytest.mark.parametrize(
    ("parameters", "asynchronous"), [({}, False), ({"async": True}, True), ({"async": False}, False)]
)
def test_the_async_parameter_is_decoded_into_the_request(
    parameters: dict[str, Any], asynchronous: bool
) -> None:
    assert decode({**ONE_INPUT, "parameters": parameters}).asynchronous is asynchronous
    assert decode(ONE_INPUT).asynchronous is False, "no parameters at all is synchronous"


def test_the_async_parameter_is_read_from_the_json_not_its_spelling() -> None:
    # JSON escapes spell the same member name: the decoder, not a text search, decides.
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}],'
    body += b' "parameters": {"\\u0061sync": true}}'
    assert decode_infer_request("m", "1", body, None).asynchronous is True


@pytest.mark.parametrize("flag", ["true", 1, 0, None, [], {}])
def test_an_async_parameter_that_is_not_a_boolean_is_refused(flag: object) -> None:
    assert (
        refused({**ONE_INPUT, "parameters": {"async": flag}})
        == "request parameter 'async' must be true or false"
    )
    assert bad_request(async_parameter, {"async": flag}) == "request parameter 'async' must be true or false"


def test_a_jobs_callback_url_is_decoded_into_the_request_unchecked() -> None:
    url = "https://hooks.example.com/done"
    assert decode({**ONE_INPUT, "parameters": {"callback_url": url}}).callback_url == url
    assert decode(ONE_INPUT).callback_url is None, "no callback named"


@pytest.mark.parametrize("value", [None, 1, True, [], {}])
def test_a_callback_url_that_is_not_a_string_is_refused(value: object) -> None:
    message = "request parameter 'callback_url' must be a string (a URL)"
    assert refused({**ONE_INPUT, "parameters": {"callback_url": value}}) == message
    assert bad_request(callback_parameter, {"callback_url": value}) == message
