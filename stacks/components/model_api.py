"""ModelApi: an smb stack's public model API (docs/smb.md, "The API").

An HTTP API whose JWT authorizer checks the token (issuer, audience, the model's scope), throttled per model
route, logging every request to a KMS-encrypted log group in the region, in front of a small proxy function
(stacks/functions/invoke_proxy.py) in the VPC that calls InvokeEndpoint on the model's endpoint. A REST API
could call SageMaker directly but has no JWT authorizer (it would need a Lambda authorizer re-implementing
the token checks); an HTTP API has the authorizer but no SageMaker integration: hence the proxy.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

PROXY_SOURCE = Path(__file__).resolve().parents[1] / "functions" / "invoke_proxy.py"
"""The proxy's whole code, deployed as it is (read from the file, never imported by the program)."""
PROXY_HANDLER = "invoke_proxy.lambda_handler"
PROXY_RUNTIME = "python3.12"
LAMBDA_SERVICE = "lambda.amazonaws.com"
LAMBDA_VPC_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
"""What Lambda needs to place a function's interfaces in the VPC (AWS documents `*` resources)."""
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "client": "$context.authorizer.claims.client_id",
        "subject": "$context.authorizer.claims.sub",
        "time": "$context.requestTime",
        "route": "$context.routeKey",
        "status": "$context.status",
        "latencyMs": "$context.responseLatency",
        "integrationStatus": "$context.integrationStatus",
        "error": "$context.error.message",
    }
)


@dataclass(frozen=True, kw_only=True)
class ApiModel:
    """One model the API serves."""

    name: str
    """The model's name (`/v2/models/<name>/...`)."""
    scope: str
    """The OAuth2 scope its routes require."""
    requests_per_second: int
    """Its routes' steady rate (the burst is twice that)."""
    endpoint_name: pulumi.Input[str]
    """Its SageMaker endpoint."""
    endpoint_arn: pulumi.Input[str]
    """The endpoint's ARN (the proxy may invoke only these)."""


@dataclass(frozen=True, kw_only=True)
class ModelApiArgs:
    """Inputs of `ModelApi`."""

    prefix: str
    """`<stack>-<region>`: names carry it."""
    region: str
    """The stack's region."""
    account_id: str
    """The stack's account."""
    issuer: str
    """The token issuer (its discovery document gives API Gateway the keys)."""
    audiences: tuple[str, ...]
    """Accepted audiences."""
    models: tuple[ApiModel, ...]
    """The models and their endpoints."""
    key_arn: pulumi.Input[str]
    """The API's key: its access logs, the proxy's logs and environment."""
    vpc_id: pulumi.Input[str]
    """The VPC."""
    vpc_cidr: str
    """The VPC's range: the proxy reaches the sagemaker.runtime endpoint in it, nothing else."""
    private_subnet_ids: list[pulumi.Input[str]]
    """Where the proxy's interfaces go."""
    concurrency: int
    """The proxy's reserved concurrency."""
    timeout_seconds: int
    """The proxy's timeout."""
    log_retention_days: int
    """Retention of the access and proxy log groups."""
    domain: str = ""
    """The API's own domain (an ACM certificate in the region, validated in `zone_id`); empty: none."""
    zone_id: str = ""
    """The hosted zone of `domain`."""
    tags: dict[str, str]
    """Tags."""


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def lambda_trust_policy(account: str) -> str:
    """Lambda may assume the proxy's role, for this account's functions only."""
    return _doc(
        {
            "Effect": "Allow",
            "Principal": {"Service": LAMBDA_SERVICE},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        }
    )


def proxy_policy(region: str, account: str, log_group: str, endpoints: list[str], key: str) -> str:
    """InvokeEndpoint on the stack's endpoints only, logs to its own group, its environment's key through
    Lambda, and its interfaces (EC2's interface calls have no resource type: `*`)."""
    group = f"arn:aws:logs:{region}:{account}:log-group:{log_group}"
    return _doc(
        {
            "Sid": "InvokeEndpoints",
            "Effect": "Allow",
            "Action": "sagemaker:InvokeEndpoint",
            "Resource": sorted(endpoints),
        },
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [group, f"{group}:log-stream:*"],
        },
        {
            "Sid": "DecryptEnvironment",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": key,
            "Condition": {"StringEquals": {"kms:ViaService": f"lambda.{region}.amazonaws.com"}},
        },
        {"Sid": "PlaceInterfaces", "Effect": "Allow", "Action": list(LAMBDA_VPC_ACTIONS), "Resource": "*"},
    )


