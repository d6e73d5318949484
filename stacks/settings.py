"""Typed stack configuration: what `stacks.config` parses a stack file into.

Frozen, keyword-only dataclasses with no behaviour beyond derived facts, so components can take them as
Args fields.
"""

from dataclasses import dataclass

from stacks.jurisdictions import JURISDICTION_REGIONS
from stacks.settings_smb import ApiConfig, SageMakerHosting

ASYNC_RESULT_TTL_SECONDS = 86_400
"""How long a finished job and its result are kept (`SERVING_ASYNC_RESULT_TTL_S` of the pods): the job hash in
Redis expires after it, and the result bucket's `results/` objects a whole day or more later."""


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


SUPPORTED_KUBERNETES_VERSIONS = ("1.35", "1.36")
"""EKS versions in standard support on the release date of this code (1.34 leaves it in December 2026);
extended support costs six times as much per cluster hour, so a stack file must pick one of these."""


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """The EKS cluster."""

    kubernetes_version: str
    """Pinned Kubernetes minor version, e.g. `1.33`."""
    public_access_cidrs: tuple[str, ...]
    """CIDRs allowed to the public API endpoint; empty keeps the endpoint private only."""
    node_group: NodeGroupConfig
    """The node group."""
    break_glass_role_arn: str
    """Existing IAM role given cluster-admin through an EKS access entry, for emergencies."""
    create_autoscaling_service_linked_role: bool = True
    """Create EC2 Auto Scaling's service-linked role (account-global; false where the account has it)."""


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
    allowed_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    """Client ranges the public load balancer accepts on 443."""


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """Images, pinned by digest; the registry host is the stack region's own ECR."""

    registry_account: str | None
    """AWS account that owns the ECR repositories (None on premises: the registry is the onprem one)."""
    repository: str
    """Serving image repository."""
    digest: str
    """Serving image digest (`sha256:...`)."""
    retrain_repository: str
    """Retrain image repository (serving_image/Dockerfile's `retrain` target: servectl with the training
    extras), which the retrain receiver runs; in the same registry as the serving image."""
    retrain_digest: str
    """Its digest."""
    runner_repository: str | None = None
    """Image of the in-VPC deploy runner (built from stacks/runner/Dockerfile; AWS stacks only)."""
    runner_digest: str | None = None
    """Its digest."""

    def serving_image(self, registry: str) -> str:
        """The serving image reference in `registry` (the region's ECR host, or the on-premises one)."""
        return f"{registry}/{self.repository}@{self.digest}"

    def retrain_image(self, registry: str) -> str:
        """The retrain image reference in `registry`."""
        return f"{registry}/{self.retrain_repository}@{self.retrain_digest}"

    def runner_image(self, registry: str) -> str:
        """The deploy runner's image reference in `registry`."""
        return f"{registry}/{self.runner_repository}@{self.runner_digest}"


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
class Receiver:
    """Where Alertmanager sends alerts: a webhook or an e-mail address (exactly one)."""

    name: str
    """Receiver name."""
    webhook_url: str | None = None
    """HTTPS endpoint that takes Alertmanager's webhook payload."""
    email: str | None = None
    """Address alerts are mailed to."""


@dataclass(frozen=True, kw_only=True)
class AlertingConfig:
    """Alert delivery: at least one receiver; the first is the default route's."""

    receivers: tuple[Receiver, ...]
    """Receivers in order."""
    smarthost: str | None = None
    """SMTP relay `host:port`, required when a receiver is e-mail."""
    email_from: str | None = None
    """Sender address of alert e-mails."""


@dataclass(frozen=True, kw_only=True)
class ObservabilityConfig:
    """Log and metrics retention."""

    log_retention_days: int
    """CloudWatch retention for flow logs and control-plane logs."""
    prometheus_retention_days: int
    """Prometheus TSDB retention."""
    prometheus_storage_gib: int
    """Prometheus volume size."""
    alerting: AlertingConfig
    """Alert receivers."""
    tracing_sampling_percent: float = 1.0
    """Share of requests the gateway traces (0-100)."""
    otlp_endpoint: str | None = None
    """In-jurisdiction OTLP endpoint the trace collector exports to (on premises; EKS uses X-Ray)."""


