"""RegionalKey: a customer-managed KMS key that lives and stays in one region."""

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.documents import key_policy


@dataclass(frozen=True, kw_only=True)
class RegionalKeyArgs:
    """Inputs of `RegionalKey`."""

    purpose: str
    """What the key encrypts (its description)."""
    region: str
    """The region of the key (the key policy names the regional log service)."""
    log_service: bool = False
    """Let this region's CloudWatch Logs use the key."""
    tags: dict[str, str]
    """Tags."""


class RegionalKey(pulumi.ComponentResource):
    """A single-region KMS key with rotation on, and an alias."""

    arn: pulumi.Output[str]

    def __init__(self, name: str, args: RegionalKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:security:RegionalKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        key = aws.kms.Key(
            f"{name}-key",
            description=f"{args.purpose} ({args.region})",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            multi_region=False,
            policy=identity.account_id.apply(
                lambda account: key_policy(account, args.region, args.log_service)
            ),
            tags=args.tags,
            opts=child,
        )
        aws.kms.Alias(f"{name}-alias", name=f"alias/{name}", target_key_id=key.key_id, opts=child)
        self.arn = key.arn
        self.register_outputs({"arn": self.arn})
