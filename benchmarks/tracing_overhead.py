"""Per-request cost of tracing: the REST app driven in process, tracing off, on, and on but sampled out.

Run: ``.venv/bin/python benchmarks/tracing_overhead.py`` (after ``make setup``, which builds the
OpenTelemetry Collector the spans are exported to). No network and no HTTP parser: each request is
one call of the ASGI application, so the figures are the server's own work per request, and the
difference between modes is what tracing adds. "Off" is the default: no ``Tracing`` object, and
OpenTelemetry is not imported at all (the script checks).
"""

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper, numpy_helper

from benchmarks import asgi

REPO_ROOT = Path(__file__).resolve().parents[1]
COLLECTOR = REPO_ROOT / ".tools" / "bin" / "otelcol-test"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
COLLECTOR_CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {path}
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
"""


def write_doubler(root: Path, width: int = 4) -> None:
    """A model repository with ``doubler`` (y = 2x, batchable) and its config."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "doubler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], [two],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / "doubler" / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(root / "doubler" / "1" / "model.onnx"))
    (root / "doubler" / "config.yaml").write_text("max_batch_size: 8\n", encoding="utf-8")


@contextmanager
def collector(directory: Path, port: int) -> Iterator[Path]:
    """A real OpenTelemetry Collector receiving OTLP/gRPC on ``port``; yields the file its spans go to."""
    if not COLLECTOR.is_file():
        raise SystemExit(f"{COLLECTOR} is missing: run `make setup` (mk/otelcol.mk builds it)")
    spans = directory / "spans.json"
    config = directory / "otelcol.yaml"
    config.write_text(COLLECTOR_CONFIG.format(port=port, path=spans), encoding="utf-8")
    log = (directory / "otelcol.log").open("wb")
    process = subprocess.Popen([str(COLLECTOR), "--config", f"file:{config}"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while b"Everything is ready" not in (directory / "otelcol.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"collector did not start: {(directory / 'otelcol.log').read_text()}")
            time.sleep(0.05)
        yield spans
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def exported_spans(path: Path) -> list[dict[str, Any]]:
    """Every span in the collector's file exporter output (OTLP JSON, one request per line)."""
    if not path.exists():
        return []
    spans = []
    for line in path.read_text(encoding="utf-8").splitlines():
        for resource in json.loads(line).get("resourceSpans", []):
            for scope in resource.get("scopeSpans", []):
                spans.extend(scope.get("spans", []))
    return spans


class InProcessServer:
    """The REST app on a loaded repository, called directly as ASGI; tracing as given."""

    def __init__(self, repository: Path, tracing: Any = None) -> None:
        from serving_image.access_log import AccessLog
        from serving_image.dataplane import DataPlane
        from serving_image.metrics import Metrics
        from serving_image.repository import Repository
        from serving_image.rest import RestApp
        from serving_image.settings import Settings
        from serving_image.shadow import ShadowTraffic
        from serving_image.tracking import RequestTracker

        settings = Settings(model_repository=repository, access_log=False)
        metrics = Metrics()
        loaded = Repository.load(repository, 1, settings.warm_up_every_batch_size_up_to)
        self.dataplane = DataPlane(loaded, metrics, tracing=tracing)
        tracker = RequestTracker(metrics, AccessLog(io.BytesIO(), enabled=False))
        self.app = RestApp(self.dataplane, tracker, ShadowTraffic(self.dataplane), settings)

    async def infer(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        """One POST /v2/models/doubler/infer; the status and body."""
        return await asgi.post(self.app, "/v2/models/doubler/infer", body, headers)


REQUEST = orjson.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}
)


async def _per_request_seconds(
    server: InProcessServer, headers: list[tuple[bytes, bytes]], count: int
) -> float:
    await server.dataplane.start()
    for _ in range(200):  # warm-up
        await server.infer(REQUEST, headers)
    started = time.perf_counter()
    for _ in range(count):
        status, _ = await server.infer(REQUEST, headers)
        assert status == 200, status
    elapsed = (time.perf_counter() - started) / count
    await server.dataplane.stop()
    return elapsed


def measure(repository: Path, tracing: Any, traced_request: bool, count: int) -> float:
    """Seconds per request for one mode, on a fresh server and event loop."""
    headers = [(b"content-type", b"application/json")]
    if traced_request:
        headers.append((b"traceparent", TRACEPARENT.encode()))
    return asyncio.run(_per_request_seconds(InProcessServer(repository, tracing), headers, count))


def _tracing(endpoint: str, ratio: float) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from serving_image.tracing import Tracing

    return Tracing(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)), "benchmark", ratio)


def main() -> None:
    """Print µs per request for each mode and the overhead of tracing on."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per run (default 5000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per mode; the median is kept (default 5)")
    parser.add_argument("--port", type=int, default=14317, help="the collector's OTLP/gRPC port")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_doubler(root / "models")
        off = statistics.median(measure(root / "models", None, True, args.requests) for _ in range(args.runs))
        imported = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
        with collector(root, args.port) as spans_file:
            endpoint = f"http://127.0.0.1:{args.port}"
            on = statistics.median(
                measure(root / "models", _tracing(endpoint, 1.0), True, args.requests)
                for _ in range(args.runs)
            )
            sampled_out = statistics.median(
                measure(root / "models", _tracing(endpoint, 0.0), False, args.requests)
                for _ in range(args.runs)
            )
            time.sleep(1.0)  # the file exporter flushes every 100 ms
            exported = len(exported_spans(spans_file))
    print(
        f"tracing off (default): {off * 1e6:8.1f} µs/request; OpenTelemetry modules imported: {len(imported)}"
    )
    print(
        f"tracing on, sampled:   {on * 1e6:8.1f} µs/request; +{(on - off) * 1e6:.1f} µs ({on / off - 1:+.0%})"
    )
    print(
        f"tracing on, unsampled: {sampled_out * 1e6:8.1f} µs/request; "
        f"+{(sampled_out - off) * 1e6:.1f} µs ({sampled_out / off - 1:+.0%})"
    )
    print(f"spans the collector received: {exported} (3 per sampled request: request, queue wait, batch run)")


if __name__ == "__main__":
    main()
