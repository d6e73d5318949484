import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest

from stacks.components.cluster import CLUSTER_ADMIN, Cluster, ClusterArgs, kubeconfig
from stacks.preview.mocks import ACCOUNT_ID
from stacks.preview.monitor import Registration
from stacks.settings import StackConfig
from tests.stacks.conftest import TAGS, Built, build_component

CLUSTER = "eu-prod-eu-central-1"
DEPLOY_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/{CLUSTER}-deploy"
BREAK_GLASS = f"arn:aws:iam::{ACCOUNT_ID}:role/break-glass"
RUNNER_SG = "sg-0123456789abcdef0"
AUTOSCALING_ROLE = (
    f"arn:aws:iam::{ACCOUNT_ID}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
)
KEY = "aws:kms/key:Key"
ADDON = "aws:eks/addon:Addon"
NODES = "aws:eks/nodeGroup:NodeGroup"
SLR = "aws:iam/serviceLinkedRole:ServiceLinkedRole"


@dataclass
class Recorded:
    """A built cluster, the options each child was given, and its resolved outputs."""

    built: Built
    options: dict[str, pulumi.ResourceOptions] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


def cluster_args(config: StackConfig, **changes: Any) -> ClusterArgs:
    assert config.cluster is not None and config.identity is not None, "eu-prod is an EKS stack"
    args = ClusterArgs(
        cluster_name=CLUSTER,
        region="eu-central-1",
        config=config.cluster,
        identity=config.identity,
        private_subnet_ids=["subnet-a", "subnet-b", "subnet-c"],
        log_retention_days=365,
        deploy_role_arn=DEPLOY_ROLE,
        runner_security_group_id=RUNNER_SG,
        break_glass_role_arn=BREAK_GLASS,
        create_autoscaling_role=True,
        tags=TAGS,
    )
    return replace(args, **changes)


def build(make: Callable[[pulumi.ResourceOptions], Cluster]) -> Recorded:
    """Build under the mocks, recording each child's options (protect, ignore_changes) and the outputs."""
    recorded = Recorded(built=Built([], {}))

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        recorded.options[args.name] = args.opts

    def factory(opts: pulumi.ResourceOptions) -> None:
        cluster = make(pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transformations=[record])))
        cluster.kubeconfig.apply(lambda v: recorded.outputs.update(kubeconfig=v))

    recorded.built = build_component(factory)
    return recorded


@pytest.fixture(scope="module")
def recorded(eu_config: StackConfig) -> Recorded:
    return build(lambda opts: Cluster("cl", cluster_args(eu_config), opts))


@pytest.fixture(scope="module")
def cluster(recorded: Recorded) -> Built:
    return recorded.built


def depends_on(dependent: Registration, dependency: Registration) -> bool:
    return dependency.urn in dependent.dependencies


def role_policy_of(built: Built, role_suffix: str) -> dict[str, Any]:
    policy = built.one("aws:iam/rolePolicy:RolePolicy", role_suffix).inputs["policy"]
    return dict(json.loads(policy))


# --- control plane ---------------------------------------------------------------------------------------


def test_secrets_encrypted_with_regional_key(cluster: Built) -> None:
    enc = cluster.one("aws:eks/cluster:Cluster").inputs["encryptionConfig"]
    assert enc["resources"] == ["secrets"], f"encryption config: {enc}"
    assert enc["provider"]["keyArn"].startswith("arn:aws:kms:eu-central-1:"), (
        "key is not in the cluster's region"
    )


def test_api_endpoint_private_only(cluster: Built) -> None:
    vpc = cluster.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True, "private endpoint off"
    assert vpc["endpointPublicAccess"] is False, "public endpoint on without CIDRs from config"


def test_control_plane_logs(cluster: Built) -> None:
    logs = set(cluster.one("aws:eks/cluster:Cluster").inputs["enabledClusterLogTypes"])
    assert {"api", "audit", "authenticator"} <= logs, f"log types: {logs}"


def test_kubernetes_version_pinned(cluster: Built, eu_config: StackConfig) -> None:
    version = cluster.one("aws:eks/cluster:Cluster").inputs["version"]
    assert eu_config.cluster is not None, "eu-prod is an EKS stack"
    assert version == eu_config.cluster.kubernetes_version, f"version {version} not pinned from config"


