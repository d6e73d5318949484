"""The jobs' object store in-process: the directory backend's confinement, references, and S3 against moto.

The S3 tests talk to moto's server started as a process on a free loopback port (``moto_server``, from the
dev dependency ``moto[server]``), through the same boto3 client the serving image builds: what they prove
that a stubbed client cannot is the wire behaviour the store relies on (``ContentLength`` before the body,
the error codes of a missing key and bucket, the bucket's default encryption applied to a put).
"""

import asyncio
import errno
import os
import re
import secrets
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
from botocore.exceptions import ClientError, EndpointConnectionError

from serving_image.object_store import (
    MAX_KEY_BYTES,
    FileStore,
    ObjectMissing,
    ObjectRefused,
    ObjectStore,
    ObjectTooLarge,
    S3Store,
    StoreLocation,
    StoreUnavailable,
    key_problem,
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


SEGMENT = "has an empty, '.' or '..' path segment"
OUT = "leads out of the object store (through a link)"


# Each message in full: `{key}` is the key as repr() writes it, `{root}` the store's directory.
@pytest.mark.parametrize(
    ("key", "error", "message"),
    [
        ("../outside/secret.json", ObjectRefused, f"key {{key}} {SEGMENT}"),
        ("inputs/../../outside/secret.json", ObjectRefused, f"key {{key}} {SEGMENT}"),
        ("inputs/./ok.json", ObjectRefused, f"key {{key}} {SEGMENT}"),
        ("inputs//ok.json", ObjectRefused, f"key {{key}} {SEGMENT}"),
        ("inputs/ok.json/", ObjectRefused, f"key {{key}} {SEGMENT}"),
        ("/etc/hostname", ObjectRefused, "key {key} is absolute"),
        ("", ObjectRefused, "key {key} is empty"),
        ("inputs/ok\x00.json", ObjectRefused, "key {key} contains a control character"),
        ("inputs/ok\n.json", ObjectRefused, "key {key} contains a control character"),
        ("inputs/" + "x" * MAX_KEY_BYTES, ObjectRefused, f"key {{key}} is longer than {MAX_KEY_BYTES} bytes"),
        ("inputs/link-out.json", ObjectRefused, f"key {{key}} {OUT}"),
        ("inputs/absolute-out.json", ObjectRefused, f"key {{key}} {OUT}"),
        ("inputs/dir-out/secret.json", ObjectRefused, f"key {{key}} {OUT}"),
        ("inputs/link-root", ObjectRefused, f"key {{key}} {OUT}"),
        ("inputs/missing.json", ObjectMissing, "no object at file://{root}/inputs/missing.json"),
        ("missing/ok.json", ObjectMissing, "no object at file://{root}/missing/ok.json"),
        ("inputs/ok.json/more", ObjectMissing, "no object at file://{root}/inputs/ok.json/more"),
        ("inputs", ObjectMissing, "no object at file://{root}/inputs (not a regular file)"),
    ],
)
def test_a_key_outside_the_store_or_of_no_file_is_refused_with_the_reason(
    store_dir: Path, key: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        read(file_store(store_dir), key)
    assert type(raised.value) is error, f"{key!r}: {raised.value!r}"
    assert str(raised.value) == message.format(root=store_dir, key=repr(key)), f"{key!r}: {raised.value}"


def test_a_read_creates_nothing_where_the_object_is_missing(store_dir: Path) -> None:
    before = sorted(store_dir.rglob("*"))
    with pytest.raises(ObjectMissing):
        read(file_store(store_dir), "inputs/new/deeper/x.json")
    assert sorted(store_dir.rglob("*")) == before, "a read made directories"


def test_reading_a_fifo_does_not_wait_for_a_writer(store_dir: Path) -> None:
    fifo = store_dir / "inputs" / "fifo.json"

    async def bounded() -> bytes:
        try:
            return await asyncio.wait_for(file_store(store_dir).get("inputs/fifo.json", 1024), timeout=10)
        except TimeoutError:
            # A writer's open completes the blocked reader's, so the read's thread ends with the test.
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail("the read of a FIFO waited for a writer")

    # Only this test reads the FIFO: a read that waited for a writer would hang any other test.
    with pytest.raises(ObjectMissing) as raised:
        asyncio.run(bounded())
    assert str(raised.value) == f"no object at file://{fifo} (not a regular file)", raised.value


def test_the_object_is_read_whole_whatever_the_working_directory(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Paths below the root are walked from the root's descriptor: none may be taken relative to the cwd.
    monkeypatch.chdir("/")
    store = file_store(store_dir)
    assert read(store, "inputs/deep/a b%20.json") == b"deep"
    put(store, "results/cwd.json", b"{}")
    assert (store_dir / "results" / "cwd.json").read_bytes() == b"{}"


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
    expected = (
        f"the object at file://{store_dir}/inputs/ok.json is {len(CONTENT)} bytes, "
        f"over the limit of {len(CONTENT) - 1} bytes"
    )
    assert str(raised.value) == expected, raised.value
    assert raised.value.status == 413, "too large is the client's (413), not the server's"


def test_an_object_larger_than_one_read_is_read_whole(store_dir: Path) -> None:
    data = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: several reads of 1 MiB
    (store_dir / "inputs" / "big.bin").write_bytes(data)
    store = file_store(store_dir)
    assert read(store, "inputs/big.bin", len(data)) == data, "the bytes, in order, nothing between reads"
    with pytest.raises(
        ObjectTooLarge, match=f"is {len(data)} bytes, over the limit of {len(data) - 1} bytes$"
    ):
        read(store, "inputs/big.bin", len(data) - 1)


@pytest.mark.parametrize("limit", [10, 1 << 20, (1 << 20) + 10])
def test_an_object_that_grows_after_its_size_was_checked_is_refused_having_read_one_byte_over(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    # The race the bounded read closes: the size checked was within the limit, then the file grew.
    path = store_dir / "inputs" / "growing.json"
    path.write_bytes(b"x" * limit)
    inode, real_fstat = path.stat().st_ino, os.fstat

    def fstat_then_grow(fd: int) -> os.stat_result:
        found = real_fstat(fd)
        if found.st_ino == inode:
            with path.open("ab") as file:
                file.write(b"y" * (3 << 20))
        return found

    monkeypatch.setattr(os, "fstat", fstat_then_grow)
    with pytest.raises(ObjectTooLarge) as raised:
        read(file_store(store_dir), "inputs/growing.json", limit)
    expected = f"the object at file://{path} is {limit + 1} bytes, over the limit of {limit} bytes"
    assert str(raised.value) == expected, "at most limit + 1 bytes are read, and the excess is refused"


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


@pytest.mark.parametrize("key", ["top.json", "results/a/b/c.json"])
def test_a_result_is_written_at_its_key_at_any_depth(store_dir: Path, key: str) -> None:
    store = file_store(store_dir)
    assert put(store, key, b"[1]") == f"file://{store_dir}/{key}"
    assert (store_dir / key).read_bytes() == b"[1]", key
    assert sorted(p.name for p in (store_dir / key).parent.iterdir() if p.name.startswith(".")) == []


def test_a_link_swapped_in_on_the_way_to_a_result_is_refused_naming_the_url(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As for reads: resolution misses the link (it came after), the descriptor walk meets it.
    (store_dir / "results").symlink_to(tmp_path / "outside")
    monkeypatch.setattr(os.path, "realpath", os.path.abspath)
    with pytest.raises(ObjectRefused) as raised:
        put(file_store(store_dir), "results/x.json", b"{}")
    assert str(raised.value) == f"file://{store_dir}/results/x.json {OUT}", raised.value
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["secret.json"], "nothing written"


def test_a_write_that_cannot_be_made_is_the_stores_failure_naming_the_url(store_dir: Path) -> None:
    (store_dir / "results").write_bytes(b"not a directory")
    with pytest.raises(StoreUnavailable) as raised:
        put(file_store(store_dir), "results/x.json", b"{}")
    expected = f"the object store could not write file://{store_dir}/results/x.json (Not a directory)"
    assert str(raised.value) == expected, raised.value
    assert raised.value.status == 503, "the store's failure, worth another attempt"


def test_a_failed_write_keeps_the_older_result_and_leaves_no_temporary_file(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = file_store(store_dir)
    put(store, "results/x.json", b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StoreUnavailable) as raised:
        put(store, "results/x.json", b"new")
    expected = f"the object store could not write file://{store_dir}/results/x.json (Input/output error)"
    assert str(raised.value) == expected, raised.value
    assert (store_dir / "results" / "x.json").read_bytes() == b"old", "a reader never sees half a write"
    assert sorted(p.name for p in (store_dir / "results").iterdir()) == ["x.json"], "temporary file left"


def test_a_failed_write_whose_cleanup_fails_too_reports_the_writes_failure(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_unlink = os.unlink

    def failing_replace(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    def failing_unlink(path: str, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith(".tmp"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    monkeypatch.setattr(os, "unlink", failing_unlink)
    with pytest.raises(StoreUnavailable) as raised:
        put(file_store(store_dir), "results/x.json", b"{}")
    assert str(raised.value).endswith("/results/x.json (Input/output error)"), raised.value


def test_the_temporary_file_is_never_opened_through_a_link_planted_at_its_name(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whoever can guess the temporary name and plant a link there must not get the write redirected.
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: "0" * 16)
    (store_dir / "results").mkdir()
    target = tmp_path / "outside" / "planted.json"
    (store_dir / "results" / ".x.json.0000000000000000.tmp").symlink_to(target)
    with pytest.raises(StoreUnavailable, match=r"could not write .*/results/x.json \(File exists\)$"):
        put(file_store(store_dir), "results/x.json", b"{}")
    assert not target.exists(), "the write went through the planted link"
    assert not (store_dir / "results" / "x.json").exists()


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
    ("file:///srv/store/inputs/a://b.json", "its key has an empty, '.' or '..' path segment"),
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


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("file:///srv/store", StoreLocation("file", "", "/srv/store")),
        ("file:///srv/store/", StoreLocation("file", "", "/srv/store")),
        ("file:///s", StoreLocation("file", "", "/s")),
        (f"s3://{BUCKET}/{PREFIX}/", StoreLocation("s3", BUCKET, PREFIX)),
        ("s3://abc", StoreLocation("s3", "abc", "")),  # the shortest bucket name
        ("s3://" + "a" * 63, StoreLocation("s3", "a" * 63, "")),  # the longest
        ("s3://a-b/x", StoreLocation("s3", "a-b", "x")),  # '.' and '-' anywhere but first
        ("s3://a.b", StoreLocation("s3", "a.b", "")),
        (
            "s3://0123456789abcdefghijklmnopqrstuvwxyz.-",
            StoreLocation("s3", "0123456789abcdefghijklmnopqrstuvwxyz.-", ""),
        ),
    ],
)
def test_a_store_url_is_parsed_and_normalized(url: str, location: StoreLocation) -> None:
    assert parse_store_url(url) == location, url


def test_a_stores_url_and_its_objects_urls() -> None:
    location = parse_store_url(f"s3://{BUCKET}/{PREFIX}/")
    assert location.url == f"s3://{BUCKET}/{PREFIX}"
    assert location.url_of("results/x.json") == f"s3://{BUCKET}/{PREFIX}/results/x.json"
    assert parse_store_url(f"s3://{BUCKET}/").url_of("results/x.json") == f"s3://{BUCKET}/results/x.json"
    assert parse_store_url("file:///srv/store/").url_of("inputs/a") == "file:///srv/store/inputs/a"
    assert isinstance(open_store("file:///srv/store"), FileStore)


SCHEMES = "must be file:///<absolute directory> or s3://<bucket>/<prefix>"
DIRECTORY_SEGMENT = "the directory's path has an empty, '.' or '..' segment"
PREFIX_SEGMENT = "the prefix has an empty, '.' or '..' segment"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///srv/my store", "must be printable ASCII without spaces"),
        ("file:///srv/st\x01re", "must be printable ASCII without spaces"),
        ("file:///srv/st\u00f6re", "must be printable ASCII without spaces"),
        ("file:///srv/store?x=1", "must have no query or fragment"),
        ("file:///srv/store#top", "must have no query or fragment"),
        ("http://srv/store", SCHEMES),
        ("/srv/store", SCHEMES),
        ("s3:/bucket", SCHEMES),
        ("file://host/srv/store", "a file:// store names no host: file:///<absolute directory>"),
        ("file:///", "the directory must not be /"),
        ("file://", "the directory must not be /"),
        ("file:////srv", DIRECTORY_SEGMENT),
        ("file:///srv//store", DIRECTORY_SEGMENT),
        ("file:///srv/../etc", DIRECTORY_SEGMENT),
        ("file:///srv/x://y", DIRECTORY_SEGMENT),
        ("s3://ab", "'ab' is not an S3 bucket name"),
        ("s3://" + "a" * 64, f"'{'a' * 64}' is not an S3 bucket name"),
        ("s3://.bucket", "'.bucket' is not an S3 bucket name"),
        ("s3://-bucket", "'-bucket' is not an S3 bucket name"),
        ("s3://Bucket", "'Bucket' is not an S3 bucket name"),
        ("s3://my_bucket", "'my_bucket' is not an S3 bucket name"),
        ("s3://", "'' is not an S3 bucket name"),
        ("s3://bucket//jobs", PREFIX_SEGMENT),
        ("s3://bucket/jobs/../other", PREFIX_SEGMENT),
        ("s3://bucket/a://b", PREFIX_SEGMENT),
    ],
)
def test_a_store_url_that_is_not_one_is_refused_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_store_url(url)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("inputs/" + "x" * (MAX_KEY_BYTES - 7), None),  # exactly at the limit
        ("inputs/" + "x" * (MAX_KEY_BYTES - 6), f"is longer than {MAX_KEY_BYTES} bytes"),
        ("inputs/" + "\u00e9" * 508, None),  # 1023 bytes in 515 characters
        (
            "inputs/" + "\u00e9" * 509,
            f"is longer than {MAX_KEY_BYTES} bytes",
        ),  # bytes are counted, not characters
        ("inputs/a.json", None),
    ],
)
def test_a_key_is_limited_in_bytes_at_s3s_limit(key: str, problem: str | None) -> None:
    assert key_problem(key) == problem, (len(key.encode()), problem)


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
    expected = (
        f"the object at s3://{bucket}/{PREFIX}/inputs/ok.json is {len(CONTENT)} bytes, "
        f"over the limit of {len(CONTENT) - 1} bytes"
    )
    assert str(raised.value) == expected, raised.value
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
    with pytest.raises(StoreUnavailable) as raised:
        read(store, "inputs/a.json")
    url = "s3://no-such-bucket-here/jobs"
    expected = f"the object store could not read {url}/inputs/a.json (S3 answered NoSuchBucket)"
    assert str(raised.value) == expected, raised.value
    with pytest.raises(StoreUnavailable) as raised:
        put(store, "results/a.json", b"{}")
    expected = f"the object store could not write {url}/results/a.json (S3 answered NoSuchBucket)"
    assert str(raised.value) == expected, raised.value
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    unreachable = open_store("s3://jobs-bucket/jobs")
    with pytest.raises(StoreUnavailable, match=r"could not read .* \(EndpointConnectionError\)"):
        read(unreachable, "inputs/a.json")


def test_s3_client_is_built_with_bounded_timeouts_standard_retries_and_the_configured_region(
    aws_env: str,
) -> None:
    store = open_store("s3://jobs-bucket/jobs")
    assert isinstance(store, S3Store)
    client = store._client  # the client the server builds, not one the test passes in
    config: Any = client.meta.config  # botocore-stubs do not list the options a Config holds
    assert (config.connect_timeout, config.read_timeout) == (5, 60), "a stalled store must not hold a job"
    # botocore's Config counts `max_attempts` as retries after the first: 3 of them are 4 attempts in all.
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}, config.retries
    assert client.meta.region_name == REGION, "the region comes from the environment (IRSA in the stacks)"
    assert client.meta.endpoint_url == aws_env, "AWS_ENDPOINT_URL_S3 is honoured"


def test_s3_requests_are_signed_with_sigv4_for_the_region_at_the_endpoint(bucket: str, aws_env: str) -> None:
    store = open_store(f"s3://{bucket}/{PREFIX}")
    assert isinstance(store, S3Store)
    sent: list[Any] = []
    store._client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request))
    assert read(store, "inputs/ok.json") == CONTENT
    put(store, "results/signed.json", b"{}")
    assert [r.method for r in sent] == ["GET", "PUT"], sent
    for request, key in zip(sent, ("inputs/ok.json", "results/signed.json"), strict=True):
        assert request.url == f"{aws_env}/{bucket}/{PREFIX}/{key}", request.url
        authorization = request.headers["Authorization"].decode()
        assert authorization.startswith("AWS4-HMAC-SHA256 Credential=testing/"), authorization
        assert f"/{REGION}/s3/aws4_request" in authorization, authorization
    assert sent[1].headers["Content-Type"] == b"application/json"
    assert b"x-amz-server-side-encryption" not in {k.lower().encode() for k in sent[1].headers}, (
        "no encryption header: the bucket's default key applies"
    )


def test_s3_store_at_the_buckets_root_uses_the_keys_as_they_are(bucket: str) -> None:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="inputs/root.json", Body=b"root")
    store = open_store(f"s3://{bucket}")
    assert read(store, "inputs/root.json") == b"root"
    assert put(store, "results/r.json", b"{}") == f"s3://{bucket}/results/r.json"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted([f"{PREFIX}/inputs/ok.json", "inputs/root.json", "results/r.json"]), keys


