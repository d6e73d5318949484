"""A drift report from what Prometheus holds: per version and feature the PSI, the Jensen-Shannon distance and
the bins that moved most, as a table, a JSON document and a PNG of expected against live shares."""

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from servectl.drift import scores
from servectl.drift.source import Reading, VersionDrift

Status = Literal["ok", "not_monitored", "no_data"]
MOVED_SHOWN = 3
"""Bins the table names per feature."""
ALERT_MIN_ROWS = 500
"""The alerts' minimum of sampled rows in the window (below it they stay quiet)."""
PNG_FEATURES = 4
PNG_SIZE_INCHES = (10.0, 6.0)
PNG_DPI = 100
"""So the PNG is 1000 x 600 pixels."""


@dataclass(frozen=True)
class BinShare:
    """One bin's expected and live share."""

    bin: str
    expected: float
    live: float

    @property
    def change(self) -> float:
        """Live minus expected share."""
        return self.live - self.expected


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's scores over the window."""

    feature: str
    psi: float
    """Population stability index (floor 1e-4), as the recording rule computes it."""
    js: float
    """Jensen-Shannon distance, base 2, in [0, 1]."""
    rows: float
    """Sampled rows counted for this feature in the window."""
    bins: tuple[BinShare, ...]
    """Every bin, in the profile's order (numeric bins 0..9, categories, other, then nan)."""

    @property
    def moved(self) -> tuple[BinShare, ...]:
        """The bins by how far their share moved, most first."""
        return tuple(sorted(self.bins, key=lambda b: (-abs(b.change), bin_order(b.bin))))


@dataclass(frozen=True)
class VersionReport:
    """One version's verdict: scored features, or why there are none."""

    version: str
    status: Status
    reason: str
    """Why there are no scores (empty when status is ok)."""
    rows: float
    """Sampled rows in the window."""
    features: tuple[FeatureDrift, ...]
    """By PSI, highest first."""


@dataclass(frozen=True)
class Report:
    """The whole report."""

    prometheus: str
    model: str
    window: str
    at: float
    versions: tuple[VersionReport, ...]

    @property
    def has_scores(self) -> bool:
        """Whether any version was scored or reported as not monitored (anything to say but "no data")."""
        return any(v.status != "no_data" for v in self.versions)


def bin_order(label: str) -> tuple[int, int, str]:
    """Sort key: numeric bins by number, then categories by name, then "other", then "nan"."""
    if label.isdigit():
        return (0, int(label), "")
    return (2, {"other": 0, "nan": 1}[label], "") if label in {"other", "nan"} else (1, 0, label)


def score_feature(feature: str, expected: dict[str, float], live: dict[str, float]) -> FeatureDrift:
    """Scores of one feature from the profile's shares and the window's counts per bin (a bin missing on
    either side counts as zero there: a live "nan" bin has no expected share and always counts as moved)."""
    labels = sorted(set(expected) | set(live), key=bin_order)
    exp = np.array([expected.get(b, 0.0) for b in labels])
    live_shares = scores.shares([max(live.get(b, 0.0), 0.0) for b in labels])
    return FeatureDrift(
        feature=feature,
        psi=float(scores.psi(exp, live_shares)),
        js=float(scores.js_distance(exp, live_shares)),
        rows=float(sum(max(v, 0.0) for v in live.values())),
        bins=tuple(BinShare(b, float(e), float(x)) for b, e, x in zip(labels, exp, live_shares, strict=True)),
    )


def version_report(version: str, found: VersionDrift, window: str) -> VersionReport:
    """A version's scores, or the reason it has none."""
    if found.monitored is False:
        reason = "drift not monitored (serving_drift_monitored is 0: no valid training profile)"
        return VersionReport(version, "not_monitored", reason, found.rows, ())
    counted = {f: bins for f, bins in found.live.items() if sum(bins.values()) > 0}
    scored = sorted(set(counted) & set(found.expected))
    if not scored:
        reason = (
            f"no sampled rows in the last {window}"
            if not counted
            else f"no expected shares (serving_drift_expected_share) in the last {window}"
        )
        return VersionReport(version, "no_data", reason, found.rows, ())
    features = [score_feature(f, found.expected[f], counted[f]) for f in scored]
    features.sort(key=lambda f: (-f.psi, f.feature))
    return VersionReport(version, "ok", "", found.rows, tuple(features))