def test_irsa_oidc_provider(cluster: Built) -> None:
    oidc = cluster.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert oidc["url"].startswith("https://oidc.eks.eu-central-1.amazonaws.com/id/"), f"issuer: {oidc['url']}"
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"], "IRSA audience missing"


# --- point 2: nodes launch (the Auto Scaling role may use the volume key) ---------------------------------


def test_launch_template_requires_imdsv2_and_encrypts(cluster: Built) -> None:
    template = cluster.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert template["metadataOptions"]["httpTokens"] == "required", "IMDSv1 still allowed"
    ebs = template["blockDeviceMappings"][0]["ebs"]
    assert ebs["encrypted"] == "true" and ebs["kmsKeyId"].startswith("arn:aws:kms:eu-central-1:"), (
        f"volume: {ebs}"
    )


def test_node_group_uses_the_launch_template(cluster: Built) -> None:
    group = cluster.one(NODES).inputs
    assert "launchTemplate" in group, "node group bypasses the hardened launch template"


def test_volume_key_policy_lets_autoscaling_role_encrypt(cluster: Built) -> None:
    statements = json.loads(cluster.one(KEY).inputs["policy"])["Statement"]
    uses = [s for s in statements if s["Principal"] == {"AWS": [AUTOSCALING_ROLE]}]
    actions = {a for s in uses for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    needed = {"kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"}
    assert needed <= actions, f"Auto Scaling's role lacks {needed - actions} on the volume key"


def test_volume_key_grants_autoscaling_role_only_for_aws_resources(cluster: Built) -> None:
    statements = json.loads(cluster.one(KEY).inputs["policy"])["Statement"]
    grants = [
        s for s in statements if s["Principal"] == {"AWS": [AUTOSCALING_ROLE]} and "CreateGrant" in str(s)
    ]
    assert len(grants) == 1, f"no CreateGrant for Auto Scaling's role: {statements}"
    assert grants[0]["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}, (
        f"CreateGrant not limited to AWS resources: {grants[0]}"
    )


def test_autoscaling_service_linked_role_created_and_kept(recorded: Recorded) -> None:
    role = recorded.built.one(SLR)
    assert role.inputs["awsServiceName"] == "autoscaling.amazonaws.com", f"service: {role.inputs}"
    assert recorded.options[role.name].retain_on_delete is True, (
        "the account-wide role must outlive a destroyed stack"
    )


def test_volume_key_waits_for_the_service_linked_role(cluster: Built) -> None:
    assert depends_on(cluster.one(KEY), cluster.one(SLR)), "KMS rejects a policy naming a role not yet made"


def test_key_waits_for_a_role_another_region_creates(eu_config: StackConfig) -> None:
    def make(opts: pulumi.ResourceOptions) -> Cluster:
        elsewhere = aws.iam.ServiceLinkedRole(
            "first-region",
            aws_service_name="autoscaling.amazonaws.com",
            opts=pulumi.ResourceOptions.merge(pulumi.ResourceOptions(), opts),
        )
        args = cluster_args(eu_config, create_autoscaling_role=False, autoscaling_role=elsewhere)
        return Cluster("cl", args, opts)

    built = build(make).built
    assert len(built.of_type(SLR)) == 1, "a second region created the account-wide role again"
    assert depends_on(built.one(KEY), built.one(SLR, "first-region")), "key does not wait for the role"


def test_no_autoscaling_role_created_when_the_account_has_it(eu_config: StackConfig) -> None:
    built = build(
        lambda opts: Cluster("cl", cluster_args(eu_config, create_autoscaling_role=False), opts)
    ).built
    assert built.of_type(SLR) == [], "role created although the flag is off"
    assert "AWSServiceRoleForAutoScaling" in built.one(KEY).inputs["policy"], "key policy lost the grant"


def test_node_group_waits_for_the_key_and_its_grants(cluster: Built) -> None:
    assert depends_on(cluster.one(NODES), cluster.one(KEY)), "nodes may launch before their volume key"


# --- point 4: persistent volumes (EBS CSI driver) -----------------------------------------------------------


def test_ebs_csi_role_may_use_the_volume_key(cluster: Built) -> None:
    key_arn = cluster.one("aws:eks/cluster:Cluster").inputs["encryptionConfig"]["provider"]["keyArn"]
    statements = role_policy_of(cluster, "-ebs-csi")["Statement"]
    grant = next((s for s in statements if "kms:CreateGrant" in s["Action"]), None)
    assert grant is not None and grant["Resource"] == key_arn, f"no CreateGrant on {key_arn}: {statements}"
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}, f"grant: {grant}"
    use = next((s for s in statements if "kms:GenerateDataKey" in s["Action"]), None)
    assert use is not None and use["Resource"] == key_arn, (
        f"CSI driver cannot encrypt with the key: {statements}"
    )
    assert {"kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom"} <= set(use["Action"]), f"actions: {use}"


