"""Load profiles (`profiles.yaml`): a shape in time and the traffic each user sends."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from loadtests.config import ConfigError, check_keys, load_yaml, mapping, number
from loadtests.drift import DriftSpec, parse_drift
from loadtests.shapes import Stage, parse_shape, total_duration

BUNDLED_PROFILES = Path(__file__).with_name("profiles.yaml")
PROTOCOLS = ("rest", "grpc")


@dataclass(frozen=True, kw_only=True)
class Traffic:
    """What the users send: protocols and models weighted, end-user ids and segments for variant routing."""

    protocols: dict[str, float] = field(default_factory=lambda: {"rest": 1.0})
    """Relative weight of REST and gRPC users."""
    models: dict[str, float] = field(default_factory=dict)
    """Relative weight of each model (the V2 protocol has no model listing, so they are named)."""
    user_ids: int = 1000
    """Distinct end users (`x-user-id`), so sticky routing is exercised by repeat visitors; 0 sends no
    end-user headers and checks no stickiness (SageMaker splits every request by weight: docs/smb.md)."""
    enterprise_share: float = 0.0
    """Share of end users who send `x-segment: enterprise` (a header route)."""
    rows: int = 1
    """Rows per request (the batch dimension)."""
    think_ms: tuple[float, float] = (0.0, 0.0)
    """Each user waits between these many milliseconds between requests."""
    metadata: Path | None = None
    """A directory of each model's V2 metadata (`<model>.json`), for a target that routes only inference (the
    smb API); None: `GET /v2/models/<model>` on the target."""


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A named, bounded load test."""

    name: str
    """The profile's key in the file."""
    description: str
    """One line for people."""
    stages: list[Stage]
    """The shape in time."""
    traffic: Traffic
    """What each user sends."""
    drift: DriftSpec | None = None
    """Inputs sampled from a training profile, shifted for a period (the `drift` profile); None: noise."""


_TRAFFIC_KEYS = {"protocols", "models", "user_ids", "enterprise_share", "rows", "think_ms", "metadata"}


def _weights(value: object, where: str, allowed: tuple[str, ...] | None = None) -> dict[str, float]:
    weights = {k: number(v, f"{where}.{k}") for k, v in mapping(value, where).items()}
    if allowed is not None:
        check_keys(weights, set(allowed), where)
    if weights and not any(weights.values()):
        raise ConfigError(f"{where}: at least one weight must be above 0")
    return weights


