"""Tracing: span shapes with the SDK's in-memory exporter, then a real server exporting to a real collector.

The collector test proves what the in-memory one cannot: that the spans survive the OTLP/gRPC
exporter and are accepted and decoded by the OpenTelemetry Collector itself, with the caller's
trace context from REST headers and gRPC metadata intact.
"""

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from benchmarks.tracing_overhead import COLLECTOR, collector, exported_spans
from serving_image.batching import DynamicBatcher
from serving_image.proto import grpc_predict_v2_pb2 as pb
from serving_image.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from serving_image.settings import Settings
from serving_image.tracing import Tracing
from serving_image.tracking import Tracked
from tests.serving_image.conftest import REPO_ROOT, ServerProcess, free_port, start_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACESTATE = "vendor=opaque,other=1"


def _traceparent(trace_id: str = TRACE_ID, parent: str = PARENT_ID, flags: str = "01") -> str:
    return f"00-{trace_id}-{parent}-{flags}"


@pytest.fixture
def memory() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing(SimpleSpanProcessor(exporter), "test"), exporter


class _NoMetrics:
    def on_batch(self, rows: int, compute_seconds: float) -> None:
        pass

    def on_queue_depth(self, depth: int) -> None:
        pass


def test_tracing_is_off_by_default() -> None:
    assert Tracing.for_settings(Settings()) is None


def test_off_path_imports_no_opentelemetry(tmp_path: Path) -> None:
    """Requests served with tracing off (the default) never import, let alone call, the SDK."""
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from benchmarks.tracing_overhead import InProcessServer, REQUEST, write_doubler\n"
        f"root = Path({str(tmp_path)!r})\n"
        "write_doubler(root)\n"
        "server = InProcessServer(root)\n"
        "async def main():\n"
        "    await server.dataplane.start()\n"
        "    headers = [(b'traceparent', b'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')]\n"
        "    for _ in range(10):\n"
        "        assert (await server.infer(REQUEST, headers))[0] == 200\n"
        "    await server.dataplane.stop()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"tracing off imported {result.stdout}"


def test_request_span_continues_the_callers_trace(memory: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = memory
    headers = {"traceparent": _traceparent(), "tracestate": TRACESTATE}
    span = tracing.start_request("POST /v2/models/{model}/infer", headers, {"http.request.method": "POST"})
    tracked = Tracked("rest", 0.0, "req-1", None, model="doubler", version="1")
    tracing.end_request(span, tracked, "success", {"http.response.status_code": 200}, failed=False)
    (finished,) = exporter.get_finished_spans()
    assert finished.kind is SpanKind.SERVER
    assert format(finished.context.trace_id, "032x") == TRACE_ID, "must join the caller's trace"
    assert finished.parent is not None and format(finished.parent.span_id, "016x") == PARENT_ID
    assert finished.context.trace_state.to_header() == TRACESTATE, "tracestate must be carried on"
    assert finished.attributes is not None
    assert dict(finished.attributes) == {
        "http.request.method": "POST", "http.response.status_code": 200, "serving.model": "doubler",
        "serving.model_version": "1", "serving.request_id": "req-1", "serving.outcome": "success",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "recorded", "parented"),
    [
        ({}, True, False),
        ({"traceparent": _traceparent(flags="00")}, False, True),
        ({"traceparent": "00-zz-not-valid-01"}, True, False),
        ({"traceparent": _traceparent(trace_id="0" * 32)}, True, False),
    ],
    ids=["no-context-new-root", "caller-sampled-out", "malformed-ignored", "all-zero-trace-id-ignored"],
)
def test_sampling_follows_the_caller(
    memory: tuple[Tracing, InMemorySpanExporter], headers: dict[str, str], recorded: bool, parented: bool
) -> None:
    tracing, exporter = memory
    span = tracing.start_request("request", headers, {})
    assert span.is_recording() is recorded
    span.end()
    if recorded:
        (finished,) = exporter.get_finished_spans()
        assert (finished.parent is not None) is parented


