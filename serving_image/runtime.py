"""ONNX Runtime: the only module that imports it."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serving_image.datatypes import ONNX_TO_V2

PLATFORM = "onnxruntime_onnx"
RUNTIME_VERSION: str = ort.__version__


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output as the V2 protocol describes it; -1 marks a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, object]:
        """The V2 ``$metadata_tensor`` object."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class ModelLoadError(Exception):
    """The ONNX file could not be loaded; the message says why."""


def _spec(node: ort.NodeArg) -> TensorSpec:
    datatype = ONNX_TO_V2.get(node.type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{node.name}' has unsupported type {node.type}")
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape)
    return TensorSpec(node.name, datatype, shape)


class OnnxModel:
    """One loaded ONNX graph with its input and output specs read from the graph itself."""

    def __init__(self, path: Path, intra_op_threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads would otherwise spin after every run, burning the cores that
        # the event loop, the other workers and the other models need between requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # ORT raises several unrelated types for a bad file
            raise ModelLoadError(str(error).strip().splitlines()[-1]) from error
        self.inputs = tuple(_spec(node) for node in self._session.get_inputs())
        self.outputs = tuple(_spec(node) for node in self._session.get_outputs())
        self._output_names = [spec.name for spec in self.outputs]
        # Whether every tensor has a dynamic first dimension, so requests can be stacked.
        self.batchable = all(spec.shape[:1] == (-1,) for spec in (*self.inputs, *self.outputs))

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One ONNX Runtime run; releases the GIL while it computes."""
        outputs: list[np.ndarray] = self._session.run(self._output_names, feeds)
        return outputs
