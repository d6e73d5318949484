"""The program `pulumi up -s <stack>` runs: wiring only, one regional deployment per configured region."""

import pulumi
import pulumi_aws as aws

from stacks.components.cluster import IDENTITY_GROUP_PREFIX, Cluster, ClusterArgs
from stacks.components.global_routing import GlobalRouting, GlobalRoutingArgs, RegionalEndpoint
from stacks.components.mesh import Mesh, MeshArgs
from stacks.components.model_serving import ModelServing, ModelServingArgs
from stacks.components.model_store import ModelStore, ModelStoreArgs
from stacks.components.monitoring import Monitoring, MonitoringArgs
from stacks.components.network import Network, NetworkArgs
from stacks.components.tenancy import Tenancy, TenancyArgs
from stacks.config import load_config
from stacks.manifests.serving import ServingSpec
from stacks.settings import RegionConfig, StackConfig


def deploy_region(cfg: StackConfig, region: RegionConfig) -> RegionalEndpoint:
    """Everything one region runs, on that region's own AWS provider."""
    name, tags = region.region, cfg.tags
    provider = aws.Provider(f"aws-{name}", region=name)
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
    cluster = Cluster(
        f"{name}-cluster",
        ClusterArgs(
            cluster_name=cluster_name,
            region=name,
            config=cfg.cluster,
            identity=cfg.identity,
            private_subnet_ids=list(network.private_subnet_ids),
            log_retention_days=cfg.observability.log_retention_days,
            tags=tags,
        ),
        opts=on_aws,
    )
    on_cluster = pulumi.ResourceOptions(providers={"aws": provider, "kubernetes": cluster.provider})
    mesh = Mesh(f"{name}-mesh", MeshArgs(gateway=cfg.gateway), opts=on_cluster)
    Monitoring(
        f"{name}-monitoring",
        MonitoringArgs(
            key_arn=cluster.key_arn,
            retention_days=cfg.observability.prometheus_retention_days,
            storage_gib=cfg.observability.prometheus_storage_gib,
        ),
        opts=on_cluster,
    )
    tenants = {
        t.name: Tenancy(
            f"{name}-tenant-{t.name}",
            TenancyArgs(tenant=t, group_prefix=IDENTITY_GROUP_PREFIX),
            opts=on_cluster,
        )
        for t in cfg.tenants
    }
    for model in cfg.models:
        spec = ServingSpec(
            model=model,
            image=cfg.image.serving_image(name),
            sync_image=cfg.image.sync_image(name),
            bucket=f"{cfg.store.bucket_prefix}-models-{name}",
            region=name,
            service_account=model.name,
            gateway=mesh.gateway_ref,
            api_host=cfg.gateway.api_host,
        )
        ModelServing(
            f"{name}-model-{model.name}",
            ModelServingArgs(
                spec=spec,
                jwt_issuer=cfg.gateway.jwt_issuer,
                bucket_arn=store.model_bucket_arn,
                key_arn=store.key_arn,
                oidc_provider_arn=cluster.oidc_provider_arn,
                oidc_issuer=cluster.oidc_issuer,
                tags=tags,
                waits_for=(mesh, tenants[model.tenant].namespace_resource),
            ),
            opts=on_cluster,
        )
    pulumi.export(f"{name}-cluster", cluster.name)
    pulumi.export(f"{name}-model-bucket", store.model_bucket)
    pulumi.export(f"{name}-gateway", mesh.gateway_hostname)
    return RegionalEndpoint(region=name, hostname=mesh.gateway_hostname)


def main() -> None:
    """Build the stack described by the selected stack file."""
    cfg = load_config()
    endpoints = tuple(deploy_region(cfg, region) for region in cfg.regions)
    # Route53 is a global service; its API is reached through the primary region's provider.
    primary = aws.Provider("aws-global-dns", region=cfg.regions[0].region)
    routing = GlobalRouting(
        "global-routing",
        GlobalRoutingArgs(
            api_host=cfg.gateway.api_host,
            zone_id=cfg.gateway.zone_id,
            jurisdiction=cfg.jurisdiction,
            endpoints=endpoints,
            tags=cfg.tags,
        ),
        opts=pulumi.ResourceOptions(provider=primary),
    )
    pulumi.export("api_host", cfg.gateway.api_host)
    pulumi.export("records", routing.record_names)


if __name__ == "__main__":
    main()
