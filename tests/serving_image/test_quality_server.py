"""Label feedback against a real server process, through a real HTTP client, read back from /metrics."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
import requests

from tests.serving_image.conftest import (
    ServerProcess,
    doubler_graph,
    save_model,
    start_server,
    wait_until,
    write_config,
)
from tests.serving_image.quality_models import classifier, write
from tests.serving_image.test_metrics import sample

CALLER = "x-caller"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, bundled_models: Path) -> Path:
    """The bundled classifier; the same graph with batches past the kept-row limit and a 0.1 margin; a
    string-labelled classifier without a reference accuracy, and a copy whose responses are cached; and a
    doubler, which has no class output."""
    root = tmp_path_factory.mktemp("quality-repository")
    os.symlink(bundled_models / "tabular-classifier", root / "tabular-classifier")
    wide = root / "wide-classifier"
    (wide / "1").mkdir(parents=True)
    os.symlink(bundled_models / "tabular-classifier" / "1" / "model.onnx", wide / "1" / "model.onnx")
    write_config(wide, "max_batch_size: 128\nquality:\n  accuracy_margin: 0.1\n")
    write(classifier(["cat", "dog", "owl"]), root / "animals" / "1" / "model.onnx")
    write(classifier(["cat", "dog", "owl"]), root / "cached-animals" / "1" / "model.onnx")
    write_config(root / "cached-animals", "response_cache: true\n")
    save_model(doubler_graph(), root / "doubler" / "1" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, repository: Path) -> Iterator[ServerProcess]:
    env = {"SERVING_TRUSTED_PROXY_HEADER": CALLER, "SERVING_RESPONSE_CACHE_BYTES": str(1 << 20)}
    process = start_server(repository, tmp_path_factory.mktemp("quality-logs"), env=env)
    yield process
    assert process.stop() == 0, process.stderr()


def features(rows: int) -> dict[str, Any]:
    return {
        "inputs": [{"name": "features", "shape": [rows, 30], "datatype": "FP32", "data": [0.5] * 30 * rows}]
    }


def infer(
    server: ServerProcess, model: str, body: dict[str, Any], caller: str = "app", version: str = "1"
) -> tuple[str, list[Any]]:
    """Serve a request of ``version`` of ``model``: its minted id and the predicted label per row."""
    url = f"{server.base}/v2/models/{model}/versions/{version}/infer"
    answer = requests.post(url, json=body, headers={CALLER: caller}, timeout=10)
    assert answer.ok, answer.text
    outputs = {output["name"]: output["data"] for output in answer.json()["outputs"]}
    return answer.headers["x-request-id"], outputs.get("label", [])


def feedback(
    server: ServerProcess, model: str, document: dict[str, Any], caller: str = "app"
) -> requests.Response:
    return requests.post(
        f"{server.base}/v2/models/{model}/feedback", json=document, headers={CALLER: caller}, timeout=10
    )


def metrics(server: ServerProcess) -> str:
    return requests.get(server.base + "/metrics", timeout=10).text


def test_monitored_versions_start_at_zero_with_their_floors(
    server: ServerProcess, bundled_models: Path
) -> None:
    text = metrics(server)
    for model, version in (("tabular-classifier", "1"), ("tabular-classifier", "2"), ("animals", "1")):
        assert sample(text, "serving_quality_monitored", model=model, version=version) == 1, (model, version)
        for outcome in ("correct", "incorrect"):
            labels = {"model": model, "version": version, "outcome": outcome}
            assert exported(text, "serving_quality_labels_total", **labels), f"{labels} is not created at 0"
    assert exported(text, "serving_quality_confusion_total", model="animals", version="1", actual="owl",
                    predicted="cat"), "every cell of the confusion matrix is created at 0"  # fmt: skip
    assert exported(text, "serving_quality_monitored", model="doubler", version="1")
    assert sample(text, "serving_quality_monitored", model="doubler", version="1") == 0
    props = onnx.load(str(bundled_models / "tabular-classifier" / "1" / "model.onnx")).metadata_props
    reference = float({entry.key: entry.value for entry in props}["reference_accuracy"])
    for model, margin in (("tabular-classifier", 0.05), ("wide-classifier", 0.1)):
        floor = sample(text, "serving_quality_accuracy_floor", model=model, version="1")
        assert floor == pytest.approx(reference - margin), f"{model}: floor {floor}, reference {reference}"
    assert "serving_quality_accuracy_floor{" + 'model="animals"' not in text, "no reference, no floor"


def series(text: str, name: str, **labels: str) -> float:
    return sample(text, name, **labels)


def exported(text: str, name: str, **labels: str) -> bool:
    """Whether a series with these labels is in the exposition (at any value, 0 included)."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return any(
        line.startswith(name + "{") and all(label in line.split("}")[0] for label in wanted)
        for line in text.splitlines()
    )


