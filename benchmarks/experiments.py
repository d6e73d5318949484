"""Print the measured guarantees of the experiment tests, from vectorised simulations with fixed seeds.

A/A false-positive rate with a look at every interval, SRM false alarms and detection, and power.
Run: `make experiments-simulate` (or `.venv/bin/python benchmarks/experiments.py`).
"""

import time

from servectl.experiments import simulation as sim
from servectl.experiments.simulation import Design


def main() -> None:
    """Run every simulation and print one line each."""
    d = Design()
    balanced = Design(requests_per_look=500, candidate_shares=(0.5,) * 20)
    short = [s * 0.9 for s in d.candidate_shares]
    started = time.perf_counter()
    print(f"design: {d.experiments} experiments x {d.looks} looks of {d.requests_per_look} requests,")
    print("        candidate at 5% (5 looks), 25% (5), 50% (10); alpha 0.05, a look at every interval")
    rows = [
        ("A/A error rate 0.2%: false-positive rate", sim.rate_test_rejections(d, 0.002, 0.002, 11)),
        ("A/A error rate 1%: false-positive rate", sim.rate_test_rejections(d, 0.01, 0.01, 12)),
        ("A/A error rate 5%: false-positive rate", sim.rate_test_rejections(d, 0.05, 0.05, 13)),
        ("  the same with a naive z-test at every look", sim.naive_rejections(d, 0.05, 0.05, 13)),
        ("1% -> 2% errors, 50/50, 5,000 per arm: power", sim.rate_test_rejections(balanced, 0.01, 0.02, 21)),
        ("1% -> 5% errors, default design: power", sim.rate_test_rejections(d, 0.01, 0.05, 22)),
        ("SRM false alarms (sequential, p <= 0.001)", sim.srm_detections(d, d.candidate_shares, 0.001, 31)),
        ("SRM caught, candidate 10% short", sim.srm_detections(d, short, 0.001, 32)),
        ("A/A latency rank test: false-positive rate", sim.latency_test_rejections(d, 0.0, 0.05, 0.05, 41)),
        ("25% slower candidate: latency power", sim.latency_test_rejections(d, 0.25, 0.05, 0.05, 42)),
    ]
    for label, value in rows:
        print(f"{label:<48} {value:6.3f}")
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
