"""The deploy's one-line account of the gate: counts, and every override that loosens the policy data."""

from servectl.deploy.gate import Verdict


def test_the_summary_counts_findings() -> None:
    verdict = Verdict(0, {"summary": {"findings": 8, "denied": 0, "waived": 8, "exceptions": []}}, "")
    assert verdict.summary() == "8 findings, 0 denied, 8 waived"


def test_the_summary_names_each_active_exception() -> None:
    summary = {
        "findings": 0,
        "denied": 0,
        "waived": 0,
        "exceptions": ["setting a raised", "setting b lowered"],
    }
    exceptions = "; active exception: setting a raised; active exception: setting b lowered"
    assert Verdict(0, {"summary": summary}, "").summary() == f"0 findings, 0 denied, 0 waived{exceptions}"
