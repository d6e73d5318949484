"""Load the V2 gRPC ``ModelInfer`` call: with ghz when it is installed, else a grpc.aio client process."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from benchmarks.measures import LoadResult, percentile, pinned
from serving_image.proto import grpc_predict_v2_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
GHZ = ROOT / ".tools" / "bin" / "ghz"
PROTO = ROOT / "serving_image" / "proto" / "grpc_predict_v2.proto"
CALL = "inference.GRPCInferenceService/ModelInfer"
# Streams are spread over several connections so the kernel can hand them to every worker process.
MAX_CONNECTIONS = 8
_CLIENT_CLOSED = ("use of closed network connection", "context canceled", "transport is closing")


class GrpcLoadError(Exception):
    """The load generator failed or printed a report this module does not understand."""


def ghz_available() -> bool:
    """Whether ``make bench`` managed to install ghz."""
    return GHZ.exists()


def _cut_at_deadline(errors: dict[str, int], concurrency: int) -> int:
    # When --duration ends, ghz closes its connections under the calls still in flight and
    # records them as Unavailable; at most one per concurrent caller is that, not the server.
    closed = sum(n for message, n in errors.items() if any(mark in message for mark in _CLIENT_CLOSED))
    return min(closed, concurrency)


def _completed_latencies_ms(report: dict[str, Any]) -> tuple[float, float] | None:
    # Per-call details let the cut calls be left out of the percentiles, as wrk leaves out
    # its timeouts; the fallback generator's report has none and needs none.
    details = report.get("details")
    if not details:
        return None
    latencies = sorted(call["latency"] / 1e6 for call in details if call["status"] == "OK")
    return percentile(latencies, 0.50), percentile(latencies, 0.99)


def parse_ghz_report(report: dict[str, Any], concurrency: int) -> LoadResult:
    """Throughput, p50/p99 and server-side errors from ghz's JSON report (durations in nanoseconds)."""
    try:
        count = int(report["count"])
        seconds = float(report["total"]) / 1e9
        statuses: dict[str, int] = report.get("statusCodeDistribution") or {}
        messages: dict[str, int] = report.get("errorDistribution") or {}
        p50, p99 = _completed_latencies_ms(report) or (
            next(
                entry["latency"] / 1e6
                for entry in report["latencyDistribution"]
                if entry["percentage"] == pct
            )
            for pct in (50, 99)
        )
    except (KeyError, TypeError, StopIteration) as error:
        raise GrpcLoadError(f"unrecognised ghz report: missing {error!r}") from error
    cut = _cut_at_deadline(messages, concurrency)
    failed = {status: n for status, n in statuses.items() if status != "OK"}
    detail = ", ".join(f"{status} {n}" for status, n in failed.items())
    if cut:
        detail = f"{detail} (of which {cut} cut at the deadline, not counted)"
    return LoadResult(
        requests_per_s=(count - cut) / seconds if seconds else 0.0,
        p50_ms=p50,
        p99_ms=p99,
        requests=count - cut,
        errors=sum(failed.values()) - cut,
        detail=detail,
    )


def ghz_command(
    target: str, data_file: Path, report_file: Path, concurrency: int, duration_s: float
) -> list[str]:
    """The ghz command line for one run; the request is sent as the serialized message, untemplated,
    which keeps ghz's own CPU per call (shared with the server on a small machine) as low as it goes."""
    return [
        str(GHZ),
        "--insecure",
        "--proto",
        str(PROTO),
        "--import-paths",
        str(PROTO.parent),
        "--call",
        CALL,
        "--binary-file",
        str(data_file.with_suffix(".bin")),
        "--disable-template-data",
        "--concurrency",
        str(concurrency),
        "--connections",
        str(min(concurrency, MAX_CONNECTIONS)),
        "--duration",
        f"{max(1, round(duration_s))}s",
        "--format",
        "json",
        "--output",
        str(report_file),
        target,
    ]


def fallback_command(
    target: str, data_file: Path, report_file: Path, concurrency: int, duration_s: float
) -> list[str]:
    """The grpc.aio load generator, run in its own process so it does not share this one's GIL."""
    return [
        sys.executable,
        "-m",
        "benchmarks.grpc_aio_load",
        "--target",
        target,
        "--data-file",
        str(data_file),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration_s),
        "--output",
        str(report_file),
    ]


def run_grpc_load(
    target: str,
    request: dict[str, object],
    workdir: Path,
    concurrency: int,
    duration_s: float,
    cpus: str | None = None,
) -> LoadResult:
    """Send ``request`` (protobuf JSON) to ``target`` at ``concurrency`` for ``duration_s`` seconds;
    with ``cpus`` (a ``taskset`` list) the load generator runs only on those CPUs."""
    data_file = workdir / "grpc-request.json"
    data_file.write_text(json.dumps(request), encoding="utf-8")
    message = json_format.ParseDict(request, pb.ModelInferRequest())
    data_file.with_suffix(".bin").write_bytes(message.SerializeToString())
    report_file = workdir / "grpc-report.json"
    report_file.unlink(missing_ok=True)
    builder = ghz_command if ghz_available() else fallback_command
    command = pinned(builder(target, data_file, report_file, concurrency, duration_s), cpus)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + 60, check=False, cwd=ROOT
        )
    except subprocess.TimeoutExpired as error:
        raise GrpcLoadError(f"{Path(command[0]).name} overran {duration_s + 60:.0f} s") from error
    if done.returncode != 0 or not report_file.exists():
        raise GrpcLoadError(f"{command[0]} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return parse_ghz_report(json.loads(report_file.read_text(encoding="utf-8")), concurrency)
