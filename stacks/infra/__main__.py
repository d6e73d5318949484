"""The infra layer (`pulumi up -s <stack>` at the repository root): wiring only, everything on AWS.

Per region: network, model store, registry, the deploy runner (primary region), EKS, the workload identities
and the gateway's load balancer; across regions, DNS. It exports, per region, what the platform layer needs
(stacks.contract) and nothing it would have to re-derive.
"""

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from stacks.artifacts import ecr_registry, load_lock
from stacks.components.cluster import Cluster, ClusterArgs
from stacks.components.edge import Edge, EdgeArgs
from stacks.components.global_routing import GlobalRouting, GlobalRoutingArgs, RegionalEndpoint
from stacks.components.identities import WorkloadIdentities, WorkloadIdentitiesArgs
from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.components.model_store import ModelStore, ModelStoreArgs
from stacks.components.network import Network, NetworkArgs
from stacks.components.registry import Registry, RegistryArgs
from stacks.components.runner import DeployRunner, DeployRunnerArgs
from stacks.config import ConfigError, load_config
from stacks.contract import PLATFORM_PROJECT, REGIONS_OUTPUT, export_fields
from stacks.settings import RegionConfig, StackConfig


@dataclass(frozen=True, kw_only=True)
class Region:
    """What one region built that the rest of the program uses."""

    provider: aws.Provider
    network: Network
    cluster: Cluster
    edge: Edge
    export: dict[str, Any]


def _host(url: str) -> str:
    return url.removeprefix("https://").split("/", 1)[0].split(":", 1)[0]


def _runner(
    cfg: StackConfig, name: str, network: Network, registry: Registry, on_aws: pulumi.ResourceOptions
) -> DeployRunner:
    assert cfg.runner is not None and cfg.state.bucket_arn and cfg.state.key_arn  # AWS stacks have them
    return DeployRunner(
        f"{name}-runner",
        DeployRunnerArgs(
            cluster_name=f"{cfg.stack}-{name}",
            region=name,
            vpc_id=network.vpc_id,
            private_subnet_ids=list(network.private_subnet_ids),
            repository_url=cfg.runner.github_repository,
            github_connection_arn=cfg.runner.connection_arn,
            image=registry.registry.apply(lambda host: load_lock().image("deploy-runner").ref(host)),
            state_bucket_arn=cfg.state.bucket_arn,
            secrets_key_arn=cfg.state.key_arn,
            platform_project=PLATFORM_PROJECT,
            log_retention_days=cfg.observability.log_retention_days,
            tags=cfg.tags,
        ),
        opts=on_aws,
    )


