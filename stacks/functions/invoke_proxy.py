"""The smb API's proxy: an HTTP API route (payload format 2.0) to SageMaker InvokeEndpoint.

API Gateway has already checked the token (issuer, audience, the model's scope): this code never sees an
unauthenticated request and checks no token. It maps the V2 path to the model's endpoint:
`POST /v2/models/<model>/infer` lets SageMaker pick the variant by weight; `.../versions/<v>/infer` pins
`TargetVariant=v<v>`. The endpoints are single-model (one version per variant), so no TargetModel is sent.
Only the standard library and boto3 (the Lambda runtime's): the module is deployed as it is.
"""

import base64
import json
import os
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import boto3
from botocore.exceptions import ClientError

PATH = re.compile(
    r"^/v2/models/(?P<model>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})(?:/versions/(?P<version>[1-9][0-9]*))?/infer$"
)
MAX_BODY = 6 * 1024 * 1024
"""InvokeEndpoint's payload limit (6 MB)."""
_STATUS = {
    "ThrottlingException": 429,
    "ServiceUnavailable": 503,
    "InternalFailure": 502,
    "InternalDependencyException": 502,
}


def _error(status: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"error": message}),
    }


class Refused(Exception):
    """A request the proxy answers itself, with its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def invoke_arguments(event: Mapping[str, Any], endpoints: Mapping[str, str]) -> dict[str, Any]:
    """InvokeEndpoint's arguments for an HTTP API event, or `Refused`."""
    match = PATH.match(str(event.get("rawPath", "")))
    if match is None:
        raise Refused(404, f"no route {event.get('rawPath')!r}: POST /v2/models/<model>[/versions/<v>]/infer")
    model, version = match.group("model"), match.group("version")
    if model not in endpoints:
        raise Refused(404, f"model {model!r} is not served here (models: {', '.join(sorted(endpoints))})")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if "inference-header-content-length" in headers:
        raise Refused(415, "binary V2 bodies need a header InvokeEndpoint cannot carry: send JSON")
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else str(raw).encode()
    if not body:
        raise Refused(400, "empty body: send a V2 inference request")
    if len(body) > MAX_BODY:
        raise Refused(413, f"body of {len(body)} bytes is over InvokeEndpoint's {MAX_BODY}")
    arguments: dict[str, Any] = {
        "EndpointName": endpoints[model],
        "Body": body,
        "ContentType": headers.get("content-type", "application/json"),
        "Accept": "application/json",
    }
    if version is not None:
        arguments["TargetVariant"] = f"v{version}"
    return arguments


def _failure(error: ClientError, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A botocore ClientError as the client's answer: the container's own status for a ModelError, 404 for
    a version the endpoint has no variant of, the service's throttling as 429."""
    response: Mapping[str, Any] = error.response
    code = str(response.get("Error", {}).get("Code", ""))
    message = str(response.get("Error", {}).get("Message", "")) or str(error)
    if code == "ModelError":
        status = int(response.get("OriginalStatusCode") or 502)
        return _error(status, str(response.get("OriginalMessage") or message))
    if code == "ValidationError" and "TargetVariant" in arguments:
        return _error(404, f"version {arguments['TargetVariant'][1:]} is not deployed: {message}")
    return _error(_STATUS.get(code, 502), f"{code or 'error'}: {message}")


def handle(event: Mapping[str, Any], client: Any, endpoints: Mapping[str, str]) -> dict[str, Any]:
    """Answer one request through `client` (a sagemaker-runtime client)."""
    try:
        arguments = invoke_arguments(event, endpoints)
    except Refused as refused:
        return _error(refused.status, str(refused))
    try:
        answer = client.invoke_endpoint(**arguments)
    except ClientError as error:
        return _failure(error, arguments)
    variant = str(answer.get("InvokedProductionVariant", ""))
    return {
        "statusCode": 200,
        "headers": {
            "content-type": str(answer.get("ContentType", "application/json")),
            "x-model-version": variant.removeprefix("v"),
        },
        "body": answer["Body"].read().decode(),
    }


def endpoints_from_environment() -> dict[str, str]:
    """`ENDPOINTS`: JSON mapping each model to its endpoint name (set by the stack)."""
    return {str(k): str(v) for k, v in json.loads(os.environ["ENDPOINTS"]).items()}


@cache
def _client() -> Any:
    """One client per execution environment, reused across invocations (the region is the function's)."""
    return boto3.client("sagemaker-runtime")


def lambda_handler(event: Mapping[str, Any], _context: Any) -> dict[str, Any]:
    """The Lambda entry point."""
    return handle(event, _client(), endpoints_from_environment())
