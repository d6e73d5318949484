"""Reading an experiment on a SageMaker endpoint: per-variant counts from CloudWatch, the step's state from
DescribeEndpoint.

SageMaker publishes per production variant (namespace AWS/SageMaker, dimensions EndpointName and
VariantName, one variant per version named `v<version>` as the smb stacks name them) at one-minute
periods. A window is read as the Sum of each whole minute inside it (GetMetricData, Period 60): the
partial minutes at its ends are excluded, since a minute's sum cannot be split, and its end is held back
by `delay_seconds` because CloudWatch publishes minutes a few minutes late. A version that takes traffic
and lacks a datapoint for a minute of the window makes the window incomplete (`Window.missing`): the
analysis holds naming the minutes. An absent datapoint is never read as zero traffic: it may be a minute
not published yet.

- requests = Invocations - Invocation4XXErrors (client errors are the caller's, as on the Prometheus path);
- errors = Invocation5XXErrors;
- the split's units (`weighted`) = Invocations: SageMaker draws a variant by weight for every request that
  names none (the public API never sets TargetVariant), whatever its outcome.

Latency is not judged from CloudWatch: ModelLatency gives statistics per minute (average, extremes,
percentiles), not the buckets the rank test compares, and a test on averages would be another test. Its
average per variant is kept in the log entry for the reader (`Window.notes`); the decision treats latency
as unmeasured and optional (docs/experiments.md).
"""

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from servectl.experiments.promql import VersionCounts, Window
from servectl.experiments.window import Confirmation, show

NAMESPACE = "AWS/SageMaker"
PERIOD = 60
"""Seconds of one CloudWatch period: SageMaker's invocation metrics are published per minute."""
DEFAULT_DELAY = 180.0
"""Seconds a window's end is held back: minutes younger than this are not expected to be published."""
COUNTS = ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors")
"""The metrics every minute of a live version must have; ModelLatency is read for the record only."""


LATENCY_NOTE = (
    "not measurable from CloudWatch: ModelLatency gives per-minute statistics, not the histogram buckets "
    "the rank test compares; not judged (the stack's ModelLatency alarms guard it), and it does not hold "
    "promotion"
)


class CloudWatchError(RuntimeError):
    """CloudWatch or SageMaker refused a call or could not be reached; the message says which."""


def variant_name(version: str) -> str:
    """A version's production variant, as stacks/components/sagemaker_async.py names it."""
    return f"v{version}"


def whole_minutes(start: float, end: float, delay: float) -> tuple[float, float]:
    """The whole minutes a window counts: from the first minute boundary at or after `start` to the last
    one at or before `end - delay` (an empty span when the second is not after the first)."""
    return math.ceil(start / PERIOD) * PERIOD, math.floor((end - delay) / PERIOD) * PERIOD


def _iso_minute(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%MZ")


def minute_ranges(minutes: list[float]) -> str:
    """Minute starts as runs: `2026-11-30T18:03Z..18:05Z, 2026-11-30T18:09Z`."""
    runs: list[list[float]] = []
    for minute in sorted(minutes):
        if runs and minute - runs[-1][-1] == PERIOD:
            runs[-1].append(minute)
        else:
            runs.append([minute])
    return ", ".join(_iso_minute(r[0]) + (f"..{_iso_minute(r[-1])[11:]}" if len(r) > 1 else "") for r in runs)


def _query(index: int, endpoint: str, version: str, metric: str, stat: str) -> dict[str, Any]:
    dimensions = [{"Name": "EndpointName", "Value": endpoint},
                  {"Name": "VariantName", "Value": variant_name(version)}]  # fmt: skip
    return {
        "Id": f"q{index}",
        "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dimensions},
            "Period": PERIOD,
            "Stat": stat,
        },
        "ReturnData": True,
    }


