"""The ghz report parser, on a report ghz 0.120 wrote against our server (details trimmed)."""

from typing import Any

import pytest

from benchmarks.grpc_runner import GrpcLoadError, parse_ghz_report

CLOSED = "rpc error: code = Unavailable desc = error reading from server: read tcp 127.0.0.1:{port}->127.0.0.1:45023: use of closed network connection"  # noqa: E501


def _ghz_report(statuses: dict[str, int], errors: dict[str, int]) -> dict[str, Any]:
    percentiles = [(10, 19660890), (25, 36477297), (50, 63256861), (75, 98789174), (90, 128597520)]
    percentiles += [(95, 146923668), (99, 180488241)]
    return {
        "endReason": "timeout",
        "count": sum(statuses.values()),
        "total": 3028643851,
        "rps": 664.9840981913459,
        "errorDistribution": errors,
        "statusCodeDistribution": statuses,
        "latencyDistribution": [{"percentage": pct, "latency": ns} for pct, ns in percentiles],
    }


def test_calls_cut_at_the_deadline_are_not_errors() -> None:
    report = _ghz_report(
        {"OK": 1979, "Unavailable": 35},
        {CLOSED.format(port=54896): 28, CLOSED.format(port=54910): 7},
    )
    result = parse_ghz_report(report, concurrency=64)
    assert result.errors == 0, result
    assert result.requests == 1979, result
    assert result.p50_ms == pytest.approx(63.256861), result
    assert result.p99_ms == pytest.approx(180.488241), result
    assert result.requests_per_s == pytest.approx(1979 / 3.028643851), result
    assert "35 cut at the deadline" in result.detail, result.detail


def test_more_closed_calls_than_callers_count_as_errors() -> None:
    report = _ghz_report({"OK": 100, "Unavailable": 20}, {CLOSED.format(port=1): 20})
    result = parse_ghz_report(report, concurrency=8)
    assert result.errors == 12, result


def test_server_statuses_are_errors() -> None:
    report = _ghz_report(
        {"OK": 90, "ResourceExhausted": 10}, {"rpc error: code = ResourceExhausted desc = queue full": 10}
    )
    result = parse_ghz_report(report, concurrency=8)
    assert result.errors == 10, result
    assert result.detail == "ResourceExhausted 10", result.detail


def test_a_report_without_percentiles_fails() -> None:
    report = _ghz_report({"OK": 1}, {})
    del report["latencyDistribution"]
    with pytest.raises(GrpcLoadError, match="latencyDistribution"):
        parse_ghz_report(report, concurrency=1)


def test_percentiles_leave_out_the_cut_calls_when_details_are_given() -> None:
    report = _ghz_report({"OK": 99, "Unavailable": 1}, {CLOSED.format(port=1): 1})
    report["details"] = [{"latency": (i + 1) * 1_000_000, "error": "", "status": "OK"} for i in range(99)]
    report["details"].append(
        {"latency": 500_000_000, "error": CLOSED.format(port=1), "status": "Unavailable"}
    )
    result = parse_ghz_report(report, concurrency=8)
    assert result.p50_ms == pytest.approx(50.0), result
    assert result.p99_ms == pytest.approx(99.0), result