def test_single_row_labels_count_correct_and_incorrect(server: ServerProcess) -> None:
    before = metrics(server)
    right_id, [predicted] = infer(server, "tabular-classifier", features(1))
    wrong_id, [predicted_again] = infer(server, "tabular-classifier", features(1))
    assert predicted == predicted_again, "the same row is predicted the same"
    right = feedback(server, "tabular-classifier", {"request_id": right_id, "label": predicted})
    assert right.status_code == 200, right.text
    assert right.json() == {"model": "tabular-classifier", "version": "1", "recorded": True, "correct": 1}
    wrong = feedback(server, "tabular-classifier", {"request_id": wrong_id, "label": [1 - predicted]})
    assert wrong.json()["correct"] == 0, wrong.text
    after = metrics(server)
    version = {"model": "tabular-classifier", "version": "1"}
    for outcome in ("correct", "incorrect"):
        name = "serving_quality_labels_total"
        delta = series(after, name, **version, outcome=outcome) - series(
            before, name, **version, outcome=outcome
        )
        assert delta == 1, f"{outcome}: {delta}"
    cells = {
        (str(predicted), str(predicted)): 1,
        (str(1 - predicted), str(predicted)): 1,
        (str(predicted), str(1 - predicted)): 0,
    }
    for (actual, guess), expected in cells.items():
        name, cell = "serving_quality_confusion_total", {**version, "actual": actual, "predicted": guess}
        assert series(after, name, **cell) - series(before, name, **cell) == expected, cell


def test_multi_row_labels_count_each_row(server: ServerProcess) -> None:
    before = metrics(server)
    request_id, predicted = infer(server, "animals", {
        "inputs": [{"name": "x", "shape": [4, 2], "datatype": "FP32", "data": [0, 0, 1, 0, 2, 0, 2, 0]}]
    })  # fmt: skip
    assert predicted == ["cat", "dog", "owl", "owl"], predicted
    answer = feedback(server, "animals", {"request_id": request_id, "label": ["cat", "dog", "dog", "owl"]})
    assert answer.status_code == 200 and answer.json()["correct"] == 3, answer.text
    after = metrics(server)
    version = {"model": "animals", "version": "1"}
    for name, labels, expected in (
        ("serving_quality_labels_total", {"outcome": "correct"}, 3),
        ("serving_quality_labels_total", {"outcome": "incorrect"}, 1),
        ("serving_quality_confusion_total", {"actual": "dog", "predicted": "owl"}, 1),
        ("serving_quality_confusion_total", {"actual": "owl", "predicted": "owl"}, 1),
        ("serving_quality_confusion_total", {"actual": "cat", "predicted": "cat"}, 1),
    ):
        delta = series(after, name, **version, **labels) - series(before, name, **version, **labels)
        assert delta == expected, f"{name} {labels}: {delta}"
    wait_until(lambda: request_id in _feedback_lines(server), 5, "the label feedback was not logged")
    [line] = [entry for entry in _feedback_lines(server).values() if entry["request_id"] == request_id]
    assert (line["kind"], line["label"], line["correct"]) == ("label", ["cat", "dog", "dog", "owl"], 3), line


def _feedback_lines(server: ServerProcess) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in server.stdout().splitlines() if '"event":"feedback"' in line]
    return {line["request_id"]: line for line in lines}


