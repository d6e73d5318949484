"""What the figures were measured on: they mean little without the machine and the versions."""

import os
import platform
import subprocess
from pathlib import Path

import onnxruntime as ort

from benchmarks import grpc_runner, wrk_runner


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"
    )


def load_average() -> float:
    """The 1-minute load average: above ~1 other work shares the cores and the figures are noisy."""
    return os.getloadavg()[0]


def machine_info() -> dict[str, object]:
    """CPU count and model, Python, ONNX Runtime, wrk, the gRPC load generator and the load."""
    return {
        "load_average_1m": round(load_average(), 2),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "platform": platform.platform(),
        "wrk": _first_line([wrk_runner.WRK, "-v"]),
        "grpc_load": "ghz" if grpc_runner.ghz_available() else "grpc.aio fallback",
    }