def build(reading: Reading) -> Report:
    """The report of a reading, versions in numeric order where they are numbers."""
    ordered = sorted(reading.versions, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
    return Report(
        prometheus=reading.prometheus,
        model=reading.model,
        window=reading.window,
        at=reading.at,
        versions=tuple(version_report(v, reading.versions[v], reading.window) for v in ordered),
    )


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _moved_text(feature: FeatureDrift) -> str:
    return ", ".join(f"{b.bin} {100 * b.change:+.1f}pp" for b in feature.moved[:MOVED_SHOWN])


def table(report: Report) -> str:
    """The report as text: a header, then per version a line and a row per feature."""
    lines = [
        f"model {report.model}, window {report.window} ending {_when(report.at)}, from {report.prometheus}",
        "PSI above 0.1 is a moderate shift, above 0.25 a major one (the alerts' thresholds)",
    ]
    for v in report.versions:
        if v.status != "ok":
            lines.append(f"version {v.version}: {v.reason}")
            continue
        few = f" (fewer than {ALERT_MIN_ROWS}: the alerts stay quiet)" if v.rows < ALERT_MIN_ROWS else ""
        lines.append(f"version {v.version}: {v.rows:,.0f} sampled rows{few}")
        width = max(len("feature"), *(len(f.feature) for f in v.features))
        lines.append(f"  {'feature':<{width}}  {'psi':>7}  {'js':>6}  {'rows':>9}  most moved bins")
        lines.extend(
            f"  {f.feature:<{width}}  {f.psi:7.3f}  {f.js:6.3f}  {f.rows:9,.0f}  {_moved_text(f)}"
            for f in v.features
        )
    return "\n".join(lines)


def to_json(report: Report, png: Path | None) -> dict[str, object]:
    """The report as a JSON document (what `--json` prints)."""
    return {
        "prometheus": report.prometheus,
        "model": report.model,
        "window": report.window,
        "at": datetime.datetime.fromtimestamp(report.at, datetime.UTC).isoformat(),
        "png": str(png) if png else None,
        "versions": [
            {
                "version": v.version,
                "status": v.status,
                "reason": v.reason,
                "rows": v.rows,
                "features": [_feature_json(f) for f in v.features],
            }
            for v in report.versions
        ],
    }


def _feature_json(f: FeatureDrift) -> dict[str, object]:
    def share(b: BinShare) -> dict[str, object]:
        return {"bin": b.bin, "expected": b.expected, "live": b.live, "change": b.change}

    return {
        "feature": f.feature,
        "psi": f.psi,
        "js": f.js,
        "rows": f.rows,
        "moved": [share(b) for b in f.moved[:MOVED_SHOWN]],
        "bins": [share(b) for b in f.bins],
    }


def top_features(report: Report, count: int = PNG_FEATURES) -> list[tuple[str, FeatureDrift]]:
    """(version, feature) of the highest PSIs across the scored versions."""
    pairs = [(v.version, f) for v in report.versions for f in v.features]
    return sorted(pairs, key=lambda p: -p[1].psi)[:count]


def write_png(report: Report, path: Path) -> bool:
    """Expected against live shares of the top features by PSI, 1000 x 600 pixels; False when none."""
    top = top_features(report)
    if not top:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=PNG_SIZE_INCHES, dpi=PNG_DPI, squeeze=False)
    for ax, (version, f) in zip(axes.flat, top, strict=False):
        x = np.arange(len(f.bins))
        ax.bar(x - 0.2, [b.expected for b in f.bins], width=0.4, label="expected")
        ax.bar(x + 0.2, [b.live for b in f.bins], width=0.4, label="live")
        ax.set_xticks(x, [b.bin for b in f.bins], fontsize=7)
        ax.set_title(f"v{version} {f.feature}: PSI {f.psi:.3f}, JS {f.js:.3f}", fontsize=9)
        ax.set_ylabel("share", fontsize=8)
    for ax in list(axes.flat)[len(top) :]:
        ax.set_visible(False)
    fig.suptitle(f"{report.model}: expected vs live input shares, window {report.window}", fontsize=10)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return True
