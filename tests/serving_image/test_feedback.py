"""Feedback on served requests: parsing, the bounded store, and the endpoint with its metrics."""

from typing import Any

import pytest
import requests

from serving_image.errors import InvalidInput, ModelNotFound
from serving_image.feedback import ServedRequests, parse_feedback
from tests.serving_image.conftest import ServerProcess
from tests.serving_image.test_metrics import sample


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"converted": True}, "exactly one of 'request_id' or 'version'"),
        ({"request_id": "a", "version": "1", "converted": True}, "exactly one of 'request_id' or 'version'"),
        ({"version": "1"}, "exactly one of 'converted'"),
        ({"version": "1", "converted": "yes"}, "'converted' must be true or false"),
        ({"version": "1", "value": float("nan")}, "'value' must be a finite number"),
        ({"version": "1", "value": True}, "'value' must be a finite number"),
        ({"version": 2, "value": 1}, "'version' must be a non-empty string"),
        ({"version": "1", "value": 1, "extra": 1}, "unknown feedback field(s) ['extra']"),
        ({"version": "1", "value": -3}, "'value' must not be negative"),
        ({"version": "1", "value": 1e200}, "'value' must be at most 1e+12"),
    ],
)
def test_bad_feedback_is_rejected(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_feedback(document)
    assert message in raised.value.message


def test_store_forgets_the_oldest_beyond_capacity() -> None:
    store = ServedRequests(capacity=2)
    for n in range(3):
        store.remember(f"r{n}", "m", str(n))
    assert store.version_of("m", "r2") == "2"
    with pytest.raises(ModelNotFound):
        store.version_of("m", "r0")
    with pytest.raises(ModelNotFound):
        store.version_of("other", "r1")


def test_feedback_by_request_id_counts_against_the_serving_version(server: ServerProcess) -> None:
    body: dict[str, Any] = {
        "inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": [0.5] * 30}]
    }
    served = requests.post(
        f"{server.base}/v2/models/tabular-classifier/infer",
        json=body,
        headers={"x-request-id": "feedback-req-1", "x-segment": "enterprise"},
        timeout=5,
    )
    assert served.ok and served.headers["x-request-id"] == "feedback-req-1"
    before = requests.get(server.base + "/metrics", timeout=5).text
    url = f"{server.base}/v2/models/tabular-classifier/feedback"
    answer = requests.post(url, json={"request_id": "feedback-req-1", "converted": True}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"model": "tabular-classifier", "version": "2", "recorded": True}
    assert requests.post(url, json={"version": "1", "value": 12.5}, timeout=5).ok
    after = requests.get(server.base + "/metrics", timeout=5).text
    labels = {"model": "tabular-classifier", "version": "2", "kind": "converted"}
    assert (
        sample(after, "serving_feedback_total", **labels) - sample(before, "serving_feedback_total", **labels)
        == 1
    )
    value = {"model": "tabular-classifier", "version": "1"}
    assert sample(after, "serving_feedback_value_total", **value) - sample(
        before, "serving_feedback_value_total", **value
    ) == pytest.approx(12.5)
    assert sample(after, "serving_feedback_value_squares_total", **value) - sample(
        before, "serving_feedback_value_squares_total", **value
    ) == pytest.approx(156.25), "the squares give the analysis the variance"


def test_feedback_for_an_unknown_request_or_model_is_404(server: ServerProcess) -> None:
    unknown = requests.post(
        f"{server.base}/v2/models/tabular-classifier/feedback",
        json={"request_id": "never-served", "converted": False},
        timeout=5,
    )
    assert unknown.status_code == 404 and "never-served" in unknown.json()["error"]
    assert (
        requests.post(
            f"{server.base}/v2/models/nope/feedback", json={"version": "1", "value": 1}, timeout=5
        ).status_code
        == 404
    )
    assert (
        requests.post(
            f"{server.base}/v2/models/tabular-classifier/feedback", data=b"{", timeout=5
        ).status_code
        == 400
    )
