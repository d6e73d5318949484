"""`servectl retrain --publish-bucket`: the serving version comes from a model bucket and the new version
goes to every bucket given, the way the serving pods see versions in the cluster.

A bucket is `s3://BUCKET[/ROOT]`; versions are `<ROOT>/<model>/<version>/` (ROOT defaults to `models`, the
layout `servectl publish` writes and the pods sync). The serving version is the first bucket's highest
complete version (its `manifest.json` present: publish writes it last); its files are downloaded into a
temporary repository and checked against its SHA256SUMS and manifest before anything is trained on them.
An unfinished version numbered above it stops the run before training: version N+1 would collide with it.
The new version is uploaded through :func:`servectl.publish.upload_version`, the same path as
`servectl publish` (every bucket checked first, SSE-KMS, checksums, manifest last, an existing version
refused). No canary is started: in the cluster the variant weights live in the stack config.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from servectl.publish import MANIFEST, SUMS, PublishError, Target, s3_errors, upload_version
from servectl.retrain.serving import RetrainError
from serving_image import build_models

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
DEFAULT_ROOT = "models"


def parse(uri: str) -> tuple[str, str]:
    """(bucket, root) of `s3://BUCKET[/ROOT]`; ValueError says what is wrong."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r}: a model bucket is s3://BUCKET[/PREFIX]")
    bucket, _, root = uri.removeprefix("s3://").partition("/")
    root = root.strip("/") or DEFAULT_ROOT
    if not BUCKET.match(bucket):
        raise ValueError(f"{uri!r}: {bucket!r} is not an S3 bucket name")
    if any(part in {"", ".", ".."} for part in root.split("/")):
        raise ValueError(f"{uri!r}: the prefix {root!r} has an empty, '.' or '..' part")
    return bucket, root


def _client(region: str | None = None) -> "S3Client":
    import boto3

    # The endpoint comes from boto3's own configuration (AWS_ENDPOINT_URL[_S3]), as for `--data`.
    return boto3.client("s3", region_name=region)


def targets(uris: tuple[str, ...]) -> list[Target]:
    """A publish target per bucket, in its own region (GetBucketLocation)."""
    found: list[Target] = []
    for uri in uris:
        bucket, root = parse(uri)
        with _errors(f"s3://{bucket}"):
            answer: dict[str, object] = dict(_client().get_bucket_location(Bucket=bucket))
        # S3 answers no constraint for us-east-1.
        found.append(
            Target(region=str(answer.get("LocationConstraint") or "us-east-1"), bucket=bucket, root=root)
        )
    return found


@contextlib.contextmanager
def _errors(where: str) -> Iterator[None]:
    try:
        with s3_errors(where):
            yield
    except PublishError as error:
        raise RetrainError(error.message) from None


