"""One analysis and one step, end to end: read the log, read the counts, decide, log, apply.

This is what `servectl experiment analyze` and `step` run; tests and the demo call it directly. The counts
come from a source (source.py): Prometheus by default, or CloudWatch for a SageMaker endpoint; the decision
is the same core's either way.
"""

import json
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servectl.experiments import log, window
from servectl.experiments.decision import (
    COMPLETE,
    HOLD,
    PROMOTE,
    ROLLBACK,
    Inputs,
    Schedule,
    Thresholds,
    decide,
)
from servectl.experiments.promql import VersionCounts, Window
from servectl.experiments.source import CountsSource, PrometheusSource
from servectl.experiments.targets import Target


class ExperimentError(ValueError):
    """The experiment cannot be analysed as asked; the message says what to change."""


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """What to analyse and how."""

    prometheus: str
    """Prometheus base URL."""
    model: str
    """Model name."""
    log_path: Path
    """The experiment log (JSON lines)."""
    baseline: str | None = None
    """Baseline version (default: the lowest version in the weights)."""
    candidate: str | None = None
    """Candidate version (default: the highest)."""
    schedule: Schedule = field(default_factory=Schedule)
    """The rollout schedule."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    """Test settings."""
    gate_passed: bool | None = None
    """Load-test SLO result, if one is given."""
    start: float | None = None
    """Where the first analysis puts the experiment's start (None: at its own time)."""
    confirm_source: str | None = None
    """Whose `serving_variant_weight` confirms a step: the servers' (None) or the mesh's (`mesh`)."""
    source: CountsSource | None = None
    """Where the counts come from (None: Prometheus at `prometheus`; cloudwatch.CloudWatchSource for a
    SageMaker endpoint)."""


def counts_source(experiment: Experiment) -> CountsSource:
    """The experiment's source of counts and confirmations; refused if it cannot feed a guard the
    experiment asks for (key segments need a request header that CloudWatch's metrics do not carry)."""
    if experiment.source is None:
        return PrometheusSource(experiment.prometheus, experiment.model, experiment.confirm_source)
    if experiment.thresholds.segments and "segments" in experiment.source.unmeasured:
        raise ExperimentError(
            f"the rollout's key segments {list(experiment.thresholds.segments)} cannot be measured from this "
            "source (CloudWatch's metrics carry no request header): remove `segments` from the model's "
            "rollout block, or analyse from Prometheus"
        )
    return experiment.source


def arms(weights: dict[str, int], baseline: str | None, candidate: str | None) -> tuple[str, str]:
    """The baseline and candidate versions; every other version must have weight 0."""
    ordered = sorted(weights, key=int)
    base, cand = baseline or ordered[0], candidate or ordered[-1]
    for role, version in (("baseline", base), ("candidate", cand)):
        if version not in weights:
            raise ExperimentError(f"{role} version {version!r} is not in the weights {weights}")
    if base == cand:
        raise ExperimentError(
            f"baseline and candidate are both version {base}; pass --baseline and --candidate"
        )
    others = {v: w for v, w in weights.items() if v not in {base, cand} and w > 0}
    if others:
        raise ExperimentError(f"versions {sorted(others)} also take traffic; set their weights to 0 first")
    return base, cand


STARTED = "experiment started; the window begins now"


def analyze(experiment: Experiment, weights: dict[str, int], now: float | None = None) -> dict[str, Any]:
    """Analyse the current interval, append the analysis to the log and return the log entry.

    An experiment's first analysis only records its start and the counters as they stand, and holds:
    judging at once would weigh the baseline's whole lifetime against minutes of the candidate. After a
    step, the step's window begins once every server reports the new weights, plus the settle period
    (servectl/experiments/window.py); until then the analysis holds and says what it waits for."""
    baseline, candidate = arms(weights, experiment.baseline, experiment.candidate)
    state = log.current_state(log.read(experiment.log_path), experiment.model, candidate)
    now = time.time() if now is None else now
    source = counts_source(experiment)
    if state.experiment_start is None and not state.started:
        entry = _start(experiment, source, (baseline, candidate), weights, now)
    else:
        # After a step that ended the last experiment, the next one begins with that step's window.
        ended = state.step_start is not None and state.step_start == state.experiment_start
        begin = None if ended else state.experiment_start
        entry = _judge(experiment, source, (baseline, candidate), weights, state, begin, now)
    log.append(experiment.log_path, entry)
    return entry


