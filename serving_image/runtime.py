"""ONNX Runtime: the only module that imports it."""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serving_image.datatypes import ONNX_TO_V2, numpy_dtype
from serving_image.onnx_graph import ClassOutput, find_class_output

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
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        """The graph's ``metadata_props`` (the drift profile's hash: serving_image/drift_profile.py)."""
        self.class_output: ClassOutput | None = _class_output(path, self._output_names)
        """The classifier's predicted-class output and its classes (serving_image/quality.py), or None."""
        # Whether every tensor has a dynamic first dimension, so requests can be stacked.
        self.batchable = all(spec.shape[:1] == (-1,) for spec in (*self.inputs, *self.outputs))
        self.warmed: tuple[int, ...] = ()
        """The batch sizes that have run once, in the order they ran (see ``warm_up``)."""
        self.warm_up_error: Exception | None = None
        """What the failed warm-up run raised, with its traceback, for the caller to log; or None."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One ONNX Runtime run; releases the GIL while it computes."""
        outputs: list[np.ndarray] = self._session.run(self._output_names, feeds)
        return outputs

    def warm_up(self, batch_sizes: Iterable[int]) -> str | None:
        """Run zeros once at each batch size, before the model takes traffic; why not, if it could not.

        ONNX Runtime plans memory and grows its arena on the first run of each input shape,
        so the first request of every new batch size would otherwise pay for it (Triton's
        model warm-up does the same). Inputs with a dynamic non-batch dimension or strings
        have no shape to warm up with; a model that fails on zeros still serves, cold, and
        ``warm_up_error`` keeps what the failed run raised.
        """
        if any(-1 in spec.shape[1:] or spec.datatype == "BYTES" for spec in self.inputs):
            return "inputs with dynamic non-batch dimensions or BYTES cannot be warmed up with zeros"
        sizes = list(batch_sizes) if self.batchable else [1]
        warmed: list[int] = []
        for rows in sizes:
            feeds = {
                spec.name: np.zeros((rows, *spec.shape[1:]) if self.batchable else spec.shape,
                                    dtype=numpy_dtype(spec.datatype))
                for spec in self.inputs
            }  # fmt: skip
            try:
                self.run(feeds)
            except Exception as error:  # ORT raises several unrelated types
                self.warmed, self.warm_up_error = tuple(warmed), error
                return f"warm-up at batch size {rows} failed: {str(error).strip().splitlines()[-1]}"
            warmed.append(rows)
        self.warmed = tuple(warmed)
        return None


def _class_output(path: Path, outputs: list[str]) -> ClassOutput | None:
    """Read from the graph once, at load; an output the session does not return is no class output."""
    try:
        found = find_class_output(path.read_bytes())
    except OSError:
        return None
    return found if found is not None and found.output in outputs else None


def warm_up_sizes(max_batch_size: int, every_size_up_to: int) -> list[int]:
    """The batch sizes a model is warmed up at: each size up to ``every_size_up_to``, then powers of two.

    The batcher can form any size up to ``max_batch_size``; past ``every_size_up_to`` only the
    powers of two and the maximum run, which bounds the start-up time of models with large batches.
    """
    top = max(1, max_batch_size)
    powers = {1 << k for k in range(top.bit_length()) if 1 << k < top}
    return sorted(set(range(1, min(top, every_size_up_to) + 1)) | powers | {top})
