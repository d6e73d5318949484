import pytest

from stacks.components.mesh import Mesh, MeshArgs
from stacks.manifests.mesh import ISTIO_VERSION
from stacks.settings import StackConfig
from tests.stacks.conftest import Built, build_component


@pytest.fixture(scope="module")
def mesh(eu_config: StackConfig) -> Built:
    return build_component(lambda opts: Mesh("mesh", MeshArgs(gateway=eu_config.gateway), opts))


def test_charts_pinned(mesh: Built) -> None:
    releases = mesh.of_type("kubernetes:helm.sh/v3:Release")
    assert {r.inputs["chart"] for r in releases} == {"base", "cni", "istiod", "gateway"}, (
        "Istio charts missing"
    )
    assert all(r.inputs["version"] == ISTIO_VERSION for r in releases), "a chart is not pinned"


def test_mesh_wide_strict_mtls(mesh: Built) -> None:
    (peer,) = mesh.kinds("PeerAuthentication")
    assert peer["metadata"]["namespace"] == "istio-system", "not in the root namespace, so not mesh-wide"
    assert peer["spec"] == {"mtls": {"mode": "STRICT"}}, f"spec: {peer['spec']}"


def test_gateway_tls_443_and_redirect(mesh: Built, eu_config: StackConfig) -> None:
    (gateway,) = mesh.kinds("Gateway")
    servers = {s["port"]["number"]: s for s in gateway["spec"]["servers"]}
    assert servers[443]["tls"]["credentialName"] == eu_config.gateway.tls_credential_name, (
        "certificate not from config"
    )
    assert servers[443]["tls"]["mode"] == "SIMPLE", "443 must terminate TLS"
    assert servers[80]["tls"] == {"httpsRedirect": True}, "port 80 must only redirect"


def test_request_authentication_from_config(mesh: Built, eu_config: StackConfig) -> None:
    (auth,) = mesh.kinds("RequestAuthentication")
    rule = auth["spec"]["jwtRules"][0]
    assert (rule["issuer"], rule["jwksUri"]) == (eu_config.gateway.jwt_issuer, eu_config.gateway.jwks_uri), (
        rule
    )


def test_requests_without_token_are_denied(mesh: Built) -> None:
    deny = [p for p in mesh.kinds("AuthorizationPolicy") if p["spec"]["action"] == "DENY"]
    assert deny, "no deny-by-default policy at the gateway"
    assert deny[0]["spec"]["rules"][0]["from"][0]["source"] == {"notRequestPrincipals": ["*"]}, deny


def test_gateway_hostname_is_read_from_the_service(mesh: Built) -> None:
    reads = [r for r in mesh.registrations if r.op == "read"]
    assert [r.resource_id for r in reads] == ["istio-system/istio-ingressgateway"], f"reads: {reads}"
