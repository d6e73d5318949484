"""The drift profile's sampler: unshifted rows reproduce the profile's shares, a shift moves only the named
features, and every configuration mistake is one error naming what to change."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from loadtests.config import ConfigError
from loadtests.drift import (
    DriftSpec,
    Sampler,
    bin_of,
    estimated_sd,
    load_sampler,
    parse_drift,
    shifted_at,
)
from loadtests.profiles import BUNDLED_PROFILES, drift_models, load_profile, parse_profiles


def numeric(name: str, index: int, column: np.ndarray[Any, Any]) -> dict[str, Any]:
    """A profile entry as serving_image.drift_profile writes it: decile edges, the column's share per bin."""
    edges = np.quantile(column, np.linspace(0.1, 0.9, 9)).tolist()
    counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=10)
    return {"name": name, "index": index, "kind": "numeric", "edges": edges,
            "expected": (counts / counts.sum()).tolist()}  # fmt: skip


def profile_document() -> dict[str, Any]:
    """Three features: a normal column, a skewed one, and one with tied values (an empty bin)."""
    rng = np.random.default_rng(11)
    tied = np.where(rng.random(4000) < 0.3, 0.0, rng.exponential(size=4000))
    features = [
        numeric("normal", 0, rng.normal(5.0, 2.0, 4000)),
        numeric("skewed", 2, rng.lognormal(0.0, 1.0, 4000)),
        numeric("tied", 3, tied),
    ]
    return {"schema": 1, "input": "features", "rows": 4000, "features": features}


@pytest.fixture
def sampler() -> Sampler:
    return Sampler(profile_document(), "profile.json", width=5)


def counts(sampler: Sampler, rows: np.ndarray[Any, Any], name: str) -> np.ndarray[Any, Any]:
    feature = next(f for f in sampler.features if f.name == name)
    bins = [bin_of(feature, float(v)) for v in rows[:, feature.index]]
    return np.bincount(bins, minlength=len(feature.expected))


@pytest.mark.parametrize("name", ["normal", "skewed", "tied"])
def test_unshifted_rows_reproduce_the_expected_shares(sampler: Sampler, name: str) -> None:
    rows = sampler.rows(20_000, np.random.default_rng(1))
    feature = next(f for f in sampler.features if f.name == name)
    observed = counts(sampler, rows, name)
    kept = feature.expected > 0
    assert observed[~kept].sum() == 0, f"{name}: rows in a bin with no training share: {observed}"
    result = stats.chisquare(observed[kept], feature.expected[kept] * observed.sum())
    assert result.pvalue > 0.01, f"{name}: shares {observed / observed.sum()} vs {feature.expected}"


def test_a_shift_moves_only_the_named_features_by_k_estimated_sds(sampler: Sampler) -> None:
    shift = sampler.shift_amounts(["normal"], 2.0)
    plain = sampler.rows(2000, np.random.default_rng(5))
    moved = sampler.rows(2000, np.random.default_rng(5), shift)
    normal = next(f for f in sampler.features if f.name == "normal")
    assert shift == {"normal": pytest.approx(2.0 * normal.sd)}, shift
    assert normal.sd == pytest.approx(2.0, rel=0.1), "the deciles of N(5, 2) give an sd near 2"
    assert np.allclose(moved[:, 0] - plain[:, 0], shift["normal"], atol=1e-5), "the named feature moves"
    assert np.array_equal(np.delete(moved, 0, axis=1), np.delete(plain, 0, axis=1)), "no other column moves"
    assert not moved[:, [1, 4]].any(), "columns the profile does not describe are 0"
    high = counts(sampler, moved, "normal")[8:].sum() / len(moved)
    assert high > 0.6, f"after +2 sd most rows are in the top two deciles, got {high:.2f}"


def test_the_sd_estimate_is_the_decile_spread_over_2_563() -> None:
    assert estimated_sd([-1.2816, *[0.0] * 7, 1.2816]) == pytest.approx(1.0, abs=1e-3)
    assert estimated_sd([0.0, 2.563]) == pytest.approx(2.563 / (2 * 0.4307), rel=1e-3), "3 bins: z(2/3)"


