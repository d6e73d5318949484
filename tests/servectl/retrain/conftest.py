"""A small model repository whose serving version was trained on synthetic rows, and CSVs of fresh rows.

The bundled models were trained on most of the 569 breast-cancer rows, so no fresh rows of that
distribution exist to retrain from (the serving version would be judged on rows it learnt). Here the
rows come from a known distribution (two Gaussian classes, 30 features under the profile's names), so any
number of unseen rows can be drawn and a fair comparison has the expected outcome.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
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


def synthetic(rows: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Rows of two Gaussian classes with unit variance, means at +/- SEPARATION on every feature."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows).astype(np.int64)
    x = rng.normal(size=(rows, model_zoo.N_FEATURES)) + SEPARATION * (2 * y[:, None] - 1)
    return x.astype(np.float32), y


def write_csv(
    path: Path,
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    *,
    header: list[str] | None = None,
    timestamps: list[str] | None = None,
) -> Path:
    """A labelled CSV: the profile's feature columns, `label`, and `timestamp` when given."""
    names = header or [*model_zoo.feature_names(), "label", *(["timestamp"] if timestamps else [])]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(names)
        for i, (row, label) in enumerate(zip(x, y, strict=True)):
            writer.writerow(
                [*(repr(float(v)) for v in row), int(label), *([timestamps[i]] if timestamps else [])]
            )
    return path


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """Version 1 of the model: build_models' logistic pipeline on 2,000 synthetic rows, with its profile."""
    root = tmp_path / "models"
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


@pytest.fixture
def fresh_csv(tmp_path: Path) -> Path:
    """3,000 unseen rows of the serving version's training distribution."""
    x, y = synthetic(3000, seed=3)
    return write_csv(tmp_path / "fresh.csv", x, y)
