"""The mesh's pure builders: chart values pull from the in-region registry, authorization denies by default
and admits only what it must, the gateway's filters run in the right order, egress is named host by host."""

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from stacks.artifacts import CHART_PREFIX, MIRROR_PREFIX
from stacks.manifests import Manifest, mesh
from stacks.manifests.sticky import CALLER_HEADER, lua_source
from tests.stacks.schemas import validate

REGISTRY = "111111111111.dkr.ecr.eu-central-1.amazonaws.com"
API_HOST = "api.models.example.eu"
ISSUER = "https://login.example.eu"
MODELS = ("tabular-classifier", "ticket-router")
GATEWAY_POD = ("istio-system", mesh.GATEWAY_SELECTOR)


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) pair of nested values."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, f"{path}[{i}]")
    else:
        yield path, value


def foreign_images(values: Any, registry: str) -> list[str]:
    """`key: value` of every `image` in chart values that is not `<registry>/mirror/...@sha256:...`."""
    prefix = f"{registry}/{MIRROR_PREFIX}/"
    return [
        f"{path}: {value}"
        for path, value in walk(values)
        if path.rsplit(".", 1)[-1] == "image"
        and not (str(value).startswith(prefix) and "@sha256:" in str(value))
    ]


def _all_values() -> dict[str, dict[str, Any]]:
    return {
        "istiod": mesh.istiod_values(REGISTRY),
        "cni": mesh.cni_values(REGISTRY),
        "gateway": mesh.gateway_values(),
    }


# --- images and charts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chart", "key"),
    [("istiod", "pilot.image"), ("istiod", "global.proxy.image"), ("istiod", "global.proxy_init.image"),
     ("cni", "cni.image")],
)  # fmt: skip
def test_istio_images_are_set_from_the_registry_by_digest(chart: str, key: str) -> None:
    found = dict(walk(_all_values()[chart]))
    assert key in found, f"{chart} values leave {key} to the chart's default (an upstream registry)"
    assert not foreign_images({"image": found[key]}, REGISTRY), f"{chart}.{key} = {found[key]}"


def test_no_chart_value_names_an_image_outside_the_registry() -> None:
    bad = [f"{chart}: {image}" for chart, v in _all_values().items() for image in foreign_images(v, REGISTRY)]
    assert not bad, f"images not pulled from the in-region mirror by digest: {bad}"


def test_the_image_check_catches_an_upstream_or_tagged_image() -> None:
    values = {
        "a": {"image": "docker.io/istio/pilot:1.30.8"},
        "b": {"image": f"{REGISTRY}/mirror/istio/pilot:1"},
    }
    assert len(foreign_images(values, REGISTRY)) == 2, "the check must flag upstream and tag-only images"


@pytest.mark.parametrize("chart", ["istiod", "cni"])
def test_hub_falls_back_to_the_registry(chart: str) -> None:
    hub = _all_values()[chart]["global"]["hub"]
    assert hub == f"{REGISTRY}/{MIRROR_PREFIX}/istio", (
        f"global.hub {hub}: a fallback image would leave the region"
    )


def test_chart_references_are_in_region_oci() -> None:
    from stacks.artifacts import load_lock

    for key in ("istio-base", "istio-cni", "istio-istiod", "istio-gateway"):
        ref = load_lock().chart(key).oci(REGISTRY)
        assert ref.startswith(f"oci://{REGISTRY}/{CHART_PREFIX}/"), f"{key}: {ref}"


def test_no_outbound_port_is_excluded_from_the_mesh() -> None:
    found = [
        path for v in _all_values().values() for path, value in walk(v) if "excludeOutboundPorts" in path
    ]
    assert not found, f"traffic on these ports would bypass the sidecar and REGISTRY_ONLY: {found}"


# --- istiod and gateway ---------------------------------------------------------------------------


def test_native_sidecars_so_init_containers_run_after_the_proxy() -> None:
    env = mesh.istiod_values(REGISTRY)["pilot"]["env"]
    assert env.get("ENABLE_NATIVE_SIDECARS") == "true", f"pilot.env: {env}"


