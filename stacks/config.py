"""The stack configuration, read once into typed objects.

`load_config()` is the only place in the program that reads `pulumi.Config`. The parsing itself
(`parse_config`) is pure, so every rule about a valid stack file is testable without Pulumi. A
missing or invalid
key raises `ConfigError` naming the stack file, the key and the reason.
"""

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import pulumi

from stacks import config_smb
from stacks.config_nodes import ConfigError
from stacks.config_nodes import Node as _Node
from stacks.jurisdictions import JURISDICTION_REGIONS
from stacks.manifests.features import CPU as FEATURE_JOB_CPU
from stacks.manifests.features import MEMORY as FEATURE_JOB_MEMORY
from stacks.manifests.rollout_controller import CPU as CONTROLLER_CPU
from stacks.manifests.rollout_controller import MEMORY as CONTROLLER_MEMORY
from stacks.manifests.serving import cpu_millicores, memory_bytes, pod_footprint
from stacks.settings import (
    FEEDBACK_METRICS,
    SUPPORTED_KUBERNETES_VERSIONS,
    AlertingConfig,
    AsyncWorkers,
    ClusterConfig,
    Fault,
    FeaturesConfig,
    GatewayConfig,
    IdentityConfig,
    ImageConfig,
    JobQueueConfig,
    ModelConfig,
    ModelFeatures,
    NodeGroupConfig,
    ObservabilityConfig,
    OnPremConfig,
    OnPremStore,
    RateLimit,
    Receiver,
    RegionConfig,
    Rollout,
    RunnerConfig,
    SageMakerAsyncConfig,
    Shadow,
    StackConfig,
    StateConfig,
    StoreConfig,
    TenantConfig,
    VariantRoute,
    Variants,
)
from stacks.settings_smb import ApiConfig, SageMakerHosting

__all__ = ["NAMESPACE", "PROFILES", "ConfigError", "load_config", "parse_config"]

NAMESPACE = "model-serving"
_STRING_KEYS = ("jurisdiction", "profile", "owner", "dataClassification", "accountId")
_OBJECT_KEYS = (
    "state",
    "runner",
    "onprem",
    "egress",
    "regions",
    "cluster",
    "identity",
    "gateway",
    "image",
    "store",
    "observability",
    "tenants",
    "models",
    "asyncInference",
    "sagemakerAsync",
    "features",
    "api",
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^[1-9][0-9]*$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_ROLE_ARN = re.compile(r"^arn:aws:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")
_HOST = re.compile(r"^([a-z0-9-]+\.)+[a-z]{2,}(:[0-9]{1,5})?$")
PROFILES = ("onprem", "smb", "standard")


def _region(node: _Node, jurisdiction: str) -> RegionConfig:
    region = node.string("region")
    allowed = JURISDICTION_REGIONS[jurisdiction]
    if region not in allowed:
        raise node.child("region").fail(f"{region} is not in jurisdiction {jurisdiction} ({sorted(allowed)})")
    cidr = node.string("vpcCidr")
    try:
        network = ipaddress.IPv4Network(cidr)
    except ValueError as exc:
        raise node.child("vpcCidr").fail(f"{cidr!r} is not an IPv4 network: {exc}") from exc
    if not network.is_private or not 16 <= network.prefixlen <= 20:
        raise node.child("vpcCidr").fail(f"{cidr} must be a private network of size /16 to /20")
    return RegionConfig(region=region, vpc_cidr=cidr)


def _regions(root: _Node, jurisdiction: str, profile: str) -> tuple[RegionConfig, ...]:
    node = root.child("regions")
    regions = tuple(_region(item, jurisdiction) for item in node.items())
    if not regions:
        raise node.fail("needs at least one region")
    if len({r.region for r in regions}) != len(regions):
        raise node.fail("lists a region twice")
    if profile == "smb" and len(regions) != 1:
        raise node.fail(f"the smb profile runs in exactly one region, got {len(regions)}")
    nets = [ipaddress.IPv4Network(r.vpc_cidr) for r in regions]
    if any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :]):
        raise node.fail("VPC CIDRs overlap; peering or failover would break")
    return regions


def _cluster(node: _Node) -> ClusterConfig:
    version = node.string("kubernetesVersion")
    if version not in SUPPORTED_KUBERNETES_VERSIONS:
        raise node.child("kubernetesVersion").fail(
            f"{version} is not in EKS standard support; use one of {list(SUPPORTED_KUBERNETES_VERSIONS)}"
        )
    cidrs = node.strings("publicAccessCidrs")
    for cidr in cidrs:
        try:
            # An interface's network, so that host bits may be set: 203.0.113.7/24 is 203.0.113.0/24.
            net = ipaddress.ip_interface(cidr).network
        except ValueError as exc:
            raise node.child("publicAccessCidrs").fail(f"{cidr!r} is not a network: {exc}") from exc
        if net.prefixlen == 0:
            raise node.child("publicAccessCidrs").fail(f"{cidr} would open the API endpoint to the internet")
    group = node.child("nodeGroup")
    min_size, max_size = group.integer("minSize", 1, 100), group.integer("maxSize", 1, 200)
    desired = group.integer("desiredSize", 1, 200)
    if not min_size <= desired <= max_size:
        raise group.fail(f"needs minSize <= desiredSize <= maxSize, got {min_size}, {desired}, {max_size}")
    slr = node.optional("createAutoscalingServiceLinkedRole")
    if slr.value is not None and not isinstance(slr.value, bool):
        raise slr.fail("must be true or false")
    return ClusterConfig(
        kubernetes_version=version,
        public_access_cidrs=cidrs,
        break_glass_role_arn=node.string("breakGlassRoleArn", _ROLE_ARN),
        create_autoscaling_service_linked_role=slr.value is not False,
        node_group=NodeGroupConfig(
            instance_type=group.string("instanceType"),
            min_size=min_size,
            max_size=max_size,
            desired_size=desired,
            disk_gib=group.integer("diskGiB", 20, 2000),
        ),
    )


