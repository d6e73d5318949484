"""Which version of a model serves a request: header routes, then sticky or random weights."""

import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate

from serving_image.assignment import HEADER, STICKY, WEIGHTED
from serving_image.model_config import VariantsConfig

STICKY_BUCKETS = 100
"""Sticky buckets: one per percent of weight, the same number the gateway's bucket routes use."""
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK32 = 0xFFFFFFFF


class VariantRouter:
    """Chooses a version per request from a model's variant config.

    With no config every request goes to ``default_version`` (the latest, as Triton does).
    Sticky assignment hashes a header into a fixed bucket, so one caller keeps one version for
    as long as the weights stand, and moving weights moves the fewest callers: each version owns a
    contiguous range of buckets, laid out in version order, so raising one weight only shifts the
    boundaries next to it. The mesh's gateway computes the same bucket and routes the same ranges.
    """

    def __init__(self, config: VariantsConfig | None, default_version: str) -> None:
        self._default = default_version
        self._routes = tuple((r.header.lower(), r.value, r.version) for r in config.routes) if config else ()
        self._sticky_header = config.sticky.header.lower() if config and config.sticky else None
        weighted = [(version, weight) for version, weight in (config.weights.items() if config else ())]
        # Version order, not the file's key order: the gateway lays the bucket ranges out the same way.
        weighted = sorted(((v, w) for v, w in weighted if w > 0), key=lambda vw: _version_order(vw[0]))
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

    @property
    def shadow_version(self) -> str | None:
        """The version a share of requests is mirrored to, if any."""
        return self._shadow[0] if self._shadow else None

    def choose(self, headers: Mapping[str, str]) -> str:
        """The version for a request with these (lower-case) headers."""
        return self.assign(headers)[0]

    def assign(self, headers: Mapping[str, str]) -> tuple[str, str, str | None]:
        """The version, how it was chosen (`serving_image.assignment`: header, sticky or weighted) and,
        for a sticky choice, the user key it was hashed from."""
        for header, value, version in self._routes:
            if headers.get(header) == value:
                return version, HEADER, None
        if not self._versions:
            return self._default, WEIGHTED, None
        sticky_key = headers.get(self._sticky_header) if self._sticky_header else None
        point = _bucket(_wire_bytes(sticky_key)) if sticky_key is not None else random.random() * 100
        version = self._versions[min(bisect_right(self._bounds, point), len(self._versions) - 1)]
        return version, (WEIGHTED if sticky_key is None else STICKY), sticky_key

    def shadow(self, served: str) -> str | None:
        """The version to mirror this request to, if any: never the one that served it."""
        if self._shadow is None:
            return None
        version, percent = self._shadow
        if version == served or random.random() * 100 >= percent:
            return None
        return version


def _version_order(version: str) -> int:
    return int(version) if version.isdigit() else -1


def _wire_bytes(value: str) -> bytes:
    """The header value's bytes as the client sent them, which is what the gateway hashes.

    The REST transport decodes header bytes as latin-1 and gRPC metadata is ASCII, so encoding back to
    latin-1 restores the wire bytes; only a caller passing other text gets its UTF-8 bytes.
    """
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


def _bucket(key: bytes) -> int:
    """The sticky bucket of a key, 0..99: 32-bit FNV-1a of its bytes, mixed, scaled to 100 by its high bits.

    FNV-1a alone spreads sequential ids (`user-1`, `user-2`, ...) unevenly over the buckets, which a sample
    ratio check would flag, so MurmurHash3's 32-bit finaliser mixes it first; the high bits, not `% 100`, give
    the bucket. Stable in every process and release, and exact with LuaJIT's 32-bit operations, so the
    gateway's Lua filter (stacks/manifests/sticky.py) puts every caller in the same bucket as this server.
    """
    return (_fmix32(_fnv1a32(key)) * STICKY_BUCKETS) >> 32


def _fnv1a32(key: bytes) -> int:
    digest = _FNV_OFFSET
    for byte in key:
        digest = ((digest ^ byte) * _FNV_PRIME) & _MASK32
    return digest


def _fmix32(value: int) -> int:
    """MurmurHash3's finaliser: every input bit flips each output bit with probability about 1/2."""
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & _MASK32
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & _MASK32
    return value ^ (value >> 16)
