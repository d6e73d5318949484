"""The target verdict and the table: ours >= 2x naive req/s with a p99 no worse, errors flagged."""

import pytest

from benchmarks.measures import LoadResult
from benchmarks.report import ModelRun, Row, check_target, format_table, format_verdict


def _run(ours: LoadResult | None, naive: LoadResult | None) -> ModelRun:
    run = ModelRun("mlp", "test model")
    if ours:
        run.rows.append(Row("ours", "http", 8, ours, "wrk"))
    if naive:
        run.rows.append(Row("naive", "http", 8, naive, "wrk"))
    return run


NAIVE = LoadResult(500.0, p50_ms=15.0, p99_ms=60.0, requests=5000)


@pytest.mark.parametrize(
    ("ours", "met", "reason"),
    [
        (LoadResult(1200.0, p50_ms=6.0, p99_ms=30.0, requests=12000), True, "2.40x req/s"),
        (LoadResult(900.0, p50_ms=8.0, p99_ms=30.0, requests=9000), False, "req/s only 1.80x naive"),
        (LoadResult(1200.0, p50_ms=6.0, p99_ms=70.0, requests=12000), False, "p99 70.00 ms > naive 60.00 ms"),
        (LoadResult(1200.0, p50_ms=6.0, p99_ms=30.0, requests=12000, errors=3), False, "errors (ours 3"),
    ],
    ids=["met", "too-slow", "worse-p99", "errors"],
)
def test_check_target(ours: LoadResult, met: bool, reason: str) -> None:
    check = check_target(_run(ours, NAIVE), 8)
    assert check.met is met, check
    assert reason in check.reason, check.reason


def test_check_target_without_naive_is_unknown() -> None:
    check = check_target(_run(NAIVE, None), 8)
    assert check.met is None, check
    assert "UNKNOWN" in format_verdict([check]).splitlines()[-1], format_verdict([check])


def test_table_flags_runs_with_errors_and_failed_runs() -> None:
    run = _run(LoadResult(1.0, p50_ms=1.0, p99_ms=2.0, requests=10, errors=2, detail="non-2xx 2"), None)
    run.rows.append(Row("naive", "http", 64, None, "failed: wrk exited 1"))
    lines = format_table(run).splitlines()
    assert "ERRORS: wrk; non-2xx 2" in lines[2], lines[2]
    assert lines[3].endswith("failed: wrk exited 1"), lines[3]
