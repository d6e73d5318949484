"""Traffic: model and end-user choice, headers for variant routing, entry names, stickiness."""

import random
from collections import Counter

import numpy as np
import pytest

from loadtests.payloads import PayloadError, input_shape, rest_body, tensors
from loadtests.profiles import Traffic
from loadtests.traffic import StickyCheck, end_user_headers, entry_name, parse_entry_name, pick

TRAFFIC = Traffic(models={"a": 3, "b": 1}, user_ids=100, enterprise_share=0.1)


@pytest.mark.parametrize(
    ("model", "version"), [("tabular-classifier", "2"), ("tabular-classifier-int8", None), ("m v", "10")]
)
def test_entry_names_round_trip(model: str, version: str | None) -> None:
    assert parse_entry_name(entry_name(model, version)) == (model, version)


def test_enterprise_segment_for_its_share_of_users() -> None:
    segments = [end_user_headers(i, TRAFFIC).get("x-segment") for i in range(100)]
    assert segments.count("enterprise") == 10, "10% of 100 end users"
    assert end_user_headers(7, TRAFFIC)["x-user-id"] == "user-7"


def test_pick_weights_models_and_repeats_users() -> None:
    rng = random.Random(1)
    picks = [pick(TRAFFIC, rng) for _ in range(4000)]
    models = Counter(model for model, _ in picks)
    assert 0.7 < models["a"] / 4000 < 0.8, f"3:1 weights, got {models}"
    users = {headers["x-user-id"] for _, headers in picks}
    assert len(users) == 100, "every end user recurs, so stickiness is exercised"


def test_pick_without_end_users_sends_no_user_headers() -> None:
    rng = random.Random(1)
    anonymous = Traffic(models={"a": 1}, user_ids=0, enterprise_share=0.5)
    assert {tuple(headers) for _, headers in (pick(anonymous, rng) for _ in range(100))} == {()}, (
        "no x-user-id (so no sticky check) and no segment"
    )


def test_sticky_check_flags_a_user_that_moves() -> None:
    check = StickyCheck()
    user = {"x-user-id": "user-1"}
    assert check.observe("m", user, "1") is None and check.observe("m", user, "1") is None
    assert check.observe("other", user, "2") is None, "stickiness is per model"
    assert check.observe("m", user, "2") == "sticky user user-1 of m moved from v1 to v2"
    assert check.observe("m", {}, "2") is None, "no user id, nothing to check"


METADATA = {
    "name": "m",
    "inputs": [
        {"name": "features", "datatype": "FP32", "shape": [-1, 30]},
        {"name": "ids", "datatype": "INT64", "shape": [-1]},
    ],
}


def test_payloads_follow_the_metadata() -> None:
    inputs = tensors(METADATA, rows=4, rng=np.random.default_rng(0))
    assert [(t.name, t.datatype, t.data.shape, str(t.data.dtype)) for t in inputs] == [
        ("features", "FP32", (4, 30), "float32"),
        ("ids", "INT64", (4,), "int64"),
    ]
    body = rest_body(inputs)
    assert body["inputs"][0]["shape"] == [4, 30] and len(body["inputs"][0]["data"]) == 120, body["inputs"][0]
    assert input_shape([-1, 3, -1], 2) == [2, 3, 2]


def test_unsupported_datatype_is_refused() -> None:
    with pytest.raises(PayloadError, match="input t: datatype BYTES"):
        tensors({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1]}]}, 1, np.random.default_rng(0))
