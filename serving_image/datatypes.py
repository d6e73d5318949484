"""The V2 protocol's tensor datatypes and their numpy and ONNX equivalents."""

import numpy as np

from serving_image.errors import InvalidInput

# V2 datatype -> numpy dtype. Little-endian explicitly: the binary extension is little-endian.
V2_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype("object"),
}

# ONNX Runtime's type strings for tensors -> V2 datatype.
ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_NUMPY_KIND_TO_V2 = {dtype.str: name for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype of a V2 datatype; an unknown datatype is the client's error."""
    try:
        return V2_TO_NUMPY[datatype]
    except KeyError:
        raise InvalidInput(f"unknown datatype '{datatype}'") from None


def v2_datatype(array: np.ndarray) -> str:
    """The V2 datatype of a numpy array produced by a model."""
    if array.dtype.kind in "OUS":
        return "BYTES"
    return _NUMPY_KIND_TO_V2[array.dtype.str]
