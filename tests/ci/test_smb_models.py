"""The smb pipeline's model versions (smb.yml's infra job): the model bucket created by the first, targeted
`up` with the image repository, and every version the Models read published into it before the full `up`.

On the plans `servectl plan` writes for the shipped smb stacks: the first `up`'s targets hold the bucket
every Model's data URL points into, its settings and its key, and nothing SageMaker;
`.github/scripts/model_versions.py` lists exactly the versions the Models read. Then the publish step runs
for real: the versions taken out of an image in a registry on loopback with crane, `servectl publish`
against moto's S3, KMS and STS in server mode (the stack's `regions` output from a stand-in `pulumi`, the
one tool that cannot run here). What that proves that reading the YAML cannot: the objects land under the
prefixes the Models' data URLs name, encrypted with the key the output names, and a re-run writes nothing.
"""

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from stacks.contract import model_bucket_export
from tests.aws_emulator import moto_server
from tests.ci.conftest import BASH, ROOT, executable, run_script, step_named
from tests.ci.test_smb_workflow import FIRST_UP, PUBLISH, jobs, plan_states, plans, targets
from tests.ci.test_workflows import smb_stacks
from tests.crane import CRANE

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ServerSideEncryptionRuleTypeDef

__all__ = ["plans"]  # the fixture, shared with test_smb_workflow.py

VERSIONS = ROOT / ".github" / "scripts" / "model_versions.py"
MODEL_TYPE = "aws:sagemaker/model:Model"
BUCKET_TYPE = "aws:s3/bucket:Bucket"
REGION = "eu-west-1"
REPOSITORY = "smb-eu/model-serving/server"


def versions(plan: Path) -> tuple[int, list[str], str]:
    result = subprocess.run([sys.executable, str(VERSIONS), str(plan)], check=False, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    return result.returncode, result.stdout.splitlines(), result.stderr


def data_urls(states: dict[str, dict[str, Any]]) -> set[str]:
    return {
        s["inputs"]["primaryContainer"]["modelDataSource"]["s3DataSources"][0]["s3Uri"]
        for s in states.values()
        if s["type"] == MODEL_TYPE
    }


@pytest.mark.parametrize("stack", smb_stacks())
def test_first_up_creates_the_bucket_the_models_read_its_settings_and_key(
    stack: str, plans: dict[str, Path]
) -> None:
    states = plan_states(plans[stack])
    code, urns, err = targets(plans[stack], f"{stack}/model-serving/server")
    assert code == 0, err
    read = {url.split("/")[2] for url in data_urls(states)}
    buckets = {states[u]["inputs"]["bucket"] for u in urns if states[u]["type"] == BUCKET_TYPE}
    assert buckets == read and len(read) == 1, (
        f"{stack}: the first up creates {buckets}; the Models read {read}"
    )
    (bucket,) = [u for u in urns if states[u]["type"] == BUCKET_TYPE]
    settings = sorted(states[u]["type"] for u in urns if bucket in (states[u].get("dependencies") or []))
    assert settings == sorted(
        f"aws:s3/{kind}"
        for kind in (
            "bucketLifecycleConfiguration:BucketLifecycleConfiguration",
            "bucketOwnershipControls:BucketOwnershipControls",
            "bucketPolicy:BucketPolicy",
            "bucketPublicAccessBlock:BucketPublicAccessBlock",
            "bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            "bucketVersioning:BucketVersioning",
        )
    ), f"{stack}: no object may land before the bucket's encryption, policy and access block: {settings}"
    (sse,) = [u for u in urns if "bucketServerSideEncryptionConfiguration" in states[u]["type"]]
    keys = [u for u in states[sse].get("dependencies") or [] if states[u]["type"] == "aws:kms/key:Key"]
    assert keys and set(keys) <= set(urns), f"{stack}: the bucket's default key is created with it: {keys}"
    kinds = {states[u]["type"] for u in urns}
    assert not any(k.startswith("aws:sagemaker") for k in kinds), (
        f"{stack}: the first up creates no SageMaker"
    )
    assert not any(
        str((states[u].get("inputs") or {}).get("bucket", "")).startswith(f"acme-{stack}-inference-logs")
        for u in urns
    ), f"{stack}: only the bucket the Models read"


@pytest.mark.parametrize("stack", smb_stacks())
def test_versions_are_those_the_models_read(stack: str, plans: dict[str, Path]) -> None:
    code, lines, err = versions(plans[stack])
    assert code == 0, err
    urls = data_urls(plan_states(plans[stack]))
    (bucket,) = {url.split("/")[2] for url in urls}
    listed = {f"s3://{bucket}/models/{line.replace(' ', '/')}/" for line in lines}
    assert listed == urls and len(lines) == len(set(lines)), f"{stack}: {lines} against the data URLs {urls}"


def one_model(urn: str, url: str, model: str, version: str) -> dict[str, Any]:
    container = {
        "environment": {"SERVING_MODEL_NAME": model, "SERVING_MODEL_VERSION": version},
        "modelDataSource": {"s3DataSources": [{"s3Uri": url}]},
    }
    return {"newState": {"urn": urn, "type": MODEL_TYPE, "inputs": {"primaryContainer": container}}}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([one_model("urn:m", "s3://bkt/models/m/2/", "m", "1")], "serves m 1 but reads models/m/2/"),
        ([one_model("urn:m", "s3://bkt/weights/m/1/", "m", "1")], "not models/m/1/"),
        (
            [one_model("urn:m", "04da6b54-80e4-46f7-96ec-b56ff0331ba9", "m", "1")],
            "no known s3://<bucket>/<prefix> data URL",
        ),
        ([one_model("urn:m", "s3://bkt/models/m/1/", "", "1")], "no SERVING_MODEL_NAME"),
        ([], "no SageMaker Model"),
    ],
    ids=["other-version", "other-layout", "unknown-url", "no-environment", "no-models"],
)
def test_versions_refuse_what_publish_could_not_match(
    steps: list[dict[str, Any]], message: str, tmp_path: Path
) -> None:
    (tmp_path / "plan.json").write_text(json.dumps({"steps": steps}))
    code, lines, err = versions(tmp_path / "plan.json")
    assert code != 0 and message in err, err
    assert lines == [], "nothing listed, so nothing published"


