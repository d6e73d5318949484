"""The SageMaker weights target against moto's server: a step writes the stack file and shifts the endpoint's
variants; a refused call leaves both as they were; the next analysis confirms the step from DescribeEndpoint
and keeps that time in the log."""

import math
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from servectl.experiments import log
from servectl.experiments.cloudwatch import CloudWatchSource, variant_name
from servectl.experiments.decision import Schedule, Thresholds
from servectl.experiments.run import Experiment, analyze
from servectl.experiments.sagemaker_target import SageMakerStepError, SageMakerTarget
from servectl.experiments.targets import ROOT, StackTarget
from tests.servectl.experiments.aws_emulator import client, create_endpoint, put_minutes

MODEL = "tabular-classifier"
STACK = "smb-eu"


@pytest.fixture
def stack(tmp_path: Path) -> StackTarget:
    """The smb-eu stack file in a directory of its own (its model has weights 1: 90, 2: 10)."""
    shutil.copy(ROOT / f"Pulumi.{STACK}.yaml", tmp_path)
    return StackTarget(STACK, MODEL, root=tmp_path)


def _endpoint_weights(endpoint: str) -> dict[str, tuple[float, float]]:
    described = client("sagemaker").describe_endpoint(EndpointName=endpoint)
    return {
        v["VariantName"]: (v["CurrentWeight"], v["DesiredWeight"]) for v in described["ProductionVariants"]
    }


def _file_weights(stack: StackTarget) -> dict[str, int]:
    models = yaml.safe_load(stack.path.read_text())["config"]["model-serving:models"]
    return {
        str(k): int(v)
        for k, v in next(m for m in models if m["name"] == MODEL)["variants"]["weights"].items()
    }


def test_variants_are_named_as_the_stacks_name_them() -> None:
    from stacks.components.sagemaker_parts import variant_name as stacks_variant_name

    assert [variant_name(v) for v in ("1", "12")] == [stacks_variant_name(v) for v in ("1", "12")]


def test_a_step_writes_the_stack_file_and_shifts_the_endpoint(aws: str, stack: StackTarget) -> None:
    create_endpoint("ep-step", {"1": 90, "2": 10})
    before = stack.path.read_text()
    done = SageMakerTarget(stack, "ep-step", client("sagemaker")).apply({"1": 75, "2": 25})
    assert _endpoint_weights("ep-step") == {"v1": (75.0, 75.0), "v2": (25.0, 25.0)}
    assert _file_weights(stack) == {"1": 75, "2": 25}
    assert stack.weights() == {"1": 75, "2": 25}, "the stack reads back what the endpoint routes by"
    changed = [
        (a, b)
        for a, b in zip(before.splitlines(), stack.path.read_text().splitlines(), strict=True)
        if a != b
    ]
    assert [b.strip() for _, b in changed] == ['"1": 75', '"2": 25'], changed
    assert "ep-step shifting to them" in done and "Pulumi.smb-eu.yaml" in done, done


def test_a_refused_update_restores_the_file_and_the_endpoint_keeps_its_weights(
    aws: str, stack: StackTarget
) -> None:
    """The endpoint is deleted between the target's check and its call (a real race, through moto): the
    update fails after the file was written, and the file is restored byte for byte."""
    create_endpoint("ep-gone", {"1": 90, "2": 10})
    sagemaker = client("sagemaker")

    def delete_first(**_: Any) -> None:
        client("sagemaker").delete_endpoint(EndpointName="ep-gone")

    sagemaker.meta.events.register("before-call.sagemaker.UpdateEndpointWeightsAndCapacities", delete_first)
    before = stack.path.read_text()
    with pytest.raises(SageMakerStepError, match=r"Pulumi\.smb-eu\.yaml was restored") as failed:
        SageMakerTarget(stack, "ep-gone", sagemaker).apply({"1": 75, "2": 25})
    assert "UpdateEndpointWeightsAndCapacities on ep-gone failed" in str(failed.value), failed.value
    assert stack.path.read_text() == before, "the file keeps the weights the endpoint kept"


@pytest.mark.parametrize(
    ("weights", "refusal"),
    [
        ({"1": 75, "3": 25}, "has no production variant v3"),  # a version the endpoint does not serve
    ],
)
def test_a_step_the_endpoint_cannot_take_writes_nothing(
    aws: str, stack: StackTarget, weights: dict[str, int], refusal: str
) -> None:
    create_endpoint("ep-two", {"1": 90, "2": 10})
    before = stack.path.read_text()
    with pytest.raises(SageMakerStepError, match=refusal):
        SageMakerTarget(stack, "ep-two", client("sagemaker")).apply(weights)
    assert stack.path.read_text() == before
    assert _endpoint_weights("ep-two") == {"v1": (90.0, 90.0), "v2": (10.0, 10.0)}


