"""A model repository whose serving version was trained on synthetic rows with a known ground truth.

The bundled models were trained on most of the 569 breast-cancer rows, so no fresh rows of that
distribution exist to retrain from (the serving version would be judged on rows it learnt). Here the rows
come from a known distribution: two classes, equally likely, each a unit-variance Gaussian on 30 features
(under the bundled profile's names) with means at +/- ``SEPARATION``. Any number of unseen rows can be
drawn, a shifted population is the same classes with some features' means moved, and the true class of a
row is drawn with the distribution, so labelled data for a retrain is "the ground truth".

Used by the retrain tests and by the drift loop (``servectl.drift.loop``), test and demo alike.
"""

import csv
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from serving_image import build_models, model_zoo

MODEL = build_models.MODEL_NAME
SEPARATION = 0.3
"""Each feature's class means are this far from 0 on either side: about 95% accuracy over 30 features."""
CONFIG = """\
# The canary's weights are written here.
max_batch_size: 64
variants:
  weights:
    "1": 100
"""


def synthetic(
    rows: int, seed: int, shift: Mapping[int, float] | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Rows of two Gaussian classes with unit variance, means at +/- SEPARATION on every feature.

    ``shift`` moves the column at each index by that amount in both classes (a covariate shift of the
    population; each row keeps the class it was drawn from).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows).astype(np.int64)
    x = rng.normal(size=(rows, model_zoo.N_FEATURES)) + SEPARATION * (2 * y[:, None] - 1)
    for index, amount in (shift or {}).items():
        x[:, index] += amount
    return x.astype(np.float32), y


def write_csv(
    path: Path,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    *,
    header: list[str] | None = None,
    timestamps: list[str] | None = None,
) -> Path:
    """A labelled CSV as `servectl retrain` reads it: the profile's feature columns, `label`, and
    `timestamp` when given."""
    names = header or [*model_zoo.feature_names(), "label", *(["timestamp"] if timestamps else [])]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(names)
        for i, (row, label) in enumerate(zip(x, y, strict=True)):
            writer.writerow(
                [*(repr(float(v)) for v in row), int(label), *([timestamps[i]] if timestamps else [])]
            )
    return path


def build_repository(root: Path) -> Path:
    """Version 1 of the model in ``root``: build_models' logistic pipeline on 2,000 synthetic rows, with its
    profile (from those rows) and held-out accuracy (on 500 more), a config.yaml serving it alone and a
    BUILD_REPORT.json naming its trainer."""
    x_train, y_train = synthetic(2000, seed=1)
    x_test, y_test = synthetic(500, seed=2)
    data = model_zoo.Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    pipeline = model_zoo.train_logistic(data)
    version_dir = root / MODEL / "1"
    exported = model_zoo.to_onnx(pipeline)
    accuracy = build_models.held_out_accuracy(exported, data)
    build_models._write_version(version_dir, exported, build_models.training_profile(data), accuracy)
    (root / MODEL / build_models.CONFIG_FILE).write_text(CONFIG, encoding="utf-8")
    report = {"models": {MODEL: {"1": {"estimator": build_models.V1_ESTIMATOR}}}}
    (root / build_models.REPORT_FILE).write_text(json.dumps(report), encoding="utf-8")
    return root


def class_one_probability(
    x: NDArray[np.float32], shift: Mapping[int, float] | None = None
) -> NDArray[np.float64]:
    """The ground truth's P(class 1 | row) for rows of the population shifted by ``shift`` (index: amount).

    With equally likely classes of unit variance and means at +/- SEPARATION, the log-odds of a row are
    2 * SEPARATION * sum(x - shift): the Bayes rule a perfect model would learn for that population.
    """
    moved = x.astype(np.float64).copy()
    for index, amount in (shift or {}).items():
        moved[:, index] -= amount
    probability: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-2 * SEPARATION * moved.sum(axis=1)))
    return probability