def _https(node: _Node, key: str) -> str:
    value = node.string(key)
    if not value.startswith("https://"):
        raise node.child(key).fail(f"{value!r} must be an https:// URL")
    return value


def _gateway(node: _Node, profile: str) -> GatewayConfig:
    audiences = node.strings("audiences")
    if not audiences:
        raise node.child("audiences").fail("needs at least one audience")
    allowed = node.strings("allowedCidrs") or ("0.0.0.0/0",)
    for cidr in allowed:
        try:
            ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise node.child("allowedCidrs").fail(f"{cidr!r} is not a network: {exc}") from exc
    return GatewayConfig(
        allowed_cidrs=allowed,
        api_host=node.string("apiHost", re.compile(r"^([a-z0-9-]+\.)+[a-z]{2,}$")),
        zone_id=node.string("zoneId", re.compile(r"^Z[0-9A-Z]{8,32}$")),
        # smb stacks have no cluster secret: API Gateway serves the API's ACM certificate.
        tls_credential_name="" if profile == "smb" else node.string("tlsCredentialName", _DNS_LABEL),
        jwt_issuer=_https(node, "jwtIssuer"),
        jwks_uri=_https(node, "jwksUri"),
        audiences=audiences,
    )


def _variants(node: _Node) -> Variants:
    weights_node = node.child("weights")
    if not isinstance(weights_node.value, Mapping) or not weights_node.value:
        raise weights_node.fail("must map versions to percents")
    weights: dict[str, int] = {}
    for version in weights_node.value:
        if not _VERSION.match(str(version)):
            raise weights_node.fail(f"version {version!r} is not a Triton version directory name (1, 2, ...)")
        weights[str(version)] = weights_node.integer(version, 0, 100)
    if sum(weights.values()) != 100:
        raise weights_node.fail(f"weights must sum to 100, got {sum(weights.values())}")
    sticky = node.optional("sticky")
    routes = node.optional("routes")
    parsed_routes = tuple(
        VariantRoute(
            header=r.string("header"),
            value=r.string("value"),
            version=_known_version(r.child("version"), weights),
        )
        for r in (routes.items() if routes.value is not None else [])
    )
    return Variants(
        weights=tuple(sorted(weights.items(), key=lambda kv: int(kv[0]))),
        sticky_header=sticky.string("header") if sticky.value is not None else None,
        routes=parsed_routes,
        shadow=_shadow(node.optional("shadow"), weights),
        faults=_faults(node.optional("faults"), weights),
    )


def _known_version(node: _Node, weights: Mapping[str, int]) -> str:
    version = str(node.value)
    if version not in weights:
        raise node.fail(f"version {version!r} has no entry in weights")
    return version


def _shadow(node: _Node, weights: Mapping[str, int]) -> Shadow | None:
    if node.value is None:
        return None
    return Shadow(
        version=_known_version(node.child("version"), weights), percent=node.integer("percent", 1, 100)
    )


def _faults(node: _Node, weights: Mapping[str, int]) -> tuple[tuple[str, Fault], ...]:
    if node.value is None:
        return ()
    if not isinstance(node.value, Mapping):
        raise node.fail("must map versions to faults")
    faults = []
    for key in node.value:
        version = _known_version(_Node(key, f"{node.path}.{key}", node.source), weights)
        fault = node.child(key)
        ratio = fault.optional("error_ratio")
        if ratio.value is not None and (
            isinstance(ratio.value, bool)
            or not isinstance(ratio.value, int | float)
            or not 0 <= ratio.value <= 1
        ):
            raise ratio.fail(f"must be a number from 0 to 1, got {ratio.value!r}")
        delay = fault.integer("delay_ms", 0, 60_000) if fault.optional("delay_ms").value else 0
        faults.append((version, Fault(delay_ms=delay, error_ratio=float(ratio.value or 0.0))))
    return tuple(sorted(faults, key=lambda kv: int(kv[0])))


