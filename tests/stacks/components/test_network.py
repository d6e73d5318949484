import ipaddress
import json
from typing import Any

import pulumi
import pytest

from stacks.components.network import INTERFACE_ENDPOINTS, Network, NetworkArgs, carve_subnets
from stacks.preview.monitor import Registration
from tests.stacks.conftest import TAGS, Built, build_component

VPC_CIDR = "10.40.0.0/16"
IDP = "login.example.eu"

# What nodes, pods and the deploy runner call without the internet (issue 9, points 3, 6, 8, 10, 16).
REQUIRED_SERVICES = {
    "s3",
    "ecr.api",
    "ecr.dkr",
    "sts",
    "logs",
    "eks",
    "eks-auth",
    "kms",
    "ec2",
    "elasticloadbalancing",
    "autoscaling",
    "xray",
}


def network_args(az_count: int, nat_count: int, domains: tuple[str, ...] = (IDP,)) -> NetworkArgs:
    return NetworkArgs(
        vpc_cidr=VPC_CIDR,
        az_count=az_count,
        nat_count=nat_count,
        region="eu-central-1",
        cluster_name="c",
        egress_domains=domains,
        log_retention_days=365,
        tags=TAGS,
    )


def network(az_count: int, nat_count: int, outputs: dict[str, Any] | None = None) -> Built:
    """Build a Network; with `outputs`, record its private route table ids there."""
    args = network_args(az_count, nat_count)

    def build(opts: pulumi.ResourceOptions) -> None:
        net = Network("net", args, opts)
        if outputs is not None:
            pulumi.Output.all(*net.private_route_table_ids).apply(
                lambda ids: outputs.update(private_route_table_ids=ids)
            )

    return build_component(build)


@pytest.fixture(scope="module")
def standard() -> Built:
    return network(3, 3)


@pytest.fixture(scope="module")
def smb() -> Built:
    return network(2, 1)


def by_urn(built: Built) -> dict[str, Registration]:
    return {r.urn: r for r in built.registrations}


def subnet(built: Built, tier: str, i: int) -> Registration:
    return built.one("aws:ec2/subnet:Subnet", f"-{tier}-{i}")


def table_of(built: Built, subnet_urn: str) -> str:
    """URN of the route table associated with a subnet."""
    (assoc,) = [
        a
        for a in built.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
        if subnet_urn in a.property_dependencies.get("subnetId", ())
    ]
    return assoc.property_dependencies["routeTableId"][0]


def routes_in(built: Built, table_urn: str) -> list[Registration]:
    return [
        r
        for r in built.of_type("aws:ec2/route:Route")
        if table_urn in r.property_dependencies.get("routeTableId", ())
    ]


def default_route(built: Built, subnet_urn: str) -> Registration:
    (route,) = [
        r
        for r in routes_in(built, table_of(built, subnet_urn))
        if r.inputs["destinationCidrBlock"] == "0.0.0.0/0"
    ]
    return route


def endpoint_subnet(built: Built, route: Registration) -> Registration:
    """The firewall subnet whose firewall endpoint a route targets (the endpoint id derives from it)."""
    deps = by_urn(built)
    firewall = built.one("aws:networkfirewall/firewall:Firewall").urn
    sources = route.property_dependencies.get("vpcEndpointId", ())
    assert route.inputs.get("vpcEndpointId", "").startswith("vpce-"), f"{route.name} targets no endpoint"
    assert firewall in sources, f"{route.name}: the endpoint is not the firewall's ({sources})"
    (found,) = [deps[u] for u in sources if deps[u].type == "aws:ec2/subnet:Subnet"]
    return found


def rule_groups(built: Built) -> list[Registration]:
    """The stateful rule groups the firewall policy references."""
    policy = built.one("aws:networkfirewall/firewallPolicy:FirewallPolicy")
    referenced = set(policy.property_dependencies.get("firewallPolicy", ()))
    return [g for g in built.of_type("aws:networkfirewall/ruleGroup:RuleGroup") if g.urn in referenced]


