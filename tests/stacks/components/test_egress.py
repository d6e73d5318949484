from types import SimpleNamespace
from typing import Any

import pytest

from stacks.components.egress import (
    Egress,
    EgressArgs,
    check_domains,
    endpoint_in,
    firewall_endpoints,
)
from stacks.components.network import carve_subnets
from stacks.preview.monitor import Registration
from tests.stacks.conftest import TAGS, Built, build_component

VPC_CIDR = "10.40.0.0/16"
PLAN = carve_subnets(VPC_CIDR, 3)
ZONES = ("eu-central-1a", "eu-central-1b", "eu-central-1c")
PUBLIC_IDS = ("subnet-0public0", "subnet-0public1", "subnet-0public2")
IGW = "igw-0123456789abcdef0"
KEY = "arn:aws:kms:eu-central-1:123456789012:key/0f0e0d0c-0b0a-4909-a807-060504030201"
IDP = "login.example.eu"


def egress_args(endpoints: int = 3, domains: tuple[str, ...] = (IDP,), **overrides: Any) -> EgressArgs:
    fields: dict[str, Any] = {
        "vpc_id": "vpc-0abc",
        "vpc_cidr": VPC_CIDR,
        "internet_gateway_id": IGW,
        "firewall_subnet_cidrs": tuple(PLAN.firewall[:endpoints]),
        "availability_zones": ZONES[:endpoints],
        "public_subnet_ids": PUBLIC_IDS,
        "public_subnet_cidrs": tuple(PLAN.public),
        "egress_domains": domains,
        "log_key_arn": KEY,
        "log_retention_days": 365,
        "tags": TAGS,
    }
    return EgressArgs(**(fields | overrides))


def egress(endpoints: int = 3, domains: tuple[str, ...] = (IDP,)) -> Built:
    args = egress_args(endpoints, domains)
    return build_component(lambda opts: Egress("eg", args, opts))


@pytest.fixture(scope="module")
def standard() -> Built:
    return egress(3)


@pytest.fixture(scope="module")
def smb() -> Built:
    return egress(1)


def by_urn(built: Built) -> dict[str, Registration]:
    return {r.urn: r for r in built.registrations}


def routes_in(built: Built, table_urn: str) -> list[Registration]:
    return [
        r
        for r in built.of_type("aws:ec2/route:Route")
        if table_urn in r.property_dependencies.get("routeTableId", ())
    ]


def table_of_public(built: Built, subnet_id: str) -> str:
    """URN of the route table associated with a public subnet (given to Egress by id)."""
    (assoc,) = [
        a
        for a in built.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
        if a.inputs.get("subnetId") == subnet_id
    ]
    return assoc.property_dependencies["routeTableId"][0]


def default_route_in(built: Built, table_urn: str) -> Registration:
    (route,) = [r for r in routes_in(built, table_urn) if r.inputs["destinationCidrBlock"] == "0.0.0.0/0"]
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


def firewall_policy(built: Built) -> dict[str, Any]:
    policy: dict[str, Any] = built.one("aws:networkfirewall/firewallPolicy:FirewallPolicy").inputs[
        "firewallPolicy"
    ]
    return policy


def rule_groups(built: Built) -> list[Registration]:
    """The stateful rule groups the firewall policy references."""
    policy = built.one("aws:networkfirewall/firewallPolicy:FirewallPolicy")
    referenced = set(policy.property_dependencies.get("firewallPolicy", ()))
    return [g for g in built.of_type("aws:networkfirewall/ruleGroup:RuleGroup") if g.urn in referenced]


def test_firewall_subnets_sit_in_the_given_zones_with_one_endpoint_each(standard: Built) -> None:
    subnets = standard.of_type("aws:ec2/subnet:Subnet")
    placed = sorted((s.inputs["cidrBlock"], s.inputs["availabilityZone"]) for s in subnets)
    assert placed == sorted(zip(PLAN.firewall, ZONES, strict=True)), placed
    mappings = standard.one("aws:networkfirewall/firewall:Firewall").property_dependencies["subnetMappings"]
    assert set(mappings) == {s.urn for s in subnets}, f"firewall mapped to {mappings}"