@dataclass(frozen=True, kw_only=True)
class StateConfig:
    """Where Pulumi keeps this stack's state and how it encrypts its secrets: both inside the jurisdiction."""

    backend: str
    """`s3://bucket?region=...` (or `file://...` for a local on-premises backend)."""
    secrets_provider: str
    """`awskms://alias/...?region=...` (or `passphrase` for a local backend)."""
    region: str | None
    """Region named by the backend URL, if any."""
    key_arn: str | None = None
    """The KMS key behind the secrets provider's alias (AWS stacks: the deploy roles are granted it)."""

    @property
    def bucket_arn(self) -> str | None:
        """ARN of the S3 state bucket, if the backend is S3."""
        if not self.backend.startswith("s3://"):
            return None
        return f"arn:aws:s3:::{self.backend.removeprefix('s3://').split('?', 1)[0].split('/', 1)[0]}"


@dataclass(frozen=True, kw_only=True)
class RunnerConfig:
    """The in-VPC deploy runner (a CodeBuild-hosted GitHub Actions runner)."""

    github_repository: str
    """`https://github.com/<owner>/<repo>` whose workflows may use the runner."""
    connection_arn: str
    """CodeConnections connection to GitHub (approved once in the console), in the primary region."""


@dataclass(frozen=True, kw_only=True)
class OnPremStore:
    """An S3-compatible object store inside the jurisdiction (on-premises stacks)."""

    endpoint: str
    """HTTPS endpoint of the store."""
    bucket: str
    """Bucket holding `models/<model>/<version>/`."""
    credentials_secret: str
    """Secret (in each tenant namespace) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."""


@dataclass(frozen=True, kw_only=True)
class OnPremConfig:
    """An existing cluster reached through a kubeconfig: no AWS at all."""

    location: str
    """Where the cluster runs (a label for residency reports, e.g. `ae-dc1`)."""
    kubeconfig: str | None
    """Kubeconfig path; None uses the deployer's KUBECONFIG."""
    context: str | None
    """Kubeconfig context; None uses its current context."""
    registry: str
    """In-jurisdiction registry host every image and chart is mirrored to."""
    storage_class: str
    """Existing StorageClass for Prometheus, Alertmanager and Grafana volumes."""
    store: OnPremStore
    """Where model versions are published."""


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
    """Requests per second one caller may send to one model, counted across every gateway replica."""

    requests_per_second: int
    """Requests per second per caller (Envoy's global rate limit service counts in whole-second windows)."""


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
    settle_seconds: int = 30
    """Seconds after every server reports a step's weights before the step's window begins: one scrape
    interval (15 s), so each counter's base sample is taken under the new weights, plus 15 s for requests
    queued or in flight at the switch."""
    optional_metrics: tuple[str, ...] = ()
    """Feedback metrics the model gets none of: not measured, they do not hold promotion."""
    holdback_percent: int = 0
    """The baseline's share during the post-promotion guard (0: no guard)."""
    guard_seconds: int = 3600
    """How long the guard lasts without a regression before the candidate takes all traffic."""
    segment_header: str = ""
    """The request header naming the user segment (e.g. `x-segment`); empty: no segment guards."""
    segment_values: tuple[str, ...] = ()
    """The key segments: counted apart by the servers and each guarded by the experiment."""


FEEDBACK_METRICS = ("conversion", "value", "accuracy")
"""The experiment's metrics that come from feedback (servectl/experiments/checks.py checks the same names)."""


