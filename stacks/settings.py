"""Typed stack configuration: what `stacks.config` parses a stack file into.

Frozen, keyword-only dataclasses with no behaviour beyond derived facts, so components can take them as
Args fields.
"""

from dataclasses import dataclass

from stacks.jurisdictions import JURISDICTION_REGIONS


@dataclass(frozen=True, kw_only=True)
class RegionConfig:
    """One region the stack runs in."""

    region: str
    """AWS region name, e.g. `eu-central-1`."""
    vpc_cidr: str
    """The VPC's private IPv4 range; subnets are carved from it."""


@dataclass(frozen=True, kw_only=True)
class NodeGroupConfig:
    """The managed node group that runs the serving pods."""

    instance_type: str
    """EC2 instance type."""
    min_size: int
    """Fewest nodes."""
    max_size: int
    """Most nodes."""
    desired_size: int
    """Nodes at creation."""
    disk_gib: int
    """Root volume size (encrypted)."""


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """The EKS cluster."""

    kubernetes_version: str
    """Pinned Kubernetes minor version, e.g. `1.33`."""
    public_access_cidrs: tuple[str, ...]
    """CIDRs allowed to the public API endpoint; empty keeps the endpoint private only."""
    node_group: NodeGroupConfig
    """The node group."""


@dataclass(frozen=True, kw_only=True)
class IdentityConfig:
    """The identity provider people sign in to the cluster with (EKS OIDC identity provider config)."""

    issuer_url: str
    """OIDC issuer URL."""
    client_id: str
    """OIDC client id of the cluster."""
    groups_claim: str
    """Token claim that carries the person's groups."""


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """The public model API: DNS name, TLS and the token the gateway requires."""

    api_host: str
    """The model API's host name."""
    zone_id: str
    """Route53 hosted zone that holds `api_host`."""
    tls_credential_name: str
    """Kubernetes TLS secret in istio-system holding the certificate for `api_host`."""
    jwt_issuer: str
    """OAuth2 issuer of the access tokens."""
    jwks_uri: str
    """Where the issuer publishes its signing keys."""
    audiences: tuple[str, ...]
    """Accepted token audiences."""


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """Images, pinned by digest; the registry host is the stack region's own ECR."""

    registry_account: str
    """AWS account that owns the ECR repositories (replicated into every region used)."""
    repository: str
    """Serving image repository."""
    digest: str
    """Serving image digest (`sha256:...`)."""
    sync_repository: str
    """Image of the init container that copies model versions from the model bucket."""
    sync_digest: str
    """Its digest."""

    def serving_image(self, region: str) -> str:
        """The serving image reference in `region`'s registry."""
        return f"{self._registry(region)}/{self.repository}@{self.digest}"

    def sync_image(self, region: str) -> str:
        """The model-sync image reference in `region`'s registry."""
        return f"{self._registry(region)}/{self.sync_repository}@{self.sync_digest}"

    def _registry(self, region: str) -> str:
        return f"{self.registry_account}.dkr.ecr.{region}.amazonaws.com"


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """The model and inference-log buckets."""

    bucket_prefix: str
    """Globally unique prefix for bucket names."""
    inference_log_days: int
    """Days inference logs are kept."""
    noncurrent_version_days: int
    """Days replaced model objects are kept."""


@dataclass(frozen=True, kw_only=True)
class ObservabilityConfig:
    """Log and metrics retention."""

    log_retention_days: int
    """CloudWatch retention for flow logs and control-plane logs."""
    prometheus_retention_days: int
    """Prometheus TSDB retention."""
    prometheus_storage_gib: int
    """Prometheus volume size."""


@dataclass(frozen=True, kw_only=True)
class TenantConfig:
    """A team that deploys models into its own namespace."""

    name: str
    """Namespace name."""
    deployer_groups: tuple[str, ...]
    """Identity-provider groups bound to the `model-deployer` role."""
    viewer_groups: tuple[str, ...]
    """Identity-provider groups bound to the `viewer` role."""
    cpu: str
    """CPU quota of the namespace."""
    memory: str
    """Memory quota of the namespace."""
    pods: int
    """Pod quota of the namespace."""


@dataclass(frozen=True, kw_only=True)
class VariantRoute:
    """A header match tried before the weights."""

    header: str
    """Request header name."""
    value: str
    """Exact value that selects `version`."""
    version: str
    """Model version directory name."""


