"""`servectl publish` against moto's server mode on loopback: real HTTP S3, KMS and STS APIs.

What this proves that a unit test cannot: the requests boto3 builds are accepted by an S3 API, SSE-KMS and
the SHA-256 checksum come back on HeadObject, SHA256SUMS passes `sha256sum -c` on the downloaded objects,
and no region is written when any region fails its checks. (moto does not recompute a sent checksum, so
S3's own BadDigest refusal is not exercised here.)"""

import hashlib
import json
import secrets
import shutil
import subprocess
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from click.testing import CliRunner, Result

from servectl.publish import manifest, publish, sha256sums
from stacks.contract import RegionOutputs, model_bucket_export, to_export
from stacks.preview.run import ROOT

if TYPE_CHECKING:
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import ServerSideEncryptionRuleTypeDef

MODEL_DIR = ROOT / "serving_image" / "models" / "tabular-classifier" / "1"
PREFIX = "models/tabular-classifier/1/"


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials moto accepts; no profile or config of the machine can leak in."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


@pytest.fixture(scope="module")
def model_dir() -> Path:
    assert (MODEL_DIR / "model.onnx").is_file(), f"{MODEL_DIR}: run `make models` (make setup builds them)"
    return MODEL_DIR


def make_bucket(endpoint: str, region: str, *, kms: bool = True) -> tuple[str, str]:
    """A bucket in `region`, with default SSE-KMS under a new key of that region; returns (bucket, key)."""
    key = ""
    if kms:
        key = boto3.client("kms", region_name=region, endpoint_url=endpoint).create_key()["KeyMetadata"][
            "Arn"
        ]
    s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint)
    bucket = f"acme-models-{region}-{secrets.token_hex(4)}"
    location = cast("BucketLocationConstraintType", region)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": location})
    if kms:
        rule: ServerSideEncryptionRuleTypeDef = {
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
        }
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
    return bucket, key


def run(endpoint: str, directory: Path, *args: str, stack: str = "eu-prod") -> Result:
    base = ["--stack", stack, "--model", "tabular-classifier", "--version", "1", "--endpoint-url", endpoint]
    return CliRunner().invoke(publish, [*base, *args, str(directory)])


def keys(endpoint: str, region: str, bucket: str) -> list[str]:
    listed = boto3.client("s3", region_name=region, endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def read(endpoint: str, region: str, bucket: str, key: str) -> bytes:
    s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.mark.slow
def test_publishes_to_every_region_encrypted_and_checksummed(
    endpoint: str, model_dir: Path, tmp_path: Path
) -> None:
    buckets = {region: make_bucket(endpoint, region) for region in ("eu-central-1", "eu-west-1")}
    result = run(endpoint, model_dir, *[f"--bucket={r}={b}" for r, (b, _) in buckets.items()])
    assert result.exit_code == 0, result.output
    model = (model_dir / "model.onnx").read_bytes()
    profile = (model_dir / "profile.json").read_bytes()  # the drift profile travels with the model
    for region, (bucket, key) in buckets.items():
        expected = [PREFIX + name for name in ("SHA256SUMS", "manifest.json", "model.onnx", "profile.json")]
        assert keys(endpoint, region, bucket) == expected, f"{region}: {keys(endpoint, region, bucket)}"
        s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint)
        for name in expected:
            head = s3.head_object(Bucket=bucket, Key=name, ChecksumMode="ENABLED")
            assert head["ServerSideEncryption"] == "aws:kms", f"{name}: {head.get('ServerSideEncryption')}"
            assert head["SSEKMSKeyId"] == key, (
                f"{name}: encrypted with {head.get('SSEKMSKeyId')}, not the {region} key"
            )
            assert head.get("ChecksumSHA256"), f"{name}: uploaded without a SHA-256 checksum"
        sums = read(endpoint, region, bucket, PREFIX + "SHA256SUMS").decode()
        assert sums == (
            f"{hashlib.sha256(model).hexdigest()}  model.onnx\n"
            f"{hashlib.sha256(profile).hexdigest()}  profile.json\n"
        ), sums
        document = json.loads(read(endpoint, region, bucket, PREFIX + "manifest.json"))
        assert document["model"] == "tabular-classifier" and document["version"] == "1", document
        assert document["files"] == [
            {"path": "model.onnx", "size": len(model), "sha256": hashlib.sha256(model).hexdigest()},
            {"path": "profile.json", "size": len(profile), "sha256": hashlib.sha256(profile).hexdigest()},
        ], document
        assert document["published_by"] == "arn:aws:sts::123456789012:user/moto", document
        datetime.fromisoformat(document["created"])


@pytest.mark.slow
def test_sha256sums_checks_out_with_sha256sum(endpoint: str, model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "version"
    shutil.copytree(model_dir, source)
    (source / "assets").mkdir()
    (source / "assets" / "labels.txt").write_text("approve\ndecline\n")
    bucket, _ = make_bucket(endpoint, "eu-central-1")
    assert run(endpoint, source, f"--bucket=eu-central-1={bucket}").exit_code == 0
    download = tmp_path / "download"
    for key in keys(endpoint, "eu-central-1", bucket):
        target = download / key.removeprefix(PREFIX)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read(endpoint, "eu-central-1", bucket, key))
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        cwd=download,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "assets/labels.txt: OK" in check.stdout, check.stdout


