"""The infra layer of an smb stack (docs/smb.md): no cluster. Wiring only.

In the stack's one region: the network (private subnets and the VPC endpoints SageMaker and the proxy need),
the model bucket, the in-region ECR with the serving image, per model a key and a real-time SageMaker
endpoint, the public API in front of them, and the asynchronous endpoints of the models that set `async: {}`.
"""

import pulumi
import pulumi_aws as aws

from stacks.artifacts import Lock
from stacks.components.job_store import JobStore, JobStoreArgs
from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.components.model_api import ApiModel, ModelApi, ModelApiArgs
from stacks.components.model_store import ModelStore, ModelStoreArgs
from stacks.components.network import SMB_INTERFACE_ENDPOINTS, Network, NetworkArgs
from stacks.components.registry import Registry, RegistryArgs
from stacks.components.sagemaker_async import (
    SAGEMAKER_SERVICE,
    SCALING_SERVICE,
    SageMakerAsync,
    SageMakerAsyncArgs,
)
from stacks.components.sagemaker_endpoint import SageMakerEndpoint, SageMakerEndpointArgs
from stacks.config import ConfigError
from stacks.contract import REGIONS_OUTPUT, model_bucket_export
from stacks.settings import ModelConfig, StackConfig
from stacks.settings_smb import endpoint_name

ENDPOINTS_OUTPUT = "endpoints"
"""Per model: its endpoint's name, region and variant names (servectl's experiment tooling reads it)."""


class _Region:
    """What every smb component in the region shares."""

    def __init__(self, cfg: StackConfig) -> None:
        if cfg.store is None or cfg.account_id is None or cfg.api is None:
            raise ConfigError(
                f"Pulumi.{cfg.stack}.yaml", "model-serving.profile", "smb stacks need store, api"
            )
        self.cfg, self.store_config, self.account, self.api = cfg, cfg.store, cfg.account_id, cfg.api
        self.region = cfg.regions[0]
        self.name = self.region.region
        self.prefix = f"{cfg.stack}-{self.name}"
        provider = aws.Provider(f"aws-{self.name}", region=self.name, allowed_account_ids=[cfg.account_id])
        self.on_aws = pulumi.ResourceOptions(provider=provider)

    def key(self, suffix: str, purpose: str, services: tuple[str, ...] = ()) -> RegionalKey:
        """A key in the region that CloudWatch Logs (for this account's groups) and `services` may use."""
        return RegionalKey(
            f"{self.prefix}-{suffix}-key",
            RegionalKeyArgs(
                purpose=purpose,
                region=self.name,
                log_service=True,
                service_users=services,
                alias=f"{self.prefix}-{suffix}",
                tags=self.cfg.tags,
            ),
            opts=self.on_aws,
        )


def _network(r: _Region) -> Network:
    return Network(
        f"{r.prefix}-network",
        NetworkArgs(
            vpc_cidr=r.region.vpc_cidr,
            az_count=r.cfg.az_count,
            nat_count=r.cfg.nat_count,
            region=r.name,
            cluster_name=r.prefix,
            egress_domains=(),
            log_retention_days=r.cfg.observability.log_retention_days,
            interface_endpoints=SMB_INTERFACE_ENDPOINTS,
            tags=r.cfg.tags,
        ),
        opts=r.on_aws,
    )


def _registry(r: _Region) -> Registry:
    """The serving image's repository only: no cluster add-ons to mirror, no pull-through cache."""
    images = r.key("registry", "container images")
    return Registry(
        f"{r.prefix}-registry",
        RegistryArgs(
            region=r.name,
            jurisdiction=r.cfg.jurisdiction,
            key_arn=images.arn,
            repositories=[r.cfg.image.repository],
            pull_through_cache=False,
            lock=Lock(images={}, charts={}),
            namespace=r.cfg.stack,
            tags=r.cfg.tags,
        ),
        opts=r.on_aws,
    )


