"""The `segment` label of `serving_requests_total`: which key user segment a request came from.

An experiment judges a candidate per segment as well as overall (servectl/experiments/segments.py), so a
version better on the whole but worse for, say, enterprise users is held. The segment is read from one
request header (`segment_header`, e.g. `x-segment`, which the mesh passes through untouched) and kept only
when it is one of the configured values (`segment_values`, from the stack's rollout block); anything else,
or no header, is `other`. So the label takes at most `MAX_SEGMENTS + 1` values, whatever clients send.
"""

import re
from collections.abc import Mapping

OTHER = "other"
"""Requests without the header, with a value not configured, or when no segments are configured."""
MAX_SEGMENTS = 16
"""Configured values at most: each multiplies the request counter's series."""
_VALUE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_HEADER = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def parse_values(text: str) -> tuple[str, ...]:
    """The comma-separated segment values of the setting; ValueError names the bad one and why."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    for value in values:
        if value == OTHER or not _VALUE.fullmatch(value):
            raise ValueError(
                f"segment value {value!r} must be 1-32 of [a-z0-9_-] (alphanumeric first), not '{OTHER}'"
            )
    if len(set(values)) != len(values):
        raise ValueError(f"segment values repeat: {', '.join(values)}")
    if len(values) > MAX_SEGMENTS:
        raise ValueError(f"{len(values)} segment values, at most {MAX_SEGMENTS} (each adds counter series)")
    return values


def check_header(name: str) -> str:
    """A lower-case header name (HTTP/2 and the transports' header maps are lower-case)."""
    if name and not _HEADER.fullmatch(name):
        raise ValueError(f"segment header {name!r} must be a lower-case header name of [a-z0-9-]")
    return name


class Segments:
    """Maps a request's headers to its segment label value."""

    def __init__(self, header: str = "", values: tuple[str, ...] = ()) -> None:
        self.header = check_header(header)
        self.values = frozenset(values) if header else frozenset()

    def of(self, headers: Mapping[str, str] | None) -> str:
        """The configured value the header carries, else `other`."""
        if not self.values or headers is None:
            return OTHER
        value = headers.get(self.header)
        return value if value in self.values else OTHER