def test_failed_request_span_has_error_status(memory: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = memory
    span = tracing.start_request("request", {}, {})
    tracing.end_request(span, Tracked("rest", 0.0, "r", None), "server_error", {}, failed=True)
    (finished,) = exporter.get_finished_spans()
    assert finished.status.status_code.name == "ERROR"


def test_batch_span_links_every_request_and_queue_spans_are_children(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = DynamicBatcher(
                lambda feeds: [feeds["x"] * 2], max_batch_size=8, max_queue_delay=0.02, max_queue_size=16,
                executor=executor, observer=_NoMetrics(), label="doubler/1", tracer=tracing,
            )  # fmt: skip
            spans = [tracing.start_request(f"request {n}", {}, {}) for n in range(3)]
            futures = [batcher.submit({"x": np.ones((1, 4), np.float32)}, 1, span) for span in spans]
            await asyncio.gather(*futures)
            for span in spans:
                span.end()

    asyncio.run(scenario())
    finished = exporter.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        by_name.setdefault(span.name.split(" ")[0], []).append(span)
    requests_ = by_name["request"]
    (batch,) = by_name["batch"]
    assert batch.parent is None, "a batch serves several traces: its own root"
    linked = {link.context.span_id for link in batch.links}
    assert linked == {span.context.span_id for span in requests_}, "one link per request in the batch"
    assert batch.attributes is not None and batch.attributes["serving.batch_rows"] == 3
    queue = by_name["queue"]
    assert sorted(span.parent.span_id for span in queue if span.parent) == sorted(
        span.context.span_id for span in requests_
    ), "each request gets its own queue-wait span, as its child"
    for span in queue:
        assert span.end_time is not None and span.start_time is not None and batch.start_time is not None
        assert span.start_time <= span.end_time == batch.start_time, "queue wait ends when the batch starts"


# A real server exporting to a real OpenTelemetry Collector.


@pytest.fixture(scope="module")
def traced_server(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path
) -> Iterator[tuple[ServerProcess, Path]]:
    if not COLLECTOR.is_file():
        pytest.fail(f"{COLLECTOR} is missing: run `make setup` (mk/otelcol.mk builds the collector)")
    directory = tmp_path_factory.mktemp("otelcol")
    port = free_port()
    with collector(directory, port) as spans_file:
        server = start_server(
            test_repository, tmp_path_factory.mktemp("traced-logs"),
            env={"SERVING_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "100"},
        )  # fmt: skip
        try:
            yield server, spans_file
        finally:
            server.stop()


def _wait_for_spans(path: Path, trace_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        spans = [span for span in exported_spans(path) if span["traceId"] == trace_id]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


def _check_trace(
    spans: list[dict[str, Any]], trace_id: str, parent: str, every: list[dict[str, Any]]
) -> None:
    names = sorted(span["name"] for span in spans)
    assert len(spans) == 2, f"expected the request and its queue wait in trace {trace_id}, got {names}"
    (request,) = [span for span in spans if span["kind"] == 2]  # SPAN_KIND_SERVER
    (queue,) = [span for span in spans if span["name"] == "queue wait"]
    assert request["parentSpanId"] == parent, "the request span's parent is the caller's span"
    assert queue["parentSpanId"] == request["spanId"]
    batches = [
        span for span in every
        if span["name"] == "batch run"
        and any(link["spanId"] == request["spanId"] for link in span.get("links", []))
    ]  # fmt: skip
    assert len(batches) == 1, "exactly one batch run links to the request"
    assert batches[0]["traceId"] != trace_id, "the batch run is its own root"


def test_rest_headers_carry_the_trace_to_the_collector(traced_server: tuple[ServerProcess, Path]) -> None:
    server, spans_file = traced_server
    trace_id, parent = "11111111111111111111111111111111", "2222222222222222"
    response = requests.post(
        server.base + "/v2/models/doubler/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
        headers={"traceparent": _traceparent(trace_id, parent), "tracestate": TRACESTATE},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    spans = _wait_for_spans(spans_file, trace_id, 2)
    _check_trace(spans, trace_id, parent, exported_spans(spans_file))
    (request,) = [span for span in spans if span["kind"] == 2]
    assert request["name"] == "POST /v2/models/{model}/infer"
    assert request.get("traceState") == TRACESTATE
    attributes = {item["key"]: item["value"] for item in request["attributes"]}
    assert attributes["serving.model"] == {"stringValue": "doubler"}
    assert attributes["http.response.status_code"] == {"intValue": "200"}


def test_grpc_metadata_carries_the_trace_to_the_collector(traced_server: tuple[ServerProcess, Path]) -> None:
    server, spans_file = traced_server
    trace_id, parent = "33333333333333333333333333333333", "4444444444444444"
    request = pb.ModelInferRequest(model_name="doubler")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), dtype=np.float32).tobytes())
    with grpc.insecure_channel(server.grpc_url) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=(("traceparent", _traceparent(trace_id, parent)),), timeout=10
        )
    spans = _wait_for_spans(spans_file, trace_id, 2)
    _check_trace(spans, trace_id, parent, exported_spans(spans_file))
    (server_span,) = [span for span in spans if span["kind"] == 2]
    assert server_span["name"] == "inference.GRPCInferenceService/ModelInfer"
    attributes = {item["key"]: item["value"] for item in server_span["attributes"]}
    assert attributes["rpc.grpc.status_code"] == {"intValue": "0"}


def test_client_error_is_traced_without_error_status(traced_server: tuple[ServerProcess, Path]) -> None:
    server, spans_file = traced_server
    trace_id = "55555555555555555555555555555555"
    response = requests.post(
        server.base + "/v2/models/doubler/infer", data=b"{not json",
        headers={"traceparent": _traceparent(trace_id)}, timeout=10,
    )  # fmt: skip
    assert response.status_code == 400
    (span,) = _wait_for_spans(spans_file, trace_id, 1)
    assert span.get("status", {}).get("code") != 2, "a client's 4xx is not the server's error"
    attributes = {item["key"]: item["value"] for item in span["attributes"]}
    assert attributes["serving.outcome"] == {"stringValue": "client_error"}
