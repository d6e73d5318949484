"""Build the bundled demo models into a Triton-layout model repository.

``python -m serving_image.build_models --out serving_image/models`` first builds the feature
repository's data (docs/features.md: the offline store's parquet, the registry, the materialized online
store), then trains two versions of a breast-cancer classifier on rows read through each version's
feature service (Feast's point-in-time join), converts them to ONNX, quantizes version 2 to int8, writes
each model's ``config.yaml`` and records hashes, accuracies, feature services and int8 figures in
``BUILD_REPORT.json``. Same library versions, same bytes: every seed is fixed and nothing time- or
random-named is written into the graphs (the report's latencies are the only figures that change per run).
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from serving_image import drift_profile, model_zoo
from serving_image.features import repository as feature_repository
from serving_image.features.schema import SERVICE_KEY, SERVICE_VERSION_KEY, service_name
from serving_image.quality import REFERENCE_KEY

MODEL_NAME = "tabular-classifier"
INT8_MODEL_NAME = "tabular-classifier-int8"
MODEL_FILE = "model.onnx"
PROFILE_FILE = drift_profile.PROFILE_FILE
CONFIG_FILE = "config.yaml"
REPORT_FILE = "BUILD_REPORT.json"
DEFAULT_OUT = Path(__file__).resolve().parent / "models"
V1_ESTIMATOR = "StandardScaler + LogisticRegression"
V2_ESTIMATOR = "StandardScaler + MLPClassifier(64, 32)"
# Quantizing keeps every weight, so the int8 copy reports version 2's parameter count.
INT8_ESTIMATOR = "version 2, int8 dynamic quantization"
BATCH_ROWS = 64
# Bounded so the build stays at a few seconds; enough samples for a stable median.
SINGLE_ROW_RUNS = 300
BATCH_RUNS = 100

CLASSIFIER_CONFIG = """\
# Dynamic batching and A/B variants for the tabular classifier.
max_batch_size: 64
max_queue_delay_ms: 0
max_queue_size: 512
variants:
  weights:
    "1": 90
    "2": 10
  sticky:
    header: x-user-id
  routes:
    - header: x-segment
      value: enterprise
      version: "2"
