"""The smb API's proxy: the V2 path to InvokeEndpoint's arguments, and whole requests against moto's
SageMaker runtime (which answers invoke_endpoint with results queued through its API; it does not check the
endpoint or the variant, so the mapping itself is asserted on `invoke_arguments`)."""

import base64
import json
from typing import Any

import boto3
import pytest
import requests
from botocore.stub import Stubber
from moto import mock_aws

from stacks.functions.invoke_proxy import Refused, handle, invoke_arguments

ENDPOINTS = {"tabular-classifier": "smb-eu-tabular-classifier"}
REGION = "eu-west-1"
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})


def event(path: str, body: str = BODY, **extra: Any) -> dict[str, Any]:
    return {
        "rawPath": path,
        "body": body,
        "isBase64Encoded": False,
        "headers": {"Content-Type": "application/json"},
    } | extra


def test_model_path_lets_sagemaker_pick_the_variant() -> None:
    args = invoke_arguments(event("/v2/models/tabular-classifier/infer"), ENDPOINTS)
    assert args["EndpointName"] == "smb-eu-tabular-classifier", args
    assert "TargetVariant" not in args and "TargetModel" not in args, args
    assert args["Body"] == BODY.encode() and args["ContentType"] == "application/json", args


def test_version_path_pins_the_variant() -> None:
    args = invoke_arguments(event("/v2/models/tabular-classifier/versions/2/infer"), ENDPOINTS)
    assert args["TargetVariant"] == "v2", args


def test_base64_body_is_decoded() -> None:
    encoded = base64.b64encode(BODY.encode()).decode()
    args = invoke_arguments(
        event("/v2/models/tabular-classifier/infer", body=encoded, isBase64Encoded=True), ENDPOINTS
    )
    assert args["Body"] == BODY.encode(), args


@pytest.mark.parametrize(
    ("ev", "status", "words"),
    [
        (event("/v2/models/other/infer"), 404, "not served here"),
        (event("/v2/models/tabular-classifier/versions/0/infer"), 404, "no route"),
        (event("/v2/models/tabular-classifier/ready"), 404, "no route"),
        (event("/v2/models/tabular-classifier/infer", body=""), 400, "empty body"),
        (
            event("/v2/models/tabular-classifier/infer", headers={"Inference-Header-Content-Length": "10"}),
            415,
            "send JSON",
        ),
        (event("/v2/models/tabular-classifier/infer", body="x" * (6 * 1024 * 1024 + 1)), 413, "over"),
    ],
)
def test_refusals(ev: dict[str, Any], status: int, words: str) -> None:
    with pytest.raises(Refused) as refused:
        invoke_arguments(ev, ENDPOINTS)
    assert refused.value.status == status and words in str(refused.value), (
        refused.value.status,
        refused.value,
    )


@pytest.fixture
def runtime() -> Any:
    with mock_aws():
        yield boto3.client("sagemaker-runtime", region_name=REGION)


def queue_result(body: str, variant: str) -> None:
    """Queue moto's next invoke_endpoint answer (its documented API, in-process under mock_aws)."""
    result = {"Body": body, "ContentType": "application/json", "InvokedProductionVariant": variant}
    answer = requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
        json={"account_id": "123456789012", "region": REGION, "results": [result]},
        timeout=5,
    )
    assert answer.status_code == 201, answer.text


def test_answer_carries_the_body_and_the_version_that_served(runtime: Any) -> None:
    queue_result('{"outputs": []}', "v2")
    answer = handle(event("/v2/models/tabular-classifier/infer"), runtime, ENDPOINTS)
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"]) == {"outputs": []}, answer
    assert answer["headers"]["x-model-version"] == "2", answer


def test_refusal_is_answered_without_calling_the_endpoint(runtime: Any) -> None:
    answer = handle(event("/v2/models/nope/infer"), runtime, ENDPOINTS)
    assert answer["statusCode"] == 404 and "not served here" in json.loads(answer["body"])["error"], answer


@pytest.mark.parametrize(
    ("code", "fields", "path", "status"),
    [
        ("ModelError", {"OriginalStatusCode": 400, "OriginalMessage": "bad"}, "/infer", 400),
        ("ValidationError", {}, "/versions/9/infer", 404),
        ("ThrottlingException", {}, "/infer", 429),
        ("InternalFailure", {}, "/infer", 502),
    ],
)
def test_service_errors_map_to_statuses(code: str, fields: dict[str, Any], path: str, status: int) -> None:
    """botocore's own Stubber raises the ClientError the real client would (moto cannot fail a call)."""
    client = boto3.client(
        "sagemaker-runtime", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke_endpoint", service_error_code=code, service_message="m", modeled_fields=fields
        )
        answer = handle(event(f"/v2/models/tabular-classifier{path}"), client, ENDPOINTS)
    assert answer["statusCode"] == status, answer
