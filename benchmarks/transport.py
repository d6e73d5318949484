"""gRPC against REST on one server: the request rate with ghz and with wrk, and the server's CPU per request.

Two set-ups for each model and concurrency:

- ``shared``: two workers and an unpinned load generator, as ``make bench`` runs them. ghz spends
  several times wrk's CPU on each call, and on a two-core machine that CPU is taken from the server.
- ``pinned``: one worker pinned to CPU 1 and the load generator to CPU 0, so each protocol's rate
  is the server's own, whatever its load generator costs.

The server's CPU per request is read from /proc over each measured window; it does not depend on
the load generator. Run with ``python -m benchmarks.transport``; it takes about three minutes.
"""

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import grpc_runner, wrk_runner
from benchmarks.measures import LoadResult, pinned
from benchmarks.processes import free_port, running_server, tree_cpu_seconds
from benchmarks.workload import (
    MODEL_NAMES,
    BenchModel,
    prepare_model,
    request_row,
    v2_grpc_request,
    v2_json_body,
)

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, LOAD_CPU = "1", "0"


@dataclass(frozen=True, slots=True)
class Measured:
    """One protocol's run: what the load generator saw, and the server's CPU per request."""

    setup: str
    protocol: str
    concurrency: int
    result: LoadResult
    server_us_per_request: float


@dataclass(frozen=True, slots=True)
class _Setup:
    name: str
    workers: int
    server_cpus: str | None
    load_cpus: str | None


SETUPS = (_Setup("shared", 2, None, None), _Setup("pinned", 1, SERVER_CPU, LOAD_CPU))


def _server_command(model: BenchModel, setup: _Setup, http_port: int, grpc_port: int) -> list[str]:
    command = [
        sys.executable, "-m", "serving_image", "--model-repository", str(model.repository),
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        "--workers", str(setup.workers),
    ]  # fmt: skip
    return pinned(command, setup.server_cpus)


def measure_setup(
    model: BenchModel, setup: _Setup, args: argparse.Namespace, workdir: Path
) -> list[Measured]:
    """Both protocols at each concurrency against one server started for ``setup``."""
    http_port, grpc_port = free_port(), free_port()
    row = request_row(model.features)
    url = f"http://127.0.0.1:{http_port}/v2/models/{model.name}/infer"
    script = wrk_runner.write_lua_script(workdir, model.name, v2_json_body(model, row))
    request = v2_grpc_request(model, row)
    measured = []
    with running_server(
        f"transport-{setup.name}-{model.name}",
        _server_command(model, setup, http_port, grpc_port),
        f"http://127.0.0.1:{http_port}/v2/health/ready",
        log_dir=workdir,
        cwd=ROOT,
    ) as server:
        for conc in args.concurrency:

            def rest(duration: float, conc: int = conc) -> LoadResult:
                return wrk_runner.run_wrk(url, script, conc, duration, setup.load_cpus)

            def grpc(duration: float, conc: int = conc) -> LoadResult:
                target = f"127.0.0.1:{grpc_port}"
                return grpc_runner.run_grpc_load(target, request, workdir, conc, duration, setup.load_cpus)

            for protocol, run in (("rest", rest), ("grpc", grpc)):
                print(f"... {model.name} {setup.name} {protocol} c={conc}", file=sys.stderr, flush=True)
                run(args.warmup)
                before = tree_cpu_seconds(server.pid)
                result = run(args.duration)
                used = tree_cpu_seconds(server.pid) - before
                per_request = 1e6 * used / result.requests if result.requests else float("nan")
                measured.append(Measured(setup.name, protocol, conc, result, per_request))
    return measured


def format_rows(model: str, rows: list[Measured]) -> str:
    """The table for one model, and the gRPC/REST ratios of rate and of server CPU per request."""
    lines = [
        f"{model}",
        f"  {'setup':<7} {'c':>3} {'protocol':<8} {'req/s':>9} {'p99 ms':>8} "
        f"{'server us/req':>14} {'errors':>7}",
    ]
    for m in rows:
        lines.append(
            f"  {m.setup:<7} {m.concurrency:>3} {m.protocol:<8} {m.result.requests_per_s:>9.0f} "
            f"{m.result.p99_ms:>8.2f} {m.server_us_per_request:>14.0f} {m.result.errors:>7}"
        )
    by_key = {(m.setup, m.concurrency, m.protocol): m for m in rows}
    for setup, conc in sorted({(m.setup, m.concurrency) for m in rows}):
        rest, grpc = by_key.get((setup, conc, "rest")), by_key.get((setup, conc, "grpc"))
        if rest is None or grpc is None or not rest.result.requests_per_s:
            continue
        rate = grpc.result.requests_per_s / rest.result.requests_per_s
        cpu = grpc.server_us_per_request / rest.server_us_per_request
        lines.append(f"  {setup} c={conc}: gRPC/REST rate {rate:.2f}x, server CPU per request {cpu:.2f}x")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description="gRPC against REST on one server: rate and CPU per request.")
    add = parser.add_argument
    add("--duration", type=float, default=8.0, help="seconds per measured run (default 8)")
    add("--warmup", type=float, default=2.0, help="seconds of warm-up before each run")
    add("--concurrency", type=int, nargs="+", default=[8, 64], help="concurrencies (default 8 64)")
    add("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; 1 if ghz is missing (the comparison is about ghz)."""
    args = parse_args(argv)
    if not grpc_runner.ghz_available():
        print("error: ghz is not installed; run `make bench` once to build it", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="transport-bench-") as tmp:
        workdir = Path(tmp)
        for name in args.models:
            model = prepare_model(name, workdir)
            rows = [m for setup in SETUPS for m in measure_setup(model, setup, args, workdir)]
            print(format_rows(name, rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
