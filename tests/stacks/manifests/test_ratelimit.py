"""Global rate limiting: the gateway's filter, the routes' descriptors and the service's rules agree, and the
service and its Redis are reachable only by who must reach them."""

from typing import Any

import pytest
import yaml

from stacks.manifests import Manifest, mesh, ratelimit, serving
from stacks.manifests.sticky import CALLER_HEADER
from stacks.settings import ModelConfig, StackConfig
from tests.stacks.manifests.test_mesh import REGISTRY, Request, decide, foreign_images
from tests.stacks.schemas import validate

LIMITS = [("tabular-classifier", 400), ("ticket-router", 100)]
RATELIMIT_POD = (ratelimit.RATELIMIT_NAMESPACE, ratelimit.labels(ratelimit.SERVICE))
REDIS_POD = (ratelimit.RATELIMIT_NAMESPACE, ratelimit.labels(ratelimit.REDIS))


def _routes(models: tuple[ModelConfig, ...]) -> list[tuple[str, list[str]]]:
    return [(m.name, serving.route_names(m)) for m in models]


def _patches(manifest: Manifest, apply_to: str) -> list[dict[str, Any]]:
    return [p for p in manifest["spec"]["configPatches"] if p["applyTo"] == apply_to]


def _filter(models: tuple[ModelConfig, ...]) -> dict[str, Any]:
    (patch,) = _patches(ratelimit.gateway_filter(_routes(models)), "HTTP_FILTER")
    return patch


def _deployments() -> dict[str, Manifest]:
    return {
        ratelimit.SERVICE: ratelimit.service_deployment(REGISTRY, LIMITS),
        ratelimit.REDIS: ratelimit.redis_deployment(REGISTRY),
    }


def _everything() -> list[Manifest]:
    return [
        ratelimit.namespace(),
        *ratelimit.static_manifests(LIMITS),
        *_deployments().values(),
        ratelimit.gateway_filter([("tabular-classifier", ["tabular-classifier-weighted"])]),
    ]


# --- the gateway side -----------------------------------------------------------------------------


def test_filter_runs_after_jwt_authn(eu_config: StackConfig) -> None:
    patch = _filter(eu_config.models)
    sub = patch["match"]["listener"]["filterChain"]["filter"].get("subFilter", {}).get("name")
    operation = patch["patch"]["operation"]
    after = (operation, sub) in {
        ("INSERT_AFTER", "envoy.filters.http.jwt_authn"),
        # The router is always last, so whatever goes right before it comes after jwt_authn.
        ("INSERT_BEFORE", "envoy.filters.http.router"),
    }
    assert after, f"{operation} {sub}: the caller header would not be set yet when descriptors are built"
    assert patch["match"]["context"] == "GATEWAY", patch["match"]


