"""RegionalKey: a customer-managed KMS key that lives and stays in one region."""

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.documents import autoscaling_role_arn, key_policy


@dataclass(frozen=True, kw_only=True)
class RegionalKeyArgs:
    """Inputs of `RegionalKey`."""

    purpose: str
    """What the key encrypts (its description)."""
    region: str
    """The region of the key (the key policy names the regional log service)."""
    log_service: bool = False
    """Let this region's CloudWatch Logs use the key."""
    autoscaling_volumes: bool = False
    """Let EC2 Auto Scaling's service-linked role encrypt the volumes of the instances it launches (the
    managed node groups' disks): without it no node ever starts."""
    service_users: tuple[str, ...] = ()
    """AWS service principals that may encrypt and decrypt with the key for this account (an encrypted SNS
    topic's publishers: SageMaker, and SNS itself)."""
    waits_for: tuple[pulumi.Resource, ...] = ()
    """What must exist before the key: the service-linked role its policy names (KMS rejects a policy whose
    principal does not exist yet)."""
    alias: str = ""
    """Alias name without `alias/`; it must carry the stack (aliases are unique per account and region).
    Default: the stack's name followed by the component's."""
    tags: dict[str, str]
    """Tags."""


class RegionalKey(pulumi.ComponentResource):
    """A single-region KMS key with rotation on, and an alias. The key is protected: deleting it would make
    everything it encrypted unreadable, so `pulumi destroy` stops at it until it is unprotected on purpose."""

    arn: pulumi.Output[str]

    def __init__(self, name: str, args: RegionalKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:security:RegionalKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))

        def policy(account: str) -> str:
            roles = [autoscaling_role_arn(account)] if args.autoscaling_volumes else []
            return key_policy(account, args.region, args.log_service, roles, args.service_users)

        key = aws.kms.Key(
            f"{name}-key",
            description=f"{args.purpose} ({args.region})",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            multi_region=False,
            policy=identity.account_id.apply(policy),
            tags=args.tags,
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(protect=True, depends_on=list(args.waits_for))
            ),
        )
        alias = args.alias or f"{pulumi.get_stack()}-{name}"
        aws.kms.Alias(f"{name}-alias", name=f"alias/{alias}", target_key_id=key.key_id, opts=child)
        self.arn = key.arn
        self.register_outputs({"arn": self.arn})
