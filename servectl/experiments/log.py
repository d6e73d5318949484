"""The experiment log: one JSON line per analysis and per applied step, the audit trail of a rollout.

An experiment runs from its first analysis until a step that rolls back or completes it, or until a person
restarts it (`servectl experiment restart`, after a sample-ratio mismatch halted it). What the next
analysis needs (when the experiment and the current step began, the smallest p-value of each test so far,
the consecutive failed checks) is read back from the log, so `servectl experiment step` keeps no other state.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENDS_EXPERIMENT = frozenset({"rollback", "complete"})
RESTART = "restart"
"""The event a person appends to begin the experiment again (a new window, every running statistic reset)."""


def append(path: Path, entry: dict[str, Any]) -> None:
    """Append one entry as a JSON line (the directory is created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    """Every entry, oldest first; an absent log is empty."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class State:
    """Where the current experiment of a model stands, according to its log."""

    experiment_start: float | None = None
    """Start of the experiment's window (None: since the counters began)."""
    step_start: float | None = None
    """When the current weights were applied (None: since the experiment began)."""
    prior_p: dict[str, float] = field(default_factory=dict)
    """Smallest p-value of each sequential test so far."""
    prior_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Running intersection of each sequential test's interval so far (highest low, lowest high)."""
    failed_checks: int = 0
    """Consecutive analyses with a regression, up to the last one."""
    srm_log_bf: float = 0.0
    """Log Bayes factor of the SRM test at the end of the experiment's completed steps."""
    last_srm_log_bf: float = 0.0
    """The same at the latest analysis (what the current step ends with when the next step is applied)."""
    started: bool = False
    """Whether the experiment has had an analysis already."""
    epochs: list[tuple[float, float]] = field(default_factory=list)
    """The windows (start, end) of the experiment's completed steps: from where their analyses' step window
    began (the weights confirmed, plus the settle period) to the next step. The strata of the tests."""
    window_start: float | None = None
    """Where the current step's window began, per its latest analysis that judged (None: not yet)."""
    confirmed_at: float | None = None
    """When an analysis first saw the current step's weights in effect, for a source that only sees the
    present (SageMaker's DescribeEndpoint; source.py); None: not yet, or a source that recomputes it."""


def current_state(entries: list[dict[str, Any]], model: str, candidate: str) -> State:
    """The state of `model`'s experiment with `candidate`, from its log entries."""
    state = State()
    for entry in entries:
        if entry.get("model") != model or entry.get("candidate") != candidate:
            continue
        if entry["event"] == RESTART or (entry["event"] == "step" and entry["decision"] in ENDS_EXPERIMENT):
            state = State(experiment_start=entry["time"], step_start=entry["time"])
            continue
        if entry["event"] == "step":
            if state.window_start is not None:
                state.epochs.append((state.window_start, float(entry["time"])))
            state.step_start, state.window_start, state.confirmed_at = entry["time"], None, None
            state.failed_checks = 0
            state.srm_log_bf = state.last_srm_log_bf
            continue
        if not state.started:
            state.experiment_start = entry["window"]["experiment_start"]
            state.started = True
        state.failed_checks = entry["failed_checks"]
        window = entry.get("window", {})
        if state.confirmed_at is None and window.get("confirmed_at") is not None:
            state.confirmed_at = float(window["confirmed_at"])
        begun = (
            window.get("step_start")
            if window.get("step_start") is not None
            else window.get("experiment_start")
        )
        if entry["statistics"] and begun is not None:  # an analysis that judged a window
            state.window_start = float(begun)
        for test, stats in entry["statistics"].items():
            # An SRM entry without log_bf is from the chi-square test, whose p-value was not sequential.
            if test == "srm" and isinstance(stats, dict) and "log_bf" not in stats:
                continue
            if isinstance(stats, dict) and "p_value" in stats:
                p = float(stats["p_value"])
                state.prior_p[test] = min(p, state.prior_p.get(test, 1.0))
                if "running_ci" in stats:  # the intersection up to that analysis
                    state.prior_ci[test] = (float(stats["running_ci"][0]), float(stats["running_ci"][1]))
        state.last_srm_log_bf = float(entry["statistics"].get("srm", {}).get("log_bf", state.srm_log_bf))
    return state
