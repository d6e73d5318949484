"""The Mesh component as built: charts from the in-region OCI repository, the security objects wired from
config, the rate limit service after istiod, and nothing that bypasses the sidecars."""

from dataclasses import replace
from typing import Any

import pulumi
import pytest

from stacks.artifacts import load_lock
from stacks.components.mesh import Mesh, MeshArgs
from stacks.manifests import mesh as manifests
from stacks.manifests import serving
from stacks.manifests.sticky import CALLER_HEADER
from stacks.preview.monitor import Registration
from stacks.settings import StackConfig
from tests.stacks.conftest import Built, build_component
from tests.stacks.manifests.test_mesh import foreign_images, walk

REGISTRY = "111111111111.dkr.ecr.eu-central-1.amazonaws.com"
RELEASE = "kubernetes:helm.sh/v3:Release"
CHART_KEYS = {"base": "istio-base", "cni": "istio-cni", "istiod": "istio-istiod", "gateway": "istio-gateway"}


def _args(eu_config: StackConfig, **overrides: Any) -> MeshArgs:
    args = MeshArgs(
        gateway=eu_config.gateway,
        # An Output, as the platform layer passes it from the infra stack's outputs.
        registry=pulumi.Output.from_input(REGISTRY),
        models=eu_config.models,
        region="eu-central-1",
    )
    return replace(args, **overrides)


@pytest.fixture(scope="module")
def mesh(eu_config: StackConfig) -> Built:
    return build_component(lambda opts: Mesh("mesh", _args(eu_config), opts))


@pytest.fixture(scope="module")
def onprem_mesh(eu_config: StackConfig) -> Built:
    args = _args(eu_config, region=None, egress_hosts=("store.dc1.example",))
    return build_component(lambda opts: Mesh("mesh", args, opts))


def _release(mesh: Built, key: str) -> Registration:
    return mesh.one(RELEASE, f"mesh-{key}")


@pytest.mark.parametrize(("key", "lock_key"), CHART_KEYS.items())
def test_charts_come_from_the_in_region_oci_repository(mesh: Built, key: str, lock_key: str) -> None:
    chart = load_lock().chart(lock_key)
    inputs = _release(mesh, key).inputs
    assert inputs["chart"] == chart.oci(REGISTRY), f"{key}: chart {inputs['chart']}"
    assert inputs["version"] == chart.version, f"{key}: version {inputs.get('version')} is not the locked one"
    assert "repositoryOpts" not in inputs, f"{key}: a repository URL would pull the chart from upstream"


def test_every_chart_image_is_the_registrys_by_digest(mesh: Built) -> None:
    bad = [
        f"{r.name}: {i}" for r in mesh.of_type(RELEASE) for i in foreign_images(r.inputs["values"], REGISTRY)
    ]
    assert not bad, f"images from outside the region or not pinned: {bad}"
    images = [p for r in mesh.of_type(RELEASE) for p, _ in walk(r.inputs["values"]) if p.endswith("image")]
    assert len(images) >= 4, f"istiod, proxy, proxy_init and CNI images must be set, found {images}"


def test_nothing_excludes_outbound_ports(mesh: Built) -> None:
    found = [r.name for r in mesh.registrations if "excludeOutboundPorts" in str(r.inputs)]
    assert not found, f"these bypass the sidecar and REGISTRY_ONLY: {found}"


def test_extra_istiod_values_are_merged(eu_config: StackConfig) -> None:
    extra = {"meshConfig": {"extensionProviders": [{"name": "otel-tracing"}]}}
    built = build_component(lambda opts: Mesh("mesh", _args(eu_config, istiod_values=extra), opts))
    values = _release(built, "istiod").inputs["values"]
    assert values["meshConfig"]["extensionProviders"] == [{"name": "otel-tracing"}], values["meshConfig"]
    assert values["meshConfig"]["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"}, "merge dropped a value"


