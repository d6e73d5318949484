"""Registry: one region's ECR, holding the mirrored third-party artifacts and the project's own images.

Every repository is KMS-encrypted with the region's key, has immutable tags (a tag in it stands for one
digest forever) and is scanned on push. The project's own repositories replicate only to the other regions
of the same stack, all inside the jurisdiction; the mirrored ones are written to every region by
`servectl mirror` itself, so they are not replicated. Pull-through cache rules cover the upstreams AWS
serves without credentials, under their own prefixes, never under `mirror/`.
"""

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from stacks.artifacts import MIRROR_PREFIX, Lock, ecr_registry, load_lock
from stacks.documents import assume_role_policy
from stacks.jurisdictions import same_jurisdiction

PULL_THROUGH_UPSTREAMS: dict[str, str] = {
    "ecr-public": "public.ecr.aws",
    "k8s": "registry.k8s.io",
    "quay": "quay.io",
}
"""Pull-through cache prefix -> upstream registry: the upstreams ECR caches without credentials (Docker
Hub, GitHub, GitLab and Azure need a Secrets Manager secret, which would be a credential to manage)."""


def untagged_lifecycle_policy(days: int) -> str:
    """Expire untagged images `days` after their push (ECR keeps the untagged children of a tagged index)."""
    rule = {
        "rulePriority": 1,
        "description": f"expire untagged images after {days} days",
        "selection": {
            "tagStatus": "untagged",
            "countType": "sinceImagePushed",
            "countUnit": "days",
            "countNumber": days,
        },
        "action": {"type": "expire"},
    }
    return json.dumps({"rules": [rule]})


def template_role_policy(key_arn: str) -> str:
    """What ECR needs to create a KMS-encrypted, tagged repository from a creation template."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "CreateCachedRepositories",
                    "Effect": "Allow",
                    "Action": ["ecr:CreateRepository", "ecr:TagResource", "ecr:PutLifecyclePolicy"],
                    "Resource": "*",
                },
                {
                    "Sid": "EncryptWithRegionKey",
                    "Effect": "Allow",
                    "Action": ["kms:CreateGrant", "kms:RetireGrant", "kms:DescribeKey"],
                    "Resource": key_arn,
                },
            ],
        }
    )


@dataclass(frozen=True, kw_only=True)
class RegistryArgs:
    """Inputs of `Registry`."""

    region: str
    """The region of the registry."""
    jurisdiction: str
    """The stack's jurisdiction; every replication destination must lie in it."""
    key_arn: pulumi.Input[str]
    """The region's KMS key (same region) that encrypts every repository."""
    repositories: list[str]
    """The project's own repositories (the serving and model-sync images)."""
    replicate_to: list[str] = field(default_factory=list)
    """The other regions of the stack the project's repositories replicate to."""
    untagged_days: int = 14
    """Days untagged images are kept."""
    pull_through_cache: bool = True
    """Create the credential-free pull-through cache rules."""
    lock: Lock = field(default_factory=load_lock)
    """The artifact lock; a repository is created for each of its images and charts."""
    namespace: str = ""
    """Prefix of every repository and cache rule (the stack), so two stacks sharing an account and region
    never ask for the same repository; the registry output carries it (`<host>/<namespace>`)."""
    tags: dict[str, str]
    """Tags."""


def _check(args: RegistryArgs) -> None:
    """Refuse replication outside the jurisdiction and repository names that would collide."""
    outside = [r for r in args.replicate_to if not same_jurisdiction(args.jurisdiction, r)]
    if outside:
        raise ValueError(
            f"registry {args.region}: replication to {', '.join(outside)} leaves jurisdiction "
            f"{args.jurisdiction}; replicate only to the stack's own regions"
        )
    if args.region in args.replicate_to:
        raise ValueError(f"registry {args.region}: a registry cannot replicate to its own region")
    if isinstance(args.key_arn, str) and f":kms:{args.region}:" not in args.key_arn:
        raise ValueError(f"registry {args.region}: key {args.key_arn} is not in {args.region}")
    reserved = (MIRROR_PREFIX, *PULL_THROUGH_UPSTREAMS)
    clashing = [r for r in args.repositories if r.split("/", 1)[0] in reserved]
    if clashing:
        raise ValueError(f"registry {args.region}: {', '.join(clashing)} use a reserved prefix {reserved}")


def _named(args: RegistryArgs, repository: str) -> str:
    """A repository name inside the stack's namespace."""
    return f"{args.namespace}/{repository}" if args.namespace else repository