def test_istiod_two_replicas_with_a_budget_across_zones() -> None:
    values = mesh.istiod_values(REGISTRY)
    assert values["pilot"]["autoscaleMin"] >= 2, "one istiod pod is a single point of failure"
    assert values["global"]["defaultPodDisruptionBudget"] == {"enabled": True}, "istiod has no PDB"
    spread = values["pilot"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [mesh.ZONE], spread
    assert spread[0]["labelSelector"]["matchLabels"] == mesh.ISTIOD_SELECTOR, "the spread selects other pods"


def test_gateway_budget_and_spread_across_zones() -> None:
    values = mesh.gateway_values()
    assert values["autoscaling"]["minReplicas"] >= 2, values["autoscaling"]
    assert values["podDisruptionBudget"] == {"minAvailable": 1}, values["podDisruptionBudget"]
    spread = values["topologySpreadConstraints"]
    assert (
        spread[0]["topologyKey"] == mesh.ZONE
        and spread[0]["labelSelector"]["matchLabels"] == mesh.GATEWAY_SELECTOR
    )


def test_gateway_service_is_cluster_ip_https_only() -> None:
    service = mesh.gateway_values()["service"]
    assert service["type"] == "ClusterIP", (
        "the NLB is infra's: a LoadBalancer Service would create a second one"
    )
    ports = {p["port"] for p in service["ports"]}
    assert ports == {mesh.GATEWAY_HTTPS_PORT, mesh.GATEWAY_STATUS_PORT}, (
        f"ports {ports}: HTTPS and health only"
    )


def test_extra_istiod_values_merge_without_dropping_images() -> None:
    extra = {"meshConfig": {"extensionProviders": [{"name": "otel"}]}, "global": {"logAsJson": True}}
    merged = mesh.merge(mesh.istiod_values(REGISTRY), extra)
    assert merged["meshConfig"]["extensionProviders"] == [{"name": "otel"}], "extra value lost"
    assert merged["meshConfig"]["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"}, (
        "a sibling was replaced"
    )
    assert not foreign_images(merged, REGISTRY), "merging replaced the proxy image"


def test_gateway_terminates_https_for_any_host_and_has_no_plain_http() -> None:
    servers = mesh.gateway("model-api-tls")["spec"]["servers"]
    assert [s["port"]["number"] for s in servers] == [443], "HTTPS only: the NLB listens on 443 alone"
    assert servers[0]["hosts"] == ["*"], "the NLB sends no SNI: a host-bound server would never match"
    assert servers[0]["tls"]["credentialName"] == "model-api-tls", servers[0]["tls"]


def test_request_authentication_writes_the_caller_from_the_token_subject() -> None:
    rule = mesh.request_authentication(ISSUER, f"{ISSUER}/jwks", ("api",))["spec"]["jwtRules"][0]
    assert rule["outputClaimToHeaders"] == [{"header": CALLER_HEADER, "claim": "sub"}], rule


# --- the Lua filter -------------------------------------------------------------------------------


def test_caller_filter_runs_first_in_the_gateways_http_chain() -> None:
    (patch,) = mesh.caller_filter({})["spec"]["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER" and patch["match"]["context"] == "GATEWAY", patch["match"]
    first = patch["patch"]["operation"] == "INSERT_FIRST"
    before_jwt = (
        patch["patch"]["operation"] == "INSERT_BEFORE"
        and patch["match"]["listener"]["filterChain"]["filter"].get("subFilter", {}).get("name")
        == "envoy.filters.http.jwt_authn"
    )
    assert first or before_jwt, (
        f"{patch['patch']['operation']}: a client's caller header would survive jwt_authn"
    )


def test_caller_filter_carries_the_sticky_table() -> None:
    (patch,) = mesh.caller_filter({"tabular-classifier": "x-user-id"})["spec"]["configPatches"]
    source = patch["patch"]["value"]["typed_config"]["default_source_code"]["inline_string"]
    assert source == lua_source({"tabular-classifier": "x-user-id"}), "not the sticky module's filter"
    assert '["tabular-classifier"] = "x-user-id"' in source, "the model's sticky header is missing"


# --- egress ---------------------------------------------------------------------------------------


def _hosts(entries: list[Manifest]) -> set[str]:
    return {h for e in entries for h in e["spec"]["hosts"]}


def test_service_entries_cover_the_regions_s3_and_sts() -> None:
    hosts = _hosts(mesh.aws_service_entries("eu-central-1"))
    want = {
        "s3.eu-central-1.amazonaws.com",
        "*.s3.eu-central-1.amazonaws.com",
        "sts.eu-central-1.amazonaws.com",
    }
    assert hosts == want, f"hosts {hosts}"


def test_a_stack_with_a_feature_store_reaches_the_regions_dynamodb_too() -> None:
    with_store = _hosts(mesh.aws_service_entries("eu-central-1", dynamodb=True))
    assert with_store - _hosts(mesh.aws_service_entries("eu-central-1")) == {
        "dynamodb.eu-central-1.amazonaws.com"
    }


def test_service_entries_are_external_tls_on_443() -> None:
    entries = mesh.aws_service_entries("eu-central-1") + mesh.egress_entries(["store.dc1.example"])
    assert len(entries) >= 2, f"entries: {[e['metadata']['name'] for e in entries]}"
    for entry in entries:
        spec = entry["spec"]
        assert spec["location"] == "MESH_EXTERNAL", entry["metadata"]["name"]
        assert spec["ports"] == [{"number": 443, "name": "tls", "protocol": "TLS"}], spec["ports"]


def test_no_wildcard_host_with_dns_resolution() -> None:
    # istiod's validating webhook rejects it ("hosts must be FQDN if no endpoints are provided").
    entries = mesh.aws_service_entries("eu-central-1")
    assert any("*" in h for e in entries for h in e["spec"]["hosts"]), "no wildcard host to check"
    for entry in entries:
        spec = entry["spec"]
        wild = [h for h in spec["hosts"] if "*" in h]
        assert not (wild and spec["resolution"] == "DNS"), f"{entry['metadata']['name']}: {wild} with DNS"


def test_egress_entries_one_per_host() -> None:
    entries = mesh.egress_entries(["b.example", "a.example", "a.example"])
    assert [e["spec"]["hosts"] for e in entries] == [["a.example"], ["b.example"]], entries


# --- schemas --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "manifest",
    [
        mesh.peer_authentication(),
        mesh.deny_all(),
        mesh.gateway("tls"),
        mesh.request_authentication(ISSUER, f"{ISSUER}/jwks", ("api",)),
        mesh.deny_without_token(MODELS),
        mesh.health_allow([API_HOST], MODELS),
        mesh.caller_filter({"tabular-classifier": "x-user-id"}),
        *mesh.aws_service_entries("eu-central-1"),
        *mesh.egress_entries(["store.dc1.example"]),
    ],
    ids=lambda m: f"{m['kind']}-{m['metadata']['name']}",
)
def test_validates_against_its_schema(manifest: Manifest) -> None:
    validate(manifest)


# --- authorization, evaluated ---------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What Istio's authorization sees of a request."""

    principal: str | None
    """The validated token's `iss/sub`, None without a token."""
    method: str
    path: str
    host: str = API_HOST
    peer: str | None = None
    """The mTLS identity of the calling workload."""
    port: int = 443


def _match(patterns: list[str], value: str | None) -> bool:
    # Istio's string match: exact, `*` alone, or one `*` as prefix or suffix.
    return value is not None and any(p == "*" or fnmatch.fnmatchcase(value, p) for p in patterns)


def _source_matches(source: dict[str, Any], req: Request) -> bool:
    checks = {
        "requestPrincipals": lambda v: _match(v, req.principal),
        "notRequestPrincipals": lambda v: not _match(v, req.principal),
        "principals": lambda v: _match(v, req.peer),
        "notPrincipals": lambda v: not _match(v, req.peer),
    }
    assert set(source) <= set(checks), f"the evaluator does not know {set(source) - set(checks)}"
    return all(checks[k](v) for k, v in source.items())


def _operation_matches(op: dict[str, Any], req: Request) -> bool:
    checks = {
        "paths": lambda v: _match(v, req.path),
        "notPaths": lambda v: not _match(v, req.path),
        "methods": lambda v: _match(v, req.method),
        "notMethods": lambda v: not _match(v, req.method),
        "hosts": lambda v: _match(v, req.host),
        "ports": lambda v: str(req.port) in v,
    }
    assert set(op) <= set(checks), f"the evaluator does not know {set(op) - set(checks)}"
    return all(checks[k](v) for k, v in op.items())


def _rule_matches(rule: dict[str, Any], req: Request) -> bool:
    assert "when" not in rule or all(c["key"] == "request.auth.claims[scope]" for c in rule["when"]), rule
    sources = rule.get("from", [])
    operations = rule.get("to", [])
    return (not sources or any(_source_matches(s["source"], req) for s in sources)) and (
        not operations or any(_operation_matches(o["operation"], req) for o in operations)
    )


def _applies(policy: Manifest, workload: tuple[str, dict[str, str]]) -> bool:
    namespace, pod_labels = workload
    selector = policy["spec"].get("selector", {}).get("matchLabels", {})
    in_scope = policy["metadata"]["namespace"] in {mesh.NAMESPACE, namespace}
    return in_scope and all(pod_labels.get(k) == v for k, v in selector.items())


def decide(policies: list[Manifest], workload: tuple[str, dict[str, str]], req: Request) -> bool:
    """Istio's order: any matching DENY refuses; then, if the workload has ALLOW policies, one must match."""
    mine = [p for p in policies if _applies(p, workload)]
    if any(
        _rule_matches(r, req) for p in mine if p["spec"].get("action") == "DENY" for r in p["spec"]["rules"]
    ):
        return False
    allows = [p for p in mine if p["spec"].get("action", "ALLOW") == "ALLOW"]
    return not allows or any(_rule_matches(r, req) for p in allows for r in p["spec"].get("rules", []))


def _model_allow(model: str) -> Manifest:
    """A stand-in for a model's gateway ALLOW (built in serving): its paths with a token of the issuer."""
    prefix = f"/v2/models/{model}"
    return {
        "metadata": {"name": f"allow-{model}", "namespace": mesh.NAMESPACE},
        "spec": {
            "selector": {"matchLabels": mesh.GATEWAY_SELECTOR},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"requestPrincipals": [f"{ISSUER}/*"]}}],
                    "to": [{"operation": {"paths": [prefix, f"{prefix}/*"]}}],
                }
            ],
        },
    }


