"""Asynchronous inference against the synchronous path at the same CPU, and job latency under open-loop load.

For each model, one server process (``--workers 1``, access log on) pinned to CPU 1 runs a job worker
(``SERVING_ASYNC_WORKER=true``) on a real redis-server; Redis, wrk and this process are pinned to CPU 0.
One row per request and per job. Measured in this order:

- ``sync c=N``: wrk POSTs the row at each concurrency; the best rate is the synchronous saturation.
- ``async submit+run``: wrk submits jobs (``Prefer: respond-async``) to the same server, a fixed count
  sized from the sync rate, while its worker runs them. Rate: jobs done over the span from the first
  job's ``created`` to the last ``finished`` in the jobs' own records, the one CPU doing both halves.
- ``async submit only``: the same count submitted to a second server without a worker, pinned to the
  same CPU (the first idles meanwhile), onto a staging stream: the submit half, first to last ``created``.
- ``async worker only``: the staging stream renamed onto the worker's stream at once, so the worker
  meets the whole backlog: the run half, first ``started`` to last ``finished``; what a worker
  Deployment's core delivers when the submits are served elsewhere.
- latency: jobs submitted open loop (at fixed times, whatever the answers) at 50% and 90% of the
  submit+run rate, bounded in count and time; percentiles of ``finished - created`` per job.

Server and Redis CPU per row are read from /proc over each window. Every run is bounded by a job count
and a time limit. Run with ``python benchmarks/async_jobs.py`` (``make async-bench``); about four minutes.
"""

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import wrk_runner
from benchmarks.async_report import (
    LatencyFigures,
    ModelFigures,
    PathFigures,
    format_latencies,
    format_paths,
    latency_figures,
    machine_line,
)
from benchmarks.job_records import (
    JobRecord,
    clear_records,
    intake,
    read_records,
    states,
    throughput,
    wait_drained,
)
from benchmarks.machine import load_average
from benchmarks.measures import LoadResult, pinned
from benchmarks.open_loop import post_request, submit_open_loop
from benchmarks.processes import Server, ServerStartError, free_port, running_server, tree_cpu_seconds
from benchmarks.redis_server import RedisServer, running_redis
from benchmarks.serving import smoke_check
from benchmarks.workload import MODEL_NAMES, ROOT, BenchModel, prepare_model, request_row, v2_json_body
from serving_image.job_queue import GROUP

SERVER_CPU, LOAD_CPU = "1", "0"
STREAM, STAGING = "bench-jobs", "bench-staging"
ASYNC_BATCH = 32  # the worker's default take
PREFER_ASYNC = {"Prefer": "respond-async"}
WRK_POLL_S = 0.01


class RunError(Exception):
    """A run's jobs did not all finish in time, or finished otherwise than done."""


@dataclass(frozen=True, slots=True)
class Bench:
    """What one model's measurements share: the model, its server, its Redis, the flags and a folder."""

    model: BenchModel
    server: Server
    http_port: int
    redis: RedisServer
    args: argparse.Namespace
    workdir: Path

    @property
    def body(self) -> str:
        return v2_json_body(self.model, request_row(self.model.features))

    def url(self, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.http_port}/v2/models/{self.model.name}/infer"

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the server's process tree and by Redis."""
        return tree_cpu_seconds(self.server.pid), tree_cpu_seconds(self.redis.pid)


def _per_row(before: tuple[float, float], after: tuple[float, float], rows: int) -> tuple[float, float]:
    if not rows:
        return math.nan, math.nan
    return 1e6 * (after[0] - before[0]) / rows, 1e6 * (after[1] - before[1]) / rows


def progress(message: str) -> None:
    """One progress line on stderr, so the tables on stdout stay clean."""
    print(f"... {message}", file=sys.stderr, flush=True)


def server_command(model: BenchModel, http_port: int, cpus: str) -> list[str]:
    """One server process on the model's repository, pinned to ``cpus``."""
    command = [
        sys.executable, "-m", "serving_image", "--model-repository", str(model.repository),
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(free_port()),
        "--workers", "1",
    ]  # fmt: skip
    return pinned(command, cpus)


def async_env(redis: RedisServer, stream: str, worker: bool, max_queued: int) -> dict[str, str]:
    """The ``SERVING_ASYNC_*`` settings of a server on the benchmark's Redis."""
    return {
        "SERVING_ASYNC_REDIS_URL": redis.url, "SERVING_ASYNC_STREAM": stream,
        "SERVING_ASYNC_WORKER": "true" if worker else "false", "SERVING_ASYNC_MAX_QUEUED": str(max_queued),
        "SERVING_ASYNC_BATCH": str(ASYNC_BATCH),
    }  # fmt: skip