def _registry(args: RegistryArgs, host: str) -> str:
    """What images and charts are referenced under: the host, plus the namespace."""
    return f"{host}/{args.namespace}" if args.namespace else host


def _prefixed(args: RegistryArgs, prefix: str) -> str:
    """A pull-through cache prefix inside the stack's namespace (prefixes cannot contain `/`)."""
    return f"{args.namespace}-{prefix}" if args.namespace else prefix


class Registry(pulumi.ComponentResource):
    """The ECR repositories of one region, their replication and the pull-through cache rules."""

    registry: pulumi.Output[str]
    """The registry host (`<account>.dkr.ecr.<region>.amazonaws.com`)."""
    repository_arns: pulumi.Output[list[str]]
    """ARNs of every repository created here (for push and pull policies)."""

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        _check(args)
        super().__init__("model-serving:registry:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        mirrored = [i.repository for i in args.lock.images.values()]
        mirrored += [c.repository for c in args.lock.charts.values()]
        repos = [
            self._repository(name, _named(args, repo), args, child)
            for repo in sorted({*mirrored, *args.repositories})
        ]
        if args.replicate_to:
            self._replication(name, args, identity.account_id, child)
        if args.pull_through_cache:
            self._pull_through(name, args, child)
        self.registry = identity.account_id.apply(
            lambda account: _registry(args, ecr_registry(account, args.region))
        )
        self.repository_arns = pulumi.Output.all(*[r.arn for r in repos])
        self.register_outputs({"registry": self.registry, "repository_arns": self.repository_arns})

    def _repository(
        self, name: str, repository: str, args: RegistryArgs, child: pulumi.ResourceOptions
    ) -> aws.ecr.Repository:
        resource = f"{name}-{repository.replace('/', '-')}"
        repo = aws.ecr.Repository(
            resource,
            name=repository,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS", kms_key=args.key_arn)
            ],
            force_delete=False,
            tags=args.tags,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            resource,
            repository=repo.name,
            policy=untagged_lifecycle_policy(args.untagged_days),
            opts=child,
        )
        return repo

    def _replication(
        self, name: str, args: RegistryArgs, account: pulumi.Output[str], child: pulumi.ResourceOptions
    ) -> None:
        """Replicate the project's own repositories (pushed once, in this region) to the stack's others."""
        conf = aws.ecr.ReplicationConfigurationReplicationConfigurationArgs
        aws.ecr.ReplicationConfiguration(
            f"{name}-replication",
            replication_configuration=conf(
                rules=[
                    aws.ecr.ReplicationConfigurationReplicationConfigurationRuleArgs(
                        destinations=[
                            aws.ecr.ReplicationConfigurationReplicationConfigurationRuleDestinationArgs(
                                region=region, registry_id=account
                            )
                            for region in args.replicate_to
                        ],
                        repository_filters=[
                            aws.ecr.ReplicationConfigurationReplicationConfigurationRuleRepositoryFilterArgs(
                                filter=_named(args, repository), filter_type="PREFIX_MATCH"
                            )
                            for repository in args.repositories
                        ],
                    )
                ]
            ),
            opts=child,
        )

    def _pull_through(self, name: str, args: RegistryArgs, child: pulumi.ResourceOptions) -> None:
        """Cache rules plus a creation template per prefix, so ECR creates the cached repositories
        KMS-encrypted and immutable too (without one it would use AES256 and mutable tags)."""
        role = aws.iam.Role(
            f"{name}-cache-template",
            assume_role_policy=assume_role_policy("ecr.amazonaws.com"),
            tags=args.tags,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-cache-template",
            role=role.id,
            policy=pulumi.Output.from_input(args.key_arn).apply(template_role_policy),
            opts=child,
        )
        for prefix, upstream in PULL_THROUGH_UPSTREAMS.items():
            template = aws.ecr.RepositoryCreationTemplate(
                f"{name}-cache-{prefix}",
                prefix=_prefixed(args, prefix),
                applied_fors=["PULL_THROUGH_CACHE"],
                custom_role_arn=role.arn,
                encryption_configurations=[
                    aws.ecr.RepositoryCreationTemplateEncryptionConfigurationArgs(
                        encryption_type="KMS", kms_key=args.key_arn
                    )
                ],
                image_tag_mutability="IMMUTABLE",
                lifecycle_policy=untagged_lifecycle_policy(args.untagged_days),
                resource_tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
            )
            # The first pull through a rule creates the repository: the template must be there by then.
            aws.ecr.PullThroughCacheRule(
                f"{name}-cache-{prefix}",
                ecr_repository_prefix=_prefixed(args, prefix),
                upstream_registry_url=upstream,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[template]),
            )
