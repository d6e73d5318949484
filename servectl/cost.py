"""`servectl plan --cost`: an estimated monthly cost per resource kind of a stack's infra plan, from the
vendored list-price table (servectl/prices.json) at a stated load.

Pure functions: the plan's resources and the table go in, priced lines come out. A kind the table neither
prices nor lists as free is "not priced" (never zero), and so is a resource whose size the table lacks (an
instance type); a region the table does not hold is an error naming it, because guessing another region's
price would be a wrong number that looks right.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRICES = Path(__file__).with_name("prices.json")
ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
_TABLE_KEYS = ("taken", "currency", "hours_per_month", "note", "sources", "free", "regions")


class PriceError(ValueError):
    """The table cannot price this plan: a region it does not hold, or a malformed table."""


@dataclass(frozen=True, kw_only=True)
class Load:
    """The traffic the estimate assumes: usage-priced kinds (requests, compute, logs) scale with it."""

    requests_per_month: int = 10_000_000
    """Inference requests per month to each real-time model endpoint (the API and its proxy see them all)."""
    model_ms: float = 50.0
    """Model compute per request (serverless SageMaker bills it by the second and the memory)."""
    proxy_overhead_ms: float = 20.0
    """The proxy function's own time per request on top of the model's (it waits for the endpoint)."""
    log_gb_per_group: float = 1.0
    """Log data ingested per log group per month."""

    def describe(self) -> str:
        return (
            f"{self.requests_per_month:,} requests/month per model at {self.model_ms:g} ms model time "
            f"(+{self.proxy_overhead_ms:g} ms in the proxy), {self.log_gb_per_group:g} GB logs per log group"
        )


@dataclass(frozen=True, kw_only=True)
class Item:
    """One resource of a plan: its type token, region and inputs (and dependencies, to join companions)."""

    urn: str
    type: str
    region: str
    inputs: dict[str, Any]
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Line:
    """One resource kind's estimate: its count, monthly cost (None: not priced) and how it was reckoned."""

    kind: str
    count: int
    monthly: float | None
    basis: str


def load_table(path: Path = PRICES) -> dict[str, Any]:
    """The price table, checked for the keys the estimate reads; errors name the file and the key."""
    try:
        table: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PriceError(f"{path}: cannot read the price table: {exc}") from exc
    missing = [key for key in _TABLE_KEYS if key not in table]
    if missing:
        raise PriceError(f"{path}: missing key(s) {', '.join(missing)}")
    for region, prices in table["regions"].items():
        unsourced = sorted(set(prices) - set(table["sources"]))
        if unsourced:
            raise PriceError(f"{path}: regions.{region}: no source URL for {', '.join(unsourced)}")
    return table


Priced = tuple[float | None, str]
"""A resource's monthly cost (None: not priced) and the reckoning, e.g. `3 x m7i.2xlarge x 730 h`."""


def _per_hour(price: float, units: float, what: str, hours: float) -> Priced:
    return price * units * hours, f"{units:g} x {what} x {hours:g} h"


def _keyed(prices: dict[str, Any], key: str, size: str) -> float | None:
    found = prices.get(key, {}).get(size)
    return float(found) if found is not None else None


def _node_group(item: Item, prices: dict[str, Any], ctx: Context) -> Priced:
    size = (item.inputs.get("instanceTypes") or ["unset"])[0]
    nodes = int((item.inputs.get("scalingConfig") or {}).get("desiredSize", 0))
    hourly = _keyed(prices, "ec2_instance_hour", size)
    if hourly is None:
        return None, f"instance type {size} is not in the table"
    cost, basis = _per_hour(hourly, nodes, size, ctx.hours)
    disk = ctx.launch_template_gib(item)
    return cost + nodes * disk * prices["ebs_gp3_gb_month"], f"{basis} + {nodes} x {disk:g} GiB gp3"


def _variants(item: Item, prices: dict[str, Any], ctx: Context) -> Priced:
    total, parts = 0.0, []
    variants = item.inputs.get("productionVariants") or []
    weights = sum(float(v.get("initialVariantWeight", 1)) for v in variants) or 1.0
    for v in variants:
        if v.get("serverlessConfig"):
            share = float(v.get("initialVariantWeight", 1)) / weights
            gb = float(v["serverlessConfig"].get("memorySizeInMb", 0)) / 1024
            seconds = ctx.load.requests_per_month * share * ctx.load.model_ms / 1000
            total += seconds * gb * prices["sagemaker_serverless_gb_second"]
            parts.append(f"{seconds:,.0f} s x {gb:g} GB serverless")
            continue
        size = str(v.get("instanceType", "unset"))
        hourly = _keyed(prices, "sagemaker_instance_hour", size)
        if hourly is None:
            return None, f"instance type {size} is not in the table"
        count = float(v.get("initialInstanceCount", 1))
        total += hourly * count * ctx.hours
        parts.append(f"{count:g} x {size} x {ctx.hours:g} h")
    return total, " + ".join(parts) or "no variants"


