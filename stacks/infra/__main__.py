"""The infra layer (`pulumi up -s <stack>` at the repository root): wiring only, everything on AWS. An smb
stack has no cluster: stacks/infra/smb.py builds it.

Per region: network, model store, registry, the deploy runner (primary region), EKS, the job queue of
asynchronous inference (where a model takes async requests), the workload identities and the gateway's load
balancer; across regions, DNS. It exports, per region, what the platform layer needs
(stacks.contract) and nothing it would have to re-derive.
"""

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from stacks.components.cluster import Cluster, ClusterArgs
from stacks.components.edge import Edge, EdgeArgs
from stacks.components.feature_store import FeatureStore, FeatureStoreArgs
from stacks.components.global_routing import GlobalRouting, GlobalRoutingArgs, RegionalEndpoint
from stacks.components.identities import (
    ModelBucketAccess,
    RetrainIdentity,
    RetrainIdentityArgs,
    WorkloadIdentities,
    WorkloadIdentitiesArgs,
)
from stacks.components.job_queue import JobQueue, JobQueueArgs
from stacks.components.job_store import JobStore, JobStoreArgs
from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.components.model_store import ModelStore, ModelStoreArgs
from stacks.components.network import Network, NetworkArgs, carve_subnets
from stacks.components.peering import PeeringSide, RegionPeering, RegionPeeringArgs
from stacks.components.registry import Registry, RegistryArgs
from stacks.components.runner import RUNNER_EGRESS_DOMAINS, DeployRunner, DeployRunnerArgs
from stacks.config import ConfigError, load_config
from stacks.contract import PLATFORM_PROJECT, REGIONS_OUTPUT, ROLE_FEATURES, ROLE_RETRAIN, export_fields
from stacks.infra import smb
from stacks.settings import RegionConfig, StackConfig, StoreConfig


@dataclass(frozen=True, kw_only=True)
class Region:
    """What one region built that the rest of the program uses."""

    provider: aws.Provider
    network: Network
    cluster: Cluster
    edge: Edge
    store: ModelStore
    """The region's model bucket and its key (the retrain receiver publishes to every region's)."""
    runner: DeployRunner
    """The stack's one deploy runner, in the primary region: every region's cluster admits it."""
    export: dict[str, Any]
    queue: JobQueue | None = None
    """The region's job queue, where a model takes async requests."""


def _host(url: str) -> str:
    return url.removeprefix("https://").split("/", 1)[0].split(":", 1)[0]


def _egress_domains(cfg: StackConfig, region: RegionConfig) -> tuple[str, ...]:
    """What may leave the VPC through the firewall: the token issuer's keys (istiod fetches the JWKS), the
    stack file's own list (anything else an operator decides the VPC may reach), the job callbacks' allowed
    hosts, and from the primary region
    GitHub for the runner agent and the other regions' STS (the kubeconfig assumes the deploy role there)."""
    domains = [_host(cfg.gateway.jwks_uri), *cfg.egress_domains]
    # Job callbacks leave the VPC: their hosts (without a port: the firewall matches SNI and Host names).
    if cfg.job_queue is not None:
        domains += [host.split(":", 1)[0] for host in cfg.job_queue.callback_hosts]
    if region == cfg.regions[0]:
        domains += [*RUNNER_EGRESS_DOMAINS, *(f"sts.{r.region}.amazonaws.com" for r in cfg.regions[1:])]
        # The smoke test measures every region's gateway (`<region>.<api host>`) from the runner.
        domains.append(f".{cfg.gateway.api_host}")
    return tuple(dict.fromkeys(domains))