def test_subnets_span_three_azs(standard: Built) -> None:
    zones = {r.inputs["availabilityZone"] for r in standard.of_type("aws:ec2/subnet:Subnet")}
    assert zones == {"eu-central-1a", "eu-central-1b", "eu-central-1c"}, f"zones used: {zones}"


def test_nat_gateway_per_az(standard: Built) -> None:
    assert len(standard.of_type("aws:ec2/natGateway:NatGateway")) == 3, "standard profile needs a NAT per AZ"


def test_smb_uses_two_azs_one_nat_and_one_firewall_endpoint(smb: Built) -> None:
    assert len(smb.of_type("aws:ec2/natGateway:NatGateway")) == 1, "SMB profile has one NAT"
    mappings = smb.one("aws:networkfirewall/firewall:Firewall").inputs["subnetMappings"]
    assert len(mappings) == 1, f"SMB profile pays for one firewall endpoint, has {len(mappings)}"
    tiers = [r.name.rsplit("-", 2)[1] for r in smb.of_type("aws:ec2/subnet:Subnet")]
    assert sorted(tiers) == ["firewall", "private", "private", "public", "public"], tiers


@pytest.mark.parametrize("profile", ["standard", "smb"])
def test_private_subnets_default_route_goes_to_nat(profile: str, request: pytest.FixtureRequest) -> None:
    built: Built = request.getfixturevalue(profile)
    nats = {n.urn for n in built.of_type("aws:ec2/natGateway:NatGateway")}
    private = [r for r in built.of_type("aws:ec2/subnet:Subnet") if "-private-" in r.name]
    assert len(private) == {"standard": 3, "smb": 2}[profile], "one private subnet per zone"
    for s in private:
        route = default_route(built, s.urn)
        assert set(route.property_dependencies.get("natGatewayId", ())) & nats, f"{s.name}: {route.inputs}"


@pytest.mark.parametrize("profile", ["standard", "smb"])
def test_nat_subnets_default_route_goes_to_a_firewall_endpoint(
    profile: str, request: pytest.FixtureRequest
) -> None:
    built: Built = request.getfixturevalue(profile)
    assert len(built.of_type("aws:ec2/natGateway:NatGateway")) == {"standard": 3, "smb": 1}[profile]
    for nat in built.of_type("aws:ec2/natGateway:NatGateway"):
        (nat_subnet,) = nat.property_dependencies["subnetId"]
        route = default_route(built, nat_subnet)
        assert "gatewayId" not in route.inputs, f"{nat.name}'s subnet goes straight to the internet gateway"
        fw_subnet = endpoint_subnet(built, route)
        zone = by_urn(built)[nat_subnet].inputs["availabilityZone"]
        assert fw_subnet.inputs["availabilityZone"] == zone, f"{nat.name} in {zone} leaves through another AZ"


@pytest.mark.parametrize("profile", ["standard", "smb"])
def test_internet_gateway_returns_each_public_subnet_through_its_firewall_endpoint(
    profile: str, request: pytest.FixtureRequest
) -> None:
    built: Built = request.getfixturevalue(profile)
    igw = built.one("aws:ec2/internetGateway:InternetGateway").urn
    (edge,) = [
        a
        for a in built.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
        if igw in a.property_dependencies.get("gatewayId", ())
    ]
    edge_routes = {
        r.inputs["destinationCidrBlock"]: r
        for r in routes_in(built, edge.property_dependencies["routeTableId"][0])
    }
    public = [r for r in built.of_type("aws:ec2/subnet:Subnet") if "-public-" in r.name]
    assert set(edge_routes) == {p.inputs["cidrBlock"] for p in public}, f"edge routes: {sorted(edge_routes)}"
    for p in public:
        inbound = endpoint_subnet(built, edge_routes[p.inputs["cidrBlock"]])
        outbound = endpoint_subnet(built, default_route(built, p.urn))
        assert inbound.urn == outbound.urn, (
            f"{p.name}: in through {inbound.name}, out through {outbound.name}"
        )


