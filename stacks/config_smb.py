"""The smb profile's keys: a model's `sagemaker` block (its real-time endpoint) and the stack's `api` block.

An smb stack runs no cluster: each model is a SageMaker real-time endpoint (one production variant per
version) behind an API Gateway HTTP API (docs/smb.md). Why serverless inference is refused: SageMaker
Serverless Inference leaves out VPC configuration, network isolation, data capture and multiple production
variants ("Feature exclusions" of the Serverless Inference guide), and the profile needs all four.
"""

import re
from collections.abc import Mapping

from stacks.config_nodes import ConfigError, Node
from stacks.settings_smb import ApiConfig, EndpointAlarms, EndpointInstances, SageMakerHosting

SERVERLESS_REFUSAL = (
    "SageMaker Serverless Inference supports no VPC configuration, network isolation, data capture or "
    "multiple production variants, which every smb endpoint needs (docs/smb.md): use instances"
)
_ML_INSTANCE = re.compile(r"^ml\.[a-z][a-z0-9-]*\.[a-z0-9]+$")
_STORAGE_FAMILY = re.compile(r"^[a-z]+[0-9]+[a-z]*d[a-z]*$")
MAX_VERSIONS = 5
"""Versions a model may serve at once: two rollback alarms per variant, and SageMaker's
AutoRollbackConfiguration takes at most ten alarms."""
KEYS = ("reason", "instances", "serverless", "dataCapturePercent", "alarms")


def _known_keys(node: Node, keys: tuple[str, ...]) -> None:
    if not isinstance(node.value, Mapping):
        raise node.fail("must be a mapping")
    for key in node.value:
        if key not in keys:
            raise node.child(str(key)).fail(f"is not a key of this block (keys: {', '.join(keys)})")


def _instances(node: Node) -> EndpointInstances:
    _known_keys(node, ("type", "min", "max", "invocationsPerInstance"))
    kind = node.string("type", _ML_INSTANCE)
    if _STORAGE_FAMILY.match(kind.split(".")[1]):
        raise node.child("type").fail(
            f"{kind} keeps its volumes on local NVMe disks, for which SageMaker refuses the endpoint's KMS "
            "key: choose an EBS-backed type such as ml.c6i.large"
        )
    low = node.integer("min", 1, 100)
    return EndpointInstances(
        instance_type=kind,
        min_instances=low,
        max_instances=node.integer("max", low, 100),
        invocations_per_instance=node.integer("invocationsPerInstance", 1, 100_000),
    )


def _alarms(node: Node) -> EndpointAlarms:
    _known_keys(node, ("errorRatePercent", "latencyP99Ms"))
    rate = node.child("errorRatePercent")
    if isinstance(rate.value, bool) or not isinstance(rate.value, int | float) or not 0 < rate.value <= 100:
        raise rate.fail(f"must be a percent above 0 and at most 100, got {rate.value!r}")
    return EndpointAlarms(
        error_rate_percent=float(rate.value), latency_p99_ms=node.integer("latencyP99Ms", 1, 60_000)
    )


def sagemaker_hosting(node: Node, versions: int) -> SageMakerHosting:
    """A model's `sagemaker` block: required in an smb stack (every model is an endpoint)."""
    block = node.child("sagemaker")
    _known_keys(block, KEYS)
    if block.optional("serverless").value is not None:
        raise block.child("serverless").fail(SERVERLESS_REFUSAL)
    if versions > MAX_VERSIONS:
        raise node.child("variants").fail(
            f"{versions} versions: an endpoint rolls back on two alarms per variant and SageMaker "
            f"takes at most ten, so at most {MAX_VERSIONS} versions"
        )
    reason = block.string("reason")
    if len(reason.split()) < 3:
        raise block.child("reason").fail("must say why in words (why instances, why these sizes)")
    return SageMakerHosting(
        reason=reason,
        instances=_instances(block.child("instances")),
        capture_percent=block.integer("dataCapturePercent", 1, 100),
        alarms=_alarms(block.child("alarms")),
    )


def api(root: Node, api_host: str) -> ApiConfig:
    """The stack's `api` block: the proxy function's bounds, and whether the API has its own domain."""
    node = root.child("api")
    _known_keys(node, ("proxyConcurrency", "proxyTimeoutSeconds", "customDomain"))
    custom = node.optional("customDomain")
    if custom.value is not None and not isinstance(custom.value, bool):
        raise custom.fail("must be true or false")
    if custom.value and not api_host:
        raise custom.fail("needs model-serving:gateway.apiHost and zoneId, the domain and its hosted zone")
    return ApiConfig(
        proxy_concurrency=node.integer("proxyConcurrency", 1, 1000),
        proxy_timeout_seconds=node.integer("proxyTimeoutSeconds", 1, 29),
        custom_domain=bool(custom.value),
    )


def refuse_cluster_keys(root: Node) -> None:
    """The smb profile runs no cluster, so the keys that size or reach one mean nothing in its stack file."""
    for key, why in (
        ("cluster", "an smb stack runs no EKS cluster: its models are SageMaker endpoints"),
        ("identity", "an smb stack has no cluster for people to sign in to"),
        ("runner", "an smb stack has no private cluster API; CI deploys its infra layer"),
        ("features", "an smb stack has no cluster to run the feature store's jobs"),
    ):
        if root.optional(key).value is not None:
            raise ConfigError(root.source, f"{root.path}.{key}", f"has no meaning for profile smb: {why}")