def _peer(cfg: StackConfig, primary: Region, secondary: Region, index: int) -> RegionPeering:
    """The primary VPC (where the deploy runner is) peered with a secondary region's, for its private API."""
    first, other = cfg.regions[0], cfg.regions[index]
    return RegionPeering(
        f"{cfg.stack}-{first.region}-to-{other.region}",
        RegionPeeringArgs(
            jurisdiction=cfg.jurisdiction,
            primary=PeeringSide(
                region=first.region,
                provider=primary.provider,
                vpc_id=primary.network.vpc_id,
                vpc_cidr=first.vpc_cidr,
                route_table_ids=primary.network.private_route_table_ids,
            ),
            secondary=PeeringSide(
                region=other.region,
                provider=secondary.provider,
                vpc_id=secondary.network.vpc_id,
                vpc_cidr=other.vpc_cidr,
                route_table_ids=secondary.network.private_route_table_ids,
            ),
            cluster_security_group_id=secondary.cluster.security_group_id,
            runner_cidrs=tuple(carve_subnets(first.vpc_cidr, cfg.az_count).private),
            tags=cfg.tags,
        ),
    )


def _runner(
    cfg: StackConfig, name: str, network: Network, registry: Registry, on_aws: pulumi.ResourceOptions
) -> DeployRunner:
    runner, bucket, key = cfg.runner, cfg.state.bucket_arn, cfg.state.key_arn
    if runner is None or bucket is None or key is None:
        raise ConfigError(
            f"Pulumi.{cfg.stack}.yaml", "model-serving.runner", "AWS stacks need runner and state"
        )
    return DeployRunner(
        f"{cfg.stack}-{name}-runner",
        DeployRunnerArgs(
            cluster_name=f"{cfg.stack}-{name}",
            region=name,
            stack=cfg.stack,
            cluster_regions=tuple(r.region for r in cfg.regions),
            vpc_id=network.vpc_id,
            private_subnet_ids=list(network.private_subnet_ids),
            repository_url=runner.github_repository,
            github_connection_arn=runner.connection_arn,
            image=registry.registry.apply(cfg.image.runner_image),
            state_bucket_arn=bucket,
            secrets_key_arn=key,
            platform_project=PLATFORM_PROJECT,
            log_retention_days=cfg.observability.log_retention_days,
            tags=cfg.tags,
        ),
        opts=on_aws,
    )


@dataclass(frozen=True, kw_only=True)
class _Place:
    """Where one region's components go: the stack, the region, its name prefix and its provider."""

    cfg: StackConfig
    region: RegionConfig
    prefix: str
    """`<stack>-<region>`: the cluster's name, and the start of every component's."""
    on_aws: pulumi.ResourceOptions


def _network(place: _Place) -> Network:
    cfg, region = place.cfg, place.region
    return Network(
        f"{place.prefix}-network",
        NetworkArgs(
            vpc_cidr=region.vpc_cidr,
            az_count=cfg.az_count,
            nat_count=cfg.nat_count,
            region=region.region,
            cluster_name=place.prefix,
            egress_domains=_egress_domains(cfg, region),
            log_retention_days=cfg.observability.log_retention_days,
            tags=cfg.tags,
        ),
        opts=place.on_aws,
    )


def _store(place: _Place, store: StoreConfig) -> ModelStore:
    return ModelStore(
        f"{place.prefix}-store",
        ModelStoreArgs(
            bucket_prefix=store.bucket_prefix,
            region=place.region.region,
            inference_log_days=store.inference_log_days,
            noncurrent_version_days=store.noncurrent_version_days,
            tags=place.cfg.tags,
        ),
        opts=place.on_aws,
    )


def _registry(place: _Place, primary: bool) -> Registry:
    cfg, name = place.cfg, place.region.region
    images = RegionalKey(
        f"{place.prefix}-registry-key",
        RegionalKeyArgs(purpose="container images and charts", region=name, tags=cfg.tags),
        opts=place.on_aws,
    )
    own = [
        cfg.image.repository,
        cfg.image.retrain_repository,
        *([cfg.image.runner_repository] if cfg.image.runner_repository else []),
    ]
    return Registry(
        f"{place.prefix}-registry",
        RegistryArgs(
            region=name,
            jurisdiction=cfg.jurisdiction,
            key_arn=images.arn,
            repositories=own,
            # CI pushes the project's own images to the primary region, which replicates them in-jurisdiction.
            replicate_to=[r.region for r in cfg.regions if r.region != name] if primary else [],
            namespace=cfg.stack,
            tags=cfg.tags,
        ),
        opts=place.on_aws,
    )


