"""The `drift` load profile's inputs: rows sampled from a model version's training profile, and the same
rows with named features moved by some standard deviations during a bounded period.

The profile is the server's contract file, `<repository>/<model>/<version>/profile.json` (docs/drift.md):
per numeric feature its inner bin edges (the training column's deciles) and the training rows' share per
bin. A row is drawn per feature independently: a bin by its expected share, then a value uniformly inside
it, so the live shares the server counts reproduce the expected ones (the joint distribution is not the
training one, which the drift counters do not see). Read here from the JSON, not through serving_image:
the two parts meet through the file.

- The outer bins are open-ended in the profile; here they reach one estimated standard deviation beyond
  the outermost edge. For a normal column the mean of its top decile lies 0.47 sd beyond the 90% quantile,
  which a uniform bin one sd wide reproduces (its mean is 0.5 sd beyond).
- A feature's standard deviation is estimated from the edges as a normal column's would be:
  (last edge - first edge) / (2 z), z the normal quantile of 1 - 1/bins; for deciles that is
  (q90 - q10) / 2.563.
"""

import bisect
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from loadtests.config import ConfigError, check_keys, mapping, number

PROFILE_FILE = "profile.json"
BUNDLED_REPOSITORY = Path(__file__).resolve().parents[1] / "serving_image" / "models"
"""The models `make models` builds, the default `--model-repository`."""


@dataclass(frozen=True, kw_only=True)
class DriftSpec:
    """A profile's `drift:` block: whose profile to sample and how to shift it."""

    model: str | None = None
    """The model whose inputs are sampled; None: every model of the traffic, each from its own profile."""
    version: str | None = None
    """The version whose profile.json is read (default: the highest numbered version in the repository)."""
    features: tuple[str, ...] = ()
    """The features moved during the shift, by their profile names."""
    shift_sd: float = 1.0
    """How far they move, in estimated standard deviations (negative moves down)."""
    start_s: float = 0.0
    """Seconds into the run when the shift starts."""
    duration_s: float = 0.0
    """How long it lasts; the inputs are unshifted again afterwards."""


_DRIFT_KEYS = {"model", "version", "features", "shift_sd", "start_s", "duration_s"}


def parse_drift(value: object, where: str) -> DriftSpec:
    """A profile's `drift:` mapping, every key checked (the feature names are checked against the
    profile.json once it is read, by `load_sampler`)."""
    raw = mapping(value, where)
    check_keys(raw, _DRIFT_KEYS, where)
    features = raw.get("features")
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise ConfigError(f"{where}.features: expected a non-empty list of feature names, got {features!r}")
    shift = raw.get("shift_sd")
    if isinstance(shift, bool) or not isinstance(shift, int | float) or shift == 0:
        raise ConfigError(f"{where}.shift_sd: expected a number of standard deviations other than 0")
    return DriftSpec(
        model=None if raw.get("model") is None else str(raw["model"]),
        version=None if raw.get("version") is None else str(raw["version"]),
        features=tuple(features),
        shift_sd=float(shift),
        start_s=number(raw.get("start_s", 0.0), f"{where}.start_s"),
        duration_s=number(raw.get("duration_s"), f"{where}.duration_s", minimum=1e-9),
    )


def shifted_at(spec: DriftSpec, elapsed_s: float) -> bool:
    """Whether inputs are shifted `elapsed_s` seconds into the run."""
    return spec.start_s <= elapsed_s < spec.start_s + spec.duration_s


@dataclass(frozen=True, kw_only=True)
class FeatureSampler:
    """One numeric feature of a profile, ready to sample."""

    name: str
    index: int
    edges: tuple[float, ...]
    """The profile's inner bin edges."""
    lows: npt.NDArray[np.float64]
    """Each bin's lower bound (the first one sd below the first edge)."""
    highs: npt.NDArray[np.float64]
    """Each bin's upper bound, exclusive (the last one sd above the last edge)."""
    expected: npt.NDArray[np.float64]
    sd: float
    """The standard deviation estimated from the edges."""


def estimated_sd(edges: Sequence[float]) -> float:
    """A normal column's standard deviation from its profile's inner edges (the 1/bins and 1 - 1/bins
    quantiles at either end): (last - first) / (2 z), 2 z = 2.563 for deciles."""
    bins = len(edges) + 1
    z = statistics.NormalDist().inv_cdf(1 - 1 / bins)
    return (edges[-1] - edges[0]) / (2 * z)


