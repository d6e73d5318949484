"""The one shape every load generator's result takes, so the report treats them alike."""

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Throughput and latency of one measured run."""

    requests_per_s: float
    """Completed requests (or in-process calls) per second."""
    p50_ms: float
    """Median latency in milliseconds."""
    p99_ms: float
    """99th-percentile latency in milliseconds."""
    requests: int
    """Requests completed in the measured window."""
    errors: int = 0
    """Non-2xx answers, socket errors, timeouts or non-OK gRPC statuses."""
    detail: str = ""
    """What the errors were, or what was left out of them, in a few words."""

    def as_dict(self) -> dict[str, float | int | str]:
        """A JSON-ready copy."""
        return asdict(self)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending list (``fraction`` in 0..1); 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def pinned(command: list[str], cpus: str | None) -> list[str]:
    """``command`` run only on ``cpus`` (a ``taskset`` CPU list such as "0" or "0-1"), or as it is."""
    return command if cpus is None else ["taskset", "--cpu-list", cpus, *command]
