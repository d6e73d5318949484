"""SageMakerAsync: one model's SageMaker asynchronous endpoint in an smb stack's region.

Callers put a V2 request under the job bucket's `jobs/<model>/inputs/` and call InvokeEndpointAsync; SageMaker
runs the serving image (`serve`, models from /opt/ml/model), writes the response under `results/` (failures
under `results/failures/`), both encrypted with the region's async key, and notifies one of two SNS topics
under the same key. The endpoint scales per variant on `ApproximateBacklogSizePerInstance`, down to zero.
"""

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from stacks.components.sagemaker_parts import (
    container_security_group,
    s3_uri,
    variant_name,
    version_model,
)
from stacks.contract import job_prefix
from stacks.settings import SageMakerAsyncConfig

SAGEMAKER_SERVICE = "sagemaker.amazonaws.com"
SCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
"""Application Auto Scaling's service-linked role for SageMaker endpoints (one per account)."""
BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"
WAKE_METRIC = "HasBacklogWithoutCapacity"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
ECR_PULL = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
VPC_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
)
"""What SageMaker needs to place an endpoint's network interfaces in the VPC (AWS documents `*` resources)."""
LOG_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents")
KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")


@dataclass(frozen=True, kw_only=True)
class SageMakerAsyncArgs:
    """Inputs of `SageMakerAsync`."""

    model: str
    """The model's name (`/v2/models/<name>`); its files are `models/<name>/` in the model bucket."""
    region: str
    """The stack's region: every resource, path and key is in it."""
    account_id: str
    """The stack's account (the role's trust is limited to SageMaker acting for it)."""
    config: SageMakerAsyncConfig
    """Instance type and count, concurrency and scaling bounds."""
    weights: tuple[tuple[str, int], ...]
    """(version, percent) of the model's variants block: one production variant per version."""
    image: pulumi.Input[str]
    """The serving image in the region's ECR, by digest."""
    repository_arn: pulumi.Input[str]
    """Its ECR repository (the role may pull from it only)."""
    model_bucket: pulumi.Input[str]
    """The region's model bucket."""
    model_key_arn: pulumi.Input[str]
    """The model bucket's key (read through S3)."""
    job_bucket: pulumi.Input[str]
    """The region's result bucket."""
    key_arn: pulumi.Input[str]
    """The region's async key: results, topics and the endpoint's volumes."""
    vpc_cidr: str
    """The VPC's range: the endpoint's interfaces reach only it (the VPC endpoints)."""
    vpc_id: pulumi.Input[str]
    """The VPC."""
    s3_prefix_list_id: pulumi.Input[str]
    """The VPC's S3 gateway endpoint prefix list: model data and async inputs and results go through it."""
    private_subnet_ids: list[pulumi.Input[str]]
    """Where the endpoint's interfaces go."""
    create_scaling_role: bool = False
    """Create the account's SageMaker autoscaling service-linked role (once per stack)."""
    scaling_role: pulumi.Resource | None = None
    """That role, made by another endpoint of the stack: scaling targets wait for it."""
    tags: dict[str, str]
    """Tags."""


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def trust_policy(account: str) -> str:
    """SageMaker may assume the role, only on this account's behalf (no confused deputy)."""
    return _doc(
        {
            "Effect": "Allow",
            "Principal": {"Service": SAGEMAKER_SERVICE},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        }
    )


def output_paths(model: str) -> tuple[str, str]:
    """(results, failures) under the model's part of the job bucket; both expire with `results/`."""
    return f"{job_prefix(model)}/results/", f"{job_prefix(model)}/results/failures/"


@dataclass(frozen=True, kw_only=True)
class RoleGrants:
    """The concrete ARNs the execution role is granted."""

    region: str
    account: str
    model: str
    model_bucket: str
    model_key: str
    job_bucket: str
    key: str
    repository: str
    topics: tuple[str, ...]


