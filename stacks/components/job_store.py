"""JobStore: the result bucket of asynchronous inference in one region, for inputs and results too large to
pass through the queue.

Each async model owns the prefix `jobs/<model>/`: callers put large inputs under `inputs/`, workers write
large results under `results/` (the pods get `SERVING_ASYNC_OBJECT_STORE=s3://<bucket>/jobs/<model>`). Both
are transient: S3 lifecycle rules expire results once their job has expired in the queue (the result TTL,
rounded up to whole days) and inputs after the stack's `inputRetentionDays`. Versioning stays off, so an
expiry removes the object instead of keeping a noncurrent version.
"""

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.components.model_store import encrypt_with_key, private_and_tls_only
from stacks.contract import job_prefix


def bucket_name(bucket_prefix: str, region: str) -> str:
    """`<prefix>-async-<region>`, as the model store names its buckets (`<prefix>-models-<region>`)."""
    return f"{bucket_prefix}-async-{region}"


@dataclass(frozen=True, kw_only=True)
class JobStoreArgs:
    """Inputs of `JobStore`."""

    bucket_prefix: str
    """The model store's globally unique prefix; `-async-<region>` is appended."""
    region: str
    """The region of the bucket."""
    key_arn: pulumi.Input[str]
    """The region's asynchronous inference key (the job queue's): every object is encrypted with it."""
    models: tuple[str, ...]
    """The async models: each gets expiry rules under its prefix (lifecycle filters match prefixes only)."""
    result_days: int
    """Days after which a stored result expires (the result TTL rounded up to days, at least one)."""
    input_retention_days: int
    """Days after which an input object expires."""
    tags: dict[str, str]
    """Tags."""


class JobStore(pulumi.ComponentResource):
    """A private bucket under the region's async key: SSE-KMS, TLS only, public access blocked, objects owned
    by the bucket, no versioning, and inputs and results expiring per model."""

    bucket: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: JobStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if not args.models:
            raise ValueError("a result bucket without async models would hold nothing")
        super().__init__("model-serving:storage:JobStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Not protected: everything in it expires within days, and the queue it serves is what must survive.
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=bucket_name(args.bucket_prefix, args.region),
            force_destroy=False,
            tags=args.tags,
            opts=child,
        )
        encrypt_with_key(f"{name}-bucket", bucket, args.key_arn, child)
        aws.s3.BucketOwnershipControls(
            f"{name}-bucket",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        private_and_tls_only(f"{name}-bucket", bucket, child)
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-bucket", bucket=bucket.id, rules=lifecycle_rules(args), opts=child
        )
        self.bucket = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucket": self.bucket, "bucket_arn": self.bucket_arn})


def lifecycle_rules(args: JobStoreArgs) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    """Per model: results after `result_days`, inputs after `input_retention_days`; for the whole bucket,
    uploads abandoned halfway after a day."""

    def expire(rule_id: str, prefix: str, days: int) -> aws.s3.BucketLifecycleConfigurationRuleArgs:
        return aws.s3.BucketLifecycleConfigurationRuleArgs(
            id=rule_id,
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=prefix),
            expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=days),
        )

    rules = []
    for model in args.models:
        rules.append(expire(f"expire-results-{model}", f"{job_prefix(model)}/results/", args.result_days))
        rules.append(
            expire(f"expire-inputs-{model}", f"{job_prefix(model)}/inputs/", args.input_retention_days)
        )
    rules.append(
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="abort-incomplete-uploads",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=1
            ),
        )
    )
    return rules
