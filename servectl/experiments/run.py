"""One analysis and one step, end to end: read the log, query Prometheus, decide, log, apply.

This is what `servectl experiment analyze` and `step` run; tests and the demo call it directly.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servectl.experiments import log
from servectl.experiments.decision import COMPLETE, PROMOTE, ROLLBACK, Inputs, Schedule, Thresholds, decide
from servectl.experiments.promql import Prometheus, read_window
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
    """Where the window begins when the log has no start yet (None: since the counters began)."""


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


def analyze(experiment: Experiment, weights: dict[str, int], now: float | None = None) -> dict[str, Any]:
    """Analyse the current interval, append the analysis to the log and return the log entry."""
    baseline, candidate = arms(weights, experiment.baseline, experiment.candidate)
    state = log.current_state(log.read(experiment.log_path), experiment.model, candidate)
    if state.experiment_start is None:
        state.experiment_start = experiment.start
    now = time.time() if now is None else now
    prom = Prometheus(experiment.prometheus)
    step_start = state.step_start if state.step_start is not None else state.experiment_start
    whole = read_window(prom, experiment.model, state.experiment_start, now)
    step = (
        read_window(prom, experiment.model, step_start, now)
        if step_start != state.experiment_start
        else whole
    )
    inputs = Inputs(
        baseline=baseline,
        candidate=candidate,
        weights=weights,
        experiment=whole,
        step=step,
        prior_p=state.prior_p,
        prior_ci=state.prior_ci,
        prior_srm_log_bf=state.srm_log_bf,
        prior_failed_checks=state.failed_checks,
        gate_passed=experiment.gate_passed,
    )
    analysis = decide(inputs, experiment.schedule, experiment.thresholds)
    entry = {
        "time": now,
        "event": "analysis",
        "model": experiment.model,
        "baseline": baseline,
        "candidate": candidate,
        "step": weights[candidate],
        "window": {"experiment_start": state.experiment_start, "step_start": step_start, "end": now},
        "counter_resets": whole.resets,
        "unreconciled": sorted({*whole.unreconciled, *step.unreconciled}),
        **analysis.to_json(),
    }
    log.append(experiment.log_path, entry)
    return entry


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
    lines = [f"decision: {entry['decision'].upper()} (v{entry['candidate']} at {entry['step']}%)"]
    if entry.get("halted"):
        lines[0] += f", HALTED by {entry['halted']} until `servectl experiment restart`"
    lines += [f"  - {reason}" for reason in entry["reasons"]]
    for name, values in entry["statistics"].items():
        lines.append(f"  {name}: {json.dumps(values, sort_keys=True)}")
    for version, counts in sorted(entry["counts"].items()):
        lines.append(
            f"  v{version}: {counts['requests']:.0f} requests, {counts['errors']:.0f} errors, "
            f"{counts['converted']:.0f}/{counts['converted'] + counts['not_converted']:.0f} converted"
        )
    return "\n".join(lines)
