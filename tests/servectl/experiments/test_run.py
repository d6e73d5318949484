"""The printed report of an analysis."""

from servectl.experiments.decision import decide
from servectl.experiments.run import report
from tests.servectl.experiments.decision_inputs import SCHEDULE, TH, arm, inputs


def _entry(base: float, cand: float) -> dict[str, object]:
    return {"candidate": "2", "step": 50, **decide(inputs(arm(base), arm(cand)), SCHEDULE, TH).to_json()}


def test_a_halted_rollout_says_so_and_how_it_resumes() -> None:
    first = report(_entry(5600, 4400)).splitlines()[0]
    assert first == "decision: HOLD (v2 at 50%), HALTED by srm until `servectl experiment restart`", first
    assert "HALTED" not in report(_entry(5000, 5000)), "a rollout nothing halted says nothing of it"