def test_targets_refuse_models_reading_a_bucket_the_plan_does_not_make(tmp_path: Path) -> None:
    repo = {"urn": "urn:r", "type": "aws:ecr/repository:Repository", "inputs": {"name": "s/r"}}
    steps = [{"newState": repo}, one_model("urn:m", "s3://elsewhere/models/m/1/", "m", "1")]
    (tmp_path / "plan.json").write_text(json.dumps({"steps": steps}))
    code, urns, err = targets(tmp_path / "plan.json", "s/r")
    assert code != 0 and "read s3://elsewhere, but the plan has 0 buckets" in err, err
    assert urns == [], "no partial up"


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    """moto's S3, KMS and STS on loopback: the local AWS API emulator, not a fake."""
    with moto_server() as url:
        yield url


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials moto accepts, for this process and the step's; no profile of the machine leaks in."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_env("", tmp_path).items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)


def aws_env(endpoint: str, tmp: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),
    }


def image_with_models(registry: str, tmp: Path, drop: str = "") -> str:
    """Push an image whose /models is the bundled models (as the serving image's), less `drop`; its digest."""
    layer = tmp / "layer.tar"
    source = ROOT / "serving_image" / "models"
    assert (source / "tabular-classifier" / "1" / "model.onnx").is_file(), (
        "run `make models` (make setup does)"
    )
    with tarfile.open(layer, "w") as tar:
        tar.add(source, arcname="models", filter=lambda m: None if drop and m.name.startswith(drop) else m)
        tar.addfile(tarfile.TarInfo("etc/other"), io.BytesIO(b""))
    image = f"{registry}/{REPOSITORY}"
    subprocess.run([str(CRANE), "append", "-f", str(layer), "-t", f"{image}:src"], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    return subprocess.run([str(CRANE), "digest", f"{image}:src"], check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()  # fmt: skip


def model_bucket(endpoint: str) -> tuple[str, str]:
    """The bucket and key the first `up` made: default SSE-KMS under the store's key."""
    key = boto3.client("kms", region_name=REGION, endpoint_url=endpoint).create_key()["KeyMetadata"]["Arn"]
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    bucket = f"acme-smb-eu-models-{REGION}-{len(s3.list_buckets()['Buckets'])}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    rule: ServerSideEncryptionRuleTypeDef = {
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    }
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
    return bucket, key


def publish_step(work: Path, env: dict[str, str]) -> tuple[int, str]:
    code, _, out = run_script(step_named(jobs()["infra"], PUBLISH), work, env, shell=BASH)
    return code, out


def checkout(tmp: Path, plan: Path, bucket: str, key: str) -> Path:
    """The infra job's working directory after the first `up`: the gated plan, the tools, and a `pulumi` that
    prints the stack's `regions` output (the shape stacks/infra/smb.py exports)."""
    work = tmp / "work"
    (work / "bin").mkdir(parents=True)
    (work / "infra.json").write_text(plan.read_text())
    for shared in (".venv", ".github", ".tools"):
        (work / shared).symlink_to(ROOT / shared)
    regions = {REGION: model_bucket_export(region=REGION, model_bucket=bucket, model_key_arn=key)}
    executable(work / "bin" / "pulumi", f"#!/bin/sh\necho '{json.dumps(regions)}'\n")
    return work


def objects(endpoint: str, bucket: str) -> dict[str, str]:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: str(o["ETag"]) for o in listed}


