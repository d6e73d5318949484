"""The baseline: a V2 inference endpoint the way a typical team first writes it.

FastAPI with a pydantic request model and a plain ``def`` endpoint (so it runs on the
thread pool), ``np.array`` on the JSON list, ``InferenceSession.run`` with default session
options and ``tolist()`` back into JSON. Nothing here is tuned on purpose: it is what the
server under test is compared with. Serves the one model named by the environment:

    NAIVE_MODEL_PATH=/path/model.onnx NAIVE_MODEL_NAME=mlp \
        uvicorn benchmarks.naive_server:app --workers 2 --no-access-log
"""

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

MODEL_PATH = os.environ.get("NAIVE_MODEL_PATH", "model.onnx")
MODEL_NAME = os.environ.get("NAIVE_MODEL_NAME", "model")

_V2_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.bool_): "BOOL",
}
_NUMPY_DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "BOOL": np.bool_,
}


class RequestInput(BaseModel):
    """One input tensor of a V2 request."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferenceRequest(BaseModel):
    """A V2 inference request."""

    id: str | None = None
    inputs: list[RequestInput]


class ResponseOutput(BaseModel):
    """One output tensor of a V2 response."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float | int | bool]


class InferenceResponse(BaseModel):
    """A V2 inference response."""

    model_name: str
    id: str | None = None
    outputs: list[ResponseOutput]


app = FastAPI(title="naive V2 server")
session = ort.InferenceSession(MODEL_PATH, providers=["CPUExecutionProvider"])


@app.get("/v2/health/ready")
def ready() -> dict[str, bool]:
    """Ready as soon as the module (and so the model) is loaded."""
    return {"ready": True}


@app.post("/v2/models/{model_name}/infer")
def infer(model_name: str, request: InferenceRequest) -> InferenceResponse:
    """Run the model on the request's inputs and return every output."""
    if model_name != MODEL_NAME:
        raise HTTPException(status_code=404, detail=f"model '{model_name}' not found")
    feeds: dict[str, np.ndarray] = {
        tensor.name: np.array(tensor.data, dtype=_NUMPY_DTYPES[tensor.datatype]).reshape(tensor.shape)
        for tensor in request.inputs
    }
    names = [output.name for output in session.get_outputs()]
    results = session.run(names, feeds)
    outputs = [
        ResponseOutput(
            name=name,
            shape=list(result.shape),
            datatype=_V2_DATATYPES[result.dtype],
            data=result.flatten().tolist(),
        )
        for name, result in zip(names, results, strict=True)
    ]
    return InferenceResponse(model_name=model_name, id=request.id, outputs=outputs)
