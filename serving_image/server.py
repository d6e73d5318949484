"""Process lifecycle: load the repository, serve REST and gRPC, drain on SIGTERM.

``python -m serving_image`` and ``servectl serve`` both call ``main``; ``python -m serving_image serve`` is
SageMaker's container contract (its defaults in ``settings.serve_defaults``, docs/sagemaker.md).
With ``--workers N`` a supervisor starts N worker processes that share the ports (SO_REUSEPORT) and merge
their metrics; each worker loads the models itself, since ONNX Runtime sessions do not
survive a fork.
"""

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier
from typing import TYPE_CHECKING

import uvicorn
import uvloop

from serving_image.access_log import AccessLog, log_event
from serving_image.dataplane import DataPlane
from serving_image.drain import DrainGuard, slow_body_cutoff
from serving_image.grpc_jobs import JobsServicer
from serving_image.grpc_server import GrpcServer
from serving_image.grpc_service import InferenceServicer
from serving_image.grpc_wire import Handler, Parser
from serving_image.http2_connection import ConnectionLimits
from serving_image.http_protocol import HttpLimits, protocol_class
from serving_image.metrics import Metrics, MetricsEndpoint
from serving_image.repository import Repository, failure_fields
from serving_image.response_cache import CacheLimits
from serving_image.rest import RestApp
from serving_image.segments import Segments, parse_values
from serving_image.settings import Settings, load_settings
from serving_image.shadow import ShadowTraffic
from serving_image.tls import CertificateReloader, TlsConfigError, TlsFiles
from serving_image.tracing import Tracing, TracingUnavailable
from serving_image.tracking import RequestTracker

if TYPE_CHECKING:
    from serving_image.features.online import OnlineFeatures
    from serving_image.job_callbacks import CallbackPolicy
    from serving_image.job_queue import JobQueue
    from serving_image.job_worker import JobWorker

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; the exit code is 0 after a clean drain."""
    settings = load_settings(argv)
    if settings.workers == 1:
        return uvloop.run(serve(settings))
    if 0 in (settings.http_port, settings.grpc_port, settings.metrics_port):
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


async def serve(settings: Settings, siblings: Barrier | None = None) -> int:
    """One serving process: both transports on one event loop until asked to stop.

    With ``siblings`` (``--workers`` > 1), the process listens only once every worker has
    loaded and warmed up its models, so readiness means that all of them serve.
    """
    # Stop signals are caught from the start: one that arrives while the models load is kept, and the
    # server drains as soon as it is up, rather than dying mid-start with a non-zero exit.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    # Likewise a SIGHUP during start-up is queued and applied once serving, never fatal.
    reload_queued = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, reload_queued.set)
    files = _load_files(settings)
    if files is None:
        return 2
    certificates, callbacks = files
    repository = _load_repository(settings)
    if repository is None:
        return 2
    metrics = Metrics()
    optional = _optional_parts(settings, metrics)
    if optional is None:
        return 2
    tracing, features = optional
    dataplane = DataPlane(
        repository, metrics, served_capacity=settings.feedback_requests,
        tracing=tracing, cache_limits=CacheLimits.for_settings(settings),
        drift_sample_rate=settings.drift_sample_rate,
        trust_assignment_header=settings.trust_assignment_header, features=features,
    )  # fmt: skip
    await dataplane.start()
    access_log = AccessLog(enabled=settings.access_log)
    segments = Segments(settings.segment_header, parse_values(settings.segment_values))
    tracker = RequestTracker(
        metrics, access_log, max_id_length=settings.max_request_id_length, segments=segments
    )
    shadow = ShadowTraffic(dataplane)
    if siblings is not None:
        await _wait_for_siblings(siblings)

    jobs = _AsyncJobs(await _job_queue(settings), callbacks)
    guard = DrainGuard(RestApp(dataplane, tracker, shadow, settings, jobs.queue, access_log, callbacks))
    methods = {  # the protocol's service and the jobs' on one gRPC port
        **InferenceServicer(dataplane, tracker, shadow, settings).methods(),
        **JobsServicer(dataplane, tracker, settings, jobs.queue, access_log, callbacks).methods(),
    }
    transports = await _start_transports(settings, guard, methods, metrics, certificates)
    log_event("server_started", pid=os.getpid(), http_port=transports.http_port,
              grpc_port=transports.grpc_port, tls=_tls_mode(settings), metrics_port=transports.metrics_port,
              models={name: model.ready for name, model in repository.models.items()},
              async_inference=_async_mode(settings))  # fmt: skip
    jobs.start_worker(settings, dataplane, tracker, access_log)

    reloads = _Reloads(dataplane)

    def on_hangup() -> None:  # SIGHUP: new version directories then the variant config; the TLS files at once
        reloads.request()
        if certificates is not None:
            certificates.check(force=True)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    if reload_queued.is_set():
        on_hangup()
    watcher = _watch_certificates(certificates, settings.tls_reload_seconds)
    await stop.wait()
    jobs.stop_taking(loop.time() + settings.grace_period_seconds)
    await _drain(settings, dataplane, guard, transports, lambda: tracker.inflight + shadow.pending)
    await jobs.stop()
    await transports.stop_metrics()
    if watcher is not None:
        watcher.cancel()
    await reloads.cancel()
    await dataplane.stop()
    access_log.flush()
    log_event("server_stopped", pid=os.getpid(), inflight=tracker.inflight)
    return 0


def _optional_parts(
    settings: Settings, metrics: Metrics
) -> "tuple[Tracing | None, OnlineFeatures | None] | None":
    """Tracing and the feature store (serving_image/tracing.py, features/online.py; the response cache needs
    nothing opened): each off by default; None, the problem logged, if one is configured but unusable."""
    try:
        return Tracing.for_settings(settings), _online_features(settings, metrics)
    except (TracingUnavailable, FeatureRepoUnusable) as error:
        log_event("startup_failed", reason=str(error))
        return None


class FeatureRepoUnusable(Exception):
    """The configured feature repository cannot be opened; the message names it and why."""


def _online_features(settings: Settings, metrics: Metrics) -> "OnlineFeatures | None":
    """The feature repository's online store when one is configured (Feast is imported only then)."""
    if settings.feature_repo is None:
        return None
    from serving_image.features.cache import FeatureCache
    from serving_image.features.online import OnlineFeatures

    cache = FeatureCache(settings.feature_cache_entries, settings.feature_cache_ttl_seconds)
    try:
        return OnlineFeatures.open(
            settings.feature_repo, metrics, settings.feature_timeout_ms, cache,
            settings.feature_registry_refresh_seconds,
        )  # fmt: skip
    except Exception as error:  # Feast's config errors have many types; each says what is wrong
        raise FeatureRepoUnusable(f"feature repository {settings.feature_repo}: {error}") from error


