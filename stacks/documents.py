"""IAM and KMS policy documents, as pure functions returning JSON strings."""

import json
from collections.abc import Sequence
from typing import Any

ACCOUNT_ROOT = "arn:aws:iam::{account}:root"


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role_policy(service: str) -> str:
    """Trust policy letting one AWS service assume the role."""
    return _doc({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def irsa_trust_policy(provider_arn: str, issuer: str, namespace: str, service_account: str) -> str:
    """Trust policy for exactly one Kubernetes service account through the cluster's OIDC provider."""
    host = issuer.removeprefix("https://")
    return _doc(
        {
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    f"{host}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                    f"{host}:aud": "sts.amazonaws.com",
                }
            },
        }
    )


AUTOSCALING_ROLE = (
    "arn:aws:iam::{account}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
)
"""EC2 Auto Scaling's service-linked role: it launches a managed node group's instances and their volumes."""
VOLUME_KEY_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:DescribeKey",
)
"""What a principal needs of a key to create and attach encrypted EBS volumes (AWS's key-policy wording)."""
VOLUME_KEY_ACTIONS_EXACT = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:DescribeKey",
)
"""The same, spelled out for IAM policies, where the gate admits no wildcard on a data service (IDN-006)."""
GRANT_FOR_AWS_RESOURCE = {"Bool": {"kms:GrantIsForAWSResource": "true"}}
"""Grants only on behalf of an AWS service (EC2 attaching a volume), never to an arbitrary grantee."""


def autoscaling_role_arn(account: str) -> str:
    """ARN of the account's EC2 Auto Scaling service-linked role (one per account, name fixed by AWS)."""
    return AUTOSCALING_ROLE.format(account=account)


def key_policy(
    account: str,
    region: str,
    log_service: bool,
    volume_roles: Sequence[str] = (),
    service_users: Sequence[str] = (),
) -> str:
    """Key policy: the account administers the key (so IAM policies can grant its use); CloudWatch Logs in
    this region may use it if asked; `volume_roles` (service roles that launch instances) may encrypt
    volumes with it.

    KMS rejects a policy whose principal does not exist yet: each `volume_roles` role must exist first.
    """
    statements = [_account_administers_key(account)]
    if log_service:
        statements.append(_regional_logs_use_key(account, region))
    if volume_roles:
        statements += _volume_roles_use_key(volume_roles)
    if service_users:
        statements.append(_services_use_key(account, service_users))
    return _doc(*statements)


SERVICE_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
"""What an AWS service needs of a key to write and read data it encrypts with it (an SNS topic's messages)."""


def _services_use_key(account: str, services: Sequence[str]) -> dict[str, Any]:
    """AWS services (`sns.amazonaws.com`, `sagemaker.amazonaws.com`) may encrypt and decrypt with the key on
    this account's behalf only: an encrypted topic is unusable to a service the key policy leaves out."""
    return {
        "Sid": "ServicesUseKey",
        "Effect": "Allow",
        "Principal": {"Service": sorted(services)},
        "Action": list(SERVICE_KEY_ACTIONS),
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:SourceAccount": account}},
    }


def _account_administers_key(account: str) -> dict[str, Any]:
    """The account administers the key: KMS heeds IAM policies for a key only when its key policy trusts the
    account, so without this statement no role could be granted the key's use."""
    return {
        "Sid": "AccountAdministers",
        "Effect": "Allow",
        "Principal": {"AWS": ACCOUNT_ROOT.format(account=account)},
        "Action": "kms:*",
        "Resource": "*",
    }


def _regional_logs_use_key(account: str, region: str) -> dict[str, Any]:
    """This region's CloudWatch Logs, and only for this account's log groups in this region: the encryption
    context names the log group, so another account's logs cannot borrow the key."""
    return {
        "Sid": "RegionalLogsEncrypt",
        "Effect": "Allow",
        "Principal": {"Service": f"logs.{region}.amazonaws.com"},
        "Action": [
            "kms:Encrypt*",
            "kms:Decrypt*",
            "kms:ReEncrypt*",
            "kms:GenerateDataKey*",
            "kms:Describe*",
        ],
        "Resource": "*",
        "Condition": {
            "ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{region}:{account}:*"}
        },
    }


