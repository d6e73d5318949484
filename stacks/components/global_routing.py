"""GlobalRouting: the model API's DNS.

Each region gets its own name, an alias to its load balancer, probed by a Route53 health check on a real model
endpoint; the API host is latency-routed across the regions, and a region whose check fails drops out, so
traffic stays on the remaining regions of the same jurisdiction."""

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.jurisdictions import same_jurisdiction

HTTPS_PORT = 443

# Route53 runs its health checkers in these regions only and a check needs at least three of them. Per
# jurisdiction, the ones inside it, then the nearest: the probes (which carry no user data) travel the least
# and a failure far away does not pull a healthy region out of the answer.
CHECKER_REGIONS: Mapping[str, tuple[str, ...]] = {
    # Ireland is the only checker in the EU; North Virginia and Oregon are the nearest across the Atlantic.
    "EU": ("eu-west-1", "us-east-1", "us-west-2"),
    # None in the Gulf: Singapore and Ireland are both about 5,900 km from the UAE, Tokyo the next nearest.
    "AE": ("ap-southeast-1", "eu-west-1", "ap-northeast-1"),
    # All three inside the US.
    "US": ("us-east-1", "us-west-1", "us-west-2"),
}
MIN_CHECKER_REGIONS = 3


def ready_path(model: str) -> str:
    """The V2 inference protocol's model readiness endpoint: healthy only once the model is loaded."""
    return f"/v2/models/{model}/ready"


def checker_regions(jurisdiction: str) -> list[str]:
    """The Route53 checker regions for a jurisdiction; ValueError for one the table does not know."""
    regions = CHECKER_REGIONS.get(jurisdiction)
    if regions is None or len(regions) < MIN_CHECKER_REGIONS:
        raise ValueError(f"no Route53 checker regions chosen for jurisdiction {jurisdiction!r}")
    return list(regions)


@dataclass(frozen=True, kw_only=True)
class RegionalEndpoint:
    """A region's gateway load balancer (from `Edge`)."""

    region: str
    """AWS region."""
    dns_name: pulumi.Input[str]
    """DNS name of the region's load balancer."""
    zone_id: pulumi.Input[str]
    """Canonical hosted zone of the region's load balancer (alias records need it)."""


@dataclass(frozen=True, kw_only=True)
class GlobalRoutingArgs:
    """Inputs of `GlobalRouting`."""

    api_host: str
    """The model API's host name."""
    zone_id: str
    """Hosted zone of `api_host`."""
    jurisdiction: str
    """Every region must lie in it."""
    endpoints: tuple[RegionalEndpoint, ...]
    """One per region."""
    probe_model: str
    """Model whose readiness endpoint the health checks probe (one every region serves)."""
    tags: dict[str, str]
    """Tags on the health checks."""


class GlobalRouting(pulumi.ComponentResource):
    """Route53 alias records and health checks."""

    record_names: list[str]
    health_check_ids: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: GlobalRoutingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:routing:GlobalRouting", name, None, opts)
        _check_jurisdiction(name, args)
        checkers = checker_regions(args.jurisdiction)
        child = pulumi.ResourceOptions(parent=self)
        # With one region there is nothing to choose between: the API host is a plain alias of it. With
        # several, each region joins a latency-routed set under its health check, so a failing region drops
        # out and the others answer.
        latency_routed = len(args.endpoints) > 1
        self.record_names = [args.api_host]
        self.health_check_ids = {}
        for endpoint in args.endpoints:
            regional = f"{endpoint.region}.{args.api_host}"
            self.record_names.append(regional)
            check_id = _probed_regional_name(name, args, endpoint, regional, checkers, child)
            self.health_check_ids[endpoint.region] = check_id
            if latency_routed:
                _alias_record(
                    f"{name}-{endpoint.region}-latency",
                    args.zone_id,
                    args.api_host,
                    endpoint,
                    child,
                    latency=aws.route53.RecordLatencyRoutingPolicyArgs(region=endpoint.region),
                    health_check_id=check_id,
                )
        if not latency_routed:
            _alias_record(f"{name}-api", args.zone_id, args.api_host, args.endpoints[0], child)
        self.register_outputs({"record_names": self.record_names, "health_check_ids": self.health_check_ids})


def _check_jurisdiction(name: str, args: GlobalRoutingArgs) -> None:
    """Refuse a region outside the jurisdiction: latency routing would send its users' requests there."""
    regions = [e.region for e in args.endpoints]
    if not regions or not same_jurisdiction(args.jurisdiction, *regions):
        raise ValueError(f"{name}: regions {regions} are not all in jurisdiction {args.jurisdiction}")


def _probed_regional_name(
    name: str,
    args: GlobalRoutingArgs,
    endpoint: RegionalEndpoint,
    regional: str,
    checkers: list[str],
    child: pulumi.ResourceOptions,
) -> pulumi.Output[str]:
    """The region's own name, an alias to its load balancer, and the health check that probes the probe
    model's readiness through it (over TLS, with SNI, so the check crosses the same certificate and gateway
    as a client); returns the check's id."""
    _alias_record(f"{name}-{endpoint.region}", args.zone_id, regional, endpoint, child)
    check = aws.route53.HealthCheck(
        f"{name}-{endpoint.region}",
        type="HTTPS",
        fqdn=regional,
        port=HTTPS_PORT,
        enable_sni=True,
        resource_path=ready_path(args.probe_model),
        regions=checkers,
        request_interval=30,
        failure_threshold=3,
        tags=args.tags | {"Name": f"{regional} {args.probe_model}"},
        opts=child,
    )
    return check.id


def _alias_record(
    resource_name: str,
    zone_id: str,
    host: str,
    endpoint: RegionalEndpoint,
    child: pulumi.ResourceOptions,
    latency: aws.route53.RecordLatencyRoutingPolicyArgs | None = None,
    health_check_id: pulumi.Input[str] | None = None,
) -> aws.route53.Record:
    """An A alias to a region's load balancer; with `latency`, one of the API host's latency-routed set."""
    return aws.route53.Record(
        resource_name,
        zone_id=zone_id,
        name=host,
        type="A",
        aliases=[
            aws.route53.RecordAliasArgs(
                name=endpoint.dns_name, zone_id=endpoint.zone_id, evaluate_target_health=True
            )
        ],
        set_identifier=endpoint.region if latency else None,
        latency_routing_policies=[latency] if latency else None,
        health_check_id=health_check_id,
        opts=child,
    )