@dataclass(frozen=True, kw_only=True)
class AsyncWorkers:
    """A model's asynchronous inference: its jobs stream and the workers that consume it."""

    min_workers: int
    """Fewest worker pods, the floor the autoscaler keeps even with an empty stream."""
    max_workers: int
    """Most worker pods."""
    backlog_per_worker: int
    """Entries of the stream not yet delivered to the workers' consumer group that one worker takes on: the
    autoscaler's target (KEDA's `lagCount`)."""
    max_queued: int
    """Jobs the stream holds before a submit is refused with 429 (`SERVING_ASYNC_MAX_QUEUED`)."""


@dataclass(frozen=True, kw_only=True)
class JobQueueConfig:
    """The in-region queue of asynchronous inference: one ElastiCache (Redis OSS) replication group per
    region, Multi-AZ with automatic failover."""

    node_type: str
    """ElastiCache node type, e.g. `cache.r7g.large`."""
    engine_version: str
    """Redis OSS version, `7.<minor>` (consumer-group lag, which the autoscaler reads, needs 7)."""
    replicas: int
    """Replicas besides the primary (at least one: automatic failover needs a replica to promote)."""
    snapshot_retention_days: int
    """Days daily snapshots are kept (0: none)."""
    input_retention_days: int
    """Days a job's input object (`jobs/<model>/inputs/`) stays in the result bucket before it expires."""
    callback_hosts: tuple[str, ...] = ()
    """Hosts (`host` or `host:port`) a job's callback may be sent to; empty: callbacks off."""
    create_service_linked_role: bool = True
    """Create ElastiCache's service-linked role (account-global; false where the account has it)."""

    @property
    def parameter_group_family(self) -> str:
        """The parameter group family of the engine version (`redis7`)."""
        return f"redis{self.engine_version.split('.', 1)[0]}"

    @property
    def nodes(self) -> int:
        """Cache nodes: the primary and its replicas."""
        return 1 + self.replicas

    @property
    def result_days(self) -> int:
        """Days a stored result (`jobs/<model>/results/`) is kept: the result TTL rounded up, at least one."""
        return max(1, -(-ASYNC_RESULT_TTL_SECONDS // 86_400))


@dataclass(frozen=True, kw_only=True)
class SageMakerAsyncConfig:
    """Asynchronous inference of an smb stack: one SageMaker asynchronous endpoint per async model, in the
    stack's region (S3 in, SNS out, KMS)."""

    instance_type: str
    """SageMaker hosting instance type, e.g. `ml.m5.large` (async endpoints need instances: no serverless)."""
    instance_count: int
    """Instances each production variant starts with."""
    max_concurrent_invocations: int
    """Requests SageMaker sends one instance at a time (`MaxConcurrentInvocationsPerInstance`)."""
    min_instances: int
    """Fewest instances per variant the autoscaler keeps (0 allowed: async endpoints scale to zero)."""
    max_instances: int
    """Most instances per variant."""
    backlog_per_instance: int = 5
    """Queued requests one instance takes on: the target of `ApproximateBacklogSizePerInstance`."""
    input_retention_days: int = 7
    """Days a request's input object (`jobs/<model>/inputs/`) stays in the result bucket."""
    create_autoscaling_service_linked_role: bool = True
    """Create Application Auto Scaling's SageMaker service-linked role (account-global; false where the
    account has it)."""


@dataclass(frozen=True, kw_only=True)
class ModelFeatures:
    """A model that reads its inputs from the feature store (docs/features.md, "In the stacks")."""

    model: str
    """The model's name (one of `models`)."""
    services: tuple[str, ...]
    """The Feast feature services of its versions (`tabular_classifier_v1`, ...): the model name with `-` as
    `_`, then `_v<version>`, one per version in its weights."""
    feature_views: tuple[str, ...]
    """The feature views those services read: the only online-store tables its pods may read."""


@dataclass(frozen=True, kw_only=True)
class FeaturesConfig:
    """The stack's feature store: an online store table per feature view in each region, the registry and the
    offline data in the region's model bucket, and one materialization CronJob per cluster."""

    project: str
    """The Feast project (`model_serving`): the tables are `<project>.<view>`, as Feast names them."""
    schedule: str
    """The `feature-materialize` CronJob's schedule (five-field cron, UTC)."""
    tenant: str
    """The tenant namespace the `feature-materialize` CronJob runs in (its quota pays for the job)."""
    stale_after_seconds: int
    """`FeatureViewStale` fires when a view's latest materialized interval ended longer ago than this."""
    models: tuple[ModelFeatures, ...]
    """The models that read features."""

    @property
    def feature_views(self) -> tuple[str, ...]:
        """Every view some model reads, sorted: a table each, materialized by the CronJob."""
        return tuple(sorted({v for m in self.models for v in m.feature_views}))

    def of(self, model: str) -> ModelFeatures | None:
        """The model's entry, None for a model that is sent its features."""
        return next((m for m in self.models if m.model == model), None)


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
    async_workers: AsyncWorkers | None = None
    """Asynchronous inference workers, if the model takes async requests (the stack needs a job queue)."""
    sagemaker_async: bool = False
    """True where an smb stack serves the model's async requests from a SageMaker asynchronous endpoint."""
    sagemaker: SageMakerHosting | None = None
    """The model's real-time SageMaker endpoint (smb stacks: every model has one)."""


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
    """Regions, primary first (empty for on-premises stacks)."""
    cluster: ClusterConfig | None
    """The EKS cluster of each region (None on premises)."""
    identity: IdentityConfig | None
    """Sign-in for people (None on premises: the cluster's own)."""
    gateway: GatewayConfig
    """Public model API."""
    image: ImageConfig
    """Images."""
    store: StoreConfig | None
    """Buckets (None on premises)."""
    state: StateConfig
    """Pulumi state backend and secrets provider."""
    account_id: str | None
    """The only AWS account the stack may touch (None on premises)."""
    runner: RunnerConfig | None
    """The deploy runner (None on premises)."""
    onprem: OnPremConfig | None
    """The existing cluster of an on-premises stack."""
    egress_domains: tuple[str, ...] = ()
    """Extra host names the egress firewall lets the VPC reach (a leading dot allows subdomains)."""
    observability: ObservabilityConfig
    """Retention."""
    tenants: tuple[TenantConfig, ...]
    """Tenants."""
    models: tuple[ModelConfig, ...]
    """Models."""
    job_queue: JobQueueConfig | None = None
    """The in-region queue of asynchronous inference (AWS stacks whose models take async requests)."""
    sagemaker_async: SageMakerAsyncConfig | None = None
    """SageMaker Asynchronous Inference (smb stacks whose models take async requests)."""
    features: FeaturesConfig | None = None
    """The feature store, where some model reads its inputs from it (AWS stacks only)."""
    api: ApiConfig | None = None
    """The public API of an smb stack (API Gateway in front of the endpoints)."""

    @property
    def async_models(self) -> tuple[ModelConfig, ...]:
        """The models that take asynchronous requests."""
        return tuple(m for m in self.models if m.async_workers is not None)

    @property
    def sagemaker_async_models(self) -> tuple[ModelConfig, ...]:
        """The models an smb stack serves asynchronously from SageMaker."""
        return tuple(m for m in self.models if m.sagemaker_async)

    @property
    def allowed_regions(self) -> frozenset[str]:
        """Regions of the stack's jurisdiction."""
        return JURISDICTION_REGIONS[self.jurisdiction]

    @property
    def is_aws(self) -> bool:
        """True for stacks with an infra layer on AWS."""
        return self.onprem is None

    @property
    def az_count(self) -> int:
        """Availability zones per region: two for SMB, three otherwise."""
        return 2 if self.profile == "smb" else 3

    @property
    def nat_count(self) -> int:
        """NAT gateways per region: none for SMB (nothing in its VPC reaches the internet: SageMaker and the
        proxy use VPC endpoints; docs/smb.md), one per AZ otherwise."""
        return 0 if self.profile == "smb" else self.az_count

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