def test_firewall_subnets_go_out_through_the_internet_gateway(standard: Built) -> None:
    subnets = standard.of_type("aws:ec2/subnet:Subnet")
    assert len(subnets) == len(ZONES), f"one firewall subnet per zone: {[s.name for s in subnets]}"
    for s in subnets:
        (assoc,) = [
            a
            for a in standard.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
            if s.urn in a.property_dependencies.get("subnetId", ())
        ]
        route = default_route_in(standard, assoc.property_dependencies["routeTableId"][0])
        assert route.inputs.get("gatewayId") == IGW, f"{s.name}: {route.inputs}"


@pytest.mark.parametrize(("profile", "endpoints"), [("standard", 3), ("smb", 1)])
def test_each_public_subnet_leaves_and_returns_through_one_endpoint(
    profile: str, endpoints: int, request: pytest.FixtureRequest
) -> None:
    built: Built = request.getfixturevalue(profile)
    (edge,) = [
        a
        for a in built.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
        if a.inputs.get("gatewayId") == IGW
    ]
    edge_routes = {
        r.inputs["destinationCidrBlock"]: r
        for r in routes_in(built, edge.property_dependencies["routeTableId"][0])
    }
    assert set(edge_routes) == set(PLAN.public), f"edge routes: {sorted(edge_routes)}"
    for i, (subnet_id, cidr) in enumerate(zip(PUBLIC_IDS, PLAN.public, strict=True)):
        inbound = endpoint_subnet(built, edge_routes[cidr])
        outbound = endpoint_subnet(built, default_route_in(built, table_of_public(built, subnet_id)))
        assert inbound.urn == outbound.urn, (
            f"{subnet_id}: in through {inbound.name}, out through {outbound.name}"
        )
        expected = PLAN.firewall[i % endpoints]
        assert outbound.inputs["cidrBlock"] == expected, f"{subnet_id} leaves through {outbound.name}"


def test_firewall_policy_drops_what_no_rule_passes(standard: Built) -> None:
    policy = firewall_policy(standard)
    assert "aws:drop_established" in policy["statefulDefaultActions"], policy
    assert policy["statefulEngineOptions"]["ruleOrder"] == "STRICT_ORDER", policy
    assert policy["statelessDefaultActions"] == ["aws:forward_to_sfe"], (
        "stateless engine must not pass packets"
    )
    assert policy["statelessFragmentDefaultActions"] == ["aws:forward_to_sfe"], policy


def test_firewall_allows_only_the_listed_domains_from_the_vpc(standard: Built) -> None:
    lists = [
        g.inputs["ruleGroup"]
        for g in rule_groups(standard)
        if "rulesSourceList" in g.inputs["ruleGroup"]["rulesSource"]
    ]
    assert len(lists) == 1, f"domain lists: {lists}"
    (group,) = lists
    source = group["rulesSource"]["rulesSourceList"]
    assert source["generatedRulesType"] == "ALLOWLIST", source
    assert sorted(source["targetTypes"]) == ["HTTP_HOST", "TLS_SNI"], source
    assert source["targets"] == [IDP], source
    assert group["statefulRuleOptions"]["ruleOrder"] == "STRICT_ORDER", (
        "rule groups must match the policy's order"
    )
    home = group["ruleVariables"]["ipSets"]
    assert home == [{"key": "HOME_NET", "ipSet": {"definitions": [VPC_CIDR]}}], home


def test_no_domains_means_no_way_out() -> None:
    built = egress(1, domains=())
    lists = [g for g in rule_groups(built) if "rulesSourceList" in g.inputs["ruleGroup"]["rulesSource"]]
    assert lists == [], "an empty allowlist must not create a rule group"
    assert "aws:drop_established" in firewall_policy(built)["statefulDefaultActions"]


