"""The bundled-models build: layout, graph contract, accuracy, int8 quantization and reproducibility."""

import bisect
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from serving_image import build_models, drift_profile, model_zoo
from serving_image.features import repository as feature_repository
from serving_image.features.definition import service_version
from serving_image.features.offline import source_rows
from serving_image.model_config import load_model_config
from tests.feature_repo import copy_repo

REPO_ROOT = Path(__file__).resolve().parents[2]
V1 = "tabular-classifier/1/model.onnx"
V2 = "tabular-classifier/2/model.onnx"
INT8 = "tabular-classifier-int8/1/model.onnx"
MODEL_FILES = (V1, V2, INT8)
PROFILES = tuple(relative.replace("model.onnx", "profile.json") for relative in MODEL_FILES)
QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear"}

CLASSIFIER_CONFIG = {
    "max_batch_size": 64,
    "max_queue_delay_ms": 0,
    "max_queue_size": 512,
    "variants": {
        "weights": {"1": 90, "2": 10},
        "sticky": {"header": "x-user-id"},
        "routes": [{"header": "x-segment", "value": "enterprise", "version": "2"}],
    },
}
INT8_CONFIG = {"max_batch_size": 64, "max_queue_delay_ms": 0, "max_queue_size": 512}


@pytest.fixture(scope="module")
def feature_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundled feature repository: the build writes its data/ there, not in the source tree."""
    return copy_repo(tmp_path_factory.mktemp("feature_repo"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, feature_repo: Path) -> Path:
    """One build through the command line's entry point, shared by the module's tests."""
    out = tmp_path_factory.mktemp("models")
    assert build_models.main(["--out", str(out), "--feature-repo", str(feature_repo)]) == 0, "build failed"
    return out


@pytest.fixture(scope="module")
def rebuild(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> Path:
    """A second build in a fresh process, from a fresh feature repository, over a stale version 3."""
    out = tmp_path_factory.mktemp("rebuild")
    stale = out / "tabular-classifier" / "3"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"stale")
    features = copy_repo(tmp_path_factory.mktemp("feature_repo_again"))
    # A fixed hash seed unlike the test process's random one: set-ordered output would show up.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving_image.build_models",
            "--out",
            str(out),
            "--feature-repo",
            str(features),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"the second build failed: {result.stderr}"
    return out


@pytest.fixture(scope="module")
def data(repo: Path, feature_repo: Path) -> model_zoo.Dataset:
    """The same held-out split the build measured on (read after the build wrote the feature data)."""
    return model_zoo.load_dataset(feature_repo)


def session(path: Path) -> ort.InferenceSession:
    """An onnxruntime session on a built model file."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def predict(path: Path, x: np.ndarray[Any, np.dtype[np.float32]]) -> tuple[Any, Any]:
    """Labels and probabilities from running the ONNX file itself."""
    labels, probabilities = session(path).run(["label", "probabilities"], {"features": x})
    return labels, probabilities


def accuracy(path: Path, data: model_zoo.Dataset) -> float:
    """Test-set accuracy of an ONNX file."""
    labels, _ = predict(path, data.x_test)
    return float(np.mean(labels == data.y_test))