def test_ebs_csi_addon_waits_for_nodes_and_its_key_policy(cluster: Built) -> None:
    addon = cluster.one(ADDON, "-ebs-csi")
    assert depends_on(addon, cluster.one(NODES)), "EBS CSI add-on created before the node group"
    assert depends_on(addon, cluster.one("aws:iam/rolePolicy:RolePolicy", "-ebs-csi")), (
        "EBS CSI add-on may start before its role may use the key"
    )


# --- point 6: network policy enforced by the VPC CNI ------------------------------------------------------


def test_vpc_cni_enforces_network_policy(cluster: Built) -> None:
    addon = cluster.one(ADDON, "-vpc-cni").inputs
    assert addon["addonName"] == "vpc-cni", f"add-on: {addon}"
    assert json.loads(addon["configurationValues"]) == {"enableNetworkPolicy": "true"}, (
        f"network policy not enabled: {addon.get('configurationValues')}"
    )


def test_vpc_cni_has_its_own_role_for_aws_node(cluster: Built) -> None:
    addon = cluster.one(ADDON, "-vpc-cni").inputs
    role = cluster.one("aws:iam/role:Role", "-vpc-cni")
    assert addon["serviceAccountRoleArn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/{role.inputs['name']}", (
        f"vpc-cni does not use its own role: {addon.get('serviceAccountRoleArn')}"
    )
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    subjects = {v for k, v in trust.items() if k.endswith(":sub")}
    assert subjects == {"system:serviceaccount:kube-system:aws-node"}, f"trusted: {subjects}"
    attached = {
        r.inputs["policyArn"] for r in cluster.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    assert "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy" in attached, f"CNI policy missing: {attached}"


def test_node_role_has_no_cni_policy(cluster: Built) -> None:
    node_grants = [
        r.inputs["policyArn"]
        for r in cluster.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.name.startswith("cl-nodes-")
    ]
    assert node_grants and not any("CNI" in p for p in node_grants), f"node role policies: {node_grants}"


def test_vpc_cni_before_nodes_and_the_rest_after(cluster: Built) -> None:
    nodes = cluster.one(NODES)
    assert depends_on(nodes, cluster.one(ADDON, "-vpc-cni")), "nodes start without the CNI's own role"
    for addon in ("coredns", "kube-proxy"):
        assert depends_on(cluster.one(ADDON, f"-{addon}"), nodes), f"{addon} created before the node group"


@pytest.mark.parametrize("addon", ["vpc-cni", "aws-ebs-csi-driver", "coredns", "kube-proxy"])
def test_addons_overwrite_conflicts(cluster: Built, addon: str) -> None:
    found = [r.inputs for r in cluster.of_type(ADDON) if r.inputs["addonName"] == addon]
    assert len(found) == 1, f"{addon}: {found}"
    modes = (found[0].get("resolveConflictsOnCreate"), found[0].get("resolveConflictsOnUpdate"))
    assert modes == ("OVERWRITE", "OVERWRITE"), f"{addon} conflict resolution: {modes}"


# --- point 1: the deployer reaches the cluster -----------------------------------------------------------


def test_creator_gets_no_hidden_admin(cluster: Built) -> None:
    access = cluster.one("aws:eks/cluster:Cluster").inputs["accessConfig"]
    assert access == {"authenticationMode": "API", "bootstrapClusterCreatorAdminPermissions": False}, (
        f"access config: {access}"
    )


@pytest.mark.parametrize(("suffix", "principal"), [("-deploy", DEPLOY_ROLE), ("-break-glass", BREAK_GLASS)])
def test_admin_access_entries(cluster: Built, suffix: str, principal: str) -> None:
    entry = cluster.one("aws:eks/accessEntry:AccessEntry", suffix)
    assert entry.inputs["principalArn"] == principal, f"entry: {entry.inputs}"
    assert depends_on(entry, cluster.one("aws:eks/cluster:Cluster")), "access entry before the cluster"
    association = cluster.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation", suffix)
    assert association.inputs["principalArn"] == principal, f"association: {association.inputs}"
    assert association.inputs["policyArn"] == CLUSTER_ADMIN, f"policy: {association.inputs['policyArn']}"
    assert association.inputs["accessScope"] == {"type": "cluster"}, f"scope: {association.inputs}"
    assert depends_on(association, entry), "policy associated before its access entry exists"


def test_runner_reaches_the_api_on_443(cluster: Built) -> None:
    rule = cluster.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "-api-from-runner")
    assert rule.inputs["securityGroupId"].startswith("sg-"), (
        f"not on the cluster security group: {rule.inputs}"
    )
    assert rule.inputs["referencedSecurityGroupId"] == RUNNER_SG, f"source: {rule.inputs}"
    assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["ipProtocol"]) == (443, 443, "tcp"), (
        f"ports: {rule.inputs}"
    )
    assert depends_on(rule, cluster.one("aws:eks/cluster:Cluster")), "rule not on the cluster's own group"


