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
        _expire_replaced_models(f"{name}-models", models, args, child)
        logs = self._bucket(
            f"{name}-logs", f"{args.bucket_prefix}-inference-logs-{args.region}", key, args, child
        )
        _expire_inference_logs(f"{name}-logs", logs, args, child)
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
        encrypt_with_key(name, bucket, key.arn, child)
        _keep_versions_and_own_objects(name, bucket, child)
        private_and_tls_only(name, bucket, child)
        return bucket


def private_and_tls_only(name: str, bucket: aws.s3.Bucket, child: pulumi.ResourceOptions) -> None:
    """Nothing public, by ACL or by policy; and a bucket policy that refuses plain HTTP and old TLS."""
    block = aws.s3.BucketPublicAccessBlock(
        name,
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child,
    )
    # After the block: S3 aborts one of two concurrent changes to a bucket's policy and its public
    # access block.
    aws.s3.BucketPolicy(
        name,
        bucket=bucket.id,
        policy=bucket.arn.apply(tls_only_bucket_policy),
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[block])),
    )


def encrypt_with_key(
    name: str, bucket: aws.s3.Bucket, key_arn: pulumi.Input[str], child: pulumi.ResourceOptions
) -> None:
    """Every object encrypted with the store's regional key unless the writer names another; a bucket key
    cuts S3's calls to KMS, and their cost, without changing which key protects the data."""
    aws.s3.BucketServerSideEncryptionConfiguration(
        name,
        bucket=bucket.id,
        rules=[
            aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms", kms_master_key_id=key_arn
                ),
                bucket_key_enabled=True,
            )
        ],
        opts=child,
    )


def _keep_versions_and_own_objects(name: str, bucket: aws.s3.Bucket, child: pulumi.ResourceOptions) -> None:
    """Versioning, so a replaced or deleted model can be restored; ACLs off, so the bucket owns every object
    whoever wrote it."""
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


def _expire_replaced_models(
    name: str, bucket: aws.s3.Bucket, args: ModelStoreArgs, child: pulumi.ResourceOptions
) -> None:
    """Model objects live until replaced; a replaced version is kept `noncurrent_version_days` for a
    rollback, and uploads abandoned halfway are cleared after a week."""
    aws.s3.BucketLifecycleConfiguration(
        name,
        bucket=bucket.id,
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


def _expire_inference_logs(
    name: str, bucket: aws.s3.Bucket, args: ModelStoreArgs, child: pulumi.ResourceOptions
) -> None:
    """Inference logs expire after `inference_log_days`; the versions an expiry leaves behind go a day
    later, so versioning keeps no log beyond its retention."""
    aws.s3.BucketLifecycleConfiguration(
        name,
        bucket=bucket.id,
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
