"""Per-request bookkeeping shared by the transports: in-flight count, metrics and the access log."""

import itertools
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serving_image.access_log import AccessLog, AccessRecord
from serving_image.assignment import EXPLICIT
from serving_image.feedback import Feedback
from serving_image.metrics import UNKNOWN, Metrics, outcome_class
from serving_image.segments import OTHER, Segments

_ID_CHARS = re.compile(r"[A-Za-z0-9._:-]+")


@dataclass(slots=True)
class Tracked:
    """One request being handled; transports fill in what they learn as they go."""

    protocol: str
    started: float
    request_id: str
    caller: str | None
    model: str = UNKNOWN
    version: str = ""
    assignment: str = EXPLICIT
    """How the version was chosen (serving_image/assignment.py); a request never routed keeps this."""
    # Whether the server made the id up: only such ids are remembered for feedback, so a client
    # cannot pre-register, collide with or flood the store with ids of its choosing.
    minted: bool = True
    segment: str = OTHER
    """The request's user segment (serving_image/segments.py)."""


class RequestTracker:
    """Counts requests in flight and records each one's outcome exactly once."""

    def __init__(
        self,
        metrics: Metrics,
        access_log: AccessLog,
        max_id_length: int = 128,
        segments: Segments | None = None,
    ) -> None:
        self._metrics = metrics
        self._segments = segments if segments is not None else Segments()
        self._log = access_log
        self._max_id_length = max_id_length
        self.inflight = 0
        # Request ids for callers that send none: unique per process and cheap (no uuid per request).
        self._id_prefix = os.urandom(6).hex()
        self._id_counter = itertools.count(1)
        # Label lookups cost more than the updates; the label sets are bounded, so cache them.
        self._inflight_gauges: dict[str, Any] = {}
        self._outcome_metrics: dict[tuple[str, str, str, str, str, str], tuple[Any, Any]] = {}

    def start(
        self,
        protocol: str,
        request_id: str | None,
        caller: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> Tracked:
        """A request arrived; a client's id is kept only if it is short and of safe characters; its
        segment comes from `headers` (none: `other`)."""
        tracked = self._start(protocol, request_id, caller)
        tracked.segment = self._segments.of(headers)
        return tracked

    def _start(self, protocol: str, request_id: str | None, caller: str | None) -> Tracked:
        self.inflight += 1
        gauge = self._inflight_gauges.get(protocol)
        if gauge is None:
            gauge = self._inflight_gauges[protocol] = self._metrics.inflight.labels(protocol)
        gauge.inc()
        if request_id and self.acceptable_id(request_id):
            return Tracked(protocol, time.perf_counter(), request_id, caller, minted=False)
        return Tracked(protocol, time.perf_counter(), f"{self._id_prefix}-{next(self._id_counter)}", caller)

    def acceptable_id(self, request_id: str) -> bool:
        """At most ``max_id_length`` of ``[A-Za-z0-9._:-]``: safe in a header, a log line and a label."""
        return len(request_id) <= self._max_id_length and _ID_CHARS.fullmatch(request_id) is not None

    def adopt(self, tracked: Tracked, request_id: str) -> None:
        """Use an id the client sent in the body, if acceptable; it is the client's, not minted."""
        if self.acceptable_id(request_id):
            tracked.request_id, tracked.minted = request_id, False

    def finish(self, tracked: Tracked, status: int | str, outcome: str, error: str | None = None) -> None:
        """The request is answered: metrics and one access-log line."""
        elapsed = time.perf_counter() - tracked.started
        self.inflight -= 1
        self._inflight_gauges[tracked.protocol].dec()
        key = (tracked.model, tracked.version, tracked.protocol, tracked.assignment, outcome, tracked.segment)
        pair = self._outcome_metrics.get(key)
        if pair is None:
            pair = self._outcome_metrics[key] = (
                self._metrics.requests.labels(*key),
                self._metrics.request_seconds.labels(*key[:3], outcome_class(outcome)),
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

    def log_feedback(self, feedback: Feedback, model: str, version: str, correct: int | None = None) -> None:
        """An accepted feedback, as its own access-log line: which request, whose, and what it said
        (for labels, the labels and how many rows the served prediction got right)."""
        fields: dict[str, object] = {
            "request_id": feedback.request_id,
            "model": model,
            "version": version,
            "kind": feedback.kind,
            "value": feedback.value,
            "caller": feedback.caller,
        }
        if feedback.label is not None:
            fields["label"] = list(feedback.label)
            fields["correct"] = correct
        self._log.write_event("feedback", fields)