@dataclass(frozen=True)
class CloudWatchSource:
    """An experiment's counts from a SageMaker endpoint's CloudWatch metrics (source.CountsSource)."""

    endpoint: str
    versions: tuple[str, ...]
    """The versions whose variants are read (the weights' versions)."""
    cloudwatch: Any
    """A boto3 CloudWatch client."""
    sagemaker: Any
    """A boto3 SageMaker client."""
    delay_seconds: float = DEFAULT_DELAY
    remembers_confirmation: bool = True
    holders: str = "the endpoint"
    unmeasured: frozenset[str] = frozenset({"latency", "segments"})

    def _fetch(self, first: float, last: float) -> dict[tuple[str, str, str], dict[float, float]]:
        """Each (version, metric, stat)'s datapoints, minute start to value."""
        wanted = [(v, m, "Sum") for v in self.versions for m in (*COUNTS, "ModelLatency")]
        wanted += [(v, "ModelLatency", "SampleCount") for v in self.versions]
        queries = [_query(i, self.endpoint, *key) for i, key in enumerate(wanted)]
        out: dict[tuple[str, str, str], dict[float, float]] = defaultdict(dict)
        request = {"MetricDataQueries": queries, "StartTime": datetime.fromtimestamp(first, UTC),
                   "EndTime": datetime.fromtimestamp(last, UTC), "ScanBy": "TimestampAscending"}  # fmt: skip
        while True:
            try:
                page = self.cloudwatch.get_metric_data(**request)
            except Exception as error:  # botocore's errors share no base but Exception
                raise CloudWatchError(
                    f"CloudWatch GetMetricData for endpoint {self.endpoint}: {error}"
                ) from error
            for result in page["MetricDataResults"]:
                if result.get("StatusCode") not in {"Complete", "PartialData"}:
                    raise CloudWatchError(f"CloudWatch query {result['Id']}: {result.get('Messages')}")
                key = wanted[int(result["Id"][1:])]
                for stamp, value in zip(result["Timestamps"], result["Values"], strict=True):
                    out[key][stamp.timestamp()] = float(value)
            if not page.get("NextToken"):
                return out
            request["NextToken"] = page["NextToken"]

    def read(self, start: float | None, end: float, live: frozenset[str] = frozenset()) -> Window:
        """The versions' counts over the window's whole, published minutes; the minutes a live version
        lacks are named in `missing`. Without a start: nothing (CloudWatch keeps no lifetime totals)."""
        if start is None:
            return Window(versions={})
        first, last = whole_minutes(start, end, self.delay_seconds)
        window = Window(versions={}, aligned=(first, max(first, last)))
        if last <= first:
            return window
        data = self._fetch(first, last)
        expected = [first + i * PERIOD for i in range(int((last - first) // PERIOD))]
        for version in self.versions:
            sums = {m: data.get((version, m, "Sum"), {}) for m in COUNTS}
            counts = VersionCounts()
            counts.weighted = sum(sums["Invocations"].values())
            counts.requests = counts.weighted - sum(sums["Invocation4XXErrors"].values())
            counts.errors = sum(sums["Invocation5XXErrors"].values())
            # SageMaker's metrics carry no request header: every request is in `other`, as on a server
            # with no key segments configured (run.py refuses a rollout block that names segments).
            counts.segment_requests, counts.segment_errors = (
                {"other": counts.requests},
                {"other": counts.errors},
            )
            window.versions[version] = counts
            if version in live:
                window.missing += [
                    f"{variant_name(version)} {m} at {minute_ranges(absent)}"
                    for m in COUNTS
                    if (absent := [t for t in expected if t not in sums[m]])
                ]
            window.notes[version] = _latency_note(data, version)
        window.notes["latency"] = LATENCY_NOTE
        return window

    def confirm(self, weights: dict[str, int], since: float, at: float) -> Confirmation:
        """Whether the endpoint routes by `weights` now: InService, and every variant's current weight equal
        to its desired weight and to the stack's share. DescribeEndpoint tells only the present, so it is
        confirmed at `at` (the analysis that sees it; run.py keeps that time in the log): a window begins at
        most one interval late, never early."""
        try:
            described = self.sagemaker.describe_endpoint(EndpointName=self.endpoint)
        except Exception as error:
            raise CloudWatchError(f"SageMaker DescribeEndpoint {self.endpoint}: {error}") from error
        reason = endpoint_differs(described, weights)
        return Confirmation(None, reason) if reason else Confirmation(at, None, 1)

    def reported(self, at: float) -> list[dict[str, float]]:
        """SageMaker keeps no history of weights: a replay takes the stack's."""
        return []


def _latency_note(data: dict[tuple[str, str, str], dict[float, float]], version: str) -> dict[str, Any]:
    """ModelLatency's mean over the window, for the reader only (microseconds to milliseconds)."""
    total = sum(data.get((version, "ModelLatency", "Sum"), {}).values())
    samples = sum(data.get((version, "ModelLatency", "SampleCount"), {}).values())
    mean = round(total / samples / 1000, 3) if samples else None
    return {"model_latency_mean_ms": mean, "model_latency_samples": samples}


def _shares(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: (w / total if total else 0.0) for k, w in weights.items()}


def endpoint_differs(described: dict[str, Any], weights: dict[str, int]) -> str | None:
    """Why the described endpoint does not route by `weights` (None: it does). SageMaker's weights are
    relative, so shares are compared."""
    name, status = described.get("EndpointName", "?"), described.get("EndpointStatus")
    if status != "InService":
        return f"endpoint {name} is {status}, not InService: the weights are not in effect yet"
    variants = {v["VariantName"]: v for v in described.get("ProductionVariants", [])}
    want = {variant_name(k): float(w) for k, w in weights.items() if w > 0}
    absent = sorted(set(want) - set(variants))
    if absent:
        return f"endpoint {name} has no production variant {', '.join(absent)} (variants: {sorted(variants)})"
    current = {k: float(v.get("CurrentWeight", math.nan)) for k, v in variants.items()}
    desired = {k: float(v.get("DesiredWeight", math.nan)) for k, v in variants.items()}
    if any(not math.isclose(current[k], desired[k]) for k in variants):
        return (
            f"endpoint {name} is still shifting traffic: current {_show(current)}, desired {_show(desired)}"
        )
    have = _shares({k: w for k, w in current.items() if w > 0})
    wanted = _shares(want)
    if set(have) != set(wanted) or any(not math.isclose(have[k], wanted[k]) for k in wanted):
        return (
            f"endpoint {name} routes {_show(current)}, not the stack's "
            f"{show({k: float(w) for k, w in weights.items()})}: a step applied elsewhere or half-done; "
            "run `servectl experiment step` again or set the stack's weights to the endpoint's"
        )
    return None


def _show(weights: dict[str, float]) -> str:
    return " / ".join(f"{k} {w:g}" for k, w in sorted(weights.items()))
