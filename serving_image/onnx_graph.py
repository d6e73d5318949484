"""The classifier in an ONNX graph: its classes and the graph output that carries the predicted class.

ONNX Runtime does not expose a graph's nodes, and the ``onnx`` package is not a serving dependency, so
the few messages needed are declared here (field numbers as in onnx.proto; everything else in the file
is skipped by the parser) in a private descriptor pool, and the file is parsed once, at load.

Two shapes of classifier are recognised, both as sklearn-onnx writes them:
- a node with a ``classlabels_ints`` or ``classlabels_strings`` attribute (``LinearClassifier``,
  ``TreeEnsembleClassifier``, ``SVMClassifier``, ...): its first output is the predicted class;
- an ``ArrayFeatureExtractor`` whose data input is a constant 1-D tensor of classes (how sklearn-onnx
  converts ``MLPClassifier`` and other estimators without an ONNX-ML classifier op), indexed by an argmax.
Either way the predicted class reaches a graph output through ``Cast`` (and, for the second,
``Reshape`` or ``Identity``) nodes; that graph output is the class output.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

# Nodes the predicted class may pass through on its way to a graph output, unchanged in meaning.
_PASS_THROUGH = frozenset({"Cast", "Identity", "Reshape"})
_INT32, _INT64, _STRING = 6, 7, 8  # TensorProto.DataType


@dataclass(frozen=True, slots=True)
class ClassOutput:
    """A classifier's graph output (one predicted class per row) and its classes, in the graph's order."""

    output: str
    classes: tuple[int, ...] | tuple[str, ...]


# message -> [(field, number, a scalar type's name or a message of this file, repeated)], as in onnx.proto.
_LAYOUT: dict[str, list[tuple[str, int, str, bool]]] = {
    "Tensor": [
        ("dims", 1, "int64", True), ("data_type", 2, "int32", False), ("int32_data", 5, "int32", True),
        ("string_data", 6, "bytes", True), ("int64_data", 7, "int64", True), ("name", 8, "string", False),
        ("raw_data", 9, "bytes", False),
    ],
    "Attribute": [("name", 1, "string", False), ("ints", 8, "int64", True), ("strings", 9, "bytes", True)],
    "Node": [
        ("input", 1, "string", True), ("output", 2, "string", True), ("op_type", 4, "string", False),
        ("attribute", 5, "Attribute", True),
    ],
    "ValueInfo": [("name", 1, "string", False)],
    "Graph": [
        ("node", 1, "Node", True), ("initializer", 5, "Tensor", True), ("output", 12, "ValueInfo", True),
    ],
    "Model": [("graph", 7, "Graph", False)],
}  # fmt: skip


def _message_classes() -> Any:
    """ModelProto with only the fields read here, built in a pool of its own (no clash with onnx's)."""
    field = descriptor_pb2.FieldDescriptorProto
    scalars = {"int32": field.TYPE_INT32, "int64": field.TYPE_INT64, "string": field.TYPE_STRING,
               "bytes": field.TYPE_BYTES}  # fmt: skip
    file = descriptor_pb2.FileDescriptorProto(
        name="serving_image/onnx_subset.proto", package="onnx_subset", syntax="proto2"
    )
    for name, fields in _LAYOUT.items():
        described = file.message_type.add(name=name)
        for field_name, number, kind, repeated in fields:
            entry = described.field.add(name=field_name, number=number)
            entry.label = field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL
            if kind in scalars:
                entry.type = scalars[kind]
            else:
                entry.type, entry.type_name = field.TYPE_MESSAGE, f".onnx_subset.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("onnx_subset.Model"))


_Model = _message_classes()


def find_class_output(model_bytes: bytes) -> ClassOutput | None:
    """The graph's class output, or None (no classifier, or its prediction reaches no graph output)."""
    try:
        graph = _Model.FromString(model_bytes).graph
    except message.DecodeError:
        return None
    outputs = {value.name for value in graph.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        if node.input:
            consumers.setdefault(node.input[0], []).append(node)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        classes = _classes(node, constants)
        if classes is None or not node.output:
            continue
        output = _reaches_output(node.output[0], outputs, consumers)
        if output is not None:
            return ClassOutput(output, classes)
    return None


def _classes(node: Any, constants: dict[str, Any]) -> tuple[int, ...] | tuple[str, ...] | None:
    for attribute in node.attribute:
        if attribute.name == "classlabels_ints":
            return tuple(int(value) for value in attribute.ints)
        if attribute.name == "classlabels_strings":
            return tuple(value.decode("utf-8") for value in attribute.strings)
    if node.op_type == "ArrayFeatureExtractor" and len(node.input) == 2 and node.input[0] in constants:
        return _constant_classes(constants[node.input[0]])
    return None


def _constant_classes(tensor: Any) -> tuple[int, ...] | tuple[str, ...] | None:
    if len(tensor.dims) != 1:
        return None
    if tensor.data_type == _STRING:
        return tuple(value.decode("utf-8") for value in tensor.string_data)
    if tensor.data_type in (_INT32, _INT64):
        stored = tensor.int32_data if tensor.data_type == _INT32 else tensor.int64_data
        raw = "<i4" if tensor.data_type == _INT32 else "<i8"
        values: Iterable[int] = stored or np.frombuffer(tensor.raw_data, dtype=raw).tolist()
        return tuple(int(value) for value in values)
    return None


def _reaches_output(name: str, outputs: set[str], consumers: dict[str, list[Any]]) -> str | None:
    """Follow ``name`` through pass-through nodes to a graph output; None if it forks or ends elsewhere."""
    for _ in range(16):  # a real chain is one or two Casts; the bound keeps a cyclic file from looping
        if name in outputs:
            return name
        onward = [node for node in consumers.get(name, []) if node.op_type in _PASS_THROUGH and node.output]
        if len(onward) != 1:
            return None
        name = onward[0].output[0]
    return None
