"""ModelStore: the model-artifact and inference-log buckets of one region, KMS-encrypted and TLS-only."""

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.documents import tls_only_bucket_policy


@dataclass(frozen=True, kw_only=True)
class ModelStoreArgs:
    """Inputs of `ModelStore`."""

    bucket_prefix: str
    """Globally unique prefix; the region is appended."""
    region: str
    """The region of the buckets and their key."""
    inference_log_days: int
    """Days inference logs are kept."""
    noncurrent_version_days: int
    """Days replaced model objects are kept."""
    tags: dict[str, str]
    """Tags."""


class ModelStore(pulumi.ComponentResource):
    """Two private buckets under one regional key: `models` (versioned artifacts) and `inference-logs`."""

    model_bucket: pulumi.Output[str]
    model_bucket_arn: pulumi.Output[str]
    log_bucket: pulumi.Output[str]
    key_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ModelStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:storage:ModelStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = RegionalKey(
            f"{name}-key",
            RegionalKeyArgs(purpose="model store", region=args.region, tags=args.tags),
            opts=child,
        )
        models = self._bucket(
            f"{name}-models", f"{args.bucket_prefix}-models-{args.region}", key, args, child
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-models",
            bucket=models.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-replaced-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_version_days
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7
                    ),
                )
            ],
            opts=child,
        )
        logs = self._bucket(
            f"{name}-logs", f"{args.bucket_prefix}-inference-logs-{args.region}", key, args, child
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-logs",
            bucket=logs.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-inference-logs",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        days=args.inference_log_days
                    ),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=1
                    ),
                )
            ],
            opts=child,
        )
        self.model_bucket = models.bucket
        self.model_bucket_arn = models.arn
        self.log_bucket = logs.bucket
        self.key_arn = key.arn
        self.register_outputs(
            {
                "model_bucket": self.model_bucket,
                "model_bucket_arn": self.model_bucket_arn,
                "log_bucket": self.log_bucket,
                "key_arn": self.key_arn,
            }
        )

    def _bucket(
        self,
        name: str,
        bucket_name: str,
        key: RegionalKey,
        args: ModelStoreArgs,
        child: pulumi.ResourceOptions,
    ) -> aws.s3.Bucket:
        """A bucket with SSE-KMS, versioning, owner-enforced objects, public access blocked and TLS
        required."""
        # Protected: `pulumi destroy` stops at the bucket until someone unprotects it on purpose.
        bucket = aws.s3.Bucket(
            name,
            bucket=bucket_name,
            force_destroy=False,
            tags=args.tags,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True)),
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            name,
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms", kms_master_key_id=key.arn
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        aws.s3.BucketVersioning(
            name,
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            name,
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        block = aws.s3.BucketPublicAccessBlock(
            name,
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketPolicy(
            name,
            bucket=bucket.id,
            policy=bucket.arn.apply(tls_only_bucket_policy),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[block]),
        )
        return bucket
