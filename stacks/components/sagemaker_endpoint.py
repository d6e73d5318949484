"""SageMakerEndpoint: one model's real-time SageMaker endpoint in an smb stack's region (docs/smb.md).

One Model per version (the serving image by digest, the version's prefix as its model data, in the VPC with
network isolation), one production variant per version (`v<version>`) with the model's weights, provisioned
instances scaled on invocations per instance, data capture to the model bucket, the endpoint's log group, and
guarded updates: blue/green traffic shifting (canary or linear, from the model's rollout) that rolls back when
a variant's 5xx-rate or p99-latency alarm fires.
"""

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from stacks.components.sagemaker_async import ECR_PULL, LOG_ACTIONS, VPC_ACTIONS, trust_policy
from stacks.components.sagemaker_parts import (
    container_security_group,
    s3_uri,
    variant_name,
    version_model,
)
from stacks.settings import Rollout
from stacks.settings_smb import SageMakerHosting

INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
MAX_WAIT_SECONDS = 3600
"""SageMaker's ceiling on a traffic-routing step's wait (WaitIntervalInSeconds) and the final bake."""
MAX_EXECUTION_SECONDS = 14_400
"""SageMaker's ceiling on a blue/green update's MaximumExecutionTimeoutInSeconds."""


def log_group_name(endpoint: str) -> str:
    """Where SageMaker writes an endpoint's container logs (the stack makes it first)."""
    return f"/aws/sagemaker/Endpoints/{endpoint}"


def capture_prefix(model: str) -> str:
    """The model's captured requests and responses in the model bucket."""
    return f"capture/{model}/"


def alarm_names(endpoint: str, version: str) -> tuple[str, str]:
    """(5xx rate, p99 latency) alarm names of a variant, as AutoRollbackConfiguration lists them."""
    variant = variant_name(version)
    return f"{endpoint}-{variant}-5xx-rate", f"{endpoint}-{variant}-latency-p99"


