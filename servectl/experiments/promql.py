"""Reading an experiment's counts from Prometheus with PromQL.

Counters are read as they stand at the end of the window and at its start, and subtracted: exact counts
(no extrapolation, unlike `increase()`), which is what a test on counts needs. A series absent at the start
counts from zero; a counter that went down (a restarted server) is clamped at zero and reported.
"""

import json
import math
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

ERROR_OUTCOMES = frozenset({"server_error", "unavailable", "overloaded"})
"""Outcomes a version is answerable for; client errors and unknown models are the caller's."""
LIVE_PROTOCOLS = '"rest|grpc"'
"""Shadow requests answer nobody, so they never count towards the split or the tests."""


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused a query."""


@dataclass
class VersionCounts:
    """What one version did in a window."""

    requests: float = 0.0
    """Live requests answered (any outcome but client errors)."""
    errors: float = 0.0
    """Of those, server errors, overloads and unavailability."""
    converted: float = 0.0
    """Feedback: converted."""
    not_converted: float = 0.0
    """Feedback: not converted."""
    values: float = 0.0
    """Feedback: how many values were reported."""
    value_sum: float = 0.0
    """Feedback: their sum."""
    value_squares: float = 0.0
    """Feedback: the sum of their squares (for the variance)."""
    correct: float = 0.0
    """Labelled feedback: rows whose prediction matched the label."""
    incorrect: float = 0.0
    """Labelled feedback: rows whose prediction did not."""
    latency_buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative request-duration histogram: upper bound (seconds, inf last) to count."""

    def to_json(self) -> dict[str, object]:
        """The counts as the experiment log keeps them."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "converted": self.converted,
            "not_converted": self.not_converted,
            "values": self.values,
            "value_sum": self.value_sum,
            "value_squares": self.value_squares,
            "correct": self.correct,
            "incorrect": self.incorrect,
            "latency_buckets": {str(k): v for k, v in sorted(self.latency_buckets.items())},
        }


@dataclass
class Window:
    """Per-version counts over a window, and what went wrong reading them."""

    versions: dict[str, VersionCounts]
    """Version to counts."""
    resets: list[str] = field(default_factory=list)
    """Series whose counter went down in the window (clamped at zero)."""

    def get(self, version: str) -> VersionCounts:
        """A version's counts (zero when it had no traffic)."""
        return self.versions.get(version, VersionCounts())


class Prometheus:
    """A minimal client of the HTTP API's instant queries."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant vector as (labels, value) pairs."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        request = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        if not request.startswith(("http://", "https://")):
            raise PrometheusError(f"{self.url} is not an http(s) URL")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - checked
                body = json.loads(response.read())
        except (OSError, ValueError) as error:
            raise PrometheusError(f"query failed at {self.url}: {error}; is Prometheus running?") from error
        if body.get("status") != "success" or body["data"]["resultType"] != "vector":
            raise PrometheusError(f"query {expr!r} failed: {body.get('error', body)}")
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]


def queries(model: str) -> dict[str, str]:
    """The PromQL expressions an analysis reads, by name."""
    sel = f'model="{model}"'
    return {
        "requests": f"sum by (version, outcome) (serving_requests_total{{{sel},protocol=~{LIVE_PROTOCOLS}}})",
        "latency": (
            "sum by (version, le) "
            f"(serving_request_duration_seconds_bucket{{{sel},protocol=~{LIVE_PROTOCOLS}}})"
        ),
        "feedback": f"sum by (version, kind) (serving_feedback_total{{{sel}}})",
        "value_sum": f"sum by (version) (serving_feedback_value_total{{{sel}}})",
        "value_squares": f"sum by (version) (serving_feedback_value_squares_total{{{sel}}})",
        "labels": f"sum by (version, outcome) (serving_quality_labels_total{{{sel}}})",
    }


def _key(name: str, labels: dict[str, str]) -> tuple[str, str, str]:
    extra = {"requests": "outcome", "latency": "le", "feedback": "kind", "labels": "outcome"}.get(name)
    return name, labels.get("version", ""), labels.get(extra, "") if extra else ""


def _snapshot(prom: Prometheus, model: str, at: float | None) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for name, expr in queries(model).items():
        for labels, value in prom.query(expr, at):
            out[_key(name, labels)] = value
    return out


def read_window(prom: Prometheus, model: str, start: float | None, end: float | None) -> Window:
    """Per-version counts between `start` (None: since the counters began) and `end` (None: now)."""
    last = _snapshot(prom, model, end)
    first = _snapshot(prom, model, start) if start is not None else {}
    window = Window(versions=defaultdict(VersionCounts))
    for key, value in last.items():
        delta = value - first.get(key, 0.0)
        if delta < 0:
            window.resets.append("/".join(key))
            delta = value
        _add(window.versions[key[1]], key, delta)
    window.versions = dict(window.versions)
    return window


def _add(counts: VersionCounts, key: tuple[str, str, str], value: float) -> None:
    name, _, label = key
    if name == "requests" and label not in {"client_error", "not_found"}:
        counts.requests += value
        counts.errors += value if label in ERROR_OUTCOMES else 0.0
    elif name == "latency":
        bound = math.inf if label == "+Inf" else float(label)
        counts.latency_buckets[bound] = counts.latency_buckets.get(bound, 0.0) + value
    elif name == "feedback" and label == "converted":
        counts.converted += value
    elif name == "feedback" and label == "not_converted":
        counts.not_converted += value
    elif name == "feedback" and label == "value":
        counts.values += value
    elif name == "value_sum":
        counts.value_sum += value
    elif name == "value_squares":
        counts.value_squares += value
    elif name == "labels" and label == "correct":
        counts.correct += value
    elif name == "labels" and label == "incorrect":
        counts.incorrect += value
