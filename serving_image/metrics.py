"""Prometheus metrics for the server, on an injected registry.

Labels are bounded: ``model`` and ``version`` only ever take names from the repository
(an unknown model is counted as ``_unknown``), ``protocol`` is rest or grpc, and
``outcome`` is one of the error classes' outcomes, ``assignment`` one of four (how the version was
chosen, serving_image/assignment.py), ``segment`` a configured value or ``other``
(serving_image/segments.py). The duration histogram has ``outcome_class`` (`success` or `failure`, see
`outcome_class`) rather than ``outcome``: an experiment compares the latency of successful requests only
(a fast error must not make a version look quick), and two values double its series where the seven
outcomes would multiply them by seven. With several worker processes the
values live in prometheus_client's multiprocess files and ``/metrics`` merges them.
"""

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
    multiprocess,
)

UNKNOWN = "_unknown"
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Feature lookups: a cache hit takes microseconds, the local store about 0.4 ms, the budget 50 ms.
_LOOKUP_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


SUCCESS_OUTCOMES = frozenset({"success", "accepted"})
"""Outcomes of a request answered as asked (an asynchronous job's 202 included)."""


def outcome_class(outcome: str) -> str:
    """`success` for an answered request, `failure` for any error: the duration histogram's label."""
    return "success" if outcome in SUCCESS_OUTCOMES else "failure"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when several workers serve, else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """Every metric the server exports; one instance per process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.before_collect: list[Callable[[], None]] = []
        """Called before every exposition: parts that add up counts in the process write them out."""
        r = self.registry
        self.requests = Counter(
            "serving_requests", "Inference requests by outcome.",
            ["model", "version", "protocol", "assignment", "outcome", "segment"], registry=r,
        )  # fmt: skip
        self.sticky_users = Counter(
            "serving_sticky_users", "Users assigned a version by their sticky key, counted at their first "
            "request the process has seen (serving_image/assignment.py).", ["model", "version"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "serving_request_duration_seconds", "Total time of an inference request.",
            ["model", "version", "protocol", "outcome_class"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "serving_queue_duration_seconds", "Time a request waited for its batch.",
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.compute_seconds = Histogram(
            "serving_compute_duration_seconds", "ONNX Runtime time per batch run.",
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        # Compute per request (the experiment's cost guardrail, servectl/experiments/cost.py): each request's
        # share of its batch's run by rows, with the squares for the variance; no quantiles (multiprocess).
        self.request_compute_seconds = Summary(
            "serving_request_compute_seconds", "Each request's share of ONNX Runtime time, by its rows.",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.request_compute_seconds_squares = Counter(
            "serving_request_compute_seconds_squares", "Sum of the squared per-request compute shares.",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "serving_batch_size", "Rows per ONNX Runtime run.", ["model", "version"],
            buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "serving_queue_depth", "Requests waiting for a batch.", ["model", "version"],
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        self.inflight = Gauge(
            "serving_inflight_requests", "Requests being handled.", ["protocol"],
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        self.model_ready = Gauge(
            "serving_model_ready", "1 when the model version is loaded and serving.", ["model", "version"],
            multiprocess_mode="livemin", registry=r,
        )  # fmt: skip

        self.feedback = Counter(
            "serving_feedback", "Business outcomes reported.", ["model", "version", "kind"],
            registry=r,
        )  # fmt: skip
        self.feedback_value = Counter(
            "serving_feedback_value",
            "Sum of the values reported as feedback.",
            ["model", "version"],
            registry=r,
        )
        self.feedback_value_squares = Counter(
            "serving_feedback_value_squares", "Sum of the squared feedback values, for their variance.",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.config_reloads = Counter(
            "serving_config_reloads", "Variant config reloads on SIGHUP.", ["outcome"], registry=r
        )
        # The weights this process routes by (servectl/experiments/window.py confirms a rollout step by it).
        # "liveall": one series per worker (a `pid` label), so N workers neither add up nor hide a worker
        # that has not applied the new config yet; a dead worker's series goes with its file.
        self.variant_weight = Gauge(
            "serving_variant_weight", "Percent of weighted traffic this process sends to the version.",
            ["model", "version"], multiprocess_mode="liveall", registry=r,
        )  # fmt: skip
        # The response cache (serving_image/response_cache.py): counted only for models that opted in.
        self.response_cache_hits = Counter(
            "serving_response_cache_hits", "Inference requests answered from the response cache.",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.response_cache_misses = Counter(
            "serving_response_cache_misses", "Cacheable inference requests that had to be computed.",
            ["model", "version"], registry=r,
        )  # fmt: skip

        # Input drift (serving_image/drift.py, docs/drift.md): bins come from each version's profile, so the
        # labels stay bounded (features x bins per version). The gauges are the same in every worker.
        self.drift_input = Counter(
            "serving_drift_input", "Sampled input rows counted per profile bin.",
            ["model", "version", "feature", "bin"], registry=r,
        )  # fmt: skip
        self.drift_rows = Counter(
            "serving_drift_rows", "Sampled input rows counted for drift.", ["model", "version"], registry=r
        )
        self.drift_expected_share = Gauge(
            "serving_drift_expected_share", "Share of the training rows in each profile bin.",
            ["model", "version", "feature", "bin"], multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.drift_monitored = Gauge(
            "serving_drift_monitored", "1 when the version's training profile loaded (inputs counted).",
            ["model", "version"], multiprocess_mode="livemin", registry=r,
        )  # fmt: skip

        # Model quality from labelled feedback (serving_image/quality.py, docs/drift.md): the classes come
        # from the graph (at most 32), so the confusion matrix stays bounded. The gauges are the same in
        # every worker.
        self.quality_labels = Counter(
            "serving_quality_labels", "Labelled rows compared with the prediction served, by outcome.",
            ["model", "version", "outcome"], registry=r,
        )  # fmt: skip
        self.quality_confusion = Counter(
            "serving_quality_confusion", "Labelled rows by actual and predicted class.",
            ["model", "version", "actual", "predicted"], registry=r,
        )  # fmt: skip
        self.quality_accuracy_floor = Gauge(
            "serving_quality_accuracy_floor", "Reference accuracy of the version minus the model's margin.",
            ["model", "version"], multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.quality_monitored = Gauge(
            "serving_quality_monitored", "1 when the version has a class output (label feedback counted).",
            ["model", "version"], multiprocess_mode="livemin", registry=r,
        )  # fmt: skip
        # Entity-keyed requests (serving_image/features/online.py, docs/features.md): the outcome of each
        # distinct entity of a request (6 values), the time of a request's lookup (cache and store), and
        # each feature view's latest materialization end as the registry records it.
        self.feature_lookups = Counter(
            "serving_feature_lookups", "Entities looked up for entity-keyed requests, by outcome.",
            ["model", "version", "outcome"], registry=r,
        )  # fmt: skip
        self.feature_lookup_seconds = Histogram(
            "serving_feature_lookup_seconds", "Time of an entity-keyed request's feature lookup.",
            ["model"], buckets=_LOOKUP_BUCKETS, registry=r,
        )  # fmt: skip
        self.feature_view_materialized = Gauge(
            "serving_feature_view_materialized_timestamp_seconds",
            "Unix time of the end of the feature view's latest materialization interval (0: never).",
            ["feature_view"], multiprocess_mode="livemax", registry=r,
        )  # fmt: skip

    def exposition(self) -> bytes:
        """The text exposition format, merged across workers when there are several."""
        for hook in self.before_collect:
            hook()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


EXPOSITION_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_NOT_HERE = b'{"error":"only /metrics is served on this port"}'


class MetricsEndpoint:
    """ASGI application for the separate metrics port (``metrics_port``): ``GET /metrics`` and nothing else.

    A port of its own lets the metrics stay private (bound to an internal address, left out of
    the Service, plain HTTP for the scraper) while the API ports take TLS and tokens.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            status, body, content_type = 404, _NOT_HERE, b"application/json"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, content_type = 405, b'{"error":"only GET /metrics"}', b"application/json"
        else:
            status, body, content_type = 200, self._metrics.exposition(), EXPOSITION_TYPE
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