"""

INT8_CONFIG = """\
# Dynamic batching for the int8 tabular classifier; one version, so no variants.
max_batch_size: 64
max_queue_delay_ms: 0
max_queue_size: 512
"""

# (name, element type, shape with None for a dynamic dimension), as onnxruntime reports them.
Signature = list[tuple[str, str, list[int | None]]]
EXPECTED_INPUTS: Signature = [(model_zoo.INPUT_NAME, "tensor(float)", [None, model_zoo.N_FEATURES])]
EXPECTED_OUTPUTS: Signature = [
    (model_zoo.LABEL_NAME, "tensor(int64)", [None]),
    (model_zoo.PROBABILITIES_NAME, "tensor(float)", [None, model_zoo.N_CLASSES]),
]


class BuildError(Exception):
    """The build cannot go on, or produced a graph that breaks the serving contract."""


def build(
    out: Path,
    log: Callable[[str], None] = print,
    feature_repo: Path = feature_repository.DEFAULT_REPO,
) -> dict[str, Any]:
    """Build the feature repository's data, then all models into ``out`` (replacing earlier builds), and
    return the report written there."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file; pass a directory for the model repository")
    log(f"building the feature repository's data in {feature_repo / feature_repository.DATA_DIR}")
    try:
        feature_repository.build(feature_repo)
    except feature_repository.FeatureRepoError as error:
        raise BuildError(f"feature repository: {error}") from None
    out.mkdir(parents=True, exist_ok=True)
    # Build beside the target and swap in at the end, so a failed build leaves the last good one.
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        report = _build_into(staging, log, feature_repo)
        for name in (MODEL_NAME, INT8_MODEL_NAME):
            _replace_dir(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_json(out / REPORT_FILE, report)
    return report


def _build_into(root: Path, log: Callable[[str], None], feature_repo: Path) -> dict[str, Any]:
    v1_data, v2_data, int8_data = (
        _training_data(feature_repo, model, number, log)
        for model, number in ((MODEL_NAME, "1"), (MODEL_NAME, "2"), (INT8_MODEL_NAME, "1"))
    )
    if not _same_rows(v2_data, int8_data):
        raise BuildError(
            f"{int8_data.feature_service} reads other rows than {v2_data.feature_service}, but the int8 "
            "model is version 2 quantized: its service must serve the same features"
        )
    data = v1_data
    log(f"training version 1: {V1_ESTIMATOR}")
    v1 = model_zoo.train_logistic(v1_data)
    log(f"training version 2: {V2_ESTIMATOR}")
    v2 = model_zoo.train_mlp(v2_data)
    v1_onnx, v2_onnx = model_zoo.to_onnx(v1), model_zoo.to_onnx(v2)
    v1_path = _write_trained(root / MODEL_NAME / "1", v1_onnx, v1_data)
    v2_path = _write_trained(root / MODEL_NAME / "2", v2_onnx, v2_data)
    log("quantizing version 2 to int8")
    int8_path = root / INT8_MODEL_NAME / "1" / MODEL_FILE
    int8_path.parent.mkdir(parents=True)
    model_zoo.quantize_int8(v2_onnx, int8_path)
    _write_trained(int8_path.parent, onnx.load(str(int8_path)), int8_data)
    (root / MODEL_NAME / CONFIG_FILE).write_text(CLASSIFIER_CONFIG, encoding="utf-8")
    (root / INT8_MODEL_NAME / CONFIG_FILE).write_text(INT8_CONFIG, encoding="utf-8")

    log("measuring accuracy and int8 latency with onnxruntime")
    v1_params, v2_params = model_zoo.count_parameters(v1), model_zoo.count_parameters(v2)
    int8_entry = _describe(int8_path, INT8_ESTIMATOR, v2_params, data)
    int8_entry["vs_fp32_version_2"] = _compare_int8(v2_path, int8_path, data)
    models = {
        MODEL_NAME: {
            "1": _describe(v1_path, V1_ESTIMATOR, v1_params, data) | _service_entry(v1_data),
            "2": _describe(v2_path, V2_ESTIMATOR, v2_params, data) | _service_entry(v2_data),
        },
        INT8_MODEL_NAME: {"1": int8_entry | _service_entry(int8_data)},
    }
    return _report(data, models, feature_repo)


def _training_data(
    feature_repo: Path, model: str, number: str, log: Callable[[str], None]
) -> model_zoo.Dataset:
    service = service_name(model, number)
    log(f"reading {model} version {number}'s rows through feature service {service}")
    try:
        return model_zoo.load_dataset(feature_repo, service)
    except feature_repository.FeatureRepoError as error:
        raise BuildError(f"feature repository {feature_repo}: {error}") from None


def _same_rows(first: model_zoo.Dataset, second: model_zoo.Dataset) -> bool:
    pairs = (
        (first.x_train, second.x_train),
        (first.y_train, second.y_train),
        (first.x_test, second.x_test),
        (first.y_test, second.y_test),
    )
    return all(np.array_equal(a, b) for a, b in pairs)


def _write_trained(version_dir: Path, model: onnx.ModelProto, data: model_zoo.Dataset) -> Path:
    """A version trained on ``data``: its profile, accuracy and feature service in the metadata."""
    if data.feature_service is not None and data.feature_service_version is not None:
        record_feature_service(model, data.feature_service, data.feature_service_version)
    return _write_version(version_dir, model, training_profile(data), held_out_accuracy(model, data))


def record_feature_service(model: onnx.ModelProto, service: str, version: str) -> None:
    """Name the feature service (and its version) the model was trained from, in its metadata_props:
    the server reads the same service from the online store for entity-keyed requests."""
    _set_metadata(model, SERVICE_KEY, service)
    _set_metadata(model, SERVICE_VERSION_KEY, version)


def _service_entry(data: model_zoo.Dataset) -> dict[str, Any]:
    return {"feature_service": data.feature_service, "feature_service_version": data.feature_service_version}


def training_profile(data: model_zoo.Dataset) -> bytes:
    """The drift profile of the training rows (docs/drift.md): quantile bins and shares per feature."""
    features = [
        drift_profile.numeric_feature(name, index, data.x_train[:, index])
        for index, name in enumerate(model_zoo.feature_names())
    ]
    document = drift_profile.profile_document(model_zoo.INPUT_NAME, len(data.x_train), features)
    return drift_profile.profile_bytes(document)


def held_out_accuracy(model: onnx.ModelProto, data: model_zoo.Dataset) -> float:
    """The graph's accuracy on the held-out test rows, run in onnxruntime, rounded to 6 places."""
    return round(model_zoo.accuracy(model_zoo.open_session(model.SerializeToString()), data), 6)


def _write_version(version_dir: Path, model: onnx.ModelProto, profile: bytes, accuracy: float) -> Path:
    """``profile.json`` and ``model.onnx`` carrying, in its metadata_props, the profile's hash and the
    held-out accuracy that the server's quality alert compares live accuracy with (``reference_accuracy``)."""
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / PROFILE_FILE).write_bytes(profile)
    _set_metadata(model, drift_profile.METADATA_KEY, drift_profile.sha256(profile))
    _set_metadata(model, REFERENCE_KEY, f"{accuracy:.6f}")
    path = version_dir / MODEL_FILE
    path.write_bytes(model.SerializeToString())
    return path


