"""serving_image/features/registry_store.py against moto's S3 server: the registry read with GetObject alone.

Each case is one S3 answer: the object read (the registry Feast wrote with its own store), a bucket that does
not exist (Feast's S3RegistryBucketNotExist), a key that does not (FileNotFoundError, as Feast's store says),
and what it sends: no HEAD of the bucket, which AWS would authorize as s3:ListBucket.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from feast.errors import S3RegistryBucketNotExist
from feast.infra.registry.s3 import S3RegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.repo_config import RegistryConfig

from serving_image.features.registry_store import ObjectOnlyS3RegistryStore
from tests.servectl.experiments.aws_emulator import moto_server

BUCKET = "registry-test"
KEY = "feast/registry.db"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with moto_server(log) as url, pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "FEAST_S3_ENDPOINT_URL": url,
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-central-1",
        }.items():
            patch.setenv(name, value)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        yield url, log


def store(cls: type[S3RegistryStore], path: str) -> Any:
    return cls(RegistryConfig(path=path), Path("."))


def test_reads_what_feasts_store_wrote_without_heading_the_bucket(moto: tuple[str, Path]) -> None:
    _, log = moto
    written = RegistryProto()
    written.registry_schema_version = "1"
    store(S3RegistryStore, f"s3://{BUCKET}/{KEY}").update_registry_proto(written)
    before = len(log.read_text().splitlines())
    read = store(ObjectOnlyS3RegistryStore, f"s3://{BUCKET}/{KEY}").get_registry_proto()
    assert read.registry_schema_version == "1"
    assert read.version_id == written.version_id != ""
    ours = log.read_text().splitlines()[before:]
    assert any(f"GET /{BUCKET}/{KEY}" in line for line in ours), ours
    assert not [line for line in ours if line.split('"')[1].startswith(f"HEAD /{BUCKET} ")], ours


def test_feasts_own_store_heads_the_bucket(moto: tuple[str, Path]) -> None:
    """Why this store exists: if Feast stops asking, it can go."""
    _, log = moto
    before = len(log.read_text().splitlines())
    store(S3RegistryStore, f"s3://{BUCKET}/{KEY}").get_registry_proto()
    ours = log.read_text().splitlines()[before:]
    assert [line for line in ours if f'"HEAD /{BUCKET} HTTP' in line], ours


def test_a_missing_bucket_is_feasts_bucket_error(moto: tuple[str, Path]) -> None:
    with pytest.raises(S3RegistryBucketNotExist):
        store(ObjectOnlyS3RegistryStore, f"s3://no-such-bucket/{KEY}").get_registry_proto()


def test_a_missing_registry_is_file_not_found(moto: tuple[str, Path]) -> None:
    with pytest.raises(FileNotFoundError, match=r"feast/none\.db"):
        store(ObjectOnlyS3RegistryStore, f"s3://{BUCKET}/feast/none.db").get_registry_proto()
