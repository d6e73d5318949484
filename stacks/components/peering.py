"""RegionPeering: the primary region's deploy runner reaches a secondary region's private-only EKS API.

A multi-region stack runs the platform layer from one in-VPC runner in its primary region, but each cluster's
API endpoint is private-only. An inter-region VPC peering connection carries the runner's HTTPS to the
secondary VPC, inside the jurisdiction (peering between regions of two jurisdictions is refused).

What AWS documents, and what each piece is for:
- Name resolution: with public access off, EKS advertises the private endpoint's IPs (its ENIs in the
  cluster's subnets) under the API server's public DNS name, so a client in a peered VPC resolves the
  kubeconfig's `server` to the secondary VPC's private addresses with no Route 53 set-up (AWS knowledge
  center, "connect to a private Amazon EKS cluster endpoint from outside the VPC"; automatic since December
  2019, before which the name resolved only inside the cluster's VPC, through a private hosted zone EKS owns).
  Reaching those addresses is then a matter of routes and the security group below. The peering's
  `allow_remote_vpc_dns_resolution` is a separate switch: it makes the peer's EC2 public DNS hostnames resolve
  to private IPs across the connection. It is set on both sides, each in its own region: AWS requires an
  inter-region connection's requester options be modified in the requester's region and the accepter's in
  the accepter's, and only once the connection is active (so the options wait for the accepter).
- Acceptance: `auto_accept` on the connection itself works only within one region; across regions the
  accepter resource, on the secondary region's provider, accepts it.
- Routes: each side's private route tables send the other VPC's range (only that, never a default route)
  through the connection; the answers from the cluster's ENIs need the secondary side's routes.
- Security group: a rule cannot reference a security group in a peer VPC of another region, so the
  secondary cluster's security group lets in 443 from the primary's runner subnets by CIDR.
"""

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.jurisdictions import same_jurisdiction


@dataclass(frozen=True, kw_only=True)
class PeeringSide:
    """One VPC of a peering."""

    region: str
    """The VPC's region."""
    provider: aws.Provider
    """The AWS provider for that region: every resource of this side is created through it (stacks disable
    default providers, and EC2 calls are regional)."""
    vpc_id: pulumi.Input[str]
    """The VPC."""
    vpc_cidr: str
    """The VPC's range: the other side routes it through the peering."""
    route_table_ids: Sequence[pulumi.Input[str]]
    """The private route tables (`Network.private_route_table_ids`) that get the route to the other side."""


@dataclass(frozen=True, kw_only=True)
class RegionPeeringArgs:
    """Inputs of `RegionPeering`."""

    jurisdiction: str
    """The stack's jurisdiction: both regions must lie in it."""
    primary: PeeringSide
    """The requester: the region whose VPC runs the deploy runner."""
    secondary: PeeringSide
    """The accepter: the region whose cluster the runner deploys to."""
    cluster_security_group_id: pulumi.Input[str]
    """The secondary cluster's security group (on its API endpoint's ENIs)."""
    runner_cidrs: tuple[str, ...]
    """The primary's private subnet ranges, where the deploy runner runs: the only sources let in on 443."""
    tags: dict[str, str]
    """Tags on every taggable resource."""

    def __post_init__(self) -> None:
        check_pair(self.jurisdiction, self.primary.region, self.secondary.region)
        check_ranges(self.primary.vpc_cidr, self.secondary.vpc_cidr, self.runner_cidrs)


def check_pair(jurisdiction: str, primary: str, secondary: str) -> None:
    """Refuse a peering that would carry traffic out of the jurisdiction, or that joins a region to itself."""
    if not same_jurisdiction(jurisdiction, primary, secondary):
        raise ValueError(f"peering {primary} with {secondary} leaves jurisdiction {jurisdiction}")
    if primary == secondary:
        raise ValueError(f"both sides of the peering are in {primary}: it joins regions, not VPCs of one")


