"""Model quality from labelled feedback: the served prediction against the true class, per version.

A version is monitored when its graph has a class output (serving_image/onnx_graph.py) with at most
:data:`MAX_CLASSES` classes. For the requests of such a version whose ids the server minted, the store
of served requests (serving_image/feedback.py) keeps each row's predicted class as its index among the
classes, one byte a row, for requests of at most ``MAX_KEPT_ROWS`` rows. Label feedback on such an id
counts each row once as correct or incorrect and into a confusion matrix of actual by predicted class;
Prometheus turns the counters into accuracy, and the ``ModelQualityDrop`` alert compares it with
``serving_quality_accuracy_floor``: the version's ``reference_accuracy`` (ONNX metadata, the held-out
accuracy written at build or retrain) minus the model's ``quality.accuracy_margin`` (config.yaml).
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving_image.access_log import log_event
from serving_image.errors import InvalidInput
from serving_image.feedback import MAX_KEPT_ROWS, Label, PredictionNotKept, Served
from serving_image.metrics import Metrics
from serving_image.repository import ModelVersion

MAX_CLASSES = 32
REFERENCE_KEY = "reference_accuracy"
CORRECT, INCORRECT = "correct", "incorrect"
NUMPY_ROWS = 24


@dataclass(frozen=True, slots=True)
class Judged:
    """What one label feedback counted: rows correct, out of how many."""

    correct: int
    rows: int


class VersionQuality:
    """A monitored version: its classes, and its counters with the label values bound (created at 0)."""

    def __init__(
        self, metrics: Metrics, model: str, version: str, output: int, classes: tuple[Label, ...]
    ) -> None:
        self.output = output
        self.classes = classes
        self._index = {value: position for position, value in enumerate(classes)}
        # Past NUMPY_ROWS rows, integer classes are looked up in numpy: a fixed ~10 µs against ~0.3 µs a row
        # for the loop (64 rows: 10 µs against 22 µs; one row: 1.4 µs by the loop).
        self._order = np.argsort(np.array(classes)) if isinstance(classes[0], int) else None
        self._sorted = None if self._order is None else np.array(classes, dtype=np.int64)[self._order]
        self._correct = metrics.quality_labels.labels(model, version, CORRECT)
        self._incorrect = metrics.quality_labels.labels(model, version, INCORRECT)
        names = [str(value) for value in classes]
        self._confusion = [
            [metrics.quality_confusion.labels(model, version, actual, predicted) for predicted in names]
            for actual in names
        ]

    def predicted(self, labels: np.ndarray) -> bytes | None:
        """Each row's predicted class as its index (one byte a row); None past ``MAX_KEPT_ROWS`` rows."""
        if labels.size > MAX_KEPT_ROWS:
            return None
        if labels.size > NUMPY_ROWS and self._sorted is not None and labels.dtype.kind in "iu":
            flat = labels.reshape(-1)
            positions = np.minimum(np.searchsorted(self._sorted, flat), len(self._sorted) - 1)
            if not np.array_equal(self._sorted[positions], flat):
                return None  # a prediction outside the graph's classes: nothing to compare with
            assert self._order is not None  # set with _sorted
            return self._order[positions].astype(np.uint8).tobytes()
        try:
            return bytes(self._index[_plain(value)] for value in labels.reshape(-1).tolist())
        except KeyError:  # a prediction outside the graph's classes: nothing to compare with
            return None

    def judge(self, served: Served, labels: tuple[Label, ...], model: str) -> Judged:
        """Check the labels against the kept predictions (4xx naming the problem), then count them."""
        if served.predicted is None and served.rows > MAX_KEPT_ROWS:
            raise PredictionNotKept(
                f"request had {served.rows} rows; predictions are kept only for requests of at most "
                f"{MAX_KEPT_ROWS} rows, so its labels cannot be compared"
            )
        if served.predicted is None:
            raise PredictionNotKept(
                "the request's predictions were not among the model's classes, so none were kept and its "
                "labels cannot be compared"
            )
        rows = len(served.predicted)
        if len(labels) != rows:
            raise InvalidInput(f"'label' gives {len(labels)} class(es) for a request of {rows} row(s): "
                               "give one class per row, in the request's order")  # fmt: skip
        kind = type(self.classes[0])  # an int model takes no string label, and a string model no integer
        actual = [self._index.get(label) if type(label) is kind else None for label in labels]
        for label, index in zip(labels, actual, strict=True):
            if index is None:
                raise InvalidInput(f"label {label!r:.80} is not a class of model '{model}' version "
                                   f"'{served.version}'; its classes are {list(self.classes)}")  # fmt: skip
        correct = 0
        for index, predicted in zip(actual, served.predicted, strict=True):
            assert index is not None
            correct += index == predicted
            self._confusion[index][predicted].inc()
        if correct:
            self._correct.inc(correct)
        if rows - correct:
            self._incorrect.inc(rows - correct)
        return Judged(correct, rows)


def _plain(value: Any) -> Any:
    """An output element as the classes hold it: BYTES as text, numbers as Python integers."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class QualityMonitor:
    """Every monitored version's classes and counters."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._versions: dict[tuple[str, str], VersionQuality] = {}

    def register(self, model: str, version: ModelVersion, margin: float) -> str | None:
        """Publish whether a version is monitored and its accuracy floor; why it is not monitored, or None."""
        reason = self._register(model, version, margin)
        self._metrics.quality_monitored.labels(model, version.version).set(int(reason is None))
        if reason is not None:
            log_event("quality_not_monitored", model=model, version=version.version, reason=reason)
        return reason

    def _register(self, model: str, version: ModelVersion, margin: float) -> str | None:
        runtime = version.runtime
        if runtime is None:
            return f"the version did not load: {version.error}"
        found = runtime.class_output
        if found is None:
            return "the graph has no class output (no classifier node feeding a graph output)"
        if not found.classes or len(found.classes) > MAX_CLASSES:
            return f"the classifier has {len(found.classes)} classes; 1 to {MAX_CLASSES} are monitored"
        output = [spec.name for spec in runtime.outputs].index(found.output)
        self._versions[(model, version.version)] = VersionQuality(
            self._metrics, model, version.version, output, found.classes
        )
        reference = reference_accuracy(runtime.metadata)
        if isinstance(reference, str):
            log_event("quality_no_reference", model=model, version=version.version, reason=reference)
        else:
            self._metrics.quality_accuracy_floor.labels(model, version.version).set(reference - margin)
        return None

    def version(self, model: str, version: str) -> VersionQuality | None:
        """A monitored version's classes and counters, or None."""
        return self._versions.get((model, version))

    def not_monitored(self, model: str, version: str) -> InvalidInput:
        """The 400 for label feedback on a version that is not monitored."""
        return InvalidInput(f"model {model} version {version} has no class output; quality is not monitored")


def reference_accuracy(metadata: dict[str, str]) -> float | str:
    """The ``reference_accuracy`` metadata entry as a number in [0, 1], or why there is none."""
    text = metadata.get(REFERENCE_KEY)
    if text is None:
        return f"no '{REFERENCE_KEY}' in the graph's metadata_props: no accuracy floor, so no alert"
    try:
        value = float(text)
    except ValueError:
        return f"'{REFERENCE_KEY}' is {text[:40]!r}, not a number"
    if not math.isfinite(value) or not 0 <= value <= 1:
        return f"'{REFERENCE_KEY}' is {value}, outside 0..1"
    return value
