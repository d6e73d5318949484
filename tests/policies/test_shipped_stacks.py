"""The gate on every shipped stack's offline plan (`servectl plan`), and on mutations of one.

The plans come from the stacks' real program under mocks, through the contract the two
parts share: the `pulumi preview --json` document. The mutations prove that the rules bite
on the real resource shapes, not only on crafted fixtures.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from policies.normalize import from_document
from policies.opa import Gate
from tests.policies.conftest import PLANS, STACKS

Doc = dict[str, Any]


def test_every_stack_is_shipped() -> None:
    assert {"uae-prod", "eu-prod", "us-prod", "smb-dev"} <= set(STACKS), STACKS


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


MUTATIONS: dict[str, tuple[str, Callable[[Doc], None], set[str]]] = {
    "wrong-region": ("infra", wrong_region, {"RES-002"}),
    "public-cluster": ("infra", public_cluster, {"NET-001"}),
    "permissive-mesh": ("platform", permissive_mesh, {"IDN-001", "IDN-002"}),
    "root-pods": ("platform", root_pods, {"WL-001"}),
    "bad-weights": ("platform", bad_weights, {"TRF-001", "TRF-003"}),
    "short-retention": ("infra", short_retention, {"AUD-003"}),
    "no-sse": ("infra", no_sse, {"ENC-001"}),
    "node-role-s3": ("infra", node_role_s3, {"IDN-007"}),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutated_shipped_plan_raises_exactly_its_ids(gate: Gate, plans: dict[str, Doc], name: str) -> None:
    layer, mutate, expected = MUTATIONS[name]
    doc = copy.deepcopy(plans[f"uae-prod.{layer}"])
    mutate(doc)
    result = gate.evaluate(from_document(doc))
    assert {f["id"] for f in result["findings"]} == expected, name
