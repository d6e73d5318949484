"""Object-store references of asynchronous jobs: large inputs read from, large results written to, a store.

A job may carry its request by reference (the request parameter ``input_ref``), and a result larger than
``async_inline_result_bytes`` is written to the store instead of Redis (docs/async-inference.md). The
store is the setting ``async_object_store``:

- ``file:///abs/dir``: a directory (locally, the model bucket's). Every key stays under it: absolute
  keys and empty, ``.`` or ``..`` segments are refused; a key whose real path (links resolved) is outside
  the directory is refused; and that real path is then opened one directory at a time without following
  links, so a link swapped in meanwhile is refused rather than followed. Results are written to a
  temporary file and renamed, so a reader never sees half of one.
- ``s3://bucket/prefix``: S3 through boto3, imported only when such a URL is configured. The bucket
  encrypts with its default key (SSE-KMS in the stacks), so no key is passed.

Keys are relative to the store's root: a job's input under ``inputs/``, its result at
``results/<job id>.json``. A read is bounded: the object's size is checked before it is read. The
blocking calls run in a thread, so the event loop goes on serving meanwhile.
"""

import asyncio
import contextlib
import errno
import os
import secrets
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serving_image.errors import InvalidInput, PayloadTooLarge, ServingError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

INPUTS = "inputs"
"""Where under the store's root a job's referenced input must be."""
RESULTS = "results"
MAX_KEY_BYTES = 1024
"""S3's limit on a key, applied to both backends."""
_S3_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ObjectMissing(ServingError):
    """The referenced object does not exist (or, on S3, this worker may not read it)."""

    status = 404
    grpc_code = "NOT_FOUND"
    outcome = "not_found"


class ObjectTooLarge(PayloadTooLarge):
    """The referenced object is larger than ``async_max_object_bytes``."""


class ObjectRefused(InvalidInput):
    """A key or reference that is not inside the store."""


class StoreUnavailable(ServingError):
    """The store could not be read or written (not for the object's sake): worth another attempt."""

    status = 503
    grpc_code = "UNAVAILABLE"
    outcome = "unavailable"


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where the store is: ``scheme`` file or s3, the S3 ``bucket`` (empty for a directory), and the
    ``root``: the directory's absolute path, or the key prefix in the bucket (possibly empty)."""

    scheme: str
    bucket: str
    root: str

    @property
    def url(self) -> str:
        """The store's URL, normalized (no trailing slash)."""
        if self.scheme == "file":
            return f"file://{self.root}"
        return f"s3://{self.bucket}/{self.root}" if self.root else f"s3://{self.bucket}"

    def url_of(self, key: str) -> str:
        """The URL of the object at ``key``."""
        return f"{self.url}/{key}"


def parse_store_url(url: str) -> StoreLocation:
    """``file:///abs/dir`` or ``s3://bucket[/prefix]`` as a location; ValueError naming the problem."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError("must be printable ASCII without spaces")
    if "?" in url or "#" in url:
        raise ValueError("must have no query or fragment")
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("file", "s3"):
        raise ValueError("must be file:///<absolute directory> or s3://<bucket>/<prefix>")
    rest = rest.removesuffix("/")
    if scheme == "file":
        if rest and not rest.startswith("/"):
            raise ValueError("a file:// store names no host: file:///<absolute directory>")
        if not rest:
            raise ValueError("the directory must not be /")
        if _segment_problem(rest[1:]):
            raise ValueError("the directory's path has an empty, '.' or '..' segment")
        return StoreLocation("file", "", rest)
    bucket, _, prefix = rest.partition("/")
    if not 3 <= len(bucket) <= 63 or not set(bucket) <= _S3_BUCKET_CHARS or bucket[0] in ".-":
        raise ValueError(f"'{bucket}' is not an S3 bucket name")
    if prefix and _segment_problem(prefix):
        raise ValueError("the prefix has an empty, '.' or '..' segment")
    return StoreLocation("s3", bucket, prefix)


def _segment_problem(path: str) -> bool:
    return any(segment in ("", ".", "..") for segment in path.split("/"))


def key_problem(key: str) -> str | None:
    """What makes ``key`` unusable as a key under a store's root, or None."""
    if not key:
        return "is empty"
    if key.startswith("/"):
        return "is absolute"
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"is longer than {MAX_KEY_BYTES} bytes"
    if not key.isprintable():
        return "contains a control character"
    if _segment_problem(key):
        return "has an empty, '.' or '..' path segment"
    return None


def check_key(key: str) -> str:
    """``key`` if it is usable under a store's root; else ``ObjectRefused`` naming the problem."""
    problem = key_problem(key)
    if problem is not None:
        raise ObjectRefused(f"key {key!r} {problem}")
    return key