@dataclass(frozen=True, kw_only=True)
class Shadow:
    """A version that receives a mirrored copy of live requests; its responses are discarded."""

    version: str
    """Model version directory name."""
    percent: int
    """Percent of live requests mirrored to it."""


@dataclass(frozen=True, kw_only=True)
class Fault:
    """Degradation injected on purpose into one version's requests (Istio's HTTP fault injection)."""

    delay_ms: int
    """Added delay in milliseconds (0: none)."""
    error_ratio: float
    """Share of requests answered with HTTP 500 (0: none)."""


@dataclass(frozen=True, kw_only=True)
class Variants:
    """The variant config, the same shape the server's `config.yaml` takes."""

    weights: tuple[tuple[str, int], ...]
    """(version, percent) pairs in version order; percents sum to 100."""
    sticky_header: str | None
    """Header hashed for sticky assignment, if any."""
    routes: tuple[VariantRoute, ...]
    """Header routes, in order."""
    shadow: Shadow | None = None
    """Mirrored traffic, if any."""
    faults: tuple[tuple[str, Fault], ...] = ()
    """(version, fault) pairs in version order."""

    @property
    def versions(self) -> tuple[str, ...]:
        """Every deployed version, in order."""
        return tuple(version for version, _ in self.weights)


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """Token bucket applied at the gateway to one model's route."""

    requests_per_second: int
    """Refill rate."""
    burst: int
    """Bucket size."""


@dataclass(frozen=True, kw_only=True)
class Rollout:
    """How `servectl experiment step` moves traffic to a candidate version."""

    steps: tuple[int, ...]
    """The candidate's percent at each step, increasing, ending at 100."""
    min_samples: int
    """Requests the candidate must serve in a step before it can be promoted."""
    interval_seconds: int
    """Seconds between analyses."""
    failed_checks: int
    """Consecutive analyses with a significant regression before rolling back."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """One served model."""

    name: str
    """Model name, as in `/v2/models/<name>`."""
    tenant: str
    """Tenant namespace it runs in."""
    scope: str
    """OAuth2 scope a token needs to call it."""
    rate_limit: RateLimit
    """Gateway rate limit of its route."""
    min_replicas: int
    """Fewest pods per version."""
    max_replicas: int
    """Most pods per version."""
    cpu: str
    """CPU request and limit per pod."""
    memory: str
    """Memory request and limit per pod."""
    workers: int
    """`SERVING_WORKERS`."""
    variants: Variants
    """Versions and how traffic splits between them."""
    rollout: Rollout | None = None
    """The progressive rollout schedule, if the model has one."""


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """Everything one stack file says."""

    stack: str
    """Stack name, e.g. `eu-prod`."""
    jurisdiction: str
    """AE, EU or US."""
    profile: str
    """`standard` or `smb`."""
    owner: str
    """Owner tag."""
    data_classification: str
    """data-classification tag."""
    regions: tuple[RegionConfig, ...]
    """Regions, primary first."""
    cluster: ClusterConfig
    """The EKS cluster of each region."""
    identity: IdentityConfig
    """Sign-in for people."""
    gateway: GatewayConfig
    """Public model API."""
    image: ImageConfig
    """Images."""
    store: StoreConfig
    """Buckets."""
    observability: ObservabilityConfig
    """Retention."""
    tenants: tuple[TenantConfig, ...]
    """Tenants."""
    models: tuple[ModelConfig, ...]
    """Models."""

    @property
    def allowed_regions(self) -> frozenset[str]:
        """Regions of the stack's jurisdiction."""
        return JURISDICTION_REGIONS[self.jurisdiction]

    @property
    def az_count(self) -> int:
        """Availability zones per region: two for SMB, three otherwise."""
        return 2 if self.profile == "smb" else 3

    @property
    def nat_count(self) -> int:
        """NAT gateways per region: one for SMB, one per AZ otherwise."""
        return 1 if self.profile == "smb" else self.az_count

    @property
    def tags(self) -> dict[str, str]:
        """Tags every taggable AWS resource carries."""
        return {
            "owner": self.owner,
            "data-classification": self.data_classification,
            "jurisdiction": self.jurisdiction,
            "stack": self.stack,
            "managed-by": "pulumi",
        }
