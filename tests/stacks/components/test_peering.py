from typing import Any

import pulumi
import pulumi_aws as aws
import pytest

from stacks.components.peering import PeeringSide, RegionPeering, RegionPeeringArgs, check_pair, check_ranges
from stacks.preview.monitor import Registration
from tests.stacks.conftest import TAGS, Built, build_component

PRIMARY, SECONDARY = "eu-central-1", "eu-west-1"
PRIMARY_CIDR, SECONDARY_CIDR = "10.40.0.0/16", "10.41.0.0/16"
RUNNER_CIDRS = ("10.40.0.0/18", "10.40.64.0/18", "10.40.128.0/18")
PRIMARY_TABLES = ("rtb-0primary0", "rtb-0primary1", "rtb-0primary2")
SECONDARY_TABLES = ("rtb-0second0", "rtb-0second1")
CLUSTER_SG = "sg-0secondarycluster"
DECOY = "us-east-1"
"""Region of the provider the component's own options carry: a child that does not name its provider lands
there, and no resource of an EU peering may."""


def peering(secondary_region: str = SECONDARY, **overrides: Any) -> Built:
    def build(opts: pulumi.ResourceOptions) -> None:
        primary = aws.Provider("aws-primary", region=PRIMARY)
        secondary = aws.Provider("aws-secondary", region=secondary_region)
        decoy = aws.Provider("aws-decoy", region=DECOY)
        fields: dict[str, Any] = {
            "jurisdiction": "EU",
            "primary": PeeringSide(
                region=PRIMARY,
                provider=primary,
                vpc_id="vpc-0primary",
                vpc_cidr=PRIMARY_CIDR,
                route_table_ids=PRIMARY_TABLES,
            ),
            "secondary": PeeringSide(
                region=secondary_region,
                provider=secondary,
                vpc_id="vpc-0secondary",
                vpc_cidr=SECONDARY_CIDR,
                route_table_ids=SECONDARY_TABLES,
            ),
            "cluster_security_group_id": CLUSTER_SG,
            "runner_cidrs": RUNNER_CIDRS,
            "tags": TAGS,
        }
        args = RegionPeeringArgs(**(fields | overrides))
        RegionPeering("peer", args, pulumi.ResourceOptions(providers={"aws": decoy}))

    return build_component(build)


@pytest.fixture(scope="module")
def built() -> Built:
    return peering()


def connection(built: Built) -> Registration:
    return built.one("aws:ec2/vpcPeeringConnection:VpcPeeringConnection")


def accepter(built: Built) -> Registration:
    return built.one("aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter")


def test_the_primary_requests_a_peering_with_the_secondary_region(built: Built) -> None:
    request = connection(built)
    assert built.regions[request.urn] == PRIMARY, f"requested from {built.regions[request.urn]}"
    assert request.inputs["vpcId"] == "vpc-0primary", request.inputs
    assert request.inputs["peerVpcId"] == "vpc-0secondary", request.inputs
    assert request.inputs.get("peerRegion") == SECONDARY, "without peer_region EC2 looks for the VPC locally"
    assert not request.inputs.get("autoAccept"), "auto_accept on the connection works only within one region"


def test_the_secondary_accepts_it_with_its_own_provider(built: Built) -> None:
    accept = accepter(built)
    assert built.regions[accept.urn] == SECONDARY, f"accepted from {built.regions[accept.urn]}"
    assert accept.inputs.get("autoAccept") is True, "the connection would stay pending-acceptance"
    assert connection(built).urn in accept.property_dependencies["vpcPeeringConnectionId"], (
        "the accepter accepts another connection"
    )


def routes(built: Built) -> dict[str, set[tuple[str, str]]]:
    """Region -> (route table, destination) of every route."""
    found: dict[str, set[tuple[str, str]]] = {}
    for r in built.of_type("aws:ec2/route:Route"):
        found.setdefault(built.regions[r.urn], set()).add(
            (r.inputs["routeTableId"], r.inputs["destinationCidrBlock"])
        )
    return found


def test_each_side_routes_only_the_other_vpc_through_the_peering(built: Built) -> None:
    expected = {
        PRIMARY: {(t, SECONDARY_CIDR) for t in PRIMARY_TABLES},
        SECONDARY: {(t, PRIMARY_CIDR) for t in SECONDARY_TABLES},
    }
    assert routes(built) == expected, f"routes by region: {routes(built)}"


def test_routes_use_the_connection_once_it_is_accepted(built: Built) -> None:
    all_routes = built.of_type("aws:ec2/route:Route")
    targets = {r.inputs.get("vpcPeeringConnectionId", "") for r in all_routes}
    assert len(targets) == 1 and targets.pop().startswith("pcx-"), f"routes target {targets}"
    for r in all_routes:
        sources = r.property_dependencies.get("vpcPeeringConnectionId", ())
        assert accepter(built).urn in sources, f"{r.name} is created before the peering is active ({sources})"