def test_gateway_service_is_cluster_ip(mesh: Built) -> None:
    values = _release(mesh, "gateway").inputs["values"]
    assert values["service"]["type"] == "ClusterIP", (
        "the NLB is infra's; the TargetGroupBinding targets the pods"
    )
    assert _release(mesh, "gateway").inputs["name"] == manifests.GATEWAY_RELEASE, (
        "the SA (principal) name changes"
    )


@pytest.mark.parametrize(("key", "selector"), [("istiod", manifests.ISTIOD_SELECTOR), ("gateway", None)])
def test_istiod_and_gateway_have_budget_and_zone_spread(mesh: Built, key: str, selector: object) -> None:
    values = _release(mesh, key).inputs["values"]
    scope = values["pilot"] if key == "istiod" else values
    budget = (
        values["global"]["defaultPodDisruptionBudget"] if key == "istiod" else values["podDisruptionBudget"]
    )
    assert budget in ({"enabled": True}, {"minAvailable": 1}), f"{key}: budget {budget}"
    keys = [c["topologyKey"] for c in scope["topologySpreadConstraints"]]
    assert keys == [manifests.ZONE], f"{key}: spread {keys}"


def test_mesh_wide_strict_mtls(mesh: Built) -> None:
    (peer,) = mesh.kinds("PeerAuthentication")
    assert peer["metadata"]["namespace"] == "istio-system", "not in the root namespace, so not mesh-wide"
    assert peer["spec"] == {"mtls": {"mode": "STRICT"}}, f"spec: {peer['spec']}"


def test_deny_all_in_the_root_namespace(mesh: Built) -> None:
    deny_all = [p for p in mesh.kinds("AuthorizationPolicy") if p["spec"] == {}]
    assert len(deny_all) == 1, "no mesh-wide deny-by-default policy"
    assert deny_all[0]["metadata"]["namespace"] == manifests.NAMESPACE, deny_all[0]["metadata"]


def test_gateway_https_only_with_the_configured_certificate(mesh: Built, eu_config: StackConfig) -> None:
    (gateway,) = mesh.kinds("Gateway")
    (server,) = gateway["spec"]["servers"]
    assert server["port"]["number"] == 443, "only 443: no plain-HTTP server"
    assert server["tls"]["credentialName"] == eu_config.gateway.tls_credential_name, (
        "certificate not from config"
    )
    assert server["tls"]["mode"] == "SIMPLE", "443 must terminate the NLB's TLS"


def test_request_authentication_from_config(mesh: Built, eu_config: StackConfig) -> None:
    (auth,) = mesh.kinds("RequestAuthentication")
    rule = auth["spec"]["jwtRules"][0]
    assert (rule["issuer"], rule["jwksUri"]) == (eu_config.gateway.jwt_issuer, eu_config.gateway.jwks_uri), (
        rule
    )
    assert rule["outputClaimToHeaders"] == [{"header": CALLER_HEADER, "claim": "sub"}], rule


def test_requests_without_token_are_denied_except_health(mesh: Built, eu_config: StackConfig) -> None:
    (deny,) = [p for p in mesh.kinds("AuthorizationPolicy") if p["spec"].get("action") == "DENY"]
    rule = deny["spec"]["rules"][0]
    assert rule["from"][0]["source"] == {"notRequestPrincipals": ["*"]}, rule
    exempt = rule["to"][0]["operation"]["notPaths"]
    assert exempt == manifests.health_paths(m.name for m in eu_config.models), f"exempt paths {exempt}"


def test_health_checks_allowed_on_the_api_host(mesh: Built, eu_config: StackConfig) -> None:
    (allow,) = [
        p for p in mesh.kinds("AuthorizationPolicy") if p["metadata"]["name"] == "allow-health-checks"
    ]
    operation = allow["spec"]["rules"][0]["to"][0]["operation"]
    assert operation["hosts"] == [eu_config.gateway.api_host], operation
    assert operation["methods"] == ["GET"], operation


