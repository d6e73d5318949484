"""Protocol-neutral inference requests and responses, and tensor checks against a model."""

from dataclasses import dataclass, field

import numpy as np

from serving_image.datatypes import numpy_dtype
from serving_image.errors import InvalidInput
from serving_image.runtime import TensorSpec


@dataclass(slots=True)
class InputTensor:
    """A decoded input: its declared name, datatype and shape, and the data as an array."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as raw bytes."""

    name: str
    binary: bool = False


@dataclass(slots=True)
class InferRequest:
    """A V2 inference request as every transport hands it to the data plane."""

    model: str
    version: str | None
    inputs: list[InputTensor]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    binary_outputs: bool = False


@dataclass(slots=True)
class OutputTensor:
    """One output of a response."""

    name: str
    datatype: str
    data: np.ndarray
    binary: bool = False


@dataclass(slots=True)
class InferResponse:
    """A V2 inference response, before a transport encodes it."""

    model: str
    version: str
    outputs: list[OutputTensor]
    id: str | None = None
    parameters: dict[str, object] = field(default_factory=dict)


def check_shape(shape: object, name: str) -> tuple[int, ...]:
    """A V2 shape: a list of non-negative integers."""
    if not isinstance(shape, list | tuple) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    ):
        raise InvalidInput(f"input '{name}': shape must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def element_count(shape: tuple[int, ...]) -> int:
    """Elements in a tensor of this shape."""
    count = 1
    for dim in shape:
        count *= dim
    return count


def array_from_list(name: str, datatype: str, shape: tuple[int, ...], data: object) -> np.ndarray:
    """A JSON ``data`` list (flat or nested, row-major) as an array of the declared shape."""
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}': 'data' must be a list, got {type(data).__name__}")
    try:
        if datatype == "BYTES":
            array = np.array(data, dtype=object).ravel()
        else:
            array = np.asarray(data, dtype=dtype).ravel()
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput(f"input '{name}': data does not match datatype {datatype}: {error}") from None
    expected = element_count(shape)
    if array.size != expected:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {expected} elements, data has {array.size}"
        )
    return array.reshape(shape)


def check_against_model(tensor: InputTensor, spec: TensorSpec) -> None:
    """The datatype, rank and fixed dimensions of an input match what the model declares."""
    if tensor.datatype != spec.datatype:
        raise InvalidInput(
            f"input '{tensor.name}': datatype {tensor.datatype} does not match the model's {spec.datatype}"
        )
    if len(tensor.shape) != len(spec.shape):
        raise InvalidInput(
            f"input '{tensor.name}': shape {list(tensor.shape)} has rank {len(tensor.shape)}, "
            f"the model expects rank {len(spec.shape)} {list(spec.shape)}"
        )
    for axis, (got, want) in enumerate(zip(tensor.shape, spec.shape, strict=True)):
        if want not in (-1, got):
            raise InvalidInput(
                f"input '{tensor.name}': dimension {axis} is {got}, the model expects {want} "
                f"(shape {list(spec.shape)})"
            )
