"""Every range a stack file's numbers must fall in, tested just inside, at and just outside each edge.

Each bound is one row: the key, its lowest and highest allowed value, the other keys it depends on (a
node group's minSize needs a desiredSize at least as large) and where the parsed value lands in the
typed config. A value at an edge must parse into that field unchanged; a value one step outside must
be refused with the file, the full key and the range in the message. The stack is eu-prod's file with
quotas large enough for any replica count, so that only the bound under test can refuse it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from stacks.config import ConfigError, parse_config
from stacks.settings import StackConfig
from tests.stacks.test_config import raw

STACK = "eu-prod"
SOURCE = f"Pulumi.{STACK}.yaml"
Path = tuple[str | int, ...]


def base() -> tuple[dict[str, Any], str | None]:
    """eu-prod's values, every tenant's quota ample, and a third tenant that runs no model."""
    values, region = raw(STACK)
    for tenant in values["tenants"]:
        tenant["quota"] = {"cpu": "100000", "memory": "100000Gi", "pods": 10_000}
    values["tenants"].append({"name": "spare", "quota": {"cpu": "1", "memory": "1Gi", "pods": 10}})
    return values, region


def put(values: dict[str, Any], path: Path, value: Any) -> None:
    """Set the value at a key path, creating the mappings on the way."""
    node: Any = values
    for key in path[:-1]:
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def key_of(path: Path) -> str:
    """The key as an error names it: model-serving.models[0].replicas.min."""
    return "model-serving" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)


def parse(values: Mapping[str, Any], region: str | None) -> StackConfig:
    return parse_config(values, stack=STACK, source=SOURCE, aws_region=region)


def refusal(values: Mapping[str, Any], region: str | None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(values, region)
    return caught.value


def assert_refused(err: ConfigError, path: Path, reason: str) -> None:
    key = key_of(path)
    assert (err.source, err.key, err.reason) == (SOURCE, key, reason), (err.source, err.key, err.reason)
    assert str(err) == f"{SOURCE}: {key}: {reason}", str(err)


def variants(cfg: StackConfig) -> Any:
    return cfg.models[0].variants


def node_group(cfg: StackConfig) -> Any:
    assert cfg.cluster is not None, "an AWS stack has a cluster"
    return cfg.cluster.node_group


def store(cfg: StackConfig) -> Any:
    assert cfg.store is not None, "an AWS stack has a store"
    return cfg.store


def rollout(cfg: StackConfig) -> Any:
    assert cfg.models[0].rollout is not None, "eu-prod's classifier has a rollout"
    return cfg.models[0].rollout


def shadow(cfg: StackConfig) -> Any:
    assert variants(cfg).shadow is not None, "the shadow was parsed"
    return variants(cfg).shadow


def workers(cfg: StackConfig) -> Any:
    assert cfg.models[1].async_workers is not None, "eu-prod's ticket-router has async workers"
    return cfg.models[1].async_workers


def queue(cfg: StackConfig) -> Any:
    assert cfg.job_queue is not None, "eu-prod has a job queue"
    return cfg.job_queue


def fault(cfg: StackConfig) -> Any:
    assert [v for v, _ in variants(cfg).faults] == ["2"], variants(cfg).faults
    return variants(cfg).faults[0][1]


@dataclass(frozen=True)
class Bound:
    """An integer key's allowed range, the keys it needs set, and the field it parses into."""

    path: Path
    low: int
    high: int
    read: Callable[[StackConfig], int]
    needs: Mapping[Path, Any] = field(default_factory=dict)

    def values(self, value: Any) -> tuple[dict[str, Any], str | None]:
        values, region = base()
        for path, needed in self.needs.items():
            put(values, path, needed)
        put(values, self.path, value)
        return values, region


