"""The serving version a retrain starts from, and the canary it starts for the new version.

The serving version is the highest numbered version in the local model repository. Its profile gives the
feature columns (in input order); its estimator family (from its model card, else the repository's
BUILD_REPORT.json) picks the trainer build_models used for it.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from sklearn.pipeline import Pipeline

from servectl.experiments.decision import Schedule, next_weights
from servectl.experiments.targets import ServerTarget
from servectl.experiments.weights_file import WeightsFileError
from serving_image import build_models, drift_profile, model_zoo

TRAINERS: dict[str, Callable[[model_zoo.Dataset], Pipeline]] = {
    build_models.V1_ESTIMATOR: model_zoo.train_logistic,
    build_models.V2_ESTIMATOR: model_zoo.train_mlp,
}
CARD_FILE = "model_card.json"


class RetrainError(Exception):
    """The retrain cannot go on; the message says why (exit 1)."""


@dataclass(frozen=True)
class ServingVersion:
    """The version being served, opened in onnxruntime."""

    version: str
    directory: Path
    session: ort.InferenceSession
    feature_names: list[str]
    estimator: str
    trainer: Callable[[model_zoo.Dataset], Pipeline]


def serving_version(repository: Path, model: str) -> ServingVersion:
    """The highest version of ``model`` in ``repository``, with its profile's features and its trainer."""
    model_dir = repository / model
    versions = sorted(
        (p.name for p in model_dir.glob("*") if p.name.isdigit() and (p / build_models.MODEL_FILE).is_file()),
        key=int,
    ) if model_dir.is_dir() else []  # fmt: skip
    if not versions:
        raise RetrainError(f"{model_dir}: no version to retrain from (expected <version>/model.onnx)")
    version = versions[-1]
    directory = model_dir / version
    model_file = directory / build_models.MODEL_FILE
    metadata = {entry.key: entry.value for entry in onnx.load(str(model_file)).metadata_props}
    try:
        profile = drift_profile.load_profile(model_file, metadata)
    except drift_profile.ProfileError as error:
        raise RetrainError(f"version {version} has no usable training profile: {error}") from None
    features = sorted(profile.features, key=lambda feature: feature.index)
    if any(not isinstance(f, drift_profile.NumericFeature) for f in features):
        raise RetrainError(f"{directory}/profile.json: only numeric features can be retrained")
    estimator = _estimator(repository, model, version)
    trainer = TRAINERS.get(estimator)
    if trainer is None:
        raise RetrainError(
            f"{model} version {version} is a '{estimator}'; retraining knows {sorted(TRAINERS)}"
        )
    return ServingVersion(
        version=version,
        directory=directory,
        session=model_zoo.open_session(model_file.read_bytes()),
        feature_names=[feature.name for feature in features],
        estimator=estimator,
        trainer=trainer,
    )


def _estimator(repository: Path, model: str, version: str) -> str:
    card = repository / model / version / CARD_FILE
    report = repository / build_models.REPORT_FILE
    try:
        if card.is_file():
            return str(_json(card)["estimator"])
        return str(_json(report)["models"][model][version]["estimator"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RetrainError(
            f"{model} version {version}: its estimator is in neither {card} nor {report} ({error!r})"
        ) from None


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def canary(repository: Path, model: str, parent: str, version: str, server_pid: int | None = None) -> str:
    """Give ``version`` the first rollout step's share against ``parent`` in the model's config.yaml.

    The experiment code writes the weights (a local config.yaml carries no schedule, so the schedule's
    default first step applies). With ``server_pid``, the server is sent SIGHUP through the same
    ``ServerTarget`` path the experiments use: it loads the new version directory, warms it up, and only
    then applies the weights. Without it, the server takes the canary at its next SIGHUP or start.
    """
    target = ServerTarget(repository, model, server_pid)
    try:
        weights = target.weights()
    except (OSError, KeyError) as error:
        return f"canary not started: {error}"
    step = Schedule().steps[0]
    try:
        applied = target.apply(next_weights({**weights, version: 0}, parent, version, step))
    except ProcessLookupError:  # the weights are written; only the signal found no process
        return (
            f"canary weights written at the first rollout step ({step}%), but no process {server_pid} to "
            "signal: send the server SIGHUP to load it (kill -HUP <pid>)"
        )
    except (OSError, WeightsFileError) as error:
        return f"canary not started: {error}"
    written = applied.split(";")[0]
    if server_pid is None:
        return (
            f"canary at the first rollout step ({step}%): {written}; send the server SIGHUP to load "
            "the version and apply them (kill -HUP <pid>, or --server-pid)"
        )
    return (
        f"canary at the first rollout step ({step}%): {written}; sent SIGHUP to server pid {server_pid}, "
        f"which loads version {version} and then applies them"
    )
