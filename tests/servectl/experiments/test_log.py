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
    assert state.prior_p == {"error_rate": 0.2}, "the SRM p-value is not sequential and is not carried"
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
