"""ModelApi: the HTTP API, its JWT authorizer and throttled routes, access logs, the invoke proxy and its
permission, and the custom domain, each checked for what the real service needs."""

import json
from typing import Any

import pytest

from stacks.components.model_api import (
    ACCESS_LOG_FORMAT,
    PROXY_SOURCE,
    ApiModel,
    ModelApi,
    ModelApiArgs,
    route_keys,
)
from stacks.preview.mocks import ACCOUNT_ID
from tests.stacks.conftest import TAGS, Built, build_component

REGION = "me-central-1"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/0000abcd-12ab-34cd-56ef-1234567890ab"
ENDPOINT_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:endpoint/smb-ae-tabular-classifier"
ISSUER = "https://idp.example.ae/realms/smb"
ROUTE = "aws:apigatewayv2/route:Route"
STAGE = "aws:apigatewayv2/stage:Stage"
FUNCTION = "aws:lambda/function:Function"


def api_args(**overrides: Any) -> ModelApiArgs:
    values: dict[str, Any] = {
        "prefix": "smb-ae-me-central-1",
        "region": REGION,
        "account_id": ACCOUNT_ID,
        "issuer": ISSUER,
        "audiences": ("model-api",),
        "models": (
            ApiModel(
                name="tabular-classifier",
                scope="models:tabular-classifier:infer",
                requests_per_second=50,
                endpoint_name="smb-ae-tabular-classifier",
                endpoint_arn=ENDPOINT_ARN,
            ),
        ),
        "key_arn": KEY,
        "vpc_id": "vpc-0123456789abcdef0",
        "vpc_cidr": "10.70.0.0/16",
        "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
        "concurrency": 20,
        "timeout_seconds": 29,
        "log_retention_days": 90,
        "tags": TAGS,
    } | overrides
    return ModelApiArgs(**values)


@pytest.fixture(scope="module")
def built() -> Built:
    return build_component(lambda opts: ModelApi("api", api_args(), opts), region=REGION)


@pytest.fixture(scope="module")
def with_domain() -> Built:
    args = api_args(domain="api.smb.models.example.ae", zone_id="Z04AE0000000000000003")
    return build_component(lambda opts: ModelApi("api", args, opts), region=REGION)


def test_jwt_authorizer_has_the_issuer_and_audiences(built: Built) -> None:
    authorizer = built.one("aws:apigatewayv2/authorizer:Authorizer").inputs
    assert authorizer["authorizerType"] == "JWT", authorizer
    assert authorizer["jwtConfiguration"] == {"issuer": ISSUER, "audiences": ["model-api"]}, authorizer
    assert authorizer["identitySources"] == ["$request.header.Authorization"], authorizer


def test_every_route_needs_a_token_with_the_models_scope(built: Built) -> None:
    routes = {r.inputs["routeKey"]: r.inputs for r in built.of_type(ROUTE)}
    assert set(routes) == set(route_keys("tabular-classifier")), routes
    for route in routes.values():
        assert route["authorizationType"] == "JWT", route
        assert route["authorizationScopes"] == ["models:tabular-classifier:infer"], route


def test_routes_are_throttled_at_the_models_rate_and_the_rest_barely(built: Built) -> None:
    stage = built.one(STAGE).inputs
    settings = {s["routeKey"]: s for s in stage["routeSettings"]}
    assert set(settings) == set(route_keys("tabular-classifier")), settings
    assert all(s["throttlingRateLimit"] == 50 and s["throttlingBurstLimit"] == 100 for s in settings.values())
    assert stage["defaultRouteSettings"]["throttlingRateLimit"] == 1, stage


def test_access_logs_go_to_an_encrypted_group_in_the_region(built: Built) -> None:
    stage = built.one(STAGE).inputs
    groups = {g.inputs["name"]: g for g in built.of_type("aws:cloudwatch/logGroup:LogGroup")}
    access = groups["/aws/apigateway/smb-ae-me-central-1-model-api"]
    assert stage["accessLogSettings"]["destinationArn"].endswith(
        "/aws/apigateway/smb-ae-me-central-1-model-api"
    )
    assert json.loads(stage["accessLogSettings"]["format"]) == json.loads(ACCESS_LOG_FORMAT)
    assert access.inputs["kmsKeyId"] == KEY and access.inputs["retentionInDays"] == 90, access.inputs
    assert built.regions[access.urn] == REGION, "the access logs stay in the region"


