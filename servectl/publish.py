"""`servectl publish`: upload a model version to the model bucket of every region of a stack.

Each file goes up with SSE-KMS under the bucket's key and a SHA-256 checksum S3 verifies on receipt; then a
`SHA256SUMS` (checkable with `sha256sum -c` from the version's directory) and, last, a `manifest.json`,
whose presence marks the version complete. Every object is read back (HeadObject) and its size, checksum
and encryption compared before the command reports success. A version that already exists is refused unless
`--replace`. Nothing is uploaded anywhere until every region has passed its checks.

The upload is `upload_version`, which `servectl retrain --publish-bucket` calls too. `publish_local` gives a
local model repository the same SHA256SUMS and manifest (`servectl retrain` without buckets publishes
through it).

The buckets come from the infra stack's `regions` output (`pulumi stack output --json regions`), from a
file holding that output, or from `--bucket REGION=NAME`; they are never derived from naming rules here.
The cluster stacks' `regions` and the smb stacks' (only the bucket, its region and key) are read alike
(`stacks.contract.model_buckets`); a key the output names is the key the objects are encrypted with.

`--skip-identical` makes a publish repeatable (the smb pipeline publishes every version its endpoints use
on every deploy): a version already complete in a bucket with the same files is left alone there; one that
differs is still refused.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import replace as replace_field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click
import yaml

from stacks.contract import REGIONS_OUTPUT, ModelBucketOutputs, model_buckets

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

REPO_DIR = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SUMS, MANIFEST = "SHA256SUMS", "manifest.json"
MAX_PUT = 5 * 1024**3
"""PutObject's limit; a bigger file would need a multipart upload."""


class PublishError(click.ClickException):
    """A file or bucket failed a check; the message names it and says why (exit status 1)."""


@dataclass(frozen=True)
class FileEntry:
    """A file of the version: its path relative to the version directory, size and sha256 (hex)."""

    path: str
    size: int
    sha256: str

    @property
    def checksum(self) -> str:
        """The base64 SHA-256 S3 expects and returns (`ChecksumSHA256`)."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


@dataclass(frozen=True)
class Target:
    """One region's model bucket and the KMS key its objects are encrypted with."""

    region: str
    bucket: str
    key_id: str = ""
    root: str = "models"
    """The key prefix the model repository sits under: versions go to `<root>/<model>/<version>/`."""

    @property
    def url(self) -> str:
        """`s3://BUCKET/ROOT`, for messages."""
        return f"s3://{self.bucket}/{self.root}"


def scan(directory: Path) -> list[FileEntry]:
    """The version's files, sorted, hashed; PublishError for a directory that is not a model version."""
    if not (directory / "model.onnx").is_file():
        raise PublishError(f"{directory}/model.onnx: missing; a model version directory holds model.onnx")
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in {SUMS, MANIFEST}:
            raise PublishError(f"{path}: publish writes {rel} itself; remove it from the directory")
        size = path.stat().st_size
        if size > MAX_PUT:
            raise PublishError(f"{path}: {size} bytes is over the 5 GiB a single upload takes")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        entries.append(FileEntry(rel, size, digest.hexdigest()))
    return entries


def sha256sums(files: list[FileEntry]) -> str:
    """`sha256sum` output for the files, relative paths, so `sha256sum -c SHA256SUMS` runs in the version."""
    return "".join(f"{f.sha256}  {f.path}\n" for f in files)


def manifest(model: str, version: str, files: list[FileEntry], caller: str, created: datetime) -> str:
    """The version's manifest: what it is, what it holds, when and by whom it was published."""
    document = {
        "model": model,
        "version": version,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
        "created": created.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "published_by": caller,
    }
    return json.dumps(document, indent=2) + "\n"