def _think(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(f"{where}: expected [min, max] in milliseconds, got {value!r}")
    low, high = (number(v, where) for v in value)
    if low > high:
        raise ConfigError(f"{where}: min {low:g} is above max {high:g}")
    return low, high


def _metadata(value: object, where: str, base: Path) -> Path:
    """The metadata directory, relative to the profiles file (its documents are checked when the profile is
    chosen: a profiles file copied alone, as into the cluster's load-test Job, still parses)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a directory relative to the profiles file, got {value!r}")
    return base / value


def check_metadata(profile: Profile, path: Path) -> None:
    """A profile that reads metadata documents has one for every model it loads."""
    directory = profile.traffic.metadata
    if directory is None:
        return
    missing = [m for m in sorted(profile.traffic.models) if not (directory / f"{m}.json").is_file()]
    if missing:
        raise ConfigError(
            f"{path}: {profile.name}.traffic.metadata: {directory} has no {', '.join(missing)} (<model>.json)"
        )


def parse_traffic(value: object, where: str, base: Path = BUNDLED_PROFILES.parent) -> Traffic:
    """A profile's `traffic:` mapping, every key checked; `base` is the profiles file's directory."""
    raw = mapping(value, where)
    check_keys(raw, _TRAFFIC_KEYS, where)
    if "models" not in raw:
        raise ConfigError(f"{where}.models: missing; name the models to load and their weights")
    default = Traffic()
    share = number(raw.get("enterprise_share", 0.0), f"{where}.enterprise_share")
    if share > 1:
        raise ConfigError(f"{where}.enterprise_share: must be at most 1, got {share:g}")
    whole = {
        key: int(number(raw.get(key, getattr(default, key)), f"{where}.{key}", minimum=low, integer=True))
        for key, low in (("user_ids", 0), ("rows", 1))
    }
    models = _weights(raw["models"], f"{where}.models")
    return Traffic(
        protocols=_weights(raw["protocols"], f"{where}.protocols", PROTOCOLS)
        if "protocols" in raw
        else default.protocols,
        models=models,
        user_ids=whole["user_ids"],
        enterprise_share=share,
        rows=whole["rows"],
        think_ms=_think(raw["think_ms"], f"{where}.think_ms") if "think_ms" in raw else default.think_ms,
        metadata=_metadata(raw["metadata"], f"{where}.metadata", base) if "metadata" in raw else None,
    )


def parse_profiles(document: Mapping[str, object], source: str) -> dict[str, Profile]:
    """Every profile in a profiles document (`source`: its file, which relative paths start from)."""
    profiles = {}
    for name, value in document.items():
        where = f"{source}: {name}"
        raw = mapping(value, where)
        check_keys(raw, {"description", "shape", "traffic", "drift"}, where)
        if "shape" not in raw:
            raise ConfigError(f"{where}.shape: missing")
        stages = parse_shape(raw["shape"], f"{where}.shape")
        traffic = parse_traffic(raw.get("traffic"), f"{where}.traffic", Path(source).parent)
        drift = _drift(raw["drift"], f"{where}.drift", stages, traffic) if "drift" in raw else None
        profiles[name] = Profile(
            name=name,
            description=str(raw.get("description", "")),
            stages=stages,
            traffic=traffic,
            drift=drift,
        )
    return profiles


def _drift(value: object, where: str, stages: list[Stage], traffic: Traffic) -> DriftSpec:
    """The drift block, its model (if it names one) one of the traffic's and its shift inside the run."""
    spec = parse_drift(value, where)
    if spec.model is not None and spec.model not in traffic.models:
        models = ", ".join(sorted(traffic.models))
        raise ConfigError(f"{where}.model: {spec.model!r} is not in traffic.models ({models})")
    end = spec.start_s + spec.duration_s
    length = total_duration(stages)
    if end > length:
        raise ConfigError(f"{where}: the shift ends at {end:g} s, after the shape's {length:g} s; shorten it")
    return spec


def load_profile(name: str, path: Path = BUNDLED_PROFILES) -> Profile:
    """The profile `name` from a profiles file."""
    profiles = parse_profiles(load_yaml(path), str(path))
    if name not in profiles:
        raise ConfigError(f"{path}: no profile {name!r}; the file has {', '.join(sorted(profiles))}")
    check_metadata(profiles[name], path)
    return profiles[name]


def drift_models(profile: Profile) -> list[str]:
    """The models whose inputs a drift profile samples: its block's model, else every model it loads."""
    if profile.drift is None:
        return []
    return [profile.drift.model] if profile.drift.model is not None else loaded_models(profile)


def loaded_models(profile: Profile) -> list[str]:
    """The models a run of the profile sends requests to (a weight above 0), sorted."""
    return sorted(m for m, weight in profile.traffic.models.items() if weight > 0)


def parse_models(text: str) -> tuple[str, ...]:
    """Model names from a comma-separated list (`--models a,b`); `restrict` refuses empty names."""
    return tuple(name.strip() for name in text.split(","))


def restrict(profile: Profile, models: Sequence[str]) -> Profile:
    """The profile with its traffic limited to `models`, keeping their weights; unchanged when empty.

    Only restricts: a model the profile does not name is refused, so a typo cannot aim the load elsewhere.
    """
    if not models:
        return profile
    known = profile.traffic.models
    for model in models:
        if not model:
            raise ConfigError("--models: an empty name; expected model names separated by commas")
        if model not in known:
            raise ConfigError(
                f"--models: {model!r} is not in profile {profile.name}'s traffic.models "
                f"({', '.join(sorted(known))}); add it to a profiles file (--profiles) to load it"
            )
    kept = {m: w for m, w in known.items() if m in models}
    if not any(kept.values()):
        raise ConfigError(f"--models: every model named has weight 0 in profile {profile.name}")
    return replace(profile, traffic=replace(profile.traffic, models=kept))
