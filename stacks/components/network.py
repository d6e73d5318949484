"""Network: a VPC over several AZs, private node subnets, NAT whose only way out is the allowlisting
firewall of `Egress`, VPC endpoints for the AWS APIs and KMS-encrypted flow logs.

The private route tables are an output: a `RegionPeering` adds the route to another region's VPC to them.
"""

import ipaddress
from dataclasses import dataclass
from typing import NamedTuple

import pulumi
import pulumi_aws as aws

from stacks.components.egress import FIREWALL_SUBNET_PREFIX, Egress, EgressArgs, check_domains
from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.documents import assume_role_policy, flow_logs_policy

INTERFACE_ENDPOINTS = (
    "ecr.api",  # image manifests (kubelet, the deploy runner's mirror step)
    "ecr.dkr",  # image pulls; the layers come through the S3 gateway endpoint
    "sts",  # IRSA: AssumeRoleWithWebIdentity from every pod with a role
    "logs",  # the log shipper and the runner's build logs
    "eks",  # nodes' bootstrap (DescribeCluster) and the runner's kubeconfig
    "eks-auth",  # EKS Pod Identity credentials
    "kms",  # EBS volume and bucket encryption by the CSI driver and the runner
    "ec2",  # the VPC CNI (ENIs, prefixes), the EBS CSI driver, the node autoscaler
    "elasticloadbalancing",  # the load balancer controller registers gateway pods in the target group
    "autoscaling",  # the cluster autoscaler resizes node groups
    "xray",  # the OpenTelemetry collector's trace export
)
"""Interface endpoint services (`com.amazonaws.<region>.<service>`) for what nodes, pods and the deploy runner
call without the internet. S3 has a gateway endpoint besides these."""
SMB_INTERFACE_ENDPOINTS = (
    "ecr.api",  # SageMaker's image pulls from the VPC (the endpoints' interfaces are network-isolated)
    "ecr.dkr",  # the layers themselves come through the S3 gateway endpoint
    "logs",  # the endpoints' and the proxy function's logs
    "sagemaker.runtime",  # the API's proxy function calls InvokeEndpoint from the VPC
    "kms",  # the proxy decrypts its environment; SageMaker's volume and capture encryption
    "sts",  # the runtime clients' credentials refresh
)
"""What an smb stack's VPC needs without a cluster: no EKS, EC2, load balancer, autoscaling or X-Ray."""


class SubnetPlan(NamedTuple):
    """The CIDR blocks of each subnet tier, one per AZ."""

    private: list[str]
    public: list[str]
    firewall: list[str]


def carve_subnets(vpc_cidr: str, count: int) -> SubnetPlan:
    """Split the VPC range into `count` large private, `count` small public and `count` /28 firewall subnets.

    The range is cut into four blocks: the first three hold the private subnets (nodes and pods need the
    room); the fourth is sliced for the public subnets (NAT gateways and the load balancer), and its last
    slice, which no public subnet takes, is cut into /28s for the firewall endpoints.
    """
    if count > 3:
        raise ValueError(f"at most 3 AZs fit this layout, asked for {count}")
    quarters = list(ipaddress.IPv4Network(vpc_cidr).subnets(prefixlen_diff=2))
    slices = list(quarters[3].subnets(new_prefix=min(quarters[3].prefixlen + 2, FIREWALL_SUBNET_PREFIX)))
    firewall = slices[-1].subnets(new_prefix=FIREWALL_SUBNET_PREFIX)
    return SubnetPlan(
        private=[str(q) for q in quarters[:count]],
        public=[str(s) for s in slices[:count]],
        firewall=[str(next(firewall)) for _ in range(count)],
    )


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    """Inputs of `Network`."""

    vpc_cidr: str
    """The VPC's private range."""
    az_count: int
    """Availability zones to span (3, or 2 for SMB)."""
    nat_count: int
    """NAT gateways, and firewall endpoints beside them: one per AZ, or one shared; 0: a closed network with
    no internet path at all (no internet gateway, public subnets, NAT or firewall), as the smb profile's."""
    region: str
    """The region (endpoint service names carry it)."""
    cluster_name: str
    """EKS cluster name, for the subnet discovery tags."""
    egress_domains: tuple[str, ...]
    """The only hosts reachable through NAT (e.g. the identity provider's, for its JWKS); `.example.com` also
    allows subdomains. Empty: no egress to the internet at all."""
    log_retention_days: int
    """Flow and firewall log retention."""
    interface_endpoints: tuple[str, ...] = INTERFACE_ENDPOINTS
    """The interface endpoints to make (the smb profile's are fewer: `SMB_INTERFACE_ENDPOINTS`)."""
    tags: dict[str, str]
    """Tags on every taggable resource."""

    def __post_init__(self) -> None:
        # Refuse a bad allowlist before any resource is registered, not halfway through the VPC.
        check_domains(self.egress_domains)
        if not 0 <= self.nat_count <= self.az_count:
            raise ValueError(
                f"nat_count must be between 0 and az_count ({self.az_count}), got {self.nat_count}"
            )
        if self.nat_count == 0 and self.egress_domains:
            raise ValueError(
                f"a network without NAT reaches no domain, asked for {list(self.egress_domains)}"
            )