def test_the_firewall_guards_this_network_with_its_allowlist(standard: Built) -> None:
    net = standard.one("model-serving:network:Network")
    egress = standard.one("model-serving:network:Egress")
    assert egress.parent == net.urn, "the firewall is not part of the network"
    (allowlist,) = [
        g.inputs["ruleGroup"]
        for g in rule_groups(standard)
        if "rulesSourceList" in g.inputs["ruleGroup"]["rulesSource"]
    ]
    assert allowlist["rulesSource"]["rulesSourceList"]["targets"] == [IDP], allowlist
    assert allowlist["ruleVariables"]["ipSets"][0]["ipSet"]["definitions"] == [VPC_CIDR], allowlist
    inbound = {
        rule["header"]["destination"]
        for g in rule_groups(standard)
        for rule in g.inputs["ruleGroup"]["rulesSource"].get("statefulRules", [])
    }
    public = {
        r.inputs["cidrBlock"] for r in standard.of_type("aws:ec2/subnet:Subnet") if "-public-" in r.name
    }
    assert inbound == public, f"HTTPS let in to {inbound}, public subnets are {public}"
    groups = [
        g
        for g in standard.of_type("aws:cloudwatch/logGroup:LogGroup")
        if "network-firewall" in g.inputs["name"]
    ]
    assert len(groups) == 2, groups
    assert all(g.inputs["kmsKeyId"].startswith("arn:aws:kms:eu-central-1:") for g in groups), groups


def test_private_route_table_ids_are_the_private_subnets_tables() -> None:
    outputs: dict[str, Any] = {}
    built = network(2, 1, outputs)
    private = [r for r in built.of_type("aws:ec2/subnet:Subnet") if "-private-" in r.name]
    expected = [default_route(built, s.urn).inputs["routeTableId"] for s in private]
    assert outputs.get("private_route_table_ids") == expected, (
        f"exported {outputs.get('private_route_table_ids')}, the private subnets use {expected}"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"domains": ("login.example.eu:443",)}, "must be host names"), ({"nat_count": 3}, "nat_count must be")],
)
def test_args_refuse_a_network_that_cannot_work(overrides: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"az_count": 2, "nat_count": 1} | overrides
    with pytest.raises(ValueError, match=message):
        network_args(**values)


