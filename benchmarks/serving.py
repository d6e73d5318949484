"""Serving benchmark: our V2 server against a naive FastAPI one and in-process ONNX Runtime.

Single-row V2 JSON requests from wrk on loopback at several concurrencies, the gRPC path
with ghz, the in-process ceiling and resident memory per model, all measured in one run.
Prints a table per model, the ratios and whether the target is met, and writes the figures
to benchmarks/results/serving.json. Run by ``make bench``; ``--help`` lists the flags.
"""

import argparse
import functools
import json
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import grpc_runner, security, wrk_runner
from benchmarks.ceiling import measure_ceiling
from benchmarks.machine import load_average, machine_info
from benchmarks.memory import CommandBuilder, MemoryReading, format_memory, read_memory
from benchmarks.processes import ServerStartError, free_port, running_server
from benchmarks.report import (
    FIRST_RUN,
    FIRST_RUN_CONCURRENCY,
    TARGET_CONCURRENCIES,
    ModelRun,
    Row,
    check_target,
    format_ratios,
    format_table,
    format_verdict,
    ratios,
    results_document,
    security_costs,
)
from benchmarks.workload import (
    MODEL_NAMES,
    ROOT,
    TABULAR_SOURCE,
    BenchModel,
    MissingModelError,
    empty_repository,
    prepare_model,
    request_row,
    v2_grpc_request,
    v2_json_body,
)

RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
CEILING_THREADS = (1, 2)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'")
    return values


