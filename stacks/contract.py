"""The contract between the two layers: what `infra` exports and `platform` reads through a StackReference.

The infra stack exports one output, `regions`: a mapping from region name to a `RegionOutputs` written with
`to_export` (camelCase keys). The platform reads it back with `from_export` and never re-derives a name the
infra layer chose. Pure: no Pulumi here, so both sides and their tests share one definition.
"""

from dataclasses import dataclass, fields
from typing import Any

INFRA_PROJECT = "model-serving"
"""Project name of the infra layer (the repository's top-level Pulumi.yaml)."""
PLATFORM_PROJECT = "model-serving-platform"
"""Project name of the platform layer (stacks/platform/Pulumi.yaml)."""
REGIONS_OUTPUT = "regions"
"""Name of the infra stack's output that holds every region's `RegionOutputs`."""

ROLE_LB_CONTROLLER = "aws-load-balancer-controller"
ROLE_CLUSTER_AUTOSCALER = "cluster-autoscaler"
ROLE_FLUENT_BIT = "fluent-bit"
ROLE_OTEL_COLLECTOR = "otel-collector"
PLATFORM_ROLES = (ROLE_LB_CONTROLLER, ROLE_CLUSTER_AUTOSCALER, ROLE_FLUENT_BIT, ROLE_OTEL_COLLECTOR)
"""The IRSA roles infra creates for the platform's add-ons (keys of `RegionOutputs.roles`)."""
ROLE_EXTERNAL_SECRETS = "external-secrets"
"""The secret syncer's role, only where the region runs a job queue: it reads the queue's AUTH token."""
ROLE_RETRAIN = "retrain-receiver"
"""The retrain receiver's role, in the primary region's `roles` only (the one cluster that runs it): it reads
the labelled data and the model versions and publishes new versions to every region's model bucket."""

ROLE_FEATURES = "feature-materialize"
"""The feature materialization CronJob's role, in each region's `roles` where the stack has a features block:
it writes the region's online-store tables and the registry."""


JOB_QUEUE_PORT = 6379
"""The port of the job queue (Redis over TLS)."""


def infra_stack_reference(stack: str) -> str:
    """The fully qualified name of a stack's infra layer on a self-managed (S3 or file) backend."""
    return f"organization/{INFRA_PROJECT}/{stack}"


def model_role(model: str) -> str:
    """Key of a model's IRSA role (read-only access to its prefix of the model bucket) in `roles`."""
    return f"model:{model}"


def job_prefix(model: str) -> str:
    """A model's part of the result bucket, without a trailing slash: `jobs/<model>`. Infra scopes the model's
    role and the expiry rules to it; the platform gives the pods `s3://<bucket>/jobs/<model>`."""
    return f"jobs/{model}"


