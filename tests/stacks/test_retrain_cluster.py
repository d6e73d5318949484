"""The in-cluster retrain through the shipped stacks' offline plans: infra's role for the receiver (what IAM,
S3 and KMS would require of it), the image it runs and the buckets it publishes to.

The role is checked against what the real services evaluate: STS matches the web identity token's `sub`
and `aud` against the trust policy's conditions on the cluster's OIDC provider; S3 authorises GetObject,
ListBucket (with the `s3:prefix` condition), GetBucketLocation, GetEncryptionConfiguration and PutObject
(with the SSE headers as `s3:x-amz-server-side-encryption*` conditions) on the ARNs here; KMS sees
GenerateDataKey/Decrypt from S3 (`kms:ViaService`) with the bucket's ARN as encryption context, the
buckets using S3 Bucket Keys."""

import json
from typing import Any

import pytest
import yaml

from stacks.config import parse_config
from stacks.contract import REGIONS_OUTPUT, ROLE_RETRAIN, model_role
from stacks.preview.run import ROOT, Plan
from stacks.settings import StackConfig

REGIONS = ("eu-central-1", "eu-west-1")
MODELS = ("tabular-classifier", "ticket-router")
SUBJECT = "system:serviceaccount:monitoring:retrain-receiver"


def _config(stack: str) -> StackConfig:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("model-serving:")}
    return parse_config(
        values, stack=stack, source=f"Pulumi.{stack}.yaml", aws_region=config.get("aws:region")
    )


def _states(plan: Plan, type_: str) -> list[dict[str, Any]]:
    return [s["newState"] for s in plan.document["steps"] if s["newState"]["type"] == type_]


def _role(plan: Plan, arn: str) -> dict[str, Any]:
    name = arn.rsplit("/", 1)[1]
    found = [s for s in _states(plan, "aws:iam/role:Role") if s["inputs"].get("name") == name]
    assert len(found) == 1, f"no single role named {name}"
    return found[0]


def _trust(role: dict[str, Any]) -> dict[str, Any]:
    (statement,) = json.loads(role["inputs"]["assumeRolePolicy"])["Statement"]
    return dict(statement)


def _exports(plans: dict[str, Plan]) -> dict[str, Any]:
    return dict((plans["eu-prod.infra"].outputs or {})[REGIONS_OUTPUT])


def _retrain_policy(plans: dict[str, Plan]) -> dict[str, dict[str, Any]]:
    """The receiver role's inline policy, statements by Sid."""
    policies = [
        s for s in _states(plans["eu-prod.infra"], "aws:iam/rolePolicy:RolePolicy") if "retrain" in s["urn"]
    ]
    assert len(policies) == 1, [p["urn"] for p in policies]
    return {s["Sid"]: s for s in json.loads(policies[0]["inputs"]["policy"])["Statement"]}


def _bucket_arn(exports: dict[str, Any], region: str) -> str:
    return f"arn:aws:s3:::{exports[region]['modelBucket']}"


def test_only_the_primary_region_exports_the_receivers_role(plans: dict[str, Plan]) -> None:
    exports = _exports(plans)
    assert ROLE_RETRAIN in exports[REGIONS[0]]["roles"], exports[REGIONS[0]]["roles"]
    assert ROLE_RETRAIN not in exports[REGIONS[1]]["roles"], "the receiver runs in the primary cluster only"


def test_the_role_trusts_exactly_the_receivers_account_on_the_primary_clusters_provider(
    plans: dict[str, Plan],
) -> None:
    exports, infra = _exports(plans), plans["eu-prod.infra"]
    trust = _trust(_role(infra, exports[REGIONS[0]]["roles"][ROLE_RETRAIN]))
    # A model's role in the same region is trusted through the primary cluster's provider; the other
    # region's through its own.
    primary = _trust(_role(infra, exports[REGIONS[0]]["roles"][model_role(MODELS[0])]))["Principal"]
    secondary = _trust(_role(infra, exports[REGIONS[1]]["roles"][model_role(MODELS[0])]))["Principal"]
    assert trust["Principal"] == primary != secondary, (trust["Principal"], primary, secondary)
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity", trust
    conditions = trust["Condition"]
    assert list(conditions) == ["StringEquals"], "exact matches only: no StringLike wildcard on the subject"
    subjects = {k.rsplit(":", 1)[1]: v for k, v in conditions["StringEquals"].items()}
    assert subjects == {"sub": SUBJECT, "aud": "sts.amazonaws.com"}, conditions
    issuer = {k.rsplit(":", 1)[0] for k in conditions["StringEquals"]}
    assert len(issuer) == 1 and issuer.pop() in trust["Principal"]["Federated"], "the provider's own issuer"