def _rollout(node: _Node) -> Rollout | None:
    if node.value is None:
        return None
    steps_node = node.child("steps")
    steps = tuple(item.value for item in steps_node.items())
    if not steps or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100 for s in steps):
        raise steps_node.fail("must list percents from 1 to 100")
    if list(steps) != sorted(set(steps)) or steps[-1] != 100:
        raise steps_node.fail(f"must increase and end at 100, got {list(steps)}")
    return Rollout(
        steps=steps,
        min_samples=node.integer("minSamples", 1, 100_000_000),
        interval_seconds=node.integer("intervalSeconds", 10, 86_400),
        failed_checks=node.integer("failedChecks", 1, 100),
        optional_metrics=_optional_metrics(node),
        **_settle(node),
        **_guard(node, steps),
        **_segments(node.optional("segments")),
    )


_SEGMENT_HEADER = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_SEGMENT_VALUE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_SEGMENTS = 16
"""Segment values a rollout may guard: each adds series to the servers' request counter (bounded)."""


def _segments(node: _Node) -> dict[str, Any]:
    """`segments: {header, values}`: the key user segments the experiment guards (docs/experiments.md).

    The same bounds the server applies (serving_image/segments.py), checked here so a bad value fails the
    preview with its key rather than a pod at start."""
    if node.value is None:
        return {}
    header = node.string("header", _SEGMENT_HEADER)
    values_node = node.child("values")
    values = tuple(item.value for item in values_node.items())
    for item in values_node.items():
        if not isinstance(item.value, str) or not _SEGMENT_VALUE.match(item.value) or item.value == "other":
            raise item.fail(f"{item.value!r} must be 1-32 of [a-z0-9_-], alphanumeric first, and not 'other'")
    if not values or len(values) > MAX_SEGMENTS or len(set(values)) != len(values):
        raise values_node.fail(f"must list 1 to {MAX_SEGMENTS} distinct segment values, got {list(values)}")
    return {"segment_header": header, "segment_values": values}


def _settle(rollout: _Node) -> dict[str, Any]:
    """`settleSeconds`, when given (0..3600: an hour of waiting per step is already a stalled rollout)."""
    if rollout.optional("settleSeconds").value is None:
        return {}
    return {"settle_seconds": rollout.integer("settleSeconds", 0, 3600)}


def _optional_metrics(rollout: _Node) -> tuple[str, ...]:
    """`optionalMetrics`: feedback metrics the model gets none of (unlisted, one without feedback holds)."""
    names = rollout.strings("optionalMetrics")
    unknown = sorted(set(names) - set(FEEDBACK_METRICS))
    if unknown:
        raise rollout.child("optionalMetrics").fail(f"{unknown} are not among {list(FEEDBACK_METRICS)}")
    return tuple(sorted(set(names)))


def _guard(rollout: _Node, steps: tuple[int, ...]) -> dict[str, Any]:
    """`holdbackPercent` (1..50) and `guardSeconds` (60..604800): the post-promotion guard, when given.

    The guard step (100 minus the holdback) must lie above every step but the last, or the schedule would
    move the candidate's share down."""
    if rollout.optional("holdbackPercent").value is None:
        if rollout.optional("guardSeconds").value is not None:
            raise rollout.child("guardSeconds").fail("needs holdbackPercent: the guard holds a share back")
        return {}
    holdback = rollout.integer("holdbackPercent", 1, 50)
    below = [s for s in steps[:-1] if s >= 100 - holdback]
    if below:
        raise rollout.child("holdbackPercent").fail(
            f"the guard step {100 - holdback}% must be above every step but the last; {below} are not"
        )
    guard = (
        3600
        if rollout.optional("guardSeconds").value is None
        else rollout.integer("guardSeconds", 60, 604_800)
    )
    return {"holdback_percent": holdback, "guard_seconds": guard}


def _model(node: _Node, tenants: frozenset[str], profile: str) -> ModelConfig:
    tenant = node.string("tenant")
    if tenant not in tenants:
        raise node.child("tenant").fail(f"{tenant!r} is not one of the tenants {sorted(tenants)}")
    rate, replicas, resources = node.child("rateLimit"), node.child("replicas"), node.child("resources")
    min_replicas = replicas.integer("min", 1, 100)
    return ModelConfig(
        name=node.string("name", _DNS_LABEL),
        tenant=tenant,
        scope=node.string("scope"),
        rate_limit=RateLimit(
            requests_per_second=rate.integer("requestsPerSecond", 1, 100_000),
        ),
        min_replicas=min_replicas,
        max_replicas=replicas.integer("max", min_replicas, 500),
        cpu=resources.string("cpu"),
        memory=resources.string("memory"),
        workers=node.integer("workers", 1, 64),
        variants=_variants(node.child("variants")),
        rollout=_rollout(node.optional("rollout")),
        async_workers=None if profile == "smb" else _async_workers(node.optional("async")),
        sagemaker_async=profile == "smb" and _sagemaker_model(node.optional("async")),
        sagemaker=_hosting(node, profile),
    )


def _hosting(node: _Node, profile: str) -> SageMakerHosting | None:
    """The model's real-time endpoint: required in an smb stack, meaningless elsewhere."""
    if profile == "smb":
        return config_smb.sagemaker_hosting(node, len(node.child("variants").child("weights").value))
    if node.optional("sagemaker").value is not None:
        raise node.child("sagemaker").fail(
            f"has no meaning for profile {profile}: only smb models are endpoints"
        )
    return None