async def _job_queue(settings: Settings) -> "JobQueue | None":
    """The job queue when async inference is configured (``redis`` is imported only then).

    An unreachable queue does not stop the server: submits answer 503 until it is back, and a
    worker keeps trying to reach it.
    """
    if not settings.async_redis_url:
        return None
    from serving_image.errors import QueueUnavailable
    from serving_image.job_queue import JobQueue

    queue = JobQueue.connect(settings)
    try:
        await queue.ensure_group()
    except QueueUnavailable as error:
        log_event("job_queue_unavailable", pid=os.getpid(), error=str(error.__cause__ or error))
    return queue


def _load_files(settings: Settings) -> "tuple[CertificateReloader | None, CallbackPolicy | None] | None":
    """The TLS material and the callbacks' policy (allowed hosts and key), each None when off; None,
    the problem logged, if either is unusable."""
    try:
        certificates = _load_certificates(settings)
    except TlsConfigError as error:
        log_event("startup_failed", reason=f"TLS: {error}")
        return None
    try:
        callbacks = _callback_policy(settings)
    except ValueError as error:
        log_event("startup_failed", reason=f"callbacks: {error}")
        return None
    return certificates, callbacks


def _callback_policy(settings: Settings) -> "CallbackPolicy | None":
    """The callbacks' policy, built once (None when no host is allowed); ValueError if unusable."""
    if not settings.async_callback_hosts.strip(", "):
        return None
    from serving_image.job_callbacks import CallbackPolicy

    return CallbackPolicy.for_settings(settings)


