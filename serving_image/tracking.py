"""Per-request bookkeeping shared by the transports: in-flight count, metrics and the access log."""

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

from serving_image.access_log import AccessLog, AccessRecord
from serving_image.metrics import UNKNOWN, Metrics


@dataclass(slots=True)
class Tracked:
    """One request being handled; transports fill in what they learn as they go."""

    protocol: str
    started: float
    request_id: str
    caller: str | None
    model: str = UNKNOWN
    version: str = ""


class RequestTracker:
    """Counts requests in flight and records each one's outcome exactly once."""

    def __init__(self, metrics: Metrics, access_log: AccessLog) -> None:
        self._metrics = metrics
        self._log = access_log
        self.inflight = 0
        # Request ids for callers that send none: unique per process and cheap (no uuid per request).
        self._id_prefix = os.urandom(6).hex()
        self._id_counter = itertools.count(1)
        # Label lookups cost more than the updates; the label sets are bounded, so cache them.
        self._inflight_gauges: dict[str, Any] = {}
        self._outcome_metrics: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    def start(self, protocol: str, request_id: str | None, caller: str | None) -> Tracked:
        """A request arrived."""
        self.inflight += 1
        gauge = self._inflight_gauges.get(protocol)
        if gauge is None:
            gauge = self._inflight_gauges[protocol] = self._metrics.inflight.labels(protocol)
        gauge.inc()
        return Tracked(
            protocol, time.perf_counter(), request_id or f"{self._id_prefix}-{next(self._id_counter)}", caller
        )

    def finish(self, tracked: Tracked, status: int | str, outcome: str, error: str | None = None) -> None:
        """The request is answered: metrics and one access-log line."""
        elapsed = time.perf_counter() - tracked.started
        self.inflight -= 1
        self._inflight_gauges[tracked.protocol].dec()
        key = (tracked.model, tracked.version, tracked.protocol, outcome)
        pair = self._outcome_metrics.get(key)
        if pair is None:
            pair = self._outcome_metrics[key] = (
                self._metrics.requests.labels(*key),
                self._metrics.request_seconds.labels(*key[:3]),
            )
        pair[0].inc()
        pair[1].observe(elapsed)
        self._log.write(
            AccessRecord(
                request_id=tracked.request_id,
                protocol=tracked.protocol,
                model=tracked.model,
                version=tracked.version,
                status=status,
                outcome=outcome,
                latency_seconds=elapsed,
                caller=tracked.caller,
                error=error,
            )
        )