def replay(experiment: Experiment, start: float, end: float, weights: dict[str, int]) -> dict[str, Any]:
    """Recompute the decision for the window from `start` to `end` from Prometheus, with what the log held
    before `end` (running p-values and intervals, failed checks, step times); nothing is appended.

    The weights are those every server reported at `end` (`weights`, the configured ones, only when no
    server reported any); the step boundary is read back as the analysis at `end` read it."""
    source = counts_source(experiment)
    applied = _weights_at(source, end)
    if applied:
        # Servers report 0 for every version they loaded; only the configured ones and those with traffic
        # take part, so a loaded but unconfigured version is not taken for the candidate.
        # In the config's order, as the analysis had them (the split test lists its arms in this order).
        extra = sorted((v for v, w in applied.items() if w > 0 and v not in weights), key=int)
        weights = {v: applied.get(v, 0) for v in [*weights, *extra]}
    baseline, candidate = arms(weights, experiment.baseline, experiment.candidate)
    before = [e for e in log.read(experiment.log_path) if float(e["time"]) < end]
    state = log.current_state(before, experiment.model, candidate)
    return _judge(experiment, source, (baseline, candidate), weights, state, start, end, event="replay")


def _weights_at(source: CountsSource, at: float) -> dict[str, int] | None:
    distinct = {tuple(sorted(seen.items())) for seen in source.reported(at)}
    if len(distinct) > 1:
        shown = "; ".join(sorted(window.show(dict(d)) for d in distinct))
        raise ExperimentError(
            f"servers routed by different weights at {at:.3f} ({shown}): a step was being applied; "
            "replay a window that ends after it was confirmed"
        )
    return {v: int(w) for v, w in distinct.pop()} if distinct else None


def _start(
    experiment: Experiment, source: CountsSource, pair: tuple[str, str], weights: dict[str, int], now: float
) -> dict[str, Any]:
    """The first analysis: the start, and each version's requests and errors so far (for the audit; counts
    are taken per series from its own sample at the start, promql.read_window; CloudWatch keeps no
    lifetime totals, so its snapshot is empty)."""
    start = experiment.start if experiment.start is not None else now
    snapshot = source.read(None, start, _live(weights))
    entry = _held(experiment.model, pair, weights, (start, start, now), [STARTED], 0)
    entry["snapshot"] = {
        v: {"requests": c.requests, "errors": c.errors} for v, c in sorted(snapshot.versions.items())
    }
    return entry


def _held(
    model: str,
    pair: tuple[str, str],
    weights: dict[str, int],
    bounds: tuple[float | None, float | None, float],
    reasons: list[str],
    failed_checks: int,
    event: str = "analysis",
) -> dict[str, Any]:
    """A hold that judged nothing: no window has begun, so no counts and no statistics."""
    baseline, candidate = pair
    return {
        "time": bounds[2],
        "event": event,
        "model": model,
        "baseline": baseline,
        "candidate": candidate,
        "step": weights[candidate],
        "window": {"experiment_start": bounds[0], "step_start": bounds[1], "end": bounds[2]},
        "counter_resets": [],
        "unreconciled": [],
        "decision": HOLD,
        "reasons": reasons,
        "statistics": {},
        "weights": dict(weights),
        "next_weights": dict(weights),
        "failed_checks": failed_checks,
        "counts": {v: VersionCounts().to_json() for v in sorted(weights)},
    }


def _live(weights: dict[str, int]) -> frozenset[str]:
    return frozenset(v for v, w in weights.items() if w > 0)


