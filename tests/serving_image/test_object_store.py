"""The jobs' object store in-process: the directory backend's confinement, references, and S3 against moto.

The S3 tests talk to moto's server started as a process on a free loopback port (``moto_server``, from the
dev dependency ``moto[server]``), through the same boto3 client the serving image builds: what they prove
that a stubbed client cannot is the wire behaviour the store relies on (``ContentLength`` before the body,
the error codes of a missing key and bucket, the bucket's default encryption applied to a put).
"""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import boto3
import pytest
import requests

from serving_image.object_store import (
    MAX_KEY_BYTES,
    FileStore,
    ObjectMissing,
    ObjectRefused,
    ObjectStore,
    ObjectTooLarge,
    S3Store,
    StoreUnavailable,
    open_store,
    parse_store_url,
)
from tests.serving_image.conftest import free_port

REGION: Final = "eu-central-1"
BUCKET = "eu-prod-async-eu-central-1"
PREFIX = "jobs/tabular-classifier"
CONTENT = b'{"inputs": []}'


# --- the directory backend --------------------------------------------------------------------------------


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A store directory with inputs of every kind, and a secret outside it that links point at."""
    root = tmp_path / "store"
    (root / "inputs" / "deep").mkdir(parents=True)
    (root / "inputs" / "ok.json").write_bytes(CONTENT)
    (root / "inputs" / "deep" / "a b%20.json").write_bytes(b"deep")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(b"secret")
    (root / "inputs" / "link-out.json").symlink_to(outside / "secret.json")
    (root / "inputs" / "dir-out").symlink_to(outside)
    (root / "inputs" / "absolute-out.json").symlink_to("/etc/hostname")
    (root / "inputs" / "link-in.json").symlink_to(root / "inputs" / "ok.json")
    (root / "inputs" / "relative-in.json").symlink_to("deep/../ok.json")
    (root / "inputs" / "link-root").symlink_to(root)
    os.mkfifo(root / "inputs" / "fifo.json")
    return root


def file_store(root: Path) -> ObjectStore:
    return open_store(f"file://{root}")


def read(store: ObjectStore, key: str, max_bytes: int = 1 << 20) -> bytes:
    return asyncio.run(store.get(key, max_bytes))


def put(store: ObjectStore, key: str, data: bytes) -> str:
    return asyncio.run(store.put(key, data))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("inputs/ok.json", CONTENT),
        ("inputs/deep/a b%20.json", b"deep"),  # a key is its text: nothing is percent-decoded
        ("inputs/link-in.json", CONTENT),  # a link that stays inside is followed
        ("inputs/relative-in.json", CONTENT),
        ("inputs/link-root/inputs/ok.json", CONTENT),
    ],
)
def test_a_key_inside_the_store_is_read(store_dir: Path, key: str, expected: bytes) -> None:
    assert read(file_store(store_dir), key) == expected, key


@pytest.mark.parametrize(
    ("key", "error", "reason"),
    [
        ("../outside/secret.json", ObjectRefused, "has an empty, '.' or '..' path segment"),
        ("inputs/../../outside/secret.json", ObjectRefused, "has an empty, '.' or '..' path segment"),
        ("inputs/./ok.json", ObjectRefused, "has an empty, '.' or '..' path segment"),
        ("inputs//ok.json", ObjectRefused, "has an empty, '.' or '..' path segment"),
        ("inputs/ok.json/", ObjectRefused, "has an empty, '.' or '..' path segment"),
        ("/etc/hostname", ObjectRefused, "is absolute"),
        ("", ObjectRefused, "is empty"),
        ("inputs/ok\x00.json", ObjectRefused, "contains a control character"),
        ("inputs/ok\n.json", ObjectRefused, "contains a control character"),
        ("inputs/" + "x" * MAX_KEY_BYTES, ObjectRefused, f"is longer than {MAX_KEY_BYTES} bytes"),
        ("inputs/link-out.json", ObjectRefused, "leads out of the object store (through a link)"),
        ("inputs/absolute-out.json", ObjectRefused, "leads out of the object store (through a link)"),
        ("inputs/dir-out/secret.json", ObjectRefused, "leads out of the object store (through a link)"),
        ("inputs/link-root", ObjectRefused, "leads out of the object store (through a link)"),
        ("inputs/missing.json", ObjectMissing, "no object at file://{root}/inputs/missing.json"),
        ("missing/ok.json", ObjectMissing, "no object at file://{root}/missing/ok.json"),
        ("inputs/ok.json/more", ObjectMissing, "no object at file://{root}/inputs/ok.json/more"),
        ("inputs", ObjectMissing, "(not a regular file)"),
        ("inputs/fifo.json", ObjectMissing, "(not a regular file)"),  # and the read does not block on it
    ],
)
def test_a_key_outside_the_store_or_of_no_file_is_refused_with_the_reason(
    store_dir: Path, key: str, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as raised:
        read(file_store(store_dir), key)
    assert type(raised.value) is error, f"{key!r}: {raised.value!r}"
    assert reason.format(root=store_dir) in str(raised.value), f"{key!r}: {raised.value}"


def test_a_link_swapped_in_after_the_path_was_resolved_is_refused_not_followed(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race the descriptor walk closes: the path resolved clean, then a component became a link out.
    # Resolution is made to miss the link, as it would have before the swap; the walk must still refuse.
    monkeypatch.setattr(os.path, "realpath", os.path.abspath)
    store = file_store(store_dir)
    for key in ("inputs/link-out.json", "inputs/dir-out/secret.json"):
        with pytest.raises(ObjectRefused, match=r"leads out of the object store \(through a link\)"):
            read(store, key)


def test_the_size_is_checked_against_the_limit_both_ways(store_dir: Path) -> None:
    store = file_store(store_dir)
    assert read(store, "inputs/ok.json", len(CONTENT)) == CONTENT, "an object at the limit is read"
    with pytest.raises(ObjectTooLarge) as raised:
        read(store, "inputs/ok.json", len(CONTENT) - 1)
    expected = f"is {len(CONTENT)} bytes, over the limit of {len(CONTENT) - 1} bytes"
    assert expected in str(raised.value), raised.value
    assert raised.value.status == 413, "too large is the client's (413), not the server's"


def test_a_result_is_written_under_the_store_and_replaces_an_older_one(store_dir: Path) -> None:
    store = file_store(store_dir)
    url = put(store, store.result_key("ab" * 16), b'{"outputs": [1]}')
    path = store_dir / "results" / f"{'ab' * 16}.json"
    assert url == f"file://{store_dir}/results/{'ab' * 16}.json", url
    assert path.read_bytes() == b'{"outputs": [1]}', "the result's bytes are the file's"
    assert put(store, store.result_key("ab" * 16), b"{}") == url
    assert path.read_bytes() == b"{}", "a second put replaces the first"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no temporary file is left"
    assert path.stat().st_mode & 0o777 == 0o640, oct(path.stat().st_mode)


def test_a_write_through_a_link_out_of_the_store_is_refused_and_writes_nothing(
    store_dir: Path, tmp_path: Path
) -> None:
    (store_dir / "results").symlink_to(tmp_path / "outside")
    store = file_store(store_dir)
    with pytest.raises(ObjectRefused, match="leads out of the object store"):
        put(store, store.result_key("cd" * 16), b"{}")
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["secret.json"], "nothing written"
    with pytest.raises(ObjectRefused, match="is absolute"):
        put(store, "/tmp/result.json", b"{}")


def test_a_store_reached_through_a_link_is_its_target(store_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "bucket").symlink_to(store_dir)  # as a mounted model bucket may be
    store = open_store(f"file://{tmp_path / 'bucket'}")
    assert read(store, "inputs/ok.json") == CONTENT
    put(store, "results/x.json", b"{}")
    assert (store_dir / "results" / "x.json").read_bytes() == b"{}"


def test_a_missing_store_directory_is_the_stores_failure_not_the_objects(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/absent")
    with pytest.raises(StoreUnavailable, match=r"directory .*/absent cannot be opened \(No such file"):
        read(store, "inputs/ok.json")
    with pytest.raises(StoreUnavailable, match="cannot be opened"):
        put(store, "results/x.json", b"{}")


def test_an_object_the_server_may_not_read_is_the_stores_failure(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A permission error stands for any I/O failure that is not the object's: worth another attempt.
    # (Raised by a stand-in for os.open: the tests may run as root, which file modes do not stop.)
    real_open = os.open

    def denied(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == "ok.json":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(StoreUnavailable, match=r"could not read .*/inputs/ok.json \(Permission denied\)"):
        read(file_store(store_dir), "inputs/ok.json")


# --- references: the URL a job names, checked at submit --------------------------------------------------


def s3_store(url: str) -> ObjectStore:
    client = boto3.client("s3", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    store = open_store(url, s3_client=client)
    assert isinstance(store, S3Store)
    return store


@pytest.mark.parametrize(
    ("store_url", "reference", "key"),
    [
        ("file:///srv/store", "file:///srv/store/inputs/a.json", "inputs/a.json"),
        ("file:///srv/store/", "file:///srv/store/inputs/deep/a b%20.json", "inputs/deep/a b%20.json"),
        (f"s3://{BUCKET}/{PREFIX}", f"s3://{BUCKET}/{PREFIX}/inputs/a.json", "inputs/a.json"),
        (f"s3://{BUCKET}", f"s3://{BUCKET}/inputs/x/y.json", "inputs/x/y.json"),
    ],
)
def test_a_reference_under_the_stores_inputs_is_its_key(store_url: str, reference: str, key: str) -> None:
    store = s3_store(store_url) if store_url.startswith("s3") else open_store(store_url)
    assert store.input_key(reference) == key, reference


FILE_REFUSALS = [
    (
        "s3://bucket/srv/store/inputs/a.json",
        "must be a file:// URL inside the object store file:///srv/store",
    ),
    ("https://example.com/inputs/a.json", "(its scheme is https)"),
    ("/srv/store/inputs/a.json", "(its scheme is none)"),
    ("file:///srv/store/results/a.json", "is outside the object store's inputs (file:///srv/store/inputs/)"),
    ("file:///srv/store/a.json", "is outside the object store's inputs"),
    ("file:///srv/other/inputs/a.json", "is outside the object store's inputs"),
    ("file:///srv/storefront/inputs/a.json", "is outside the object store's inputs"),
    ("file:///srv/store/../store/inputs/a.json", "is outside the object store's inputs"),
    ("file://host/srv/store/inputs/a.json", "is outside the object store's inputs"),
    ("file:///srv/store/inputs/../results/x.json", "its key has an empty, '.' or '..' path segment"),
    ("file:///srv/store/inputs/", "its key has an empty, '.' or '..' path segment"),
    ("file:///srv/store/inputs/a.json?version=2", "must have no query or fragment"),
    ("file:///srv/store/inputs/a.json#top", "must have no query or fragment"),
    ("file:///srv/store/inputs/a\x01.json", "its key contains a control character"),
]
S3_REFUSALS = [
    (
        f"file:///{BUCKET}/{PREFIX}/inputs/a.json",
        f"must be a s3:// URL inside the object store s3://{BUCKET}",
    ),
    (f"s3://other-bucket/{PREFIX}/inputs/a.json", f"is outside the object store's inputs (s3://{BUCKET}/"),
    (f"s3://{BUCKET}/jobs/mlp/inputs/a.json", "is outside the object store's inputs"),
    (f"s3://{BUCKET}/{PREFIX}/results/a.json", "is outside the object store's inputs"),
    (f"s3://{BUCKET}/{PREFIX}/inputs/../../mlp/inputs/a", "its key has an empty, '.' or '..' path segment"),
]


@pytest.mark.parametrize(
    ("store_url", "reference", "reason"),
    [("file:///srv/store", *refusal) for refusal in FILE_REFUSALS]
    + [(f"s3://{BUCKET}/{PREFIX}", *refusal) for refusal in S3_REFUSALS],
)
def test_a_reference_outside_the_stores_inputs_is_refused_naming_the_problem(
    store_url: str, reference: str, reason: str
) -> None:
    store = s3_store(store_url) if store_url.startswith("s3") else open_store(store_url)
    with pytest.raises(ObjectRefused) as raised:
        store.input_key(reference)
    assert raised.value.status == 400, "a bad reference is the client's"
    message = str(raised.value)
    assert message.startswith(f"input_ref {reference!r}"), message
    assert reason in message, message


def test_the_stores_location_is_parsed_and_normalized() -> None:
    assert parse_store_url("file:///srv/store/").url == "file:///srv/store"
    location = parse_store_url(f"s3://{BUCKET}/{PREFIX}/")
    assert (location.bucket, location.root, location.url) == (BUCKET, PREFIX, f"s3://{BUCKET}/{PREFIX}")
    assert location.url_of("results/x.json") == f"s3://{BUCKET}/{PREFIX}/results/x.json"
    assert isinstance(open_store("file:///srv/store"), FileStore)


# --- S3, against moto's server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``moto_server`` as a process on 127.0.0.1 and a free port; its URL once it answers."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert binary is not None, "moto_server is missing: `make setup` installs the dev extra (moto[server])"
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"moto_server exited: {log.read_text()}"
            try:
                requests.get(f"{url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, f"moto_server did not answer in 30 s: {log.read_text()}"
                time.sleep(0.05)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3's usual configuration, pointed at moto: the store is built exactly as the server builds it."""
    for name, value in {
        "AWS_ENDPOINT_URL_S3": moto_endpoint, "AWS_ENDPOINT_URL_KMS": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return moto_endpoint


@pytest.fixture
def bucket(aws_env: str) -> str:
    """A bucket encrypting with a KMS key by default, as the stacks' result bucket does."""
    s3 = boto3.client("s3")
    key = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    name = f"async-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}
            ]
        },
    )
    s3.put_object(Bucket=name, Key=f"{PREFIX}/inputs/ok.json", Body=CONTENT)
    return name


