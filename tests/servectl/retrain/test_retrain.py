"""`servectl retrain` end to end: publish, refuse, skip, bad columns, and the published version serves."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from click.testing import CliRunner, Result

from servectl.cli import cli
from servectl.retrain.run import Request, retrain
from servectl.retrain.state import State
from serving_image import drift_profile, model_zoo
from serving_image.repository import Repository
from tests.servectl.retrain.conftest import MODEL, synthetic, write_csv

ROOT = Path(__file__).resolve().parents[3]


def run(repository: Path, data: str, *extra: str) -> tuple[Result, dict[str, Any]]:
    """`servectl retrain --json` in-process; the result and its JSON object."""
    args = ["retrain", "--model", MODEL, "--data", data, "--repository", str(repository), "--json", *extra]
    result = CliRunner().invoke(cli, args)
    assert result.stdout.strip(), f"no output: {result.output!r} {result.exception!r}"
    return result, json.loads(result.stdout)


def run_process(repository: Path, data: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """`servectl retrain --json` as a new process: only the state directory carries over from earlier runs."""
    args = ["--model", MODEL, "--data", data, "--repository", str(repository), "--json", *extra]
    done = subprocess.run(
        [sys.executable, "-m", "servectl", "retrain", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def weights(repository: Path) -> dict[str, int]:
    doc = yaml.safe_load((repository / MODEL / "config.yaml").read_text())
    return {str(k): int(v) for k, v in doc["variants"]["weights"].items()}


def test_fresh_data_publishes_the_next_version_with_profile_card_and_canary(
    repository: Path, fresh_csv: Path
) -> None:
    result, out = run(repository, str(fresh_csv), "--trigger", "ModelInputDriftCritical:m:1:t0")
    assert result.exit_code == 0, out
    assert (out["outcome"], out["version"], out["parent_version"]) == ("published", "2", "1"), out
    version_dir = repository / MODEL / "2"
    model_file = version_dir / "model.onnx"
    metadata = {p.key: p.value for p in onnx.load(str(model_file)).metadata_props}
    profile = drift_profile.load_profile(model_file, metadata)  # raises unless the hash matches
    assert [f.name for f in profile.features] == model_zoo.feature_names(), profile
    assert profile.rows == 1800, "the profile is built from the candidate's training rows only"
    card = json.loads((version_dir / "model_card.json").read_text())
    assert card["data"]["sha256"] == hashlib.sha256(fresh_csv.read_bytes()).hexdigest(), card
    assert (card["parent_version"], card["trigger"]) == ("1", "ModelInputDriftCritical:m:1:t0"), card
    assert card["code_version"].startswith(("git ", "model-serving ")), card
    assert set(card["metrics"]) == {"holdout", "recent"} == set(out["metrics"]), card
    assert card["created"].endswith("Z"), card
    holdout = out["metrics"]["holdout"]["candidate"]["accuracy"]
    assert metadata.get("reference_accuracy") == f"{holdout:.6f}", (
        f"the candidate's held-out accuracy {holdout} is its reference for the quality alert: {metadata}"
    )
    sums = (version_dir / "SHA256SUMS").read_text().splitlines()
    for line in sums:
        digest, name = line.split("  ")
        assert hashlib.sha256((version_dir / name).read_bytes()).hexdigest() == digest, line
    assert {line.split("  ")[1] for line in sums} == {"model.onnx", "profile.json", "model_card.json"}, sums
    assert json.loads((version_dir / "manifest.json").read_text())["version"] == "2"
    assert weights(repository) == {"1": 95, "2": 5}, "the canary starts at the first rollout step"
    assert not list((repository / ".servectl" / "staging").iterdir()), "staging is cleaned up"


def test_the_published_version_serves(repository: Path, fresh_csv: Path) -> None:
    result, out = run(repository, str(fresh_csv))
    assert result.exit_code == 0, out
    loaded = Repository.load(repository, intra_op_threads=1)
    assert not loaded.failures(), loaded.failures()
    version = loaded.models[MODEL].versions["2"]
    assert version.runtime is not None, version.error
    x, _ = synthetic(1, seed=9)
    labels, probabilities = version.runtime.run({model_zoo.INPUT_NAME: x})
    assert labels.shape == (1,) and probabilities.shape == (1, 2), (labels, probabilities)
    assert abs(float(probabilities.sum()) - 1) < 1e-5, probabilities


def test_corrupted_labels_are_refused_and_nothing_is_published(repository: Path, tmp_path: Path) -> None:
    x, y = synthetic(3000, seed=4)
    # The older four fifths carry inverted labels; the most recent rows (by timestamp, shuffled in the
    # file) are right, so the candidate that learnt the inverted rule loses on them.
    stamps = np.random.default_rng(5).permutation(3000)
    bad = np.where(stamps < 2400, 1 - y, y)
    times = [f"2026-11-{1 + int(s) // 200:02d}T{int(s) % 24:02d}:00:00Z" for s in stamps]
    data = write_csv(tmp_path / "corrupt.csv", x, bad, timestamps=times)
    before = (repository / MODEL / "config.yaml").read_text()
    result, out = run(repository, str(data))
    assert result.exit_code == 3, out
    assert out["outcome"] == "refused" and out["version"] is None, out
    assert "recent: accuracy" in out["reason"], out
    assert not (repository / MODEL / "2").exists(), "a refused candidate is not published"
    assert (repository / MODEL / "config.yaml").read_text() == before, "no canary for a refused candidate"


def test_a_duplicate_trigger_is_skipped(repository: Path, fresh_csv: Path) -> None:
    key = "ModelQualityDrop:tabular-classifier:1:2026-11-30T10:00:00Z"
    first, out = run(repository, str(fresh_csv), "--trigger", key)
    assert first.exit_code == 0, out
    code, out = run_process(repository, str(fresh_csv), "--trigger", key, "--min-interval", "0")
    assert code == 4, out
    assert out["outcome"] == "skipped" and f"trigger {key} was already handled" in out["reason"], out
    assert not (repository / MODEL / "3").exists()


def test_the_rate_limit_holds_across_a_restart_and_lifts_after_the_interval(
    repository: Path, fresh_csv: Path
) -> None:
    first, out = run(repository, str(fresh_csv), "--trigger", "a")
    assert first.exit_code == 0, out
    code, outcome = run_process(repository, str(fresh_csv), "--trigger", "b")
    assert code == 4, outcome
    assert outcome["outcome"] == "skipped" and "rate limit" in outcome["reason"], outcome
    state = repository / ".servectl" / "retrain"
    last = State(state).last_run(MODEL)
    assert last is not None
    later = retrain(
        Request(model=MODEL, data=str(fresh_csv), repository=repository, state=state, trigger="b"),
        now=last + 3601,
    )
    assert (later.outcome, later.version, later.parent_version) == ("published", "3", "2"), later
    assert weights(repository) == {"1": 0, "2": 95, "3": 5}, "the new canary is against the serving version"


def test_a_running_retrain_of_the_model_makes_another_skip(repository: Path, fresh_csv: Path) -> None:
    state = State(repository / ".servectl" / "retrain")
    with state.lock(MODEL):
        result, out = run(repository, str(fresh_csv))
    assert result.exit_code == 4 and "is running" in out["reason"], out


def _columns(drop: int | None = None, swap: bool = False, extra: str | None = None) -> list[str]:
    names = [*model_zoo.feature_names(), "label"]
    if swap:
        names[0], names[1] = names[1], names[0]
    if drop is not None:
        names[drop] = "unexpected" if extra is None else extra
    return names


@pytest.mark.parametrize(
    ("header", "column", "reason"),
    [
        (_columns(drop=3, extra="radius"), "radius", "not a feature of the model"),
        (_columns(swap=True), "mean_texture", "feature 0 of the profile is 'mean_radius'"),
        ([*model_zoo.feature_names(), "target"], "target", "not a feature of the model"),
    ],
)
def test_bad_columns_exit_2_naming_file_and_column(
    repository: Path, tmp_path: Path, header: list[str], column: str, reason: str
) -> None:
    x, y = synthetic(300, seed=6)
    data = write_csv(tmp_path / "bad.csv", x, y, header=header)
    result, out = run(repository, str(data))
    assert result.exit_code == 2, out
    assert out["outcome"] == "failed", out
    assert f"{data}: column '{column}'" in out["reason"] and reason in out["reason"], out
    assert State(repository / ".servectl" / "retrain").last_run(MODEL) is None, "bad input uses no rate limit"


def test_a_missing_column_and_a_bad_value_exit_2(repository: Path, tmp_path: Path) -> None:
    x, y = synthetic(300, seed=6)
    data = write_csv(tmp_path / "short.csv", x[:, :29], y, header=[*model_zoo.feature_names()[:29], "label"])
    result, out = run(repository, str(data))
    assert result.exit_code == 2 and "column 'worst_fractal_dimension': missing" in out["reason"], out
    bad = write_csv(tmp_path / "value.csv", x, y)
    lines = bad.read_text().splitlines()
    fields = lines[1].split(",")
    fields[2] = "abc"
    bad.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    result, out = run(repository, str(bad))
    assert result.exit_code == 2, out
    assert f"{bad}: column 'mean_perimeter', line 2: 'abc' is not a number" in out["reason"], out


def test_without_weights_in_config_the_version_is_published_and_no_canary_started(
    repository: Path, fresh_csv: Path
) -> None:
    (repository / MODEL / "config.yaml").write_text("max_batch_size: 64\n")
    result, out = run(repository, str(fresh_csv))
    assert result.exit_code == 0 and out["version"] == "2", out
    assert "canary not started" in out["reason"] and "no variants.weights" in out["reason"], out
    assert (repository / MODEL / "config.yaml").read_text() == "max_batch_size: 64\n"
