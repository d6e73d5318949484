"""The gate on every shipped stack's offline plan (`servectl plan`), and on mutations of one.

The plans come from the stacks' real program under mocks, through the contract the two
parts share: the `pulumi preview --json` document. The mutations prove that the rules bite
on the real resource shapes, not only on crafted fixtures.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from policies.normalize import from_document
from policies.opa import Gate
from tests.policies.conftest import PLANS, REPO, STACKS

Doc = dict[str, Any]


def test_every_stack_is_shipped() -> None:
    assert {"uae-prod", "eu-prod", "us-prod", "smb-eu", "smb-ae"} <= set(STACKS), STACKS


@pytest.mark.parametrize("stack", PLANS)
def test_shipped_plan_has_no_unwaived_finding(gate: Gate, plans: dict[str, Doc], stack: str) -> None:
    result = gate.evaluate(from_document(plans[stack]))
    denied = [(f["id"], f["urn"], f["message"]) for f in result["findings"] if not f["waived"]]
    assert denied == [], f"{stack}: {denied}"


def states(doc: Doc, type_: str) -> Iterator[Doc]:
    """The newState of every step of a type."""
    for step in doc["steps"]:
        if step["newState"]["type"] == type_:
            yield step["newState"]


def wrong_region(doc: Doc) -> None:
    for p in states(doc, "pulumi:providers:aws"):
        p["inputs"]["region"] = "eu-west-1"


def public_cluster(doc: Doc) -> None:
    for c in states(doc, "aws:eks/cluster:Cluster"):
        c["inputs"]["vpcConfig"] = {**c["inputs"].get("vpcConfig", {}), "endpointPublicAccess": True}
        c["inputs"]["vpcConfig"].pop("publicAccessCidrs", None)


def permissive_mesh(doc: Doc) -> None:
    for p in states(doc, "kubernetes:security.istio.io/v1:PeerAuthentication"):
        p["inputs"]["spec"]["mtls"]["mode"] = "PERMISSIVE"


def root_pods(doc: Doc) -> None:
    for d in states(doc, "kubernetes:apps/v1:Deployment"):
        for c in d["inputs"]["spec"]["template"]["spec"]["containers"]:
            c["securityContext"] = {**c.get("securityContext", {}), "runAsUser": 0}


def bad_weights(doc: Doc) -> None:
    for vs in states(doc, "kubernetes:networking.istio.io/v1:VirtualService"):
        for h in vs["inputs"]["spec"]["http"]:
            for r in h["route"]:
                if "weight" in r:
                    r["weight"] = 45


def short_retention(doc: Doc) -> None:
    for g in states(doc, "aws:cloudwatch/logGroup:LogGroup"):
        g["inputs"]["retentionInDays"] = 7


def no_sse(doc: Doc) -> None:
    sse = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    doc["steps"] = [s for s in doc["steps"] if s["newState"]["type"] != sse]


def node_role_s3(doc: Doc) -> None:
    role = next(
        r for r in states(doc, "aws:iam/role:Role") if "ec2.amazonaws.com" in r["inputs"]["assumeRolePolicy"]
    )
    urn = (
        role["urn"].replace("aws:iam/role:Role::", "aws:iam/rolePolicyAttachment:RolePolicyAttachment::")
        + "-s3"
    )
    state = {
        "type": "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "urn": urn,
        "custom": True,
        "inputs": {"role": "nodes", "policyArn": "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"},
        "parent": role["parent"],
        "provider": role["provider"],
        "dependencies": [role["urn"]],
    }
    doc["steps"].append({"op": "create", "urn": urn, "provider": role["provider"], "newState": state})


def releases(doc: Doc, chart: str) -> Iterator[Doc]:
    """The newState of every Helm release of a chart (the last segment of its reference)."""
    for r in states(doc, "kubernetes:helm.sh/v3:Release"):
        if r["inputs"]["chart"].rsplit("/", 1)[-1] == chart:
            yield r


def chart_outside(doc: Doc) -> None:
    for r in releases(doc, "kube-prometheus-stack"):
        r["inputs"]["chart"] = "oci://ghcr.io/prometheus-community/charts/kube-prometheus-stack"


def chart_repository_outside(doc: Doc) -> None:
    for r in releases(doc, "metrics-server"):
        r["inputs"]["repositoryOpts"] = {"repo": "https://kubernetes-sigs.github.io/metrics-server/"}


def values_image_docker_hub(doc: Doc) -> None:
    for r in releases(doc, "metrics-server"):
        r["inputs"]["values"]["image"]["repository"] = "docker.io/bitnami/metrics-server"


def values_image_by_tag(doc: Doc) -> None:
    for r in releases(doc, "cert-manager"):
        del r["inputs"]["values"]["webhook"]["image"]["digest"]


def edge_world_ssh(doc: Doc) -> None:
    for g in states(doc, "aws:ec2/securityGroup:SecurityGroup"):
        if g["urn"].endswith("-edge-nlb"):
            g["inputs"]["ingress"].append(
                {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}
            )


def edge_listener_tcp(doc: Doc) -> None:
    for listener in states(doc, "aws:lb/listener:Listener"):
        listener["inputs"]["protocol"] = "TCP"


def edge_internal(doc: Doc) -> None:
    for lb in states(doc, "aws:lb/loadBalancer:LoadBalancer"):
        lb["inputs"]["internal"] = True


def model_pods_without_irsa(doc: Doc) -> None:
    for sa in states(doc, "kubernetes:core/v1:ServiceAccount"):
        sa["inputs"]["metadata"].pop("annotations", None)


def no_monitoring(doc: Doc) -> None:
    monitoring = {r["urn"] for r in releases(doc, "kube-prometheus-stack")}
    doc["steps"] = [s for s in doc["steps"] if s["newState"]["urn"] not in monitoring]


def images_from_docker_hub(doc: Doc) -> None:
    for d in states(doc, "kubernetes:apps/v1:Deployment"):
        for c in d["inputs"]["spec"]["template"]["spec"]["containers"]:
            c["image"] = "docker.io/library/redis@sha256:" + "0" * 64


MUTATIONS: dict[str, tuple[str, Callable[[Doc], None], set[str]]] = {
    "wrong-region": ("infra", wrong_region, {"RES-002"}),
    "public-cluster": ("infra", public_cluster, {"NET-001"}),
    "permissive-mesh": ("platform", permissive_mesh, {"IDN-001", "IDN-002"}),
    "root-pods": ("platform", root_pods, {"WL-001"}),
    "bad-weights": ("platform", bad_weights, {"TRF-001", "TRF-003"}),
    "short-retention": ("infra", short_retention, {"AUD-003"}),
    "no-sse": ("infra", no_sse, {"ENC-001"}),
    "node-role-s3": ("infra", node_role_s3, {"IDN-007"}),
    "edge-world-ssh": ("infra", edge_world_ssh, {"NET-002"}),
    "edge-listener-tcp": ("infra", edge_listener_tcp, {"NET-002"}),
    "edge-internal": ("infra", edge_internal, {"NET-002"}),
    "model-pods-without-irsa": ("platform", model_pods_without_irsa, {"IDN-005"}),
    "no-monitoring": ("platform", no_monitoring, {"AUD-004"}),
    "chart-outside": ("platform", chart_outside, {"RES-007"}),
    "chart-repository-outside": ("platform", chart_repository_outside, {"RES-007"}),
    "values-image-docker-hub": ("platform", values_image_docker_hub, {"RES-008"}),
    "values-image-by-tag": ("platform", values_image_by_tag, {"RES-008"}),
}

ONPREM_MUTATIONS: dict[str, tuple[Callable[[Doc], None], set[str]]] = {
    "images-from-docker-hub": (images_from_docker_hub, {"RES-006", "WL-008"}),
    "chart-outside": (chart_outside, {"RES-007"}),
    "values-image-docker-hub": (values_image_docker_hub, {"RES-008"}),
    "no-monitoring": (no_monitoring, {"AUD-004"}),
}
"""Mutations of the on-premises plan (onprem-ae's platform layer, its only one)."""


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutated_shipped_plan_raises_exactly_its_ids(gate: Gate, plans: dict[str, Doc], name: str) -> None:
    layer, mutate, expected = MUTATIONS[name]
    doc = copy.deepcopy(plans[f"uae-prod.{layer}"])
    mutate(doc)
    result = gate.evaluate(from_document(doc))
    assert {f["id"] for f in result["findings"]} == expected, name


@pytest.mark.parametrize("name", sorted(ONPREM_MUTATIONS))
def test_mutated_onprem_plan_raises_exactly_its_ids(gate: Gate, plans: dict[str, Doc], name: str) -> None:
    mutate, expected = ONPREM_MUTATIONS[name]
    doc = copy.deepcopy(plans["onprem-ae.platform"])
    mutate(doc)
    result = gate.evaluate(from_document(doc))
    assert {f["id"] for f in result["findings"]} == expected, name


def test_shipped_stacks_are_in_the_policy_data() -> None:
    """Each stack file's jurisdiction, kind and registries are what the policy data says of the stack.

    The gate takes these facts from policies/data/stacks.json, never from a plan; this keeps the
    data in step with the stack files it describes (a new stack or account fails here first).
    """
    data = json.loads((REPO / "policies" / "data" / "stacks.json").read_text())["stacks"]
    for stack in STACKS:
        config = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
        facts = data.get(stack)
        assert facts, f"{stack} is missing from policies/data/stacks.json"
        assert facts["jurisdiction"] == config["model-serving:jurisdiction"], stack
        if "model-serving:onprem" in config:
            expected = {config["model-serving:onprem"]["registry"]}
            assert facts["kind"] == "onprem", stack
        else:
            # The infra layer's registry output: the ECR host of the registry account, and the
            # stack's namespace (stacks/components/registry.py).
            image = config.get("model-serving:image", {})
            account = image.get("registryAccount", config["model-serving:accountId"])
            regions = [r["region"] for r in config["model-serving:regions"]]
            expected = {f"{account}.dkr.ecr.{r}.amazonaws.com/{stack}" for r in regions}
            assert facts["kind"] == "aws", stack
        assert set(facts["registries"]) == expected, stack