def _set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    # The int8 copy inherits version 2's entry through the quantizer: replace it rather than add a second.
    kept = [(entry.key, entry.value) for entry in model.metadata_props if entry.key != key]
    del model.metadata_props[:]
    for kept_key, kept_value in [*kept, (key, value)]:
        model.metadata_props.add(key=kept_key, value=kept_value)


def _replace_dir(source: Path, target: Path) -> None:
    # Removing first drops versions an older build had and this one no longer makes.
    if target.exists():
        shutil.rmtree(target)
    os.replace(source, target)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _check_contract(session: ort.InferenceSession, path: Path) -> None:
    """Fail the build when a graph's inputs or outputs differ from what the server and clients expect."""
    found = (_signature(session.get_inputs()), _signature(session.get_outputs()))
    if found != (EXPECTED_INPUTS, EXPECTED_OUTPUTS):
        raise BuildError(
            f"{path}: inputs/outputs are {found}, expected {(EXPECTED_INPUTS, EXPECTED_OUTPUTS)}"
        )


def _signature(args: Sequence[Any]) -> Signature:
    return [
        (arg.name, arg.type, [dim if isinstance(dim, int) else None for dim in arg.shape]) for arg in args
    ]


def _describe(path: Path, estimator: str, parameters: int, data: model_zoo.Dataset) -> dict[str, Any]:
    """One model version's entry: what it is, its hash and size, and its accuracy run in onnxruntime."""
    model_bytes = path.read_bytes()
    session = model_zoo.open_session(model_bytes)
    _check_contract(session, path)
    return {
        "estimator": estimator,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "size_bytes": len(model_bytes),
        "parameters": parameters,
        "test_accuracy": round(model_zoo.accuracy(session, data), 6),
    }


