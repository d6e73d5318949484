"""`servectl retrain --publish-bucket` against moto's server on loopback (real HTTP S3, KMS and STS APIs):
the serving version fetched from the first bucket and verified, the new one published to every bucket
through `servectl publish`'s upload path, and nothing uploaded anywhere when a check or the gate fails.

What this proves that a unit test cannot: the listing, GetBucketLocation, GetObject and the publish's
PutObject/HeadObject calls boto3 builds are accepted by an S3 API, and SSE-KMS and the SHA-256 checksums
come back on the objects the serving pods would sync."""

import hashlib
import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import numpy as np
import pytest
from click.testing import CliRunner

from servectl.cli import cli
from servectl.publish import Target, upload_version
from servectl.retrain import buckets
from tests.servectl.retrain.conftest import MODEL, synthetic, write_csv

if TYPE_CHECKING:
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import ServerSideEncryptionRuleTypeDef

REGIONS = ("eu-central-1", "eu-west-1")


@pytest.fixture
def aws(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """boto3 pointed at moto by its standard environment; no profile of the machine leaks in."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGIONS[0], "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return endpoint


def model_bucket(region: str) -> str:
    """A bucket in `region` with default SSE-KMS under a new key of that region, as infra makes them."""
    key = boto3.client("kms", region_name=region).create_key()["KeyMetadata"]["Arn"]
    s3 = boto3.client("s3", region_name=region)
    bucket = f"acme-models-{region}-{secrets.token_hex(4)}"
    location = cast("BucketLocationConstraintType", region)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": location})
    rule: ServerSideEncryptionRuleTypeDef = {
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    }
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
    return bucket


@pytest.fixture
def served(aws: str, repository: Path) -> dict[str, str]:
    """Region -> bucket, each holding the local repository's version 1 as `servectl publish` put it."""
    chosen = {region: model_bucket(region) for region in REGIONS}
    targets = [Target(region, bucket) for region, bucket in chosen.items()]
    upload_version(repository / MODEL / "1", MODEL, "1", targets)
    return chosen


def keys(region: str, bucket: str, prefix: str = "") -> list[str]:
    listed = boto3.client("s3", region_name=region).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def retrain(repository: Path, data: Path, urls: list[str]) -> tuple[int, dict[str, Any]]:
    """`servectl retrain --json --publish-bucket ...` in-process; its exit code and its one JSON object."""
    args = ["retrain", "--model", MODEL, "--data", str(data), "--repository", str(repository), "--json"]
    result = CliRunner().invoke(cli, [*args, *(f"--publish-bucket={url}" for url in urls)])
    assert result.stdout.strip(), f"no output: {result.output!r} {result.exception!r}"
    return result.exit_code, json.loads(result.stdout)


def test_publishes_the_next_version_to_every_bucket(
    served: dict[str, str], repository: Path, fresh_csv: Path
) -> None:
    config = (repository / MODEL / "config.yaml").read_text()
    (first, bucket_a), (second, bucket_b) = served.items()
    code, out = retrain(repository, fresh_csv, [f"s3://{bucket_a}/models", f"s3://{bucket_b}"])
    assert code == 0, out
    assert (out["outcome"], out["version"], out["parent_version"]) == ("published", "2", "1"), out
    assert "no canary started" in out["reason"] and "servectl experiment step --stack" in out["reason"], out
    expected = [f"models/{MODEL}/2/{name}" for name in
                ("SHA256SUMS", "manifest.json", "model.onnx", "model_card.json", "profile.json")]  # fmt: skip
    for region, bucket in ((first, bucket_a), (second, bucket_b)):
        assert keys(region, bucket, f"models/{MODEL}/2/") == expected, f"{bucket}: {keys(region, bucket)}"
        s3 = boto3.client("s3", region_name=region)
        for key in expected:
            head = s3.head_object(Bucket=bucket, Key=key)
            assert head["ServerSideEncryption"] == "aws:kms", f"s3://{bucket}/{key}: {head}"
        sums = s3.get_object(Bucket=bucket, Key=expected[0])["Body"].read().decode()
        for line in sums.splitlines():
            digest, name = line.split("  ")
            body = s3.get_object(Bucket=bucket, Key=f"models/{MODEL}/2/{name}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == digest, f"s3://{bucket}: {line}"
        card = json.loads(s3.get_object(Bucket=bucket, Key=expected[3])["Body"].read())
        assert card["parent_version"] == "1", card
    assert not (repository / MODEL / "2").exists(), "nothing is published into the local repository"
    assert (repository / MODEL / "config.yaml").read_text() == config, "no canary is started by the pod"


def test_the_serving_version_is_the_latest_complete_one(
    served: dict[str, str], repository: Path, fresh_csv: Path
) -> None:
    """A version without its manifest (publish writes it last) is not served: the retrain starts from the
    one below, and an unfinished one above it stops the run before training, naming it."""
    region, bucket = next(iter(served.items()))
    s3 = boto3.client("s3", region_name=region)
    s3.delete_object(Bucket=bucket, Key=f"models/{MODEL}/1/manifest.json")
    code, out = retrain(repository, fresh_csv, [f"s3://{bucket}"])
    assert (code, out["outcome"]) == (1, "failed"), out
    assert out["reason"] == (
        f"s3://{bucket}/models/{MODEL}/: no complete version to retrain from "
        "(a version is complete once its manifest.json is there)"
    ), out
    upload_version(repository / MODEL / "1", MODEL, "1", [Target(region, bucket)], replace=True)
    s3.put_object(Bucket=bucket, Key=f"models/{MODEL}/2/model.onnx", Body=b"half a publish")
    code, out = retrain(repository, fresh_csv, [f"s3://{bucket}"])
    assert (code, out["outcome"]) == (1, "failed"), out
    assert out["reason"].startswith(f"s3://{bucket}/models/{MODEL}/2/: no manifest.json"), out
    assert keys(region, bucket, f"models/{MODEL}/2/") == [f"models/{MODEL}/2/model.onnx"], "nothing added"


def test_a_checksum_mismatch_stops_before_training(
    served: dict[str, str], repository: Path, fresh_csv: Path
) -> None:
    (first, bucket_a), (second, bucket_b) = served.items()
    key = f"models/{MODEL}/1/profile.json"
    boto3.client("s3", region_name=first).put_object(Bucket=bucket_a, Key=key, Body=b"{}")
    code, out = retrain(repository, fresh_csv, [f"s3://{bucket_a}", f"s3://{bucket_b}"])
    assert (code, out["outcome"], out["metrics"]) == (1, "failed", {}), out
    assert out["reason"].startswith(f"s3://{bucket_a}/{key}: sha256 "), out
    assert "does not match SHA256SUMS" in out["reason"], out
    for region, bucket in ((first, bucket_a), (second, bucket_b)):
        assert not keys(region, bucket, f"models/{MODEL}/2/"), f"{bucket}: nothing uploaded"


def test_a_refused_candidate_uploads_nothing(
    served: dict[str, str], repository: Path, tmp_path: Path
) -> None:
    x, y = synthetic(3000, seed=4)
    stamps = np.random.default_rng(5).permutation(3000)
    times = [f"2026-11-{1 + int(s) // 200:02d}T{int(s) % 24:02d}:00:00Z" for s in stamps]
    data = write_csv(tmp_path / "corrupt.csv", x, np.where(stamps < 2400, 1 - y, y), timestamps=times)
    code, out = retrain(repository, data, [f"s3://{bucket}" for bucket in served.values()])
    assert (code, out["outcome"]) == (3, "refused"), out
    for region, bucket in served.items():
        assert not keys(region, bucket, f"models/{MODEL}/2/"), (
            f"{bucket}: a refused candidate is not uploaded"
        )


def test_an_existing_version_in_any_bucket_uploads_nothing(
    served: dict[str, str], repository: Path, fresh_csv: Path
) -> None:
    (first, bucket_a), (second, bucket_b) = served.items()
    boto3.client("s3", region_name=second).put_object(Bucket=bucket_b, Key=f"models/{MODEL}/2/x", Body=b"")
    code, out = retrain(repository, fresh_csv, [f"s3://{bucket_a}", f"s3://{bucket_b}"])
    assert (code, out["outcome"]) == (1, "failed"), out
    assert out["reason"] == (
        f"nothing published: s3://{bucket_b}/models/{MODEL}/2/: version exists (1 objects)"
    ), out
    assert not keys(first, bucket_a, f"models/{MODEL}/2/"), "no bucket is written when one refuses"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://models-bucket", ("models-bucket", "models")),
        ("s3://models-bucket/", ("models-bucket", "models")),
        ("s3://models-bucket/team/models/", ("models-bucket", "team/models")),
    ],
)
def test_a_bucket_url_names_the_repository_root(uri: str, expected: tuple[str, str]) -> None:
    assert buckets.parse(uri) == expected


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("models-bucket", "a model bucket is s3://BUCKET[/PREFIX]"),
        ("s3://Models_Bucket", "is not an S3 bucket name"),
        ("s3://models-bucket/a/../b", "has an empty, '.' or '..' part"),
    ],
)
def test_a_malformed_bucket_exits_2(repository: Path, fresh_csv: Path, uri: str, reason: str) -> None:
    code, out = retrain(repository, fresh_csv, [uri])
    assert (code, out["outcome"]) == (2, "failed"), out
    assert out["reason"].startswith("--publish-bucket ") and reason in out["reason"], out