class FailingClient:
    """An S3 client that answers every call with one error, as S3 or the network might."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_object(self, **kwargs: Any) -> Any:
        raise self.error

    def put_object(self, **kwargs: Any) -> Any:
        raise self.error


def answered(code: str | None, *, error: bool = True) -> ClientError:
    """S3's error answer with ``code``; without a code, or without an Error at all."""
    details = {} if code is None else {"Code": code, "Message": "..."}
    response: Any = {"Error": details} if error else {}
    return ClientError(response, "GetObject")


S3_URL = f"s3://{BUCKET}/{PREFIX}"
MISSING_AT = f"no object at {S3_URL}/inputs/a.json"


@pytest.mark.parametrize(
    ("answer", "read_error", "read_message", "write_message"),
    [
        (answered("NoSuchKey"), ObjectMissing, MISSING_AT, "(S3 answered NoSuchKey)"),
        (answered("NotFound"), ObjectMissing, MISSING_AT, "(S3 answered NotFound)"),
        (answered("404"), ObjectMissing, MISSING_AT, "(S3 answered 404)"),
        # Without s3:ListBucket a missing key reads as AccessDenied: the job's problem on a read only.
        (
            answered("AccessDenied"), ObjectMissing,
            f"{MISSING_AT} that this worker may read (S3 answered AccessDenied)",
            "(S3 answered AccessDenied)",
        ),
        (
            answered("403"), ObjectMissing,
            f"{MISSING_AT} that this worker may read (S3 answered 403)", "(S3 answered 403)",
        ),
        (
            answered("SlowDown"), StoreUnavailable,
            f"the object store could not read {S3_URL}/inputs/a.json (S3 answered SlowDown)",
            "(S3 answered SlowDown)",
        ),
        (
            answered(None), StoreUnavailable,
            f"the object store could not read {S3_URL}/inputs/a.json (S3 answered unknown)",
            "(S3 answered unknown)",
        ),
        (
            answered(None, error=False), StoreUnavailable,
            f"the object store could not read {S3_URL}/inputs/a.json (S3 answered unknown)",
            "(S3 answered unknown)",
        ),
        (
            EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), StoreUnavailable,
            f"the object store could not read {S3_URL}/inputs/a.json (EndpointConnectionError)",
            "(EndpointConnectionError)",
        ),
        (
            ConnectionResetError(104, "Connection reset by peer"), StoreUnavailable,
            f"the object store could not read {S3_URL}/inputs/a.json (ConnectionResetError)",
            "(ConnectionResetError)",
        ),
    ],
)  # fmt: skip
def test_s3_answers_are_the_jobs_or_the_stores_failure_naming_the_url(
    answer: Exception, read_error: type[Exception], read_message: str, write_message: str
) -> None:
    store = open_store(S3_URL, s3_client=FailingClient(answer))  # type: ignore[arg-type]
    with pytest.raises(read_error) as raised:
        read(store, "inputs/a.json")
    assert type(raised.value) is read_error and str(raised.value) == read_message, raised.value
    # A write has no object of the job's to miss: every failure is the store's.
    with pytest.raises(StoreUnavailable) as raised:
        put(store, "results/a.json", b"{}")
    expected = f"the object store could not write {S3_URL}/results/a.json {write_message}"
    assert type(raised.value) is StoreUnavailable and str(raised.value) == expected, raised.value


class UnderstatedLength(RecordingBodies):
    """Responses whose ContentLength says the object is empty, as a replaced object's stale one might."""

    def get_object(self, **kwargs: Any) -> Any:
        response = super().get_object(**kwargs)
        response["ContentLength"] = 0
        return response


def test_s3_refuses_a_body_longer_than_the_limit_having_read_one_byte_over(bucket: str) -> None:
    client = UnderstatedLength(boto3.client("s3"))
    store = open_store(f"s3://{bucket}/{PREFIX}", s3_client=client)  # type: ignore[arg-type]
    limit = len(CONTENT) - 2
    with pytest.raises(ObjectTooLarge) as raised:
        read(store, "inputs/ok.json", limit)
    url = f"s3://{bucket}/{PREFIX}/inputs/ok.json"
    expected = f"the object at {url} is {limit + 1} bytes, over the limit of {limit} bytes"
    assert str(raised.value) == expected, raised.value
    assert client.read == [limit + 1], "one read, bounded at the limit and a byte"
