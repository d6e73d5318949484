"""GlobalRouting: the model API's DNS, latency-routed across the stack's regions with in-jurisdiction
failover."""

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.jurisdictions import same_jurisdiction

TTL = 60
HEALTH_PORT = 15021
HEALTH_PATH = "/healthz/ready"


@dataclass(frozen=True, kw_only=True)
class RegionalEndpoint:
    """A region's gateway load balancer."""

    region: str
    """AWS region."""
    hostname: pulumi.Input[str]
    """DNS name of the region's ingress gateway load balancer."""


@dataclass(frozen=True, kw_only=True)
class GlobalRoutingArgs:
    """Inputs of `GlobalRouting`."""

    api_host: str
    """The model API's host name."""
    zone_id: str
    """Hosted zone of `api_host`."""
    jurisdiction: str
    """Every endpoint and failover target must lie in it."""
    endpoints: tuple[RegionalEndpoint, ...]
    """One per region, primary first."""
    tags: dict[str, str]
    """Tags on the health checks."""


def failover_partners(regions: list[str]) -> list[tuple[str, str]]:
    """Each region fails over to the next one in the list (the last to the first)."""
    return [(region, regions[(i + 1) % len(regions)]) for i, region in enumerate(regions)]


class GlobalRouting(pulumi.ComponentResource):
    """Route53 records and health checks; a single region gets one plain record."""

    record_names: list[str]

    def __init__(
        self, name: str, args: GlobalRoutingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:routing:GlobalRouting", name, None, opts)
        regions = [e.region for e in args.endpoints]
        if not regions or not same_jurisdiction(args.jurisdiction, *regions):
            raise ValueError(f"{name}: regions {regions} are not all in jurisdiction {args.jurisdiction}")
        child = pulumi.ResourceOptions(parent=self)
        hosts = {e.region: e.hostname for e in args.endpoints}
        self.record_names = [args.api_host]
        if len(regions) == 1:
            aws.route53.Record(
                f"{name}-api",
                zone_id=args.zone_id,
                name=args.api_host,
                type="CNAME",
                ttl=TTL,
                records=[hosts[regions[0]]],
                opts=child,
            )
            self.register_outputs({"record_names": self.record_names})
            return
        checks = {
            region: aws.route53.HealthCheck(
                f"{name}-{region}",
                type="HTTP",
                fqdn=hosts[region],
                port=HEALTH_PORT,
                resource_path=HEALTH_PATH,
                request_interval=30,
                failure_threshold=3,
                tags=args.tags | {"Name": f"{args.api_host} gateway {region}"},
                opts=child,
            )
            for region in regions
        }
        for region, partner in failover_partners(regions):
            regional = f"{region}.{args.api_host}"
            self.record_names.append(regional)
            for role, target in (("PRIMARY", region), ("SECONDARY", partner)):
                aws.route53.Record(
                    f"{name}-{region}-{role.lower()}",
                    zone_id=args.zone_id,
                    name=regional,
                    type="CNAME",
                    ttl=TTL,
                    records=[hosts[target]],
                    set_identifier=f"{region}-{role.lower()}",
                    failover_routing_policies=[aws.route53.RecordFailoverRoutingPolicyArgs(type=role)],
                    health_check_id=checks[target].id,
                    opts=child,
                )
            aws.route53.Record(
                f"{name}-{region}-latency",
                zone_id=args.zone_id,
                name=args.api_host,
                type="CNAME",
                ttl=TTL,
                records=[regional],
                set_identifier=region,
                latency_routing_policies=[aws.route53.RecordLatencyRoutingPolicyArgs(region=region)],
                opts=child,
            )
        self.register_outputs({"record_names": self.record_names})
