"""The controller's metrics from the log entries it records (the alerts read these; their promtool tests
are in stacks/monitoring/rules/experiment-rules_test.yaml)."""

from prometheus_client import CollectorRegistry

from servectl.experiments.controller import Metrics


def _entry(decision: str, halted: str | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"model": "m", "candidate": "2", "decision": decision, "time": 100.0,
                                "next_weights": {"1": 95, "2": 5}}  # fmt: skip
    if halted is not None:
        entry["halted"] = halted
    return entry


def test_a_sample_ratio_mismatch_sets_the_halted_gauge_until_an_analysis_without_it() -> None:
    metrics = Metrics(CollectorRegistry())
    labels = {"model": "m", "candidate": "2", "reason": "srm"}
    metrics.record(_entry("hold", halted="srm"))
    assert metrics.registry.get_sample_value("serving_experiment_halted", labels) == 1
    metrics.record(_entry("hold"))  # after `servectl experiment restart`
    assert metrics.registry.get_sample_value("serving_experiment_halted", labels) == 0
