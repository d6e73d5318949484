"""Cluster add-ons built alone: in-region charts, explicit cluster facts, ordering, EKS-only autoscaler."""

import itertools
from typing import Any

from stacks.components.addons import (
    Autoscaling,
    AutoscalingArgs,
    CertManager,
    CertManagerArgs,
    ClusterAutoscalerSettings,
    LoadBalancerController,
    LoadBalancerControllerArgs,
)
from stacks.preview.monitor import Registration
from tests.stacks.conftest import Built, build_component
from tests.stacks.schemas import validate

REGISTRY = "123456789012.dkr.ecr.eu-central-1.amazonaws.com"
TG = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/gw/abc"
RELEASE = "kubernetes:helm.sh/v3:Release"


def _depends(reg: Registration) -> set[str]:
    return {u.split("::")[-1] for u in reg.dependencies}


def _releases(built: Built) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in built.of_type(RELEASE)}


def _lb() -> Built:
    args = LoadBalancerControllerArgs(
        registry=REGISTRY,
        cluster_name="eu-prod",
        region="eu-central-1",
        vpc_id="vpc-0abc",
        role_arn="arn:aws:iam::123456789012:role/lbc",
        target_group_arn=TG,
        nlb_security_group_id="sg-0nlb",
    )
    return build_component(lambda opts: LoadBalancerController("lbc", args, opts))


def test_lb_controller_release_from_the_mirror_with_cluster_facts() -> None:
    release = _lb().one(RELEASE).inputs
    assert release["chart"] == f"oci://{REGISTRY}/mirror/charts/aws-load-balancer-controller", release[
        "chart"
    ]
    values = release["values"]
    assert (values["clusterName"], values["region"], values["vpcId"]) == (
        "eu-prod",
        "eu-central-1",
        "vpc-0abc",
    )
    assert release["namespace"] == "kube-system", release["namespace"]


def test_binding_waits_for_the_controller() -> None:
    built = _lb()
    binding = built.one("kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding")
    assert "lbc-release" in _depends(binding), "the binding's CRD and webhook come with the controller"
    assert binding.inputs["spec"]["targetGroupARN"] == TG, binding.inputs["spec"]
    assert binding.inputs["metadata"]["namespace"] == "istio-system", binding.inputs["metadata"]


def test_certificate_chain_created_in_order() -> None:
    args = CertManagerArgs(
        registry=REGISTRY, api_host="api.models.example.eu", gateway_credential_name="model-api-tls"
    )
    built = build_component(lambda opts: CertManager("cm", args, opts))
    order = [
        "cm-release",
        "cm-selfsigned-issuer",
        "cm-ca-certificate",
        "cm-ca-issuer",
        "cm-gateway-certificate",
    ]
    by_name = {r.name: r for r in built.registrations}
    for before, after in itertools.pairwise(order):
        assert before in _depends(by_name[after]), f"{after} created before {before} exists"
    gateway = by_name["cm-gateway-certificate"].inputs
    validate({k: v for k, v in gateway.items() if k != "metadata"} | {"metadata": {}})
    assert gateway["spec"]["secretName"] == "model-api-tls", gateway["spec"]
    assert "cm-ns" in _depends(by_name["cm-release"]), "release before its namespace"


def _autoscaling(eks: bool) -> Built:
    settings = (
        ClusterAutoscalerSettings(
            cluster_name="eu-prod", region="eu-central-1", role_arn="arn:aws:iam::123456789012:role/ca"
        )
        if eks
        else None
    )
    args = AutoscalingArgs(registry=REGISTRY, cluster_autoscaler=settings)
    return build_component(lambda opts: Autoscaling("as", args, opts))


def test_eks_gets_metrics_server_and_cluster_autoscaler() -> None:
    releases = _releases(_autoscaling(eks=True))
    assert set(releases) == {"as-metrics-server", "as-cluster-autoscaler"}, set(releases)
    values = releases["as-cluster-autoscaler"]["values"]
    assert values["autoDiscovery"]["clusterName"] == "eu-prod" and values["awsRegion"] == "eu-central-1", (
        values
    )
    for inputs in releases.values():
        assert inputs["chart"].startswith(f"oci://{REGISTRY}/mirror/charts/"), inputs["chart"]
        assert inputs["version"], "chart not pinned"


def test_onprem_gets_metrics_server_only() -> None:
    releases = _releases(_autoscaling(eks=False))
    assert set(releases) == {"as-metrics-server"}, f"AWS autoscaler on a non-EKS cluster: {set(releases)}"
