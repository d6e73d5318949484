"""The gate on the shipped uae-prod plans' job queue: each rule of the queue's types bites on the real
resource shapes (mutations of the plan `servectl plan` writes), and raises exactly its id."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from policies.normalize import from_document
from policies.opa import Gate

Doc = dict[str, Any]
RG = "aws:elasticache/replicationGroup:ReplicationGroup"
SECRET = "aws:secretsmanager/secret:Secret"


def states(doc: Doc, type_: str) -> Iterator[Doc]:
    found = [s["newState"] for s in doc["steps"] if s["newState"]["type"] == type_]
    assert found, f"the plan has no {type_}"
    yield from found


def set_inputs(type_: str, **values: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        for state in states(doc, type_):
            state["inputs"].update(values)

    return mutate


def drop_inputs(type_: str, *keys: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        for state in states(doc, type_):
            for key in keys:
                state["inputs"].pop(key)

    return mutate


MUTATIONS: dict[str, tuple[Callable[[Doc], None], set[str]]] = {
    "no-failover": (set_inputs(RG, automaticFailoverEnabled=False, multiAzEnabled=False), {"AVL-001"}),
    "one-node": (set_inputs(RG, numCacheClusters=1), {"AVL-001"}),
    "plain-transit": (set_inputs(RG, transitEncryptionMode="preferred"), {"ENC-012"}),
    "no-auth": (drop_inputs(RG, "authToken"), {"IDN-008"}),
    "default-key-at-rest": (drop_inputs(RG, "kmsKeyId"), {"ENC-005"}),
    "default-subnets": (drop_inputs(RG, "subnetGroupName"), {"NET-004"}),
    "secret-default-key": (set_inputs(SECRET, kmsKeyId="alias/aws/secretsmanager"), {"ENC-006"}),
    "secret-replica-abroad": (set_inputs(SECRET, replicas=[{"region": "eu-west-1"}]), {"RES-009"}),
    "queue-untagged": (drop_inputs(RG, "tags"), {"TAG-001"}),
}


def test_the_shipped_queue_passes(gate: Gate, plans: dict[str, Doc]) -> None:
    doc = plans["uae-prod.infra"]
    assert list(states(doc, RG)) and list(states(doc, SECRET)), "uae-prod runs no job queue"
    result = gate.evaluate(from_document(doc))
    assert [f["id"] for f in result["findings"] if not f["waived"]] == [], result["findings"]


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_weakened_queue_raises_exactly_its_id(gate: Gate, plans: dict[str, Doc], name: str) -> None:
    mutate, expected = MUTATIONS[name]
    doc = copy.deepcopy(plans["uae-prod.infra"])
    mutate(doc)
    result = gate.evaluate(from_document(doc))
    assert {f["id"] for f in result["findings"]} == expected, (name, result["findings"])


BUCKET_CHILDREN = {
    "sse": "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "tls-policy": "aws:s3/bucketPolicy:BucketPolicy",
    "public-access-block": "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
}
RESULT_BUCKET_RULES = {"sse": {"ENC-001"}, "tls-policy": {"ENC-010"}, "public-access-block": {"NET-003"}}
"""Which existing S3 rule covers each part of the result bucket (at rest, in transit, exposure)."""


def _result_bucket_steps(doc: Doc, type_: str) -> list[Doc]:
    found = [s for s in doc["steps"] if s["newState"]["type"] == type_ and s["urn"].endswith("-jobs-bucket")]
    assert found, f"the plan has no result bucket {type_}"
    return found


def test_the_shipped_result_buckets_pass(gate: Gate, plans: dict[str, Doc]) -> None:
    for stack in ("eu-prod", "uae-prod"):
        doc = plans[f"{stack}.infra"]
        assert _result_bucket_steps(doc, "aws:s3/bucket:Bucket"), f"{stack} has no result bucket"
        result = gate.evaluate(from_document(doc))
        assert [f["id"] for f in result["findings"] if not f["waived"]] == [], (stack, result["findings"])


@pytest.mark.parametrize("part", sorted(BUCKET_CHILDREN))
def test_a_result_bucket_without_a_safeguard_raises_its_rule(
    gate: Gate, plans: dict[str, Doc], part: str
) -> None:
    doc = copy.deepcopy(plans["uae-prod.infra"])
    dropped = {s["urn"] for s in _result_bucket_steps(doc, BUCKET_CHILDREN[part])}
    doc["steps"] = [s for s in doc["steps"] if s["urn"] not in dropped]
    result = gate.evaluate(from_document(doc))
    (bucket,) = _result_bucket_steps(doc, "aws:s3/bucket:Bucket")
    assert {f["id"] for f in result["findings"]} == RESULT_BUCKET_RULES[part], (part, result["findings"])
    assert all(f["urn"] == bucket["urn"] for f in result["findings"]), (part, result["findings"])