def _tenant(node: _Node) -> TenantConfig:
    quota = node.child("quota")
    return TenantConfig(
        name=node.string("name", _DNS_LABEL),
        deployer_groups=node.strings("deployerGroups"),
        viewer_groups=node.strings("viewerGroups"),
        cpu=quota.string("cpu"),
        memory=quota.string("memory"),
        pods=quota.integer("pods", 1, 10_000),
    )


def _check_quotas(
    nodes: list[_Node],
    tenants: tuple[TenantConfig, ...],
    models: tuple[ModelConfig, ...],
    features: FeaturesConfig | None = None,
) -> None:
    """Each tenant's quota holds its models at full scale during a rolling update, sidecars included, and
    their async workers at their most.

    A quota too small for `max` replicas (plus the one surge pod per version a rollout adds, and a rollout
    controller's pod) makes the autoscaler's scale-up fail silently at the API server; better to refuse the
    stack file.
    """
    for node, tenant in zip(nodes, tenants, strict=True):
        pods = cpu = memory = 0
        for model in (m for m in models if m.tenant == tenant.name):
            count = (model.max_replicas + 1) * len(model.variants.versions) + _worker_pods(model)
            pod_cpu, pod_memory = pod_footprint(model)
            pods, cpu, memory = pods + count, cpu + count * pod_cpu, memory + count * pod_memory
            if (
                model.rollout is not None
            ):  # its rollout controller's pod (stacks.manifests.rollout_controller)
                pods, cpu, memory = (
                    pods + 1,
                    cpu + cpu_millicores(CONTROLLER_CPU),
                    memory + memory_bytes(CONTROLLER_MEMORY),
                )
        if features is not None and features.tenant == tenant.name:  # the feature-materialize job's pod
            pods, cpu = pods + 1, cpu + cpu_millicores(FEATURE_JOB_CPU)
            memory += memory_bytes(FEATURE_JOB_MEMORY)
        quota = node.child("quota")
        for key, need, have in (
            ("pods", pods, tenant.pods),
            ("cpu", cpu, _quantity(quota, "cpu", cpu_millicores)),
            ("memory", memory, _quantity(quota, "memory", memory_bytes)),
        ):
            if need > have:
                raise quota.child(key).fail(
                    f"{getattr(tenant, key)} is below what the tenant's models need at max replicas during a "
                    f"rollout, sidecars included ({_show(key, need)})"
                )


def _quantity(node: _Node, key: str, parse: Any) -> int:
    try:
        return int(parse(node.string(key)))
    except ValueError as exc:
        raise node.child(key).fail(str(exc)) from exc


def _show(key: str, amount: int) -> str:
    if key == "cpu":
        return f"{amount / 1000:g} CPUs"
    if key == "memory":
        return f"{amount / 2**30:.1f}Gi"
    return f"{amount} pods"


def _unique(nodes: list[_Node], names: list[str], what: str) -> None:
    seen: set[str] = set()
    for node, name in zip(nodes, names, strict=True):
        if name in seen:
            raise node.fail(f"{what} {name!r} is listed twice")
        seen.add(name)


def _state(node: _Node, jurisdiction: str, profile: str) -> StateConfig:
    """The state backend and secrets provider must name a region of the jurisdiction (or stay local)."""
    backend = node.string("backend")
    secrets = node.string("secretsProvider")
    if profile == "onprem":
        if not backend.startswith(("file://", "s3://")):
            raise node.child("backend").fail(f"{backend!r} must be file:// or an in-jurisdiction s3:// store")
        return StateConfig(backend=backend, secrets_provider=secrets, region=None)
    allowed = sorted(JURISDICTION_REGIONS[jurisdiction])
    backend_region = _url_region(node.child("backend"), backend, "s3://")
    if backend_region not in allowed:
        raise node.child("backend").fail(f"region {backend_region!r} is outside jurisdiction {jurisdiction}")
    secrets_region = _url_region(node.child("secretsProvider"), secrets, "awskms://")
    if secrets_region not in allowed:
        raise node.child("secretsProvider").fail(
            f"region {secrets_region!r} is outside jurisdiction {jurisdiction}"
        )
    key = node.string("keyArn", re.compile(r"^arn:aws:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$"))
    if key.split(":")[3] != secrets_region:
        raise node.child("keyArn").fail(f"{key} is not in the secrets provider's region {secrets_region}")
    return StateConfig(backend=backend, secrets_provider=secrets, region=backend_region, key_arn=key)


def _url_region(node: _Node, url: str, scheme: str) -> str:
    match = re.match(rf"^{re.escape(scheme)}[^?]+\?(?:.*&)?region=([a-z0-9-]+)(?:&.*)?$", url)
    if match is None:
        raise node.fail(f"{url!r} must be {scheme}...?region=<region>: no default to a backend elsewhere")
    return match.group(1)


