"""The gate on the in-cluster retrain's resources in eu-prod's shipped plans (two regions): the receiver's
role and its Deployment pass as shipped, and each rule that applies to them bites on their real shapes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from policies.normalize import from_document
from policies.opa import Gate

Doc = dict[str, Any]


def retrain_states(doc: Doc, type_: str) -> list[Doc]:
    found = [
        s["newState"]
        for s in doc["steps"]
        if s["newState"]["type"] == type_ and "retrain" in s["newState"]["urn"].rsplit("::", 1)[1]
    ]
    assert found, f"no {type_} of the retrain receiver in the plan"
    return found


def findings(gate: Gate, doc: Doc) -> set[tuple[str, str]]:
    """(rule id, resource name) of every unwaived finding on a retrain resource."""
    result = gate.evaluate(from_document(doc))
    return {
        (f["id"], f["urn"].rsplit("::", 1)[1])
        for f in result["findings"]
        if not f["waived"] and "retrain" in f["urn"].rsplit("::", 1)[1]
    }


@pytest.mark.parametrize("layer", ["infra", "platform"])
def test_the_shipped_retrain_resources_pass(gate: Gate, plans: dict[str, Doc], layer: str) -> None:
    assert findings(gate, plans[f"eu-prod.{layer}"]) == set()


def wildcard_on_the_buckets(doc: Doc) -> str:
    (policy,) = retrain_states(doc, "aws:iam/rolePolicy:RolePolicy")
    document = json.loads(policy["inputs"]["policy"])
    bucket = document["Statement"][1]["Resource"][0].split("/", 1)[0]
    document["Statement"].append({"Effect": "Allow", "Action": "s3:*", "Resource": f"{bucket}/*"})
    policy["inputs"]["policy"] = json.dumps(document)
    return str(policy["urn"].rsplit("::", 1)[1])


def image_by_tag(doc: Doc) -> str:
    deployment = next(
        d for d in retrain_states(doc, "kubernetes:apps/v1:Deployment")
        if d["inputs"]["metadata"]["name"] == "retrain-receiver"
    )  # fmt: skip
    [container] = deployment["inputs"]["spec"]["template"]["spec"]["containers"]
    container["image"] = container["image"].split("@", 1)[0] + ":latest"
    return str(deployment["urn"].rsplit("::", 1)[1])


def image_from_a_public_registry(doc: Doc) -> str:
    deployment = next(
        d for d in retrain_states(doc, "kubernetes:apps/v1:Deployment")
        if d["inputs"]["metadata"]["name"] == "retrain-receiver"
    )  # fmt: skip
    [container] = deployment["inputs"]["spec"]["template"]["spec"]["containers"]
    container["image"] = "docker.io/acme/retrain@" + container["image"].split("@", 1)[1]
    return str(deployment["urn"].rsplit("::", 1)[1])


VIOLATIONS: dict[str, tuple[str, Callable[[Doc], str], set[str]]] = {
    "wildcard-on-the-buckets": ("infra", wildcard_on_the_buckets, {"IDN-006"}),
    "image-by-tag": ("platform", image_by_tag, {"WL-007"}),
    "image-from-a-public-registry": ("platform", image_from_a_public_registry, {"WL-008", "RES-006"}),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_a_violating_retrain_resource_raises_exactly_its_rule(
    gate: Gate, plans: dict[str, Doc], name: str
) -> None:
    layer, mutate, expected = VIOLATIONS[name]
    doc = copy.deepcopy(plans[f"eu-prod.{layer}"])
    resource = mutate(doc)
    assert findings(gate, doc) == {(rule, resource) for rule in expected}, name
