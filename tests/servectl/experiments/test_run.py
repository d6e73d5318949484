"""The printed report: of an analysis, of entries that judged nothing (the start, a step still waiting),
and of a replay."""

from servectl.experiments.decision import decide
from servectl.experiments.run import STARTED, _held, report
from tests.servectl.experiments.decision_inputs import SCHEDULE, TH, arm, inputs

WINDOW = {"experiment_start": 1_800_000_000.0, "step_start": 1_800_000_000.0, "end": 1_800_000_060.0}


def _entry(base: float, cand: float) -> dict[str, object]:
    analysis = decide(inputs(arm(base), arm(cand)), SCHEDULE, TH).to_json()
    return {"event": "analysis", "candidate": "2", "step": 50, "window": WINDOW, **analysis}


def test_a_halted_rollout_says_so_and_how_it_resumes() -> None:
    first = report(_entry(5600, 4400)).splitlines()[0]
    assert first == "decision: HOLD (v2 at 50%), HALTED by srm until `servectl experiment restart`", first
    assert "HALTED" not in report(_entry(5000, 5000)), "a rollout nothing halted says nothing of it"


def test_a_start_reports_its_window_and_no_statistics() -> None:
    entry = _held("m", ("1", "2"), {"1": 95, "2": 5}, (1_800_000_000.0, 1_800_000_000.0, 1_800_000_000.0),
                  [STARTED], 0)  # fmt: skip
    lines = report(entry).splitlines()
    assert lines[:2] == ["decision: HOLD (v2 at 5%)", f"  - {STARTED}"], lines
    assert lines[2] == (
        "  window: experiment from 2027-01-15T08:00:00+00:00, step from 2027-01-15T08:00:00+00:00, "
        "to 2027-01-15T08:00:00+00:00"
    ), lines
    assert lines[3:] == [
        "  v1: 0 requests, 0 errors, 0/0 converted",
        "  v2: 0 requests, 0 errors, 0/0 converted",
    ]


def test_a_waiting_step_says_its_window_has_not_begun_and_a_replay_says_nothing_was_logged() -> None:
    entry = _held("m", ("1", "2"), {"1": 75, "2": 25}, (1_800_000_000.0, None, 1_800_000_060.0),
                  ["weights not yet reported"], 1, event="replay")  # fmt: skip
    lines = report(entry).splitlines()
    assert lines[0] == "decision: HOLD (v2 at 25%) (replay: nothing logged)", lines
    assert "step from not begun" in lines[2] and entry["failed_checks"] == 1, (lines, entry)