def _lambda(item: Item, prices: dict[str, Any], ctx: Context) -> Priced:
    n = ctx.load.requests_per_month * ctx.models
    gb = float(item.inputs.get("memorySize", 128)) / 1024
    seconds = n * (ctx.load.model_ms + ctx.load.proxy_overhead_ms) / 1000
    cost = n / 1e6 * prices["lambda_request_million"] + seconds * gb * prices["lambda_gb_second"]
    return cost, f"{n:,} requests + {seconds:,.0f} s x {gb:g} GB"


def _api(item: Item, prices: dict[str, Any], ctx: Context) -> Priced:
    if item.inputs.get("protocolType", "HTTP") != "HTTP":
        return None, f"protocol {item.inputs.get('protocolType')} is not in the table"
    n = ctx.load.requests_per_month * ctx.models
    return n / 1e6 * prices["http_api_request_million"], f"{n:,} HTTP API requests"


def _fixed(key: str, what: str) -> Callable[[Item, dict[str, Any], Context], Priced]:
    def price(item: Item, prices: dict[str, Any], ctx: Context) -> Priced:
        return float(prices[key]), f"1 x {what}"

    return price


def _hourly(key: str, what: str, units: Callable[[Item], float] = lambda _: 1.0) -> Callable[..., Priced]:
    def price(item: Item, prices: dict[str, Any], ctx: Context) -> Priced:
        return _per_hour(float(prices[key]), units(item), what, ctx.hours)

    return price


def _sized(key: str, size_key: str, count_key: str | None = None) -> Callable[..., Priced]:
    def price(item: Item, prices: dict[str, Any], ctx: Context) -> Priced:
        size = str(item.inputs.get(size_key, "unset"))
        hourly = _keyed(prices, key, size)
        if hourly is None:
            return None, f"{size} is not in the table"
        return _per_hour(hourly, float(item.inputs.get(count_key, 1)) if count_key else 1.0, size, ctx.hours)

    return price


def _endpoint(item: Item, prices: dict[str, Any], ctx: Context) -> Priced:
    if item.inputs.get("vpcEndpointType", "Gateway") == "Gateway":
        return 0.0, "gateway endpoint (free)"
    azs = float(len(item.inputs.get("subnetIds") or []))
    return _per_hour(float(prices["interface_endpoint_az_hour"]), azs, "AZ interface endpoint", ctx.hours)


def _logs(item: Item, prices: dict[str, Any], ctx: Context) -> Priced:
    gb = ctx.load.log_gb_per_group
    return gb * float(prices["log_ingest_gb"]), f"{gb:g} GB ingested"


def _subnets(item: Item) -> float:
    return float(len(item.inputs.get("subnetMappings") or []))


