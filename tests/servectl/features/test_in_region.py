"""A region's feature store seeded and exercised through Feast's real AWS code paths, against moto's server.

What the stacks deploy, on moto (tests/servectl/experiments/aws_emulator.py: a process on loopback, reached
by the SDK's standard AWS_ENDPOINT_URL, fake credentials): the in-cluster `feature_store.yaml` the platform
renders into its ConfigMap; the DynamoDB table as infra creates it (Feast's name for it, its key schema,
under a KMS key); the set-up's parquet uploaded as infra uploads it (SSE-KMS, `features/<view>.parquet`).
Then the CronJob's two commands as processes, as the manifest writes them (`/etc/feast` -> a directory
here): `servectl features apply` fills the empty S3 registry, `servectl features materialize` writes the
rows through Feast's DynamoDB store (BatchWriteItem) from Feast's file offline store reading S3 (dask and
s3fs). Feast's `get_online_features` then answers from DynamoDB exactly the parquet's latest rows, and a
server process given the same config answers `patient_id` from DynamoDB as the features sent directly.

What this proves that the mock tests cannot: the names, key schema, config and commands fit Feast's own
DynamoDB, S3 registry and S3 offline code, end to end. What moto does not show: IAM (moto_server does not
evaluate the roles' policies here, so the two roles' scope is tested on their documents,
tests/stacks/test_features.py), KMS enforcement on reads, and real latency.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import boto3
import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
import tritonclient.http as httpclient

from serving_image.features.repository import open_store
from serving_image.features.schema import FEATURE_NAMES, FEATURE_VIEW, JOIN_KEY, PROJECT
from stacks import features
from stacks.manifests import features as fm
from tests.servectl.experiments.aws_emulator import moto_server
from tests.serving_image.conftest import BUNDLED_MODELS, ServerProcess, start_server

STACK = "eu-prod"
REGION: Final = "eu-central-1"
BUCKET = "acme-eu-serving-models-eu-central-1"
TAGS = {"stack": STACK, "owner": "ml-platform"}
PATIENTS = 40
SEED = 17
SERVECTL = str(Path(sys.executable).parent / "servectl")


def aws_environment(url: str, home: Path) -> dict[str, str]:
    """The SDK pointed at moto by its standard variables; nothing of the machine's profile leaks in."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
    }


def create_as_infra(key_id: str) -> dict[str, Any]:
    """The bucket, the view's table and its parquet as infra makes them (stacks/components/feature_store.py);
    the table's description."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    seed = Path(features.BUNDLED_OFFLINE_DATA[FEATURE_VIEW])
    assert seed.is_file(), f"{seed}: make setup builds it"
    s3.put_object(
        Bucket=BUCKET, Key=features.offline_key(FEATURE_VIEW), Body=seed.read_bytes(),
        ServerSideEncryption="aws:kms", SSEKMSKeyId=key_id, BucketKeyEnabled=True,
    )  # fmt: skip
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    table = features.table_name(STACK, PROJECT, FEATURE_VIEW)
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": features.TABLE_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": features.TABLE_KEY, "AttributeType": "S"}],
        SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_id},
        DeletionProtectionEnabled=True,
        Tags=[{"Key": k, "Value": v} for k, v in TAGS.items()],
    )
    dynamodb.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    description: dict[str, Any] = dynamodb.describe_table(TableName=table)["Table"]
    return description


def cronjob_commands(repo: Path) -> list[list[str]]:
    """The CronJob's init container's and container's commands, with the mount point made `repo`."""
    spec = fm.FeatureJobSpec(
        namespace="payments", image="", schedule="*/30 * * * *", role_arn="", region=REGION,
        offline_root=features.offline_url(BUCKET),
    )  # fmt: skip
    pod = fm.cron_job(spec)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    commands = [c["command"] for c in (*pod["initContainers"], *pod["containers"])]
    return [[repo.as_posix() if part == fm.REPO_DIR else part for part in c] for c in commands]


class Region:
    """The seeded region: moto's URL, the config directory, the table before, the commands' results."""

    def __init__(
        self, url: str, repo: Path, before: dict[str, Any], runs: list[subprocess.CompletedProcess[str]]
    ):
        self.url, self.repo, self.before, self.runs = url, repo, before, runs
        self.log = repo.parent / "moto.log"
        """moto's request log: one line per HTTP request, every client's."""


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    home = tmp_path_factory.mktemp("aws")
    with moto_server(home / "moto.log") as url, pytest.MonkeyPatch.context() as patch:
        environment = aws_environment(url, home)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        for name, value in environment.items():
            patch.setenv(name, value)
        key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
        before = create_as_infra(key_id)
        repo = home / "etc-feast"
        repo.mkdir()
        config = fm.config_map("payments", STACK, PROJECT, REGION, BUCKET)["data"][fm.CONFIG_FILE]
        (repo / fm.CONFIG_FILE).write_text(config)
        runs = [
            subprocess.run(
                [SERVECTL, *command[1:]],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
                env={**os.environ, **environment, "HOME": str(home)},
            )
            for command in cronjob_commands(repo)
        ]
        yield Region(url, repo, before, runs)


