"""A retrain's labelled data: read from a path or `s3://bucket/key`, checked against the profile's features.

The CSV has a header: the model's feature columns in the serving version's profile order, then `label`, and
optionally a `timestamp` column (ISO 8601 or seconds since the epoch). Every problem is an :class:`InputError`
naming the file, the column and the reason (the command exits 2 on it).
"""

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

from serving_image import model_zoo

LABEL, TIMESTAMP = "label", "timestamp"
RECENT_SHARE, RECENT_ROWS = 0.2, 100
"""The most recent rows (a fifth, at least 100) are kept out of training and evaluated on their own."""
MIN_ROWS = 2 * RECENT_ROWS
MAX_BYTES = 512 * 1024**2
"""Labelled data is read into memory whole; anything larger is refused rather than exhausting it."""


class InputError(ValueError):
    """The data cannot be used; the message names the file, the column and why."""


@dataclass(frozen=True, kw_only=True)
class Labelled:
    """Validated rows in time order (oldest first), and the sha256 of the bytes they were read from."""

    x: NDArray[np.float32]
    y: NDArray[np.int64]
    sha256: str
    ordered_by: str
    """`timestamp` when the rows were sorted by it, else `file order` (`event_timestamp`: the labels')."""
    feature_service: str | None = None
    """The feature service the rows were read through (servectl.retrain.feature_data), else None."""
    feature_service_version: str | None = None
    """That service's version, recorded in the new version's metadata and card."""


@dataclass(frozen=True, kw_only=True)
class Split:
    """Training rows, the fixed-seed held-out rows and the most recent rows."""

    train: model_zoo.Dataset
    """x_train/y_train to fit on; x_test/y_test are the held-out split."""
    recent_x: NDArray[np.float32]
    recent_y: NDArray[np.int64]


def read_bytes(uri: str) -> bytes:
    """The file's bytes: a local path, or an object read with boto3 (its usual configuration and endpoint)."""
    if uri.startswith("s3://"):
        return _read_s3(uri)
    try:
        with open(uri, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise InputError(f"{uri}: {error.strerror or error}") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"{uri}: larger than {MAX_BYTES} bytes")
    return data


def _read_s3(uri: str) -> bytes:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise InputError(f"{uri}: an object is s3://BUCKET/KEY")
    try:
        response = boto3.client("s3").get_object(Bucket=bucket, Key=key)
        if response["ContentLength"] > MAX_BYTES:
            raise InputError(f"{uri}: larger than {MAX_BYTES} bytes")
        return response["Body"].read()
    except ClientError as error:
        detail = error.response.get("Error", {})
        raise InputError(f"{uri}: {detail.get('Code', '?')}: {detail.get('Message', error)}") from None
    except BotoCoreError as error:
        raise InputError(f"{uri}: {error}") from None


def parse(uri: str, data: bytes, features: list[str]) -> Labelled:
    """Rows of the CSV whose columns are ``features`` (in this order), ``label`` and maybe ``timestamp``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{uri}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader, [])]
    _check_header(uri, header, features)
    rows = [row for row in reader if row]
    if len(rows) < MIN_ROWS:
        raise InputError(f"{uri}: {len(rows)} rows; a retrain needs at least {MIN_ROWS}")
    columns = {name: i for i, name in enumerate(header)}
    x = np.empty((len(rows), len(features)), dtype=np.float32)
    y = np.empty(len(rows), dtype=np.int64)
    times: list[float] = []
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise InputError(f"{uri}: line {number} has {len(row)} fields, the header {len(header)}")
        for j, name in enumerate(features):
            x[number - 2, j] = _number(uri, row[columns[name]], name, number)
        y[number - 2] = _label(uri, row[columns[LABEL]], number)
        if TIMESTAMP in columns:
            times.append(_time(uri, row[columns[TIMESTAMP]], number))
    if len(set(y.tolist())) < model_zoo.N_CLASSES:
        raise InputError(f"{uri}: column '{LABEL}': every row has the same class; training needs both")
    digest = hashlib.sha256(data).hexdigest()
    if not times:
        return Labelled(x=x, y=y, sha256=digest, ordered_by="file order")
    order = np.argsort(np.asarray(times), kind="stable")
    return Labelled(x=x[order], y=y[order], sha256=digest, ordered_by=TIMESTAMP)


def _check_header(uri: str, header: list[str], features: list[str]) -> None:
    allowed = {*features, LABEL, TIMESTAMP}
    for name in header:
        if name not in allowed:
            raise InputError(
                f"{uri}: column '{name}': not a feature of the model, '{LABEL}' or '{TIMESTAMP}'"
            )
    if len(set(header)) != len(header):
        twice = next(name for name in header if header.count(name) > 1)
        raise InputError(f"{uri}: column '{twice}': appears more than once")
    for name in (*features, LABEL):
        if name not in header:
            raise InputError(f"{uri}: column '{name}': missing (the header has {len(header)} columns)")
    present = [name for name in header if name in features]
    for position, (found, expected) in enumerate(zip(present, features, strict=True)):
        if found != expected:
            raise InputError(
                f"{uri}: column '{found}': feature {position} of the profile is '{expected}'; "
                "the feature columns must be in the profile's order"
            )


def _number(uri: str, value: str, column: str, line: int) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{uri}: column '{column}', line {line}: {value!r} is not a number") from None
    if math.isinf(number):
        raise InputError(f"{uri}: column '{column}', line {line}: {value!r} is not finite")
    return number


def _label(uri: str, value: str, line: int) -> int:
    classes = range(model_zoo.N_CLASSES)
    if value.strip() not in {str(c) for c in classes}:
        raise InputError(f"{uri}: column '{LABEL}', line {line}: {value!r} is not a class in {list(classes)}")
    return int(value)


def _time(uri: str, value: str, line: int) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        raise InputError(
            f"{uri}: column '{TIMESTAMP}', line {line}: {value!r} is neither ISO 8601 nor epoch seconds"
        ) from None


def split(data: Labelled, seed: int = model_zoo.SPLIT_SEED) -> Split:
    """The most recent rows apart (:data:`RECENT_SHARE`, at least :data:`RECENT_ROWS`); the rest split with a
    fixed seed, stratified by label.

    Neither evaluation set is trained on, so the candidate and the serving version are judged on rows
    neither has seen (the serving version may have seen some, which only favours keeping it).
    """
    recent = max(RECENT_ROWS, int(len(data.y) * RECENT_SHARE))
    older_x, older_y = data.x[:-recent], data.y[:-recent]
    stratify = older_y if np.bincount(older_y).min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        older_x, older_y, test_size=model_zoo.TEST_FRACTION, random_state=seed, stratify=stratify
    )
    if len(set(y_train.tolist())) < model_zoo.N_CLASSES:
        raise InputError(f"column '{LABEL}': the training rows hold one class; training needs both")
    train = model_zoo.Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return Split(train=train, recent_x=data.x[-recent:], recent_y=data.y[-recent:])