def fetch_serving(source: Target, model: str, repository: Path) -> str:
    """Download the highest complete version of ``model`` from ``source`` into ``repository``, verified
    against its SHA256SUMS and manifest; returns its version. RetrainError names the object at fault."""
    s3 = _client(source.region)
    base = f"{source.root}/{model}/"
    keys: set[str] = set()
    with _errors(f"s3://{source.bucket}/{base}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source.bucket, Prefix=base):
            keys |= {obj["Key"] for obj in page.get("Contents", [])}
    versions = {key.removeprefix(base).split("/", 1)[0] for key in keys}
    complete = sorted((v for v in versions if v.isdigit() and f"{base}{v}/{MANIFEST}" in keys), key=int)
    if not complete:
        raise RetrainError(
            f"s3://{source.bucket}/{base}: no complete version to retrain from "
            f"(a version is complete once its {MANIFEST} is there)"
        )
    version = complete[-1]
    unfinished = sorted((v for v in versions if v.isdigit() and int(v) > int(version)), key=int)
    if unfinished:
        raise RetrainError(
            f"s3://{source.bucket}/{base}{unfinished[0]}/: no {MANIFEST} (an unfinished or failed publish) "
            f"above the serving version {version}; delete that prefix or finish its publish, then retrain"
        )
    prefix = f"{base}{version}/"
    sums = _parse_sums(source, prefix, _get(s3, source.bucket, prefix + SUMS).decode("utf-8", "replace"))
    if _manifest_files(source, prefix, _get(s3, source.bucket, prefix + MANIFEST)) != sums:
        raise RetrainError(f"s3://{source.bucket}/{prefix}: {SUMS} and {MANIFEST} list different files")
    target = repository / model / version
    for path, expected in sorted(sums.items()):
        local = (target / path).resolve()
        if not local.is_relative_to(target.resolve()):
            raise RetrainError(f"s3://{source.bucket}/{prefix}{SUMS}: {path!r} leaves the version")
        data = _get(s3, source.bucket, prefix + path)
        if hashlib.sha256(data).hexdigest() != expected:
            raise RetrainError(
                f"s3://{source.bucket}/{prefix}{path}: sha256 {hashlib.sha256(data).hexdigest()} "
                f"does not match {SUMS} ({expected}); nothing was trained or published"
            )
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
    return version


def _manifest_files(source: Target, prefix: str, raw: bytes) -> dict[str, str]:
    """Path -> sha256 of the files a manifest lists; RetrainError for one publish did not write."""
    try:
        document = json.loads(raw)
        return {str(f["path"]): str(f["sha256"]) for f in document["files"]}
    except (ValueError, TypeError, KeyError) as error:
        raise RetrainError(
            f"s3://{source.bucket}/{prefix}{MANIFEST}: not a publish manifest ({error!r})"
        ) from None


def _get(s3: "S3Client", bucket: str, key: str) -> bytes:
    with _errors(f"s3://{bucket}/{key}"):
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _parse_sums(source: Target, prefix: str, text: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        digest, _, path = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not path:
            raise RetrainError(
                f"s3://{source.bucket}/{prefix}{SUMS}: line {number} is not `<sha256>  <path>`"
            )
        sums[path] = digest
    return sums


def working_repository(local: Path, scratch: Path) -> Path:
    """The temporary repository a bucket's version is fetched into; it carries the local repository's
    BUILD_REPORT.json, which names the estimator of versions published without a model card."""
    scratch.mkdir(parents=True, exist_ok=True)
    report = local / build_models.REPORT_FILE
    if report.is_file():
        shutil.copyfile(report, scratch / build_models.REPORT_FILE)
    return scratch


@contextlib.contextmanager
def serving_from(local: Path, uris: tuple[str, ...], model: str) -> Iterator[Path]:
    """A scratch repository holding the first bucket's serving version (see :func:`fetch_serving`),
    removed afterwards."""
    chosen = targets(uris)
    scratch = Path(tempfile.mkdtemp(prefix=f"{model}-retrain-"))
    try:
        repository = working_repository(local, scratch)
        fetch_serving(chosen[0], model, repository)
        yield repository
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def store_caller(environ: Mapping[str, str]) -> str | None:
    """Who publishes, where there is no STS to ask: an S3-compatible store on premises is reached through
    `AWS_ENDPOINT_URL_S3` alone (the receiver's pod there); None means ask STS, as on AWS."""
    if environ.get("AWS_ENDPOINT_URL_S3") and not environ.get("AWS_ENDPOINT_URL"):
        return f"servectl retrain ({environ['AWS_ENDPOINT_URL_S3']})"
    return None


def publish(directory: Path, model: str, version: str, chosen: list[Target]) -> str:
    """Upload the version to every bucket (servectl.publish's path); the progress goes to stderr, so
    `--json` still prints one object on stdout. Returns the outcome's sentence."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            upload_version(directory, model, version, chosen, caller=store_caller(os.environ))
    except PublishError as error:
        # The command's advice does not apply: a retrain never replaces a version.
        raise RetrainError(f"nothing published: {error.message.removesuffix('; use --replace')}") from None
    where = ", ".join(f"{t.url}/{model}/{version}/" for t in chosen)
    return f"published {model} version {version} to {where}"


def next_step(model: str, parent: str, version: str) -> str:
    """What to do once the pods serve the new version: the rollout is the stack's, not the pod's."""
    return (
        f"no canary started (the weights live in the stack config): give version {version} the first "
        f"rollout step against {parent} in {model}'s variants.weights of Pulumi.<stack>.yaml, deploy the "
        f"platform, then `servectl experiment step --stack <stack> --model {model} --prometheus URL` "
        f"judges and steps it"
    )
