from pathlib import Path

from servectl.experiments import log


def _analysis(time: float, p: float, failed: int = 0, start: float | None = None,
              ci: tuple[float, float] = (-0.01, 0.02)) -> dict[str, object]:  # fmt: skip
    statistics = {"error_rate": {"p_value": p, "running_ci": list(ci)}, "srm": {"p_value": 0}}
    return {
        "time": time, "event": "analysis", "model": "m", "candidate": "2", "failed_checks": failed,
        "window": {"experiment_start": start}, "statistics": statistics,
    }  # fmt: skip


def _step(time: float, decision: str) -> dict[str, object]:
    return {"time": time, "event": "step", "model": "m", "candidate": "2", "decision": decision}


def test_log_round_trips_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "log.jsonl"
    log.append(path, _analysis(1.0, 0.5))
    log.append(path, _step(2.0, "promote"))
    assert [e["event"] for e in log.read(path)] == ["analysis", "step"]
    assert len(path.read_text().splitlines()) == 2, "one line per entry"


def test_state_follows_steps_and_keeps_the_smallest_p_value() -> None:
    entries = [_analysis(1.0, 0.5), _analysis(2.0, 0.2, failed=1), _step(3.0, "promote"), _analysis(4.0, 0.3)]
    state = log.current_state(entries, "m", "2")
    assert state.experiment_start is None and state.step_start == 3.0, state
    assert state.prior_p == {"error_rate": 0.2}, "a chi-square SRM p-value (no log_bf) is not carried"
    assert state.failed_checks == 0


def test_state_keeps_the_running_intersection_of_each_interval() -> None:
    entries = [_analysis(1.0, 0.5, ci=(-0.03, 0.02)), _analysis(2.0, 0.4, ci=(-0.01, 0.02)),
               _step(3.0, "promote"), _analysis(4.0, 0.3, ci=(-0.01, 0.01))]  # fmt: skip
    state = log.current_state(entries, "m", "2")
    assert state.prior_ci == {"error_rate": (-0.01, 0.01)}, "the last analysis's, across steps"
    ended = log.current_state([*entries, _step(5.0, "rollback")], "m", "2")
    assert ended.prior_ci == {}, "a new experiment starts with no interval"


def test_a_rollback_ends_the_experiment() -> None:
    entries = [_analysis(1.0, 0.01, failed=1), _step(2.0, "rollback")]
    state = log.current_state(entries, "m", "2")
    assert (state.experiment_start, state.step_start, state.prior_p) == (2.0, 2.0, {}), state


def _srm_analysis(time: float, p: float, log_bf: float) -> dict[str, object]:
    entry = _analysis(time, 0.5)
    entry["statistics"] = {"srm": {"p_value": p, "log_bf": log_bf, "tested": True}}
    return entry


def test_the_sequential_srm_keeps_its_running_minimum_and_its_completed_steps_evidence() -> None:
    entries = [_srm_analysis(1.0, 0.3, 1.2), _srm_analysis(2.0, 0.5, 0.7), _step(3.0, "promote"),
               _srm_analysis(4.0, 0.4, 1.5)]  # fmt: skip
    state = log.current_state(entries, "m", "2")
    assert state.prior_p == {"srm": 0.3}, state.prior_p
    assert state.srm_log_bf == 0.7, "the last analysis before the step is what that step ended with"
    assert log.current_state(entries[:2], "m", "2").srm_log_bf == 0.0, "no step completed yet"


def test_a_restart_begins_the_experiment_again() -> None:
    halted = [_srm_analysis(1.0, 1e-6, 14.0), _step(2.0, "promote"), _srm_analysis(3.0, 1e-7, 16.0)]
    restart = {"time": 4.0, "event": "restart", "model": "m", "candidate": "2", "reason": "fixed"}
    state = log.current_state([*halted, restart], "m", "2")
    assert (state.prior_p, state.srm_log_bf, state.experiment_start) == ({}, 0.0, 4.0), state
    other = log.current_state([*halted, restart | {"candidate": "3"}], "m", "2")
    assert other.prior_p == {"srm": 1e-7}, "a restart of another candidate's experiment changes nothing here"


def _judged(time: float, experiment_start: float, step_start: float | None) -> dict[str, object]:
    entry = _analysis(time, 0.5, start=experiment_start)
    entry["window"] = {"experiment_start": experiment_start, "step_start": step_start, "end": time}
    return entry


def test_each_completed_step_is_a_stratum_from_its_confirmed_window_to_the_next_step() -> None:
    held = _judged(12.0, 1.0, None)
    held["statistics"] = {}  # waiting for the new weights: judged nothing, began no window
    entries = [_judged(5.0, 1.0, 1.0), _step(10.0, "promote"), held, _judged(20.0, 1.0, 14.0),
               _step(30.0, "promote"), _judged(40.0, 1.0, 33.0)]  # fmt: skip
    state = log.current_state(entries, "m", "2")
    # Step one from the experiment's start to its promotion; step two from where its window began (the
    # weights confirmed plus the settle period, 14.0), not from the step at 10.0.
    assert state.epochs == [(1.0, 10.0), (14.0, 30.0)], state.epochs
    assert state.window_start == 33.0
    ended = log.current_state([*entries, _step(50.0, "rollback")], "m", "2")
    assert ended.epochs == [], "a new experiment has no strata yet"


def test_a_steps_first_confirmation_is_kept_until_the_next_step() -> None:
    """A source that sees only the present (SageMaker's DescribeEndpoint) logs when it first saw a step's
    weights; the step keeps that time, and the next step forgets it."""
    waiting = _judged(12.0, 1.0, None) | {"statistics": {}}
    seen = _judged(13.0, 1.0, None) | {"statistics": {}}
    seen["window"] = {"experiment_start": 1.0, "step_start": None, "end": 13.0, "confirmed_at": 13.0}
    later = _judged(20.0, 1.0, 13.5)
    later["window"] = {"experiment_start": 1.0, "step_start": 13.5, "end": 20.0, "confirmed_at": 19.0}
    entries = [_judged(5.0, 1.0, 1.0), _step(10.0, "promote"), waiting]
    assert log.current_state(entries, "m", "2").confirmed_at is None, "not seen yet"
    assert log.current_state([*entries, seen, later], "m", "2").confirmed_at == 13.0, "the first one stands"
    assert log.current_state([*entries, seen, _step(30.0, "promote")], "m", "2").confirmed_at is None
