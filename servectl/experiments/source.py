"""Where an experiment's counts come from: Prometheus (servers and a mesh we run) or CloudWatch (SageMaker
endpoints). The decision core (decision.py, checks.py) judges a `Window` whichever source filled it, so a
candidate is promoted or rolled back by the same tests and thresholds on either.

A source answers three questions for `run.py`: what each version did in a window (`read`), whether a step's
weights are in effect and since when (`confirm`), and which weights were reported at a past time (`reported`,
for a replay). Sources differ in what they can tell: Prometheus keeps the servers' weights gauge as history,
so a step's confirmation is recomputed from it at every analysis (and by a replay); SageMaker's
DescribeEndpoint only says what holds now, so the first analysis that sees a step in effect records the
time in the log and later analyses read it back (`remembers_confirmation`).
"""

from dataclasses import dataclass
from typing import Protocol

from servectl.experiments import window
from servectl.experiments.promql import Prometheus, Window, read_window
from servectl.experiments.window import Confirmation


class CountsSource(Protocol):
    """Per-version counts and the state of the weights, from wherever the model is served."""

    @property
    def remembers_confirmation(self) -> bool:
        """True when `confirm` can only say that the weights are in effect now, so the log keeps the first
        confirmation of a step; False when it recomputes when they took effect from history."""
        ...

    @property
    def holders(self) -> str:
        """Who confirms weights, in words for a hold's reason ("servers", "the endpoint")."""
        ...

    @property
    def unmeasured(self) -> frozenset[str]:
        """Checks the source cannot feed (CloudWatch: `latency`): optional, so they do not hold promotion."""
        ...

    def read(self, start: float | None, end: float, live: frozenset[str]) -> Window:
        """Each version's counts from `start` to `end` (`live`: the versions that take traffic now, which
        a source that publishes per period must have published for every period)."""
        ...

    def confirm(self, weights: dict[str, int], since: float, at: float) -> Confirmation:
        """Whether `weights` are in effect at `at`, and since when (at or after `since`)."""
        ...

    def reported(self, at: float) -> list[dict[str, float]]:
        """The weights each server (or router) reported at `at`; empty when the source keeps none."""
        ...


@dataclass(frozen=True)
class PrometheusSource:
    """The servers' own counters and weights gauge, read from Prometheus (promql.py, window.py)."""

    url: str
    model: str
    confirm_source: str | None = None
    """Whose `serving_variant_weight` confirms a step: the servers' (None) or the mesh's (`mesh`)."""
    remembers_confirmation: bool = False
    holders: str = "servers"
    unmeasured: frozenset[str] = frozenset()

    def read(self, start: float | None, end: float, live: frozenset[str] = frozenset()) -> Window:
        """Exact per-series counts (promql.read_window); Prometheus has no periods to miss."""
        return read_window(Prometheus(self.url), self.model, start, end)

    def confirm(self, weights: dict[str, int], since: float, at: float) -> Confirmation:
        """From the weights gauge's history (window.confirm)."""
        return window.confirm(Prometheus(self.url), self.model, weights, since, at, self.confirm_source)

    def reported(self, at: float) -> list[dict[str, float]]:
        """Each server process's weights at `at` (window.reported)."""
        return list(window.reported(Prometheus(self.url), self.model, at, self.confirm_source).values())
