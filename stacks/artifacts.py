"""Third-party charts and images, pinned in `artifacts.lock.json`, always pulled from an in-region registry.

Nothing a stack deploys is pulled from outside its jurisdiction: `servectl mirror --stack S` copies every
entry of the lock file from its upstream source into the region's own registry (ECR, or the registry an
on-premises stack names) under `mirror/`, and records the digest it verified. The stacks only ever build
references from a registry host and a lock entry, so every image and chart reference in a plan points at the
in-region copy. The repositories are immutable, so a chart version in them stands for one digest forever.

Pure: no Pulumi here. A registry host may be a plain string or, in a program, a Pulumi Output (use `apply`).
"""

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

LOCK_FILE = Path(__file__).with_name("artifacts.lock.json")
MIRROR_PREFIX = "mirror"
"""Repository prefix of every mirrored artifact in the in-region registry."""
CHART_PREFIX = f"{MIRROR_PREFIX}/charts"
"""Repository prefix of mirrored Helm charts (OCI artifacts)."""


class LockError(ValueError):
    """The lock file is malformed, or names no such entry."""


@dataclass(frozen=True, kw_only=True)
class Image:
    """A container image: where it comes from and the digest the mirror verified."""

    key: str
    """Name of the entry in the lock file."""
    source: str
    """Upstream repository, without tag (e.g. `docker.io/istio/pilot`)."""
    tag: str
    """Upstream tag the digest was resolved from."""
    digest: str
    """`sha256:...` of the image (its index, for multi-architecture images)."""
    recorded: bool
    """True once `servectl mirror` has verified the digest against the source."""

    @property
    def repository(self) -> str:
        """The repository in the in-region registry: `mirror/` plus the upstream path without its host."""
        return f"{MIRROR_PREFIX}/{self.source.split('/', 1)[1]}"

    def ref(self, registry: str) -> str:
        """The image reference in `registry`, pinned by digest."""
        return f"{registry}/{self.repository}@{self.digest}"


@dataclass(frozen=True, kw_only=True)
class Chart:
    """A Helm chart: the upstream repository, its version and the digest of the OCI artifact mirrored."""

    key: str
    """Name of the entry in the lock file."""
    source: str
    """Upstream Helm repository URL."""
    name: str
    """Chart name."""
    version: str
    """Chart version (an immutable tag in the in-region repository)."""
    digest: str
    """`sha256:...` of the chart's OCI manifest in the in-region registry."""
    recorded: bool
    """True once `servectl mirror` has pushed and verified it."""

    @property
    def repository(self) -> str:
        """The chart's repository in the in-region registry."""
        return f"{CHART_PREFIX}/{self.name}"

    @property
    def tag(self) -> str:
        """The chart's tag in that repository: its version, with `+` as `_` as Helm writes OCI tags."""
        return self.version.replace("+", "_")

    def oci(self, registry: str) -> str:
        """The `chart` argument of a Helm release: the in-region OCI reference, without version."""
        return f"oci://{registry}/{self.repository}"


@dataclass(frozen=True, kw_only=True)
class Lock:
    """The parsed lock file."""

    images: dict[str, Image]
    """Images by key."""
    charts: dict[str, Chart]
    """Charts by key."""

    def image(self, key: str) -> Image:
        """The image entry `key`; LockError if there is none."""
        if key not in self.images:
            raise LockError(f"{LOCK_FILE.name}: images.{key}: no such entry")
        return self.images[key]

    def chart(self, key: str) -> Chart:
        """The chart entry `key`; LockError if there is none."""
        if key not in self.charts:
            raise LockError(f"{LOCK_FILE.name}: charts.{key}: no such entry")
        return self.charts[key]

    def unrecorded(self) -> list[str]:
        """`images.K` / `charts.K` of every entry whose digest the mirror has not verified yet."""
        return [f"images.{k}" for k, v in self.images.items() if not v.recorded] + [
            f"charts.{k}" for k, v in self.charts.items() if not v.recorded
        ]


def _field(entry: Any, where: str, key: str, kind: type) -> Any:
    if not isinstance(entry, dict) or not isinstance(entry.get(key), kind):
        raise LockError(f"{where}.{key}: must be a {kind.__name__}")
    return entry[key]


def _digest(entry: Any, where: str) -> str:
    digest = str(_field(entry, where, "digest", str))
    hexpart = digest.removeprefix("sha256:")
    if not digest.startswith("sha256:") or len(hexpart) != 64 or set(hexpart) - set("0123456789abcdef"):
        raise LockError(f"{where}.digest: {digest!r} is not sha256:<64 hex digits>")
    return digest


def parse_lock(raw: Any, source: str = LOCK_FILE.name) -> Lock:
    """Parse the lock document; LockError names the file, the key and the reason."""
    if not isinstance(raw, dict):
        raise LockError(f"{source}: must be a JSON object")
    images, charts = {}, {}
    for key, entry in (raw.get("images") or {}).items():
        where = f"{source}: images.{key}"
        images[key] = Image(
            key=key,
            source=_field(entry, where, "source", str),
            tag=_field(entry, where, "tag", str),
            digest=_digest(entry, where),
            recorded=_field(entry, where, "recorded", bool),
        )
        if "/" not in images[key].source:
            raise LockError(f"{where}.source: {images[key].source!r} names no registry host")
    for key, entry in (raw.get("charts") or {}).items():
        where = f"{source}: charts.{key}"
        charts[key] = Chart(
            key=key,
            source=_field(entry, where, "source", str),
            name=_field(entry, where, "name", str),
            version=_field(entry, where, "version", str),
            digest=_digest(entry, where),
            recorded=_field(entry, where, "recorded", bool),
        )
    return Lock(images=images, charts=charts)


@cache
def load_lock(path: Path = LOCK_FILE) -> Lock:
    """The lock file, parsed once per process."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LockError(f"{path.name}: cannot read it: {exc}") from exc
    return parse_lock(raw, path.name)


def ecr_registry(account: str, region: str) -> str:
    """The registry host of an account's ECR in one region."""
    return f"{account}.dkr.ecr.{region}.amazonaws.com"