def test_a_missing_endpoint_writes_nothing(aws: str, stack: StackTarget) -> None:
    before = stack.path.read_text()
    with pytest.raises(SageMakerStepError, match="DescribeEndpoint ep-none failed"):
        SageMakerTarget(stack, "ep-none", client("sagemaker")).apply({"1": 75, "2": 25})
    assert stack.path.read_text() == before


def _experiment(log_path: Path, endpoint: str) -> Experiment:
    source = CloudWatchSource(
        endpoint, ("1", "2"), client("cloudwatch"), client("sagemaker"), delay_seconds=0
    )
    return Experiment(
        prometheus="", model=MODEL, log_path=log_path, source=source,
        schedule=Schedule(min_samples=500, failed_checks=1, settle_seconds=30),
        thresholds=Thresholds(optional_metrics=frozenset({"conversion", "value", "accuracy", "cost"})),
    )  # fmt: skip


def _step(log_path: Path, at: float, weights: dict[str, int]) -> None:
    """The step entry run.apply appends once the target returns."""
    log.append(log_path, {"time": at, "event": "step", "model": MODEL, "baseline": "1", "candidate": "2",
                          "decision": "promote", "weights": weights, "applied": "test"})  # fmt: skip


def test_the_steps_window_begins_when_the_endpoint_is_seen_at_its_weights_plus_settle(
    aws: str, stack: StackTarget, tmp_path: Path
) -> None:
    t0 = math.floor((time.time() - 3600) / 60) * 60
    create_endpoint("ep-window", {"1": 90, "2": 10})
    put_minutes("ep-window", "1", {t0 + 60 * i: (1500, 0, 3) for i in range(20)})
    put_minutes("ep-window", "2", {t0 + 60 * i: (500, 0, 1) for i in range(20)})
    experiment, path = _experiment(tmp_path / "log.jsonl", "ep-window"), tmp_path / "log.jsonl"
    analyze(experiment, {"1": 90, "2": 10}, now=t0)
    target = SageMakerTarget(stack, "ep-window", client("sagemaker"))
    target.apply({"1": 75, "2": 25})
    _step(path, t0 + 300, {"1": 75, "2": 25})
    seen = analyze(experiment, target.weights(), now=t0 + 310)
    assert seen["window"]["confirmed_at"] == t0 + 310, seen["window"]
    assert "in effect on the endpoint since" in seen["reasons"][0] and "settling 30 s" in seen["reasons"][0]
    # Later analyses keep the first confirmation, as logged: the step's window begins at it plus the
    # settle period, counted from the first whole minute after that.
    judged = analyze(experiment, target.weights(), now=t0 + 900)
    assert judged["window"]["step_start"] == t0 + 340, judged["window"]
    assert judged["window"]["step_counted"] == {"from": t0 + 360, "to": t0 + 900}, judged["window"]
    assert judged["statistics"], "the step's window was judged"
    # Then the endpoint is shifted elsewhere (a console edit): the weights no longer hold, so it holds.
    client("sagemaker").update_endpoint_weights_and_capacities(
        EndpointName="ep-window",
        DesiredWeightsAndCapacities=[{"VariantName": "v1", "DesiredWeight": 50.0}],
    )
    moved = analyze(experiment, target.weights(), now=t0 + 960)
    assert moved["decision"] == "hold" and "routes v1 50 / v2 25, not the stack's" in moved["reasons"][0], (
        moved
    )


def test_an_endpoint_at_other_weights_than_the_stack_holds_the_step(aws: str, tmp_path: Path) -> None:
    t0 = math.floor((time.time() - 3600) / 60) * 60
    create_endpoint("ep-drift", {"1": 90, "2": 10})  # the stack says 75/25; the endpoint never took them
    path = tmp_path / "log.jsonl"
    experiment = _experiment(path, "ep-drift")
    analyze(experiment, {"1": 90, "2": 10}, now=t0)
    _step(path, t0 + 300, {"1": 75, "2": 25})
    held = analyze(experiment, {"1": 75, "2": 25}, now=t0 + 600)
    assert held["decision"] == "hold" and "confirmed_at" not in held["window"], held
    assert "routes v1 90 / v2 10, not the stack's v1 75 / v2 25" in held["reasons"][0], held["reasons"]
