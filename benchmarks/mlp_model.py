"""A ~1M-parameter MLP in ONNX, built from fixed-seed weights so every run serves the same model."""

from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_NAME = "features"
OUTPUT_NAME = "logits"
LAYER_WIDTHS: tuple[int, ...] = (256, 1024, 512, 256, 10)
# Opset 17 and IR 8 load in every onnxruntime this project allows, whatever onnx writes by default.
OPSET = 17
IR_VERSION = 8


def parameter_count(widths: tuple[int, ...] = LAYER_WIDTHS) -> int:
    """Weights plus biases of the dense layers between consecutive ``widths``."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in pairwise(widths))


def build_mlp(widths: tuple[int, ...] = LAYER_WIDTHS, seed: int = 0) -> onnx.ModelProto:
    """Dense layers (Gemm) with ReLU between them: ``features`` [batch, widths[0]] to ``logits``."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    previous = INPUT_NAME
    layers = list(pairwise(widths))
    for index, (fan_in, fan_out) in enumerate(layers):
        # He initialisation keeps activations in range, so the logits are ordinary numbers.
        weight = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out)).astype(np.float32)
        bias = np.zeros(fan_out, dtype=np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{index}"),
            numpy_helper.from_array(bias, f"b{index}"),
        ]
        last = index == len(layers) - 1
        dense = OUTPUT_NAME if last else f"dense{index}"
        nodes.append(helper.make_node("Gemm", [previous, f"w{index}", f"b{index}"], [dense]))
        if not last:
            nodes.append(helper.make_node("Relu", [dense], [f"relu{index}"]))
            previous = f"relu{index}"
    graph = helper.make_graph(
        nodes,
        "benchmark_mlp",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", widths[0]])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", widths[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_mlp(path: Path, seed: int = 0) -> int:
    """Write the MLP to ``path`` (creating its folder) and return its parameter count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(build_mlp(seed=seed), path)
    return parameter_count()
