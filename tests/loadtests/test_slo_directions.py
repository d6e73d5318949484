"""Every SLO key in both directions: a figure just inside its threshold passes and one just outside fails,
through the same `evaluate` the run uses; and the table and the errors say exactly what was found."""

import pytest

from loadtests.config import ConfigError
from loadtests.slo import (
    METRICS,
    Measured,
    Scope,
    Threshold,
    evaluate,
    format_table,
    parse_slo,
    render,
    require_loaded,
    rows,
)

OVERALL: Scope = (None, None)
MODEL: Scope = ("m", None)
V2: Scope = ("m", "2")

LATENCY = {"p50": 5.0, "p90": 15.0, "p95": 20.0, "p99": 40.0, "max": 90.0}


def measured_with(metric: str, value: float) -> Measured:
    """A run whose figure for `metric` is `value` and whose other figures are unremarkable."""
    latency = dict(LATENCY)
    if metric.endswith("_ms"):
        latency[metric.removesuffix("_ms")] = value
    requests = int(value) if metric == "min_requests" else 1_000
    failures = round(value * requests) if metric == "error_rate" else 0
    rps = value if metric == "min_rps" else 50.0
    share = value if metric.endswith("_share") else 0.5
    return Measured(requests=requests, failures=failures, rps=rps, latency_ms=latency, share=share)