def deploy_region(
    cfg: StackConfig, region: RegionConfig, primary: "Region | None", runner_box: list[DeployRunner]
) -> Region:
    """Everything one region runs on AWS, on that region's own provider."""
    assert cfg.cluster is not None and cfg.identity is not None and cfg.store is not None and cfg.account_id
    name, tags = region.region, cfg.tags
    provider = aws.Provider(f"aws-{name}", region=name, allowed_account_ids=[cfg.account_id])
    on_aws = pulumi.ResourceOptions(provider=provider)
    cluster_name = f"{cfg.stack}-{name}"
    network = Network(
        f"{name}-network",
        NetworkArgs(
            vpc_cidr=region.vpc_cidr,
            az_count=cfg.az_count,
            nat_count=cfg.nat_count,
            region=name,
            cluster_name=cluster_name,
            egress_domains=(_host(cfg.gateway.jwks_uri),),
            log_retention_days=cfg.observability.log_retention_days,
            tags=tags,
        ),
        opts=on_aws,
    )
    store = ModelStore(
        f"{name}-store",
        ModelStoreArgs(
            bucket_prefix=cfg.store.bucket_prefix,
            region=name,
            inference_log_days=cfg.store.inference_log_days,
            noncurrent_version_days=cfg.store.noncurrent_version_days,
            tags=tags,
        ),
        opts=on_aws,
    )
    images = RegionalKey(
        f"{name}-registry-key",
        RegionalKeyArgs(purpose="container images and charts", region=name, tags=tags),
        opts=on_aws,
    )
    others = [r.region for r in cfg.regions if r.region != name]
    registry = Registry(
        f"{name}-registry",
        RegistryArgs(
            region=name,
            jurisdiction=cfg.jurisdiction,
            key_arn=images.arn,
            repositories=[cfg.image.repository, cfg.image.sync_repository],
            # CI pushes the project's own images to the primary region, which replicates them in-jurisdiction.
            replicate_to=others if primary is None else [],
            tags=tags,
        ),
        opts=on_aws,
    )
    if primary is None:
        runner_box.append(_runner(cfg, name, network, registry, on_aws))
    runner = runner_box[0]
    cluster = Cluster(
        f"{name}-cluster",
        ClusterArgs(
            cluster_name=cluster_name,
            region=name,
            config=cfg.cluster,
            identity=cfg.identity,
            private_subnet_ids=list(network.private_subnet_ids),
            log_retention_days=cfg.observability.log_retention_days,
            deploy_role_arn=runner.deploy_role_arn,
            runner_security_group_id=runner.security_group_id if primary is None else None,
            break_glass_role_arn=cfg.cluster.break_glass_role_arn,
            # EC2 Auto Scaling's service-linked role is account-global: the primary region creates it once.
            create_autoscaling_role=primary is None and cfg.cluster.create_autoscaling_service_linked_role,
            autoscaling_role=None if primary is None else primary.cluster.autoscaling_role,
            tags=tags,
        ),
        opts=on_aws,
    )
    edge = Edge(
        f"{name}-edge",
        EdgeArgs(
            api_host=cfg.gateway.api_host,
            region=name,
            zone_id=cfg.gateway.zone_id,
            vpc_id=network.vpc_id,
            vpc_cidr=region.vpc_cidr,
            public_subnet_ids=list(network.public_subnet_ids),
            allowed_cidrs=cfg.gateway.allowed_cidrs,
            tags=tags,
        ),
        opts=on_aws,
    )
    identities = WorkloadIdentities(
        f"{name}-identities",
        WorkloadIdentitiesArgs(
            cluster_name=cluster_name,
            region=name,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_issuer=cluster.oidc_issuer,
            target_group_arn=edge.target_group_arn,
            node_security_group_id=cluster.security_group_id,
            log_group_arn=cluster.container_log_group_arn,
            model_bucket_arn=store.model_bucket_arn,
            model_key_arn=store.key_arn,
            models={m.name: m.tenant for m in cfg.models},
            tags=tags,
        ),
        opts=on_aws,
    )
    export = export_fields(
        region=name,
        cluster_name=cluster.name,
        kubeconfig=cluster.kubeconfig,
        vpc_id=network.vpc_id,
        registry=ecr_registry(cfg.account_id, name),
        model_bucket=store.model_bucket,
        volume_key_arn=cluster.key_arn,
        target_group_arn=edge.target_group_arn,
        log_group=cluster.container_log_group,
        gateway_security_group_id=edge.security_group_id,
        roles=identities.roles,
    )
    return Region(provider=provider, network=network, cluster=cluster, edge=edge, export=export)


def main() -> None:
    """Build the infra layer of the selected stack."""
    cfg = load_config()
    if not cfg.is_aws:
        raise ConfigError(
            f"Pulumi.{cfg.stack}.yaml",
            "model-serving.profile",
            "onprem stacks have no infra layer; deploy the platform",
        )
    regions: list[Region] = []
    runner: list[DeployRunner] = []
    for region in cfg.regions:
        regions.append(deploy_region(cfg, region, regions[0] if regions else None, runner))
    primary = regions[0]
    GlobalRouting(
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
        # Route53 is a global service; its API is reached through the primary region's provider.
        opts=pulumi.ResourceOptions(provider=primary.provider),
    )
    pulumi.export(REGIONS_OUTPUT, {r.region: reg.export for r, reg in zip(cfg.regions, regions, strict=True)})
    pulumi.export("runner_project", runner[0].project_name)
    pulumi.export("api_host", cfg.gateway.api_host)


if __name__ == "__main__":
    main()