def test_filter_calls_the_service_through_its_mesh_cluster(eu_config: StackConfig) -> None:
    config = _filter(eu_config.models)["patch"]["value"]["typed_config"]
    cluster = config["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    (service,) = [s for s in ratelimit.services() if s["metadata"]["name"] == ratelimit.SERVICE]
    port = service["spec"]["ports"][0]["port"]
    want = f"outbound|{port}||{ratelimit.SERVICE}.{ratelimit.RATELIMIT_NAMESPACE}.svc.cluster.local"
    assert cluster == want, f"cluster {cluster}: istiod names the Service's cluster {want}"
    assert config["domain"] == ratelimit.service_config(LIMITS)["domain"], "filter and rules in other domains"


def test_filter_fails_open_with_a_bounded_wait(eu_config: StackConfig) -> None:
    config = _filter(eu_config.models)["patch"]["value"]["typed_config"]
    assert config["failure_mode_deny"] is False, "a limiter outage would become an API outage"
    assert config["timeout"] == ratelimit.TIMEOUT, "without a timeout a slow limiter delays every request"


def test_every_model_route_sends_model_and_caller(eu_config: StackConfig) -> None:
    routes = _patches(ratelimit.gateway_filter(_routes(eu_config.models)), "HTTP_ROUTE")
    by_name = {p["match"]["routeConfiguration"]["vhost"]["route"]["name"]: p for p in routes}
    assert len(eu_config.models) >= 2 and len(by_name) >= len(eu_config.models), sorted(by_name)
    for model in eu_config.models:
        for name in serving.route_names(model):
            assert name in by_name, f"route {name} of {model.name} is not limited"
            (limit,) = by_name[name]["patch"]["value"]["route"]["rate_limits"]
            assert limit["actions"] == [
                {"generic_key": {"descriptor_key": "model", "descriptor_value": model.name}},
                {"request_headers": {"header_name": CALLER_HEADER, "descriptor_key": "caller"}},
            ], f"route {name}: {limit}"


def test_route_patches_name_only_the_models_routes(eu_config: StackConfig) -> None:
    routes = _patches(ratelimit.gateway_filter(_routes(eu_config.models)), "HTTP_ROUTE")
    names = [p["match"]["routeConfiguration"]["vhost"]["route"]["name"] for p in routes]
    want = [n for m in eu_config.models for n in serving.route_names(m)]
    assert names == want, f"patched {names}, routes {want}"


# --- the rules ------------------------------------------------------------------------------------


def test_rules_give_each_model_its_rate_per_caller(eu_config: StackConfig) -> None:
    limits = [(m.name, m.rate_limit.requests_per_second) for m in eu_config.models]
    config = yaml.safe_load(ratelimit.config_map(limits)["data"]["config.yaml"])
    found = {
        d["value"]: (d["descriptors"][0]["key"], d["descriptors"][0]["rate_limit"])
        for d in config["descriptors"]
    }
    want = {
        m.name: ("caller", {"unit": "second", "requests_per_unit": m.rate_limit.requests_per_second})
        for m in eu_config.models
    }
    assert found == want, f"rules {found}"
    assert all(d["key"] == "model" for d in config["descriptors"]), config["descriptors"]


def test_a_new_rule_rolls_the_service() -> None:
    def checksum(limits: list[tuple[str, int]]) -> str:
        annotations = ratelimit.service_deployment(REGISTRY, limits)["spec"]["template"]["metadata"][
            "annotations"
        ]
        return str(annotations["checksum/config"])

    assert checksum(LIMITS) != checksum([("tabular-classifier", 1)]), "changed rules would wait for a reload"


def test_service_reads_the_rules_where_they_are_mounted() -> None:
    container = _deployments()[ratelimit.SERVICE]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == f"{env['RUNTIME_ROOT']}/{env['RUNTIME_SUBDIRECTORY']}/config", (mount, env)
    redis_host = f"{ratelimit.REDIS}.{ratelimit.RATELIMIT_NAMESPACE}.svc.cluster.local:{ratelimit.REDIS_PORT}"
    assert env["REDIS_URL"] == redis_host, env["REDIS_URL"]


# --- the pods -------------------------------------------------------------------------------------


def test_images_from_the_registry_by_digest() -> None:
    specs = {name: d["spec"]["template"]["spec"] for name, d in _deployments().items()}
    assert not foreign_images(specs, REGISTRY), foreign_images(specs, REGISTRY)


def test_service_two_replicas_with_a_budget_across_zones() -> None:
    deployment = _deployments()[ratelimit.SERVICE]
    assert deployment["spec"]["replicas"] == 2, "one pod is a single point of failure"
    budget = ratelimit.disruption_budget()
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == mesh.ZONE, spread


def test_redis_is_a_single_counter_store() -> None:
    # Two Redis pods behind one Service would each count part of a caller's requests.
    assert _deployments()[ratelimit.REDIS]["spec"]["replicas"] == 1


@pytest.mark.parametrize("app", [ratelimit.SERVICE, ratelimit.REDIS])
def test_pods_meet_restricted_pod_security(app: str) -> None:
    pod = _deployments()[app]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True, pod["securityContext"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, pod["securityContext"]
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}, ctx
        assert ctx["readOnlyRootFilesystem"] is True, ctx
        assert set(container["resources"]) == {"requests", "limits"}, f"{app}: {container['resources']}"


def test_namespace_is_in_the_mesh_and_restricted() -> None:
    labels = ratelimit.namespace()["metadata"]["labels"]
    assert labels["istio-injection"] == "enabled", "without sidecars the gateway's mTLS call is refused"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted", labels


# --- who may call ---------------------------------------------------------------------------------


def _policies() -> list[Manifest]:
    return [mesh.deny_all(), *ratelimit.authorization_policies()]


@pytest.mark.parametrize(
    ("workload", "peer", "port", "allowed"),
    [
        (RATELIMIT_POD, mesh.GATEWAY_PRINCIPAL, ratelimit.GRPC_PORT, True),
        (RATELIMIT_POD, "cluster.local/ns/payments/sa/tabular-classifier", ratelimit.GRPC_PORT, False),
        (RATELIMIT_POD, mesh.GATEWAY_PRINCIPAL, ratelimit.HTTP_PORT, False),
        (REDIS_POD, ratelimit.principal(ratelimit.SERVICE), ratelimit.REDIS_PORT, True),
        (REDIS_POD, mesh.GATEWAY_PRINCIPAL, ratelimit.REDIS_PORT, False),
        (REDIS_POD, "cluster.local/ns/payments/sa/tabular-classifier", ratelimit.REDIS_PORT, False),
    ],
)
def test_mesh_identity_decides_who_reaches_the_service_and_redis(
    workload: tuple[str, dict[str, str]], peer: str, port: int, allowed: bool
) -> None:
    req = Request(None, "POST", "/", peer=peer, port=port)
    assert decide(_policies(), workload, req) is allowed, f"{peer} -> {workload[1]['app']}:{port}"


def test_principals_name_the_pods_service_accounts() -> None:
    service_sa = _deployments()[ratelimit.SERVICE]["spec"]["template"]["spec"]["serviceAccountName"]
    assert ratelimit.principal(service_sa) == ratelimit.principal(ratelimit.SERVICE), service_sa
    assert mesh.GATEWAY_PRINCIPAL.endswith(f"/sa/{mesh.GATEWAY_RELEASE}"), "the gateway chart names its SA so"


def _policy(name: str) -> Manifest:
    (found,) = [p for p in ratelimit.network_policies() if p["metadata"]["name"] == name]
    return found


def test_network_lets_only_the_service_reach_redis() -> None:
    ingress = _policy(ratelimit.REDIS)["spec"]["ingress"]
    to_redis = [r for r in ingress if {"protocol": "TCP", "port": ratelimit.REDIS_PORT} in r["ports"]]
    assert [r["from"] for r in to_redis] == [
        [{"podSelector": {"matchLabels": ratelimit.labels(ratelimit.SERVICE)}}]
    ], f"Redis has no password: {to_redis}"


def test_network_lets_only_the_gateway_reach_the_service() -> None:
    ingress = _policy(ratelimit.SERVICE)["spec"]["ingress"]
    grpc = [r for r in ingress if {"protocol": "TCP", "port": ratelimit.GRPC_PORT} in r["ports"]]
    (peer,) = grpc[0]["from"]
    assert peer["podSelector"]["matchLabels"] == mesh.GATEWAY_SELECTOR, peer
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": mesh.NAMESPACE}, peer


def test_namespace_denies_by_default() -> None:
    spec = _policy("default-deny")["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}, (
        spec
    )


# --- schemas --------------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", _everything(), ids=lambda m: f"{m['kind']}-{m['metadata']['name']}")
def test_validates_against_its_schema(manifest: Manifest) -> None:
    validate(manifest)