def _confirmed_at(
    source: CountsSource, weights: dict[str, int], state: log.State, end: float, event: str
) -> tuple[float | None, str | None, int]:
    """When the step's weights took effect (None and why: not yet), and on how many servers.

    A source that sees only the present is asked at every analysis whether the weights still hold (an
    endpoint changed since holds), and the step keeps the time an earlier analysis first saw them (log.py);
    a replay takes that logged time alone, since the present says nothing of the past."""
    assert state.step_start is not None
    remembered = state.confirmed_at if source.remembers_confirmation else None
    if remembered is not None and event == "replay":
        return remembered, None, 1
    confirmed = source.confirm(weights, state.step_start, end)
    if confirmed.confirmed_at is None or remembered is None:
        return confirmed.confirmed_at, confirmed.reason, confirmed.servers
    return remembered, None, confirmed.servers


def _boundary(
    experiment: Experiment,
    source: CountsSource,
    weights: dict[str, int],
    state: log.State,
    end: float,
    event: str = "analysis",
) -> tuple[float | None, str | None, float | None]:
    """Where the current step's window begins (None: at the experiment's start), or why it has not yet,
    and when its weights were confirmed (None: no step, or not yet)."""
    if state.step_start is None:
        return None, None, None
    confirmed_at, reason, servers = _confirmed_at(source, weights, state, end, event)
    if confirmed_at is None:
        return None, reason, None
    begins = confirmed_at + experiment.schedule.settle_seconds
    if begins > end:
        where = f"all {servers} servers" if source.holders == "servers" else source.holders
        return (
            None,
            (
                f"weights {window.show(dict(weights))} in effect on {where} since "
                f"{_iso(confirmed_at)}; settling {experiment.schedule.settle_seconds:g} s, the step's "
                f"window begins at {_iso(begins)} ({begins - end:.0f} s from now)"
            ),
            confirmed_at,
        )
    return begins, None, confirmed_at


def _judge(
    experiment: Experiment,
    source: CountsSource,
    pair: tuple[str, str],
    weights: dict[str, int],
    state: log.State,
    start: float | None,
    end: float,
    event: str = "analysis",
) -> dict[str, Any]:
    """Read the experiment's and the step's windows up to `end` and decide (`start` None: the experiment
    begins with the step's window)."""
    boundary, waiting, confirmed_at = _boundary(experiment, source, weights, state, end, event)
    if waiting is not None:
        held = _held(
            experiment.model, pair, weights, (start, None, end), [waiting], state.failed_checks, event
        )
        return _remember(held, confirmed_at, source)
    start = boundary if start is None else start
    step_start = max(start, boundary) if start is not None and boundary is not None else start
    live = _live(weights)
    whole = source.read(start, end, live)
    step = source.read(step_start, end, live) if step_start != start else whole
    # The strata: each completed step's own window, then this one (mixed-allocation gaps between them,
    # while new weights were confirmed and settled, are in the experiment's counts but in no stratum).
    done = [(s, e) for s, e in state.epochs if (start is None or s >= start) and e <= end]
    epochs = (*(source.read(s, e, live) for s, e in done), step)
    missing = sorted({*whole.missing, *step.missing, *(m for e in epochs for m in e.missing)})
    if missing:
        entry = _held(experiment.model, pair, weights, (start, step_start, end), [_unpublished(missing)],
                      state.failed_checks, event)  # fmt: skip
        return _with_bounds(entry, whole, step, confirmed_at, source)
    inputs = Inputs(
        baseline=pair[0],
        candidate=pair[1],
        weights=weights,
        experiment=whole,
        step=step,
        epochs=epochs,
        prior_p=state.prior_p,
        prior_ci=state.prior_ci,
        prior_srm_log_bf=state.srm_log_bf,
        prior_failed_checks=state.failed_checks,
        gate_passed=experiment.gate_passed,
        # The post-promotion guard's clock: since this step's window began (its weights confirmed, settled).
        step_seconds=end - step_start if step_start is not None else None,
    )
    optional = experiment.thresholds.optional_metrics | source.unmeasured
    analysis = decide(inputs, experiment.schedule, replace(experiment.thresholds, optional_metrics=optional))
    entry = {
        "time": end,
        "event": event,
        "model": experiment.model,
        "baseline": pair[0],
        "candidate": pair[1],
        "step": weights[pair[1]],
        "window": {"experiment_start": start, "step_start": step_start, "end": end},
        "counter_resets": whole.resets,
        "unreconciled": sorted({*whole.unreconciled, *step.unreconciled}),
        **analysis.to_json(),
    }
    return _with_bounds(entry, whole, step, confirmed_at, source)