def _alerting(node: _Node) -> AlertingConfig:
    receivers = []
    for item in node.child("receivers").items():
        webhook = item.optional("webhookUrl").value
        email = item.optional("email").value
        if (webhook is None) == (email is None):
            raise item.fail("needs exactly one of webhookUrl or email")
        if webhook is not None and not str(webhook).startswith("https://"):
            raise item.child("webhookUrl").fail("must be an https:// URL")
        receivers.append(Receiver(name=item.string("name", _DNS_LABEL), webhook_url=webhook, email=email))
    if not receivers:
        raise node.child("receivers").fail("needs at least one receiver: alerts must reach someone")
    smarthost = node.optional("smarthost").value
    if any(r.email for r in receivers) and not smarthost:
        raise node.optional("smarthost").fail("is required when a receiver is e-mail")
    return AlertingConfig(
        receivers=tuple(receivers),
        smarthost=smarthost,
        email_from=node.optional("emailFrom").value,
    )


def _observability(node: _Node) -> ObservabilityConfig:
    sampling = node.optional("tracingSamplingPercent").value
    if sampling is not None and (
        isinstance(sampling, bool) or not isinstance(sampling, int | float) or not 0 <= sampling <= 100
    ):
        raise node.child("tracingSamplingPercent").fail(f"must be a number from 0 to 100, got {sampling!r}")
    return ObservabilityConfig(
        log_retention_days=node.integer("logRetentionDays", 30, 3653),
        prometheus_retention_days=node.integer("prometheusRetentionDays", 1, 365),
        prometheus_storage_gib=node.integer("prometheusStorageGiB", 10, 4096),
        alerting=_alerting(node.child("alerting")),
        tracing_sampling_percent=float(1.0 if sampling is None else sampling),
        otlp_endpoint=_https(node, "otlpEndpoint") if node.optional("otlpEndpoint").value else None,
    )


def _observed(root: _Node, profile: str) -> ObservabilityConfig:
    observability = _observability(root.child("observability"))
    if profile == "onprem" and observability.otlp_endpoint is None:
        raise (
            root.child("observability")
            .optional("otlpEndpoint")
            .fail("is required on premises: traces go to an in-jurisdiction collector (X-Ray is AWS only)")
        )
    return observability


def _onprem(node: _Node) -> OnPremConfig:
    store = node.child("store")
    endpoint = _https(store, "endpoint")
    optional = {k: node.optional(k).value for k in ("kubeconfig", "context")}
    return OnPremConfig(
        location=node.string("location", _DNS_LABEL),
        kubeconfig=optional["kubeconfig"],
        context=optional["context"],
        registry=node.string("registry", _HOST),
        storage_class=node.string("storageClass", _DNS_LABEL),
        store=OnPremStore(
            endpoint=endpoint,
            bucket=store.string("bucket", re.compile(r"^[a-z0-9][a-z0-9.-]{2,62}$")),
            credentials_secret=store.string("credentialsSecret", _DNS_LABEL),
        ),
    )


def _image(node: _Node, on_aws: bool, runner: bool) -> ImageConfig:
    return ImageConfig(
        registry_account=node.string("registryAccount", _ACCOUNT) if on_aws else None,
        runner_repository=node.string("runnerRepository") if runner else None,
        runner_digest=node.string("runnerDigest", _DIGEST) if runner else None,
        repository=node.string("repository"),
        digest=node.string("digest", _DIGEST),
        retrain_repository=node.string("retrainRepository"),
        retrain_digest=node.string("retrainDigest", _DIGEST),
    )


def _store(node: _Node) -> StoreConfig:
    return StoreConfig(
        bucket_prefix=node.string("bucketPrefix", re.compile(r"^[a-z0-9][a-z0-9-]{2,30}$")),
        inference_log_days=node.integer("inferenceLogDays", 1, 3650),
        noncurrent_version_days=node.integer("noncurrentVersionDays", 1, 3650),
    )


def _identity(node: _Node) -> IdentityConfig:
    return IdentityConfig(
        issuer_url=_https(node, "issuerUrl"),
        client_id=node.string("clientId"),
        groups_claim=node.string("groupsClaim"),
    )