def _cluster(place: _Place, network: Network, runner: DeployRunner, primary: "Region | None") -> Cluster:
    cfg, cluster, identity = place.cfg, place.cfg.cluster, place.cfg.identity
    if cluster is None or identity is None:
        raise ConfigError(f"Pulumi.{cfg.stack}.yaml", "model-serving.cluster", "AWS stacks need it")
    return Cluster(
        f"{place.prefix}-cluster",
        ClusterArgs(
            cluster_name=place.prefix,
            region=place.region.region,
            config=cluster,
            identity=identity,
            private_subnet_ids=list(network.private_subnet_ids),
            log_retention_days=cfg.observability.log_retention_days,
            deploy_role_arn=runner.deploy_role_arn,
            # Secondary regions admit the primary's runner over peering (RegionPeering), by its subnets.
            runner_security_group_id=runner.security_group_id if primary is None else None,
            break_glass_role_arn=cluster.break_glass_role_arn,
            # EC2 Auto Scaling's service-linked role is account-global: the primary region creates it once.
            create_autoscaling_role=primary is None and cluster.create_autoscaling_service_linked_role,
            autoscaling_role=None if primary is None else primary.cluster.autoscaling_role,
            tags=cfg.tags,
        ),
        opts=place.on_aws,
    )


def _edge(place: _Place, network: Network) -> Edge:
    gateway = place.cfg.gateway
    return Edge(
        f"{place.prefix}-edge",
        EdgeArgs(
            api_host=gateway.api_host,
            region=place.region.region,
            zone_id=gateway.zone_id,
            vpc_id=network.vpc_id,
            vpc_cidr=place.region.vpc_cidr,
            public_subnet_ids=list(network.public_subnet_ids),
            allowed_cidrs=gateway.allowed_cidrs,
            tags=place.cfg.tags,
        ),
        opts=place.on_aws,
    )


def _queue(place: _Place, network: Network, cluster: Cluster, primary: "Region | None") -> JobQueue | None:
    """The job queue, in every region of a stack whose models take async requests. ElastiCache's
    service-linked role is account-global: the primary region creates it once."""
    config = place.cfg.job_queue
    if config is None:
        return None
    return JobQueue(
        f"{place.prefix}-queue",
        JobQueueArgs(
            prefix=place.prefix,
            region=place.region.region,
            config=config,
            vpc_id=network.vpc_id,
            vpc_cidr=place.region.vpc_cidr,
            private_subnet_ids=list(network.private_subnet_ids),
            node_security_group_id=cluster.security_group_id,
            create_service_linked_role=primary is None and config.create_service_linked_role,
            callbacks=bool(config.callback_hosts),
            alarm_emails=tuple(r.email for r in place.cfg.observability.alerting.receivers if r.email),
            service_linked_role=None
            if primary is None or primary.queue is None
            else primary.queue.service_linked_role,
            tags=place.cfg.tags,
        ),
        opts=place.on_aws,
    )


def _job_store(place: _Place, store: StoreConfig, queue: JobQueue | None) -> JobStore | None:
    """The result bucket beside the queue, under the queue's key: large inputs and results of async jobs."""
    config = place.cfg.job_queue
    if queue is None or config is None:
        return None
    return JobStore(
        f"{place.prefix}-jobs",
        JobStoreArgs(
            bucket_prefix=store.bucket_prefix,
            region=place.region.region,
            key_arn=queue.key_arn,
            models=tuple(m.name for m in place.cfg.async_models),
            result_days=config.result_days,
            input_retention_days=config.input_retention_days,
            tags=place.cfg.tags,
        ),
        opts=place.on_aws,
    )


