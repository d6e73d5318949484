"""The report folder of a run: charts from `timeline.csv` and a `summary.md` a person reads in a minute,
beside locust's own CSV and HTML files and the gate's `gates.json`."""

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.measure import Sample

SUMMARY_FILE = "summary.md"
CHARTS = {"latency": "latency.png", "throughput": "throughput.png"}


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What was run, for the summary's header."""

    profile: str
    description: str
    target: str
    grpc_target: str | None
    workers: int
    exit_code: int
    models: tuple[str, ...] = ()
    """The models the run loaded."""
    bearer_token_env: str | None = None
    """The variable the bearer token came from: its name only, the token is never written."""


def _number(text: str) -> float:
    return float(text) if text else float("nan")


def read_timeline(path: Path) -> list[Sample]:
    """The rows of `timeline.csv` (empty cells are NaN: no requests in that window)."""
    with path.open(newline="", encoding="utf-8") as source:
        return [
            Sample(
                t_s=float(row["t_s"]),
                scope=row["scope"],
                users=int(row["users"]),
                requests=int(row["requests"]),
                failures=int(row["failures"]),
                rps=float(row["rps"]),
                p50_ms=_number(row["p50_ms"]),
                p95_ms=_number(row["p95_ms"]),
                p99_ms=_number(row["p99_ms"]),
            )
            for row in csv.DictReader(source)
        ]


def by_scope(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    """Samples grouped by scope, `overall` first, then variants by name."""
    groups: dict[str, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: (s.scope != "overall", s.scope, s.t_s)):
        groups.setdefault(sample.scope, []).append(sample)
    return groups


def plot(samples: Sequence[Sample], out: Path) -> list[Path]:
    """Latency percentiles per scope and throughput per scope over time, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    groups = by_scope(samples)
    if not groups:
        return []
    latency = _latency_chart(groups, out / CHARTS["latency"])
    return [latency, _throughput_chart(groups, out / CHARTS["throughput"])]


def _latency_chart(groups: dict[str, list[Sample]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 2.4 * len(groups)), sharex=True, squeeze=False)
    for ax, (scope, rows) in zip(axes[:, 0], groups.items(), strict=True):
        t = [s.t_s for s in rows]
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            ax.plot(t, [getattr(s, key) for s in rows], marker=".", label=key.removesuffix("_ms"))
        ax.set_title(scope, fontsize=10)
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds into the run")
    fig.suptitle("Latency percentiles per window")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _throughput_chart(groups: dict[str, list[Sample]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for scope, rows in groups.items():
        ax.plot([s.t_s for s in rows], [s.rps for s in rows], marker=".", label=scope)
    overall = groups.get("overall", [])
    users = ax.twinx()
    users.step([s.t_s for s in overall], [s.users for s in overall], where="post", color="grey", alpha=0.5)
    users.set_ylabel("users (grey)")
    users.set_ylim(bottom=0)
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("requests per second")
    ax.set_title("Throughput per window, overall and per variant; users running")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _result_row(scope: str, m: Mapping[str, Any]) -> str:
    lat = m["latency_ms"]
    return (
        f"| {scope} | {m['requests']} | {m['failures']} | {m['rps']:.1f} | {_ms(lat['p50'])} "
        f"| {_ms(lat['p95'])} | {_ms(lat['p99'])} | {_ms(lat['max'])} |"
    )


def variant_split(measured: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, int, float]]:
    """(variant, requests, share of its model) for every variant measured."""
    return [
        (scope, int(m["requests"]), float(m["share"]))
        for scope, m in measured.items()
        if m.get("share") is not None
    ]


def summary_markdown(info: RunInfo, gates: Mapping[str, Any], charts: Sequence[Path]) -> str:
    """The one-minute summary: verdict, gate table, results per scope, variant split, charts, files."""
    gates_ = gates["gates"]
    failed = [g for g in gates_ if g["result"] == "FAIL"]
    verdict = "PASS" if info.exit_code == 0 else "FAIL"
    lines = [
        f"# Load test `{info.profile}`: {verdict}",
        "",
        f"{info.description}",
        "",
        f"- target: {info.target}" + (f" (gRPC {info.grpc_target})" if info.grpc_target else ""),
        f"- load generator: {'one process' if not info.workers else f'a master and {info.workers} workers'}",
        *([f"- models: {', '.join(info.models)}"] if info.models else []),
        *([f"- auth: a bearer token from `${info.bearer_token_env}`"] if info.bearer_token_env else []),
        f"- duration: {gates['duration_s']:.1f} s",
        f"- gates: {len(gates['gates']) - len(failed)} of {len(gates['gates'])} passed"
        + (f"; failed: {', '.join(g['gate'] for g in failed)}" if failed else ""),
        "",
        "## SLO gates",
        "",
        "| gate | measured | threshold | result |",
        "| --- | --- | --- | --- |",
        *(f"| {g['gate']} | {g['measured']} | {g['threshold']} | **{g['result']}** |" for g in gates_),
        "",
        "## Results",
        "",
        "| scope | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [_result_row(scope, m) for scope, m in gates["measured"].items()]
    lines += ["", "## Variant split observed", "", "| variant | requests | share of its model |"]
    lines += ["| --- | ---: | ---: |"]
    lines += [f"| {v} | {n} | {share * 100:.1f}% |" for v, n, share in variant_split(gates["measured"])]
    lines += ["", "## Charts", ""] + [f"![{c.stem}]({c.name})" for c in charts]
    lines += ["", "## Files", "", "- `locust.html`: locust's report; `locust_*.csv`: its statistics",
              "- `timeline.csv`: the windows the charts draw; `gates.json`: gates and figures",
              "- `locust.log` (and `worker-*.log`): the load generator's output"]  # fmt: skip
    return "\n".join(lines) + "\n"


def write(out: Path, info: RunInfo) -> Path:
    """Charts and `summary.md` in `out`, from the run's `gates.json` and `timeline.csv`."""
    gates = json.loads((out / "gates.json").read_text(encoding="utf-8"))
    timeline = out / "timeline.csv"
    charts = plot(read_timeline(timeline), out) if timeline.exists() else []
    path = out / SUMMARY_FILE
    path.write_text(summary_markdown(info, gates, charts), encoding="utf-8")
    return path
