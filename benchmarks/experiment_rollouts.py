"""Acceptance of the whole experiment decision by simulation (issue 14, point 9): a table, fixed seeds.

`decide` runs at every interval for 50 intervals (servectl/experiments/rollouts.py), with every test
active, at 95/5 and 90/10 starting splits, error base rates 0.1% and 1%, with conversion feedback on half
the requests (value and accuracy marked optional) and without any feedback (all three optional). Each
cell is three simulations: a candidate like the baseline (A/A), one with twice the errors, and a better
one (half the errors). Targets: A/A false rollback <= 5%; a 2x-error candidate reaches 100% in <= 5%;
a better candidate completes in >= 90%. "samples" is the median candidate requests served when the
rollout ended (completion for A/A and better, rollback for 2x).

Two more tables repeat the 1% rows with a switch that lags one scrape (the first interval after a promotion
carries 5% of its requests at the old split: one 15 s scrape of a 300 s interval): first as `analyze` reads
it, those requests in the settle period before the step's window (in the experiment's totals, in no
stratum); then with the boundary read one scrape early and no settle period, so they fall inside the
step's window, where the sample-ratio test sees them (it halts the rollout: a hold, never a rollback).

Run: `make experiments-rollouts` (or `.venv/bin/python benchmarks/experiment_rollouts.py [rollouts]`).
"""

import sys
import time

from servectl.experiments.checks import FEEDBACK_METRICS, Thresholds
from servectl.experiments.decision import COMPLETE, ROLLBACK
from servectl.experiments.rollouts import Design, Tally, Version, simulate

REQUESTS_PER_INTERVAL = 20_000
"""About 67 requests a second at the default 300 s interval."""


def _cell(design: Design, rate: float, feedback: float, start: int, rollouts: int, seed: int) -> str:
    base = Version(error_rate=rate, feedback=feedback)
    runs: dict[str, Tally] = {}
    for offset, (name, cand) in enumerate(
        (("aa", base), ("2x", Version(error_rate=2 * rate, feedback=feedback)),
         ("better", Version(error_rate=rate / 2, feedback=feedback)))
    ):  # fmt: skip
        runs[name] = simulate(design, base, cand, start=start, seed=seed + offset, rollouts=rollouts)

    def samples(tally: Tally, decision: str) -> str:
        median = tally.median_candidate_requests(decision)
        return f"{median:>9,.0f}" if median is not None else f"{'-':>9}"

    aa, doubled, better = runs["aa"], runs["2x"], runs["better"]
    return (
        f"{aa.share(ROLLBACK):>6.3f} {aa.share(COMPLETE):>6.3f} {samples(aa, COMPLETE)}  "
        f"{doubled.reached_full():>6.3f} {samples(doubled, ROLLBACK)}  "
        f"{better.share(COMPLETE):>6.3f} {samples(better, COMPLETE)}"
    )


def _table(
    rollouts: int, lagging_share: float, rates: tuple[float, ...], lag_in_window: bool = False
) -> None:
    print(
        f"{'feedback':<9}{'split':>6}{'errors':>7} | {'A/A rb':>6} {'done':>6} {'samples':>9}  "
        f"{'2x 100%':>6} {'samples':>9}  {'better':>6} {'samples':>9}"
    )
    seed = 1000
    for with_feedback in (True, False):
        optional = frozenset({"value", "accuracy"}) if with_feedback else frozenset(FEEDBACK_METRICS)
        design = Design(
            looks=50,
            requests_per_look=REQUESTS_PER_INTERVAL,
            thresholds=Thresholds(optional_metrics=optional),
            lagging_share=lagging_share,
            lag_in_window=lag_in_window,
        )
        for rate in rates:
            for start in (5, 10):
                seed += 10
                row = _cell(design, rate, 0.5 if with_feedback else 0.0, start, rollouts, seed)
                label = "yes" if with_feedback else "no"
                print(f"{label:<9}{100 - start:>3}/{start:<2}{rate:>7.1%} | {row}", flush=True)


def main() -> None:
    """Print both tables."""
    rollouts = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    started = time.perf_counter()
    print(
        f"{rollouts} rollouts per cell, 50 intervals of {REQUESTS_PER_INTERVAL:,} requests, default settings"
    )
    print("targets: A/A rollback <= 0.05; 2x reaches 100% <= 0.05; better completes >= 0.90\n")
    _table(rollouts, 0.0, (0.001, 0.01))
    print(
        "\nthe switch lagging one scrape, in the settle period (5% of the first interval at the old split):"
    )
    _table(rollouts, 0.05, (0.01,))
    print(
        "\nthe same with the step's boundary one scrape early, no settle period (the lag inside the window):"
    )
    _table(rollouts, 0.05, (0.01,), lag_in_window=True)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
