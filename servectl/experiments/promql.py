"""Reading an experiment's counts from Prometheus with PromQL: exact, per series, reset-aware.

Each counter series (one per pod and label set) is read on its own: its last sample at or before the start
of the window (from the raw samples of the staleness period before it, else `last_over_time(...[1d])` at the
start; 0 for a series born inside the window) and every raw sample inside the window (a range selector,
never `increase()`, whose extrapolation is not a count). Its count is the sum of the steps between
consecutive samples, where a step down is a restart and adds the value after it (the counter began again
at 0). Then series are summed by version. So a restarted pod counts what it served before and after, and a
pod scaled away in the window counts what it served until its last scrape. Summing first and subtracting
after, as an earlier version did, let a vanished pod drop out of the end's sum, and replaced a sum that
went down by its end value.

What cannot be reconciled is reported, not guessed (`series_count`): a step down across a gap in a series'
samples longer than the staleness period, or a change across such a gap at the window's start. The
decision holds on it.
"""

import json
import math
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

ERROR_OUTCOMES = frozenset({"server_error", "unavailable", "overloaded"})
"""Outcomes a version is answerable for; client errors and unknown models are the caller's."""
LIVE_PROTOCOLS = '"rest|grpc"'
"""Shadow requests answer nobody, so they never count towards the split or the tests."""
BASE_LOOKBACK = "1d"
"""How far before a window's start a series' last sample is looked for (its base)."""
STALE_SECONDS = 300.0
"""Prometheus' staleness period: a longer gap between two samples of a series is a gap in what it saw."""


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
    weighted: float = 0.0
    """Live requests the weights assigned at random (`assignment="weighted"`, every outcome)."""
    sticky_users: float = 0.0
    """Users assigned by their sticky key, at their first request a server process saw."""
    segment_requests: dict[str, float] = field(default_factory=dict)
    """Live requests (as `requests`) per user segment (the counter's `segment` label)."""
    segment_errors: dict[str, float] = field(default_factory=dict)
    """Their errors (as `errors`) per segment."""
    computed: float = 0.0
    """Requests whose compute share was recorded (every answered request, response-cache hits at 0)."""
    compute_sum: float = 0.0
    """Their compute shares' sum, seconds."""
    compute_squares: float = 0.0
    """The sum of their squares."""

    @property
    def randomised(self) -> float:
        """The units the sample-ratio test compares: weighted requests and sticky users (each drawn
        independently with the configured shares); header routes and named versions are left out."""
        return self.weighted + self.sticky_users

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
            "weighted": self.weighted,
            "sticky_users": self.sticky_users,
            "segments": {
                s: {"requests": n, "errors": self.segment_errors.get(s, 0.0)}
                for s, n in sorted(self.segment_requests.items())
            },
            "compute": {"requests": self.computed, "sum": self.compute_sum, "squares": self.compute_squares},
        }


@dataclass
class Window:
    """Per-version counts over a window, and what went wrong reading them."""

    versions: dict[str, VersionCounts]
    """Version to counts."""
    resets: list[str] = field(default_factory=list)
    """Series whose counter went down in the window (a restart, counted from zero after it)."""
    unreconciled: list[str] = field(default_factory=list)
    """Series that went down across a gap longer than the staleness period: counts may be missing."""
    aligned: tuple[float, float] | None = None
    """The span actually counted when the source counts whole periods (CloudWatch's minutes), which may
    be narrower than the window asked for; None: exactly the window asked for (Prometheus)."""
    missing: list[str] = field(default_factory=list)
    """Periods the source has not published for a version that takes traffic: the counts are incomplete,
    and the analysis holds naming them (never read as zero traffic)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What the source read for the reader only, not judged (CloudWatch's ModelLatency means)."""

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
        return [(r["metric"], float(r["value"][1])) for r in self._result(expr, at, "vector")]

    def samples(self, expr: str, at: float) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """A range selector's raw samples per series, as (labels, [(time, value), ...]) in time order."""
        return [
            (r["metric"], [(float(t), float(v)) for t, v in r["values"]])
            for r in self._result(expr, at, "matrix")
        ]

    def _result(self, expr: str, at: float | None, kind: str) -> list[dict[str, Any]]:
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        request = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        if not request.startswith(("http://", "https://")):
            raise PrometheusError(f"{self.url} is not an http(s) URL")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - checked
                body = json.loads(response.read())
        except (OSError, ValueError) as error:
            raise PrometheusError(f"query failed at {self.url}: {error}; is Prometheus running?") from error
        if body.get("status") != "success" or body["data"]["resultType"] != kind:
            raise PrometheusError(f"query {expr!r} failed: {body.get('error', body)}")
        return list(body["data"]["result"])