def latest_rows() -> pd.DataFrame:
    """Each patient's latest row of the uploaded parquet (read with pandas, not Feast)."""
    rows = pd.read_parquet(features.BUNDLED_OFFLINE_DATA[FEATURE_VIEW]).sort_values("event_timestamp")
    return rows.groupby(JOIN_KEY).last()


def sample(latest: pd.DataFrame) -> list[int]:
    """Patients drawn with a fixed seed, the corrected ones among them (checked below)."""
    rng = np.random.default_rng(SEED)
    return sorted(int(p) for p in rng.choice(latest.index.to_numpy(), size=PATIENTS, replace=False))


@pytest.mark.slow
def test_the_cronjobs_commands_seed_and_fill_the_region(region: Region) -> None:
    apply, materialize = region.runs
    assert apply.returncode == 0, apply.stderr
    registry = f"s3://{BUCKET}/{features.REGISTRY_KEY}"
    assert f"applied 6 objects to {registry}" in apply.stdout, apply.stdout
    source = f"s3://{BUCKET}/{features.offline_key(FEATURE_VIEW)}"
    assert f"data source {FEATURE_VIEW}_source reads {source}" in apply.stdout, apply.stdout
    assert materialize.returncode == 0, materialize.stderr
    assert materialize.stdout.startswith(f"{FEATURE_VIEW}: materialized "), materialize.stdout
    s3 = boto3.client("s3", region_name=REGION)
    assert s3.head_object(Bucket=BUCKET, Key=features.REGISTRY_KEY)["ContentLength"] > 0, "registry written"
    written = sorted(p.name for p in region.repo.iterdir())
    assert written == [fm.CONFIG_FILE], f"the ConfigMap is mounted read-only in a pod; written: {written}"


@pytest.mark.slow
def test_apply_found_infras_table_and_left_it_as_it_was(region: Region) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    after = dynamodb.describe_table(TableName=region.before["TableName"])["Table"]
    assert after["CreationDateTime"] == region.before["CreationDateTime"], "the table was recreated"
    assert after["KeySchema"] == region.before["KeySchema"], after["KeySchema"]
    assert after["SSEDescription"] == region.before["SSEDescription"], after["SSEDescription"]
    assert after["DeletionProtectionEnabled"] is True
    assert dynamodb.list_tables()["TableNames"] == [after["TableName"]], "Feast created another table"
    count = dynamodb.scan(TableName=after["TableName"], Select="COUNT")["Count"]
    assert count == len(latest_rows()), f"{count} items, one per patient expected"