GROUP = ("cluster", "nodeGroup")
MODEL = ("models", 0)
ASYNC = ("models", 1, "async")  # eu-prod's ticket-router takes async requests
BOUNDS = [
    Bound(
        (*GROUP, "minSize"),
        1,
        100,
        lambda c: node_group(c).min_size,
        {(*GROUP, "desiredSize"): 150, (*GROUP, "maxSize"): 200},
    ),
    Bound(
        (*GROUP, "maxSize"),
        1,
        200,
        lambda c: node_group(c).max_size,
        {(*GROUP, "desiredSize"): 1, (*GROUP, "minSize"): 1},
    ),
    Bound(
        (*GROUP, "desiredSize"),
        1,
        200,
        lambda c: node_group(c).desired_size,
        {(*GROUP, "minSize"): 1, (*GROUP, "maxSize"): 200},
    ),
    Bound((*GROUP, "diskGiB"), 20, 2000, lambda c: node_group(c).disk_gib),
    Bound(
        (*MODEL, "variants", "shadow", "percent"),
        1,
        100,
        lambda c: shadow(c).percent,
        {(*MODEL, "variants", "shadow"): {"version": "2"}},
    ),
    Bound((*MODEL, "variants", "faults", "2", "delay_ms"), 0, 60_000, lambda c: fault(c).delay_ms),
    Bound((*MODEL, "rollout", "minSamples"), 1, 100_000_000, lambda c: rollout(c).min_samples),
    Bound((*MODEL, "rollout", "intervalSeconds"), 10, 86_400, lambda c: rollout(c).interval_seconds),
    Bound((*MODEL, "rollout", "failedChecks"), 1, 100, lambda c: rollout(c).failed_checks),
    Bound((*MODEL, "rollout", "settleSeconds"), 0, 3600, lambda c: rollout(c).settle_seconds),
    Bound(
        (*MODEL, "rateLimit", "requestsPerSecond"),
        1,
        100_000,
        lambda c: c.models[0].rate_limit.requests_per_second,
    ),
    Bound(
        (*MODEL, "replicas", "min"),
        1,
        100,
        lambda c: c.models[0].min_replicas,
        {(*MODEL, "replicas", "max"): 500},
    ),
    # max's lowest value is min's: fewer replicas at most than at least is no range.
    Bound(
        (*MODEL, "replicas", "max"),
        7,
        500,
        lambda c: c.models[0].max_replicas,
        {(*MODEL, "replicas", "min"): 7},
    ),
    Bound((*MODEL, "workers"), 1, 64, lambda c: c.models[0].workers),
    Bound(("tenants", 2, "quota", "pods"), 1, 10_000, lambda c: c.tenants[2].pods),
    Bound(("observability", "logRetentionDays"), 30, 3653, lambda c: c.observability.log_retention_days),
    Bound(
        ("observability", "prometheusRetentionDays"),
        1,
        365,
        lambda c: c.observability.prometheus_retention_days,
    ),
    Bound(
        ("observability", "prometheusStorageGiB"), 10, 4096, lambda c: c.observability.prometheus_storage_gib
    ),
    Bound(("store", "inferenceLogDays"), 1, 3650, lambda c: store(c).inference_log_days),
    Bound((*ASYNC, "minWorkers"), 1, 100, lambda c: workers(c).min_workers, {(*ASYNC, "maxWorkers"): 500}),
    # maxWorkers' lowest value is minWorkers'.
    Bound((*ASYNC, "maxWorkers"), 3, 500, lambda c: workers(c).max_workers, {(*ASYNC, "minWorkers"): 3}),
    Bound((*ASYNC, "backlogPerWorker"), 1, 100_000, lambda c: workers(c).backlog_per_worker),
    Bound((*ASYNC, "maxQueued"), 1, 10_000_000, lambda c: workers(c).max_queued),
    Bound(("asyncInference", "replicas"), 1, 5, lambda c: queue(c).replicas),
    Bound(("asyncInference", "snapshotRetentionDays"), 0, 35, lambda c: queue(c).snapshot_retention_days),
    Bound(("asyncInference", "inputRetentionDays"), 1, 365, lambda c: queue(c).input_retention_days),
    Bound(("store", "noncurrentVersionDays"), 1, 3650, lambda c: store(c).noncurrent_version_days),
]


def edges(outside: bool) -> list[Any]:
    cases = []
    for bound in BOUNDS:
        name = key_of(bound.path).removeprefix("model-serving.")
        points = (
            [("just under", bound.low - 1), ("just over", bound.high + 1)]
            if outside
            else [
                ("at low", bound.low),
                ("just in", bound.low + 1),
                ("just in", bound.high - 1),
                ("at high", bound.high),
            ]
        )
        cases += [pytest.param(bound, value, id=f"{name} {where} {value}") for where, value in points]
    return cases