def check_ranges(primary_cidr: str, secondary_cidr: str, runner_cidrs: Sequence[str]) -> None:
    """Refuse overlapping VPCs (EC2 rejects the connection) and runner ranges outside the primary VPC."""
    primary, secondary = ipaddress.ip_network(primary_cidr), ipaddress.ip_network(secondary_cidr)
    if primary.overlaps(secondary):
        raise ValueError(f"VPC ranges {primary_cidr} and {secondary_cidr} overlap: EC2 cannot peer them")
    if not runner_cidrs:
        raise ValueError("no runner ranges: nothing could use the peering")
    outside = [c for c in runner_cidrs if not ipaddress.ip_network(c).subnet_of(primary)]  # type: ignore[arg-type]
    if outside:
        raise ValueError(f"runner ranges {outside} lie outside the primary VPC {primary_cidr}")


class RegionPeering(pulumi.ComponentResource):
    """An accepted inter-region peering, its routes, DNS options and the API rule for the deploy runner."""

    peering_connection_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: RegionPeeringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:network:RegionPeering", name, None, opts)
        primary, secondary = args.primary, args.secondary
        on_primary = pulumi.ResourceOptions(parent=self, provider=primary.provider)
        on_secondary = pulumi.ResourceOptions(parent=self, provider=secondary.provider)
        connection = aws.ec2.VpcPeeringConnection(
            f"{name}-connection",
            vpc_id=primary.vpc_id,
            peer_vpc_id=secondary.vpc_id,
            peer_region=secondary.region,
            tags=args.tags | {"Name": name},
            opts=on_primary,
        )
        accepter = aws.ec2.VpcPeeringConnectionAccepter(
            f"{name}-accepter",
            vpc_peering_connection_id=connection.id,
            auto_accept=True,
            tags=args.tags | {"Name": name},
            opts=on_secondary,
        )
        # The accepter's id is the connection's, known once it is active: what waits on it waits for that.
        active = accepter.id
        self._dns_options(name, active, on_primary, on_secondary)
        self._routes(f"{name}-to-{secondary.region}", primary, secondary.vpc_cidr, active, on_primary)
        self._routes(f"{name}-to-{primary.region}", secondary, primary.vpc_cidr, active, on_secondary)
        for i, cidr in enumerate(args.runner_cidrs):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-{i}",
                security_group_id=args.cluster_security_group_id,
                cidr_ipv4=cidr,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                description=f"Kubernetes API from the deploy runner in {primary.region}",
                tags=args.tags,
                opts=on_secondary,
            )
        self.peering_connection_id = active
        self.register_outputs({"peering_connection_id": self.peering_connection_id})

    def _dns_options(
        self,
        name: str,
        connection_id: pulumi.Output[str],
        on_primary: pulumi.ResourceOptions,
        on_secondary: pulumi.ResourceOptions,
    ) -> None:
        """Each side lets the other resolve its hostnames to private IPs, each in its own region."""
        aws.ec2.PeeringConnectionOptions(
            f"{name}-requester-dns",
            vpc_peering_connection_id=connection_id,
            requester=aws.ec2.PeeringConnectionOptionsRequesterArgs(allow_remote_vpc_dns_resolution=True),
            opts=on_primary,
        )
        aws.ec2.PeeringConnectionOptions(
            f"{name}-accepter-dns",
            vpc_peering_connection_id=connection_id,
            accepter=aws.ec2.PeeringConnectionOptionsAccepterArgs(allow_remote_vpc_dns_resolution=True),
            opts=on_secondary,
        )

    def _routes(
        self,
        prefix: str,
        side: PeeringSide,
        peer_cidr: str,
        connection_id: pulumi.Output[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        """The peer VPC's range, and nothing wider, through the connection from each private route table."""
        for i, table in enumerate(side.route_table_ids):
            aws.ec2.Route(
                f"{prefix}-{i}",
                route_table_id=table,
                destination_cidr_block=peer_cidr,
                vpc_peering_connection_id=connection_id,
                opts=opts,
            )