def test_it_reads_labelled_data_only_in_the_primary_bucket(plans: dict[str, Plan]) -> None:
    exports, policy = _exports(plans), _retrain_policy(plans)
    data = policy["ReadLabelledData"]
    primary = _bucket_arn(exports, REGIONS[0])
    assert (data["Action"], data["Resource"]) == (
        "s3:GetObject",
        [f"{primary}/training/{m}/*" for m in MODELS],
    ), data


@pytest.mark.parametrize("region", REGIONS)
def test_in_every_region_it_reads_lists_and_writes_only_model_versions(
    plans: dict[str, Plan], region: str
) -> None:
    exports, policy = _exports(plans), _retrain_policy(plans)
    sid = "".join(p.title() for p in region.split("-"))
    bucket, versions = (
        _bucket_arn(exports, region),
        [f"{_bucket_arn(exports, region)}/models/{m}/*" for m in MODELS],
    )
    assert (policy[f"ReadVersions{sid}"]["Action"], policy[f"ReadVersions{sid}"]["Resource"]) == (
        "s3:GetObject",
        versions,
    )
    listing = policy[f"ListVersions{sid}"]
    assert (listing["Action"], listing["Resource"]) == ("s3:ListBucket", bucket), listing
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"models/{m}/*" for m in MODELS]}}, listing
    facts = policy[f"BucketFacts{sid}"]
    assert facts["Action"] == ["s3:GetBucketLocation", "s3:GetEncryptionConfiguration"], facts
    assert facts["Resource"] == bucket, facts
    write = policy[f"WriteVersions{sid}"]
    assert (write["Action"], write["Resource"]) == ("s3:PutObject", versions), write
    key = write["Condition"]["StringEquals"]["s3:x-amz-server-side-encryption-aws-kms-key-id"]
    assert write["Condition"] == {
        "StringEquals": {
            "s3:x-amz-server-side-encryption": "aws:kms",
            "s3:x-amz-server-side-encryption-aws-kms-key-id": key,
        }
    }, write
    assert f":kms:{region}:" in key, f"{region}'s bucket is written under {region}'s key: {key}"
    kms = policy[f"BucketKeyThroughS3{sid}"]
    assert (kms["Action"], kms["Resource"]) == (["kms:Decrypt", "kms:GenerateDataKey"], key), kms
    assert kms["Condition"] == {
        "StringEquals": {
            "kms:ViaService": f"s3.{region}.amazonaws.com",
            "kms:EncryptionContext:aws:s3:arn": bucket,
        }
    }, kms


def test_nothing_else_is_allowed(plans: dict[str, Plan]) -> None:
    policy = _retrain_policy(plans)
    assert len(policy) == 1 + 5 * len(REGIONS), sorted(policy)
    actions = {
        a for s in policy.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation", "s3:GetEncryptionConfiguration",
        "s3:PutObject", "kms:Decrypt", "kms:GenerateDataKey",
    }, f"no delete, no wildcard: {actions}"  # fmt: skip
    assert all(s["Effect"] == "Allow" for s in policy.values())


def _platform_object(plan: Plan, kind: str, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        s["newState"]["inputs"]
        for s in plan.document["steps"]
        if s["newState"]["type"].endswith(f":{kind}") and s["newState"]["inputs"]["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)}"
    return found[0]


def test_the_receiver_runs_the_retrain_image_with_infras_role_and_every_regions_bucket(
    plans: dict[str, Plan],
) -> None:
    exports, platform = _exports(plans), plans["eu-prod.platform"]
    image = _config("eu-prod").image
    deployment = _platform_object(platform, "Deployment", "retrain-receiver")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image.retrain_image(exports[REGIONS[0]]["registry"]), container["image"]
    account = _platform_object(platform, "ServiceAccount", "retrain-receiver")
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role == exports[REGIONS[0]]["roles"][ROLE_RETRAIN], role
    config = _platform_object(platform, "ConfigMap", "retrain-receiver")
    args = yaml.safe_load(config["data"]["receiver.yaml"])["args"]
    published = [args[i + 1] for i, a in enumerate(args) if a == "--publish-bucket"]
    assert published == [f"s3://{exports[r]['modelBucket']}/models" for r in REGIONS], args


def test_on_premises_the_receiver_publishes_to_the_store(plans: dict[str, Plan]) -> None:
    platform = plans["onprem-ae.platform"]
    config = _config("onprem-ae")
    assert config.onprem is not None
    deployment = _platform_object(platform, "Deployment", "retrain-receiver")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == config.image.retrain_image(config.onprem.registry), container["image"]
    args = yaml.safe_load(
        _platform_object(platform, "ConfigMap", "retrain-receiver")["data"]["receiver.yaml"]
    )
    assert args["args"][-2:] == ["--publish-bucket", f"s3://{config.onprem.store.bucket}/models"], args