# metric, limit, a figure just under it, a figure just over it
EDGES = [
    ("p50_ms", 10.0, 9.9, 10.1),
    ("p90_ms", 30.0, 29.9, 30.1),
    ("p95_ms", 50.0, 49.9, 50.1),
    ("p99_ms", 80.0, 79.9, 80.1),
    ("max_ms", 200.0, 199.9, 200.1),
    ("error_rate", 0.01, 0.009, 0.011),
    ("min_rps", 20.0, 19.9, 20.1),
    ("min_requests", 500, 499, 501),
    ("min_share", 0.05, 0.049, 0.051),
    ("max_share", 0.2, 0.199, 0.201),
]
UPPER = {"p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "error_rate", "max_share"}


def test_the_edge_table_covers_every_slo_key() -> None:
    assert {metric for metric, *_ in EDGES} == set(METRICS), "a key without both directions tested"


@pytest.mark.parametrize(("metric", "limit", "under", "over"), EDGES)
def test_every_key_flips_its_verdict_across_its_threshold(
    metric: str, limit: float, under: float, over: float
) -> None:
    scope = V2 if metric.endswith("_share") else OVERALL
    threshold = Threshold(scope=scope, metric=metric, limit=limit)
    verdicts = {}
    for figure in (under, limit, over):
        (result,) = evaluate([threshold], {scope: measured_with(metric, figure)})
        assert result.measured == pytest.approx(figure), (
            f"{metric}: measured {result.measured}, meant {figure}"
        )
        verdicts[figure] = result.passed
    if metric in UPPER:
        expected = {under: True, limit: True, over: False}
    else:
        expected = {under: False, limit: True, over: True}
    assert verdicts == expected, f"{metric} <= or >= {limit}: verdicts {verdicts}, expected {expected}"


def test_min_requests_counts_the_requests_of_its_own_scope() -> None:
    thresholds = [Threshold(scope=s, metric="min_requests", limit=100) for s in (OVERALL, MODEL, V2)]
    runs = {OVERALL: measured_with("min_requests", 300), MODEL: measured_with("min_requests", 150)}
    runs[V2] = measured_with("min_requests", 99)
    results = evaluate(thresholds, runs)
    assert [(r.measured, r.passed) for r in results] == [(300.0, True), (150.0, True), (99.0, False)], results


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_every_key_fails_closed_for_a_scope_without_requests(metric: str) -> None:
    empty = Measured(requests=0, failures=0, rps=0.0, latency_ms={}, share=None)
    (result,) = evaluate([Threshold(scope=V2, metric=metric, limit=0)], {V2: empty})
    assert (result.measured, result.passed) == (None, False), f"{metric}: no requests must fail, got {result}"


@pytest.mark.parametrize(
    ("metric", "value"),
    [("error_rate", None), ("min_rps", 0.0), ("min_requests", 0.0), ("p95_ms", None), ("max_share", None)],
)
def test_an_empty_scope_has_no_error_rate_share_or_latency(metric: str, value: float | None) -> None:
    empty = Measured(requests=0, failures=0, rps=0.0, latency_ms={}, share=None)
    assert empty.value(metric) == value, f"{metric} of an empty scope: {empty.value(metric)!r}"


@pytest.mark.parametrize(
    ("metric", "limit", "scope", "row"),
    [
        ("p50_ms", 10.0, OVERALL, ("overall p50_ms", "5.0 ms", "<= 10.0 ms", "PASS")),
        ("max_ms", 50.0, MODEL, ("m max_ms", "90.0 ms", "<= 50.0 ms", "FAIL")),
        ("error_rate", 0.01, V2, ("m v2 error_rate", "0.00%", "<= 1.00%", "PASS")),
        ("min_rps", 60.0, OVERALL, ("overall min_rps", "50.0 req/s", ">= 60.0 req/s", "FAIL")),
        ("min_requests", 500, MODEL, ("m min_requests", "1000", ">= 500", "PASS")),
        ("min_share", 0.4, V2, ("m v2 min_share", "50.00%", ">= 40.00%", "PASS")),
        ("max_share", 0.4, V2, ("m v2 max_share", "50.00%", "<= 40.00%", "FAIL")),
    ],
)
def test_each_row_shows_the_figure_and_the_bound_in_the_metrics_units(
    metric: str, limit: float, scope: Scope, row: tuple[str, str, str, str]
) -> None:
    run = Measured(requests=1_000, failures=0, rps=50.0, latency_ms=LATENCY, share=0.5)
    assert rows(evaluate([Threshold(scope=scope, metric=metric, limit=limit)], {scope: run})) == [row]


def test_a_gate_without_requests_reads_no_requests() -> None:
    results = evaluate([Threshold(scope=MODEL, metric="min_requests", limit=1)], {})
    assert rows(results) == [("m min_requests", "no requests", ">= 1", "FAIL")]


def test_the_table_is_aligned_under_its_header_and_ends_with_the_verdict() -> None:
    run = Measured(requests=1_000, failures=0, rps=50.0, latency_ms=LATENCY, share=0.5)
    thresholds = [
        Threshold(scope=OVERALL, metric="p95_ms", limit=10),
        Threshold(scope=V2, metric="min_share", limit=0.9),
        Threshold(scope=OVERALL, metric="min_rps", limit=1),
    ]
    assert render(evaluate(thresholds, {OVERALL: run, V2: run})) == (
        "gate             measured    threshold     result\n"
        "overall p95_ms   20.0 ms     <= 10.0 ms    FAIL\n"
        "m v2 min_share   50.00%      >= 90.00%     FAIL\n"
        "overall min_rps  50.0 req/s  >= 1.0 req/s  PASS\n"
        "SLO gates: 2 of 3 failed: overall p95_ms, m v2 min_share"
    )


def test_an_indented_table_keeps_its_indent_and_says_when_all_passed() -> None:
    table = [("overall p95_ms", "20.0 ms", "<= 50.0 ms", "PASS")]
    assert format_table(table, indent="  ") == (
        "  gate            measured  threshold   result\n"
        "  overall p95_ms  20.0 ms   <= 50.0 ms  PASS\n"
        "  SLO gates: all 1 passed"
    )
    assert format_table(table).startswith("gate "), "no indent by default"


@pytest.mark.parametrize("metric", ["error_rate", "max_share", "min_share"])
def test_a_ratio_of_exactly_one_is_allowed_and_just_over_one_is_not(metric: str) -> None:
    scope_doc: dict[str, object] = {metric: 1}
    document = {"models": {"m": {"variants": {"2": scope_doc}}}}
    assert parse_slo(document, "s") == [Threshold(scope=V2, metric=metric, limit=1.0)]
    scope_doc[metric] = 1.01
    with pytest.raises(
        ConfigError, match=rf"^s: models.m.variants.2.{metric}: a ratio between 0 and 1, got 1.01$"
    ):
        parse_slo(document, "s")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"models": [1]}, r"^s: models: expected a mapping with string keys, got \[1\]$"),
        ({"models": {"m": {"variants": [1]}}}, r"^s: models.m.variants: expected a mapping with string keys"),
        ({"models": {"m": {"variants": "2"}}}, r"^s: models.m.variants: expected a mapping with string keys"),
    ],
)
def test_a_misshapen_models_section_names_the_key(document: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_slo(document, "s")


@pytest.mark.parametrize(("loaded", "listed"), [([], "none"), (["b-model", "a-model"], "a-model, b-model")])
def test_a_gate_on_a_model_not_loaded_lists_what_the_run_loads(loaded: list[str], listed: str) -> None:
    thresholds = [Threshold(scope=MODEL, metric="p95_ms", limit=1)]
    with pytest.raises(ConfigError) as error:
        require_loaded(thresholds, loaded, "s")
    assert str(error.value) == (
        f"s: models.m: gates a model this run does not load (it loads {listed}); "
        "remove the gate or load the model (--models, --profile)"
    ), str(error.value)