def test_only_https_to_the_public_subnets_is_let_in(standard: Built) -> None:
    rules = [
        rule
        for g in rule_groups(standard)
        for rule in g.inputs["ruleGroup"]["rulesSource"].get("statefulRules", [])
    ]
    headers = {
        (r["action"], r["header"]["protocol"], r["header"]["destination"], r["header"]["destinationPort"])
        for r in rules
    }
    assert headers == {("PASS", "TCP", cidr, "443") for cidr in PLAN.public}, headers


def test_firewall_logs_alerts_and_flows_to_kms_encrypted_groups(standard: Built) -> None:
    deps = by_urn(standard)
    config = standard.one("aws:networkfirewall/loggingConfiguration:LoggingConfiguration")
    destinations = config.inputs["loggingConfiguration"]["logDestinationConfigs"]
    assert sorted(d["logType"] for d in destinations) == ["ALERT", "FLOW"], destinations
    groups = [
        deps[u]
        for u in config.property_dependencies["loggingConfiguration"]
        if deps[u].type.endswith("LogGroup")
    ]
    assert {g.inputs["name"] for g in groups} == {d["logDestination"]["logGroup"] for d in destinations}, (
        groups
    )
    assert len(groups) == 2, "ALERT and FLOW need a log group each"
    assert all(g.inputs.get("kmsKeyId") == KEY for g in groups), groups
    assert all(g.inputs["retentionInDays"] == 365 for g in groups), groups


def test_every_resource_uses_the_regional_provider(standard: Built) -> None:
    custom = [r for r in standard.registrations if r.custom and not r.type.startswith("pulumi:")]
    assert all(standard.regions.get(r.urn) == "eu-central-1" for r in custom), "a resource left the region"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"availability_zones": ZONES[:2]}, "one availability zone per firewall subnet"),
        ({"firewall_subnet_cidrs": (), "availability_zones": ()}, "at least one subnet"),
        ({"public_subnet_cidrs": tuple(PLAN.public[:2])}, "one CIDR per public subnet"),
        (
            {"public_subnet_ids": PUBLIC_IDS[:2], "public_subnet_cidrs": tuple(PLAN.public[:2])},
            "carry no traffic",
        ),
        ({"egress_domains": ("https://login.example.eu",)}, "must be host names"),
    ],
)
def test_args_refuse_what_cannot_route(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        egress_args(**overrides)


@pytest.mark.parametrize(
    "domain", ["https://login.example.eu", "login.example.eu/keys", "login.example.eu:443", "*.example.eu"]
)
def test_egress_domains_must_be_host_names(domain: str) -> None:
    with pytest.raises(ValueError, match="must be host names"):
        check_domains([domain])


def test_egress_domains_accept_hosts_and_subdomain_wildcards() -> None:
    check_domains(["login.example.eu", ".example.eu"])


def test_too_many_domains_do_not_fit_the_rule_group() -> None:
    with pytest.raises(ValueError, match="at most 50 egress domains"):
        check_domains([f"h{i}.example.eu" for i in range(51)])


def test_firewall_endpoints_are_read_per_subnet_from_the_status() -> None:
    attachment = SimpleNamespace(subnet_id="subnet-a", endpoint_id="vpce-1")
    pending = SimpleNamespace(subnet_id="subnet-b", endpoint_id=None)
    statuses = [SimpleNamespace(sync_states=[SimpleNamespace(attachments=[attachment, pending])])]
    assert firewall_endpoints(statuses) == {"subnet-a": "vpce-1"}, "an endpoint not yet placed was reported"


def test_a_missing_firewall_endpoint_is_an_error() -> None:
    assert endpoint_in({"subnet-a": "vpce-1"}, "subnet-a") == "vpce-1"
    with pytest.raises(ValueError, match="no endpoint in subnet subnet-b"):
        endpoint_in({"subnet-a": "vpce-1"}, "subnet-b")