def route_keys(model: str) -> tuple[str, str]:
    """A model's two routes: by weight, and pinned to a version."""
    return f"POST /v2/models/{model}/infer", f"POST /v2/models/{model}/versions/{{version}}/infer"


class ModelApi(pulumi.ComponentResource):
    """The HTTP API, its JWT authorizer, routes, stage and access logs, the proxy function, and its domain."""

    api_id: pulumi.Output[str]
    url: pulumi.Output[str]
    proxy_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ModelApiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:api:ModelApi", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        proxy = self._proxy(name, args, child)
        api = aws.apigatewayv2.Api(
            f"{name}-api",
            protocol_type="HTTP",
            description=f"Model API of {args.prefix}",
            # With a domain of its own, the execute-api host is off: one public name, one certificate.
            disable_execute_api_endpoint=bool(args.domain),
            tags=args.tags,
            opts=child,
        )
        authorizer = aws.apigatewayv2.Authorizer(
            f"{name}-jwt",
            api_id=api.id,
            authorizer_type="JWT",
            identity_sources=["$request.header.Authorization"],
            jwt_configuration=aws.apigatewayv2.AuthorizerJwtConfigurationArgs(
                issuer=args.issuer, audiences=list(args.audiences)
            ),
            opts=child,
        )
        integration = aws.apigatewayv2.Integration(
            f"{name}-proxy",
            api_id=api.id,
            integration_type="AWS_PROXY",
            integration_uri=proxy.invoke_arn,
            payload_format_version="2.0",
            timeout_milliseconds=args.timeout_seconds * 1000 + 500,
            opts=child,
        )
        routes = self._routes(name, args, api, authorizer, integration)
        stage = self._stage(name, args, api, routes)
        aws.lambda_.Permission(
            f"{name}-invoke",
            action="lambda:InvokeFunction",
            function=proxy.name,
            principal="apigateway.amazonaws.com",
            source_arn=pulumi.Output.concat(api.execution_arn, "/*/POST/v2/models/*"),
            opts=child,
        )
        self.url = self._domain(name, args, api, stage) if args.domain else api.api_endpoint
        self.api_id = api.id
        self.proxy_arn = proxy.arn
        self.register_outputs({"api_id": self.api_id, "url": self.url, "proxy_arn": self.proxy_arn})

    def _log_group(self, name: str, group: str, args: ModelApiArgs) -> aws.cloudwatch.LogGroup:
        return aws.cloudwatch.LogGroup(
            name,
            name=group,
            retention_in_days=args.log_retention_days,
            kms_key_id=args.key_arn,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _proxy(self, name: str, args: ModelApiArgs, child: pulumi.ResourceOptions) -> aws.lambda_.Function:
        function_name = f"{args.prefix}-invoke-proxy"
        log_name = f"/aws/lambda/{function_name}"
        logs = self._log_group(f"{name}-proxy-logs", log_name, args)
        role = aws.iam.Role(
            f"{name}-proxy-role",
            assume_role_policy=lambda_trust_policy(args.account_id),
            tags=args.tags,
            opts=child,
        )
        grants = aws.iam.RolePolicy(
            f"{name}-proxy-role",
            role=role.id,
            policy=pulumi.Output.all(
                key=args.key_arn, endpoints=pulumi.Output.all(*[m.endpoint_arn for m in args.models])
            ).apply(
                lambda v: proxy_policy(args.region, args.account_id, log_name, list(v["endpoints"]), v["key"])
            ),
            opts=child,
        )
        group = aws.ec2.SecurityGroup(
            f"{name}-proxy-sg",
            description="Invoke proxy: HTTPS to the VPC's endpoints only (sagemaker.runtime, logs)",
            vpc_id=args.vpc_id,
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="tcp", from_port=443, to_port=443, cidr_blocks=[args.vpc_cidr]
                )
            ],
            tags=args.tags,
            opts=child,
        )
        endpoints = pulumi.Output.all(**{m.name: m.endpoint_name for m in args.models}).apply(
            lambda names: json.dumps(dict(sorted(names.items())))
        )
        return aws.lambda_.Function(
            f"{name}-proxy",
            name=function_name,
            runtime=PROXY_RUNTIME,
            handler=PROXY_HANDLER,
            code=pulumi.AssetArchive({PROXY_SOURCE.name: pulumi.FileAsset(str(PROXY_SOURCE))}),
            role=role.arn,
            timeout=args.timeout_seconds,
            memory_size=256,
            reserved_concurrent_executions=args.concurrency,
            kms_key_arn=args.key_arn,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={"ENDPOINTS": endpoints}),
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(
                subnet_ids=args.private_subnet_ids, security_group_ids=[group.id]
            ),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="JSON", log_group=logs.name),
            tags=args.tags,
            # The role's grants first: Lambda checks it may create the interfaces when the function is made.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[grants, logs]),
        )

    def _routes(
        self,
        name: str,
        args: ModelApiArgs,
        api: aws.apigatewayv2.Api,
        authorizer: aws.apigatewayv2.Authorizer,
        integration: aws.apigatewayv2.Integration,
    ) -> list[aws.apigatewayv2.Route]:
        """Every route needs a token with the model's scope: there is no unauthenticated route."""
        return [
            aws.apigatewayv2.Route(
                f"{name}-{model.name}-{kind}",
                api_id=api.id,
                route_key=key,
                authorization_type="JWT",
                authorizer_id=authorizer.id,
                authorization_scopes=[model.scope],
                target=pulumi.Output.concat("integrations/", integration.id),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for model in args.models
            for kind, key in zip(("infer", "version"), route_keys(model.name), strict=True)
        ]

    def _stage(
        self, name: str, args: ModelApiArgs, api: aws.apigatewayv2.Api, routes: list[aws.apigatewayv2.Route]
    ) -> aws.apigatewayv2.Stage:
        """The one stage: access logs, a low default throttle, and each model's routes at its own rate."""
        logs = self._log_group(f"{name}-access-logs", f"/aws/apigateway/{args.prefix}-model-api", args)
        return aws.apigatewayv2.Stage(
            f"{name}-stage",
            api_id=api.id,
            name="$default",
            auto_deploy=True,
            access_log_settings=aws.apigatewayv2.StageAccessLogSettingsArgs(
                destination_arn=logs.arn, format=ACCESS_LOG_FORMAT
            ),
            default_route_settings=aws.apigatewayv2.StageDefaultRouteSettingsArgs(
                throttling_rate_limit=1, throttling_burst_limit=1
            ),
            route_settings=[
                aws.apigatewayv2.StageRouteSettingArgs(
                    route_key=key,
                    throttling_rate_limit=model.requests_per_second,
                    throttling_burst_limit=2 * model.requests_per_second,
                )
                for model in args.models
                for key in route_keys(model.name)
            ],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=routes),
        )

    def _domain(
        self, name: str, args: ModelApiArgs, api: aws.apigatewayv2.Api, stage: aws.apigatewayv2.Stage
    ) -> pulumi.Output[str]:
        """The API's own name: an ACM certificate in the region (DNS-validated), TLS 1.2, the alias record."""
        child = pulumi.ResourceOptions(parent=self)
        certificate = aws.acm.Certificate(
            f"{name}-certificate",
            domain_name=args.domain,
            validation_method="DNS",
            tags=args.tags,
            opts=child,
        )
        option = certificate.domain_validation_options[0]
        record = aws.route53.Record(
            f"{name}-certificate-validation",
            zone_id=args.zone_id,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=300,
            allow_overwrite=True,
            opts=child,
        )
        validated = aws.acm.CertificateValidation(
            f"{name}-certificate",
            certificate_arn=certificate.arn,
            validation_record_fqdns=[record.fqdn],
            opts=child,
        )
        domain = aws.apigatewayv2.DomainName(
            f"{name}-domain",
            domain_name=args.domain,
            domain_name_configuration=aws.apigatewayv2.DomainNameDomainNameConfigurationArgs(
                certificate_arn=validated.certificate_arn, endpoint_type="REGIONAL", security_policy="TLS_1_2"
            ),
            tags=args.tags,
            opts=child,
        )
        aws.apigatewayv2.ApiMapping(
            f"{name}-mapping", api_id=api.id, domain_name=domain.id, stage=stage.id, opts=child
        )
        target = domain.domain_name_configuration
        aws.route53.Record(
            f"{name}-alias",
            zone_id=args.zone_id,
            name=args.domain,
            type="A",
            aliases=[
                aws.route53.RecordAliasArgs(
                    name=target.target_domain_name,
                    zone_id=target.hosted_zone_id,
                    evaluate_target_health=False,
                )
            ],
            opts=child,
        )
        return pulumi.Output.concat("https://", domain.domain_name)
