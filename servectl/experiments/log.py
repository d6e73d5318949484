"""The experiment log: one JSON line per analysis and per applied step, the audit trail of a rollout.

An experiment runs from its first analysis until a step that rolls back or completes it. What the next
analysis needs (when the experiment and the current step began, the smallest p-value of each test so far,
the consecutive failed checks) is read back from the log, so `servectl experiment step` keeps no other state.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENDS_EXPERIMENT = frozenset({"rollback", "complete"})


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
    started: bool = False
    """Whether the experiment has had an analysis already."""


def current_state(entries: list[dict[str, Any]], model: str, candidate: str) -> State:
    """The state of `model`'s experiment with `candidate`, from its log entries."""
    state = State()
    for entry in entries:
        if entry.get("model") != model or entry.get("candidate") != candidate:
            continue
        if entry["event"] == "step":
            if entry["decision"] in ENDS_EXPERIMENT:
                state = State(experiment_start=entry["time"], step_start=entry["time"])
            else:
                state.step_start = entry["time"]
                state.failed_checks = 0
            continue
        if not state.started:
            state.experiment_start = entry["window"]["experiment_start"]
            state.started = True
        state.failed_checks = entry["failed_checks"]
        for test, stats in entry["statistics"].items():
            if isinstance(stats, dict) and "p_value" in stats and test != "srm":
                p = float(stats["p_value"])
                state.prior_p[test] = min(p, state.prior_p.get(test, 1.0))
                if "running_ci" in stats:  # the intersection up to that analysis
                    state.prior_ci[test] = (float(stats["running_ci"][0]), float(stats["running_ci"][1]))
    return state