def _feature_store(
    place: _Place, network: Network, cluster: Cluster, store: ModelStore
) -> FeatureStore | None:
    """The online store's tables, their private endpoint and the materialization role, in every region of a
    stack with a features block; under the model store's key, beside its registry and offline data."""
    config = place.cfg.features
    if config is None:
        return None
    return FeatureStore(
        f"{place.prefix}-features",
        FeatureStoreArgs(
            stack=place.cfg.stack,
            project=config.project,
            region=place.region.region,
            cluster_name=place.prefix,
            views=config.feature_views,
            model_views={m.model: m.feature_views for m in config.models},
            key_arn=store.key_arn,
            bucket=store.model_bucket,
            bucket_arn=store.model_bucket_arn,
            vpc_id=network.vpc_id,
            route_table_ids=network.private_route_table_ids,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer=cluster.oidc_issuer,
            namespace=config.tenant,
            tags=place.cfg.tags,
        ),
        opts=place.on_aws,
    )


def _identities(
    place: _Place,
    cluster: Cluster,
    edge: Edge,
    store: ModelStore,
    queue: JobQueue | None,
    jobs: JobStore | None,
    feature_store: FeatureStore | None = None,
) -> WorkloadIdentities:
    return WorkloadIdentities(
        f"{place.prefix}-identities",
        WorkloadIdentitiesArgs(
            cluster_name=place.prefix,
            region=place.region.region,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer=cluster.oidc_issuer,
            target_group_arn=edge.target_group_arn,
            node_security_group_id=cluster.security_group_id,
            log_group_arn=cluster.container_log_group_arn,
            model_bucket_arn=store.model_bucket_arn,
            model_key_arn=store.key_arn,
            models={m.name: m.tenant for m in place.cfg.models},
            queue_secret_arn=queue.secret_arn if queue else None,
            queue_key_arn=queue.key_arn if queue else None,
            callback_secret_arn=queue.callback_secret_arn if queue else None,
            job_bucket_arn=jobs.bucket_arn if jobs else None,
            async_models=frozenset(m.name for m in place.cfg.async_models),
            feature_policies=feature_store.serving_policies if feature_store else {},
            tags=place.cfg.tags,
        ),
        opts=place.on_aws,
    )


def deploy_region(cfg: StackConfig, region: RegionConfig, primary: Region | None) -> Region:
    """Everything one region runs on AWS, on that region's own provider. The first region (`primary` None)
    is the primary: it hosts the deploy runner, which the later regions' clusters admit."""
    if cfg.store is None or cfg.account_id is None:
        raise ConfigError(f"Pulumi.{cfg.stack}.yaml", "model-serving.profile", "not an AWS stack")
    provider = aws.Provider(
        f"aws-{region.region}", region=region.region, allowed_account_ids=[cfg.account_id]
    )
    place = _Place(
        cfg=cfg,
        region=region,
        prefix=f"{cfg.stack}-{region.region}",
        on_aws=pulumi.ResourceOptions(provider=provider),
    )
    network = _network(place)
    store = _store(place, cfg.store)
    registry = _registry(place, primary=primary is None)
    runner = primary.runner if primary else _runner(cfg, region.region, network, registry, place.on_aws)
    cluster = _cluster(place, network, runner, primary)
    edge = _edge(place, network)
    queue = _queue(place, network, cluster, primary)
    jobs = _job_store(place, cfg.store, queue)
    feature_store = _feature_store(place, network, cluster, store)
    identities = _identities(place, cluster, edge, store, queue, jobs, feature_store)
    roles = dict(identities.roles)
    if feature_store is not None:
        roles[ROLE_FEATURES] = feature_store.materialize_role_arn
    export = export_fields(
        region=region.region,
        cluster_name=cluster.name,
        kubeconfig=cluster.kubeconfig,
        vpc_id=network.vpc_id,
        registry=registry.registry,
        model_bucket=store.model_bucket,
        volume_key_arn=cluster.key_arn,
        target_group_arn=edge.target_group_arn,
        log_group=cluster.container_log_group,
        gateway_security_group_id=edge.security_group_id,
        roles=roles,
        job_queue_endpoint=queue.endpoint if queue else "",
        job_queue_secret_arn=queue.secret_arn if queue else "",
        job_bucket=jobs.bucket if jobs else "",
        job_callback_secret_arn=(queue.callback_secret_arn if queue else None) or "",
    )
    return Region(
        provider=provider,
        network=network,
        cluster=cluster,
        edge=edge,
        store=store,
        runner=runner,
        export=export,
        queue=queue,
    )


