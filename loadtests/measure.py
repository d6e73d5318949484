"""From per-entry statistics (one entry per model, version and protocol) to the figures the gates check:
the whole run, each model over its versions and protocols, and each variant with its share of the model."""

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from loadtests.slo import Measured, Scope
from loadtests.traffic import parse_entry_name

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One statistics entry as the load generator kept it."""

    name: str
    """`model vN` or the model alone (see `loadtests.traffic.entry_name`)."""
    requests: int
    failures: int
    response_times: Mapping[int, int]
    """Response time in (rounded) milliseconds -> how many requests took it."""


def percentile(response_times: Mapping[int, int], fraction: float) -> float:
    """The response time under which `fraction` of the requests fell (nearest rank)."""
    total = sum(response_times.values())
    if total == 0:
        return float("nan")
    rank, seen = fraction * total, 0
    for value in sorted(response_times):
        seen += response_times[value]
        if seen >= rank:
            return float(value)
    return float(max(response_times))


def _measured(entries: list[Entry], duration_s: float, share_of: int | None = None) -> Measured:
    times: Counter[int] = Counter()
    for entry in entries:
        times.update(entry.response_times)
    requests = sum(e.requests for e in entries)
    latency = {key: percentile(times, fraction) for key, fraction in PERCENTILES.items()}
    latency["max"] = float(max(times)) if times else float("nan")
    return Measured(
        requests=requests,
        failures=sum(e.failures for e in entries),
        rps=requests / duration_s if duration_s > 0 else 0.0,
        latency_ms=latency,
        share=requests / share_of if share_of else None,
    )


def measure(entries: Iterable[Entry], duration_s: float) -> dict[Scope, Measured]:
    """Every scope the entries cover: overall, per model, per (model, version)."""
    entries = list(entries)
    groups: dict[Scope, list[Entry]] = {(None, None): entries}
    for entry in entries:
        name, served = parse_entry_name(entry.name)
        groups.setdefault((name, None), []).append(entry)
        if served is not None:
            groups.setdefault((name, served), []).append(entry)
    result = {}
    for scope, members in groups.items():
        model, version = scope
        share_of = None
        if version is not None:
            share_of = sum(e.requests for e in groups[(model, None)])
        result[scope] = _measured(members, duration_s, share_of)
    return result


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One scope's figures over one sampling window of the run (a row of `timeline.csv`)."""

    t_s: float
    """Seconds since the run started, at the window's end."""
    scope: str
    """`overall` or a variant (`model vN`)."""
    users: int
    """Users running at the window's end."""
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def window(
    previous: Mapping[str, Entry], current: Mapping[str, Entry], t_s: float, interval_s: float, users: int = 0
) -> list[Sample]:
    """What happened between two cumulative snapshots (keyed by entry), overall and per variant."""
    deltas = []
    for key, now in current.items():
        before = previous.get(key)
        times = Counter(now.response_times)
        if before is not None:
            times.subtract(before.response_times)
        deltas.append(
            Entry(
                name=now.name,
                requests=now.requests - (before.requests if before else 0),
                failures=now.failures - (before.failures if before else 0),
                response_times={k: v for k, v in times.items() if v > 0},
            )
        )
    samples = []
    for scope, m in measure(deltas, interval_s).items():
        model, version = scope
        if model is not None and version is None:
            continue
        label = "overall" if model is None else f"{model} v{version}"
        samples.append(
            Sample(
                t_s=round(t_s, 1),
                scope=label,
                users=users,
                requests=m.requests,
                failures=m.failures,
                rps=m.rps,
                p50_ms=m.latency_ms["p50"],
                p95_ms=m.latency_ms["p95"],
                p99_ms=m.latency_ms["p99"],
            )
        )
    return samples
