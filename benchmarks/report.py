"""The tables, ratios and target verdict, built from measured rows by pure functions."""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.measures import LoadResult

TARGET_CONCURRENCIES = (8, 64)
TARGET_SPEEDUP = 2.0
# The first run after readiness (issue 12's tail latency after start) is measured at this concurrency.
FIRST_RUN = "fresh"
FIRST_RUN_CONCURRENCY = 8
# Servers measured as they are; every other row is a security set-up of ours (benchmarks/security.py).
PLAIN_SERVERS = frozenset({"ours", "naive", "in-process"})


@dataclass(frozen=True, slots=True)
class Row:
    """One measured configuration of one model."""

    server: str
    """``ours``, ``naive`` or ``in-process``."""
    protocol: str
    """``http``, ``fresh`` (HTTP, the first run after readiness), ``grpc`` or ``ort`` (direct session.run)."""
    concurrency: int
    """Connections or streams in flight; threads for ``in-process``."""
    result: LoadResult | None
    """The measurement, or None when the run failed."""
    note: str = ""
    """The load generator, or why the run failed."""


@dataclass(slots=True)
class ModelRun:
    """Every row measured for one model."""

    model: str
    description: str
    rows: list[Row] = field(default_factory=list)

    def find(self, server: str, protocol: str, concurrency: int) -> LoadResult | None:
        """The result of one configuration, if it was measured."""
        for row in self.rows:
            if (row.server, row.protocol, row.concurrency) == (server, protocol, concurrency):
                return row.result
        return None


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """The verdict for one model at one concurrency: ours >= 2x naive req/s and p99 no worse."""

    model: str
    concurrency: int
    met: bool | None
    """None when a figure is missing, so nothing can be said."""
    reason: str


def format_table(run: ModelRun) -> str:
    """A fixed-width table of every row; runs that saw errors are flagged."""
    lines = [
        f"== {run.model}: {run.description}",
        f"{'server':<13}{'proto':<6}{'conc':>5}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}  note",
    ]
    for row in run.rows:
        head = f"{row.server:<13}{row.protocol:<6}{row.concurrency:>5}"
        if row.result is None:
            lines.append(f"{head}{'-':>11}{'-':>9}{'-':>9}{'-':>8}  {row.note}")
            continue
        res = row.result
        flag = "ERRORS: " if res.errors else ""
        note = "; ".join(part for part in (row.note, res.detail) if part)
        figures = f"{res.requests_per_s:>11.1f}{res.p50_ms:>9.3f}{res.p99_ms:>9.3f}{res.errors:>8}"
        lines.append(f"{head}{figures}  {flag}{note}")
    return "\n".join(lines)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _rps(result: LoadResult | None) -> float | None:
    return result.requests_per_s if result else None


def _p99(result: LoadResult | None) -> float | None:
    return result.p99_ms if result else None


def ratios(run: ModelRun, concurrencies: tuple[int, ...] = TARGET_CONCURRENCIES) -> dict[str, float | None]:
    """ours/naive req/s and p99, and ours/in-process ceiling, at each concurrency."""
    # The best in-process figure: for a tiny model two threads can lose to one on the GIL.
    ceilings = [row.result for row in run.rows if row.server == "in-process" and row.result]
    ceiling = max(ceilings, key=lambda result: result.requests_per_s, default=None)
    out: dict[str, float | None] = {}
    for conc in concurrencies:
        ours, naive = run.find("ours", "http", conc), run.find("naive", "http", conc)
        grpc = run.find("ours", "grpc", conc)
        out[f"ours/naive req/s c={conc}"] = _ratio(_rps(ours), _rps(naive))
        out[f"ours/naive p99 c={conc}"] = _ratio(_p99(ours), _p99(naive))
        out[f"ours http/ceiling req/s c={conc}"] = _ratio(_rps(ours), _rps(ceiling))
        out[f"ours grpc/ceiling req/s c={conc}"] = _ratio(_rps(grpc), _rps(ceiling))
        out[f"ours grpc/http req/s c={conc}"] = _ratio(_rps(grpc), _rps(ours))
        out[f"ours grpc/http p99 c={conc}"] = _ratio(_p99(grpc), _p99(ours))
    first = run.find("ours", FIRST_RUN, FIRST_RUN_CONCURRENCY)
    steady = run.find("ours", "http", FIRST_RUN_CONCURRENCY)
    out[f"ours first-run/steady p99 c={FIRST_RUN_CONCURRENCY}"] = _ratio(_p99(first), _p99(steady))
    return out


