"""Process lifecycle: load the repository, serve REST and gRPC, drain on SIGTERM.

``python -m serving_image`` and ``servectl serve`` both call ``main``. With ``--workers N``
a supervisor starts N worker processes that share the ports (SO_REUSEPORT) and merge
their metrics; each worker loads the models itself, since ONNX Runtime sessions do not
survive a fork.
"""

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Generator, Sequence
from multiprocessing.process import BaseProcess

import uvicorn
import uvloop

from serving_image.access_log import AccessLog, log_event
from serving_image.dataplane import DataPlane
from serving_image.grpc_service import InferenceServicer, build_server
from serving_image.metrics import Metrics
from serving_image.repository import Repository
from serving_image.rest import RestApp
from serving_image.settings import Settings, load_settings
from serving_image.shadow import ShadowTraffic
from serving_image.tracking import RequestTracker

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; the exit code is 0 after a clean drain."""
    settings = load_settings(argv)
    if settings.workers == 1:
        return uvloop.run(serve(settings))
    if 0 in (settings.http_port, settings.grpc_port):
        log_event("startup_failed", reason="--workers > 1 needs fixed ports, not 0")
        return 2
    return supervise(settings)


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(settings: Settings) -> int:
    """One serving process: both transports on one event loop until asked to stop."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reload handler is in place
    # Stop signals are caught from the start: one that arrives while the models load is kept, and the
    # server drains as soon as it is up, rather than dying mid-start with a non-zero exit.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    repository = _load_repository(settings)
    if repository is None:
        return 2
    metrics = Metrics()
    dataplane = DataPlane(repository, metrics, served_capacity=settings.feedback_requests)
    await dataplane.start()
    access_log = AccessLog(enabled=settings.access_log)
    tracker = RequestTracker(metrics, access_log)
    shadow = ShadowTraffic(dataplane)

    http_socket = _listen(settings.host, settings.http_port, settings.workers > 1)
    http = _HttpServer(
        uvicorn.Config(
            RestApp(dataplane, tracker, shadow, settings), http="httptools", lifespan="off", access_log=False,
            log_level="warning", timeout_graceful_shutdown=max(1, int(settings.grace_period_seconds)),
        )
    )  # fmt: skip
    grpc_server = build_server(InferenceServicer(dataplane, tracker, shadow, settings), settings)
    grpc_port = grpc_server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    http_task = asyncio.create_task(http.serve(sockets=[http_socket]))
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    await grpc_server.start()
    log_event("server_started", pid=os.getpid(), http_port=http_socket.getsockname()[1], grpc_port=grpc_port,
              models={name: model.ready for name, model in repository.models.items()})  # fmt: skip

    loop.add_signal_handler(signal.SIGHUP, _reload, dataplane)
    await stop.wait()
    log_event(
        "draining", pid=os.getpid(), inflight=tracker.inflight, grace_seconds=settings.grace_period_seconds
    )
    await dataplane.drain(settings.grace_period_seconds, lambda: tracker.inflight + shadow.pending)
    http.should_exit = True
    await asyncio.gather(http_task, grpc_server.stop(grace=1.0))
    await dataplane.stop()
    access_log.flush()
    log_event("server_stopped", pid=os.getpid(), inflight=tracker.inflight)
    return 0


def _load_repository(settings: Settings) -> Repository | None:
    """Every model, loaded before serving; failures are logged with their path and reason."""
    try:
        repository = Repository.load(settings.model_repository, settings.onnx_threads())
    except FileNotFoundError as error:
        log_event("startup_failed", reason=str(error))
        return None
    for failure in repository.failures():
        log_event("model_load_failed", model=failure.model, version=failure.version, path=failure.path,
                  reason=failure.reason)  # fmt: skip
    return repository


def _reload(dataplane: DataPlane) -> None:
    problems = dataplane.reload()
    if problems:
        log_event("config_reload_failed", pid=os.getpid(), problems=problems)
    else:
        log_event("config_reloaded", pid=os.getpid(), models=sorted(dataplane.repository.models))


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: draining is ours, so readiness can turn false first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _worker(settings: Settings) -> None:
    sys.exit(uvloop.run(serve(settings)))


def supervise(settings: Settings) -> int:
    """Start the workers, forward stop signals, and exit 0 only if every worker drained cleanly."""
    owned = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics_dir = (
        tempfile.mkdtemp(prefix="serving-metrics-") if owned else os.environ["PROMETHEUS_MULTIPROC_DIR"]
    )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    for stale in os.listdir(metrics_dir):  # values from an earlier run must not be merged in
        os.remove(os.path.join(metrics_dir, stale))
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(settings,), name=f"worker-{n}") for n in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)

    def reload(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGHUP)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, forward)
    signal.signal(signal.SIGHUP, reload)
    try:
        return _wait_for(workers, lambda: stopping)
    finally:
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _wait_for(workers: Sequence[BaseProcess], stopping: Callable[[], bool]) -> int:
    from prometheus_client import multiprocess

    alive = list(workers)
    code = 0
    while alive:
        for worker in list(alive):
            worker.join(timeout=0.2)
            if worker.exitcode is None:
                continue
            alive.remove(worker)
            if worker.pid is not None:
                multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
            # A worker that we asked to stop before it had set up its own handlers ends by SIGTERM itself.
            if worker.exitcode == -signal.SIGTERM and stopping():
                continue
            if worker.exitcode != 0:
                code = 1
                if not stopping():
                    log_event("worker_died", name=worker.name, exitcode=worker.exitcode)
                    for other in alive:
                        other.terminate()
    return code
