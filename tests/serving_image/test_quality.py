"""Model quality, in process: the class output read from the graph, label parsing, and the counting."""

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from prometheus_client import CollectorRegistry

from serving_image import onnx_graph
from serving_image.errors import InvalidInput, ServingError
from serving_image.feedback import MAX_KEPT_ROWS, PredictionNotKept, Served, parse_feedback
from serving_image.metrics import Metrics
from serving_image.onnx_graph import ClassOutput, find_class_output
from serving_image.quality import MAX_CLASSES, NUMPY_ROWS, QualityMonitor, reference_accuracy
from serving_image.repository import ModelVersion
from serving_image.runtime import OnnxModel
from tests.serving_image.conftest import doubler_graph, save_model
from tests.serving_image.quality_models import classifier, write


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        # LinearClassifier, then Cast to the graph output.
        ("tabular-classifier/1/model.onnx", ClassOutput("label", (0, 1))),
        # MLPClassifier: ArrayFeatureExtractor over a constant of classes, then Reshape and Casts.
        ("tabular-classifier/2/model.onnx", ClassOutput("label", (0, 1))),
        ("tabular-classifier-int8/1/model.onnx", ClassOutput("label", (0, 1))),
    ],
)
def test_class_output_of_the_bundled_models(
    bundled_models: Path, relative: str, expected: ClassOutput
) -> None:
    found = find_class_output((bundled_models / relative).read_bytes())
    assert found == expected, f"{relative}: found {found}"


def test_string_classes_are_read_from_classlabels_strings() -> None:
    found = find_class_output(classifier(["cat", "dog", "owl"]).SerializeToString())
    assert found == ClassOutput("label", ("cat", "dog", "owl")), found


@pytest.mark.parametrize(
    ("model_bytes", "why"),
    [
        (b"\xff\xff not an onnx file", "undecodable bytes"),
        (onnx.helper.make_model(doubler_graph()).SerializeToString(), "no classifier"),
    ],
)
def test_no_class_output(model_bytes: bytes, why: str) -> None:
    assert find_class_output(model_bytes) is None, why


def test_a_classifier_whose_label_feeds_no_graph_output_has_no_class_output() -> None:
    model = classifier([0, 1])
    graph = model.graph
    kept = [output for output in graph.output if output.name != "label"]
    del graph.output[:]
    graph.output.extend(kept)
    assert find_class_output(model.SerializeToString()) is None, "only the probabilities leave the graph"


def test_the_subset_s_field_numbers_are_onnx_s() -> None:
    # The private messages must read the same wire fields as onnx.proto declares.
    ours = {
        message.name: message for message in onnx_graph._Model.DESCRIPTOR.file.message_types_by_name.values()
    }
    theirs: dict[str, Any] = {
        "Model": onnx.ModelProto,
        "Graph": onnx.GraphProto,
        "Node": onnx.NodeProto,
        "Attribute": onnx.AttributeProto,
        "ValueInfo": onnx.ValueInfoProto,
        "Tensor": onnx.TensorProto,
    }
    for name, reference in theirs.items():
        for field in ours[name].fields:
            assert reference.DESCRIPTOR.fields_by_name[field.name].number == field.number, (
                f"{name}.{field.name}"
            )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"version": "1", "label": 1}, "'label' needs 'request_id'"),
        ({"request_id": "r", "label": 1, "converted": True}, "exactly one of 'converted'"),
        ({"request_id": "r", "label": []}, "'label' is an empty list"),
        ({"request_id": "r", "label": [0] * (MAX_KEPT_ROWS + 1)}, f"at most {MAX_KEPT_ROWS}"),
        ({"request_id": "r", "label": True}, "'label' must be a class"),
        ({"request_id": "r", "label": 1.5}, "'label' must be a class"),
        ({"request_id": "r", "label": [1, None]}, "'label' must be a class"),
        ({"request_id": "r", "label": [[1]]}, "'label' must be a class"),
        ({"request_id": "r", "label": ""}, "a string 'label' must have 1 to 256 characters"),
    ],
)
def test_bad_labels_are_rejected(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_feedback(document)
    assert message in raised.value.message, raised.value.message


@pytest.mark.parametrize(("label", "parsed"), [(1, (1,)), ("cat", ("cat",)), ([0, 1, 1], (0, 1, 1))])
def test_labels_parse_to_one_class_per_row(label: object, parsed: tuple[object, ...]) -> None:
    feedback = parse_feedback({"request_id": "r", "label": label})
    assert (feedback.label, feedback.kind, feedback.version) == (parsed, "label", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.958042", 0.958042),
        (None, "no 'reference_accuracy'"),
        ("high", "not a number"),
        ("1.5", "outside 0..1"),
    ],
)
def test_reference_accuracy(text: str | None, expected: float | str) -> None:
    found = reference_accuracy({} if text is None else {"reference_accuracy": text})
    if isinstance(expected, float):
        assert found == expected
    else:
        assert isinstance(found, str) and expected in found, found