def test_outer_bins_reach_one_sd_beyond_the_outer_edges(sampler: Sampler) -> None:
    rows = sampler.rows(5000, np.random.default_rng(2))
    normal = next(f for f in sampler.features if f.name == "normal")
    assert rows[:, 0].min() >= normal.edges[0] - normal.sd - 1e-5
    assert rows[:, 0].max() <= normal.edges[-1] + normal.sd + 1e-5


@pytest.mark.parametrize(
    ("elapsed", "shifted"), [(0.0, False), (9.99, False), (10.0, True), (14.9, True), (15.0, False)]
)
def test_the_shift_lasts_from_start_for_its_duration(elapsed: float, shifted: bool) -> None:
    spec = DriftSpec(features=("a",), shift_sd=1.0, start_s=10.0, duration_s=5.0)
    assert shifted_at(spec, elapsed) is shifted


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"shift_sd": 1, "duration_s": 5}, "features: expected a non-empty list"),
        ({"features": ["a"], "shift_sd": 0, "duration_s": 5}, "shift_sd: expected a number"),
        ({"features": ["a"], "shift_sd": 1}, "duration_s: expected a number"),
        ({"features": ["a"], "shift_sd": 1, "duration_s": 5, "colour": 1}, "colour: unknown key"),
    ],
)
def test_a_bad_drift_block_is_refused(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_drift(block, "drift")


def profiles(drift: dict[str, Any], models: dict[str, int] | None = None) -> dict[str, Any]:
    traffic = {"models": models or {"m": 1}}
    return {
        "d": {"shape": {"kind": "constant", "users": 1, "duration_s": 20}, "traffic": traffic, "drift": drift}
    }


def test_the_shift_must_end_within_the_run_and_name_a_loaded_model() -> None:
    block = {"features": ["a"], "shift_sd": 1, "start_s": 15, "duration_s": 10}
    with pytest.raises(ConfigError, match="shift ends at 25 s, after the shape's 20 s"):
        parse_profiles(profiles(block), "p.yaml")
    every = parse_profiles(profiles({**block, "start_s": 0}, {"a": 1, "b": 1}), "p.yaml")["d"]
    assert drift_models(every) == ["a", "b"], "without a model, every model of the traffic is sampled"
    with pytest.raises(ConfigError, match=r"'c' is not in traffic\.models"):
        parse_profiles(profiles({**block, "start_s": 0, "model": "c"}, {"a": 1}), "p.yaml")
    one = parse_profiles(profiles({**block, "start_s": 0, "model": "b"}, {"a": 1, "b": 1}), "p.yaml")["d"]
    assert drift_models(one) == ["b"], one


def test_the_bundled_drift_profile_reads(tmp_path: Path) -> None:
    profile = load_profile("drift", BUNDLED_PROFILES)
    assert drift_models(profile) == ["tabular-classifier", "tabular-classifier-int8"], profile


def write_profile(root: Path, version: str, document: dict[str, Any]) -> None:
    (root / "m" / version).mkdir(parents=True)
    (root / "m" / version / "profile.json").write_text(json.dumps(document))


def test_the_highest_version_is_sampled_unless_one_is_named(tmp_path: Path) -> None:
    document = profile_document()
    write_profile(tmp_path, "2", document)
    write_profile(tmp_path, "10", {**document, "features": document["features"][:1]})
    assert [f.name for f in load_sampler(tmp_path, "m", None).features] == ["normal"], "10 is above 2"
    assert len(load_sampler(tmp_path, "m", "2").features) == 3


def test_a_model_without_a_profile_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"m/1/profile.json: no training profile"):
        load_sampler(tmp_path, "m", None)
    with pytest.raises(ConfigError, match="no version directories"):
        load_sampler(tmp_path, "other", None)


def test_unknown_features_and_categorical_ones_are_refused(sampler: Sampler) -> None:
    with pytest.raises(ConfigError, match="'nope' is not in the profile"):
        sampler.shift_amounts(["nope"], 1.0)
    document = profile_document()
    document["features"].append({"name": "c", "index": 4, "kind": "categorical", "categories": ["x"],
                                 "expected": [0.5, 0.5]})  # fmt: skip
    with pytest.raises(ConfigError, match="numeric ones only"):
        Sampler(document, "p.json")
