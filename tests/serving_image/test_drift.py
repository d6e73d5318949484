"""Live drift counters: exact binning, the not-monitored cases, sampling, and the counters of a real server.

The binning is checked against a brute-force reference (Python's ``bisect`` row by row, the contract's
definition) on random data with a fixed seed; the server tests send real REST and gRPC requests.
"""

import bisect
import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from serving_image import drift_profile
from serving_image.drift import DriftMonitor, VersionCounters, category_text, numeric_bins
from serving_image.drift_profile import categorical_feature, numeric_feature, profile_bytes, profile_document
from serving_image.metrics import Metrics
from serving_image.repository import ModelVersion, Repository
from tests.serving_image import async_jobs
from tests.serving_image.conftest import (
    BUNDLED_MODELS,
    ServerProcess,
    doubler_graph,
    logged_events,
    save_model,
    start_server,
    wait_until,
    write_config,
)

if TYPE_CHECKING:
    from tests.serving_image.redis_fixture import RedisServer

SEED = 20261130
WIDTH = 4
MODEL = "tabular-classifier"


def synthetic_profile(rng: np.random.Generator) -> dict[str, Any]:
    """Three numeric features of a [batch, 4] input and one categorical (column 3, values 0..4)."""
    training = rng.normal(0, 1, (2000, WIDTH)).astype(np.float32)
    features = [numeric_feature(f"f{i}", i, training[:, i]) for i in range(3)]
    codes = [category_text(np.float32(v)) for v in rng.integers(0, 3, 2000)]
    features.append(categorical_feature("code", 3, codes, ["0.0", "1.0", "2.0"]))
    return profile_document("x", len(training), features)


def stamp(model_file: Path, document: dict[str, Any], recorded_hash: str | None = None) -> None:
    """``profile.json`` beside a model, its sha256 (or ``recorded_hash``) in the model's metadata."""
    data = profile_bytes(document)
    (model_file.parent / "profile.json").write_bytes(data)
    model = onnx.load(str(model_file))
    model.metadata_props.add(
        key=drift_profile.METADATA_KEY, value=recorded_hash or drift_profile.sha256(data)
    )
    onnx.save(model, str(model_file))


def reference_counts(document: dict[str, Any], rows: np.ndarray[Any, Any]) -> dict[tuple[str, str], int]:
    """(feature, bin) -> rows, one row and one value at a time with ``bisect``: the contract's definition."""
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        for feature in document["features"]:
            value = row[feature["index"]]
            if feature["kind"] == "categorical":
                text = category_text(value)
                counts[(feature["name"], text if text in feature["categories"] else "other")] += 1
            elif np.isnan(value):
                counts[(feature["name"], "nan")] += 1
            else:
                counts[(feature["name"], str(bisect.bisect_right(feature["edges"], float(value))))] += 1
    return dict(counts)


def counted(
    registry: CollectorRegistry, document: dict[str, Any], model: str, version: str
) -> dict[Any, int]:
    """(feature, bin) -> the counter's value, for every bin that counted something."""
    found = {}
    for feature in document["features"]:
        labels = [str(b) for b in range(len(feature.get("edges", [])) + 1)] + ["nan"]
        if feature["kind"] == "categorical":
            labels = [*feature["categories"], "other"]
        for label in labels:
            value = registry.get_sample_value(
                "serving_drift_input_total",
                {"model": model, "version": version, "feature": feature["name"], "bin": label},
            )
            assert value is not None, f"counter of {feature['name']}/{label} was not created at start"
            if value:
                found[(feature["name"], label)] = int(value)
    return found


@pytest.fixture
def doubler_repo(tmp_path: Path) -> Path:
    """A repository with one doubler model ([batch, 4] FP32) and no profile yet."""
    save_model(doubler_graph(WIDTH), tmp_path / "doubler" / "1" / "model.onnx")
    write_config(tmp_path / "doubler", "max_batch_size: 64\n")
    return tmp_path


