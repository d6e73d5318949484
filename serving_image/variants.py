"""Which version of a model serves a request: header routes, then sticky or random weights."""

import hashlib
import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate

from serving_image.model_config import VariantsConfig

_STICKY_BUCKETS = 10_000


class VariantRouter:
    """Chooses a version per request from a model's variant config.

    With no config every request goes to ``default_version`` (the latest, as Triton does).
    Sticky assignment hashes a header into a fixed bucket, so one caller keeps one version for
    as long as the weights stand, and moving weights moves the fewest callers.
    """

    def __init__(self, config: VariantsConfig | None, default_version: str) -> None:
        self._default = default_version
        self._routes = tuple((r.header.lower(), r.value, r.version) for r in config.routes) if config else ()
        self._sticky_header = config.sticky.header.lower() if config and config.sticky else None
        weighted = [(version, weight) for version, weight in (config.weights.items() if config else ())]
        weighted = [(version, weight) for version, weight in weighted if weight > 0]
        self._versions: Sequence[str] = [version for version, _ in weighted]
        self._bounds = list(accumulate(weight for _, weight in weighted))
        shadow = config.shadow if config else None
        self._shadow = (shadow.version, shadow.percent) if shadow else None
        self.faults = dict(config.faults) if config else {}

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version the router can send traffic to, oldest first (version 10 after version 9)."""
        routed = {version for _, _, version in self._routes}
        return tuple(sorted({*self._versions, *routed} or {self._default}, key=int))

    def choose(self, headers: Mapping[str, str]) -> str:
        """The version for a request with these (lower-case) headers."""
        for header, value, version in self._routes:
            if headers.get(header) == value:
                return version
        if not self._versions:
            return self._default
        sticky_key = headers.get(self._sticky_header) if self._sticky_header else None
        point = _bucket(sticky_key) if sticky_key is not None else random.random() * 100
        return self._versions[min(bisect_right(self._bounds, point), len(self._versions) - 1)]

    def shadow(self, served: str) -> str | None:
        """The version to mirror this request to, if any: never the one that served it."""
        if self._shadow is None:
            return None
        version, percent = self._shadow
        if version == served or random.random() * 100 >= percent:
            return None
        return version


def _bucket(key: str) -> float:
    """A stable point in [0, 100) for a key, the same in every process and release."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % _STICKY_BUCKETS) * 100 / _STICKY_BUCKETS