def _endpoint(
    r: _Region,
    model: ModelConfig,
    parts: tuple[Network, ModelStore, Registry],
    scaling_role: pulumi.Resource | None,
) -> SageMakerEndpoint:
    network, store, registry = parts
    if model.sagemaker is None:
        raise ConfigError(
            f"Pulumi.{r.cfg.stack}.yaml", f"model-serving.models.{model.name}", "needs sagemaker"
        )
    key = r.key(
        model.name, f"SageMaker endpoint of {model.name}: volumes, captured data, logs", (SAGEMAKER_SERVICE,)
    )
    return SageMakerEndpoint(
        f"{r.prefix}-{model.name}",
        SageMakerEndpointArgs(
            model=model.name,
            endpoint=endpoint_name(r.cfg.stack, model.name),
            region=r.name,
            account_id=r.account,
            hosting=model.sagemaker,
            weights=model.variants.weights,
            rollout=model.rollout,
            image=registry.registry.apply(r.cfg.image.serving_image),
            repository_arn=registry.repository_arns.apply(lambda arns: str(arns[0])),
            bucket=store.model_bucket,
            bucket_key_arn=store.key_arn,
            key_arn=key.arn,
            vpc_cidr=r.region.vpc_cidr,
            vpc_id=network.vpc_id,
            s3_prefix_list_id=network.s3_prefix_list_id,
            private_subnet_ids=list(network.private_subnet_ids),
            log_retention_days=r.cfg.observability.log_retention_days,
            scaling_role=scaling_role,
            tags=r.cfg.tags,
        ),
        opts=r.on_aws,
    )


def _scaling_role(r: _Region) -> aws.iam.ServiceLinkedRole | None:
    """Application Auto Scaling's SageMaker role is one per account: made once here for every endpoint (the
    async config's createAutoscalingServiceLinkedRole false says the account has it)."""
    async_config = r.cfg.sagemaker_async
    if async_config is not None and not async_config.create_autoscaling_service_linked_role:
        return None
    return aws.iam.ServiceLinkedRole(
        f"{r.prefix}-sagemaker-scaling",
        aws_service_name=SCALING_SERVICE,
        description="Application Auto Scaling (SageMaker endpoints)",
        tags=r.cfg.tags,
        opts=pulumi.ResourceOptions.merge(r.on_aws, pulumi.ResourceOptions(retain_on_delete=True)),
    )


def _api(r: _Region, network: Network, endpoints: dict[str, SageMakerEndpoint]) -> ModelApi:
    gateway = r.cfg.gateway
    key = r.key("api", "the model API's access logs and proxy function")
    return ModelApi(
        f"{r.prefix}-model-api",
        ModelApiArgs(
            prefix=r.prefix,
            region=r.name,
            account_id=r.account,
            issuer=gateway.jwt_issuer,
            audiences=gateway.audiences,
            models=tuple(
                ApiModel(
                    name=m.name,
                    scope=m.scope,
                    requests_per_second=m.rate_limit.requests_per_second,
                    endpoint_name=endpoints[m.name].endpoint_name,
                    endpoint_arn=endpoints[m.name].endpoint_arn,
                )
                for m in r.cfg.models
            ),
            key_arn=key.arn,
            vpc_id=network.vpc_id,
            vpc_cidr=r.region.vpc_cidr,
            private_subnet_ids=list(network.private_subnet_ids),
            concurrency=r.api.proxy_concurrency,
            timeout_seconds=r.api.proxy_timeout_seconds,
            log_retention_days=r.cfg.observability.log_retention_days,
            domain=gateway.api_host if r.api.custom_domain else "",
            zone_id=gateway.zone_id if r.api.custom_domain else "",
            tags=r.cfg.tags,
        ),
        opts=r.on_aws,
    )


