"""The V2 REST wire format: JSON tensors and the binary tensor data extension.

With the extension, the body is a JSON header of ``Inference-Header-Content-Length``
bytes followed by raw tensors, each input naming its ``binary_data_size``; outputs asked
for with ``binary_data`` come back the same way. This is how the official tritonclient
sends and expects tensors.
"""

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from serving_image.datatypes import numpy_dtype
from serving_image.errors import InvalidInput
from serving_image.runtime import TensorSpec
from serving_image.tensors import (
    ASYNC_PARAMETER,
    CALLBACK_PARAMETER,
    DEFAULT_LIMITS,
    InferRequest,
    InferResponse,
    InputTensor,
    RequestedOutput,
    TensorLimits,
    array_from_list,
    check_against_spec,
    check_shape,
    element_count,
    reshape,
)

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_NUMPY_MAX_DIMS = 64
# The length before each BYTES element, in requests and responses alike: 4 bytes, unsigned, little-endian.
_BYTES_LENGTH = struct.Struct("<I")


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object, or a 400 naming the problem."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"malformed JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput(f"request body must be a JSON object, got {type(document).__name__}")
    return document


def decode_infer_request(
    model: str,
    version: str | None,
    body: bytes,
    header_length: int | None,
    specs: Mapping[str, TensorSpec] | None = None,
    limits: TensorLimits = DEFAULT_LIMITS,
) -> InferRequest:
    """An inference request from a REST body, with or without binary tensor data.

    With the model's input ``specs``, each input's name, datatype and shape are checked
    against them (and against ``limits``) before any of its data is converted.
    """
    if header_length is None:
        document, binary = parse_json(body), b""
    else:
        if not 0 <= header_length <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length} is outside the body of {len(body)} bytes"
            )
        document, binary = parse_json(body[:header_length]), body[header_length:]
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    inputs, offset = [], 0
    for raw in raw_inputs:
        tensor, offset = _decode_input(raw, binary, offset, specs, limits)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    parameters = _parameters(document, "request")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    return InferRequest(
        model=model,
        version=version,
        inputs=inputs,
        id=request_id,
        outputs=_decode_outputs(document.get("outputs")),
        binary_outputs=parameters.get("binary_data_output") is True,
        asynchronous=async_parameter(parameters),
        callback_url=callback_parameter(parameters),
    )


def async_parameter(parameters: dict[str, Any]) -> bool:
    """The request parameter ``async`` (absent is false); anything but a JSON boolean is refused."""
    flag = parameters.get(ASYNC_PARAMETER, False)
    if not isinstance(flag, bool):
        raise InvalidInput(f"request parameter '{ASYNC_PARAMETER}' must be true or false")
    return flag


def callback_parameter(parameters: dict[str, Any]) -> str | None:
    """The request parameter ``callback_url`` (absent is None); anything but a string is refused."""
    if CALLBACK_PARAMETER not in parameters:
        return None
    value = parameters[CALLBACK_PARAMETER]
    if not isinstance(value, str):
        raise InvalidInput(f"request parameter '{CALLBACK_PARAMETER}' must be a string (a URL)")
    return value


def _parameters(holder: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where} 'parameters' must be an object")
    return parameters


def _decode_input(
    raw: object, binary: bytes, offset: int, specs: Mapping[str, TensorSpec] | None, limits: TensorLimits
) -> tuple[InputTensor, int]:
    if not isinstance(raw, dict):
        raise InvalidInput("each input must be a JSON object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("an input has no 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"input '{name}': missing 'datatype'")
    shape = check_shape(raw.get("shape"), name, limits)
    if specs is not None:
        spec = specs.get(name)
        if spec is None:
            raise InvalidInput(f"unknown input '{name}'; the model's inputs are {sorted(specs)}")
        check_against_spec(name, datatype, shape, spec)
    size = _parameters(raw, f"input '{name}'").get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise InvalidInput(f"input '{name}': has neither 'data' nor a binary_data_size parameter")
        return InputTensor(name, datatype, shape, array_from_list(name, datatype, shape, raw["data"])), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
        raise InvalidInput(f"input '{name}': binary_data_size {size!r} exceeds the binary data sent")
    chunk = binary[offset : offset + size]
    return InputTensor(name, datatype, shape, array_from_bytes(name, datatype, shape, chunk)), offset + size


def array_from_bytes(name: str, datatype: str, shape: tuple[int, ...], chunk: bytes) -> np.ndarray:
    """Raw little-endian tensor bytes (length-prefixed elements for BYTES) as an array."""
    if len(shape) > _NUMPY_MAX_DIMS:  # callers bound the rank first; this keeps numpy's error a 400
        raise InvalidInput(
            f"input '{name}': shape has {len(shape)} dimensions, numpy allows {_NUMPY_MAX_DIMS}"
        )
    count = element_count(shape)
    if datatype == "BYTES":
        return reshape(name, _deserialize_bytes(name, chunk, count), shape)
    dtype = numpy_dtype(datatype)
    if len(chunk) != count * dtype.itemsize:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"got {len(chunk)}"
        )
    return reshape(name, np.frombuffer(chunk, dtype=dtype), shape)


def _deserialize_bytes(name: str, chunk: bytes, count: int) -> np.ndarray:
    if len(chunk) < 4 * count:  # each element has a 4-byte length: refuse before the loop
        raise InvalidInput(
            f"input '{name}': shape needs {count} BYTES elements, {len(chunk)} bytes cannot hold them"
        )
    items: list[bytes] = []
    offset = 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise InvalidInput(f"input '{name}': truncated BYTES element length")
        (length,) = _BYTES_LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise InvalidInput(f"input '{name}': BYTES element overruns the binary data")
        items.append(chunk[offset : offset + length])
        offset += length
    if len(items) != count:
        raise InvalidInput(f"input '{name}': shape needs {count} BYTES elements, data has {len(items)}")
    return np.array([item.decode("utf-8", "replace") for item in items], dtype=object)


def _decode_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be a list")
    outputs = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput("each requested output must be an object with a 'name'")
        parameters = _parameters(item, f"output '{item['name']}'")
        if parameters.get("classification"):
            raise InvalidInput(f"output '{item['name']}': the classification extension is not supported")
        outputs.append(RequestedOutput(item["name"], binary=parameters.get("binary_data") is True))
    return outputs


def encode_infer_response(response: InferResponse) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in response.outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.data.shape),
        }
        if output.binary:
            raw = serialize_tensor(output.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif output.datatype == "BYTES":
            entry["data"] = [_text(item) for item in output.data.ravel().tolist()]
        else:
            entry["data"] = np.ascontiguousarray(output.data).ravel()
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model,
        "model_version": response.version,
        "outputs": outputs,
    }
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    header = orjson.dumps(document, option=_JSON_OPTIONS)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def serialize_tensor(array: np.ndarray) -> bytes:
    """Raw little-endian bytes of a tensor; BYTES elements each prefixed by a 4-byte length."""
    if array.dtype.kind in "OUS":
        parts = []
        for item in array.ravel().tolist():
            encoded = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_BYTES_LENGTH.pack(len(encoded)) + encoded)
        return b"".join(parts)
    return np.ascontiguousarray(array).tobytes()


def _text(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