def loaded_version(root: Path) -> ModelVersion:
    return Repository.load(root, intra_op_threads=1).models["doubler"].versions["1"]


# --- binning ------------------------------------------------------------------------------------------------


def test_numeric_bins_match_bisect_right_with_nan_apart() -> None:
    short, long = [-1.0, 0.0, 0.0, 2.5], [-3.0, -2.0, 0.5, 1.0, 1.0, 7.0]
    edges = np.full((6, 2), np.nan)
    edges[:4, 0], edges[:, 1] = short, long  # padded with NaN, as VersionCounters builds them
    column = np.array([-5, -3, -1, -0.5, 0, 0.5, 1, 2.5, 3, 7, np.nan, np.inf, -np.inf], dtype=np.float32)
    found = numeric_bins(np.stack([column, column], axis=1), edges)
    for feature, feature_edges in enumerate((short, long)):
        expected = [-1 if np.isnan(v) else bisect.bisect_right(feature_edges, float(v)) for v in column]
        assert found[:, feature].tolist() == expected, f"feature {feature}: NaN is -1, the rest bisect_right"


def test_counting_is_exact_against_the_brute_force_reference(doubler_repo: Path) -> None:
    rng = np.random.default_rng(SEED)
    document = synthetic_profile(rng)
    rows = rng.normal(0.3, 1.4, (500, WIDTH)).astype(np.float32)
    rows[:, 3] = rng.integers(0, 5, 500)  # categories 3.0 and 4.0 are "other"
    rows[rng.random(500) < 0.05, 0] = np.nan
    edges = document["features"][1]["edges"]
    rows[:20, 1] = np.asarray(edges, dtype=np.float32)[rng.integers(0, 9, 20)]  # values on the edges
    metrics = Metrics()
    counters = VersionCounters(metrics, "m", "1", drift_profile.parse_profile(document))
    for start in range(0, 500, 64):  # batches of up to 64, as the dataplane sees them
        counters.count(rows[start : start + 64])
    counters.flush()
    assert counted(metrics.registry, document, "m", "1") == reference_counts(document, rows)
    assert (
        metrics.registry.get_sample_value("serving_drift_rows_total", {"model": "m", "version": "1"}) == 500
    )


def test_nan_has_its_own_bin_and_no_expected_share() -> None:
    document = profile_document("x", 10, [numeric_feature("f", 0, np.arange(10.0))])
    metrics = Metrics()
    counters = VersionCounters(metrics, "m", "1", drift_profile.parse_profile(document))
    counters.count(np.array([[np.nan], [np.nan], [3.0]], dtype=np.float32))
    counters.flush()
    value = metrics.registry.get_sample_value
    labels = {"model": "m", "version": "1", "feature": "f"}
    assert value("serving_drift_input_total", {**labels, "bin": "nan"}) == 2, "NaN rows counted as nan"
    assert value("serving_drift_expected_share", {**labels, "bin": "nan"}) is None, (
        "nan has no training share"
    )
    shares = [value("serving_drift_expected_share", {**labels, "bin": str(b)}) for b in range(10)]
    assert shares == document["features"][0]["expected"], "expected shares published as the profile's"


def test_categorical_counting_on_a_bytes_tensor() -> None:
    feature = categorical_feature("colour", 0, ["red", "blue", "red"], ["red", "blue"])
    document = profile_document("x", 3, [feature])
    metrics = Metrics()
    rows = np.array([[b"red"], [b"red"], [b"green"], [b"blue"], [b"\xff"]], dtype=object)
    counters = VersionCounters(metrics, "m", "1", drift_profile.parse_profile(document))
    counters.count(rows)
    counters.flush()
    assert counted(metrics.registry, document, "m", "1") == {
        ("colour", "red"): 2,
        ("colour", "blue"): 1,
        ("colour", "other"): 2,
    }


# --- monitored or not ---------------------------------------------------------------------------------------


