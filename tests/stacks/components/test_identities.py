import json
from typing import Any

import pulumi
import pytest

from stacks.components.identities import (
    IAM_NAME_LIMIT,
    PLATFORM_SERVICE_ACCOUNTS,
    WorkloadIdentities,
    WorkloadIdentitiesArgs,
    iam_name,
)
from stacks.contract import (
    PLATFORM_ROLES,
    ROLE_CLUSTER_AUTOSCALER,
    ROLE_EXTERNAL_SECRETS,
    ROLE_FLUENT_BIT,
    ROLE_LB_CONTROLLER,
    ROLE_OTEL_COLLECTOR,
    model_role,
)
from stacks.manifests import addons
from stacks.preview.mocks import ACCOUNT_ID
from tests.stacks.conftest import TAGS, Built, build_component

CLUSTER = "eu-prod-eu-central-1"
TARGET_GROUP = f"arn:aws:elasticloadbalancing:eu-central-1:{ACCOUNT_ID}:targetgroup/gateway/0123456789abcdef"
NODE_SG = "sg-0fedcba9876543210"
LOG_GROUP = f"arn:aws:logs:eu-central-1:{ACCOUNT_ID}:log-group:/aws/eks/{CLUSTER}/containers"
BUCKET = "arn:aws:s3:::acme-models-eu-central-1"
BUCKET_KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT_ID}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MODELS = {"tabular-classifier": "payments", "ticket-router": "support"}
EXPECTED_ACCOUNTS = {
    ROLE_LB_CONTROLLER: "system:serviceaccount:kube-system:aws-load-balancer-controller",
    ROLE_CLUSTER_AUTOSCALER: "system:serviceaccount:kube-system:cluster-autoscaler",
    ROLE_FLUENT_BIT: "system:serviceaccount:observability:aws-for-fluent-bit",
    ROLE_OTEL_COLLECTOR: "system:serviceaccount:observability:otel-collector",
    model_role("tabular-classifier"): "system:serviceaccount:payments:tabular-classifier",
    model_role("ticket-router"): "system:serviceaccount:support:ticket-router",
}


class Identities:
    def __init__(self, built: Built, roles: dict[str, str]) -> None:
        self.built = built
        self.roles = roles

    def role(self, key: str) -> dict[str, Any]:
        """Inputs of the role whose ARN is exported under `key`."""
        name = self.roles[key].rsplit("/", 1)[1]
        found = [r.inputs for r in self.built.of_type("aws:iam/role:Role") if r.inputs.get("name") == name]
        assert len(found) == 1, f"no single role named {name}"
        return found[0]

    def policy(self, key: str) -> list[dict[str, Any]]:
        """Statements of the inline policy of the role exported under `key`."""
        suffix = key.replace(":", "-")
        policy = self.built.one("aws:iam/rolePolicy:RolePolicy", f"-{suffix}").inputs["policy"]
        return list(json.loads(policy)["Statement"])


@pytest.fixture(scope="module")
def identities() -> Identities:
    roles: dict[str, str] = {}

    def factory(opts: Any) -> None:
        args = WorkloadIdentitiesArgs(
            cluster_name=CLUSTER,
            region="eu-central-1",
            oidc_provider_arn=f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/AB12",
            oidc_issuer="https://oidc.eks.eu-central-1.amazonaws.com/id/AB12",
            target_group_arn=TARGET_GROUP,
            node_security_group_id=NODE_SG,
            log_group_arn=LOG_GROUP,
            model_bucket_arn=BUCKET,
            model_key_arn=BUCKET_KEY,
            models=MODELS,
            tags=TAGS,
        )
        component = WorkloadIdentities("ids", args, opts)
        pulumi.Output.all(**component.roles).apply(roles.update)

    return Identities(build_component(factory), roles)


def actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_one_role_per_workload_key(identities: Identities) -> None:
    expected = set(PLATFORM_ROLES) | {model_role(m) for m in MODELS}
    assert set(identities.roles) == expected, f"roles: {sorted(identities.roles)}"


def test_every_contract_role_has_a_service_account() -> None:
    assert set(PLATFORM_SERVICE_ACCOUNTS) == set(PLATFORM_ROLES), (
        f"contract roles without a service account: {set(PLATFORM_ROLES) ^ set(PLATFORM_SERVICE_ACCOUNTS)}"
    )


