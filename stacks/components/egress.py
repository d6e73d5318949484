"""Egress: the AWS Network Firewall that a VPC's only way to the internet crosses, with a domain allowlist.

Path (point 8 of issue 9): private subnet -> NAT gateway (public subnet) -> firewall endpoint (firewall
subnet) -> internet gateway. The IGW's edge route table sends the return traffic for each public subnet back
through the firewall endpoint of its AZ, so both directions cross the same endpoint. The firewall policy drops
every established flow no rule passes (strict order), and passes only TLS (by SNI) and HTTP (by Host) to the
domains in `EgressArgs.egress_domains`, plus HTTPS in to the public subnets (the gateway's load balancer). AWS
APIs are reached through VPC endpoints (`Network`) and never come this way.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

FIREWALL_SUBNET_PREFIX = 28
"""Firewall subnets hold only the firewall endpoint: AWS's minimum size is enough."""
DOMAIN_CAPACITY = 100
"""Capacity of the allowlist rule group (fixed at creation): each domain takes one unit per target type."""
MAX_DOMAINS = DOMAIN_CAPACITY // 2
_DOMAIN = re.compile(r"^\.?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ANYWHERE = "0.0.0.0/0"


def check_domains(domains: Sequence[str]) -> None:
    """Refuse what is not a host name (a scheme, a port, a path): the firewall would never match it."""
    if len(domains) > MAX_DOMAINS:
        raise ValueError(f"at most {MAX_DOMAINS} egress domains fit the allowlist, got {len(domains)}")
    bad = [d for d in domains if not _DOMAIN.match(d)]
    if bad:
        raise ValueError(f"egress domains must be host names (a leading dot allows subdomains), got {bad}")


def firewall_endpoints(statuses: Sequence[Any]) -> dict[str, str]:
    """Subnet id -> the firewall endpoint (a `vpce-` id) AWS placed in it, from the firewall's status."""
    return {
        str(attachment.subnet_id): str(attachment.endpoint_id)
        for status in statuses
        for state in status.sync_states or []
        for attachment in state.attachments or []
        if attachment.subnet_id and attachment.endpoint_id
    }


def endpoint_in(endpoints: dict[str, str], subnet_id: str) -> str:
    """The firewall endpoint in one firewall subnet; ValueError when AWS reports none there."""
    if subnet_id not in endpoints:
        raise ValueError(f"the firewall reports no endpoint in subnet {subnet_id} (has {sorted(endpoints)})")
    return endpoints[subnet_id]


@dataclass(frozen=True, kw_only=True)
class EgressArgs:
    """Inputs of `Egress`."""

    vpc_id: pulumi.Input[str]
    """The VPC the firewall guards."""
    vpc_cidr: str
    """The VPC's range: the only sources the allowlist passes (NAT keeps them inside it)."""
    internet_gateway_id: pulumi.Input[str]
    """The VPC's internet gateway: its edge route table returns traffic through the firewall."""
    firewall_subnet_cidrs: tuple[str, ...]
    """One small subnet per firewall endpoint, in AZ order (one per NAT gateway)."""
    availability_zones: tuple[pulumi.Input[str], ...]
    """The AZ of each firewall subnet, in the same order."""
    public_subnet_ids: tuple[pulumi.Input[str], ...]
    """The public subnets (NAT gateways, the load balancer), in AZ order: each leaves and comes back through
    the firewall endpoint of its AZ, or the only one."""
    public_subnet_cidrs: tuple[str, ...]
    """Their ranges, in the same order (edge routes and the inbound HTTPS rules name them)."""
    egress_domains: tuple[str, ...]
    """The only hosts reachable through NAT (e.g. the identity provider's, for its JWKS); `.example.com` also
    allows subdomains. Empty: no egress to the internet at all."""
    log_key_arn: pulumi.Input[str]
    """KMS key of the firewall's log groups (its policy must let the regional log service use it)."""
    log_retention_days: int
    """Firewall log retention."""
    tags: dict[str, str]
    """Tags on every taggable resource."""

    def __post_init__(self) -> None:
        check_domains(self.egress_domains)
        if not self.firewall_subnet_cidrs or len(self.firewall_subnet_cidrs) != len(self.availability_zones):
            raise ValueError("give one availability zone per firewall subnet, and at least one subnet")
        if len(self.public_subnet_ids) != len(self.public_subnet_cidrs):
            raise ValueError("give one CIDR per public subnet")
        if len(self.firewall_subnet_cidrs) > len(self.public_subnet_ids):
            raise ValueError("more firewall endpoints than public subnets: some would carry no traffic")


class Egress(pulumi.ComponentResource):
    """An allowlisting Network Firewall between a VPC's public subnets and its internet gateway."""

    firewall_arn: pulumi.Output[str]
    firewall_subnet_ids: list[pulumi.Output[str]]

    def __init__(self, name: str, args: EgressArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:network:Egress", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        subnets = [
            aws.ec2.Subnet(
                f"{name}-firewall-{i}",
                vpc_id=args.vpc_id,
                cidr_block=cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags=args.tags | {"Name": f"{name}-firewall-{i}"},
                opts=child,
            )
            for i, (cidr, zone) in enumerate(
                zip(args.firewall_subnet_cidrs, args.availability_zones, strict=True)
            )
        ]
        firewall = self._firewall(name, args, subnets, child)
        by_subnet = firewall.firewall_statuses.apply(firewall_endpoints)
        endpoints = [
            pulumi.Output.all(endpoints=by_subnet, subnet=s.id).apply(
                lambda v: endpoint_in(v["endpoints"], v["subnet"])
            )
            for s in subnets
        ]
        self._firewall_routes(name, args, subnets, child)
        self._edge_routes(name, args, endpoints, child)
        self.firewall_arn = firewall.arn
        self.firewall_subnet_ids = [s.id for s in subnets]
        self.register_outputs(
            {"firewall_arn": self.firewall_arn, "firewall_subnet_ids": self.firewall_subnet_ids}
        )

    def _policy(
        self, name: str, args: EgressArgs, child: pulumi.ResourceOptions
    ) -> aws.networkfirewall.FirewallPolicy:
        """Strict order: pass HTTPS in to the load balancer and the allowlisted domains out; drop the rest."""
        nfw = aws.networkfirewall
        # The load balancer sits in the public subnets, so its inbound flows cross the firewall too.
        inbound = nfw.RuleGroup(
            f"{name}-inbound",
            type="STATEFUL",
            capacity=10,
            description="HTTPS from anywhere to the public subnets (the gateway's load balancer)",
            rule_group=_inbound_rules(args.public_subnet_cidrs),
            tags=args.tags,
            opts=child,
        )
        groups = [inbound]
        if args.egress_domains:
            groups.append(
                nfw.RuleGroup(
                    f"{name}-allowlist",
                    type="STATEFUL",
                    capacity=DOMAIN_CAPACITY,
                    description="The only hosts reachable from the VPC through NAT",
                    rule_group=_allowlist_rules(args.vpc_cidr, args.egress_domains),
                    tags=args.tags,
                    opts=child,
                )
            )
        references = [
            nfw.FirewallPolicyFirewallPolicyStatefulRuleGroupReferenceArgs(
                priority=10 * i, resource_arn=g.arn
            )
            for i, g in enumerate(groups, 1)
        ]
        return nfw.FirewallPolicy(
            f"{name}-policy",
            firewall_policy=nfw.FirewallPolicyFirewallPolicyArgs(
                stateless_default_actions=["aws:forward_to_sfe"],
                stateless_fragment_default_actions=["aws:forward_to_sfe"],
                # drop_established lets the TCP handshake through so the SNI or Host can be read, then drops
                # every flow no rule passed; alert_established logs what was dropped.
                stateful_default_actions=["aws:drop_established", "aws:alert_established"],
                stateful_engine_options=nfw.FirewallPolicyFirewallPolicyStatefulEngineOptionsArgs(
                    rule_order="STRICT_ORDER"
                ),
                stateful_rule_group_references=references,
            ),
            tags=args.tags,
            opts=child,
        )

    def _firewall(
        self, name: str, args: EgressArgs, subnets: list[aws.ec2.Subnet], child: pulumi.ResourceOptions
    ) -> aws.networkfirewall.Firewall:
        """The firewall, one endpoint per firewall subnet, its ALERT and FLOW logs in KMS-encrypted groups."""
        nfw = aws.networkfirewall
        firewall = nfw.Firewall(
            f"{name}-firewall",
            vpc_id=args.vpc_id,
            firewall_policy_arn=self._policy(name, args, child).arn,
            subnet_mappings=[nfw.FirewallSubnetMappingArgs(subnet_id=s.id) for s in subnets],
            delete_protection=True,
            tags=args.tags,
            opts=child,
        )
        destinations = []
        for log_type in ("ALERT", "FLOW"):
            # Under /aws/vendedlogs/ the log delivery's resource policy covers every group with one statement.
            group = aws.cloudwatch.LogGroup(
                f"{name}-firewall-{log_type.lower()}",
                name=f"/aws/vendedlogs/network-firewall/{name}/{log_type.lower()}",
                retention_in_days=args.log_retention_days,
                kms_key_id=args.log_key_arn,
                tags=args.tags,
                opts=child,
            )
            destinations.append(
                nfw.LoggingConfigurationLoggingConfigurationLogDestinationConfigArgs(
                    log_destination={"logGroup": group.name},
                    log_destination_type="CloudWatchLogs",
                    log_type=log_type,
                )
            )
        nfw.LoggingConfiguration(
            f"{name}-firewall-logs",
            firewall_arn=firewall.arn,
            logging_configuration=nfw.LoggingConfigurationLoggingConfigurationArgs(
                log_destination_configs=destinations
            ),
            opts=child,
        )
        return firewall

    def _firewall_routes(
        self, name: str, args: EgressArgs, subnets: list[aws.ec2.Subnet], child: pulumi.ResourceOptions
    ) -> None:
        """Firewall subnets go out through the IGW."""
        table = aws.ec2.RouteTable(f"{name}-firewall-rt", vpc_id=args.vpc_id, tags=args.tags, opts=child)
        aws.ec2.Route(
            f"{name}-firewall-default",
            route_table_id=table.id,
            destination_cidr_block=_ANYWHERE,
            gateway_id=args.internet_gateway_id,
            opts=child,
        )
        for i, subnet in enumerate(subnets):
            aws.ec2.RouteTableAssociation(
                f"{name}-firewall-{i}", subnet_id=subnet.id, route_table_id=table.id, opts=child
            )

    def _edge_routes(
        self, name: str, args: EgressArgs, endpoints: list[pulumi.Output[str]], child: pulumi.ResourceOptions
    ) -> None:
        """Each public subnet goes out, and comes back in, through the same firewall endpoint (its AZ's, or
        the SMB profile's only one): every flow stays symmetric."""
        edge = aws.ec2.RouteTable(f"{name}-igw-edge-rt", vpc_id=args.vpc_id, tags=args.tags, opts=child)
        aws.ec2.RouteTableAssociation(
            f"{name}-igw-edge", gateway_id=args.internet_gateway_id, route_table_id=edge.id, opts=child
        )
        public = zip(args.public_subnet_ids, args.public_subnet_cidrs, strict=True)
        for i, (subnet_id, cidr) in enumerate(public):
            endpoint = endpoints[i % len(endpoints)]
            table = aws.ec2.RouteTable(f"{name}-public-{i}", vpc_id=args.vpc_id, tags=args.tags, opts=child)
            aws.ec2.Route(
                f"{name}-public-{i}-default",
                route_table_id=table.id,
                destination_cidr_block=_ANYWHERE,
                vpc_endpoint_id=endpoint,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{i}", subnet_id=subnet_id, route_table_id=table.id, opts=child
            )
            aws.ec2.Route(
                f"{name}-igw-edge-{i}",
                route_table_id=edge.id,
                destination_cidr_block=cidr,
                vpc_endpoint_id=endpoint,
                opts=child,
            )


_STRICT = aws.networkfirewall.RuleGroupRuleGroupStatefulRuleOptionsArgs(rule_order="STRICT_ORDER")
"""Rule groups must use the policy's rule order."""


def _inbound_rules(public_cidrs: Sequence[str]) -> aws.networkfirewall.RuleGroupRuleGroupArgs:
    """Pass TCP 443 from anywhere to each public subnet (the gateway's load balancer)."""
    nfw = aws.networkfirewall
    return nfw.RuleGroupRuleGroupArgs(
        rules_source=nfw.RuleGroupRuleGroupRulesSourceArgs(
            stateful_rules=[_pass_https_to(cidr, sid) for sid, cidr in enumerate(public_cidrs, 1)]
        ),
        stateful_rule_options=_STRICT,
    )


def _allowlist_rules(vpc_cidr: str, domains: tuple[str, ...]) -> aws.networkfirewall.RuleGroupRuleGroupArgs:
    """Pass TLS by SNI and HTTP by Host to the listed domains, from the VPC (NAT keeps sources in it)."""
    nfw = aws.networkfirewall
    home = nfw.RuleGroupRuleGroupRuleVariablesIpSetArgs(
        key="HOME_NET", ip_set=nfw.RuleGroupRuleGroupRuleVariablesIpSetIpSetArgs(definitions=[vpc_cidr])
    )
    return nfw.RuleGroupRuleGroupArgs(
        rule_variables=nfw.RuleGroupRuleGroupRuleVariablesArgs(ip_sets=[home]),
        rules_source=nfw.RuleGroupRuleGroupRulesSourceArgs(
            rules_source_list=nfw.RuleGroupRuleGroupRulesSourceRulesSourceListArgs(
                generated_rules_type="ALLOWLIST", target_types=["TLS_SNI", "HTTP_HOST"], targets=list(domains)
            )
        ),
        stateful_rule_options=_STRICT,
    )


def _pass_https_to(cidr: str, sid: int) -> aws.networkfirewall.RuleGroupRuleGroupRulesSourceStatefulRuleArgs:
    """A stateful rule passing TCP 443 from anywhere to one public subnet."""
    nfw = aws.networkfirewall
    return nfw.RuleGroupRuleGroupRulesSourceStatefulRuleArgs(
        action="PASS",
        header=nfw.RuleGroupRuleGroupRulesSourceStatefulRuleHeaderArgs(
            protocol="TCP",
            source="ANY",
            source_port="ANY",
            direction="FORWARD",
            destination=cidr,
            destination_port="443",
        ),
        rule_options=[
            nfw.RuleGroupRuleGroupRulesSourceStatefulRuleRuleOptionArgs(keyword="sid", settings=[str(sid)])
        ],
    )