@dataclasses.dataclass(slots=True)
class _AsyncJobs:
    """Asynchronous inference in this process: the queue (None when off) and its worker, if it runs one."""

    queue: "JobQueue | None"
    callbacks: "CallbackPolicy | None" = None
    worker: "JobWorker | None" = None
    deadline: float = 0.0

    def start_worker(
        self, settings: Settings, dataplane: DataPlane, tracker: RequestTracker, access_log: AccessLog
    ) -> None:
        """Start consuming the queue if ``async_worker`` is set."""
        if self.queue is None or not settings.async_worker:
            return
        from serving_image.job_callback_dispatch import CallbackDispatch
        from serving_image.job_worker import JobWorker

        callbacks = CallbackDispatch(self.queue, self.callbacks, access_log)
        self.worker = JobWorker(self.queue, dataplane, tracker, access_log, settings, callbacks)
        self.worker.start()

    def stop_taking(self, deadline: float) -> None:
        """SIGTERM: take no new jobs; those held may run until ``deadline`` (the grace period's end)."""
        self.deadline = deadline
        if self.worker is not None:
            self.worker.stop_taking()

    async def stop(self) -> None:
        """After the transports drained: wait for the jobs held and their callbacks, then close the queue's
        connections."""
        if self.worker is not None:
            await self.worker.stop(max(0.0, self.deadline - asyncio.get_running_loop().time()))
        if self.queue is not None:
            await self.queue.close()


def _async_mode(settings: Settings) -> str:
    if not settings.async_redis_url:
        return "off"
    return "submit and run" if settings.async_worker else "submit"


def _load_certificates(settings: Settings) -> CertificateReloader | None:
    """The TLS material if TLS is on, else None; raises ``TlsConfigError`` if the files are unusable."""
    files = TlsFiles.from_settings(settings)
    return None if files is None else CertificateReloader(files)


async def _start_transports(
    settings: Settings,
    guard: DrainGuard,
    methods: Mapping[str, tuple[Parser, Handler]],
    metrics: Metrics,
    certificates: CertificateReloader | None,
) -> "_Transports":
    """Both API listeners (TLS if configured) and the metrics port if it has its own, serving."""
    http_socket = _listen(settings.host, settings.http_port, settings.workers > 1)
    capped = settings.model_copy(update={"max_connections": _connection_cap(settings)})
    limits = HttpLimits.from_settings(capped)
    tls = None if certificates is None else _Tls(certificates.http_context(), settings.header_timeout_seconds)
    http = _HttpServer(_http_config(guard, limits, settings), tls)
    grpc_server = GrpcServer(methods, ConnectionLimits.from_settings(capped))
    grpc_socket = _listen(settings.host, settings.grpc_port, settings.workers > 1)
    grpc_tls = None if certificates is None else certificates.grpc_context()
    grpc_port = await grpc_server.start(grpc_socket, grpc_tls, settings.header_timeout_seconds)
    http_task = asyncio.create_task(http.serve(sockets=[http_socket]))
    metrics_server = _start_metrics_server(settings, limits, metrics)
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    return _Transports(http, http_task, grpc_server, http_socket.getsockname()[1], grpc_port, metrics_server)


def _tls_mode(settings: Settings) -> str:
    if settings.tls_cert is None:
        return "off"
    return "mutual" if settings.tls_client_ca is not None else "server"


