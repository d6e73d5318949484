"""The models under test, each in a model repository of its own, and the one request sent to them."""

import base64
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.mlp_model import write_mlp

ROOT = Path(__file__).resolve().parent.parent
TABULAR_SOURCE = ROOT / "serving_image" / "models" / "tabular-classifier" / "1" / "model.onnx"
MODEL_NAMES = ("tabular", "mlp")
# Batching on with no added delay: the server may merge what is already queued, but never waits.
CONFIG_YAML = "max_batch_size: 64\nmax_queue_delay_ms: 0\nmax_queue_size: 1024\n"
REQUEST_SEED = 7


class MissingModelError(Exception):
    """A model the benchmark needs has not been built."""


@dataclass(frozen=True, slots=True)
class BenchModel:
    """One model as the benchmark serves it."""

    name: str
    """The model's name in the repository and in request URLs."""
    description: str
    """What it is, for the report."""
    repository: Path
    """A model repository that holds this model only."""
    input_name: str
    """The name of its single FP32 input."""
    features: int
    """The width of one input row."""

    @property
    def onnx_path(self) -> Path:
        """The model file (version 1)."""
        return self.repository / self.name / "1" / "model.onnx"


def _install(name: str, repository: Path) -> Path:
    version_dir = repository / name / "1"
    version_dir.mkdir(parents=True)
    (repository / name / "config.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    return version_dir / "model.onnx"


def _describe(name: str, repository: Path, description: str) -> BenchModel:
    path = repository / name / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    return BenchModel(name, description, repository, first.name, int(first.shape[1]))


def prepare_model(name: str, workdir: Path, tabular_source: Path = TABULAR_SOURCE) -> BenchModel:
    """Build or copy ``name`` into ``workdir/repo-<name>`` and describe it."""
    repository = workdir / f"repo-{name}"
    target = _install(name, repository)
    if name == "tabular":
        if not tabular_source.exists():
            raise MissingModelError(f"{tabular_source} is missing: run `make models` first")
        shutil.copyfile(tabular_source, target)
        return _describe(name, repository, "bundled tabular-classifier")
    if name == "mlp":
        parameters = write_mlp(target)
        return _describe(name, repository, f"MLP 256-1024-512-256-10, {parameters:,} parameters")
    raise ValueError(f"unknown model '{name}'; choose from {', '.join(MODEL_NAMES)}")


def empty_repository(workdir: Path) -> Path:
    """A model repository with no models, to measure the server's own memory."""
    repository = workdir / "repo-empty"
    repository.mkdir()
    return repository


def request_row(features: int, seed: int = REQUEST_SEED) -> np.ndarray:
    """One [1, features] FP32 row, rounded to 6 decimals so the JSON text and the array agree."""
    values = np.round(np.random.default_rng(seed).normal(size=(1, features)), 6)
    return values.astype(np.float32)


def v2_json_body(model: BenchModel, row: np.ndarray) -> str:
    """The V2 REST inference request for ``row``."""
    data = [round(float(value), 6) for value in row.ravel()]
    tensor = {"name": model.input_name, "shape": list(row.shape), "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}, separators=(",", ":"))


def v2_grpc_request(model: BenchModel, row: np.ndarray) -> dict[str, object]:
    """The V2 gRPC ``ModelInferRequest`` for ``row`` in protobuf's JSON mapping (bytes as base64)."""
    raw = base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    tensor = {"name": model.input_name, "datatype": "FP32", "shape": list(row.shape)}
    return {"model_name": model.name, "inputs": [tensor], "raw_input_contents": [raw]}
