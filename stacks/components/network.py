"""Network: a VPC over several AZs, private node subnets, NAT, VPC endpoints and KMS-encrypted flow logs."""

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.documents import assume_role_policy, flow_logs_policy

INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts", "logs")


def carve_subnets(vpc_cidr: str, count: int) -> tuple[list[str], list[str]]:
    """Split the VPC range: `count` large private subnets first, then `count` small public ones.

    The private half is cut into four blocks (nodes and pods need the room); the public subnets only hold NAT
    gateways and load balancers, so they come from the fourth block in /24-sized slices.
    """
    network = ipaddress.IPv4Network(vpc_cidr)
    quarters = list(network.subnets(prefixlen_diff=2))
    if count > 3:
        raise ValueError(f"at most 3 AZs fit this layout, asked for {count}")
    public_pool = quarters[3].subnets(new_prefix=min(quarters[3].prefixlen + 2, 28))
    return [str(q) for q in quarters[:count]], [str(next(public_pool)) for _ in range(count)]


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    """Inputs of `Network`."""

    vpc_cidr: str
    """The VPC's private range."""
    az_count: int
    """Availability zones to span (3, or 2 for SMB)."""
    nat_count: int
    """NAT gateways: one per AZ, or one shared (SMB)."""
    region: str
    """The region (endpoint service names carry it)."""
    cluster_name: str
    """EKS cluster name, for the subnet discovery tags."""
    log_retention_days: int
    """Flow log retention."""
    tags: dict[str, str]
    """Tags on every taggable resource."""


class Network(pulumi.ComponentResource):
    """A private-by-default VPC."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    flow_log_group_arn: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(parent=self)
        )
        private_cidrs, public_cidrs = carve_subnets(args.vpc_cidr, args.az_count)
        tags = args.tags
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tags | {"Name": f"{name}-vpc"},
            opts=child,
        )
        # No rules: nothing may use the default security group.
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, tags=tags, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)
        elb_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}
        public = [
            aws.ec2.Subnet(
                f"{name}-public-{i}",
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=zones.names[i],
                map_public_ip_on_launch=False,
                tags=tags | elb_tag | {"kubernetes.io/role/elb": "1", "Name": f"{name}-public-{i}"},
                opts=child,
            )
            for i, cidr in enumerate(public_cidrs)
        ]
        private = [
            aws.ec2.Subnet(
                f"{name}-private-{i}",
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=zones.names[i],
                tags=tags | elb_tag | {"kubernetes.io/role/internal-elb": "1", "Name": f"{name}-private-{i}"},
                opts=child,
            )
            for i, cidr in enumerate(private_cidrs)
        ]
        public_rt = aws.ec2.RouteTable(f"{name}-public-rt", vpc_id=vpc.id, tags=tags, opts=child)
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )
        for i, subnet in enumerate(public):
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{i}", subnet_id=subnet.id, route_table_id=public_rt.id, opts=child
            )
        nats = []
        for i in range(args.nat_count):
            eip = aws.ec2.Eip(f"{name}-nat-{i}", domain="vpc", tags=tags, opts=child)
            nats.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{i}",
                    allocation_id=eip.id,
                    subnet_id=public[i].id,
                    tags=tags,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )
        private_rts = []
        for i, subnet in enumerate(private):
            rt = aws.ec2.RouteTable(f"{name}-private-{i}", vpc_id=vpc.id, tags=tags, opts=child)
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
            private_rts.append(rt)
        self._endpoints(name, args, vpc, private, private_rts, child)
        log_group = self._flow_logs(name, args, vpc, child)
        self.vpc_id = vpc.id
        self.private_subnet_ids = [s.id for s in private]
        self.public_subnet_ids = [s.id for s in public]
        self.flow_log_group_arn = log_group.arn
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "private_subnet_ids": self.private_subnet_ids,
                "public_subnet_ids": self.public_subnet_ids,
                "flow_log_group_arn": self.flow_log_group_arn,
            }
        )

    def _endpoints(
        self,
        name: str,
        args: NetworkArgs,
        vpc: aws.ec2.Vpc,
        private: list[aws.ec2.Subnet],
        route_tables: list[aws.ec2.RouteTable],
        child: pulumi.ResourceOptions,
    ) -> None:
        """S3 through a gateway endpoint; ECR, STS and CloudWatch Logs through private interface endpoints."""
        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in route_tables],
            tags=args.tags,
            opts=child,
        )
        sg = aws.ec2.SecurityGroup(
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
        for service in INTERFACE_ENDPOINTS:
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

    def _flow_logs(
        self, name: str, args: NetworkArgs, vpc: aws.ec2.Vpc, child: pulumi.ResourceOptions
    ) -> aws.cloudwatch.LogGroup:
        key = RegionalKey(
            f"{name}-logs-key",
            RegionalKeyArgs(purpose="VPC flow logs", region=args.region, log_service=True, tags=args.tags),
            opts=child,
        )
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
