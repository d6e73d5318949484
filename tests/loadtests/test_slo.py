"""SLO gates as pure functions: parsing with errors that name the key, checks, verdicts and the table."""

import math
from pathlib import Path

import pytest

from loadtests.config import ConfigError
from loadtests.slo import (
    BUNDLED_SLO,
    Measured,
    Scope,
    Threshold,
    check,
    evaluate,
    exit_code,
    load_slo,
    parse_slo,
    render,
    require_loaded,
)

DEPLOY_SLO = Path(BUNDLED_SLO).with_name("slo-deploy.yaml")

OVERALL: Scope = (None, None)
V2: Scope = ("m", "2")


def measured(
    requests: int = 100, failures: int = 0, p95: float = 20.0, share: float | None = None
) -> Measured:
    latency = {"p50": 5.0, "p90": 15.0, "p95": p95, "p99": 40.0, "max": 90.0}
    return Measured(requests=requests, failures=failures, rps=50.0, latency_ms=latency, share=share)


def test_bundled_slo_parses_with_variant_gates() -> None:
    scopes = {t.scope for t in load_slo(BUNDLED_SLO)}
    assert {OVERALL, ("tabular-classifier", "1"), ("tabular-classifier", "2")} <= scopes, scopes


def test_deploy_slo_gates_only_tabular_classifier_overall_and_per_variant() -> None:
    thresholds = load_slo(DEPLOY_SLO)
    scopes = {t.scope for t in thresholds}
    expected = {("tabular-classifier", None), ("tabular-classifier", "1"), ("tabular-classifier", "2")}
    assert scopes == expected, f"the deploy gates must cover exactly the served model and variants: {scopes}"
    for scope in expected:
        metrics = {t.metric for t in thresholds if t.scope == scope}
        assert {"p95_ms", "error_rate", "min_requests"} <= metrics, f"{scope}: {metrics}"
    assert not {"min_share", "max_share"} & {t.metric for t in thresholds}, (
        "each stack sets its own weights and rollouts move them; the smoke must not pin a split"
    )
    require_loaded(thresholds, ["tabular-classifier"], str(DEPLOY_SLO))


def test_a_gate_on_a_model_not_loaded_names_the_file_and_key() -> None:
    thresholds = load_slo(BUNDLED_SLO)
    with pytest.raises(
        ConfigError, match=r"slo.yaml: models.tabular-classifier-int8: gates a model this run does not load"
    ):
        require_loaded(thresholds, ["tabular-classifier"], str(BUNDLED_SLO))
    require_loaded(thresholds, ["tabular-classifier", "tabular-classifier-int8", "other"], "s")
    overall_only = [Threshold(scope=OVERALL, metric="p95_ms", limit=1)]
    require_loaded(overall_only, [], "s")  # an overall gate names no model


def test_parse_reads_every_scope() -> None:
    document = {
        "overall": {"p95_ms": 100},
        "models": {"m": {"error_rate": 0.01, "variants": {2: {"max_share": 0.2}}}},
    }
    assert parse_slo(document, "s") == [
        Threshold(scope=OVERALL, metric="p95_ms", limit=100.0),
        Threshold(scope=("m", None), metric="error_rate", limit=0.01),
        Threshold(scope=V2, metric="max_share", limit=0.2),
    ]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"overall": {"p96_ms": 1}}, "s: overall.p96_ms: unknown key; expected one of error_rate"),
        ({"overall": {"p95_ms": "fast"}}, "s: overall.p95_ms: expected a number, got 'fast'"),
        ({"overall": {"p95_ms": -1}}, "s: overall.p95_ms: must be at least 0"),
        ({"overall": {"error_rate": 5}}, "s: overall.error_rate: a ratio between 0 and 1, got 5"),
        ({"overall": {"min_share": 0.5}}, "s: overall.min_share: unknown key"),
        ({"overall": {"variants": {}}}, "s: overall.variants: unknown key"),
        (
            {"models": {"m": {"variants": {"1": {"variants": {}}}}}},
            r"s: models.m.variants.1.variants: unknown",
        ),
        ({"modles": {}}, "s.modles: unknown key"),
        ({"models": {"m": [1]}}, r"s: models.m: expected a mapping"),
        ({}, "s: no thresholds"),
    ],
)
def test_bad_slo_names_the_key(document: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_slo(document, "s")


@pytest.mark.parametrize(
    ("metric", "limit", "value", "passed"),
    [
        ("p95_ms", 100, 99.0, True),
        ("p95_ms", 100, 100.0, True),
        ("p95_ms", 100, 101.0, False),
        ("error_rate", 0.01, 0.02, False),
        ("min_rps", 10, 9.9, False),
        ("min_rps", 10, 10.0, True),
        ("min_share", 0.05, 0.1, True),
        ("max_share", 0.2, 0.3, False),
        ("p95_ms", 100, None, False),
        ("p95_ms", 100, math.nan, False),
    ],
)
def test_check_compares_in_the_metrics_direction(
    metric: str, limit: float, value: float | None, passed: bool
) -> None:
    assert check(Threshold(scope=OVERALL, metric=metric, limit=limit), value) is passed, (
        metric,
        limit,
        value,
    )


def test_evaluate_passes_fails_and_fails_closed_without_data() -> None:
    thresholds = [
        Threshold(scope=OVERALL, metric="p95_ms", limit=50),
        Threshold(scope=OVERALL, metric="error_rate", limit=0.01),
        Threshold(scope=V2, metric="min_share", limit=0.05),
        Threshold(scope=("other", None), metric="p95_ms", limit=50),
    ]
    results = evaluate(thresholds, {OVERALL: measured(failures=5), V2: measured(share=0.1)})
    assert [(r.measured, r.passed) for r in results] == [
        (20.0, True),
        (0.05, False),
        (0.1, True),
        (None, False),
    ]
    assert exit_code(results) == 1 and exit_code(results[:1]) == 0, "any failed gate fails the run"


def test_render_shows_gate_measured_threshold_and_verdict() -> None:
    results = evaluate(
        [
            Threshold(scope=OVERALL, metric="p95_ms", limit=10),
            Threshold(scope=V2, metric="max_share", limit=0.2),
        ],
        {OVERALL: measured(p95=20.0), V2: measured(share=0.1)},
    )
    text = render(results)
    assert "overall p95_ms  20.0 ms   <= 10.0 ms  FAIL" in text, text
    assert "m v2 max_share  10.00%    <= 20.00%   PASS" in text, text
    assert text.endswith("SLO gates: 1 of 2 failed: overall p95_ms"), text
