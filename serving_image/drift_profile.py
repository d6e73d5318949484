"""A model version's training profile (``profile.json``): what its inputs looked like when it was trained.

Written by :mod:`serving_image.build_models` beside each ``model.onnx`` and read by the server
(:mod:`serving_image.drift`), so both sides share this one definition of the format (docs/drift.md):
per feature, either quantile bin edges and the share of training rows in each bin (numeric), or the
categories and their shares plus one share for "other" (categorical). The file's SHA-256 is stored in
the ONNX model's ``metadata_props`` under :data:`METADATA_KEY`, so a profile that does not belong to
the graph beside it is refused. numpy and the standard library only: the serving image has no sklearn.
"""

import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

PROFILE_FILE = "profile.json"
METADATA_KEY = "training_profile_sha256"
SCHEMA = 1
BINS = 10
SHARE_TOLERANCE = 1e-9
OTHER = "other"
# Bins (or categories, with "other") per feature: each is a label value of the counters, so few.
MAX_BINS = 100
NAN_BIN = "nan"
# A profile is a few kilobytes; anything far larger is not one, and is not read into memory whole.
MAX_PROFILE_BYTES = 1 << 20


class ProfileError(ValueError):
    """The profile cannot be used; the message says why (logged as the reason drift is not monitored)."""


@dataclass(frozen=True, slots=True)
class NumericFeature:
    """A numeric column: value ``x`` falls in bin ``bisect_right(edges, x)``, NaN in its own bin."""

    name: str
    index: int
    edges: tuple[float, ...]
    expected: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class CategoricalFeature:
    """A categorical column: its categories' shares, then the share of every other value."""

    name: str
    index: int
    categories: tuple[str, ...]
    expected: tuple[float, ...]


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True, slots=True)
class Profile:
    """A loaded, validated profile."""

    input: str
    rows: int
    features: tuple[Feature, ...]


# --- building (at model build time) -------------------------------------------------------------------------


def numeric_feature(name: str, index: int, column: NDArray[Any], bins: int = BINS) -> dict[str, Any]:
    """A numeric feature's entry: the ``bins - 1`` inner quantile edges of ``column`` and each bin's share.

    Edges are numpy's default (linear) quantiles at 1/bins, 2/bins, ...; tied values may repeat an edge,
    which leaves the bin between the two copies empty. NaN in the training rows is left out of both.
    """
    values = np.asarray(column, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise ProfileError(f"feature '{name}' has no non-NaN training values")
    edges = np.quantile(values, np.arange(1, bins) / bins)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=bins)
    return {
        "name": name,
        "index": index,
        "kind": "numeric",
        "edges": [float(edge) for edge in edges],
        "expected": _shares(counts),
    }


def categorical_feature(
    name: str, index: int, values: Sequence[str], categories: Sequence[str]
) -> dict[str, Any]:
    """A categorical feature's entry: the share of each of ``categories`` in ``values``, then of the rest."""
    if len(set(categories)) != len(categories) or OTHER in categories:
        raise ProfileError(f"feature '{name}': categories must be distinct and not '{OTHER}'")
    position = {category: i for i, category in enumerate(categories)}
    counts = np.zeros(len(categories) + 1, dtype=np.int64)
    for value in values:
        counts[position.get(value, len(categories))] += 1
    if not counts.sum():
        raise ProfileError(f"feature '{name}' has no training values")
    return {
        "name": name,
        "index": index,
        "kind": "categorical",
        "categories": list(categories),
        "expected": _shares(counts),
    }


def _shares(counts: NDArray[np.int64]) -> list[float]:
    total = int(counts.sum())
    return [int(count) / total for count in counts]