def role_policy(g: RoleGrants) -> str:
    """Exactly what the endpoint does: read the model's prefix, pull its image, read inputs and write results,
    notify its topics, use the keys through S3 and SNS in the region, place its interfaces, and log."""
    models, jobs = f"arn:aws:s3:::{g.model_bucket}", f"arn:aws:s3:::{g.job_bucket}"
    # Failures are written under results/ too, so one grant covers both.
    results, _ = output_paths(g.model)
    via = [f"s3.{g.region}.amazonaws.com", f"sns.{g.region}.amazonaws.com"]
    return _doc(
        {
            "Sid": "ReadModel",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{models}/models/{g.model}/*",
        },
        {
            "Sid": "ListModel",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": models,
            "Condition": {"StringLike": {"s3:prefix": [f"models/{g.model}/*"]}},
        },
        {"Sid": "PullImageToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "PullImage", "Effect": "Allow", "Action": list(ECR_PULL), "Resource": g.repository},
        {
            "Sid": "ReadInputs",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{jobs}/{job_prefix(g.model)}/inputs/*",
        },
        {
            "Sid": "WriteResults",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": f"{jobs}/{results}*",
        },
        {"Sid": "Notify", "Effect": "Allow", "Action": "sns:Publish", "Resource": sorted(g.topics)},
        {
            "Sid": "UseKeysInRegion",
            "Effect": "Allow",
            "Action": list(KEY_ACTIONS),
            "Resource": sorted({g.key, g.model_key}),
            "Condition": {"StringEquals": {"kms:ViaService": via}},
        },
        {"Sid": "PlaceInterfaces", "Effect": "Allow", "Action": list(VPC_ACTIONS), "Resource": "*"},
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": list(LOG_ACTIONS),
            "Resource": f"arn:aws:logs:{g.region}:{g.account}:log-group:/aws/sagemaker/Endpoints/*",
        },
    )


class SageMakerAsync(pulumi.ComponentResource):
    """An asynchronous endpoint of one model: role, model, config, endpoint, topics and autoscaling."""

    endpoint_name: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    success_topic_arn: pulumi.Output[str]
    error_topic_arn: pulumi.Output[str]
    scaling_role: aws.iam.ServiceLinkedRole | None

    def __init__(
        self, name: str, args: SageMakerAsyncArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if args.create_scaling_role and args.scaling_role is not None:
            raise ValueError("create_scaling_role and scaling_role both set: the role is one per account")
        if sum(w for _, w in args.weights) != 100:
            raise ValueError(f"{args.model}: variant weights must sum to 100, got {args.weights}")
        super().__init__("model-serving:inference:SageMakerAsync", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        success, error = (
            aws.sns.Topic(
                f"{name}-{kind}",
                kms_master_key_id=args.key_arn,
                tags=args.tags,
                opts=child,
            )
            for kind in ("success", "error")
        )
        role, grants = self._role(name, args, (success, error), child)
        group = container_security_group(
            name,
            f"SageMaker async endpoint of {args.model}: HTTPS to the VPC's endpoints and S3 only",
            vpc_id=args.vpc_id,
            vpc_cidr=args.vpc_cidr,
            s3_prefix_list_id=args.s3_prefix_list_id,
            tags=args.tags,
            opts=child,
        )
        models = {
            version: version_model(
                f"{name}-{variant_name(version)}",
                model=args.model,
                version=version,
                image=args.image,
                bucket=args.model_bucket,
                role=role,
                group=group,
                subnets=args.private_subnet_ids,
                grants=grants,
                tags=args.tags,
                parent=self,
            )
            for version, _ in args.weights
        }
        config = self._config(name, args, models, success, error)
        endpoint = aws.sagemaker.Endpoint(
            f"{name}-endpoint",
            endpoint_config_name=config.name,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[config]),
        )
        self._scaling(name, args, endpoint)
        self.endpoint_name = endpoint.name
        self.role_arn = role.arn
        self.success_topic_arn = success.arn
        self.error_topic_arn = error.arn
        self.register_outputs(
            {
                "endpoint_name": self.endpoint_name,
                "role_arn": self.role_arn,
                "success_topic_arn": self.success_topic_arn,
                "error_topic_arn": self.error_topic_arn,
            }
        )

    def _role(
        self,
        name: str,
        args: SageMakerAsyncArgs,
        topics: tuple[aws.sns.Topic, ...],
        child: pulumi.ResourceOptions,
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        role = aws.iam.Role(
            f"{name}-role", assume_role_policy=trust_policy(args.account_id), tags=args.tags, opts=child
        )
        policy = pulumi.Output.all(
            model_bucket=args.model_bucket,
            model_key=args.model_key_arn,
            job_bucket=args.job_bucket,
            key=args.key_arn,
            repository=args.repository_arn,
            success=topics[0].arn,
            error=topics[1].arn,
        ).apply(
            lambda v: role_policy(
                RoleGrants(
                    region=args.region,
                    account=args.account_id,
                    model=args.model,
                    model_bucket=v["model_bucket"],
                    model_key=v["model_key"],
                    job_bucket=v["job_bucket"],
                    key=v["key"],
                    repository=v["repository"],
                    topics=(v["success"], v["error"]),
                )
            )
        )
        grants = aws.iam.RolePolicy(f"{name}-role", role=role.id, policy=policy, opts=child)
        return role, grants

    def _config(
        self,
        name: str,
        args: SageMakerAsyncArgs,
        models: dict[str, aws.sagemaker.Model],
        success: aws.sns.Topic,
        error: aws.sns.Topic,
    ) -> aws.sagemaker.EndpointConfiguration:
        results, failures = output_paths(args.model)
        bucket = pulumi.Output.from_input(args.job_bucket)
        return aws.sagemaker.EndpointConfiguration(
            f"{name}-config",
            kms_key_arn=args.key_arn,
            production_variants=[
                aws.sagemaker.EndpointConfigurationProductionVariantArgs(
                    variant_name=variant_name(version),
                    model_name=models[version].name,
                    initial_variant_weight=weight,
                    instance_type=args.config.instance_type,
                    initial_instance_count=args.config.instance_count,
                )
                for version, weight in args.weights
            ],
            async_inference_config=aws.sagemaker.EndpointConfigurationAsyncInferenceConfigArgs(
                output_config=aws.sagemaker.EndpointConfigurationAsyncInferenceConfigOutputConfigArgs(
                    s3_output_path=bucket.apply(lambda b: s3_uri(b, results)),
                    s3_failure_path=bucket.apply(lambda b: s3_uri(b, failures)),
                    kms_key_id=args.key_arn,
                    notification_config=aws.sagemaker.EndpointConfigurationAsyncInferenceConfigOutputConfigNotificationConfigArgs(
                        success_topic=success.arn, error_topic=error.arn
                    ),
                ),
                client_config=aws.sagemaker.EndpointConfigurationAsyncInferenceConfigClientConfigArgs(
                    max_concurrent_invocations_per_instance=args.config.max_concurrent_invocations
                ),
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(models.values())),
        )

    def _scaling(self, name: str, args: SageMakerAsyncArgs, endpoint: aws.sagemaker.Endpoint) -> None:
        """Per variant: instances between the bounds, tracking the backlog per instance."""
        self.scaling_role = None
        if args.create_scaling_role:
            self.scaling_role = aws.iam.ServiceLinkedRole(
                f"{name}-scaling",
                aws_service_name=SCALING_SERVICE,
                description="Application Auto Scaling (SageMaker endpoints)",
                tags=args.tags,
                # Account-wide: other stacks' endpoints use it too, so destroying this stack keeps it.
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )
        role = self.scaling_role or args.scaling_role
        wake: list[pulumi.Output[str]] = []
        for version, _ in args.weights:
            variant = variant_name(version)
            target = aws.appautoscaling.Target(
                f"{name}-{variant}-scaling",
                service_namespace="sagemaker",
                scalable_dimension=SCALABLE_DIMENSION,
                resource_id=pulumi.Output.format("endpoint/{0}/variant/{1}", endpoint.name, variant),
                min_capacity=args.config.min_instances,
                max_capacity=args.config.max_instances,
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[endpoint, *([role] if role else [])]),
            )
            aws.appautoscaling.Policy(
                f"{name}-{variant}-backlog",
                policy_type="TargetTrackingScaling",
                service_namespace=target.service_namespace,
                scalable_dimension=target.scalable_dimension,
                resource_id=target.resource_id,
                target_tracking_scaling_policy_configuration=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                    target_value=float(args.config.backlog_per_instance),
                    customized_metric_specification=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationArgs(
                        metric_name=BACKLOG_METRIC,
                        namespace="AWS/SageMaker",
                        statistic="Average",
                        dimensions=[
                            aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationDimensionArgs(
                                name="EndpointName", value=endpoint.name
                            )
                        ],
                    ),
                    scale_in_cooldown=300,
                    scale_out_cooldown=60,
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[target]),
            )
            if args.config.min_instances == 0:
                wake.append(self._wake_policy(f"{name}-{variant}", target))
        if wake:
            aws.cloudwatch.MetricAlarm(
                f"{name}-backlog-without-capacity",
                alarm_description=f"{args.model}: requests wait and no instance runs; start one per variant",
                namespace="AWS/SageMaker",
                metric_name=WAKE_METRIC,
                dimensions={"EndpointName": endpoint.name},
                statistic="Average",
                period=60,
                evaluation_periods=2,
                datapoints_to_alarm=2,
                threshold=1,
                comparison_operator="GreaterThanOrEqualToThreshold",
                treat_missing_data="missing",
                alarm_actions=wake,
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )

    def _wake_policy(self, name: str, target: aws.appautoscaling.Target) -> pulumi.Output[str]:
        """Target tracking cannot leave zero instances (a backlog per instance needs an instance): a step of
        one instance, taken when the backlog-without-capacity alarm fires, wakes the variant."""
        policy = aws.appautoscaling.Policy(
            f"{name}-wake",
            policy_type="StepScaling",
            service_namespace=target.service_namespace,
            scalable_dimension=target.scalable_dimension,
            resource_id=target.resource_id,
            step_scaling_policy_configuration=aws.appautoscaling.PolicyStepScalingPolicyConfigurationArgs(
                adjustment_type="ChangeInCapacity",
                metric_aggregation_type="Average",
                cooldown=300,
                step_adjustments=[
                    aws.appautoscaling.PolicyStepScalingPolicyConfigurationStepAdjustmentArgs(
                        metric_interval_lower_bound="0", scaling_adjustment=1
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[target]),
        )
        return policy.arn
