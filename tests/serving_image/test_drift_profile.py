"""The training profile format: building from rows, the canonical bytes, and every refusal on loading."""

import bisect
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving_image import drift_profile
from serving_image.drift_profile import (
    CategoricalFeature,
    NumericFeature,
    ProfileError,
    categorical_feature,
    load_profile,
    numeric_feature,
    parse_profile,
    profile_bytes,
    profile_document,
)

SEED = 20261130


def synthetic_document() -> dict[str, Any]:
    """A profile with a numeric and a categorical feature, as no bundled model has one."""
    rng = np.random.default_rng(SEED)
    numeric = numeric_feature("size", 0, rng.normal(10, 2, 1000))
    colours = list(rng.choice(["red", "green", "blue", "grey"], 1000, p=[0.5, 0.3, 0.15, 0.05]))
    categorical = categorical_feature("colour", 2, colours, ["red", "green", "blue"])
    return profile_document("x", 1000, [numeric, categorical])


def test_numeric_edges_are_the_quantiles_and_shares_the_rows_per_bin() -> None:
    column = np.random.default_rng(SEED).exponential(3.0, 997)
    entry = numeric_feature("f", 4, column)
    expected_edges = [float(q) for q in np.quantile(column, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])]
    assert entry["edges"] == expected_edges, "edges must be numpy's quantiles at 0.1 .. 0.9"
    counts = [0] * 10
    for value in column:
        counts[bisect.bisect_right(entry["edges"], float(value))] += 1
    assert entry["expected"] == [c / len(column) for c in counts], "shares are rows per bisect_right bin"
    assert abs(sum(entry["expected"]) - 1) < 1e-9, f"shares sum to {sum(entry['expected'])}"
    assert (entry["name"], entry["index"], entry["kind"]) == ("f", 4, "numeric"), entry


def test_numeric_feature_leaves_nan_out_of_the_training_shares() -> None:
    column = np.array([1.0, 2.0, np.nan, 3.0, 4.0] * 20)
    entry = numeric_feature("f", 0, column, bins=4)
    assert entry["edges"] == [float(q) for q in np.quantile([1.0, 2.0, 3.0, 4.0] * 20, [0.25, 0.5, 0.75])]
    assert sum(entry["expected"]) == pytest.approx(1), "NaN rows take no share"


def test_tied_values_repeat_an_edge_and_leave_its_bin_empty() -> None:
    entry = numeric_feature("zeros", 0, np.array([0.0] * 60 + list(range(1, 41))))
    assert entry["edges"][:5] == [0.0] * 5, f"edges {entry['edges']}"
    assert entry["expected"][0] == 0.0 and entry["expected"][5] == 0.6, f"shares {entry['expected']}"
    parse_profile(profile_document("x", 100, [entry]))  # repeated edges are ascending enough


def test_categorical_shares_end_with_other() -> None:
    entry = categorical_feature("c", 1, ["a", "b", "a", "z", "a", "y"], ["a", "b"])
    assert entry["categories"] == ["a", "b"], entry
    assert entry["expected"] == [3 / 6, 1 / 6, 2 / 6], "one share per category, then 'other'"


def test_categorical_profile_round_trips() -> None:
    profile = parse_profile(json.loads(profile_bytes(synthetic_document())))
    numeric, categorical = profile.features
    assert isinstance(numeric, NumericFeature) and len(numeric.edges) == 9, numeric
    assert isinstance(categorical, CategoricalFeature), categorical
    assert categorical.categories == ("red", "green", "blue"), categorical
    assert len(categorical.expected) == 4 and categorical.expected[3] == pytest.approx(0.05, abs=0.02)


