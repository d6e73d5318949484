"""Reading a model's drift counters from Prometheus over a window.

The series are the serving image's (the shared drift contract): `serving_drift_input_total` and
`serving_drift_rows_total` counters, and the `serving_drift_expected_share` and `serving_drift_monitored`
gauges. Counters are read with `increase()` over the window, summed over the servers (instances), as the
recording rules read them, so the report's scores are the alerts' scores. All queries are evaluated at one
instant, so they describe the same window.
"""

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field

from servectl.experiments.promql import Prometheus

_WINDOW = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = (7 * 86400, 86400, 3600, 60, 1)


def parse_window(text: str) -> int:
    """A Prometheus duration such as `1h`, `30m` or `1h30m` (units w, d, h, m, s, largest first), in s."""
    match = _WINDOW.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration such as 30m, 1h, 6h or 1d")
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNITS, strict=True) if n)
    if seconds <= 0:
        raise ValueError(f"the window {text!r} is empty: give a duration above zero, such as 1h")
    return seconds


@dataclass
class VersionDrift:
    """What Prometheus holds about one model version over the window."""

    monitored: bool | None = None
    """The server's `serving_drift_monitored` (None when the gauge was not found)."""
    rows: float = 0.0
    """Sampled rows in the window (`increase` of `serving_drift_rows_total`)."""
    expected: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    """Feature to bin to the profile's expected share."""
    live: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    """Feature to bin to the sampled rows counted in the window."""


@dataclass(frozen=True)
class Reading:
    """A model's drift series over a window, per version."""

    prometheus: str
    """The Prometheus base URL read."""
    model: str
    """The model."""
    window: str
    """The window as given (a Prometheus duration)."""
    at: float
    """The window's end (Unix seconds)."""
    versions: dict[str, VersionDrift]
    """Version to what was found for it."""


def selector(model: str, version: str | None) -> str:
    """The label matchers of a model (and version), with the values quoted as PromQL strings."""
    matchers = [f"model={json.dumps(model)}"] + ([f"version={json.dumps(version)}"] if version else [])
    return "{" + ",".join(matchers) + "}"


def queries(model: str, version: str | None, window: str) -> dict[str, str]:
    """The PromQL the report reads, by name."""
    sel = selector(model, version)
    return {
        "live": f"sum by (version, feature, bin) (increase(serving_drift_input_total{sel}[{window}]))",
        "rows": f"sum by (version) (increase(serving_drift_rows_total{sel}[{window}]))",
        "expected": (
            f"max by (version, feature, bin) (last_over_time(serving_drift_expected_share{sel}[{window}]))"
        ),
        "monitored": f"max by (version) (last_over_time(serving_drift_monitored{sel}[{window}]))",
    }


def read(prom: Prometheus, model: str, version: str | None, window: str, at: float) -> Reading:
    """Every version's drift series of `model` (or only `version`) over `window` ending at `at`."""
    parse_window(window)
    versions: dict[str, VersionDrift] = defaultdict(VersionDrift)
    for name, expr in queries(model, version, window).items():
        for labels, value in prom.query(expr, at):
            found = versions[labels.get("version", "")]
            if name == "live":
                found.live[labels.get("feature", "")][labels.get("bin", "")] = value
            elif name == "expected":
                found.expected[labels.get("feature", "")][labels.get("bin", "")] = value
            elif name == "rows":
                found.rows = value
            else:
                found.monitored = value >= 1.0
    return Reading(prometheus=prom.url, model=model, window=window, at=at, versions=dict(versions))