def _async(
    r: _Region, parts: tuple[Network, ModelStore, Registry], scaling_role: pulumi.Resource | None
) -> list[SageMakerAsync]:
    """The async models: the region's async key (SNS and SageMaker may use it), the result bucket under it,
    and one SageMaker asynchronous endpoint per model (docs/async-inference-stacks.md)."""
    network, store, registry = parts
    config = r.cfg.sagemaker_async
    if config is None:
        return []
    key = RegionalKey(
        f"{r.prefix}-async-key",
        RegionalKeyArgs(
            purpose="asynchronous inference: requests, results and notifications",
            region=r.name,
            service_users=("sns.amazonaws.com", SAGEMAKER_SERVICE),
            alias=f"{r.prefix}-async",
            tags=r.cfg.tags,
        ),
        opts=r.on_aws,
    )
    jobs = JobStore(
        f"{r.prefix}-jobs",
        JobStoreArgs(
            bucket_prefix=r.store_config.bucket_prefix,
            region=r.name,
            key_arn=key.arn,
            models=tuple(m.name for m in r.cfg.sagemaker_async_models),
            result_days=1,
            input_retention_days=config.input_retention_days,
            tags=r.cfg.tags,
        ),
        opts=r.on_aws,
    )
    return [
        SageMakerAsync(
            f"{r.prefix}-{model.name}-async",
            SageMakerAsyncArgs(
                model=model.name,
                region=r.name,
                account_id=r.account,
                config=config,
                weights=model.variants.weights,
                image=registry.registry.apply(r.cfg.image.serving_image),
                repository_arn=registry.repository_arns.apply(lambda arns: str(arns[0])),
                model_bucket=store.model_bucket,
                model_key_arn=store.key_arn,
                job_bucket=jobs.bucket,
                key_arn=key.arn,
                vpc_cidr=r.region.vpc_cidr,
                vpc_id=network.vpc_id,
                s3_prefix_list_id=network.s3_prefix_list_id,
                private_subnet_ids=list(network.private_subnet_ids),
                scaling_role=scaling_role,
                tags=r.cfg.tags,
            ),
            opts=r.on_aws,
        )
        for model in r.cfg.sagemaker_async_models
    ]


def deploy(cfg: StackConfig) -> None:
    """Build an smb stack's infra layer and export its endpoints and API."""
    r = _Region(cfg)
    network = _network(r)
    store = ModelStore(
        f"{r.prefix}-store",
        ModelStoreArgs(
            bucket_prefix=r.store_config.bucket_prefix,
            region=r.name,
            inference_log_days=r.store_config.inference_log_days,
            noncurrent_version_days=r.store_config.noncurrent_version_days,
            tags=cfg.tags,
        ),
        opts=r.on_aws,
    )
    parts = (network, store, _registry(r))
    scaling_role = _scaling_role(r)
    endpoints = {m.name: _endpoint(r, m, parts, scaling_role) for m in cfg.models}
    api = _api(r, network, endpoints)
    asyncs = _async(r, parts, scaling_role)
    pulumi.export(
        ENDPOINTS_OUTPUT,
        {
            name: {"endpoint": e.endpoint_name, "region": r.name, "variants": e.variant_names}
            for name, e in endpoints.items()
        },
    )
    pulumi.export(
        "async_endpoints",
        {m.name: a.endpoint_name for m, a in zip(cfg.sagemaker_async_models, asyncs, strict=True)},
    )
    pulumi.export("api_url", api.url)
    pulumi.export("model_bucket", store.model_bucket)
    # What `servectl publish` reads, in the cluster stacks' `regions` shape (stacks/contract.py): only values
    # of the bucket and its key, so the pipeline's first, targeted `up` (which creates just those, before
    # any Model) already writes it.
    pulumi.export(
        REGIONS_OUTPUT,
        {
            r.name: model_bucket_export(
                region=r.name, model_bucket=store.model_bucket, model_key_arn=store.key_arn
            )
        },
    )