def test_the_requester_may_resolve_the_accepters_private_hostnames(built: Built) -> None:
    options = {
        built.regions[o.urn]: o
        for o in built.of_type("aws:ec2/peeringConnectionOptions:PeeringConnectionOptions")
    }
    assert set(options) == {PRIMARY, SECONDARY}, "each side's options must be set in its own region"
    accepter_side = options[SECONDARY].inputs.get("accepter", {})
    assert accepter_side.get("allowRemoteVpcDnsResolution") is True, options[SECONDARY].inputs
    requester_side = options[PRIMARY].inputs.get("requester", {})
    assert requester_side.get("allowRemoteVpcDnsResolution") is True, options[PRIMARY].inputs
    assert "requester" not in options[SECONDARY].inputs, "the requester's options belong to its own region"
    for o in options.values():
        assert accepter(built).urn in o.property_dependencies["vpcPeeringConnectionId"], (
            f"{o.name}: EC2 refuses options on a connection that is not active yet"
        )


def test_the_secondary_api_lets_in_443_from_exactly_the_runner_subnets(built: Built) -> None:
    rules = built.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert all(built.regions[r.urn] == SECONDARY for r in rules), "the rule must be on the secondary's group"
    assert all(r.inputs["securityGroupId"] == CLUSTER_SG for r in rules), [r.inputs for r in rules]
    ports = {(r.inputs["ipProtocol"], r.inputs["fromPort"], r.inputs["toPort"]) for r in rules}
    assert ports == {("tcp", 443, 443)}, f"ports opened: {ports}"
    sources = sorted(r.inputs["cidrIpv4"] for r in rules)
    assert sources == sorted(RUNNER_CIDRS), f"let in from {sources}"
    assert not any("referencedSecurityGroupId" in r.inputs for r in rules), (
        "a security group cannot reference a group in another region's VPC"
    )


def test_every_resource_names_its_regions_provider(built: Built) -> None:
    custom = [r for r in built.registrations if r.custom and not r.type.startswith("pulumi:")]
    strays = [r.name for r in custom if built.regions.get(r.urn) not in {PRIMARY, SECONDARY}]
    assert custom and not strays, f"created through the component's own provider ({DECOY}): {strays}"


def test_a_peering_out_of_the_jurisdiction_is_refused() -> None:
    with pytest.raises(ValueError, match="leaves jurisdiction EU"):
        peering(secondary_region="us-east-1")


@pytest.mark.parametrize(
    ("jurisdiction", "primary", "secondary", "allowed"),
    [
        ("EU", "eu-central-1", "eu-west-1", True),
        ("US", "us-east-1", "us-west-2", True),
        ("EU", "eu-central-1", "eu-west-2", False),  # London is outside the EU
        ("EU", "eu-central-1", "me-central-1", False),
        ("AE", "me-central-1", "me-south-1", False),  # Bahrain is not the UAE
        ("US", "eu-west-1", "eu-central-1", False),  # both in one jurisdiction, not the stack's
    ],
)
def test_check_pair_keeps_both_regions_in_the_jurisdiction(
    jurisdiction: str, primary: str, secondary: str, allowed: bool
) -> None:
    if allowed:
        check_pair(jurisdiction, primary, secondary)
    else:
        with pytest.raises(ValueError, match="leaves jurisdiction"):
            check_pair(jurisdiction, primary, secondary)


def test_check_pair_refuses_one_region_twice() -> None:
    with pytest.raises(ValueError, match="both sides of the peering are in eu-west-1"):
        check_pair("EU", "eu-west-1", "eu-west-1")


@pytest.mark.parametrize(
    ("secondary_cidr", "runners", "message"),
    [
        ("10.40.128.0/17", RUNNER_CIDRS, "overlap"),
        (SECONDARY_CIDR, (), "no runner ranges"),
        (SECONDARY_CIDR, ("10.41.0.0/18",), "outside the primary VPC"),
        (SECONDARY_CIDR, ("0.0.0.0/0",), "outside the primary VPC"),
    ],
)
def test_check_ranges_refuses_what_ec2_or_the_rule_would_get_wrong(
    secondary_cidr: str, runners: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_ranges(PRIMARY_CIDR, secondary_cidr, runners)


def test_check_ranges_accepts_the_primarys_private_subnets() -> None:
    check_ranges(PRIMARY_CIDR, SECONDARY_CIDR, RUNNER_CIDRS)