def publish_local(directory: Path, repository: Path, model: str, version: str, caller: str) -> Path:
    """Publish a version DIRECTORY into a local model repository as ``<repository>/<model>/<version>/``.

    The same checks, SHA256SUMS and manifest as a bucket gets, written into DIRECTORY, which then takes its
    place with one rename (so DIRECTORY must be on the repository's filesystem): a server starting meanwhile
    sees the whole version or none of it. A version that exists is refused."""
    if not NAME.match(model):
        raise PublishError(f"model {model!r}: use lower case letters, digits and dashes")
    if not VERSION.match(version):
        raise PublishError(f"version {version!r}: use letters, digits, dots, dashes and underscores")
    files = scan(directory)
    target = repository / model / version
    if target.exists():
        raise PublishError(f"{target}: version exists; publish under a new version")
    (directory / SUMS).write_text(sha256sums(files), encoding="utf-8")
    (directory / MANIFEST).write_text(
        manifest(model, version, files, caller, datetime.now(UTC)), encoding="utf-8"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(directory, target)
    return target


def stack_regions(stack: str, root: Path = REPO_DIR) -> list[str]:
    """The regions a stack file lists (empty on premises)."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise PublishError(f"no stack file {path.name}")
    config: dict[str, Any] = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    return [str(r["region"]) for r in config.get("model-serving:regions") or []]


def infra_buckets(stack: str, outputs: Path | None) -> dict[str, ModelBucketOutputs]:
    """Region -> model bucket (and key, where named) from the infra stack's `regions` output (a file, or
    the Pulumi CLI)."""
    if outputs is not None:
        try:
            raw = json.loads(outputs.read_text())
        except json.JSONDecodeError as exc:
            raise PublishError(f"{outputs}: not JSON ({exc})") from exc
    else:
        if shutil.which("pulumi") is None:
            raise PublishError(
                "no pulumi CLI to read the infra outputs: give --outputs FILE or --bucket REGION=NAME"
            )
        command = ["pulumi", "stack", "output", "--json", "--stack", stack, REGIONS_OUTPUT]
        done = subprocess.run(command, cwd=REPO_DIR, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise PublishError(f"{' '.join(command)}: {done.stderr.strip() or 'failed'}")
        raw = json.loads(done.stdout)
    if isinstance(raw, dict) and REGIONS_OUTPUT in raw:
        raw = raw[REGIONS_OUTPUT]
    try:
        return model_buckets(raw)
    except (TypeError, ValueError) as exc:
        raise PublishError(f"infra outputs: {exc}") from exc


def targets(stack: str, buckets: tuple[str, ...], outputs: Path | None) -> list[Target]:
    """The region buckets to publish to, each in one of the stack's regions."""
    if buckets:
        pairs = [b.split("=", 1) for b in buckets]
        if any(len(p) != 2 or not all(p) for p in pairs):
            raise PublishError(f"--bucket takes REGION=NAME, got {', '.join(buckets)}")
        by_region = {region: Target(region, bucket) for region, bucket in pairs}
    else:
        by_region = {
            region: Target(region, found.model_bucket, found.model_key_arn)
            for region, found in infra_buckets(stack, outputs).items()
        }
    allowed = stack_regions(stack)
    outside = sorted(r for r in by_region if allowed and r not in allowed)
    if outside:
        raise PublishError(f"{', '.join(outside)}: not a region of stack {stack} ({', '.join(allowed)})")
    return [by_region[region] for region in sorted(by_region)]


@contextmanager
def s3_errors(where: str) -> Iterator[None]:
    """Turn an AWS client error into a one-line PublishError naming the object or bucket."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise PublishError(f"{where}: {error.get('Code', '?')}: {error.get('Message', exc)}") from exc
    except BotoCoreError as exc:
        raise PublishError(f"{where}: {exc}") from exc


def bucket_key(s3: "S3Client", target: Target, kms_key: str | None) -> str:
    """The KMS key for the bucket's objects: the one given, else the bucket's default SSE-KMS key."""
    if kms_key:
        if kms_key.startswith("arn:") and f":kms:{target.region}:" not in kms_key:
            raise PublishError(
                f"--kms-key {kms_key}: not a key in {target.region}, the region of {target.bucket}"
            )
        return kms_key
    with s3_errors(f"s3://{target.bucket}"):
        rules = s3.get_bucket_encryption(Bucket=target.bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    if default.get("SSEAlgorithm") != "aws:kms" or not default.get("KMSMasterKeyID"):
        raise PublishError(
            f"s3://{target.bucket}: default encryption is not SSE-KMS with a key; pass --kms-key"
        )
    return str(default["KMSMasterKeyID"])


def existing(s3: "S3Client", bucket: str, prefix: str) -> list[str]:
    """Keys under a prefix."""
    keys: list[str] = []
    with s3_errors(f"s3://{bucket}/{prefix}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
    return keys


def put(s3: "S3Client", target: Target, key: str, body: bytes | BinaryIO, entry: FileEntry) -> None:
    """Upload with SSE-KMS and a SHA-256 checksum S3 checks against what it received."""
    with s3_errors(f"s3://{target.bucket}/{key}"):
        s3.put_object(
            Bucket=target.bucket,
            Key=key,
            Body=body,
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=target.key_id,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=entry.checksum,
        )


def verify(s3: "S3Client", target: Target, key: str, entry: FileEntry) -> None:
    """Read the object's metadata back: size, checksum and encryption must be what was sent."""
    where = f"s3://{target.bucket}/{key}"
    with s3_errors(where):
        head = s3.head_object(Bucket=target.bucket, Key=key, ChecksumMode="ENABLED")
    problems = []
    if head.get("ContentLength") != entry.size:
        problems.append(f"size {head.get('ContentLength')}, expected {entry.size}")
    if head.get("ChecksumSHA256") != entry.checksum:
        problems.append(f"sha256 {head.get('ChecksumSHA256')}, expected {entry.checksum}")
    if head.get("ServerSideEncryption") != "aws:kms":
        problems.append(f"encryption {head.get('ServerSideEncryption')}, expected aws:kms")
    # S3 reports the key's ARN; an alias or bare id given by the caller cannot be compared to it.
    if ":key/" in target.key_id and head.get("SSEKMSKeyId") != target.key_id:
        problems.append(f"KMS key {head.get('SSEKMSKeyId')}, expected {target.key_id}")
    if problems:
        raise PublishError(f"{where}: {'; '.join(problems)}")