def _http_config(app: DrainGuard, limits: HttpLimits, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration (TLS, when on, is added by ``_HttpServer``)."""
    return uvicorn.Config(
        app, http=protocol_class(limits), lifespan="off", access_log=False, log_level="warning",
        timeout_graceful_shutdown=max(1, int(settings.grace_period_seconds)),
    )  # fmt: skip


def _watch_certificates(
    certificates: CertificateReloader | None, interval: float
) -> "asyncio.Task[None] | None":
    if certificates is None or interval <= 0:
        return None
    return asyncio.create_task(certificates.watch(interval))


_MetricsServer = tuple["_HttpServer", "asyncio.Task[None]", int]


def _start_metrics_server(settings: Settings, limits: HttpLimits, metrics: Metrics) -> _MetricsServer | None:
    """``/metrics`` on a plain-HTTP port of its own when ``metrics_port`` is set (the API port omits it)."""
    if settings.metrics_port is None:
        return None
    sock = _listen(settings.metrics_host or settings.host, settings.metrics_port, settings.workers > 1)
    server = _HttpServer(
        uvicorn.Config(MetricsEndpoint(metrics), http=protocol_class(limits), lifespan="off",
                       access_log=False, log_level="warning", timeout_graceful_shutdown=1)
    )  # fmt: skip
    task = asyncio.create_task(server.serve(sockets=[sock]))
    return server, task, sock.getsockname()[1]


@dataclasses.dataclass(frozen=True, slots=True)
class _Transports:
    http: "_HttpServer"
    http_task: "asyncio.Task[None]"
    grpc: GrpcServer
    http_port: int
    grpc_port: int
    metrics: _MetricsServer | None = None

    @property
    def metrics_port(self) -> int | None:
        """The metrics port's number when it has its own (0 in the settings picks a free one)."""
        return None if self.metrics is None else self.metrics[2]

    async def stop_metrics(self) -> None:
        """Close the metrics port, last, so the drain can be watched to its end."""
        if self.metrics is not None:
            self.metrics[0].should_exit = True
            await self.metrics[1]


async def _drain(
    settings: Settings,
    dataplane: DataPlane,
    guard: DrainGuard,
    transports: _Transports,
    inflight: Callable[[], int],
) -> None:
    """Readiness false at once; serve on for the drain delay; then GOAWAY, close, and let in-flight finish.

    Everything happens within the grace period, counted from SIGTERM: requests still sending
    their body shortly before it ends are answered 503 (see ``serving_image.drain``).
    """
    loop = asyncio.get_running_loop()
    grace = settings.grace_period_seconds
    deadline = loop.time() + grace
    dataplane.draining = True
    guard.start_draining()
    transports.grpc.start_draining()
    delay = min(settings.drain_delay_seconds, grace)
    log_event(
        "draining", pid=os.getpid(), inflight=inflight(), drain_delay_seconds=delay, grace_seconds=grace
    )
    cutter = asyncio.create_task(
        _cut_slow_bodies_at(guard, transports.grpc, deadline - grace + slow_body_cutoff(grace))
    )
    await asyncio.sleep(delay)
    # gRPC sends its final GOAWAY and stops accepting; uvicorn closes its listener and idle connections.
    transports.grpc.close()
    grpc_stopped = asyncio.create_task(transports.grpc.wait_closed(max(0.0, deadline - loop.time())))
    transports.http.should_exit = True
    log_event("listeners_closed", pid=os.getpid(), inflight=inflight())
    await dataplane.drain(max(0.0, deadline - loop.time()), inflight)
    cutter.cancel()
    await asyncio.gather(transports.http_task, grpc_stopped)


async def _cut_slow_bodies_at(guard: DrainGuard, grpc_server: GrpcServer, when: float) -> None:
    await asyncio.sleep(max(0.0, when - asyncio.get_running_loop().time()))
    grpc_server.cut_slow_bodies()
    await guard.cut_slow_bodies()


async def _wait_for_siblings(siblings: Barrier) -> None:
    """Wait until every worker has loaded and warmed up; a sibling that failed breaks the wait."""
    log_event("worker_warm", pid=os.getpid())
    try:
        await asyncio.to_thread(siblings.wait)
    except threading.BrokenBarrierError:
        log_event("worker_siblings_failed", pid=os.getpid())


# Descriptors a worker needs besides its connections: models, logs, the event loop, gRPC's own.
_RESERVED_DESCRIPTORS = 256


def _connection_cap(settings: Settings) -> int:
    """The per-transport connection cap, within what the descriptor limit allows.

    The soft limit is raised to the hard one as far as both transports' caps need (as the Go
    runtime does); if even that is too low, the cap is lowered and the reason logged, so the
    server refuses connections with a JSON 503 instead of failing ``accept`` with EMFILE.
    """
    needed = 2 * settings.max_connections + _RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return settings.max_connections
    cap = max(1, (soft - _RESERVED_DESCRIPTORS) // 2)
    log_event("connection_cap_lowered", configured=settings.max_connections, cap=cap, nofile=soft)
    return cap


def _load_repository(settings: Settings) -> Repository | None:
    """Every model, loaded before serving; failures are logged with their path and reason."""
    try:
        threads, warm_up = settings.onnx_threads(), settings.warm_up_every_batch_size_up_to
        if settings.model_name is not None and settings.model_version is not None:
            repository = Repository.load_one_version(
                settings.model_repository, settings.model_name, settings.model_version, threads, warm_up
            )
        else:
            repository = Repository.load(settings.model_repository, threads, warm_up)
    except FileNotFoundError as error:
        log_event("startup_failed", reason=str(error))
        return None
    for failure in repository.failures():
        log_event("model_load_failed", model=failure.model, version=failure.version, path=failure.path,
                  reason=failure.reason)  # fmt: skip
    for model in repository.models.values():
        for version in model.versions.values():
            if version.runtime is not None:
                log_event("model_warmed_up", model=model.name, version=version.version,
                          batch_sizes=len(version.runtime.warmed),
                          problem=version.warm_up_problem)  # fmt: skip
    return repository


class _Reloads:
    """SIGHUP's model work, one reload at a time: new versions load in a thread while requests are served.

    SIGHUPs that arrive during a reload are folded into one more reload after it, so every signal is
    followed by a reload that started after it, and a burst of signals costs at most two.
    """

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        """Reload now, or once more after the reload that is running."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        else:
            self._again = True

    async def _run(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            try:
                problems = await self._dataplane.reload()
            except Exception as error:  # a reload that breaks must not stop later SIGHUPs from working
                log_event("config_reload_failed", pid=os.getpid(), problems=["unexpected error"],
                          **failure_fields(error))  # fmt: skip
                continue
            if problems:
                log_event("config_reload_failed", pid=os.getpid(), problems=problems)
            else:
                log_event(
                    "config_reloaded", pid=os.getpid(), models=sorted(self._dataplane.repository.models)
                )

    async def cancel(self) -> None:
        """Stop a reload under way (at shutdown): a version still loading in its thread is dropped."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# After sending its close_notify, a TLS connection being closed waits this long for the client's
# before the socket is closed anyway: asyncio's 30 s default would hold a drain up for an idle
# keep-alive client whose library does not read (TLS 1.3 does not require waiting at all).
TLS_CLOSE_SECONDS = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Tls:
    context: ssl.SSLContext
    handshake_timeout: float
    """A handshake must finish as fast as a request's headers must arrive (header_timeout_seconds)."""


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: draining is ours, so readiness can turn false first.

    With TLS, the listeners are created here rather than by uvicorn, which passes neither a
    handshake timeout (a client that never finishes its handshake would hold a socket for 60 s,
    uncounted by the connection cap) nor a close timeout to the event loop.
    """

    def __init__(self, config: uvicorn.Config, tls: _Tls | None = None) -> None:
        super().__init__(config)
        self._tls = tls

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up for the given sockets (lifespan is off), with the TLS timeouts."""
        if self._tls is None or sockets is None:
            await super().startup(sockets)
            return
        config, tls = self.config, self._tls

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )
            return protocol

        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=tls.context,
                backlog=config.backlog,
                ssl_handshake_timeout=tls.handshake_timeout,
                ssl_shutdown_timeout=TLS_CLOSE_SECONDS,
            )
            for sock in sockets
        ]
        self.started = True


def _worker(settings: Settings, siblings: Barrier) -> None:
    sys.exit(uvloop.run(serve(settings, siblings)))


def supervise(settings: Settings) -> int:
    """Start the workers, forward stop signals, and exit 0 only if every worker drained cleanly."""
    owned = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics_dir = (
        tempfile.mkdtemp(prefix="serving-metrics-") if owned else os.environ["PROMETHEUS_MULTIPROC_DIR"]
    )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    for stale in os.listdir(metrics_dir):  # values from an earlier run must not be merged in
        os.remove(os.path.join(metrics_dir, stale))
    # Ignored signals stay ignored across the workers' exec, so a SIGHUP forwarded while a worker still
    # imports cannot kill it; it reads config.yaml after that anyway, and queues SIGHUPs from then on.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    context = multiprocessing.get_context("spawn")
    siblings = context.Barrier(settings.workers)
    workers = [
        context.Process(target=_worker, args=(settings, siblings), name=f"worker-{n}")
        for n in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        siblings.abort()  # workers still waiting for each other go on to drain at once
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)

    def reload(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGHUP)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, forward)
    signal.signal(signal.SIGHUP, reload)  # the workers, started with SIGHUP ignored, queue their own
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