def loaded(path: Path) -> ModelVersion:
    return ModelVersion("m", "1", path, runtime=OnnxModel(path, intra_op_threads=1))


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_monitored_version_starts_at_zero_with_its_floor(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    monitor = QualityMonitor(metrics)
    version = loaded(write(classifier([0, 1], reference="0.9"), tmp_path / "model.onnx"))
    assert monitor.register("m", version, margin=0.05) is None
    labels = {"model": "m", "version": "1"}
    assert value(metrics, "serving_quality_monitored", **labels) == 1
    assert value(metrics, "serving_quality_accuracy_floor", **labels) == pytest.approx(0.85)
    for outcome in ("correct", "incorrect"):
        assert value(metrics, "serving_quality_labels_total", **labels, outcome=outcome) == 0, outcome
    for actual in ("0", "1"):
        for predicted in ("0", "1"):
            cell = {**labels, "actual": actual, "predicted": predicted}
            assert value(metrics, "serving_quality_confusion_total", **cell) == 0, cell


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: save_model(doubler_graph(), path), "no class output"),
        (
            lambda path: write(classifier(list(range(MAX_CLASSES + 1))), path),
            f"1 to {MAX_CLASSES} are monitored",
        ),
    ],
)
def test_versions_that_are_not_monitored(tmp_path: Path, make: Any, reason: str) -> None:
    metrics = Metrics(CollectorRegistry())
    monitor = QualityMonitor(metrics)
    path = tmp_path / "model.onnx"
    make(path)
    found = monitor.register("m", loaded(path), margin=0.05)
    assert found is not None and reason in found, found
    assert value(metrics, "serving_quality_monitored", model="m", version="1") == 0
    assert monitor.version("m", "1") is None


