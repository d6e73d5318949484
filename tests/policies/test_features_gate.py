"""The gate on the feature store's resources in eu-prod's plans (two regions): the tables, the registry and
offline prefixes, the roles' policies and the in-cluster objects pass as shipped, and each rule written for
them (ENC-009, AVL-002, RES-011, RES-012, IDN-009) bites on their real shapes, alone."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from policies.normalize import from_document
from policies.opa import Gate
from stacks.preview.run import plan_stack

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def eu_plans() -> dict[str, Doc]:
    """eu-prod's two layers, planned under the mocks (only this stack: the features block is its)."""
    return {layer: plan_stack("eu-prod", layer=layer).document for layer in ("infra", "platform")}


def _name(state: Doc) -> str:
    return str(state["urn"].rsplit("::", 1)[1])


def feature_states(doc: Doc, type_: str, part: str = "features") -> list[Doc]:
    found = [
        s["newState"] for s in doc["steps"] if s["newState"]["type"] == type_ and part in _name(s["newState"])
    ]
    assert found, f"no {type_} named *{part}* in the plan"
    return found


def findings(gate: Gate, doc: Doc) -> set[tuple[str, str]]:
    """(rule id, resource name) of every unwaived finding on a feature store resource."""
    result = gate.evaluate(from_document(doc))
    return {
        (f["id"], f["urn"].rsplit("::", 1)[1])
        for f in result["findings"]
        if not f["waived"] and "features" in f["urn"].rsplit("::", 1)[1]
    }


@pytest.mark.parametrize("layer", ["infra", "platform"])
def test_the_shipped_feature_store_passes(gate: Gate, eu_plans: dict[str, Doc], layer: str) -> None:
    doc = eu_plans[layer]
    kinds = {"infra": "aws:dynamodb/table:Table", "platform": "kubernetes:batch/v1:CronJob"}
    assert len(feature_states(doc, kinds[layer])) == 2, "one per region"
    assert findings(gate, doc) == set()


def _first_table(doc: Doc) -> Doc:
    return feature_states(doc, "aws:dynamodb/table:Table")[0]


def table_under_the_aws_managed_key(doc: Doc) -> str:
    table = _first_table(doc)
    table["inputs"]["serverSideEncryption"] = {"enabled": True, "kmsKeyArn": "alias/aws/dynamodb"}
    return _name(table)


def table_without_point_in_time_recovery(doc: Doc) -> str:
    table = _first_table(doc)
    table["inputs"]["pointInTimeRecovery"] = {"enabled": False}
    return _name(table)


def table_replicated_out_of_the_jurisdiction(doc: Doc) -> str:
    table = _first_table(doc)
    table["inputs"]["replicas"] = [{"regionName": "us-east-1"}]
    return _name(table)


def registry_in_a_bucket_the_plan_does_not_hold(doc: Doc) -> str:
    (registry, *_) = feature_states(doc, "aws:s3/bucketObjectv2:BucketObjectv2", "registry-prefix")
    registry["inputs"]["bucket"] = "someone-elses-bucket"
    return _name(registry)


def offline_data_in_the_other_regions_bucket(doc: Doc) -> str:
    first, second = feature_states(doc, "aws:s3/bucketObjectv2:BucketObjectv2", "offline-prefix")
    first["inputs"]["bucket"] = second["inputs"]["bucket"]
    return _name(first)


def _policy(doc: Doc, part: str) -> tuple[Doc, Doc]:
    (state, *_) = feature_states(doc, "aws:iam/rolePolicy:RolePolicy", part)
    return state, json.loads(state["inputs"]["policy"])


def serving_role_on_every_table(doc: Doc) -> str:
    state, document = _policy(doc, "model-tabular-classifier-features")
    table = document["Statement"][0]["Resource"][0]
    document["Statement"][0]["Resource"] = [table.rsplit("/", 1)[0] + "/*"]
    state["inputs"]["policy"] = json.dumps(document)
    return _name(state)


def materialization_with_every_dynamodb_action(doc: Doc) -> str:
    state, document = _policy(doc, "features-materialize")
    document["Statement"][0]["Action"] = "dynamodb:*"
    state["inputs"]["policy"] = json.dumps(document)
    return _name(state)


VIOLATIONS: dict[str, tuple[Callable[[Doc], str], set[str]]] = {
    "table-under-the-aws-managed-key": (table_under_the_aws_managed_key, {"ENC-009"}),
    "table-without-point-in-time-recovery": (table_without_point_in_time_recovery, {"AVL-002"}),
    "table-replicated-out-of-the-jurisdiction": (table_replicated_out_of_the_jurisdiction, {"RES-011"}),
    "registry-in-a-bucket-the-plan-does-not-hold": (registry_in_a_bucket_the_plan_does_not_hold, {"RES-012"}),
    "offline-data-in-the-other-regions-bucket": (offline_data_in_the_other_regions_bucket, {"RES-012"}),
    "serving-role-on-every-table": (serving_role_on_every_table, {"IDN-009"}),
    "materialization-with-every-dynamodb-action": (materialization_with_every_dynamodb_action, {"IDN-006"}),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_a_violating_feature_resource_raises_exactly_its_rule(
    gate: Gate, eu_plans: dict[str, Doc], name: str
) -> None:
    mutate, expected = VIOLATIONS[name]
    doc = copy.deepcopy(eu_plans["infra"])
    resource = mutate(doc)
    assert findings(gate, doc) == {(rule, resource) for rule in expected}, name