def test_a_stamped_version_is_monitored(doubler_repo: Path) -> None:
    stamp(doubler_repo / "doubler" / "1" / "model.onnx", synthetic_profile(np.random.default_rng(SEED)))
    metrics = Metrics()
    monitor = DriftMonitor(metrics, 1.0)
    assert monitor.register("doubler", loaded_version(doubler_repo)) is None
    assert monitor.monitored("doubler", "1")
    gauge = metrics.registry.get_sample_value("serving_drift_monitored", {"model": "doubler", "version": "1"})
    assert gauge == 1, "serving_drift_monitored is 1 for a version with a valid profile"


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        (lambda model: None, "has no 'training_profile_sha256'"),
        (lambda model: stamp(model, synthetic_profile(np.random.default_rng(SEED)), "f" * 64), "sha256"),
        (
            lambda model: stamp(model, {**synthetic_profile(np.random.default_rng(SEED)), "input": "y"}),
            "the profile's input 'y' is not one of ['x']",
        ),
        (
            lambda model: stamp(model, profile_document("x", 3, [numeric_feature("far", 7, np.arange(3.0))])),
            "index 7 is past the 4 columns of input 'x'",
        ),
        (lambda model: model.write_bytes(b"not onnx"), "the version did not load"),
    ],
)
def test_a_version_without_a_usable_profile_serves_unmonitored(
    doubler_repo: Path, capsys: pytest.CaptureFixture[str], prepare: Any, reason: str
) -> None:
    prepare(doubler_repo / "doubler" / "1" / "model.onnx")
    metrics = Metrics()
    monitor = DriftMonitor(metrics, 1.0)
    found = monitor.register("doubler", loaded_version(doubler_repo))
    assert found is not None and reason in found, f"reason {found!r} does not say {reason!r}"
    assert not monitor.monitored("doubler", "1")
    gauge = metrics.registry.get_sample_value("serving_drift_monitored", {"model": "doubler", "version": "1"})
    assert gauge == 0, "serving_drift_monitored is 0 for a version that is not monitored"
    events = logged_events(capsys.readouterr().err, "drift_not_monitored")
    assert [(e["model"], e["version"], e["reason"]) for e in events] == [("doubler", "1", found)]
    monitor.observe("doubler", "1", {"x": np.zeros((2, WIDTH), np.float32)})  # counts nothing, raises nothing


@pytest.mark.parametrize(("rate", "counted_requests"), [(0.0, 0), (1.0, 200)])
def test_sample_rate_zero_counts_nothing_and_one_counts_all(
    doubler_repo: Path, rate: float, counted_requests: int
) -> None:
    stamp(doubler_repo / "doubler" / "1" / "model.onnx", synthetic_profile(np.random.default_rng(SEED)))
    metrics = Metrics()
    monitor = DriftMonitor(metrics, rate, seed=SEED)
    monitor.register("doubler", loaded_version(doubler_repo))
    for _ in range(200):
        monitor.observe("doubler", "1", {"x": np.zeros((3, WIDTH), np.float32)})
    monitor.flush()
    rows = metrics.registry.get_sample_value("serving_drift_rows_total", {"model": "doubler", "version": "1"})
    assert rows == 3 * counted_requests, f"rate {rate}: {rows} rows counted"


def test_sampling_is_per_request_and_seeded(doubler_repo: Path) -> None:
    stamp(doubler_repo / "doubler" / "1" / "model.onnx", synthetic_profile(np.random.default_rng(SEED)))
    version = loaded_version(doubler_repo)
    totals = []
    for _ in range(2):
        metrics = Metrics()
        monitor = DriftMonitor(metrics, 0.1, seed=SEED)
        monitor.register("doubler", version)
        for _ in range(2000):
            monitor.observe("doubler", "1", {"x": np.zeros((5, WIDTH), np.float32)})
        monitor.flush()
        labels = {"model": "doubler", "version": "1"}
        totals.append(metrics.registry.get_sample_value("serving_drift_rows_total", labels))
    assert totals[0] == totals[1], "the same seed samples the same requests"
    assert totals[0] is not None and totals[0] % 5 == 0, "a sampled request counts all its rows"
    assert 150 <= totals[0] / 5 <= 250, f"{totals[0] / 5} of 2000 requests sampled at rate 0.1"