def profile_document(input_name: str, rows: int, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The whole profile, ready for :func:`profile_bytes`; checked as the server will check it."""
    document = {"schema": SCHEMA, "input": input_name, "rows": rows, "features": [dict(f) for f in features]}
    parse_profile(document)
    return document


def profile_bytes(document: Mapping[str, Any]) -> bytes:
    """The file's bytes: sorted keys, two-space indent, one trailing newline (same document, same bytes)."""
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode("utf-8")


def sha256(data: bytes) -> str:
    """The hex digest stored in the model's metadata under :data:`METADATA_KEY`."""
    return hashlib.sha256(data).hexdigest()


# --- loading (at server start) ------------------------------------------------------------------------------


def load_profile(model_file: Path, metadata: Mapping[str, str]) -> Profile:
    """The profile beside ``model_file``, checked against the hash in the model's ``metadata``.

    Raises :class:`ProfileError` saying why the version cannot be monitored.
    """
    path = model_file.parent / PROFILE_FILE
    expected_hash = metadata.get(METADATA_KEY)
    if expected_hash is None:
        raise ProfileError(f"the model's metadata has no '{METADATA_KEY}'")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise ProfileError(f"{path}: file not found") from None
    except OSError as error:
        raise ProfileError(f"{path}: {error.strerror or error}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: larger than {MAX_PROFILE_BYTES} bytes")
    found_hash = sha256(data)
    if found_hash != expected_hash:
        raise ProfileError(f"{path}: sha256 {found_hash} is not the model's {METADATA_KEY} {expected_hash}")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProfileError(f"{path}: not JSON ({error})") from None
    try:
        return parse_profile(document)
    except ProfileError as error:
        raise ProfileError(f"{path}: {error}") from None


def parse_profile(document: object) -> Profile:
    """A profile document checked field by field; :class:`ProfileError` names the first problem."""
    if not isinstance(document, dict):
        raise ProfileError("the profile is not a JSON object")
    if document.get("schema") != SCHEMA:
        raise ProfileError(f"schema is {document.get('schema')!r}, expected {SCHEMA}")
    input_name, rows, features = document.get("input"), document.get("rows"), document.get("features")
    if not isinstance(input_name, str) or not input_name:
        raise ProfileError("'input' must be the model's input tensor name")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise ProfileError("'rows' must be a positive integer")
    if not isinstance(features, list) or not features:
        raise ProfileError("'features' must be a non-empty list")
    parsed = tuple(_feature(entry, position) for position, entry in enumerate(features))
    for attribute in ("name", "index"):
        values = [getattr(feature, attribute) for feature in parsed]
        if len(set(values)) != len(values):
            raise ProfileError(f"two features have the same {attribute}")
    return Profile(input=input_name, rows=rows, features=parsed)


def _feature(entry: object, position: int) -> Feature:
    if not isinstance(entry, dict):
        raise ProfileError(f"features[{position}] is not an object")
    name, index, kind = entry.get("name"), entry.get("index"), entry.get("kind")
    where = f"feature {name!r}" if isinstance(name, str) else f"features[{position}]"
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{where}: 'name' must be a non-empty string")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ProfileError(f"{where}: 'index' must be a non-negative integer")
    expected = _numbers(entry.get("expected"), f"{where}: 'expected'")
    if any(share < 0 for share in expected) or abs(math.fsum(expected) - 1) > SHARE_TOLERANCE:
        raise ProfileError(f"{where}: 'expected' shares must be non-negative and sum to 1")
    if kind == "numeric":
        return NumericFeature(name, index, _edges(entry, where, len(expected)), expected)
    if kind == "categorical":
        return CategoricalFeature(name, index, _categories(entry, where, len(expected)), expected)
    raise ProfileError(f"{where}: 'kind' must be 'numeric' or 'categorical', not {kind!r}")


def _edges(entry: dict[str, Any], where: str, shares: int) -> tuple[float, ...]:
    edges = _numbers(entry.get("edges"), f"{where}: 'edges'")
    if not edges or any(b < a for a, b in itertools.pairwise(edges)):
        raise ProfileError(f"{where}: 'edges' must be a non-empty ascending list")
    if len(edges) >= MAX_BINS:
        raise ProfileError(f"{where}: {len(edges) + 1} bins, more than {MAX_BINS}")
    if shares != len(edges) + 1:
        raise ProfileError(f"{where}: {len(edges)} edges need {len(edges) + 1} shares, not {shares}")
    return edges


def _categories(entry: dict[str, Any], where: str, shares: int) -> tuple[str, ...]:
    categories = entry.get("categories")
    if not isinstance(categories, list) or not categories or not _strings(categories):
        raise ProfileError(f"{where}: 'categories' must be a non-empty list of strings")
    if len(set(categories)) != len(categories) or OTHER in categories:
        raise ProfileError(f"{where}: 'categories' must be distinct and not '{OTHER}'")
    if len(categories) >= MAX_BINS:
        raise ProfileError(f"{where}: {len(categories)} categories and '{OTHER}', more than {MAX_BINS} bins")
    if shares != len(categories) + 1:
        raise ProfileError(f"{where}: {len(categories)} categories need {len(categories) + 1} shares "
                           f"(the last for '{OTHER}'), not {shares}")  # fmt: skip
    return tuple(categories)


def _numbers(value: object, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value
    ):
        raise ProfileError(f"{what} must be a list of finite numbers")
    return tuple(float(x) for x in value)


def _strings(values: list[Any]) -> bool:
    return all(isinstance(value, str) for value in values)
