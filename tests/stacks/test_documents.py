import json
from collections.abc import Callable
from typing import Any

import pytest

from stacks import documents

ACCOUNT = "123456789012"
KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
LOG_GROUP = f"arn:aws:logs:eu-central-1:{ACCOUNT}:log-group:/aws/eks/c/containers"
TARGET_GROUP = f"arn:aws:elasticloadbalancing:eu-central-1:{ACCOUNT}:targetgroup/gw/0123456789abcdef"
SECURITY_GROUP = f"arn:aws:ec2:eu-central-1:{ACCOUNT}:security-group/sg-0123456789abcdef0"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/c-deploy"
AUTOSCALING = (
    f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
)
DATA_SERVICES = {"s3", "kms", "dynamodb", "rds", "secretsmanager", "backup", "glacier", "elasticfilesystem"}
"""As in policies/data/settings.json: the gate (IDN-006) forbids wildcard actions on these in IAM policies."""


def statements(document: str) -> list[dict[str, Any]]:
    parsed = json.loads(document)
    assert parsed["Version"] == "2012-10-17", f"policy version: {parsed.get('Version')}"
    return list(parsed["Statement"])


def actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_autoscaling_role_arn_is_the_fixed_service_linked_name() -> None:
    assert documents.autoscaling_role_arn(ACCOUNT) == AUTOSCALING, documents.autoscaling_role_arn(ACCOUNT)


def test_key_policy_grants_volume_roles_use_and_aws_resource_grants() -> None:
    found = statements(documents.key_policy(ACCOUNT, "eu-central-1", False, [AUTOSCALING]))
    mine = [s for s in found if s["Principal"] == {"AWS": [AUTOSCALING]}]
    use = next(s for s in mine if "kms:Decrypt" in actions(s))
    expected = {"kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"}
    assert actions(use) == expected, f"use: {use}"
    grant = next(s for s in mine if "kms:CreateGrant" in actions(s))
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}, f"grant: {grant}"
    assert "Condition" not in use, "use of the key must not depend on a grant condition"


def test_key_policy_without_volume_roles_grants_no_one_else() -> None:
    found = statements(documents.key_policy(ACCOUNT, "eu-central-1", False))
    assert [s["Sid"] for s in found] == ["AccountAdministers"], f"statements: {found}"