@dataclass(frozen=True, kw_only=True)
class RegionOutputs:
    """What the platform layer needs to know about one region's infrastructure."""

    region: str
    """AWS region."""
    cluster_name: str
    """EKS cluster name (the cluster autoscaler and the load balancer controller need it)."""
    kubeconfig: str
    """Kubeconfig whose exec assumes the deploy role (`aws eks get-token --role-arn`)."""
    vpc_id: str
    """VPC id, passed to the load balancer controller (pods cannot reach IMDS)."""
    registry: str
    """The region's ECR registry host; every image and chart comes from it."""
    model_bucket: str
    """Model bucket name."""
    volume_key_arn: str
    """KMS key of the persistent volumes (the encrypted StorageClass)."""
    target_group_arn: str
    """NLB target group the gateway's pods register in (TargetGroupBinding)."""
    log_group: str
    """CloudWatch log group the platform's log shipper writes to."""
    gateway_security_group_id: str
    """Security group of the NLB; the gateway pods accept 443 and 15021 from it (TargetGroupBinding)."""
    roles: dict[str, str]
    """IRSA role ARNs by workload: `PLATFORM_ROLES` and `model_role(name)` for each model, and
    `ROLE_EXTERNAL_SECRETS` where the region runs a job queue; `ROLE_RETRAIN` in the primary region;
    `ROLE_FEATURES` where the stack has a feature store."""
    job_queue_endpoint: str
    """Host name of the asynchronous inference queue's primary (TLS on `JOB_QUEUE_PORT`); "" without one."""
    job_queue_secret_arn: str
    """Secrets Manager secret holding the queue's AUTH token; "" without a queue."""
    job_bucket: str
    """The result bucket of asynchronous inference (large inputs and results under `job_prefix(model)`);
    "" without a queue."""
    job_callback_secret_arn: str
    """Secrets Manager secret holding the job callbacks' HMAC key; "" with callbacks off."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_export(outputs: RegionOutputs) -> dict[str, Any]:
    """The export of one region: the fields under camelCase keys."""
    return {_camel(f.name): getattr(outputs, f.name) for f in fields(RegionOutputs)}


def export_fields(**values: Any) -> dict[str, Any]:
    """The export of one region from its fields' values (Pulumi Outputs while the program runs).

    Every field of `RegionOutputs` must be given and no other, so infra cannot forget what the platform reads.
    """
    expected = {f.name for f in fields(RegionOutputs)}
    if set(values) != expected:
        missing, extra = sorted(expected - set(values)), sorted(set(values) - expected)
        raise ValueError(f"region export: missing {missing}, unknown {extra}")
    return {_camel(name): value for name, value in values.items()}


@dataclass(frozen=True, kw_only=True)
class ModelBucketOutputs:
    """The part of a region's export that `servectl publish` reads: where a model version goes.

    The cluster stacks' `regions` entries hold it among the other `RegionOutputs` fields; an smb stack (no
    cluster, no platform layer) exports only these, under the same `regions` output and the same camelCase
    keys, so one reader serves both."""

    region: str
    """AWS region of the bucket."""
    model_bucket: str
    """Model bucket name (versions under `models/<model>/<version>/`)."""
    model_key_arn: str = ""
    """The KMS key the bucket's objects are encrypted with; "" where the export does not name it (the
    cluster stacks: publish then takes the bucket's default SSE-KMS key)."""


def model_bucket_export(*, region: Any, model_bucket: Any, model_key_arn: Any) -> dict[str, Any]:
    """An smb stack's export of its region: `ModelBucketOutputs` under camelCase keys (Outputs allowed)."""
    return {"region": region, "modelBucket": model_bucket, "modelKeyArn": model_key_arn}


def model_buckets(raw: Any) -> dict[str, ModelBucketOutputs]:
    """Every region's `ModelBucketOutputs` from a `regions` output of either shape; ValueError names what is
    missing or malformed."""
    if not isinstance(raw, dict) or not raw:
        shape = "an empty mapping" if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"infra output {REGIONS_OUTPUT!r} must map regions to their outputs, got {shape}")
    found: dict[str, ModelBucketOutputs] = {}
    for region, entry in raw.items():
        where = f"infra output {REGIONS_OUTPUT}.{region}"
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("modelBucket"), str)
            or not entry["modelBucket"]
        ):
            raise ValueError(f"{where} lacks modelBucket")
        if entry.get("region", region) != region:
            raise ValueError(f"{where}: region {entry['region']!r} under the key {region!r}")
        key = entry.get("modelKeyArn", "")
        if not isinstance(key, str) or (key and f":kms:{region}:" not in key):
            raise ValueError(f"{where}: modelKeyArn {key!r} is not a KMS key of {region}")
        found[region] = ModelBucketOutputs(
            region=region, model_bucket=entry["modelBucket"], model_key_arn=key
        )
    return found


def from_export(raw: Any, region: str) -> RegionOutputs:
    """Read one region back from the infra stack's `regions` output; ValueError names what is missing."""
    if not isinstance(raw, dict) or region not in raw:
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"infra output {REGIONS_OUTPUT!r} has no region {region!r} (found {found})")
    entry = raw[region]
    missing = [_camel(f.name) for f in fields(RegionOutputs) if _camel(f.name) not in entry]
    if missing:
        raise ValueError(f"infra output {REGIONS_OUTPUT}.{region} lacks {', '.join(missing)}")
    return RegionOutputs(**{f.name: entry[_camel(f.name)] for f in fields(RegionOutputs)})
