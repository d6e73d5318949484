"""Cluster: EKS with encrypted secrets, a private endpoint, audit logs, IRSA and hardened managed nodes."""

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from stacks.components.keys import RegionalKey, RegionalKeyArgs
from stacks.documents import assume_role_policy, irsa_trust_policy
from stacks.settings import ClusterConfig, IdentityConfig

CONTROL_PLANE_LOGS = ("api", "audit", "authenticator")
POLICY = "arn:aws:iam::aws:policy/"
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly", "AmazonEKS_CNI_Policy")
IDENTITY_GROUP_PREFIX = "idp:"
"""Prefix EKS puts before the identity provider's group names (RBAC bindings use it)."""


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token`: no long-lived credential in the state."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region],
                        }
                    },
                }
            ],
        }
    )


@dataclass(frozen=True, kw_only=True)
class ClusterArgs:
    """Inputs of `Cluster`."""

    cluster_name: str
    """EKS cluster name."""
    region: str
    """The region."""
    config: ClusterConfig
    """Version, endpoint access and node group."""
    identity: IdentityConfig
    """Identity provider for people."""
    private_subnet_ids: list[pulumi.Input[str]]
    """Subnets for the control plane ENIs and the nodes."""
    log_retention_days: int
    """Control-plane log retention."""
    tags: dict[str, str]
    """Tags."""


class Cluster(pulumi.ComponentResource):
    """An EKS cluster and the Kubernetes provider that targets it."""

    name: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer: pulumi.Output[str]
    key_arn: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("model-serving:cluster:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = RegionalKey(
            f"{name}-key",
            RegionalKeyArgs(
                purpose="EKS secrets and node volumes", region=args.region, log_service=True, tags=args.tags
            ),
            opts=child,
        )
        # Created before the cluster so retention and encryption apply from the first log line.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane",
            name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=args.log_retention_days,
            kms_key_id=key.arn,
            tags=args.tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-control-plane",
            assume_role_policy=assume_role_policy("eks.amazonaws.com"),
            tags=args.tags,
            opts=child,
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-control-plane", role=role.name, policy_arn=f"{POLICY}AmazonEKSClusterPolicy", opts=child
        )
        public = bool(args.config.public_access_cidrs)
        cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=args.config.kubernetes_version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=args.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=public,
                public_access_cidrs=list(args.config.public_access_cidrs) if public else None,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn), resources=["secrets"]
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOGS),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, attachment]),
        )
        issuer = cluster.identities.apply(
            lambda ids: (ids[0].oidcs[0].issuer if ids and ids[0].oidcs else None) or ""
        )
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc",
            url=issuer.apply(str),
            client_id_lists=["sts.amazonaws.com"],
            tags=args.tags,
            opts=child,
        )
        self._nodes(name, args, cluster, key.arn, child)
        self._storage_driver(name, args, cluster, oidc.arn, issuer, child)
        aws.eks.IdentityProviderConfig(
            f"{name}-people",
            cluster_name=cluster.name,
            oidc=aws.eks.IdentityProviderConfigOidcArgs(
                identity_provider_config_name="people",
                issuer_url=args.identity.issuer_url,
                client_id=args.identity.client_id,
                groups_claim=args.identity.groups_claim,
                groups_prefix=IDENTITY_GROUP_PREFIX,
                username_claim="email",
                username_prefix="idp:",
            ),
            tags=args.tags,
            opts=child,
        )
        config = pulumi.Output.all(
            name=cluster.name, endpoint=cluster.endpoint, ca=cluster.certificate_authority.data
        ).apply(lambda v: kubeconfig(v["name"], v["endpoint"], v["ca"], args.region))
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=config,
            enable_server_side_apply=True,
            delete_unreachable=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = cluster.name
        self.oidc_provider_arn = oidc.arn
        self.oidc_issuer = issuer
        self.key_arn = key.arn
        self.register_outputs(
            {
                "name": self.name,
                "oidc_provider_arn": self.oidc_provider_arn,
                "oidc_issuer": self.oidc_issuer,
                "key_arn": self.key_arn,
            }
        )

    def _nodes(
        self,
        name: str,
        args: ClusterArgs,
        cluster: aws.eks.Cluster,
        key_arn: pulumi.Output[str],
        child: pulumi.ResourceOptions,
    ) -> None:
        """Managed nodes from a launch template: IMDSv2 only, one hop (pods cannot reach it), encrypted
        disks."""
        group = args.config.node_group
        role = aws.iam.Role(
            f"{name}-nodes",
            assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
            tags=args.tags,
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-nodes-{p}", role=role.name, policy_arn=POLICY + p, opts=child
            )
            for p in NODE_POLICIES
        ]
        template = aws.ec2.LaunchTemplate(
            f"{name}-nodes",
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        encrypted="true",
                        kms_key_id=key_arn,
                        volume_size=group.disk_gib,
                        volume_type="gp3",
                        delete_on_termination="true",
                    ),
                )
            ],
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance", tags=args.tags)
            ],
            tags=args.tags,
            opts=child,
        )
        aws.eks.NodeGroup(
            f"{name}-nodes",
            cluster_name=cluster.name,
            node_role_arn=role.arn,
            subnet_ids=args.private_subnet_ids,
            instance_types=[group.instance_type],
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=group.min_size, max_size=group.max_size, desired_size=group.desired_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=attachments),
        )

    def _storage_driver(
        self,
        name: str,
        args: ClusterArgs,
        cluster: aws.eks.Cluster,
        oidc_arn: pulumi.Output[str],
        issuer: pulumi.Output[str],
        child: pulumi.ResourceOptions,
    ) -> None:
        """The EBS CSI driver (for Prometheus volumes) with its own IRSA role rather than the node role."""
        trust = pulumi.Output.all(arn=oidc_arn, issuer=issuer).apply(
            lambda v: irsa_trust_policy(v["arn"], v["issuer"], "kube-system", "ebs-csi-controller-sa")
        )
        role = aws.iam.Role(f"{name}-ebs-csi", assume_role_policy=trust, tags=args.tags, opts=child)
        aws.iam.RolePolicyAttachment(
            f"{name}-ebs-csi",
            role=role.name,
            policy_arn=f"{POLICY}service-role/AmazonEBSCSIDriverPolicy",
            opts=child,
        )
        aws.eks.Addon(
            f"{name}-ebs-csi",
            cluster_name=cluster.name,
            addon_name="aws-ebs-csi-driver",
            service_account_role_arn=role.arn,
            tags=args.tags,
            opts=child,
        )
