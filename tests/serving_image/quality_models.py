"""Small classifiers for the model-quality tests, converted by sklearn-onnx as the bundled models are."""

from pathlib import Path

import numpy as np
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression


def classifier(classes: list[int] | list[str], reference: str | None = None) -> onnx.ModelProto:
    """A logistic regression on 2 features whose class is the row's first feature rounded to an index.

    Row ``[k, 0]`` is predicted as ``classes[k]``: the tests know the prediction without running it.
    """
    x = np.array([[index, 0.0] for index in range(len(classes)) for _ in range(20)], dtype=np.float32)
    y = np.array([label for label in classes for _ in range(20)])
    fitted = LogisticRegression(C=1000.0, max_iter=2000).fit(x, y)
    model: onnx.ModelProto = convert_sklearn(
        fitted,
        initial_types=[("x", FloatTensorType([None, 2]))],
        options={id(fitted): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    if reference is not None:
        model.metadata_props.add(key="reference_accuracy", value=reference)
    return model


def write(model: onnx.ModelProto, path: Path) -> Path:
    """Save ``model`` as ``path`` (parents made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path