class ObjectStore(ABC):
    """A store of job inputs and results, addressed by keys under its root."""

    def __init__(self, location: StoreLocation) -> None:
        self.location = location

    @property
    def url(self) -> str:
        """The store's URL, as configured (normalized)."""
        return self.location.url

    def input_key(self, reference: str) -> str:
        """The key of a job's referenced input; ``ObjectRefused`` (400) naming the problem unless the
        reference is a URL of this store's scheme, in its bucket, under ``<root>/inputs/``.

        The path is taken as it is written (no percent-decoding), so a key is exactly its URL's text.
        """
        scheme, separator, rest = reference.partition("://")
        if scheme != self.location.scheme or not separator:
            found = scheme if separator else "none"
            raise ObjectRefused(
                f"input_ref {reference!r} must be a {self.location.scheme}:// URL inside the object store "
                f"{self.url} (its scheme is {found})"
            )
        if "?" in reference or "#" in reference:
            raise ObjectRefused(f"input_ref {reference!r} must have no query or fragment")
        inside = f"{self.url.partition('://')[2]}/{INPUTS}/"
        if not rest.startswith(inside):
            raise ObjectRefused(
                f"input_ref {reference!r} is outside the object store's inputs ({self.url}/{INPUTS}/)"
            )
        key = f"{INPUTS}/{rest.removeprefix(inside)}"
        problem = key_problem(key)
        if problem is not None:
            raise ObjectRefused(f"input_ref {reference!r}: its key {problem}")
        return key

    def result_key(self, job_id: str) -> str:
        """Where a job's result is written."""
        return f"{RESULTS}/{job_id}.json"

    async def get(self, key: str, max_bytes: int) -> bytes:
        """The object at ``key``: ``ObjectMissing``, ``ObjectTooLarge`` (its size is checked before it
        is read), ``ObjectRefused`` (a key outside the store), ``StoreUnavailable``."""
        return await asyncio.to_thread(self._get, check_key(key), max_bytes)

    async def put(self, key: str, data: bytes) -> str:
        """Write ``data`` at ``key`` (replacing what is there) and return its URL; ``StoreUnavailable``."""
        await asyncio.to_thread(self._put, check_key(key), data)
        return self.location.url_of(key)

    @abstractmethod
    def _get(self, key: str, max_bytes: int) -> bytes: ...

    @abstractmethod
    def _put(self, key: str, data: bytes) -> None: ...


def open_store(url: str, *, s3_client: "S3Client | None" = None) -> ObjectStore:
    """The store at ``url`` (``async_object_store``); boto3 is imported only for an ``s3://`` URL."""
    location = parse_store_url(url)
    if location.scheme == "file":
        return FileStore(location)
    return S3Store(location, s3_client)


def _too_large(url: str, size: int, max_bytes: int) -> ObjectTooLarge:
    return ObjectTooLarge(f"the object at {url} is {size} bytes, over the limit of {max_bytes} bytes")


class FileStore(ObjectStore):
    """A directory as the store; every key confined under it (see the module's docstring)."""

    def _get(self, key: str, max_bytes: int) -> bytes:
        url = self.location.url_of(key)
        with self._root() as (root, root_fd):
            try:
                parts = _below(root, key)
                with _directory(root_fd, parts[:-1], create=False) as parent:
                    # Non-blocking: opening a FIFO put there must not wait for a writer.
                    fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                 dir_fd=parent)  # fmt: skip
                try:
                    data = _read_regular(fd, url, max_bytes)
                finally:
                    os.close(fd)
            except (FileNotFoundError, NotADirectoryError):
                raise ObjectMissing(f"no object at {url}") from None
            except OSError as error:
                raise _file_failure(error, url, "read") from None
        if len(data) > max_bytes:  # it grew after the size was checked
            raise _too_large(url, len(data), max_bytes)
        return data

    def _put(self, key: str, data: bytes) -> None:
        url = self.location.url_of(key)
        with self._root() as (root, root_fd):
            try:
                parts = _below(root, key)
                with _directory(root_fd, parts[:-1], create=True) as parent:
                    _write_replacing(parent, parts[-1], data)
            except OSError as error:
                raise _file_failure(error, url, "write") from None

    @contextlib.contextmanager
    def _root(self) -> Iterator[tuple[str, int]]:
        """The directory's real path and an open descriptor of it (a missing directory is the
        operator's problem, not the object's: ``StoreUnavailable``)."""
        root = os.path.realpath(self.location.root)
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise StoreUnavailable(
                f"the object store's directory {self.location.root} cannot be opened ({error.strerror})"
            ) from None
        try:
            yield root, fd
        finally:
            os.close(fd)


