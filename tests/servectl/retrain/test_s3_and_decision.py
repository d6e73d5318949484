"""Labelled data read from S3 (moto's server on loopback, through boto3's usual configuration), the refusal
decision as a table, and the split that keeps the most recent rows apart."""

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import numpy as np
import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3.literals import BucketLocationConstraintType

from servectl.publish import PublishError, publish_local
from servectl.retrain import data
from servectl.retrain.evaluate import Metrics, judge
from servectl.retrain.run import Request, retrain
from tests.servectl.retrain.conftest import MODEL

REGION: "BucketLocationConstraintType" = "eu-central-1"


@pytest.fixture
def s3_env(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """boto3 pointed at moto by its standard environment; no profile of the machine leaks in."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return endpoint


def test_data_from_s3_is_retrained_and_hashed(s3_env: str, repository: Path, fresh_csv: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="labels", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="labels", Key="tabular/2026-11-30.csv", Body=fresh_csv.read_bytes())
    uri = "s3://labels/tabular/2026-11-30.csv"
    request = Request(model=MODEL, data=uri, repository=repository, state=repository / ".state")
    outcome = retrain(request)
    assert outcome.outcome == "published", outcome
    card = json.loads((repository / MODEL / "2" / "model_card.json").read_text())
    assert card["data"] == {
        "uri": uri,
        "sha256": hashlib.sha256(fresh_csv.read_bytes()).hexdigest(),
        "rows": 3000,
        "ordered_by": "file order",
    }, card


def test_a_missing_object_exits_2_naming_it(s3_env: str, repository: Path) -> None:
    uri = "s3://no-such-bucket/x.csv"
    outcome = retrain(Request(model=MODEL, data=uri, repository=repository, state=repository / ".state"))
    assert (outcome.outcome, outcome.code) == ("failed", 2), outcome
    assert outcome.reason.startswith(f"{uri}: NoSuchBucket"), outcome.reason


SERVING = Metrics(accuracy=0.95, log_loss=0.12)


@pytest.mark.parametrize(
    ("candidate", "margin", "refused"),
    [
        (Metrics(0.95, 0.12), 0.01, []),
        (Metrics(0.941, 0.129), 0.01, []),  # worse, but within the margin
        (Metrics(0.939, 0.12), 0.01, ["accuracy"]),
        (Metrics(0.95, 0.131), 0.01, ["log loss"]),
        (Metrics(0.90, 0.20), 0.01, ["accuracy", "log loss"]),
        (Metrics(0.90, 0.20), 0.1, []),
    ],
)
def test_judge_refuses_only_beyond_the_margin(candidate: Metrics, margin: float, refused: list[str]) -> None:
    reasons = judge({"recent": {"candidate": candidate, "serving": SERVING}}, margin)
    assert [r.split(" ")[1] if "accuracy" in r else "log loss" for r in reasons] == refused, reasons
    assert all(r.startswith("recent: ") for r in reasons), reasons


def test_split_keeps_the_most_recent_rows_out_of_training() -> None:
    rows = 1000
    x = np.arange(rows * 30, dtype=np.float32).reshape(rows, 30)
    y = np.arange(rows, dtype=np.int64) % 2
    labelled = data.Labelled(x=x, y=y, sha256="", ordered_by="file order")
    split = data.split(labelled)
    assert len(split.recent_y) == 200 and (split.recent_x == x[-200:]).all(), "the last fifth is recent"
    seen = {int(v) for v in split.train.x_train[:, 0]} | {int(v) for v in split.train.x_test[:, 0]}
    assert seen.isdisjoint(int(v) for v in split.recent_x[:, 0]), (
        "recent rows are neither trained nor held out"
    )
    assert len(split.train.y_test) == 200, "a quarter of the older rows is held out"
    again = data.split(labelled)
    assert (again.train.x_test == split.train.x_test).all(), "the held-out split has a fixed seed"


def test_publish_local_refuses_a_version_that_exists(tmp_path: Path) -> None:
    version = tmp_path / "staged"
    version.mkdir()
    (version / "model.onnx").write_bytes(b"graph")
    (tmp_path / "repo" / MODEL / "1").mkdir(parents=True)
    with pytest.raises(PublishError, match="version exists"):
        publish_local(version, tmp_path / "repo", MODEL, "1", "tester")
    target = publish_local(version, tmp_path / "repo", MODEL, "2", "tester")
    assert sorted(p.name for p in target.iterdir()) == ["SHA256SUMS", "manifest.json", "model.onnx"]
    assert not version.exists(), "the staged directory is renamed into place"


def test_a_model_name_outside_the_repository_exits_2(tmp_path: Path) -> None:
    request = Request(model="../etc", data="x.csv", repository=tmp_path, state=tmp_path / ".state")
    outcome = retrain(request)
    assert (outcome.outcome, outcome.code) == ("failed", 2) and "--model '../etc'" in outcome.reason, outcome
    assert not (tmp_path / ".state").exists(), "nothing is written for a bad name"