def _gateway_policies(with_deny_all: bool = True) -> list[Manifest]:
    policies = [
        mesh.deny_without_token(MODELS),
        mesh.health_allow([API_HOST], MODELS),
        _model_allow(MODELS[0]),
    ]
    return [mesh.deny_all(), *policies] if with_deny_all else policies


TOKEN = f"{ISSUER}/user-1"


@pytest.mark.parametrize(
    ("req", "allowed"),
    [
        (Request(None, "GET", "/v2/models/tabular-classifier/ready"), True),
        (Request(None, "GET", "/v2/models/ticket-router/ready"), True),
        (Request(None, "GET", "/v2/models/tabular-classifier/ready", host="evil.example"), False),
        (Request(None, "POST", "/v2/models/tabular-classifier/ready"), False),
        (Request(None, "GET", "/v2/models/tabular-classifier/versions/1/ready"), False),
        (Request(None, "POST", "/v2/models/tabular-classifier/infer"), False),
        (Request(None, "GET", "/v2/models/other/ready"), False),
        (Request(None, "GET", "/v2/health/ready"), False),
        (Request(TOKEN, "POST", "/v2/models/tabular-classifier/infer"), True),
        (Request(TOKEN, "GET", "/v2/repository/index"), False),
    ],
    ids=lambda v: (
        f"{'token' if v.principal else 'no-token'}-{v.method}-{v.host}{v.path}"
        if isinstance(v, Request)
        else ""
    ),
)
def test_gateway_admits_tokens_and_health_checks_only(req: Request, allowed: bool) -> None:
    assert decide(_gateway_policies(), GATEWAY_POD, req) is allowed, f"{req}: expected allowed={allowed}"


