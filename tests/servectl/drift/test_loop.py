"""The drift loop end to end with real components (issue 15 point 7): the serving image as a process, a
real Prometheus with the shipped drift rules (windows scaled), a real Alertmanager with the stack's config,
`servectl retrain-receiver` and `servectl retrain` as processes, the experiment code.

What no narrower test shows: the shipped PSI expressions fire on live counters from sampled traffic, the
alert travels Prometheus -> Alertmanager -> receiver -> retrain, and the running server serves the retrained
version through SIGHUP, with the timings of each hop.
"""

import json
import time
from pathlib import Path

import pytest

from servectl.drift.loop import CRITICAL, WARNING, LoopSettings, run_loop
from servectl.drift.synthetic import MODEL
from servectl.experiments.run import STARTED

pytestmark = pytest.mark.slow

BUDGET_S = 180.0


def test_shift_alert_retrain_canary_and_decision(tmp_path: Path) -> None:
    settings = LoopSettings()
    started = time.monotonic()
    result = run_loop(tmp_path, settings, echo=print)
    took = time.monotonic() - started
    print(f"loop took {took:.1f} s; timings {result.timings}")

    # 2. Normal traffic: no drift alert, every PSI below the warning.
    assert not result.alerts_during_normal, (
        f"a drift alert during normal traffic: {result.alerts_during_normal}"
    )
    assert len(result.normal_psi) == 30 and max(result.normal_psi.values()) < WARNING, result.normal_psi

    # 3. Shifted traffic: the critical alert on shifted features only, their PSI past it, the rest calm.
    shifted = set(settings.features)
    assert result.alert_features and set(result.alert_features) <= shifted, result.alert_features
    assert all(result.shifted_psi[f] > CRITICAL for f in shifted), result.shifted_psi
    calm = {f: v for f, v in result.shifted_psi.items() if f not in shifted}
    assert max(calm.values()) < WARNING, f"an unshifted feature past the warning: {calm}"

    # The receiver ran the retrain for the alert; v2 has its profile and card and serves at the first step.
    run = result.retrain
    assert (run["outcome"], run["exit_code"]) == ("published", 0), run
    assert run["trigger"].startswith(f"ModelInputDriftCritical:{MODEL}:1:"), run
    version_dir = tmp_path / "models" / MODEL / "2"
    card = json.loads((version_dir / "model_card.json").read_text())
    assert (version_dir / "profile.json").is_file() and card["parent_version"] == "1", card
    assert card["trigger"] == run["trigger"], "the card records the alert that caused it"
    assert result.weights == {"1": 95, "2": 5}, result.weights
    served = result.traffic["requests_by_version"]
    assert served.get("2", 0) > 0, served
    accuracy = result.traffic["accuracy_on_shifted_traffic"]
    assert accuracy["2"] > accuracy["1"], (
        f"v2, trained on the shifted population, is more accurate: {accuracy}"
    )
    assert set(result.traffic["feedback_statuses"]) == {"200"}, result.traffic["feedback_statuses"]

    # 4. The experiment decided, with reasons that match the decision.
    experiment = result.experiment
    print(experiment["report"])
    decision, after = experiment["decision"], experiment["next_weights"]
    assert decision in {"hold", "promote", "rollback"}, experiment
    assert experiment["reasons"], "a decision comes with its reasons"
    expected_v2 = {"hold": 5, "promote": 25, "rollback": 0}[decision]
    assert after["2"] == expected_v2, f"{decision} leads to v2 at {expected_v2}%: {experiment}"
    logged = [json.loads(line) for line in (tmp_path / "experiment.jsonl").read_text().splitlines()]
    assert [e["event"] for e in logged] == ["analysis", "analysis"], "the start, one analysis, no step"
    assert logged[0]["reasons"] == [STARTED], f"the first analysis only records the start: {logged[0]}"
    assert (logged[1]["decision"], logged[1]["counts"]) == (decision, experiment["counts"]), logged[1]
    counts = experiment["counts"]
    labelled = {v: counts[v]["correct"] + counts[v]["incorrect"] for v in ("1", "2")}
    assert min(labelled.values()) > 0, f"the labels reach the experiment's accuracy counts: {labelled}"
    share = counts["2"]["requests"] / (counts["1"]["requests"] + counts["2"]["requests"])
    assert 0.02 < share < 0.10, (
        f"v2 serves the first step's 5% share after the canary, not {share:.3f}: {counts}"
    )

    # Timings, each hop bounded.
    timings = result.timings
    assert set(timings) == {"shift_to_alert", "alert_to_receiver", "retrain", "alert_to_canary"}, timings
    assert 0 < timings["shift_to_alert"] < settings.step_timeout, timings
    assert timings["alert_to_receiver"] < timings["alert_to_canary"], timings
    assert took < BUDGET_S, f"the loop took {took:.0f} s, over its {BUDGET_S:.0f} s budget"
