"""The `segment` label of serving_requests_total and the `outcome_class` label of the duration histogram,
on a real server process: segments bounded to the configured values, latency split by success."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient

from serving_image.segments import Segments, parse_values
from tests.serving_image.conftest import ServerProcess, doubler_graph, save_model, start_server
from tests.serving_image.test_metrics import sample

BODY: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
BAD_BODY: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
SEGMENTS = {"SERVING_SEGMENT_HEADER": "x-segment", "SERVING_SEGMENT_VALUES": "enterprise,free"}


@pytest.fixture
def server(tmp_path: Path) -> Any:
    save_model(doubler_graph(), tmp_path / "repository" / "doubler" / "1" / "model.onnx")
    process = start_server(tmp_path / "repository", tmp_path / "logs", env=SEGMENTS)
    yield process
    process.stop()


def _post(server: ServerProcess, body: dict[str, Any], **headers: str) -> int:
    return requests.post(
        server.base + "/v2/models/doubler/infer", json=body, headers=headers, timeout=5
    ).status_code


def _segment(text: str, segment: str) -> float:
    return sample(text, "serving_requests_total", model="doubler", outcome="success", segment=segment)


def test_requests_are_counted_per_configured_segment_and_the_rest_as_other(server: ServerProcess) -> None:
    for _ in range(3):
        assert _post(server, BODY, **{"x-segment": "enterprise"}) == 200
    assert _post(server, BODY, **{"x-segment": "free"}) == 200
    # An unknown value, and no header at all, are `other`: clients cannot add label values.
    for headers in ({"x-segment": "made-up-by-a-client"}, {}):
        assert _post(server, BODY, **headers) == 200
    text = requests.get(server.base + "/metrics", timeout=5).text
    counted = {s: _segment(text, s) for s in ("enterprise", "free", "other")}
    assert counted == {"enterprise": 3, "free": 1, "other": 2}, counted
    assert "made-up-by-a-client" not in text, "an unconfigured header value must never become a label"


def test_request_durations_are_split_into_successes_and_failures(server: ServerProcess) -> None:
    for _ in range(2):
        assert _post(server, BODY) == 200
    assert _post(server, BAD_BODY) == 400
    text = requests.get(server.base + "/metrics", timeout=5).text
    name, labels = "serving_request_duration_seconds_count", {"model": "doubler", "protocol": "rest"}
    assert sample(text, name, outcome_class="success", **labels) == 2, text
    assert sample(text, name, outcome_class="failure", **labels) == 1, "a 400 is timed as a failure"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ("other", "not 'other'"),
        ("Enterprise", "[a-z0-9_-]"),
        ("a,a", "repeat"),
        (",".join(f"s{i}" for i in range(17)), "at most 16"),
    ],
)
def test_bad_segment_values_are_refused_with_the_reason(values: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_values(values)


def test_segments_map_headers_to_bounded_values() -> None:
    segments = Segments("x-segment", parse_values("enterprise, free"))
    assert [segments.of(h) for h in ({"x-segment": "free"}, {"x-segment": "FREE"}, {}, None)] == [
        "free",
        "other",
        "other",
        "other",
    ]
    assert Segments().of({"x-segment": "free"}) == "other", "no segments configured: everything is other"


def test_each_answered_request_adds_its_share_of_compute(server: ServerProcess) -> None:
    for _ in range(4):
        assert _post(server, BODY) == 200
    text = requests.get(server.base + "/metrics", timeout=5).text
    labels = {"model": "doubler", "version": "1"}
    count = sample(text, "serving_request_compute_seconds_count", **labels)
    total = sample(text, "serving_request_compute_seconds_sum", **labels)
    squares = sample(text, "serving_request_compute_seconds_squares_total", **labels)
    batches = sample(text, "serving_compute_duration_seconds_sum", **labels)
    assert count == 4, f"one observation per answered request, not {count}"
    assert 0 < total <= batches + 1e-9, (
        f"the shares ({total}) add up to at most the batches' time ({batches})"
    )
    assert 0 < squares <= total * total, "the sum of squares of positive shares is at most their squared sum"


def test_grpc_requests_take_their_segment_from_the_metadata(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    data = grpcclient.InferInput("x", [1, 4], "FP32")
    data.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    for segment in ("free", "free", "unknown-to-the-server"):
        client.infer("doubler", [data], headers={"x-segment": segment})
    text = requests.get(server.base + "/metrics", timeout=5).text
    counted = {
        s: sample(text, "serving_requests_total", protocol="grpc", outcome="success", segment=s)
        for s in ("free", "enterprise", "other")
    }
    assert counted == {"free": 2, "enterprise": 0, "other": 1}, counted