def wrk_threads(connections: int) -> int:
    """The threads wrk_runner gives wrk for ``connections`` (each thread counts its own answers)."""
    flag = wrk_runner.wrk_command("http://127.0.0.1/", Path("x.lua"), connections, 1)[1]
    return int(flag.removeprefix("-t"))


def submit_script(directory: Path, name: str, body: str, jobs: int, connections: int) -> Path:
    """A wrk script that submits ``body`` as a job until its threads have ``jobs`` answers between them."""
    per_thread = math.ceil(jobs / wrk_threads(connections))
    stop = (
        f"local answers, limit = 0, {per_thread}\n"
        "function response(status, headers, body)\n"
        "  answers = answers + 1\n"
        "  if answers >= limit then wrk.thread:stop() end\n"
        "end\n"
    )
    path = directory / f"{name}.lua"
    path.write_text(wrk_runner.lua_script(body, PREFER_ASYNC) + stop, encoding="utf-8")
    return path


def run_wrk_until(command: list[str], enough: Callable[[], bool], time_limit_s: float) -> LoadResult:
    """Run wrk and interrupt it (SIGINT: it prints its report and exits) once ``enough()`` holds.

    wrk runs for its ``-d`` whatever its threads do, so a run bounded by a count ends this way.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + time_limit_s
    try:
        while process.poll() is None and time.monotonic() < deadline and not enough():
            time.sleep(WRK_POLL_S)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    if process.returncode != 0:
        raise wrk_runner.WrkError(f"wrk exited {process.returncode}: {err.strip() or out.strip()}")
    return wrk_runner.parse_wrk_output(out)


def submit_jobs(bench: Bench, port: int, jobs: int, name: str) -> int:
    """Submit ``jobs`` jobs with wrk (closed loop, bounded by the drain timeout); the answers not 202."""
    client, connections = bench.redis.client, bench.args.submit_connections
    script = submit_script(bench.workdir, name, bench.body, jobs, connections)
    limit = bench.args.drain_timeout
    command = pinned(wrk_runner.wrk_command(bench.url(port), script, connections, limit), LOAD_CPU)
    keys_before = int(client.dbsize())  # each job adds one key, its hash

    def enough() -> bool:
        return int(client.dbsize()) - keys_before >= jobs

    return run_wrk_until(command, enough, limit).errors


def finished_records(bench: Bench, expected: int, what: str) -> list[JobRecord]:
    """Wait until the worker's stream is empty, then every job's record; fail loudly if jobs are left."""
    client = bench.redis.client
    if not wait_drained(client, STREAM, bench.args.drain_timeout):
        raise RunError(
            f"{what}: {client.xlen(STREAM)} jobs still queued after {bench.args.drain_timeout:g} s:\n"
            f"{bench.server.log_tail()}"
        )
    return read_records(client, limit=2 * expected + 1000)


def measure_sync(bench: Bench) -> list[PathFigures]:
    """wrk at each concurrency, a warm-up and then the measured run, with the server's CPU over it."""
    script = wrk_runner.write_lua_script(bench.workdir, f"{bench.model.name}-sync", bench.body)
    rows = []
    for conc in bench.args.concurrency:
        progress(f"{bench.model.name}: sync c={conc}")
        wrk_runner.run_wrk(bench.url(), script, conc, bench.args.warmup, LOAD_CPU)
        before = bench.cpu()
        result = wrk_runner.run_wrk(bench.url(), script, conc, bench.args.duration, LOAD_CPU)
        server_us, redis_us = _per_row(before, bench.cpu(), result.requests)
        note = f"wrk, p99 {result.p99_ms:.2f} ms" + (f"; {result.detail}" if result.detail else "")
        rows.append(PathFigures(f"sync c={conc}", result.requests_per_s, result.requests, server_us,
                                redis_us, result.errors, note))  # fmt: skip
    return rows