def _aws_part(root: _Node, jurisdiction: str, profile: str, aws_region: str | None) -> dict[str, Any]:
    """The keys only AWS stacks have (the infra layer's), or the on-premises cluster's."""
    if profile == "onprem":
        for key in ("regions", "cluster", "identity", "store", "runner", "accountId", "egress"):
            if root.optional(key).value is not None:
                raise root.child(key).fail("has no meaning for an on-premises stack (profile onprem)")
        return {
            "regions": (),
            "cluster": None,
            "identity": None,
            "store": None,
            "account_id": None,
            "runner": None,
            "onprem": _onprem(root.child("onprem")),
        }
    regions = _regions(root, jurisdiction, profile)
    if aws_region != regions[0].region:
        raise ConfigError(
            root.source, "aws:region", f"{aws_region!r} must be the primary region {regions[0].region}"
        )
    if profile == "smb":
        config_smb.refuse_cluster_keys(root)
        return {
            "regions": regions,
            "cluster": None,
            "identity": None,
            "store": _store(root.child("store")),
            "account_id": root.string("accountId", _ACCOUNT),
            "runner": None,
            "onprem": None,
            "egress_domains": (),
        }
    runner, egress = root.child("runner"), root.optional("egress")
    repository = runner.string("githubRepository", re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+$"))
    return {
        "regions": regions,
        "cluster": _cluster(root.child("cluster")),
        "identity": _identity(root.child("identity")),
        "store": _store(root.child("store")),
        "account_id": root.string("accountId", _ACCOUNT),
        "runner": RunnerConfig(
            github_repository=repository,
            connection_arn=runner.string(
                "connectionArn",
                re.compile(
                    r"^arn:aws:code(?:connections|star-connections):[a-z0-9-]+:[0-9]{12}:connection/[0-9a-f-]{36}$"
                ),
            ),
        ),
        "onprem": None,
        "egress_domains": egress.strings("allowedDomains") if egress.value is not None else (),
    }


_CACHE_NODE_TYPE = re.compile(r"^cache\.[a-z][a-z0-9-]*\.[a-z0-9]+$")
_REDIS_7 = re.compile(r"^7\.[0-9]+$")


def _async_workers(node: _Node) -> AsyncWorkers | None:
    """A model's `async` block: its workers' floor and ceiling, the backlog one worker takes on, the bound."""
    if node.value is None:
        return None
    # A floor of at least one: the workers create the stream's consumer group, whose lag the autoscaler reads.
    low = node.integer("minWorkers", 1, 100)
    return AsyncWorkers(
        min_workers=low,
        max_workers=node.integer("maxWorkers", low, 500),
        backlog_per_worker=node.integer("backlogPerWorker", 1, 100_000),
        max_queued=node.integer("maxQueued", 1, 10_000_000),
    )


def _worker_pods(model: ModelConfig) -> int:
    """A model's async worker pods at full scale during a rolling update (one surge pod), if it has any."""
    return 0 if model.async_workers is None else model.async_workers.max_workers + 1


def _job_queue(
    root: _Node, profile: str, model_nodes: list[_Node], models: tuple[ModelConfig, ...]
) -> JobQueueConfig | None:
    """`asyncInference`: the queue every region of an AWS stack runs when one of its models takes async
    requests. A model with `async` needs it; the queue without such a model would cost for nothing."""
    node = root.optional("asyncInference")
    users = [n for n, m in zip(model_nodes, models, strict=True) if m.async_workers is not None]
    if node.value is None:
        if users:
            raise (
                users[0]
                .optional("async")
                .fail("needs model-serving:asyncInference, the queue its jobs go to")
            )
        return None
    if profile != "standard":
        raise node.fail(
            f"has no meaning for profile {profile}: the queue is an ElastiCache replication group of the "
            "standard profile (smb stacks use SageMaker Asynchronous Inference, on-premises stacks no AWS)"
        )
    if not users:
        raise node.fail("no model sets async: the queue would run in every region for nothing")
    version = node.string("engineVersion")
    if not _REDIS_7.match(version):
        raise node.child("engineVersion").fail(
            f"{version!r} is not a Redis OSS 7.x version (7.0, 7.1): the autoscaler reads consumer-group "
            "lag, which Redis 7 added"
        )
    node_type = node.string("nodeType", _CACHE_NODE_TYPE)
    if node_type.startswith("cache.t2."):
        raise node.child("nodeType").fail(f"{node_type} supports neither encryption at rest nor Multi-AZ")
    slr = node.optional("createServiceLinkedRole")
    if slr.value is not None and not isinstance(slr.value, bool):
        raise slr.fail("must be true or false")
    return JobQueueConfig(
        node_type=node_type,
        engine_version=version,
        replicas=node.integer("replicas", 1, 5),
        snapshot_retention_days=node.integer("snapshotRetentionDays", 0, 35),
        input_retention_days=node.integer("inputRetentionDays", 1, 365),
        callback_hosts=_callback_hosts(node.optional("callbacks")),
        create_service_linked_role=slr.value is not False,
    )


_ML_INSTANCE = re.compile(r"^ml\.[a-z][a-z0-9-]*\.[a-z0-9]+$")
_ML_FAMILY = re.compile(r"^([a-z]+?)([0-9]+)([a-z-]*)$")
# Families with NVMe instance storage but no 'd' among their attributes (m5d, g4dn, c6id and p4d have one).
_STORAGE_WITHOUT_D = frozenset({"g5", "g6", "g6e", "gr6", "p5", "p5e", "p5en", "trn1", "trn1n", "trn2"})


def _has_instance_storage(instance_type: str) -> bool:
    """True for a type whose volumes are local NVMe disks: SageMaker encrypts them in hardware and refuses a
    KMS key for them (CreateEndpointConfig fails), where ENC-007 asks for the region's key."""
    family = instance_type.split(".")[1]
    match = _ML_FAMILY.match(family)
    return family in _STORAGE_WITHOUT_D or (match is not None and "d" in match.group(3))


def _sagemaker_model(node: _Node) -> bool:
    """A model's `async` block in an smb stack: present and empty (`async: {}`). Its endpoint's sizes are the
    stack's `sagemakerAsync`; the workers' keys of the standard profile have no meaning on SageMaker."""
    if node.value is None:
        return False
    if not isinstance(node.value, Mapping) or node.value:
        raise node.fail(
            "must be {} in an smb stack: SageMaker runs its async requests, sized by "
            "model-serving:sagemakerAsync (minWorkers, maxWorkers, backlogPerWorker and maxQueued "
            "size the standard profile's workers)"
        )
    return True


def _sagemaker_async(
    root: _Node, profile: str, model_nodes: list[_Node], models: tuple[ModelConfig, ...]
) -> SageMakerAsyncConfig | None:
    """`sagemakerAsync`: the endpoints of an smb stack whose models take async requests. A model with `async`
    needs it; without such a model it would size nothing."""
    node = root.optional("sagemakerAsync")
    users = [n for n, m in zip(model_nodes, models, strict=True) if m.sagemaker_async]
    if node.value is None:
        if users:
            raise users[0].optional("async").fail("needs model-serving:sagemakerAsync, its endpoint's sizes")
        return None
    if profile != "smb":
        raise node.fail(
            f"has no meaning for profile {profile}: SageMaker Asynchronous Inference is the smb profile's "
            "(standard stacks use model-serving:asyncInference)"
        )
    if not users:
        raise node.fail("no model sets async: there is no endpoint to size")
    low = node.integer("minInstances", 0, 100)
    high = node.integer("maxInstances", max(low, 1), 100)
    count = node.integer("instanceCount", 1, 100)
    if not low <= count <= high:
        raise node.child("instanceCount").fail(
            f"needs minInstances <= instanceCount <= maxInstances, got {low}, {count}, {high}"
        )
    slr = node.optional("createAutoscalingServiceLinkedRole")
    if slr.value is not None and not isinstance(slr.value, bool):
        raise slr.fail("must be true or false")
    retention = node.optional("inputRetentionDays")
    backlog = node.optional("backlogPerInstance")
    instance_type = node.string("instanceType", _ML_INSTANCE)
    if _has_instance_storage(instance_type):
        raise node.child("instanceType").fail(
            f"{instance_type} keeps its volumes on local NVMe disks, for which SageMaker refuses the "
            "region's KMS key (ENC-007 requires it): choose an EBS-backed type such as ml.m5.large"
        )
    return SageMakerAsyncConfig(
        instance_type=instance_type,
        instance_count=count,
        max_concurrent_invocations=node.integer("maxConcurrentInvocations", 1, 1000),
        min_instances=low,
        max_instances=high,
        backlog_per_instance=node.integer("backlogPerInstance", 1, 100_000)
        if backlog.value is not None
        else 5,
        input_retention_days=node.integer("inputRetentionDays", 1, 365) if retention.value is not None else 7,
        create_autoscaling_service_linked_role=slr.value is not False,
    )


def _callback_hosts(node: _Node) -> tuple[str, ...]:
    """`asyncInference.callbacks.allowedHosts`: where job callbacks may go, each `host` or `host:port`
    (lower case, no scheme or path: the mesh and the egress firewall match host names). Left out: none."""
    if node.value is None:
        return ()
    hosts = node.strings("allowedHosts")
    where = node.child("allowedHosts") if hosts else node
    for host in hosts:
        if not _HOST.match(host):
            raise where.fail(f"{host!r} is not a host or host:port (lower case, no scheme or path)")
        port = int(host.rsplit(":", 1)[1]) if ":" in host else 443
        if not 1 <= port <= 65535:
            raise where.fail(f"{host!r}: port {port} is outside 1..65535")
    if len(set(hosts)) != len(hosts):
        raise where.fail("lists a host twice")
    return hosts


_FEAST_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_CRON_FIELD = re.compile(r"^[0-9*/,-]+$")


def _cron_period_minutes(schedule: str) -> int | None:
    """The time between runs of the common cron forms (`*/N * * * *`, `M * * * *`, `M */N * * *`,
    `M H * * *`); None for any other, which is then not compared with the staleness threshold."""
    minute, hour, *rest = schedule.split()
    if any(field != "*" for field in rest):
        return None
    if minute.startswith("*/") and minute[2:].isdigit() and hour == "*":
        return int(minute[2:])
    if not minute.isdigit():
        return None
    if hour == "*":
        return 60
    if hour.startswith("*/") and hour[2:].isdigit():
        return 60 * int(hour[2:])
    return 1440 if hour.isdigit() else None


def _features(root: _Node, profile: str, models: tuple[ModelConfig, ...]) -> FeaturesConfig | None:
    """`features`: the models that read their inputs from the feature store, when and how stale
    (docs/features.md, "In the stacks"). AWS stacks only: the online store is DynamoDB."""
    node = root.optional("features")
    if node.value is None:
        return None
    if profile == "onprem":
        raise node.fail(
            "has no meaning on premises: the stacks' online store is DynamoDB and the registry S3, both "
            "AWS; an on-premises cluster would need Feast's Redis online store in-cluster, which the "
            "platform does not deploy (docs/features.md)"
        )
    schedule = node.string("schedule")
    if len(schedule.split()) != 5 or not all(_CRON_FIELD.match(f) for f in schedule.split()):
        raise node.child("schedule").fail(f"{schedule!r} is not a five-field cron schedule (UTC)")
    stale = node.integer("staleAfterMinutes", 15, 10_080)
    period = _cron_period_minutes(schedule)
    if period is not None and stale <= period:
        raise node.child("staleAfterMinutes").fail(
            f"{stale} is not above the schedule's {period} minutes between runs: the alert would fire "
            "between two successful runs"
        )
    project = node.optional("project")
    items = node.child("models").items()
    if not items:
        raise node.child("models").fail(
            "needs at least one model: features for nobody would cost for nothing"
        )
    entries = tuple(_model_features(item, models) for item in items)
    _unique(items, [e.model for e in entries], "model")
    tenants = {m.name: m.tenant for m in models}
    tenant = node.optional("tenant").value or tenants[entries[0].model]
    if tenant not in set(tenants.values()):
        raise node.child("tenant").fail(
            f"{tenant!r} is not the tenant of any model {sorted(set(tenants.values()))}"
        )
    return FeaturesConfig(
        tenant=tenant,
        project=node.string("project", _FEAST_NAME) if project.value is not None else "model_serving",
        schedule=schedule,
        stale_after_seconds=stale * 60,
        models=entries,
    )


def _model_features(node: _Node, models: tuple[ModelConfig, ...]) -> ModelFeatures:
    """One model's entry: its name (one of `models`) and the feature views its services read."""
    name = node.string("name")
    model = next((m for m in models if m.name == name), None)
    if model is None:
        raise node.child("name").fail(f"{name!r} is not one of the models {sorted(m.name for m in models)}")
    views = node.strings("featureViews")
    if not views:
        raise node.child("featureViews").fail("needs at least one feature view")
    for view in views:
        if not _FEAST_NAME.match(view):
            raise node.child("featureViews").fail(f"{view!r} does not match {_FEAST_NAME.pattern}")
    if len(set(views)) != len(views):
        raise node.child("featureViews").fail("lists a feature view twice")
    return ModelFeatures(
        model=name,
        # The contract's feature service names (serving_image.features.schema.service_name), one per version.
        services=tuple(f"{name.replace('-', '_')}_v{v}" for v in model.variants.versions),
        feature_views=tuple(sorted(views)),
    )


def parse_config(raw: Mapping[str, Any], *, stack: str, source: str, aws_region: str | None) -> StackConfig:
    """Parse the raw `model-serving:*` values of one stack file into a `StackConfig`."""
    root = _Node(raw, NAMESPACE, source)
    jurisdiction = root.string("jurisdiction")
    if jurisdiction not in JURISDICTION_REGIONS:
        raise root.child("jurisdiction").fail(
            f"{jurisdiction!r} is not one of {sorted(JURISDICTION_REGIONS)}"
        )
    profile = root.string("profile")
    if profile not in PROFILES:
        raise root.child("profile").fail(f"{profile!r} is not one of {list(PROFILES)}")
    if stack.startswith("onprem-") != (profile == "onprem"):
        raise root.child("profile").fail(f"stack {stack!r}: onprem-* stacks and only they use profile onprem")
    tenant_nodes = root.child("tenants").items()
    tenants = tuple(_tenant(t) for t in tenant_nodes)
    _unique(tenant_nodes, [t.name for t in tenants], "tenant")
    model_nodes = root.child("models").items()
    models = tuple(_model(m, frozenset(t.name for t in tenants), profile) for m in model_nodes)
    _unique(model_nodes, [m.name for m in models], "model")
    features = _features(root, profile, models)
    _check_quotas(tenant_nodes, tenants, models, features)
    part = _aws_part(root, jurisdiction, profile, aws_region)
    gateway = _gateway(root.child("gateway"), profile)
    return StackConfig(
        stack=stack,
        jurisdiction=jurisdiction,
        profile=profile,
        owner=root.string("owner"),
        data_classification=root.string("dataClassification"),
        gateway=gateway,
        api=_api(root, profile, gateway),
        image=_image(root.child("image"), part["onprem"] is None, part["runner"] is not None),
        observability=_observed(root, profile),
        state=_state(root.child("state"), jurisdiction, profile),
        tenants=tenants,
        models=models,
        job_queue=_job_queue(root, profile, model_nodes, models),
        sagemaker_async=_sagemaker_async(root, profile, model_nodes, models),
        features=features,
        **part,
    )


def _api(root: _Node, profile: str, gateway: GatewayConfig) -> ApiConfig | None:
    """Only smb stacks have an `api` block (the others' API is the cluster's gateway)."""
    if profile == "smb":
        return config_smb.api(root, gateway.api_host)
    if root.optional("api").value is not None:
        raise root.child("api").fail(
            f"has no meaning for profile {profile}: its API is the cluster's gateway"
        )
    return None


def load_config() -> StackConfig:
    """Read this stack's configuration from Pulumi (the stack file) and parse it."""
    stack = pulumi.get_stack()
    cfg = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {key: cfg.get(key) for key in _STRING_KEYS}
    raw.update({key: cfg.get_object(key) for key in _OBJECT_KEYS})
    return parse_config(
        raw, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=pulumi.Config("aws").get("region")
    )