def test_vpc_endpoints_cover_what_runs_without_the_internet(standard: Built) -> None:
    services = {r.inputs["serviceName"] for r in standard.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    expected = {f"com.amazonaws.eu-central-1.{s}" for s in REQUIRED_SERVICES}
    assert services == expected, f"missing {expected - services}, unexpected {services - expected}"
    assert set(INTERFACE_ENDPOINTS) == REQUIRED_SERVICES - {"s3"}, "the exported list names a different set"


def test_interface_endpoints_are_private_in_the_private_subnets(standard: Built) -> None:
    private = {r.urn for r in standard.of_type("aws:ec2/subnet:Subnet") if "-private-" in r.name}
    endpoints = standard.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    interfaces = [e for e in endpoints if e.inputs["vpcEndpointType"] == "Interface"]
    assert len(private) == 3 and len(interfaces) == len(INTERFACE_ENDPOINTS), (private, interfaces)
    for e in interfaces:
        assert e.inputs["privateDnsEnabled"] is True, f"{e.name}: SDKs would not resolve to it"
        assert set(e.property_dependencies["subnetIds"]) == private, f"{e.name} outside the private subnets"


def test_flow_logs_go_to_kms_encrypted_group_with_retention(standard: Built) -> None:
    group = standard.one("aws:cloudwatch/logGroup:LogGroup", "-flow-logs")
    assert group.inputs.get("kmsKeyId", "").startswith("arn:aws:kms:eu-central-1:"), (
        "log group not KMS-encrypted in region"
    )
    assert group.inputs["retentionInDays"] == 365, "retention not applied"
    flow = standard.one("aws:ec2/flowLog:FlowLog")
    assert flow.inputs["trafficType"] == "ALL", "flow log must capture all traffic"


def test_every_resource_uses_the_regional_provider(standard: Built) -> None:
    custom = [r for r in standard.registrations if r.custom and not r.type.startswith("pulumi:")]
    assert all(standard.regions.get(r.urn) == "eu-central-1" for r in custom), "a resource left the region"


def test_kms_key_policy_names_regional_logs_service(standard: Built) -> None:
    policy = json.loads(standard.one("aws:kms/key:Key").inputs["policy"])
    principals = [s["Principal"] for s in policy["Statement"]]
    assert {"Service": "logs.eu-central-1.amazonaws.com"} in principals, f"principals: {principals}"


@pytest.mark.parametrize("cidr", ["10.0.0.0/16", "10.0.0.0/18", "10.0.0.0/20"])
@pytest.mark.parametrize("count", [2, 3])
def test_carve_subnets_do_not_overlap(cidr: str, count: int) -> None:
    plan = carve_subnets(cidr, count)
    nets = [ipaddress.ip_network(c) for c in plan.private + plan.public + plan.firewall]
    assert len(nets) == 3 * count, plan
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :]), f"overlap in {nets}"
    assert all(n.subnet_of(ipaddress.ip_network(cidr)) for n in nets), f"outside {cidr}: {nets}"  # type: ignore[arg-type]
    assert all(ipaddress.ip_network(c).prefixlen == 28 for c in plan.firewall), plan.firewall


def test_carve_subnets_refuses_a_fourth_az() -> None:
    with pytest.raises(ValueError, match="at most 3 AZs"):
        carve_subnets("10.0.0.0/16", 4)


def test_interface_endpoints_are_the_ones_asked_for() -> None:
    """An smb stack asks for SageMaker's and the proxy's endpoints only: no EKS, EC2 or load balancer ones."""
    from dataclasses import replace

    from stacks.components.network import SMB_INTERFACE_ENDPOINTS

    args = replace(network_args(2, 1), interface_endpoints=SMB_INTERFACE_ENDPOINTS)
    built = build_component(lambda opts: Network("net", args, opts))
    interfaces = {
        r.inputs["serviceName"].removeprefix("com.amazonaws.eu-central-1.")
        for r in built.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
        if r.inputs["vpcEndpointType"] == "Interface"
    }
    assert interfaces == set(SMB_INTERFACE_ENDPOINTS), interfaces
    assert {"sagemaker.runtime", "ecr.api", "ecr.dkr", "logs"} <= interfaces, interfaces


def test_a_closed_network_has_no_internet_path() -> None:
    """nat_count 0 (the smb profile): no internet gateway, public subnet, NAT, firewall or default route;
    the private subnets, their route tables and the S3 gateway endpoint remain."""
    from dataclasses import replace

    closed = replace(network_args(2, 1, domains=()), nat_count=0)
    built = build_component(lambda opts: Network("net", closed, opts))
    types = {r.type for r in built.registrations}
    for kind in ("InternetGateway", "NatGateway", "Eip", "networkfirewall/"):
        assert not [t for t in types if kind in t], f"a closed network has a {kind}"
    assert not built.of_type("aws:ec2/route:Route"), "no route leaves the VPC"
    subnets = [r.name for r in built.of_type("aws:ec2/subnet:Subnet")]
    assert subnets == ["net-private-0", "net-private-1"], subnets
    gateway = [
        r
        for r in built.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
        if r.inputs["vpcEndpointType"] == "Gateway"
    ]
    assert len(gateway) == 1 and len(gateway[0].inputs["routeTableIds"]) == 2, gateway


def test_a_closed_network_refuses_egress_domains() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="without NAT reaches no domain"):
        replace(network_args(2, 1), nat_count=0, egress_domains=("api.example.eu",))
