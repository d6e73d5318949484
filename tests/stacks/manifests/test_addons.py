"""Cluster add-ons' values and objects: explicit cluster facts, IRSA, mirrored images, the CA chain."""

from typing import Any

import pytest

from stacks import contract
from stacks.manifests import addons, mesh
from tests.stacks.schemas import validate

REGISTRY = "123456789012.dkr.ecr.eu-central-1.amazonaws.com"
ROLE = "arn:aws:iam::123456789012:role/r"
TG = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/gw/abc"


def image_refs(values: Any, registry: str | None = None) -> list[str]:
    """Every image a chart's values name, as `host/repository` (the host from `global.imageRegistry` where the
    repository has none), each with `@<digest>` when the values pin one."""
    if isinstance(values, dict):
        registry = (values.get("global") or {}).get("imageRegistry", registry)
        refs = [ref for v in values.values() for ref in image_refs(v, registry)]
        repo = values.get("repository")
        if isinstance(repo, str):
            host = repo.split("/", 1)[0]
            full = repo if "." in host or ":" in host else f"{registry}/{repo}"
            tag = str(values.get("tag", ""))
            digest = values.get("digest") or values.get("sha") or (tag.split("@", 1)[1] if "@" in tag else "")
            refs.append(f"{full}@{digest}" if digest else full)
        return refs
    if isinstance(values, list):
        return [ref for v in values for ref in image_refs(v, registry)]
    return []


def assert_mirrored(values: Any, expected: int) -> None:
    refs = image_refs(values)
    assert len(refs) == expected, f"expected {expected} images, found {refs}"
    for ref in refs:
        assert ref.startswith(f"{REGISTRY}/mirror/"), f"{ref} is not pulled from the in-region mirror"
        assert "@" in ref, f"{ref} is not pinned by digest"


def test_image_refs_finds_an_unmirrored_image() -> None:
    refs = image_refs({"image": {"repository": "quay.io/jetstack/cert-manager-controller", "tag": "v1"}})
    assert refs == ["quay.io/jetstack/cert-manager-controller"], refs
    with pytest.raises(AssertionError):
        assert_mirrored({"image": {"repository": "public.ecr.aws/eks/x", "tag": "v1@sha256:0"}}, 1)


def test_lb_controller_gets_cluster_region_and_vpc_explicitly() -> None:
    values = addons.lb_controller_values(REGISTRY, "eu-prod", "eu-central-1", "vpc-0abc", ROLE)
    facts = {k: values[k] for k in ("clusterName", "region", "vpcId")}
    assert facts == {"clusterName": "eu-prod", "region": "eu-central-1", "vpcId": "vpc-0abc"}, (
        f"pods cannot reach IMDS to look these up: {facts}"
    )
    assert_mirrored(values, 1)


def test_lb_controller_is_highly_available_with_irsa() -> None:
    values = addons.lb_controller_values(REGISTRY, "c", "eu-central-1", "vpc-0abc", ROLE)
    assert values["replicaCount"] == 2 and values["podDisruptionBudget"], values
    assert values["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone", values
    annotations = values["serviceAccount"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == ROLE, annotations
    assert annotations["eks.amazonaws.com/sts-regional-endpoints"] == "true", "STS would be called globally"


def test_target_group_binding_registers_the_gateway_by_ip() -> None:
    spec = addons.target_group_binding(TG, "sg-0nlb")["spec"]
    assert spec["serviceRef"] == {"name": "istio-ingressgateway", "port": 443}, spec
    assert spec["targetGroupARN"] == TG and spec["targetType"] == "ip", spec


def test_target_group_binding_opens_https_and_health_ports_to_the_nlb_only() -> None:
    (rule,) = addons.target_group_binding(TG, "sg-0nlb")["spec"]["networking"]["ingress"]
    assert rule["from"] == [{"securityGroup": {"groupID": "sg-0nlb"}}], rule
    ports = {p["port"] for p in rule["ports"]}
    assert ports == {mesh.GATEWAY_HTTPS_TARGET, 15021}, f"pod ports the NLB must reach: {ports}"


def test_target_group_binding_is_in_the_gateway_namespace() -> None:
    meta = addons.target_group_binding(TG, "sg-0nlb")["metadata"]
    assert meta["namespace"] == "istio-system", "a binding only references Services of its own namespace"


def test_certificate_chain_validates_against_cert_manager_crds() -> None:
    for manifest in (
        addons.self_signed_issuer(),
        addons.ca_certificate(),
        addons.ca_issuer(),
        addons.gateway_certificate("api.models.example.eu", "model-api-tls"),
    ):
        validate(manifest)


def test_schema_rejects_a_misspelt_certificate_field() -> None:
    bad = addons.ca_certificate()
    bad["spec"]["isCa"] = bad["spec"].pop("isCA")
    with pytest.raises(Exception, match="isCa"):
        validate(bad)


def test_certificate_chain_runs_self_signed_to_ca_to_gateway() -> None:
    ca_cert, ca_issuer = addons.ca_certificate(), addons.ca_issuer()
    gateway = addons.gateway_certificate("api.models.example.eu", "model-api-tls")
    assert "selfSigned" in addons.self_signed_issuer()["spec"], "the root is not self-signed"
    assert ca_cert["spec"]["issuerRef"]["name"] == addons.SELF_SIGNED_ISSUER, ca_cert
    assert ca_cert["spec"]["isCA"] is True, "the CA certificate cannot sign"
    assert ca_issuer["spec"]["ca"]["secretName"] == ca_cert["spec"]["secretName"], (
        "CA issuer reads another secret"
    )
    assert gateway["spec"]["issuerRef"] == {
        "name": addons.CA_ISSUER,
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


def test_certificates_sit_where_their_readers_look() -> None:
    ca_cert = addons.ca_certificate()
    gateway = addons.gateway_certificate("api.models.example.eu", "model-api-tls")
    assert ca_cert["metadata"]["namespace"] == addons.CERT_MANAGER_NAMESPACE, (
        "a ClusterIssuer reads its CA secret from cert-manager's namespace"
    )
    assert gateway["metadata"]["namespace"] == "istio-system", (
        "the gateway reads its credential from its namespace"
    )
    assert gateway["spec"]["secretName"] == "model-api-tls", "secretName must be the gateway's credentialName"
    assert gateway["spec"]["dnsNames"] == ["api.models.example.eu"], gateway


def test_cert_manager_images_all_mirrored() -> None:
    assert_mirrored(addons.cert_manager_values(REGISTRY), 5)


def test_metrics_server_is_highly_available_and_mirrored() -> None:
    values = addons.metrics_server_values(REGISTRY)
    assert values["replicas"] == 2 and values["podDisruptionBudget"]["enabled"], values
    assert_mirrored(values, 1)


def test_cluster_autoscaler_discovers_this_cluster_in_this_region() -> None:
    values = addons.cluster_autoscaler_values(REGISTRY, "eu-prod", "eu-central-1", ROLE)
    assert values["autoDiscovery"]["clusterName"] == "eu-prod", values["autoDiscovery"]
    assert values["awsRegion"] == "eu-central-1", "region is not looked up from IMDS"
    assert values["extraArgs"]["balance-similar-node-groups"] is True, "zones would drift apart"
    assert values["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"] == ROLE
    assert values["podDisruptionBudget"], "no PDB"
    assert_mirrored(values, 1)


def test_every_irsa_role_of_the_platform_has_a_subject() -> None:
    needed = set(contract.PLATFORM_ROLES)
    assert set(addons.IRSA_SUBJECTS) == needed, f"subjects: {sorted(addons.IRSA_SUBJECTS)}"
