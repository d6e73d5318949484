import pytest

from stacks.components.edge import Edge, EdgeArgs, certificate_names, validation_option
from stacks.preview.monitor import Registration
from tests.stacks.conftest import TAGS, Built, build_component

HOST = "api.example.eu"
VPC_CIDR = "10.40.0.0/16"
SUBNETS = ["subnet-0aaa", "subnet-0bbb", "subnet-0ccc"]


def edge(allowed: tuple[str, ...] = ("0.0.0.0/0",), bucket: str | None = None) -> Built:
    args = EdgeArgs(
        api_host=HOST,
        region="eu-central-1",
        zone_id="Z0123456789",
        vpc_id="vpc-0123",
        vpc_cidr=VPC_CIDR,
        public_subnet_ids=SUBNETS,
        allowed_cidrs=allowed,
        access_log_bucket=bucket,
        tags=TAGS,
    )
    return build_component(lambda opts: Edge("edge", args, opts))


@pytest.fixture(scope="module")
def built() -> Built:
    return edge()


def depends(resource: Registration, prop: str, on: Registration) -> bool:
    return on.urn in resource.property_dependencies.get(prop, ())


def test_the_only_listener_is_tls_on_443(built: Built) -> None:
    (listener,) = built.of_type("aws:lb/listener:Listener")
    assert (listener.inputs["protocol"], listener.inputs["port"]) == ("TLS", 443), listener.inputs
    assert listener.inputs["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06", listener.inputs


def test_listener_uses_the_validated_certificate(built: Built) -> None:
    listener = built.one("aws:lb/listener:Listener")
    validation = built.one("aws:acm/certificateValidation:CertificateValidation")
    certificate = built.one("aws:acm/certificate:Certificate")
    assert depends(listener, "certificateArn", validation), (
        "the listener must take the validation's ARN, or it is created before ACM issues the certificate"
    )
    assert depends(validation, "certificateArn", certificate), "the validation waits for another certificate"
    assert listener.inputs["certificateArn"].startswith("arn:aws:acm:eu-central-1:"), listener.inputs


def test_listener_forwards_to_the_gateway_target_group(built: Built) -> None:
    listener = built.one("aws:lb/listener:Listener")
    group = built.one("aws:lb/targetGroup:TargetGroup")
    (action,) = listener.inputs["defaultActions"]
    assert action["type"] == "forward", action
    assert depends(listener, "defaultActions", group), "the listener forwards somewhere else"
    assert depends(listener, "loadBalancerArn", built.one("aws:lb/loadBalancer:LoadBalancer")), (
        listener.inputs
    )


def test_target_group_holds_pod_ips_over_tls(built: Built) -> None:
    group = built.one("aws:lb/targetGroup:TargetGroup").inputs
    assert (group["targetType"], group["protocol"], group["port"]) == ("ip", "TLS", 443), group


def test_target_group_checks_istio_readiness(built: Built) -> None:
    check = built.one("aws:lb/targetGroup:TargetGroup").inputs["healthCheck"]
    assert (check["protocol"], check["port"], check["path"]) == ("HTTP", "15021", "/healthz/ready"), check


def test_certificate_covers_the_api_host_and_the_regional_name(built: Built) -> None:
    cert = built.one("aws:acm/certificate:Certificate").inputs
    assert cert["validationMethod"] == "DNS", cert
    names = [cert["domainName"], *cert.get("subjectAlternativeNames", [])]
    assert names == [HOST, f"eu-central-1.{HOST}"], names


def test_a_validation_record_per_name_feeds_the_validation(built: Built) -> None:
    records = built.of_type("aws:route53/record:Record")
    validation = built.one("aws:acm/certificateValidation:CertificateValidation")
    assert sorted(r.inputs["name"].split(".", 1)[1] for r in records) == sorted(
        f"{n}." for n in certificate_names(HOST, "eu-central-1")
    ), [r.inputs["name"] for r in records]
    assert all(r.inputs["type"] == "CNAME" and r.inputs["zoneId"] == "Z0123456789" for r in records), records
    assert all(depends(validation, "validationRecordFqdns", r) for r in records), (
        "validation ignores a record"
    )


def test_validation_records_can_be_shared_between_regions(built: Built) -> None:
    records = built.of_type("aws:route53/record:Record")
    assert all(r.inputs.get("allowOverwrite") is True for r in records), (
        "every region's certificate has the same record for the API host: the second region would fail"
    )


def test_load_balancer_is_a_public_cross_zone_nlb_in_the_public_subnets(built: Built) -> None:
    lb = built.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert lb["loadBalancerType"] == "network" and lb["internal"] is False, lb
    assert lb["subnets"] == SUBNETS, lb
    assert lb["enableCrossZoneLoadBalancing"] is True, lb
    assert lb["enableDeletionProtection"] is True, lb


def test_load_balancer_has_its_own_security_group(built: Built) -> None:
    lb = built.one("aws:lb/loadBalancer:LoadBalancer")
    assert depends(lb, "securityGroups", built.one("aws:ec2/securityGroup:SecurityGroup")), (
        "security groups can only be set when an NLB is created"
    )


@pytest.mark.parametrize("allowed", [("0.0.0.0/0",), ("198.51.100.0/24", "203.0.113.0/24")])
def test_security_group_lets_in_https_from_the_allowed_ranges_only(allowed: tuple[str, ...]) -> None:
    (rule,) = edge(allowed=allowed).one("aws:ec2/securityGroup:SecurityGroup").inputs["ingress"]
    assert (rule["protocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 443, 443), rule
    assert rule["cidrBlocks"] == list(allowed), rule


def test_security_group_reaches_the_pods_and_their_health_port_inside_the_vpc(built: Built) -> None:
    egress = built.one("aws:ec2/securityGroup:SecurityGroup").inputs["egress"]
    assert {(e["protocol"], e["fromPort"], e["toPort"]) for e in egress} == {
        ("tcp", 443, 443),
        ("tcp", 15021, 15021),
    }
    assert all(e["cidrBlocks"] == [VPC_CIDR] for e in egress), egress


def test_access_logs_only_when_a_bucket_is_given(built: Built) -> None:
    assert "accessLogs" not in built.one("aws:lb/loadBalancer:LoadBalancer").inputs, "logs to no bucket"
    logs = edge(bucket="edge-logs").one("aws:lb/loadBalancer:LoadBalancer").inputs["accessLogs"]
    assert logs["bucket"] == "edge-logs" and logs["enabled"] is True, logs


def test_every_resource_uses_the_regional_provider(built: Built) -> None:
    custom = [r for r in built.registrations if r.custom and not r.type.startswith("pulumi:")]
    assert all(built.regions.get(r.urn) == "eu-central-1" for r in custom), "a resource left the region"


def test_validation_option_names_the_missing_domain() -> None:
    with pytest.raises(ValueError, match=r"no validation record for eu-west-1\.api"):
        validation_option([], "eu-west-1.api.example.eu")
