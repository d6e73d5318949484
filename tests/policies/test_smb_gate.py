"""The gate on the shipped SMB plan (the managed-services profile): each rule of issue 13's policy coverage
bites on the real resource shapes (mutations of the plan `servectl plan` writes) and raises exactly its id,
and the shipped plan passes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.normalize import from_document
from policies.opa import Gate
from tests.policies.conftest import REPO
from tests.policies.test_async_queue_gate import set_inputs, states

Doc = dict[str, Any]
MODEL = "aws:sagemaker/model:Model"
CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
SMB_PLAN = "smb-eu.infra"
"""The SMB profile's EU plan: SageMaker endpoints behind an HTTP API and its proxy function."""


@pytest.fixture(scope="module")
def smb_plan(tmp_path_factory: pytest.TempPathFactory) -> Doc:
    """The SMB plan as `servectl plan` writes it (only this one: the session's `plans` plans every stack)."""
    stack, layer = SMB_PLAN.split(".")
    path: Path = tmp_path_factory.mktemp("smb") / f"{SMB_PLAN}.json"
    cmd = [sys.executable, "-m", "servectl", "plan", "--stack", stack, "--layer", layer, "--out", str(path)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=240)
    doc: Doc = json.loads(path.read_text())
    return doc


def role_policies(doc: Doc, service: str) -> Iterator[Doc]:
    """The inline policies of the roles `service` assumes, joined by the role's (auto-)name like the gate."""
    roles = [
        s["urn"].rsplit("::", 1)[1]
        for s in states(doc, "aws:iam/role:Role")
        if service in s["inputs"].get("assumeRolePolicy", "")
    ]
    found = [p for p in states(doc, ROLE_POLICY) if any(p["inputs"]["role"].startswith(r) for r in roles)]
    assert found, f"no inline policy of a role {service} assumes"
    yield from found


def widen_s3(service: str, resource: str) -> Callable[[Doc], None]:
    """Every S3 statement of the service's role policies allows `resource` too."""

    def mutate(doc: Doc) -> None:
        for state in role_policies(doc, service):
            policy = json.loads(state["inputs"]["policy"])
            for statement in policy["Statement"]:
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                if any(a.startswith("s3:") for a in actions):
                    statement["Resource"] = [resource]
            state["inputs"]["policy"] = json.dumps(policy)

    return mutate


def add_statement(service: str, statement: Doc) -> Callable[[Doc], None]:
    """Each inline policy of the service's roles also allows `statement`."""

    def mutate(doc: Doc) -> None:
        for state in role_policies(doc, service):
            policy = json.loads(state["inputs"]["policy"])
            policy["Statement"].append(statement)
            state["inputs"]["policy"] = json.dumps(policy)

    return mutate


def set_nested(type_: str, key: str, **values: Any) -> Callable[[Doc], None]:
    """Each resource of the type has `values` set inside its input object `key`."""

    def mutate(doc: Doc) -> None:
        for state in states(doc, type_):
            state["inputs"][key] = {**state["inputs"][key], **values}

    return mutate


def capture(**values: Any) -> Callable[[Doc], None]:
    """Each endpoint configuration captures data with `values` over its own capture settings, or over
    settings that pass (to the plan's model bucket, under the configuration's key)."""

    def mutate(doc: Doc) -> None:
        for state in states(doc, CONFIG):
            current = state["inputs"].get("dataCaptureConfig") or {
                "initialSamplingPercentage": 10,
                "captureOptions": [{"captureMode": "Input"}, {"captureMode": "Output"}],
                "destinationS3Uri": f"s3://{model_bucket(doc)}/capture/m/",
                "kmsKeyId": state["inputs"]["kmsKeyArn"],
            }
            state["inputs"]["dataCaptureConfig"] = {**current, **values}

    return mutate


def model_bucket(doc: Doc) -> str:
    """The plan's model bucket name (the one the execution role reads)."""
    names = [
        s["inputs"]["bucket"]
        for s in states(doc, "aws:s3/bucket:Bucket")
        if "models" in s["inputs"]["bucket"]
    ]
    assert names, "the plan has no model bucket"
    return str(names[0])


FUNCTION = "aws:lambda/function:Function"
ROUTE = "aws:apigatewayv2/route:Route"
DOMAIN = "aws:apigatewayv2/domainName:DomainName"
STAGE = "aws:apigatewayv2/stage:Stage"
API = "aws:apigatewayv2/api:Api"
ANY_KEY = {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": "*"}
ABROAD_LOGS = "arn:aws:logs:us-east-1:567890123456:log-group:/aws/apigateway/api"

MUTATIONS: dict[str, tuple[Callable[[Doc], None], set[str]]] = {
    "model-outside-the-vpc": (set_inputs(MODEL, vpcConfig=None), {"NET-005"}),
    "model-not-isolated": (set_inputs(MODEL, enableNetworkIsolation=False), {"NET-005"}),
    "execution-role-on-every-bucket": (widen_s3("sagemaker.amazonaws.com", "arn:aws:s3:::*"), {"IDN-010"}),
    "execution-role-on-a-foreign-bucket": (
        widen_s3("sagemaker.amazonaws.com", "arn:aws:s3:::someone-elses-bucket/*"),
        {"IDN-010"},
    ),
    "capture-to-a-foreign-bucket": (
        capture(destinationS3Uri="s3://someone-elses-bucket/capture/"),
        {"RES-013"},
    ),
    "capture-without-a-key": (capture(kmsKeyId=""), {"ENC-007"}),
    "proxy-outside-the-vpc": (set_inputs(FUNCTION, vpcConfig=None), {"NET-006"}),
    "proxy-environment-under-the-aws-key": (set_inputs(FUNCTION, kmsKeyArn=None), {"ENC-013"}),
    "proxy-role-on-every-key": (add_statement("lambda.amazonaws.com", ANY_KEY), {"IDN-010"}),
    "infer-route-without-a-token": (set_inputs(ROUTE, authorizationType="NONE"), {"NET-007"}),
    "domain-on-tls-1-0": (
        set_nested(DOMAIN, "domainNameConfiguration", securityPolicy="TLS_1_0"),
        {"ENC-014"},
    ),
    "access-logs-abroad": (set_nested(STAGE, "accessLogSettings", destinationArn=ABROAD_LOGS), {"RES-003"}),
    "api-abroad": (set_inputs(API, region="us-east-1"), {"RES-002"}),
}


def test_the_shipped_smb_plan_passes(gate: Gate, smb_plan: Doc) -> None:
    doc = smb_plan
    assert list(states(doc, MODEL)) and list(role_policies(doc, "sagemaker.amazonaws.com")), SMB_PLAN
    result = gate.evaluate(from_document(doc))
    assert [f["id"] for f in result["findings"] if not f["waived"]] == [], result["findings"]


def test_capture_to_the_model_bucket_passes(gate: Gate, smb_plan: Doc) -> None:
    """The passing side of RES-013 on the real shapes: capture under the plan's own model bucket, keyed."""
    doc = copy.deepcopy(smb_plan)
    capture()(doc)
    result = gate.evaluate(from_document(doc))
    assert [f["id"] for f in result["findings"]] == [], result["findings"]


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_weakened_smb_plan_raises_exactly_its_id(gate: Gate, smb_plan: Doc, name: str) -> None:
    mutate, expected = MUTATIONS[name]
    doc = copy.deepcopy(smb_plan)
    mutate(doc)
    result = gate.evaluate(from_document(doc))
    assert {f["id"] for f in result["findings"]} == expected, (name, result["findings"])