class Network(pulumi.ComponentResource):
    """A private-by-default VPC whose only way out is an allowlisting firewall (or none: `nat_count` 0)."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    private_route_table_ids: list[pulumi.Output[str]]
    flow_log_group_arn: pulumi.Output[str]
    firewall_arn: pulumi.Output[str]
    s3_prefix_list_id: pulumi.Output[str]
    """The S3 gateway endpoint's prefix list: what a security group allows to reach S3 through it."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(parent=self)
        )
        plan = carve_subnets(args.vpc_cidr, args.az_count)
        vpc = _vpc(name, args, child)
        public, private = self._tiers(name, plan, vpc, zones, args)
        logs_key = RegionalKey(
            f"{name}-logs-key",
            RegionalKeyArgs(
                purpose="VPC flow and firewall logs", region=args.region, log_service=True, tags=args.tags
            ),
            opts=child,
        )
        nats: list[aws.ec2.NatGateway] = []
        self.firewall_arn = pulumi.Output.from_input("")
        if args.nat_count:
            igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=args.tags, opts=child)
            egress = _egress(name, args, plan, vpc, igw, zones, public, logs_key, child)
            nats = self._nats(name, args, public, igw, child)
            self.firewall_arn = egress.firewall_arn
        private_rts = self._private_routes(name, args, vpc, private, nats, child)
        self.s3_prefix_list_id = self._endpoints(name, args, vpc, private, private_rts, child)
        log_group = self._flow_logs(name, args, vpc, logs_key, child)
        self.vpc_id = vpc.id
        self.private_subnet_ids = [s.id for s in private]
        self.public_subnet_ids = [s.id for s in public]
        self.private_route_table_ids = [rt.id for rt in private_rts]
        self.flow_log_group_arn = log_group.arn
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "private_subnet_ids": self.private_subnet_ids,
                "public_subnet_ids": self.public_subnet_ids,
                "private_route_table_ids": self.private_route_table_ids,
                "flow_log_group_arn": self.flow_log_group_arn,
                "firewall_arn": self.firewall_arn,
                "s3_prefix_list_id": self.s3_prefix_list_id,
            }
        )

    def _tiers(
        self,
        name: str,
        plan: SubnetPlan,
        vpc: aws.ec2.Vpc,
        zones: pulumi.Output[aws.GetAvailabilityZonesResult],
        args: NetworkArgs,
    ) -> tuple[list[aws.ec2.Subnet], list[aws.ec2.Subnet]]:
        """The public and private subnets, tagged for the cluster's load balancer discovery: internet-facing
        load balancers go in the public tier, internal ones in the private tier (where the nodes are)."""
        elb_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}
        # A closed network (no NAT) has nothing public: no public subnets, no internet gateway.
        public = self._subnets(
            name,
            "public",
            plan.public if args.nat_count else [],
            vpc,
            zones,
            args,
            elb_tag | {"kubernetes.io/role/elb": "1"},
        )
        private = self._subnets(
            name,
            "private",
            plan.private,
            vpc,
            zones,
            args,
            elb_tag | {"kubernetes.io/role/internal-elb": "1"},
        )
        return public, private

    def _subnets(
        self,
        name: str,
        tier: str,
        cidrs: list[str],
        vpc: aws.ec2.Vpc,
        zones: pulumi.Output[aws.GetAvailabilityZonesResult],
        args: NetworkArgs,
        role_tags: dict[str, str],
    ) -> list[aws.ec2.Subnet]:
        """One subnet of a tier per AZ, in AZ order; no public IPs on launch anywhere."""
        return [
            aws.ec2.Subnet(
                f"{name}-{tier}-{i}",
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=zones.names[i],
                map_public_ip_on_launch=False,
                tags=args.tags | role_tags | {"Name": f"{name}-{tier}-{i}"},
                opts=pulumi.ResourceOptions(parent=self),
            )
            for i, cidr in enumerate(cidrs)
        ]

    def _nats(
        self,
        name: str,
        args: NetworkArgs,
        public: list[aws.ec2.Subnet],
        igw: aws.ec2.InternetGateway,
        child: pulumi.ResourceOptions,
    ) -> list[aws.ec2.NatGateway]:
        """NAT gateways in the first `nat_count` public subnets (the AZs that have a firewall endpoint)."""
        nats = []
        for i in range(args.nat_count):
            eip = aws.ec2.Eip(f"{name}-nat-{i}", domain="vpc", tags=args.tags, opts=child)
            nats.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{i}",
                    allocation_id=eip.id,
                    subnet_id=public[i].id,
                    tags=args.tags,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )
        return nats

    def _private_routes(
        self,
        name: str,
        args: NetworkArgs,
        vpc: aws.ec2.Vpc,
        private: list[aws.ec2.Subnet],
        nats: list[aws.ec2.NatGateway],
        child: pulumi.ResourceOptions,
    ) -> list[aws.ec2.RouteTable]:
        """Each private subnet's default route goes to a NAT gateway (its AZ's, or the shared one); a closed
        network's private subnets have no default route (the VPC and its endpoints only)."""
        tables = []
        for i, subnet in enumerate(private):
            rt = aws.ec2.RouteTable(f"{name}-private-{i}", vpc_id=vpc.id, tags=args.tags, opts=child)
            if nats:
                aws.ec2.Route(
                    f"{name}-private-{i}-default",
                    route_table_id=rt.id,
                    destination_cidr_block="0.0.0.0/0",
                    nat_gateway_id=nats[i % len(nats)].id,
                    opts=child,
                )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{i}", subnet_id=subnet.id, route_table_id=rt.id, opts=child
            )
            tables.append(rt)
        return tables

    def _endpoints(
        self,
        name: str,
        args: NetworkArgs,
        vpc: aws.ec2.Vpc,
        private: list[aws.ec2.Subnet],
        route_tables: list[aws.ec2.RouteTable],
        child: pulumi.ResourceOptions,
    ) -> pulumi.Output[str]:
        """S3 through a gateway endpoint; the `INTERFACE_ENDPOINTS` through private interface endpoints.
        Returns the S3 endpoint's prefix list."""
        # A gateway endpoint costs nothing and carries the bulk (image layers, model artifacts) through the
        # private route tables rather than the NAT and the firewall.
        s3 = aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in route_tables],
            tags=args.tags,
            opts=child,
        )
        sg = _endpoint_security_group(name, args, vpc, child)
        for service in args.interface_endpoints:
            aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}",
                vpc_id=vpc.id,
                service_name=f"com.amazonaws.{args.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[s.id for s in private],
                security_group_ids=[sg.id],
                tags=args.tags,
                opts=child,
            )
        return s3.prefix_list_id

    def _flow_logs(
        self, name: str, args: NetworkArgs, vpc: aws.ec2.Vpc, key: RegionalKey, child: pulumi.ResourceOptions
    ) -> aws.cloudwatch.LogGroup:
        """Every flow of the VPC, accepted or rejected, in an encrypted group with the stack's retention; the
        delivery role may write to that group only."""
        group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/vpc/{name}/flow-logs",
            retention_in_days=args.log_retention_days,
            kms_key_id=key.arn,
            tags=args.tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=assume_role_policy("vpc-flow-logs.amazonaws.com"),
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs", role=role.id, policy=group.arn.apply(flow_logs_policy), opts=child
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags=args.tags,
            opts=child,
        )
        return group


