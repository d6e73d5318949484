"""Fallback gRPC load generator for when ghz is not installed: grpc.aio tasks in one process.

It writes the part of ghz's JSON report that ``grpc_runner.parse_ghz_report`` reads, so both
generators are read the same way. A Python client saturates a core sooner than ghz, so its
figures are a floor of what the server can do; the report says which generator ran.
"""

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

# tritonclient ships its own stubs of the same KServe V2 proto (package `inference`), so the
# benchmark reaches the server through the protocol rather than the server's code.
from tritonclient.grpc import service_pb2, service_pb2_grpc

from benchmarks.measures import percentile

MAX_REQUESTS = 2_000_000
PERCENTAGES = (10, 25, 50, 75, 90, 95, 99)


async def _worker(
    stub: Any, request: Any, deadline: float, latencies_ns: list[int], statuses: Counter[str]
) -> None:
    while time.monotonic() < deadline and len(latencies_ns) < MAX_REQUESTS:
        start = time.perf_counter_ns()
        try:
            await stub.ModelInfer(request)
            statuses["OK"] += 1
        except grpc.aio.AioRpcError as error:
            statuses[error.code().name] += 1
        latencies_ns.append(time.perf_counter_ns() - start)


async def run_load(
    target: str, request_json: dict[str, Any], concurrency: int, duration_s: float
) -> dict[str, Any]:
    """Drive ``concurrency`` concurrent calls for ``duration_s`` seconds; a ghz-shaped report."""
    request = json_format.ParseDict(request_json, service_pb2.ModelInferRequest())
    latencies_ns: list[int] = []
    statuses: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        started = time.perf_counter()
        deadline = time.monotonic() + duration_s
        await asyncio.gather(
            *(_worker(stub, request, deadline, latencies_ns, statuses) for _ in range(concurrency))
        )
        elapsed = time.perf_counter() - started
    ordered = sorted(float(value) for value in latencies_ns)
    distribution = [{"percentage": pct, "latency": percentile(ordered, pct / 100)} for pct in PERCENTAGES]
    return {
        "count": len(ordered),
        "total": elapsed * 1e9,
        "rps": len(ordered) / elapsed,
        "statusCodeDistribution": dict(statuses),
        "latencyDistribution": distribution,
        "generator": "grpc.aio",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: the same meaning as the ghz flags of the same names."""
    parser = argparse.ArgumentParser(description="bounded grpc.aio load on V2 ModelInfer (ghz fallback)")
    parser.add_argument("--target", required=True, help="host:port of the gRPC server")
    parser.add_argument("--data-file", type=Path, required=True, help="ModelInferRequest as protobuf JSON")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    parser.add_argument("--output", type=Path, required=True, help="where to write the JSON report")
    args = parser.parse_args(argv)
    request_json = json.loads(args.data_file.read_text(encoding="utf-8"))
    report = asyncio.run(run_load(args.target, request_json, args.concurrency, args.duration))
    args.output.write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