@pytest.mark.slow
def test_an_existing_version_is_refused_unless_replace(
    endpoint: str, model_dir: Path, tmp_path: Path
) -> None:
    bucket, _ = make_bucket(endpoint, "eu-central-1")
    stale = tmp_path / "old"
    shutil.copytree(model_dir, stale)
    (stale / "old-notes.txt").write_text("from the version being replaced\n")
    assert run(endpoint, stale, f"--bucket=eu-central-1={bucket}").exit_code == 0
    before = read(endpoint, "eu-central-1", bucket, PREFIX + "manifest.json")
    refused = run(endpoint, model_dir, f"--bucket=eu-central-1={bucket}")
    assert refused.exit_code == 1, refused.output
    assert f"s3://{bucket}/{PREFIX}: version exists" in refused.output and "--replace" in refused.output
    assert read(endpoint, "eu-central-1", bucket, PREFIX + "manifest.json") == before, (
        "a refusal writes nothing"
    )
    replaced = run(endpoint, model_dir, f"--bucket=eu-central-1={bucket}", "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert PREFIX + "old-notes.txt" not in keys(endpoint, "eu-central-1", bucket), "stale files must go"
    files = json.loads(read(endpoint, "eu-central-1", bucket, PREFIX + "manifest.json"))["files"]
    assert [f["path"] for f in files] == ["model.onnx", "profile.json"], files


@pytest.mark.slow
def test_a_directory_without_model_onnx_is_refused(endpoint: str, tmp_path: Path) -> None:
    bucket, _ = make_bucket(endpoint, "eu-central-1")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    result = run(endpoint, tmp_path, f"--bucket=eu-central-1={bucket}")
    assert result.exit_code == 1, result.output
    assert f"{tmp_path}/model.onnx: missing" in result.output, result.output
    assert keys(endpoint, "eu-central-1", bucket) == [], "nothing uploaded"


@pytest.mark.slow
def test_no_region_is_written_when_one_bucket_has_no_kms_default(endpoint: str, model_dir: Path) -> None:
    good, _ = make_bucket(endpoint, "eu-central-1")
    plain, _ = make_bucket(endpoint, "eu-west-1", kms=False)
    result = run(endpoint, model_dir, f"--bucket=eu-central-1={good}", f"--bucket=eu-west-1={plain}")
    assert result.exit_code == 1, result.output
    assert f"s3://{plain}" in result.output, f"the error must name the bucket: {result.output}"
    assert keys(endpoint, "eu-central-1", good) == [], "checks run in every region before any upload"


@pytest.mark.slow
def test_explicit_kms_key_is_used_and_must_be_in_the_bucket_region(endpoint: str, model_dir: Path) -> None:
    bucket, default_key = make_bucket(endpoint, "eu-central-1")
    other = boto3.client("kms", region_name="eu-central-1", endpoint_url=endpoint).create_key()[
        "KeyMetadata"
    ]["Arn"]
    assert run(endpoint, model_dir, f"--bucket=eu-central-1={bucket}", "--kms-key", other).exit_code == 0
    head = boto3.client("s3", region_name="eu-central-1", endpoint_url=endpoint).head_object(
        Bucket=bucket, Key=PREFIX + "model.onnx"
    )
    assert head["SSEKMSKeyId"] == other != default_key, head.get("SSEKMSKeyId")
    foreign = other.replace("eu-central-1", "eu-west-1")
    wrong = run(endpoint, model_dir, f"--bucket=eu-central-1={bucket}", "--replace", "--kms-key", foreign)
    assert wrong.exit_code == 1 and "not a key in eu-central-1" in wrong.output, wrong.output


@pytest.mark.slow
def test_a_bucket_outside_the_stack_regions_is_refused(endpoint: str, model_dir: Path) -> None:
    bucket, _ = make_bucket(endpoint, "us-east-2")
    result = run(endpoint, model_dir, f"--bucket=us-east-2={bucket}", stack="eu-prod")
    assert result.exit_code == 1 and "us-east-2: not a region of stack eu-prod" in result.output, (
        result.output
    )
    assert keys(endpoint, "us-east-2", bucket) == []


@pytest.mark.slow
def test_buckets_from_the_infra_stack_outputs(endpoint: str, model_dir: Path, tmp_path: Path) -> None:
    bucket, _ = make_bucket(endpoint, "me-central-1")
    values: dict[str, Any] = {f.name: f"x-{f.name}" for f in fields(RegionOutputs)}
    values |= {"region": "me-central-1", "model_bucket": bucket, "roles": {}}
    outputs = tmp_path / "regions.json"
    outputs.write_text(json.dumps({"me-central-1": to_export(RegionOutputs(**values))}))
    result = run(endpoint, model_dir, "--outputs", str(outputs), stack="uae-prod")
    assert result.exit_code == 0, result.output
    assert PREFIX + "manifest.json" in keys(endpoint, "me-central-1", bucket)


def test_manifest_and_sums_are_pure() -> None:
    from servectl.publish import FileEntry

    files = [FileEntry("model.onnx", 3, "ab" * 32), FileEntry("assets/a.txt", 1, "cd" * 32)]
    assert sha256sums(files) == f"{'ab' * 32}  model.onnx\n{'cd' * 32}  assets/a.txt\n"
    created = datetime.fromisoformat("2026-01-02T03:04:05+00:00")
    document = json.loads(manifest("m", "2", files, "arn:aws:iam::1:role/r", created))
    assert (
        document["created"] == "2026-01-02T03:04:05Z" and document["published_by"] == "arn:aws:iam::1:role/r"
    )
    assert [f["size"] for f in document["files"]] == [3, 1], document


def smb_outputs(tmp_path: Path, region: str, bucket: str, key: str) -> Path:
    """An smb stack's `regions` output (bucket, region and key), as `pulumi stack output` prints it."""
    path = tmp_path / "regions.json"
    path.write_text(
        json.dumps({region: model_bucket_export(region=region, model_bucket=bucket, model_key_arn=key)})
    )
    return path


@pytest.mark.slow
def test_an_smb_stacks_output_names_bucket_and_key(endpoint: str, model_dir: Path, tmp_path: Path) -> None:
    """The key the output names is the one the objects get, even where the bucket's default is another."""
    bucket, default_key = make_bucket(endpoint, "eu-west-1")
    named = boto3.client("kms", region_name="eu-west-1", endpoint_url=endpoint).create_key()["KeyMetadata"][
        "Arn"
    ]
    outputs = smb_outputs(tmp_path, "eu-west-1", bucket, named)
    result = run(endpoint, model_dir, "--outputs", str(outputs), stack="smb-eu")
    assert result.exit_code == 0, result.output
    head = boto3.client("s3", region_name="eu-west-1", endpoint_url=endpoint).head_object(
        Bucket=bucket, Key=PREFIX + "model.onnx"
    )
    assert head["SSEKMSKeyId"] == named != default_key, head.get("SSEKMSKeyId")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"eu-west-1": {"region": "eu-west-1"}}, "regions.eu-west-1 lacks modelBucket"),
        ({}, "must map regions to their outputs"),
        ("not json{", "not JSON"),
    ],
    ids=["no-bucket", "empty", "not-json"],
)
def test_a_broken_outputs_file_is_refused(
    document: Any, message: str, tmp_path: Path, model_dir: Path
) -> None:
    path = tmp_path / "regions.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    result = run("http://127.0.0.1:9", model_dir, "--outputs", str(path), stack="smb-eu")
    assert result.exit_code == 1 and message in result.output, result.output