def test_deny_all_is_an_empty_policy_in_the_root_namespace() -> None:
    policy = mesh.deny_all()
    assert policy["metadata"]["namespace"] == mesh.NAMESPACE, "outside the root namespace it is not mesh-wide"
    assert policy["spec"] == {}, f"spec {policy['spec']}: only an empty ALLOW matches nothing everywhere"


def test_deny_all_refuses_a_workload_with_no_allow_of_its_own() -> None:
    req = Request(None, "GET", "/", peer="cluster.local/ns/a/sa/b", port=8080)
    workload = ("some-tenant", {"app": "anything"})
    assert decide([mesh.deny_all()], workload, req) is False, "the deny-all must cover every namespace"
    assert decide([], workload, req) is True, "the evaluator's baseline: without policies Istio allows"


def test_gateway_without_model_allows_still_denies_by_default() -> None:
    # Before any model is deployed the gateway has only the health ALLOW; paths outside it stay shut.
    policies = [mesh.deny_all(), mesh.deny_without_token(MODELS), mesh.health_allow([API_HOST], MODELS)]
    assert decide(policies, GATEWAY_POD, Request(TOKEN, "GET", "/v2/models/x/infer")) is False


def test_without_models_every_tokenless_request_is_denied() -> None:
    policies = [mesh.deny_all(), mesh.deny_without_token([])]
    assert decide(policies, GATEWAY_POD, Request(None, "GET", "/v2/models/x/ready")) is False
    with pytest.raises(ValueError, match="at least one model"):
        mesh.health_allow([API_HOST], [])