def _volume_roles_use_key(volume_roles: Sequence[str]) -> list[dict[str, Any]]:
    """The roles that launch instances may encrypt their volumes and grant the key to the AWS service that
    attaches them, as AWS documents for encrypted EBS volumes launched by an Auto Scaling group."""
    principal = {"AWS": list(volume_roles)}
    return [
        {
            "Sid": "VolumeRolesUseKey",
            "Effect": "Allow",
            "Principal": principal,
            "Action": list(VOLUME_KEY_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "VolumeRolesAttachPersistentResources",
            "Effect": "Allow",
            "Principal": principal,
            "Action": "kms:CreateGrant",
            "Resource": "*",
            "Condition": GRANT_FOR_AWS_RESOURCE,
        },
    ]


def volume_key_user_policy(key_arn: str) -> str:
    """IAM policy of a role that creates encrypted volumes with one key (the EBS CSI driver's)."""
    return _doc(
        {
            "Sid": "GrantsForAttachedVolumes",
            "Effect": "Allow",
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            "Resource": key_arn,
            "Condition": GRANT_FOR_AWS_RESOURCE,
        },
        {
            "Sid": "UseVolumeKey",
            "Effect": "Allow",
            "Action": list(VOLUME_KEY_ACTIONS_EXACT),
            "Resource": key_arn,
        },
    )


def log_writer_policy(log_group_arn: str) -> str:
    """What a log shipper may do: write streams of its one log group."""
    return _doc(
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": [log_group_arn, f"{log_group_arn}:*"],
        }
    )


def flow_logs_policy(log_group_arn: str) -> str:
    """What the flow-log delivery role may do: write to its one log group."""
    return log_writer_policy(log_group_arn)


def tls_only_bucket_policy(bucket_arn: str) -> str:
    """Deny any request to the bucket that is not over TLS 1.2 or newer."""
    return _doc(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Sid": "DenyOldTls",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
        },
    )


def model_read_policy(bucket_arn: str, key_arn: str, prefix: str) -> str:
    """Read-only access to one model's objects in the model bucket, and decrypt with its key."""
    return _doc(
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": f"{bucket_arn}/{prefix}*",
        },
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        },
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn},
    )


