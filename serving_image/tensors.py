"""Protocol-neutral inference requests and responses, and tensor checks against a model."""

import math
from dataclasses import dataclass, field

import numpy as np

from serving_image.datatypes import numpy_dtype
from serving_image.errors import InvalidInput, PayloadTooLarge
from serving_image.runtime import TensorSpec

ASYNC_PARAMETER = "async"
"""The V2 request parameter that asks for a queued job (``Prefer: respond-async`` is the header form)."""
CALLBACK_PARAMETER = "callback_url"
"""The V2 request parameter naming a job's completion callback."""


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
    asynchronous: bool = False
    """The request parameter ``async``: run it as a queued job and answer 202 with where to ask."""
    callback_url: str | None = None
    """The request parameter ``callback_url`` of a job (unchecked here): where its outcome is posted."""


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
    # The class output of every row, for a monitored classifier (serving_image/quality.py): whichever
    # outputs were asked for, it is what the store keeps for label feedback. Never sent.
    predicted: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TensorLimits:
    """Bounds on an input's shape, checked with integer arithmetic before any array is built."""

    max_rank: int = 16
    max_elements: int = 4 * 1024 * 1024


DEFAULT_LIMITS = TensorLimits()

# Python types a JSON (or gRPC contents) element may have for each kind of datatype. bool is
# not an int here: ``true`` sent as FP32 is a client bug, not 1.0.
_FLOAT_TYPES = frozenset({int, float})
_ALLOWED_TYPES: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
    **dict.fromkeys(("INT8", "INT16", "INT32", "INT64"), frozenset({int})),
    **dict.fromkeys(("UINT8", "UINT16", "UINT32", "UINT64"), frozenset({int})),
    **dict.fromkeys(("FP16", "FP32", "FP64"), _FLOAT_TYPES),
}


def check_shape(shape: object, name: str, limits: TensorLimits = DEFAULT_LIMITS) -> tuple[int, ...]:
    """A V2 shape: at most ``max_rank`` non-negative integers whose product is within ``max_elements``.

    The rank is checked first and the product stops growing at the limit, so a shape of
    thousands of huge dimensions costs no more than a short one.
    """
    if not isinstance(shape, list | tuple):
        raise InvalidInput(f"input '{name}': shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > limits.max_rank:
        raise InvalidInput(
            f"input '{name}': shape has {len(shape)} dimensions, the limit is {limits.max_rank}"
        )
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise InvalidInput(
                f"input '{name}': shape must be a list of non-negative integers, got {_clip(shape)}"
            )
        # Zeros count as ones: a shape like [0, 10**9, 10**9] holds nothing but still overflows numpy.
        # The product stays small: it is refused as soon as it passes the limit.
        count *= max(1, dim)
        if count > limits.max_elements:
            raise PayloadTooLarge(
                f"input '{name}': shape {_clip(shape)} exceeds the limit of {limits.max_elements} elements"
            )
    return tuple(shape)


def _clip(value: object, width: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}..."


def element_count(shape: tuple[int, ...]) -> int:
    """Elements in a tensor of this shape."""
    count = 1
    for dim in shape:
        count *= dim
    return count


def array_from_list(name: str, datatype: str, shape: tuple[int, ...], data: object) -> np.ndarray:
    """A JSON ``data`` list (flat or nested, row-major) as an array of the declared shape.

    Strict: every element must have the datatype's JSON type (numbers for FP, integers for
    INT and UINT, true/false for BOOL, strings for BYTES); the count is checked before numpy
    converts anything, and a value out of the datatype's range is refused, never wrapped.
    """
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}': 'data' must be a list, got {type(data).__name__}")
    flat = _flatten(name, data, len(shape))
    expected = element_count(shape)
    if len(flat) != expected:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {expected} elements, data has {len(flat)}"
        )
    _check_types(name, datatype, flat)
    try:
        with np.errstate(over="ignore"):  # overflow to inf is detected below, not warned about
            array = np.asarray(flat, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput(f"input '{name}': data does not fit datatype {datatype}: {error}") from None
    if dtype.kind == "f":
        _check_finite(name, datatype, flat, array)
    return reshape(name, array, shape)


def reshape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array.reshape(shape)``, with numpy's refusals (rank above 64, sizes that overflow) as a 400."""
    try:
        return array.reshape(shape)
    except ValueError as error:
        raise InvalidInput(f"input '{name}': cannot take shape {_clip(list(shape))}: {error}") from None


def _flatten(name: str, data: list[object], rank: int) -> list[object]:
    """Nested row-major data as one flat list; nesting deeper than the shape's rank is refused."""
    flat = data
    depth = 0
    while flat and type(flat[0]) is list:
        depth += 1
        if depth > rank:
            raise InvalidInput(f"input '{name}': 'data' is nested deeper than the shape's rank {rank}")
        if any(type(item) is not list for item in flat):
            raise InvalidInput(f"input '{name}': 'data' mixes lists and values at one level")
        flat = [item for inner in flat for item in inner]  # type: ignore[attr-defined]
    return flat


def _check_types(name: str, datatype: str, flat: list[object]) -> None:
    allowed = _ALLOWED_TYPES[datatype]
    found = set(map(type, flat))
    if found <= allowed:
        return
    bad = next(item for item in flat if type(item) not in allowed)
    got = f"{type(bad).__name__} {_clip(bad, 40)}"
    raise InvalidInput(f"input '{name}': {datatype} data must be {_describe(allowed)}, got {got}")


def _describe(allowed: frozenset[type]) -> str:
    if allowed is _FLOAT_TYPES:
        return "numbers"
    return {bool: "true or false", str: "strings", int: "integers"}[next(iter(allowed))]


def _check_finite(name: str, datatype: str, flat: list[object], array: np.ndarray) -> None:
    """A finite value that became infinite did not fit the datatype; NaN and inf sent as such may pass."""
    for index in np.flatnonzero(~np.isfinite(array)):
        value = flat[int(index)]
        if isinstance(value, int) or math.isfinite(value):  # type: ignore[arg-type]
            raise InvalidInput(f"input '{name}': value {_clip(value, 40)} is out of range for {datatype}")


def check_against_model(tensor: InputTensor, spec: TensorSpec) -> None:
    """The datatype, rank and fixed dimensions of an input match what the model declares."""
    check_against_spec(tensor.name, tensor.datatype, tensor.shape, spec)


def check_against_spec(name: str, datatype: str, shape: tuple[int, ...], spec: TensorSpec) -> None:
    """The datatype, rank and fixed dimensions of an input, before its data is decoded."""
    numpy_dtype(datatype)  # an unknown datatype is named as such, not as a mismatch
    if datatype != spec.datatype:
        raise InvalidInput(f"input '{name}': datatype {datatype} does not match the model's {spec.datatype}")
    if len(shape) != len(spec.shape):
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} has rank {len(shape)}, "
            f"the model expects rank {len(spec.shape)} {list(spec.shape)}"
        )
    for axis, want in enumerate(spec.shape):  # the ranks are equal here
        if want not in (-1, shape[axis]):
            raise InvalidInput(
                f"input '{name}': dimension {axis} is {shape[axis]}, the model expects {want} "
                f"(shape {list(spec.shape)})"
            )
