"""The report: charts from the timeline and the one-minute summary."""

from pathlib import Path

from loadtests.report import RunInfo, by_scope, plot, read_timeline, summary_markdown, variant_split

GATES = {
    "duration_s": 10.2,
    "gates": [
        {"gate": "overall p95_ms", "measured": "7.0 ms", "threshold": "<= 250.0 ms", "result": "PASS"},
        {"gate": "m v2 max_share", "measured": "40.00%", "threshold": "<= 30.00%", "result": "FAIL"},
    ],
    "measured": {
        "overall": {"requests": 100, "failures": 0, "rps": 9.8, "share": None,
                    "latency_ms": {"p50": 2.0, "p90": 5.0, "p95": 7.0, "p99": 9.0, "max": 30.0}},
        "m v2": {"requests": 40, "failures": 0, "rps": 3.9, "share": 0.4,
                 "latency_ms": {"p50": 2.0, "p90": 5.0, "p95": 7.0, "p99": None, "max": 30.0}},
    },
}  # fmt: skip
INFO = RunInfo(profile="smoke", description="d", target="http://t", grpc_target="g:1", workers=2, exit_code=1)


def test_summary_names_the_models_and_the_token_variable_only() -> None:
    info = RunInfo(profile="smoke", description="d", target="http://t", grpc_target=None, workers=0,
                   exit_code=0, models=("a", "b"), bearer_token_env="MODEL_API_TOKEN")  # fmt: skip
    text = summary_markdown(info, GATES, [])
    assert "- models: a, b" in text and "- auth: a bearer token from `$MODEL_API_TOKEN`" in text, text
    assert "- auth:" not in summary_markdown(INFO, GATES, []), "no token, no auth line"


def test_summary_has_verdict_gates_split_and_charts() -> None:
    text = summary_markdown(INFO, GATES, [Path("latency.png")])
    assert text.startswith("# Load test `smoke`: FAIL"), text
    assert "- gates: 1 of 2 passed; failed: m v2 max_share" in text, text
    assert "| m v2 max_share | 40.00% | <= 30.00% | **FAIL** |" in text, text
    assert "| m v2 | 40 | 40.0% |" in text, "the variant split"
    assert "| m v2 | 40 | 0 | 3.9 | 2 | 7 | - | 30 |" in text, "a missing percentile shows as -"
    assert "![latency](latency.png)" in text and "a master and 2 workers" in text, text


def test_variant_split_lists_only_variants() -> None:
    assert variant_split(GATES["measured"]) == [("m v2", 40, 0.4)]  # type: ignore[arg-type]


def test_timeline_round_trip_and_charts(tmp_path: Path) -> None:
    csv = tmp_path / "timeline.csv"
    csv.write_text(
        "t_s,scope,users,requests,failures,rps,p50_ms,p95_ms,p99_ms\n"
        "2.0,overall,3,10,0,5.0,1.0,5.0,9.0\n2.0,m v1,3,10,0,5.0,1.0,5.0,9.0\n4.0,m v1,3,0,0,0.0,,,\n"
    )
    samples = read_timeline(csv)
    assert list(by_scope(samples)) == ["overall", "m v1"], "overall first"
    charts = plot(samples, tmp_path)
    assert [c.name for c in charts] == ["latency.png", "throughput.png"], charts
    assert all(c.read_bytes().startswith(b"\x89PNG") and c.stat().st_size > 5000 for c in charts)


def test_no_samples_no_charts(tmp_path: Path) -> None:
    assert plot([], tmp_path) == [], "nothing to draw"