@pytest.mark.parametrize("key", sorted(addons.IRSA_SUBJECTS))
def test_roles_trust_the_service_accounts_the_platform_charts_use(identities: Identities, key: str) -> None:
    namespace, account = addons.IRSA_SUBJECTS[key]
    trust = json.loads(identities.role(key)["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    subjects = [v for k, v in trust.items() if k.endswith(":sub")]
    assert subjects == [f"system:serviceaccount:{namespace}:{account}"], f"{key}: role trusts {subjects}"


def test_cert_manager_gets_no_aws_role() -> None:
    assert "cert-manager" not in PLATFORM_SERVICE_ACCOUNTS, (
        "cert-manager needs no AWS (ACM certificate on the NLB)"
    )


@pytest.mark.parametrize(("key", "subject"), EXPECTED_ACCOUNTS.items())
def test_each_role_trusts_exactly_one_service_account(identities: Identities, key: str, subject: str) -> None:
    trust = json.loads(identities.role(key)["assumeRolePolicy"])["Statement"]
    assert len(trust) == 1, f"{key}: more than one trust statement"
    conditions = trust[0]["Condition"]["StringEquals"]
    subjects = [v for k, v in conditions.items() if k.endswith(":sub")]
    assert subjects == [subject], f"{key} trusts {subjects}"
    assert trust[0]["Principal"]["Federated"].endswith("/id/AB12"), f"{key}: not the cluster's OIDC provider"


def test_role_names_carry_the_cluster(identities: Identities) -> None:
    names = [identities.role(key)["name"] for key in identities.roles]
    assert all(n.startswith(f"{CLUSTER}-") and len(n) <= IAM_NAME_LIMIT for n in names), f"names: {names}"


def test_iam_name_shortens_long_names_without_collisions() -> None:
    a, b = iam_name(CLUSTER, "model:" + "x" * 60), iam_name(CLUSTER, "model:" + "x" * 61)
    assert len(a) <= IAM_NAME_LIMIT and len(b) <= IAM_NAME_LIMIT, f"too long: {a}, {b}"
    assert a != b, "two long names shortened to the same role name"
    assert iam_name(CLUSTER, "model:m") == f"{CLUSTER}-model-m", "short names must stay readable"


def test_lb_controller_registers_only_the_gateway_target_group(identities: Identities) -> None:
    statements = identities.policy(ROLE_LB_CONTROLLER)
    register = [s for s in statements if "elasticloadbalancing:RegisterTargets" in actions(s)]
    assert len(register) == 1 and register[0]["Resource"] == TARGET_GROUP, f"register: {register}"
    assert actions(register[0]) == {
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:DeregisterTargets",
    }


def test_lb_controller_opens_only_the_node_security_group(identities: Identities) -> None:
    statements = identities.policy(ROLE_LB_CONTROLLER)
    ingress = [s for s in statements if "ec2:AuthorizeSecurityGroupIngress" in actions(s)]
    group = f"arn:aws:ec2:eu-central-1:{ACCOUNT_ID}:security-group/{NODE_SG}"
    assert len(ingress) == 1 and group in ingress[0]["Resource"], f"ingress: {ingress}"
    assert not any(r.endswith("security-group/*") for r in ingress[0]["Resource"]), "any group may be opened"
    mutating = {a for s in statements if s["Resource"] == "*" for a in actions(s) if ":Describe" not in a}
    assert mutating == set(), f"unscoped changes allowed: {mutating}"


def test_autoscaler_resizes_only_groups_this_cluster_owns(identities: Identities) -> None:
    statements = identities.policy(ROLE_CLUSTER_AUTOSCALER)
    scale = [s for s in statements if "autoscaling:SetDesiredCapacity" in actions(s)]
    assert len(scale) == 1, f"scale statements: {scale}"
    assert scale[0]["Condition"] == {
        "StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{CLUSTER}": "owned"}
    }, f"condition: {scale[0].get('Condition')}"
    assert "autoscaling:TerminateInstanceInAutoScalingGroup" in actions(scale[0]), "scale-down impossible"


def test_fluent_bit_writes_only_the_container_log_group(identities: Identities) -> None:
    statements = identities.policy(ROLE_FLUENT_BIT)
    assert [s["Resource"] for s in statements] == [[LOG_GROUP, f"{LOG_GROUP}:*"]], f"statements: {statements}"
    assert actions(statements[0]) == {"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}


def test_otel_collector_sends_traces_to_xray(identities: Identities) -> None:
    statements = identities.policy(ROLE_OTEL_COLLECTOR)
    granted = set().union(*(actions(s) for s in statements))
    expected = {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
    }
    assert granted == expected, f"otel actions: {granted}"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_reads_only_its_prefix(identities: Identities, model: str) -> None:
    statements = identities.policy(model_role(model))
    reads = [s for s in statements if "s3:GetObject" in actions(s)]
    assert [s["Resource"] for s in reads] == [f"{BUCKET}/models/{model}/*"], f"{model} reads {reads}"
    lists = [s for s in statements if "s3:ListBucket" in actions(s)]
    assert lists[0]["Condition"] == {"StringLike": {"s3:prefix": [f"models/{model}/*"]}}, f"list: {lists}"
    decrypt = [s for s in statements if "kms:Decrypt" in actions(s)]
    assert [s["Resource"] for s in decrypt] == [BUCKET_KEY], f"{model} decrypts {decrypt}"
    writes = {
        a for s in statements for a in actions(s) if a.startswith("s3:Put") or a.startswith("s3:Delete")
    }
    assert writes == set(), f"{model} may write: {writes}"


OIDC = "oidc.eks.eu-central-1.amazonaws.com/id/AB12"
JOB_BUCKET = "arn:aws:s3:::acme-async-eu-central-1"
QUEUE_KEY = f"arn:aws:kms:eu-central-1:{ACCOUNT_ID}:key/0000abcd-12ab-34cd-56ef-1234567890ab"
QUEUE_SECRET = f"arn:aws:secretsmanager:eu-central-1:{ACCOUNT_ID}:secret:eu-prod/job-queue/auth-token-AbCdEf"
CALLBACK_SECRET = (
    f"arn:aws:secretsmanager:eu-central-1:{ACCOUNT_ID}:secret:eu-prod/job-queue/callback-key-XyZ"
)


def _async_args(**overrides: Any) -> WorkloadIdentitiesArgs:
    values: dict[str, Any] = {
        "cluster_name": CLUSTER,
        "region": "eu-central-1",
        "oidc_provider_arn": f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{OIDC}",
        "oidc_issuer": "https://oidc.eks.eu-central-1.amazonaws.com/id/AB12",
        "target_group_arn": TARGET_GROUP,
        "node_security_group_id": NODE_SG,
        "log_group_arn": LOG_GROUP,
        "model_bucket_arn": BUCKET,
        "model_key_arn": BUCKET_KEY,
        "models": MODELS,
        "queue_secret_arn": QUEUE_SECRET,
        "queue_key_arn": QUEUE_KEY,
        "callback_secret_arn": CALLBACK_SECRET,
        "job_bucket_arn": JOB_BUCKET,
        "async_models": frozenset({"ticket-router"}),
        "tags": TAGS,
    } | overrides
    return WorkloadIdentitiesArgs(**values)


@pytest.fixture(scope="module")
def async_identities() -> Identities:
    roles: dict[str, str] = {}

    def factory(opts: Any) -> None:
        component = WorkloadIdentities("ids", _async_args(), opts)
        pulumi.Output.all(**component.roles).apply(roles.update)

    return Identities(build_component(factory), roles)


def test_an_async_model_reads_inputs_and_writes_results_under_its_prefix_only(
    async_identities: Identities,
) -> None:
    statements = async_identities.policy(model_role("ticket-router"))
    on_jobs = {
        (s["Resource"], frozenset(actions(s)))
        for s in statements
        if str(s["Resource"]).startswith(JOB_BUCKET)
    }
    assert on_jobs == {
        (f"{JOB_BUCKET}/jobs/ticket-router/inputs/*", frozenset({"s3:GetObject"})),
        (f"{JOB_BUCKET}/jobs/ticket-router/results/*", frozenset({"s3:GetObject", "s3:PutObject"})),
    }, f"the result bucket beyond the model's inputs (read) and results (read, write): {on_jobs}"
    reads = [s["Resource"] for s in statements if str(s["Resource"]).startswith(BUCKET)]
    assert f"{BUCKET}/models/ticket-router/*" in reads, f"the async model lost its model read: {reads}"


def test_the_result_buckets_key_is_usable_only_through_s3_in_the_region(async_identities: Identities) -> None:
    statements = async_identities.policy(model_role("ticket-router"))
    on_key = [s for s in statements if s["Resource"] == QUEUE_KEY]
    assert len(on_key) == 1, on_key
    assert actions(on_key[0]) == {"kms:Decrypt", "kms:GenerateDataKey"}, on_key
    assert on_key[0]["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-central-1.amazonaws.com"}}, (
        f"the key without the S3-in-region condition: {on_key[0].get('Condition')}"
    )


def test_a_synchronous_model_gets_nothing_of_the_result_bucket(async_identities: Identities) -> None:
    statements = async_identities.policy(model_role("tabular-classifier"))
    touched = [
        s for s in statements if s["Resource"] in (QUEUE_KEY,) or str(s["Resource"]).startswith(JOB_BUCKET)
    ]
    assert touched == [], f"a model without async requests reaches the result bucket: {touched}"


def test_the_secret_syncer_reads_the_queue_token_and_the_callback_key(async_identities: Identities) -> None:
    statements = async_identities.policy(ROLE_EXTERNAL_SECRETS)
    (read,) = [s for s in statements if "secretsmanager:GetSecretValue" in actions(s)]
    assert read["Resource"] == [QUEUE_SECRET, CALLBACK_SECRET], read


def test_an_async_model_without_a_result_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="ticket-router takes async requests but the region has no result"):
        build_component(lambda opts: WorkloadIdentities("ids", _async_args(job_bucket_arn=None), opts))