def test_proxy_runs_in_the_vpc_with_reserved_concurrency_and_encrypted_environment(built: Built) -> None:
    function = built.one(FUNCTION).inputs
    assert function["vpcConfig"]["subnetIds"] == ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"], (
        function
    )
    assert function["reservedConcurrentExecutions"] == 20 and function["kmsKeyArn"] == KEY, function
    assert json.loads(function["environment"]["variables"]["ENDPOINTS"]) == {
        "tabular-classifier": "smb-ae-tabular-classifier"
    }
    assert function["handler"] == "invoke_proxy.lambda_handler", function
    assert function["loggingConfig"]["logGroup"] == "/aws/lambda/smb-ae-me-central-1-invoke-proxy", function


def test_proxy_code_is_the_repositorys_module(built: Built) -> None:
    code = built.one(FUNCTION).inputs["code"]
    assets = {name: asset.path for name, asset in code.assets.items()}
    assert assets == {"invoke_proxy.py": str(PROXY_SOURCE)}, assets


def test_proxy_role_trusts_lambda_and_invokes_only_the_stacks_endpoints(built: Built) -> None:
    (trust,) = json.loads(built.one("aws:iam/role:Role").inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}, trust
    grants = {
        s["Sid"]: s
        for s in json.loads(built.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])["Statement"]
    }
    assert grants["InvokeEndpoints"]["Action"] == "sagemaker:InvokeEndpoint", grants
    assert grants["InvokeEndpoints"]["Resource"] == [ENDPOINT_ARN], grants
    assert grants["DecryptEnvironment"]["Resource"] == KEY, grants
    assert {s for s, g in grants.items() if g["Resource"] == "*"} == {"PlaceInterfaces"}, grants


def test_proxy_waits_for_its_grants(built: Built) -> None:
    function = built.one(FUNCTION)
    assert built.one("aws:iam/rolePolicy:RolePolicy").urn in function.dependencies, function.dependencies


def test_api_gateway_may_invoke_the_proxy_on_the_model_routes_only(built: Built) -> None:
    permission = built.one("aws:lambda/permission:Permission").inputs
    assert permission["principal"] == "apigateway.amazonaws.com", permission
    assert permission["action"] == "lambda:InvokeFunction", permission
    assert permission["sourceArn"].endswith("/*/POST/v2/models/*"), permission


def test_proxy_security_group_allows_https_into_the_vpc_only(built: Built) -> None:
    (group,) = [g.inputs for g in built.of_type("aws:ec2/securityGroup:SecurityGroup")]
    assert group["egress"] == [
        {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["10.70.0.0/16"]}
    ], group
    assert not group.get("ingress"), group


def test_without_a_domain_the_execute_api_endpoint_serves(built: Built) -> None:
    assert built.one("aws:apigatewayv2/api:Api").inputs["disableExecuteApiEndpoint"] is False
    assert not built.of_type("aws:acm/certificate:Certificate")


def test_a_domain_gets_an_in_region_certificate_and_tls_1_2(with_domain: Built) -> None:
    certificate = with_domain.one("aws:acm/certificate:Certificate")
    assert with_domain.regions[certificate.urn] == REGION, (
        "API Gateway needs the certificate in its own region"
    )
    domain = with_domain.one("aws:apigatewayv2/domainName:DomainName").inputs
    config = domain["domainNameConfiguration"]
    assert config["securityPolicy"] == "TLS_1_2" and config["endpointType"] == "REGIONAL", config
    assert with_domain.one("aws:apigatewayv2/api:Api").inputs["disableExecuteApiEndpoint"] is True
    assert with_domain.of_type("aws:apigatewayv2/apiMapping:ApiMapping"), "the domain maps to the API's stage"