def traffic_routing(rollout: Rollout | None) -> dict[str, Any]:
    """SageMaker's TrafficRoutingConfiguration from the model's rollout steps: LINEAR where the steps are even
    increments (25, 50, 75, 100: step 25 %), else CANARY with the first step as the canary. Each step waits
    one analysis interval, shortened where the steps and the final bake (as long as a step) would not fit
    SageMaker's four hours. Without a rollout block: ALL_AT_ONCE, still rolled back by the alarms."""
    if rollout is None:
        return {"type": "ALL_AT_ONCE", "wait_interval_in_seconds": 600}
    first = rollout.steps[0]
    even = len(rollout.steps) > 1 and all(step == first * (i + 1) for i, step in enumerate(rollout.steps))
    shifts = len(rollout.steps) if even else 2
    wait = min(rollout.interval_seconds, MAX_WAIT_SECONDS, (MAX_EXECUTION_SECONDS - 600) // (shifts + 1))
    size = {"type": "CAPACITY_PERCENT", "value": first}
    if even:
        return {"type": "LINEAR", "wait_interval_in_seconds": wait, "linear_step_size": size}
    return {"type": "CANARY", "wait_interval_in_seconds": wait, "canary_size": size}


def execution_timeout(routing: dict[str, Any]) -> int:
    """Every shift's wait, the final bake (one wait) and ten minutes to provision, within 600..14400 s."""
    wait = int(routing["wait_interval_in_seconds"])
    step = routing.get("linear_step_size")
    shifts = -(-100 // int(step["value"])) if step else 2
    return max(600, min(MAX_EXECUTION_SECONDS, (shifts + 1) * wait + 600))


@dataclass(frozen=True, kw_only=True)
class EndpointGrants:
    """The concrete ARNs an endpoint's execution role is granted."""

    region: str
    account: str
    model: str
    endpoint: str
    bucket: str
    bucket_key: str
    key: str
    repository: str


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def role_policy(g: EndpointGrants) -> str:
    """Exactly what the endpoint does: read its model's versions, pull its image, write captured data, use
    the two keys through S3 in the region, place its interfaces and log to its own group. `*` only where the
    action has no resource type (ecr:GetAuthorizationToken; EC2's network-interface calls SageMaker makes)."""
    bucket = f"arn:aws:s3:::{g.bucket}"
    return _doc(
        {
            "Sid": "ReadModel",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{bucket}/models/{g.model}/*",
        },
        {
            "Sid": "ListModel",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket,
            "Condition": {"StringLike": {"s3:prefix": [f"models/{g.model}/*"]}},
        },
        {"Sid": "PullImageToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "PullImage", "Effect": "Allow", "Action": list(ECR_PULL), "Resource": g.repository},
        {
            "Sid": "WriteCapture",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": f"{bucket}/{capture_prefix(g.model)}*",
        },
        {
            "Sid": "UseKeysInRegion",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
            "Resource": sorted({g.key, g.bucket_key}),
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{g.region}.amazonaws.com"}},
        },
        {"Sid": "PlaceInterfaces", "Effect": "Allow", "Action": list(VPC_ACTIONS), "Resource": "*"},
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": list(LOG_ACTIONS),
            "Resource": [
                f"arn:aws:logs:{g.region}:{g.account}:log-group:{log_group_name(g.endpoint)}",
                f"arn:aws:logs:{g.region}:{g.account}:log-group:{log_group_name(g.endpoint)}:log-stream:*",
            ],
        },
    )


@dataclass(frozen=True, kw_only=True)
class SageMakerEndpointArgs:
    """Inputs of `SageMakerEndpoint`."""

    model: str
    """The model's name; its files are `models/<name>/<version>/` in the model bucket."""
    endpoint: str
    """The endpoint's name (`<stack>-<model>`): fixed, so its log group and alarms exist before it."""
    region: str
    """The stack's region: every resource, path and key is in it."""
    account_id: str
    """The stack's account (the role's trust is limited to SageMaker acting for it)."""
    hosting: SageMakerHosting
    """Instances, capture and alarm thresholds."""
    weights: tuple[tuple[str, int], ...]
    """(version, percent) of the model's variants block: one production variant per version."""
    rollout: Rollout | None
    """The model's rollout: the traffic shifting of endpoint updates."""
    image: pulumi.Input[str]
    """The serving image in the region's ECR, by digest."""
    repository_arn: pulumi.Input[str]
    """Its ECR repository (the role may pull from it only)."""
    bucket: pulumi.Input[str]
    """The region's model bucket (model data and captured data)."""
    bucket_key_arn: pulumi.Input[str]
    """The model bucket's key."""
    key_arn: pulumi.Input[str]
    """The endpoint's key: volumes, captured data and its log group."""
    vpc_cidr: str
    """The VPC's range: the endpoint's interfaces reach only it (the VPC endpoints)."""
    vpc_id: pulumi.Input[str]
    """The VPC."""
    s3_prefix_list_id: pulumi.Input[str]
    """The S3 gateway endpoint's prefix list: model data and captured data go through it."""
    private_subnet_ids: list[pulumi.Input[str]]
    """Where the endpoint's interfaces go."""
    log_retention_days: int
    """Retention of the endpoint's log group."""
    scaling_role: pulumi.Resource | None = None
    """Application Auto Scaling's SageMaker service-linked role, if the stack makes it."""
    tags: dict[str, str]
    """Tags."""

    def __post_init__(self) -> None:
        if sum(w for _, w in self.weights) != 100:
            raise ValueError(f"{self.model}: variant weights must sum to 100, got {self.weights}")
        if len(self.weights) > 5:
            raise ValueError(
                f"{self.model}: at most 5 variants (ten rollback alarms), got {len(self.weights)}"
            )


class SageMakerEndpoint(pulumi.ComponentResource):
    """A real-time endpoint of one model: role, models, config, alarms, log group, endpoint and scaling."""

    endpoint_name: pulumi.Output[str]
    endpoint_arn: pulumi.Output[str]
    variant_names: list[str]
    role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: SageMakerEndpointArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("model-serving:inference:SageMakerEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role, grants = self._role(name, args, child)
        group = container_security_group(
            name,
            f"SageMaker endpoint of {args.model}: HTTPS to the VPC's endpoints and S3 only",
            vpc_id=args.vpc_id,
            vpc_cidr=args.vpc_cidr,
            s3_prefix_list_id=args.s3_prefix_list_id,
            tags=args.tags,
            opts=child,
        )
        models = [
            version_model(
                f"{name}-{variant_name(version)}",
                model=args.model,
                version=version,
                image=args.image,
                bucket=args.bucket,
                role=role,
                group=group,
                subnets=args.private_subnet_ids,
                grants=grants,
                tags=args.tags,
                parent=self,
            )
            for version, _ in args.weights
        ]
        config = self._config(name, args, models)
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=log_group_name(args.endpoint),
            retention_in_days=args.log_retention_days,
            kms_key_id=args.key_arn,
            tags=args.tags,
            opts=child,
        )
        alarms = [alarm for version, _ in args.weights for alarm in self._alarms(name, args, version)]
        endpoint = self._endpoint(name, args, config, alarms, logs)
        self._scaling(name, args, endpoint)
        self.endpoint_name = endpoint.name
        self.endpoint_arn = endpoint.arn
        self.variant_names = [variant_name(version) for version, _ in args.weights]
        self.role_arn = role.arn
        self.register_outputs(
            {
                "endpoint_name": self.endpoint_name,
                "endpoint_arn": self.endpoint_arn,
                "variant_names": self.variant_names,
                "role_arn": self.role_arn,
            }
        )

    def _role(
        self, name: str, args: SageMakerEndpointArgs, child: pulumi.ResourceOptions
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        role = aws.iam.Role(
            f"{name}-role", assume_role_policy=trust_policy(args.account_id), tags=args.tags, opts=child
        )
        policy = pulumi.Output.all(
            bucket=args.bucket,
            bucket_key=args.bucket_key_arn,
            key=args.key_arn,
            repository=args.repository_arn,
        ).apply(
            lambda v: role_policy(
                EndpointGrants(
                    region=args.region,
                    account=args.account_id,
                    model=args.model,
                    endpoint=args.endpoint,
                    bucket=v["bucket"],
                    bucket_key=v["bucket_key"],
                    key=v["key"],
                    repository=v["repository"],
                )
            )
        )
        return role, aws.iam.RolePolicy(f"{name}-role", role=role.id, policy=policy, opts=child)

    def _config(
        self, name: str, args: SageMakerEndpointArgs, models: list[aws.sagemaker.Model]
    ) -> aws.sagemaker.EndpointConfiguration:
        instances = args.hosting.instances
        return aws.sagemaker.EndpointConfiguration(
            f"{name}-config",
            kms_key_arn=args.key_arn,
            production_variants=[
                aws.sagemaker.EndpointConfigurationProductionVariantArgs(
                    variant_name=variant_name(version),
                    model_name=model.name,
                    initial_variant_weight=weight,
                    instance_type=instances.instance_type,
                    initial_instance_count=instances.min_instances,
                )
                for (version, weight), model in zip(args.weights, models, strict=True)
            ],
            data_capture_config=aws.sagemaker.EndpointConfigurationDataCaptureConfigArgs(
                enable_capture=True,
                initial_sampling_percentage=args.hosting.capture_percent,
                destination_s3_uri=pulumi.Output.from_input(args.bucket).apply(
                    lambda b: s3_uri(b, capture_prefix(args.model))
                ),
                kms_key_id=args.key_arn,
                capture_options=[
                    aws.sagemaker.EndpointConfigurationDataCaptureConfigCaptureOptionArgs(capture_mode=mode)
                    for mode in ("Input", "Output")
                ],
                capture_content_type_header=aws.sagemaker.EndpointConfigurationDataCaptureConfigCaptureContentTypeHeaderArgs(
                    json_content_types=["application/json"]
                ),
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(models)),
        )

    def _alarms(
        self, name: str, args: SageMakerEndpointArgs, version: str
    ) -> tuple[aws.cloudwatch.MetricAlarm, aws.cloudwatch.MetricAlarm]:
        """A variant's rollback alarms, over one-minute periods: the 5xx share of its invocations (metric
        math, zero without invocations) and ModelLatency's p99 (SageMaker reports it in microseconds)."""
        variant = variant_name(version)
        dims = {"EndpointName": args.endpoint, "VariantName": variant}
        rate_name, latency_name = alarm_names(args.endpoint, version)

        def metric(ident: str, metric_name: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=ident,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace="AWS/SageMaker", metric_name=metric_name, dimensions=dims, period=60, stat="Sum"
                ),
            )

        rate = aws.cloudwatch.MetricAlarm(
            f"{name}-{variant}-5xx-rate",
            name=rate_name,
            alarm_description=f"{args.model} {variant}: 5xx share of invocations; rolls an update back",
            metric_queries=[
                metric("errors", "Invocation5XXErrors"),
                metric("invocations", "Invocations"),
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id="rate",
                    expression="IF(invocations > 0, 100 * errors / invocations, 0)",
                    label="5xx percent",
                    return_data=True,
                ),
            ],
            comparison_operator="GreaterThanThreshold",
            threshold=args.hosting.alarms.error_rate_percent,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            treat_missing_data="notBreaching",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        latency = aws.cloudwatch.MetricAlarm(
            f"{name}-{variant}-latency-p99",
            name=latency_name,
            alarm_description=f"{args.model} {variant}: p99 model latency; rolls an update back",
            namespace="AWS/SageMaker",
            metric_name="ModelLatency",
            dimensions=dims,
            extended_statistic="p99",
            period=60,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            threshold=args.hosting.alarms.latency_p99_ms * 1000,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return rate, latency

    def _endpoint(
        self,
        name: str,
        args: SageMakerEndpointArgs,
        config: aws.sagemaker.EndpointConfiguration,
        alarms: list[aws.cloudwatch.MetricAlarm],
        logs: aws.cloudwatch.LogGroup,
    ) -> aws.sagemaker.Endpoint:
        """The endpoint, after its log group (else SageMaker makes one without retention or key) and its
        alarms (an update names them). Updates shift traffic blue/green and roll back on any alarm."""
        routing = traffic_routing(args.rollout)
        policy = aws.sagemaker.EndpointDeploymentConfigBlueGreenUpdatePolicyArgs(
            traffic_routing_configuration=aws.sagemaker.EndpointDeploymentConfigBlueGreenUpdatePolicyTrafficRoutingConfigurationArgs(
                **routing
            ),
            termination_wait_in_seconds=routing["wait_interval_in_seconds"],
            maximum_execution_timeout_in_seconds=execution_timeout(routing),
        )
        return aws.sagemaker.Endpoint(
            f"{name}-endpoint",
            name=args.endpoint,
            endpoint_config_name=config.name,
            deployment_config=aws.sagemaker.EndpointDeploymentConfigArgs(
                blue_green_update_policy=policy,
                auto_rollback_configuration=aws.sagemaker.EndpointDeploymentConfigAutoRollbackConfigurationArgs(
                    alarms=[
                        aws.sagemaker.EndpointDeploymentConfigAutoRollbackConfigurationAlarmArgs(
                            alarm_name=a.name
                        )
                        for a in alarms
                    ]
                ),
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[config, logs, *alarms]),
        )

    def _scaling(self, name: str, args: SageMakerEndpointArgs, endpoint: aws.sagemaker.Endpoint) -> None:
        """Per variant: instances between the bounds, tracking invocations per instance."""
        instances = args.hosting.instances
        waits = [endpoint, *([args.scaling_role] if args.scaling_role else [])]
        for version, _ in args.weights:
            variant = variant_name(version)
            target = aws.appautoscaling.Target(
                f"{name}-{variant}-scaling",
                service_namespace="sagemaker",
                scalable_dimension=SCALABLE_DIMENSION,
                resource_id=pulumi.Output.format("endpoint/{0}/variant/{1}", endpoint.name, variant),
                min_capacity=instances.min_instances,
                max_capacity=instances.max_instances,
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=waits),
            )
            aws.appautoscaling.Policy(
                f"{name}-{variant}-invocations",
                policy_type="TargetTrackingScaling",
                service_namespace=target.service_namespace,
                scalable_dimension=target.scalable_dimension,
                resource_id=target.resource_id,
                target_tracking_scaling_policy_configuration=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                    target_value=float(instances.invocations_per_instance),
                    predefined_metric_specification=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs(
                        predefined_metric_type=INVOCATIONS_METRIC
                    ),
                    scale_in_cooldown=300,
                    scale_out_cooldown=60,
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[target]),
            )