def feature_sampler(entry: Mapping[str, Any], where: str) -> FeatureSampler:
    """A profile's numeric feature entry, checked as far as sampling needs."""
    name = str(entry.get("name"))
    if entry.get("kind") != "numeric":
        raise ConfigError(
            f"{where}: feature {name} is {entry.get('kind')!r}; the sampler draws numeric ones only"
        )
    edges = [float(e) for e in entry["edges"]]
    expected = np.asarray([float(s) for s in entry["expected"]], dtype=np.float64)
    if not edges or len(expected) != len(edges) + 1 or edges != sorted(edges):
        raise ConfigError(f"{where}: feature {name}: expected ascending edges and one share per bin")
    sd = estimated_sd(edges)
    bounds = [edges[0] - sd, *edges, edges[-1] + sd]
    return FeatureSampler(
        name=name,
        index=int(entry["index"]),
        edges=tuple(edges),
        lows=np.asarray(bounds[:-1]),
        highs=np.asarray(bounds[1:]),
        expected=expected / expected.sum(),
        sd=sd,
    )


class Sampler:
    """Rows for one model input from a training profile, optionally with some features shifted."""

    def __init__(self, document: Mapping[str, Any], source: str, width: int | None = None) -> None:
        """`document` is a profile.json; `width` the input's last axis (default: the highest index + 1)."""
        try:
            entries = list(document["features"])
            self.input = str(document["input"])
            self.features = [feature_sampler(e, f"{source}: features[{i}]") for i, e in enumerate(entries)]
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{source}: not a training profile ({error!r})") from None
        if not self.features:
            raise ConfigError(f"{source}: the profile has no features to sample")
        self.width = width if width is not None else max(f.index for f in self.features) + 1
        if any(f.index >= self.width for f in self.features):
            raise ConfigError(f"{source}: a feature's index is past the input's {self.width} columns")

    def shift_amounts(self, features: Sequence[str], shift_sd: float) -> dict[str, float]:
        """Per named feature, how far it moves: `shift_sd` of its estimated standard deviations."""
        known = {f.name: f for f in self.features}
        for name in features:
            if name not in known:
                raise ConfigError(
                    f"drift.features: {name!r} is not in the profile (it has {', '.join(sorted(known))})"
                )
            if known[name].sd <= 0:
                raise ConfigError(f"drift.features: {name!r} has one value in training; it cannot be shifted")
        return {name: shift_sd * known[name].sd for name in features}

    def rows(
        self, count: int, rng: np.random.Generator, shift: Mapping[str, float] | None = None
    ) -> npt.NDArray[np.float32]:
        """`count` rows (FP32); each feature named in `shift` moved by that amount. Columns the profile
        does not describe are 0."""
        out = np.zeros((count, self.width), dtype=np.float64)
        for feature in self.features:
            bins = rng.choice(len(feature.expected), size=count, p=feature.expected)
            low, high = feature.lows[bins], feature.highs[bins]
            out[:, feature.index] = low + rng.random(count) * (high - low)
            out[:, feature.index] += (shift or {}).get(feature.name, 0.0)
        return out.astype(np.float32)


def bin_of(feature: FeatureSampler, value: float) -> int:
    """The bin the server counts `value` in (`bisect_right` over the inner edges)."""
    return bisect.bisect_right(feature.edges, value)


def version_dir(repository: Path, model: str, version: str | None) -> Path:
    """The version directory whose profile is sampled: `version`, else the highest numbered one."""
    model_dir = repository / model
    if version is not None:
        return model_dir / version
    versions = sorted((p.name for p in model_dir.glob("*") if p.name.isdigit() and p.is_dir()), key=int)
    if not versions:
        raise ConfigError(
            f"{model_dir}: no version directories; pass --model-repository with the served models"
        )
    return model_dir / versions[-1]


def load_sampler(repository: Path, model: str, version: str | None, width: int | None = None) -> Sampler:
    """The sampler of `model`'s served version; a version without a readable profile is a `ConfigError`."""
    path = version_dir(repository, model, version) / PROFILE_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no training profile; the drift profile samples the served version's profile.json "
            "(build the model with its profile, e.g. `make models`, or pass --model-repository)"
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read the training profile ({error})") from None
    return Sampler(mapping(document, str(path)), str(path), width)