def test_key_policy_keeps_the_account_statement_that_enables_iam_grants() -> None:
    found = statements(documents.key_policy(ACCOUNT, "eu-central-1", True, [AUTOSCALING]))
    root = [s for s in found if s["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}]
    assert root and root[0]["Action"] == "kms:*", "IAM policies (the EBS CSI role's) could not grant the key"


def test_key_policy_lets_named_services_use_the_key_for_this_account_only() -> None:
    found = statements(
        documents.key_policy(
            ACCOUNT, "eu-west-1", False, service_users=["sns.amazonaws.com", "sagemaker.amazonaws.com"]
        )
    )
    services = [s for s in found if s.get("Sid") == "ServicesUseKey"]
    assert services == [
        {
            "Sid": "ServicesUseKey",
            "Effect": "Allow",
            "Principal": {"Service": ["sagemaker.amazonaws.com", "sns.amazonaws.com"]},
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
        }
    ], found


def test_volume_key_user_policy() -> None:
    found = statements(documents.volume_key_user_policy(KEY))
    assert all(s["Resource"] == KEY for s in found), f"resources: {found}"
    grant = next(s for s in found if "kms:CreateGrant" in actions(s))
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}, f"grant: {grant}"
    use = next(s for s in found if "kms:Encrypt" in actions(s))
    assert {"kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:DescribeKey"} <= actions(use)


def test_irsa_trust_policy_names_one_service_account() -> None:
    issuer = "https://oidc.eks.eu-central-1.amazonaws.com/id/AB12"
    provider = f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/AB12"
    found = statements(documents.irsa_trust_policy(provider, issuer, "kube-system", "aws-node"))
    assert found[0]["Condition"]["StringEquals"] == {
        "oidc.eks.eu-central-1.amazonaws.com/id/AB12:sub": "system:serviceaccount:kube-system:aws-node",
        "oidc.eks.eu-central-1.amazonaws.com/id/AB12:aud": "sts.amazonaws.com",
    }, f"trust: {found}"


def test_role_trust_policy_trusts_one_role() -> None:
    found = statements(documents.role_trust_policy(ROLE))
    assert found == [{"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "sts:AssumeRole"}], found


def test_cluster_autoscaler_scales_only_owned_groups() -> None:
    found = statements(documents.cluster_autoscaler_policy("eu-prod-eu-central-1"))
    scaling = [s for s in found if actions(s) & {"autoscaling:SetDesiredCapacity"}]
    assert scaling[0]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/eu-prod-eu-central-1": "owned"}
    }, f"scaling: {scaling}"
    unconditioned = {a for s in found if "Condition" not in s for a in actions(s)}
    assert not any(a.startswith("autoscaling:") and "Describe" not in a for a in unconditioned), unconditioned


def test_autoscaler_tag_is_the_one_eks_puts_on_node_groups() -> None:
    # EKS tags a managed node group's Auto Scaling group k8s.io/cluster-autoscaler/<cluster>=owned.
    assert documents.autoscaler_owner_tag("c") == "k8s.io/cluster-autoscaler/c"


def test_lb_controller_scoped_to_target_group_and_node_group() -> None:
    found = statements(documents.lb_controller_policy(TARGET_GROUP, SECURITY_GROUP))
    scoped = {a: s["Resource"] for s in found if s["Resource"] != "*" for a in actions(s)}
    assert scoped["elasticloadbalancing:RegisterTargets"] == TARGET_GROUP, f"scoped: {scoped}"
    assert SECURITY_GROUP in scoped["ec2:AuthorizeSecurityGroupIngress"], f"scoped: {scoped}"
    rule_arns = f"arn:aws:ec2:eu-central-1:{ACCOUNT}:security-group-rule/*"
    assert rule_arns in scoped["ec2:RevokeSecurityGroupIngress"], f"scoped: {scoped}"
    wide = {a for s in found if s["Resource"] == "*" for a in actions(s)}
    assert all(":Describe" in a for a in wide), f"unscoped non-describe actions: {wide}"


def test_log_writer_policy_and_flow_logs_share_it() -> None:
    found = statements(documents.log_writer_policy(LOG_GROUP))
    assert found[0]["Resource"] == [LOG_GROUP, f"{LOG_GROUP}:*"], f"resources: {found}"
    assert documents.flow_logs_policy(LOG_GROUP) == documents.log_writer_policy(LOG_GROUP)


def runner() -> str:
    return documents.runner_policy(
        region="eu-central-1",
        account=ACCOUNT,
        log_group_arn=LOG_GROUP,
        subnet_ids=["subnet-a"],
        repository_arn=f"arn:aws:ecr:eu-central-1:{ACCOUNT}:repository/ci/runner",
        connection_arn=f"arn:aws:codestar-connections:eu-central-1:{ACCOUNT}:connection/x",
        deploy_role_arn=ROLE,
    )


def test_runner_policy_uses_the_connection_service_of_its_arn() -> None:
    connection = next(s for s in statements(runner()) if s.get("Sid") == "GitHubConnection")
    assert actions(connection) == {
        "codestar-connections:GetConnection",
        "codestar-connections:GetConnectionToken",
        "codestar-connections:UseConnection",
    }, f"connection: {connection}"


def test_state_statements_write_only_the_platform_project() -> None:
    found = documents.state_statements("arn:aws:s3:::state", "model-serving-platform", KEY)
    writes = {r for s in found if actions(s) & {"s3:PutObject", "s3:DeleteObject"} for r in [s["Resource"]]}
    assert writes == {"arn:aws:s3:::state/.pulumi/*/model-serving-platform/*"}, f"writes: {writes}"


IAM_POLICIES: dict[str, Callable[[], str]] = {
    "volume_key_user": lambda: documents.volume_key_user_policy(KEY),
    "lb_controller": lambda: documents.lb_controller_policy(TARGET_GROUP, SECURITY_GROUP),
    "cluster_autoscaler": lambda: documents.cluster_autoscaler_policy("c"),
    "log_writer": lambda: documents.log_writer_policy(LOG_GROUP),
    "otel_collector": documents.otel_collector_policy,
    "runner": runner,
    "deploy": lambda: documents.deploy_policy(cluster_arns=["arn:aws:eks:eu-central-1:1:cluster/c"]),
    "state": lambda: json.dumps(
        {"Version": "2012-10-17", "Statement": documents.state_statements("arn:aws:s3:::state", "p", KEY)}
    ),
    "model_read": lambda: documents.model_read_policy("arn:aws:s3:::m", KEY, "models/m/"),
    "retrain": lambda: documents.retrain_policy(
        [
            ("arn:aws:s3:::m", KEY, "eu-central-1"),
            ("arn:aws:s3:::n", KEY.replace("central", "west"), "eu-west-1"),
        ],
        ["m"],
    ),
}


@pytest.mark.parametrize("name", sorted(IAM_POLICIES))
def test_iam_policies_have_no_wildcard_on_data_services(name: str) -> None:
    found = statements(IAM_POLICIES[name]())
    wild = {
        a for s in found for a in actions(s) if a == "*" or (a.split(":")[0] in DATA_SERVICES and "*" in a)
    }
    assert wild == set(), f"{name} allows wildcard actions {wild} (the gate's IDN-006 denies them)"