def publish_to(
    s3: "S3Client",
    target: Target,
    prefix: str,
    directory: Path,
    files: list[FileEntry],
    extra: dict[str, bytes],
) -> None:
    """Upload and verify every file, then SHA256SUMS and the manifest (last: it marks the version complete).

    Files stream from disk; S3 checks each against the checksum computed before, so a file that changed
    since is refused (BadDigest) rather than published under a wrong SHA256SUMS line."""
    for entry in files:
        with (directory / entry.path).open("rb") as body:
            put(s3, target, f"{prefix}{entry.path}", body, entry)
        verify(s3, target, f"{prefix}{entry.path}", entry)
        click.echo(
            f"{target.region}: s3://{target.bucket}/{prefix}{entry.path} ({entry.size} bytes) verified"
        )
    for name, data in extra.items():
        entry = FileEntry(name, len(data), hashlib.sha256(data).hexdigest())
        put(s3, target, f"{prefix}{name}", data, entry)
        verify(s3, target, f"{prefix}{name}", entry)
    click.echo(
        f"{target.region}: s3://{target.bucket}/{prefix} published ({len(files)} files, {SUMS}, {MANIFEST})"
    )


def remove_stale(s3: "S3Client", target: Target, prefix: str, keys: list[str]) -> None:
    """After a --replace, delete the objects of the old version the new one does not have."""
    for start in range(0, len(keys), 1000):
        batch: list[ObjectIdentifierTypeDef] = [{"Key": key} for key in keys[start : start + 1000]]
        with s3_errors(f"s3://{target.bucket}/{prefix}"):
            s3.delete_objects(Bucket=target.bucket, Delete={"Objects": batch, "Quiet": True})
    if keys:
        click.echo(f"{target.region}: removed {len(keys)} objects the replaced version had")


@click.command()
@click.option("--stack", required=True, metavar="NAME", help="Stack whose regions receive the version.")
@click.option("--model", required=True, help="Model name (lower case, digits and dashes).")
@click.option("--version", "version", required=True, help="Version label, e.g. 3.")
@click.option("--replace", is_flag=True, help="Overwrite a version that already exists.")
@click.option(
    "--skip-identical",
    is_flag=True,
    help="Leave a version that is already complete with the same files; refuse one that differs.",
)
@click.option(
    "--kms-key", metavar="ARN", help="KMS key for the objects (default: each bucket's default key)."
)
@click.option(
    "--bucket",
    "buckets",
    multiple=True,
    metavar="REGION=NAME",
    help="Model bucket of a region (repeatable); default: the infra stack's outputs.",
)
@click.option(
    "--outputs",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="JSON of the infra stack's `regions` output (`pulumi stack output --json regions`).",
)
@click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3/STS endpoint (an S3-compatible store).")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
def publish(
    stack: str,
    model: str,
    version: str,
    replace: bool,
    skip_identical: bool,
    kms_key: str | None,
    buckets: tuple[str, ...],
    outputs: Path | None,
    endpoint_url: str | None,
    directory: Path,
) -> None:
    """Upload a model version DIRECTORY to models/MODEL/VERSION/ in every region's model bucket."""
    if not NAME.match(model):
        raise PublishError(f"--model {model!r}: use lower case letters, digits and dashes")
    if not VERSION.match(version):
        raise PublishError(f"--version {version!r}: use letters, digits, dots, dashes and underscores")
    chosen = targets(stack, buckets, outputs)
    if kms_key and len(chosen) > 1:
        raise PublishError(
            "--kms-key names one regional key: give it with a single --bucket, or rely on defaults"
        )
    if replace and skip_identical:
        raise PublishError("--replace and --skip-identical contradict each other: choose one")
    upload_version(
        directory,
        model,
        version,
        chosen,
        replace=replace,
        skip_identical=skip_identical,
        kms_key=kms_key,
        endpoint_url=endpoint_url,
    )