PRICERS: dict[str, Callable[[Item, dict[str, Any], Context], Priced]] = {
    "aws:eks/cluster:Cluster": _hourly("eks_cluster_hour", "EKS cluster"),
    "aws:eks/nodeGroup:NodeGroup": _node_group,
    "aws:ec2/natGateway:NatGateway": _hourly("nat_gateway_hour", "NAT gateway"),
    "aws:ec2/eip:Eip": _hourly("public_ipv4_hour", "public IPv4"),
    "aws:ec2/vpcEndpoint:VpcEndpoint": _endpoint,
    "aws:lb/loadBalancer:LoadBalancer": _sized("load_balancer_hour", "loadBalancerType"),
    "aws:networkfirewall/firewall:Firewall": _hourly("firewall_endpoint_hour", "firewall endpoint", _subnets),
    "aws:elasticache/replicationGroup:ReplicationGroup": _sized(
        "elasticache_node_hour", "nodeType", "numCacheClusters"
    ),
    "aws:kms/key:Key": _fixed("kms_key_month", "key-month"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": _fixed("alarm_month", "alarm-month"),
    "aws:cloudwatch/logGroup:LogGroup": _logs,
    "aws:secretsmanager/secret:Secret": _fixed("secret_month", "secret-month"),
    "aws:route53/healthCheck:HealthCheck": _fixed("health_check_month", "health check-month"),
    ENDPOINT_CONFIG: _variants,
    "aws:lambda/function:Function": _lambda,
    "aws:apigatewayv2/api:Api": _api,
}


@dataclass(frozen=True, kw_only=True)
class Context:
    """What pricing one resource may need from the rest of the plan."""

    load: Load
    hours: float
    models: int
    """Real-time endpoint configurations in the plan: the API and its proxy carry each one's requests."""
    items: tuple[Item, ...]

    def launch_template_gib(self, group: Item) -> float:
        """The root volume size of the launch template a node group depends on (0 when it names none)."""
        for item in self.items:
            if item.type == "aws:ec2/launchTemplate:LaunchTemplate" and item.urn in group.dependencies:
                mappings = item.inputs.get("blockDeviceMappings") or []
                return sum(float((m.get("ebs") or {}).get("volumeSize", 0)) for m in mappings)
        return 0.0


def estimate(items: Iterable[Item], table: dict[str, Any], load: Load) -> list[Line]:
    """Monthly cost per resource kind, sorted by kind; raises PriceError naming a region the table lacks."""
    items = tuple(i for i in items if i.type.startswith("aws:"))
    realtime = [i for i in items if i.type == ENDPOINT_CONFIG and not i.inputs.get("asyncInferenceConfig")]
    ctx = Context(load=load, hours=float(table["hours_per_month"]), models=len(realtime), items=items)
    free = set(table["free"])
    grouped: dict[str, list[Priced]] = {}
    for item in items:
        if item.type in free:
            grouped.setdefault(item.type, []).append((0.0, "free"))
            continue
        if item.type not in PRICERS:
            grouped.setdefault(item.type, []).append((None, "kind not in the table"))
            continue
        if item.region not in table["regions"]:
            raise PriceError(f"region {item.region} (of {item.urn}) is not in the price table {PRICES.name}")
        grouped.setdefault(item.type, []).append(PRICERS[item.type](item, table["regions"][item.region], ctx))
    return [_line(kind, priced) for kind, priced in sorted(grouped.items())]


def _line(kind: str, priced: list[Priced]) -> Line:
    """One kind's line: not priced as soon as one of its resources is not (a partial sum would look whole)."""
    unpriced = [basis for cost, basis in priced if cost is None]
    if unpriced:
        return Line(kind=kind, count=len(priced), monthly=None, basis=f"not priced: {unpriced[0]}")
    bases = sorted({basis for _, basis in priced})
    basis = bases[0] if len(bases) == 1 else f"{bases[0]} (and {len(bases) - 1} other reckonings)"
    return Line(kind=kind, count=len(priced), monthly=sum(c for c, _ in priced if c is not None), basis=basis)


def render(stack: str, lines: list[Line], table: dict[str, Any], load: Load) -> str:
    """The estimate as text: priced kinds by cost, then free and not-priced kinds, then the caveat."""
    priced = sorted((ln for ln in lines if ln.monthly), key=lambda ln: -(ln.monthly or 0.0))
    free = [ln for ln in lines if ln.monthly == 0]
    unpriced = [ln for ln in lines if ln.monthly is None]
    total_cost = total(lines)  # the same sum `comparison` reports, to the cent
    out = [f"{stack}: estimated {table['currency']} per month at {load.describe()}"]
    out += [f"  {ln.monthly:10,.2f}  {ln.count:4d}  {ln.kind}  [{ln.basis}]" for ln in priced]
    out.append(f"  {total_cost:10,.2f}        total of priced kinds (list prices taken {table['taken']})")
    if free:
        out.append(f"  free: {sum(ln.count for ln in free)} resources of {len(free)} kinds")
    out += [f"  not priced  {ln.count:4d}  {ln.kind}  [{ln.basis}]" for ln in unpriced]
    out.append(f"  {table['note']}")
    return "\n".join(out)


def total(lines: list[Line]) -> float:
    """The sum of the priced kinds (free ones are zero; not-priced ones are left out, as render says)."""
    return sum(ln.monthly or 0.0 for ln in lines)


def comparison(stack: str, lines: list[Line], other: str, other_lines: list[Line], load: Load) -> str:
    """One stack's priced total against another's at the same load, and which kinds each leaves unpriced:
    a difference is only as good as what both sides price, so the unpriced kinds are named beside it."""
    mine, theirs = total(lines), total(other_lines)
    verb = "saves" if mine < theirs else "costs"
    share = f" ({abs(theirs - mine) / theirs:.0%} of {other}'s)" if theirs else ""
    out = [
        f"{stack} against {other} at {load.describe()}:",
        f"  {stack} {mine:,.2f} vs {other} {theirs:,.2f} per month: {stack} {verb} "
        f"{abs(theirs - mine):,.2f}{share} on the kinds each prices",
    ]
    for name, side in ((stack, lines), (other, other_lines)):
        unpriced = sorted(ln.kind.split(":")[-1] for ln in side if ln.monthly is None)
        if unpriced:
            out.append(f"  {name} leaves unpriced: {', '.join(unpriced)}")
    return "\n".join(out)
