"""The model card written beside a retrained version: where it came from and how it measured.

Lineage: the sha256 of the data file's bytes (of the rows read, for the feature store, with the feature
service's name and version), the code version (`git describe`, else the package
version), the parent version, the metrics on both evaluation sets, the trigger key and the time.
"""

import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servectl.retrain import data as labelled
from serving_image import model_zoo

if TYPE_CHECKING:
    from servectl.retrain.run import Request
    from servectl.retrain.serving import ServingVersion

REPO_DIR = Path(__file__).resolve().parents[2]


def code_version(root: Path = REPO_DIR) -> str:
    """`git describe --always --dirty` of the checkout, else the installed package's version."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is not None and done.returncode == 0 and done.stdout.strip():
        return f"git {done.stdout.strip()}"
    try:
        return f"model-serving {package_version('model-serving')}"
    except PackageNotFoundError:
        return "unknown"


def card(
    *,
    request: "Request",
    parent: "ServingVersion",
    version: str,
    rows: labelled.Labelled,
    sets: labelled.Split,
    metrics: dict[str, Any],
    now: float,
) -> dict[str, Any]:
    """The model card document (model_card.json)."""
    return {
        "schema": 1,
        "model": request.model,
        "version": version,
        "parent_version": parent.version,
        "estimator": parent.estimator,
        "data": {
            "uri": request.data,
            "sha256": rows.sha256,
            "rows": len(rows.y),
            "ordered_by": rows.ordered_by,
            **_feature_service(rows),
        },
        "split": {
            "train_rows": len(sets.train.y_train),
            "holdout_rows": len(sets.train.y_test),
            "recent_rows": len(sets.recent_y),
            "seed": model_zoo.SPLIT_SEED,
        },
        "code_version": code_version(),
        "metrics": metrics,
        "margin": request.margin,
        "trigger": request.trigger,
        "created": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def _feature_service(rows: labelled.Labelled) -> dict[str, str]:
    """The feature service the rows came through, when they came from the feature store."""
    if rows.feature_service is None or rows.feature_service_version is None:
        return {}
    return {"feature_service": rows.feature_service, "feature_service_version": rows.feature_service_version}
