import pytest

from servectl.experiments.decision import HOLD, PROMOTE, ROLLBACK, Inputs, Schedule, decide
from servectl.experiments.promql import VersionCounts, Window
from tests.servectl.experiments.decision_inputs import TH

FAST = {0.005: 900.0, 0.01: 990.0, 0.025: 1000.0, float("inf"): 1000.0}


def _counts(requests: float, errors: float = 0.0, buckets: dict[float, float] | None = None) -> VersionCounts:
    scale = requests / 1000
    return VersionCounts(
        requests=requests,
        weighted=requests,
        errors=errors,
        latency_buckets={k: v * scale for k, v in (buckets or FAST).items()},
    )


def _inputs(base: VersionCounts, cand: VersionCounts, weights: dict[str, int], **extra: object) -> Inputs:
    window = Window(versions={"1": base, "2": cand})
    return Inputs(baseline="1", candidate="2", weights=weights, experiment=window, step=window, **extra)  # type: ignore[arg-type]


SCHEDULE = Schedule(steps=(5, 25, 50, 100), min_samples=500, failed_checks=1)


def test_healthy_candidate_is_promoted_to_the_next_step() -> None:
    result = decide(_inputs(_counts(5000), _counts(5000), {"1": 50, "2": 50}), SCHEDULE, TH)
    assert result.decision == PROMOTE, result.reasons
    assert result.next_weights == {"1": 0, "2": 100}, result.next_weights


def test_weights_between_steps_promote_to_the_next_step_above() -> None:
    result = decide(_inputs(_counts(27000), _counts(3000), {"1": 90, "2": 10}), SCHEDULE, TH)
    assert result.decision == PROMOTE and result.next_weights == {"1": 75, "2": 25}, result.reasons


def test_error_regression_rolls_back_with_the_numbers_in_the_reason() -> None:
    result = decide(_inputs(_counts(5000, 50), _counts(5000, 250), {"1": 50, "2": 50}), SCHEDULE, TH)
    assert result.decision == ROLLBACK and result.next_weights == {"1": 100, "2": 0}, result.reasons
    assert "error rate: v2 5.00% vs v1 1.00%" in result.reasons[0], result.reasons


def test_failed_checks_hold_before_they_roll_back() -> None:
    schedule = Schedule(min_samples=500, failed_checks=2)
    base, cand = _counts(5000, 50), _counts(5000, 250)
    first = decide(_inputs(base, cand, {"1": 50, "2": 50}), schedule, TH)
    second = decide(_inputs(base, cand, {"1": 50, "2": 50}, prior_failed_checks=1), schedule, TH)
    assert (first.decision, first.failed_checks) == (HOLD, 1), first.reasons
    assert (second.decision, second.failed_checks) == (ROLLBACK, 2), second.reasons


def test_sample_ratio_mismatch_halts_even_a_healthy_candidate() -> None:
    result = decide(_inputs(_counts(5600), _counts(4400), {"1": 50, "2": 50}), SCHEDULE, TH)
    assert (result.decision, result.halted) == (HOLD, "srm"), result.reasons
    expected = "sample-ratio mismatch: randomised traffic this step v1 56.0%, v2 44.0%"
    assert result.reasons[0].startswith(expected), result.reasons


def test_too_few_candidate_samples_hold() -> None:
    result = decide(_inputs(_counts(3800), _counts(200), {"1": 95, "2": 5}), SCHEDULE, TH)
    assert result.decision == HOLD and "served 200 of the 500" in result.reasons[0], result.reasons


def test_slower_candidate_rolls_back_on_latency() -> None:
    slow = {0.005: 300.0, 0.01: 700.0, 0.025: 1000.0, float("inf"): 1000.0}
    result = decide(_inputs(_counts(5000), _counts(5000, 0, slow), {"1": 50, "2": 50}), SCHEDULE, TH)
    assert result.decision == ROLLBACK and result.reasons[0].startswith("latency: v2 is slower"), (
        result.reasons
    )


def test_failed_load_test_gate_rolls_back() -> None:
    inputs = _inputs(_counts(5000), _counts(5000), {"1": 50, "2": 50}, gate_passed=False)
    result = decide(inputs, SCHEDULE, TH)
    assert result.decision == ROLLBACK and "gate failed" in result.reasons[0], result.reasons


def test_conversion_drop_rolls_back() -> None:
    base, cand = _counts(5000), _counts(5000)
    base.converted, base.not_converted = 1500, 3500
    cand.converted, cand.not_converted = 1000, 4000
    result = decide(_inputs(base, cand, {"1": 50, "2": 50}), SCHEDULE, TH)
    assert result.decision == ROLLBACK and result.reasons[0].startswith("conversion: v2 20.00%"), (
        result.reasons
    )


def test_complete_when_the_candidate_serves_everything() -> None:
    # The whole experiment compares both versions; the last step has the candidate alone.
    whole = Window(versions={"1": _counts(8000), "2": _counts(8000)})
    step = Window(versions={"2": _counts(3000)})
    inputs = Inputs(baseline="1", candidate="2", weights={"1": 0, "2": 100}, experiment=whole, step=step)
    result = decide(inputs, SCHEDULE, TH)
    assert result.decision == "complete", result.reasons


@pytest.mark.parametrize("prior", [0.01, 0.04])
def test_earlier_significance_is_kept_as_a_running_minimum(prior: float) -> None:
    inputs = _inputs(_counts(5000, 50), _counts(5000, 60), {"1": 50, "2": 50}, prior_p={"error_rate": prior})
    result = decide(inputs, SCHEDULE, TH)
    assert result.statistics["error_rate"]["p_value"] == prior, result.statistics["error_rate"]


def _with_values(counts: VersionCounts, n: float, mean: float, sd: float) -> VersionCounts:
    counts.values, counts.value_sum = n, n * mean
    counts.value_squares = (n - 1) * sd * sd + n * mean * mean
    return counts


def test_value_regression_rolls_back() -> None:
    base = _with_values(_counts(5000), 2000, mean=10.0, sd=4.0)
    cand = _with_values(_counts(5000), 2000, mean=9.0, sd=4.0)
    result = decide(_inputs(base, cand, {"1": 50, "2": 50}), SCHEDULE, TH)
    assert result.decision == ROLLBACK, result.reasons
    assert result.reasons[0].startswith("value: v2 mean 9 vs v1 10 (-0.250 sd"), result.reasons


def test_equal_values_do_not_block_promotion() -> None:
    # Enough values that the always-valid interval fits inside the 0.05 sd margin.
    base = _with_values(_counts(5000), 12000, mean=10.0, sd=4.0)
    cand = _with_values(_counts(5000), 12000, mean=10.0, sd=4.0)
    result = decide(_inputs(base, cand, {"1": 50, "2": 50}), SCHEDULE, TH)
    assert result.decision == PROMOTE, result.reasons
    assert result.statistics["value"]["tested"] is True, result.statistics
