"""Every way a stack file can be refused, each with the exact error: the file, the full key and the reason.

One row per refusal in stacks/config.py: the stack file it starts from, the change that breaks it,
and the key and reason the error must name. A row that is refused for another reason, or under
another key, fails: the message is what tells the operator which line of which file to fix.
The ranges of numbers are in test_config_bounds.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from stacks.config import ConfigError, parse_config
from stacks.jurisdictions import JURISDICTION_REGIONS
from stacks.settings import StackConfig
from tests.stacks.test_config import raw
from tests.stacks.test_config_bounds import Path, key_of, put

Edit = Callable[[dict[str, Any]], None]


def setting(path: Path, value: Any) -> Edit:
    return lambda values: put(values, path, value)


def removing(path: Path) -> Edit:
    def edit(values: dict[str, Any]) -> None:
        node: Any = values
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def appending(path: Path, value: Any) -> Edit:
    def edit(values: dict[str, Any]) -> None:
        node: Any = values
        for key in path:
            node = node[key]
        node.append(value)

    return edit


def both(*edits: Edit) -> Edit:
    def edit(values: dict[str, Any]) -> None:
        for one in edits:
            one(values)

    return edit


def parse(stack: str, edit: Edit) -> StackConfig:
    values, region = raw(stack)
    edit(values)
    return parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=region)


def refusal(stack: str, edit: Edit) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(stack, edit)
    return caught.value


def ip_error(text: str) -> str:
    try:
        ipaddress.ip_network(text)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"{text} is a network")


def ipv4_error(text: str) -> str:
    try:
        ipaddress.IPv4Network(text)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"{text} is an IPv4 network")


EU, AE = sorted(JURISDICTION_REGIONS["EU"]), sorted(JURISDICTION_REGIONS["AE"])
MODEL = ("models", 0)
VARIANTS = (*MODEL, "variants")
RECEIVERS = ("observability", "alerting", "receivers")
AWS_KEYS = ("regions", "cluster", "identity", "store", "runner", "accountId", "egress")
ONPREM_SAYS = "has no meaning for an on-premises stack (profile onprem)"
KEY_ARN = "arn:aws:kms:eu-west-1:345678901234:key/75ec936c-b944-4949-a500-dafe2989a5fc"
QUEUE_IS = (
    "the queue is an ElastiCache replication group of the standard profile "
    "(smb stacks use SageMaker Asynchronous Inference, on-premises stacks no AWS)"
)
BELOW = "is below what the tenant's models need at max replicas during a rollout, sidecars included"

# (stack, the change, the key the error names, the reason it gives)
REFUSALS: list[Any] = [
    # The stack as a whole.
    (
        "eu-prod",
        setting(("jurisdiction",), "XX"),
        ("jurisdiction",),
        f"'XX' is not one of {sorted(JURISDICTION_REGIONS)}",
    ),
    (
        "eu-prod",
        setting(("profile",), "big"),
        ("profile",),
        "'big' is not one of ['onprem', 'smb', 'standard']",
    ),
    (
        "eu-prod",
        setting(("profile",), "onprem"),
        ("profile",),
        "stack 'eu-prod': onprem-* stacks and only they use profile onprem",
    ),
    (
        "onprem-ae",
        setting(("profile",), "standard"),
        ("profile",),
        "stack 'onprem-ae': onprem-* stacks and only they use profile onprem",
    ),
    ("eu-prod", removing(("owner",)), ("owner",), "is required"),
    ("eu-prod", setting(("owner",), None), ("owner",), "is required"),
    ("eu-prod", setting(("owner",), ""), ("owner",), "must be a non-empty string"),
    ("eu-prod", setting(("dataClassification",), 5), ("dataClassification",), "must be a non-empty string"),
    ("eu-prod", setting(("gateway",), "api.example.eu"), ("gateway",), "must be a mapping"),
    ("eu-prod", setting(("tenants",), {"name": "payments"}), ("tenants",), "must be a list"),
    # Regions and the network.
    ("eu-prod", setting(("regions",), []), ("regions",), "needs at least one region"),
    ("eu-prod", setting(("regions", 1, "region"), "eu-central-1"), ("regions",), "lists a region twice"),
    (
        "eu-prod",
        setting(("regions", 1, "region"), "eu-west-2"),
        ("regions", 1, "region"),
        f"eu-west-2 is not in jurisdiction EU ({EU})",
    ),
    (
        "uae-prod",
        setting(("regions", 0, "region"), "eu-west-1"),
        ("regions", 0, "region"),
        f"eu-west-1 is not in jurisdiction AE ({AE})",
    ),
    (
        "eu-prod",
        setting(("regions", 1, "vpcCidr"), "10.40.128.0/17"),
        ("regions",),
        "VPC CIDRs overlap; peering or failover would break",
    ),
    (
        "eu-prod",
        setting(("regions", 0, "vpcCidr"), "10.40.0.0/33"),
        ("regions", 0, "vpcCidr"),
        f"'10.40.0.0/33' is not an IPv4 network: {ipv4_error('10.40.0.0/33')}",
    ),
    (
        "eu-prod",
        setting(("regions", 0, "vpcCidr"), "10.40.0.1/16"),
        ("regions", 0, "vpcCidr"),
        f"'10.40.0.1/16' is not an IPv4 network: {ipv4_error('10.40.0.1/16')}",
    ),
    (
        "smb-eu",
        appending(("regions",), {"region": "eu-central-1", "vpcCidr": "10.61.0.0/16"}),
        ("regions",),
        "the smb profile runs in exactly one region, got 2",
    ),
    ("eu-prod", None, ("aws:region",), "'eu-west-1' must be the primary region eu-central-1"),
    # The cluster.
    (
        "eu-prod",
        setting(("cluster", "kubernetesVersion"), "1.34"),
        ("cluster", "kubernetesVersion"),
        "1.34 is not in EKS standard support; use one of ['1.35', '1.36']",
    ),
    (
        "eu-prod",
        setting(("cluster", "publicAccessCidrs"), ["198.51.100.0/24", "10.1.2.3/0"]),
        ("cluster", "publicAccessCidrs"),
        "10.1.2.3/0 would open the API endpoint to the internet",
    ),
    (
        "eu-prod",
        setting(("cluster", "publicAccessCidrs"), ["10.0.0.0/8", "nope"]),
        ("cluster", "publicAccessCidrs"),
        "'nope' is not a network: 'nope' does not appear to be an IPv4 or IPv6 interface",
    ),
    (
        "eu-prod",
        setting(("cluster", "publicAccessCidrs"), [""]),
        ("cluster", "publicAccessCidrs"),
        "must be a list of non-empty strings",
    ),
    (
        "eu-prod",
        setting(("cluster", "publicAccessCidrs"), [24]),
        ("cluster", "publicAccessCidrs"),
        "must be a list of non-empty strings",
    ),
    (
        "eu-prod",
        setting(("cluster", "createAutoscalingServiceLinkedRole"), "yes"),
        ("cluster", "createAutoscalingServiceLinkedRole"),
        "must be true or false",
    ),
    (
        "eu-prod",
        setting(("cluster", "createAutoscalingServiceLinkedRole"), 0),
        ("cluster", "createAutoscalingServiceLinkedRole"),
        "must be true or false",
    ),
    # The gateway.
    (
        "eu-prod",
        setting(("gateway", "audiences"), []),
        ("gateway", "audiences"),
        "needs at least one audience",
    ),
    (
        "eu-prod",
        setting(("gateway", "allowedCidrs"), ["10.0.0.0/8", "nope"]),
        ("gateway", "allowedCidrs"),
        f"'nope' is not a network: {ip_error('nope')}",
    ),
    (
        "eu-prod",
        setting(("gateway", "jwtIssuer"), "http://idp.example.eu"),
        ("gateway", "jwtIssuer"),
        "'http://idp.example.eu' must be an https:// URL",
    ),
    (
        "eu-prod",
        setting(("gateway", "jwksUri"), "idp.example.eu/keys"),
        ("gateway", "jwksUri"),
        "'idp.example.eu/keys' must be an https:// URL",
    ),
    (
        "eu-prod",
        setting(("identity", "issuerUrl"), "http://idp.example.eu"),
        ("identity", "issuerUrl"),
        "'http://idp.example.eu' must be an https:// URL",
    ),
    # Tenants and models.
    (
        "eu-prod",
        setting(("tenants", 1, "name"), "payments"),
        ("tenants", 1),
        "tenant 'payments' is listed twice",
    ),
    (
        "eu-prod",
        setting(("models", 1, "name"), "tabular-classifier"),
        ("models", 1),
        "model 'tabular-classifier' is listed twice",
    ),
    (
        "eu-prod",
        setting((*MODEL, "tenant"), "nobody"),
        (*MODEL, "tenant"),
        "'nobody' is not one of the tenants ['payments', 'support']",
    ),
    (
        "eu-prod",
        setting(("tenants", 0, "viewerGroups"), ["sre", ""]),
        ("tenants", 0, "viewerGroups"),
        "must be a list of non-empty strings",
    ),
    (
        "eu-prod",
        setting(("tenants", 0, "quota", "pods"), 43),
        ("tenants", 0, "quota", "pods"),
        f"43 {BELOW} (44 pods)",  # 42 serving pods, the rollout controller, the feature-materialize job
    ),
    (
        "eu-prod",
        setting(("tenants", 0, "quota", "cpu"), "105749m"),
        ("tenants", 0, "quota", "cpu"),
        f"105749m {BELOW} (105.75 CPUs)",
    ),
    (
        "eu-prod",
        setting(("tenants", 0, "quota", "memory"), "98303Mi"),
        ("tenants", 0, "quota", "memory"),
        f"98303Mi {BELOW} (96.0Gi)",
    ),
    (
        "eu-prod",
        setting(("tenants", 0, "quota", "cpu"), "lots"),
        ("tenants", 0, "quota", "cpu"),
        "not a CPU quantity: 'lots' (expected e.g. 2, 1.5 or 500m)",
    ),
    (
        "eu-prod",
        setting(("tenants", 0, "quota", "memory"), "lots"),
        ("tenants", 0, "quota", "memory"),
        "not a memory quantity: 'lots' (expected e.g. 2Gi or 512Mi)",
    ),
    # Variants.
    ("eu-prod", setting((*VARIANTS, "weights"), {}), (*VARIANTS, "weights"), "must map versions to percents"),
    (
        "eu-prod",
        setting((*VARIANTS, "weights"), ["1"]),
        (*VARIANTS, "weights"),
        "must map versions to percents",
    ),
    (
        "eu-prod",
        setting((*VARIANTS, "weights"), {"v1": 100}),
        (*VARIANTS, "weights"),
        "version 'v1' is not a Triton version directory name (1, 2, ...)",
    ),
    (
        "eu-prod",
        setting((*VARIANTS, "weights"), {"0": 100}),
        (*VARIANTS, "weights"),
        "version '0' is not a Triton version directory name (1, 2, ...)",
    ),
    (
        "eu-prod",
        setting((*VARIANTS, "weights"), {"01": 100}),
        (*VARIANTS, "weights"),
        "version '01' is not a Triton version directory name (1, 2, ...)",
    ),
    (
        "eu-prod",
        setting((*VARIANTS, "routes", 0, "version"), "3"),
        (*VARIANTS, "routes", 0, "version"),
        "version '3' has no entry in weights",
    ),
    (
        "eu-prod",
        setting((*VARIANTS, "shadow"), {"version": 7, "percent": 5}),
        (*VARIANTS, "shadow", "version"),
        "version '7' has no entry in weights",
    ),
    ("eu-prod", setting((*VARIANTS, "faults"), ["2"]), (*VARIANTS, "faults"), "must map versions to faults"),
    (
        "eu-prod",
        setting((*VARIANTS, "faults"), {"9": {"delay_ms": 5}}),
        (*VARIANTS, "faults", "9"),
        "version '9' has no entry in weights",
    ),
    ("eu-prod", setting((*VARIANTS, "faults"), {"2": 5}), (*VARIANTS, "faults", "2"), "must be a mapping"),
    ("eu-prod", setting((*VARIANTS, "faults"), {"2": None}), (*VARIANTS, "faults", "2"), "is required"),
    (
        "eu-prod",
        setting((*VARIANTS, "sticky"), {"cookie": "x"}),
        (*VARIANTS, "sticky", "header"),
        "is required",
    ),
    # State and secrets.
    (
        "eu-prod",
        setting(("state", "backend"), "s3://acme-eu-pulumi-state?region=us-east-1"),
        ("state", "backend"),
        "region 'us-east-1' is outside jurisdiction EU",
    ),
    (
        "eu-prod",
        setting(("state", "backend"), "s3://acme-eu-pulumi-state"),
        ("state", "backend"),
        "'s3://acme-eu-pulumi-state' must be s3://...?region=<region>: no default to a backend elsewhere",
    ),
    (
        "eu-prod",
        setting(("state", "secretsProvider"), "awskms://alias/x?region=me-central-1"),
        ("state", "secretsProvider"),
        "region 'me-central-1' is outside jurisdiction EU",
    ),
    (
        "eu-prod",
        setting(("state", "secretsProvider"), "passphrase"),
        ("state", "secretsProvider"),
        "'passphrase' must be awskms://...?region=<region>: no default to a backend elsewhere",
    ),
    (
        "eu-prod",
        setting(("state", "keyArn"), KEY_ARN),
        ("state", "keyArn"),
        f"{KEY_ARN} is not in the secrets provider's region eu-central-1",
    ),
    (
        "onprem-ae",
        setting(("state", "backend"), "https://state.example.ae"),
        ("state", "backend"),
        "'https://state.example.ae' must be file:// or an in-jurisdiction s3:// store",
    ),
    # Observability.
    ("eu-prod", setting(RECEIVERS, []), RECEIVERS, "needs at least one receiver: alerts must reach someone"),
    (
        "eu-prod",
        setting(RECEIVERS, [{"name": "x"}]),
        (*RECEIVERS, 0),
        "needs exactly one of webhookUrl or email",
    ),
    (
        "eu-prod",
        setting(RECEIVERS, [{"name": "x", "email": "a@example.eu", "webhookUrl": "https://x.example.eu"}]),
        (*RECEIVERS, 0),
        "needs exactly one of webhookUrl or email",
    ),
    (
        "eu-prod",
        setting((*RECEIVERS, 0, "webhookUrl"), "http://oncall.example.eu"),
        (*RECEIVERS, 0, "webhookUrl"),
        "must be an https:// URL",
    ),
    (
        "eu-prod",
        appending(RECEIVERS, {"name": "mail", "email": "a@example.eu"}),
        ("observability", "alerting", "smarthost"),
        "is required when a receiver is e-mail",
    ),
    (
        "eu-prod",
        setting(("observability", "otlpEndpoint"), "http://traces.example.eu"),
        ("observability", "otlpEndpoint"),
        "'http://traces.example.eu' must be an https:// URL",
    ),
    (
        "onprem-ae",
        removing(("observability", "otlpEndpoint")),
        ("observability", "otlpEndpoint"),
        "is required on premises: traces go to an in-jurisdiction collector (X-Ray is AWS only)",
    ),
    # Asynchronous inference.
    (
        "smb-eu",
        setting(("asyncInference",), {"engineVersion": "7.1"}),
        ("asyncInference",),
        f"has no meaning for profile smb: {QUEUE_IS}",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "engineVersion"), "6.2"),
        ("asyncInference", "engineVersion"),
        "'6.2' is not a Redis OSS 7.x version (7.0, 7.1): the autoscaler reads consumer-group lag, "
        "which Redis 7 added",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "createServiceLinkedRole"), "no"),
        ("asyncInference", "createServiceLinkedRole"),
        "must be true or false",
    ),
    (
        "eu-prod",
        removing(("asyncInference", "inputRetentionDays")),
        ("asyncInference", "inputRetentionDays"),
        "is required",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks", "allowedHosts"), ["https://hooks.example.eu"]),
        ("asyncInference", "callbacks", "allowedHosts"),
        "'https://hooks.example.eu' is not a host or host:port (lower case, no scheme or path)",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks", "allowedHosts"), ["hooks.example.eu/cb"]),
        ("asyncInference", "callbacks", "allowedHosts"),
        "'hooks.example.eu/cb' is not a host or host:port (lower case, no scheme or path)",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks", "allowedHosts"), ["hooks.example.eu:0"]),
        ("asyncInference", "callbacks", "allowedHosts"),
        "'hooks.example.eu:0': port 0 is outside 1..65535",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks", "allowedHosts"), ["hooks.example.eu:65536"]),
        ("asyncInference", "callbacks", "allowedHosts"),
        "'hooks.example.eu:65536': port 65536 is outside 1..65535",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks", "allowedHosts"), ["hooks.example.eu", "hooks.example.eu"]),
        ("asyncInference", "callbacks", "allowedHosts"),
        "lists a host twice",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks", "allowedHosts"), "hooks.example.eu"),
        ("asyncInference", "callbacks", "allowedHosts"),
        "must be a list",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks", "allowedHosts"), ["hooks.example.eu", ""]),
        ("asyncInference", "callbacks", "allowedHosts"),
        "must be a list of non-empty strings",
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks"), ["hooks.example.eu"]),
        ("asyncInference", "callbacks"),
        "must be a mapping",
    ),
    # On premises.
    (
        "onprem-ae",
        setting(("onprem", "store", "endpoint"), "http://objects.example.ae"),
        ("onprem", "store", "endpoint"),
        "'http://objects.example.ae' must be an https:// URL",
    ),
    ("onprem-ae", removing(("onprem",)), ("onprem",), "is required"),
    ("onprem-ae", removing(("image", "retrainRepository")), ("image", "retrainRepository"), "is required"),
    ("eu-prod", removing(("image", "retrainDigest")), ("image", "retrainDigest"), "is required"),
    *(("onprem-ae", setting((key,), {"x": 1}), (key,), ONPREM_SAYS) for key in AWS_KEYS),
    ("onprem-ae", setting(("accountId",), "345678901234"), ("accountId",), ONPREM_SAYS),
]


def ids(row: Any) -> str:
    stack, _, path, reason = row
    return f"{stack} {key_of(path).removeprefix('model-serving.')}: {reason[:40]}"


@pytest.mark.parametrize(("stack", "edit", "path", "reason"), REFUSALS, ids=[ids(r) for r in REFUSALS])
def test_a_refusal_names_file_key_and_reason(stack: str, edit: Edit | None, path: Path, reason: str) -> None:
    if edit is None:  # the aws:region the CLI passes, not a key of the namespace
        values, _ = raw(stack)
        with pytest.raises(ConfigError) as caught:
            parse_config(values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region="eu-west-1")
        err, key = caught.value, path[0]
    else:
        err, key = refusal(stack, edit), key_of(path)
    source = f"Pulumi.{stack}.yaml"
    assert (err.source, err.key, err.reason) == (source, key, reason), (err.source, err.key, err.reason)
    assert str(err) == f"{source}: {key}: {reason}", str(err)


# Values a check might refuse by mistake: each parses, into the field named.
ACCEPTED: list[Any] = [
    (
        "eu-prod",
        setting(("cluster", "publicAccessCidrs"), ["198.51.100.7/24"]),
        lambda c: c.cluster.public_access_cidrs,
        ("198.51.100.7/24",),
    ),
    ("eu-prod", setting(("tenants", 0, "quota", "pods"), 44), lambda c: c.tenants[0].pods, 44),
    ("eu-prod", setting(("tenants", 0, "quota", "cpu"), "105.75"), lambda c: c.tenants[0].cpu, "105.75"),
    (
        "eu-prod",
        setting(("tenants", 0, "quota", "memory"), "98304Mi"),
        lambda c: c.tenants[0].memory,
        "98304Mi",
    ),
    (
        "onprem-ae",
        setting(("state", "backend"), "s3://acme-ae-state?region=me-central-1"),
        lambda c: c.state.backend,
        "s3://acme-ae-state?region=me-central-1",
    ),
    (
        "eu-prod",
        setting(("state", "backend"), "s3://acme-eu-pulumi-state?profile=eu&region=eu-west-1&x=1"),
        lambda c: c.state.region,
        "eu-west-1",
    ),
    (
        "eu-prod",
        both(
            setting(RECEIVERS, [{"name": "mail", "email": "a@example.eu"}]),
            setting(("observability", "alerting", "smarthost"), "smtp.example.eu:587"),
        ),
        lambda c: c.observability.alerting.smarthost,
        "smtp.example.eu:587",
    ),
    (
        "eu-prod",
        setting((*VARIANTS, "faults"), {"2": {"delay_ms": 0}}),
        lambda c: c.models[0].variants.faults[0][1].delay_ms,
        0,
    ),
    (
        "eu-prod",
        setting((*VARIANTS, "faults"), {"2": {}}),
        lambda c: c.models[0].variants.faults[0][1].error_ratio,
        0.0,
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks", "allowedHosts"), ["a.example.eu:1", "b.example.eu:65535"]),
        lambda c: c.job_queue and c.job_queue.callback_hosts,
        ("a.example.eu:1", "b.example.eu:65535"),
    ),
    (
        "eu-prod",
        setting(("asyncInference", "callbacks"), {"allowedHosts": []}),
        lambda c: c.job_queue and c.job_queue.callback_hosts,
        (),
    ),
    (
        "eu-prod",
        removing(("asyncInference", "callbacks")),
        lambda c: c.job_queue and c.job_queue.callback_hosts,
        (),
    ),
]


@pytest.mark.parametrize(("stack", "edit", "read", "value"), ACCEPTED)
def test_a_value_near_a_refusal_is_accepted(
    stack: str, edit: Edit, read: Callable[[StackConfig], Any], value: Any
) -> None:
    got = read(parse(stack, edit))
    assert got == value, f"{stack}: {got!r}, expected {value!r}"


# Each key with a pattern, and values just outside it: refused, naming the value and the pattern.
PATTERNED: list[Any] = [
    ("eu-prod", ("accountId",), ["34567890123", "3456789012345", "34567890123x"]),
    (
        "eu-prod",
        ("runner", "githubRepository"),
        ["https://gitlab.com/acme/serving", "https://github.com/acme"],
    ),
    (
        "eu-prod",
        ("runner", "connectionArn"),
        ["arn:aws:codeconnections:eu-central-1:345678901234:connection/x"],
    ),
    ("eu-prod", ("cluster", "breakGlassRoleArn"), ["arn:aws:iam::345678901234:user/root"]),
    ("eu-prod", ("gateway", "apiHost"), ["localhost", "API.models.example.eu", "api.models.example.eu:443"]),
    ("eu-prod", ("gateway", "zoneId"), ["Z1234567", "Z" + "1" * 33, "z04EU0000000000000001"]),
    ("eu-prod", ("gateway", "tlsCredentialName"), ["Model-API-TLS", "-model-api-tls", "a" * 64]),
    ("eu-prod", ("image", "registryAccount"), ["34567890123"]),
    ("eu-prod", ("image", "digest"), ["latest", "sha256:" + "a" * 63]),
    ("eu-prod", ("image", "runnerDigest"), ["sha256:" + "A" * 64]),
    ("eu-prod", ("image", "retrainDigest"), ["retrain", "sha256:" + "A" * 64]),
    ("onprem-ae", ("image", "retrainDigest"), ["sha256:" + "a" * 65]),
    ("eu-prod", ("store", "bucketPrefix"), ["ab", "a" * 32, "-acme"]),
    ("eu-prod", ("state", "keyArn"), ["arn:aws:kms:eu-central-1:345678901234:alias/state"]),
    ("eu-prod", ("tenants", 0, "name"), ["Payments"]),
    ("eu-prod", (*MODEL, "name"), ["Tabular_Classifier"]),
    ("eu-prod", (*RECEIVERS, 0, "name"), ["platform oncall"]),
    ("eu-prod", ("asyncInference", "nodeType"), ["r7g.large", "cache.r7g"]),
    ("onprem-ae", ("onprem", "location"), ["AE-DC1"]),
    ("onprem-ae", ("onprem", "registry"), ["registry", "registry.dc1.example.ae:123456"]),
    ("onprem-ae", ("onprem", "storageClass"), ["Sovereign"]),
    ("onprem-ae", ("onprem", "store", "bucket"), ["ab", "Acme-ae-models"]),
    ("onprem-ae", ("onprem", "store", "credentialsSecret"), ["model_store"]),
]


@pytest.mark.parametrize(
    ("stack", "path", "value"),
    [
        pytest.param(stack, path, value, id=f"{key_of(path)}={value[:20]}")
        for stack, path, values in PATTERNED
        for value in values
    ],
)
def test_a_value_outside_a_keys_pattern_is_refused_naming_it(stack: str, path: Path, value: str) -> None:
    err = refusal(stack, setting(path, value))
    assert (err.source, err.key) == (f"Pulumi.{stack}.yaml", key_of(path)), (err.source, err.key)
    start = f"{value!r} does not match ^"
    assert err.reason.startswith(start) and err.reason.endswith("$"), err.reason


# Values just inside some of the same patterns, at their lengths' edges: each is kept as given.
INSIDE_PATTERNS: list[Any] = [
    ("eu-prod", ("gateway", "tlsCredentialName"), ["a", "a" * 63, "model-api-tls-2"]),
    ("eu-prod", ("gateway", "zoneId"), ["Z12345678", "Z" + "1" * 32]),
    ("eu-prod", ("store", "bucketPrefix"), ["abc", "a" * 31]),
    ("onprem-ae", ("onprem", "store", "bucket"), ["abc", "a" * 63, "acme.ae-models"]),
    ("onprem-ae", ("onprem", "registry"), ["registry.dc1.example.ae:5000"]),
]
READ: dict[Path, Callable[[StackConfig], Any]] = {
    ("gateway", "tlsCredentialName"): lambda c: c.gateway.tls_credential_name,
    ("gateway", "zoneId"): lambda c: c.gateway.zone_id,
    ("store", "bucketPrefix"): lambda c: c.store and c.store.bucket_prefix,
    ("onprem", "store", "bucket"): lambda c: c.onprem and c.onprem.store.bucket,
    ("onprem", "registry"): lambda c: c.onprem and c.onprem.registry,
}


@pytest.mark.parametrize(
    ("stack", "path", "value"),
    [
        pytest.param(stack, path, value, id=f"{key_of(path)}={value[:20]}")
        for stack, path, values in INSIDE_PATTERNS
        for value in values
    ],
)
def test_a_value_inside_a_keys_pattern_is_kept(stack: str, path: Path, value: str) -> None:
    kept = READ[path](parse(stack, setting(path, value)))
    assert kept == value, f"{key_of(path)}: {value!r} parsed as {kept!r}"