def sha256(path: Path) -> str:
    """Hex digest of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def signature(args: list[Any]) -> list[tuple[str, str, list[int | None]]]:
    """(name, type, shape) with symbolic dimensions as None."""
    return [(a.name, a.type, [d if isinstance(d, int) else None for d in a.shape]) for a in args]


@pytest.mark.parametrize(
    "relative",
    [
        *MODEL_FILES,
        *PROFILES,
        "tabular-classifier/config.yaml",
        "tabular-classifier-int8/config.yaml",
        "BUILD_REPORT.json",
    ],
)
def test_layout_has_file(repo: Path, relative: str) -> None:
    assert (repo / relative).is_file(), f"{relative} missing from the built repository"


def test_layout_has_nothing_else(repo: Path) -> None:
    found = sorted(path.name for path in repo.iterdir())
    assert found == ["BUILD_REPORT.json", "tabular-classifier", "tabular-classifier-int8"], (
        f"unexpected entries (staging left behind?): {found}"
    )


@pytest.mark.parametrize("relative", MODEL_FILES)
def test_graph_matches_serving_contract(repo: Path, relative: str) -> None:
    model = session(repo / relative)
    assert signature(model.get_inputs()) == [("features", "tensor(float)", [None, 30])], (
        f"{relative}: inputs are {signature(model.get_inputs())}"
    )
    assert signature(model.get_outputs()) == [
        ("label", "tensor(int64)", [None]),
        ("probabilities", "tensor(float)", [None, 2]),
    ], f"{relative}: outputs are {signature(model.get_outputs())}"


@pytest.mark.parametrize("relative", MODEL_FILES)
def test_graph_is_valid_and_self_contained(repo: Path, relative: str) -> None:
    model = onnx.load(str(repo / relative), load_external_data=False)
    onnx.checker.check_model(model)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert not external, f"{relative}: initializers stored outside model.onnx: {external}"


def test_versions_truly_differ(repo: Path, data: model_zoo.Dataset) -> None:
    _, v1 = predict(repo / V1, data.x_test)
    _, v2 = predict(repo / V2, data.x_test)
    difference = float(np.abs(v1 - v2).max())
    assert difference > 0.01, f"versions 1 and 2 give near-identical probabilities (max diff {difference})"


@pytest.mark.parametrize("relative", MODEL_FILES)
def test_accuracy_above_0_9(repo: Path, data: model_zoo.Dataset, relative: str) -> None:
    measured = accuracy(repo / relative, data)
    assert measured > 0.9, f"{relative}: test accuracy {measured:.4f} is not above 0.9"


def test_int8_accuracy_close_to_version_2(repo: Path, data: model_zoo.Dataset) -> None:
    delta = accuracy(repo / INT8, data) - accuracy(repo / V2, data)
    assert abs(delta) <= 0.05, f"int8 accuracy differs from version 2 by {delta:+.4f}"


def test_int8_graph_is_quantized(repo: Path) -> None:
    graph = onnx.load(str(repo / INT8)).graph
    ops = {node.op_type for node in graph.node}
    assert ops >= QUANTIZED_OPS, f"int8 graph lacks {QUANTIZED_OPS - ops}; its ops are {sorted(ops)}"
    int8_weights = [t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights, "int8 graph stores no int8 initializers"


def test_version_2_is_not_quantized(repo: Path) -> None:
    ops = {node.op_type for node in onnx.load(str(repo / V2)).graph.node}
    assert not ops & QUANTIZED_OPS, f"fp32 version 2 contains quantized ops {ops & QUANTIZED_OPS}"


@pytest.mark.parametrize("relative", [*MODEL_FILES, *PROFILES])
def test_rebuild_is_byte_identical(repo: Path, rebuild: Path, relative: str) -> None:
    assert sha256(rebuild / relative) == sha256(repo / relative), f"{relative} differs between two builds"


def test_rebuild_drops_stale_versions(rebuild: Path) -> None:
    versions = sorted(path.name for path in (rebuild / "tabular-classifier").iterdir() if path.is_dir())
    assert versions == ["1", "2"], f"rebuild left versions {versions}"


@pytest.mark.parametrize(
    ("model", "expected"),
    [("tabular-classifier", CLASSIFIER_CONFIG), ("tabular-classifier-int8", INT8_CONFIG)],
)
def test_config_yaml(repo: Path, model: str, expected: dict[str, Any]) -> None:
    parsed = yaml.safe_load((repo / model / "config.yaml").read_text(encoding="utf-8"))
    assert parsed == expected, f"{model}/config.yaml parsed to {parsed}"


def test_config_yaml_accepted_by_server(repo: Path) -> None:
    config = load_model_config(repo / "tabular-classifier")
    assert config.variants is not None, "the server found no variants in tabular-classifier/config.yaml"
    assert config.variants.weights == {"1": 90, "2": 10}, f"server read weights {config.variants.weights}"


def test_report_fields(repo: Path) -> None:
    report = json.loads((repo / "BUILD_REPORT.json").read_text(encoding="utf-8"))
    entries = {
        V1: report["models"]["tabular-classifier"]["1"],
        V2: report["models"]["tabular-classifier"]["2"],
        INT8: report["models"]["tabular-classifier-int8"]["1"],
    }
    for relative, entry in entries.items():
        missing = {"sha256", "parameters", "test_accuracy", "size_bytes"} - entry.keys()
        assert not missing, f"{relative}: report entry lacks {missing}"
        assert entry["sha256"] == sha256(repo / relative), f"{relative}: report sha256 is not the file's"
        assert entry["parameters"] > 0, f"{relative}: parameter count {entry['parameters']}"
    int8 = entries[INT8]["vs_fp32_version_2"]
    missing = {"accuracy_delta", "size_ratio", "median_latency_us", "speedup"} - int8.keys()
    assert not missing, f"int8 comparison lacks {missing}"
    assert set(int8["speedup"]) == {"batch_1", "batch_64"}, f"speed-up measured for {set(int8['speedup'])}"


def test_report_accuracy_is_the_onnx_accuracy(repo: Path, data: model_zoo.Dataset) -> None:
    report = json.loads((repo / "BUILD_REPORT.json").read_text(encoding="utf-8"))
    recorded = report["models"]["tabular-classifier"]["2"]["test_accuracy"]
    assert recorded == pytest.approx(accuracy(repo / V2, data), abs=1e-6), (
        "report accuracy is not the ONNX file's"
    )


def test_cli_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("", encoding="utf-8")
    assert build_models.main(["--out", str(not_a_dir)]) != 0, "a file as --out should fail"
    error = capsys.readouterr().err
    assert error.count("\n") == 1, f"expected a one-line error, got {error!r}"
    assert "is a file" in error, f"error does not say what is wrong: {error!r}"


@pytest.mark.parametrize("relative", MODEL_FILES)
def test_model_metadata_holds_its_profiles_sha256(repo: Path, relative: str) -> None:
    props = {entry.key: entry.value for entry in onnx.load(str(repo / relative)).metadata_props}
    profile = (repo / relative).with_name("profile.json")
    assert props.get("training_profile_sha256") == sha256(profile), (
        f"{relative}: metadata {props} does not carry the sha256 of {profile.name}"
    )


@pytest.mark.parametrize("relative", MODEL_FILES)
def test_model_metadata_holds_its_held_out_accuracy(
    repo: Path, data: model_zoo.Dataset, relative: str
) -> None:
    props = {entry.key: entry.value for entry in onnx.load(str(repo / relative)).metadata_props}
    expected = f"{round(accuracy(repo / relative, data), 6):.6f}"
    assert props.get("reference_accuracy") == expected, (
        f"{relative}: metadata {props} does not carry the held-out accuracy {expected}"
    )


def test_profile_file_is_canonical_json(repo: Path) -> None:
    text = (repo / PROFILES[0]).read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n", (
        "profile.json must be json.dumps(sort_keys=True, indent=2) plus a newline"
    )


def test_profile_bins_are_quantiles_of_the_training_rows(repo: Path, data: model_zoo.Dataset) -> None:
    profile = json.loads((repo / PROFILES[0]).read_text(encoding="utf-8"))
    assert (profile["schema"], profile["input"], profile["rows"]) == (1, "features", len(data.x_train)), (
        f"profile header {profile['schema'], profile['input'], profile['rows']}"
    )
    names = [feature["name"] for feature in profile["features"]]
    assert names == model_zoo.feature_names(), f"feature names {names}"
    assert names[0] == "mean_radius", f"names are the dataset's in snake_case, got {names[0]}"
    for index, feature in enumerate(profile["features"]):
        column = data.x_train[:, index].astype(np.float64)
        quantiles = np.quantile(column, np.arange(1, 10) / 10)
        assert feature["index"] == index and feature["kind"] == "numeric", feature
        assert feature["edges"] == [float(q) for q in quantiles], (
            f"{feature['name']}: edges are not quantiles"
        )
        counts = [0] * 10
        for value in column:
            counts[bisect.bisect_right(feature["edges"], float(value))] += 1
        assert feature["expected"] == pytest.approx([c / len(column) for c in counts], abs=1e-12), (
            f"{feature['name']}: shares are not the training rows' per bin"
        )
        assert abs(sum(feature["expected"]) - 1) < 1e-9, (
            f"{feature['name']}: shares sum to {sum(feature['expected'])}"
        )


@pytest.mark.parametrize("relative", PROFILES)
def test_profile_loads_as_the_server_loads_it(repo: Path, relative: str) -> None:
    model = repo / relative.replace("profile.json", "model.onnx")
    metadata = session(model).get_modelmeta().custom_metadata_map
    profile = drift_profile.load_profile(model, metadata)
    assert len(profile.features) == model_zoo.N_FEATURES, f"{relative}: {len(profile.features)} features"


SERVICES = {V1: "tabular_classifier_v1", V2: "tabular_classifier_v2", INT8: "tabular_classifier_int8_v1"}


@pytest.mark.parametrize("relative", MODEL_FILES)
def test_model_metadata_names_its_feature_service(repo: Path, feature_repo: Path, relative: str) -> None:
    props = {entry.key: entry.value for entry in onnx.load(str(repo / relative)).metadata_props}
    store = feature_repository.open_store(feature_repo)
    expected = (SERVICES[relative], service_version(store, SERVICES[relative]))
    found = (props.get("feature_service"), props.get("feature_service_version"))
    assert found == expected, f"{relative}: metadata {props} does not name its feature service {expected}"


def test_report_names_each_versions_feature_service(repo: Path, feature_repo: Path) -> None:
    report = json.loads((repo / "BUILD_REPORT.json").read_text(encoding="utf-8"))
    store = feature_repository.open_store(feature_repo)
    for relative, service in SERVICES.items():
        model, version = relative.split("/")[:2]
        entry = report["models"][model][version]
        found = (entry.get("feature_service"), entry.get("feature_service_version"))
        assert found == (service, service_version(store, service)), f"{relative}: report entry {entry}"


def test_training_rows_are_the_source_rows_before_corrections(data: model_zoo.Dataset) -> None:
    """Read through Feast on the labels' times, the rows are scikit-learn's: no later correction leaked in."""
    x, y = source_rows()
    assert np.array_equal(data.x_train, x[data.ids_train]), "a training row is not its patient's first row"
    assert np.array_equal(data.y_train, y[data.ids_train]), "a training label is not its patient's"
    assert np.array_equal(data.x_test, x[data.ids_test]), "a held-out row is not its patient's first row"
    assert len(set(data.ids_train) | set(data.ids_test)) == len(x), "patients missing from the split"


def test_a_missing_feature_repository_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = build_models.main(["--out", str(tmp_path / "out"), "--feature-repo", str(tmp_path / "none")])
    error = capsys.readouterr().err
    assert code == 1 and error.count("\n") == 1, f"exit {code}, error {error!r}"
    assert "feature_store.yaml: no such file" in error, f"error does not name the file: {error!r}"
