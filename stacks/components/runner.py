"""DeployRunner: where the platform layer is deployed from. The cluster's API is private, so the deployer runs
inside the VPC: a CodeBuild project in the private subnets that serves as a GitHub Actions self-hosted runner.

Identities: the project's service role runs the build (logs, network interfaces, its image, its GitHub
connection), holds the Pulumi state (read every stack's, write only the platform project's, use the secrets
key) and may assume the deploy role. The deploy role is the clusters' identity: an EKS access entry on each
region's cluster makes it admin, and IAM lets it do nothing else. Pulumi runs as the runner role; only the
kubeconfig's exec (`aws eks get-token --role-arn <deploy role>`) switches identity, so no role ever has to
assume itself.
"""

import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.documents import (
    assume_role_policy,
    deploy_policy,
    role_trust_policy,
    runner_policy,
    state_statements,
)

ECR_IMAGE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)@sha256:[0-9a-f]{64}"
)
GITHUB_REPOSITORY = re.compile(r"https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
RUNNER_EGRESS_DOMAINS = (
    "github.com",
    "api.github.com",
    ".actions.githubusercontent.com",
    "codeload.github.com",
    ".blob.core.windows.net",
    "objects.githubusercontent.com",
    "objects-origin.githubusercontent.com",
    "github-releases.githubusercontent.com",
    "github-registry-files.githubusercontent.com",
    "release-assets.githubusercontent.com",
)
"""The GitHub hosts the deploy runner reaches, from GitHub's list for self-hosted runners ("Communicating
with self-hosted runners"), the groups its jobs use and no more:

- essential operations: `github.com`, `api.github.com` and `*.actions.githubusercontent.com`, which also
  holds the results receiver (logs, summaries, artifacts) and `pkg.actions` (action packages);
- downloading actions: `codeload.github.com` (the pinned actions' source archives);
- logs, job summaries and workflow artifacts: `*.blob.core.windows.net`;
- the runner application, downloaded from its GitHub release and updating itself when GitHub requires a
  newer one (an ephemeral runner may have to, at its one job): the four hosts GitHub lists for runner
  updates, and `release-assets.githubusercontent.com`, where GitHub's release downloads have redirected
  since 2025 (not yet on that list).

Left out, as no runner job uses them: `raw.githubusercontent.com` (nothing fetches raw files), `ghcr.io` and
`*.pkg.github.com` (publishing actions, GitHub Packages), Git LFS, Dependabot, and the OIDC token service
(the runner jobs use the CodeBuild role; the host is under the actions wildcard anyway). The runner image
ships every tool, so no package host is needed. The egress firewall allows these from the runner's region
only."""
RUNNER_EVENT = "WORKFLOW_JOB_QUEUED"
"""The webhook event that makes CodeBuild start a runner for a queued GitHub Actions job."""
DEPLOY_WORKFLOW = "deploy"
"""`name:` of .github/workflows/deploy.yml: only its jobs may start the runner. A pull request that asks for
the runner's label from another workflow queues nothing here (the deploy environments' branch policy keeps
the deploy workflow itself to main)."""


def image_repository_arn(image: str, region: str) -> str:
    """ARN of the ECR repository an image comes from; ValueError unless it is in `region`'s ECR, by digest."""
    found = ECR_IMAGE.fullmatch(image)
    if found is None or found["region"] != region:
        raise ValueError(
            f"runner image {image!r} must be an ECR image in {region}, pinned by digest "
            f"(<account>.dkr.ecr.{region}.amazonaws.com/<repository>@sha256:<digest>)"
        )
    return f"arn:aws:ecr:{region}:{found['account']}:repository/{found['repository']}"


@dataclass(frozen=True, kw_only=True)
class DeployRunnerArgs:
    """Inputs of `DeployRunner`."""

    cluster_name: str
    """The cluster the runner deploys to; names carry it (and so the stack and region)."""
    region: str
    """The region of the runner and the cluster."""
    stack: str
    """The stack; every region's cluster is `<stack>-<region>`."""
    cluster_regions: tuple[str, ...]
    """Every region of the stack: the runner deploys the platform layer into each region's cluster."""
    vpc_id: pulumi.Input[str]
    """The cluster's VPC."""
    private_subnet_ids: list[pulumi.Input[str]]
    """Subnets the builds run in (no public IP; out through the NAT and the VPC endpoints)."""
    repository_url: str
    """GitHub repository whose workflow jobs the runner takes (`https://github.com/<owner>/<repo>`)."""
    github_connection_arn: str
    """CodeConnections connection to GitHub (created and approved once per account in the console)."""
    image: pulumi.Input[str]
    """Build image: an ECR image in this region, by digest."""
    state_bucket_arn: str
    """The stack's Pulumi state bucket."""
    secrets_key_arn: str
    """The stack's KMS secrets-provider key (and the state bucket's encryption key)."""
    platform_project: str = "model-serving-platform"
    """Pulumi project of the platform layer: the only project whose state the deploy role may write."""
    log_retention_days: int
    """Build log retention."""
    build_timeout_minutes: int = 120
    """Longest a job may run."""
    tags: dict[str, str]
    """Tags."""


class DeployRunner(pulumi.ComponentResource):
    """A CodeBuild-hosted GitHub Actions runner in the private subnets, and the deploy role it assumes."""

    project_name: pulumi.Output[str]
    runner_role_arn: pulumi.Output[str]
    deploy_role_arn: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    log_group: pulumi.Output[str]

    def __init__(self, name: str, args: DeployRunnerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        _check(args)
        super().__init__("model-serving:deploy:DeployRunner", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        log_group = _build_log_group(name, args, child)
        runner_role = aws.iam.Role(
            f"{name}-runner",
            name=f"{args.cluster_name}-deploy-runner",
            assume_role_policy=assume_role_policy("codebuild.amazonaws.com"),
            tags=args.tags,
            opts=child,
        )
        deploy_role = self._deploy_role(name, args, runner_role, account, child)
        grant = _runner_grant(name, args, runner_role, account, log_group, deploy_role, child)
        group = self._security_group(name, args, child)
        project = self._project(name, args, runner_role, group, log_group, grant)
        self.project_name = project.name
        self.runner_role_arn = runner_role.arn
        self.deploy_role_arn = deploy_role.arn
        self.security_group_id = group.id
        self.log_group = log_group.name
        self.register_outputs(
            {
                "project_name": self.project_name,
                "runner_role_arn": self.runner_role_arn,
                "deploy_role_arn": self.deploy_role_arn,
                "security_group_id": self.security_group_id,
                "log_group": self.log_group,
            }
        )

    def _deploy_role(
        self,
        name: str,
        args: DeployRunnerArgs,
        runner_role: aws.iam.Role,
        account: pulumi.Output[str],
        child: pulumi.ResourceOptions,
    ) -> aws.iam.Role:
        """The platform layer's identity, assumable by the runner's role and nothing else."""
        role = aws.iam.Role(
            f"{name}-deploy",
            name=f"{args.cluster_name}-deploy",
            assume_role_policy=runner_role.arn.apply(role_trust_policy),
            max_session_duration=3600 * 2,
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-deploy",
            role=role.id,
            policy=account.apply(
                lambda acct: deploy_policy(
                    cluster_arns=[
                        f"arn:aws:eks:{r}:{acct}:cluster/{args.stack}-{r}" for r in args.cluster_regions
                    ]
                )
            ),
            opts=child,
        )
        return role

    def _security_group(
        self, name: str, args: DeployRunnerArgs, child: pulumi.ResourceOptions
    ) -> aws.ec2.SecurityGroup:
        """No ingress; egress HTTPS only (GitHub, the AWS endpoints, the cluster API). DNS goes to the VPC
        resolver, which security groups do not filter."""
        group = aws.ec2.SecurityGroup(
            f"{name}-runner",
            vpc_id=args.vpc_id,
            description=f"Deploy runner of {args.cluster_name}: HTTPS out only",
            tags=args.tags,
            opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-runner-https",
            security_group_id=group.id,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            cidr_ipv4="0.0.0.0/0",
            description="HTTPS: GitHub, AWS endpoints, the cluster API",
            tags=args.tags,
            opts=child,
        )
        return group

    def _project(
        self,
        name: str,
        args: DeployRunnerArgs,
        role: aws.iam.Role,
        group: aws.ec2.SecurityGroup,
        log_group: aws.cloudwatch.LogGroup,
        grant: aws.iam.RolePolicy,
    ) -> aws.codebuild.Project:
        """The runner project and the webhook that starts it for every queued workflow job."""
        # CodeBuild checks the role's rights (network interfaces, the image) when the project is created.
        project = aws.codebuild.Project(
            f"{name}-runner",
            name=f"{args.cluster_name}-deploy-runner",
            description=f"GitHub Actions runner inside the VPC of {args.cluster_name}",
            service_role=role.arn,
            build_timeout=args.build_timeout_minutes,
            source=_runner_source(args),
            artifacts=aws.codebuild.ProjectArtifactsArgs(type="NO_ARTIFACTS"),
            environment=_runner_environment(args),
            vpc_config=aws.codebuild.ProjectVpcConfigArgs(
                vpc_id=args.vpc_id, subnets=args.private_subnet_ids, security_group_ids=[group.id]
            ),
            logs_config=aws.codebuild.ProjectLogsConfigArgs(
                cloudwatch_logs=aws.codebuild.ProjectLogsConfigCloudwatchLogsArgs(
                    status="ENABLED", group_name=log_group.name
                ),
                s3_logs=aws.codebuild.ProjectLogsConfigS3LogsArgs(status="DISABLED"),
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[grant]),
        )
        self._deploy_jobs_only(name, project)
        return project

    def _deploy_jobs_only(self, name: str, project: aws.codebuild.Project) -> None:
        """The webhook starts a runner for a queued job of the deploy workflow, and for nothing else: a job of
        another workflow that asks for the runner's label queues nowhere."""
        aws.codebuild.Webhook(
            f"{name}-runner",
            project_name=project.name,
            build_type="BUILD",
            filter_groups=[
                aws.codebuild.WebhookFilterGroupArgs(
                    filters=[
                        aws.codebuild.WebhookFilterGroupFilterArgs(type="EVENT", pattern=RUNNER_EVENT),
                        aws.codebuild.WebhookFilterGroupFilterArgs(
                            type="WORKFLOW_NAME", pattern=f"^{DEPLOY_WORKFLOW}$"
                        ),
                    ]
                )
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )


def _build_log_group(
    name: str, args: DeployRunnerArgs, child: pulumi.ResourceOptions
) -> aws.cloudwatch.LogGroup:
    """The build logs, encrypted with a key of their own that this region's CloudWatch Logs may use, and
    kept `log_retention_days`."""
    key = RegionalKey(
        f"{name}-logs-key",
        RegionalKeyArgs(
            purpose="deploy runner logs",
            region=args.region,
            log_service=True,
            alias=f"{args.cluster_name}-deploy-runner-logs",
            tags=args.tags,
        ),
        opts=child,
    )
    return aws.cloudwatch.LogGroup(
        f"{name}-logs",
        name=f"/aws/codebuild/{args.cluster_name}-deploy-runner",
        retention_in_days=args.log_retention_days,
        kms_key_id=key.arn,
        tags=args.tags,
        opts=child,
    )


def _runner_grant(
    name: str,
    args: DeployRunnerArgs,
    runner_role: aws.iam.Role,
    account: pulumi.Output[str],
    log_group: aws.cloudwatch.LogGroup,
    deploy_role: aws.iam.Role,
    child: pulumi.ResourceOptions,
) -> aws.iam.RolePolicy:
    """The runner role's one inline policy (`runner_policy`), written once every ARN it names is known; the
    build image's repository comes from the image reference itself, so the role can pull nothing else."""
    return aws.iam.RolePolicy(
        f"{name}-runner",
        role=runner_role.id,
        policy=pulumi.Output.all(
            account=account,
            log_group=log_group.arn,
            subnets=pulumi.Output.all(*args.private_subnet_ids),
            image=args.image,
            deploy=deploy_role.arn,
        ).apply(
            lambda v: runner_policy(
                region=args.region,
                account=v["account"],
                log_group_arn=v["log_group"],
                subnet_ids=v["subnets"],
                repository_arn=image_repository_arn(v["image"], args.region),
                connection_arn=args.github_connection_arn,
                deploy_role_arn=v["deploy"],
                state=state_statements(args.state_bucket_arn, args.platform_project, args.secrets_key_arn),
            )
        ),
        opts=child,
    )


def _runner_source(args: DeployRunnerArgs) -> aws.codebuild.ProjectSourceArgs:
    """The repository whose jobs the runner takes, reached through the account's approved connection rather
    than a token stored in CodeBuild."""
    return aws.codebuild.ProjectSourceArgs(
        type="GITHUB",
        location=args.repository_url,
        auth=aws.codebuild.ProjectSourceAuthArgs(type="CODECONNECTIONS", resource=args.github_connection_arn),
    )


def _runner_environment(args: DeployRunnerArgs) -> aws.codebuild.ProjectEnvironmentArgs:
    """The pinned runner image, pulled with the service role's rights. Not privileged: no runner job builds
    an image (images.yml builds them on GitHub's hosted runners)."""
    return aws.codebuild.ProjectEnvironmentArgs(
        compute_type="BUILD_GENERAL1_SMALL",
        type="LINUX_CONTAINER",
        image=args.image,
        image_pull_credentials_type="SERVICE_ROLE",
        privileged_mode=False,
    )


def _check(args: DeployRunnerArgs) -> None:
    """Fail at plan time on inputs AWS would only reject halfway through a deploy."""
    if not GITHUB_REPOSITORY.fullmatch(args.repository_url):
        raise ValueError(
            f"runner repository {args.repository_url!r} is not https://github.com/<owner>/<repo>"
        )
    if isinstance(args.image, str):
        image_repository_arn(args.image, args.region)
    if not args.state_bucket_arn.startswith("arn:aws:s3:::"):
        raise ValueError(f"state bucket {args.state_bucket_arn!r} is not an S3 bucket ARN")
    if not args.secrets_key_arn.startswith("arn:aws:kms:"):
        raise ValueError(f"secrets key {args.secrets_key_arn!r} is not a KMS key ARN")
    if ":connection/" not in args.github_connection_arn:
        raise ValueError(f"GitHub connection {args.github_connection_arn!r} is not a CodeConnections ARN")