def _vpc(name: str, args: NetworkArgs, child: pulumi.ResourceOptions) -> aws.ec2.Vpc:
    """The VPC, with the DNS the interface endpoints' private names need."""
    vpc = aws.ec2.Vpc(
        f"{name}-vpc",
        cidr_block=args.vpc_cidr,
        enable_dns_hostnames=True,
        enable_dns_support=True,
        tags=args.tags | {"Name": f"{name}-vpc"},
        opts=child,
    )
    # No rules: nothing may use the default security group.
    aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, tags=args.tags, opts=child)
    return vpc


def _egress(
    name: str,
    args: NetworkArgs,
    plan: SubnetPlan,
    vpc: aws.ec2.Vpc,
    igw: aws.ec2.InternetGateway,
    zones: pulumi.Output[aws.GetAvailabilityZonesResult],
    public: list[aws.ec2.Subnet],
    logs_key: RegionalKey,
    child: pulumi.ResourceOptions,
) -> Egress:
    """The allowlisting firewall between the NAT gateways and the internet gateway, one endpoint in each AZ
    that has a NAT gateway, logging with the network's log key."""
    return Egress(
        f"{name}-egress",
        EgressArgs(
            vpc_id=vpc.id,
            vpc_cidr=args.vpc_cidr,
            internet_gateway_id=igw.id,
            # One firewall endpoint beside each NAT gateway, in the same AZs.
            firewall_subnet_cidrs=tuple(plan.firewall[: args.nat_count]),
            availability_zones=tuple(zones.names[i] for i in range(args.nat_count)),
            public_subnet_ids=tuple(s.id for s in public),
            public_subnet_cidrs=tuple(plan.public),
            egress_domains=args.egress_domains,
            log_key_arn=logs_key.arn,
            log_retention_days=args.log_retention_days,
            tags=args.tags,
        ),
        opts=child,
    )


def _endpoint_security_group(
    name: str, args: NetworkArgs, vpc: aws.ec2.Vpc, child: pulumi.ResourceOptions
) -> aws.ec2.SecurityGroup:
    """HTTPS from the VPC's own range only: everything that calls the endpoints (nodes, pods, the deploy
    runner) is inside it."""
    return aws.ec2.SecurityGroup(
        f"{name}-endpoints",
        vpc_id=vpc.id,
        description="HTTPS from inside the VPC to the interface endpoints",
        ingress=[
            aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp", from_port=443, to_port=443, cidr_blocks=[args.vpc_cidr], description="VPC"
            )
        ],
        tags=args.tags,
        opts=child,
    )
