import json
from dataclasses import replace
from typing import Any

import pytest

from stacks.components.runner import DeployRunner, DeployRunnerArgs, image_repository_arn
from stacks.preview.mocks import ACCOUNT_ID
from tests.stacks.conftest import TAGS, Built, build_component

CLUSTER = "eu-prod-eu-central-1"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"{ACCOUNT_ID}.dkr.ecr.eu-central-1.amazonaws.com/ci/runner@{DIGEST}"
STATE_BUCKET = "arn:aws:s3:::acme-pulumi-state-eu"
SECRETS_KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CONNECTION = f"arn:aws:codeconnections:eu-central-1:{ACCOUNT_ID}:connection/0a1b2c3d-github"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def runner_args(**changes: Any) -> DeployRunnerArgs:
    args = DeployRunnerArgs(
        cluster_name=CLUSTER,
        region="eu-central-1",
        stack="eu-prod",
        cluster_regions=("eu-central-1", "eu-west-1"),
        vpc_id="vpc-0123456789abcdef0",
        private_subnet_ids=["subnet-a", "subnet-b"],
        repository_url="https://github.com/acme/model-serving",
        github_connection_arn=CONNECTION,
        image=IMAGE,
        state_bucket_arn=STATE_BUCKET,
        secrets_key_arn=SECRETS_KEY,
        log_retention_days=365,
        tags=TAGS,
    )
    return replace(args, **changes)


@pytest.fixture(scope="module")
def runner() -> Built:
    return build_component(lambda opts: DeployRunner("deploy", runner_args(), opts))


def role_arn(built: Built, suffix: str) -> str:
    return f"arn:aws:iam::{ACCOUNT_ID}:role/{built.one('aws:iam/role:Role', suffix).inputs['name']}"


def statements(built: Built, suffix: str) -> list[dict[str, Any]]:
    return list(json.loads(built.one(ROLE_POLICY, suffix).inputs["policy"])["Statement"])


def actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_project_runs_in_private_subnets_with_its_own_group(runner: Built) -> None:
    vpc = runner.one("aws:codebuild/project:Project").inputs["vpcConfig"]
    group = runner.one("aws:ec2/securityGroup:SecurityGroup")
    assert vpc["subnets"] == ["subnet-a", "subnet-b"], f"subnets: {vpc['subnets']}"
    assert vpc["vpcId"] == "vpc-0123456789abcdef0", f"vpc: {vpc}"
    assert len(vpc["securityGroupIds"]) == 1 and vpc["securityGroupIds"][0].startswith("sg-"), (
        f"groups: {vpc}"
    )
    assert group.inputs.get("ingress", []) == [], f"runner admits inbound traffic: {group.inputs['ingress']}"