def security_costs(
    run: ModelRun, variants: Sequence[str], concurrencies: tuple[int, ...] = TARGET_CONCURRENCIES
) -> dict[str, float | None]:
    """Each security set-up (TLS, JWT) against plain HTTP: req/s and p99 as a ratio to ``ours``."""
    out: dict[str, float | None] = {}
    for variant in variants:
        for conc in concurrencies:
            plain, secured = run.find("ours", "http", conc), run.find(variant, "http", conc)
            if secured is None:
                continue
            out[f"{variant}/ours req/s c={conc}"] = _ratio(_rps(secured), _rps(plain))
            out[f"{variant}/ours p99 c={conc}"] = _ratio(_p99(secured), _p99(plain))
    return out


def format_ratios(values: dict[str, float | None]) -> str:
    """One ratio per line; ``n/a`` where a figure is missing."""
    return "\n".join(
        f"  {name:<34}{'n/a' if value is None else f'{value:.2f}x'}" for name, value in values.items()
    )


def check_target(run: ModelRun, concurrency: int) -> TargetCheck:
    """Whether ours reaches 2x naive req/s with a p99 no worse, both runs free of errors."""
    ours, naive = run.find("ours", "http", concurrency), run.find("naive", "http", concurrency)
    if ours is None or naive is None:
        return TargetCheck(run.model, concurrency, None, "not measured (ours or naive missing)")
    speedup = ours.requests_per_s / naive.requests_per_s if naive.requests_per_s else float("inf")
    problems = []
    if speedup < TARGET_SPEEDUP:
        problems.append(f"req/s only {speedup:.2f}x naive")
    if ours.p99_ms > naive.p99_ms:
        problems.append(f"p99 {ours.p99_ms:.2f} ms > naive {naive.p99_ms:.2f} ms")
    if ours.errors or naive.errors:
        problems.append(f"errors (ours {ours.errors}, naive {naive.errors})")
    reason = "; ".join(problems) or f"{speedup:.2f}x req/s, p99 {ours.p99_ms:.2f} vs {naive.p99_ms:.2f} ms"
    return TargetCheck(run.model, concurrency, not problems, reason)


def format_verdict(checks: list[TargetCheck]) -> str:
    """The target, one line per check, and the overall verdict."""
    words = {True: "MET", False: "NOT MET", None: "UNKNOWN"}
    lines = [f"target: ours >= {TARGET_SPEEDUP:g}x naive req/s at c=8 and c=64 on every model, p99 no worse"]
    lines += [f"  {c.model:<10}c={c.concurrency:<4}{words[c.met]:<9}{c.reason}" for c in checks]
    overall: bool | None = None
    if checks and all(c.met is not None for c in checks):
        overall = all(c.met for c in checks)
    lines.append(f"overall: {words[overall]}")
    return "\n".join(lines)


def results_document(
    runs: Sequence[ModelRun],
    checks: Sequence[TargetCheck],
    memory: Sequence[Mapping[str, object]],
    machine: Mapping[str, object],
    settings: Mapping[str, object],
) -> dict[str, object]:
    """Everything measured, as one JSON-ready document."""
    return {
        "machine": dict(machine),
        "settings": {
            key: str(value) if isinstance(value, Path) else value for key, value in settings.items()
        },
        "models": {
            run.model: {
                "description": run.description,
                "rows": [_row_dict(row) for row in run.rows],
                "ratios": ratios(run),
                "security_costs": security_costs(
                    run, sorted({row.server for row in run.rows} - PLAIN_SERVERS)
                ),
            }
            for run in runs
        },
        "target": {
            "rule": f"ours >= {TARGET_SPEEDUP:g}x naive req/s at c=8 and c=64, p99 no worse",
            "checks": [asdict(check) for check in checks],
        },
        "memory": [dict(reading) for reading in memory],
    }


def _row_dict(row: Row) -> dict[str, object]:
    figures: dict[str, object] = {**row.result.as_dict()} if row.result else {"failed": True}
    return {
        "server": row.server,
        "protocol": row.protocol,
        "concurrency": row.concurrency,
        "note": row.note,
    } | figures