def job_store_statements(bucket_arn: str, key_arn: str, prefix: str, region: str) -> list[dict[str, Any]]:
    """A model's part of the result bucket (`prefix` = `jobs/<model>/`): read the inputs callers put under
    `inputs/`, read and write results under `results/`, nothing else (no list, no delete); the bucket's key
    only through S3 in its region, to decrypt what it reads and encrypt what it writes."""
    return [
        {
            "Sid": "ReadJobInputs",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{bucket_arn}/{prefix}inputs/*",
        },
        {
            "Sid": "ReadWriteJobResults",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": f"{bucket_arn}/{prefix}results/*",
        },
        {
            "Sid": "JobStoreKeyThroughS3",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        },
    ]


def async_model_policy(model: tuple[str, str, str], jobs: tuple[str, str, str], region: str) -> str:
    """An async model's role: `model_read_policy` on (bucket, key, prefix) of the model bucket, and
    `job_store_statements` on (bucket, key, prefix) of the result bucket."""
    read = json.loads(model_read_policy(*model))["Statement"]
    return _doc(*read, *job_store_statements(*jobs, region))


def retrain_policy(buckets: Sequence[tuple[str, str, str]], models: Sequence[str]) -> str:
    """The retrain receiver's role over (bucket ARN, key ARN, region) of every region's model bucket, the
    primary's first: read each model's labelled data (`training/<model>/`) in the primary's; in every one,
    read and list the model's versions (`models/<model>/`), learn the bucket's region and default encryption,
    and write versions only with SSE-KMS under that bucket's key; each key only through S3 in its region and
    for its bucket (the buckets use S3 Bucket Keys, so the encryption context is the bucket's ARN).

    No delete: a retrain never removes a version, and the buckets' versioning keeps anything a write
    replaced (the command refuses an existing version before it writes)."""
    primary = buckets[0][0]
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadLabelledData",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [f"{primary}/training/{model}/*" for model in models],
        }
    ]
    for bucket, key, region in buckets:
        sid = "".join(part.title() for part in region.split("-"))
        versions = [f"{bucket}/models/{model}/*" for model in models]
        statements += [
            {"Sid": f"ReadVersions{sid}", "Effect": "Allow", "Action": "s3:GetObject", "Resource": versions},
            {
                "Sid": f"ListVersions{sid}",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket,
                "Condition": {"StringLike": {"s3:prefix": [f"models/{model}/*" for model in models]}},
            },
            {
                "Sid": f"BucketFacts{sid}",
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation", "s3:GetEncryptionConfiguration"],
                "Resource": bucket,
            },
            {
                "Sid": f"WriteVersions{sid}",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": versions,
                "Condition": {
                    "StringEquals": {
                        "s3:x-amz-server-side-encryption": "aws:kms",
                        "s3:x-amz-server-side-encryption-aws-kms-key-id": key,
                    }
                },
            },
            {
                "Sid": f"BucketKeyThroughS3{sid}",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": key,
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": f"s3.{region}.amazonaws.com",
                        "kms:EncryptionContext:aws:s3:arn": bucket,
                    }
                },
            },
        ]
    return _doc(*statements)


def role_trust_policy(role_arn: str) -> str:
    """Trust policy letting exactly one IAM role assume this one."""
    return _doc({"Effect": "Allow", "Principal": {"AWS": role_arn}, "Action": "sts:AssumeRole"})


def autoscaler_owner_tag(cluster_name: str) -> str:
    """The tag EKS puts (value `owned`) on the Auto Scaling group of every managed node group of a cluster."""
    return f"k8s.io/cluster-autoscaler/{cluster_name}"


def lb_controller_policy(target_group_arn: str, security_group_arn: str) -> str:
    """The load balancer controller, reduced to what a TargetGroupBinding needs: keep one target group's
    targets in step with the gateway's pods and open the nodes' security group to the load balancer."""
    return _doc(
        {
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": [
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:DescribeLoadBalancerAttributes",
                "elasticloadbalancing:DescribeListeners",
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetGroupAttributes",
                "elasticloadbalancing:DescribeTargetHealth",
                "elasticloadbalancing:DescribeTags",
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeInstances",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSubnets",
                "ec2:DescribeVpcs",
            ],
            "Resource": "*",
        },
        {
            "Sid": "RegisterGatewayTargets",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
            "Resource": target_group_arn,
        },
        {
            "Sid": "NodeSecurityGroupIngress",
            "Effect": "Allow",
            "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"],
            # The group is the required resource of both actions; the rule ARN is evaluated alongside it.
            "Resource": [security_group_arn, security_group_arn.rsplit(":", 1)[0] + ":security-group-rule/*"],
        },
    )


def cluster_autoscaler_policy(cluster_name: str) -> str:
    """The cluster autoscaler: describe everything, but resize only this cluster's node groups."""
    return _doc(
        {
            "Sid": "ScaleOwnedGroups",
            "Effect": "Allow",
            "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
            "Resource": "*",
            "Condition": {"StringEquals": {f"aws:ResourceTag/{autoscaler_owner_tag(cluster_name)}": "owned"}},
        },
        {
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": [
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeAutoScalingInstances",
                "autoscaling:DescribeLaunchConfigurations",
                "autoscaling:DescribeScalingActivities",
                "autoscaling:DescribeTags",
                "ec2:DescribeImages",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:GetInstanceTypesFromInstanceRequirements",
                "eks:DescribeNodegroup",
            ],
            "Resource": "*",
        },
    )


def otel_collector_policy() -> str:
    """The OpenTelemetry collector: send traces to the region's X-Ray and read its sampling rules."""
    return _doc(
        {
            "Effect": "Allow",
            "Action": [
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
            ],
            "Resource": "*",
        }
    )


def runner_policy(
    *,
    region: str,
    account: str,
    log_group_arn: str,
    subnet_ids: Sequence[str],
    repository_arn: str,
    connection_arn: str,
    deploy_role_arn: str,
    state: Sequence[dict[str, Any]] = (),
) -> str:
    """The deploy runner's CodeBuild service role: its logs, its network interfaces in the private subnets,
    its build image, its GitHub connection, the Pulumi state (`state_statements`) and the deploy role, which
    the kubeconfig's exec assumes (`--role-arn`): nothing else of the account. Pulumi runs as this role, so
    no profile switches identity and the deploy role never has to assume itself."""
    return _doc(
        {
            "Sid": "WriteBuildLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group_arn, f"{log_group_arn}:*"],
        },
        *_build_interface_statements(region, account, subnet_ids),
        *_build_image_statements(repository_arn),
        _connection_statement(connection_arn),
        {
            "Sid": "AssumeDeployRole",
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": deploy_role_arn,
        },
        *state,
    )


def _build_interface_statements(region: str, account: str, subnet_ids: Sequence[str]) -> list[dict[str, Any]]:
    """CodeBuild creates the build's network interfaces as the role, with the rights AWS's guide for builds in
    a VPC gives it; the one that lets an interface be used is held to CodeBuild and the private subnets, so
    the role can put a build in no other subnet."""
    return [
        {
            "Sid": "DescribeAndManageBuildInterfaces",
            "Effect": "Allow",
            "Action": [
                "ec2:CreateNetworkInterface",
                "ec2:DeleteNetworkInterface",
                "ec2:DescribeDhcpOptions",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSubnets",
                "ec2:DescribeVpcs",
            ],
            "Resource": "*",
        },
        {
            "Sid": "BuildInterfacesInPrivateSubnets",
            "Effect": "Allow",
            "Action": "ec2:CreateNetworkInterfacePermission",
            "Resource": f"arn:aws:ec2:{region}:{account}:network-interface/*",
            "Condition": {
                "StringEquals": {"ec2:AuthorizedService": "codebuild.amazonaws.com"},
                "ArnEquals": {
                    "ec2:Subnet": [f"arn:aws:ec2:{region}:{account}:subnet/{s}" for s in subnet_ids]
                },
            },
        },
    ]


def _build_image_statements(repository_arn: str) -> list[dict[str, Any]]:
    """The registry token is account-wide (ECR allows no narrower resource); the pulls, only from the build
    image's own repository."""
    return [
        {"Sid": "RegistryToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {
            "Sid": "PullBuildImage",
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Resource": repository_arn,
        },
    ]


def _connection_statement(connection_arn: str) -> dict[str, Any]:
    """Use of the one GitHub connection. The actions' service prefix is the ARN's: `codeconnections`, or
    `codestar-connections` for connections made before the service was renamed."""
    connections = connection_arn.split(":")[2]
    return {
        "Sid": "GitHubConnection",
        "Effect": "Allow",
        "Action": [
            f"{connections}:GetConnection",
            f"{connections}:GetConnectionToken",
            f"{connections}:UseConnection",
        ],
        "Resource": connection_arn,
    }


def state_statements(
    state_bucket_arn: str, platform_project: str, secrets_key_arn: str
) -> list[dict[str, Any]]:
    """Read every stack's state (the infra stack through a StackReference), write only the platform
    project's, and use the secrets key: what the process running `pulumi up` of the platform needs."""
    platform_state = f"{state_bucket_arn}/.pulumi/*/{platform_project}/*"  # stacks, history, backups, locks
    return [
        {
            "Sid": "ListState",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": state_bucket_arn,
        },
        {
            "Sid": "ReadState",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{state_bucket_arn}/*",
        },
        {
            "Sid": "WritePlatformState",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": platform_state,
        },
        {
            "Sid": "UseSecretsKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
            "Resource": secrets_key_arn,
        },
    ]


def deploy_policy(*, cluster_arns: Sequence[str]) -> str:
    """The deploy role (the identity the kubeconfig's exec assumes): find its clusters, nothing else.

    Kubernetes rights come from the clusters' access entries, not from IAM; the state is the runner role's.
    """
    return _doc(
        {
            "Sid": "DescribeCluster",
            "Effect": "Allow",
            "Action": "eks:DescribeCluster",
            "Resource": list(cluster_arns),
        }
    )


def secret_reader_policy(secret_arn: str | list[str], key_arn: str, region: str) -> str:
    """Read Secrets Manager secrets (one or a list, all under one key), and decrypt them with their key only
    through Secrets Manager in the secrets' region: the role cannot use the key for anything else (the
    in-cluster secret syncer's)."""
    return _doc(
        {
            "Sid": "ReadSecret",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            "Resource": secret_arn,
        },
        {
            "Sid": "DecryptThroughSecretsManager",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
        },
    )