def test_runner_egress_is_https_only(runner: Built) -> None:
    rules = [r.inputs for r in runner.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")]
    assert rules, "no egress rule: the runner could reach neither GitHub nor the API"
    ports = {(r["ipProtocol"], r["fromPort"], r["toPort"]) for r in rules}
    assert ports == {("tcp", 443, 443)}, f"egress: {ports}"
    assert "egress" not in runner.one("aws:ec2/securityGroup:SecurityGroup").inputs, "inline egress rules too"


def test_project_is_a_github_actions_runner(runner: Built) -> None:
    project = runner.one("aws:codebuild/project:Project").inputs
    assert project["source"]["type"] == "GITHUB", f"source: {project['source']}"
    assert project["source"]["location"] == "https://github.com/acme/model-serving", (
        f"source: {project['source']}"
    )
    assert project["source"]["auth"] == {"type": "CODECONNECTIONS", "resource": CONNECTION}, "no GitHub auth"
    hook = runner.one("aws:codebuild/webhook:Webhook").inputs
    assert hook["filterGroups"] == [
        {
            "filters": [
                {"type": "EVENT", "pattern": "WORKFLOW_JOB_QUEUED"},
                {"type": "WORKFLOW_NAME", "pattern": "^deploy$"},
            ]
        }
    ], f"any workflow (a pull request's too) may start the runner: {hook['filterGroups']}"
    assert project["name"] == f"{CLUSTER}-deploy-runner", (
        f"the workflows ask for codebuild-<stack>-<region>-deploy-runner: {project['name']}"
    )


def test_build_image_by_digest_unprivileged(runner: Built) -> None:
    env = runner.one("aws:codebuild/project:Project").inputs["environment"]
    assert env["image"] == IMAGE, f"image: {env['image']}"
    assert env["privilegedMode"] is False, "builds may run privileged containers"
    assert env["imagePullCredentialsType"] == "SERVICE_ROLE", f"pull credentials: {env}"


def test_build_logs_go_to_a_kms_log_group(runner: Built) -> None:
    group = runner.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert group.get("kmsKeyId", "").startswith("arn:aws:kms:eu-central-1:"), f"not KMS-encrypted: {group}"
    assert group["retentionInDays"] == 365, f"retention: {group}"
    logs = runner.one("aws:codebuild/project:Project").inputs["logsConfig"]["cloudwatchLogs"]
    assert logs == {"status": "ENABLED", "groupName": group["name"]}, f"logs config: {logs}"


def test_runner_role_may_assume_only_the_deploy_role(runner: Built) -> None:
    policy = statements(runner, "-runner")
    assumes = [s for s in policy if any(a.startswith("sts:") for a in actions(s))]
    assert [s["Resource"] for s in assumes] == [role_arn(runner, "-deploy")], f"assume: {assumes}"
    services = {a.split(":")[0] for s in policy for a in actions(s)}
    assert services <= {"logs", "ec2", "ecr", "codeconnections", "sts", "s3", "kms"}, (
        f"runner role reaches {services}"
    )


def test_runner_pulls_only_its_image_repository(runner: Built) -> None:
    pulls = [s for s in statements(runner, "-runner") if "ecr:BatchGetImage" in actions(s)]
    repository = f"arn:aws:ecr:eu-central-1:{ACCOUNT_ID}:repository/ci/runner"
    assert [s["Resource"] for s in pulls] == [repository], f"pulls: {pulls}"


def test_runner_interfaces_only_in_its_subnets(runner: Built) -> None:
    permission = next(
        s for s in statements(runner, "-runner") if "ec2:CreateNetworkInterfacePermission" in actions(s)
    )
    subnets = permission["Condition"]["ArnEquals"]["ec2:Subnet"]
    assert subnets == [f"arn:aws:ec2:eu-central-1:{ACCOUNT_ID}:subnet/subnet-{s}" for s in "ab"], subnets
    assert permission["Condition"]["StringEquals"] == {"ec2:AuthorizedService": "codebuild.amazonaws.com"}


def test_deploy_role_trusts_only_the_runner_role(runner: Built) -> None:
    trust = json.loads(runner.one("aws:iam/role:Role", "-deploy").inputs["assumeRolePolicy"])["Statement"]
    assert [s["Principal"] for s in trust] == [{"AWS": role_arn(runner, "-runner")}], f"trust: {trust}"


def test_runner_role_trusts_codebuild(runner: Built) -> None:
    trust = json.loads(runner.one("aws:iam/role:Role", "-runner").inputs["assumeRolePolicy"])["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "codebuild.amazonaws.com"}], f"trust: {trust}"


def test_runner_role_holds_the_state_and_writes_only_the_platform(runner: Built) -> None:
    # Pulumi runs as the runner role; the deploy role is only what the kubeconfig's exec assumes, so no
    # profile switch makes the deploy role assume itself.
    policy = statements(runner, "-runner")
    writes = [s for s in policy if "s3:PutObject" in actions(s)]
    assert [s["Resource"] for s in writes] == [f"{STATE_BUCKET}/.pulumi/*/model-serving-platform/*"], (
        f"runner role writes {writes}"
    )
    reads = [s for s in policy if "s3:GetObject" in actions(s)]
    assert [s["Resource"] for s in reads] == [f"{STATE_BUCKET}/*"], f"reads: {reads}"
    keys = [s for s in policy if "kms:Decrypt" in actions(s)]
    assert [s["Resource"] for s in keys] == [SECRETS_KEY], f"keys: {keys}"


def test_deploy_role_only_finds_the_stacks_clusters(runner: Built) -> None:
    policy = statements(runner, "-deploy")
    assert [actions(s) for s in policy] == [{"eks:DescribeCluster"}], f"deploy role can do more: {policy}"
    assert policy[0]["Resource"] == [
        f"arn:aws:eks:{r}:{ACCOUNT_ID}:cluster/eu-prod-{r}" for r in ("eu-central-1", "eu-west-1")
    ], policy


def test_project_waits_for_its_role_policy(runner: Built) -> None:
    project = runner.one("aws:codebuild/project:Project")
    assert runner.one(ROLE_POLICY, "-runner").urn in project.dependencies, (
        "CodeBuild checks the role's VPC rights when the project is created"
    )


def test_names_carry_the_cluster(runner: Built) -> None:
    names = [
        runner.one("aws:codebuild/project:Project").inputs["name"],
        runner.one("aws:iam/role:Role", "-deploy").inputs["name"],
        runner.one("aws:kms/alias:Alias").inputs["name"],
    ]
    assert all(CLUSTER in n for n in names), f"names: {names}"


@pytest.mark.parametrize(
    "image",
    [
        f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/ci/runner@{DIGEST}",
        f"{ACCOUNT_ID}.dkr.ecr.eu-central-1.amazonaws.com/ci/runner:latest",
        f"ghcr.io/actions/runner@{DIGEST}",
    ],
)
def test_image_must_be_in_region_by_digest(image: str) -> None:
    with pytest.raises(ValueError, match="must be an ECR image in eu-central-1"):
        image_repository_arn(image, "eu-central-1")


def test_image_repository_arn() -> None:
    arn = image_repository_arn(IMAGE, "eu-central-1")
    assert arn == f"arn:aws:ecr:eu-central-1:{ACCOUNT_ID}:repository/ci/runner", arn


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"repository_url": "https://gitlab.com/acme/x"}, "is not https://github.com"),
        ({"image": f"public.ecr.aws/x/runner@{DIGEST}"}, "must be an ECR image"),
        ({"state_bucket_arn": "acme-state"}, "not an S3 bucket ARN"),
        ({"secrets_key_arn": "alias/x"}, "not a KMS key ARN"),
        ({"github_connection_arn": "ghp_token"}, "not a CodeConnections ARN"),
    ],
)
def test_bad_inputs_fail_at_plan_time(change: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeployRunner("deploy", runner_args(**change))