def selectors(model: str) -> dict[str, str]:
    """The counter series an analysis reads, by name."""
    sel = f'model="{model}"'
    return {
        "requests": f"serving_requests_total{{{sel},protocol=~{LIVE_PROTOCOLS}}}",
        # Successful requests only: a fast error must not make a version look quick, nor a slow timeout
        # count twice (as an error and as latency).
        "latency": (
            f'serving_request_duration_seconds_bucket{{{sel},protocol=~{LIVE_PROTOCOLS},outcome_class="success"}}'
        ),
        "feedback": f"serving_feedback_total{{{sel}}}",
        "value_sum": f"serving_feedback_value_total{{{sel}}}",
        "value_squares": f"serving_feedback_value_squares_total{{{sel}}}",
        "labels": f"serving_quality_labels_total{{{sel}}}",
        # The units of the sample-ratio test (servectl/experiments/srm.py): only what was randomised.
        "weighted": f'serving_requests_total{{{sel},protocol=~{LIVE_PROTOCOLS},assignment="weighted"}}',
        "sticky_users": f"serving_sticky_users_total{{{sel}}}",
        # The cost guardrail (servectl/experiments/cost.py): each request's share of compute.
        "computed": f"serving_request_compute_seconds_count{{{sel}}}",
        "compute_sum": f"serving_request_compute_seconds_sum{{{sel}}}",
        "compute_squares": f"serving_request_compute_seconds_squares_total{{{sel}}}",
    }


def _key(name: str, labels: dict[str, str]) -> tuple[str, str, str]:
    extra = {"requests": "outcome", "latency": "le", "feedback": "kind", "labels": "outcome"}.get(name)
    return name, labels.get("version", ""), labels.get(extra, "") if extra else ""


def _add_segment(counts: VersionCounts, name: str, labels: dict[str, str], value: float) -> None:
    """A request series' count into its segment's (a server without segments counts as `other`)."""
    outcome = labels.get("outcome", "")
    if name != "requests" or outcome in {"client_error", "not_found"}:
        return
    segment = labels.get("segment", "other")
    counts.segment_requests[segment] = counts.segment_requests.get(segment, 0.0) + value
    if outcome in ERROR_OUTCOMES:
        counts.segment_errors[segment] = counts.segment_errors.get(segment, 0.0) + value


def _series_id(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__") + "}"


@dataclass(frozen=True)
class SeriesCount:
    """What one series counted in a window, and whether it restarted or cannot be trusted."""

    count: float
    resets: int
    unreconciled: bool


def series_count(base: float, samples: list[tuple[float, float]], base_time: float | None) -> SeriesCount:
    """The increments of a counter from `base` (sampled at `base_time`; None: born in the window) through
    `samples`, a step down counting as a restart from zero.

    Unreconciled: a step down across a gap longer than the staleness period (what the series counted
    between its last sample and the restart was never scraped), or a change across a gap that spans
    the window's start (how much of it happened before the start is unknown)."""
    count, resets, unreconciled = 0.0, 0, False
    previous, previous_time = base, base_time
    for index, (at, value) in enumerate(samples):
        gap = previous_time is not None and at - previous_time > STALE_SECONDS
        if value >= previous:
            count += value - previous
            unreconciled |= gap and index == 0 and value != previous
        else:
            count += value
            resets += 1
            unreconciled |= gap
        previous, previous_time = value, at
    return SeriesCount(count, resets, unreconciled)


def read_window(prom: Prometheus, model: str, start: float | None, end: float | None) -> Window:
    """Per-version counts between `start` and `end` (None: now), summed over series after counting each.

    Without a start, each series alive at the end counts its value there (its lifetime, restarts
    included only since the last one): the experiment's analyses always pass a start."""
    end = time.time() if end is None else end
    window = Window(versions=defaultdict(VersionCounts))
    for name, selector in selectors(model).items():
        if start is None:
            for labels, value in prom.query(selector, end):
                _add(window.versions[labels.get("version", "")], _key(name, labels), value)
                _add_segment(window.versions[labels.get("version", "")], name, labels, value)
            continue
        bases = {
            _series_id(name, labels): (value, stamp) for labels, value, stamp in _bases(prom, selector, start)
        }
        span = max(1, math.ceil(end - start))
        for labels, samples in prom.samples(f"{selector}[{span}s]", end):
            series = _series_id(name, labels)
            base, stamp = bases.get(series, (0.0, None))
            # The range is (end - span, end]: drop what a rounded-up span reaches before the start.
            counted = series_count(base, [(t, v) for t, v in samples if t > start], stamp)
            if counted.resets:
                window.resets.append(series)
            if counted.unreconciled:
                window.unreconciled.append(series)
            _add(window.versions[labels.get("version", "")], _key(name, labels), counted.count)
            _add_segment(window.versions[labels.get("version", "")], name, labels, counted.count)
    window.versions = dict(window.versions)
    return window


def _bases(prom: Prometheus, selector: str, start: float) -> list[tuple[dict[str, str], float, float]]:
    """Each series' last value at or before `start`, and when it was sampled.

    The raw samples of the staleness period before the start give both; a series silent for longer has
    only its value (`last_over_time` over a day), and its time is taken as a day before the start."""
    recent = {
        _series_id("", labels): (labels, points[-1][1], points[-1][0])
        for labels, points in prom.samples(f"{selector}[{STALE_SECONDS:.0f}s]", start)
        if points
    }
    older = [
        (labels, value, start - 86400.0)
        for labels, value in prom.query(f"last_over_time({selector}[{BASE_LOOKBACK}])", start)
        if _series_id("", labels) not in recent
    ]
    return [*recent.values(), *older]


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
    elif name == "weighted":
        counts.weighted += value
    elif name == "sticky_users":
        counts.sticky_users += value
    elif name in {"computed", "compute_sum", "compute_squares"}:
        setattr(counts, name, getattr(counts, name) + value)