def test_a_failure_to_count_stops_monitoring_and_never_fails_the_request(
    doubler_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stamp(doubler_repo / "doubler" / "1" / "model.onnx", synthetic_profile(np.random.default_rng(SEED)))
    metrics = Metrics()
    monitor = DriftMonitor(metrics, 1.0)
    monitor.register("doubler", loaded_version(doubler_repo))
    monitor.observe("doubler", "1", {"x": np.zeros((2, WIDTH), np.float32)})
    monitor.observe(
        "doubler", "1", {"x": np.zeros(2, np.float32)}
    )  # no column 3: the dataplane never sends it
    assert not monitor.monitored("doubler", "1"), "a version whose rows cannot be counted is dropped"
    labels = {"model": "doubler", "version": "1"}
    assert metrics.registry.get_sample_value("serving_drift_monitored", labels) == 0
    assert metrics.registry.get_sample_value("serving_drift_rows_total", labels) == 2, "earlier rows kept"
    events = logged_events(capsys.readouterr().err, "drift_not_monitored")
    assert len(events) == 1 and events[0]["reason"].startswith(
        "counting failed: ValueError: rows of 2 columns"
    ), events
    assert events[0]["traceback"], "the failure's traceback is logged"


def test_rows_that_fail_to_bin_at_a_scrape_stop_monitoring_and_the_scrape_still_answers(
    doubler_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stamp(doubler_repo / "doubler" / "1" / "model.onnx", synthetic_profile(np.random.default_rng(SEED)))
    metrics = Metrics()
    monitor = DriftMonitor(metrics, 1.0)
    monitor.register("doubler", loaded_version(doubler_repo))
    monitor.observe("doubler", "1", {"x": np.array([[b"a"] * WIDTH], dtype=object)})  # kept, binned later
    exposed = metrics.exposition().decode()
    assert 'serving_drift_monitored{model="doubler",version="1"} 0.0' in exposed, "dropped at the scrape"
    events = logged_events(capsys.readouterr().err, "drift_not_monitored")
    assert len(events) == 1 and events[0]["reason"].startswith("counting failed: ValueError"), events
    assert not monitor.monitored("doubler", "1")


def test_counts_wait_in_the_process_until_a_flush_or_a_scrape(doubler_repo: Path) -> None:
    stamp(doubler_repo / "doubler" / "1" / "model.onnx", synthetic_profile(np.random.default_rng(SEED)))
    metrics = Metrics()
    monitor = DriftMonitor(metrics, 1.0)
    monitor.register("doubler", loaded_version(doubler_repo))
    monitor.observe("doubler", "1", {"x": np.zeros((3, WIDTH), np.float32)})
    labels = {"model": "doubler", "version": "1"}
    assert metrics.registry.get_sample_value("serving_drift_rows_total", labels) == 0, "not yet written"
    exposed = metrics.exposition().decode()
    assert 'serving_drift_rows_total{model="doubler",version="1"} 3.0' in exposed, "a scrape flushes first"
    monitor.flush()
    assert metrics.registry.get_sample_value("serving_drift_rows_total", labels) == 3, "written once"


# --- a real server ------------------------------------------------------------------------------------------


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """One series' value from /metrics, 0 when absent."""
    text = requests.get(server.base + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def bundled_profile(version: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((BUNDLED_MODELS / MODEL / version / "profile.json").read_text())
    return loaded


def server_counts(server: ServerProcess, version: str) -> dict[tuple[str, str], int]:
    text = requests.get(server.base + "/metrics", timeout=5).text
    found: dict[tuple[str, str], int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            ours = (labels.get("model"), labels.get("version")) == (MODEL, version)
            if sample.name == "serving_drift_input_total" and ours and sample.value:
                found[(labels["feature"], labels["bin"])] = int(sample.value)
    return found


@pytest.fixture(scope="module")
def drift_server(tmp_path_factory: pytest.TempPathFactory, bundled_models: Path) -> Any:
    """The bundled classifier (profiled) and an unprofiled doubler, every request sampled."""
    root = tmp_path_factory.mktemp("drift-repo")
    (root / MODEL).symlink_to(bundled_models / MODEL)
    save_model(doubler_graph(WIDTH), root / "doubler" / "1" / "model.onnx")
    write_config(root / "doubler", "max_batch_size: 8\n")
    server = start_server(root, tmp_path_factory.mktemp("drift-logs"), env={"SERVING_DRIFT_SAMPLE_RATE": "1"})
    yield server
    assert server.stop() == 0, server.stderr()


def test_server_reports_which_versions_are_monitored(drift_server: ServerProcess) -> None:
    for version in ("1", "2"):
        assert metric(drift_server, "serving_drift_monitored", model=MODEL, version=version) == 1
    assert metric(drift_server, "serving_drift_monitored", model="doubler", version="1") == 0
    events = logged_events(drift_server.stderr(), "drift_not_monitored")
    assert [(e["model"], e["version"]) for e in events] == [("doubler", "1")], events
    assert "training_profile_sha256" in events[0]["reason"], events[0]
    profile = bundled_profile("1")
    first = profile["features"][0]
    share = metric(drift_server, "serving_drift_expected_share", model=MODEL, version="1",
                   feature=first["name"], bin="3")  # fmt: skip
    assert share == pytest.approx(first["expected"][3]), "the expected share gauge is the profile's"


def test_rest_and_grpc_requests_are_counted_into_the_profile_bins(drift_server: ServerProcess) -> None:
    rng = np.random.default_rng(SEED)
    rows = rng.normal(15, 5, (7, 30)).astype(np.float32)
    rows[0, 0] = np.nan  # binary tensor data carries NaN, which JSON cannot
    before = server_counts(drift_server, "1")
    rows_before = metric(drift_server, "serving_drift_rows_total", model=MODEL, version="1")

    rest = httpclient.InferenceServerClient(drift_server.http_url)
    tensor = httpclient.InferInput("features", list(rows[:5].shape), "FP32")
    tensor.set_data_from_numpy(rows[:5], binary_data=True)
    rest.infer(MODEL, [tensor], model_version="1")
    grpc = grpcclient.InferenceServerClient(drift_server.grpc_url)
    grpc_tensor = grpcclient.InferInput("features", list(rows[5:].shape), "FP32")
    grpc_tensor.set_data_from_numpy(rows[5:])
    grpc.infer(MODEL, [grpc_tensor], model_version="1")

    after = server_counts(drift_server, "1")
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    expected = reference_counts(bundled_profile("1"), rows)
    assert {k: v for k, v in delta.items() if v} == expected, "the server's bins differ from bisect's"
    assert delta.get(("mean_radius", "nan")) == 1, "the NaN row is counted in the nan bin"
    rows_after = metric(drift_server, "serving_drift_rows_total", model=MODEL, version="1")
    assert rows_after - rows_before == 7, "five REST rows and two gRPC rows"


def test_a_request_refused_by_validation_is_not_counted(drift_server: ServerProcess) -> None:
    before = metric(drift_server, "serving_drift_rows_total", model=MODEL, version="2")
    body: dict[str, Any] = {
        "inputs": [{"name": "features", "shape": [1, 29], "datatype": "FP32", "data": [0.0] * 29}]
    }
    answer = requests.post(f"{drift_server.base}/v2/models/{MODEL}/versions/2/infer", json=body, timeout=5)
    assert answer.status_code == 400, answer.text
    assert metric(drift_server, "serving_drift_rows_total", model=MODEL, version="2") == before


def test_sample_rate_zero_counts_nothing_on_a_server(
    tmp_path_factory: pytest.TempPathFactory, bundled_models: Path
) -> None:
    root = tmp_path_factory.mktemp("drift-off")
    (root / MODEL).symlink_to(bundled_models / MODEL)
    server = start_server(
        root, tmp_path_factory.mktemp("drift-off-logs"), env={"SERVING_DRIFT_SAMPLE_RATE": "0"}
    )
    try:
        body: dict[str, Any] = {
            "inputs": [{"name": "features", "shape": [2, 30], "datatype": "FP32", "data": [1.0] * 60}]
        }
        for _ in range(20):
            answer = requests.post(f"{server.base}/v2/models/{MODEL}/versions/1/infer", json=body, timeout=5)
            assert answer.status_code == 200, answer.text
        assert metric(server, "serving_drift_monitored", model=MODEL, version="1") == 1, "still monitored"
        assert metric(server, "serving_drift_rows_total", model=MODEL, version="1") == 0, (
            "but nothing counted"
        )
        assert not server_counts(server, "1"), "no bin counted"
    finally:
        assert server.stop() == 0, server.stderr()


def test_an_async_job_is_counted_once_when_it_runs(
    tmp_path_factory: pytest.TempPathFactory, bundled_models: Path, redis_server: "RedisServer"
) -> None:
    root = tmp_path_factory.mktemp("drift-jobs")
    (root / MODEL).symlink_to(bundled_models / MODEL)
    stream = f"drift-{os.urandom(4).hex()}"
    server = async_jobs.start_async_server(
        root, tmp_path_factory.mktemp("drift-jobs-logs"), redis_server, stream, async_worker=True,
        drift_sample_rate=1,
    )  # fmt: skip
    try:
        body = async_jobs.async_body(async_jobs.rows(4, seed=3))
        job_id = async_jobs.submitted(async_jobs.submit(server, MODEL, body, version="1"))
        assert async_jobs.finished(server, job_id)["status"] == "done"
        counted_rows = metric(server, "serving_drift_rows_total", model=MODEL, version="1")
        assert counted_rows == 4, f"{counted_rows} rows: a job counts when the worker runs it, not at submit"
    finally:
        assert server.stop() == 0, server.stderr()


def test_two_workers_merge_their_counts_and_publish_the_gauges_once(
    tmp_path_factory: pytest.TempPathFactory, bundled_models: Path
) -> None:
    root = tmp_path_factory.mktemp("drift-workers")
    (root / MODEL).symlink_to(bundled_models / MODEL)
    logs = tmp_path_factory.mktemp("drift-workers-logs")
    server = start_server(root, logs, "--workers", "2", env={"SERVING_DRIFT_SAMPLE_RATE": "1"})
    try:
        body: dict[str, Any] = {
            "inputs": [{"name": "features", "shape": [2, 30], "datatype": "FP32", "data": [1.0] * 60}]
        }
        for _ in range(40):  # spread over both workers by the kernel
            answer = requests.post(f"{server.base}/v2/models/{MODEL}/versions/1/infer", json=body, timeout=5)
            assert answer.status_code == 200, answer.text
        # The worker that answers the scrape flushes its own counts; the other one within FLUSH_SECONDS.
        wait_until(
            lambda: metric(server, "serving_drift_rows_total", model=MODEL, version="1") == 80,
            timeout=10,
            message=lambda: f"rows {metric(server, 'serving_drift_rows_total', model=MODEL, version='1')}",
        )
        text = requests.get(server.base + "/metrics", timeout=5).text
        monitored = [line for line in text.splitlines() if line.startswith("serving_drift_monitored{")]
        assert len(monitored) == 2 and all("pid=" not in line for line in monitored), monitored
        assert metric(server, "serving_drift_monitored", model=MODEL, version="1") == 1
    finally:
        assert server.stop() == 0, server.stderr()