def _compare_int8(fp32_path: Path, int8_path: Path, data: model_zoo.Dataset) -> dict[str, Any]:
    """Accuracy delta, size ratio and single-row / batch latency of the int8 copy against fp32."""
    fp32_bytes, int8_bytes = fp32_path.read_bytes(), int8_path.read_bytes()
    fp32, int8 = model_zoo.open_session(fp32_bytes), model_zoo.open_session(int8_bytes)
    fp32_labels, fp32_probabilities = model_zoo.predict(fp32, data.x_test)
    int8_labels, int8_probabilities = model_zoo.predict(int8, data.x_test)
    latency = {
        kind: {
            "batch_1": model_zoo.median_latency_us(session, data.x_test[:1], SINGLE_ROW_RUNS),
            f"batch_{BATCH_ROWS}": model_zoo.median_latency_us(session, data.x_test[:BATCH_ROWS], BATCH_RUNS),
        }
        for kind, session in (("fp32", fp32), ("int8", int8))
    }
    return {
        "accuracy_delta": round(model_zoo.accuracy(int8, data) - model_zoo.accuracy(fp32, data), 6),
        "label_agreement": round(float((fp32_labels == int8_labels).mean()), 6),
        "max_probability_difference": round(float(abs(fp32_probabilities - int8_probabilities).max()), 6),
        "size_ratio": round(len(int8_bytes) / len(fp32_bytes), 4),
        "median_latency_us": {
            kind: {k: round(v, 1) for k, v in runs.items()} for kind, runs in latency.items()
        },
        "speedup": {k: round(latency["fp32"][k] / latency["int8"][k], 3) for k in latency["fp32"]},
        "latency_runs": {"batch_1": SINGLE_ROW_RUNS, f"batch_{BATCH_ROWS}": BATCH_RUNS},
        "latency_note": "informational: one build, one machine, intra_op_num_threads=1",
    }


def _report(
    data: model_zoo.Dataset, models: dict[str, dict[str, dict[str, Any]]], feature_repo: Path
) -> dict[str, Any]:
    packages = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "feast")
    return {
        "dataset": {
            "source": "sklearn.datasets.load_breast_cancer",
            "read_through": "Feast get_historical_features on the labels' timestamps (docs/features.md)",
            "feature_repo": feature_repo.name,
            "features": model_zoo.N_FEATURES,
            "train_rows": len(data.x_train),
            "test_rows": len(data.x_test),
            "split_random_state": model_zoo.SPLIT_SEED,
            "model_random_state": model_zoo.MODEL_SEED,
        },
        # Byte-identical rebuilds hold for these versions; other versions may serialize differently.
        "packages": {package: version(package) for package in packages},
        "models": models,
    }


def summary(report: dict[str, Any], out: Path) -> str:
    """A few human-readable lines about the build."""
    rows = [
        (f"{name}/{number}", entry)
        for name, versions in report["models"].items()
        for number, entry in versions.items()
    ]
    width = max(len(label) for label, _ in rows)
    lines = [
        f"{label:<{width}}  {entry['estimator']:<38}  {entry['parameters']:>5} params  "
        f"accuracy {entry['test_accuracy']:.4f}  sha256 {entry['sha256'][:12]}"
        for label, entry in rows
    ]
    int8 = report["models"][INT8_MODEL_NAME]["1"]["vs_fp32_version_2"]
    single, batch = int8["speedup"]["batch_1"], int8["speedup"][f"batch_{BATCH_ROWS}"]
    lines.append(
        f"int8 vs fp32 version 2: accuracy {int8['accuracy_delta']:+.4f}, size x{int8['size_ratio']:.2f}, "
        f"speed-up x{single:.2f} (1 row), x{batch:.2f} ({BATCH_ROWS} rows)"
    )
    lines.append(f"report: {out / REPORT_FILE}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving_image.build_models",
        description="Train, convert and quantize the bundled demo models into a Triton-layout repository.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"model repository to write (default: {DEFAULT_OUT}); earlier builds there are replaced",
    )
    parser.add_argument(
        "--feature-repo",
        type=Path,
        default=feature_repository.DEFAULT_REPO,
        help="feature repository whose data/ is built and whose services the rows are read through "
        f"(default: {feature_repository.DEFAULT_REPO})",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback when the build fails"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        report = build(args.out, feature_repo=args.feature_repo)
    except Exception as error:
        if args.traceback:
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        print(f"build_models: failed: {reason} (rerun with --traceback for details)", file=sys.stderr)
        return 1
    print(summary(report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
