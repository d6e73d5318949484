"""The stack file keys of asynchronous inference: `asyncInference` (the queue) and a model's `async` block."""

import copy
from typing import Any

import pytest
import yaml

from stacks.config import ConfigError, parse_config
from stacks.preview.run import ROOT
from stacks.settings import AsyncWorkers, JobQueueConfig, StackConfig

QUEUE = {"nodeType": "cache.r7g.large", "engineVersion": "7.1", "replicas": 2, "snapshotRetentionDays": 7}
ASYNC = {"minWorkers": 1, "maxWorkers": 4, "backlogPerWorker": 200, "maxQueued": 100000}


def raw(stack: str) -> tuple[dict[str, Any], str | None]:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("model-serving:")}
    return copy.deepcopy(values), config.get("aws:region")


def parse(values: dict[str, Any], region: str | None, stack: str) -> StackConfig:
    return parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)


def fails(values: dict[str, Any], region: str | None, stack: str) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        parse(values, region, stack)
    assert raised.value.source == f"Pulumi.{stack}.yaml", raised.value
    return raised.value


@pytest.mark.parametrize(
    ("stack", "model"), [("eu-prod", "ticket-router"), ("uae-prod", "tabular-classifier")]
)
def test_shipped_stacks_run_async_inference_for_one_model(stack: str, model: str) -> None:
    cfg = parse(*raw(stack), stack)
    hosts = ("hooks.example.eu",) if stack == "eu-prod" else ()
    assert cfg.job_queue == JobQueueConfig(
        node_type="cache.r7g.large",
        engine_version="7.1",
        replicas=2,
        snapshot_retention_days=7,
        input_retention_days=7,
        callback_hosts=hosts,
    ), cfg.job_queue
    assert [m.name for m in cfg.async_models] == [model], cfg.async_models
    assert cfg.async_models[0].async_workers == AsyncWorkers(
        min_workers=1, max_workers=4, backlog_per_worker=200, max_queued=100000
    )


@pytest.mark.parametrize("stack", ["us-prod", "smb-eu", "onprem-ae"])
def test_stacks_without_async_keep_no_queue(stack: str) -> None:
    cfg = parse(*raw(stack), stack)
    assert cfg.job_queue is None and cfg.async_models == (), cfg.job_queue


def test_service_linked_role_is_created_unless_the_file_says_the_account_has_it() -> None:
    values, region = raw("eu-prod")
    assert parse(values, region, "eu-prod").job_queue.create_service_linked_role is True  # type: ignore[union-attr]
    values["asyncInference"]["createServiceLinkedRole"] = False
    assert parse(values, region, "eu-prod").job_queue.create_service_linked_role is False  # type: ignore[union-attr]


def test_a_model_with_async_needs_the_queue() -> None:
    values, region = raw("eu-prod")
    del values["asyncInference"]
    error = fails(values, region, "eu-prod")
    assert (error.key, error.reason) == (
        "model-serving.models[1].async",
        "needs model-serving:asyncInference, the queue its jobs go to",
    )


def test_a_queue_without_async_models_is_refused() -> None:
    values, region = raw("us-prod")
    values["asyncInference"] = dict(QUEUE)
    error = fails(values, region, "us-prod")
    assert (error.key, error.reason) == (
        "model-serving.asyncInference",
        "no model sets async: the queue would run in every region for nothing",
    )


@pytest.mark.parametrize(("stack", "profile"), [("smb-eu", "smb"), ("onprem-ae", "onprem")])
def test_the_queue_belongs_to_the_standard_profile(stack: str, profile: str) -> None:
    values, region = raw(stack)
    values["asyncInference"] = dict(QUEUE)
    # An smb model's async block is empty (SageMaker sizes its endpoint); the queue is still refused.
    values["models"][0]["async"] = {} if profile == "smb" else dict(ASYNC)
    # Room for the workers, so the quota check passes and the queue's own is what fails.
    values["tenants"][0]["quota"] = {"cpu": "1000", "memory": "4Ti", "pods": 10000}
    error = fails(values, region, stack)
    assert error.key == "model-serving.asyncInference", error
    assert error.reason.startswith(f"has no meaning for profile {profile}"), error.reason


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("engineVersion", "6.2", "'6.2' is not a Redis OSS 7.x version"),
        ("engineVersion", 7.1, "must be a non-empty string"),
        ("nodeType", "cache.t2.medium", "cache.t2.medium supports neither encryption at rest nor Multi-AZ"),
        ("nodeType", "r7g.large", "does not match"),
        ("replicas", 0, "0 is outside 1..5"),
        ("replicas", 6, "6 is outside 1..5"),
        ("snapshotRetentionDays", 36, "36 is outside 0..35"),
        ("createServiceLinkedRole", "yes", "must be true or false"),
    ],
)
def test_queue_keys_are_checked(key: str, value: Any, reason: str) -> None:
    values, region = raw("eu-prod")
    values["asyncInference"][key] = value
    error = fails(values, region, "eu-prod")
    assert error.key == f"model-serving.asyncInference.{key}", error
    assert reason in error.reason, error.reason


@pytest.mark.parametrize("key", ["nodeType", "engineVersion", "replicas", "snapshotRetentionDays"])
def test_queue_keys_are_required(key: str) -> None:
    values, region = raw("eu-prod")
    del values["asyncInference"][key]
    error = fails(values, region, "eu-prod")
    assert (error.key, error.reason) == (f"model-serving.asyncInference.{key}", "is required"), error


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("minWorkers", 0, "0 is outside 1..100"),
        ("maxWorkers", 0, "0 is outside 1..500"),
        ("backlogPerWorker", 0, "0 is outside 1..100000"),
        ("maxQueued", 0, "0 is outside 1..10000000"),
        ("maxWorkers", "4", "must be an integer"),
    ],
)
def test_model_async_keys_are_checked(key: str, value: Any, reason: str) -> None:
    values, region = raw("eu-prod")
    values["models"][1]["async"][key] = value
    error = fails(values, region, "eu-prod")
    assert (error.key, error.reason) == (f"model-serving.models[1].async.{key}", reason), error


def test_max_workers_cannot_be_under_the_floor() -> None:
    values, region = raw("eu-prod")
    values["models"][1]["async"] |= {"minWorkers": 3, "maxWorkers": 2}
    error = fails(values, region, "eu-prod")
    assert (error.key, error.reason) == ("model-serving.models[1].async.maxWorkers", "2 is outside 3..500")


def test_the_tenant_quota_counts_the_workers_at_their_most() -> None:
    # support: ticket-router at 6 replicas (+1 surge) takes 10.5 CPUs with its sidecars; 4 workers (+1) take
    # 7.5 more: 18 fits the shipped 24, not 17.
    values, region = raw("eu-prod")
    values["tenants"][1]["quota"]["cpu"] = "17"
    error = fails(values, region, "eu-prod")
    assert error.key == "model-serving.tenants[1].quota.cpu", error
    assert "(18 CPUs)" in error.reason, error.reason
    values["tenants"][1]["quota"]["cpu"] = "18"
    assert parse(values, region, "eu-prod").tenants[1].cpu == "18"