@pytest.mark.slow
def test_skip_identical_leaves_the_same_version_and_refuses_another(
    endpoint: str, model_dir: Path, tmp_path: Path
) -> None:
    bucket, _ = make_bucket(endpoint, "eu-west-1")
    where = f"--bucket=eu-west-1={bucket}"
    assert run(endpoint, model_dir, where, "--skip-identical", stack="smb-eu").exit_code == 0
    first = read(endpoint, "eu-west-1", bucket, PREFIX + "manifest.json")
    again = run(endpoint, model_dir, where, "--skip-identical", stack="smb-eu")
    assert again.exit_code == 0 and "left as it is" in again.output, again.output
    assert "nothing written" in again.output, again.output
    assert read(endpoint, "eu-west-1", bucket, PREFIX + "manifest.json") == first, "a re-run writes nothing"
    changed = tmp_path / "changed"
    shutil.copytree(model_dir, changed)
    (changed / "notes.txt").write_text("another file\n")
    refused = run(endpoint, changed, where, "--skip-identical", stack="smb-eu")
    assert refused.exit_code == 1 and "version exists" in refused.output and "differs" in refused.output, (
        refused.output
    )
    assert read(endpoint, "eu-west-1", bucket, PREFIX + "manifest.json") == first, "a refusal writes nothing"


@pytest.mark.slow
def test_skip_identical_refuses_an_unfinished_version(endpoint: str, model_dir: Path) -> None:
    """Same files but no manifest (a publish that stopped halfway) is not complete: refused, never skipped."""
    bucket, _ = make_bucket(endpoint, "eu-west-1")
    where = f"--bucket=eu-west-1={bucket}"
    assert run(endpoint, model_dir, where, stack="smb-eu").exit_code == 0
    s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=endpoint)
    s3.delete_object(Bucket=bucket, Key=PREFIX + "manifest.json")
    result = run(endpoint, model_dir, where, "--skip-identical", stack="smb-eu")
    assert result.exit_code == 1 and "differs" in result.output, result.output


def test_replace_and_skip_identical_are_refused_together(model_dir: Path) -> None:
    result = run(
        "http://127.0.0.1:9",
        model_dir,
        "--bucket=eu-west-1=b",
        "--replace",
        "--skip-identical",
        stack="smb-eu",
    )
    assert result.exit_code == 1 and "contradict" in result.output, result.output