def test_a_store_without_sts_is_published_to_in_the_receivers_name(
    served: dict[str, str], repository: Path, fresh_csv: Path, monkeypatch: pytest.MonkeyPatch, aws: str
) -> None:
    """On premises the pod reaches an S3-compatible store through AWS_ENDPOINT_URL_S3 only: there is no
    STS to name the caller (asking the real one would leave the jurisdiction), so the manifest names the
    retrain and the store."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws)
    region, bucket = next(iter(served.items()))
    code, out = retrain(repository, fresh_csv, [f"s3://{bucket}"])
    assert code == 0, out
    s3 = boto3.client("s3", region_name=region)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"models/{MODEL}/2/manifest.json")["Body"].read())
    assert manifest["published_by"] == f"servectl retrain ({aws})", manifest


def test_a_manifest_publish_did_not_write_stops_before_training(
    served: dict[str, str], repository: Path, fresh_csv: Path
) -> None:
    region, bucket = next(iter(served.items()))
    key = f"models/{MODEL}/1/manifest.json"
    boto3.client("s3", region_name=region).put_object(Bucket=bucket, Key=key, Body=b"{not json")
    code, out = retrain(repository, fresh_csv, [f"s3://{bucket}"])
    assert (code, out["outcome"], out["metrics"]) == (1, "failed", {}), out
    assert out["reason"].startswith(f"s3://{bucket}/{key}: not a publish manifest"), out