def test_without_a_reference_the_floor_is_not_exported(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    monitor = QualityMonitor(metrics)
    assert monitor.register("m", loaded(write(classifier([0, 1]), tmp_path / "model.onnx")), 0.05) is None
    assert value(metrics, "serving_quality_monitored", model="m", version="1") == 1
    assert value(metrics, "serving_quality_accuracy_floor", model="m", version="1") is None


@pytest.fixture
def strings(tmp_path: Path) -> tuple[Metrics, QualityMonitor]:
    metrics = Metrics(CollectorRegistry())
    monitor = QualityMonitor(metrics)
    monitor.register("m", loaded(write(classifier(["cat", "dog", "owl"]), tmp_path / "model.onnx")), 0.05)
    return metrics, monitor


def test_predictions_are_kept_as_class_indices_up_to_the_row_limit(
    strings: tuple[Metrics, QualityMonitor],
) -> None:
    quality = strings[1].version("m", "1")
    assert quality is not None
    assert quality.predicted(np.array(["owl", "cat"], dtype=object)) == bytes([2, 0])
    assert quality.predicted(np.array(["cat"] * (MAX_KEPT_ROWS + 1), dtype=object)) is None, "too many rows"
    assert quality.predicted(np.array(["emu"], dtype=object)) is None, "a class the graph does not name"


def test_labels_count_correct_incorrect_and_the_confusion_cell(
    strings: tuple[Metrics, QualityMonitor],
) -> None:
    metrics, monitor = strings
    quality = monitor.version("m", "1")
    assert quality is not None
    served = Served("m", "1", None, predicted=bytes([0, 1, 2]), rows=3)
    judged = quality.judge(served, ("cat", "owl", "owl"), "m")
    assert (judged.correct, judged.rows) == (2, 3)
    labels = {"model": "m", "version": "1"}
    assert value(metrics, "serving_quality_labels_total", **labels, outcome="correct") == 2
    assert value(metrics, "serving_quality_labels_total", **labels, outcome="incorrect") == 1
    cell = {**labels, "actual": "owl", "predicted": "dog"}
    assert value(metrics, "serving_quality_confusion_total", **cell) == 1


@pytest.mark.parametrize(
    ("served", "labels", "error", "message"),
    [
        (Served("m", "1", None, predicted=None, rows=65), ("cat",), PredictionNotKept, "request had 65 rows"),
        (Served("m", "1", None, predicted=bytes([0, 1]), rows=2), ("cat",), InvalidInput,
         "1 class(es) for a request of 2 row(s)"),
        (Served("m", "1", None, predicted=bytes([0]), rows=1), ("emu",), InvalidInput,
         "its classes are ['cat', 'dog', 'owl']"),
        (Served("m", "1", None, predicted=bytes([0]), rows=1), (0,), InvalidInput, "label 0 is not a class"),
    ],
)  # fmt: skip
def test_labels_that_cannot_be_compared_count_nothing(
    strings: tuple[Metrics, QualityMonitor],
    served: Served,
    labels: tuple[Any, ...],
    error: type[ServingError],
    message: str,
) -> None:
    metrics, monitor = strings
    quality = monitor.version("m", "1")
    assert quality is not None
    with pytest.raises(error) as raised:
        quality.judge(served, labels, "m")
    assert message in raised.value.message, raised.value.message
    for outcome in ("correct", "incorrect"):
        assert value(metrics, "serving_quality_labels_total", model="m", version="1", outcome=outcome) == 0


@pytest.mark.parametrize("rows", [1, NUMPY_ROWS, NUMPY_ROWS + 1, MAX_KEPT_ROWS])
def test_integer_predictions_map_to_indices_by_loop_and_by_numpy(tmp_path: Path, rows: int) -> None:
    monitor = QualityMonitor(Metrics(CollectorRegistry()))
    monitor.register("m", loaded(write(classifier([7, 3, 5]), tmp_path / "model.onnx")), 0.05)
    quality = monitor.version("m", "1")
    assert quality is not None and quality.classes == (3, 5, 7), "sklearn sorts the classes"
    predicted = np.array([7, 3, 5, 5] * rows, dtype=np.int64)[:rows]
    expected = bytes({3: 0, 5: 1, 7: 2}[int(value)] for value in predicted)
    assert quality.predicted(predicted) == expected
    unknown = predicted.copy()
    unknown[-1] = 4
    assert quality.predicted(unknown) is None, "a value between the classes is none of them"
    unknown[-1] = 9
    assert quality.predicted(unknown) is None, "a value past the largest class is none of them"


def test_a_prediction_outside_the_classes_is_409_naming_that(strings: tuple[Metrics, QualityMonitor]) -> None:
    quality = strings[1].version("m", "1")
    assert quality is not None
    with pytest.raises(PredictionNotKept) as raised:
        quality.judge(Served("m", "1", None, predicted=None, rows=2), ("cat", "dog"), "m")
    assert "not among the model's classes" in raised.value.message, raised.value.message