def _global_routing(cfg: StackConfig, regions: list[Region]) -> GlobalRouting:
    """The API host across every region's load balancer, probing the first model (every region serves it).
    Route53 is a global service; its API is reached through the primary region's provider."""
    return GlobalRouting(
        "global-routing",
        GlobalRoutingArgs(
            api_host=cfg.gateway.api_host,
            zone_id=cfg.gateway.zone_id,
            jurisdiction=cfg.jurisdiction,
            endpoints=tuple(
                RegionalEndpoint(
                    region=r.region,
                    dns_name=reg.edge.load_balancer_dns_name,
                    zone_id=reg.edge.load_balancer_zone_id,
                )
                for r, reg in zip(cfg.regions, regions, strict=True)
            ),
            probe_model=cfg.models[0].name,
            tags=cfg.tags,
        ),
        opts=pulumi.ResourceOptions(provider=regions[0].provider),
    )


def _retrain_identity(cfg: StackConfig, regions: list[Region]) -> RetrainIdentity:
    """The retrain receiver's role: it runs in the primary cluster only (the platform puts it there) and
    publishes each new version to every region's model bucket."""
    return RetrainIdentity(
        f"{cfg.stack}-retrain-identity",
        RetrainIdentityArgs(
            cluster_name=f"{cfg.stack}-{cfg.regions[0].region}",
            oidc_provider_arn=regions[0].cluster.oidc_provider_arn,
            oidc_issuer=regions[0].cluster.oidc_issuer,
            buckets=tuple(
                ModelBucketAccess(reg.store.model_bucket_arn, reg.store.key_arn, r.region)
                for r, reg in zip(cfg.regions, regions, strict=True)
            ),
            models=tuple(m.name for m in cfg.models),
            tags=cfg.tags,
        ),
        opts=pulumi.ResourceOptions(provider=regions[0].provider),
    )


def main() -> None:
    """Build the infra layer of the selected stack."""
    cfg = load_config()
    if not cfg.is_aws:
        raise ConfigError(
            f"Pulumi.{cfg.stack}.yaml",
            "model-serving.profile",
            "onprem stacks have no infra layer; deploy the platform",
        )
    if cfg.profile == "smb":
        smb.deploy(cfg)
        return
    regions: list[Region] = []
    for region in cfg.regions:
        regions.append(deploy_region(cfg, region, regions[0] if regions else None))
    primary = regions[0]
    for index, secondary in enumerate(regions[1:], start=1):
        _peer(cfg, primary, secondary, index)
    _global_routing(cfg, regions)
    exports = {r.region: reg.export for r, reg in zip(cfg.regions, regions, strict=True)}
    first = cfg.regions[0].region
    retrain_role = _retrain_identity(cfg, regions).role_arn
    exports[first] = {**exports[first], "roles": {**exports[first]["roles"], ROLE_RETRAIN: retrain_role}}
    pulumi.export(REGIONS_OUTPUT, exports)
    pulumi.export("runner_project", primary.runner.project_name)
    pulumi.export("api_host", cfg.gateway.api_host)


if __name__ == "__main__":
    main()