def test_kubeconfig_assumes_the_deploy_role(recorded: Recorded) -> None:
    config = json.loads(recorded.outputs["kubeconfig"])
    args = config["users"][0]["user"]["exec"]["args"]
    assert args[args.index("--role-arn") + 1] == DEPLOY_ROLE, f"exec args: {args}"
    assert "token" not in config["users"][0]["user"], "a credential ended up in the kubeconfig"


def test_kubeconfig_builder_passes_the_role() -> None:
    config = json.loads(kubeconfig("c", "https://e", "Y2E=", "eu-west-1", DEPLOY_ROLE))
    args = config["users"][0]["user"]["exec"]["args"]
    assert args[-2:] == ["--role-arn", DEPLOY_ROLE], f"exec args: {args}"


@pytest.mark.parametrize(
    "principal", ["break-glass", f"arn:aws:iam::{ACCOUNT_ID}:user/alice", "arn:aws:iam::1:role/x"]
)
def test_break_glass_must_be_a_role_arn(eu_config: StackConfig, principal: str) -> None:
    with pytest.raises(ValueError, match="not an IAM role ARN"):
        Cluster("cl", cluster_args(eu_config, break_glass_role_arn=principal))


def test_autoscaling_role_created_once(eu_config: StackConfig) -> None:
    def make(opts: pulumi.ResourceOptions) -> Cluster:
        elsewhere = aws.iam.ServiceLinkedRole(
            "first-region",
            aws_service_name="autoscaling.amazonaws.com",
            opts=pulumi.ResourceOptions.merge(pulumi.ResourceOptions(), opts),
        )
        return Cluster("cl", cluster_args(eu_config, autoscaling_role=elsewhere), opts)

    with pytest.raises(ValueError, match="one per account"):
        build(make)


# --- point 16: container logs ---------------------------------------------------------------------------


def test_container_log_group_encrypted_with_retention(cluster: Built) -> None:
    group = cluster.one("aws:cloudwatch/logGroup:LogGroup", "-containers").inputs
    assert group["name"] == f"/aws/eks/{CLUSTER}/containers", f"name: {group['name']}"
    assert group.get("kmsKeyId", "").startswith("arn:aws:kms:eu-central-1:"), f"not KMS-encrypted: {group}"
    assert group["retentionInDays"] == 365, f"retention: {group.get('retentionInDays')}"


# --- points 14 and 10: protection, names, autoscaling ------------------------------------------------------


@pytest.mark.parametrize("typ", [KEY, "aws:eks/cluster:Cluster"])
def test_key_and_cluster_protected(recorded: Recorded, typ: str) -> None:
    resource = recorded.built.one(typ)
    assert recorded.options[resource.name].protect is True, f"{resource.name} can be deleted by a destroy"


def test_key_alias_carries_the_cluster(cluster: Built) -> None:
    alias = cluster.one("aws:kms/alias:Alias").inputs["name"]
    assert alias == f"alias/{CLUSTER}-eks", f"alias {alias} may collide with another stack's"


def test_autoscaler_owns_the_desired_size(recorded: Recorded) -> None:
    nodes = recorded.built.one(NODES)
    ignored = recorded.options[nodes.name].ignore_changes or []
    assert "scalingConfig.desiredSize" in ignored, "a redeploy would undo the cluster autoscaler's scaling"
    scaling = nodes.inputs["scalingConfig"]
    assert scaling["minSize"] < scaling["maxSize"], f"nothing for the autoscaler to scale: {scaling}"