def _unpublished(missing: list[str]) -> str:
    more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
    return (
        "the source has not published every minute of the window yet (never read as no traffic): "
        f"{'; '.join(missing[:6])}{more}"
    )


def _remember(entry: dict[str, Any], confirmed_at: float | None, source: CountsSource) -> dict[str, Any]:
    """A source that only sees the present keeps the step's first confirmation in the log (log.State)."""
    if source.remembers_confirmation and confirmed_at is not None:
        entry["window"]["confirmed_at"] = confirmed_at
    return entry


def _with_bounds(
    entry: dict[str, Any], whole: Window, step: Window, confirmed_at: float | None, source: CountsSource
) -> dict[str, Any]:
    """Record what a periodic source counted (whole minutes) and when it first saw the step confirmed."""
    _remember(entry, confirmed_at, source)
    for name, counted in (("experiment_counted", whole.aligned), ("step_counted", step.aligned)):
        if counted is not None:
            entry["window"][name] = {"from": counted[0], "to": counted[1]}
    if whole.notes:
        entry["notes"] = whole.notes
    if whole.aligned is not None:
        entry["window"]["alignment"] = (
            "whole minutes only (CloudWatch's one-minute periods): the partial minutes at each end of a "
            "window, and the minutes CloudWatch publishes late, are excluded"
        )
    return entry


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def apply(experiment: Experiment, entry: dict[str, Any], target: Target) -> str:
    """Carry out an analysis's decision on the target and log the step; returns what was done."""
    decision = entry["decision"]
    if decision not in {PROMOTE, ROLLBACK, COMPLETE}:
        return f"{decision}: weights unchanged ({_show(entry['weights'])})"
    unchanged = entry["next_weights"] == entry["weights"]
    done = "weights unchanged" if decision == COMPLETE and unchanged else target.apply(entry["next_weights"])
    log.append(
        experiment.log_path,
        {
            "time": time.time(),
            "event": "step",
            "model": experiment.model,
            "baseline": entry["baseline"],
            "candidate": entry["candidate"],
            "decision": decision,
            "weights": entry["next_weights"],
            "applied": done,
        },
    )
    return f"{decision}: {done}"


def _show(weights: dict[str, int]) -> str:
    return ", ".join(f"v{v} {w}%" for v, w in weights.items())


def report(entry: dict[str, Any]) -> str:
    """The analysis in words: decision, reasons, then the statistics."""
    replayed = " (replay: nothing logged)" if entry["event"] == "replay" else ""
    lines = [f"decision: {entry['decision'].upper()} (v{entry['candidate']} at {entry['step']}%){replayed}"]
    if entry.get("halted"):
        lines[0] += f", HALTED by {entry['halted']} until `servectl experiment restart`"
    lines += [f"  - {reason}" for reason in entry["reasons"]]
    bounds = entry["window"]
    shown = [
        _iso(t) if t is not None else "not begun" for t in (bounds["experiment_start"], bounds["step_start"])
    ]
    lines.append(f"  window: experiment from {shown[0]}, step from {shown[1]}, to {_iso(bounds['end'])}")
    if "experiment_counted" in bounds:  # a source of whole minutes (CloudWatch)
        counted = bounds["experiment_counted"]
        lines.append(
            f"  counted: whole minutes {_iso(counted['from'])} to {_iso(counted['to'])}; partial and "
            "unpublished minutes excluded"
        )
    for name, values in entry["statistics"].items():
        lines.append(f"  {name}: {json.dumps(values, sort_keys=True)}")
    for version, counts in sorted(entry["counts"].items()):
        lines.append(
            f"  v{version}: {counts['requests']:.0f} requests, {counts['errors']:.0f} errors, "
            f"{counts['converted']:.0f}/{counts['converted'] + counts['not_converted']:.0f} converted"
        )
    return "\n".join(lines)