def test_each_problem_is_a_4xx_naming_it(server: ServerProcess) -> None:
    one, _ = infer(server, "tabular-classifier", features(1))
    three, _ = infer(server, "tabular-classifier", features(3))
    doubled, _ = infer(
        server,
        "doubler",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
    )
    wide, _ = infer(server, "wide-classifier", features(65))
    theirs, _ = infer(server, "tabular-classifier", features(1), caller="someone-else")
    classifier = "tabular-classifier"
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("doubler", {"request_id": doubled, "label": 1}, 400,
         "model doubler version 1 has no class output; quality is not monitored"),
        (classifier, {"request_id": one, "label": 7}, 400,
         "label 7 is not a class of model 'tabular-classifier' version '1'; its classes are [0, 1]"),
        (classifier, {"request_id": one, "label": "1"}, 400, "its classes are [0, 1]"),
        (classifier, {"request_id": three, "label": [0, 1]}, 400,
         "'label' gives 2 class(es) for a request of 3 row(s)"),
        (classifier, {"request_id": three, "label": 0}, 400,
         "'label' gives 1 class(es) for a request of 3 row(s)"),
        (classifier, {"version": "1", "label": 0}, 400, "'label' needs 'request_id'"),
        (classifier, {"request_id": theirs, "label": 0}, 404, f"no request '{theirs}'"),
        ("wide-classifier", {"request_id": wide, "label": [0] * 64}, 409,
         "request had 65 rows; predictions are kept only for requests of at most 64 rows"),
    ]  # fmt: skip
    for model, document, status, message in cases:
        answer = feedback(server, model, document)
        assert (answer.status_code, answer.headers["content-type"]) == (status, "application/json"), (
            answer.text
        )
        assert message in answer.json()["error"], (document, answer.json())
    # None of these claimed the request: a right label still counts once, and a second is 409.
    first = feedback(server, "tabular-classifier", {"request_id": three, "label": [0, 0, 0]})
    assert first.status_code == 200, first.text
    second = feedback(server, "tabular-classifier", {"request_id": three, "label": [0, 0, 0]})
    assert second.status_code == 409 and "already recorded" in second.json()["error"], second.text


def test_a_request_takes_one_kind_of_feedback(server: ServerProcess) -> None:
    labelled, [predicted] = infer(server, "tabular-classifier", features(1))
    assert feedback(server, "tabular-classifier", {"request_id": labelled, "label": predicted}).ok
    converted = feedback(server, "tabular-classifier", {"request_id": labelled, "converted": True})
    assert converted.status_code == 409, "a labelled request cannot also convert"
    valued, [predicted] = infer(server, "tabular-classifier", features(1))
    assert feedback(server, "tabular-classifier", {"request_id": valued, "value": 3}).ok
    late = feedback(server, "tabular-classifier", {"request_id": valued, "label": predicted})
    assert late.status_code == 409 and "already recorded" in late.json()["error"], late.text


def test_a_label_asked_only_for_probabilities_still_compares_the_prediction(server: ServerProcess) -> None:
    body = {**features(1), "outputs": [{"name": "probabilities"}]}
    request_id, labels = infer(server, "tabular-classifier", body)
    assert labels == [], "the response carries only what was asked for"
    answer = feedback(server, "tabular-classifier", {"request_id": request_id, "label": 0})
    assert answer.status_code == 200 and answer.json()["correct"] in (0, 1), answer.text


def test_the_mlp_version_is_monitored_too(server: ServerProcess) -> None:
    # Version 2 is an MLPClassifier: its classes are a constant the graph indexes, not a classifier node.
    before = metrics(server)
    request_id, predicted = infer(server, "tabular-classifier", features(2), version="2")
    answer = feedback(server, "tabular-classifier", {"request_id": request_id, "label": predicted})
    assert answer.status_code == 200 and answer.json()["version"] == "2", answer.text
    labels = {"model": "tabular-classifier", "version": "2", "outcome": "correct"}
    name = "serving_quality_labels_total"
    assert series(metrics(server), name, **labels) - series(before, name, **labels) == 2


def test_a_cached_response_keeps_its_prediction_for_labels(server: ServerProcess) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [2, 0, 1, 0]}],
        "outputs": [{"name": "probabilities"}],
    }
    before = metrics(server)
    ids = [infer(server, "cached-animals", body)[0] for _ in range(2)]
    hits = {"model": "cached-animals", "version": "1"}
    name = "serving_response_cache_hits_total"
    assert series(metrics(server), name, **hits) - series(before, name, **hits) == 1, "the second is a hit"
    for request_id in ids:
        answer = feedback(server, "cached-animals", {"request_id": request_id, "label": ["owl", "cat"]})
        assert answer.status_code == 200 and answer.json()["correct"] == 1, answer.text
