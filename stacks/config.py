"""The stack configuration, read once into typed objects.

`load_config()` is the only place in the program that reads `pulumi.Config`. The parsing itself
(`parse_config`) is pure, so every rule about a valid stack file is testable without Pulumi. A
missing or invalid
key raises `ConfigError` naming the stack file, the key and the reason.
"""

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from stacks.jurisdictions import JURISDICTION_REGIONS
from stacks.settings import (
    ClusterConfig,
    Fault,
    GatewayConfig,
    IdentityConfig,
    ImageConfig,
    ModelConfig,
    NodeGroupConfig,
    ObservabilityConfig,
    RateLimit,
    RegionConfig,
    Rollout,
    Shadow,
    StackConfig,
    StoreConfig,
    TenantConfig,
    VariantRoute,
    Variants,
)

NAMESPACE = "model-serving"
_STRING_KEYS = ("jurisdiction", "profile", "owner", "dataClassification")
_OBJECT_KEYS = (
    "regions",
    "cluster",
    "identity",
    "gateway",
    "image",
    "store",
    "observability",
    "tenants",
    "models",
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^[1-9][0-9]*$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")


class ConfigError(ValueError):
    """A stack file key that is missing or invalid."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class _Node:
    """A value in the raw config with the key path that leads to it, for error messages."""

    value: Any
    path: str
    source: str

    def fail(self, reason: str) -> ConfigError:
        return ConfigError(self.source, self.path, reason)

    def child(self, key: str, *, required: bool = True) -> "_Node":
        if not isinstance(self.value, Mapping):
            raise self.fail("must be a mapping")
        path = f"{self.path}.{key}"
        if key not in self.value or self.value[key] is None:
            if required:
                raise ConfigError(self.source, path, "is required")
            return _Node(None, path, self.source)
        return _Node(self.value[key], path, self.source)

    def items(self) -> list["_Node"]:
        if not isinstance(self.value, list):
            raise self.fail("must be a list")
        return [_Node(v, f"{self.path}[{i}]", self.source) for i, v in enumerate(self.value)]

    def string(self, key: str, pattern: re.Pattern[str] | None = None) -> str:
        node = self.child(key)
        if not isinstance(node.value, str) or not node.value:
            raise node.fail("must be a non-empty string")
        if pattern is not None and not pattern.match(node.value):
            raise node.fail(f"{node.value!r} does not match {pattern.pattern}")
        return node.value

    def integer(self, key: str, low: int, high: int) -> int:
        node = self.child(key)
        if isinstance(node.value, bool) or not isinstance(node.value, int):
            raise node.fail("must be an integer")
        if not low <= node.value <= high:
            raise node.fail(f"{node.value} is outside {low}..{high}")
        return node.value

    def strings(self, key: str) -> tuple[str, ...]:
        node = self.child(key, required=False)
        if node.value is None:
            return ()
        values = tuple(item.value for item in node.items())
        if not all(isinstance(v, str) and v for v in values):
            raise node.fail("must be a list of non-empty strings")
        return values


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
    version = node.string("kubernetesVersion", re.compile(r"^1\.[0-9]{2}$"))
    cidrs = node.strings("publicAccessCidrs")
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.prefixlen == 0:
            raise node.child("publicAccessCidrs").fail(f"{cidr} would open the API endpoint to the internet")
    group = node.child("nodeGroup")
    min_size, max_size = group.integer("minSize", 1, 100), group.integer("maxSize", 1, 200)
    desired = group.integer("desiredSize", 1, 200)
    if not min_size <= desired <= max_size:
        raise group.fail(f"needs minSize <= desiredSize <= maxSize, got {min_size}, {desired}, {max_size}")
    return ClusterConfig(
        kubernetes_version=version,
        public_access_cidrs=cidrs,
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


def _gateway(node: _Node) -> GatewayConfig:
    audiences = node.strings("audiences")
    if not audiences:
        raise node.child("audiences").fail("needs at least one audience")
    return GatewayConfig(
        api_host=node.string("apiHost", re.compile(r"^([a-z0-9-]+\.)+[a-z]{2,}$")),
        zone_id=node.string("zoneId", re.compile(r"^Z[0-9A-Z]{8,32}$")),
        tls_credential_name=node.string("tlsCredentialName", _DNS_LABEL),
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
    sticky = node.child("sticky", required=False)
    routes = node.child("routes", required=False)
    parsed_routes = tuple(
        VariantRoute(
            header=r.string("header"), value=r.string("value"), version=str(r.child("version").value)
        )
        for r in (routes.items() if routes.value is not None else [])
    )
    for route, item in zip(parsed_routes, routes.items() if routes.value is not None else [], strict=True):
        if route.version not in weights:
            raise item.child("version").fail(f"version {route.version!r} has no entry in weights")
    return Variants(
        weights=tuple(sorted(weights.items(), key=lambda kv: int(kv[0]))),
        sticky_header=sticky.string("header") if sticky.value is not None else None,
        routes=parsed_routes,
        shadow=_shadow(node.child("shadow", required=False), weights),
        faults=_faults(node.child("faults", required=False), weights),
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
        ratio = fault.child("error_ratio", required=False)
        if ratio.value is not None and (
            isinstance(ratio.value, bool)
            or not isinstance(ratio.value, int | float)
            or not 0 <= ratio.value <= 1
        ):
            raise ratio.fail(f"must be a number from 0 to 1, got {ratio.value!r}")
        delay = fault.integer("delay_ms", 0, 60_000) if fault.child("delay_ms", required=False).value else 0
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
    )


def _model(node: _Node, tenants: frozenset[str]) -> ModelConfig:
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
            burst=rate.integer("burst", 1, 200_000),
        ),
        min_replicas=min_replicas,
        max_replicas=replicas.integer("max", min_replicas, 500),
        cpu=resources.string("cpu"),
        memory=resources.string("memory"),
        workers=node.integer("workers", 1, 64),
        variants=_variants(node.child("variants")),
        rollout=_rollout(node.child("rollout", required=False)),
    )


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


def _unique(nodes: list[_Node], names: list[str], what: str) -> None:
    seen: set[str] = set()
    for node, name in zip(nodes, names, strict=True):
        if name in seen:
            raise node.fail(f"{what} {name!r} is listed twice")
        seen.add(name)


def parse_config(raw: Mapping[str, Any], *, stack: str, source: str, aws_region: str | None) -> StackConfig:
    """Parse the raw `model-serving:*` values of one stack file into a `StackConfig`."""
    root = _Node(raw, NAMESPACE, source)
    jurisdiction = root.string("jurisdiction")
    if jurisdiction not in JURISDICTION_REGIONS:
        raise root.child("jurisdiction").fail(
            f"{jurisdiction!r} is not one of {sorted(JURISDICTION_REGIONS)}"
        )
    profile = root.string("profile")
    if profile not in {"standard", "smb"}:
        raise root.child("profile").fail(f"{profile!r} is not one of ['smb', 'standard']")
    regions = _regions(root, jurisdiction, profile)
    if aws_region != regions[0].region:
        raise ConfigError(
            source, "aws:region", f"{aws_region!r} must be the primary region {regions[0].region}"
        )
    tenant_nodes = root.child("tenants").items()
    tenants = tuple(_tenant(t) for t in tenant_nodes)
    _unique(tenant_nodes, [t.name for t in tenants], "tenant")
    model_nodes = root.child("models").items()
    models = tuple(_model(m, frozenset(t.name for t in tenants)) for m in model_nodes)
    _unique(model_nodes, [m.name for m in models], "model")
    identity, image, store, obs = (root.child(k) for k in ("identity", "image", "store", "observability"))
    return StackConfig(
        stack=stack,
        jurisdiction=jurisdiction,
        profile=profile,
        owner=root.string("owner"),
        data_classification=root.string("dataClassification"),
        regions=regions,
        cluster=_cluster(root.child("cluster")),
        identity=IdentityConfig(
            issuer_url=_https(identity, "issuerUrl"),
            client_id=identity.string("clientId"),
            groups_claim=identity.string("groupsClaim"),
        ),
        gateway=_gateway(root.child("gateway")),
        image=ImageConfig(
            registry_account=image.string("registryAccount", _ACCOUNT),
            repository=image.string("repository"),
            digest=image.string("digest", _DIGEST),
            sync_repository=image.string("syncRepository"),
            sync_digest=image.string("syncDigest", _DIGEST),
        ),
        store=StoreConfig(
            bucket_prefix=store.string("bucketPrefix", re.compile(r"^[a-z0-9][a-z0-9-]{2,30}$")),
            inference_log_days=store.integer("inferenceLogDays", 1, 3650),
            noncurrent_version_days=store.integer("noncurrentVersionDays", 1, 3650),
        ),
        observability=ObservabilityConfig(
            log_retention_days=obs.integer("logRetentionDays", 30, 3653),
            prometheus_retention_days=obs.integer("prometheusRetentionDays", 1, 365),
            prometheus_storage_gib=obs.integer("prometheusStorageGiB", 10, 4096),
        ),
        tenants=tenants,
        models=models,
    )


def load_config() -> StackConfig:
    """Read this stack's configuration from Pulumi (the stack file) and parse it."""
    stack = pulumi.get_stack()
    cfg = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {key: cfg.get(key) for key in _STRING_KEYS}
    raw.update({key: cfg.get_object(key) for key in _OBJECT_KEYS})
    return parse_config(
        raw, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=pulumi.Config("aws").get("region")
    )
