"""Whole rollouts, simulated: `decide` itself runs at every interval, as `servectl experiment step` runs it.

At each look traffic is split by the current weights and drawn for both versions (errors, a latency
histogram, conversion feedback), the analysis sees the counts of each step (the strata) and of the
experiment, each test's p-value and running interval carry over as the log keeps them, failed checks
carry over, and a promotion applies the next weights and starts a new step. A rollout ends at rollback,
at completion, or after `looks` looks.

Counter resets and scale-downs are not simulated: the exact counts (promql.read_window) make a window's
counts the requests served whatever happened to the pods, and tests/servectl/experiments/test_exact_counts.py
checks that on a real Prometheus. A step boundary that lags is: the first look after a promotion can carry
a share of requests still split by the old weights.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servectl.experiments.decision import (
    COMPLETE,
    HOLD,
    PROMOTE,
    ROLLBACK,
    Inputs,
    Schedule,
    Thresholds,
    decide,
)
from servectl.experiments.promql import VersionCounts, Window

BOUNDS = (0.005, 0.01, 0.025, float("inf"))
FAST = (0.90, 0.09, 0.01, 0.0)
"""Probabilities of the latency buckets (not cumulative): 90% under 5 ms."""
SLOW = (0.75, 0.20, 0.05, 0.0)
"""Slower than FAST in about 57% of request pairs: beyond the 0.05 tolerance."""


@dataclass(frozen=True)
class Version:
    """How a version behaves: what each request does, drawn independently."""

    error_rate: float = 0.01
    latency: tuple[float, ...] = FAST
    conversion: float = 0.3
    feedback: float = 0.5
    """Share of requests whose conversion is reported."""
    compute: tuple[float, float] = (0.002, 0.001)
    """Mean and sd of compute seconds per request. Added as their expectations, without noise (and without
    drawing from the generator, so the other tests' draws are unchanged): the cost guardrail's own error
    rates are simulated in tests/servectl/experiments/test_cost.py."""


@dataclass(frozen=True, kw_only=True)
class Design:
    """The traffic and the settings every rollout of a simulation shares."""

    looks: int = 50
    requests_per_look: int = 20_000
    schedule: Schedule = field(default_factory=Schedule)
    thresholds: Thresholds = field(default_factory=Thresholds)
    lagging_share: float = 0.0
    """Share of the first look after a promotion still split by the old weights (the switch lags)."""
    lag_in_window: bool = False
    """Whether those requests fall inside the new step's window (its boundary read one scrape early, no
    settle period) or in the settle period before it (counted in the experiment's totals only), which is
    what `analyze` does: a step's window begins once every server reports the new weights, plus settle."""


@dataclass(frozen=True)
class Outcome:
    """How one simulated rollout ended."""

    decision: str
    """ROLLBACK, COMPLETE, or HOLD when the looks ran out."""
    looks: int
    """Looks taken."""
    peak: int
    """The highest percent the candidate was given."""
    candidate_requests: float
    """Requests the candidate served by the end."""


def _serve(rng: np.random.Generator, counts: list[VersionCounts], n: int, version: Version) -> None:
    errors = rng.binomial(n, version.error_rate)
    cumulative = np.cumsum(rng.multinomial(n, version.latency))
    feedback = rng.binomial(n, version.feedback)
    converted = rng.binomial(feedback, version.conversion)
    for c in counts:
        c.requests += n
        c.weighted += n  # every simulated request is assigned by the weights
        c.errors += errors
        c.converted += converted
        c.not_converted += feedback - converted
        mean, sd = version.compute
        c.computed += n
        c.compute_sum += n * mean
        c.compute_squares += n * (mean * mean + sd * sd)
        for bound, count in zip(BOUNDS, cumulative.tolist(), strict=True):
            c.latency_buckets[bound] = c.latency_buckets.get(bound, 0.0) + count


def _carry(
    statistics: dict[str, Any], prior_p: dict[str, float], prior_ci: dict[str, tuple[float, float]]
) -> None:
    """What the log keeps of an analysis for the next one (as log.current_state reads it back)."""
    for test, stat in statistics.items():
        if "p_value" not in stat:
            continue
        prior_p[test] = min(float(stat["p_value"]), prior_p.get(test, 1.0))
        if "running_ci" in stat:
            prior_ci[test] = (float(stat["running_ci"][0]), float(stat["running_ci"][1]))


def rollout(rng: np.random.Generator, design: Design, base: Version, cand: Version, start: int) -> Outcome:
    """One rollout of `cand` against `base`, the candidate starting at `start` percent."""
    weights, previous = {"1": 100 - start, "2": start}, {"1": 100 - start, "2": start}
    whole = {"1": VersionCounts(), "2": VersionCounts()}
    epochs: list[dict[str, VersionCounts]] = [{"1": VersionCounts(), "2": VersionCounts()}]
    prior_p: dict[str, float] = {}
    prior_ci: dict[str, tuple[float, float]] = {}
    failed, peak, fresh, srm_log_bf = 0, start, False, 0.0
    for look in range(1, design.looks + 1):
        step = epochs[-1]
        lagging = int(design.requests_per_look * design.lagging_share) if fresh else 0
        for share_of, n in ((previous, lagging), (weights, design.requests_per_look - lagging)):
            served = int(rng.binomial(n, share_of["2"] / 100))
            into = [whole] if share_of is previous and not design.lag_in_window else [whole, step]
            _serve(rng, [c["1"] for c in into], n - served, base)
            _serve(rng, [c["2"] for c in into], served, cand)
        fresh = False
        inputs = Inputs(
            baseline="1", candidate="2", weights=dict(weights), experiment=Window(versions=whole),
            step=Window(versions=step), epochs=tuple(Window(versions=e) for e in epochs),
            prior_p=dict(prior_p), prior_ci=dict(prior_ci), prior_failed_checks=failed,
            prior_srm_log_bf=srm_log_bf,
        )  # fmt: skip
        analysis = decide(inputs, design.schedule, design.thresholds)
        if analysis.decision in {ROLLBACK, COMPLETE}:
            return Outcome(analysis.decision, look, peak, whole["2"].requests)
        _carry(analysis.statistics, prior_p, prior_ci)
        failed = analysis.failed_checks
        if analysis.decision == PROMOTE:
            previous, weights, failed, fresh = weights, analysis.next_weights, 0, True
            srm_log_bf = analysis.statistics["srm"].get("log_bf", srm_log_bf)  # the completed step's evidence
            epochs.append({"1": VersionCounts(), "2": VersionCounts()})
            peak = max(peak, weights["2"])
    return Outcome(HOLD, design.looks, peak, whole["2"].requests)


@dataclass
class Tally:
    """The outcomes of many rollouts."""

    outcomes: list[Outcome] = field(default_factory=list)

    def share(self, decision: str) -> float:
        """Share of rollouts that ended with `decision`."""
        return sum(o.decision == decision for o in self.outcomes) / len(self.outcomes)

    def reached_full(self) -> float:
        """Share of rollouts in which the candidate was given 100% (completed or not)."""
        return sum(o.peak >= 100 for o in self.outcomes) / len(self.outcomes)

    def median_candidate_requests(self, decision: str) -> float | None:
        """Median candidate requests served by the rollouts ending in `decision`: samples to decision."""
        served = [o.candidate_requests for o in self.outcomes if o.decision == decision]
        return float(np.median(served)) if served else None


def simulate(design: Design, base: Version, cand: Version, *, start: int, seed: int, rollouts: int) -> Tally:
    """`rollouts` rollouts drawn from one seeded generator."""
    rng = np.random.default_rng(seed)
    return Tally([rollout(rng, design, base, cand, start) for _ in range(rollouts)])