def _read_regular(fd: int, url: str, max_bytes: int) -> bytes:
    """The file's bytes, its size checked first; at most ``max_bytes + 1`` are read (it may grow)."""
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        raise ObjectMissing(f"no object at {url} (not a regular file)")
    if found.st_size > max_bytes:
        raise _too_large(url, found.st_size, max_bytes)
    chunks, left = [], max_bytes + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _below(root: str, key: str) -> list[str]:
    """The key's real path below ``root`` (links resolved) as segments; refused if it leads elsewhere."""
    real = os.path.realpath(os.path.join(root, key))
    if os.path.commonpath([root, real]) != root or real == root:
        raise ObjectRefused(f"key {key!r} leads out of the object store (through a link)")
    return os.path.relpath(real, root).split(os.sep)


@contextlib.contextmanager
def _directory(root_fd: int, names: list[str], *, create: bool) -> Iterator[int]:
    """The directory ``names`` below ``root_fd``, opened one segment at a time without following a link
    (a link there is ``ELOOP``); ``create`` makes the missing ones."""
    fd = os.dup(root_fd)
    try:
        for name in names:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o750, dir_fd=fd)
            try:
                inner = os.open(name, _DIRECTORY_FLAGS, dir_fd=fd)
            except NotADirectoryError:  # a file, or a link (O_DIRECTORY says so before O_NOFOLLOW)
                if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name) from None
                raise
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _write_replacing(directory: int, name: str, data: bytes) -> None:
    """Write a temporary file beside ``name``, flush it to disk, and rename it over ``name``."""
    temporary = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640,
                 dir_fd=directory)  # fmt: skip
    try:
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=directory)
        raise


def _file_failure(error: OSError, url: str, action: str) -> ServingError:
    if error.errno == errno.ELOOP:  # a link met where none was when the path was resolved
        return ObjectRefused(f"{url} leads out of the object store (through a link)")
    return StoreUnavailable(f"the object store could not {action} {url} ({error.strerror})")


class S3Store(ObjectStore):
    """An S3 bucket and prefix as the store. boto3 finds its credentials and region the usual way (IRSA
    in the stacks); ``AWS_ENDPOINT_URL_S3`` points it elsewhere (the tests' moto server)."""

    def __init__(self, location: StoreLocation, client: "S3Client | None" = None) -> None:
        super().__init__(location)
        import boto3
        from botocore.config import Config

        self._client: S3Client = client or boto3.client(
            "s3",
            config=Config(
                connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3}
            ),
        )

    def _object_key(self, key: str) -> str:
        return f"{self.location.root}/{key}" if self.location.root else key

    def _get(self, key: str, max_bytes: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        url = self.location.url_of(key)
        try:
            response = self._client.get_object(Bucket=self.location.bucket, Key=self._object_key(key))
            body = response["Body"]
            try:
                if response["ContentLength"] > max_bytes:  # known from the headers: no byte of it is read
                    raise _too_large(url, response["ContentLength"], max_bytes)
                data = body.read(max_bytes + 1)
            finally:
                body.close()
        except ClientError as error:
            raise _s3_failure(error, url, "read") from None
        except (BotoCoreError, OSError) as error:
            raise StoreUnavailable(
                f"the object store could not read {url} ({type(error).__name__})"
            ) from None
        if len(data) > max_bytes:
            raise _too_large(url, len(data), max_bytes)
        return data

    def _put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        url = self.location.url_of(key)
        try:
            self._client.put_object(
                Bucket=self.location.bucket, Key=self._object_key(key), Body=data,
                ContentType="application/json",
            )  # fmt: skip
        except ClientError as error:
            raise _s3_failure(error, url, "write") from None
        except (BotoCoreError, OSError) as error:
            raise StoreUnavailable(
                f"the object store could not write {url} ({type(error).__name__})"
            ) from None


def _s3_failure(error: Any, url: str, action: str) -> ServingError:
    """An S3 error answer as the store's error: a missing object is the job's, the rest the store's."""
    code = str(error.response.get("Error", {}).get("Code", "unknown"))
    if action == "read" and code in ("NoSuchKey", "NotFound", "404"):
        return ObjectMissing(f"no object at {url}")
    if action == "read" and code in ("AccessDenied", "403"):
        # Without s3:ListBucket, S3 answers a missing key with AccessDenied rather than NoSuchKey.
        return ObjectMissing(f"no object at {url} that this worker may read (S3 answered {code})")
    return StoreUnavailable(f"the object store could not {action} {url} (S3 answered {code})")
