import sys

import pytest

from servectl.retrain_receiver.alerts import Trigger
from servectl.retrain_receiver.config import ReceiverConfig
from servectl.retrain_receiver.runner import Result, Runner, command_line, run_process
from tests.servectl.retrain_receiver.conftest import WAIT, FakeCommand, Log


def trigger(starts: str = "2026-11-30T10:00:00Z", model: str = "tabular-classifier") -> Trigger:
    return Trigger(alertname="ModelInputDriftCritical", model=model, version="1", starts_at=starts)


def test_the_command_gets_the_contracts_arguments(config: ReceiverConfig) -> None:
    argv = command_line(config, trigger())
    expected = ["retrain", "--model", "tabular-classifier", "--data", "s3://b/t.csv",
                "--trigger", "ModelInputDriftCritical:tabular-classifier:1:2026-11-30T10:00:00Z"]  # fmt: skip
    assert argv == expected, argv


def test_one_retrain_per_model_at_a_time_and_one_queued(
    config: ReceiverConfig, command: FakeCommand, log: Log
) -> None:
    runner = Runner(config, log, command)
    assert runner.submit(trigger("t1")) == "started"
    command.wait_calls(1)
    decisions = [runner.submit(trigger(t)) for t in ("t1", "t2", "t2", "t3")]
    assert decisions == ["already_running", "queued", "already_queued", "coalesced"], decisions
    assert runner.status()["tabular-classifier"] == {
        "running": "ModelInputDriftCritical:tabular-classifier:1:t1",
        "queued": "ModelInputDriftCritical:tabular-classifier:1:t2",
    }, runner.status()
    command.release()
    command.wait_calls(2)
    command.release()
    assert runner.wait_idle(WAIT), runner.status()
    assert [c[-1] for c in command.calls] == [
        "ModelInputDriftCritical:tabular-classifier:1:t1",
        "ModelInputDriftCritical:tabular-classifier:1:t2",
    ], command.calls
    assert command.most_active == 1, "two retrains of one model overlapped"


def test_different_models_retrain_in_parallel(config: ReceiverConfig, command: FakeCommand, log: Log) -> None:
    runner = Runner(config, log, command)
    runner.submit(trigger(model="tabular-classifier"))
    runner.submit(trigger(model="text-model"))
    command.wait_calls(2)
    assert command.most_active == 2, "the second model waited for the first"
    command.release(2)
    assert runner.wait_idle(WAIT), runner.status()


def test_each_run_is_logged_with_exit_code_and_outcome(
    config: ReceiverConfig, command: FakeCommand, log: Log
) -> None:
    command.results = [Result(3, "refused", "candidate worse by 0.04 on the held-out set")]
    runner = Runner(config, log, command)
    runner.submit(trigger())
    command.release()
    assert runner.wait_idle(WAIT), runner.status()
    [done] = log.events("retrain_finished")
    assert (done["exit_code"], done["outcome"], done["reason"]) == (
        3,
        "refused",
        "candidate worse by 0.04 on the held-out set",
    ), done
    assert done["trigger"] == trigger().key and done["model"] == "tabular-classifier", done
    assert runner.runs == 1, runner.runs


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(0, "published"), (1, "failed"), (2, "bad_input"), (3, "refused"), (4, "skipped"), (9, "failed")],
)
def test_exit_codes_map_to_the_contracts_outcomes(code: int, outcome: str) -> None:
    script = f"import sys; print('first'); print('the reason', file=sys.stderr); sys.exit({code})"
    result = run_process([sys.executable, "-c", script], timeout=WAIT)
    assert result == Result(code, outcome, "the reason"), result


def test_a_command_over_its_timeout_is_killed_and_failed() -> None:
    result = run_process([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert result.exit_code is None and result.outcome == "failed" and "timed out" in result.reason, result


def test_a_missing_command_is_a_failure_not_a_crash() -> None:
    result = run_process(["/nonexistent/servectl", "retrain"], timeout=WAIT)
    assert result.outcome == "failed" and "could not start" in result.reason, result
