"""Request payloads generated from a model's V2 metadata (`GET /v2/models/{m}`): any model, no fixtures.

Dimensions of -1 take the number of rows asked for; values are random in a small range of the tensor's
datatype, so the payloads are valid for the model without knowing what it computes.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

_NUMPY = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


class PayloadError(ValueError):
    """Metadata this generator cannot serve (an unsupported datatype or shape)."""


@dataclass(frozen=True, kw_only=True)
class Tensor:
    """One input tensor, ready for either protocol."""

    name: str
    datatype: str
    data: npt.NDArray[Any]


def numpy_dtype(datatype: str) -> Any:
    """The numpy type of a V2 datatype."""
    if datatype not in _NUMPY:
        raise PayloadError(f"datatype {datatype} is not generated")
    return _NUMPY[datatype]


def input_shape(shape: list[int], rows: int) -> list[int]:
    """The metadata's shape with every variable dimension (-1) set to `rows`."""
    return [rows if dim < 0 else dim for dim in shape]


def tensors(metadata: Mapping[str, Any], rows: int, rng: np.random.Generator) -> list[Tensor]:
    """Random valid inputs for every input the metadata lists."""
    out = []
    for spec in metadata["inputs"]:
        datatype = spec["datatype"]
        if datatype not in _NUMPY:
            raise PayloadError(f"input {spec['name']}: datatype {datatype} is not generated")
        shape = input_shape([int(d) for d in spec["shape"]], rows)
        dtype = _NUMPY[datatype]
        data: npt.NDArray[Any]
        if datatype == "BOOL":
            data = rng.integers(0, 2, size=shape).astype(dtype)
        elif datatype.startswith(("INT", "UINT")):
            data = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            data = rng.normal(0.0, 1.0, size=shape).astype(dtype)
        out.append(Tensor(name=spec["name"], datatype=datatype, data=data))
    return out


def rest_body(inputs: list[Tensor]) -> dict[str, Any]:
    """The V2 JSON inference request for `inputs`."""
    return {
        "inputs": [
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": list(t.data.shape),
                "data": t.data.ravel().tolist(),
            }
            for t in inputs
        ]
    }
