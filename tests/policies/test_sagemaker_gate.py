"""The gate on the shipped smb-eu plan's SageMaker asynchronous endpoint: each rule of its types bites on the
real resource shapes (mutations of the plan `servectl plan` writes), and raises exactly its id."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from policies.normalize import from_document
from policies.opa import Gate
from tests.policies.test_async_queue_gate import drop_inputs, set_inputs, states

Doc = dict[str, Any]
CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
TOPIC = "aws:sns/topic:Topic"


def async_configs(doc: Doc) -> list[Doc]:
    """The asynchronous endpoint's config (the stack's real-time endpoint has one too, without it)."""
    return [s for s in states(doc, CONFIG) if "asyncInferenceConfig" in s["inputs"]]


def set_output(**values: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        for state in async_configs(doc):
            state["inputs"]["asyncInferenceConfig"]["outputConfig"].update(values)

    return mutate


def drop_output(*keys: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        for state in async_configs(doc):
            for key in keys:
                state["inputs"]["asyncInferenceConfig"]["outputConfig"].pop(key)

    return mutate


MUTATIONS: dict[str, tuple[Callable[[Doc], None], set[str]]] = {
    "config-without-volume-key": (drop_inputs(CONFIG, "kmsKeyArn"), {"ENC-007"}),
    "results-without-key": (drop_output("kmsKeyId"), {"ENC-007"}),
    "results-to-a-foreign-bucket": (set_output(s3OutputPath="s3://someone-elses-bucket/out/"), {"RES-010"}),
    "failures-to-a-foreign-bucket": (set_output(s3FailurePath="s3://someone-elses-bucket/f/"), {"RES-010"}),
    "results-path-missing": (drop_output("s3OutputPath"), {"RES-010"}),
    "topic-default-key": (set_inputs(TOPIC, kmsMasterKeyId="alias/aws/sns"), {"ENC-008"}),
    "topic-unencrypted": (drop_inputs(TOPIC, "kmsMasterKeyId"), {"ENC-008"}),
    "endpoint-untagged": (drop_inputs("aws:sagemaker/endpoint:Endpoint", "tags"), {"TAG-001"}),
    "topic-untagged": (drop_inputs(TOPIC, "tags"), {"TAG-001"}),
}


def test_the_shipped_endpoint_passes(gate: Gate, plans: dict[str, Doc]) -> None:
    doc = plans["smb-eu.infra"]
    assert list(states(doc, CONFIG)) and list(states(doc, TOPIC)), "smb-eu runs no SageMaker endpoint"
    result = gate.evaluate(from_document(doc))
    assert [f["id"] for f in result["findings"] if not f["waived"]] == [], result["findings"]


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_weakened_endpoint_raises_exactly_its_id(gate: Gate, plans: dict[str, Doc], name: str) -> None:
    mutate, expected = MUTATIONS[name]
    doc = copy.deepcopy(plans["smb-eu.infra"])
    mutate(doc)
    result = gate.evaluate(from_document(doc))
    assert {f["id"] for f in result["findings"]} == expected, (name, result["findings"])