def already_there(
    s3: "S3Client", target: Target, prefix: str, keys: list[str], files: list[FileEntry]
) -> bool:
    """Whether the version under `prefix` is complete and holds exactly these files: its objects are the
    files, SHA256SUMS and the manifest (written last, so its presence means the publish finished), and its
    SHA256SUMS is the one these files give."""
    expected = {f"{prefix}{f.path}" for f in files} | {prefix + SUMS, prefix + MANIFEST}
    if set(keys) != expected:
        return False
    with s3_errors(f"s3://{target.bucket}/{prefix}{SUMS}"):
        found = s3.get_object(Bucket=target.bucket, Key=prefix + SUMS)["Body"].read()
    return bool(found == sha256sums(files).encode())


def upload_version(
    directory: Path,
    model: str,
    version: str,
    chosen: list[Target],
    *,
    replace: bool = False,
    skip_identical: bool = False,
    kms_key: str | None = None,
    endpoint_url: str | None = None,
    caller: str | None = None,
) -> str:
    """Publish DIRECTORY as `<root>/MODEL/VERSION/` in every target bucket; returns the caller's ARN.

    Every bucket is checked (the version absent unless ``replace``, its SSE-KMS key known) before anything
    is written anywhere; then each gets the files, SHA256SUMS and, last, the manifest, each read back.
    The manifest's `published_by` is STS's caller ARN unless ``caller`` is given (a store without STS).
    With ``skip_identical`` a bucket already holding this version, complete and with the same files, is
    left alone (its manifest keeps who published it first); "" is returned when every bucket was.
    `servectl publish` and `servectl retrain --publish-bucket` both publish through here."""
    import boto3

    files = scan(directory)
    clients, stale, ready = {}, {}, []
    for target in chosen:  # every check, in every region, before anything is written anywhere
        prefix = f"{target.root}/{model}/{version}/"
        s3 = clients[target.bucket] = boto3.client("s3", region_name=target.region, endpoint_url=endpoint_url)
        keys = existing(s3, target.bucket, prefix)
        if keys and skip_identical and already_there(s3, target, prefix, keys, files):
            click.echo(
                f"{target.region}: s3://{target.bucket}/{prefix} already holds these files; left as it is"
            )
            continue
        if keys and not replace:
            differs = " and differs from this directory" if skip_identical else ""
            raise PublishError(
                f"s3://{target.bucket}/{prefix}: version exists ({len(keys)} objects){differs}; use --replace"
            )
        stale[target.bucket] = sorted(
            set(keys) - {f"{prefix}{f.path}" for f in files} - {prefix + SUMS, prefix + MANIFEST}
        )
        ready.append(replace_field(target, key_id=bucket_key(s3, target, kms_key or target.key_id or None)))
    if not ready:
        click.echo(f"{model} {version}: already published in every region; nothing written")
        return caller or ""
    if caller is None:
        sts = boto3.client("sts", region_name=chosen[0].region, endpoint_url=endpoint_url)
        with s3_errors("sts:GetCallerIdentity"):
            caller = sts.get_caller_identity()["Arn"]
    extra = {
        SUMS: sha256sums(files).encode(),
        MANIFEST: manifest(model, version, files, caller, datetime.now(UTC)).encode(),
    }
    for target in ready:
        prefix = f"{target.root}/{model}/{version}/"
        publish_to(clients[target.bucket], target, prefix, directory, files, extra)
        remove_stale(clients[target.bucket], target, prefix, stale[target.bucket])
    click.echo(f"published {model} {version} to {len(ready)} region(s) as {caller}")
    return str(caller)
