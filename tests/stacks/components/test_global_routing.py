import pytest

from stacks.components.global_routing import (
    CHECKER_REGIONS,
    GlobalRouting,
    GlobalRoutingArgs,
    RegionalEndpoint,
    checker_regions,
)
from stacks.jurisdictions import JURISDICTION_REGIONS
from stacks.preview.monitor import Registration
from tests.stacks.conftest import TAGS, Built, build_component

HOST = "api.example.eu"
# Route53's health checker regions (the HealthCheckRegion values of its API).
ROUTE53_CHECKERS = {
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
}


def lb_name(region: str) -> str:
    return f"gw-{region}.elb.{region}.amazonaws.com"


def lb_zone(region: str) -> str:
    return f"Z{region.upper().replace('-', '')}"


def routing(regions: tuple[str, ...], jurisdiction: str = "EU") -> Built:
    args = GlobalRoutingArgs(
        api_host=HOST,
        zone_id="Z0123456789",
        jurisdiction=jurisdiction,
        endpoints=tuple(RegionalEndpoint(region=r, dns_name=lb_name(r), zone_id=lb_zone(r)) for r in regions),
        probe_model="fraud",
        tags=TAGS,
    )
    return build_component(lambda opts: GlobalRouting("dns", args, opts))


@pytest.fixture(scope="module")
def pair() -> Built:
    return routing(("eu-central-1", "eu-west-1"))


@pytest.fixture(scope="module")
def single() -> Built:
    return routing(("me-central-1",), "AE")


def records(built: Built) -> list[Registration]:
    return built.of_type("aws:route53/record:Record")


def region_of(record: Registration) -> str:
    """The region a record points at, from its alias target."""
    (alias,) = record.inputs["aliases"]
    (region,) = [r for r in ("eu-central-1", "eu-west-1", "me-central-1") if alias["name"] == lb_name(r)]
    return region


@pytest.mark.parametrize("profile", ["pair", "single"])
def test_every_record_is_an_alias_to_a_load_balancer(profile: str, request: pytest.FixtureRequest) -> None:
    built: Built = request.getfixturevalue(profile)
    regions = {"pair": 2, "single": 1}[profile]
    # Per region: its own name and its latency-routed entry of the API host.
    assert len(records(built)) == 2 * regions, [r.name for r in records(built)]
    for record in records(built):
        assert record.inputs["type"] == "A" and "records" not in record.inputs, (
            f"{record.name}: {record.inputs}"
        )
        (alias,) = record.inputs["aliases"]
        region = region_of(record)
        assert alias["zoneId"] == lb_zone(region), f"{record.name}: zone of another load balancer"
        assert alias["evaluateTargetHealth"] is True, f"{record.name} answers for an NLB with no healthy pod"


def test_each_region_has_its_own_name(pair: Built) -> None:
    regional = {r.inputs["name"]: region_of(r) for r in records(pair) if r.inputs["name"] != HOST}
    assert regional == {f"{r}.{HOST}": r for r in ("eu-central-1", "eu-west-1")}, regional


def test_api_host_is_latency_routed_per_region(pair: Built) -> None:
    latency = [r for r in records(pair) if r.inputs["name"] == HOST]
    assert sorted(r.inputs["latencyRoutingPolicies"][0]["region"] for r in latency) == [
        "eu-central-1",
        "eu-west-1",
    ]
    assert all(r.inputs["latencyRoutingPolicies"][0]["region"] == region_of(r) for r in latency), latency
    assert all(r.inputs["setIdentifier"] == region_of(r) for r in latency), latency


def test_latency_records_carry_their_regions_health_check(pair: Built) -> None:
    checks = {
        c.inputs["fqdn"].split(".", 1)[0]: c for c in pair.of_type("aws:route53/healthCheck:HealthCheck")
    }
    latency = [r for r in records(pair) if r.inputs["name"] == HOST]
    assert len(latency) == len(checks) == 2, f"records {[r.name for r in latency]}, checks {sorted(checks)}"
    for record in latency:
        region = region_of(record)
        assert checks[region].urn in record.property_dependencies.get("healthCheckId", ()), (
            f"{record.name}: an unhealthy {region} would stay in the answer"
        )


@pytest.mark.parametrize("profile", ["pair", "single"])
def test_health_checks_probe_a_model_over_https_on_the_regional_name(
    profile: str, request: pytest.FixtureRequest
) -> None:
    built: Built = request.getfixturevalue(profile)
    regions = {region_of(r) for r in records(built)}
    checks = built.of_type("aws:route53/healthCheck:HealthCheck")
    assert {c.inputs["fqdn"] for c in checks} == {f"{r}.{HOST}" for r in regions}, checks
    for check in checks:
        probe = (
            check.inputs["type"],
            check.inputs["port"],
            check.inputs["enableSni"],
            check.inputs["resourcePath"],
        )
        assert probe == ("HTTPS", 443, True, "/v2/models/fraud/ready"), probe


@pytest.mark.parametrize(("profile", "jurisdiction"), [("pair", "EU"), ("single", "AE")])
def test_health_checks_use_the_jurisdictions_checkers(
    profile: str, jurisdiction: str, request: pytest.FixtureRequest
) -> None:
    built: Built = request.getfixturevalue(profile)
    checks = built.of_type("aws:route53/healthCheck:HealthCheck")
    assert len(checks) == {"pair": 2, "single": 1}[profile], "one health check per region"
    for check in checks:
        assert check.inputs["regions"] == list(CHECKER_REGIONS[jurisdiction]), check.inputs["regions"]


@pytest.mark.parametrize("jurisdiction", sorted(JURISDICTION_REGIONS))
def test_checker_table_is_valid_and_prefers_checkers_inside(jurisdiction: str) -> None:
    chosen = checker_regions(jurisdiction)
    assert len(chosen) >= 3 and set(chosen) <= ROUTE53_CHECKERS, f"Route53 refuses {chosen}"
    inside = ROUTE53_CHECKERS & JURISDICTION_REGIONS[jurisdiction]
    assert inside <= set(chosen), f"{jurisdiction}: checkers inside {inside - set(chosen)} left out"


def test_a_jurisdiction_without_checkers_is_refused() -> None:
    with pytest.raises(ValueError, match="no Route53 checker regions"):
        checker_regions("CH")


def test_cross_jurisdiction_routing_is_refused() -> None:
    with pytest.raises(Exception, match="not all in jurisdiction EU"):
        routing(("eu-central-1", "us-east-1"))


def test_single_region_gets_one_plain_alias_for_the_api_host(single: Built) -> None:
    (api,) = [r for r in records(single) if r.inputs["name"] == HOST]
    assert "setIdentifier" not in api.inputs and "latencyRoutingPolicies" not in api.inputs, api.inputs
    assert region_of(api) == "me-central-1", api.inputs