@pytest.mark.slow
def test_the_online_store_answers_the_parquets_latest_rows(region: Region) -> None:
    latest = latest_rows()
    ids = sample(latest)
    originals = pd.read_parquet(features.BUNDLED_OFFLINE_DATA[FEATURE_VIEW])
    corrected = originals[originals[JOIN_KEY].isin(ids)].groupby(JOIN_KEY).size()
    assert (corrected > 1).sum() >= 2, "the sample must hold corrected patients, or it proves less"
    store = open_store(region.repo)
    answer = store.get_online_features(
        features=store.get_feature_service("tabular_classifier_v1"),
        entity_rows=[{JOIN_KEY: i} for i in ids],
    ).to_dict()
    assert answer[JOIN_KEY] == ids, answer[JOIN_KEY]
    served = np.array([answer[name] for name in FEATURE_NAMES], dtype=np.float32).T
    expected = latest.loc[ids, list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(served, expected, "DynamoDB's rows differ from the parquet's latest")


@pytest.mark.slow
def test_a_second_run_applies_again_and_finds_nothing_new(region: Region) -> None:
    """The CronJob's next run: the same two commands; the registry keeps its interval (idempotent apply)."""
    environment = {**os.environ, **aws_environment(region.url, region.repo)}
    apply, materialize = (
        subprocess.run(
            [SERVECTL, *c[1:]], capture_output=True, text=True, timeout=300, check=False, env=environment
        )
        for c in cronjob_commands(region.repo)
    )
    assert apply.returncode == 0, apply.stderr
    assert materialize.returncode == 0, materialize.stderr
    view = open_store(region.repo).get_feature_view(FEATURE_VIEW)
    assert len(view.materialization_intervals) == 2, view.materialization_intervals
    first_end = view.materialization_intervals[0][1]
    assert view.materialization_intervals[1][0] == first_end, "the next run starts where the first ended"


@pytest.fixture(scope="module")
def server(region: Region, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # moto on a shared 2-core machine answers a BatchGetItem in tens of milliseconds, past the 50 ms
    # default budget meant for an in-region DynamoDB; the budget is not what this test is about.
    env = {
        **aws_environment(region.url, region.repo),
        "SERVING_FEATURE_REPO": str(region.repo),
        "SERVING_FEATURE_TIMEOUT_MS": "10000",
    }
    process = start_server(BUNDLED_MODELS, tmp_path_factory.mktemp("in-region-server"), env=env)
    yield process
    assert process.stop() == 0, f"server did not exit cleanly: {process.stderr()}"


@pytest.mark.slow
def test_the_server_answers_patient_id_from_dynamodb(server: ServerProcess) -> None:
    latest = latest_rows()
    ids = sample(latest)
    values = latest.loc[ids, list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    client = httpclient.InferenceServerClient(server.http_url)
    metadata = client.get_model_metadata("tabular-classifier", model_version="1")
    assert metadata["parameters"]["entity_input"] == JOIN_KEY, metadata
    keyed = httpclient.InferInput(JOIN_KEY, [len(ids)], "INT64")
    keyed.set_data_from_numpy(np.asarray(ids, dtype=np.int64), binary_data=True)
    direct = httpclient.InferInput("features", list(values.shape), "FP32")
    direct.set_data_from_numpy(values, binary_data=True)
    by_key = client.infer("tabular-classifier", [keyed], model_version="1")
    by_value = client.infer("tabular-classifier", [direct], model_version="1")
    for name in ("label", "probabilities"):
        np.testing.assert_array_equal(by_key.as_numpy(name), by_value.as_numpy(name), name)


@pytest.mark.slow
def test_an_id_the_region_never_stored_is_a_404(server: ServerProcess) -> None:
    """The negative case: a patient the parquet does not hold is unknown in DynamoDB too."""
    import requests

    body: dict[str, Any] = {
        "inputs": [{"name": JOIN_KEY, "datatype": "INT64", "shape": [1], "data": [987_654]}]
    }
    answer = requests.post(
        f"{server.base}/v2/models/tabular-classifier/versions/1/infer", json=body, timeout=10
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["entity_ids"] == [987_654], answer.json()


@pytest.mark.slow
def test_apply_would_strip_infras_tags_if_the_role_could_list_them(region: Region) -> None:
    """Feast's apply reconciles a table's tags to the config's (none here): moto evaluates no IAM, so it
    removes the tags infra set. In AWS the materialization role may not ListTagsOfResource or UntagResource
    (`features.MATERIALIZE_ACTIONS`), so Feast logs that it cannot update the tags and leaves them; the
    role's actions must stay that narrow."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    tags = dynamodb.list_tags_of_resource(ResourceArn=region.before["TableArn"])["Tags"]
    assert tags == [], f"Feast left the tags {tags}: the note above is out of date"
    assert not {"dynamodb:ListTagsOfResource", "dynamodb:UntagResource", "dynamodb:TagResource"} & set(
        features.MATERIALIZE_ACTIONS
    ), features.MATERIALIZE_ACTIONS


@pytest.mark.slow
def test_nothing_heads_the_bucket_which_neither_role_may(region: Region, server: ServerProcess) -> None:
    """Feast's own S3 registry store calls HeadBucket before every registry read; AWS authorizes HeadBucket
    as s3:ListBucket on the whole bucket (the request carries no s3:prefix), which neither role holds
    unconditioned (moto_server evaluates no IAM, so it would pass here regardless). The rendered config
    names serving_image.features.registry_store's store, which reads the object alone: across apply,
    materialize and the server's start, moto's request log holds no HEAD of the bucket."""
    from tests.stacks.test_features import ACCOUNT, allows

    assert server.http_url  # the server has read the registry too (its start binds the feature services)
    lines = region.log.read_text().splitlines()
    registry_reads = [line for line in lines if f"/{BUCKET}/{features.REGISTRY_KEY}" in line]
    assert registry_reads, "the log shows no registry read: it cannot show the bucket was not asked either"
    heads = [line for line in lines if f'"HEAD /{BUCKET} HTTP' in line]
    assert heads == [], f"HeadBucket, which needs s3:ListBucket on the bucket: {heads[:3]}"
    bucket_arn = f"arn:aws:s3:::{BUCKET}"
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k"
    table = features.table_arn(REGION, ACCOUNT, STACK, PROJECT, FEATURE_VIEW)
    serving = features.serving_policy([table], bucket_arn, key, REGION)
    assert not allows(serving, "s3:ListBucket", bucket_arn), (
        "the serving role may list every tenant's models in the bucket"
    )
    materialize = json.loads(features.materialize_policy([table], bucket_arn, key, REGION))["Statement"]
    (listing,) = [s for s in materialize if s["Action"] == "s3:ListBucket"]
    assert "s3:prefix" in json.dumps(listing.get("Condition", {})), (
        "unconditioned: the job may list every tenant's models in the bucket"
    )