def test_caller_filter_knows_each_models_sticky_header(mesh: Built, eu_config: StackConfig) -> None:
    (lua,) = [f for f in mesh.kinds("EnvoyFilter") if f["metadata"]["name"] == "caller-and-bucket"]
    source = lua["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["default_source_code"]
    sticky = {m.name: m.variants.sticky_header for m in eu_config.models if m.variants.sticky_header}
    assert len(sticky) >= 1, "eu-prod has no sticky model: the filter would be tested against nothing"
    for name, header in sticky.items():
        assert f'["{name}"] = "{header.lower()}"' in source["inline_string"], name


def test_rate_limit_covers_every_route_of_every_model(mesh: Built, eu_config: StackConfig) -> None:
    (limit,) = [f for f in mesh.kinds("EnvoyFilter") if f["metadata"]["name"] == "global-ratelimit"]
    patched = {
        p["match"]["routeConfiguration"]["vhost"]["route"]["name"]
        for p in limit["spec"]["configPatches"]
        if p["applyTo"] == "HTTP_ROUTE"
    }
    missing = {n for m in eu_config.models for n in serving.route_names(m)} - patched
    assert not missing, f"routes without a rate limit: {missing}"


def test_no_local_rate_limit_filter(mesh: Built) -> None:
    found = [r.name for r in mesh.registrations if "local_ratelimit" in str(r.inputs)]
    assert not found, f"a per-pod bucket multiplies the limit by the replica count: {found}"


def test_service_entries_for_the_region(mesh: Built) -> None:
    hosts = {h for e in mesh.kinds("ServiceEntry") for h in e["spec"]["hosts"]}
    want = {
        "s3.eu-central-1.amazonaws.com",
        "*.s3.eu-central-1.amazonaws.com",
        "sts.eu-central-1.amazonaws.com",
    }
    assert hosts == want, f"ServiceEntry hosts {hosts}"


def test_onprem_mesh_has_no_aws_endpoints_but_its_store(onprem_mesh: Built) -> None:
    hosts = {h for e in onprem_mesh.kinds("ServiceEntry") for h in e["spec"]["hosts"]}
    assert hosts == {"store.dc1.example"}, f"ServiceEntry hosts {hosts}"


def test_rate_limit_pods_wait_for_istiod(mesh: Built) -> None:
    istiod = _release(mesh, "istiod").urn
    deployments = mesh.of_type("kubernetes:apps/v1:Deployment")
    assert {d.name for d in deployments} == {"mesh-rl-redis", "mesh-rl-service"}, [
        d.name for d in deployments
    ]
    late = [d.name for d in deployments if istiod not in d.dependencies]
    assert not late, (
        f"{late} could start before the injector exists, without sidecars, refused by STRICT mTLS"
    )


def test_rate_limit_service_waits_for_redis(mesh: Built) -> None:
    redis = mesh.one("kubernetes:apps/v1:Deployment", "mesh-rl-redis").urn
    service = mesh.one("kubernetes:apps/v1:Deployment", "mesh-rl-service")
    assert redis in service.dependencies, "the service exits when Redis is unreachable at start"


def test_rate_limit_images_resolve_to_the_registry(mesh: Built) -> None:
    deployments = mesh.of_type("kubernetes:apps/v1:Deployment")
    assert sorted(d.name.rsplit("-", 1)[-1] for d in deployments) == ["redis", "service"], deployments
    for deployment in deployments:
        spec = deployment.inputs["spec"]["template"]["spec"]
        assert not foreign_images(spec, REGISTRY), f"{deployment.name}: {foreign_images(spec, REGISTRY)}"


def test_no_read_of_a_load_balancer(mesh: Built) -> None:
    reads = [r.resource_id for r in mesh.registrations if r.op == "read"]
    assert not reads, f"the NLB is infra's; the platform reads nothing: {reads}"
