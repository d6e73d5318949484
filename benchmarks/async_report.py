"""The asynchronous inference benchmark's figures and tables, built from measured values by pure functions."""

import math
from dataclasses import dataclass

from benchmarks.job_records import JobRecord, Latency, intake, latency
from benchmarks.machine import machine_info
from benchmarks.measures import percentile
from benchmarks.open_loop import OpenLoopResult
from benchmarks.workload import BenchModel


@dataclass(frozen=True, slots=True)
class PathFigures:
    """One path's rate and its CPU per row, on the pinned server."""

    path: str
    rows_per_s: float
    rows: int
    server_us_per_row: float
    redis_us_per_row: float
    errors: int
    note: str


@dataclass(frozen=True, slots=True)
class LatencyFigures:
    """One open-loop run at a fraction of the async submit+run rate."""

    load: float
    """The fraction of the submit+run rate."""
    rate: float
    """Jobs per second the client sent at."""
    sent: int
    taken_per_s: float
    """Jobs per second the server took in (first to last ``created``)."""
    latency: Latency
    intake_lag_p99_ms: float
    """How long after its due time a job was taken in (``created - due``): the client's or server's lag."""
    late: int
    errors: int
    server_us_per_row: float
    """The server's CPU over the run per job: a worker that meets a short queue takes small batches."""


@dataclass(frozen=True, slots=True)
class ModelFigures:
    """Everything measured for one model."""

    model: BenchModel
    paths: list[PathFigures]
    latencies: list[LatencyFigures]


def latency_figures(
    load: float, rate: float, sent: OpenLoopResult, records: list[JobRecord], server_us: float
) -> LatencyFigures:
    """The open-loop run's figures: job latency, intake lag, and what went wrong."""
    by_id = {record.job_id: record for record in records}
    lags = sorted(1000 * (by_id[s.job_id].created - s.due) for s in sent.sent if s.job_id in by_id)
    not_accepted = sum(1 for s in sent.sent if s.job_id is None)
    not_done = sum(1 for r in records if r.state != "done")
    return LatencyFigures(load, rate, len(sent.sent), intake(records).rows_per_s, latency(records),
                          percentile(lags, 0.99), sent.late, not_accepted + not_done, server_us)  # fmt: skip


def _us(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _busy(rows_per_s: float, us_per_row: float) -> str:
    """The share of its one CPU the server used: about 100% when a path saturates it, less when
    the path waited on something else, or other work on the machine took the CPU."""
    return "-" if math.isnan(us_per_row) else f"{rows_per_s * us_per_row / 1e4:.0f}%"


def format_paths(figures: ModelFigures) -> str:
    """The rates and CPU per row of every path, and each async path against the best sync run."""
    model = figures.model
    lines = [
        f"== {model.name}: {model.description}; input {model.input_name} FP32 [1, {model.features}]",
        f"  {'path':<18}{'rows/s':>9}{'rows':>8}{'server us/row':>15}{'CPU busy':>10}{'redis us/row':>14}"
        f"{'errors':>8}  note",
    ]
    for p in figures.paths:
        lines.append(f"  {p.path:<18}{p.rows_per_s:>9.0f}{p.rows:>8}{_us(p.server_us_per_row):>15}"
                     f"{_busy(p.rows_per_s, p.server_us_per_row):>10}{_us(p.redis_us_per_row):>14}"
                     f"{p.errors:>8}  {p.note}")  # fmt: skip
    sync = [p for p in figures.paths if p.path.startswith("sync")]
    if not sync:
        return "\n".join(lines)
    best = max(sync, key=lambda p: p.rows_per_s)
    for p in figures.paths:
        if p.path.startswith("async") and best.rows_per_s and best.server_us_per_row:
            lines.append(
                f"  {p.path} / {best.path}: rate {p.rows_per_s / best.rows_per_s:.2f}x, "
                f"server CPU per row {p.server_us_per_row / best.server_us_per_row:.2f}x"
            )
    return "\n".join(lines)


def format_latencies(figures: ModelFigures) -> str:
    """Job latency (submit accepted to result stored) at each load of the async submit+run rate."""
    lines = [
        "  latency, open loop: job created (submit accepted) to finished (result stored), in ms",
        f"  {'load':>5}{'jobs/s':>8}{'jobs':>7}{'taken/s':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
        f"{'intake lag p99':>16}{'late':>6}{'errors':>8}{'server us/row':>15}{'CPU busy':>10}",
    ]
    for f in figures.latencies:
        lat = f.latency
        lines.append(
            f"  {f.load:>5.0%}{f.rate:>8.0f}{f.sent:>7}{f.taken_per_s:>8.0f}{lat.p50_ms:>8.1f}"
            f"{lat.p90_ms:>8.1f}{lat.p99_ms:>8.1f}{lat.max_ms:>8.1f}{f.intake_lag_p99_ms:>16.1f}{f.late:>6}{f.errors:>8}"
            f"{_us(f.server_us_per_row):>15}{_busy(f.taken_per_s, f.server_us_per_row):>10}"
        )
    return "\n".join(lines)


def machine_line(redis_version: str, start_load: float) -> str:
    """The machine and versions the figures were measured on."""
    info = machine_info()
    return (
        f"machine: {info['cpu_count']} CPUs ({info['cpu_model']}), {info['platform']}, "
        f"Python {info['python']}, onnxruntime {info['onnxruntime']}, redis-server {redis_version}, "
        f"{info['wrk']}; load average {start_load:.2f} at start"
    )
