"""Typed configuration of the smb profile's real-time SageMaker endpoints and public API (docs/smb.md).

Apart from stacks.settings (already long); stacks.config_smb parses the stack file into these.
"""

from dataclasses import dataclass


def endpoint_name(stack: str, model: str) -> str:
    """A model's real-time SageMaker endpoint in an smb stack; `servectl experiment` finds it by this name."""
    return f"{stack}-{model}"


@dataclass(frozen=True, kw_only=True)
class EndpointInstances:
    """Provisioned instances per production variant, scaled by Application Auto Scaling."""

    instance_type: str
    """SageMaker hosting instance type (EBS-backed: the endpoint's key encrypts its volumes)."""
    min_instances: int
    """Fewest instances per variant (at least one: a real-time variant cannot scale to zero)."""
    max_instances: int
    """Most instances per variant."""
    invocations_per_instance: int
    """Target of `SageMakerVariantInvocationsPerInstance` (invocations per instance per minute)."""


@dataclass(frozen=True, kw_only=True)
class EndpointAlarms:
    """The per-variant alarms whose state rolls an endpoint update back."""

    error_rate_percent: float
    """Invocation5XXErrors / Invocations above this, in percent, over a minute."""
    latency_p99_ms: int
    """ModelLatency's p99 above this many milliseconds, over a minute."""


@dataclass(frozen=True, kw_only=True)
class SageMakerHosting:
    """A model's `sagemaker` block in an smb stack: how its real-time endpoint runs, and why."""

    reason: str
    """Why provisioned instances (or why not serverless): the stack file's own words."""
    instances: EndpointInstances
    """Instance type and scaling bounds."""
    capture_percent: int
    """Share of requests and responses captured to `capture/<model>/` for drift analysis."""
    alarms: EndpointAlarms
    """Rollback alarms."""


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """The smb profile's public API: an HTTP API with a JWT authorizer in front of a proxy function."""

    proxy_concurrency: int
    """Reserved concurrency of the proxy function: the most requests in flight to the endpoints."""
    proxy_timeout_seconds: int
    """The proxy's timeout (API Gateway's HTTP APIs stop waiting at 30 s)."""
    custom_domain: bool
    """Serve the API under the gateway's `apiHost` with an in-region ACM certificate."""
