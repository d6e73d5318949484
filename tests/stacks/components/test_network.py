import json

import pytest

from stacks.components.network import Network, NetworkArgs, carve_subnets
from tests.stacks.conftest import TAGS, Built, build_component


def network(az_count: int, nat_count: int) -> Built:
    args = NetworkArgs(
        vpc_cidr="10.40.0.0/16",
        az_count=az_count,
        nat_count=nat_count,
        region="eu-central-1",
        cluster_name="c",
        log_retention_days=365,
        tags=TAGS,
    )
    return build_component(lambda opts: Network("net", args, opts))


@pytest.fixture(scope="module")
def standard() -> Built:
    return network(3, 3)


def test_subnets_span_three_azs(standard: Built) -> None:
    zones = {r.inputs["availabilityZone"] for r in standard.of_type("aws:ec2/subnet:Subnet")}
    assert zones == {"eu-central-1a", "eu-central-1b", "eu-central-1c"}, f"zones used: {zones}"


def test_nat_gateway_per_az(standard: Built) -> None:
    assert len(standard.of_type("aws:ec2/natGateway:NatGateway")) == 3, "standard profile needs a NAT per AZ"


def test_smb_uses_two_azs_and_one_nat() -> None:
    smb = network(2, 1)
    assert len(smb.of_type("aws:ec2/natGateway:NatGateway")) == 1, "SMB profile has one NAT"
    assert len(smb.of_type("aws:ec2/subnet:Subnet")) == 4, "SMB profile spans two AZs"


def test_private_subnets_route_through_nat(standard: Built) -> None:
    routes = [r.inputs for r in standard.of_type("aws:ec2/route:Route") if "natGatewayId" in r.inputs]
    assert len(routes) == 3, f"private default routes: {routes}"


def test_vpc_endpoints_for_s3_ecr_sts_logs(standard: Built) -> None:
    services = {r.inputs["serviceName"] for r in standard.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    expected = {f"com.amazonaws.eu-central-1.{s}" for s in ("s3", "ecr.api", "ecr.dkr", "sts", "logs")}
    assert services == expected, f"endpoints: {services}"


def test_flow_logs_go_to_kms_encrypted_group_with_retention(standard: Built) -> None:
    group = standard.one("aws:cloudwatch/logGroup:LogGroup")
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


def test_carve_subnets_do_not_overlap() -> None:
    private, public = carve_subnets("10.0.0.0/16", 3)
    import ipaddress

    nets = [ipaddress.ip_network(c) for c in private + public]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :]), f"overlap in {nets}"