@pytest.mark.parametrize(("bound", "value"), edges(outside=False))
def test_a_value_at_or_inside_a_bound_is_parsed_unchanged(bound: Bound, value: int) -> None:
    cfg = parse(*bound.values(value))
    assert bound.read(cfg) == value, f"{key_of(bound.path)}: {value} parsed as {bound.read(cfg)}"


@pytest.mark.parametrize(("bound", "value"), edges(outside=True))
def test_a_value_just_outside_a_bound_is_refused_naming_file_key_and_range(bound: Bound, value: int) -> None:
    err = refusal(*bound.values(value))
    assert_refused(err, bound.path, f"{value} is outside {bound.low}..{bound.high}")


@pytest.mark.parametrize("value", [True, False, 2.0, "3", [3]])
@pytest.mark.parametrize("bound", BOUNDS[:1] + BOUNDS[-1:], ids=lambda b: key_of(b.path))
def test_an_integer_key_refuses_what_is_not_an_integer(bound: Bound, value: Any) -> None:
    # bool is an int to Python, and YAML reads `true` as one: it must not pass for 1.
    err = refusal(*bound.values(value))
    assert_refused(err, bound.path, "must be an integer")


@pytest.mark.parametrize(
    ("minimum", "desired", "maximum", "refused"),
    [
        (3, 2, 18, True),
        (3, 3, 18, False),
        (3, 4, 18, False),
        (3, 17, 18, False),
        (3, 18, 18, False),
        (3, 19, 18, True),
        (5, 5, 5, False),
    ],
)
def test_desired_size_lies_between_min_and_max(
    minimum: int, desired: int, maximum: int, refused: bool
) -> None:
    values, region = base()
    put(
        values,
        GROUP,
        {**values["cluster"]["nodeGroup"], "minSize": minimum, "desiredSize": desired, "maxSize": maximum},
    )
    if not refused:
        group = node_group(parse(values, region))
        assert (group.min_size, group.desired_size, group.max_size) == (minimum, desired, maximum), group
        return
    reason = f"needs minSize <= desiredSize <= maxSize, got {minimum}, {desired}, {maximum}"
    assert_refused(refusal(values, region), GROUP, reason)


WEIGHTS = (*MODEL, "variants", "weights")


@pytest.mark.parametrize(("first", "second"), [(100, 0), (99, 1), (1, 99), (0, 100)])
def test_a_version_weight_from_0_to_100_is_kept(first: int, second: int) -> None:
    values, region = base()
    put(values, WEIGHTS, {"1": first, "2": second})
    weights = variants(parse(values, region)).weights
    assert weights == (("1", first), ("2", second)), weights


@pytest.mark.parametrize(
    ("first", "second", "bad"), [(90, -1, "2"), (90, 101, "2"), (-1, 101, "1"), (101, -1, "1")]
)
def test_a_version_weight_outside_0_to_100_is_refused(first: int, second: int, bad: str) -> None:
    values, region = base()
    put(values, WEIGHTS, {"1": first, "2": second})
    value = first if bad == "1" else second
    assert_refused(refusal(values, region), (*WEIGHTS, bad), f"{value} is outside 0..100")


@pytest.mark.parametrize(("first", "second"), [(90, 9), (90, 11), (0, 0), (100, 1)])
def test_weights_summing_to_other_than_100_are_refused(first: int, second: int) -> None:
    values, region = base()
    put(values, WEIGHTS, {"1": first, "2": second})
    assert_refused(refusal(values, region), WEIGHTS, f"weights must sum to 100, got {first + second}")


@dataclass(frozen=True)
class Share:
    """A key that takes any number (integer or not) in a closed range, with its default when absent."""

    path: Path
    high: int
    default: float
    read: Callable[[StackConfig], float]


