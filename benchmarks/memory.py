"""Resident memory of our server (one worker) when empty and with each model loaded alone."""

import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.processes import Server, running_server, tree_rss_kib

# A command line for our server given (repository, http port, grpc port).
CommandBuilder = Callable[[Path, int, int], Sequence[str]]
SETTLE_S = 0.5


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """RSS of the server's process tree for one repository."""

    label: str
    """``empty`` or the model's name."""
    ready_mib: float
    """RSS once the server reported ready."""
    after_request_mib: float | None
    """RSS after one inference request (ONNX Runtime allocates its arena on the first run)."""

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready copy."""
        return asdict(self)


def _rss_mib(server: Server) -> float:
    return tree_rss_kib(server.pid) / 1024


def _post(url: str, body: str) -> None:
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def read_memory(
    label: str,
    repository: Path,
    command: CommandBuilder,
    *,
    ports: tuple[int, int],
    log_dir: Path,
    cwd: Path,
    timeout_s: float,
    request: tuple[str, str] | None = None,
) -> MemoryReading:
    """Start the server on ``repository``, read its RSS when ready and after ``request`` (path, body)."""
    http_port, grpc_port = ports
    base = f"http://127.0.0.1:{http_port}"
    with running_server(
        f"ours-memory-{label}",
        command(repository, http_port, grpc_port),
        f"{base}/v2/health/ready",
        log_dir=log_dir,
        cwd=cwd,
        timeout_s=timeout_s,
    ) as server:
        # Let lazily started threads and the gRPC server settle before reading.
        time.sleep(SETTLE_S)
        ready = _rss_mib(server)
        after: float | None = None
        if request is not None:
            _post(base + request[0], request[1])
            time.sleep(SETTLE_S)
            after = _rss_mib(server)
    return MemoryReading(label, ready, after)


def format_memory(readings: Sequence[MemoryReading]) -> str:
    """RSS per repository and each model's difference from the empty server."""
    empty = next((r for r in readings if r.label == "empty"), None)
    lines = [
        f"{'repository':<12}{'RSS ready MiB':>15}{'+ vs empty':>12}{'after 1 req':>13}{'+ vs empty':>12}"
    ]
    for reading in readings:
        base = empty.ready_mib if empty else 0.0
        after = reading.after_request_mib
        after_text = f"{after:>13.1f}{after - base:>+12.1f}" if after is not None else f"{'-':>13}{'-':>12}"
        lines.append(
            f"{reading.label:<12}{reading.ready_mib:>15.1f}{reading.ready_mib - base:>+12.1f}{after_text}"
        )
    return "\n".join(lines)