def test_s3_reads_an_input_and_refuses_one_missing(bucket: str) -> None:
    store = open_store(f"s3://{bucket}/{PREFIX}")
    assert read(store, "inputs/ok.json") == CONTENT
    assert read(store, store.input_key(f"s3://{bucket}/{PREFIX}/inputs/ok.json")) == CONTENT
    with pytest.raises(ObjectMissing) as raised:
        read(store, "inputs/missing.json")
    assert str(raised.value) == f"no object at s3://{bucket}/{PREFIX}/inputs/missing.json", raised.value


class RecordingBodies:
    """An S3 client whose responses' bodies record how much of them was read."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.read: list[int | None] = []

    def get_object(self, **kwargs: Any) -> Any:
        response = self._client.get_object(**kwargs)
        body, reads = response["Body"], self.read

        class Recorded:
            def read(self, amount: int | None = None) -> bytes:
                reads.append(amount)
                data: bytes = body.read(amount)
                return data

            def close(self) -> None:
                body.close()

        response["Body"] = Recorded()
        return response


def test_s3_checks_the_size_before_reading_the_body(bucket: str) -> None:
    recording = RecordingBodies(boto3.client("s3"))
    store = open_store(f"s3://{bucket}/{PREFIX}", s3_client=recording)  # type: ignore[arg-type]
    with pytest.raises(ObjectTooLarge) as raised:
        read(store, "inputs/ok.json", len(CONTENT) - 1)
    assert f"is {len(CONTENT)} bytes, over the limit of {len(CONTENT) - 1} bytes" in str(raised.value)
    assert recording.read == [], "an object over the limit is refused on its length, before any byte is read"
    assert read(store, "inputs/ok.json", len(CONTENT)) == CONTENT, "an object at the limit is read"
    assert recording.read == [len(CONTENT) + 1], "one bounded read"


def test_s3_writes_a_result_under_the_prefix_encrypted_by_the_buckets_key(bucket: str) -> None:
    store = open_store(f"s3://{bucket}/{PREFIX}")
    url = put(store, store.result_key("ef" * 16), b'{"outputs": []}')
    key = f"{PREFIX}/results/{'ef' * 16}.json"
    assert url == f"s3://{bucket}/{key}", url
    stored = boto3.client("s3").get_object(Bucket=bucket, Key=key)
    assert stored["Body"].read() == b'{"outputs": []}'
    assert stored["ContentType"] == "application/json", stored["ContentType"]
    # No key was passed: the bucket's default (SSE-KMS with its key) applied.
    assert stored["ServerSideEncryption"] == "aws:kms", stored.get("ServerSideEncryption")
    assert read(store, store.result_key("ef" * 16)) == b'{"outputs": []}', "read back through the store"


def test_s3_failures_that_are_not_the_objects_are_the_stores(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store("s3://no-such-bucket-here/jobs")
    with pytest.raises(
        StoreUnavailable,
        match=r"could not read s3://no-such-bucket-here/jobs/inputs/a.json \(S3 answered NoSuchBucket\)",
    ):
        read(store, "inputs/a.json")
    with pytest.raises(StoreUnavailable, match=r"could not write .* \(S3 answered NoSuchBucket\)"):
        put(store, "results/a.json", b"{}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    unreachable = open_store("s3://jobs-bucket/jobs")
    with pytest.raises(StoreUnavailable, match=r"could not read .* \(EndpointConnectionError\)"):
        read(unreachable, "inputs/a.json")
