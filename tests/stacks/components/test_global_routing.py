import pytest

from stacks.components.global_routing import GlobalRouting, GlobalRoutingArgs, RegionalEndpoint
from tests.stacks.conftest import TAGS, Built, build_component


def routing(regions: tuple[str, ...], jurisdiction: str = "EU") -> Built:
    args = GlobalRoutingArgs(
        api_host="api.example.eu",
        zone_id="Z0123456789",
        jurisdiction=jurisdiction,
        endpoints=tuple(RegionalEndpoint(region=r, hostname=f"gw.{r}.elb.amazonaws.com") for r in regions),
        tags=TAGS,
    )
    return build_component(lambda opts: GlobalRouting("dns", args, opts))


@pytest.fixture(scope="module")
def pair() -> Built:
    return routing(("eu-central-1", "eu-west-1"))


def test_latency_record_per_region(pair: Built) -> None:
    latency = [
        r.inputs for r in pair.of_type("aws:route53/record:Record") if "latencyRoutingPolicies" in r.inputs
    ]
    assert sorted(r["latencyRoutingPolicies"][0]["region"] for r in latency) == [
        "eu-central-1",
        "eu-west-1",
    ], latency


def test_failover_pairs_are_health_checked(pair: Built) -> None:
    failover = [
        r.inputs for r in pair.of_type("aws:route53/record:Record") if "failoverRoutingPolicies" in r.inputs
    ]
    assert len(failover) == 4, "a primary and a secondary per region"
    assert all(r.get("healthCheckId") for r in failover), "failover record without a health check"


def test_health_checks_probe_the_gateway(pair: Built) -> None:
    checks = [r.inputs for r in pair.of_type("aws:route53/healthCheck:HealthCheck")]
    assert {(c["port"], c["resourcePath"]) for c in checks} == {(15021, "/healthz/ready")}, checks


def test_cross_jurisdiction_failover_is_refused() -> None:
    with pytest.raises(Exception, match="not all in jurisdiction EU"):
        routing(("eu-central-1", "us-east-1"))


def test_single_region_gets_one_plain_record() -> None:
    single = routing(("me-central-1",), "AE")
    (record,) = single.of_type("aws:route53/record:Record")
    assert "setIdentifier" not in record.inputs, "a single region needs no routing policy"