def test_profile_bytes_are_sorted_indented_json_with_a_newline() -> None:
    document = synthetic_document()
    data = profile_bytes(document)
    assert data == (json.dumps(document, sort_keys=True, indent=2) + "\n").encode(), "canonical form"
    assert profile_bytes(copy.deepcopy(document)) == data, "same document, same bytes"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(schema=2), "schema is 2"),
        (lambda d: d.update(input=""), "'input'"),
        (lambda d: d.update(rows=0), "'rows'"),
        (lambda d: d.update(rows=True), "'rows'"),
        (lambda d: d.update(features=[]), "'features'"),
        (lambda d: d["features"].append("f"), "features[2] is not an object"),
        (lambda d: d["features"][0].update(name=""), "'name'"),
        (lambda d: d["features"][0].update(index=-1), "'index'"),
        (lambda d: d["features"][1].update(index=0), "the same index"),
        (lambda d: d["features"][1].update(name="size"), "the same name"),
        (lambda d: d["features"][0].update(kind="ordinal"), "'kind'"),
        (lambda d: d["features"][0]["edges"].reverse(), "ascending"),
        (lambda d: d["features"][0]["edges"].append(float("nan")), "finite numbers"),
        (lambda d: d["features"][0]["edges"].append(1e9), "11 shares"),
        (lambda d: d["features"][0]["expected"].__setitem__(0, 0.5), "sum to 1"),
        (lambda d: d["features"][0]["expected"].__setitem__(0, "0.1"), "finite numbers"),
        (lambda d: d["features"][1].update(categories=["red", "red", "blue"]), "distinct"),
        (lambda d: d["features"][1].update(categories=["red", "other", "blue"]), "distinct"),
        (lambda d: d["features"][1].update(categories=["red", 1, "blue"]), "list of strings"),
        (lambda d: d["features"][1].update(categories=["red", "green"]), "3 shares"),
        (
            lambda d: d["features"][0].update(edges=list(range(100)), expected=[1 / 101] * 101),
            "more than 100",
        ),
        (lambda d: d["features"][1].update(categories=[str(i) for i in range(100)]), "more than 100"),
    ],
)
def test_a_bad_profile_is_refused_with_its_reason(change: Any, reason: str) -> None:
    document = synthetic_document()
    change(document)
    with pytest.raises(ProfileError) as raised:
        parse_profile(document)
    assert reason in str(raised.value), f"{raised.value!r} does not say {reason!r}"


def write_profile(directory: Path, data: bytes) -> Path:
    """A version directory with a model file (its content unread here) and ``profile.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "profile.json").write_bytes(data)
    model = directory / "model.onnx"
    model.write_bytes(b"")
    return model


def test_load_profile_accepts_the_file_its_model_names(tmp_path: Path) -> None:
    data = profile_bytes(synthetic_document())
    model = write_profile(tmp_path, data)
    profile = load_profile(model, {drift_profile.METADATA_KEY: drift_profile.sha256(data)})
    assert profile.input == "x" and profile.rows == 1000, profile


@pytest.mark.parametrize(
    ("metadata", "content", "reason"),
    [
        ({}, None, "has no 'training_profile_sha256'"),
        ({"training_profile_sha256": "0" * 64}, None, "is not the model's training_profile_sha256"),
        (None, b"{not json", "not JSON"),
        (None, b'{"schema": 1}', "'input'"),
        (None, b"\xff\xfe", "not JSON"),
    ],
)
def test_load_profile_refuses_with_the_reason(
    tmp_path: Path, metadata: dict[str, str] | None, content: bytes | None, reason: str
) -> None:
    data = content if content is not None else profile_bytes(synthetic_document())
    model = write_profile(tmp_path, data)
    stamped = metadata if metadata is not None else {drift_profile.METADATA_KEY: drift_profile.sha256(data)}
    with pytest.raises(ProfileError) as raised:
        load_profile(model, stamped)
    assert reason in str(raised.value), f"{raised.value!r} does not say {reason!r}"
    assert str(tmp_path / "profile.json") in str(raised.value) or not metadata, "the reason names the file"


def test_load_profile_without_a_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"profile\.json: file not found"):
        load_profile(tmp_path / "model.onnx", {drift_profile.METADATA_KEY: "0" * 64})


def test_an_oversized_file_is_not_read_whole(tmp_path: Path) -> None:
    data = b" " * (drift_profile.MAX_PROFILE_BYTES + 1)
    model = write_profile(tmp_path, data)
    with pytest.raises(ProfileError, match="larger than"):
        load_profile(model, {drift_profile.METADATA_KEY: drift_profile.sha256(data)})


def test_building_refuses_what_loading_would_refuse() -> None:
    with pytest.raises(ProfileError, match="no non-NaN"):
        numeric_feature("f", 0, np.array([np.nan, np.nan]))
    with pytest.raises(ProfileError, match="distinct"):
        categorical_feature("c", 0, ["a"], ["a", "a"])
    with pytest.raises(ProfileError, match="no training values"):
        categorical_feature("c", 0, [], ["a"])
