"""Where an analysis window begins: when every server applies a step's weights, read back from Prometheus.

A step writes new weights; the servers apply them on SIGHUP (or the mesh on its next push), some time
later and not all at once. Counting from the time the step was logged would judge requests routed by
the old weights as if by the new ones, and the split test would see a mismatch that is only lag. So
each server exports the weights it routes by (`serving_variant_weight{model,version}`, one series per
worker process: serving_image/metrics.py), and a step's window begins at the first scrape at which
every series still reporting shows the new weights, plus a settle period (`Schedule.settle_seconds`).
The same reading at the same end time gives the same boundary, so a replay recomputes it exactly.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from servectl.experiments.promql import Prometheus

GAUGE = "serving_variant_weight"


class WindowError(ValueError):
    """A time or window that cannot be analysed; the message says which and why."""


@dataclass(frozen=True)
class Confirmation:
    """Whether the weights are in effect everywhere, and since when."""

    confirmed_at: float | None
    """The first scrape after which every server reported the weights (None: not yet)."""
    reason: str | None = None
    """Why they are not confirmed."""
    servers: int = 0
    """Server processes reporting weights for the model."""


def show(weights: dict[str, float]) -> str:
    """Weights as a reader writes them: `v1 95 / v2 5`."""
    return " / ".join(f"v{v} {w:g}" for v, w in sorted(weights.items(), key=lambda kv: int(kv[0])))


def _server(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A server process: every label but the metric name and the version (instance, pod, pid...)."""
    return tuple(sorted((k, v) for k, v in labels.items() if k not in {"__name__", "version"}))


def _selector(model: str, source: str | None) -> str:
    """The gauge's series: the servers' own (no `source` label), or those a router exports (`mesh`)."""
    return f'{GAUGE}{{model="{model}",source="{source or ""}"}}'


def reported(
    prom: Prometheus, model: str, at: float, source: str | None = None
) -> dict[tuple[tuple[str, str], ...], dict[str, float]]:
    """The weights each server process (or, with `source`, each router) reports at `at`; a server gone
    stale by then is not listed."""
    servers: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    for labels, value in prom.query(_selector(model, source), at):
        servers.setdefault(_server(labels), {})[labels.get("version", "")] = value
    return servers


def _matches(weights: dict[str, int], seen: dict[str, float]) -> bool:
    return all(seen.get(v, 0.0) == float(weights.get(v, 0)) for v in set(weights) | set(seen))


def confirm(
    prom: Prometheus, model: str, weights: dict[str, int], since: float, at: float, source: str | None = None
) -> Confirmation:
    """Whether every server reporting at `at` routes by `weights`, and the first scrape after `since`
    from which each of its series has shown them without a break (the latest such time over series).

    `source="mesh"` reads the weights the rollout controller exports once Istio reports them applied
    (servectl/experiments/mesh_status.py) instead of the servers' own."""
    servers = reported(prom, model, at, source)
    if not servers:
        return Confirmation(None, f"no server reports {GAUGE} for model {model!r} yet; it cannot be told "
                                  "whether the weights are in effect")  # fmt: skip
    behind = [seen for seen in servers.values() if not _matches(weights, seen)]
    if behind:
        return Confirmation(
            None,
            f"weights {show(dict(weights))} not yet reported by all servers: "
            f"{len(behind)} of {len(servers)} still at {show(behind[0])}",
            len(servers),
        )
    span = max(1, math.ceil(at - since))
    changed = since
    for labels, samples in prom.samples(f"{_selector(model, source)}[{span}s]", at):
        if _server(labels) not in servers:
            continue  # a server scaled away since: it routes nothing now
        want = float(weights.get(labels.get("version", ""), 0))
        start = None
        for stamp, value in reversed([(t, v) for t, v in samples if t > since]):
            if value != want:
                break
            start = stamp
        changed = max(changed, start if start is not None else since)
    return Confirmation(changed, None, len(servers))


def parse_time(text: str, now: float) -> float:
    """An RFC 3339 time or unix seconds; a time in the future is refused (nothing has been counted yet)."""
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise WindowError(
                f"{text!r} is neither RFC 3339 (2026-11-30T15:00:00Z) nor unix seconds"
            ) from None
        if parsed.tzinfo is None:
            raise WindowError(f"{text!r} has no time zone; add Z or an offset such as +01:00") from None
        value = parsed.timestamp()
    if not math.isfinite(value) or value > now:
        raise WindowError(
            f"{text!r} is in the future (now is {datetime.fromtimestamp(now, UTC).isoformat()})"
        )
    return value


def replay_window(start: str, end: str | None, now: float) -> tuple[float, float]:
    """`--start` and `--end` (default: now) as unix seconds; the end must come after the start."""
    begin = parse_time(start, now)
    finish = parse_time(end, now) if end is not None else now
    if finish <= begin:
        raise WindowError(f"--end {end} must be after --start {start}")
    return begin, finish
