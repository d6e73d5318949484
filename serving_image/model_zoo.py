"""Training, conversion, quantization and measurement for the bundled demo models.

Pure helpers used by :mod:`serving_image.build_models`; nothing here writes to the model
repository except :func:`quantize_int8`, whose output must be a file.
"""

import logging
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.quantization import QuantType, quantize_dynamic
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

N_FEATURES = 30
N_CLASSES = 2
INPUT_NAME = "features"
LABEL_NAME = "label"
PROBABILITIES_NAME = "probabilities"
SPLIT_SEED = 20240601
MODEL_SEED = 7
TEST_FRACTION = 0.25
# An upper bound, not the opset written: skl2onnx emits the lowest opset each converter needs
# (ai.onnx 14, ai.onnx.ml 1 today), which every onnxruntime >= 1.10 loads.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# skl2onnx names the graph with uuid4() unless told otherwise, which breaks reproducible bytes.
GRAPH_NAME = "tabular_classifier"

Features = NDArray[np.float32]
Labels = NDArray[np.int64]


def _no_ids() -> NDArray[np.int64]:
    return np.empty(0, dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A fixed, stratified split of labelled rows (the bundled ones: the breast-cancer patients)."""

    x_train: Features
    """Training rows, float32 like the wire format."""
    y_train: Labels
    """Training labels (0 malignant, 1 benign)."""
    x_test: Features
    """Held-out rows every accuracy figure is measured on."""
    y_test: Labels
    """Held-out labels."""
    ids_train: NDArray[np.int64] = field(default_factory=_no_ids)
    """The entity (``patient_id``) of each training row, when the rows came from the feature store."""
    ids_test: NDArray[np.int64] = field(default_factory=_no_ids)
    """The entity of each held-out row, likewise."""
    feature_service: str | None = None
    """The feature service the rows were read through, if any."""
    feature_service_version: str | None = None
    """That service's version (:func:`serving_image.features.definition.service_version`)."""


def load_dataset(feature_repo: Path | None = None, service: str | None = None) -> Dataset:
    """The labelled patients' rows read through ``service`` of the feature repository (Feast's
    point-in-time join on the labels' timestamps), split with :data:`SPLIT_SEED`; same rows on every call.

    The defaults are the bundled repository (built by ``make setup``) and version 1's service. The rows
    are scikit-learn's breast-cancer data as float32, so the fitted model sees exactly the values the
    FP32 ONNX input carries; a later correction in the store is not seen (it postdates every label).
    """
    from serving_image.features import repository, training
    from serving_image.features.schema import service_name

    repo = repository.DEFAULT_REPO if feature_repo is None else feature_repo
    name = service if service is not None else service_name("tabular-classifier", "1")
    store = repository.open_store(repo)
    entities = training.read_labels(repo / repository.DATA_DIR / repository.LABELS_FILE)
    rows = training.historical_rows(store, name, entities)
    return split_rows(rows.ids, rows.x, rows.y, service=rows.service, version=rows.version)


def split_rows(
    ids: NDArray[np.int64], x: Features, y: Labels, *, service: str | None = None, version: str | None = None
) -> Dataset:
    """The fixed, stratified split of labelled rows (the split depends only on the labels and the seed)."""
    x_train, x_test, y_train, y_test, ids_train, ids_test = train_test_split(
        x, y, ids, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        ids_train=ids_train,
        ids_test=ids_test,
        feature_service=service,
        feature_service_version=version,
    )


def feature_names() -> list[str]:
    """The dataset's column names in snake_case ("mean radius" is ``mean_radius``), in input order."""
    names = load_breast_cancer().feature_names
    return [str(name).strip().replace(" ", "_") for name in names]


def train_logistic(data: Dataset) -> Pipeline:
    """Version 1: StandardScaler followed by a logistic regression."""
    return _fit(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), data)


def train_mlp(data: Dataset) -> Pipeline:
    """Version 2: StandardScaler followed by a (64, 32) ReLU perceptron; converges in ~250 epochs."""
    mlp = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=600, random_state=MODEL_SEED)
    return _fit(make_pipeline(StandardScaler(), mlp), data)