def _model_list(text: str) -> tuple[str, ...]:
    names = tuple(part for part in text.split(",") if part)
    unknown = sorted(set(names) - set(MODEL_NAMES))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's flags; the defaults make ``make bench`` finish in about five minutes."""
    parser = argparse.ArgumentParser(
        description="Serving benchmark: ours vs a naive server vs in-process ORT."
    )
    add = parser.add_argument
    add("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    add("--warmup", type=float, default=2.0, help="seconds of warm-up before each run (default 2)")
    add("--models", type=_model_list, default=MODEL_NAMES, help="comma list of: tabular,mlp (default both)")
    add("--concurrency", type=_int_list, default=(1, 8, 64), help="HTTP concurrencies (default 1,8,64)")
    add("--grpc-concurrency", type=_int_list, default=(8, 64), help="gRPC concurrencies (default 8,64)")
    add("--workers", type=int, default=2, help="server processes for ours and naive (default 2)")
    add("--ready-timeout", type=float, default=90.0, help="seconds to wait for a server to be ready")
    add("--skip-ours", action="store_true", help="do not start our server")
    add("--skip-naive", action="store_true", help="do not start the naive FastAPI server")
    add("--skip-grpc", action="store_true", help="do not measure the gRPC path")
    add("--skip-ceiling", action="store_true", help="do not measure in-process ONNX Runtime")
    add("--skip-memory", action="store_true", help="do not measure resident memory")
    add("--skip-security", action="store_true", help="do not measure the cost of TLS and JWT verification")
    add("--security-concurrency", type=_int_list, default=(8, 64),
        help="HTTP concurrencies for the TLS and JWT set-ups (default 8,64)")  # fmt: skip
    add("--tabular-model", type=Path, default=TABULAR_SOURCE, help="tabular ONNX file (default: bundled v1)")
    add("--output", type=Path, default=RESULTS, help="JSON results file")
    return parser.parse_args(argv)


def progress(message: str) -> None:
    """One progress line on stderr, so the tables on stdout stay clean."""
    print(f"... {message}", file=sys.stderr, flush=True)


def ours_command(workers: int) -> CommandBuilder:
    """Our server's command line for a repository and two ports, as deployed: metrics, validation and the
    access log on (the naive baseline runs without its access log, the stricter comparison)."""

    def build(repository: Path, http_port: int, grpc_port: int) -> list[str]:
        return [
            sys.executable, "-m", "serving_image", "--model-repository", str(repository),
            "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
            "--workers", str(workers),
        ]  # fmt: skip

    return build


def naive_command(workers: int, port: int) -> list[str]:
    """The naive server under uvicorn's own process manager."""
    return [
        sys.executable, "-m", "uvicorn", "benchmarks.naive_server:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def setup_line(args: argparse.Namespace) -> str:
    """What is compared, under which load, in one line above the tables."""
    return (
        f"ours: python -m serving_image, {args.workers} workers, access log + metrics on"
        f" | naive: FastAPI + uvicorn, {args.workers} workers, no access log"
        f" | wrk on 127.0.0.1, {args.warmup:g} s warm-up + {args.duration:g} s per run\n"
    )


def smoke_check(
    url: str, body: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> None:
    """One request before the load, so a server that answers errors is not benchmarked."""
    request = urllib.request.Request(
        url,
        data=body.encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise ServerStartError(f"{url} answered {error.code}: {error.read()[:500]!r}") from error
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        raise ServerStartError(f"{url} did not answer: {error}") from error
    if not answer.get("outputs"):
        raise ServerStartError(f"{url} answered without outputs: {str(answer)[:500]}")


def measure_http(run: ModelRun, server: str, url: str, script: Path, args: argparse.Namespace) -> None:
    """wrk at each concurrency: a warm-up, then the measured run."""
    for conc in args.concurrency:
        progress(f"{run.model}: {server} http c={conc}")
        try:
            wrk_runner.run_wrk(url, script, conc, args.warmup)
            result = wrk_runner.run_wrk(url, script, conc, args.duration)
        except wrk_runner.WrkError as error:
            run.rows.append(Row(server, "http", conc, None, f"failed: {str(error).splitlines()[0]}"))
            continue
        run.rows.append(Row(server, "http", conc, result, "wrk"))


def measure_first_run(run: ModelRun, url: str, script: Path, args: argparse.Namespace) -> None:
    """The first wrk run right after readiness, with no warm-up: what a freshly started replica serves."""
    conc = FIRST_RUN_CONCURRENCY
    progress(f"{run.model}: ours http c={conc}, first run after readiness")
    try:
        result = wrk_runner.run_wrk(url, script, conc, args.duration)
    except wrk_runner.WrkError as error:
        run.rows.append(Row("ours", FIRST_RUN, conc, None, f"failed: {str(error).splitlines()[0]}"))
        return
    run.rows.append(Row("ours", FIRST_RUN, conc, result, "wrk, no warm-up, right after readiness"))


def measure_grpc(
    run: ModelRun, target: str, request: dict[str, object], workdir: Path, args: argparse.Namespace
) -> None:
    """ghz (or the grpc.aio fallback) on ModelInfer at each gRPC concurrency."""
    note = "ghz" if grpc_runner.ghz_available() else "grpc.aio client (ghz not installed: a floor)"
    for conc in args.grpc_concurrency:
        progress(f"{run.model}: ours grpc c={conc} with {note.split(maxsplit=1)[0]}")
        try:
            grpc_runner.run_grpc_load(target, request, workdir, conc, args.warmup)
            result = grpc_runner.run_grpc_load(target, request, workdir, conc, args.duration)
        except grpc_runner.GrpcLoadError as error:
            run.rows.append(Row("ours", "grpc", conc, None, f"failed: {str(error).splitlines()[0]}"))
            continue
        run.rows.append(Row("ours", "grpc", conc, result, note))


def bench_ours(
    run: ModelRun, model: BenchModel, row: np.ndarray, workdir: Path, args: argparse.Namespace
) -> None:
    """Start our server on the model's repository and load it over REST and gRPC."""
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    command = ours_command(args.workers)(model.repository, http_port, grpc_port)
    progress(f"{run.model}: starting ours ({args.workers} workers)")
    with running_server(
        f"ours-{model.name}",
        command,
        f"{base}/v2/health/ready",
        log_dir=workdir,
        cwd=ROOT,
        timeout_s=args.ready_timeout,
    ):
        url, body = f"{base}/v2/models/{model.name}/infer", v2_json_body(model, row)
        smoke_check(url, body)
        script = wrk_runner.write_lua_script(workdir, model.name, body)
        measure_first_run(run, url, script, args)
        measure_http(run, "ours", url, script, args)
        if not args.skip_grpc:
            measure_grpc(run, f"127.0.0.1:{grpc_port}", v2_grpc_request(model, row), workdir, args)


def measure_variant(
    run: ModelRun,
    model: BenchModel,
    row: np.ndarray,
    variant: security.Variant,
    concurrencies: tuple[int, ...],
    workdir: Path,
    args: argparse.Namespace,
) -> None:
    """Our server with one security set-up on, loaded over REST as ``measure_http`` loads the plain one.

    The warm-up always sends one reused token, so a run that cycles new tokens starts with none cached.
    """
    http_port, grpc_port = free_port(), free_port()
    base = f"{variant.scheme}://127.0.0.1:{http_port}"
    command = [*ours_command(args.workers)(model.repository, http_port, grpc_port), *variant.flags]
    progress(f"{run.model}: starting {variant.name} ({args.workers} workers)")
    context = variant.client_context()
    ready = f"{base}/v2/health/ready"
    name = f"{variant.name}-{model.name}"
    with running_server(
        name,
        command,
        ready,
        log_dir=workdir,
        cwd=ROOT,
        env=variant.env,
        timeout_s=args.ready_timeout,
        context=context,
    ):
        url, body = f"{base}/v2/models/{model.name}/infer", v2_json_body(model, row)
        smoke_check(url, body, dict(variant.headers), context)
        warm = wrk_runner.write_lua_script(
            workdir, f"{model.name}-{variant.name}-warm", body, variant.headers
        )
        script = wrk_runner.write_lua_script(
            workdir, f"{model.name}-{variant.name}", body, variant.headers, variant.tokens_file
        )
        for conc in concurrencies:
            progress(f"{run.model}: {variant.name} http c={conc}")
            try:
                wrk_runner.run_wrk(url, warm, conc, args.warmup)
                result = wrk_runner.run_wrk(url, script, conc, args.duration)
            except wrk_runner.WrkError as error:
                run.rows.append(
                    Row(variant.name, "http", conc, None, f"failed: {str(error).splitlines()[0]}")
                )
                continue
            run.rows.append(Row(variant.name, "http", conc, result, f"wrk; {variant.note}"))


def bench_security(
    run: ModelRun,
    model: BenchModel,
    row: np.ndarray,
    variants: list[security.Variant],
    workdir: Path,
    args: argparse.Namespace,
) -> None:
    """Each set-up alone (TLS, JWT), everything else as in ``bench_ours``; a fresh server for each
    concurrency when tokens are cycled, so the server's verified-token cache starts empty."""
    for variant in variants:
        if variant.tokens_file is None:
            measure_variant(run, model, row, variant, args.security_concurrency, workdir, args)
            continue
        for conc in args.security_concurrency:
            measure_variant(run, model, row, variant, (conc,), workdir, args)


def bench_naive(
    run: ModelRun, model: BenchModel, row: np.ndarray, workdir: Path, args: argparse.Namespace
) -> None:
    """Start the naive FastAPI server on the model and load it over REST."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"NAIVE_MODEL_PATH": str(model.onnx_path), "NAIVE_MODEL_NAME": model.name}
    progress(f"{run.model}: starting naive ({args.workers} workers)")
    with running_server(
        f"naive-{model.name}",
        naive_command(args.workers, port),
        f"{base}/v2/health/ready",
        log_dir=workdir,
        cwd=ROOT,
        env=env,
        timeout_s=args.ready_timeout,
    ):
        url, body = f"{base}/v2/models/{model.name}/infer", v2_json_body(model, row)
        smoke_check(url, body)
        measure_http(run, "naive", url, wrk_runner.write_lua_script(workdir, model.name, body), args)


def bench_model(
    model: BenchModel, workdir: Path, args: argparse.Namespace, variants: list[security.Variant]
) -> ModelRun:
    """Every row for one model: ours (REST, gRPC; with TLS, with JWT), naive (REST) and the ceiling."""
    run = ModelRun(model.name, f"{model.description}; input {model.input_name} FP32 [1, {model.features}]")
    row = request_row(model.features)
    if not args.skip_ours:
        bench_ours(run, model, row, workdir, args)
        bench_security(run, model, row, variants, workdir, args)
    if not args.skip_naive:
        bench_naive(run, model, row, workdir, args)
    if not args.skip_ceiling:
        for threads in CEILING_THREADS:
            progress(f"{run.model}: in-process ORT, {threads} thread(s)")
            result = measure_ceiling(model.onnx_path, row, threads, args.duration / 2)
            run.rows.append(Row("in-process", "ort", threads, result, "session.run loop, 1 intra-op thread"))
    return run


def _two_ports() -> tuple[int, int]:
    return free_port(), free_port()


def bench_memory(models: list[BenchModel], workdir: Path, args: argparse.Namespace) -> list[MemoryReading]:
    """Our server with one worker: empty, then each model alone."""
    read = functools.partial(
        read_memory, command=ours_command(1), log_dir=workdir, cwd=ROOT, timeout_s=args.ready_timeout
    )
    progress("memory: ours, 1 worker, empty repository")
    readings = [read("empty", empty_repository(workdir), ports=_two_ports())]
    for model in models:
        progress(f"memory: ours, 1 worker, {model.name} only")
        request = (f"/v2/models/{model.name}/infer", v2_json_body(model, request_row(model.features)))
        readings.append(read(model.name, model.repository, ports=_two_ports(), request=request))
    return readings


def write_results(path: Path, document: dict[str, object]) -> None:
    """Write the results document as JSON, creating its (git-ignored) folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def run_all(args: argparse.Namespace, workdir: Path) -> tuple[list[ModelRun], list[MemoryReading]]:
    """Prepare the models, measure each of them, then the memory."""
    models = [prepare_model(name, workdir, args.tabular_model) for name in args.models]
    variants = [] if args.skip_security else security.build_variants(workdir / "security")
    print(setup_line(args), flush=True)
    runs = []
    for model in models:
        runs.append(bench_model(model, workdir, args, variants))
        print(format_table(runs[-1]), flush=True)
        print(format_ratios(ratios(runs[-1])), flush=True)
        costs = security_costs(runs[-1], security.VARIANTS, args.security_concurrency)
        print((format_ratios(costs) + "\n") if costs else "", flush=True)
    memory = [] if args.skip_memory or args.skip_ours else bench_memory(models, workdir, args)
    return runs, memory


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 2 when a model is missing, 1 when a server fails, else 0 (met or not)."""
    args = parse_args(argv)
    start_load = load_average()
    if start_load > 1.0:
        print(f"warning: load average {start_load:.1f} at start: other work shares the CPUs", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
            runs, memory = run_all(args, Path(tmp))
    except MissingModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ServerStartError as error:
        print(f"error: {error}\n(--skip-ours or --skip-naive measures the rest)", file=sys.stderr)
        return 1
    checks = [check_target(run, conc) for run in runs for conc in TARGET_CONCURRENCIES]
    if memory:
        print("resident memory, our server with 1 worker (process tree VmRSS)")
        print(format_memory(memory) + "\n")
    print(format_verdict(checks))
    write_results(
        args.output,
        results_document(
            runs,
            checks,
            [m.as_dict() for m in memory],
            machine_info() | {"load_average_1m_at_start": start_load},
            vars(args),
        ),
    )
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