def measure_submit_and_run(bench: Bench, jobs: int) -> PathFigures:
    """wrk submits ``jobs`` jobs to the server while its worker runs them (after a smaller warm-up)."""
    client, name = bench.redis.client, bench.model.name
    progress(f"{name}: async submit+run, warm-up")
    warm = max(bench.args.min_jobs, jobs // 10)
    submit_jobs(bench, bench.http_port, warm, f"{name}-warm")
    warmed = states(finished_records(bench, warm, "warm-up"))
    if warmed["done"] < warm:
        raise RunError(f"warm-up: {dict(warmed)} of {warm} jobs:\n{bench.server.log_tail()}")
    clear_records(client, limit=2 * warm + 1000)
    progress(f"{name}: async submit+run, {jobs} jobs")
    before = bench.cpu()
    errors = submit_jobs(bench, bench.http_port, jobs, f"{name}-submit")
    records = finished_records(bench, jobs, "submit+run")
    after = bench.cpu()
    figures = throughput(records, "created")
    server_us, redis_us = _per_row(before, after, figures.done)
    clear_records(client, limit=2 * jobs + 1000)
    note = (
        f"{figures.done} jobs over HTTP ({bench.args.submit_connections} connections), worker in the server"
    )
    return PathFigures("async submit+run", figures.rows_per_s, figures.done, server_us, redis_us,
                       errors + figures.not_done, note)  # fmt: skip


def measure_submit_only(bench: Bench, jobs: int) -> PathFigures:
    """The submit half alone: a second server without a worker, pinned to the same CPU as the first (idle
    meanwhile: its stream is empty), takes ``jobs`` submits onto the staging stream."""
    client, name, args = bench.redis.client, bench.model.name, bench.args
    client.delete(STAGING)
    client.xgroup_create(STAGING, GROUP, id="0", mkstream=True)
    port = free_port()
    progress(f"{name}: async submit only, {jobs} jobs to a second server without a worker")
    with running_server(
        f"api-{name}", server_command(bench.model, port, SERVER_CPU), f"http://127.0.0.1:{port}/v2/health/ready",
        log_dir=bench.workdir, cwd=ROOT, env=async_env(bench.redis, STAGING, False, 2 * args.max_jobs + 1000),
        timeout_s=args.ready_timeout,
    ) as api:  # fmt: skip
        smoke_check(bench.url(port), bench.body)
        before = tree_cpu_seconds(api.pid), tree_cpu_seconds(bench.redis.pid)
        errors = submit_jobs(bench, port, jobs, f"{name}-queue")
        after = tree_cpu_seconds(api.pid), tree_cpu_seconds(bench.redis.pid)
    figures = intake(read_records(client, limit=2 * jobs + 1000))
    server_us, redis_us = _per_row(before, after, figures.done)
    note = (
        f"{figures.done} jobs over HTTP ({args.submit_connections} connections) to a server without a worker"
    )
    return PathFigures(
        "async submit only", figures.rows_per_s, figures.done, server_us, redis_us, errors, note
    )


def measure_worker_only(bench: Bench, jobs: int) -> PathFigures:
    """The run half alone: the jobs the submit-only run queued, handed to the worker at once."""
    client = bench.redis.client
    progress(f"{bench.model.name}: async worker only, running {client.xlen(STAGING)} queued jobs")
    before = bench.cpu()
    client.rename(STAGING, STREAM)  # the group moves with the stream: the worker reads the whole backlog
    records = finished_records(bench, jobs, "worker only")
    after = bench.cpu()
    figures = throughput(records, "started")
    server_us, redis_us = _per_row(before, after, figures.done)
    clear_records(client, limit=2 * jobs + 1000)
    note = f"{figures.done} jobs queued beforehand, then one backlog"
    return PathFigures("async worker only", figures.rows_per_s, figures.done, server_us, redis_us,
                       figures.not_done, note)  # fmt: skip


def measure_latency(bench: Bench, load: float, rate: float) -> LatencyFigures:
    """Jobs submitted open loop at ``rate`` for the latency duration, then their records."""
    args = bench.args
    count = max(1, round(rate * args.latency_duration))
    progress(f"{bench.model.name}: latency at {load:.0%} ({rate:.0f} jobs/s, {count} jobs)")
    path = f"/v2/models/{bench.model.name}/infer"
    payload = post_request(bench.http_port, path, bench.body.encode(), PREFER_ASYNC)
    before = bench.cpu()
    sent = submit_open_loop(bench.http_port, payload, rate, count, 1.5 * args.latency_duration + 5)
    records = finished_records(bench, count, f"latency at {load:.0%}")
    server_us, _ = _per_row(before, bench.cpu(), len(records))
    clear_records(bench.redis.client, limit=2 * count + 1000)
    return latency_figures(load, rate, sent, records, server_us)


def job_count(sync_rate: float, args: argparse.Namespace) -> int:
    """Jobs for an async run: about ``duration`` seconds of work at the sync rate, within the bounds."""
    low, high = int(args.min_jobs), int(args.max_jobs)
    return max(low, min(high, round(sync_rate * float(args.duration))))


@contextlib.contextmanager
def model_bench(model: BenchModel, args: argparse.Namespace, workdir: Path) -> Iterator[Bench]:
    """Redis on CPU 0 and the server with its worker on CPU 1, both stopped when the block ends."""
    with running_redis(workdir / f"redis-{model.name}", LOAD_CPU) as redis:
        port = free_port()
        progress(f"{model.name}: starting the server on CPU {SERVER_CPU} with a job worker")
        with running_server(
            f"server-{model.name}", server_command(model, port, SERVER_CPU),
            f"http://127.0.0.1:{port}/v2/health/ready", log_dir=workdir, cwd=ROOT,
            env=async_env(redis, STREAM, True, 2 * args.max_jobs + 1000), timeout_s=args.ready_timeout,
        ) as server:  # fmt: skip
            bench = Bench(model, server, port, redis, args, workdir)
            smoke_check(bench.url(), bench.body)
            yield bench


def bench_model(model: BenchModel, args: argparse.Namespace, workdir: Path) -> ModelFigures:
    """The sync saturation, both async rates at a count sized from it, then latency at each load."""
    with model_bench(model, args, workdir) as bench:
        paths = measure_sync(bench)
        jobs = job_count(max(p.rows_per_s for p in paths), args)
        paths.append(measure_submit_and_run(bench, jobs))
        async_rate = paths[-1].rows_per_s
        paths.append(measure_submit_only(bench, jobs))
        paths.append(measure_worker_only(bench, jobs))
        latencies = [measure_latency(bench, load, load * async_rate) for load in args.loads]
    return ModelFigures(model, paths, latencies)


def setup_line(args: argparse.Namespace) -> str:
    """What runs where, in one paragraph above the tables."""
    return (
        f"set-up: one server process (python -m serving_image --workers 1, access log on) pinned to "
        f"CPU {SERVER_CPU}, its job worker in it (batch {ASYNC_BATCH}); redis-server (append-only file on), "
        f"wrk and this client pinned to CPU {LOAD_CPU}; one row per request and per job; "
        f"sync {args.warmup:g} s warm-up + {args.duration:g} s per run, async runs sized to about "
        f"{args.duration:g} s of sync work (bounds {args.min_jobs}..{args.max_jobs} jobs)"
    )


def _fractions(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a load is a fraction in (0, 1], got {text}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's flags; the defaults take about four minutes on two cores."""
    parser = argparse.ArgumentParser(
        description="Async jobs against the sync path at the same CPU; job latency."
    )
    add = parser.add_argument
    add("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    add("--duration", type=float, default=8.0, help="seconds per sync run; async runs are sized to match")
    add("--warmup", type=float, default=2.0, help="seconds of warm-up before each sync run")
    add("--concurrency", type=int, nargs="+", default=[8, 64], help="sync wrk concurrencies (default 8 64)")
    add("--submit-connections", type=int, default=16, help="wrk connections submitting jobs (default 16)")
    add("--min-jobs", type=int, default=500, help="fewest jobs in an async run (default 500)")
    add("--max-jobs", type=int, default=60_000, help="most jobs in an async run (default 60000)")
    add("--loads", type=_fractions, nargs="+", default=[0.5, 0.9],
        help="open-loop loads as fractions of the async submit+run rate (default 0.5 0.9)")  # fmt: skip
    add("--latency-duration", type=float, default=10.0, help="seconds of open-loop submission per load")
    add("--drain-timeout", type=float, default=120.0, help="most seconds a run may take to submit or finish")
    add("--ready-timeout", type=float, default=90.0, help="seconds to wait for a server to be ready")
    return parser.parse_args(argv)


@contextlib.contextmanager
def pinned_self(cpus: set[int]) -> Iterator[None]:
    """This process (the open-loop client) on ``cpus`` for the block, then back where it was."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def run(args: argparse.Namespace, workdir: Path) -> None:
    """Measure each model and print its tables as soon as it is done."""
    start_load = load_average()
    print(setup_line(args), flush=True)
    for name in args.models:
        figures = bench_model(prepare_model(name, workdir), args, workdir)
        print(format_paths(figures), flush=True)
        print(format_latencies(figures), flush=True)
    with running_redis(workdir / "redis-version") as redis:
        version = str(redis.client.info("server")["redis_version"])
    print(machine_line(version, start_load), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 1 when a server or a run fails, 2 on a machine with fewer than two CPUs."""
    args = parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        print("error: the benchmark pins the server and the load to two different CPUs", file=sys.stderr)
        return 2
    if load_average() > 1.0:
        print(
            f"warning: load average {load_average():.1f} at start: other work shares the CPUs",
            file=sys.stderr,
        )
    try:
        with tempfile.TemporaryDirectory(prefix="async-bench-") as tmp, pinned_self({int(LOAD_CPU)}):
            run(args, Path(tmp))
    except (ServerStartError, RunError, wrk_runner.WrkError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
