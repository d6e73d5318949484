import pytest

from stacks.components.cluster import Cluster, ClusterArgs
from stacks.settings import StackConfig
from tests.stacks.conftest import TAGS, Built, build_component


@pytest.fixture(scope="module")
def cluster(eu_config: StackConfig) -> Built:
    args = ClusterArgs(
        cluster_name="eu-prod-eu-central-1",
        region="eu-central-1",
        config=eu_config.cluster,
        identity=eu_config.identity,
        private_subnet_ids=["subnet-a", "subnet-b", "subnet-c"],
        log_retention_days=365,
        tags=TAGS,
    )
    return build_component(lambda opts: Cluster("cl", args, opts))


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


def test_kubernetes_version_pinned(cluster: Built) -> None:
    assert cluster.one("aws:eks/cluster:Cluster").inputs["version"] == "1.33", (
        "version not pinned from config"
    )


def test_launch_template_requires_imdsv2_and_encrypts(cluster: Built) -> None:
    template = cluster.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert template["metadataOptions"]["httpTokens"] == "required", "IMDSv1 still allowed"
    ebs = template["blockDeviceMappings"][0]["ebs"]
    assert ebs["encrypted"] == "true" and ebs["kmsKeyId"].startswith("arn:aws:kms:eu-central-1:"), (
        f"volume: {ebs}"
    )


def test_node_group_uses_the_launch_template(cluster: Built) -> None:
    group = cluster.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert "launchTemplate" in group, "node group bypasses the hardened launch template"


def test_irsa_oidc_provider(cluster: Built) -> None:
    oidc = cluster.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert oidc["url"].startswith("https://oidc.eks.eu-central-1.amazonaws.com/id/"), f"issuer: {oidc['url']}"
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"], "IRSA audience missing"
