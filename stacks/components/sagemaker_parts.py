"""What SageMaker's real-time and asynchronous endpoints build alike: the container's security group and one
Model per version (docs/sagemaker.md). Both components call these, so the two kinds of endpoint cannot
drift apart on network isolation, the VPC or how a version's files reach the container."""

from collections.abc import Sequence

import pulumi
import pulumi_aws as aws


def s3_uri(bucket: str, path: str) -> str:
    """`s3://<bucket>/<path>`."""
    return f"s3://{bucket}/{path}"


def variant_name(version: str) -> str:
    """The production variant of a model version."""
    return f"v{version}"


def version_prefix(model: str, version: str) -> str:
    """A version's files in the model bucket, as the model sync of the cluster stacks copies them. SageMaker
    wants an uncompressed S3Prefix to end in a slash, and copies what is under it into /opt/ml/model."""
    return f"models/{model}/{version}/"


def one_version_environment(model: str, version: str) -> dict[str, str]:
    """The container serves /opt/ml/model as one version of one model (serving_image/settings.py)."""
    return {"SERVING_MODEL_NAME": model, "SERVING_MODEL_VERSION": version}


def container_security_group(
    name: str,
    description: str,
    *,
    vpc_id: pulumi.Input[str],
    vpc_cidr: pulumi.Input[str],
    s3_prefix_list_id: pulumi.Input[str],
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.ec2.SecurityGroup:
    """No ingress (SageMaker reaches the container itself); egress HTTPS only to the VPC (its ECR and logs
    endpoints) and to S3 through the gateway endpoint (its prefix list: that traffic leaves the VPC)."""
    return aws.ec2.SecurityGroup(
        f"{name}-sg",
        description=description,
        vpc_id=vpc_id,
        egress=[
            aws.ec2.SecurityGroupEgressArgs(
                protocol="tcp", from_port=443, to_port=443, cidr_blocks=[vpc_cidr]
            ),
            aws.ec2.SecurityGroupEgressArgs(
                protocol="tcp", from_port=443, to_port=443, prefix_list_ids=[s3_prefix_list_id]
            ),
        ],
        tags=tags,
        opts=opts,
    )


def version_model(
    name: str,
    *,
    model: str,
    version: str,
    image: pulumi.Input[str],
    bucket: pulumi.Input[str],
    role: aws.iam.Role,
    group: aws.ec2.SecurityGroup,
    subnets: pulumi.Input[Sequence[pulumi.Input[str]]],
    grants: aws.iam.RolePolicy,
    tags: dict[str, str],
    parent: pulumi.Resource,
) -> aws.sagemaker.Model:
    """One version's Model: SageMaker copies the version's prefix into /opt/ml/model (model.onnx at its top)
    and the container serves it as that model and version, so each production variant serves its own
    version and SageMaker's weights are the only split. It waits for the role's policy: CreateModel checks
    that the role can read the data and pull the image."""
    return aws.sagemaker.Model(
        name,
        execution_role_arn=role.arn,
        primary_container=aws.sagemaker.ModelPrimaryContainerArgs(
            image=image,
            mode="SingleModel",
            environment=one_version_environment(model, version),
            model_data_source=aws.sagemaker.ModelPrimaryContainerModelDataSourceArgs(
                s3_data_sources=[
                    aws.sagemaker.ModelPrimaryContainerModelDataSourceS3DataSourceArgs(
                        compression_type="None",
                        s3_data_type="S3Prefix",
                        s3_uri=pulumi.Output.from_input(bucket).apply(
                            lambda b: s3_uri(b, version_prefix(model, version))
                        ),
                    )
                ]
            ),
        ),
        # The container reads /opt/ml/model and answers /invocations: it needs no network of its own.
        enable_network_isolation=True,
        vpc_config=aws.sagemaker.ModelVpcConfigArgs(security_group_ids=[group.id], subnets=subnets),
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[grants]),
    )