SHARES = [
    Share((*MODEL, "variants", "faults", "2", "error_ratio"), 1, 0.0, lambda c: fault(c).error_ratio),
    Share(
        ("observability", "tracingSamplingPercent"),
        100,
        1.0,
        lambda c: c.observability.tracing_sampling_percent,
    ),
]
SHARE_IDS = [key_of(s.path).removeprefix("model-serving.") for s in SHARES]


@pytest.mark.parametrize("share", SHARES, ids=SHARE_IDS)
@pytest.mark.parametrize("where", ["at low", "just in", "inside", "just under high", "at high"])
def test_a_share_at_or_inside_its_range_is_parsed_as_a_float(share: Share, where: str) -> None:
    value = {
        "at low": 0,
        "just in": 1e-9,
        "inside": share.high / 2,
        "just under high": share.high - 1e-9,
    }.get(where, share.high)
    values, region = base()
    put(values, share.path, value)
    parsed = share.read(parse(values, region))
    assert parsed == value and type(parsed) is float, f"{key_of(share.path)}: {value!r} parsed as {parsed!r}"


@pytest.mark.parametrize("share", SHARES, ids=SHARE_IDS)
def test_a_share_left_out_takes_its_default(share: Share) -> None:
    values, region = base()
    put(values, share.path, None)
    parsed = share.read(parse(values, region))
    assert parsed == share.default and type(parsed) is float, f"{key_of(share.path)}: {parsed!r}"


@pytest.mark.parametrize("share", SHARES, ids=SHARE_IDS)
@pytest.mark.parametrize("where", ["just under low", "just over high", "true", "false", "a string"])
def test_a_share_outside_its_range_or_not_a_number_is_refused(share: Share, where: str) -> None:
    value = {"just under low": -1e-9, "just over high": share.high + 1e-9, "true": True, "false": False}.get(
        where, "0.5"
    )
    values, region = base()
    put(values, share.path, value)
    assert_refused(
        refusal(values, region), share.path, f"must be a number from 0 to {share.high}, got {value!r}"
    )


CIDR = ("regions", 0, "vpcCidr")


@pytest.mark.parametrize(
    "cidr", ["10.40.0.0/16", "10.40.0.0/17", "10.40.0.0/19", "10.40.0.0/20", "172.16.0.0/16"]
)
def test_a_private_vpc_of_16_to_20_bits_is_kept(cidr: str) -> None:
    values, region = base()
    put(values, CIDR, cidr)
    kept = parse(values, region).regions[0].vpc_cidr
    assert kept == cidr, f"{cidr} parsed as {kept}"


@pytest.mark.parametrize("cidr", ["10.40.0.0/15", "10.40.0.0/21", "11.40.0.0/16", "100.64.0.0/16"])
def test_a_public_vpc_or_one_outside_16_to_20_bits_is_refused(cidr: str) -> None:
    values, region = base()
    put(values, CIDR, cidr)
    assert_refused(refusal(values, region), CIDR, f"{cidr} must be a private network of size /16 to /20")


STEPS = (*MODEL, "rollout", "steps")


@pytest.mark.parametrize("steps", [[100], [1, 100], [1, 2, 99, 100], [99, 100]])
def test_rollout_steps_from_1_to_100_that_increase_to_100_are_kept(steps: list[int]) -> None:
    values, region = base()
    put(values, STEPS, steps)
    kept = rollout(parse(values, region)).steps
    assert kept == tuple(steps), f"{steps} parsed as {kept}"


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        ([], "must list percents from 1 to 100"),
        ([0, 100], "must list percents from 1 to 100"),
        ([-1, 100], "must list percents from 1 to 100"),
        ([50, 101], "must list percents from 1 to 100"),
        ([True, 100], "must list percents from 1 to 100"),
        ([5.0, 100], "must list percents from 1 to 100"),
        ([99], "must increase and end at 100, got [99]"),
        ([5, 5, 100], "must increase and end at 100, got [5, 5, 100]"),
        ([5, 100, 100], "must increase and end at 100, got [5, 100, 100]"),
        ([50, 25, 100], "must increase and end at 100, got [50, 25, 100]"),
    ],
)
def test_rollout_steps_out_of_range_or_order_are_refused(steps: list[Any], reason: str) -> None:
    values, region = base()
    put(values, STEPS, steps)
    assert_refused(refusal(values, region), STEPS, reason)
