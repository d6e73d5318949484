"""The checks' names against the stack config's (the checks by rule live in test_checks_errors.py and
test_decision_checks.py)."""

from servectl.experiments import checks
from stacks import settings


def test_the_stack_config_marks_optional_exactly_the_checks_feedback_metrics() -> None:
    assert checks.FEEDBACK_METRICS == settings.FEEDBACK_METRICS
    assert set(checks.FEEDBACK_METRICS) < set(checks.ROLLBACK_TESTS), (
        "each feedback metric is a rollback test"
    )