@pytest.mark.slow
def test_publish_step_puts_every_version_where_the_models_read_it(
    aws: str, registry: str, plans: dict[str, Path], tmp_path: Path, credentials: None
) -> None:
    bucket, key = model_bucket(aws)
    digest = image_with_models(registry, tmp_path)
    work = checkout(tmp_path, plans["smb-eu"], bucket, key)
    env = {**aws_env(aws, tmp_path), "PATH": f"{work / 'bin'}:/usr/bin:/bin", "STACK": "smb-eu",
           "SERVING_IMAGE": f"{registry}/{REPOSITORY}", "SERVING_DIGEST": digest}  # fmt: skip
    code, out = publish_step(work, env)
    assert code == 0, out
    found = objects(aws, bucket)
    prefixes = {k.rsplit("/", 1)[0] + "/" for k in found if k.endswith("/manifest.json")}
    plan_urls = {u.split("/", 3)[3] for u in data_urls(plan_states(plans["smb-eu"]))}
    assert prefixes == plan_urls, f"published {prefixes}, the Models read {plan_urls}"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=aws)
    for name in found:
        assert s3.head_object(Bucket=bucket, Key=name)["SSEKMSKeyId"] == key, (
            f"{name}: not under the stack's key"
        )
    model = ROOT / "serving_image" / "models" / "tabular-classifier" / "2" / "model.onnx"
    body = s3.get_object(Bucket=bucket, Key="models/tabular-classifier/2/model.onnx")["Body"].read()
    assert body == model.read_bytes(), "the image's bytes, unchanged"
    code, out = publish_step(work, env)
    assert code == 0 and out.count("already published in every region; nothing written") == 2, out
    assert objects(aws, bucket) == found, "a re-run with the versions present changes nothing"


@pytest.mark.slow
def test_publish_step_stops_when_the_image_lacks_a_version(
    aws: str, registry: str, plans: dict[str, Path], tmp_path: Path, credentials: None
) -> None:
    bucket, key = model_bucket(aws)
    digest = image_with_models(registry, tmp_path, drop="models/tabular-classifier/2")
    work = checkout(tmp_path, plans["smb-eu"], bucket, key)
    env = {**aws_env(aws, tmp_path), "PATH": f"{work / 'bin'}:/usr/bin:/bin", "STACK": "smb-eu",
           "SERVING_IMAGE": f"{registry}/{REPOSITORY}", "SERVING_DIGEST": digest}  # fmt: skip
    code, out = publish_step(work, env)
    assert code != 0 and "has no /models/tabular-classifier/2, which a Model reads" in out, out
    assert not any(k.startswith("models/tabular-classifier/2/") for k in objects(aws, bucket)), (
        "nothing of v2"
    )


def test_publish_reads_the_output_the_first_up_wrote() -> None:
    script = step_named(jobs()["infra"], PUBLISH)["run"]
    assert 'pulumi stack output --json --stack "$STACK" regions > regions.json' in script, script
    assert "--outputs regions.json" in script and "--skip-identical" in script, script
    assert "model_versions.py infra.json" in script, "the versions of the plan just gated"
    first_up = step_named(jobs()["infra"], FIRST_UP)["run"]
    assert "registry_targets.py infra.json" in first_up, first_up
