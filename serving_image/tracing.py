"""OpenTelemetry tracing over OTLP, on only when ``SERVING_OTLP_ENDPOINT`` is set.

Off (the default) there is no ``Tracing`` object at all: the transports and the batcher hold
``None`` and test it once per request, and OpenTelemetry is not even imported, so the request
path makes no SDK object and calls no SDK function. On, each inference request gets:

- a SERVER span per transport (``POST /v2/models/{model}/infer``, or the gRPC method), whose
  parent is the caller's W3C trace context (``traceparent`` and ``tracestate``, from HTTP headers
  or gRPC metadata alike), sampled parent-based so a caller's decision is kept;
- a ``queue wait`` span, its child, from enqueueing to the start of the batch that took it;
- one ``batch run`` span per ONNX Runtime run, its own root, with a link to every request it
  served: a batch belongs to several traces at once, as OpenTelemetry's messaging conventions
  model batch processing.

Spans leave through the SDK's batching processor to an OTLP/gRPC endpoint (``http://`` for
plaintext, ``https://`` for TLS), on the SDK's thread, off the event loop.
"""

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from serving_image import __version__
from serving_image.settings import Settings
from serving_image.tracking import Tracked

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Span

INSTRUMENTATION = "serving_image"


class TracingUnavailable(Exception):
    """An OTLP endpoint is configured but the OpenTelemetry packages are not installed."""


class Tracing:
    """Creates the server's spans; one per process, built only when tracing is on."""

    def __init__(self, processor: "SpanProcessor", service_name: str, sample_ratio: float = 1.0) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create({"service.name": service_name, "service.version": __version__})
        sampler = ParentBased(TraceIdRatioBased(sample_ratio))
        self._provider = TracerProvider(resource=resource, sampler=sampler)
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer(INSTRUMENTATION, __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._trace = trace

    @classmethod
    def for_settings(cls, settings: Settings) -> "Tracing | None":
        """An exporting ``Tracing`` when ``otlp_endpoint`` is set, else None (and nothing imported)."""
        if not settings.otlp_endpoint:
            return None
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as error:
            raise TracingUnavailable(
                "SERVING_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
                "pip install 'model-serving[tracing]'"
            ) from error
        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=settings.otlp_timeout_seconds)
        return cls(BatchSpanProcessor(exporter), settings.otlp_service_name, settings.otlp_sample_ratio)

    def start_request(self, name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]) -> "Span":
        """A SERVER span for one request, continuing the caller's trace if its headers carry one."""
        parent = self._propagator.extract(headers)
        return self._tracer.start_span(
            name, context=parent, kind=self._trace.SpanKind.SERVER, attributes=dict(attributes)
        )

    def end_request(
        self, span: "Span", tracked: Tracked, outcome: str, status: Mapping[str, Any], failed: bool
    ) -> None:
        """Close a request span with what the transport learnt: model, version, id, outcome, status."""
        span.set_attributes(
            {
                "serving.model": tracked.model, "serving.model_version": tracked.version,
                "serving.request_id": tracked.request_id, "serving.outcome": outcome, **status,
            }
        )  # fmt: skip
        if failed:
            span.set_status(self._trace.StatusCode.ERROR)
        span.end()

    def mark_cache(self, span: object, hit: bool) -> None:
        """Note on a request span whether the response cache answered it."""
        span.set_attribute("serving.response_cache", "hit" if hit else "miss")  # type: ignore[attr-defined]

    def on_batch(
        self, label: str, requests: Sequence[tuple[object, float]], started: float, compute_seconds: float,
        rows: int,
    ) -> None:  # fmt: skip
        """A batch ran: a ``queue wait`` span per traced request and one ``batch run`` span linked to each.

        ``requests`` holds each request's span and its enqueue time, and ``started`` the batch's
        start, on ``time.perf_counter``'s clock; spans need wall-clock nanoseconds.
        """
        offset = time.time_ns() - time.perf_counter_ns()
        started_ns = offset + int(started * 1e9)
        links = []
        for span, enqueued in requests:
            if span is None:
                continue
            context = self._trace.set_span_in_context(span)  # type: ignore[arg-type]
            queued = self._tracer.start_span(
                "queue wait", context=context, start_time=offset + int(enqueued * 1e9),
                attributes={"serving.batch": label},
            )  # fmt: skip
            queued.end(end_time=started_ns)
            links.append(self._trace.Link(span.get_span_context()))  # type: ignore[attr-defined]
        if not links:
            return
        attributes: dict[str, str | int] = {
            "serving.batch": label, "serving.batch_rows": rows, "serving.batch_requests": len(links),
        }  # fmt: skip
        batch = self._tracer.start_span(
            "batch run", context=self._trace.set_span_in_context(self._trace.INVALID_SPAN),
            links=links, start_time=started_ns, attributes=attributes,
        )  # fmt: skip
        batch.end(end_time=started_ns + int(compute_seconds * 1e9))

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporter's thread."""
        self._provider.shutdown()