def _fit(pipeline: Pipeline, data: Dataset) -> Pipeline:
    # One BLAS thread: multithreaded reductions may sum in a different order on a machine with
    # more cores, and then the weights (and the model's sha256) would differ from this build's.
    with threadpool_limits(limits=1):
        return pipeline.fit(data.x_train, data.y_train)


def count_parameters(pipeline: Pipeline) -> int:
    """Learned numbers in a fitted pipeline: scaler statistics plus the estimator's weights and biases."""
    arrays: list[Any] = []
    for _, step in pipeline.steps:
        for attribute in ("mean_", "scale_", "coef_", "intercept_"):
            if getattr(step, attribute, None) is not None:
                arrays.append(getattr(step, attribute))
        arrays.extend(getattr(step, "coefs_", []))
        arrays.extend(getattr(step, "intercepts_", []))
    return int(sum(np.asarray(array).size for array in arrays))


def to_onnx(pipeline: Pipeline) -> onnx.ModelProto:
    """The fitted pipeline as an ONNX graph with the serving contract's names, types and shapes."""
    estimator = pipeline.steps[-1][1]
    model: onnx.ModelProto = convert_sklearn(
        pipeline,
        name=GRAPH_NAME,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
        final_types=[
            (LABEL_NAME, Int64TensorType([None])),
            (PROBABILITIES_NAME, FloatTensorType([None, N_CLASSES])),
        ],
        # Without this the probabilities come out as a sequence of maps, which V2 cannot carry.
        options={id(estimator): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    _sort_opset_imports(model)
    return model


def _sort_opset_imports(model: onnx.ModelProto) -> None:
    # skl2onnx collects the opsets in a set of (domain, version) pairs, so their order (and the
    # file's sha256) follows PYTHONHASHSEED; sorting makes the bytes the same in every process.
    opsets = sorted(model.opset_import, key=lambda opset: opset.domain)
    pairs = [(opset.domain, opset.version) for opset in opsets]
    del model.opset_import[:]
    for domain, opset_version in pairs:
        model.opset_import.add(domain=domain, version=opset_version)


def quantize_int8(model: onnx.ModelProto, destination: Path) -> None:
    """Write an int8 dynamically quantized copy of ``model`` (MatMul weights as QInt8) to ``destination``.

    No ``quant_pre_process`` step: its onnxruntime optimisation pass fuses the skl2onnx graph into
    nodes the quantizer can no longer type ("Unable to find data type for weight_name"), its symbolic
    shape inference needs sympy, and the unprocessed graph (plain MatMul/Add) quantizes cleanly.
    """
    with _without_preprocess_hint():
        quantize_dynamic(model, destination, weight_type=QuantType.QInt8)


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _without_preprocess_hint() -> Iterator[None]:
    # quantize_dynamic logs this advice on the root logger every time; quantize_int8's docstring
    # explains why it does not apply, so it would only mislead whoever reads the build output.
    root = logging.getLogger()
    hint_filter = _DropPreprocessHint()
    root.addFilter(hint_filter)
    try:
        yield
    finally:
        root.removeFilter(hint_filter)


def open_session(model_bytes: bytes) -> ort.InferenceSession:
    """A single-threaded CPU session, so latencies compare graphs rather than thread scheduling."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])


def predict(session: ort.InferenceSession, x: Features) -> tuple[Labels, Features]:
    """Labels and class probabilities for the rows of ``x``."""
    labels, probabilities = session.run([LABEL_NAME, PROBABILITIES_NAME], {INPUT_NAME: x})
    return np.asarray(labels, dtype=np.int64), np.asarray(probabilities, dtype=np.float32)


def accuracy(session: ort.InferenceSession, data: Dataset) -> float:
    """Share of held-out rows the ONNX graph labels correctly."""
    labels, _ = predict(session, data.x_test)
    return float(np.mean(labels == data.y_test))


def median_latency_us(session: ort.InferenceSession, x: Features, runs: int, warmup: int = 20) -> float:
    """Median wall time of one ``run`` on ``x``, in microseconds, after ``warmup`` discarded runs."""
    feed = {INPUT_NAME: x}
    for _ in range(warmup):
        session.run(None, feed)
    samples: list[float] = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        session.run(None, feed)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(samples)
