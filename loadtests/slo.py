"""SLO gates: thresholds from a YAML file, overall and per model or variant, checked against a run.

Pure: `parse_slo` reads the document, `evaluate` compares measurements with thresholds, `render` prints the
table. A scope with no requests fails its gates (closed), because no data proves nothing.
"""

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from loadtests.config import ConfigError, check_keys, load_yaml, mapping, number

BUNDLED_SLO = Path(__file__).with_name("slo.yaml")

# metric -> (upper bound?, applies to variants only)
METRICS: dict[str, tuple[bool, bool]] = {
    "p50_ms": (True, False),
    "p90_ms": (True, False),
    "p95_ms": (True, False),
    "p99_ms": (True, False),
    "max_ms": (True, False),
    "error_rate": (True, False),
    "min_rps": (False, False),
    "min_requests": (False, False),
    "min_share": (False, True),
    "max_share": (True, True),
}
_RATIOS = {"error_rate", "min_share", "max_share"}

Scope = tuple[str | None, str | None]
"""(model, version): (None, None) is the whole run, (model, None) a model over all its versions."""


@dataclass(frozen=True, kw_only=True)
class Threshold:
    """One gate: a metric of a scope against a limit."""

    scope: Scope
    metric: str
    limit: float


@dataclass(frozen=True, kw_only=True)
class Measured:
    """What a run measured for one scope."""

    requests: int
    failures: int
    rps: float
    latency_ms: Mapping[str, float]
    """Keys p50, p90, p95, p99 and max."""
    share: float | None = None
    """For a variant: its part of the model's requests."""

    def value(self, metric: str) -> float | None:
        """The figure a metric compares, or None when it does not apply."""
        if metric == "error_rate":
            return self.failures / self.requests if self.requests else None
        if metric == "min_rps":
            return self.rps
        if metric == "min_requests":
            return float(self.requests)
        if metric in {"min_share", "max_share"}:
            return self.share
        return self.latency_ms.get(metric.removesuffix("_ms"))


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """A gate's verdict."""

    threshold: Threshold
    measured: float | None
    passed: bool


def scope_label(scope: Scope) -> str:
    """`overall`, `tabular-classifier` or `tabular-classifier v2`."""
    model, version = scope
    if model is None:
        return "overall"
    return model if version is None else f"{model} v{version}"


def _limits(value: object, scope: Scope, where: str, *, variant: bool) -> list[Threshold]:
    raw = mapping(value, where)
    allowed = {m for m, (_, only_variants) in METRICS.items() if variant or not only_variants}
    nested = {"variants"} if scope[0] is not None and not variant else set()
    check_keys(raw, allowed | nested, where)
    limits = []
    for metric in sorted(raw.keys() - nested):
        limit = number(raw[metric], f"{where}.{metric}")
        if metric in _RATIOS and limit > 1:
            raise ConfigError(f"{where}.{metric}: a ratio between 0 and 1, got {limit:g}")
        limits.append(Threshold(scope=scope, metric=metric, limit=limit))
    return limits


def parse_slo(document: Mapping[str, object], source: str) -> list[Threshold]:
    """Every threshold in an SLO document (`overall:` and `models: {m: {..., variants: {v: {...}}}}`)."""
    check_keys(document, {"overall", "models"}, source)
    thresholds = _limits(document.get("overall", {}), (None, None), f"{source}: overall", variant=False)
    for model, spec in mapping(document.get("models", {}), f"{source}: models").items():
        where = f"{source}: models.{model}"
        thresholds += _limits(spec, (model, None), where, variant=False)
        raw = mapping(spec, where).get("variants", {})
        # Versions are integers in the repository, so `2:` unquoted in YAML means version "2".
        versions = {str(k): v for k, v in raw.items()} if isinstance(raw, dict) else raw
        variants = mapping(versions, f"{where}.variants")
        for version, limits in variants.items():
            scope = (model, str(version))
            thresholds += _limits(limits, scope, f"{where}.variants.{version}", variant=True)
    if not thresholds:
        raise ConfigError(f"{source}: no thresholds; add at least one under overall or models")
    return thresholds


def load_slo(path: Path = BUNDLED_SLO) -> list[Threshold]:
    """The thresholds of an SLO file."""
    return parse_slo(load_yaml(path), str(path))


def require_loaded(thresholds: list[Threshold], loaded: Collection[str], source: str) -> None:
    """Refuse a gate on a model the run does not load: it could only fail for want of requests, which
    says nothing about the model, so it is a mistake in the configuration rather than a result."""
    unloaded = sorted({t.scope[0] for t in thresholds if t.scope[0] is not None} - set(loaded))
    if unloaded:
        raise ConfigError(
            f"{source}: models.{unloaded[0]}: gates a model this run does not load (it loads "
            f"{', '.join(sorted(loaded)) or 'none'}); remove the gate or load the model (--models, --profile)"
        )


def check(threshold: Threshold, measured: float | None) -> bool:
    """Whether a measured figure meets its threshold; a missing one never does."""
    if measured is None or math.isnan(measured):
        return False
    upper, _ = METRICS[threshold.metric]
    return measured <= threshold.limit if upper else measured >= threshold.limit


def evaluate(thresholds: list[Threshold], measured: Mapping[Scope, Measured]) -> list[GateResult]:
    """Every threshold against what was measured for its scope."""
    results = []
    for threshold in thresholds:
        scope = measured.get(threshold.scope)
        value = scope.value(threshold.metric) if scope is not None and scope.requests else None
        results.append(GateResult(threshold=threshold, measured=value, passed=check(threshold, value)))
    return results


def exit_code(results: list[GateResult]) -> int:
    """1 when any gate failed, else 0."""
    return 0 if all(r.passed for r in results) else 1


def _format(metric: str, value: float | None) -> str:
    if value is None:
        return "no requests"
    if metric in _RATIOS:
        return f"{value * 100:.2f}%"
    if metric.endswith("_ms"):
        return f"{value:.1f} ms"
    if metric == "min_rps":
        return f"{value:.1f} req/s"
    return f"{value:.0f}"


def rows(results: list[GateResult]) -> list[tuple[str, str, str, str]]:
    """(gate, measured, threshold, PASS/FAIL) per result."""
    table = []
    for r in results:
        t = r.threshold
        upper, _ = METRICS[t.metric]
        bound = f"{'<=' if upper else '>='} {_format(t.metric, t.limit)}"
        gate = f"{scope_label(t.scope)} {t.metric}"
        table.append((gate, _format(t.metric, r.measured), bound, "PASS" if r.passed else "FAIL"))
    return table


def format_table(table_rows: list[tuple[str, str, str, str]], indent: str = "") -> str:
    """Gate rows as aligned text, and a last line saying which gates failed."""
    table = [("gate", "measured", "threshold", "result"), *table_rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [indent + "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in table]
    failed = [row[0] for row in table_rows if row[3] == "FAIL"]
    total = len(table_rows)
    verdict = f"{len(failed)} of {total} failed: {', '.join(failed)}" if failed else f"all {total} passed"
    return "\n".join([*lines, f"{indent}SLO gates: {verdict}"])


def render(results: list[GateResult]) -> str:
    """The gate table of a run."""
    return format_table(rows(results))
