"""The cost estimate's arithmetic per resource kind (a passing and a failing case each), what it refuses to
price (unknown kinds and sizes: "not priced", never zero; a region the table lacks: an error naming it), and
the shipped table's shape."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from servectl.cost import PRICES, Item, Line, Load, PriceError, comparison, estimate, load_table, render

REPO = Path(__file__).resolve().parents[2]
LOAD = Load(requests_per_month=1_000_000, model_ms=100.0, proxy_overhead_ms=20.0, log_gb_per_group=2.0)
TABLE: dict[str, Any] = {
    "taken": "2026-11-30",
    "currency": "USD",
    "hours_per_month": 730,
    "note": "test prices",
    "sources": {},
    "free": ["aws:iam/role:Role"],
    "regions": {
        "eu-west-1": {
            "eks_cluster_hour": 0.10,
            "ec2_instance_hour": {"m7i.2xlarge": 0.5},
            "ebs_gp3_gb_month": 0.1,
            "sagemaker_instance_hour": {"ml.c6i.large": 0.2},
            "sagemaker_serverless_gb_second": 0.00002,
            "lambda_request_million": 0.20,
            "lambda_gb_second": 0.00001,
            "http_api_request_million": 1.0,
            "log_ingest_gb": 0.5,
            "interface_endpoint_az_hour": 0.01,
            "kms_key_month": 1.0,
        }
    },
}


def item(
    type_: str,
    inputs: dict[str, Any],
    *,
    urn: str = "",
    region: str = "eu-west-1",
    deps: tuple[str, ...] = (),
) -> Item:
    return Item(urn=urn or f"urn:{type_}", type=type_, region=region, inputs=inputs, dependencies=deps)


def monthly(items: list[Item], kind: str, load: Load = LOAD) -> float | None:
    lines = {line.kind: line for line in estimate(items, TABLE, load)}
    return lines[kind].monthly


CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
PROVISIONED = {
    "productionVariants": [
        {
            "variantName": "v1",
            "instanceType": "ml.c6i.large",
            "initialInstanceCount": 1,
            "initialVariantWeight": 90,
        },
        {
            "variantName": "v2",
            "instanceType": "ml.c6i.large",
            "initialInstanceCount": 2,
            "initialVariantWeight": 10,
        },
    ]
}


def test_node_groups_cost_their_instances_and_root_volumes() -> None:
    template = item(
        "aws:ec2/launchTemplate:LaunchTemplate", {"blockDeviceMappings": [{"ebs": {"volumeSize": 100}}]}
    )
    group = item(
        "aws:eks/nodeGroup:NodeGroup",
        {"instanceTypes": ["m7i.2xlarge"], "scalingConfig": {"desiredSize": 3}},
        deps=(template.urn,),
    )
    # 3 nodes x $0.5 x 730 h + 3 x 100 GiB x $0.1.
    assert monthly([template, group], "aws:eks/nodeGroup:NodeGroup") == pytest.approx(3 * 0.5 * 730 + 30.0)
    assert monthly([template, group], "aws:ec2/launchTemplate:LaunchTemplate") is None, (
        "not free in this table"
    )


def test_a_size_missing_from_the_table_is_not_priced() -> None:
    group = item(
        "aws:eks/nodeGroup:NodeGroup", {"instanceTypes": ["x9.huge"], "scalingConfig": {"desiredSize": 3}}
    )
    [line] = estimate([group], TABLE, LOAD)
    assert line.monthly is None and "x9.huge" in line.basis, line


def test_provisioned_variants_cost_instance_hours_whatever_the_load() -> None:
    config = item(CONFIG, PROVISIONED)
    expected = 3 * 0.2 * 730
    assert monthly([config], CONFIG) == pytest.approx(expected)
    assert monthly([config], CONFIG, Load(requests_per_month=0)) == pytest.approx(expected), "idle still pays"


def test_serverless_variants_cost_their_share_of_compute_seconds() -> None:
    config = item(
        CONFIG,
        {
            "productionVariants": [
                {
                    "variantName": "v1",
                    "serverlessConfig": {"memorySizeInMb": 2048},
                    "initialVariantWeight": 75,
                },
                {
                    "variantName": "v2",
                    "serverlessConfig": {"memorySizeInMb": 1024},
                    "initialVariantWeight": 25,
                },
            ]
        },
    )
    # 1e6 requests x 0.1 s: 75 % at 2 GB, 25 % at 1 GB, $0.00002 per GB-second.
    expected = (75_000 * 2 + 25_000 * 1) * 0.00002
    assert monthly([config], CONFIG) == pytest.approx(expected)
    assert monthly([config], CONFIG, Load(requests_per_month=0)) == 0.0, "serverless costs nothing idle"


def test_the_api_and_its_proxy_carry_every_real_time_model() -> None:
    models = [item(CONFIG, PROVISIONED, urn=f"c{i}") for i in range(2)]
    queued = item(CONFIG, {**PROVISIONED, "asyncInferenceConfig": {"outputConfig": {}}}, urn="async")
    api = item("aws:apigatewayv2/api:Api", {"protocolType": "HTTP"})
    proxy = item("aws:lambda/function:Function", {"memorySize": 512})
    items = [*models, queued, api, proxy]
    # Two real-time models (the async one is not behind the API): 2e6 requests.
    assert monthly(items, "aws:apigatewayv2/api:Api") == pytest.approx(2.0 * 1.0)
    seconds = 2_000_000 * 0.12
    assert monthly(items, "aws:lambda/function:Function") == pytest.approx(2 * 0.20 + seconds * 0.5 * 0.00001)


def test_a_websocket_api_is_not_priced() -> None:
    [line] = estimate([item("aws:apigatewayv2/api:Api", {"protocolType": "WEBSOCKET"})], TABLE, LOAD)
    assert line.monthly is None and "WEBSOCKET" in line.basis, line


def test_fixed_and_usage_kinds() -> None:
    items = [
        item("aws:eks/cluster:Cluster", {}),
        item("aws:kms/key:Key", {}, urn="k1"),
        item("aws:kms/key:Key", {}, urn="k2"),
        item("aws:cloudwatch/logGroup:LogGroup", {}),
        item(
            "aws:ec2/vpcEndpoint:VpcEndpoint",
            {"vpcEndpointType": "Interface", "subnetIds": ["a", "b"]},
            urn="i",
        ),
        item("aws:ec2/vpcEndpoint:VpcEndpoint", {"vpcEndpointType": "Gateway"}, urn="g"),
    ]
    lines = {line.kind: line for line in estimate(items, TABLE, LOAD)}
    assert lines["aws:eks/cluster:Cluster"].monthly == pytest.approx(73.0)
    assert (lines["aws:kms/key:Key"].count, lines["aws:kms/key:Key"].monthly) == (2, 2.0)
    assert lines["aws:cloudwatch/logGroup:LogGroup"].monthly == pytest.approx(2 * 0.5)
    assert lines["aws:ec2/vpcEndpoint:VpcEndpoint"].monthly == pytest.approx(2 * 0.01 * 730), (
        "gateway is free"
    )


def test_free_kinds_cost_zero_and_unknown_kinds_are_not_priced() -> None:
    items = [
        item("aws:iam/role:Role", {}),
        item("aws:s3/bucket:Bucket", {}),
        item("aws:eks/cluster:Cluster", {}),
    ]
    lines = {line.kind: line for line in estimate(items, TABLE, LOAD)}
    assert lines["aws:iam/role:Role"].monthly == 0.0
    assert lines["aws:s3/bucket:Bucket"].monthly is None, "never zero"
    text = render("s", list(lines.values()), TABLE, LOAD)
    assert "not priced     1  aws:s3/bucket:Bucket" in text, text
    assert "73.00        total of priced kinds" in text, "the total leaves unpriced kinds out and says so"


def test_one_unpriced_resource_makes_its_kind_not_priced() -> None:
    ok = item(CONFIG, PROVISIONED, urn="ok")
    unknown = item(CONFIG, {"productionVariants": [{"instanceType": "ml.x9.huge"}]}, urn="unknown")
    assert monthly([ok], CONFIG) is not None
    assert monthly([ok, unknown], CONFIG) is None, "a partial sum would look whole"


def test_a_region_missing_from_the_table_is_an_error_naming_it() -> None:
    with pytest.raises(PriceError, match="region me-central-1"):
        estimate([item("aws:eks/cluster:Cluster", {}, region="me-central-1")], TABLE, LOAD)
    # Free and unknown kinds need no region's prices.
    assert estimate([item("aws:iam/role:Role", {}, region="me-central-1")], TABLE, LOAD)[0].monthly == 0.0


def test_the_shipped_table_names_a_source_for_every_price(tmp_path: Path) -> None:
    table = load_table()
    assert table["taken"] and set(table["regions"]) >= {"eu-west-1", "eu-central-1"}
    broken = json.loads(PRICES.read_text())
    del broken["sources"]["nat_gateway_hour"]
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(
        PriceError, match=r"prices.json: regions.eu-\w+-1: no source URL for nat_gateway_hour"
    ):
        load_table(path)
    del broken["taken"]
    path.write_text(json.dumps(broken))
    with pytest.raises(PriceError, match=r"missing key.*taken"):
        load_table(path)


def test_every_shipped_stack_is_in_the_table() -> None:
    """Each stack's regions have prices: `--cost` errors on a region the table lacks (tested above), so a
    stack added in a new region fails here until its prices are written down."""
    regions = set(load_table()["regions"])
    used = {
        line.split("region:", 1)[1].strip()
        for path in REPO.glob("Pulumi.*.yaml")
        for line in path.read_text().splitlines()
        if line.strip().startswith("- region:")
    }
    assert len(used) >= 4 and used <= regions, sorted(used - regions)


def test_comparison_says_which_side_saves_and_names_what_neither_prices() -> None:
    cheap = [Line(kind="aws:kms/key:Key", count=1, monthly=10.0, basis="b")]
    dear = [
        Line(kind="aws:eks/cluster:Cluster", count=1, monthly=90.0, basis="b"),
        Line(kind="aws:s3/bucket:Bucket", count=2, monthly=None, basis="not priced"),
    ]
    text = comparison("smb", cheap, "eks", dear, LOAD)
    assert "smb 10.00 vs eks 90.00 per month: smb saves 80.00 (89% of eks's)" in text, text
    assert "eks leaves unpriced: Bucket" in text and "smb leaves unpriced" not in text, text
    assert "smb costs 80.00" in comparison("smb", dear, "eks", cheap, LOAD)


def test_cli_compares_the_smb_stack_with_its_jurisdictions_eks_stack() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "servectl", "plan", "--stack", "smb-ae", "--cost", "--compare", "uae-prod"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr[-800:]
    totals = re.findall(r"([\d,]+\.\d\d)        total of priced kinds", run.stdout)
    assert len(totals) == 2, run.stdout[-1500:]
    smb, eks = (float(t.replace(",", "")) for t in totals)
    assert f"smb-ae {smb:,.2f} vs uae-prod {eks:,.2f} per month: smb-ae saves" in run.stdout, run.stdout[
        -800:
    ]
    refused = subprocess.run(
        [sys.executable, "-m", "servectl", "plan", "--stack", "smb-ae", "--compare", "uae-prod"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "--compare goes with --cost" in refused.stderr, refused.stderr
