"""Fixtures for the serving image: small ONNX models made here, and real server processes."""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from tests.serving_image.redis_fixture import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_MODELS = REPO_ROOT / "serving_image" / "models"


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def save_model(graph: onnx.GraphProto, path: Path) -> None:
    """Write a graph as ``path`` with an opset ONNX Runtime supports."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def doubler_graph(width: int = 4) -> onnx.GraphProto:
    """y = 2x for x of shape [batch, width]: batchable, and its answer is easy to check."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    return helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "doubler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [two],
    )


def capped_doubler_graph(limit: int, width: int = 4) -> onnx.GraphProto:
    """y = 2x for fewer than ``limit`` rows; ONNX Runtime itself fails the run at ``limit`` rows or more.

    The factor 2 is read from a table of ``limit`` entries at the index "number of rows", so
    larger batches make the Gather node fail with INVALID_ARGUMENT: a real runtime failure.
    """
    table = numpy_helper.from_array(np.full(limit, 2.0, dtype=np.float32), "table")
    first = numpy_helper.from_array(np.array(0, dtype=np.int64), "first")
    return helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Gather", ["shape", "first"], ["rows"]),
            helper.make_node("Gather", ["table", "rows"], ["factor"]),
            helper.make_node("Mul", ["x", "factor"], ["y"]),
        ],
        "capped_doubler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [table, first],
    )


def slow_graph(width: int = 1024, layers: int = 24) -> onnx.GraphProto:
    """A chain of large MatMuls whose run time grows with the rows sent: for queue and drain tests."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((width, width)) / width).astype(np.float32), "w")
    nodes, previous = [], "x"
    for layer in range(layers):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"h{layer}"]))
        previous = f"h{layer}"
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes.append(helper.make_node("ReduceSum", [previous, "axes"], ["y"], keepdims=1))
    return helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [weight, axes],
    )


def wait_until(condition: Callable[[], object], timeout: float, message: str | Callable[[], str]) -> None:
    """Poll ``condition`` until it is true; fail with ``message`` (or what it returns) after ``timeout`` s.

    The explicit wait that replaces a sleep: it returns as soon as what the test waits for has
    happened, and a condition that never holds fails the test instead of letting it go on.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(0.02)


async def wait_until_async(
    condition: Callable[[], object], timeout: float, message: str | Callable[[], str]
) -> None:
    """``wait_until`` for a test inside an event loop: the loop runs between the checks."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        await asyncio.sleep(0.001)


def logged_events(stderr: str, event: str) -> list[dict[str, Any]]:
    """The JSON lines of one event among what was written to stderr (a line still being written is not)."""
    complete = stderr.split("\n")[:-1]
    lines = [json.loads(line) for line in complete if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


# A frame of a formatted traceback: `File ".../serving_image/runtime.py", line 67, in run`.
FRAME = 'File "[^"]*serving_image/{module}", line [0-9]+, in {function}\\n'


def assert_frames(traceback: str, *frames: tuple[str, str]) -> None:
    """The traceback names each (module, function) that was on the stack when the error was raised."""
    for module, function in frames:
        pattern = FRAME.format(module=re.escape(module), function=re.escape(function))
        assert re.search(pattern, traceback), f"no frame of {function} in {module}:\n{traceback}"


def write_config(model_dir: Path, text: str) -> None:
    """A model's config.yaml."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(text, encoding="utf-8")


@dataclass
class ServerProcess:
    """A serving_image process started for a test, with its ports and captured output."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_dir: Path
    stopped: bool = field(default=False)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stdout(self) -> str:
        return (self.log_dir / "stdout.log").read_text(encoding="utf-8")

    def stderr(self) -> str:
        return (self.log_dir / "stderr.log").read_text(encoding="utf-8")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code."""
        if not self.stopped:
            self.process.send_signal(signal.SIGTERM)
            self.stopped = True
        return self.process.wait(timeout=timeout)


def start_server(
    repository: Path,
    log_dir: Path,
    *extra: str,
    wait_ready: bool = True,
    env: dict[str, str] | None = None,
    probe: Callable[[ServerProcess, str], requests.Response] | None = None,
) -> ServerProcess:
    """Start ``python -m serving_image`` on free loopback ports and wait until it answers.

    ``probe`` sends the readiness request (a path) its own way: over TLS, with a client certificate.
    """
    http_port, grpc_port = free_port(), free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "serving_image", "--model-repository", str(repository),
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port), *extra,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=(log_dir / "stdout.log").open("wb"),
        stderr=(log_dir / "stderr.log").open("wb"),
        # No drain delay unless a test asks for one: every stop would otherwise wait it out.
        env={**os.environ, "SERVING_DRAIN_DELAY_SECONDS": "0", **(env or {})},
    )
    server = ServerProcess(process, http_port, grpc_port, log_dir)
    deadline = time.monotonic() + 60
    path = "/v2/health/ready" if wait_ready else "/v2/health/live"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {server.stderr()}")
        try:
            answer = probe(server, path) if probe else requests.get(server.base + path, timeout=1)
            if answer.status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server did not get ready in 60 s: {server.stderr()}")


@pytest.fixture(scope="session")
def bundled_models() -> Path:
    """The bundled model repository, built by `make models`."""
    if not (BUNDLED_MODELS / "tabular-classifier" / "1" / "model.onnx").is_file():
        pytest.fail(f"bundled models missing in {BUNDLED_MODELS}: run `make models` (make test does)")
    return BUNDLED_MODELS


@pytest.fixture(scope="session")
def test_repository(tmp_path_factory: pytest.TempPathFactory, bundled_models: Path) -> Path:
    """The bundled models plus a doubler and a model whose file is broken."""
    root = tmp_path_factory.mktemp("repository")
    for model in ("tabular-classifier", "tabular-classifier-int8"):
        os.symlink(bundled_models / model, root / model)
    save_model(doubler_graph(), root / "doubler" / "1" / "model.onnx")
    write_config(root / "doubler", "max_batch_size: 8\nmax_queue_delay_ms: 0\n")
    return root


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, test_repository: Path) -> Iterator[ServerProcess]:
    """One server on the test repository for the protocol tests; it must drain and exit 0."""
    process = start_server(
        test_repository,
        tmp_path_factory.mktemp("server-logs"),
        "--max-request-bytes",
        "200000",
    )
    yield process
    assert process.stop() == 0, f"server did not exit cleanly: {process.stderr()}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["RedisServer"]:
    """One real redis-server for the asynchronous inference tests; each test uses streams of its own."""
    from tests.serving_image.redis_fixture import start_redis

    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def job_stream() -> str:
    """A stream name no other test uses, so each test sees only its own jobs."""
    return f"jobs-{os.urandom(6).hex()}"
